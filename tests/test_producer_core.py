"""The producer's decisions (streampi.producer_core), without sockets: credit messages and
times in, what to send, hold, wait for or give up out. Frames leave as the bytes the server
decodes (protocol.decode_frame); rings are real memfd rings made here, as the server makes
them."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from streampi import protocol, shared_frames
from streampi.errors import FrameError
from streampi.producer_core import HELLO_EVERY_S, HOLD, SEND, WAIT, ProducerCore, Wait

RGB = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3)
needs_memfd = pytest.mark.skipif(not shared_frames.available(), reason="shared memory needs Linux memfds")


def credit(window: int = 2, acked: int = 0, policy: str = "latest", session: str = "s1", **shm) -> protocol.Credit:
    return protocol.Credit(session, window, acked, policy, **shm)


def sent(core: ProducerCore, frame=RGB) -> list:
    """Number ``frame`` and return the message that sends it now."""
    return core.wire(core.frame(frame, None, None, None, 1.0, None, None))


def decoded(parts: list, ring=None) -> protocol.FrameMessage:
    assert parts[0] == protocol.KIND_FRAME
    return protocol.decode_frame(parts[1:], ring=ring)


# -- credit accounting -------------------------------------------------------------------------
@pytest.mark.parametrize("messages, frames_sent, want", [
    # (window, acked, sent, in_flight, free, sessions)
    ([], 0, (0, 0, 0, 0, 0, 0)),  # no credit yet: nothing may be sent
    ([credit(3)], 0, (3, 0, 0, 0, 3, 1)),
    ([credit(3)], 2, (3, 0, 2, 2, 1, 1)),
    ([credit(3), credit(3, acked=2)], 3, (3, 2, 3, 1, 2, 1)),
    ([credit(3), credit(3, acked=2), credit(3, acked=1)], 3, (3, 2, 3, 1, 2, 1)),  # acked never goes back
    ([credit(3), credit(5, acked=1)], 3, (5, 1, 3, 2, 3, 1)),  # the window may change
    # a restarted server: counting afresh from its session, what the old one held is not coming back
    ([credit(3), credit(2, session="s2")], 3, (2, 0, 0, 0, 2, 2)),
])
def test_credit_accounting(messages, frames_sent, want):
    core = ProducerCore("cam")
    for c in messages[:1]:
        core.credit_received(c, 0.0)
    for _ in range(frames_sent):
        sent(core)
    for c in messages[1:]:
        core.credit_received(c, 0.0)
    c = core.credit
    assert (c.window, c.acked, c.sent, c.in_flight, c.free, c.sessions) == want


def test_a_new_session_counts_frames_it_answered_that_were_sent_to_the_old_one():
    core = ProducerCore("cam")
    core.credit_received(credit(2), 0.0)
    sent(core)
    core.credit_received(credit(2, acked=4, session="s2"), 0.0)  # answered frames queued across the restart
    assert (core.credit.sent, core.credit.acked, core.credit.free) == (4, 4, 2)


# -- send, hold or wait ------------------------------------------------------------------------
@pytest.mark.parametrize("policy, when_full, in_flight, want", [
    ("latest", None, 0, SEND),
    ("latest", None, 1, SEND),
    ("latest", None, 2, HOLD),
    ("queue", None, 2, WAIT),
    ("queue", "replace", 2, HOLD),
    ("latest", "wait", 2, WAIT),
    ("queue", "wait", 1, SEND),
])
def test_plan(policy, when_full, in_flight, want):
    core = ProducerCore("cam", when_full=when_full)
    core.credit_received(credit(2, policy=policy), 0.0)
    for _ in range(in_flight):
        sent(core)
    out = core.frame(RGB, None, None, None, 1.0, None, None)
    assert core.plan(out) == want
    assert (core.held is out) == (want == HOLD) == out.held


def test_a_held_frame_is_replaced_by_a_newer_one_and_leaves_with_credit():
    drops: list[int] = []
    core = ProducerCore("cam", on_drop=drops.append)
    core.credit_received(credit(1), 0.0)
    sent(core)  # seq 0 in flight
    capture = RGB.copy()
    first = core.frame(capture, None, None, None, 1.0, None, None)
    assert core.plan(first) == HOLD
    capture[:] = 7  # the camera captures the next frame into the same array
    second = core.frame(capture, None, None, None, 2.0, None, None)
    assert core.plan(second) == HOLD
    assert drops == [1] and core.dropped == 1 and core.held is second
    core.credit_received(credit(1, acked=1), 0.0)
    msg = decoded(core.wire(core.take_held()))
    assert (msg.seq, msg.ts, bytes(msg.data)) == (2, 2.0, capture.tobytes())
    assert core.held is None and core.credit.in_flight == 1


@pytest.mark.parametrize("zero_copy, two_part, copied", [(False, True, True), (True, True, False),
                                                         (True, False, True)])
def test_a_held_frame_is_copied_unless_zero_copy(zero_copy, two_part, copied):
    core = ProducerCore("cam", zero_copy=zero_copy, two_part=two_part)
    core.credit_received(credit(1), 0.0)
    sent(core)
    capture = RGB.copy()
    out = core.frame(capture, None, None, None, 1.0, None, None)
    assert core.plan(out) == HOLD
    capture[:] = 9
    core.credit_received(credit(1, acked=1), 0.0)
    msg = decoded(core.wire(core.take_held()))
    assert bytes(msg.data) == (RGB.tobytes() if copied else capture.tobytes())


def test_a_newer_frame_sent_with_credit_drops_the_held_one():
    drops: list[int] = []
    core = ProducerCore("cam", on_drop=drops.append)
    core.credit_received(credit(1), 0.0)
    sent(core)
    assert core.plan(core.frame(RGB, None, None, None, 1.0, None, None)) == HOLD
    core.credit_received(credit(1, acked=1), 0.0)
    assert decoded(sent(core)).seq == 2 and drops == [1] and core.held is None


def test_cancel_gives_the_seq_back():
    core = ProducerCore("cam", start_seq=10)
    out = core.frame(RGB, None, None, None, 1.0, None, None)
    core.cancel(out)
    assert decoded(sent(core)).seq == 10 and core.seq == 11


# -- waiting for credit ------------------------------------------------------------------------
@pytest.mark.parametrize("given, session, now, first, want", [
    (1, "s1", 5.0, False, None),  # credit is there
    (0, "s1", 5.0, False, Wait(True, 1000)),  # hello again: the last was more than a second ago
    (0, "s1", 0.5, False, Wait(False, 1000)),  # the last hello (at 0) was half a second ago
    (0, "s1", 9.75, False, Wait(True, 250)),  # the poll ends with the timeout
    (0, "s1", 10.0, False, TimeoutError),
    (0, "s1", 10.0, True, ConnectionError),  # the first credit never came
    (0, None, 10.0, False, ConnectionError),  # no server ever answered
])
def test_wait(given, session, now, first, want):
    core = ProducerCore("cam")
    if session is not None:
        core.credit_received(credit(2), 0.0)
        for _ in range(2 - given):
            sent(core)
    if isinstance(want, type):
        with pytest.raises(want, match="within 10 s"):
            core.wait(now, 0.0, 10.0, first)
    else:
        assert core.wait(now, 0.0, 10.0, first) == want


def test_hello_is_said_again_every_second_while_waiting():
    core = ProducerCore("cam")
    core.hello(2.0)
    assert not core.wait(2.0 + HELLO_EVERY_S / 2, 0.0, 30.0).hello
    assert core.wait(2.0 + HELLO_EVERY_S, 0.0, 30.0).hello


@pytest.mark.parametrize("session, in_flight, now, want", [
    (None, 0, 0.0, None), ("s1", 0, 0.0, None), ("s1", 2, 0.25, 750), ("s1", 2, 1.0, None)])
def test_drain_on_close(session, in_flight, now, want):
    core = ProducerCore("cam")
    if session is not None:
        core.credit_received(credit(2), 0.0)
    for _ in range(in_flight):
        sent(core)
    assert core.drain(now, 1.0) == want


def test_protocol_v1_only_numbers_and_encodes():
    core = ProducerCore("cam", credit=False, two_part=False)
    parts = core.wire(core.frame(RGB.tobytes(), "rgb", 6, 4, 1.5, {"k": 1}, 41))
    msg = protocol.decode_frame(parts)
    assert (msg.seq, msg.fmt, msg.width, msg.height, msg.ts, msg.meta) == (41, "rgb", 6, 4, 1.5, {"k": 1})
    assert core.seq == 42 and core.bye() is None and core.drain(0.0, 1.0) is None


@pytest.mark.parametrize("frame, kw, error", [
    (RGB[:, :, :2].copy(), {}, "cannot tell the frame's format"),
    (b"\x00" * 10, {}, "cannot tell the frame's format"),
    (b"\x00" * 10, {"fmt": "rgb"}, "need width= and height="),
    (RGB, {"fmt": "rgb", "width": 7, "height": 4}, "bytes"),
])
def test_a_frame_that_is_not_one_is_refused_before_it_is_numbered(frame, kw, error):
    core = ProducerCore("cam")
    with pytest.raises(FrameError, match=error):
        core.frame(frame, kw.get("fmt"), kw.get("width"), kw.get("height"), 1.0, None, None)
    assert core.seq == 0


# -- shared memory -----------------------------------------------------------------------------
def ring_credit(ring: shared_frames.Ring, acked: int = 0, session: str = "s1") -> protocol.Credit:
    return credit(4, acked, session=session, shm=dict(ring.offer_wire), shm_seen=ring.seen,
                  shm_held=tuple(ring.held))


@needs_memfd
def test_raw_frames_go_through_the_ring_and_decode_from_it():
    ring = shared_frames.Ring(4, RGB.nbytes)
    core = ProducerCore("cam", shared_memory=True)
    out = core.frame(RGB, None, None, None, 1.0, None, None)
    assert msgpack.unpackb(core.hello(0.0)[1])["shm"] == RGB.nbytes  # the first frame sized the ask
    assert core.credit_received(ring_credit(ring), 0.0) is False
    assert core.shared_memory.startswith("on: 4 slots")
    assert core.plan(out) == SEND
    parts = core.wire(out)
    assert len(parts) == 2  # the header alone: the pixels are in the slot
    msg = decoded(parts, ring)
    assert (msg.shm_slot, bytes(msg.data), core.shm_frames, core.shm_in_place) == (0, RGB.tobytes(), 1, 0)
    jpeg = b"\xff\xd8" + bytes(10)
    assert core.wire(core.frame(jpeg, None, None, None, 1.0, None, None))[2] == jpeg  # JPEG: over the wire
    assert core.shm_frames == 1
    ring.close()


@needs_memfd
def test_a_frame_captured_into_a_lent_slot_is_sent_where_it_lies():
    ring = shared_frames.Ring(2, RGB.nbytes)
    core = ProducerCore("cam", shared_memory=True)
    first = core.frame_buffer(6, 4)  # no ring yet: a plain array, and the ask's size
    assert core.frame_buffer(6, 4) is first
    core.credit_received(ring_credit(ring), 0.0)
    buf = core.frame_buffer(6, 4)
    np.copyto(buf, RGB)
    msg = decoded(core.wire(core.frame(buf, None, None, None, 1.0, None, None)), ring)
    assert (bytes(msg.data), core.shm_in_place, core.shm_frames) == (RGB.tobytes(), 1, 1)
    # a buffer asked for and not sent goes back; so does one held back for want of credit
    core.frame_buffer(6, 4)
    core.frame_buffer(6, 4)
    assert core.ring.tickets.count(shared_frames.RESERVED) == 1
    core.credit_received(credit(1, shm=dict(ring.offer_wire), shm_seen=ring.seen, shm_held=(0,)), 0.0)
    held = core.frame(core.frame_buffer(6, 4), None, None, None, 2.0, None, None)
    assert core.plan(held) == HOLD and shared_frames.RESERVED not in core.ring.tickets
    ring.close()


@pytest.mark.parametrize("answer, new_session, want_status, want_hello", [
    ({"shm_refused": "no room"}, False, "refused: no room", False),
    ({"shm": {"pid": 1}}, False, "unusable: the shm offer needs", False),
    ({}, True, "asking", True),  # a new session knows nothing of the ask: say it again
    ({}, False, "asking", False),
])
def test_what_the_credit_says_of_shared_memory(answer, new_session, want_status, want_hello):
    core = ProducerCore("cam", shared_memory=True)
    core.frame(RGB, None, None, None, 1.0, None, None)
    core.hello(0.0)
    core.credit_received(credit(), 0.0)
    assert core.credit_received(credit(session="s2" if new_session else "s1", **answer), 0.5) is want_hello
    assert core.shared_memory.startswith(want_status)


def test_a_server_that_never_answers_the_ask_is_said_so():
    core = ProducerCore("cam", shared_memory=True)
    core.frame(RGB, None, None, None, 1.0, None, None)
    core.hello(9.0)
    assert core.credit_received(credit(), 10.0) is True  # the first session: the ask is said again
    core.hello(10.5)
    core.credit_received(credit(), 12.0)
    assert core.shared_memory == "asking"
    core.credit_received(credit(), 13.0)
    assert core.shared_memory.startswith("not offered")


@needs_memfd
def test_a_restarted_server_drops_the_ring_until_its_new_credit():
    ring = shared_frames.Ring(2, RGB.nbytes)
    core = ProducerCore("cam", shared_memory=True)
    core.frame(RGB, None, None, None, 1.0, None, None)
    core.credit_received(ring_credit(ring), 0.0)
    assert core.ring is not None
    assert core.credit_received(credit(session="s2"), 0.0) is True  # ask again
    assert core.ring is None and core.shared_memory == "asking"
    assert len(sent(core)) == 3  # over the wire
    ring.close()
