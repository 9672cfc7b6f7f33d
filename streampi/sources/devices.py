"""Cameras on the machine itself: USB webcams through V4L2 (``/dev/videoN``) and the Raspberry
Pi camera through picamera2 (``picamera2`` or ``picamera2:N``). Both adapters are thin: they ask
the device for a format the server's kernels take without converting pixels on the camera Pi,
and turn the device's buffer into a tightly packed wire frame.

- **V4L2** (PyAV's ``v4l2`` input, ``pip install 'streampi[cameras]'``): ``fmt="jpeg"`` (the
  default) asks the camera for MJPEG and sends each JPEG as it comes, undecoded (the server
  decodes it at the model's scale; libjpeg-turbo supplies the standard Huffman tables to the
  frames of the many USB cameras that leave them out); ``fmt="i420"`` asks for YUYV (4:2:2) and
  converts it to I420 with :func:`yuyv_to_i420` (luma as it is, chroma of two rows averaged).
- **picamera2** (an apt package on Raspberry Pi OS, ``sudo apt install python3-picamera2``; a
  virtual environment needs ``--system-site-packages`` to see it): a ``lores`` YUV420 stream of
  ``size`` (the ISP scales the whole sensor down to it: ask for a size near the model's input),
  BT.601 limited range (what the kernels read by default), its padded buffer turned into I420 by
  :func:`yuv420_to_i420` (planes copied, no RGB).

Modules are imported when a device is opened, so ``streampi.sources`` stays light.
"""

from __future__ import annotations

import numbers
import re
import threading
from collections.abc import Generator
from typing import Any

import numpy as np

from ..errors import SourceError
from .base import Frame, Source

V4L2_FORMATS = ("jpeg", "i420")
#: FFmpeg's v4l2 ``input_format`` for each wire format
_V4L2_INPUT = {"jpeg": "mjpeg", "i420": "yuyv422"}


# --- buffer conversions ------------------------------------------------------------------------


def _buffer(buf: Any, need: int, what: str) -> np.ndarray:
    try:
        flat = np.frombuffer(buf, np.uint8) if not isinstance(buf, np.ndarray) else buf.reshape(-1)
    except (TypeError, ValueError) as exc:
        raise SourceError(f"{what}: not a buffer of bytes ({exc})") from None
    if flat.dtype != np.uint8:
        raise SourceError(f"{what}: expected uint8 bytes, got {flat.dtype}")
    if flat.size < need:
        raise SourceError(f"{what}: the buffer holds {flat.size} bytes, the frame needs {need}")
    return flat


