"""RGB to the other wire formats, in NumPy: synthetic frames in any format a camera sends,
without the compiled kernels (a camera Pi has none). The kernels read YUV as BT.601 limited
range (``preprocess``'s default), so that is what these write."""

from __future__ import annotations

import numpy as np

from ..errors import FrameError
from ..formats import FORMATS

#: BT.601 limited range (ITU-R BT.601-7 table 3, 8 bits): rows Y, Cb, Cr; columns R, G, B (per 0..255)
_BT601 = np.array([[65.481, 128.553, 24.966],
                   [-37.797, -74.203, 112.0],
                   [112.0, -93.786, -18.214]], np.float32) / 255
_OFFSET = np.array([16.0, 128.0, 128.0], np.float32)


def _yuv420_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y, U, V) uint8 planes; each chroma sample is the mean of its 2×2 block."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise FrameError(f"expected an H×W×3 RGB array, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise FrameError(f"YUV 4:2:0 needs an even width and height, got {w}×{h}")
    yuv = rgb.astype(np.float32) @ _BT601.T + _OFFSET
    y = yuv[..., 0]
    uv = yuv[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    as_u8 = lambda a: np.clip(a + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
    return as_u8(y), as_u8(uv[..., 0]), as_u8(uv[..., 1])


def rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    """I420 (Y plane, then U, then V) as a ``(H * 3 / 2, W)`` uint8 array; even sizes only."""
    y, u, v = _yuv420_planes(rgb)
    h, w = y.shape
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(h * 3 // 2, w)


def rgb_to_nv12(rgb: np.ndarray) -> np.ndarray:
    """NV12 (Y plane, then U and V interleaved) as a ``(H * 3 / 2, W)`` uint8 array; even sizes only."""
    y, u, v = _yuv420_planes(rgb)
    return np.concatenate([y, np.stack([u, v], axis=-1).reshape(u.shape[0], -1)])


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """Luma with BT.601 weights over the full range (what JPEG and OpenCV call gray)."""
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(luma + 0.5, 0, 255).astype(np.uint8)


def from_rgb(rgb: np.ndarray, fmt: str) -> np.ndarray | bytes:
    """``rgb`` in wire format ``fmt`` (one of :data:`streampi.formats.FORMATS`); ``jpeg`` at quality 90."""
    if fmt == "rgb":
        return rgb
    if fmt in ("bgr", "rgba", "bgra"):
        out = rgb[..., ::-1] if fmt.startswith("b") else rgb
        if fmt.endswith("a"):
            out = np.concatenate([out, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
        return np.ascontiguousarray(out)
    if fmt == "gray":
        return rgb_to_gray(rgb)
    if fmt == "i420":
        return rgb_to_i420(rgb)
    if fmt == "nv12":
        return rgb_to_nv12(rgb)
    if fmt == "jpeg":
        import simplejpeg

        return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=90)
    raise FrameError(f"unknown frame format {fmt!r}; expected one of {', '.join(FORMATS)}")
