"""The light path: a lone frame that arrives while every other worker idles runs on the
worker's wide interpreter (every core); frames that arrive while workers are busy run on
the one-thread interpreters, one per core. Real servers, real worker processes, real
signals; which interpreter ran a frame is read from its result (``timing.invoke_threads``)
and from the server's own counters, never from timings."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from helpers import FRAME, assert_exactly_once, collect_until, frame_results, wait_workers
from helpers import wait_holder as _wait_holder

from streampi.client import Producer, Subscriber
from streampi.runtime_info import usable_cores
from streampi.serving import ServerOptions
from streampi.serving.workers import Occupancy, helper_cores
from streampi.testing import ServerThread, wait_subscribed

SMALL = FRAME[:120, :160].copy()
#: a frame whose kernel pays for a split over two threads (1080p into the 64² model: ~0.9 ms of area averaging)
LARGE = np.random.default_rng(4).integers(0, 256, (1080, 1920, 3), np.uint8)
TWO_CORES = pytest.mark.skipif(len(usable_cores()) < 2, reason="the light path needs two usable cores")


def one_at_a_time(st: ServerThread, sub: Subscriber, stream: str, n: int, frame=SMALL) -> list[dict]:
    """Send ``n`` frames, each after the previous one's result came back (every worker idle)."""
    out = []
    with Producer(st.frames, stream=stream) as prod:
        for _ in range(n):
            seq = prod.send(frame, timeout=5)
            got = collect_until(sub, lambda res, seq=seq: any(r.get("seq") == seq and r["stream"] == stream
                                                               for r in res), timeout=20)
            out.extend(r for r in got if r["stream"] == stream)
    return out


# -- the pure parts ---------------------------------------------------------------------------------
def test_occupancy_counts_the_other_slots_only():
    occ, a, b = Occupancy(), object(), object()
    assert not occ.others_busy(a)
    occ.hold(a)
    assert not occ.others_busy(a) and occ.others_busy(b)
    occ.hold(b)
    assert occ.others_busy(a) and occ.others_busy(b)
    occ.release(b)
    occ.release(b)  # releasing twice (a batch lost, then returned) is harmless
    assert not occ.others_busy(a) and occ.others_busy(b)
    occ.release(a)
    assert not occ.others_busy(a) and not occ.others_busy(b)


@pytest.mark.parametrize("own, light, expected", [
    ([0], [0, 1], [1]),
    ([1], [0, 1, 2, 3], [0, 2, 3]),
    ([0, 1], [0, 1, 2, 3], [2, 3]),
    ([0], [0], None),  # no other core: the helpers float
    (None, [0, 1], None),  # an unpinned worker: nothing is pinned
    ([0], None, None),
])
def test_helper_cores_are_the_other_cores(own, light, expected):
    assert helper_cores(own, light) == expected


def test_light_threads_must_not_be_negative():
    with pytest.raises(ValueError, match="light-threads must be >= 0"):
        ServerOptions(light_threads=-1).check()


# -- a real server -----------------------------------------------------------------------------------
@TWO_CORES
@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_lone_frames_take_the_wide_interpreter(isolation):
    opts = ServerOptions(workers=2, light_threads=2, isolation=isolation, policy="queue")
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        results = one_at_a_time(st, sub, "lone", 12)
        status = st.server.status()
    assert len(results) == 12 and all(r["ok"] for r in results)
    assert {r["timing"]["invoke_threads"] for r in results} == {2}
    assert sum(w["light_frames"] for w in status["workers"]) == 12


