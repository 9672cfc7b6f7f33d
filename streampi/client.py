"""Producers and subscribers: the client side of protocol v1.

Each comes in a blocking and an asyncio flavour with the same method names, as pyzmq's
``zmq.Socket`` and ``zmq.asyncio.Socket`` do: :class:`Producer` / :class:`AsyncProducer`
and :class:`Subscriber` / :class:`AsyncSubscriber`. They share only :mod:`streampi.protocol`
with the server.

    with Producer("tcp://127.0.0.1:5555", stream="cam0") as cam:
        cam.send(rgb_array)                      # fmt from the array's shape: rgb or gray
        cam.send(jpeg_bytes, fmt="jpeg")
    with Subscriber("tcp://127.0.0.1:5556", streams=["cam0"]) as sub:
        result = sub.recv(timeout=5)             # a dict, see docs/protocol.md

With ``curve_secret=`` (this client's ``NAME.key_secret``) and ``curve_server=`` (the
server's public ``NAME.key``) the socket speaks CurveZMQ (see :mod:`streampi.auth`); a
handshake that does not succeed within the call's timeout (or ``handshake_timeout``) raises
:class:`~streampi.errors.AuthError` instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from . import auth, protocol
from .errors import FrameError
from .formats import FORMATS, RAW_FORMATS, check_raw_size

DEFAULT_FRAMES = "tcp://127.0.0.1:5555"
DEFAULT_RESULTS = "tcp://127.0.0.1:5556"


def _infer(frame: Any, fmt: str | None, width: int | None, height: int | None) -> tuple[str, int | None, int | None]:
    """Format and size from a NumPy frame's shape where they are not given."""
    if fmt is None:
        if isinstance(frame, np.ndarray):
            fmt = "gray" if frame.ndim == 2 else {3: "rgb", 4: "rgba"}.get(frame.shape[-1], "")
        elif isinstance(frame, (bytes, bytearray, memoryview)) and bytes(frame[:2]) == b"\xff\xd8":
            fmt = "jpeg"
    if fmt not in FORMATS:
        raise FrameError(f"cannot tell the frame's format; pass fmt= one of {', '.join(FORMATS)}")
    if fmt in RAW_FORMATS and (width is None or height is None):
        if not isinstance(frame, np.ndarray):
            raise FrameError(f"{fmt} frames given as bytes need width= and height=")
        if fmt in ("i420", "nv12"):
            height, width = frame.shape[0] * 2 // 3, frame.shape[1]
        else:
            height, width = frame.shape[:2]
    return fmt, width, height


class _SocketHolder:
    """close(), the context-manager protocol and the CurveZMQ set-up of every client."""

    _sock: Any
    _watch: auth.HandshakeWatch | None = None
    endpoint: str
    handshake_timeout: float = 10.0

    def _connect(self, endpoint: str, curve_secret: Any, curve_server: Any) -> None:
        if curve_secret is not None or curve_server is not None:
            try:
                auth.apply_client(self._sock, curve_secret, curve_server)
            except Exception:
                self._sock.close()
                raise
            self._watch = auth.HandshakeWatch(self._sock, endpoint)
        self._sock.connect(endpoint)

    def _handshake_wait(self, timeout: float | None) -> float | None:
        """Wait for the CurveZMQ handshake (blocking); return the time left of ``timeout``."""
        if self._watch is None or self._watch.succeeded:
            return timeout
        limit = self.handshake_timeout if timeout is None else timeout
        t0 = time.monotonic()
        if not self._watch.wait(limit):
            raise self._watch.error(limit)
        return None if timeout is None else max(0.0, timeout - (time.monotonic() - t0))

    async def _handshake_wait_async(self, timeout: float | None) -> float | None:
        if self._watch is None or self._watch.succeeded:
            return timeout
        limit = self.handshake_timeout if timeout is None else timeout
        t0 = time.monotonic()
        while not self._watch.poll():
            if time.monotonic() - t0 >= limit:
                raise self._watch.error(limit)
            await asyncio.sleep(0.02)
        return None if timeout is None else max(0.0, timeout - (time.monotonic() - t0))

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _ProducerBase(_SocketHolder):
    def __init__(self, endpoint: str = DEFAULT_FRAMES, stream: str = "cam0", *, fmt: str | None = None,
                 two_part: bool = True, sndhwm: int = 64, context: Any = None, start_seq: int = 0,
                 zero_copy: bool = False, limits: protocol.Limits = protocol.DEFAULT_LIMITS,
                 curve_secret: Any = None, curve_server: Any = None, handshake_timeout: float = 10.0) -> None:
        """``zero_copy=True`` hands ZeroMQ the frame's own buffer instead of a copy: saves a
        copy per frame, but the buffer must not change until ZeroMQ has sent it (a camera that
        captures into one reused array must keep the default). Queued frames are sent after
        ``close()`` while the process lives (the socket lingers 5 s)."""
        if not protocol.valid_stream(stream):
            raise ValueError(f"stream must be 1-64 characters of [A-Za-z0-9._-], not starting with '_': {stream!r}")
        self.endpoint, self.stream, self.fmt, self.two_part = endpoint, stream, fmt, two_part
        self.zero_copy = zero_copy
        self.seq = start_seq
        self.limits = limits
        self.handshake_timeout = handshake_timeout
        self._sock = (context or self._context()).socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, 5000)
        self._connect(endpoint, curve_secret, curve_server)

    def _parts(self, frame: Any, fmt: str | None, width: int | None, height: int | None, ts: float | None,
               meta: dict | None, seq: int | None) -> list[Any]:
        fmt, width, height = _infer(frame, fmt or self.fmt, width, height)
        if fmt in RAW_FORMATS:
            nbytes = frame.nbytes if isinstance(frame, np.ndarray) else len(memoryview(frame).cast("B"))
            check_raw_size(fmt, width, height, nbytes, self.limits.max_pixels)
        if seq is None:
            seq = self.seq
        self.seq = seq + 1
        return protocol.encode_frame(self.stream, seq, fmt, frame, width if fmt in RAW_FORMATS else None,
                                     height if fmt in RAW_FORMATS else None,
                                     ts=time.time() if ts is None else ts, meta=meta, two_part=self.two_part)

