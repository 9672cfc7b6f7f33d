"""Live cameras: one reader thread per camera that keeps only the newest frame, reopens a camera
that drops with a capped back-off, and counts what became of every frame.

A camera is read by a *session* (one connection: an RTSP stream decoded by PyAV or an ``ffmpeg``
pipe, an HTTP MJPEG response...). :class:`LiveSource` runs sessions on its thread, one after the
other, for as long as it is open:

- the thread reads as fast as the camera sends; a frame nobody has taken when the next one is
  decoded is *replaced* (counted), so a slow consumer never makes a backlog and always gets the
  newest frame;
- a session that fails (the server restarted, the link cut, the stream ended) is closed and the
  camera reopened after 1 s, then 2, 4... up to 30 s between attempts, back to 1 s once frames
  flow again; each change of state (up, down with its reason) is logged once, not per attempt;
- the first open happens in the constructor, so that a camera that cannot be opened is said at
  once (:class:`~streampi.errors.SourceError` naming the URL and FFmpeg's or the server's reason).
  With ``wait=True`` a camera that is only *unreachable* (connection refused, timed out, no
  route: it may be booting or rebooting) is waited for instead, with the same back-off; an error
  that waiting cannot mend (a malformed URL, a refused login, no such stream, not a video) is
  raised at once either way.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
import urllib.parse
from collections.abc import Generator
from typing import Protocol

from ..errors import SourceError
from .base import Frame, Source

log = logging.getLogger("streampi.camera")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0

#: errno values of a camera that is not there *yet* (or any more): worth waiting for
TRANSIENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ECONNRESET", "ECONNABORTED", "EPIPE", "EIO",
    "EAGAIN", "EHOSTDOWN", "ENETDOWN") if hasattr(errno, name))


class CameraError(SourceError):
    """A camera could not be opened or read. ``transient``: it may come back by itself (refused,
    timed out, unreachable, the stream ended), as opposed to an error waiting cannot mend."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Session(Protocol):
    """One connection to a camera. ``read`` returns the next frame, ``None`` when the stream
    ended, or raises :class:`CameraError`; ``close`` releases it and may be called from another
    thread to end a ``read`` that waits."""

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class LiveSource(Source):
    """A camera read on a thread of its own; iterating yields the newest frame each time one
    is decoded (never an older one), :meth:`take` the newest not taken yet. Subclasses give
    :meth:`_open` (a new :class:`Session`, or :class:`CameraError`)."""

    live = True

    def __init__(self, name: str, *, wait: bool = False) -> None:
        super().__init__(name)
        #: frames decoded; replaced (decoded, then superseded before anyone took them); taken;
        #: reconnects (sessions opened after the first); attempts (opens that failed)
        self.decoded = self.replaced = self.taken = self.reconnects = self.failed_opens = 0
        self.state, self.reason = "opening", ""
        self._cond = threading.Condition()
        self._newest: Frame | None = None
        self._stop = threading.Event()
        self._session: Session | None = None
        self._ever_up = False
        try:
            session: Session | None = self._open()
        except CameraError as exc:
            if not (wait and exc.transient):
                raise
            self.failed_opens += 1
            self._set_state("down", str(exc))
            session = None
        else:
            self._set_state("up", "")
        self._thread = threading.Thread(target=self._run, args=(session,), name=f"camera {name}", daemon=True)
        self._thread.start()

    # -- what subclasses give ---------------------------------------------------------------------
    def _open(self) -> Session:
        raise NotImplementedError

    # -- the reader thread ------------------------------------------------------------------------
    def _set_state(self, state: str, reason: str) -> None:
        for prefix in (f"{self.name}: ", f"{self.name} "):  # the camera's name is said once, by the log line
            if reason.startswith(prefix):
                reason = reason[len(prefix):]
        if state == self.state:
            if reason and reason != self.reason:
                log.debug("camera %s still %s: %s", self.name, state, reason)
            self.reason = reason or self.reason
            return
        self.state, self.reason = state, reason
        if state == "up":
            log.info("camera %s is up%s", self.name, " again" if self._ever_up else "")
            self._ever_up = True
        else:
            log.warning("camera %s is down: %s (reopening with back-off %g s to %g s)", self.name, reason,
                        BACKOFF_FIRST_S, BACKOFF_MAX_S)

    def _run(self, session: Session | None) -> None:
        delay = BACKOFF_FIRST_S
        while not self._stop.is_set():
            if session is None:
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, BACKOFF_MAX_S)
                try:
                    session = self._open()
                except CameraError as exc:
                    self.failed_opens += 1
                    self._set_state("down", str(exc))
                    continue
                except Exception as exc:  # never let the thread die: a camera fault is not a crash
                    self.failed_opens += 1
                    self._set_state("down", f"{type(exc).__name__}: {exc}")
                    continue
                self.reconnects += 1
                self._set_state("up", "")
            with self._cond:
                self._session = session
            if self._stop.is_set():  # close() came while this session opened
                session.close()
                break
            try:
                while not self._stop.is_set():
                    frame = session.read()
                    if frame is None:
                        raise CameraError(f"{self.name}: the stream ended", transient=True)
                    self._put(frame)
                    delay = BACKOFF_FIRST_S
            except Exception as exc:
                if not self._stop.is_set():
                    self._set_state("down", str(exc) if isinstance(exc, SourceError)
                                    else f"{type(exc).__name__}: {exc}")
            finally:
                with self._cond:
                    self._session = None
                session.close()
                session = None
        with self._cond:
            self.state = "closed"
            self._cond.notify_all()

    def _put(self, frame: Frame) -> None:
        with self._cond:
            self.decoded += 1
            if self._newest is not None:
                self.replaced += 1
            self._newest = frame
            self._cond.notify_all()

    # -- the consumer's side ----------------------------------------------------------------------
    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not taken yet, waiting up to ``timeout`` seconds (``None``: until
        one comes or the source is closed) for one; ``None`` if none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._newest is None and not self._stop.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            frame, self._newest = self._newest, None
            if frame is not None:
                self.taken += 1
            return frame

    @property
    def pending(self) -> int:
        """1 when a decoded frame waits to be taken, else 0."""
        return int(self._newest is not None)

    def stats(self) -> dict[str, object]:
        """decoded = taken + replaced + pending, at any moment; reconnects; state and reason."""
        with self._cond:
            return {"decoded": self.decoded, "taken": self.taken, "replaced": self.replaced,
                    "pending": self.pending, "reconnects": self.reconnects, "failed_opens": self.failed_opens,
                    "state": self.state, "reason": self.reason}

    def _frames(self) -> Generator[Frame, None, None]:
        while not self._stop.is_set():
            frame = self.take(0.5)
            if frame is not None:
                yield frame

    def close(self, timeout: float = 10.0) -> None:
        """Stop the reader thread (a read that waits is ended by closing its session) and wait
        up to ``timeout`` seconds for it. A frame still pending counts as replaced."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._cond:
            session = self._session
            self._cond.notify_all()
        if session is not None:
            session.close()
        self._thread.join(timeout)
        with self._cond:
            if self._newest is not None:
                self._newest = None
                self.replaced += 1
        for frames in list(self._passes):
            try:
                frames.close()
            except ValueError:  # running in another thread: it sees the stop and ends by itself
                pass


class _Pass:
    """One pass over a source read frame by frame (a device: each pass opens it anew). ``close``
    from another thread only asks; the reader ends the pass after the frame it waits for."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.frames = iter(source)
        self._owner: threading.Thread | None = None
        self._closed = self._released = False

    def read(self) -> Frame | None:
        self._owner = threading.current_thread()
        if self._closed:
            return None
        try:
            return next(self.frames, None)
        except SourceError as exc:
            raise CameraError(str(exc), transient=True) from None

    def close(self) -> None:
        self._closed = True
        if self._owner in (None, threading.current_thread()) and not self._released:
            self._released = True
            self.frames.close()


class Threaded(LiveSource):
    """A live source that yields frames as it captures them (a V4L2 or Pi camera), read on a
    thread of its own like any camera here: the newest frame, reopened with back-off when it
    fails (a USB camera unplugged and plugged back)."""

    def __init__(self, inner: Source, *, wait: bool = False) -> None:
        self.inner = inner
        super().__init__(inner.name, wait=wait)

    def _open(self) -> _Pass:
        return _Pass(self.inner)

    def close(self, timeout: float = 10.0) -> None:
        super().close(timeout)
        self.inner.close()


def is_transient(exc: BaseException) -> bool:
    """Whether an error opening or reading a camera may mend by itself (see TRANSIENT_ERRNOS)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def redact(url: str) -> str:
    """``url`` without its password (``user:***@host``), for names, logs and frame origins."""
    parts = urllib.parse.urlsplit(url)
    try:
        if parts.password is None:
            return url
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}{port}"))