@TWO_CORES
def test_lone_large_frames_are_preprocessed_in_bands_with_the_same_result():
    """A lone 1920×1080 frame's kernel is split into bands over the idle cores (``timing.pre_bands``);
    small frames, and 640×480 ones (~0.1 ms into this 64² model), are not: the hand-off would cost
    more than it saves (``Preprocessor.band_count``). The results are those of a server without the
    light path, which writes every frame whole on one thread."""
    frames = [np.ascontiguousarray(np.roll(LARGE, 37 * k, axis=1)) for k in range(4)]
    out = {}
    for light in (2, 0):
        opts = ServerOptions(workers=2, light_threads=light, policy="queue")
        with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
            wait_subscribed(sub, st.frames)
            out[light] = [one_at_a_time(st, sub, f"big{k}", 1, frame=f)[0] for k, f in enumerate(frames)]
            out[f"small{light}"] = one_at_a_time(st, sub, "small", 3)
            out[f"vga{light}"] = one_at_a_time(st, sub, "vga", 2, frame=FRAME)
    assert all(r["ok"] for r in out[2] + out[0] + out["vga2"])
    assert [r["timing"].get("pre_bands") for r in out[2]] == [2] * len(frames)
    assert all("pre_bands" not in r["timing"] for r in out[0] + out["small2"] + out["small0"] + out["vga2"])
    assert all(r["timing"]["invoke_threads"] == 2 for r in out["small2"])  # light path, kernel whole
    assert [r["top"] for r in out[2]] == [r["top"] for r in out[0]]
    assert len({str(r["top"]) for r in out[0]}) > 1  # the frames differ enough to tell results apart


@TWO_CORES
def test_bands_leave_no_view_of_the_interpreter_input_behind():
    """With --isolation thread the slot is the interpreter's own input tensor, which cannot be
    resized (for a batch of another size) while any view of it lives: a lone frame written in
    bands, then a burst that batches, must all run."""
    opts = ServerOptions(workers=1, light_threads=2, isolation="thread", policy="queue", max_batch=2)
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        lone = one_at_a_time(st, sub, "lone", 1, frame=LARGE)
        with Producer(st.frames, stream="burst") as prod:
            sent = {("burst", prod.send(FRAME)): 1 for _ in range(6)}
        results = collect_until(sub, lambda out: len(frame_results(out)) >= 6, timeout=30)
    assert lone[0]["ok"] and lone[0]["timing"].get("pre_bands") == 2
    assert assert_exactly_once(sent, results) == {"ok": 6}
    assert max(r["batch"] for r in results) == 2  # a batch of another size than the lone frame's


@TWO_CORES
def test_light_threads_zero_turns_the_light_path_off():
    opts = ServerOptions(workers=2, light_threads=0, policy="queue")
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        results = one_at_a_time(st, sub, "lone", 6)
        status = st.server.status()
    assert len(results) == 6 and {r["timing"]["invoke_threads"] for r in results} == {1}
    assert sum(w["light_frames"] for w in status["workers"]) == 0


@TWO_CORES
def test_wide_interpreter_helpers_run_on_the_other_core():
    """The worker process's own thread stays on its core; the wide interpreter's pool thread
    (created while the process was pinned to the other core) runs on the other core."""
    opts = ServerOptions(workers=2, light_threads=2, policy="queue")
    cores = usable_cores()[:2]
    with ServerThread("mobilenet_v2_int8", opts) as st:
        for w in st.server.status()["workers"]:
            own = set(w["cores"])
            masks = {}
            for tid in os.listdir(f"/proc/{w['pid']}/task"):
                masks[int(tid)] = os.sched_getaffinity(int(tid))
            assert masks[w["pid"]] == own
            others = set(cores) - own
            assert any(m == others for t, m in masks.items() if t != w["pid"]), masks


@TWO_CORES
def test_busy_workers_run_one_thread_each():
    """Both worker processes stopped, ten frames queued: every frame handed over while the other
    worker held one runs on a one-thread interpreter. Only the first frame (given while all
    idled) and the last (given when nothing else waited) may take the light path."""
    opts = ServerOptions(workers=2, light_threads=2, policy="queue", max_batch=1, invoke_timeout=60)
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        one_at_a_time(st, sub, "warm", 4)
        pids = [w["pid"] for w in st.server.status()["workers"]]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        sent = {}
        try:
            with Producer(st.frames, stream="busy") as prod:
                for _ in range(10):
                    sent[("busy", prod.send(SMALL, timeout=5))] = 1
            deadline = time.monotonic() + 10
            while st.server.sched.pending < 8 and time.monotonic() < deadline:  # all ten are in
                time.sleep(0.01)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        results = collect_until(sub, lambda out: len(frame_results(out)) >= 10, timeout=30)
    assert assert_exactly_once(sent, results) == {"ok": 10}
    threads = {r["seq"]: r["timing"]["invoke_threads"] for r in results}
    seqs = sorted(threads)
    assert all(threads[s] == 1 for s in seqs[1:-1]), threads


