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
