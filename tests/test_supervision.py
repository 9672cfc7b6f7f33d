"""Crash-proof serving: worker processes killed with real signals, a poison frame, a hung
worker, SIGTERM at saturation, failures injected into the server process. Every frame sent
must get exactly one result (counted by stream and seq), whatever dies around it."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import FRAME, Load, assert_exactly_once, collect_until, frame_results, wait_holder, wait_workers

from streampi.client import Producer, Subscriber
from streampi.serving import ServerOptions
from streampi.serving.server import Server
from streampi.serving.workers import WorkerSlot, WorkerStartError
from streampi.testing import ServerThread, start_server, wait_subscribed


def kill_during_load(sig: int, policy: str, kills: int, seconds: float) -> None:
    opts = ServerOptions(workers=2, policy=policy, max_batch=4, queue_size=8)
    with ServerThread("mobilenet_v2_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        load = Load(st.frames, producers=4, streams_each=2, rate=25, seconds=seconds).start()
        recoveries, killed = [], set()
        for k in range(kills):
            time.sleep(seconds / (kills + 1))
            workers = st.server.status()["workers"]
            busy = [w for w in workers if w["busy"]] or workers
            victim = busy[k % len(busy)]
            os.kill(victim["pid"], sig)
            killed.add(victim["pid"])
            recoveries.append(wait_workers(st, 2, killed))
        load.join()
        results = collect_until(sub, lambda out: len(frame_results(out)) >= len(load.sent))
        stats = dict(st.stats)
        status = st.server.status()
    codes = assert_exactly_once(load.sent, results)
    print(f"{signal.Signals(sig).name} x{kills}, {policy}: {len(load.sent)} frames, {dict(codes)}; "
          f"back to 2 workers after {[f'{r:.2f} s' for r in recoveries]}; reruns {stats.get('reruns', 0)}")
    assert codes["ok"] > 0
    assert set(codes) <= {"ok", "dropped", "worker_lost"}
    assert stats["answered"] == stats["received"]
    assert sum(w["restarts"] for w in status["workers"]) == kills
    assert max(recoveries) < 5.0  # supervision works; the 1 s figure is measured by bench/soak.py
    generations = {(r["worker"], r["generation"]) for r in results if r.get("ok")}
    assert any(g > 1 for _, g in generations), "no result came from a restarted worker"


@pytest.mark.parametrize("policy", ["queue", "latest"])
def test_sigkill_workers_under_load_every_frame_answered_once(policy):
    kill_during_load(signal.SIGKILL, policy, kills=2, seconds=6)


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT])
def test_crashing_workers_under_load_every_frame_answered_once(sig):
    kill_during_load(sig, "queue", kills=2, seconds=5)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT])
@pytest.mark.parametrize("policy", ["queue", "latest"])
def test_five_kills_in_twenty_seconds(sig, policy):
    kill_during_load(sig, policy, kills=5, seconds=20)


def test_poison_frame_is_answered_worker_lost_after_one_rerun():
    """The test kills whichever worker holds frame p/7, every time (read from the server's
    own status). Both workers are stopped (SIGSTOP) first so that the frame stays in hand
    long enough to be seen; the innocent frames sent afterwards are served normally."""
    opts = ServerOptions(workers=2, policy="queue", max_batch=1, invoke_timeout=60)
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        small = FRAME[:120, :160].copy()
        with Producer(st.frames, stream="warm") as warm:  # both workers healthy (served a batch)
            for _ in range(40):
                warm.send(small)
        collect_until(sub, lambda out: len(out) >= 40, timeout=20)
        assert all(w["frames_done"] > 0 for w in st.server.status()["workers"])
        pids = [w["pid"] for w in st.server.status()["workers"]]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        killed = []
        try:
            with Producer(st.frames, stream="p") as prod:
                prod.send(small, seq=7)
            for _ in range(2):
                holder = wait_holder(st, ["p", 7], killed)
                os.kill(holder["pid"], signal.SIGKILL)
                killed.append(holder["pid"])
        finally:
            for pid in set(pids) - set(killed):
                os.kill(pid, signal.SIGCONT)
        poison = collect_until(sub, lambda out: any(r["stream"] == "p" for r in out), timeout=20)
        wait_workers(st, 2, set(killed))
        with Producer(st.frames, stream="innocent") as prod:
            sent = {("innocent", prod.send(small)): 1 for _ in range(20)}
        innocent = collect_until(sub, lambda out: len(out) >= 20, timeout=20)
        stats = dict(st.stats)
    assert len(set(killed)) == 2, "the re-run must go to another worker"
    answers = [r for r in poison if r["stream"] == "p"]
    assert len(answers) == 1 and answers[0]["seq"] == 7
    assert answers[0]["ok"] is False and answers[0]["error"]["code"] == "worker_lost"
    assert stats["reruns"] == 1
    assert assert_exactly_once(sent, innocent) == {"ok": 20}


@pytest.mark.parametrize("policy", ["queue"])
def test_hung_worker_is_killed_after_invoke_timeout_and_its_frames_rerun(policy):
    opts = ServerOptions(workers=2, policy=policy, max_batch=2, invoke_timeout=1.0)
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        w0 = st.server.status()["workers"][0]["pid"]
        os.kill(w0, signal.SIGSTOP)  # w0 is idle: the next frame goes to it and hangs there
        sent = {}
        with Producer(st.frames, stream="s") as prod:
            for _ in range(30):
                sent[("s", prod.send(FRAME[:120, :160].copy()))] = 1
                time.sleep(0.02)
        results = collect_until(sub, lambda out: len(out) >= 30, timeout=30)
        wait_workers(st, 2, {w0})
        status = st.server.status()
    codes = assert_exactly_once(sent, results)
    assert codes == {"ok": 30}
    assert any(r.get("rerun") == 1 for r in results), "the hung worker's frames were not re-run"
    assert status["workers"][0]["pid"] != w0 and status["workers"][0]["generation"] == 2
    with pytest.raises(ProcessLookupError):
        os.kill(w0, 0)


def test_sigterm_at_saturation_exits_in_time_with_every_frame_answered():
    proc, info = start_server(["mobilenet_v2_int8", "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--workers", "2", "--policy", "queue", "--stop-timeout", "2"])
    try:
        with Subscriber(info["publish"]) as sub:
            wait_subscribed(sub, info["bind"])
            load = Load(info["credit_bind"], producers=4, streams_each=2, rate=200, seconds=8).start()
            time.sleep(2.5)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
            took = time.monotonic() - t0
            results = collect_until(sub, lambda out: False, timeout=1)
        load.join()
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"SIGTERM at saturation: exit {code} after {took:.2f} s; {len(results)} results")
    assert code == 0
    assert took < 2 + 1 + 1.5  # stop-timeout + 1 s, with room for a loaded CI machine
    by_frame = frame_results(results)
    assert by_frame and all(len(v) == 1 for v in by_frame.values())
    assert all(k in load.sent for k in by_frame)
    workers = [w["pid"] for w in info["workers"]]
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_sigterm_log_line_counts_add_up():
    """The stop line on stderr: everything received was answered."""
    cmd = [sys.executable, "-m", "streampi", "serve", "shapes_int8", "--ready-json", "--bind", "tcp://127.0.0.1:*",
           "--publish", "tcp://127.0.0.1:*", "--control", "none", "--workers", "1", "--policy", "queue",
           "--credit-bind", "tcp://127.0.0.1:*"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import json
        info = json.loads(proc.stdout.readline())
        with Producer(info["credit_bind"], stream="x") as prod:
            for _ in range(50):
                prod.send(FRAME[:60, :80].copy())
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "stopped; received 50, answered 50 (ok 50)" in err


# -- failures injected into the server process ---------------------------------------------------
def _run_frames(st: ServerThread, n: int, stream: str = "f") -> tuple[dict, list[dict]]:
    with Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        with Producer(st.frames, stream=stream) as prod:
            sent = {(stream, prod.send(FRAME[:120, :160].copy())): 1 for _ in range(n)}
        return sent, collect_until(sub, lambda out: len(frame_results(out)) >= n, timeout=30)


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_post_processing_failing_for_some_frames_costs_only_those(monkeypatch, isolation):
    from streampi.decoders.classify import ClassifyDecoder

    real = ClassifyDecoder.frame_result
    calls = collections.Counter()

    def flaky(self, outputs, i, transform=None):
        calls["n"] += 1
        if calls["n"] % 5 == 0:
            raise MemoryError("injected")
        return real(self, outputs, i, transform)

    monkeypatch.setattr(ClassifyDecoder, "frame_result", flaky)
    with ServerThread("shapes_int8", ServerOptions(workers=2, policy="queue", isolation=isolation)) as st:
        sent, results = _run_frames(st, 40)
    codes = assert_exactly_once(sent, results)
    assert codes["internal"] == 8 and codes["ok"] == 32
    bad = next(r for r in results if not r["ok"])
    assert "post-processing failed: MemoryError" in bad["error"]["message"]


def test_preprocessing_raising_a_non_frame_error_costs_only_that_frame(monkeypatch):
    from streampi.preprocess import Preprocessor

    real = Preprocessor.__call__
    calls = collections.Counter()

    def flaky(self, data, fmt, width=None, height=None, out=None):
        calls["n"] += 1
        if calls["n"] % 4 == 0:
            raise MemoryError("injected")
        return real(self, data, fmt, width, height, out=out)

    monkeypatch.setattr(Preprocessor, "__call__", flaky)
    with ServerThread("shapes_int8", ServerOptions(workers=1, policy="queue", max_batch=4, max_delay_ms=50)) as st:
        sent, results = _run_frames(st, 40)
    codes = assert_exactly_once(sent, results)
    assert codes == {"ok": 30, "internal": 10}


def test_encoding_or_publishing_failing_once_costs_no_answer(monkeypatch):
    from streampi import protocol

    real_encode = protocol.encode_result
    failures = collections.Counter()

    def bad_encode(result):
        if result.get("seq") in (3, 9) and result.get("ok") and failures[result["seq"]] == 0:
            failures[result["seq"]] += 1
            raise TypeError("injected: cannot encode")
        return real_encode(result)

    monkeypatch.setattr(protocol, "encode_result", bad_encode)
    with ServerThread("shapes_int8", ServerOptions(workers=2, policy="queue")) as st:
        real_send = st.server._pub_now.send_multipart
        sends = collections.Counter()

        def flaky_send(parts, *args, **kwargs):
            sends["n"] += 1
            if sends["n"] in (20, 31):
                raise OSError("injected: send failed once")
            return real_send(parts, *args, **kwargs)

        st.server._pub_now.send_multipart = flaky_send
        sent, results = _run_frames(st, 40)
        stats = dict(st.stats)
    codes = assert_exactly_once(sent, results)
    assert codes == {"ok": 38, "internal": 2}
    assert stats["publish_failed"] == 2
    assert {r["seq"] for r in results if not r["ok"] and r["stream"] == "f"} == {3, 9}


def test_a_worker_event_handler_raising_still_answers_its_frames(monkeypatch):
    real = Server.batch_done
    calls = collections.Counter()

    def flaky(self, slot, batch, outcomes):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected")
        return real(self, slot, batch, outcomes)

    monkeypatch.setattr(Server, "batch_done", flaky)
    with ServerThread("shapes_int8", ServerOptions(workers=2, policy="queue", max_batch=1)) as st:
        sent, results = _run_frames(st, 30)
        more, results2 = _run_frames(st, 10, stream="g")  # the worker was freed: serving goes on
    codes = assert_exactly_once(sent, results)
    assert codes == {"ok": 29, "internal": 1}
    assert assert_exactly_once(more, results2) == {"ok": 10}


def test_worker_failing_to_load_at_start_stops_the_ones_started(monkeypatch):
    real = WorkerSlot._new_runner
    started: list = []

    def second_fails(self):
        if self.index == 1:
            raise WorkerStartError("injected: worker 1 cannot load")
        runner = real(self)
        started.append(runner)
        return runner

    monkeypatch.setattr(WorkerSlot, "_new_runner", second_fails)
    st = ServerThread("shapes_int8", ServerOptions(workers=2))
    with pytest.raises(WorkerStartError, match="worker 1 cannot load"):
        st.start()
    assert len(started) == 1
    pid = started[0].pid
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and started[0].proc.exitcode is None:
        time.sleep(0.05)
    assert started[0].proc.exitcode is not None, f"worker process {pid} still runs"
    assert all(not s.is_alive() for s in st.server.slots)


INGEST_DIES = """
import sys
from streampi.serving.scheduler import Scheduler
def broken(self, job, force=False):
    raise RuntimeError("injected: the scheduler broke")
