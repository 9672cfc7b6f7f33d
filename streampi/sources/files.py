"""Images stored in files: a folder of images (or one image). JPEG files go out as they are
(``jpeg``: the server decodes them at the model's scale); other images are decoded by OpenCV
into ``bgr``, imported only when needed, so a camera Pi that sends JPEG files needs no OpenCV.
Video files are read by PyAV (:mod:`streampi.sources.av`)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError
from .base import Frame, Source, spread

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
JPEG_SUFFIXES = (".jpg", ".jpeg")


def _cv2(what: str) -> Any:
    try:
        import cv2
    except ImportError:
        raise SourceError(f"{what} needs OpenCV: pip install opencv-python-headless "
                          f"(or give a folder of JPEG files)") from None
    return cv2


class ImageFiles(Source):
    """The images of a folder in name order (files of other suffixes are ignored), or one image file."""

    def __init__(self, path: Path, loop: bool = False) -> None:
        super().__init__(str(path), loop)
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise SourceError(f"no images in {path} (looked for {', '.join(IMAGE_SUFFIXES)})")
        else:
            self.files = [path]

    def _read(self, path: Path) -> Frame:
        if path.suffix.lower() in JPEG_SUFFIXES:
            try:
                return Frame(path.read_bytes(), "jpeg", str(path))
            except OSError as exc:
                raise SourceError(f"image {path} cannot be read: {exc.strerror or exc}") from None
        image = _cv2("reading PNG/BMP images").imread(str(path), 1)  # 1: IMREAD_COLOR, always 3 channels BGR
        if image is None:
            raise SourceError(f"image {path} cannot be decoded (not an image, or corrupt, or unreadable)")
        return Frame(np.ascontiguousarray(image), "bgr", str(path))

    def _frames(self) -> Generator[Frame, None, None]:
        while True:
            for path in self.files:
                yield self._read(path)
            if not self.loop:
                return

    def _sample(self, n: int) -> Generator[Frame, None, None]:
        for i in spread(len(self.files), n):
            yield self._read(self.files[i])
