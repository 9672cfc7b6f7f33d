"""Prometheus metrics scraped over real HTTP during and after a run; counters against what was
sent and answered."""

from __future__ import annotations

import time
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from streampi.client import Producer, Subscriber
from streampi.serving import ServerOptions
from streampi.testing import ServerThread, wait_subscribed

FRAME = np.random.default_rng(5).integers(0, 256, (120, 160, 3), np.uint8)


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


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
