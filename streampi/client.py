"""Producers and subscribers: the client side of the protocol (v1.1 frames by default).

Each comes in a blocking and an asyncio flavour with the same method names, as pyzmq's
``zmq.Socket`` and ``zmq.asyncio.Socket`` do: :class:`Producer` / :class:`AsyncProducer`
and :class:`Subscriber` / :class:`AsyncSubscriber`. They share only :mod:`streampi.protocol`
with the server.

    with Producer("tcp://127.0.0.1:5558", stream="cam0") as cam:   # v1.1: credit-based
        cam.send(rgb_array)                      # fmt from the array's shape: rgb or gray
        cam.send(jpeg_bytes, fmt="jpeg")
    with Subscriber("tcp://127.0.0.1:5556", streams=["cam0"]) as sub:
        result = sub.recv(timeout=5)             # a dict, see docs/protocol.md
    with Events("tcp://127.0.0.1:5556") as events:   # serve --events: objects new/update/end
        event = events.recv(timeout=5)           # see docs/integrations.md

With ``curve_secret=`` (this client's ``NAME.key_secret``) and ``curve_server=`` (the
server's public ``NAME.key``) the socket speaks CurveZMQ (see :mod:`streampi.auth`); a
handshake that does not succeed within the call's timeout (or ``handshake_timeout``) raises
:class:`~streampi.errors.AuthError` instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from . import auth, protocol
from .errors import ProtocolError
from .producer_core import ASK_ANSWERED_S as ASK_ANSWERED_S  # (public constants, defined beside the decisions)
from .producer_core import HELLO_EVERY_S as HELLO_EVERY_S
from .producer_core import WAIT, Outgoing, ProducerCore

DEFAULT_FRAMES = "tcp://127.0.0.1:5558"  # protocol v1.1 (DEALER → ROUTER, credit)
DEFAULT_FRAMES_V1 = "tcp://127.0.0.1:5555"  # protocol v1 (PUSH → PULL)
DEFAULT_RESULTS = "tcp://127.0.0.1:5556"
EVENTS_TOPIC = "_events"  # (streampi.events publishes them; named here so that a client needs no server code)
SNAPSHOTS_TOPIC = "_snapshots"


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


PROTOCOLS = ("1.1", "1")


def _core_attr(name: str, doc: str) -> property:
    return property(lambda self: getattr(self._core, name), doc=doc)


class _ProducerBase(_SocketHolder):
    """The socket of a producer and the waits both flavours share; every decision is
    :class:`~streampi.producer_core.ProducerCore`'s."""

    def __init__(self, endpoint: str | None = None, stream: str = "cam0", *, fmt: str | None = None,
                 two_part: bool = True, sndhwm: int = 64, context: Any = None, start_seq: int = 0,
                 zero_copy: bool = False, limits: protocol.Limits = protocol.DEFAULT_LIMITS,
                 curve_secret: Any = None, curve_server: Any = None, handshake_timeout: float = 10.0,
                 protocol_version: str = "1.1", when_full: str | None = None, send_timeout: float = 30.0,
                 on_drop: Any = None, shared_memory: bool = False, linger: float | None = 5.0) -> None:
        """``protocol_version`` is ``"1.1"`` (the default: a DEALER with credit-based flow control,
        connected to the server's ``--credit-bind``, default port 5558) or ``"1"`` (a PUSH,
        to ``--bind``, default port 5555, no flow control).

        With v1.1 the server grants credit: frames this producer may have in flight. Without
        credit, a frame of a ``latest`` stream replaces the one held back (it never leaves the
        camera; counted in ``dropped``, and passed to ``on_drop(seq)``), and a frame of a ``queue``
        stream waits for credit, at most ``send_timeout`` seconds. ``when_full`` (``"replace"``
        or ``"wait"``) overrides what the server's policy says. The first send waits up to
        ``handshake_timeout`` for the server's first credit.

        ``zero_copy=True`` hands ZeroMQ the frame's own buffer instead of a copy: saves a
        copy per frame, but the buffer must not change until ZeroMQ has sent it (a camera that
        captures into one reused array must keep the default). Frames still queued in ZeroMQ
        are sent after ``close()`` while the process lives, for ``linger`` seconds (``None``:
        until they are sent, which a load generator that must deliver every frame wants; 0:
        discarded).

        ``shared_memory=True`` (v1.1, a server on this machine): raw frames are written into a
        shared-memory ring the server hands out, and only their header crosses the socket,
        which saves the CPU of two copies of every frame through the kernel's socket buffers.
        The slots are the size of the first raw frame; larger frames, JPEG, and every frame
        while the server cannot give a ring (another machine or user, ``--no-shared-memory``)
        go over the wire as usual. ``stats()["shared_memory"]`` says which, and why."""
        if not protocol.valid_stream(stream):
            raise ValueError(f"stream must be 1-64 characters of [A-Za-z0-9._-], not starting with '_': {stream!r}")
        if protocol_version not in PROTOCOLS:
            raise ValueError(f"protocol_version must be one of {PROTOCOLS}, got {protocol_version!r}")
        if shared_memory and protocol_version != "1.1":
            raise ValueError("shared_memory needs protocol_version='1.1' (the ring comes with the server's credit)")
        if when_full not in (None, "replace", "wait"):
            raise ValueError(f"when_full must be 'replace', 'wait' or None (the server's policy), got {when_full!r}")
        if not send_timeout > 0:
            raise ValueError(f"send_timeout must be > 0 seconds, got {send_timeout!r}")
        if linger is not None and not linger >= 0:
            raise ValueError(f"linger must be >= 0 seconds or None (until sent), got {linger!r}")
        if endpoint is None:
            endpoint = DEFAULT_FRAMES if protocol_version == "1.1" else DEFAULT_FRAMES_V1
        self.endpoint, self.protocol_version = endpoint, protocol_version
        self.handshake_timeout, self.send_timeout = handshake_timeout, send_timeout
        self._core = ProducerCore(stream, endpoint=endpoint, fmt=fmt, two_part=two_part, zero_copy=zero_copy,
                                  limits=limits, start_seq=start_seq, credit=protocol_version == "1.1",
                                  when_full=when_full, on_drop=on_drop, shared_memory=shared_memory)
        self._sock = (context or self._context()).socket(zmq.DEALER if protocol_version == "1.1" else zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, -1 if linger is None else int(linger * 1000))
        self._connect(endpoint, curve_secret, curve_server)
        # non-blocking reads and hellos through the blocking API, in either flavour (an asyncio
        # socket's twin is made once, when it is first needed, and never outlives it)
        self._now: Any = self._sock if not isinstance(self._sock, zmq.asyncio.Socket) else None

    stream = _core_attr("stream", "The stream this producer sends.")
    fmt = _core_attr("fmt", "The frames' format when send() is not told one (None: from the frame).")
    two_part = _core_attr("two_part", "Whether the pixels go as a second message part (else inside the header).")
    zero_copy = _core_attr("zero_copy", "Whether ZeroMQ sends the frame's own buffer (no copy).")
    limits = _core_attr("limits", "The protocol limits a frame is checked against before it is sent.")
    when_full = _core_attr("when_full", "'replace', 'wait' or None (the server's policy) when there is no credit.")
    on_drop = _core_attr("on_drop", "Called with the seq of each frame replaced here (v1.1, latest).")
    seq = _core_attr("seq", "The seq the next frame gets unless send() is told one.")
    dropped = _core_attr("dropped", "Frames replaced here, never sent (v1.1, latest).")
    shared_memory = _core_attr("shared_memory", "What became of shared memory: off, asking, on: …, refused: ….")
    shm_frames = _core_attr("shm_frames", "Frames sent through the shared-memory ring.")
    shm_in_place = _core_attr("shm_in_place", "Of those, frames captured straight into their slot (frame_buffer).")
    _ring = _core_attr("ring", "The shared-memory ring, when one is up.")

    # -- credit (v1.1) -------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Frames sent and not answered yet, as the server last said (v1.1)."""
        return self._core.credit.in_flight if self._core.credit is not None else 0

    @property
    def window(self) -> int:
        """Frames the server lets this producer have in flight (v1.1; 0 before its first credit)."""
        return self._core.credit.window if self._core.credit is not None else 0

    @property
    def held(self) -> int | None:
        """The seq of the frame held back for want of credit, if any (v1.1, latest)."""
        return self._core.held.seq if self._core.held is not None else None

    def stats(self) -> dict[str, Any]:
        """Counters a camera can log: sent, dropped here, in flight, window, sessions seen."""
        core, credit = self._core, self._core.credit
        out: dict[str, Any] = {"protocol": self.protocol_version, "next_seq": core.seq, "dropped": core.dropped}
        if credit is not None:
            out.update(sent=credit.sent, in_flight=credit.in_flight, window=credit.window, policy=credit.policy,
                       sessions=credit.sessions, held=self.held, shared_memory=core.shared_memory,
                       shm_frames=core.shm_frames, shm_in_place=core.shm_in_place)
        return out

    def frame_buffer(self, width: int, height: int, fmt: str = "rgb") -> np.ndarray:
        """An array to capture the next frame into, then pass to :meth:`send`.

        With a shared-memory ring up, it is a free slot of the ring itself: ``send`` then
        copies nothing (a 640×480 RGB frame is 0.9 MB, a copy that costs a Pi 4 a good part
        of a millisecond of memory bandwidth). Otherwise (no ring yet, another machine, every
        slot in flight) it is an array this producer reuses, sent as any other. Capture into
        it (e.g. OpenCV's ``cap.read(buf)``, ``np.copyto``), send it, and ask again for the
        next frame: once sent, a slot is the server's until the frame is answered, so do
        not write into the array after ``send``. Its shape is
        ``(height, width, channels)``, ``(height, width)`` for gray, ``(height * 3 // 2,
        width)`` for i420 and nv12; uint8."""
        return self._core.frame_buffer(width, height, fmt)

    def _sync(self) -> Any:
        if self._now is None:
            self._now = zmq.Socket.shadow(self._sock.underlying)
        return self._now

    def _hello(self) -> None:
        try:
            self._sync().send_multipart(self._core.hello(time.monotonic()), zmq.NOBLOCK)
        except zmq.Again:  # the pipe is full (no server for a while): the next wait says it again
            pass

    def _read_credit(self) -> bool:
        """Take in every credit message already received; True if there was one."""
        got = False
        sock = self._sync()
        while sock.get(zmq.EVENTS) & zmq.POLLIN:  # (cheaper than a receive that fails, on every send)
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return got
            try:
                credit = protocol.decode_credit(parts)
            except ProtocolError:
                continue  # not from a streampi server: ignored (and never trusted)
            if self._core.credit_received(credit, time.monotonic()):
                self._hello()
            got = True
        return got

    # -- the waits, as polls of the socket that either flavour carries out ----------------------
    def _credit_polls(self, timeout: float, first: bool = False) -> Iterator[int]:
        """The polls (ms) until there is credit for one frame, saying hello again every second;
        TimeoutError (ConnectionError when no server answered) after ``timeout``."""
        started = time.monotonic()
        while True:
            self._read_credit()
            step = self._core.wait(time.monotonic(), started, timeout, first)
            if step is None:
                return
            if step.hello:
                self._hello()
            yield step.poll_ms

    def _send_polls(self, out: Outgoing, timeout: float | None) -> Iterator[int]:
        """The polls (ms) before ``out`` may be sent (v1.1): the first credit, then credit for
        ``out`` unless it is held back (policy latest)."""
        if self._core.credit is None:
            return
        if self._core.credit.session is None:
            yield from self._credit_polls(self.handshake_timeout, first=True)
        self._read_credit()
        if self._core.plan(out) == WAIT:
            yield from self._credit_polls(self.send_timeout if timeout is None else timeout)

    def _drain_polls(self, deadline: float) -> Iterator[int]:
        """The polls (ms) on close until the frames in flight are answered, or ``deadline``."""
        while (poll_ms := self._core.drain(time.monotonic(), deadline)) is not None:
            yield poll_ms
            self._read_credit()

    def _v1_timeout(self, timeout: float) -> TimeoutError:
        return TimeoutError(f"could not send to {self.endpoint} within {timeout} s")

    def _flush_blocking(self, timeout: float) -> bool:
        sock = self._sync()
        if self._core.held is None:
            return True
        try:
            for poll_ms in self._credit_polls(timeout):
                sock.poll(poll_ms, zmq.POLLIN)
        except (TimeoutError, ConnectionError):
            return False
        sock.send_multipart(self._core.wire(self._core.take_held()), copy=not self.zero_copy)
        return True

    def _close_blocking(self, flush_timeout: float) -> None:
        if self._core.credit is not None and not self._sock.closed:
            deadline = time.monotonic() + flush_timeout
            if not self._flush_blocking(flush_timeout):
                self._core.drop_held()
            for poll_ms in self._drain_polls(deadline):
                self._sync().poll(poll_ms, zmq.POLLIN)
        self._close_now()

    def _close_now(self) -> None:
        """Drop a held frame, say bye (after the frames), let the ring go, close the socket."""
        bye = self._core.bye() if not self._sock.closed else None
        if bye is not None:
            try:
                self._sync().send_multipart(bye, zmq.NOBLOCK)
            except zmq.ZMQError:  # the pipe is full or gone: the server finds out by silence
                pass
        self._core.close()
        super().close()


