"""Where frames come from: one call, :func:`open_source`, for every kind of source, and one
record, :class:`Frame`, for every frame. ``streampi produce``, the load generator and
``streampi quantize --calibrate`` read frames through it.

Importing this package loads neither the compiled kernels nor an interpreter, and OpenCV,
PyAV or a camera library only when a source needs it: a camera Pi installs the client side
alone (plus ``streampi[cameras]`` for RTSP and video files).

>>> with open_source("synthetic", size=(320, 240), fmt="i420") as source:
...     for frame in itertools.islice(source, 100):
...         producer.send(frame.data, fmt=frame.fmt)

Live cameras (``source.live``) are read on a thread of their own that keeps only the newest
frame and reopens the camera when it drops (:mod:`streampi.sources.live`); take frames at the
rate wanted with ``source.take(timeout)``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..errors import SourceError
from ..formats import FORMATS
from .base import Frame, Source, spread
from .convert import from_rgb, rgb_to_gray, rgb_to_i420, rgb_to_nv12
from .files import IMAGE_SUFFIXES, ImageFiles
from .synthetic import SyntheticSource

__all__ = ["DECODERS", "IMAGE_SUFFIXES", "Frame", "ImageFiles", "Source", "SourceError", "SyntheticSource",
           "from_rgb", "is_device", "is_live", "open_source", "rgb_to_gray", "rgb_to_i420", "rgb_to_nv12",
           "spread"]

DECODERS = ("pyav", "ffmpeg")
STREAM_SCHEMES = ("rtsp", "rtsps")
MJPEG_SCHEMES = ("http", "https")


def is_device(spec: str) -> bool:
    """``/dev/videoN`` or ``picamera2[:N]``."""
    return spec.startswith("/dev/video") or spec == "picamera2" or spec.startswith("picamera2:")


def is_live(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names a camera (runs until stopped) rather than frames that can be read
    as fast as wanted (synthetic, files)."""
    spec = str(spec)
    return spec.split("://", 1)[0].lower() in STREAM_SCHEMES + MJPEG_SCHEMES if "://" in spec else is_device(spec)


def open_source(spec: str | os.PathLike, *, size: tuple[int, int] = (320, 240), fmt: str | None = None,
                seed: int | None = 0, loop: bool = False, decoder: str = "pyav", threads: str | None = None,
                transport: str = "tcp", ffmpeg_codec: str | None = None, wait: bool = False) -> Source:
    """Open the frames ``spec`` names:

    - ``"synthetic"``: endless procedural shapes of ``size`` (width, height) in ``fmt`` (any
      of :data:`streampi.formats.FORMATS`, default ``rgb``), each with its ground-truth label,
      from ``seed``;
    - a folder of images (or one image file): JPEG files as ``jpeg`` bytes, undecoded; PNG,
      BMP, WebP and TIFF decoded by OpenCV into ``bgr``; in name order;
    - a video file: its frames decoded by PyAV into ``i420``;
    - ``rtsp://…`` / ``rtsps://…``: a camera, decoded into ``i420`` on its own thread (newest
      frame, reopened with back-off), over ``transport`` (``tcp`` or ``udp``);
    - ``http://…`` / ``https://…``: an MJPEG camera (``multipart/x-mixed-replace``), each JPEG
      passed on as a ``jpeg`` frame, undecoded;
    - ``/dev/videoN`` (V4L2) and ``picamera2[:N]`` (the Pi camera): asked for ``size`` in
      ``fmt`` (default: the device's own, :func:`streampi.sources.devices.open_device`), read on
      a thread of their own like the cameras above.

    ``size``, ``fmt`` and ``seed`` shape generated frames; frames read from files keep the
    size they are stored in. ``loop=True`` repeats a folder or a video forever. ``decoder``:
    ``pyav`` (the default) or ``ffmpeg`` (an ``ffmpeg`` subprocess writing yuv420p to a pipe;
    ``ffmpeg_codec``: its decoder, e.g. ``h264_v4l2m2m`` on a Pi 4); ``threads``: PyAV's
    decoding threads, ``1`` or ``auto`` (default: ``1`` for a camera, ``auto`` for a file).
    ``wait=True``: a camera that is unreachable at first is waited for (see
    :mod:`streampi.sources.live`) instead of raising.
    Raises :class:`SourceError` with the reason when the source cannot be opened."""
    if fmt is not None and fmt not in FORMATS:
        raise SourceError(f"unknown frame format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if decoder not in DECODERS:
        raise SourceError(f"unknown decoder {decoder!r}; expected one of {', '.join(DECODERS)}")
    if spec == "synthetic":
        return SyntheticSource(size, fmt or "rgb", seed, loop)
    text = str(spec)
    if not text.strip():
        raise SourceError("the source is empty: give 'synthetic', a folder, a video file or a camera URL")
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme in STREAM_SCHEMES:
            if decoder == "ffmpeg":
                from .ffmpeg import FfmpegCamera

                return FfmpegCamera(text, codec=ffmpeg_codec, transport=transport, wait=wait)
            from .av import RtspCamera

            return RtspCamera(text, transport=transport, threads=threads or "1", wait=wait)
        if scheme in MJPEG_SCHEMES:
            from .mjpeg import MjpegCamera

            return MjpegCamera(text, wait=wait)
        raise SourceError(f"{text!r}: unknown kind of URL; streampi reads rtsp://, rtsps://, http:// and "
                          f"https:// (MJPEG) cameras")
    if is_device(text):
        try:
            devices = importlib.import_module(".devices", __package__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.devices":
                raise
            raise SourceError(f"{text}: the device source (V4L2 cameras and the Pi camera) is not available in "
                              f"this streampi") from None
        from .live import Threaded

        return Threaded(devices.open_device(text, size=size, fmt=fmt), wait=wait)
    path = Path(spec)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        return ImageFiles(path, loop)
    if path.is_file():
        if decoder == "ffmpeg":
            from .ffmpeg import FfmpegFile

            return FfmpegFile(path, loop, codec=ffmpeg_codec)
        from .av import VideoFile

        return VideoFile(path, loop, threads=threads or "auto")
    why = "no such file or folder" if not path.exists() else "not a regular file"
    raise SourceError(f"{text!r} is neither 'synthetic', a folder of images, a video file, nor a camera URL "
                      f"({why})")
