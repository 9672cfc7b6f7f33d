"""Procedural "shapes" frames: the bundled classifier's dataset and the demo's camera.

The default model is trained on frames drawn here, and the demo, the tests and the
benchmarks draw fresh frames from the same generator, so the ground truth of every frame
is always at hand: accuracy can be measured anywhere, with no data set to download.

Each frame shows one filled shape (see :data:`LABELS`) at a random position, size,
rotation and colour, on a random background with a colour gradient and sensor noise.
Frames can be drawn at any resolution and aspect ratio; the shape keeps its proportions
relative to the shorter side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Class names of the bundled shapes classifier, in output order.
LABELS: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "diamond")


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


class ShapesGenerator:
    """Draws labelled RGB frames. Reproducible for a given ``seed``.

    >>> gen = ShapesGenerator(seed=1)
    >>> frame, label = gen.frame(320, 240)
    >>> frame.shape, frame.dtype, LABELS[label] in LABELS
    ((240, 320, 3), dtype('uint8'), True)
    """

    labels = LABELS

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def _colours(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng
        bg = rng.integers(0, 256, 3).astype(np.float32)
        while True:
            fg = rng.integers(0, 256, 3).astype(np.float32)
            if abs(_luma(fg) - _luma(bg)) >= 50 or np.abs(fg - bg).sum() >= 240:
                return bg, fg

    def _mask(self, label: int, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
        name = LABELS[label]
        if name == "circle":
            return dx * dx + dy * dy <= r * r
        if name == "ring":
            d2 = dx * dx + dy * dy
            return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
        if name == "square":
            s = 0.8 * r
            return (np.abs(dx) <= s) & (np.abs(dy) <= s)
        if name == "diamond":
            return np.abs(dx) + np.abs(dy) <= 1.05 * r
        if name == "cross":
            t = 0.3 * r
            return ((np.abs(dx) <= r) & (np.abs(dy) <= t)) | ((np.abs(dx) <= t) & (np.abs(dy) <= r))
        if name == "triangle":
            # Equilateral, pointing up, centroid at the origin (image y grows downwards).
            s3 = np.sqrt(3.0)
            return (dy <= 0.5 * r) & (s3 * dx - dy <= r) & (-s3 * dx - dy <= r)
        raise ValueError(f"unknown label {label}")

    def frame(self, width: int, height: int, label: int | None = None) -> tuple[np.ndarray, int]:
        """Return ``(rgb, label)``: a ``height × width × 3`` uint8 frame and its class index."""
        if width < 8 or height < 8:
            raise ValueError(f"frames must be at least 8×8 pixels, got {width}×{height}")
        rng = self._rng
        if label is None:
            label = int(rng.integers(len(LABELS)))
        short = min(width, height)
        r = float(rng.uniform(0.16, 0.36)) * short
        cx = float(rng.uniform(r, width - r))
        cy = float(rng.uniform(r, height - r))
        angle = float(rng.uniform(-0.2, 0.2))
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        ox, oy = xs + 0.5 - cx, ys + 0.5 - cy
        ca, sa = np.cos(angle), np.sin(angle)
        dx, dy = ca * ox + sa * oy, -sa * ox + ca * oy
        mask = self._mask(label, dx, dy, r)

        bg, fg = self._colours()
        gx, gy = rng.uniform(-40, 40, 2)
        grad = (gx * (xs / width - 0.5) + gy * (ys / height - 0.5))[..., None]
        img = np.where(mask[..., None], fg, bg + grad)
        img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), label

    def batch(self, n: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(frames, labels)`` with shapes ``(n, height, width, 3)`` and ``(n,)``."""
        frames = np.empty((n, height, width, 3), np.uint8)
        labels = np.empty(n, np.int64)
        for i in range(n):
            frames[i], labels[i] = self.frame(width, height)
        return frames, labels


