"""The peer table alone: credit, forgetting and the shared-memory ring budget, without a
socket or an event loop (the clock is passed in). Real rings (memfd) where one is handed out."""

from __future__ import annotations

import collections

import pytest

from streampi import shared_frames
from streampi.protocol import Hello
from streampi.serving import peers
from streampi.serving.peers import PeerTable

WINDOWS = {"latest": 3, "queue": 8}
PAGE = shared_frames.round_up(1)


def table(**kw) -> tuple[PeerTable, list[int]]:
    """A table whose queue streams are named q…; ``owed`` counts its calls of ``credit_owed``."""
    owed: list[int] = []
    kw.setdefault("stats", collections.Counter())
    t = PeerTable("s1", policy_of=lambda s: "queue" if s.startswith("q") else "latest", default_policy="latest",
                  window=WINDOWS.__getitem__, credit_owed=lambda: owed.append(1), **kw)
    return t, owed


def credit(t: PeerTable) -> dict[bytes, tuple]:
    return {ident: (c.session, c.window, c.acked, c.policy, c.shm is not None, c.shm_refused)
            for ident, c in t.take_credit()}


def test_a_new_producer_is_greeted_and_every_answer_grows_its_credit():
    t, owed = table()
    peer, over = t.frame(b"a", now=0.0)
    assert not over and t.in_flight == 1 and len(t) == 1
    assert credit(t) == {b"a": ("s1.1", 3, 0, "latest", False, None)}
    t.answered(peer)
    t.answered(t.frame(b"b", now=0.0)[0])
    assert t.in_flight == 0
    assert credit(t) == {b"a": ("s1.1", 3, 1, "latest", False, None), b"b": ("s1.2", 3, 1, "latest", False, None)}
    assert credit(t) == {} and owed == [1, 1]  # one call per batch of credit owed


def test_credit_after_answers_goes_out_in_steps_of_a_quarter_window_and_at_once_when_nothing_is_in_flight():
    """A queue producer at its window (8: steps of 2) hears of every second answer, and of the
    last one at once; a latest producer (window 3) of every answer."""
    t, owed = table()
    q = t.hello(b"q", Hello(stream="q1"), now=0.0)
    live = t.hello(b"l", Hello(stream="cam"), now=0.0)
    credit(t)
    for _ in range(8):
        t.frame(b"q", now=0.0)
    t.frame(b"l", now=0.0)
    told = []
    for _ in range(7):
        t.answered(q)
        told.append(credit(t).get(b"q", (None, None, None))[2])
    assert told == [None, 2, None, 4, None, 6, None]
    t.answered(q)  # the last one in flight: at once, whatever the step
    assert credit(t) == {b"q": ("s1.1", 8, 8, "queue", False, None)}
    t.answered(live)
    assert credit(t) == {b"l": ("s1.2", 3, 1, "latest", False, None)}
    t.frame(b"q", now=0.0)  # a producer below its window: each answer leaves nothing in flight
    t.answered(q)
    assert credit(t)[b"q"][2] == 9 and len(owed) == 7


def test_a_latest_producer_hears_of_every_answer_whatever_its_window():
    """(--credit 8 on a latest stream: the frame it holds back must leave with the first credit)"""
    t = PeerTable("s1", policy_of=lambda s: "latest", default_policy="latest", window=lambda policy: 8)
    live = t.hello(b"l", Hello(stream="cam"), now=0.0)
    t.take_credit()
    for _ in range(8):
        t.frame(b"l", now=0.0)
    for acked in range(1, 4):
        t.answered(live)
        assert [c.acked for _, c in t.take_credit()] == [acked]


@pytest.mark.parametrize("stream, frames, past", [("cam", 3, []), ("cam", 5, [4, 5]), ("q1", 8, []), ("q1", 9, [9])])
def test_frames_past_the_window_of_the_streams_policy(stream, frames, past):
    t, _ = table()
    t.hello(b"p", Hello(stream=stream), now=0.0)
    over = [n for n in range(1, frames + 1) if t.frame(b"p", now=0.0)[1]]
    assert over == past and t.stats["credit_peak_in_flight"] == frames


