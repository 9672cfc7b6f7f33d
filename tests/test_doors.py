"""A door (a detector API another tool calls) hands frames to the server through
``Server.submit`` and gets each one's answer through its callback: exactly once, whatever
happens to the frame, and published to subscribers as every result is."""

from __future__ import annotations

import threading

import numpy as np

from streampi import protocol
from streampi.client import Subscriber
from streampi.serving import ServerOptions
from streampi.testing import ServerThread, wait_subscribed

FRAME = np.random.default_rng(5).integers(0, 256, (48, 64, 3), np.uint8)


class Door:
    """What a door does: submit on the server's loop, collect the replies."""

    def __init__(self, st: ServerThread, fail_on: set[int] = frozenset()) -> None:
        self.st, self.fail_on = st, fail_on
        self.replies: list[dict] = []
        self.done = threading.Event()
        self.expected = 0

    def reply(self, result: dict) -> None:
        self.replies.append(result)
        if len(self.replies) >= self.expected:
            self.done.set()
        if result.get("seq") in self.fail_on:
            raise RuntimeError("this door's client went away")

    def submit(self, messages: list[list]) -> list[dict]:
        self.expected += len(messages)
        for parts in messages:
            self.st._loop.call_soon_threadsafe(self.st.server.submit, parts, self.reply)
        assert self.done.wait(30), self.replies
        return self.replies


def test_every_frame_a_door_submits_is_answered_once_and_published():
    with ServerThread("shapes_int8", ServerOptions(workers=1, policy="queue")) as st, \
            Subscriber(st.results, streams=["door"]) as sub:
        wait_subscribed(sub, st.frames)
        good = [protocol.encode_frame("door", i, "rgb", FRAME, 64, 48) for i in range(6)]
        bad = [protocol.encode_frame("door", 6, "rgb", FRAME[:10], 64, 48),  # too few bytes for 64x48
               [b"\xc1 no msgpack"]]
        replies = Door(st).submit(good + bad)
        published = [sub.recv(timeout=10) for _ in range(8)]  # (the undecodable one on _errors)
        stats = dict(st.stats)
    assert sorted(r["seq"] for r in replies if r["ok"]) == list(range(6))
    assert sorted((r["error"]["code"], r["stream"]) for r in replies if not r["ok"]) == \
        [("bad_frame", "_errors"), ("bad_frame", "door")]
    assert sorted(r["seq"] for r in published if r["ok"]) == list(range(6))
    assert sorted((r["error"]["code"], r["stream"]) for r in published if not r["ok"]) == \
        [("bad_frame", "_errors"), ("bad_frame", "door")]
    assert stats["received"] == stats["answered"]


def test_a_failing_reply_is_counted_and_the_others_still_answered():
    with ServerThread("shapes_int8", ServerOptions(workers=1, policy="queue")) as st:
        door = Door(st, fail_on={1})
        replies = door.submit([protocol.encode_frame("door", i, "rgb", FRAME, 64, 48) for i in range(3)])
        stats = dict(st.stats)
    assert sorted(r["seq"] for r in replies) == [0, 1, 2] and all(r["ok"] for r in replies)
    assert stats["errors.door_reply"] == 1 and stats["received"] == stats["answered"] == 3


class Watcher:
    """A result listener as a tracker or a live view is one: it copies what it keeps."""

    def __init__(self, fail_on: set[int] = frozenset()) -> None:
        self.seen: list[tuple[dict, tuple | None]] = []
        self.fail_on = fail_on

    def __call__(self, result: dict, frame) -> None:
        pixels = None
        if frame is not None:
            pixels = (frame.fmt, frame.width, frame.height, bytes(frame.data))
        self.seen.append((result, pixels))
        if result.get("seq") in self.fail_on:
            raise RuntimeError("this listener has a bug")


def test_a_listener_sees_every_answer_once_with_the_frame_it_answers():
    """Frames through the v1.1 shared-memory ring too: their pixels are still in the producer's
    slot when the listener runs (the slot is given back after it)."""
    from streampi.client import Producer

    rng = np.random.default_rng(11)
    frames = [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(8)]
    watcher = Watcher(fail_on={2})
    with ServerThread("shapes_int8", ServerOptions(workers=1, policy="queue")) as st, \
            Subscriber(st.results, streams=["cam"]) as sub:
        wait_subscribed(sub, st.frames)  # (its probe is answered before the listener comes)
        remove = st.server.add_listener(watcher)
        with Producer(st.frames, stream="cam", shared_memory=True) as prod:
            for frame in frames:
                prod.send(frame)
            published = [sub.recv(timeout=10) for _ in frames]
        door = Door(st)
        door.submit([[b"\xc1 no msgpack"]])  # never a frame: the listener gets no pixels
        st._loop.call_soon_threadsafe(remove)
        door.submit([protocol.encode_frame("door", 0, "rgb", FRAME, 64, 48)])  # after removal: unseen
        stats = dict(st.stats)
    assert [r["seq"] for r in published] == list(range(8)) and all(r["ok"] for r in published)
    by_seq = {r["seq"]: px for r, px in watcher.seen if r["stream"] == "cam"}
    assert sorted(by_seq) == list(range(8)) and len(watcher.seen) == 9
    for seq, frame in enumerate(frames):
        assert by_seq[seq] == ("rgb", 64, 48, frame.tobytes())
    assert [(r["ok"], r["error"]["code"], px) for r, px in watcher.seen if r["stream"] == "_errors"] == \
        [(False, "bad_frame", None)]
    assert stats["errors.listener"] == 1 and stats["received"] == stats["answered"]
    assert stats["shm_frames"] == 8


def test_publish_speaks_on_a_server_topic_only():
    import pytest

    with ServerThread("shapes_int8", ServerOptions(workers=1)) as st, \
            Subscriber(st.results, streams=["_events"]) as sub:
        wait_subscribed(sub, st.frames)
        for i in range(3):
            st._loop.call_soon_threadsafe(st.server.publish, "_events", {"type": "new", "n": i})
        got = [sub.recv(timeout=10) for _ in range(3)]
        with pytest.raises(ValueError, match="starts with '_'"):
            st.server.publish("cam", {"n": 0})
    assert got == [{"type": "new", "n": i} for i in range(3)]