class ScenesGenerator(ShapesGenerator):
    """Draws detection scenes: several shapes per frame, each with its box and class.

    Shapes do not overlap (their bounding discs keep apart), each has its own colour on a
    shared background, and the ground-truth box of a shape is the tight box of the pixels
    it covers, ``[x0, y0, x1, y1]`` in frame pixels with ``x1``/``y1`` exclusive.
    Reproducible for a given ``seed``; uses a random stream of its own, so
    :class:`ShapesGenerator` frames are unaffected.

    >>> frame, boxes, classes = ScenesGenerator(seed=1).scene(320, 240)
    >>> frame.shape, boxes.shape[1], len(boxes) == len(classes)
    ((240, 320, 3), 4, True)
    """

    def __init__(self, seed: int | None = None, *, min_shapes: int = 1, max_shapes: int = 4,
                 radius: tuple[float, float] = (0.1, 0.22)) -> None:
        super().__init__(seed)
        if not 0 <= min_shapes <= max_shapes:
            raise ValueError(f"need 0 <= min_shapes <= max_shapes, got {min_shapes}, {max_shapes}")
        if not 0 < radius[0] <= radius[1] < 0.5:
            raise ValueError(f"radius must be 0 < low <= high < 0.5 (of the shorter side), got {radius}")
        self.min_shapes, self.max_shapes, self.radius = min_shapes, max_shapes, radius

    def _fg(self, bg: np.ndarray) -> np.ndarray:
        rng = self._rng
        while True:
            fg = rng.integers(0, 256, 3).astype(np.float32)
            if abs(_luma(fg) - _luma(bg)) >= 50 or np.abs(fg - bg).sum() >= 240:
                return fg

    def scene(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(rgb, boxes, classes)``: a ``height × width × 3`` uint8 frame, an
        ``(n, 4)`` float32 array of ``[x0, y0, x1, y1]`` and an ``(n,)`` int64 array."""
        if width < 16 or height < 16:
            raise ValueError(f"scenes must be at least 16×16 pixels, got {width}×{height}")
        rng = self._rng
        short = min(width, height)
        want = int(rng.integers(self.min_shapes, self.max_shapes + 1))
        placed: list[tuple[float, float, float]] = []
        for _ in range(want * 20):  # bounded rejection sampling of non-overlapping discs
            if len(placed) == want:
                break
            r = float(rng.uniform(*self.radius)) * short
            cx, cy = float(rng.uniform(r, width - r)), float(rng.uniform(r, height - r))
            if all((cx - x) ** 2 + (cy - y) ** 2 > (r + q + 2) ** 2 for x, y, q in placed):
                placed.append((cx, cy, r))
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        bg = rng.integers(0, 256, 3).astype(np.float32)
        gx, gy = rng.uniform(-40, 40, 2)
        img = np.broadcast_to(bg + (gx * (xs / width - 0.5) + gy * (ys / height - 0.5))[..., None],
                              (height, width, 3)).copy()
        boxes, classes = [], []
        for cx, cy, r in placed:
            label = int(rng.integers(len(LABELS)))
            angle = float(rng.uniform(-0.2, 0.2))
            x0, x1 = max(0, int(cx - r) - 1), min(width, int(cx + r) + 2)
            y0, y1 = max(0, int(cy - r) - 1), min(height, int(cy + r) + 2)
            ox, oy = xs[y0:y1, x0:x1] + 0.5 - cx, ys[y0:y1, x0:x1] + 0.5 - cy
            ca, sa = np.cos(angle), np.sin(angle)
            mask = self._mask(label, ca * ox + sa * oy, -sa * ox + ca * oy, r)
            if not mask.any():
                continue
            img[y0:y1, x0:x1][mask] = self._fg(bg)
            rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
            boxes.append([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1])
            classes.append(label)
        img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
        return (np.clip(img + 0.5, 0, 255).astype(np.uint8), np.asarray(boxes, np.float32).reshape(-1, 4),
                np.asarray(classes, np.int64))


class MovingScenes(ShapesGenerator):
    """A fixed camera's view of shapes that enter at one side, cross and leave at the other: a
    sequence of frames with the ground-truth track of every shape (what tracking is checked
    against, ``tests/test_tracking.py``, ``tests/test_events.py``, ``bench/tracking.py``).

    The frame is cut into ``lanes`` horizontal lanes; in each, one shape at a time crosses at a
    steady speed (pixels per frame), left to right or right to left, then the lane stays empty
    for a few frames before the next. Shapes never overlap, and no more than ``lanes`` are in
    view at once (the bundled ``shapes_detector`` was trained on one to four shapes a frame).
    The background (a colour gradient) stays; sensor noise is new in every frame.

    :attr:`tracks` holds each shape's :class:`TrackTruth`: its label and, per frame index, its
    box (the tight box of its visible pixels, ``x1``/``y1`` exclusive) and the share of it that
    is in view. Reproducible for a given ``seed``.

    >>> scenes = MovingScenes(seed=1, objects=4)
    >>> frames = list(scenes.frames())
    >>> len(scenes.tracks), frames[0][0].shape
    (4, (240, 320, 3))
    """

    def __init__(self, seed: int | None = None, *, width: int = 320, height: int = 240, lanes: int = 3,
                 objects: int = 6, radius: tuple[float, float] = (0.1, 0.13), speed: tuple[float, float] = (6.0, 12.0),
                 gap: tuple[int, int] = (2, 12)) -> None:
        super().__init__(seed)
        if width < 32 or height < 32:
            raise ValueError(f"scenes must be at least 32×32 pixels, got {width}×{height}")
        if not 1 <= lanes <= 4:
            raise ValueError(f"lanes must be 1 to 4, got {lanes}")
        short = min(width, height)
        if not 0 < radius[0] <= radius[1] or radius[1] * short * 2 + 4 > height / lanes:
            raise ValueError(f"radius {radius} (of the shorter side) does not fit {lanes} lanes of {height} pixels")
        if not 0 < speed[0] <= speed[1]:
            raise ValueError(f"speed must be 0 < low <= high pixels per frame, got {speed}")
        self.width, self.height, self.lanes = width, height, lanes
        rng = self._rng
        self.background = rng.integers(0, 256, 3).astype(np.float32)
        self._gradient = rng.uniform(-40, 40, 2)
        self.tracks: list[TrackTruth] = []
        lane_free = [int(rng.integers(0, 6)) for _ in range(lanes)]  # the frame each lane is next free from
        for n in range(objects):
            lane = min(range(lanes), key=lambda k: (lane_free[k], k))
            r = float(rng.uniform(*radius)) * short
            v = float(rng.uniform(*speed)) * (1 if rng.random() < 0.5 else -1)
            cy = (lane + 0.5) * height / lanes
            x_start = -r if v > 0 else width + r  # just out of view
            frames_across = int(math.ceil((width + 2 * r) / abs(v))) + 1
            truth = TrackTruth(n, int(rng.integers(len(LABELS))), lane, lane_free[lane], x_start, cy, r, v,
                               float(rng.uniform(-0.2, 0.2)), self._fg(self.background))
            self.tracks.append(truth)
            lane_free[lane] += frames_across + int(rng.integers(gap[0], gap[1] + 1))
        self.length = max((t.start + int(math.ceil((width + 2 * t.radius) / abs(t.speed))) + 1 for t in self.tracks),
                          default=0)
        self._fill_boxes()

    def _fg(self, bg: np.ndarray) -> np.ndarray:
        while True:
            fg = self._rng.integers(0, 256, 3).astype(np.float32)
            if abs(_luma(fg) - _luma(bg)) >= 50 or np.abs(fg - bg).sum() >= 240:
                return fg

    def _shape_mask(self, t: TrackTruth, i: int) -> tuple[np.ndarray | None, int, int]:
        """The shape's mask in frame ``i`` over its bounding square, and that square's corner."""
        cx = t.x_start + t.speed * (i - t.start)
        x0, x1 = max(0, int(cx - t.radius) - 1), min(self.width, int(cx + t.radius) + 2)
        y0, y1 = max(0, int(t.cy - t.radius) - 1), min(self.height, int(t.cy + t.radius) + 2)
        if x1 <= x0 or y1 <= y0:
            return None, x0, y0
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        ox, oy = xs + 0.5 - cx, ys + 0.5 - t.cy
        ca, sa = np.cos(t.angle), np.sin(t.angle)
        mask = self._mask(t.label, ca * ox + sa * oy, -sa * ox + ca * oy, t.radius)
        return (mask if mask.any() else None), x0, y0

    def _fill_boxes(self) -> None:
        for t in self.tracks:
            full = None
            for i in range(t.start, self.length):
                mask, x0, y0 = self._shape_mask(t, i)
                if mask is None:
                    if t.boxes:
                        break  # it has left
                    continue
                rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
                t.boxes[i] = (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1),
                              float(y0 + rows[-1] + 1))
                area = int(mask.sum())
                full = max(full or 0, area)
                t.visible[i] = area
            for i in t.visible:
                t.visible[i] = t.visible[i] / full if full else 0.0

    def truth(self):
        """Yield, for each frame, what :meth:`frames` gives with it, without drawing it."""
        for i in range(self.length):
            yield [(t.number, t.label, t.boxes[i], t.visible[i]) for t in self.tracks if i in t.boxes]

    def frames(self):
        """Yield ``(rgb, truth)`` for each frame: a ``height × width × 3`` uint8 frame and the
        list of ``(track number, label index, box, visible share)`` of the shapes in it."""
        h, w = self.height, self.width
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        gx, gy = self._gradient
        base = self.background + (gx * (xs / w - 0.5) + gy * (ys / h - 0.5))[..., None]
        for i in range(self.length):
            img = base.copy()
            truth = []
            for t in self.tracks:
                if i not in t.boxes:
                    continue
                mask, x0, y0 = self._shape_mask(t, i)
                if mask is None:
                    continue
                img[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]][mask] = t.colour
                truth.append((t.number, t.label, t.boxes[i], t.visible[i]))
            img += self._rng.normal(0.0, 6.0, img.shape).astype(np.float32)
            yield np.clip(img + 0.5, 0, 255).astype(np.uint8), truth


@dataclass
class TrackTruth:
    """One shape of :class:`MovingScenes` and where it is in each frame it can be seen in."""

    number: int
    label: int
    lane: int
    start: int  # the frame index at which its centre is ``radius`` out of view
    x_start: float
    cy: float
    radius: float
    speed: float  # pixels per frame, negative: right to left
    angle: float
    colour: np.ndarray
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    visible: dict[int, float] = field(default_factory=dict)  # frame index -> share of its pixels in view

    @property
    def name(self) -> str:
        return LABELS[self.label]
