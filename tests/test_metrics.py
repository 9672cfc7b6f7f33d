"""Prometheus metrics scraped over real HTTP during and after a run; counters against what was
sent and answered."""

from __future__ import annotations

import time

import numpy as np
from helpers import scrape, value

from streampi.client import Producer, Subscriber
from streampi.serving import ServerOptions
from streampi.testing import ServerThread, wait_subscribed

FRAME = np.random.default_rng(5).integers(0, 256, (120, 160, 3), np.uint8)


def test_metrics_match_what_was_sent_and_answered():
    opts = ServerOptions(workers=2, policy="queue", metrics_port=0)
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        url = st.server.bound["metrics"]
        assert url.startswith("http://127.0.0.1:")
        wait_subscribed(sub, st.frames)
        before = scrape(url)
        probes = value(before, "streampi_frames_received_total")
        with Producer(st.frames, stream="a") as a, Producer(st.frames, stream="b") as b:
            for _ in range(30):
                a.send(FRAME)
            for _ in range(12):
                b.send(FRAME)
            during = scrape(url)  # mid-run: must answer, never block the server
            got = [sub.recv(timeout=10) for _ in range(42)]
        import zmq
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(st.frames_v1)
        for _ in range(3):
            push.send(b"\xc1 not msgpack")
        for _ in range(3):
            sub.recv(timeout=10)
        push.close(linger=1000)
        time.sleep(0.2)
        after = scrape(url)
        stats = dict(st.stats)
    assert all(r["ok"] for r in got)
    assert "streampi_frames_received_total" in {k[0] for k in during}
    assert value(after, "streampi_frames_received_total") == probes + 42 + 3 == stats["received"]
    assert value(after, "streampi_results_total", stream="a", outcome="ok") == 30
    assert value(after, "streampi_results_total", stream="b", outcome="ok") == 12
    assert value(after, "streampi_results_total", stream="_errors", outcome="bad_frame") == probes + 3
    assert value(after, "streampi_latency_seconds_count", stage="total") == 42
    assert value(after, "streampi_latency_seconds_count", stage="infer") == 42
    assert value(after, "streampi_batch_size_sum") == 42
    assert value(after, "streampi_batch_size_count") == stats["batches"]
    assert value(after, "streampi_frames_waiting") == 0
    assert value(after, "streampi_frame_bytes_held") == 0
    assert value(after, "streampi_healthy") == 1
    frames = value(after, "streampi_worker_frames_total", worker="0") + value(after, "streampi_worker_frames_total",
                                                                                worker="1")
    assert frames == 42
    assert value(after, "streampi_worker_generation", worker="0") == 1
    info = [k for k in after if k[0] == "streampi_model_info"]
    assert info and dict(info[0][1])["name"] == "shapes_int8"
    assert {"sha256", "backend", "backend_version", "streampi_version"} <= set(dict(info[0][1]))


def test_stream_labels_stay_bounded():
    opts = ServerOptions(workers=1, policy="queue", metrics_port=0, max_streams=3)
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        for i in range(6):
            with Producer(st.frames, stream=f"cam{i}") as p:
                p.send(FRAME)
                sub.recv(timeout=10)
        after = scrape(st.server.bound["metrics"])
    streams = {dict(k[1])["stream"] for k in after if k[0] == "streampi_results_total"}
    assert len(streams) <= 3
    assert {"cam5", "cam4"} <= streams  # the most recent stay; the oldest went first
    assert "cam0" not in streams


def test_refusals_and_credit_are_counted():
    """The worker stopped (SIGSTOP): a v1 producer overfills a queue stream, a raw v1.1 DEALER
    sends past its credit; the refusal counters and credit gauges say so, as the server's own
    counters do."""
    import os
    import signal

    import msgpack
    import zmq

    head = {"v": 1, "fmt": "rgb", "w": 160, "h": 120}
    opts = ServerOptions(workers=1, policy="queue", queue_size=2, max_batch=1, metrics_port=0, light_threads=0)
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        url = st.server.bound["metrics"]
        wait_subscribed(sub, st.frames)
        while True:  # the probes' answers, then quiet
            try:
                sub.recv(timeout=0.3)
            except TimeoutError:
                break
        pid = st.server.status()["workers"][0]["pid"]
        ctx = zmq.Context.instance()
        push, dealer = ctx.socket(zmq.PUSH), ctx.socket(zmq.DEALER)
        os.kill(pid, signal.SIGSTOP)
        try:
            push.connect(st.frames_v1)
            for seq in range(6):  # one to the (stopped) worker, two queued, three refused (each after
                push.send_multipart([msgpack.packb({**head, "stream": "q", "seq": seq}), FRAME.tobytes()])
                time.sleep(0.05)  # waiting 0.1 s aside for room)
            dealer.connect(st.frames)
            dealer.send_multipart([b"hello", msgpack.packb({"v": "1.1", "stream": "c"})])
            credit = msgpack.unpackb(dealer.recv_multipart()[1])
            assert credit["window"] == 2
            for seq in range(5):  # two within its credit, three past it
                dealer.send_multipart([b"frame", msgpack.packb({**head, "stream": "c", "seq": seq}), FRAME.tobytes()])
            deadline = time.monotonic() + 10
            while ((st.server.stats["received"] < 11 + 1 or st.server.stats["queue_full"] < 3)
                   and time.monotonic() < deadline):
                time.sleep(0.02)
            during = scrape(url)
        finally:
            os.kill(pid, signal.SIGCONT)
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 11 and time.monotonic() < deadline:
            try:
                r = sub.recv(timeout=1)
            except TimeoutError:
                continue
            if r["stream"] in ("q", "c"):
                got.append(r)
        push.close(linger=0)
        dealer.close(linger=0)
        stats = dict(st.stats)
    refused = {(r["stream"], r["seq"]) for r in got if not r["ok"]}
    assert all(r["error"]["code"] == "overloaded" for r in got if not r["ok"])
    assert refused == {("q", 3), ("q", 4), ("q", 5), ("c", 2), ("c", 3), ("c", 4)}, refused
    assert value(during, "streampi_frames_refused_total", reason="queue_full") == stats["queue_full"] == 3
    assert value(during, "streampi_frames_refused_total", reason="credit") == stats["credit_exceeded"] == 3
    assert value(during, "streampi_frames_refused_total", reason="memory") == stats.get("over_memory_budget", 0) == 0
    assert value(during, "streampi_credit_frames_in_flight") == 2  # the DEALER's two within credit
    assert value(during, "streampi_credit_producers") >= 1
    assert value(during, "streampi_credit_messages_total") >= 1
    assert value(during, "streampi_worker_light_frames_total", worker="0") == 0
