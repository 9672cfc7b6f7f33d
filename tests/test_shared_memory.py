"""Frames through a shared-memory ring (protocol v1.1, producers on the server's machine).

Real servers (in a child process where the producer must open another process's ring),
real rings opened through /proc, real worker processes held with SIGSTOP. The hostile cases
speak the protocol through a raw DEALER and map the ring by hand, from docs/protocol.md.
"""

from __future__ import annotations

import mmap
import os
import signal
import socket
import time

import msgpack
import numpy as np
import pytest
import zmq
from helpers import RawDealer, codes, results_until, worker_pids

from streampi import shared_frames
from streampi.client import Producer, Subscriber
from streampi.errors import FrameError
from streampi.serving import ServerOptions
from streampi.serving import peers as peers_module
from streampi.testing import ServerThread, start_server, wait_subscribed

pytestmark = pytest.mark.skipif(not shared_frames.available(), reason="shared-memory frames need Linux")

RNG = np.random.default_rng(11)
FRAMES = [RNG.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(6)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _outputs(result: dict) -> list:
    return [o["data"] for o in result["outputs"]]


@pytest.mark.aarch64
def test_ring_frames_give_the_same_results_as_wire_frames_from_another_process():
    """A server in its own process: the producer opens that process's ring through /proc."""
    ports = {name: _free_port() for name in ("bind", "credit", "publish")}
    proc, _ = start_server(["shapes_int8", "--workers", "2", "--raw-outputs", "--policy", "queue",
                            "--bind", f"tcp://127.0.0.1:{ports['bind']}",
                            "--credit-bind", f"tcp://127.0.0.1:{ports['credit']}",
                            "--publish", f"tcp://127.0.0.1:{ports['publish']}"])
    frames_at = f"tcp://127.0.0.1:{ports['credit']}"
    try:
        with Subscriber(f"tcp://127.0.0.1:{ports['publish']}") as sub:
            wait_subscribed(sub, frames_at)
            got: dict[str, list[dict]] = {}
            for stream, shm in (("wire", False), ("ring", True)):
                with Producer(frames_at, stream=stream, shared_memory=shm, when_full="wait") as cam:
                    for frame in FRAMES * 5:
                        cam.send(frame)
                    stats = cam.stats()
                got[stream] = results_until(sub, lambda rs: len(rs) == 30)
                if shm:
                    assert stats["shared_memory"].startswith("on: "), stats
                    assert stats["shm_frames"] == 30
                else:
                    assert stats["shared_memory"] == "off" and stats["shm_frames"] == 0
        for stream in ("wire", "ring"):
            assert sorted(r["seq"] for r in got[stream]) == list(range(30)), stream
            assert all(r["ok"] and r["stream"] == stream for r in got[stream])
        wire = {r["seq"]: _outputs(r) for r in got["wire"]}
        ring = {r["seq"]: _outputs(r) for r in got["ring"]}
        assert ring == wire  # the same pixels, whichever way they came
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@pytest.mark.parametrize("policy", ["latest", "queue"])
def test_slots_are_reused_only_when_free_and_every_frame_is_answered_once(policy):
    """Many more frames than slots, sent as fast as credit allows: every frame is answered
    once (or replaced at the camera, latest), none names a slot the server still holds."""
    dropped: list[int] = []
    opts = ServerOptions(workers=2, policy=policy, queue_size=4)
    with ServerThread(options=opts) as st, Subscriber(st.results, streams=["cam"]) as sub:
        wait_subscribed(sub, st.frames)
        with Producer(st.frames, stream="cam", shared_memory=True, on_drop=dropped.append) as cam:
            for i in range(200):
                frame = FRAMES[i % len(FRAMES)].copy()
                frame[0, 0, 0] = i % 256  # a slot written twice before it was read would show here
                cam.send(frame)
            cam.flush(5)
            stats = cam.stats()
            sent = stats["sent"]
            results = results_until(sub, lambda rs: len(rs) == sent)
        slots = int(stats["shared_memory"].split()[1])
    assert slots == (3 if policy == "latest" else 4) + 1
    assert stats["shm_frames"] == sent  # every frame went through the ring: a free slot was always there
    seqs = sorted(r["seq"] for r in results)
    assert len(seqs) == len(set(seqs)) == sent
    assert sorted(seqs + dropped) == list(range(200))
    assert codes(results).get("bad_frame", 0) == 0, [r["error"] for r in results if not r["ok"]]
    if policy == "queue":
        assert not dropped and codes(results) == {"ok": 200}
    assert st.stats["shm_frames"] == sent and st.server.status()["frame_bytes_held"] == 0


def _ring_of(raw: RawDealer, stream: str, slot_bytes: int) -> tuple[dict, mmap.mmap]:
    """Ask for a ring in a hello and map it as docs/protocol.md says."""
    raw.sock.send_multipart([b"hello", msgpack.packb({"v": 1, "stream": stream, "shm": slot_bytes})])
    credit = raw.credit()
    offer = credit["shm"]
    path = f"/proc/{offer['pid']}/fd/{offer['fd']}"
    assert os.readlink(path).startswith("/memfd:streampi-frames")
    fd = os.open(path, os.O_RDWR)
    try:
        ring = mmap.mmap(fd, mmap.PAGESIZE + offer["slots"] * offer["slot_bytes"])
        with pytest.raises(PermissionError):  # sealed: no producer can shrink it under the server
            os.ftruncate(fd, 100)
    finally:
        os.close(fd)
    assert ring[:16] == offer["token"]
    return credit, ring


def _shm_frame(stream: str, seq: int, slot: int, ticket: int, **extra) -> list[bytes]:
    head = {"v": 1, "stream": stream, "seq": seq, "fmt": "rgb", "w": 160, "h": 120, "shm": [slot, ticket], **extra}
    return [b"frame", msgpack.packb(head)]


def _write(ring: mmap.mmap, offer: dict, slot: int, frame: np.ndarray) -> None:
    start = mmap.PAGESIZE + slot * offer["slot_bytes"]
    ring[start:start + frame.nbytes] = frame.tobytes()


def test_hostile_ring_frames_get_clear_errors_and_the_ring_keeps_working():
    opts = ServerOptions(workers=1, policy="queue", queue_size=4)
    with ServerThread(options=opts) as st, Subscriber(st.results, streams=["raw"]) as sub:
        wait_subscribed(sub, st.frames)
        probes = st.stats["errors.bad_frame"]
        raw = RawDealer(st.frames)
        credit, ring = _ring_of(raw, "raw", FRAMES[0].nbytes)
        offer = credit["shm"]
        assert offer["slots"] == 5 and credit["shm_held"] == [] and credit["shm_seen"] == 0
        # one good frame, and the server says it holds its slot no more once answered
        _write(ring, offer, 0, FRAMES[0])
        raw.sock.send_multipart(_shm_frame("raw", 0, 0, 1))
        first = results_until(sub, lambda rs: len(rs) == 1)[0]
        assert first["ok"], first
        after = raw.credit_until(1)
        assert after["shm_seen"] == 1 and after["shm_held"] == []
        # a slot the server still holds (its worker stopped): the second use is refused
        pid = worker_pids(st)[0]
        os.kill(pid, signal.SIGSTOP)
        try:
            raw.sock.send_multipart(_shm_frame("raw", 1, 1, 2))
            raw.sock.send_multipart(_shm_frame("raw", 2, 1, 3))
            reused = results_until(sub, lambda rs: len(rs) == 1, timeout=10)[0]
            assert reused["seq"] == 2 and reused["error"]["code"] == "bad_frame"
            assert "still holds" in reused["error"]["message"]
            held = raw.credit_until(2)
            assert held["shm_held"] == [1] and held["shm_seen"] == 3
        finally:
            os.kill(pid, signal.SIGCONT)
        assert results_until(sub, lambda rs: len(rs) == 1)[0]["ok"]
        bad = [
            (_shm_frame("raw", 10, 99, 4), "does not exist"),
            (_shm_frame("raw", 11, 2, 0), "ticket"),
            ([b"frame", msgpack.packb({"v": 1, "stream": "raw", "seq": 12, "fmt": "jpeg", "shm": [2, 5]})],
             "raw pixels only"),
            (_shm_frame("raw", 13, 2, 6, w=4000, h=3000), "does not fit"),
            ([*_shm_frame("raw", 14, 2, 7), FRAMES[0].tobytes()], "no pixels in the message"),
        ]
        for parts, _ in bad:
            raw.sock.send_multipart(parts)
        answers = sorted(results_until(sub, lambda rs: len(rs) == len(bad)), key=lambda r: r["seq"])
        for (_, words), r in zip(bad, answers):
            assert r["error"]["code"] == "bad_frame" and words in r["error"]["message"], r
        # the ring still works after all that
        _write(ring, offer, 3, FRAMES[1])
        raw.sock.send_multipart(_shm_frame("raw", 20, 3, 8))
        assert results_until(sub, lambda rs: len(rs) == 1)[0]["ok"]
        raw.close()
        ring.close()
    assert st.stats["errors.bad_frame"] - probes == len(bad) + 1


def test_ring_frames_without_a_ring_and_on_the_v1_endpoint_are_refused_clearly():
    with ServerThread(options=ServerOptions(workers=1)) as st, Subscriber(st.results, streams=["other"]) as sub:
        wait_subscribed(sub, st.frames)
        other = RawDealer(st.frames)
        other.sock.send_multipart(_shm_frame("other", 0, 0, 1))
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(st.frames_v1)
        push.send_multipart(_shm_frame("other", 1, 0, 1)[1:])
        answers = sorted(results_until(sub, lambda rs: len(rs) == 2), key=lambda r: r["seq"])
        for r in answers:
            assert r["error"]["code"] == "bad_frame" and "no shared-memory ring" in r["error"]["message"], r
        other.close()
        push.close()


def test_a_server_without_shared_memory_says_so_and_the_frames_go_over_the_wire():
    with ServerThread(options=ServerOptions(workers=1, policy="queue", shared_memory=False)) as st, \
            Subscriber(st.results, streams=["cam"]) as sub:
        wait_subscribed(sub, st.frames)
        with Producer(st.frames, stream="cam", shared_memory=True, when_full="wait") as cam:
            for frame in FRAMES:
                cam.send(frame)
            stats = cam.stats()
            results = results_until(sub, lambda rs: len(rs) == len(FRAMES))
    assert stats["shared_memory"].startswith("refused: ") and "--no-shared-memory" in stats["shared_memory"]
    assert stats["shm_frames"] == 0 and codes(results) == {"ok": len(FRAMES)}


def test_a_ring_offer_from_another_machine_is_never_written(tmp_path):
    """What a producer sees when the pid/fd of an offer name something else on its machine."""
    plain = tmp_path / "not-a-ring"
    plain.write_bytes(b"\0" * (mmap.PAGESIZE + 4096))
    fd = os.open(plain, os.O_RDWR)
    try:
        offer = shared_frames.RingOffer(os.getpid(), fd, os.urandom(16), 1, 4096)
        with pytest.raises(OSError, match="not a streampi ring"):
            shared_frames.RingWriter(offer)
    finally:
        os.close(fd)
    assert plain.read_bytes() == b"\0" * (mmap.PAGESIZE + 4096)
    ring = shared_frames.Ring(1, 4096)  # a real ring, with someone else's token
    try:
        with pytest.raises(OSError, match="token"):
            shared_frames.RingWriter(shared_frames.RingOffer(os.getpid(), ring.fd, os.urandom(16), 1, 4096))
        with pytest.raises(OSError, match="another machine"):
            shared_frames.RingWriter(shared_frames.RingOffer(2**22 + 12345, 3, ring.token, 1, 4096))
    finally:
        ring.close()
    with pytest.raises(ValueError, match="out of range"):
        shared_frames.RingOffer.from_wire({"pid": 1, "fd": 3, "token": b"x" * 16, "slots": 0, "slot_bytes": 1})


def test_an_idle_producers_ring_goes_to_a_new_producer_and_it_falls_back_to_the_wire(monkeypatch):
    monkeypatch.setattr(shared_frames, "MAX_RINGS", 1)
    monkeypatch.setattr(peers_module, "RING_IDLE_S", 0.3)
    with ServerThread(options=ServerOptions(workers=1, policy="queue")) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        probes = st.stats["errors.bad_frame"]
        first = Producer(st.frames, stream="first", shared_memory=True, when_full="wait")
        second = Producer(st.frames, stream="second", shared_memory=True, when_full="wait")
        try:
            first.send(FRAMES[0])
            second.send(FRAMES[1])  # the only ring is out, and its producer was just heard
            results_until(sub, lambda rs: len(rs) == 2)
            assert first.stats()["shared_memory"].startswith("on: ")
            assert "handed out its 1 shared-memory rings" in second.stats()["shared_memory"]
            time.sleep(0.6)  # first falls silent past RING_IDLE_S
            third = Producer(st.frames, stream="third", shared_memory=True, when_full="wait")
            third.send(FRAMES[2])
            results_until(sub, lambda rs: len(rs) == 1)
            assert third.stats()["shared_memory"].startswith("on: ")
            time.sleep(0.2)  # the reclaiming credit reaches first before it sends again
            for frame in FRAMES:
                first.send(frame)
            got = results_until(sub, lambda rs: len(rs) == len(FRAMES))
            assert codes(got) == {"ok": len(FRAMES)}
            assert first.stats()["shared_memory"].startswith("refused: the server reclaimed")
            assert first.stats()["shm_frames"] == 1
            third.close()
        finally:
            first.close()
            second.close()
    assert st.stats["shm_rings"] == 2 and st.stats["errors.bad_frame"] == probes


def test_a_producer_gets_a_new_ring_after_a_server_restart():
    ports = {name: _free_port() for name in ("bind", "credit", "publish")}
    args = ["shapes_int8", "--workers", "1", "--bind", f"tcp://127.0.0.1:{ports['bind']}",
            "--credit-bind", f"tcp://127.0.0.1:{ports['credit']}", "--publish", f"tcp://127.0.0.1:{ports['publish']}"]
    frames_at, results_at = f"tcp://127.0.0.1:{ports['credit']}", f"tcp://127.0.0.1:{ports['publish']}"
    proc, _ = start_server(args)
    cam = Producer(frames_at, stream="cam", shared_memory=True, when_full="wait", send_timeout=20)
    try:
        with Subscriber(results_at, streams=["cam"]) as sub:
            wait_subscribed(sub, frames_at)
            cam.send(FRAMES[0])
            assert results_until(sub, lambda rs: len(rs) == 1)[0]["ok"]
        before = cam.stats()["shared_memory"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        proc, _ = start_server(args)
        with Subscriber(results_at, streams=["cam"]) as sub:
            wait_subscribed(sub, frames_at)
            got: list[dict] = []
            deadline = time.monotonic() + 30
            while cam.stats()["sessions"] < 2 or cam.stats()["shm_frames"] < 3:
                assert time.monotonic() < deadline, cam.stats()
                cam.send(FRAMES[1])
                got += results_until(sub, lambda rs: len(rs) == 1)
            stats = cam.stats()
        assert before.startswith("on: ") and stats["shared_memory"].startswith("on: ")
        assert all(r["ok"] for r in got)
    finally:
        cam.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_async_producer_sends_through_the_ring_too():
    import asyncio

    from streampi.client import AsyncProducer

    async def go(frames_at: str) -> dict:
        cam = AsyncProducer(frames_at, stream="cam", shared_memory=True, when_full="wait")
        try:
            for frame in FRAMES * 3:
                await cam.send(frame)
            return cam.stats()
        finally:
            await cam.aclose()

    from helpers import scrape, value

    with ServerThread(options=ServerOptions(workers=1, policy="queue", metrics_port=0)) as st, \
            Subscriber(st.results, streams=["cam"]) as sub:
        wait_subscribed(sub, st.frames)
        stats = asyncio.run(go(st.frames))
        results = results_until(sub, lambda rs: len(rs) == 18)
        deadline = time.monotonic() + 5
        while st.stats["credit_byes"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        metrics = scrape(st.server.bound["metrics"])
    assert stats["shared_memory"].startswith("on: ") and stats["shm_frames"] == 18
    assert codes(results) == {"ok": 18}
    assert value(metrics, "streampi_shm_frames_total") == 18 and st.stats["shm_rings"] == 1
    assert value(metrics, "streampi_shm_rings") == 0  # aclose said goodbye: the ring is back


@pytest.mark.parametrize("body, words", [
    ({"v": 1, "shm": -1}, "integer >= 1"),
    ({"v": 1, "shm": True}, "integer >= 1"),
    ({"v": 1, "shm": "big"}, "integer >= 1"),
])
def test_a_hello_asking_for_a_nonsense_ring_is_refused(body, words):
    from streampi import protocol
    from streampi.errors import ProtocolError

    with pytest.raises(ProtocolError, match=words):
        protocol.decode_hello_message([b"hello", msgpack.packb(body)])
    assert protocol.decode_hello_message([b"hello", msgpack.packb({"v": 1, "shm": 4096})]).shm_bytes == 4096


def test_a_slot_larger_than_a_frame_may_be_is_refused_in_the_credit():
    with ServerThread(options=ServerOptions(workers=1)) as st:
        raw = RawDealer(st.frames)
        raw.sock.send_multipart([b"hello", msgpack.packb({"v": 1, "stream": "big", "shm": 2**30})])
        credit = raw.credit()
        raw.close()
    assert "shm" not in credit and "larger than a frame may be" in credit["shm_refused"]


def test_a_server_that_ignores_the_request_gets_frames_over_the_wire():
    """A v1.1 server written before shared memory (here: a ROUTER that only counts) answers
    the hello with plain credit: the producer says so and sends every frame whole."""
    import threading

    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    frames: list[list[bytes]] = []
    stop = threading.Event()

    def serve() -> None:
        acked = 0
        while not stop.is_set():
            if not router.poll(50):
                continue
            identity, kind, *rest = router.recv_multipart()
            if kind == b"frame":
                frames.append(rest)
                acked += 1
            router.send_multipart([identity, b"credit", msgpack.packb(
                {"session": "old", "window": 8, "acked": acked, "policy": "queue"})])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with Producer(f"tcp://127.0.0.1:{port}", stream="cam", shared_memory=True) as cam:
            deadline = time.monotonic() + 10
            while not cam.stats()["shared_memory"].startswith("not offered") and time.monotonic() < deadline:
                cam.send(FRAMES[0])
                time.sleep(0.1)
            stats = cam.stats()
    finally:
        stop.set()
        thread.join(5)
        router.close()
    assert stats["shared_memory"].startswith("not offered"), stats
    assert stats["shm_frames"] == 0 and frames and all(len(parts) == 2 and len(parts[1]) == FRAMES[0].nbytes
                                                       for parts in frames)


def test_rings_stay_within_the_frame_memory_budget():
    """Rings are address space the producers can fill: all of them together stay within
    --max-frame-memory (a slot each frame in flight, fewer slots when the budget is short)."""
    slot = 1 << 20
    with ServerThread(options=ServerOptions(workers=1, policy="queue", queue_size=8,
                                            max_frame_memory=20 * slot)) as st:
        credits = []
        for i in range(4):
            raw = RawDealer(st.frames)
            raw.sock.send_multipart([b"hello", msgpack.packb({"v": 1, "stream": f"s{i}", "shm": slot})])
            credits.append(raw.credit())
            raw.close()
        held = st.server.status()["shm_ring_bytes"]
    slots = [c["shm"]["slots"] if "shm" in c else 0 for c in credits]
    assert slots == [9, 9, 0, 0]  # window 8 + 1, twice; then 2 MiB less a page is left: not 2 slots
    assert held == 2 * (9 * slot + mmap.PAGESIZE) <= 20 * slot
    assert all("leave no room for 2 slots" in c["shm_refused"] for c in credits[2:])


def test_frames_captured_into_their_slot_are_sent_without_a_copy_and_read_right():
    """frame_buffer lends a slot of the ring: a frame written into it and sent gives the
    results of the same frame sent over the wire, and only the first frame (before the
    ring was offered) needed a copy."""
    opts = ServerOptions(workers=2, policy="queue", queue_size=4)
    with ServerThread(options=opts, decoder={"raw_outputs": True}) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        with Producer(st.frames, stream="wire", when_full="wait") as wire:
            for frame in FRAMES * 3:
                wire.send(frame)
        want = {r["seq"]: _outputs(r) for r in results_until(sub, lambda rs: len(rs) == 18)}
        with Producer(st.frames, stream="cam", shared_memory=True, when_full="wait") as cam:
            for frame in FRAMES * 3:
                buf = cam.frame_buffer(160, 120)
                assert buf.shape == (120, 160, 3) and buf.dtype == np.uint8
                np.copyto(buf, frame)  # the capture
                cam.send(buf)
            stats = cam.stats()
        got = results_until(sub, lambda rs: len(rs) == 18)
    assert stats["shared_memory"].startswith("on: ") and stats["shm_frames"] == 18
    assert stats["shm_in_place"] == 17  # the first buffer came before the ring: it was copied in
    assert codes(got) == {"ok": 18}
    assert {r["seq"]: _outputs(r) for r in got} == want


@pytest.mark.parametrize("policy", ["latest", "queue"])
def test_lent_slots_come_back_when_not_sent_held_or_refused(policy):
    """A buffer asked for and never sent, a frame held back for want of credit, and a frame
    the server cannot take all give their slot back: the ring never runs out, every frame
    is answered once or replaced at the camera."""
    dropped: list[int] = []
    opts = ServerOptions(workers=1, policy=policy, queue_size=3)
    with ServerThread(options=opts) as st, Subscriber(st.results, streams=["cam"]) as sub:
        wait_subscribed(sub, st.frames)
        with Producer(st.frames, stream="cam", shared_memory=True, on_drop=dropped.append) as cam:
            cam.send(FRAMES[0])  # the ring comes with the first credit
            for _ in range(100):  # more than the slots: each unsent buffer goes back
                cam.frame_buffer(160, 120)
            for i in range(150):
                buf = cam.frame_buffer(160, 120)
                np.copyto(buf, FRAMES[i % len(FRAMES)])
                cam.send(buf)
            cam.flush(5)
            stats = cam.stats()
            results = results_until(sub, lambda rs: len(rs) == stats["sent"])
            slots = int(stats["shared_memory"].split()[1])
            cam._read_credit()
            lent_after = [t for t in cam._ring.tickets if t == shared_frames.RESERVED]
    assert lent_after == []
    assert stats["shm_frames"] == stats["sent"] and slots >= 2
    assert set(codes(results)) <= {"ok", "dropped"} and sum(codes(results).values()) == stats["sent"]
    assert sorted([r["seq"] for r in results] + dropped) == list(range(151))
    if policy == "queue":  # every buffer was a slot of the ring, sent where it lay
        assert not dropped and stats["shm_in_place"] == 150 and codes(results) == {"ok": 151}
    else:  # frames held back for want of credit were copied out, their slot given back
        assert dropped and 1 <= stats["shm_in_place"] < 150


def test_frame_buffer_shapes_errors_and_the_array_without_a_ring():
    with ServerThread(options=ServerOptions(workers=1, shared_memory=False)) as st:
        with Producer(st.frames, stream="cam", shared_memory=True) as cam:
            assert cam.frame_buffer(64, 48, "gray").shape == (48, 64)
            assert cam.frame_buffer(64, 48, "i420").shape == (72, 64)
            assert cam.frame_buffer(64, 48, "bgra").shape == (48, 64, 4)
            a = cam.frame_buffer(64, 48)
            cam.send(a)
            assert cam.frame_buffer(64, 48) is a  # no ring here: one reused array
            with pytest.raises(FrameError, match="even width and height"):
                cam.frame_buffer(63, 48, "nv12")
            with pytest.raises(FrameError, match="unknown raw format"):
                cam.frame_buffer(64, 48, "jpeg")
            with pytest.raises(FrameError, match="exceeds the limit"):
                cam.frame_buffer(100_000, 100_000)
            assert cam.stats()["shm_in_place"] == 0 and cam.stats()["shared_memory"].startswith("refused")


def _ring_frame_bytes() -> int:
    return shared_frames.round_up(FRAMES[0].nbytes)


def test_a_closing_producer_frees_its_ring_at_once_for_the_next():
    """A producer says goodbye as it closes: its ring goes back at once, so a camera that
    restarts within the budget gets a ring again (before, the ring waited 30 s of silence)."""
    slot = _ring_frame_bytes()
    budget = 7 * slot  # one ring of queue_size 4 + 1 slots fits; a second has room for 1 slot
    opts = ServerOptions(workers=1, policy="queue", queue_size=4, max_frame_memory=budget)
    with ServerThread(options=opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        first = Producer(st.frames, stream="first", shared_memory=True, when_full="wait")
        for frame in FRAMES[:3]:
            first.send(frame)
        results_until(sub, lambda rs: len(rs) == 3)
        with Producer(st.frames, stream="second", shared_memory=True, when_full="wait") as second:
            second.send(FRAMES[0])
            results_until(sub, lambda rs: len(rs) == 1)
            assert "leave no room for 2 slots" in second.stats()["shared_memory"]
        assert first.stats()["shared_memory"].startswith("on: 5 slots")
        first.close()
        deadline = time.monotonic() + 20
        while (st.server.status()["shm_rings"] or st.stats["credit_byes"] < 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert st.server.status()["shm_rings"] == 0 and st.server.status()["shm_ring_bytes"] == 0
        assert st.stats["credit_byes"] == 2  # second's and first's
        with Producer(st.frames, stream="third", shared_memory=True, when_full="wait") as third:
            for frame in FRAMES[:3]:
                third.send(frame)
            got = results_until(sub, lambda rs: len(rs) == 3)
            assert third.stats()["shared_memory"].startswith("on: 5 slots") and third.stats()["shm_frames"] == 3
    assert codes(got) == {"ok": 3} and st.stats["errors.bad_frame"] <= 1  # (the subscription probe)


def test_the_ring_of_a_producer_gone_silent_makes_room_within_the_budget(monkeypatch):
    """A producer that vanished without a goodbye (killed): once silent past RING_IDLE_S,
    its ring is taken back when the memory budget, not only the ring count, is short."""
    monkeypatch.setattr(peers_module, "RING_IDLE_S", 0.3)
    slot = _ring_frame_bytes()
    opts = ServerOptions(workers=1, policy="queue", queue_size=4, max_frame_memory=7 * slot)
    with ServerThread(options=opts) as st:
        gone = RawDealer(st.frames)
        gone.sock.send_multipart([b"hello", msgpack.packb({"v": 1, "stream": "gone", "shm": FRAMES[0].nbytes})])
        assert gone.credit()["shm"]["slots"] == 5
        gone.sock.close(0)  # no goodbye
        early = RawDealer(st.frames)
        early.sock.send_multipart([b"hello", msgpack.packb({"v": 1, "stream": "early", "shm": FRAMES[0].nbytes})])
        assert "leave no room" in early.credit()["shm_refused"]  # the first was heard just now
        time.sleep(0.5)
        late = RawDealer(st.frames)
        late.sock.send_multipart([b"hello", msgpack.packb({"v": 1, "stream": "late", "shm": FRAMES[0].nbytes})])
        credit = late.credit()
        assert credit["shm"]["slots"] == 5 and st.server.status()["shm_rings"] == 1
        early.close()
        late.close()
