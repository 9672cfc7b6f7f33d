"""Turn a camera frame into a model input tensor in one pass.

:class:`Preprocessor` is built once per model (it precomputes the normalisation and
quantization lookup table) and then called for every frame; it validates the frame,
picks the geometry and the resampling method, and runs the fused Cython kernel in
``streampi/_ext/_kernels.pyx``, which writes straight into a caller-provided slot (one row
of the batch tensor) without holding the GIL.

Formats: ``rgb``, ``bgr``, ``rgba``, ``bgra`` (alpha dropped), ``gray``, ``i420`` and
``nv12`` (YUV 4:2:0, BT.601 limited range unless ``full_range``), and ``jpeg`` (decoded by
simplejpeg, scaled down at decode time when the frame is far larger than the input).

Geometry (``resize``): ``stretch`` the whole frame to the input; ``letterbox`` keeps the
aspect ratio and pads with ``pad``; ``crop`` takes the largest centred region of the
input's aspect ratio. Each call returns the :class:`Transform` that maps input-tensor
coordinates back to frame coordinates.

Resampling (``interpolation``): ``linear`` (bilinear, half-pixel centres, as
``cv2.INTER_LINEAR``), ``area`` (as ``cv2.INTER_AREA``), or ``auto``: area when the frame
shrinks by more than 2× on an axis (so 1080p frames do not alias), else linear.

Bands: one frame can be written by several threads, each filling a band of the slot's rows
(:meth:`Preprocessor.prepare` once, then :meth:`Preprocessor.write` with ``rows=(row0, row1)``
per thread; :meth:`Preprocessor.bands` splits the rows evenly). Every band gets exactly the bytes
one whole call writes there, so the slot is the same whatever the split. Handing a band to
another thread has a cost of its own: :meth:`Preprocessor.band_count` says how many bands pay for
a frame, from a cost model of the kernel fitted to measured times (:data:`KERNEL_COST_US`).

Values: the resampled uint8 value ``x`` of channel ``c`` becomes ``(x/255 - mean[c]) /
std[c]``, then for int8/uint8 inputs ``round(v / scale) + zero_point`` (round half away from
zero, saturated), for float32 inputs ``v`` itself.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import FrameError
from .formats import (  # noqa: F401  (re-exported: the kernels' callers use them from here)
    BYTES_PER_PIXEL,
    DEFAULT_MAX_PIXELS,
    FORMATS,
    RAW_FORMATS,
    check_raw_size,
    frame_nbytes,
)


def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and f" {flag} " in f"{line.rstrip()} " for line in f)
    except OSError:
        return False


def _load_kernels():
    """The fastest build this CPU runs: AVX-512 (x86-64 with AVX-512 F, BW, VL and DQ), AVX2,
    NEON (aarch64), else the baseline build. All give the same bytes. ``STREAMPI_KERNELS``:
    ``baseline`` forces the baseline, ``avx2`` the AVX2 build over the AVX-512 one."""
    import platform

    choice = os.environ.get("STREAMPI_KERNELS", "auto")
    if choice != "baseline":
        if choice != "avx2" and all(_cpu_has(f) for f in ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq")):
            try:
                from ._ext import _kernels_avx512
                return _kernels_avx512, "avx512"
            except ImportError:
                pass
        if _cpu_has("avx2"):
            try:
                from ._ext import _kernels_avx2
                return _kernels_avx2, "avx2"
            except ImportError:
                pass
        if platform.machine().lower() in ("aarch64", "arm64"):
            try:
                from ._ext import _kernels_neon
                return _kernels_neon, "neon"
            except ImportError:
                pass
    try:
        from ._ext import _kernels as baseline
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ImportError(
            "streampi's compiled kernels are missing; reinstall with `pip install .` "
            "(needs a C compiler: apt-get install build-essential python3-dev)"
        ) from exc
    return baseline, "baseline"


_kernels, KERNEL_BUILD = _load_kernels()

INTERPOLATIONS = ("auto", "linear", "area")


@dataclass(frozen=True)
class Transform:
    """How input-tensor coordinates relate to frame coordinates.

    ``x_input = (x_frame - crop_x) * scale_x + offset_x`` (and the same for y).
    ``frame_width``/``frame_height`` (the frame's size, to clip boxes to it) and
    ``input_width``/``input_height`` (the input tensor's, to scale normalised model
    coordinates) are 0 when unknown.
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    crop_x: int = 0
    crop_y: int = 0
    frame_width: int = 0
    frame_height: int = 0
    input_width: int = 0
    input_height: int = 0

    def to_frame(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Map input-tensor coordinates (pixels) back to frame pixels."""
        return ((np.asarray(x) - self.offset_x) / self.scale_x + self.crop_x,
                (np.asarray(y) - self.offset_y) / self.scale_y + self.crop_y)

    def as_dict(self) -> dict[str, float]:
        return {"scale_x": self.scale_x, "scale_y": self.scale_y, "offset_x": self.offset_x,
                "offset_y": self.offset_y, "crop_x": self.crop_x, "crop_y": self.crop_y}


@dataclass(frozen=True)
class PreparedFrame:
    """A frame checked once, with its geometry worked out: what the kernel reads. For a JPEG,
    ``pixels`` are the decoded pixels (``fmt`` ``rgb`` or ``gray``, at the decoded size), so
    writing it in several bands decodes once. Made by :meth:`Preprocessor.prepare`."""

    pixels: np.ndarray  # flat uint8 buffer of the frame the kernel reads
    fmt: str  # its raw format
    width: int
    height: int
    crop: tuple[int, int, int, int]  # (x, y, w, h) of the frame that is resampled
    rect: tuple[int, int, int, int]  # (x, y, w, h) of the slot it is resampled into
    area: bool  # area averaging (else bilinear)
    transform: Transform  # input-tensor → frame coordinates (of the original frame)


def round_half_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def build_lut(dtype: Any, channels: int, mean: Sequence[float], std: Sequence[float],
              scale: float = 0.0, zero_point: int = 0) -> np.ndarray:
    """The ``(channels, 256)`` table that maps a uint8 value to the input element."""
    dtype = np.dtype(dtype)
    mean_a = np.broadcast_to(np.asarray(mean, np.float64), (channels,)) if len(mean) in (1, channels) else None
    std_a = np.broadcast_to(np.asarray(std, np.float64), (channels,)) if len(std) in (1, channels) else None
    if mean_a is None or std_a is None:
        raise ValueError(f"mean and std need 1 or {channels} values")
    x = np.arange(256, dtype=np.float64)[None, :] / 255.0
    v = (x - mean_a[:, None]) / std_a[:, None]
    if dtype == np.float32:
        return v.astype(np.float32)
    if dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
        raise ValueError(f"unsupported output dtype {dtype}")
    if not scale:
        raise ValueError(f"a {dtype.name} input needs a quantization scale")
    info = np.iinfo(dtype)
    q = round_half_away(v / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def _as_bytes(data: Any) -> np.ndarray:
    """A flat uint8 view of a frame buffer (copying only when it is not contiguous)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise FrameError(f"frame arrays must be uint8, got {data.dtype}")
        return np.ascontiguousarray(data).reshape(-1)
    try:
        return np.frombuffer(data, np.uint8)
    except (TypeError, ValueError) as exc:
        raise FrameError(f"frame data must be a bytes-like object or uint8 array, got {type(data).__name__}") from exc


def _array_size(data: np.ndarray, fmt: str) -> tuple[int, int]:
    """(width, height) implied by a NumPy frame's shape."""
    if fmt in ("i420", "nv12"):
        if data.ndim != 2 or data.shape[0] % 3:
            raise FrameError(f"{fmt} arrays must be (height*3/2, width), got shape {data.shape}")
        return data.shape[1], data.shape[0] * 2 // 3
    channels = BYTES_PER_PIXEL[fmt]
    if channels == 1 and data.ndim == 2:
        return data.shape[1], data.shape[0]
    if data.ndim != 3 or data.shape[2] != channels:
        raise FrameError(f"{fmt} arrays must be (height, width, {channels}), got shape {data.shape}")
    return data.shape[1], data.shape[0]


def geometry(mode: str, src_w: int, src_h: int, out_w: int, out_h: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """``(crop rect, destination rect)`` as ``(x, y, w, h)`` for a resize mode."""
    if mode == "stretch":
        return (0, 0, src_w, src_h), (0, 0, out_w, out_h)
    if mode == "crop":
        if src_w * out_h > src_h * out_w:  # frame is wider than the input
            cw = max(1, round(src_h * out_w / out_h))
            return ((src_w - cw) // 2, 0, cw, src_h), (0, 0, out_w, out_h)
        ch = max(1, round(src_w * out_h / out_w))
        return (0, (src_h - ch) // 2, src_w, ch), (0, 0, out_w, out_h)
    if mode == "letterbox":
        s = min(out_w / src_w, out_h / src_h)
        dw, dh = max(1, min(out_w, round(src_w * s))), max(1, min(out_h, round(src_h * s)))
        return (0, 0, src_w, src_h), ((out_w - dw) // 2, (out_h - dh) // 2, dw, dh)
    raise ValueError(f"unknown resize mode {mode!r}")


def choose_area(interpolation: str, cw: int, ch: int, dw: int, dh: int) -> bool:
    if interpolation == "linear":
        return False
    if interpolation == "area":
        return cw >= dw and ch >= dh
    return cw >= dw and ch >= dh and (cw > 2 * dw or ch > 2 * dh)


#: The kernel's cost model, µs a frame on one thread of the machine the coefficients were fitted on
#: (docs/kernels.md, "Bands": AMD EPYC, AVX2 build, 2026-12-06), to the fastest of 1500 (bilinear)
#: or 300 (area) whole calls of 20 lines: 320×240 to 1920×1080 RGB, I420 and gray → 224² int8.
#: Bilinear: ``v`` per output pixel (vertical pass and table) + ``h`` per pixel of each horizontal
#: row computed (min(source rows, 2 per output row)); area: ``a`` per source pixel + ``r`` per
#: output row and source column + ``o`` per output pixel. The fitted lines are within 10 % of the
#: measured times. Per source family: (h, a, r, o).
KERNEL_COST_US = {
    "packed": (0.00042, 0.00041, 0.00032, 0.0046),  # rgb, bgr, rgba, bgra (and decoded JPEG)
    "yuv420": (0.00118, 0.00059, 0.00171, 0.0034),  # i420, nv12: colour conversion at the taps / per row
    "gray": (0.00278, 0.00041, 0.00032, 0.0046),  # gray into 3 channels regroups each row
}
KERNEL_COST_OUT_US = 0.00081  # bilinear, per output pixel of 3 channels
#: What a band handed to another thread costs beyond its share of the kernel: waking the thread,
#: waiting for its result, its repeated per-call setup and the cache misses of a second core.
#: Measured with ``bench/kernels.py --bands-only`` as two threads' wall time minus half a
#: call: 80–130 µs for every line (a 640×480 bilinear frame of ~85 µs took 124–128 µs on two
#: threads).
BAND_OVERHEAD_US = 100.0


class Preprocessor:
    """Frame → input-slot converter for one model input.

    Parameters
    ----------
    shape : ``(height, width, channels)`` of one input (channels 1 or 3).
    dtype : the input dtype: int8, uint8 or float32.
    scale, zero_point : the input's quantization (ignored for float32).
    mean, std : normalisation ``(x/255 - mean)/std``, one value or one per channel.
    channels : ``"rgb"`` or ``"bgr"``, the channel order the model expects.
    resize : ``"stretch"``, ``"letterbox"`` or ``"crop"``.
    pad : letterbox padding, as a pixel value 0..255 (normalised like pixels).
    interpolation : ``"auto"``, ``"linear"`` or ``"area"``.
    full_range : YUV input uses full-range (JFIF) instead of BT.601 limited range.
    max_pixels : frames (and JPEG headers) larger than this are refused.
    """

    def __init__(self, shape: Sequence[int], dtype: Any, *, scale: float = 0.0, zero_point: int = 0,
                 mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,), channels: str = "rgb",
                 resize: str = "stretch", pad: int = 0, interpolation: str = "auto", full_range: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        h, w, c = (int(v) for v in shape)
        if h < 1 or w < 1 or c not in (1, 3):
            raise ValueError(f"input shape must be (height, width, 1 or 3), got {tuple(shape)}")
        if channels not in ("rgb", "bgr"):
            raise ValueError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
        if resize not in ("stretch", "letterbox", "crop"):
            raise ValueError(f"resize must be stretch, letterbox or crop, got {resize!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.shape = (h, w, c)
        self.dtype = np.dtype(dtype)
        self.lut = build_lut(self.dtype, c, tuple(mean), tuple(std), scale, zero_point)
        self._lut_bytes = np.ascontiguousarray(self.lut).view(np.uint8).reshape(-1)
        self._pad_bytes = np.ascontiguousarray(self.lut[:, int(pad)]).view(np.uint8).reshape(-1)
        self.channels, self.resize, self.interpolation = channels, resize, interpolation
        self.full_range, self.max_pixels = bool(full_range), int(max_pixels)

    @classmethod
    def for_model(cls, model: Any, config: Any = None, **kwargs: Any) -> Preprocessor:
        """Build from a :class:`streampi.model.Model` and a :class:`streampi.config.ModelConfig`."""
        spec = model.input
        if config is not None:
            kwargs = {"mean": config.mean, "std": config.std, "channels": config.channels,
                      "resize": config.resize, "pad": config.pad, **kwargs}
        return cls(model.image_input(), spec.dtype, scale=spec.scale, zero_point=spec.zero_point, **kwargs)

    def new_slot(self, n: int | None = None) -> np.ndarray:
        """A zeroed output array: one slot, or a batch of ``n``."""
        return np.zeros(self.shape if n is None else (n, *self.shape), self.dtype)

    def _check_out(self, out: np.ndarray) -> np.ndarray:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
        if out.shape != self.shape or out.dtype != self.dtype:
            raise ValueError(f"out must have shape {self.shape} and dtype {self.dtype}, "
                             f"got {out.shape} {out.dtype}")
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous (one slot of a batch tensor is)")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        return out.reshape(-1).view(np.uint8)

    def __call__(self, data: Any, fmt: str, width: int | None = None, height: int | None = None,
                 out: np.ndarray | None = None, rows: tuple[int, int] | None = None) -> tuple[np.ndarray, Transform]:
        """Write the frame into ``out`` (a new slot when ``None``); return ``(out, transform)``.

        ``data`` is a bytes-like object or a uint8 NumPy array (whose shape gives the size
        when ``width``/``height`` are omitted). Raises :class:`FrameError` for bad frames.
        ``rows``: write only the slot's rows ``[row0, row1)`` (see :meth:`write`); a JPEG is
        then decoded by each call, so to split one frame across threads use :meth:`prepare`
        once and :meth:`write` per band.
        """
        if out is None:
            out = self.new_slot()
        raw_out = self._check_out(out)
        frame = self.prepare(data, fmt, width, height)
        self._write(frame, raw_out, rows)
        return out, frame.transform

    def prepare(self, data: Any, fmt: str, width: int | None = None, height: int | None = None) -> PreparedFrame:
        """Check the frame (decode a JPEG) and work out its geometry, once: the
        :class:`PreparedFrame` can then be written whole or in bands of rows by several threads
        (:meth:`write`). Raises :class:`FrameError` for bad frames."""
        fmt = str(fmt).lower()
        if fmt == "jpeg":
            return self._jpeg(data)
        if fmt not in RAW_FORMATS:
            raise FrameError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if width is None or height is None:
            if not isinstance(data, np.ndarray):
                raise FrameError(f"{fmt} frames given as bytes need a width and a height")
            width, height = _array_size(data, fmt)
        buf = _as_bytes(data)
        check_raw_size(fmt, width, height, buf.size, self.max_pixels)
        return self._prepared(buf, fmt, int(width), int(height))

    def _prepared(self, buf: np.ndarray, fmt: str, w: int, h: int) -> PreparedFrame:
        oh, ow, _ = self.shape
        crop, rect = geometry(self.resize, w, h, ow, oh)
        (cx, cy, cw, ch), (dx, dy, dw, dh) = crop, rect
        area = choose_area(self.interpolation, cw, ch, dw, dh)
        return PreparedFrame(buf, fmt, w, h, crop, rect, area,
                             Transform(dw / cw, dh / ch, float(dx), float(dy), cx, cy, w, h, ow, oh))

    def write(self, frame: PreparedFrame, out: np.ndarray, rows: tuple[int, int] | None = None) -> None:
        """Write a prepared frame into the slot ``out``: all of it, or only its rows
        ``rows = (row0, row1)``, ``0 <= row0 <= row1 <= height`` (letterbox padding of those
        rows included). A band gets exactly the bytes the whole call writes to those rows and
        no byte outside them is touched, so threads may write disjoint bands of one slot at once
        (the kernel runs without the GIL): the whole slot equals one call's whatever the split.
        Raises ``ValueError`` for a band outside the slot."""
        if not isinstance(frame, PreparedFrame):
            raise TypeError(f"frame must be a PreparedFrame (from Preprocessor.prepare), got {type(frame).__name__}")
        self._write(frame, self._check_out(out), rows)

    def _write(self, frame: PreparedFrame, raw_out: np.ndarray, rows: Any) -> None:
        oh, ow, oc = self.shape
        row0, row1 = self._check_rows(rows)
        (cx, cy, cw, ch), (dx, dy, dw, dh) = frame.crop, frame.rect
        _kernels.resize_quantize(frame.pixels, _kernels.FORMAT_CODES[frame.fmt], frame.width, frame.height,
                                 cx, cy, cw, ch, raw_out, ow, oh, oc, self.dtype.itemsize, dx, dy, dw, dh,
                                 self._lut_bytes, self._pad_bytes, self.channels == "bgr",
                                 self.full_range, frame.area, row0, row1)

    def _check_rows(self, rows: Any) -> tuple[int, int]:
        oh = self.shape[0]
        if rows is None:
            return 0, oh
        try:
            row0, row1 = rows
        except (TypeError, ValueError):
            raise ValueError(f"rows must be a (row0, row1) pair, got {rows!r}") from None
        if not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) for r in (row0, row1)):
            raise ValueError(f"rows must be two integers, got {rows!r}")
        row0, row1 = int(row0), int(row1)
        if row0 < 0 or row1 > oh or row0 > row1:
            raise ValueError(f"rows [{row0}, {row1}) are not a band of the slot's {oh} rows "
                             f"(0 <= row0 <= row1 <= {oh})")
        return row0, row1

    def bands(self, frame: PreparedFrame, n: int) -> list[tuple[int, int]]:
        """Split the slot's rows into ``n`` bands (for ``n`` threads) that share the resized
        rows of the destination rectangle evenly: letterbox padding rows (a plain fill) go to
        the first and last bands. Their union is every row; bands may be empty."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"the number of bands must be a positive integer, got {n!r}")
        oh = self.shape[0]
        _, dy, _, dh = frame.rect
        cuts = [0] + [dy + dh * k // int(n) for k in range(1, int(n))] + [oh]
        return list(zip(cuts[:-1], cuts[1:]))

    def kernel_cost_us(self, frame: PreparedFrame) -> float:
        """The kernel's estimated time for ``frame`` on one thread, in µs of the machine the cost
        model was fitted on (:data:`KERNEL_COST_US`); what matters is its ratio to
        :data:`BAND_OVERHEAD_US`, measured on the same machine."""
        _, _, oc = self.shape
        (_, _, cw, ch), (_, _, dw, dh) = frame.crop, frame.rect
        family = "yuv420" if frame.fmt in ("i420", "nv12") else ("gray" if frame.fmt == "gray" else "packed")
        h, a, r, o = KERNEL_COST_US[family]
        per_channel = oc / 3  # fitted on 3-channel inputs
        if frame.area:
            return (a * cw * ch + r * dh * cw + o * dw * dh) * per_channel
        return (KERNEL_COST_OUT_US * dw * dh + h * min(ch, 2 * dh) * dw) * per_channel

    def band_count(self, frame: PreparedFrame, threads: int) -> int:
        """How many bands (at most ``threads``) to write ``frame`` in: the ``n`` with the least
        estimated wall time, ``kernel / n + (n - 1) × BAND_OVERHEAD_US``. 1 (one call, no
        hand-off) where splitting loses: a bilinear frame (~85–170 µs) stays whole, area frames
        of 640×480 and up are split."""
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"the number of threads must be a positive integer, got {threads!r}")
        cost = self.kernel_cost_us(frame)
        return min(range(1, int(threads) + 1), key=lambda n: cost / n + (n - 1) * BAND_OVERHEAD_US)

    # -- JPEG ---------------------------------------------------------------------------
    def jpeg_decode_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest decode size worth asking libjpeg for: at least twice the
        resolution the model will sample from the frame (so area averaging still applies)."""
        oh, ow, _ = self.shape
        (cx, cy, cw, ch), (_, _, dw, dh) = geometry(self.resize, width, height, ow, oh)
        return (min(width, -(-2 * dw * width // cw)), min(height, -(-2 * dh * height // ch)))

    def _jpeg(self, data: Any) -> PreparedFrame:
        import simplejpeg

        if isinstance(data, np.ndarray):
            data = data.reshape(-1).tobytes() if data.dtype == np.uint8 else None
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise FrameError("JPEG frames must be bytes")
        if len(data) < 4:
            raise FrameError(f"not a JPEG: only {len(data)} bytes")
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise FrameError(f"not a valid JPEG: {exc}") from exc
        if width <= 0 or height <= 0:
            raise FrameError(f"JPEG header gives an empty size {width}×{height}")
        if width * height > self.max_pixels:
            raise FrameError(f"JPEG of {width}×{height} exceeds the limit of {self.max_pixels} pixels")
        min_w, min_h = self.jpeg_decode_size(width, height)
        colorspace = "GRAY" if self.shape[2] == 1 else "RGB"
        try:
            img = simplejpeg.decode_jpeg(data, colorspace=colorspace, min_width=min_w, min_height=min_h,
                                         strict=True)
        except ValueError as exc:
            raise FrameError(f"corrupt JPEG: {exc}") from exc
        dh, dw = img.shape[:2]
        fmt = "gray" if colorspace == "GRAY" else "rgb"
        frame = self._prepared(np.ascontiguousarray(img).reshape(-1), fmt, dw, dh)
        # the kernel reads the decoded pixels; the transform is in the JPEG's full-resolution coordinates
        t, fx, fy = frame.transform, dw / width, dh / height
        transform = Transform(t.scale_x * fx, t.scale_y * fy, t.offset_x, t.offset_y,
                              round(t.crop_x / fx), round(t.crop_y / fy), width, height,
                              t.input_width, t.input_height)
        return dataclasses.replace(frame, transform=transform)


def preprocess(data: Any, fmt: str, shape: Sequence[int], dtype: Any = np.uint8, *,
               width: int | None = None, height: int | None = None, out: np.ndarray | None = None,
               **options: Any) -> tuple[np.ndarray, Transform]:
    """One-shot form of :class:`Preprocessor` (builds the lookup table each call)."""
    return Preprocessor(shape, dtype, **options)(data, fmt, width, height, out)
