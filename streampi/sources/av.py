"""RTSP cameras and video files decoded by PyAV (FFmpeg's libraries in the wheel; aarch64 wheels
too): ``pip install 'streampi[cameras]'``. Imported only when such a source is opened.

Frames come out as they are decoded: ``yuv420p`` (what H.264 cameras send) is passed on as
``i420`` without any conversion, a plane copy at most; any other pixel format (full-range
``yuvj420p`` from MJPEG, 4:2:2, NV12...) is converted to limited-range ``yuv420p`` by libswscale,
never to RGB: the server's kernels read I420 directly.

RTSP is opened over TCP by default (UDP loses packets on Wi-Fi: smeared frames), with FFmpeg's
low-delay flags (:data:`RTSP_OPTIONS`) and a read time-out, and decoded on the
camera's own thread (:class:`~streampi.sources.live.LiveSource`), which keeps only the newest frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from ..errors import SourceError
from .base import Frame, Source, spread
from .live import CameraError, LiveSource, is_transient, redact

#: FFmpeg options for a live RTSP camera: TCP transport, low-delay decoding, at most 0.5 s of
#: reordering delay and 1 s of probing. Not ``fflags=nobuffer``: it throws away the packets read
#: while probing the stream, up to a second of frames; kept, they are decoded at once and only the
#: newest is sent, so they cost no delay here.
RTSP_OPTIONS = {"rtsp_transport": "tcp", "flags": "low_delay", "max_delay": "500000", "analyzeduration": "1000000"}
OPEN_TIMEOUT_S = 10.0  # connect + DESCRIBE/SETUP/PLAY + the first packets
READ_TIMEOUT_S = 5.0  # no packet for this long: the camera is down
THREADS = ("auto", "1")


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise SourceError("RTSP cameras and video files need PyAV: pip install 'streampi[cameras]' "
                          "(or av); or use --decoder ffmpeg with the ffmpeg program") from None
    # FFmpeg's log stays off (PyAV's default): its callback takes the GIL from FFmpeg's decoding
    # threads and can deadlock a frame-threaded decoder; the reasons are PyAV's errno texts, and
    # `--decoder ffmpeg` says FFmpeg's whole last lines
    return av


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words for an error, without PyAV's repetition of the URL."""
    strerror = getattr(exc, "strerror", None)
    if strerror:
        log = getattr(exc, "log", None)  # the last line FFmpeg logged, when PyAV kept it
        detail = f" ({log[2].strip()})" if log and len(log) > 2 and log[2] and log[2].strip() != strerror else ""
        return f"{strerror}{detail}"
    return f"{type(exc).__name__}: {exc}"


def is_transient_av(exc: BaseException) -> bool:
    av = _av()
    if isinstance(exc, (av.error.ExitError, av.error.EOFError)):  # ExitError: our read time-out fired
        return True
    return is_transient(exc)


def to_i420(frame: Any) -> Any:
    """A decoded ``av.VideoFrame`` as an ``(H * 3 / 2, W)`` uint8 I420 array: as it is when it
    is ``yuv420p``, else converted by libswscale (range and chroma; odd sizes made even)."""
    width, height = frame.width, frame.height
    if frame.format.name != "yuv420p" or width % 2 or height % 2:
        frame = frame.reformat(width=width - width % 2, height=height - height % 2, format="yuv420p")
    return frame.to_ndarray()


def set_threads(stream: Any, threads: str) -> None:
    """``auto``: FFmpeg's frame and slice threads, as many as cores (more throughput, a frame of
    delay per thread); ``1``: one thread, the least delay and CPU overhead."""
    if threads not in THREADS:
        raise SourceError(f"decoder threads must be one of {', '.join(THREADS)}, got {threads!r}")
    ctx = stream.codec_context
    if threads == "auto":
        ctx.thread_type = "AUTO"
        ctx.thread_count = 0
    else:
        ctx.thread_type = "SLICE"
        ctx.thread_count = 1


