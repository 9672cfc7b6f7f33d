"""Motion gating at the camera: send a frame only when something in the picture moves, plus one
now and then, so that a still driveway costs neither network nor server.

>>> gate = MotionGate(idle_every=10.0, hold=2.0)
>>> for frame in source:
...     if gate.check(frame):
...         producer.send(frame.data, fmt=frame.fmt)
>>> gate.counts
{'motion': 41, 'hold': 20, 'idle': 12, 'skipped': 527}

How it decides. The frame's luma is sampled on a coarse grid (``width`` cells across, as many
down as keep the frame's aspect; each cell the mean of ``samples`` pixels spread across its
middle row, so that a 1280×720 frame is read on 36 of its rows only), and each cell is compared
with a running background of the same grid. A cell has
changed when it differs from its background by more than ``threshold`` grey levels (0..255,
full range), after taking away the mean difference over the whole grid (``follow_light``: a
cloud or the evening dims every cell alike). The frame has motion when more than ``area`` of
the cells changed. Then the background moves ``alpha`` of the way towards the frame, so a car
that parks becomes background after a few seconds (about ``3 / alpha`` frames) and light that
drifts is followed.

A frame is sent when it has motion (``"motion"``), while less than ``hold`` seconds have passed
since the last frame with motion (``"hold"``: the end of a movement and what stops in the
picture reach the server too), and when ``idle_every`` seconds have passed since the last frame
sent (``"idle"``: the server still sees the scene; the first frame is one). Any other frame is
``"skipped"``.

Where the luma comes from, per format: the Y plane of ``i420`` and ``nv12`` as it is (BT.601
limited range, compared with a threshold scaled by 219/255: no conversion of the frame); ``gray`` as
it is; ``rgb``, ``bgr``, ``rgba`` and ``bgra`` weighed at the sampled pixels only; ``jpeg``
decoded straight to grey at the smallest scale (1/8, 1/4, 1/2) that still has a pixel for every
sample (libjpeg-turbo's DCT scaling, through simplejpeg). So the formats give the same decisions
for the same picture; the compiled loop (``streampi/_ext/_motion.pyx``) reads only the sampled
bytes, without the GIL.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Any

import numpy as np

from ..errors import FrameError
from ..formats import DEFAULT_MAX_PIXELS, check_raw_size
from .base import Frame

#: frame formats the gate reads
MOTION_FORMATS = ("i420", "nv12", "gray", "rgb", "bgr", "rgba", "bgra", "jpeg")
#: byte offsets of R, G, B within a pixel, and bytes per pixel, of the packed colour formats
_PACKED = {"rgb": ((0, 1, 2), 3), "bgr": ((2, 1, 0), 3), "rgba": ((0, 1, 2), 4), "bgra": ((2, 1, 0), 4)}
REASONS = ("motion", "hold", "idle", "skipped")


def _kernel() -> Any:
    try:
        from .._ext import _motion
    except ImportError as exc:
        raise ImportError(f"the motion gate needs streampi's compiled kernels ({exc}); reinstall streampi "
                          "where a C compiler is present (Debian: apt-get install build-essential python3-dev)"
                          ) from None
    return _motion


def _number(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value < low or (low_open and value == low) or value > high:
        lo = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be {lo}{'' if high == math.inf else f' and <= {high}'}, got {value!r}")
    return float(value)


def _whole(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(value)


class _Grid:
    """Sample positions of one frame geometry: ``gw`` × ``gh`` cells, each sampled at ``sx`` points
    across the middle row of the cell (``sy`` = 1 row: a cell costs one row of the frame, which is
    what a frame that comes from memory costs), and, per plane size read, the byte offsets of the
    sample columns and the indices of the sample rows."""

    def __init__(self, width: int, height: int, cells_across: int, samples: int) -> None:
        self.size = (width, height)
        self.gw = min(cells_across, width)
        self.gh = max(1, min(height, round(self.gw * height / width)))
        self.sx = max(1, min(samples, width // self.gw))
        self.sy = 1
        self._planes: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def threshold(self, levels: float, limited: bool) -> int:
        """``levels`` of full-range grey in the kernel's unit (256 × a cell's sum of samples); a
        limited-range Y plane spans 219 levels where full-range luma spans 255."""
        scale = 219 / 255 if limited else 1.0
        return int(round(levels * scale * self.sx * self.sy * 256))

    def positions(self, plane_w: int, plane_h: int, pixel_bytes: int) -> tuple[np.ndarray, np.ndarray]:
        """(xs, ys): byte offsets of the ``gw * sx`` sample columns within a row of a plane
        ``plane_w`` pixels wide, indices of the ``gh * sy`` sample rows of a plane ``plane_h`` high."""
        nx, ny = self.gw * self.sx, self.gh * self.sy
        # sample q at the middle of the q-th of nx equal spans of the row (and so for rows)
        xs = (2 * np.arange(nx, dtype=np.int64) + 1) * plane_w // (2 * nx) * pixel_bytes
        ys = (2 * np.arange(ny, dtype=np.int64) + 1) * plane_h // (2 * ny)
        return xs.astype(np.int32), ys.astype(np.int32)


class _Plan:
    """How to read frames of one layout (format, shape, strides): what the kernel is handed."""

    __slots__ = ("geometry", "mode", "offsets", "layout", "nx", "sx", "sy", "threshold", "n_cells", "copy")

    def __init__(self, grid: _Grid, plane_w: int, plane_h: int, offsets: tuple[int, int, int], bpp: int,
                 limited: bool, levels: float, copy: bool) -> None:
        xs, ys = grid.positions(plane_w, plane_h, bpp)
        self.geometry = (grid.size, limited)
        self.mode = 1 if bpp > 1 else 0  # _motion.LUMA_RGB, LUMA_PLANE
        self.offsets = offsets
        self.layout = np.concatenate([xs, ys])
        self.nx, self.sx, self.sy = len(xs), grid.sx, grid.sy
        self.threshold = grid.threshold(levels, limited)
        self.n_cells = grid.gw * grid.gh
        self.copy = copy


class MotionGate:
    """Decides which frames of one camera to send (see the module's docstring).

    ``idle_every``: seconds between two frames sent without motion (``None``: none);
    ``hold``: seconds of frames sent after the last frame with motion; ``threshold``: grey
    levels (0..255) a cell must differ from the background; ``area``: fraction of the cells that
    must change (0.003 of the default 64 × 36 grid is 7 cells, about 0.3 % of the picture);
    ``alpha``: how far the background moves towards each frame (0 < alpha <= 1); ``width``:
    cells across the grid; ``samples``: samples per cell; ``follow_light``: take a change
    of light over the whole picture away before comparing.

    :meth:`check` takes one :class:`~streampi.sources.Frame` at a time, in capture order.
    ``counts`` holds how many frames went each way, ``reason`` and ``changed`` (the fraction of
    cells that changed) describe the last frame. Not thread-safe: one gate per camera."""

    def __init__(self, idle_every: float | None = 10.0, hold: float = 2.0, *, threshold: float = 12.0,
                 area: float = 0.003, alpha: float = 0.2, width: int = 64, samples: int = 4,
                 follow_light: bool = True) -> None:
        self.idle_every = None if idle_every is None else _number("idle_every", idle_every, low=0, low_open=True)
        self.hold = _number("hold", hold, low=0)
        self.threshold = _number("threshold", threshold, low=0, high=255)
        self.area = _number("area", area, low=0, high=1, low_open=False)
        self.alpha = _number("alpha", alpha, low=0, high=1, low_open=True)
        self.width = _whole("width", width, 1, 1024)
        self.samples = _whole("samples", samples, 1, 16)
        if not isinstance(follow_light, bool):
            raise ValueError(f"follow_light must be True or False, got {follow_light!r}")
        self.follow_light = follow_light
        self._motion = _kernel()
        self._alpha_q16 = int(round(self.alpha * 65536))
        self.counts = dict.fromkeys(REASONS, 0)
        self.reason: str | None = None
        self.changed = 0.0
        self.reset()

    def reset(self) -> None:
        """Forget the background and the timers (after a camera reconnects, say): the next frame
        is sent as ``"idle"`` and becomes the background. ``counts`` are kept."""
        self._geometry: tuple[tuple[int, int], bool] | None = None
        self._grid: _Grid | None = None
        self._plans: dict[tuple, _Plan] = {}
        self._state = np.zeros(0, np.int32)  # the cells, then the background (kernel's layout)
        self._last_sent: float | None = None
        self._last_motion: float | None = None
        self._last_now: float | None = None

    def __repr__(self) -> str:
        return (f"<MotionGate idle_every={self.idle_every} hold={self.hold} threshold={self.threshold} "
                f"area={self.area} alpha={self.alpha} grid={self.width} samples={self.samples} {self.counts}>")

    # --- reading a frame ---------------------------------------------------------------------------

    def _read(self, frame: Any) -> tuple[Any, _Plan]:
        """(the buffer the kernel reads, its plan). A NumPy frame of a layout seen before takes a
        dictionary look-up: no copy, no slice, no NumPy call (the kernel reads the Y plane of an
        I420 array in place, an RGB view with padded rows as it is)."""
        try:
            data, fmt = frame.data, frame.fmt
        except AttributeError:
            raise FrameError(f"check() takes a Frame (data and fmt), got {type(frame).__name__}") from None
        if type(data) is np.ndarray:
            plan = self._plans.get((fmt, data.shape, data.strides, data.dtype))
            if plan is not None:
                return (np.ascontiguousarray(data) if plan.copy else data), plan
        if fmt not in MOTION_FORMATS:
            raise FrameError(f"the motion gate reads {', '.join(MOTION_FORMATS)} frames, got {fmt!r}")
        if fmt == "jpeg":
            return self._read_jpeg(data)
        arr = self._raw_array(frame)
        copy = arr is not data and isinstance(data, np.ndarray)  # strides the kernel cannot read: copied
        h, w = arr.shape[:2]
        if fmt in ("i420", "nv12"):
            h = h * 2 // 3
            plan = _Plan(self._grid_for(w, h), w, h, (0, 0, 0), 1, True, self.threshold, copy)
        elif fmt == "gray":
            plan = _Plan(self._grid_for(w, h), w, h, (0, 0, 0), 1, False, self.threshold, copy)
        else:
            offsets, bpp = _PACKED[fmt]
            plan = _Plan(self._grid_for(w, h), w, h, offsets, bpp, False, self.threshold, copy)
        if isinstance(data, np.ndarray):
            if len(self._plans) >= 16:  # a source whose layout keeps changing: start afresh
                self._plans.clear()
            self._plans[(fmt, data.shape, data.strides, data.dtype)] = plan
        return arr, plan

    @staticmethod
    def _raw_array(frame: Any) -> np.ndarray:
        fmt, data = frame.fmt, frame.data
        if isinstance(data, (bytes, bytearray, memoryview)):
            # raw bytes: the size comes from the frame record
            nbytes = memoryview(data).nbytes
            check_raw_size(fmt, getattr(frame, "width", None), getattr(frame, "height", None), nbytes)
            arr = np.frombuffer(data, np.uint8)
            w, h = frame.width, frame.height
            if fmt in ("i420", "nv12"):
                return arr.reshape(h * 3 // 2, w)
            return arr.reshape(h, w) if fmt == "gray" else arr.reshape(h, w, _PACKED[fmt][1])
        if not isinstance(data, np.ndarray):
            raise FrameError(f"a {fmt} frame's data must be a NumPy array or bytes, got {type(data).__name__}")
        if data.dtype != np.uint8:
            raise FrameError(f"a {fmt} frame must be uint8, got {data.dtype}")
        if fmt in ("i420", "nv12", "gray"):
            if data.ndim != 2 and not (fmt == "gray" and data.ndim == 3 and data.shape[2] == 1):
                raise FrameError(f"a {fmt} frame must be a 2-D array, got shape {data.shape}")
            rows, w = data.shape[:2]
            if fmt != "gray":
                if rows % 3 or w % 2 or (rows * 2 // 3) % 2:
                    raise FrameError(f"a {fmt} frame is a (height × 3/2, width) array with an even width and "
                                     f"height, got shape {data.shape}")
                h = rows * 2 // 3
            else:
                h = rows
        else:
            bpp = _PACKED[fmt][1]
            if data.ndim != 3 or data.shape[2] != bpp:
                raise FrameError(f"a {fmt} frame must be a height × width × {bpp} array, got shape {data.shape}")
            h, w = data.shape[:2]
        if h < 1 or w < 1:
            raise FrameError(f"a {fmt} frame must not be empty, got shape {data.shape}")
        if w * h > DEFAULT_MAX_PIXELS:
            raise FrameError(f"frame of {w}×{h} exceeds the limit of {DEFAULT_MAX_PIXELS} pixels")
        if data.strides[-1] != 1 or (data.ndim == 3 and data.strides[1] != data.shape[2]) or data.strides[0] < 0:
            data = np.ascontiguousarray(data)
        return data

    def _read_jpeg(self, data: Any) -> tuple[np.ndarray, _Plan]:
        import simplejpeg

        if not isinstance(data, (bytes, bytearray, memoryview, np.ndarray)):
            raise FrameError(f"a jpeg frame's data must be bytes, got {type(data).__name__}")
        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        except (ValueError, TypeError) as exc:
            raise FrameError(f"the jpeg frame's header does not parse: {exc}") from None
        if w < 1 or h < 1 or w * h > DEFAULT_MAX_PIXELS:
            raise FrameError(f"jpeg frame of {w}×{h}: outside 1 .. {DEFAULT_MAX_PIXELS} pixels")
        grid = self._grid_for(w, h)
        try:
            gray = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_width=grid.gw * grid.sx,
                                          min_height=grid.gh * grid.sy)
        except (ValueError, TypeError) as exc:
            raise FrameError(f"the jpeg frame does not decode: {exc}") from None
        key = ("jpeg", w, h, gray.shape[1], gray.shape[0])
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _Plan(grid, gray.shape[1], gray.shape[0], (0, 0, 0), 1, False,
                                            self.threshold, False)
        return gray, plan

    def _grid_for(self, width: int, height: int) -> _Grid:
        if self._grid is None or self._grid.size != (width, height):
            self._grid = _Grid(width, height, self.width, self.samples)
        return self._grid

    # --- the decision --------------------------------------------------------------------------

    def check(self, frame: Frame, now: float | None = None) -> bool:
        """Whether to send ``frame`` (an object with ``data`` and ``fmt``, as :class:`Frame`),
        seen at ``now`` seconds (default ``time.monotonic()``; any clock that does not go back:
        should it go back, the timers start afresh). Raises :class:`~streampi.errors.FrameError`
        (a ``ValueError``) for a frame the gate cannot read; the gate's state is then unchanged."""
        if now is None:
            now = time.monotonic()
        elif type(now) is not float or now - now != 0.0:  # not a float, or inf or nan
            if isinstance(now, bool) or not isinstance(now, numbers.Real) or not math.isfinite(now):
                raise ValueError(f"now must be a finite number of seconds, got {now!r}")
            now = float(now)
        plane, plan = self._read(frame)
        # a new size, or Y plane after full-range luma (their sums differ by an offset and a scale)
        first = plan.geometry != self._geometry
        state = np.zeros(2 * plan.n_cells, np.int32) if first else self._state
        ro, go, bo = plan.offsets
        changed = self._motion.motion_pass(plane, plan.mode, ro, go, bo, plan.layout, plan.nx, plan.sx, plan.sy,
                                           state, plan.threshold, self._alpha_q16, self.follow_light, first)
        self._geometry, self._state = plan.geometry, state
        self.changed = changed / plan.n_cells
        if self._last_now is not None and now < self._last_now:
            self._last_sent = self._last_motion = None  # the clock went back: start the timers afresh
        self._last_now = now
        if first:
            reason = "idle"
        elif self.changed > self.area:
            reason = "motion"
            self._last_motion = now
        elif self._last_motion is not None and now - self._last_motion <= self.hold:
            reason = "hold"
        elif self._last_sent is None or (self.idle_every is not None and now - self._last_sent >= self.idle_every):
            reason = "idle"
        else:
            reason = "skipped"
        self.reason = reason
        self.counts[reason] += 1
        if reason == "skipped":
            return False
        self._last_sent = now
        return True
