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

import msgpack
import numpy as np
import zmq
import zmq.asyncio

from . import auth, protocol, shared_frames
from .errors import FrameError, ProtocolError
from .formats import BYTES_PER_PIXEL, FORMATS, RAW_FORMATS, check_raw_size

DEFAULT_FRAMES = "tcp://127.0.0.1:5558"  # protocol v1.1 (DEALER → ROUTER, credit)
DEFAULT_FRAMES_V1 = "tcp://127.0.0.1:5555"  # protocol v1 (PUSH → PULL)
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


PROTOCOLS = ("1.1", "1")
#: A producer that waits for credit this long says hello again (the server may have restarted).
HELLO_EVERY_S = 1.0
#: A server that answers a request for a ring says so in its credit within this long.
ASK_ANSWERED_S = 2.0


class _CreditState:
    """What a v1.1 producer knows of its credit (protocol v1.1, see docs/protocol.md)."""

    def __init__(self) -> None:
        self.session: str | None = None
        self.window = 0
        self.acked = 0
        self.sent = 0  # frames sent in this session
        self.policy: str | None = None
        self.sessions = 0  # sessions seen: more than one means the server restarted (or forgot us)

    def update(self, credit: protocol.Credit) -> None:
        if credit.session != self.session:  # counting afresh: what the old session held is not coming back
            self.session, self.sent, self.acked = credit.session, credit.acked, credit.acked
            self.sessions += 1
        self.window, self.policy = credit.window, credit.policy
        self.acked = max(self.acked, credit.acked)
        self.sent = max(self.sent, self.acked)  # frames queued across a restart, answered by the new server

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked

    @property
    def free(self) -> int:
        return self.window - self.in_flight if self.session is not None else 0


