"""What a producer decides, apart from how it waits: credit, the held frame, the ring.

This is the pure core of :class:`~streampi.client.Producer` and
:class:`~streampi.client.AsyncProducer` (the "sans-I/O" shape of h11, as
:mod:`streampi.serving.scheduler` is the server's): no sockets and no clock. The producer
feeds it frames to send, credit messages and the time; it answers with what to do (send
these parts, hold the frame, poll this long, say hello, give up), and the blocking or the
asyncio flavour carries that out. Every decision is therefore a table-driven unit test
(``tests/test_producer_core.py``).

Protocol v1.1 (docs/protocol.md): the server grants a *window* of frames in flight and says
how many it has answered (``acked``). A frame without credit is held back, replacing the one
held (policy ``latest``: counted in ``dropped``), or waits for credit (``queue``). With
shared memory the server also offers a ring (:mod:`streampi.shared_frames`) and the pixels
of raw frames go through it, the message carrying only the header and the slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import protocol, shared_frames
from .errors import FrameError
from .formats import BYTES_PER_PIXEL, FORMATS, RAW_FORMATS, check_raw_size

#: A producer that waits for credit this long says hello again (the server may have restarted).
HELLO_EVERY_S = 1.0
#: A server that answers a request for a ring says so in its credit within this long.
ASK_ANSWERED_S = 2.0

#: What :meth:`ProducerCore.plan` decides for a frame, once the credit received is read.
SEND, HOLD, WAIT = "send", "hold", "wait"


def infer_format(frame: Any, fmt: str | None, width: int | None,
                 height: int | None) -> tuple[str, int | None, int | None]:
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


class CreditState:
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


@dataclass(eq=False)
class Outgoing:
    """One frame on its way out: checked, numbered, not encoded yet (whether its pixels go
    through the ring is known only when it leaves)."""

    seq: int
    fmt: str
    payload: Any  # the pixels or the JPEG, bytes-like
    width: int | None
    height: int | None
    ts: float
    meta: dict | None
    lent: tuple[shared_frames.RingWriter, int, np.ndarray] | None = None  # the slot it was captured into
    held: bool = False  # held back for want of credit (policy latest): it leaves with flush() or not at all


class Wait(NamedTuple):
    """Poll the socket for credit ``poll_ms``, after a hello when ``hello``."""

    hello: bool
    poll_ms: int


class ProducerCore:
    """A producer's state and decisions; see the module docstring.

    ``credit=False`` is protocol v1 (PUSH, no flow control): frames are only numbered and
    encoded. ``now`` arguments are ``time.monotonic()`` seconds.
    """

    def __init__(self, stream: str, *, endpoint: str = "", fmt: str | None = None, two_part: bool = True,
                 zero_copy: bool = False, limits: protocol.Limits = protocol.DEFAULT_LIMITS, start_seq: int = 0,
                 credit: bool = True, when_full: str | None = None, on_drop: Any = None,
                 shared_memory: bool = False) -> None:
        self.stream, self.endpoint, self.fmt = stream, endpoint, fmt
        self.two_part, self.zero_copy, self.limits = two_part, zero_copy, limits
        self.when_full, self.on_drop = when_full, on_drop
        self.seq = start_seq
        self.dropped = 0  # frames replaced here, never sent (v1.1, latest)
        self.credit = CreditState() if credit else None
        self.held: Outgoing | None = None  # the newest frame without credit
        self._held_buf: bytearray | None = None
        self.last_hello = 0.0
        self.shm_wanted = bool(shared_memory)
        self.shm_bytes: int | None = None  # the slot size asked for: the first raw frame's bytes
        self.ring: shared_frames.RingWriter | None = None
        self._ring_token: bytes | None = None  # the offer last tried (a failed one is not retried)
        self.shared_memory = "asking" if shared_memory else "off"  # what became of it, for stats()
        self._asked_at: float | None = None  # when this session's hello asked for a ring
        self.shm_frames = 0  # frames sent through the ring
        self.shm_in_place = 0  # of those, frames captured straight into their slot (frame_buffer)
        self._lent: tuple[shared_frames.RingWriter, int, np.ndarray] | None = None  # frame_buffer's slot
        self._plain_buf: np.ndarray | None = None  # frame_buffer's array when no slot can be lent

    # -- a frame to send -------------------------------------------------------------------------
    def frame(self, frame: Any, fmt: str | None, width: int | None, height: int | None, ts: float,
              meta: dict | None, seq: int | None) -> Outgoing:
        """Check and number a frame (FrameError when it is not one); it takes the slot
        :meth:`frame_buffer` lent if ``frame`` is that array."""
        fmt, width, height = infer_format(frame, fmt or self.fmt, width, height)
        if fmt in RAW_FORMATS:
            nbytes = frame.nbytes if isinstance(frame, np.ndarray) else len(memoryview(frame).cast("B"))
            check_raw_size(fmt, width, height, nbytes, self.limits.max_pixels)
            if self.shm_wanted and self.shm_bytes is None:
                self.shm_bytes = nbytes
        else:
            width = height = None
        if seq is None:
            seq = self.seq
        self.seq = seq + 1
        payload = memoryview(np.ascontiguousarray(frame) if isinstance(frame, np.ndarray) else frame).cast("B")
        return Outgoing(seq, fmt, payload, width, height, ts, meta, self._take_lent(frame))

    def cancel(self, out: Outgoing) -> None:
        """``out`` will not be sent (its wait failed): its seq is free again, its slot too."""
        self.seq -= 1
        self._release(out.lent)
        out.lent = None

    def plan(self, out: Outgoing) -> str:
        """With the credit received read: :data:`SEND` now, :data:`HOLD` (done: ``out``
        replaced the frame held) or :data:`WAIT` for credit."""
        assert self.credit is not None, "protocol v1 sends at once"
        if self.credit.free > 0:
            return SEND
        replaces = self.when_full == "replace" if self.when_full is not None else self.credit.policy != "queue"
        if replaces:
            self._hold(out)
            return HOLD
        return WAIT

    def wait(self, now: float, started: float, timeout: float, first: bool = False) -> Wait | None:
        """One step of a wait for credit for one frame that began at ``started``: None when
        there is credit, else how to wait on. At ``timeout``, ConnectionError when no server
        ever answered (``first``: the first credit of this producer), else TimeoutError."""
        assert self.credit is not None
        if self.credit.free > 0:
            return None
        if now - started >= timeout:
            if first or self.credit.session is None:
                raise self.no_server(timeout)
            raise TimeoutError(f"no credit from {self.endpoint} within {timeout:g} s: the server holds "
                               f"{self.credit.in_flight} frames of this producer (window {self.credit.window})")
        return Wait(now - self.last_hello >= HELLO_EVERY_S,
                    max(1, int(min(timeout - (now - started), HELLO_EVERY_S) * 1000)))

    def drain(self, now: float, deadline: float) -> int | None:
        """On close: milliseconds to poll for the answers to the frames in flight, or None
        when all are answered (or ``deadline`` has passed, or there is no server)."""
        if self.credit is None or self.credit.session is None or self.credit.in_flight <= 0 or now >= deadline:
            return None
        return max(1, int((deadline - now) * 1000))

    def wire(self, out: Outgoing) -> list[Any]:
        """The message that sends ``out`` now (any older held frame is dropped), its pixels
        through the ring where they can go."""
        self.drop_held()
        parts = self._through_ring(out)
        if self.credit is None:
            return parts
        self.credit.sent += 1
        return [protocol.KIND_FRAME, *parts]

    def take_held(self) -> Outgoing | None:
        held, self.held = self.held, None
        return held

    def drop_held(self) -> None:
        if self.held is not None:
            seq = self.held.seq
            self.held = None
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(seq)

    def _hold(self, out: Outgoing) -> None:
        """Keep ``out`` as the frame to send when credit comes, replacing the one held. The
        pixels are copied (into the same buffer when the size is the same) unless
        ``zero_copy``, since the caller may reuse its array for the next capture; a lent slot
        goes back to the ring."""
        self.drop_held()
        if out.lent is not None or not self.zero_copy or not self.two_part:
            payload = memoryview(out.payload).cast("B")
            if self._held_buf is None or len(self._held_buf) != payload.nbytes:
                self._held_buf = bytearray(payload.nbytes)
            self._held_buf[:] = payload
            out.payload = self._held_buf
        self._release(out.lent)
        out.lent, out.held = None, True
        self.held = out

    def no_server(self, waited: float) -> ConnectionError:
        return ConnectionError(
            f"no streampi server answered on {self.endpoint} within {waited:g} s (protocol v1.1: the server's "
            f"--credit-bind endpoint, default port 5558; a v1 server or its --bind endpoint needs "
            f"protocol_version='1')")

    # -- messages from and to the server --------------------------------------------------------
    def credit_received(self, credit: protocol.Credit, now: float) -> bool:
        """Take in one credit message; True when a hello must go out now (a new session
        knows nothing of this producer's request for a ring)."""
        assert self.credit is not None
        session = self.credit.session
        self.credit.update(credit)
        return self.shm_wanted and self._update_ring(credit, credit.session != session, now)

    def hello(self, now: float) -> list[bytes]:
        """The hello to send now: it asks for a ring until one is up."""
        self.last_hello = now
        ask = self.shm_bytes if self.shm_wanted and self.ring is None and self.shm_bytes else None
        if ask is not None and self._asked_at is None:
            self._asked_at = now
        return protocol.encode_hello(self.stream, ask)

    def bye(self) -> list[bytes] | None:
        """The message that tells the server this producer is closing (v1.1, after its
        frames), so it frees the ring at once instead of after 30 s of silence; None when
        no server ever answered."""
        if self.credit is None or self.credit.session is None:
            return None
        return protocol.encode_bye()

    def close(self) -> None:
        """A frame still held is dropped; the ring is let go."""
        self.drop_held()
        self._close_ring()

    # -- shared memory (v1.1, a server on this machine) ------------------------------------------
    def _update_ring(self, credit: protocol.Credit, new_session: bool, now: float) -> bool:
        """Open, follow or drop the ring as the server's credit says (shared_frames); True
        when the request for a ring must be said again."""
        if new_session:
            self._asked_at = None
            if self.ring is not None:  # a restarted server: its rings died with it
                self._close_ring()
                self.shared_memory = "asking"
        if credit.shm is not None:
            try:
                offer = shared_frames.RingOffer.from_wire(credit.shm)
            except ValueError as exc:
                self.shared_memory = f"unusable: {exc}"
                return False
            if self.ring is None or self.ring.offer.token != offer.token:
                if offer.token == self._ring_token:
                    return False  # tried and failed: the wire it is
                self._close_ring()
                self._ring_token = offer.token
                try:
                    self.ring = shared_frames.RingWriter(offer)
                except OSError as exc:
                    self.shared_memory = f"unusable: {exc}"
                    return False
                self.shared_memory = f"on: {offer.slots} slots of {offer.slot_bytes} bytes"
            self.ring.update(credit.shm_seen, credit.shm_held)
        elif credit.shm_refused is not None:
            self._close_ring()
            self.shared_memory = f"refused: {credit.shm_refused}"
        elif new_session and self.shm_bytes:
            return True
        elif (self.ring is None and self._asked_at is not None and self.shared_memory == "asking"
              and now - self._asked_at > ASK_ANSWERED_S):
            self.shared_memory = ("not offered: the server's credit says nothing of shared memory (a server older "
                                  "than it?); the frames go over the wire")
        return False

    def _close_ring(self) -> None:
        self._lent = None  # (its array stays valid: the mapping lives while a view of it does)
        if self.ring is not None:
            self.ring.close()
            self.ring = None

    def frame_buffer(self, width: int, height: int, fmt: str = "rgb") -> np.ndarray:
        """See :meth:`streampi.client.Producer.frame_buffer`."""
        nbytes = check_raw_size(fmt, width, height, None, self.limits.max_pixels)
        shape = ((height * 3 // 2, width) if fmt in ("i420", "nv12") else
                 (height, width) if fmt == "gray" else (height, width, BYTES_PER_PIXEL[fmt]))
        lent, self._lent = self._lent, None  # the camera asked again: the last one was not sent
        self._release(lent)
        if self.shm_wanted:
            if self.shm_bytes is None:
                self.shm_bytes = nbytes  # the ring is asked for with the first send
            # no credit read and no check that the server lives: with at most `window` frames in
            # flight, one of the window + 1 slots is free since the last send; and a slot of a ring
            # whose server went away is still this process's memory (send then uses the wire)
            ring = self.ring
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
        if lent is not None and frame is lent[2] and lent[0] is self.ring:
            return lent
        self._release(lent)
        return None

    @staticmethod
    def _release(lent: tuple | None) -> None:
        """A lent slot that will not be sent from where it lies is free again."""
        if lent is not None:
            lent[0].release(lent[1])

    def _through_ring(self, out: Outgoing) -> list[Any]:
        """The frame message of ``out``: with its pixels moved into a free slot of the ring
        (header only), or over the wire when they cannot go that way."""
        ring, lent = self.ring, out.lent
        out.lent = None
        if lent is not None and (lent[0] is not ring or not self.two_part):  # (one part: copied anyway)
            self._release(lent)
            lent = None
        got = None
        if ring is not None and self.two_part:
            if not ring.alive():  # the server went away (and perhaps came back): wire until its new credit
                self._close_ring()
                self.shared_memory = "asking"
            elif out.fmt not in RAW_FORMATS:
                self._release(lent)
            elif lent is not None:
                got = ring.commit(lent[1])
                self.shm_in_place += 1
            else:
                got = ring.write(out.payload)  # None: larger than a slot, or every slot in flight
        if got is not None:
            self.shm_frames += 1
        return protocol.encode_frame(self.stream, out.seq, out.fmt, out.payload, out.width, out.height, ts=out.ts,
                                     meta=out.meta, two_part=self.two_part, shm=got)
