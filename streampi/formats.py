"""Frame formats and their sizes: pure Python, shared by the clients, the wire protocol and
the kernels' wrapper, so that a camera that only produces frames needs neither the compiled
kernels nor an interpreter (``pip install`` of the client side stays light)."""

from __future__ import annotations

import numbers
from typing import Any

from .errors import FrameError

RAW_FORMATS = ("rgb", "bgr", "rgba", "bgra", "gray", "i420", "nv12")
FORMATS = RAW_FORMATS + ("jpeg",)
BYTES_PER_PIXEL = {"rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4, "gray": 1}
#: Largest frame accepted, in pixels (a JPEG header claiming more is refused before decoding).
DEFAULT_MAX_PIXELS = 4096 * 4096


def frame_nbytes(fmt: str, width: int, height: int) -> int:
    """Bytes of a tightly packed raw frame."""
    if fmt in ("i420", "nv12"):
        return width * height + 2 * ((width // 2) * (height // 2))
    return width * height * BYTES_PER_PIXEL[fmt]


def check_raw_size(fmt: str, width: Any, height: Any, nbytes: int | None,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Raise :class:`FrameError` unless a raw frame's size and byte count agree; return the
    byte count. ``nbytes=None`` checks the size alone (a shared-memory frame's bytes are
    whatever its size needs)."""
    if fmt not in RAW_FORMATS:
        raise FrameError(f"unknown raw format {fmt!r}; expected one of {', '.join(FORMATS)}")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise FrameError(f"{name} must be an integer, got {type(v).__name__}")
        if v <= 0:
            raise FrameError(f"{name} must be positive, got {v}")
    if width * height > max_pixels:
        raise FrameError(f"frame of {width}×{height} exceeds the limit of {max_pixels} pixels")
    if fmt in ("i420", "nv12") and (width % 2 or height % 2):
        raise FrameError(f"{fmt} frames need an even width and height, got {width}×{height}")
    want = frame_nbytes(fmt, width, height)
    if nbytes is not None and nbytes != want:
        raise FrameError(f"{fmt} frame of {width}×{height} needs {want} bytes, got {nbytes}")
    return want
