"""Where frames come from: one call, :func:`open_source`, for every kind of source, and one
record, :class:`Frame`, for every frame. ``streampi produce``, the load generator and
``streampi quantize --calibrate`` read frames through it.

Importing this package loads neither the compiled kernels nor an interpreter, and OpenCV only
when a source needs it: a camera Pi installs the client side alone.

>>> with open_source("synthetic", size=(320, 240), fmt="i420") as source:
...     for frame in itertools.islice(source, 100):
...         producer.send(frame.data, fmt=frame.fmt)
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SourceError
from ..formats import FORMATS
from .base import Frame, Source, spread
from .convert import from_rgb, rgb_to_gray, rgb_to_i420, rgb_to_nv12
from .files import IMAGE_SUFFIXES, ImageFiles, VideoFile
from .synthetic import SyntheticSource

__all__ = ["IMAGE_SUFFIXES", "Frame", "ImageFiles", "Source", "SourceError", "SyntheticSource", "VideoFile",
           "from_rgb", "open_source", "rgb_to_gray", "rgb_to_i420", "rgb_to_nv12", "spread"]


def open_source(spec: str | os.PathLike, *, size: tuple[int, int] = (320, 240), fmt: str = "rgb",
                seed: int | None = 0, loop: bool = False) -> Source:
    """Open the frames ``spec`` names:

    - ``"synthetic"``: endless procedural shapes of ``size`` (width, height) in ``fmt`` (any
      of :data:`streampi.formats.FORMATS`), each with its ground-truth label, from ``seed``;
    - a folder of images (or one image file): JPEG files as ``jpeg`` bytes, undecoded; PNG,
      BMP, WebP and TIFF decoded by OpenCV into ``bgr``; in name order;
    - a video file: its frames decoded by OpenCV into ``bgr``.

    ``size``, ``fmt`` and ``seed`` shape generated frames; frames read from files keep the
    size and format they are stored in. ``loop=True`` repeats a folder or a video forever.
    Raises :class:`SourceError` with the reason when the source cannot be opened."""
    if fmt not in FORMATS:
        raise SourceError(f"unknown frame format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if spec == "synthetic":
        return SyntheticSource(size, fmt, seed, loop)
    path = Path(spec)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        return ImageFiles(path, loop)
    if path.is_file():
        return VideoFile(path, loop)
    why = "no such file or folder" if not path.exists() else "not a regular file"
    raise SourceError(f"{str(spec)!r} is neither 'synthetic', a folder of images, nor a video file ({why})")
