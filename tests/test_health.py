"""Health as ``streampi ctl health`` (and the metric and the systemd watchdog) reads it: a worker
is judged by the age of the batch it holds, since the server handed it over. Real servers and
their real control socket; a worker's invoke is held at a gate (injected) to keep its batch in
hand."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streampi import ctl
from streampi.client import Producer
from streampi.serving import ServerOptions
from streampi.serving.workers import ThreadRunner
from streampi.testing import ServerThread

FRAME = np.zeros((64, 64, 3), np.uint8)


@pytest.fixture
def gate(monkeypatch):
    """Invokes of the workers named in ``gate.workers`` wait until ``gate.event`` is set."""
    real = ThreadRunner.run
    gate = type("Gate", (), {"event": threading.Event(), "workers": set()})()

    def held_at_the_gate(self, n, wide=False):
        if threading.current_thread().name in {f"streampi-w{i}" for i in gate.workers}:
            gate.event.wait(60)
        return real(self, n, wide)

    monkeypatch.setattr(ThreadRunner, "run", held_at_the_gate)
    yield gate
    gate.event.set()


def _holding(st: ServerThread, n: int) -> list[dict]:
    """The workers (as ``ctl workers`` lists them) once ``n`` of them hold a batch."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        workers = ctl.request(st.control, "workers")["workers"]
        if sum(w["busy"] for w in workers) >= n:
            return workers
        time.sleep(0.01)
    raise AssertionError(f"{n} workers never held a batch: {workers}")


def test_workers_idle_past_the_invoke_timeout_just_handed_a_batch_are_healthy(gate):
    opts = ServerOptions(workers=2, isolation="thread", policy="queue", max_batch=1, invoke_timeout=3.0)
    with ServerThread("shapes_int8", opts) as st:
        time.sleep(opts.invoke_timeout + 0.5)  # both workers idle for longer than --invoke-timeout
        gate.workers.update({0, 1})
        with Producer(st.frames, stream="a") as prod:
            prod.send(FRAME, seq=1)
            prod.send(FRAME, seq=2)
        workers = _holding(st, 2)
        health = ctl.request(st.control, "health")
        gate.event.set()
    assert [w["holding"] for w in workers] == [[["a", 1]], [["a", 2]]]
    assert health["healthy"] and health["problems"] == [], health["problems"]


def test_a_worker_holding_its_batch_past_the_invoke_timeout_is_reported_by_its_own_index(gate):
    """Worker 0 (not the last one) is stuck; worker 1 idles."""
    opts = ServerOptions(workers=2, isolation="thread", policy="queue", max_batch=1, invoke_timeout=0.3)
    with ServerThread("shapes_int8", opts) as st:
        gate.workers.add(0)
        with Producer(st.frames, stream="b") as prod:
            prod.send(FRAME, seq=1)
        workers = _holding(st, 1)
        deadline = time.monotonic() + 20
        health = ctl.request(st.control, "health")
        while health["healthy"] and time.monotonic() < deadline:
            time.sleep(0.05)
            health = ctl.request(st.control, "health")
        gate.event.set()
    assert [w["holding"] for w in workers] == [[["b", 1]], []]
    assert not health["healthy"]
    assert len(health["problems"]) == 1 and health["problems"][0].startswith("worker 0 has held a batch for ")


def test_a_bad_control_request_is_answered_with_the_reason_and_the_server_goes_on():
    """What `streampi ctl` would never send, sent by hand over a real REQ socket: each gets an
    answer that says what was wrong, and health is still answered after them."""
    import msgpack  # the test's own codec
    import zmq

    bad = [(b"\xc1 not msgpack", "bad request: not msgpack"),
           (msgpack.packb([1, 2, 3]), "unknown command"),
           (msgpack.packb({"cmd": "explode"}), "unknown command; expected one of: health, workers, stats, reload"),
           (msgpack.packb({"cmd": "reload", "model": 7}), "reload takes a model path (a string)"),
           (msgpack.packb({"cmd": "health", "pad": "x" * 10_000}), "bad request (more than 8192 bytes)")]
    with ServerThread("shapes_int8", ServerOptions(workers=1, isolation="thread")) as st:
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(st.control)
        try:
            replies = []
            for raw, _ in bad:
                sock.send(raw)
                replies.append(msgpack.unpackb(sock.recv()))
        finally:
            sock.close()
        health = ctl.request(st.control, "health")
    for (_, why), reply in zip(bad, replies):
        assert reply["ok"] is False and reply["error"].startswith(why), (why, reply)
    assert health["ok"] and health["healthy"]
