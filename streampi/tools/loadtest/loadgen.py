"""Open-loop load: producer processes on a fixed schedule, and one run measured end to end.

Load is open loop: every producer process computes its send schedule in advance (fixed
interval or Poisson arrivals) and never waits for results. Each frame carries its
*scheduled* send time in ``ts``; latency is measured from that time to the result's
arrival, so a server that stalls cannot hide the stall by slowing the senders down (no
coordinated omission).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...client import Producer, Subscriber
from .histogram import LatencyHistogram

STAGES = ("queue_ms", "pre_ms", "infer_ms", "post_ms")


def make_frames(source: str, size: tuple[int, int], fmt: str, n: int = 16, seed: int = 0) -> list[tuple[Any, str]]:
    """A small pool of (payload, fmt) to cycle through: ``n`` frames of ``source`` (spread over a
    folder; synthetic ones of ``size`` in ``fmt``), held in memory so sending costs no reading."""
    from ...sources import open_source

    with open_source(source, size=size, fmt=fmt, seed=seed) as frames:
        return [(f.data, f.fmt) for f in frames.sample(n)]


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
def producer_main(endpoint: str, streams: list[str], rate: float, seconds: float, max_frames: int, arrival: str,
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
    # a fixed frame pool: zero copy is safe; linger=None: what ZeroMQ still holds when the run ends
    # must reach the server (bounded by run_load's join)
    prods = [Producer(endpoint, stream=s, sndhwm=8 if saturate else 1000, zero_copy=True, protocol_version=protocol,
                      when_full="wait" if saturate else None, shared_memory=shared_memory, linger=None)
             for s in streams]
    import zmq
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


def tree_cpu_s(proc: Any) -> dict[int, float]:
    """CPU seconds (user + system) of a process and all its descendants, by pid: the server's
    worker processes are children of a fork-server child, not of the server itself."""
    out = {}
    for p in (proc, *proc.children(recursive=True)):
        try:
            out[p.pid] = sum(p.cpu_times()[:2])
        except Exception:  # noqa: BLE001 - it ended between the listing and the read
            continue
    return out


def tree_rss_mib(proc: Any) -> float:
    total = 0
    for p in (proc, *proc.children(recursive=True)):
        try:
            total += p.memory_info().rss
        except Exception:  # noqa: BLE001 - it ended between the listing and the read
            continue
    return total / 2**20


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
            "producer_cpu_s": self.producer_cpu_s, "server_cpu_s": self.server_cpu_s,
            "subscriber_cpu_s": self.subscriber_cpu_s,
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
    procs = [ctx.Process(target=producer_main, args=(frames_ep, g, rate / producers, warmup + seconds, per_frames,
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
                cpu0 = tree_cpu_s(server)
        if res.subscriber_cpu_s is None and sub_cpu0 is not None and now >= t_end:
            res.subscriber_cpu_s = time.process_time() - sub_cpu0
            if cpu0 is not None:
                cpu1 = tree_cpu_s(server)
                res.server_cpu_s = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())
                res.server_rss_mib = tree_rss_mib(server)
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
            cpu1 = tree_cpu_s(server)
            res.server_cpu_s = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())
            res.server_rss_mib = tree_rss_mib(server)
    return res