class _ProducerBase(_SocketHolder):
    def __init__(self, endpoint: str | None = None, stream: str = "cam0", *, fmt: str | None = None,
                 two_part: bool = True, sndhwm: int = 64, context: Any = None, start_seq: int = 0,
                 zero_copy: bool = False, limits: protocol.Limits = protocol.DEFAULT_LIMITS,
                 curve_secret: Any = None, curve_server: Any = None, handshake_timeout: float = 10.0,
                 protocol_version: str = "1.1", when_full: str | None = None, send_timeout: float = 30.0,
                 on_drop: Any = None, shared_memory: bool = False) -> None:
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
        captures into one reused array must keep the default). Queued frames are sent after
        ``close()`` while the process lives (the socket lingers 5 s).

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
        if endpoint is None:
            endpoint = DEFAULT_FRAMES if protocol_version == "1.1" else DEFAULT_FRAMES_V1
        self.endpoint, self.stream, self.fmt, self.two_part = endpoint, stream, fmt, two_part
        self.protocol_version = protocol_version
        self.zero_copy = zero_copy
        self.seq = start_seq
        self.limits = limits
        self.handshake_timeout = handshake_timeout
        self.when_full, self.send_timeout, self.on_drop = when_full, send_timeout, on_drop
        self.dropped = 0  # frames replaced here, never sent (v1.1, latest)
        self._credit = _CreditState() if protocol_version == "1.1" else None
        self._held: tuple[list[Any], int] | None = None  # the newest frame without credit, and its seq
        self._held_buf: bytearray | None = None
        self._last_hello = 0.0
        self._shm_wanted = bool(shared_memory)
        self._shm_bytes: int | None = None  # the slot size asked for: the first raw frame's bytes
        self._ring: shared_frames.RingWriter | None = None
        self._ring_token: bytes | None = None  # the offer last tried (a failed one is not retried)
        self.shared_memory = "asking" if shared_memory else "off"  # what became of it, for stats()
        self._asked_at: float | None = None  # when this session's hello asked for a ring
        self.shm_frames = 0  # frames sent through the ring
        self.shm_in_place = 0  # of those, frames captured straight into their slot (frame_buffer)
        self._lent: tuple[shared_frames.RingWriter, int, np.ndarray] | None = None  # frame_buffer's slot
        self._plain_buf: np.ndarray | None = None  # frame_buffer's array when no slot can be lent
        self._sock = (context or self._context()).socket(zmq.DEALER if self._credit is not None else zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, 5000)
        self._connect(endpoint, curve_secret, curve_server)
        # non-blocking reads and hellos through the blocking API, in either flavour (an asyncio
        # socket's twin is made once, when it is first needed, and never outlives it)
        self._now: Any = self._sock if not isinstance(self._sock, zmq.asyncio.Socket) else None

    # -- credit (v1.1) -------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Frames sent and not answered yet, as the server last said (v1.1)."""
        return self._credit.in_flight if self._credit is not None else 0

    @property
    def window(self) -> int:
        """Frames the server lets this producer have in flight (v1.1; 0 before its first credit)."""
        return self._credit.window if self._credit is not None else 0

    @property
    def held(self) -> int | None:
        """The seq of the frame held back for want of credit, if any (v1.1, latest)."""
        return self._held[1] if self._held is not None else None

    def stats(self) -> dict[str, Any]:
        """Counters a camera can log: sent, dropped here, in flight, window, sessions seen."""
        out: dict[str, Any] = {"protocol": self.protocol_version, "next_seq": self.seq, "dropped": self.dropped}
        if self._credit is not None:
            out.update(sent=self._credit.sent, in_flight=self._credit.in_flight, window=self._credit.window,
                       policy=self._credit.policy, sessions=self._credit.sessions, held=self.held,
                       shared_memory=self.shared_memory, shm_frames=self.shm_frames,
                       shm_in_place=self.shm_in_place)
        return out

    def _sync(self) -> Any:
        if self._now is None:
            self._now = zmq.Socket.shadow(self._sock.underlying)
        return self._now

    def _hello(self) -> None:
        self._last_hello = time.monotonic()
        ask = self._shm_bytes if self._shm_wanted and self._ring is None and self._shm_bytes else None
        if ask is not None and self._asked_at is None:
            self._asked_at = self._last_hello
        try:
            self._sync().send_multipart(protocol.encode_hello(self.stream, ask), zmq.NOBLOCK)
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
            session = self._credit.session  # type: ignore[union-attr]
            self._credit.update(credit)  # type: ignore[union-attr]
            if self._shm_wanted:
                self._update_ring(credit, new_session=credit.session != session)
            got = True
        return got

    # -- shared memory (v1.1, a server on this machine) ------------------------------------------
    def _update_ring(self, credit: protocol.Credit, new_session: bool) -> None:
        """Open, follow or drop the ring as the server's credit says (shared_frames)."""
        if new_session:
            self._asked_at = None
            if self._ring is not None:  # a restarted server: its rings died with it
                self._close_ring()
                self.shared_memory = "asking"
        if credit.shm is not None:
            try:
                offer = shared_frames.RingOffer.from_wire(credit.shm)
            except ValueError as exc:
                self.shared_memory = f"unusable: {exc}"
                return
            if self._ring is None or self._ring.offer.token != offer.token:
                if offer.token == self._ring_token:
                    return  # tried and failed: the wire it is
                self._close_ring()
                self._ring_token = offer.token
                try:
                    self._ring = shared_frames.RingWriter(offer)
                except OSError as exc:
                    self.shared_memory = f"unusable: {exc}"
                    return
                self.shared_memory = f"on: {offer.slots} slots of {offer.slot_bytes} bytes"
            self._ring.update(credit.shm_seen, credit.shm_held)
        elif credit.shm_refused is not None:
            self._close_ring()
            self.shared_memory = f"refused: {credit.shm_refused}"
        elif new_session and self._shm_bytes:
            self._hello()  # a new session knows nothing of our ask: say it again
        elif (self._ring is None and self._asked_at is not None and self.shared_memory == "asking"
              and time.monotonic() - self._asked_at > ASK_ANSWERED_S):
            self.shared_memory = ("not offered: the server's credit says nothing of shared memory (a server older "
                                  "than it?); the frames go over the wire")

    def close(self) -> None:  # (the flavours' close() end here)
        self._bye()
        self._close_ring()
        super().close()

    def _bye(self) -> None:
        """Tell the server this producer is closing (v1.1), after its frames: the server frees
        its ring at once instead of after 30 s of silence."""
        if self._credit is None or self._credit.session is None or self._sock.closed:
            return
        try:
            self._sync().send_multipart(protocol.encode_bye(), zmq.NOBLOCK)
        except zmq.ZMQError:  # the pipe is full or gone: the server finds out by silence
            pass

    def _close_ring(self) -> None:
        self._lent = None  # (its array stays valid: the mapping lives while a view of it does)
        if self._ring is not None:
            self._ring.close()
            self._ring = None

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
        nbytes = check_raw_size(fmt, width, height, None, self.limits.max_pixels)
        shape = ((height * 3 // 2, width) if fmt in ("i420", "nv12") else
                 (height, width) if fmt == "gray" else (height, width, BYTES_PER_PIXEL[fmt]))
        lent, self._lent = self._lent, None  # the camera asked again: the last one was not sent
        self._release(lent)
        if self._shm_wanted:
            if self._shm_bytes is None:
                self._shm_bytes = nbytes  # the ring is asked for with the first send
            # no credit read and no check that the server lives: with at most `window` frames in
            # flight, one of the window + 1 slots is free since the last send; and a slot of a ring
            # whose server went away is still this process's memory (send then uses the wire)
            ring = self._ring
            if ring is not None:
                got = ring.reserve(nbytes)
                if got is not None:
                    arr = np.frombuffer(got[1], np.uint8).reshape(shape)
                    self._lent = (ring, got[0], arr)
                    return arr
        buf = self._plain_buf
        if buf is None or buf.shape != shape:
            buf = self._plain_buf = np.empty(shape, np.uint8)
        return buf

    def _take_lent(self, frame: Any) -> tuple[shared_frames.RingWriter, int, np.ndarray] | None:
        """The lent slot if ``frame`` is the array :meth:`frame_buffer` gave (it is being sent);
        any other frame returns the slot to the ring."""
        lent, self._lent = self._lent, None
        if lent is not None and frame is lent[2] and lent[0] is self._ring:
            return lent
        self._release(lent)
        return None

    @staticmethod
    def _release(lent: tuple | None) -> None:
        """A lent slot that will not be sent from where it lies is free again."""
        if lent is not None:
            lent[0].release(lent[1])

    def _through_ring(self, parts: list[Any], lent: tuple | None = None) -> list[Any]:
        """``parts`` with the pixels moved into a free slot of the ring (header only), or as
        they are when they cannot go that way. ``lent``: the pixels are in that slot already."""
        ring = self._ring
        if lent is not None and (lent[0] is not ring or len(parts) != 2):  # (two_part=False: copied already)
            self._release(lent)
            lent = None
        if ring is None or len(parts) != 2:
            return parts
        if not ring.alive():  # the server went away (and perhaps came back): wire until its new credit
            self._close_ring()
            self.shared_memory = "asking"
            return parts
        head = msgpack.unpackb(parts[0])
        if head.get("fmt") not in RAW_FORMATS:
            self._release(lent)
            return parts
        if lent is not None:
            got = ring.commit(lent[1])
            self.shm_in_place += 1
        else:
            got = ring.write(parts[1])
        if got is None:  # larger than a slot, or every slot held (frames in flight beyond the ring)
            return parts
        head["shm"] = list(got)
        self.shm_frames += 1
        return [msgpack.packb(head)]

    def _replaces(self) -> bool:
        if self.when_full is not None:
            return self.when_full == "replace"
        return self._credit.policy != "queue"  # type: ignore[union-attr]

    def _no_server(self, waited: float) -> Exception:
        return ConnectionError(
            f"no streampi server answered on {self.endpoint} within {waited:g} s (protocol v1.1: the server's "
            f"--credit-bind endpoint, default port 5558; a v1 server or its --bind endpoint needs "
            f"protocol_version='1')")

    def _hold(self, parts: list[Any], seq: int, lent: tuple | None = None) -> None:
        """Keep ``parts`` as the frame to send when credit comes, replacing the one held.
        The pixels are copied (into the same buffer when the size is the same) unless
        ``zero_copy``, since the caller may reuse its array for the next capture."""
        self._drop_held()
        if (lent is not None or not self.zero_copy) and len(parts) == 2:  # (a lent slot goes back to the ring)
            payload = memoryview(parts[1]).cast("B")
            if self._held_buf is None or len(self._held_buf) != payload.nbytes:
                self._held_buf = bytearray(payload.nbytes)
            self._held_buf[:] = payload
            parts = [parts[0], self._held_buf]
        self._held = (parts, seq)

    def _drop_held(self) -> None:
        if self._held is not None:
            seq = self._held[1]
            self._held = None
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(seq)

    def _parts(self, frame: Any, fmt: str | None, width: int | None, height: int | None, ts: float | None,
               meta: dict | None, seq: int | None) -> list[Any]:
        fmt, width, height = _infer(frame, fmt or self.fmt, width, height)
        if fmt in RAW_FORMATS:
            nbytes = frame.nbytes if isinstance(frame, np.ndarray) else len(memoryview(frame).cast("B"))
            check_raw_size(fmt, width, height, nbytes, self.limits.max_pixels)
            if self._shm_wanted and self._shm_bytes is None:
                self._shm_bytes = nbytes
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

        v1.1: sends at once if there is credit; else a ``latest`` frame is held back
        (replacing the one held) and a ``queue`` frame waits for credit. v1: blocks while
        ZeroMQ's send queue is full. ``timeout`` (seconds; v1.1 default ``send_timeout``)
        bounds any wait and raises ``TimeoutError``.
        """
        parts = self._parts(frame, fmt, width, height, ts, meta, seq)
        seq = self.seq - 1
        lent = self._take_lent(frame)
        try:
            timeout = self._handshake_wait(timeout)
            if self._credit is None:
                if timeout is not None and not self._sock.poll(int(timeout * 1000), zmq.POLLOUT):
                    raise TimeoutError(f"could not send to {self.endpoint} within {timeout} s")
                self._sock.send_multipart(parts, copy=not self.zero_copy)
                return seq
            self._first_credit()
            self._read_credit()
            if self._credit.free <= 0:
                if self._replaces():
                    self._hold(parts, seq, lent)
                    self._release(lent)
                    return seq
                self._wait_credit(self.send_timeout if timeout is None else timeout)
        except Exception:
            self.seq -= 1
            self._release(lent)
            raise
        self._drop_held()  # older than this one
        self._transmit(parts, lent)
        return seq

    def _first_credit(self) -> None:
        if self._credit.session is None:  # type: ignore[union-attr]
            self._wait_credit(self.handshake_timeout, first=True)

    def _wait_credit(self, timeout: float, first: bool = False) -> None:
        """Until there is credit for one frame (saying hello again every second)."""
        t0 = time.monotonic()
        while True:
            self._read_credit()
            if self._credit.free > 0:  # type: ignore[union-attr]
                return
            now = time.monotonic()
            if now - t0 >= timeout:
                if first or self._credit.session is None:  # type: ignore[union-attr]
                    raise self._no_server(timeout)
                raise TimeoutError(f"no credit from {self.endpoint} within {timeout:g} s: the server holds "
                                   f"{self.in_flight} frames of this producer (window {self.window})")
            if now - self._last_hello >= HELLO_EVERY_S:
                self._hello()
            self._sock.poll(max(1, int(min(timeout - (now - t0), HELLO_EVERY_S) * 1000)), zmq.POLLIN)

    def _transmit(self, parts: list[Any], lent: tuple | None = None) -> None:
        self._sock.send_multipart([protocol.KIND_FRAME, *self._through_ring(parts, lent)], copy=not self.zero_copy)
        self._credit.sent += 1  # type: ignore[union-attr]

    def flush(self, timeout: float = 1.0) -> bool:
        """Send the frame held back for want of credit, waiting up to ``timeout`` for credit.
        True when nothing is held any more."""
        if self._held is None:
            return True
        try:
            self._wait_credit(timeout)
        except (TimeoutError, ConnectionError):
            return False
        parts, _ = self._held
        self._held = None
        self._transmit(parts)
        return True

    def close(self, flush_timeout: float = 1.0) -> None:
        """Close; a frame held back (v1.1) gets ``flush_timeout`` seconds to find credit,
        else it counts as dropped. With v1.1, close then waits, within the same
        ``flush_timeout``, until the server has answered the frames in flight: ZeroMQ can
        discard part of a socket's send queue when it is closed right after sending, despite
        the socket's linger, so without the wait a frame sent just before close could be lost
        unanswered."""
        if self._credit is not None and not self._sock.closed:
            deadline = time.monotonic() + flush_timeout
            if self._held is not None and not self.flush(flush_timeout):
                self._drop_held()
            while self._credit.session is not None and self._credit.in_flight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._sock.poll(max(1, int(left * 1000)), zmq.POLLIN)
                self._read_credit()
        super().close()


class AsyncProducer(_ProducerBase):
    """The asyncio flavour of :class:`Producer`: ``await send(...)``."""

    @staticmethod
    def _context() -> zmq.asyncio.Context:
        return zmq.asyncio.Context.instance()

    async def send(self, frame: Any, fmt: str | None = None, *, width: int | None = None, height: int | None = None,
                   ts: float | None = None, meta: dict | None = None, seq: int | None = None,
                   timeout: float | None = None) -> int:
        """As :meth:`Producer.send`; waits are awaited."""
        parts = self._parts(frame, fmt, width, height, ts, meta, seq)
        seq = self.seq - 1
        lent = self._take_lent(frame)
        try:
            timeout = await self._handshake_wait_async(timeout)
            if self._credit is None:
                if timeout is not None and not await self._sock.poll(int(timeout * 1000), zmq.POLLOUT):
                    raise TimeoutError(f"could not send to {self.endpoint} within {timeout} s")
                await self._sock.send_multipart(parts, copy=not self.zero_copy)
                return seq
            if self._credit.session is None:
                await self._wait_credit(self.handshake_timeout, first=True)
            self._read_credit()
            if self._credit.free <= 0:
                if self._replaces():
                    self._hold(parts, seq, lent)
                    self._release(lent)
                    return seq
                await self._wait_credit(self.send_timeout if timeout is None else timeout)
        except BaseException:
            self.seq -= 1
            self._release(lent)
            raise
        self._drop_held()
        await self._transmit(parts, lent)
        return seq

    async def _wait_credit(self, timeout: float, first: bool = False) -> None:
        t0 = time.monotonic()
        while True:
            self._read_credit()
            if self._credit.free > 0:  # type: ignore[union-attr]
                return
            now = time.monotonic()
            if now - t0 >= timeout:
                if first or self._credit.session is None:  # type: ignore[union-attr]
                    raise self._no_server(timeout)
                raise TimeoutError(f"no credit from {self.endpoint} within {timeout:g} s: the server holds "
                                   f"{self.in_flight} frames of this producer (window {self.window})")
            if now - self._last_hello >= HELLO_EVERY_S:
                self._hello()
            await self._sock.poll(max(1, int(min(timeout - (now - t0), HELLO_EVERY_S) * 1000)), zmq.POLLIN)

    async def _transmit(self, parts: list[Any], lent: tuple | None = None) -> None:
        await self._sock.send_multipart([protocol.KIND_FRAME, *self._through_ring(parts, lent)],
                                        copy=not self.zero_copy)
        self._credit.sent += 1  # type: ignore[union-attr]

    async def flush(self, timeout: float = 1.0) -> bool:
        if self._held is None:
            return True
        try:
            await self._wait_credit(timeout)
        except (TimeoutError, ConnectionError):
            return False
        parts, _ = self._held
        self._held = None
        await self._transmit(parts)
        return True

    async def aclose(self, flush_timeout: float = 1.0) -> None:
        """Close after giving a held frame ``flush_timeout`` seconds to find credit and, within
        the same time, the frames in flight to be answered (see :meth:`Producer.close`)."""
        if self._credit is not None and not self._sock.closed:
            deadline = time.monotonic() + flush_timeout
            if self._held is not None and not await self.flush(flush_timeout):
                self._drop_held()
            while self._credit.session is not None and self._credit.in_flight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await self._sock.poll(max(1, int(left * 1000)), zmq.POLLIN)
                self._read_credit()
        self.close()

    def close(self) -> None:
        if self._held is not None:
            self._drop_held()
        super().close()


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
