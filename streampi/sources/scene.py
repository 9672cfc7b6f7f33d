"""A procedural camera view with ground truth of which frames move: the motion gate's test and
benchmark video.

A still, textured scene (a driveway, say) under slowly changing light with sensor noise in every
frame, where now and then an object appears, moves and either leaves or stops and stays (a car
that parks). Each frame comes with whether anything moved since the previous frame, so a gate's
decisions can be scored: idle frames it sent, moving frames it missed.

>>> scene = MotionScene(320, 240, fps=5, seed=1)
>>> rgb, moving = scene.frame(0)
>>> rgb.shape, len(scene), scene.moving.sum() > 0
((240, 320, 3), 600, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Movement:
    """One object's appearance: it shows at ``start`` seconds at ``(x0, y0)`` (fractions of the
    frame), moves at ``(vx, vy)`` frame widths/heights a second for ``duration`` seconds, then
    leaves the picture at once (``stays=False``) or stops where it is for good (``stays=True``).
    ``radius`` is a fraction of the shorter side; ``luma`` its grey level (the scene's
    background sits between 90 and 160, so a luma far from that stands out)."""

    start: float
    duration: float
    x0: float
    y0: float
    vx: float
    vy: float
    radius: float = 0.1
    luma: float = 230.0
    stays: bool = False


#: The default 120 s script: long idle stretches between a crossing, a car that parks, a small
#: fast object and a slow one, and a crossing of a dark object.
DEFAULT_SCRIPT = (
    Movement(20.0, 5.0, 0.15, 0.5, 0.14, 0.0, radius=0.12, luma=230.0),
    Movement(45.0, 4.0, 0.2, 0.3, 0.10, 0.08, radius=0.14, luma=25.0, stays=True),
    Movement(70.0, 2.0, 0.8, 0.7, -0.30, -0.05, radius=0.07, luma=240.0),
    Movement(88.0, 6.0, 0.3, 0.75, 0.05, 0.0, radius=0.09, luma=30.0),
)


class MotionScene:
    """``seconds`` of a ``width`` × ``height`` view at ``fps`` frames a second: RGB frames
    (:meth:`frame`) and, in :attr:`moving`, whether frame ``i`` differs from frame ``i - 1``
    by more than noise and light (an object appeared, moved or left; frame 0 does not move).
    Reproducible for a ``seed``; frames can be drawn in any order."""

    def __init__(self, width: int = 320, height: int = 240, *, fps: float = 5.0, seconds: float = 120.0,
                 seed: int = 0, script: tuple[Movement, ...] = DEFAULT_SCRIPT, noise: float = 5.0,
                 light: float = 0.15, light_period: float = 100.0) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"the scene needs at least 16×16 pixels, got {width}×{height}")
        if not fps > 0 or not seconds > 0:
            raise ValueError(f"fps and seconds must be > 0, got {fps}, {seconds}")
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.seed, self.script, self.noise = seed, tuple(script), float(noise)
        self.light, self.light_period = float(light), float(light_period)
        self.n_frames = int(round(seconds * fps))
        rng = np.random.default_rng(seed)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        self._ys, self._xs = ys, xs
        # texture: a few soft blobs and stripes on a gradient, grey levels 90..160 before the light
        tex = 125 + 15 * (xs / width - 0.5) - 10 * (ys / height - 0.5)
        for _ in range(12):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            r = rng.uniform(0.05, 0.2) * min(width, height)
            tex += rng.uniform(-20, 20) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))
        tex += 6 * np.sin(xs / max(width, 1) * 2 * math.pi * 7 + rng.uniform(0, 6))
        tint = rng.uniform(0.85, 1.15, 3).astype(np.float32)
        self._background = np.clip(tex, 90, 160)[..., None] * tint
        self.moving = np.zeros(self.n_frames, bool)
        for i in range(1, self.n_frames):
            self.moving[i] = self._objects(i) != self._objects(i - 1)

    def __len__(self) -> int:
        return self.n_frames

    def _objects(self, i: int) -> tuple[tuple[int, int, int, float], ...]:
        """The objects in frame ``i``: (centre x, centre y, radius) in whole pixels, and luma."""
        t, short = i / self.fps, min(self.width, self.height)
        out = []
        for m in self.script:
            if t < m.start or (t >= m.start + m.duration and not m.stays):
                continue
            moved = min(t - m.start, m.duration)
            cx = round((m.x0 + m.vx * moved) * self.width)
            cy = round((m.y0 + m.vy * moved) * self.height)
            out.append((cx, cy, round(m.radius * short), m.luma))
        return tuple(out)

    def starts(self) -> list[int]:
        """The frame index where each movement of the script begins (its object appears)."""
        return [math.ceil(m.start * self.fps - 1e-9) for m in self.script if m.start * self.fps < self.n_frames]

    def frame(self, i: int) -> tuple[np.ndarray, bool]:
        """Frame ``i`` as an ``height × width × 3`` uint8 RGB array, and whether it moved."""
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} is outside 0..{self.n_frames - 1}")
        t = i / self.fps
        gain = 1.0 + self.light * math.sin(2 * math.pi * t / self.light_period)
        img = self._background * gain
        for cx, cy, r, luma in self._objects(i):
            inside = (self._xs - cx) ** 2 + (self._ys - cy) ** 2 <= r * r
            img = np.where(inside[..., None], np.float32(luma * gain), img)
        rng = np.random.default_rng((self.seed, i))
        img = img + rng.normal(0.0, self.noise, img.shape).astype(np.float32)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), bool(self.moving[i])

    def __iter__(self):
        for i in range(self.n_frames):
            yield self.frame(i)
