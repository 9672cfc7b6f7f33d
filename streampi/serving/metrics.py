"""Prometheus metrics of a running server (``streampi serve --metrics-port``).

Counters and histograms are updated where frames are settled (only when metrics are on:
otherwise the server holds no :class:`Metrics` and pays nothing); gauges that describe the
present (workers, frames waiting, memory held) are read from the server at scrape time, so
they are never stale. Per-stream series are bounded: at most ``max_streams`` streams carry a
label at once; the least recently answered stream's series are dropped first.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 5.0)
#: result timing key -> stage label
STAGES = {"queue_ms": "queue", "pre_ms": "preprocess", "infer_ms": "infer", "post_ms": "postprocess",
          "total_ms": "total"}


class Metrics:
    """The server's metrics in a registry of their own (several servers may share a process)."""

    def __init__(self, status: Callable[[], dict[str, Any]], info: Callable[[], dict[str, str]],
                 max_streams: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.max_streams = max_streams
        self.received = Counter("streampi_frames_received", "Frame messages received (valid or not)",
                                registry=self.registry)
        self.results = Counter("streampi_results", "Results published, by stream and outcome (ok, dropped or "
                                                   "the error code)", ["stream", "outcome"], registry=self.registry)
        self.latency = Histogram("streampi_latency_seconds", "Time a frame spent in each stage; total is "
                                                             "receipt to publish", ["stage"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch = Histogram("streampi_batch_size", "Frames per batch run", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
                               registry=self.registry)
        self._streams: collections.OrderedDict[str, set[str]] = collections.OrderedDict()  # LRU: stream -> outcomes
        self.registry.register(_Present(status, info))
        self._http: Any = None

    def result(self, stream: str, outcome: str, timing: dict[str, Any] | None) -> None:
        outcomes = self._streams.get(stream)
        if outcomes is None:
            if len(self._streams) >= self.max_streams:
                old, old_outcomes = self._streams.popitem(last=False)
                for o in old_outcomes:
                    self.results.remove(old, o)
            outcomes = self._streams[stream] = set()
        else:
            self._streams.move_to_end(stream)
        outcomes.add(outcome)
        self.results.labels(stream, outcome).inc()
        if timing and outcome == "ok":
            for key, stage in STAGES.items():
                value = timing.get(key)
                if value is not None:
                    self.latency.labels(stage).observe(value / 1e3)

    def serve(self, port: int, addr: str) -> int:
        """Start the HTTP endpoint (a thread); return the port it listens on."""
        self._http, _ = start_http_server(port, addr=addr, registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _Present:
    """Gauges read from the server at scrape time."""

    def __init__(self, status: Callable[[], dict[str, Any]], info: Callable[[], dict[str, str]]) -> None:
        self.status, self.info = status, info  # both read at scrape time (the model changes on reload)

    def describe(self) -> list:
        return []

    def collect(self):
        st = self.status()
        info = InfoMetricFamily("streampi_model", "The model being served")
        info.add_metric([], {k: str(v) for k, v in self.info().items()})
        yield info
        waiting = GaugeMetricFamily("streampi_frames_waiting", "Frames accepted and waiting for a worker")
        waiting.add_metric([], st["pending"])
        yield waiting
        held = GaugeMetricFamily("streampi_frame_bytes_held", "Bytes of frames the server holds (waiting or in "
                                                              "a worker's hands)")
        held.add_metric([], st["frame_bytes_held"])
        yield held
        up = GaugeMetricFamily("streampi_healthy", "1 when every worker is up and none is stuck")
        up.add_metric([], 1.0 if st["healthy"] else 0.0)
        yield up
        busy = CounterMetricFamily("streampi_worker_busy_seconds", "Seconds each worker spent on batches "
                                                                   "(rate() of it is the busy ratio)", labels=["worker"])
        restarts = CounterMetricFamily("streampi_worker_restarts", "Worker processes started to replace a dead "
                                                                   "one", labels=["worker"])
        generation = GaugeMetricFamily("streampi_worker_generation", "Restart generation of each worker",
                                       labels=["worker"])
        alive = GaugeMetricFamily("streampi_worker_up", "1 while the worker can take a batch", labels=["worker"])
        frames = CounterMetricFamily("streampi_worker_frames", "Frames each worker ran", labels=["worker"])
        for w in st["workers"]:
            label = [str(w["index"])]
            busy.add_metric(label, w["busy_s"])
            restarts.add_metric(label, w["restarts"])
            generation.add_metric(label, w["generation"])
            alive.add_metric(label, 1.0 if w["state"] == "ready" and w.get("process") == "running" else 0.0)
            frames.add_metric(label, w["frames_done"])
        light = CounterMetricFamily("streampi_worker_light_frames", "Frames each worker ran alone on its wide "
                                                                    "interpreter (the light path)", labels=["worker"])
        for w in st["workers"]:
            light.add_metric([str(w["index"])], w.get("light_frames", 0))
        yield from (busy, restarts, generation, alive, frames, light)
        # remote nodes (docs/cluster.md): one series per node, by its name
        node_up = GaugeMetricFamily("streampi_node_up", "1 while a remote node is joined, 0 while it is missing",
                                    labels=["node"])
        node_frames = CounterMetricFamily("streampi_node_frames", "Frames each remote node ran (in its current "
                                                                  "generation)", labels=["node"])
        node_generation = GaugeMetricFamily("streampi_node_generation", "Generation of each remote node (a new one "
                                                                        "each time it joins)", labels=["node"])
        node_credit = GaugeMetricFamily("streampi_node_credit", "Frames each remote node may be sent now (its free "
                                                                "workers times max batch)", labels=["node"])
        node_batch = GaugeMetricFamily("streampi_node_batch_seconds", "Measured round trip of a batch to each remote "
                                                                      "node (its quickest worker)", labels=["node"])
        for n in st.get("nodes", []):
            label = [n["node"]]
            joined = n["state"] == "joined"
            node_up.add_metric(label, 1.0 if joined else 0.0)
            node_generation.add_metric(label, n["generation"])
            if joined:
                node_frames.add_metric(label, n["frames_done"])
                node_credit.add_metric(label, n["credit"])
                node_batch.add_metric(label, n["batch_ms"] / 1e3)
        yield from (node_up, node_frames, node_generation, node_credit, node_batch)
        producers = GaugeMetricFamily("streampi_credit_producers", "Protocol v1.1 producers the server keeps "
                                                                   "credit for")
        producers.add_metric([], st.get("credit_producers", 0))
        in_flight = GaugeMetricFamily("streampi_credit_frames_in_flight", "Frames of v1.1 producers received and "
                                                                          "not answered yet")
        in_flight.add_metric([], st.get("credit_in_flight", 0))
        stats = st.get("stats", {})
        refused = CounterMetricFamily("streampi_frames_refused", "Frames answered 'overloaded' without running, by "
                                                                 "reason: past a v1.1 producer's credit, a full "
                                                                 "queue stream (v1), past --max-frame-memory",
                                      labels=["reason"])
        for reason, key in REFUSALS.items():
            refused.add_metric([reason], stats.get(key, 0))
        credit_msgs = CounterMetricFamily("streampi_credit_messages", "Credit messages sent to v1.1 producers")
        credit_msgs.add_metric([], stats.get("credit_messages", 0))
        rings = GaugeMetricFamily("streampi_shm_rings", "Shared-memory rings handed out to producers on this "
                                                        "machine (docs/protocol.md)")
        rings.add_metric([], st.get("shm_rings", 0))
        shm_frames = CounterMetricFamily("streampi_shm_frames", "Frames whose pixels came through a shared-memory "
                                                                "ring instead of the wire")
        shm_frames.add_metric([], stats.get("shm_frames", 0))
        yield from (producers, in_flight, refused, credit_msgs, rings, shm_frames)


#: the reasons of streampi_frames_refused and the server's counters behind them
REFUSALS = {"credit": "credit_exceeded", "queue_full": "queue_full", "memory": "over_memory_budget"}