class Producer(_ProducerBase):
    """Sends frames of one stream (blocking). ``send`` returns the frame's ``seq``."""

    @staticmethod
    def _context() -> zmq.Context:
        return zmq.Context.instance()

    def send(self, frame: Any, fmt: str | None = None, *, width: int | None = None, height: int | None = None,
             ts: float | None = None, meta: dict | None = None, seq: int | None = None,
             timeout: float | None = None) -> int:
        """Send one frame: a NumPy array, raw bytes (with width/height) or JPEG bytes.

        v1.1: sends at once if there is credit; else a ``latest`` frame is held back
        (replacing the one held) and a ``queue`` frame waits for credit. v1: blocks while
        ZeroMQ's send queue is full. ``timeout`` (seconds; v1.1 default ``send_timeout``)
        bounds any wait and raises ``TimeoutError``.
        """
        out = self._core.frame(frame, fmt, width, height, time.time() if ts is None else ts, meta, seq)
        try:
            timeout = self._handshake_wait(timeout)
            if self._core.credit is None and timeout is not None and not self._sock.poll(int(timeout * 1000),
                                                                                         zmq.POLLOUT):
                raise self._v1_timeout(timeout)
            for poll_ms in self._send_polls(out, timeout):
                self._sock.poll(poll_ms, zmq.POLLIN)
        except BaseException:
            self._core.cancel(out)
            raise
        if not out.held:
            self._sock.send_multipart(self._core.wire(out), copy=not self.zero_copy)
        return out.seq

    def flush(self, timeout: float = 1.0) -> bool:
        """Send the frame held back for want of credit, waiting up to ``timeout`` for credit.
        True when nothing is held any more."""
        return self._flush_blocking(timeout)

    def close(self, flush_timeout: float = 1.0) -> None:
        """Close; a frame held back (v1.1) gets ``flush_timeout`` seconds to find credit,
        else it counts as dropped. With v1.1, close then waits, within the same
        ``flush_timeout``, until the server has answered the frames in flight: ZeroMQ can
        discard part of a socket's send queue when it is closed right after sending, despite
        the socket's linger, so without the wait a frame sent just before close could be lost
        unanswered."""
        self._close_blocking(flush_timeout)


