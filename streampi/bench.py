"""``streampi bench``: open-loop load tests, latency percentiles, sweeps, plots.

Load is open loop: every producer process computes its send schedule in advance (fixed
interval or Poisson arrivals) and never waits for results. Each frame carries its
*scheduled* send time in ``ts``; latency is measured from that time to the result's
arrival, so a server that stalls cannot hide the stall by slowing the senders down (no
coordinated omission).

The figures (throughput, latency percentiles from a log-bucketed histogram, per-stage
breakdown, drops and errors by code, server CPU and memory) go to the terminal, to a JSON
file with the whole configuration, and optionally to a PNG (matplotlib, a bench extra).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .client import Producer, Subscriber
from .measure import back_to_back, back_to_back_fps, invoke_ms, ready, usable_cores
from .model import Model, resolve_model
from .runtime_info import describe_runtime, summary_line
from .testing import start_server

STAGES = ("queue_ms", "pre_ms", "infer_ms", "post_ms")


# -- histogram ------------------------------------------------------------------------------------
class LatencyHistogram:
    """Latency percentiles from an HdrHistogram (the ``hdrhistogram`` package, a bench extra).

    Values are kept in microseconds at 3 significant digits from 1 µs to one hour, so memory
    stays fixed however many samples come and every percentile is within 0.1 % of the true
    value. Histograms recorded in other processes travel as :meth:`encode` bytes and are
    summed exactly with :meth:`merge` (HdrHistogram's compressed form), which a list of
    percentiles could not be.
    """

    LOWEST_US, HIGHEST_US, DIGITS = 1, 3_600_000_000, 3

    def __init__(self) -> None:
        try:
            from hdrh.histogram import HdrHistogram
        except ImportError as exc:  # the serving install does not carry the bench tools
            raise SystemExit("streampi bench needs hdrhistogram: pip install 'streampi[bench]'") from exc
        self._h = HdrHistogram(self.LOWEST_US, self.HIGHEST_US, self.DIGITS)

    def add(self, ms: float) -> None:
        us = min(max(round(ms * 1e3), self.LOWEST_US), self.HIGHEST_US)
        self._h.record_value(us)

    @property
    def n(self) -> int:
        return self._h.get_total_count()

    @property
    def max(self) -> float:
        return self._h.get_max_value() / 1e3 if self.n else math.nan

    @property
    def min(self) -> float:
        return self._h.get_min_value() / 1e3 if self.n else math.nan

    def percentile(self, p: float) -> float:
        if not self.n:
            return math.nan
        return self._h.get_value_at_percentile(p) / 1e3

    def summary(self) -> dict[str, float]:
        return {"p50": self.percentile(50), "p90": self.percentile(90), "p95": self.percentile(95),
                "p99": self.percentile(99), "max": self.max}

    def cdf(self) -> tuple[list[float], list[float]]:
        """(latency ms, fraction of frames at or under it) at every recorded value."""
        xs, ys, seen = [], [], 0
        for step in self._h.get_recorded_iterator():
            seen += step.count_added_in_this_iter_step
            xs.append(step.value_iterated_to / 1e3)
            ys.append(seen / self.n)
        return xs, ys

    def encode(self) -> bytes:
        """The histogram as compressed bytes, to send from another process."""
        return self._h.encode()

    def merge(self, other: LatencyHistogram | bytes) -> LatencyHistogram:
        """Add another histogram (or its :meth:`encode` bytes) into this one; returns self."""
        if isinstance(other, (bytes, bytearray)):
            from hdrh.histogram import HdrHistogram
            self._h.add(HdrHistogram.decode(bytes(other)))
        else:
            self._h.add(other._h)
        return self


# -- frames ---------------------------------------------------------------------------------------
def rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range I420 from RGB (even sizes), for synthetic YUV load."""
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    h, w = y.shape
    sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # noqa: E731
    planes = [y.reshape(-1), sub(u).reshape(-1), sub(v).reshape(-1)]
    return np.clip(np.concatenate(planes) + 0.5, 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def make_frames(source: str, size: tuple[int, int], fmt: str, n: int = 16, seed: int = 0) -> list[tuple[Any, str]]:
    """A small pool of (payload, fmt) to cycle through."""
    if source != "synthetic":
        files = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if not files:
            raise SystemExit(f"streampi bench: no .jpg files in {source}")
        return [(f.read_bytes(), "jpeg") for f in files[:n]]
    from .synthetic import ShapesGenerator

    gen = ShapesGenerator(seed=seed)
    out = []
    for _ in range(n):
        rgb, _ = gen.frame(*size)
        if fmt == "rgb":
            out.append((rgb, "rgb"))
        elif fmt == "bgr":
            out.append((np.ascontiguousarray(rgb[..., ::-1]), "bgr"))
        elif fmt == "gray":
            out.append((np.ascontiguousarray(rgb.mean(axis=2).astype(np.uint8)), "gray"))
        elif fmt == "i420":
            out.append((rgb_to_i420(rgb), "i420"))
        elif fmt == "jpeg":
            import simplejpeg
            out.append((simplejpeg.encode_jpeg(rgb, quality=90), "jpeg"))
        else:
            raise SystemExit(f"streampi bench: unsupported synthetic format {fmt}")
    return out


def schedule(rate: float, seconds: float, max_frames: int, arrival: str, seed: int) -> np.ndarray:
    """Send offsets (s from start) of an open-loop schedule."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    n = int(rate * seconds * 1.5) + 16
    if arrival == "poisson":
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, n)
        t = np.cumsum(gaps) - gaps[0]
    else:
        t = np.arange(n) / rate
    t = t[t < seconds]
    return t[:max_frames] if max_frames else t


# -- producers (processes) -------------------------------------------------------------------------
def _producer_main(endpoint: str, streams: list[str], rate: float, seconds: float, max_frames: int, arrival: str,
                   seed: int, frames_spec: tuple, start_at: float, out: mp.Queue, protocol: str = "1.1",
                   nice: int = 0, shared_memory: bool = False) -> None:
    """One producer process: sends its schedule round robin over its streams; reports counts,
    its CPU time while sending, and how late its sends were (an encoded histogram).

    ``rate`` 0 sends as fast as the server takes frames (each frame stamped when it goes, a
    short send queue so that back-pressure reaches the sender; v1.1 producers wait for credit):
    the saturation load. v1.1 producers on a schedule replace frames that find no credit
    (policy ``latest``): those are counted as ``client_dropped``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice:
        os.nice(nice)  # a camera is another device: on a shared machine, its CPU must not come out of the server's
    frames = make_frames(*frames_spec, seed=seed)
    saturate = rate == 0
    # a fixed frame pool: zero copy is safe
    prods = [Producer(endpoint, stream=s, sndhwm=8 if saturate else 1000, zero_copy=True, protocol_version=protocol,
                      when_full="wait" if saturate else None, shared_memory=shared_memory) for s in streams]
    import zmq

    for p in prods:  # what ZeroMQ still holds when the run ends must reach the server (bounded by run_load's join)
        p._sock.setsockopt(zmq.LINGER, -1)  # noqa: SLF001
    offsets = None if saturate else schedule(rate, seconds, max_frames, arrival, seed)
    limit = max_frames if saturate and max_frames else (len(offsets) if offsets is not None else 2**62)
    lateness = LatencyHistogram()
    late = sent = 0
    end = start_at + seconds
    delay = time.time()
    while delay < start_at:
        time.sleep(min(0.05, start_at - delay))
        delay = time.time()
    cpu0 = time.process_time()
    try:
        while sent < limit:
            payload, fmt = frames[sent % len(frames)]
            if saturate:
                now = time.time()
                if now >= end:
                    break
                prods[sent % len(prods)].send(payload, fmt=fmt, timeout=max(0.05, end - now))
            else:
                due = start_at + offsets[sent]
                now = time.time()
                if due - now > 0.0005:  # (at thousands of frames/s, a sleep per frame would cost more than the send)
                    time.sleep(due - now)
                    now = time.time()
                lateness.add(max(0.0, now - due) * 1e3)
                if now - due > 0.001:
                    late += 1
                # bounded: a server that stopped reading cannot hold this process forever
                prods[sent % len(prods)].send(payload, fmt=fmt, ts=due, timeout=max(1.0, end + 10 - now))
            sent += 1
    except TimeoutError:
        pass  # saturation: the run ended while the server held the queue full; open loop: reported as unsent
    cpu_s = time.process_time() - cpu0
    for p in prods:
        p.close()
    client_dropped = sum(p.dropped for p in prods)
    shm_frames = sum(p.shm_frames for p in prods)
    # frames go out zero-copy from `frames`: wait until ZeroMQ has sent them all (the sockets
    # linger) before this process lets go of the buffers and exits
    zmq.Context.instance().term()
    out.put({"sent": sent, "late": late, "cpu_s": cpu_s, "lateness": lateness.encode(), "client_dropped": client_dropped,
             "shm_frames": shm_frames,
             "unsent": (len(offsets) - sent) if offsets is not None else 0})
    del frames


def _tree_cpu(proc: Any) -> dict[int, float]:
    """CPU seconds (user + system) of a process and all its descendants, by pid: the server's
    worker processes are children of a fork-server child, not of the server itself."""
    out = {}
    for p in (proc, *proc.children(recursive=True)):
        try:
            out[p.pid] = sum(p.cpu_times()[:2])
        except Exception:  # noqa: BLE001 - it ended between the listing and the read
            continue
    return out


def _tree_rss_mib(proc: Any) -> float:
    total = 0
    for p in (proc, *proc.children(recursive=True)):
        try:
            total += p.memory_info().rss
        except Exception:  # noqa: BLE001 - it ended between the listing and the read
            continue
    return total / 2**20


# -- one load run -----------------------------------------------------------------------------------
@dataclass
class RunResult:
    """Counts cover every frame of the run (warm-up included) so that they add up; latency,
    stage times, throughput and CPU cover the measurement window only (frames whose ``ts``
    falls in it)."""

    offered_fps: float
    seconds: float
    sent: int = 0
    late_sends: int = 0
    unsent: int = 0
    ok: int = 0
    ok_in_window: int = 0
    ok_arrived_in_window: int = 0  # ok results that arrived during the window (whatever their ts)
    dropped: int = 0
    client_dropped: int = 0  # v1.1: replaced at the producer for want of credit, never sent
    shm_frames: int = 0  # sent through a shared-memory ring (pixels not on the wire)
    errors: dict = field(default_factory=dict)
    hist: LatencyHistogram = field(default_factory=LatencyHistogram)
    send_lateness: LatencyHistogram = field(default_factory=LatencyHistogram)
    stages: dict = field(default_factory=lambda: {k: [] for k in (*STAGES, "infer_batch_ms", "transport_ms")})
    window: tuple[float, float] | None = None
    server_cpu_s: float | None = None
    server_rss_mib: float | None = None
    producer_cpu_s: float = 0.0
    subscriber_cpu_s: float | None = None
    batches: list = field(default_factory=list)
    producer_failures: list = field(default_factory=list)

    def record(self, r: dict, arrived: float) -> None:
        """Count one result; for an ``ok`` one in the window, its latency (scheduled send →
        ``arrived``) and its stage times, per frame."""
        if not r["ok"]:
            if r["error"]["code"] == "dropped":
                self.dropped += 1
            else:
                self.errors[r["error"]["code"]] = self.errors.get(r["error"]["code"], 0) + 1
            return
        self.ok += 1
        if self.window is not None and self.window[0] <= arrived < self.window[1]:
            self.ok_arrived_in_window += 1
        if self.window is not None and not self.window[0] <= r["ts"] < self.window[1]:
            return
        self.ok_in_window += 1
        lat = (arrived - r["ts"]) * 1e3
        self.hist.add(lat)
        t = r["timing"]
        batch = max(1, int(r.get("batch", 1)))
        for k in STAGES:
            if k in t:
                self.stages[k].append(t[k])
        if "infer_ms" in t:
            # the worker times one invoke of the whole batch and every frame of the batch
            # carries that figure: the interpreter's cost per frame is infer_ms / batch
            self.stages["infer_ms"][-1] = t["infer_ms"] / batch
            self.stages["infer_batch_ms"].append(t["infer_ms"])
        # scheduled send → result, less the server's own time: sockets, queues in front of the server
        self.stages["transport_ms"].append(lat - t["total_ms"])
        self.batches.append(batch)

    @property
    def answered(self) -> int:
        return self.ok + self.dropped + sum(self.errors.values())

    @property
    def achieved_fps(self) -> float:
        return (self.ok_in_window if self.window is not None else self.ok) / self.seconds

    def as_dict(self) -> dict[str, Any]:
        stage = {k: {"p50": float(np.median(v)), "p99": float(np.percentile(v, 99))} for k, v in self.stages.items() if v}
        per_frame = max(1, self.ok_in_window if self.window is not None else self.ok)
        cpu = {"server": 1e3 * self.server_cpu_s / per_frame if self.server_cpu_s is not None else None,
               "producers": 1e3 * self.producer_cpu_s / max(1, self.sent),
               "subscriber": 1e3 * self.subscriber_cpu_s / per_frame if self.subscriber_cpu_s is not None else None}
        return {
            "offered_fps": self.offered_fps, "achieved_fps": self.achieved_fps, "seconds": self.seconds,
            "sent": self.sent, "answered": self.answered, "ok": self.ok, "ok_in_window": self.ok_in_window,
            "ok_arrived_in_window": self.ok_arrived_in_window,
            "dropped": self.dropped, "client_dropped": self.client_dropped, "shm_frames": self.shm_frames,
            "errors": self.errors,
            "unanswered": self.sent - self.client_dropped - self.answered,
            "unsent": self.unsent, "late_sends": self.late_sends,
            "send_lateness_ms": self.send_lateness.summary() if self.send_lateness.n else None,
            "latency_ms": self.hist.summary(), "stages_ms": stage,
            "mean_batch": float(np.mean(self.batches)) if self.batches else None,
            "server_cpu_percent": (100 * self.server_cpu_s / self.seconds) if self.server_cpu_s is not None else None,
            "cpu_ms_per_frame": cpu,
            "server_rss_mib": self.server_rss_mib, "producer_failures": self.producer_failures,
            "producer_cpu_s": self.producer_cpu_s,
        }


def run_load(frames_ep: str, results_ep: str, *, rate: float, seconds: float, producers: int, streams: int,
             arrival: str, frames_spec: tuple, max_frames: int = 0, server_pid: int | None = None,
             progress: Any = None, drain_s: float = 10.0, stream_prefix: str = "bench",
             warmup: float = 0.0, protocol: str = "1.1", producer_nice: int = 0,
             shared_memory: bool = False) -> RunResult:
    """Offer ``rate`` frames/s (0: as fast as the server takes them) for ``warmup`` +
    ``seconds`` over P processes and S streams; collect every result; measure throughput,
    latency and CPU over the last ``seconds``. Server CPU and memory are those of the whole
    process tree of ``server_pid`` (its workers included). Give runs against one server
    different ``stream_prefix`` values so that late results of one run are not counted in the next.
    ``protocol`` is the producers' (``frames_ep`` must be the server's endpoint for it);
    ``shared_memory`` makes them v1.1 producers that write raw frames into the server's rings
    (a server on this machine)."""
    names = [f"{stream_prefix}{i}" for i in range(streams)]
    groups = [names[i::producers] for i in range(producers)] if streams >= producers else [[n] for n in names]
    producers = len(groups)
    res = RunResult(offered_fps=rate, seconds=seconds)
    sub = Subscriber(results_ep)
    time.sleep(0.3)  # subscription reaches the publisher
    server = None
    if server_pid:
        import psutil
        server = psutil.Process(server_pid)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + 1.5  # producers load their frames, then all start together
    res.window = (start_at + warmup, start_at + warmup + seconds)
    per_frames = (max_frames // producers) if max_frames else 0
    procs = [ctx.Process(target=_producer_main, args=(frames_ep, g, rate / producers, warmup + seconds, per_frames,
                                                      arrival, 1000 + i, frames_spec, start_at, q, protocol,
                                                      producer_nice, shared_memory),
                             daemon=True)
             for i, g in enumerate(groups)]
    for p in procs:
        p.start()
    cpu0: dict[int, float] | None = None
    sub_cpu0 = None
    reported = 0
    reported_at: float | None = None
    t_end = res.window[1]
    deadline = t_end + drain_s
    want = set(names)

    def collect() -> None:
        nonlocal reported
        while not q.empty():
            info = q.get()
            res.sent += info["sent"]
            res.client_dropped += info["client_dropped"]
            res.shm_frames += info.get("shm_frames", 0)
            res.late_sends += info["late"]
            res.unsent += info["unsent"]
            res.producer_cpu_s += info["cpu_s"]
            res.send_lateness.merge(info["lateness"])
            reported += 1

    while True:
        now = time.time()
        if sub_cpu0 is None and now >= res.window[0]:
            sub_cpu0 = time.process_time()
            if server is not None:
                cpu0 = _tree_cpu(server)
        if res.subscriber_cpu_s is None and sub_cpu0 is not None and now >= t_end:
            res.subscriber_cpu_s = time.process_time() - sub_cpu0
            if cpu0 is not None:
                cpu1 = _tree_cpu(server)
                res.server_cpu_s = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())
                res.server_rss_mib = _tree_rss_mib(server)
        collect()
        if reported == producers and res.answered + res.client_dropped >= res.sent:
            break
        if reported == producers and reported_at is None:
            reported_at = now
        if now > deadline and (now > deadline + 30 or (reported_at is not None and now > reported_at + 5)):
            break  # (past the deadline: wait for producers still sending what they queued, and their answers)
        try:
            r = sub.recv(timeout=0.1)
        except TimeoutError:
            continue
        if r["stream"] not in want:
            continue
        res.record(r, time.time())
        if progress is not None:
            progress(res, time.time() - start_at)
    for p in procs:
        p.join(30)
    collect()
    res.producer_failures = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    sub.close()
    if res.subscriber_cpu_s is None and sub_cpu0 is not None:
        res.subscriber_cpu_s = time.process_time() - sub_cpu0
        if cpu0 is not None:
            cpu1 = _tree_cpu(server)
            res.server_cpu_s = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())
            res.server_rss_mib = _tree_rss_mib(server)
    return res


# -- the raw ceiling -----------------------------------------------------------------------------------
def ceiling(model_path: Path, n: int, seconds: float, batch: int = 1) -> tuple[float, float]:
    """(frames/s of n interpreter instances invoking back to back on ready tensors, pinned
    one per core; p50 ms of one invoke per frame with the others idle)."""
    models = [ready(Model(model_path, batch_size=batch if batch > 1 else None)) for _ in range(n)]
    one = float(np.median(invoke_ms(models[0], 50))) / batch
    return back_to_back_fps(models, seconds, settle=0.5), one


def pipeline_ceiling(model_path: Path, n: int, seconds: float, size: tuple[int, int] = (640, 480),
                     settle: float = 0.5, jpeg: bytes | None = None) -> dict[str, float]:
    """What a perfect server could do: ``n`` threads, pinned one per core, each running
    streampi's kernel (resize + quantize into the interpreter's own input tensor) on a
    ``size`` RGB frame already in memory and then invoke, back to back. No sockets, no
    decoding of messages, no scheduling: the server's share is whatever it loses below this.
    ``jpeg``: these JPEG bytes instead, decoded by the kernel each time (as the server does).
    Returns frames/s and the p50 ms of one kernel call and one invoke, each timed apart."""
    import functools

    from .config import load_config
    from .preprocess import Preprocessor
    from .synthetic import ShapesGenerator

    config = load_config(model_path)
    models = [ready(Model(model_path)) for _ in range(n)]
    pres = [Preprocessor.for_model(m, config) for m in models]
    frame, _ = ShapesGenerator(seed=0).frame(*size)
    frame = np.ascontiguousarray(frame)
    fmt = "rgb"
    if jpeg is not None:
        frame, fmt = jpeg, "jpeg"

    def one(i: int) -> None:
        view = models[i].input_view()
        pres[i](frame, fmt, out=view[0])
        del view  # the interpreter refuses to run while a view of its buffers is alive
        models[i].invoke()

    # the two stages timed apart, on one thread with the others idle
    kernel, invoke = [], []
    for _ in range(30):
        view = models[0].input_view()
        t0 = time.perf_counter()
        pres[0](frame, fmt, out=view[0])
        kernel.append((time.perf_counter() - t0) * 1e3)
        del view
        t0 = time.perf_counter()
        models[0].invoke()
        invoke.append((time.perf_counter() - t0) * 1e3)
    fps = back_to_back([functools.partial(one, i) for i in range(n)], seconds, settle)
    return {"instances": n, "fps": fps, "frame": f"{size[0]}x{size[1]} {fmt}",
            "kernel_p50_ms": float(np.median(kernel)), "invoke_p50_ms": float(np.median(invoke))}


# -- the baseline: what a user would try first ---------------------------------------------------------
def _baseline_server(endpoint_q: mp.Queue, model_path: str, size: tuple[int, int]) -> None:
    """One process, REQ/REP: receive a frame, cv2.resize, quantize with NumPy, invoke, reply."""
    import cv2
    import msgpack
    import zmq

    from .config import load_config

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    m = Model(model_path)
    cfg = load_config(model_path)
    h, w, c = m.image_input()
    spec = m.input
    mean, std = np.asarray(cfg.mean, np.float32), np.asarray(cfg.std, np.float32)
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    endpoint_q.put(f"tcp://127.0.0.1:{port}")
    while True:
        parts = rep.recv_multipart()
        if parts[0] == b"stop":
            rep.send(b"bye")
            break
        head = msgpack.unpackb(parts[0])
        if head["fmt"] == "jpeg":
            img = cv2.imdecode(np.frombuffer(parts[1], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        elif head["fmt"] == "i420":
            img = cv2.cvtColor(np.frombuffer(parts[1], np.uint8).reshape(head["h"] * 3 // 2, head["w"]),
                               cv2.COLOR_YUV2RGB_I420)
        else:
            img = np.frombuffer(parts[1], np.uint8).reshape(head["h"], head["w"], -1)[..., :3]
        img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_AREA)
        x = (img.astype(np.float32) / 255.0 - mean) / std
        if spec.quantized:
            info = np.iinfo(spec.dtype)
            x = np.clip(np.rint(x / spec.scale) + spec.zero_point, info.min, info.max)
        m.set_input(x.astype(spec.dtype)[None])
        m.invoke()
        scores = m.outputs_float()[0][0]
        rep.send(msgpack.packb({"seq": head["seq"], "top": int(np.argmax(scores))}))
    rep.close()
    ctx.term()


def _baseline_client(endpoint: str, rate: float, seconds: float, max_frames: int, arrival: str, seed: int,
                     frames_spec: tuple, start_at: float, out: mp.Queue) -> None:
    import msgpack
    import zmq

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    frames = make_frames(*frames_spec, seed=seed)
    offsets = schedule(rate, seconds, max_frames, arrival, seed)
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.connect(endpoint)
    lat = []
    while time.time() < start_at:
        time.sleep(0.01)
    for i, off in enumerate(offsets):
        due = start_at + off
        now = time.time()
        if due > now:
            time.sleep(due - now)
        payload, fmt = frames[i % len(frames)]
        arr = np.asarray(payload) if not isinstance(payload, bytes) else None
        head = {"seq": i, "fmt": fmt}
        if arr is not None:
            head.update(h=arr.shape[0] * 2 // 3 if fmt == "i420" else arr.shape[0], w=arr.shape[1])
        req.send_multipart([msgpack.packb(head), payload if arr is None else arr.tobytes()])
        req.recv()
        lat.append((time.time() - due) * 1e3)
    req.close()
    ctx.term()
    out.put(lat)


def run_baseline(model_path: Path, *, rate: float, seconds: float, producers: int, arrival: str,
                 frames_spec: tuple, max_frames: int = 0) -> dict[str, Any]:
    """The imagezmq tutorial pattern under the same open-loop schedule (one REQ per producer)."""
    ctx = mp.get_context("spawn")
    eq, q = ctx.Queue(), ctx.Queue()
    server = ctx.Process(target=_baseline_server, args=(eq, str(model_path), frames_spec[1]), daemon=True)
    server.start()
    endpoint = eq.get(timeout=120)
    start_at = time.time() + 1.5
    per = (max_frames // producers) if max_frames else 0
    clients = [ctx.Process(target=_baseline_client, args=(endpoint, rate / producers, seconds, per, arrival,
                                                          2000 + i, frames_spec, start_at, q), daemon=True)
               for i in range(producers)]
    for c in clients:
        c.start()
    hist, n = LatencyHistogram(), 0
    for _ in clients:
        for v in q.get(timeout=seconds * 20 + 120):
            hist.add(v)
            n += 1
    elapsed = time.time() - start_at
    for c in clients:
        c.join(5)
    import zmq
    zctx = zmq.Context.instance()
    s = zctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    s.send_multipart([b"stop"])
    s.poll(2000)
    s.close()
    server.join(5)
    if server.is_alive():
        server.terminate()
    # answered frames over the time the schedule took (a late baseline takes longer than `seconds`)
    return {"offered_fps": rate, "achieved_fps": n / max(seconds, elapsed), "answered": n,
            "latency_ms": hist.summary()}


# -- plotting -------------------------------------------------------------------------------------------
def plot(path: Path, steps: list[dict], hist: LatencyHistogram, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("streampi bench: matplotlib is not installed (pip install 'streampi[bench]'); no PNG written")
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    offered = [s["offered_fps"] for s in steps]
    for p, style in (("p50", "o-"), ("p90", "s-"), ("p99", "^-"), ("max", "x--")):
        a.plot(offered, [s["latency_ms"][p] for s in steps], style, label=p)
    a.set_xlabel("offered load (frames/s)")
    a.set_ylabel("latency (ms, scheduled send → result)")
    a.set_yscale("log")
    a.grid(True, which="both", alpha=0.3)
    a.legend()
    a.set_title("latency against offered load")
    xs, ys = hist.cdf()
    b.plot(xs, ys)
    b.set_xscale("log")
    b.set_xlabel("latency (ms)")
    b.set_ylabel("fraction of frames")
    b.grid(True, which="both", alpha=0.3)
    b.set_title("latency CDF at the knee" if len(steps) > 1 else "latency CDF")
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    for axis in (a.yaxis, b.xaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- CLI -------------------------------------------------------------------------------------------------
def add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="load-test a server: open-loop producers, latency percentiles, sweeps, plots",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("server")
    g.add_argument("--connect", metavar="FRAMES,RESULTS", help="use a running server (else one is started); "
                   "FRAMES is its --credit-bind endpoint, or its --bind endpoint with --protocol 1")
    g.add_argument("--protocol", choices=["1.1", "1"], default="1.1",
                   help="the producers' protocol: 1.1 (credit-based flow control) or 1 (PUSH)")
    g.add_argument("--server-pid", type=int, help="with --connect: the server's pid, for its CPU and memory")
    g.add_argument("--shared-memory", action="store_true",
                   help="v1.1 producers write raw frames into the server's shared-memory rings (a server on "
                        "this machine): what a camera on the server's own Pi does")
    g.add_argument("--model", default="mobilenet_v2_int8")
    g.add_argument("--workers", type=int, default=None)
    g.add_argument("--threads", type=int, default=1)
    g.add_argument("--max-batch", type=int, default=4)
    g.add_argument("--max-delay-ms", type=float, default=0.0)
    g.add_argument("--policy", default="queue", choices=["latest", "queue"])
    g = p.add_argument_group("load")
    g.add_argument("--rate", type=float, default=100.0,
                   help="offered frames/s in all; 0: as fast as the server takes them (saturation)")
    g.add_argument("--warmup", type=float, default=0.0, help="seconds of load before the measured --seconds")
    g.add_argument("--arrival", choices=["fixed", "poisson"], default="fixed")
    g.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    g.add_argument("--frames", type=int, default=0, help="stop after this many frames in all (0: no limit)")
    g.add_argument("--producers", type=int, default=2, help="producer processes")
    g.add_argument("--streams", type=int, default=2)
    g.add_argument("--size", default="640x480", help="synthetic frame size WxH")
    g.add_argument("--fmt", default="rgb", choices=["rgb", "bgr", "gray", "i420", "jpeg"])
    g.add_argument("--images", help="a folder of .jpg files to send instead of synthetic frames")
    g = p.add_argument_group("modes")
    g.add_argument("--sweep", action="store_true", help="step the rate up until saturation; report the knee")
    g.add_argument("--sweep-start", type=float, default=None, help="first rate (default: 10 %% of the ceiling)")
    g.add_argument("--sweep-factor", type=float, default=1.3)
    g.add_argument("--sweep-steps", type=int, default=12)
    g.add_argument("--sweep-refine", type=int, default=2, help="bisection steps between the knee and the next step")
    g.add_argument("--p99-bound-ms", type=float, default=50.0, help="the knee: highest throughput with p99 under this")
    g.add_argument("--ceiling", action="store_true", help="also measure the raw interpreter ceiling")
    g.add_argument("--baseline", action="store_true", help="also run the REQ/REP + OpenCV baseline")
    g.add_argument("--overload", type=float, default=None, metavar="FACTOR",
                   help="measure saturation, then offer FACTOR x that for --seconds with v1.1 and with v1 "
                        "producers (policy latest): served/s as a fraction of saturation, memory, counts")
    g = p.add_argument_group("output")
    g.add_argument("--json", type=Path, default=Path("bench-result.json"))
    g.add_argument("--png", type=Path, default=None, help="write latency plots here")
    g.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_bench)


def _progress_factory(enabled: bool, label: str):
    """A rich live line while a run goes, or nothing."""
    if not enabled:
        return None, (lambda: None)
    try:
        from rich.live import Live
        from rich.text import Text
    except ImportError:
        return None, (lambda: None)
    live = Live(Text(""), refresh_per_second=4, transient=True)
    live.start()
    last = [0.0]

    def update(res: RunResult, elapsed: float) -> None:
        if elapsed - last[0] < 0.25:
            return
        last[0] = elapsed
        live.update(Text(f"{label}: {elapsed:5.1f} s  answered {res.answered:7d}  ok {res.ok:7d}  dropped "
                         f"{res.dropped:5d}  p50 {res.hist.percentile(50):7.2f} ms  p99 "
                         f"{res.hist.percentile(99):7.2f} ms"))

    return update, live.stop


def _print_table(rows: list[tuple[str, str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
        t = Table(show_header=True, header_style="bold")
        t.add_column("figure")
        t.add_column("value", justify="right")
        for k, v in rows:
            t.add_row(k, v)
        Console().print(t)
    except ImportError:
        for k, v in rows:
            print(f"{k:<44} {v}")


def _overload(args: argparse.Namespace, endpoints: dict[str, str], results_ep: str, server_pid: int,
              frames_spec: tuple, report: dict) -> int:
    """Saturation (v1.1 producers waiting for credit, and v1 producers blocking on ZeroMQ's
    queue; the higher is the server's capacity), then ``--overload`` x that offered for
    ``--seconds`` by v1.1 producers and by v1 producers, policy ``latest``. Prints served/s as a
    fraction of saturation, the server's memory (its whole process tree) after warm-up and at
    the end of each run, and the counts (which must add up: every frame answered once, or
    replaced at the producer)."""
    import psutil

    server = psutil.Process(server_pid)
    kw = dict(producers=args.producers, streams=args.streams, arrival=args.arrival, frames_spec=frames_spec,
              server_pid=server_pid, warmup=args.warmup, producer_nice=19)
    sat_seconds = max(3.0, min(args.seconds, 10.0))
    sats: list[dict] = []

    def saturation() -> float:
        n = len(sats) + 1
        print(f"saturation {n}: v1.1 producers waiting for credit ({sat_seconds:g} s) …", flush=True)
        r = run_load(endpoints["1.1"], results_ep, rate=0, seconds=sat_seconds, stream_prefix=f"sat{n}-", **kw)
        sats.append(r.as_dict())
        print(f"  {r.achieved_fps:.1f} frames/s", flush=True)
        return r.achieved_fps

    # saturation before, between and after the overload runs: each run is compared with the
    # mean of the two that bracket it (a shared machine drifts between minutes)
    before = saturation()
    rss_warm = _tree_rss_mib(server)
    rows = []
    for proto in ("1.1", "1"):
        rate = args.overload * before
        print(f"overload x{args.overload:g} = {rate:.0f} frames/s offered, v{proto} producers, {args.seconds:g} s …",
              flush=True)
        r = run_load(endpoints[proto], results_ep, rate=rate, seconds=args.seconds, stream_prefix=f"over{proto}-",
                     **kw, protocol=proto)
        d = r.as_dict()
        d["rss_end_mib"] = _tree_rss_mib(server)
        after = saturation()
        d["capacity_fps"] = (before + after) / 2
        d["served_fps"] = d["ok_arrived_in_window"] / d["seconds"]  # served while overloaded, not a backlog after
        d["served_fraction"] = d["served_fps"] / d["capacity_fps"]
        rows.append((proto, d))
        before = after
    capacity = float(np.mean([s["achieved_fps"] for s in sats]))
    report["overload"] = {"factor": args.overload, "capacity_fps": capacity, "saturation": sats,
                          "rss_warm_mib": rss_warm, "runs": {p: d for p, d in rows}}
    sat_list = ", ".join(f"{x['achieved_fps']:.1f}" for x in sats)
    print(f"\nsaturation (v1.1, waiting for credit): {sat_list} "
          f"frames/s; server memory (whole process tree) after warm-up {rss_warm:.0f} MiB")
    print(f"{'producers':<10} {'offered/s':>9} {'sent/s':>8} {'served/s':>9} {'sat/s':>6} {'/ sat':>6} {'RSS end':>8} "
          f"{'RSS +%':>7} "
          f"{'sent':>8} {'camera-dropped':>15} {'ok':>7} {'dropped':>8} {'errors':>7} {'unanswered':>10} "
          f"{'producer CPU':>12}")
    for proto, d in rows:
        errors = sum(d["errors"].values())
        print(f"v{proto:<9} {d['offered_fps']:9.0f} {(d['sent'] - d['client_dropped']) / d['seconds']:8.0f} "
              f"{d['served_fps']:9.1f} {d['capacity_fps']:6.1f} {d['served_fraction']:6.3f} {d['rss_end_mib']:7.0f}M "
              f"{100 * (d['rss_end_mib'] / rss_warm - 1):+6.1f}% {d['sent']:8d} {d['client_dropped']:15d} "
              f"{d['ok']:7d} {d['dropped']:8d} {errors:7d} {d['unanswered']:10d} "
              f"{100 * d['producer_cpu_s'] / (d['seconds'] + args.warmup):11.0f}%")
    print("served/s: ok results that arrived during the run; producers run at nice 19 (cameras are other "
          "devices: their CPU must not come out of the server's share of this machine)")
    print("targets: served/sat >= 0.95 (v1.1) and >= 0.85 (v1); RSS within +10 % of its post-warm-up level")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0 if all(d["unanswered"] == 0 for _, d in rows) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    if args.rate < 0 or args.warmup < 0 or args.seconds <= 0:
        raise SystemExit("streampi bench: --rate and --warmup must be ≥ 0 and --seconds > 0")
    if args.shared_memory and args.protocol != "1.1":
        raise SystemExit("streampi bench: --shared-memory needs --protocol 1.1 (the rings come with the credit)")
    w, h = (int(v) for v in args.size.lower().split("x"))
    frames_spec = (args.images or "synthetic", (w, h), args.fmt)
    model_path = resolve_model(args.model)
    config: dict[str, Any] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "config": config,
                              "machine": {"arch": platform.machine(), "cores": len(usable_cores()),
                                          "python": platform.python_version(), "node": platform.node()},
                              "runtime": describe_runtime()}  # backend, versions, arch, kernels build
    print(f"runtime: {summary_line(report['runtime'])}")
    proc = None
    if args.connect:
        frames_ep, results_ep = args.connect.split(",")
        server_pid = args.server_pid
    else:
        if args.overload is not None:
            args.policy = "latest"
        serve_args = [str(model_path), "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                      "--credit-bind", "tcp://127.0.0.1:*",
                      "--threads", str(args.threads), "--max-batch", str(args.max_batch),
                      "--max-delay-ms", str(args.max_delay_ms), "--policy", args.policy]
        if args.workers:
            serve_args += ["--workers", str(args.workers)]
        proc, info = start_server(serve_args)
        frames_ep, results_ep, server_pid = info["bind"], info["publish"], proc.pid
        endpoints = {"1": info["bind"], "1.1": info["credit_bind"]}
        frames_ep = endpoints[args.protocol]
        report["server"] = {"backend": info["backend"], "workers": len(info["workers"]), "model": info["model"],
                            "sha256": info["sha256"]}
        print(f"server: {info['model']} on {info['backend']}, {len(info['workers'])} workers, policy {args.policy}, "
              f"max batch {args.max_batch}")
    try:
        if args.ceiling or (args.sweep and args.sweep_start is None):
            n = (report.get("server") or {}).get("workers") or args.workers or len(usable_cores())
            print(f"measuring the raw ceiling: {n} interpreters back to back …", flush=True)
            ceil_fps, invoke_ms = ceiling(model_path, n, min(5.0, args.seconds))
            report["ceiling"] = {"instances": n, "fps": ceil_fps, "invoke_p50_ms": invoke_ms}
            print(f"  ceiling {ceil_fps:.1f} frames/s (invoke p50 {invoke_ms:.2f} ms)")
            if args.ceiling:
                print(f"measuring the pipeline ceiling: {n} threads, kernel + invoke on a {args.size} RGB frame "
                      f"in memory …", flush=True)
                pc = pipeline_ceiling(model_path, n, min(5.0, args.seconds), (w, h))
                report["pipeline_ceiling"] = pc
                print(f"  pipeline ceiling {pc['fps']:.1f} frames/s (kernel p50 {pc['kernel_p50_ms']:.3f} ms, "
                      f"invoke p50 {pc['invoke_p50_ms']:.2f} ms)")

        if args.overload is not None:
            if proc is None:
                raise SystemExit("streampi bench --overload starts its own server (it needs both frame endpoints); "
                                 "drop --connect")
            return _overload(args, endpoints, results_ep, server_pid, frames_spec, report)

        def one_run(rate: float, label: str) -> tuple[dict, RunResult]:
            update, stop = _progress_factory(not args.no_progress, label)
            try:
                res = run_load(frames_ep, results_ep, rate=rate, seconds=args.seconds, producers=args.producers,
                               streams=args.streams, arrival=args.arrival, frames_spec=frames_spec,
                               max_frames=args.frames, server_pid=server_pid, progress=update, warmup=args.warmup,
                               protocol=args.protocol, shared_memory=args.shared_memory)
            finally:
                stop()
            d = res.as_dict()
            if d["producer_failures"]:
                print(f"{label}: WARNING: producer process(es) failed with exit codes {d['producer_failures']}; "
                      f"this run's figures are incomplete", flush=True)
            lat = d["latency_ms"]
            offered = f"{rate:.1f}/s" if rate else "saturation"
            print(f"{label}: offered {offered}, achieved {d['achieved_fps']:.1f}/s, ok {d['ok']}, dropped "
                  f"{d['dropped']}, errors {sum(d['errors'].values())}, p50 {lat['p50']:.2f} ms, "
                  f"p99 {lat['p99']:.2f} ms", flush=True)
            return d, res

        steps: list[dict] = []
        hist_for_cdf: LatencyHistogram
        if args.sweep:
            rate = args.sweep_start or 0.1 * report["ceiling"]["fps"]
            best = None
            for i in range(args.sweep_steps):
                d, res = one_run(rate, f"sweep step {i + 1}")
                steps.append(d)
                if d["latency_ms"]["p99"] <= args.p99_bound_ms and d["unanswered"] == 0 and d["dropped"] == 0:
                    if best is None or d["achieved_fps"] > best[0]["achieved_fps"]:
                        best = (d, res)
                saturated = d["achieved_fps"] < 0.9 * rate or d["latency_ms"]["p99"] > 4 * args.p99_bound_ms
                if saturated:
                    break
                rate *= args.sweep_factor
            # refine the knee: bisect between the best rate under the bound and the next step up
            lo = best[0]["offered_fps"] if best else None
            hi = min((s["offered_fps"] for s in steps if lo is not None and s["offered_fps"] > lo), default=None)
            for i in range(args.sweep_refine if lo is not None and hi is not None else 0):
                rate = (lo + hi) / 2
                d, res = one_run(rate, f"refine {i + 1}")
                steps.append(d)
                if d["latency_ms"]["p99"] <= args.p99_bound_ms and d["unanswered"] == 0 and d["dropped"] == 0:
                    lo = rate
                    if d["achieved_fps"] > best[0]["achieved_fps"]:
                        best = (d, res)
                else:
                    hi = rate
            steps.sort(key=lambda s: s["offered_fps"])
            report["sweep"] = steps
            report["knee"] = ({"achieved_fps": best[0]["achieved_fps"], "offered_fps": best[0]["offered_fps"],
                               "p99_ms": best[0]["latency_ms"]["p99"], "p99_bound_ms": args.p99_bound_ms}
                              if best else None)
            main, last = best if best else (steps[-1], res)
            hist_for_cdf = last.hist
        else:
            main, res = one_run(args.rate, "run")
            steps = [main]
            hist_for_cdf = res.hist
        report["run"] = main
        if args.ceiling:
            # the machine's speed drifts between minutes: measure both ceilings again after the
            # served runs and compare against the stronger of the two measurements of each
            n = report["ceiling"]["instances"]
            print("measuring both ceilings again after the runs …", flush=True)
            after_fps, _ = ceiling(model_path, n, min(5.0, args.seconds))
            pc_after = pipeline_ceiling(model_path, n, min(5.0, args.seconds), (w, h))
            for key, after in (("ceiling", after_fps), ("pipeline_ceiling", pc_after["fps"])):
                before = report[key]["fps"]
                report[key].update(fps_before=before, fps_after=after, fps=max(before, after))
            print(f"  raw ceiling {after_fps:.1f}, pipeline ceiling {pc_after['fps']:.1f} frames/s "
                  f"(used: the higher of before and after)")
        if "ceiling" in report:
            top = report["knee"]["achieved_fps"] if report.get("knee") else max(s["achieved_fps"] for s in steps)
            report["efficiency"] = top / report["ceiling"]["fps"]
            if "pipeline_ceiling" in report:
                report["efficiency_pipeline"] = top / report["pipeline_ceiling"]["fps"]
        if args.baseline:
            rate = main["offered_fps"] or main["achieved_fps"]  # at saturation: what the server served
            print(f"baseline (REQ/REP, OpenCV resize, one process) at {rate:.1f}/s …", flush=True)
            base = run_baseline(model_path, rate=rate, seconds=args.seconds, producers=args.producers,
                                arrival=args.arrival, frames_spec=frames_spec, max_frames=args.frames)
            report["baseline"] = base
            report["vs_baseline"] = {
                "throughput_ratio": main["achieved_fps"] / base["achieved_fps"] if base["achieved_fps"] else None,
                "p99_ratio": main["latency_ms"]["p99"] / base["latency_ms"]["p99"]}
            print(f"  baseline achieved {base['achieved_fps']:.1f}/s, p99 {base['latency_ms']['p99']:.2f} ms")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

    offered = f"{main['offered_fps']:.1f}" if main["offered_fps"] else "saturation"
    rows = [("offered / achieved (frames/s)", f"{offered} / {main['achieved_fps']:.1f}"),
            ("sent = ok + dropped + errors", f"{main['sent']} = {main['ok']} + {main['dropped']} + "
                                             f"{sum(main['errors'].values())}  (unanswered {main['unanswered']})"),
            ("latency p50 / p90 / p95 / p99 / max (ms)",
             " / ".join(f"{main['latency_ms'][p]:.2f}" for p in ("p50", "p90", "p95", "p99", "max")))]
    stage_names = {"infer_ms": "infer per frame (infer_ms / batch)", "infer_batch_ms": "infer per batch"}
    for k, v in main["stages_ms"].items():
        rows.append((f"stage {stage_names.get(k, k[:-3])} p50 / p99 (ms)", f"{v['p50']:.3f} / {v['p99']:.3f}"))
    if main["errors"]:
        rows.append(("errors by code", ", ".join(f"{k} {v}" for k, v in main["errors"].items())))
    if main["server_cpu_percent"] is not None:
        rows.append(("server CPU / RSS (workers included)",
                     f"{main['server_cpu_percent']:.0f} % / {main['server_rss_mib']:.0f} MiB"))
    cpu = main["cpu_ms_per_frame"]
    rows.append(("CPU ms per frame: server / producers / subscriber",
                 " / ".join("–" if cpu[k] is None else f"{cpu[k]:.2f}" for k in ("server", "producers", "subscriber"))))
    if report.get("knee"):
        rows.append((f"knee (p99 ≤ {args.p99_bound_ms:g} ms)", f"{report['knee']['achieved_fps']:.1f} frames/s"))
    if "ceiling" in report:
        c = report["ceiling"]
        drift = (f" (before {c['fps_before']:.1f}, after {c['fps_after']:.1f})" if "fps_after" in c else "")
        rows.append(("raw ceiling", f"{c['fps']:.1f} frames/s{drift}"))
        rows.append(("served / raw ceiling", f"{report['efficiency']:.3f}"))
    if "pipeline_ceiling" in report:
        c = report["pipeline_ceiling"]
        rows.append((f"pipeline ceiling (kernel + invoke, {args.size} RGB)",
                     f"{c['fps']:.1f} frames/s (before {c['fps_before']:.1f}, after {c['fps_after']:.1f})"))
        rows.append(("served / pipeline ceiling", f"{report['efficiency_pipeline']:.3f}"))
    if "vs_baseline" in report:
        vb = report["vs_baseline"]
        rows.append(("throughput / baseline", f"{vb['throughput_ratio']:.2f}"))
        rows.append(("p99 / baseline", f"{vb['p99_ratio']:.3f}"))
    print()
    _print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {args.json}")
    if args.png:
        title = (f"streampi {report.get('server', {}).get('model', args.model)}, {args.size} {args.fmt}, "
                 f"{report['machine']['arch']} × {report['machine']['cores']} cores, {report['date'][:10]}")
        plot(args.png, steps, hist_for_cdf, title)
        print(f"wrote {args.png}")
    return 0 if main["unanswered"] == 0 and not main["producer_failures"] else 1
