#!/usr/bin/env python3
"""End-to-end pipeline benchmark against the raw interpreter ceiling, in one run.

    python bench/pipeline.py                       # MobileNetV2-shaped int8, 640×480 RGB, N=2
    python bench/pipeline.py --seconds 20 --workers 2 --max-batch 4

Measures, on this machine, in this order:
  (a) the raw ceiling: N interpreter instances invoking back to back on ready tensors
      (one pinned to each core, as the server's workers are);
  (b) end-to-end throughput at saturation: producer processes → `streampi serve` (its own
      process, policy `queue`, so nothing is dropped) → subscriber;
  (c) light load (30 % of (b)): p50 end-to-end latency (send → result received) against the
      p50 invoke time of one interpreter;
  (d) the resident memory of the server process and its worker processes (RSS summed).
Prints a table with the ratios and writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streampi.bench import ceiling  # noqa: E402
from streampi.client import Producer, Subscriber  # noqa: E402
from streampi.measure import usable_cores  # noqa: E402
from streampi.model import resolve_model  # noqa: E402
from streampi.testing import start_server  # noqa: E402


def _produce(endpoint: str, stream: str, size: tuple[int, int], fps: float, seconds: float, out: mp.Queue) -> None:
    """One producer process: open loop at ``fps`` (0: as fast as the socket takes them)."""
    w, h = size
    frame = np.random.default_rng(hash(stream) % 2**32).integers(0, 256, (h, w, 3), np.uint8)
    sent = 0
    cpu0 = time.process_time()
    with Producer(endpoint, stream=stream, sndhwm=8, zero_copy=True) as p:  # the frame never changes
        t0 = time.time()
        while (now := time.time()) - t0 < seconds:
            if fps > 0:
                due = t0 + sent / fps
                if due > now:
                    time.sleep(due - now)
                p.send(frame, ts=due)  # latency counts from the scheduled time
            else:
                p.send(frame)
            sent += 1
    import zmq
    zmq.Context.instance().term()  # every zero-copy frame sent before the buffer goes
    out.put((sent, time.process_time() - cpu0))


def drive(frames_ep: str, results_ep: str, producers: int, size, fps_each: float, seconds: float,
          warmup: float, server_pid: int) -> dict:
    """Run producers for warmup + seconds; measure over the last ``seconds``."""
    sub = Subscriber(results_ep)
    time.sleep(0.3)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_produce, args=(frames_ep, f"b{i}", size, fps_each, warmup + seconds, q))
             for i in range(producers)]
    for p in procs:
        p.start()
    t_start = time.time()
    lat, infer, ok, errs = [], [], 0, 0
    stages: dict[str, list] = {k: [] for k in ("queue_ms", "pre_ms", "infer_ms", "post_ms", "total_ms")}
    deadline = t_start + warmup + seconds + 30
    window = (t_start + warmup, t_start + warmup + seconds)
    finished = 0
    sent, producer_cpu = 0, 0.0
    import psutil
    server = psutil.Process(server_pid)
    cpu_mark: dict[str, float] = {}
    sub_cpu0 = time.process_time()
    while time.time() < deadline:
        now = time.time()
        if "start" not in cpu_mark and now >= window[0]:
            cpu_mark["start"] = sum(server.cpu_times()[:2])
        if "end" not in cpu_mark and now >= window[1]:
            cpu_mark["end"] = sum(server.cpu_times()[:2])
        try:
            r = sub.recv(timeout=0.5)
        except TimeoutError:
            if finished == producers and time.time() > window[1] + 2:
                break
            while not q.empty():
                n, c = q.get()
                sent, producer_cpu, finished = sent + n, producer_cpu + c, finished + 1
            continue
        now = time.time()
        if not r["stream"].startswith("b"):
            continue
        if window[0] <= now <= window[1]:
            if r["ok"]:
                ok += 1
                lat.append((now - r["ts"]) * 1e3)
                infer.append(r["timing"]["infer_ms"] / r["batch"])
                for k, v in stages.items():
                    v.append(r["timing"].get(k, 0.0))
                stages.setdefault("transport_ms", []).append(lat[-1] - r["timing"]["total_ms"])
            else:
                errs += 1
    for p in procs:
        p.join(10)
    while not q.empty():
        n, c = q.get()
        sent, producer_cpu = sent + n, producer_cpu + c
    sub_cpu = time.process_time() - sub_cpu0
    sub.close()
    total_time = warmup + seconds
    lat_a = np.array(lat) if lat else np.array([np.nan])
    return {"fps": ok / seconds, "ok": ok, "errors": errs, "sent_total": sent,
            "latency_ms": {p: float(np.percentile(lat_a, p)) for p in (50, 90, 99)},
            "infer_ms_p50_in_server": float(np.median(infer)) if infer else None,
            "stages_p50_ms": {k: float(np.median(v)) for k, v in stages.items() if v},
            "cpu_ms_per_frame": {
                "server": (cpu_mark.get("end", 0) - cpu_mark.get("start", 0)) * 1e3 / max(ok, 1),
                "producers": producer_cpu * 1e3 / max(sent, 1),
                "subscriber": sub_cpu * 1e3 / max(sent, 1) if total_time else None}}


def rss_mb(pid: int) -> float:
    import psutil
    server = psutil.Process(pid)  # and its worker processes (children of its fork server)
    return sum(p.memory_info().rss for p in (server, *server.children(recursive=True))) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v2_int8")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=1)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--light", type=float, default=0.3, help="light load as a fraction of (b)")
    ap.add_argument("--transport", default="tcp", choices=["tcp", "ipc"],
                    help="tcp (loopback) or ipc (Unix sockets, for producers on the same host)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pipeline.json")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    path = resolve_model(args.model)

    print(f"machine: {platform.machine()}, {len(usable_cores())} usable cores, Python {platform.python_version()}")
    print(f"model {path.name}, {args.workers} workers, max batch {args.max_batch}, frames {args.size} RGB, "
          f"transport {args.transport}")
    print(f"(a) raw ceiling: {args.workers} interpreters invoking back to back for {args.seconds:g} s …", flush=True)
    ceil_fps, invoke_p50 = ceiling(path, args.workers, args.seconds, args.max_batch)
    print(f"    {ceil_fps:.1f} frames/s; one invoke p50 {invoke_p50:.2f} ms", flush=True)

    if args.transport == "ipc":
        tag = f"{os.getpid()}"
        endpoints = [f"ipc:///tmp/streampi-bench-{tag}-frames", f"ipc:///tmp/streampi-bench-{tag}-results"]
    else:
        endpoints = ["tcp://127.0.0.1:*", "tcp://127.0.0.1:*"]
    proc, info = start_server([str(path), "--bind", endpoints[0], "--publish", endpoints[1],
                               "--workers", str(args.workers), "--max-batch", str(args.max_batch),
                               "--policy", "queue", "--queue-size", "16"])
    try:
        print(f"(b) saturation: {args.producers} producer processes as fast as the server takes frames …", flush=True)
        sat = drive(info["bind"], info["publish"], args.producers, size, 0, args.seconds, args.warmup, proc.pid)
        mem_sat = rss_mb(proc.pid)
        cpu = sat["cpu_ms_per_frame"]
        print(f"    {sat['fps']:.1f} frames/s end to end; server RSS {mem_sat:.0f} MiB; CPU per frame: server "
              f"{cpu['server']:.2f} ms, producers {cpu['producers']:.2f} ms, subscriber {cpu['subscriber']:.2f} ms",
              flush=True)
        light_fps = max(1.0, args.light * sat["fps"])
        print(f"(c) light load: {light_fps:.1f} frames/s on one stream …", flush=True)
        light = drive(info["bind"], info["publish"], 1, size, light_fps, args.seconds, args.warmup, proc.pid)
        mem = rss_mb(proc.pid)
        print("    stage p50 (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in light["stages_p50_ms"].items()))
    finally:
        proc.terminate()
        proc.wait(30)

    ratio = sat["fps"] / ceil_fps
    overhead = light["latency_ms"][50] - invoke_p50
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cores": len(usable_cores()),
        "model": path.name, "workers": args.workers, "transport": args.transport, "max_batch": args.max_batch, "frame": args.size,
        "ceiling_fps": ceil_fps, "invoke_p50_ms": invoke_p50, "saturation": sat, "light": light,
        "efficiency": ratio, "light_p50_minus_invoke_ms": overhead, "server_rss_mib": max(mem, mem_sat),
    }
    print()
    print("| figure | value | target |")
    print("|---|---|---|")
    print(f"| (a) ceiling, {args.workers} interpreters | {ceil_fps:.1f} frames/s | |")
    print(f"| (b) end to end at saturation | {sat['fps']:.1f} frames/s | |")
    print(f"| (b)/(a) | {ratio:.3f} | ≥ 0.85 |")
    print(f"| invoke p50 (one interpreter) | {invoke_p50:.2f} ms | |")
    print(f"| light load {light_fps:.0f} fps: e2e p50 / p99 | {light['latency_ms'][50]:.2f} / "
          f"{light['latency_ms'][99]:.2f} ms | |")
    print(f"| e2e p50 − invoke p50 | {overhead:.2f} ms | ≤ 1 ms |")
    print(f"| server RSS (workers included) | {result['server_rss_mib']:.0f} MiB | |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