@TWO_CORES
def test_worker_killed_on_the_wide_interpreter_frame_answered_once():
    """The frame is held by a worker whose slot asked for the wide interpreter (the worker
    process stopped, so the frame stays in hand); that process is SIGKILLed (pid read from the
    server's status). The frame runs again on the other worker and is answered once; the
    killed worker comes back and serves the light path again."""
    opts = ServerOptions(workers=2, light_threads=2, policy="queue", max_batch=1, invoke_timeout=60)
    with ServerThread("mobilenet_v2_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        one_at_a_time(st, sub, "warm", 4, FRAME)
        pids = [w["pid"] for w in st.server.status()["workers"]]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        killed = []
        try:
            with Producer(st.frames, stream="p") as prod:
                prod.send(FRAME, seq=1, timeout=5)
            holder = _wait_holder(st, ["p", 1], [])
            deadline = time.monotonic() + 10
            while not holder["wide"] and time.monotonic() < deadline:  # as `streampi ctl workers` shows it
                time.sleep(0.002)
                holder = st.server.status()["workers"][holder["index"]]
            assert holder["wide"], "the lone frame was not sent to the wide interpreter"
            os.kill(holder["pid"], signal.SIGKILL)
            killed.append(holder["pid"])
        finally:
            for pid in set(pids) - set(killed):
                os.kill(pid, signal.SIGCONT)
        results = collect_until(sub, lambda out: any(r["stream"] == "p" for r in out), timeout=30)
        wait_workers(st, 2, set(killed))
        after = one_at_a_time(st, sub, "after", 6, FRAME)
        stats = dict(st.stats)
    assert assert_exactly_once({("p", 1): 1}, results) == {"ok": 1}
    answer = frame_results(results)[("p", 1)][0]
    assert answer["rerun"] == 1 and answer["worker"] != holder["index"]
    assert stats["reruns"] == 1 and stats["answered"] == stats["received"]
    assert len(after) == 6 and all(r["ok"] and r["timing"]["invoke_threads"] == 2 for r in after)


@TWO_CORES
def test_kills_under_light_load_every_frame_answered_once():
    """Frames one at a time from two streams at a light rate while the worker holding a frame
    is SIGKILLed twice: each frame gets exactly one answer."""
    from helpers import Load

    opts = ServerOptions(workers=2, light_threads=2, policy="queue")
    with ServerThread("mobilenet_v2_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        load = Load(st.frames, producers=1, streams_each=2, rate=15, seconds=5).start()
        killed: set[int] = set()
        for _ in range(2):
            deadline = time.monotonic() + 2
            victim = None
            while victim is None and time.monotonic() < deadline:
                victim = next((w for w in st.server.status()["workers"] if w["busy"] and w["pid"] not in killed),
                              None)
                time.sleep(0.001)
            victim = victim or st.server.status()["workers"][0]
            os.kill(victim["pid"], signal.SIGKILL)
            killed.add(victim["pid"])
            wait_workers(st, 2, killed)
        load.join()
        results = collect_until(sub, lambda out: len(frame_results(out)) >= len(load.sent))
        stats = dict(st.stats)
    codes = assert_exactly_once(load.sent, results)
    assert codes["ok"] > 0 and set(codes) <= {"ok", "worker_lost"}
    assert stats["answered"] == stats["received"]
    assert any(r["ok"] and r["timing"]["invoke_threads"] == 2 for r in results)