def _check_size(width: Any, height: Any, stride: Any, min_stride: int, what: str) -> None:
    for name, v in (("width", width), ("height", height), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise SourceError(f"{what}: {name} must be a whole number >= 1, got {v!r}")
    if width % 2 or height % 2:
        raise SourceError(f"{what}: I420 needs an even width and height, got {width}×{height}")
    if stride < min_stride:
        raise SourceError(f"{what}: a row stride of {stride} bytes is shorter than the row ({min_stride} bytes)")


def yuyv_to_i420(buf: Any, width: int, height: int, stride: int | None = None) -> np.ndarray:
    """A YUYV (YUY2, packed 4:2:2: Y0 U Y1 V per two pixels) buffer of rows ``stride`` bytes apart
    (default ``2 * width``) as an I420 ``(height * 3/2, width)`` array: the Y plane as it is, U and
    V of each pair of rows averaged (rounding halves up, as FFmpeg's own YUYV → yuv420p conversion)."""
    stride = 2 * width if stride is None else stride
    _check_size(width, height, stride, 2 * width, "YUYV frame")
    flat = _buffer(buf, stride * (height - 1) + 2 * width, "YUYV frame")
    rows = np.lib.stride_tricks.as_strided(flat, (height, 2 * width), (stride, 1), writeable=False)
    out = np.empty((height * 3 // 2, width), np.uint8)
    out[:height] = rows[:, 0::2]
    quarter = (height // 2) * (width // 2)
    for plane, first in ((0, 1), (1, 3)):  # U at byte 1 of each 4, V at byte 3
        c = rows[:, first::4]
        avg = (c[0::2].astype(np.uint16) + c[1::2] + 1) >> 1
        out[height:].reshape(-1)[plane * quarter:(plane + 1) * quarter] = avg.reshape(-1)
    return out


def yuv420_to_i420(buf: Any, width: int, height: int, stride: int) -> np.ndarray:
    """A planar YUV420 buffer whose luma rows are ``stride`` bytes apart and chroma rows
    ``stride / 2`` (libcamera's layout, what picamera2's ``make_buffer`` / ``make_array`` give
    for a ``YUV420`` stream: Y plane, then U, then V, each row padded) as a tight I420
    ``(height * 3/2, width)`` array: the planes copied without their padding."""
    _check_size(width, height, stride, width, "YUV420 frame")
    if stride % 2:
        raise SourceError(f"YUV420 frame: the row stride must be even (chroma rows are half of it), got {stride}")
    cs, ch, cw = stride // 2, height // 2, width // 2
    flat = _buffer(buf, stride * height + 2 * cs * ch, "YUV420 frame")
    out = np.empty((height * 3 // 2, width), np.uint8)
    out[:height] = flat[: stride * height].reshape(height, stride)[:, :width]
    chroma = out[height:].reshape(-1)
    for plane in range(2):
        start = stride * height + plane * cs * ch
        chroma[plane * cw * ch:(plane + 1) * cw * ch] = flat[start:start + cs * ch].reshape(ch, cs)[:, :cw].reshape(-1)
    return out


# --- V4L2 through PyAV ---------------------------------------------------------------------------


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise SourceError("USB cameras (/dev/videoN) need PyAV: pip install 'streampi[cameras]'") from None
    return av


def _check_wanted_size(size: Any) -> tuple[int, int]:
    try:
        w, h = size
    except (TypeError, ValueError):
        raise SourceError(f"size must be (width, height), got {size!r}") from None
    for v in (w, h):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 2 <= v <= 8192:
            raise SourceError(f"size must be two whole numbers from 2 to 8192 (width, height), got {size!r}")
    if w % 2 or h % 2:
        raise SourceError(f"camera frames need an even width and height, got {w}×{h}")
    return int(w), int(h)


class V4L2Camera(Source):
    """A USB (UVC) camera at ``path``, asked for ``size`` in MJPEG (``fmt="jpeg"``) or YUYV
    (``fmt="i420"``). Opening the device checks that it answers (a clear :class:`SourceError`
    with FFmpeg's reason otherwise); the camera keeps the size it can do nearest to the one
    asked, and frames carry the size it delivers. ``demuxer`` and ``options`` are FFmpeg's
    input format and its options (``v4l2`` and the size, format and rate: other values read
    recorded streams the same way)."""

    live = True

    def __init__(self, path: str, size: tuple[int, int] = (640, 480), fmt: str = "jpeg", *, fps: float | None = None,
                 demuxer: str = "v4l2", options: dict[str, str] | None = None) -> None:
        super().__init__(path)
        if fmt not in V4L2_FORMATS:
            raise SourceError(f"{path}: USB cameras give {' or '.join(V4L2_FORMATS)} frames, not {fmt!r}")
        self.path, self.fmt = path, fmt
        w, h = _check_wanted_size(size)
        self.options = {"video_size": f"{w}x{h}", "input_format": _V4L2_INPUT[fmt]} if options is None else options
        if fps is not None and options is None:
            self.options["framerate"] = f"{float(fps):g}"
        self.demuxer = demuxer
        self._av = _av()
        self._lock = threading.Lock()
        self._container = self._open()

    def _open(self) -> Any:
        try:
            container = self._av.open(self.path, format=self.demuxer, options=self.options)
        except self._av.FFmpegError as exc:
            raise SourceError(f"{self.path}: the camera cannot be opened ({self.demuxer}, "
                              f"{' '.join(f'{k}={v}' for k, v in self.options.items())}): {exc}") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.path}: the device gives no video stream")
        return container

    def close(self) -> None:
        super().close()
        with self._lock:
            if self._container is not None:
                self._container.close()
                self._container = None

    def _frames(self) -> Generator[Frame, None, None]:
        with self._lock:
            container, self._container = self._container, None
        if container is None:
            container = self._open()
        try:
            stream = container.streams.video[0]
            w, h = stream.codec_context.width, stream.codec_context.height
            try:
                for i, packet in enumerate(container.demux(stream)):
                    if packet.size == 0:  # a flush packet at the end
                        continue
                    data = bytes(packet)
                    if self.fmt == "jpeg":
                        yield Frame(data, "jpeg", f"{self.path} frame {i}")
                    else:
                        yield Frame(yuyv_to_i420(data, w, h), "i420", f"{self.path} frame {i}", width=w, height=h)
            except self._av.FFmpegError as exc:
                raise SourceError(f"{self.path}: reading the camera failed: {exc}") from None
        finally:
            container.close()


# --- the Pi camera through picamera2 ---------------------------------------------------------------


def _picamera2() -> Any:
    try:
        import picamera2
    except ImportError:
        raise SourceError("the Pi camera needs picamera2: on Raspberry Pi OS `sudo apt install python3-picamera2`; "
                          "a virtual environment sees it only when made with `python3 -m venv "
                          "--system-site-packages`") from None
    return picamera2


class PiCamera(Source):
    """The Pi camera number ``camera`` through picamera2: a ``lores`` YUV420 stream of ``size``
    (BT.601 limited range), each frame turned into I420 (:func:`yuv420_to_i420`). The main
    stream, which libcamera needs beside it, is YUV420 at twice the size and never read."""

    live = True

    def __init__(self, camera: int = 0, size: tuple[int, int] = (320, 240)) -> None:
        super().__init__(f"picamera2:{camera}")
        w, h = _check_wanted_size(size)
        picamera2 = _picamera2()
        self._cam = None
        try:
            from libcamera import ColorSpace

            self._cam = picamera2.Picamera2(camera_num=camera)
            config = self._cam.create_video_configuration(
                main={"size": (2 * w, 2 * h), "format": "YUV420"}, lores={"size": (w, h), "format": "YUV420"},
                colour_space=ColorSpace.Smpte170m())
            self._cam.configure(config)
            lores = self._cam.stream_configuration("lores")
            self.width, self.height = lores["size"]
            self.stride = lores["stride"]
            self._cam.start()
        except Exception as exc:  # picamera2 raises RuntimeError (IndexError in older versions) for a missing camera
            if self._cam is not None:
                self._cam.close()
                self._cam = None
            raise SourceError(f"picamera2:{camera}: the camera cannot be opened: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        super().close()
        cam, self._cam = getattr(self, "_cam", None), None
        if cam is not None:
            cam.stop()
            cam.close()

    def _frames(self) -> Generator[Frame, None, None]:
        i = 0
        while self._cam is not None:
            request = self._cam.capture_request()
            try:
                buf = request.make_buffer("lores")
            finally:
                request.release()
            yield Frame(yuv420_to_i420(buf, self.width, self.height, self.stride), "i420", f"{self.name} frame {i}",
                        width=self.width, height=self.height)
            i += 1


# --- one entry point -------------------------------------------------------------------------------

_PICAMERA = re.compile(r"picamera2(?::(\d+))?")


def open_device(spec: str, *, size: tuple[int, int] = (640, 480), fmt: str | None = None) -> Source:
    """Open a camera on this machine: ``/dev/videoN`` (any V4L2 device path) in ``fmt``
    ``"jpeg"`` (MJPEG, the default) or ``"i420"`` (from YUYV), or ``picamera2`` /
    ``picamera2:N`` (``fmt`` ``"i420"``, the default), at ``size`` (width, height). Raises
    :class:`SourceError` saying what to install or why the device does not open."""
    spec = str(spec)
    match = _PICAMERA.fullmatch(spec)
    if match:
        if fmt not in (None, "i420"):
            raise SourceError(f"{spec}: the Pi camera gives i420 frames (its YUV420 stream), not {fmt!r}")
        return PiCamera(int(match.group(1) or 0), size)
    if spec.startswith("/dev/"):
        return V4L2Camera(spec, size, fmt or "jpeg")
    raise SourceError(f"{spec!r} is not a camera on this machine (expected /dev/videoN, picamera2 or picamera2:N)")
