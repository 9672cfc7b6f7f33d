"""The protocol v1.1 producers a server knows: their credit and their shared-memory rings.

Sans-IO, like :mod:`streampi.serving.scheduler`: no socket, no event loop; the clock comes in
as ``now`` (``time.monotonic()``). The server feeds it what each producer says (a frame, a
hello, a bye) and the answers it gives (:meth:`PeerTable.answered`), and sends the credit
messages :meth:`PeerTable.take_credit` returns. What it decides:

* a producer's *window*, from its stream's policy; what it has in flight (``received - acked``);
* which producers to forget past :data:`MAX_PEERS` (the least recently heard idle one first);
  a forgotten producer is greeted as new, with a new session, when it is heard again;
* the shared-memory rings: who gets one, how many slots, within :data:`shared_frames.MAX_RINGS`
  and the frame memory budget, and whose ring to reclaim after :data:`RING_IDLE_S` of silence.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import protocol, shared_frames

#: v1.1 producers the server remembers; past it the least recently heard idle one is forgotten
#: (it is greeted as new, with a new session, when it is heard again).
MAX_PEERS = 4096
#: When every shared-memory ring is out, a producer silent this long loses its ring to a new one.
RING_IDLE_S = 30.0
#: Credit after answers to a ``queue`` producer goes out once its acked count has grown by its
#: window over this (at least 1), or when nothing of it is in flight (PeerTable.answered).
CREDIT_STEPS = 4


@dataclass(eq=False)
class Peer:
    """One protocol v1.1 producer (a DEALER socket), as the server counts its credit."""

    identity: bytes  # the ROUTER's routing id for it
    session: str  # changes whenever the server starts counting it afresh
    stream: str | None
    policy: str
    window: int
    received: int = 0  # its frame messages received in this session
    acked: int = 0  # ... and answered
    told: int = 0  # acked as its last credit message said
    forgotten: bool = False
    ring: Any = None  # its shared-memory ring (shared_frames.Ring), if it asked for one and got it
    shm_refused: str | None = None  # why it did not get one
    heard: float = 0.0  # monotonic time of its last message

    def credit(self) -> protocol.Credit:
        """What the server tells it now."""
        ring = self.ring
        if ring is None:
            return protocol.Credit(self.session, self.window, self.acked, self.policy, shm_refused=self.shm_refused)
        return protocol.Credit(self.session, self.window, self.acked, self.policy, ring.offer_wire, ring.seen,
                               tuple(ring.held))


class PeerTable:
    """The v1.1 producers of one server, least recently heard first.

    ``policy_of(stream)`` is a stream's policy (the scheduler's); ``window(policy)`` the credit
    of a producer of that policy; ``credit_owed()`` is called when a credit message becomes due
    and none was (the server sends them all in one go: :meth:`take_credit`). ``stats`` is the
    server's counters. The ring budget: ``shared_memory`` (hand rings out at all),
    ``max_message_bytes`` (a slot may not be larger than a frame) and ``frame_memory`` (the
    bytes of every ring together stay within it; 0: no budget)."""

    def __init__(self, session: str, *, policy_of: Callable[[str], str], default_policy: str,
                 window: Callable[[str], int], credit_owed: Callable[[], None] = lambda: None,
                 stats: collections.Counter | None = None, shared_memory: bool = True,
                 max_message_bytes: int = protocol.Limits().max_message_bytes, frame_memory: int = 0) -> None:
        self._session, self._serial = session, 0
        self._policy_of, self._default_policy, self._window = policy_of, default_policy, window
        self._credit_owed = credit_owed
        self.stats = stats if stats is not None else collections.Counter()
        self.shared_memory, self.max_message_bytes, self.frame_memory = shared_memory, max_message_bytes, frame_memory
        self._peers: collections.OrderedDict[bytes, Peer] = collections.OrderedDict()
        self._due: dict[Peer, None] = {}  # peers owed a credit message (an insertion-ordered set)
        self.rings = 0  # shared-memory rings handed out and not yet closed
        self.ring_bytes = 0  # ... and their bytes (address space; pages exist where a producer wrote)

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[Peer]:
        return iter(self._peers.values())

    def get(self, identity: bytes) -> Peer | None:
        return self._peers.get(identity)

    @property
    def in_flight(self) -> int:
        """Frames received from these producers and not yet answered."""
        return sum(p.received - p.acked for p in self._peers.values())

    # -- what the producers say ------------------------------------------------------------------
    def heard(self, identity: bytes, stream: str | None, now: float) -> Peer:
        """This producer's state, made (and greeted) when the table does not know it: new, or
        the server restarted, or it was forgotten while idle. A ``stream`` it names (in a hello,
        or in a frame) sets its policy and so its window."""
        peer = self._peers.get(identity)
        if peer is not None:
            peer.heard = now
            self._peers.move_to_end(identity)
            if stream is not None and peer.stream != stream:
                peer.stream = stream
                policy = self._policy_of(stream)
                if policy != peer.policy:
                    peer.policy, peer.window = policy, self._window(policy)
                    self.owe_credit(peer)
            return peer
        while len(self._peers) >= MAX_PEERS:  # forget the least recently heard (idle ones first)
            idle = next((k for k, p in self._peers.items() if p.acked == p.received), None)
            old = self._peers.pop(idle if idle is not None else next(iter(self._peers)))
            old.forgotten = True
            self._drop_ring(old, "forgotten")
            self.stats["credit_peers_forgotten"] += 1
        self._serial += 1
        policy = self._policy_of(stream) if stream is not None else self._default_policy
        peer = self._peers[identity] = Peer(identity, f"{self._session}.{self._serial}", stream, policy,
                                           self._window(policy), heard=now)
        self.stats["credit_peers"] += 1
        self.owe_credit(peer)
        return peer

    def frame(self, identity: bytes, now: float) -> tuple[Peer, bool]:
        """A frame message came from this producer: its peer, and whether the frame is past
        its credit (answered ``overloaded`` by the server)."""
        peer = self.heard(identity, None, now)
        peer.received += 1
        held = peer.received - peer.acked
        if held > self.stats["credit_peak_in_flight"]:
            self.stats["credit_peak_in_flight"] = held
        return peer, held > peer.window

    def hello(self, identity: bytes, hello: protocol.Hello, now: float) -> Peer:
        """A (well-formed) hello: its credit is owed, with a ring if it asks for one and has none."""
        self.stats["credit_hellos"] += 1
        peer = self.heard(identity, hello.stream, now)
        if hello.shm_bytes is not None and peer.ring is None:
            self._grant_ring(peer, hello.shm_bytes, now)
        self.owe_credit(peer)
        return peer

    def bye(self, identity: bytes) -> None:
        """A producer said goodbye (it is closing): its ring is freed now rather than after
        RING_IDLE_S of silence, and its credit is forgotten. Its frames still in flight are
        answered as usual; a slot they hold stays mapped until then."""
        peer = self._peers.pop(identity, None)
        self.stats["credit_byes"] += 1
        if peer is not None:
            peer.forgotten = True
            self._drop_ring(peer, "the producer said goodbye")

    # -- what the server does ------------------------------------------------------------------
    def answered(self, peer: Peer) -> None:
        """One of ``peer``'s frames was answered: its credit grows by one. A producer of a
        ``queue`` stream is told in steps of a quarter of its window (one frame for a window
        under 8), and at once when nothing of it is in flight: at saturation it then wakes and
        is sent a credit message every few frames rather than for each one (at least ``window -
        step`` of its frames stay queued), and one that sends less than its window, or waits
        for its last answers before closing, hears of each answer as before. A ``latest``
        producer hears of each answer: the frame it holds back must leave at once."""
        peer.acked += 1
        step = max(1, peer.window // CREDIT_STEPS) if peer.policy == "queue" else 1
        if peer.acked - peer.told >= step or peer.acked >= peer.received:
            self.owe_credit(peer)

    def owe_credit(self, peer: Peer) -> None:
        if not self._due:
            self._credit_owed()
        self._due[peer] = None

    def take_credit(self) -> list[tuple[bytes, protocol.Credit]]:
        """The credit messages to send now, one per producer owed one (and not forgotten)."""
        due, self._due = self._due, {}
        for peer in due:
            peer.told = peer.acked
        return [(peer.identity, peer.credit()) for peer in due if not peer.forgotten]

    def close_rings(self, why: str) -> None:
        for peer in self._peers.values():
            self._drop_ring(peer, why)

    # -- shared-memory rings ---------------------------------------------------------------------
    def _grant_ring(self, peer: Peer, slot_bytes: int, now: float) -> None:
        """Give ``peer`` a shared-memory ring for its frames, or say in ``shm_refused`` why not
        (the producer then sends over the wire). Slots: one more than its window (each frame
        in flight holds one), within the bounds of :mod:`streampi.shared_frames`."""
        def refuse(why: str) -> None:
            peer.shm_refused = why
            self.stats["shm_refused"] += 1

        if not self.shared_memory:
            return refuse("this server hands out no shared memory (--no-shared-memory)")
        if not shared_frames.available():
            return refuse("shared-memory frames need Linux")
        if slot_bytes > self.max_message_bytes:
            return refuse(f"a slot of {slot_bytes} bytes is larger than a frame may be ({self.max_message_bytes})")
        if self.rings >= shared_frames.MAX_RINGS:
            self._reclaim_ring(now)
        if self.rings >= shared_frames.MAX_RINGS:
            return refuse(f"this server has handed out its {shared_frames.MAX_RINGS} shared-memory rings")
        slot_bytes = shared_frames.round_up(slot_bytes)
        slots = min(peer.window + 1, shared_frames.MAX_SLOTS, shared_frames.MAX_RING_BYTES // slot_bytes)
        if slots < 1:
            return refuse(f"a slot of {slot_bytes} bytes is larger than a ring may be "
                          f"({shared_frames.MAX_RING_BYTES})")
        budget = self.frame_memory  # the rings' address space, all together, within the frame budget
        if budget:
            def room() -> int:
                return (budget - self.ring_bytes - shared_frames.HEADER_BYTES) // slot_bytes

            while room() < min(slots, 2) and self._reclaim_ring(now):  # silent producers' rings make room first
                pass
            slots = min(slots, room())
            if slots < 2:
                return refuse(f"the shared-memory rings handed out ({self.ring_bytes / 2**20:.1f} MiB) leave no "
                              f"room for 2 slots of {slot_bytes} bytes within --max-frame-memory "
                              f"({budget / 2**20:.1f} MiB)")
        try:
            peer.ring = shared_frames.Ring(slots, slot_bytes)
        except OSError as exc:
            return refuse(f"the server could not make a ring: {exc}")
        peer.shm_refused = None
        self.rings += 1
        self.ring_bytes += peer.ring.ring_bytes
        self.stats["shm_rings"] += 1

    def _reclaim_ring(self, now: float) -> bool:
        """Every ring is out, or the frame memory budget is: close the one of the producer
        heard least recently, if it has been silent for RING_IDLE_S and the server holds none
        of its frames (a producer that stopped without saying goodbye). Its credit says so,
        and a producer reads its credit before it sends again. True if one was closed."""
        for peer in self._peers.values():  # least recently heard first
            if peer.ring is not None and now - peer.heard >= RING_IDLE_S and not peer.ring.held:
                self._drop_ring(peer, "the server reclaimed this producer's shared-memory ring after "
                                      f"{RING_IDLE_S:g} s of silence")
                self.owe_credit(peer)
                return True
        return False

    def _drop_ring(self, peer: Peer, why: str) -> None:
        if peer.ring is not None:
            self.ring_bytes -= peer.ring.ring_bytes
            peer.ring.close()
            peer.ring = None
            peer.shm_refused = why
            self.rings -= 1
