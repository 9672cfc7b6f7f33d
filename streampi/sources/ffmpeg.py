"""``--decoder ffmpeg``: an ``ffmpeg`` subprocess decodes and writes raw ``yuv420p`` frames to a
pipe, which this module reads as ``i420`` frames. That is how a Raspberry Pi 4 decodes H.264 in
hardware: the ffmpeg of Raspberry Pi OS has the V4L2 memory-to-memory decoder, chosen with
``codec="h264_v4l2m2m"`` (``--ffmpeg-codec h264_v4l2m2m``). It needs no PyAV, only the program.

The frame size is read from the line ffmpeg logs for its output stream before it writes the
first frame; ffmpeg's own last lines are the reason given when it fails.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Generator

from ..errors import SourceError
from .base import Frame, Source
from .live import CameraError, LiveSource, redact

OPEN_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 5.0
_CONTEXT = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")
_OUTPUT_SIZE = re.compile(rb"Video: rawvideo.*?, (\d{1,5})x(\d{1,5})")
_TRANSIENT_WORDS = (b"Connection refused", b"timed out", b"No route to host", b"Network is unreachable",
                    b"Connection reset", b"End of file", b"Broken pipe", b"Input/output error")


def ffmpeg_command(url: str, *, codec: str | None = None, transport: str = "tcp", read_timeout: float =
                   READ_TIMEOUT_S, program: str = "ffmpeg") -> list[str]:
    """The ffmpeg command line that decodes ``url`` into raw yuv420p on its standard output."""
    cmd = [program, "-hide_banner", "-nostdin", "-loglevel", "info", "-nostats"]
    if url.startswith(("rtsp://", "rtsps://")):
        cmd += ["-rtsp_transport", transport, "-timeout", str(int(read_timeout * 1e6))]
    if "://" in url:
        cmd += ["-flags", "low_delay", "-analyzeduration", "1000000"]
    if codec:
        cmd += ["-c:v", codec]
    return cmd + ["-i", url, "-an", "-sn", "-dn", "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"]


class _Pipe:
    """One ffmpeg process. ``read`` returns the next frame from its pipe, ``None`` once it ended
    cleanly (a file), or raises :class:`CameraError` with ffmpeg's last words."""

    def __init__(self, url: str, cmd: list[str], open_timeout: float) -> None:
        self.url = redact(url)
        self.log: collections.deque[bytes] = collections.deque(maxlen=12)
        self._size: tuple[int, int] | None = None
        self._sized = threading.Event()
        self._closed = False
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise CameraError(f"{self.url}: ffmpeg cannot be started ({exc})") from None
        threading.Thread(target=self._stderr, name="ffmpeg log", daemon=True).start()
        if not self._sized.wait(open_timeout) or self._size is None:
            self.close()
            if not self.log:
                self.log.append(f"no video after {open_timeout:g} s".encode())
            raise CameraError(f"{self.url} cannot be opened: {self.reason()}", transient=self._transient())
        self.width, self.height = self._size
        if self.width % 2 or self.height % 2:
            self.close()
            raise CameraError(f"{self.url}: {self.width}x{self.height} is odd; yuv420p needs an even width and height")
        self.frame_bytes = self.width * self.height * 3 // 2
        self.n = 0

    def _stderr(self) -> None:
        output = False
        for line in iter(self.proc.stderr.readline, b""):
            line = line.rstrip()
            if line.startswith(b"Output #0"):
                output = True
            elif output and self._size is None and (m := _OUTPUT_SIZE.search(line)):
                self._size = (int(m[1]), int(m[2]))
                self._sized.set()
            if line and not line.startswith((b"  ", b"Input #", b"Output #", b"Stream mapping", b"Press [q]")):
                self.log.append(line)
        self._sized.set()  # ffmpeg ended before any output: the waiter reads its last words

    def reason(self) -> str:
        """ffmpeg's last lines, without the ``[tcp @ 0x…]`` context it prefixes them with."""
        lines = [_CONTEXT.sub("", raw.decode("utf-8", "replace")) for raw in self.log]
        return "; ".join(lines[-3:]) or f"ffmpeg exited with {self.proc.poll()}"

    def _transient(self) -> bool:
        return any(word in line for line in self.log for word in _TRANSIENT_WORDS) or not self.log

    def read(self) -> Frame | None:
        buf = bytearray(self.frame_bytes)
        view, got = memoryview(buf), 0
        while got < self.frame_bytes:
            n = self.proc.stdout.readinto(view[got:])
            if not n:
                break
            got += n
        if got < self.frame_bytes:
            if self._closed:
                return None
            code = self.proc.wait()
            if code == 0 and got == 0:
                return None  # the input ended (a file)
            raise CameraError(f"{self.url}: ffmpeg stopped ({self.reason()})", transient=True)
        import numpy as np

        now = time.time()
        data = np.frombuffer(buf, np.uint8).reshape(self.height * 3 // 2, self.width)
        frame = Frame(data, "i420", f"{self.url} frame {self.n}", captured=now, decoded=now,
                      width=self.width, height=self.height)
        self.n += 1
        return frame

    def close(self) -> None:
        self._closed = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass


def _program() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        raise SourceError("--decoder ffmpeg needs the ffmpeg program (apt install ffmpeg)")
    return found


class FfmpegCamera(LiveSource):
    """A network camera decoded by an ``ffmpeg`` subprocess (``codec``: ffmpeg's decoder, e.g.
    ``h264_v4l2m2m`` on a Pi 4), read on the camera's thread: newest frame, reopen with back-off."""

    def __init__(self, url: str, *, codec: str | None = None, transport: str = "tcp", wait: bool = False,
                 open_timeout: float = OPEN_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S) -> None:
        self.url = url
        self.cmd = ffmpeg_command(url, codec=codec, transport=transport, read_timeout=read_timeout,
                                  program=_program())
        self.open_timeout = open_timeout
        super().__init__(redact(url), wait=wait)

    def _open(self) -> _Pipe:
        return _Pipe(self.url, self.cmd, self.open_timeout)


class FfmpegFile(Source):
    """A video file decoded by an ``ffmpeg`` subprocess, frame by frame (not live: as fast as read)."""

    def __init__(self, path: os.PathLike | str, loop: bool = False, codec: str | None = None) -> None:
        super().__init__(str(path), loop)
        self.cmd = ffmpeg_command(str(path), codec=codec, program=_program())
        _Pipe(str(path), self.cmd, OPEN_TIMEOUT_S).close()  # a file that is no video: said now

    def _frames(self) -> Generator[Frame, None, None]:
        while True:
            pipe, read = _Pipe(self.name, self.cmd, OPEN_TIMEOUT_S), 0
            try:
                while (frame := pipe.read()) is not None:
                    yield frame
                    read += 1
            finally:
                pipe.close()
            if not read or not self.loop:
                return