Scheduler.offer = broken
from streampi.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ingest_task_dying_stops_the_process_non_zero_with_a_message():
    cmd = [sys.executable, "-c", INGEST_DIES, "serve", "shapes_int8", "--ready-json", "--bind", "tcp://127.0.0.1:*",
           "--publish", "tcp://127.0.0.1:*", "--control", "none", "--workers", "1",
           "--credit-bind", "tcp://127.0.0.1:*"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import json
        info = json.loads(proc.stdout.readline())
        with Subscriber(info["publish"]) as sub:
            wait_subscribed(sub, info["bind"])
            with Producer(info["credit_bind"], stream="x") as prod:
                prod.send(FRAME[:60, :80].copy())
            answer = sub.recv(timeout=10)
        code = proc.wait(20)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1
    assert "the ingest task failed" in err and "injected: the scheduler broke" in err
    assert answer["stream"] == "x" and answer["error"]["code"] == "internal"


def test_worker_processes_are_named_and_listed_in_ready_json():
    proc, info = start_server(["shapes_int8", "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--workers", "2"])
    try:
        assert [w["index"] for w in info["workers"]] == [0, 1]
        for w in info["workers"]:
            with open(f"/proc/{w['pid']}/comm") as f:
                assert f.read().strip() == f"streampi-w{w['index']}"
        from streampi.ctl import request
        reply = request(info["control"], "health")
        assert reply["ok"] and reply["healthy"]
        assert [w["pid"] for w in reply["workers"]] == [w["pid"] for w in info["workers"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_health_turns_bad_when_a_worker_hangs_or_dies_and_good_when_replaced():
    from streampi.ctl import request

    def health() -> dict:
        return request(st.control, "health")

    opts = ServerOptions(workers=2, policy="queue", invoke_timeout=1.5)
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        first = health()
        w0, w1 = (w["pid"] for w in st.server.status()["workers"])
        os.kill(w0, signal.SIGSTOP)
        stopped = health()  # at once: read from the process, not from a timeout
        with Producer(st.frames, stream="s") as prod:
            prod.send(FRAME[:60, :80].copy())  # goes to the idle w0 and hangs there
        wait_workers(st, 2, {w0})
        replaced = health()
        os.kill(w1, signal.SIGKILL)
        deadline = time.monotonic() + 2  # the kernel takes a moment to end a killed process
        while (dead := health())["healthy"] and time.monotonic() < deadline:
            time.sleep(0.005)
        wait_workers(st, 2, {w0, w1})
        again = health()
        answer = sub.recv(timeout=10)
    assert first["healthy"] and first["problems"] == []
    assert not stopped["healthy"] and f"worker 0 (pid {w0}) is stopped" in stopped["problems"]
    assert replaced["healthy"]
    assert not dead["healthy"] and any("worker 1" in p for p in dead["problems"])
    assert again["healthy"]
    assert answer["ok"] and answer.get("rerun") == 1


def test_no_worker_can_start_frames_answered_unavailable_then_served_again(tmp_path):
    """The model file is damaged on disk, then both workers die: their replacements cannot
    load it and back off; meanwhile frames are answered `unavailable` at once. Once the file
    is good again, the workers come back and frames are served."""
    from streampi import bundled_model

    good = bundled_model("shapes_int8").read_bytes()
    path = tmp_path / "model.tflite"
    path.write_bytes(good)
    opts = ServerOptions(workers=2, policy="queue")
    with ServerThread(str(path), opts) as st:
        warm, warm_results = _run_frames(st, 20, stream="warm")
        assert assert_exactly_once(warm, warm_results) == {"ok": 20}
        path.write_bytes(b"this is no longer a model")
        pids = {w["pid"] for w in st.server.status()["workers"]}
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(w["state"] != "backoff" for w in st.server.status()["workers"]):
            time.sleep(0.01)
        assert all(w["state"] == "backoff" for w in st.server.status()["workers"])
        down, down_results = _run_frames(st, 5, stream="down")
        path.write_bytes(good)
        wait_workers(st, 2, pids, timeout=40)
        up, up_results = _run_frames(st, 5, stream="up")
        stats = dict(st.stats)
    assert assert_exactly_once(down, down_results) == {"unavailable": 5}
    assert "keep failing to start" in down_results[0]["error"]["message"]
    assert assert_exactly_once(up, up_results) == {"ok": 5}
    assert stats["answered"] == stats["received"]


def test_frames_past_the_memory_budget_are_answered_overloaded():
    """The one worker is stopped, so frames pile up; past --max-frame-memory (here 3.5 frames)
    new ones are answered `overloaded` at once, and the held ones are served once it runs."""
    rgb = FRAME[:200, :200].copy()  # 120 000 bytes
    opts = ServerOptions(workers=1, policy="queue", max_batch=1, max_frame_memory=int(3.5 * rgb.nbytes),
                         invoke_timeout=60)
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        pid = st.server.status()["workers"][0]["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            with Producer(st.frames, stream="m") as prod:
                sent = {("m", prod.send(rgb)): 1 for _ in range(10)}
            early = collect_until(sub, lambda out: len(out) >= 7, timeout=10)
            held = st.server.status()["frame_bytes_held"]
        finally:
            os.kill(pid, signal.SIGCONT)
        late = collect_until(sub, lambda out: len(out) >= 3, timeout=20)
        after = st.server.status()["frame_bytes_held"]
    results = early + late
    codes = assert_exactly_once(sent, results)
    assert codes == {"ok": 3, "overloaded": 7}  # 3 frames fit in 3.5 frames' worth; a 4th would not
    assert [r["seq"] for r in early] == list(range(3, 10)) and "--max-frame-memory" in early[0]["error"]["message"]
    assert 3 * rgb.nbytes <= held <= 3.5 * rgb.nbytes and after == 0