class _PyAVSession:
    """One RTSP connection, demuxed and decoded frame by frame on the camera's reader thread.
    Only that thread touches the container: ``close`` from another thread only asks, and the
    reader releases it after its current read, which returns within the read time-out."""

    def __init__(self, url: str, options: dict[str, str], threads: str, open_timeout: float,
                 read_timeout: float) -> None:
        av = _av()
        self.url = redact(url)
        self._closed = self._released = False
        self._owner: threading.Thread | None = None
        try:
            self.container = av.open(url, options=options, timeout=(open_timeout, read_timeout))
        except av.error.FFmpegError as exc:
            raise CameraError(f"{self.url} cannot be opened: {_reason(exc)}",
                              transient=is_transient_av(exc)) from None
        except OSError as exc:
            raise CameraError(f"{self.url} cannot be opened: {exc}", transient=is_transient(exc)) from None
        try:
            if not self.container.streams.video:
                raise CameraError(f"{self.url} has no video stream")
            self.stream = self.container.streams.video[0]
            set_threads(self.stream, threads)
        except BaseException:
            self.container.close()
            raise
        self._frames = self._decode()

    def _decode(self) -> Iterator[Frame]:
        av = _av()
        arrived: dict[int | None, float] = {}  # packet pts -> when it came in (frames leave the decoder later)
        n = 0
        try:
            for packet in self.container.demux(self.stream):
                now = time.time()
                if packet.size:
                    arrived[packet.pts] = now
                    if len(arrived) > 64:
                        arrived.pop(next(iter(arrived)))
                for frame in packet.decode():
                    data = to_i420(frame)
                    pts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
                    yield Frame(data, "i420", f"{self.url} frame {n}", captured=arrived.pop(frame.pts, now),
                                pts=pts, decoded=time.time())
                    n += 1
                if self._closed:
                    return
        except av.error.FFmpegError as exc:
            if self._closed:
                return
            raise CameraError(f"{self.url}: {_reason(exc)}", transient=is_transient_av(exc)) from None

    def read(self) -> Frame | None:
        self._owner = threading.current_thread()
        if self._closed:
            return None
        return next(self._frames, None)

    def close(self) -> None:
        self._closed = True
        if self._owner in (None, threading.current_thread()) and not self._released:
            self._released = True
            self._frames.close()
            self.container.close()


class RtspCamera(LiveSource):
    """An RTSP (or RTSPS) camera decoded by PyAV on the camera's thread. ``transport``: ``tcp``
    (the default) or ``udp``; ``threads``: ``1`` (the default: least delay) or ``auto`` (see
    :func:`set_threads`)."""

    def __init__(self, url: str, *, transport: str = "tcp", threads: str = "1", wait: bool = False,
                 open_timeout: float = OPEN_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S) -> None:
        if transport not in ("tcp", "udp"):
            raise SourceError(f"RTSP transport must be tcp or udp, got {transport!r}")
        if threads not in THREADS:
            raise SourceError(f"decoder threads must be one of {', '.join(THREADS)}, got {threads!r}")
        _av()
        self.url = url
        self.options = dict(RTSP_OPTIONS, rtsp_transport=transport)
        self.threads, self.open_timeout, self.read_timeout = threads, open_timeout, read_timeout
        super().__init__(redact(url), wait=wait)

    def _open(self) -> _PyAVSession:
        return _PyAVSession(self.url, self.options, self.threads, self.open_timeout, self.read_timeout)


class VideoFile(Source):
    """The frames of a video file decoded by PyAV, as ``i420``. Opening checks that the file is
    a video with at least one frame; each pass reopens it. ``threads``: ``auto`` (the default:
    a file is read for throughput) or ``1``."""

    def __init__(self, path: Path, loop: bool = False, threads: str = "auto") -> None:
        super().__init__(str(path), loop)
        self.path, self.threads = path, threads
        self._av = _av()
        with self._open() as container:
            stream = container.streams.video[0]
            #: frames the container declares (0: unknown; sample() then takes the first n)
            self.frame_count = max(0, int(stream.frames or 0))
            try:
                first = next(container.decode(stream), None)
            except self._av.error.FFmpegError as exc:
                raise SourceError(f"{path}: no frame can be decoded ({_reason(exc)})") from None
            if first is None:
                raise SourceError(f"no frames in {path} (PyAV opens it but decodes none)")

    def _open(self) -> Any:
        try:
            container = self._av.open(str(self.path))
        except self._av.error.FFmpegError as exc:
            raise SourceError(f"{self.path} is not a video PyAV can open ({_reason(exc)}; "
                              f"nor a folder of images, nor 'synthetic')") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.path} has no video stream")
        set_threads(container.streams.video[0], self.threads)
        return container

    def _decoded(self) -> Generator[tuple[int, Any], None, None]:
        with self._open() as container:
            stream = container.streams.video[0]
            try:
                yield from enumerate(container.decode(stream))
            except self._av.error.FFmpegError as exc:
                raise SourceError(f"{self.path}: decoding failed ({_reason(exc)})") from None

    def _frame(self, frame: Any, i: int) -> Frame:
        pts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
        now = time.time()
        return Frame(to_i420(frame), "i420", f"{self.path} frame {i}", captured=now, pts=pts, decoded=now)

    def _frames(self) -> Generator[Frame, None, None]:
        while True:
            read = 0
            for i, frame in self._decoded():
                yield self._frame(frame, i)
                read = i + 1
            if not read:  # a loop over a file that lost its frames would spin forever
                raise SourceError(f"no frames in {self.path} (PyAV opens it but decodes none)")
            if not self.loop:
                return

    def _sample(self, n: int) -> Generator[Frame, None, None]:
        wanted = set(spread(self.frame_count, n)) if self.frame_count else set(range(n))
        taken = 0
        for i, frame in self._decoded():  # decoded all the same (H.264 needs it); converted only when wanted
            if i in wanted:
                taken += 1
                yield self._frame(frame, i)
            if taken == len(wanted) or i >= max(wanted):
                break
        if not taken:
            raise SourceError(f"no frames could be read from {self.path}")