class AsyncProducer(_ProducerBase):
    """The asyncio flavour of :class:`Producer`: ``await send(...)``; ``async with``."""

    @staticmethod
    def _context() -> zmq.asyncio.Context:
        return zmq.asyncio.Context.instance()

    async def send(self, frame: Any, fmt: str | None = None, *, width: int | None = None, height: int | None = None,
                   ts: float | None = None, meta: dict | None = None, seq: int | None = None,
                   timeout: float | None = None) -> int:
        """As :meth:`Producer.send`; waits are awaited."""
        out = self._core.frame(frame, fmt, width, height, time.time() if ts is None else ts, meta, seq)
        try:
            timeout = await self._handshake_wait_async(timeout)
            if self._core.credit is None and timeout is not None and not await self._sock.poll(
                    int(timeout * 1000), zmq.POLLOUT):
                raise self._v1_timeout(timeout)
            for poll_ms in self._send_polls(out, timeout):
                await self._sock.poll(poll_ms, zmq.POLLIN)
        except BaseException:
            self._core.cancel(out)
            raise
        if not out.held:
            await self._sock.send_multipart(self._core.wire(out), copy=not self.zero_copy)
        return out.seq

    async def flush(self, timeout: float = 1.0) -> bool:
        """As :meth:`Producer.flush`; the wait is awaited."""
        if self._core.held is None:
            return True
        try:
            for poll_ms in self._credit_polls(timeout):
                await self._sock.poll(poll_ms, zmq.POLLIN)
        except (TimeoutError, ConnectionError):
            return False
        await self._sock.send_multipart(self._core.wire(self._core.take_held()), copy=not self.zero_copy)
        return True

    async def aclose(self, flush_timeout: float = 1.0) -> None:
        """Close after giving a held frame ``flush_timeout`` seconds to find credit and, within
        the same time, the frames in flight to be answered (see :meth:`Producer.close`)."""
        if self._core.credit is not None and not self._sock.closed:
            deadline = time.monotonic() + flush_timeout
            if not await self.flush(flush_timeout):
                self._core.drop_held()
            for poll_ms in self._drain_polls(deadline):
                await self._sock.poll(poll_ms, zmq.POLLIN)
        self._close_now()

    def close(self, flush_timeout: float = 0.0) -> None:
        """Close without awaiting: as :meth:`Producer.close`, but a wait of ``flush_timeout``
        blocks the thread (and the event loop); by default a held frame is sent only if
        credit has come, else dropped. In a coroutine, ``await aclose()``."""
        self._close_blocking(flush_timeout)

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class _SubscriberBase(_SocketHolder):
    def __init__(self, endpoint: str = DEFAULT_RESULTS, streams: Iterable[str] = (), *, errors: bool = True,
                 events: bool = False, rcvhwm: int = 100_000, context: Any = None, curve_secret: Any = None,
                 curve_server: Any = None, handshake_timeout: float = 10.0) -> None:
        """Results of ``streams`` (default: every stream) and, with ``errors``, the answers to
        messages that named no valid stream (topic ``_errors``). ``events=True`` brings the
        server's object events too (topic ``_events``: maps with a ``type``, see :class:`Events`,
        which receives them alone); the server's other topics never come as results."""
        self.endpoint = endpoint
        self.handshake_timeout = handshake_timeout
        self._sock = (context or self._context()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        streams = list(streams)
        extra = [protocol.ERRORS_TOPIC] if errors else []
        extra += [EVENTS_TOPIC] if events else []
        if not streams:
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        else:
            for s in [*streams, *extra]:
                # the topic is a prefix match in ZeroMQ; the exact stream is checked on receipt
                self._sock.setsockopt(zmq.SUBSCRIBE, s.encode())
        self._wanted = set(streams) | set(extra) if streams else None
        self._server_topics = {protocol.ERRORS_TOPIC, *([EVENTS_TOPIC] if events else [])}
        self._connect(endpoint, curve_secret, curve_server)

    def _accept(self, parts: list) -> dict | None:
        topic = bytes(parts[0]).decode("utf-8", "replace")
        if self._wanted is not None and topic not in self._wanted:
            return None
        if self._wanted is None and topic.startswith("_") and topic not in self._server_topics:
            return None  # a server topic (_snapshots, or _events unless asked): not a result
        return protocol.decode_result(parts)


class _Receiving:
    """``recv(timeout)`` and iteration over a SUB socket whose ``_accept`` filters and decodes
    (results for :class:`Subscriber`, events for :class:`Events`): the blocking flavour."""

    _what = "result"  # what a timeout says did not come

    @staticmethod
    def _context() -> zmq.Context:
        return zmq.Context.instance()

    def recv(self, timeout: float | None = None) -> dict:
        timeout = self._handshake_wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(wait):
                raise TimeoutError(f"no {self._what} from {self.endpoint} within {timeout} s")
            msg = self._accept(self._sock.recv_multipart())
            if msg is not None:
                return msg

    def __iter__(self):
        while True:
            yield self.recv()


class _AsyncReceiving:
    """The asyncio flavour of :class:`_Receiving`: ``await recv(timeout)``, ``async for``,
    ``async with``."""

    _what = "result"

    @staticmethod
    def _context() -> zmq.asyncio.Context:
        return zmq.asyncio.Context.instance()

    async def recv(self, timeout: float | None = None) -> dict:
        """The next message; ``TimeoutError`` after ``timeout`` seconds. On a timeout only the
        pending receive is cancelled, so a message that arrives at that moment is kept."""
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
                raise TimeoutError(f"no {self._what} from {self.endpoint} within {timeout} s")
            msg = self._accept(fut.result())
            if msg is not None:
                return msg

    def __aiter__(self):
        return self

    async def __anext__(self) -> dict:
        return await self.recv()

    async def aclose(self) -> None:
        """As :meth:`close` (a subscriber has nothing to wait for), for ``async with``."""
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class Subscriber(_Receiving, _SubscriberBase):
    """Receives results (blocking). ``recv(timeout)`` returns one result dict or raises
    ``TimeoutError``; iterating yields results until closed."""


class AsyncSubscriber(_AsyncReceiving, _SubscriberBase):
    """The asyncio flavour of :class:`Subscriber`: ``await recv(timeout)``, ``async for``."""


EVENT_TYPES = ("new", "update", "end")


class _EventsBase(_SocketHolder):
    def __init__(self, endpoint: str = DEFAULT_RESULTS, streams: Iterable[str] = (), *, snapshots: bool = False,
                 rcvhwm: int = 10_000, context: Any = None, curve_secret: Any = None, curve_server: Any = None,
                 handshake_timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.handshake_timeout = handshake_timeout
        self.streams = frozenset(streams) or None
        self._sock = (context or self._context()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._topics = {EVENTS_TOPIC.encode(): "event"}
        if snapshots:
            self._topics[SNAPSHOTS_TOPIC.encode()] = "snapshot"
        for topic in self._topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)
        self._connect(endpoint, curve_secret, curve_server)

    def _accept(self, parts: list) -> dict | None:
        kind = self._topics.get(bytes(parts[0]))
        if kind is None:  # a prefix match of ZeroMQ's (another topic starting the same)
            return None
        msg = protocol.decode_result(parts)
        if kind == "snapshot":
            msg = {"type": "snapshot", **msg}
            stream = msg.get("stream")
        else:
            if msg.get("type") not in EVENT_TYPES:
                return None
            stream = (msg.get("after") or {}).get("stream")
        if self.streams is not None and stream not in self.streams:
            return None
        return msg


class Events(_Receiving, _EventsBase):
    """Receives the server's object events (blocking): what ``streampi serve --events``
    publishes on the topic ``_events`` (docs/integrations.md).

        with Events("tcp://127.0.0.1:5556", streams=["cam0"]) as events:
            for event in events:        # {"type": "new" | "update" | "end", "before", "after"}
                print(event["type"], event["after"]["id"], event["after"]["label"])

    ``streams`` keeps the events of those streams only (default: every stream). With
    ``snapshots=True`` the snapshots come too, as ``{"type": "snapshot", "id", "stream",
    "label", "score", "jpeg"}``. ``recv(timeout)`` raises ``TimeoutError``."""

    _what = "event"


class AsyncEvents(_AsyncReceiving, _EventsBase):
    """The asyncio flavour of :class:`Events`: ``await recv(timeout)``, ``async for``."""

    _what = "event"