class Producer(_ProducerBase):
    """Sends frames of one stream (blocking). ``send`` returns the frame's ``seq``."""

    @staticmethod
    def _context() -> zmq.Context:
        return zmq.Context.instance()

    def send(self, frame: Any, fmt: str | None = None, *, width: int | None = None, height: int | None = None,
             ts: float | None = None, meta: dict | None = None, seq: int | None = None,
             timeout: float | None = None) -> int:
        """Send one frame: a NumPy array, raw bytes (with width/height) or JPEG bytes.

        Blocks while the send queue is full (back-pressure); ``timeout`` (seconds) bounds
        that and raises ``TimeoutError``.
        """
        parts = self._parts(frame, fmt, width, height, ts, meta, seq)
        try:
            timeout = self._handshake_wait(timeout)
        except Exception:
            self.seq -= 1
            raise
        if timeout is not None and not self._sock.poll(int(timeout * 1000), zmq.POLLOUT):
            self.seq -= 1
            raise TimeoutError(f"could not send to {self.endpoint} within {timeout} s")
        self._sock.send_multipart(parts, copy=not self.zero_copy)
        return self.seq - 1


class AsyncProducer(_ProducerBase):
    """The asyncio flavour of :class:`Producer`: ``await send(...)``."""

    @staticmethod
    def _context() -> zmq.asyncio.Context:
        return zmq.asyncio.Context.instance()

    async def send(self, frame: Any, fmt: str | None = None, *, width: int | None = None, height: int | None = None,
                   ts: float | None = None, meta: dict | None = None, seq: int | None = None) -> int:
        parts = self._parts(frame, fmt, width, height, ts, meta, seq)
        try:
            await self._handshake_wait_async(None)
        except Exception:
            self.seq -= 1
            raise
        await self._sock.send_multipart(parts, copy=not self.zero_copy)
        return self.seq - 1


class _SubscriberBase(_SocketHolder):
    def __init__(self, endpoint: str = DEFAULT_RESULTS, streams: Iterable[str] = (), *, errors: bool = True,
                 rcvhwm: int = 100_000, context: Any = None, curve_secret: Any = None, curve_server: Any = None,
                 handshake_timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.handshake_timeout = handshake_timeout
        self._sock = (context or self._context()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        streams = list(streams)
        if not streams:
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        else:
            for s in [*streams, *([protocol.ERRORS_TOPIC] if errors else [])]:
                # the topic is a prefix match in ZeroMQ; the exact stream is checked on receipt
                self._sock.setsockopt(zmq.SUBSCRIBE, s.encode())
        self._wanted = set(streams) | ({protocol.ERRORS_TOPIC} if errors else set()) if streams else None
        self._connect(endpoint, curve_secret, curve_server)

    def _accept(self, parts: list) -> dict | None:
        topic = bytes(parts[0]).decode("utf-8", "replace")
        if self._wanted is not None and topic not in self._wanted:
            return None
        return protocol.decode_result(parts)

class Subscriber(_SubscriberBase):
    """Receives results (blocking). ``recv(timeout)`` returns one result dict or raises
    ``TimeoutError``; iterating yields results until closed."""

    @staticmethod
    def _context() -> zmq.Context:
        return zmq.Context.instance()

    def recv(self, timeout: float | None = None) -> dict:
        timeout = self._handshake_wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(wait):
                raise TimeoutError(f"no result from {self.endpoint} within {timeout} s")
            result = self._accept(self._sock.recv_multipart())
            if result is not None:
                return result

    def __iter__(self):
        while True:
            yield self.recv()


class AsyncSubscriber(_SubscriberBase):
    """The asyncio flavour of :class:`Subscriber`: ``await recv(timeout)``, ``async for``."""

    @staticmethod
    def _context() -> zmq.asyncio.Context:
        return zmq.asyncio.Context.instance()

    async def recv(self, timeout: float | None = None) -> dict:
        """One result; ``TimeoutError`` after ``timeout`` seconds. On a timeout only the
        pending receive is cancelled, so a result that arrives at that moment is kept."""
        timeout = await self._handshake_wait_async(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            fut = self._sock.recv_multipart()
            left = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait({fut}, timeout=left)
            if not fut.done():
                fut.cancel()
                await asyncio.gather(fut, return_exceptions=True)
            if fut.cancelled():
                raise TimeoutError(f"no result from {self.endpoint} within {timeout} s")
            result = self._accept(fut.result())
            if result is not None:
                return result

    def __aiter__(self):
        return self

    async def __anext__(self) -> dict:
        return await self.recv()
