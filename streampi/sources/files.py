"""Frames stored in files: a folder of images (or one image) and a video file. JPEG files go
out as they are (``jpeg``: the server decodes them at the model's scale); other images and
video are decoded by OpenCV into ``bgr``, imported only when needed, so a camera Pi that sends
JPEG files needs no OpenCV."""

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


class VideoFile(Source):
    """The frames of a video file, decoded by OpenCV into ``bgr``. Opening checks that the file
    is a video with at least one frame; each pass reopens it."""

    def __init__(self, path: Path, loop: bool = False) -> None:
        super().__init__(str(path), loop)
        self.path = path
        self._cv2 = _cv2("reading video")
        capture = self._open()
        try:
            if not capture.grab():
                raise SourceError(f"no frames in {path} (OpenCV opens it but decodes none)")
            #: frames the container declares (0: unknown; sample() then takes the first n)
            self.frame_count = max(0, int(capture.get(self._cv2.CAP_PROP_FRAME_COUNT) or 0))
        finally:
            capture.release()

    def _open(self) -> Any:
        capture = self._cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{self.path} is not a video OpenCV can open (nor a folder of images, nor 'synthetic')")
        return capture

    def _frame(self, image: np.ndarray, i: int) -> Frame:
        return Frame(np.ascontiguousarray(image), "bgr", f"{self.path} frame {i}")

    def _frames(self) -> Generator[Frame, None, None]:
        while True:
            capture, read = self._open(), 0
            try:
                ok, image = capture.read()
                while ok:  # ends with the file
                    yield self._frame(image, read)
                    read += 1
                    ok, image = capture.read()
            finally:
                capture.release()
            if not read:  # a loop over a file that lost its frames would spin forever
                raise SourceError(f"no frames in {self.path} (OpenCV opens it but decodes none)")
            if not self.loop:
                return

    def _sample(self, n: int) -> Generator[Frame, None, None]:
        wanted = set(spread(self.frame_count, n)) if self.frame_count else set(range(n))
        capture, taken, i = self._open(), 0, 0
        try:
            while taken < len(wanted) and i <= max(wanted):  # grab() skips a frame without converting it
                if not capture.grab():
                    break
                if i in wanted:
                    ok, image = capture.retrieve()
                    if ok:
                        taken += 1
                        yield self._frame(image, i)
                i += 1
        finally:
            capture.release()
        if not taken:
            raise SourceError(f"no frames could be read from {self.path}")