def test_naming_a_stream_of_another_policy_changes_the_window_and_says_so():
    t, _ = table()
    peer = t.heard(b"p", None, now=0.0)
    credit(t)
    assert t.heard(b"p", "cam", now=1.0) is peer and credit(t) == {}  # latest, as before: nothing to say
    t.heard(b"p", "q2", now=2.0)
    assert credit(t) == {b"p": ("s1.1", 8, 0, "queue", False, None)}


def test_past_max_peers_the_least_recently_heard_idle_producer_is_forgotten(monkeypatch):
    monkeypatch.setattr(peers, "MAX_PEERS", 3)
    t, _ = table()
    busy = t.frame(b"busy", now=0.0)[0]  # heard first, but a frame of it is in flight
    idle = t.heard(b"idle", None, now=1.0)
    t.heard(b"recent", None, now=2.0)
    t.heard(b"new", None, now=3.0)
    assert idle.forgotten and not busy.forgotten and t.get(b"idle") is None and len(t) == 3
    assert b"idle" not in credit(t)  # a forgotten producer is owed nothing
    again = t.heard(b"idle", None, now=4.0)
    assert again is not idle and again.session == "s1.5" and t.stats["credit_peers_forgotten"] == 2


def test_a_hello_asking_for_shared_memory_gets_a_ring_of_window_plus_one_slots():
    t, _ = table()
    peer = t.hello(b"p", Hello(stream="q1", shm_bytes=1000), now=0.0)
    try:
        assert peer.ring is not None and peer.ring.slots == WINDOWS["queue"] + 1
        assert peer.ring.slot_bytes == PAGE and t.rings == 1 and t.ring_bytes == peer.ring.ring_bytes
        (_, c), = t.take_credit()
        assert c.shm == peer.ring.offer_wire
        t.bye(b"p")
        assert peer.ring is None and t.rings == 0 and t.ring_bytes == 0 and len(t) == 0 and t.take_credit() == []
    finally:
        t.close_rings("test over")


@pytest.mark.parametrize("kw, shm_bytes, refused", [
    ({"shared_memory": False}, 1000, "hands out no shared memory (--no-shared-memory)"),
    ({"max_message_bytes": 4096}, 5000, "a slot of 5000 bytes is larger than a frame may be (4096)"),
    ({"frame_memory": shared_frames.HEADER_BYTES + PAGE}, 1000, "leave no room for 2 slots"),
])
def test_a_ring_is_refused_with_the_reason(kw, shm_bytes, refused):
    t, _ = table(**kw)
    peer = t.hello(b"p", Hello(shm_bytes=shm_bytes), now=0.0)
    assert peer.ring is None and refused in peer.shm_refused and t.stats["shm_refused"] == 1
    (_, c), = t.take_credit()
    assert c.shm is None and c.shm_refused == peer.shm_refused


def test_the_frame_memory_budget_bounds_the_slots_of_a_ring():
    t, _ = table(frame_memory=shared_frames.HEADER_BYTES + 4 * PAGE)
    peer = t.hello(b"p", Hello(stream="q1", shm_bytes=PAGE), now=0.0)
    try:
        assert peer.ring.slots == 4  # not the window's 9
    finally:
        t.close_rings("test over")


def test_when_every_ring_is_out_a_silent_producers_ring_is_reclaimed(monkeypatch):
    monkeypatch.setattr(shared_frames, "MAX_RINGS", 2)
    t, _ = table()
    try:
        first = t.hello(b"first", Hello(shm_bytes=100), now=0.0)
        second = t.hello(b"second", Hello(shm_bytes=100), now=1.0)
        t.take_credit()
        third = t.hello(b"third", Hello(shm_bytes=100), now=peers.RING_IDLE_S - 1)  # nobody silent long enough
        assert third.ring is None and "handed out its 2 shared-memory rings" in third.shm_refused
        first.ring.take(0, 1, 10)  # the server holds a frame of the first: its ring stays
        fourth = t.hello(b"fourth", Hello(shm_bytes=100), now=1.0 + peers.RING_IDLE_S)
        assert first.ring is not None and second.ring is None and fourth.ring is not None
        assert "reclaimed" in second.shm_refused and t.rings == 2
        told = dict(t.take_credit())
        assert told[b"second"].shm_refused == second.shm_refused  # its credit says so
    finally:
        t.close_rings("test over")
    assert t.rings == 0 and t.ring_bytes == 0 and first.shm_refused == "test over"
