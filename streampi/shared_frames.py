"""Frames through shared memory, for producers on the server's own machine (protocol v1.1).

A camera on the same Pi as the server pays for every raw frame twice on the way in: ZeroMQ
copies its ~1 MB through the kernel's socket buffers in the producer's I/O thread and again
in the server's, which costs about as much CPU as the resize itself. With shared memory the
pixels are written once, by the producer, into a slot of a ring the server made; the frame
message carries only the header and the slot's number, and the server's kernel reads the
pixels from that slot.

Why the server makes the ring (not the producer): a ring is an anonymous ``memfd`` sealed
against shrinking and growing, so no producer can truncate it under the server, whose read
would then die of SIGBUS. The producer opens it through ``/proc/<server pid>/fd/<fd>``, which
works for a producer of the same user (or root) on the same machine and for nobody else; a
producer that cannot open it (another machine, another user, a hardened service) keeps
sending over the wire, and says why in ``Producer.stats()``. The ring's first page holds a
random token that the producer checks before it writes anything, so a producer on another
machine that happens to find a file at that path never writes into it.

Slot ownership (docs/protocol.md, "Shared memory"): the producer writes a slot only while
the server does not hold it. Each use of a slot carries a *ticket* (the producer's count of
shared-memory sends, rising); every credit message says the highest ticket the server has
received (``seen``) and which slots it still holds (``held``). A slot whose last ticket is
at most ``seen`` and which is not ``held`` is the producer's again: messages on one
connection arrive in order, so a ticket at most ``seen`` has arrived or was lost, and either
way nobody reads the slot any more.

This module is pure Python (``os``, ``mmap``, ``fcntl``): producers import it without the
kernels or an interpreter.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
from dataclasses import dataclass
from typing import Any

#: The ring's first bytes: this token, then nothing. Slots start at ``HEADER_BYTES``.
HEADER_BYTES = mmap.PAGESIZE
TOKEN_BYTES = 16
MEMFD_NAME = "streampi-frames"
#: Slots of one ring; more frames in flight than this go over the wire.
MAX_SLOTS = 32
#: One ring's bytes (slots times slot size); a ring asked larger gets fewer slots.
MAX_RING_BYTES = 128 * 2**20
#: Rings one server hands out; later producers send over the wire.
MAX_RINGS = 16
#: A producer's mark for a slot it lent to the camera (RingWriter.reserve): never a ticket.
RESERVED = -1


def available() -> bool:
    """Whether this platform has sealed memfds (Linux; not macOS or Windows)."""
    return hasattr(os, "memfd_create") and hasattr(fcntl, "F_ADD_SEALS")


def round_up(n: int, to: int = mmap.PAGESIZE) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class RingOffer:
    """What a credit message says of a producer's ring (the ``shm`` map)."""

    pid: int
    fd: int
    token: bytes
    slots: int
    slot_bytes: int

    def to_wire(self) -> dict[str, Any]:
        return {"pid": self.pid, "fd": self.fd, "token": self.token, "slots": self.slots,
                "slot_bytes": self.slot_bytes}

    @classmethod
    def from_wire(cls, body: Any) -> RingOffer:
        """Raises ValueError (with the reason) when ``body`` is not a valid offer."""
        if not isinstance(body, dict):
            raise ValueError("the shm offer is not a map")
        try:
            offer = cls(int(body["pid"]), int(body["fd"]), bytes(body["token"]), int(body["slots"]),
                        int(body["slot_bytes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the shm offer needs pid, fd, token, slots and slot_bytes ({exc!r})") from None
        if (offer.pid < 1 or offer.fd < 0 or len(offer.token) != TOKEN_BYTES or not 1 <= offer.slots <= MAX_SLOTS
                or not 1 <= offer.slot_bytes <= MAX_RING_BYTES):
            raise ValueError(f"the shm offer is out of range: {offer.slots} slots of {offer.slot_bytes} bytes")
        return offer

    @property
    def ring_bytes(self) -> int:
        return HEADER_BYTES + self.slots * self.slot_bytes


class SlotError(ValueError):
    """A frame names a slot it may not use (the message says why)."""


class Ring:
    """The server's side of one producer's ring: makes it, hands out views of its slots.

    ``take(slot, ticket, nbytes)`` returns a view of a slot's first ``nbytes`` and marks the
    slot held until ``release(slot)`` (the frame's answer). Views stay valid for as long as
    they live, even after :meth:`close` (the mapping is unmapped when the last view goes).
    """

    def __init__(self, slots: int, slot_bytes: int) -> None:
        if not available():
            raise OSError("shared-memory frames need Linux (sealed memfds)")
        self.slots, self.slot_bytes = slots, round_up(slot_bytes)
        self.token = os.urandom(TOKEN_BYTES)
        size = HEADER_BYTES + self.slots * self.slot_bytes
        fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd: int | None = fd
        self._map[:TOKEN_BYTES] = self.token
        self._view = memoryview(self._map)
        self.held: dict[int, int] = {}  # slot -> the ticket of the frame that holds it
        self.seen = 0  # the highest ticket received
        self.ring_bytes = size
        #: what every credit message to its producer says of it (made once)
        self.offer_wire = RingOffer(os.getpid(), fd, self.token, self.slots, self.slot_bytes).to_wire()

    def take(self, slot: int, ticket: int, nbytes: int) -> memoryview:
        if ticket > self.seen:
            self.seen = ticket
        if not 0 <= slot < self.slots:
            raise SlotError(f"shared-memory slot {slot} does not exist (this producer's ring has {self.slots})")
        if nbytes > self.slot_bytes:
            raise SlotError(f"a frame of {nbytes} bytes does not fit a shared-memory slot of {self.slot_bytes}")
        if slot in self.held:
            raise SlotError(f"shared-memory slot {slot} still holds an unanswered frame (ticket {self.held[slot]}); "
                            f"a producer reuses a slot only once the server no longer holds it (docs/protocol.md)")
        self.held[slot] = ticket
        start = HEADER_BYTES + slot * self.slot_bytes
        return self._view[start:start + nbytes]

    def release(self, slot: int) -> None:
        self.held.pop(slot, None)

    def close(self) -> None:
        """Close the descriptor (no producer can open the ring any more); the mapping goes
        with the last view of it."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self._view.release()


class RingWriter:
    """The producer's side of a ring: opens it, finds a free slot, writes a frame into it."""

    def __init__(self, offer: RingOffer) -> None:
        self.offer = offer
        path = f"/proc/{offer.pid}/fd/{offer.fd}"
        try:
            target = os.readlink(path)
        except OSError as exc:
            raise OSError(f"cannot see the server's ring at {path} ({exc.strerror}): is the server on another "
                          f"machine, or run by another user?") from None
        if not target.startswith(f"/memfd:{MEMFD_NAME}"):
            raise OSError(f"{path} is not a streampi ring ({target[:60]!r}): the server is on another machine")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # read the token before anything is written
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != offer.ring_bytes:
                raise OSError(f"{path} has {st.st_size} bytes, the offer says {offer.ring_bytes}")
            if os.pread(fd, TOKEN_BYTES, 0) != offer.token:
                raise OSError(f"{path} does not hold the token of the server's offer (another machine's process)")
        finally:
            os.close(fd)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._map = mmap.mmap(fd, offer.ring_bytes)
        finally:
            os.close(fd)
        if self._map[:TOKEN_BYTES] != offer.token:  # the same open file: cannot differ, but never write blind
            self._map.close()
            raise OSError(f"{path} changed while it was opened")
        self._view = memoryview(self._map)
        self._path = path
        self._inode = os.stat(path).st_ino
        # 0: free; RESERVED: lent to the camera (reserve), not sent yet; else the ticket of its last use
        self.tickets: list[int] = [0] * offer.slots
        self.last_ticket = 0

    def update(self, seen: int, held: Any) -> None:
        """Free the slots the server no longer holds (from a credit message)."""
        held_set = set(held) if held else set()
        for slot, ticket in enumerate(self.tickets):
            if ticket > 0 and ticket <= seen and slot not in held_set:
                self.tickets[slot] = 0

    def reserve(self, nbytes: int) -> tuple[int, memoryview] | None:
        """Lend a free slot to the camera to capture a frame of ``nbytes`` into: (slot, its
        writable bytes), or None when the frame is larger than a slot or no slot is free. The
        slot stays the camera's until :meth:`commit` or :meth:`release`."""
        if nbytes > self.offer.slot_bytes:
            return None
        try:
            slot = self.tickets.index(0)
        except ValueError:
            return None
        self.tickets[slot] = RESERVED
        start = HEADER_BYTES + slot * self.offer.slot_bytes
        return slot, self._view[start:start + nbytes]

    def commit(self, slot: int) -> tuple[int, int]:
        """The reserved ``slot`` holds the frame to send: (slot, ticket), no copy."""
        if self.tickets[slot] != RESERVED:
            raise ValueError(f"slot {slot} is not reserved")
        self.last_ticket += 1
        self.tickets[slot] = self.last_ticket
        return slot, self.last_ticket

    def release(self, slot: int) -> None:
        """A reserved slot that will not be sent is free again."""
        if self.tickets[slot] == RESERVED:
            self.tickets[slot] = 0

    def alive(self) -> bool:
        """Whether the server that made the ring still holds it: a restarted server has a
        new ring (or none yet), and a frame naming the old one could not be read. One stat
        call, a few microseconds a frame."""
        try:
            return os.stat(self._path).st_ino == self._inode
        except OSError:
            return False

    def write(self, payload: Any) -> tuple[int, int] | None:
        """Copy ``payload`` into a free slot; (slot, ticket), or None when no slot is free or
        the frame is larger than a slot (then it goes over the wire)."""
        data = memoryview(payload).cast("B")
        if data.nbytes > self.offer.slot_bytes:
            return None
        try:
            slot = self.tickets.index(0)
        except ValueError:
            return None
        start = HEADER_BYTES + slot * self.offer.slot_bytes
        self._view[start:start + data.nbytes] = data
        self.last_ticket += 1
        self.tickets[slot] = self.last_ticket
        return slot, self.last_ticket

    def close(self) -> None:
        self._view.release()
        try:
            self._map.close()
        except BufferError:  # a view still lives: the mapping goes with it
            pass
