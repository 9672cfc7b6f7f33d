"""``segment``: per-pixel class scores ``[batch, H, W, classes]`` → a compact class map.

The class map (argmax per pixel; one channel: score above ``threshold``) is cropped to
the part of the input that shows the frame (no letterbox bars), downsampled by nearest
neighbour to at most ``max_size`` pixels a side, and sent as an 8-bit greyscale PNG whose
pixel values are class indices, with the frame rectangle it covers and each class's share
of the pixels. PNG because every image library reads it; zlib does the work.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Decoder, Options


def png_gray8(image: np.ndarray) -> bytes:
    """A greyscale 8-bit PNG of a 2-D uint8 array."""
    h, w = image.shape
    raw = np.zeros((h, w + 1), np.uint8)  # filter byte 0 (none) before each row
    raw[:, 1:] = image

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


class SegmentDecoder(Decoder):
    kind = "segment"

    def __init__(self, specs, labels, options: Options) -> None:
        super().__init__(specs, labels, options)
        four_d = [k for k, s in enumerate(self.specs) if len(s.shape) == 4]
        if len(four_d) != 1:
            raise ModelError(f"the segment decoder needs exactly one [batch, H, W, classes] output, the model has "
                             f"{[list(s.shape) for s in self.specs]}")
        self.index = four_d[0]
        _, self.h, self.w, self.classes = (int(d) for d in self.specs[self.index].shape)
        if self.classes > 256:
            raise ModelError(f"the segment decoder sends class indices as bytes: at most 256 classes, "
                             f"the model has {self.classes}")
        self.max_size = options.number("max_size", 128, low=1, high=4096, integer=True)
        self.threshold = options.number("threshold", 0.5)

    def _region(self, transform) -> tuple[int, int, int, int, list[float]]:
        """Rows/columns of the output map that show the frame, and the frame box they cover."""
        if transform is None or not (transform.input_width and transform.frame_width):
            return 0, self.h, 0, self.w, [0.0, 0.0, float(self.w), float(self.h)]
        t = transform
        sx, sy = self.w / t.input_width, self.h / t.input_height  # output cells per input pixel
        fx0, fy0 = t.to_frame(0.0, 0.0)
        fx1, fy1 = t.to_frame(float(t.input_width), float(t.input_height))
        bx0, by0 = max(0.0, float(fx0)), max(0.0, float(fy0))
        bx1, by1 = min(float(t.frame_width), float(fx1)), min(float(t.frame_height), float(fy1))
        ix0, iy0 = (bx0 - t.crop_x) * t.scale_x + t.offset_x, (by0 - t.crop_y) * t.scale_y + t.offset_y
        ix1, iy1 = (bx1 - t.crop_x) * t.scale_x + t.offset_x, (by1 - t.crop_y) * t.scale_y + t.offset_y
        c0, r0 = int(np.floor(ix0 * sx + 1e-6)), int(np.floor(iy0 * sy + 1e-6))
        c1, r1 = max(c0 + 1, int(np.ceil(ix1 * sx - 1e-6))), max(r0 + 1, int(np.ceil(iy1 * sy - 1e-6)))
        return r0, min(r1, self.h), c0, min(c1, self.w), [bx0, by0, bx1, by1]

    def decode(self, outputs, i: int, transform) -> dict[str, Any]:
        scores = outputs[self.index][i]
        r0, r1, c0, c1, box = self._region(transform)
        scores = scores[r0:r1, c0:c1]
        if self.classes == 1:
            cmap = (scores[..., 0] > self.threshold).astype(np.uint8)
            n_classes = 2
        else:
            cmap = scores.argmax(axis=-1).astype(np.uint8)
            n_classes = self.classes
        fractions = np.bincount(cmap.reshape(-1), minlength=n_classes) / cmap.size
        h, w = cmap.shape
        step = max(1, -(-max(h, w) // self.max_size))
        small = cmap[step // 2::step, step // 2::step]
        present = np.flatnonzero(fractions)
        return {"segmentation": {
            "format": "png", "width": int(small.shape[1]), "height": int(small.shape[0]), "box": box,
            "png": png_gray8(np.ascontiguousarray(small)),
            "fractions": {str(self.label(int(c)) or int(c)): float(fractions[c]) for c in present}}}
