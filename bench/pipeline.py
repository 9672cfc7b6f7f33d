#!/usr/bin/env python3
"""End-to-end pipeline benchmark against the raw and pipeline ceilings, in one run.

    python bench/pipeline.py                       # MobileNetV2 int8, 640×480 RGB, N=2
    python bench/pipeline.py --seconds 20 --workers 2 --max-batch 4 --transport ipc

A fixed recipe over :mod:`streampi.tools.loadtest` (the one load generator; ``streampi bench``
offers the same pieces with every knob). Measures, on this machine, in this order:
  (a) the raw ceiling: N interpreters invoking back to back on ready tensors, one per core;
  (a') the pipeline ceiling: N threads, one per core, each running streampi's kernel on a
      frame already in memory plus invoke, back to back (what a perfect server could do);
  (b) end-to-end throughput at saturation: producer processes as fast as the server takes
      frames → `streampi serve` (policy `queue`, nothing dropped) → subscriber, measured
      after a warm-up, with the CPU per frame of the server's process tree (its workers
      included), the producers and the subscriber;
  (c) light load (30 % of (b)) on one stream: p50 end-to-end latency against one invoke;
  (d) the resident memory of the server and its worker processes (RSS summed);
  (e) ``--pairs``: short blocks of the pipeline ceiling and of saturation (wire, and shared
      memory with ``--shm``), alternating ABBA with the server alive and idle during the
      ceiling: each pair's ratio is taken seconds apart, which is what survives a machine
      whose speed drifts by tens of percent between minutes. The target is checked on the
      median of those ratios.
Prints a table with the ratios and writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from streampi.measure import (
    ceiling,
    pipeline_ceiling,
    usable_cores,
)
from streampi.model import resolve_model
from streampi.testing import start_server
from streampi.tools.loadtest import run_load

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v2_int8")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=4,
                    help="the server's --max-batch (default 4, as `streampi serve`): at saturation a worker "
                         "takes up to this many waiting frames in one hand-off")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--fmt", default="rgb", choices=["rgb", "jpeg"])
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--light", type=float, default=0.3, help="light load as a fraction of (b)")
    ap.add_argument("--transport", default="tcp", choices=["tcp", "ipc"],
                    help="tcp (loopback) or ipc (Unix sockets, for producers on the same host)")
    ap.add_argument("--shm", action="store_true",
                    help="also measure saturation and light load with producers that write raw frames into the "
                         "server's shared-memory rings (a camera on the server's machine), in the same run")
    ap.add_argument("--v1", action="store_true",
                    help="also measure saturation with v1 (PUSH) producers, in the same run, for comparison")
    ap.add_argument("--pairs", type=int, default=4, help="(e) interleaved ceiling/saturation pairs (0: none)")
    ap.add_argument("--pair-seconds", type=float, default=4.0, help="(e) measured seconds of each block")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pipeline.json")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    path = resolve_model(args.model)
    spec = ("synthetic", (w, h), args.fmt)

    print(f"machine: {platform.machine()}, {len(usable_cores())} usable cores, Python {platform.python_version()}")
    print(f"model {path.name}, {args.workers} workers, max batch {args.max_batch}, frames {args.size} {args.fmt}, "
          f"transport {args.transport}")
    print(f"(a) raw ceiling: {args.workers} interpreters invoking back to back for {args.seconds:g} s …", flush=True)
    ceil_fps, invoke_p50 = ceiling(path, args.workers, args.seconds)
    print(f"    {ceil_fps:.1f} frames/s; one invoke p50 {invoke_p50:.2f} ms", flush=True)
    print(f"(a') pipeline ceiling: {args.workers} threads, kernel + invoke on a {args.size} RGB frame …", flush=True)
    pc = pipeline_ceiling(path, args.workers, args.seconds, (w, h))
    print(f"    {pc['fps']:.1f} frames/s; kernel p50 {pc['kernel_p50_ms']:.3f} ms", flush=True)

    if args.transport == "ipc":
        tag = f"{os.getpid()}"
        endpoints = [f"ipc:///tmp/streampi-bench-{tag}-frames", f"ipc:///tmp/streampi-bench-{tag}-results",
                     f"ipc:///tmp/streampi-bench-{tag}-credit"]
    else:
        endpoints = ["tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*"]
    proc, info = start_server([str(path), "--bind", endpoints[0], "--publish", endpoints[1],
                               "--credit-bind", endpoints[2],
                               "--workers", str(args.workers), "--max-batch", str(args.max_batch),
                               "--policy", "queue", "--queue-size", "16"])
    try:
        print(f"(b) saturation: {args.producers} producer processes as fast as the server takes frames …", flush=True)
        sat = run_load(info["credit_bind"], info["publish"], rate=0, seconds=args.seconds, warmup=args.warmup,
                       producers=args.producers, streams=args.producers, arrival="fixed", frames_spec=spec,
                       server_pid=proc.pid, stream_prefix="sat").as_dict()
        cpu = sat["cpu_ms_per_frame"]
        print(f"    {sat['achieved_fps']:.1f} frames/s end to end; server RSS {sat['server_rss_mib']:.0f} MiB; CPU per "
              f"frame: server {cpu['server']:.2f} ms, producers {cpu['producers']:.2f} ms, subscriber "
              f"{cpu['subscriber']:.2f} ms", flush=True)
        sat_v1 = None
        if args.v1:
            print("(b') saturation with v1 (PUSH) producers …", flush=True)
            sat_v1 = run_load(info["bind"], info["publish"], rate=0, seconds=args.seconds, warmup=args.warmup,
                              producers=args.producers, streams=args.producers, arrival="fixed", frames_spec=spec,
                              server_pid=proc.pid, stream_prefix="satv1", protocol="1").as_dict()
            print(f"    {sat_v1['achieved_fps']:.1f} frames/s end to end, {sum(sat_v1['errors'].values())} errors "
                  f"{sat_v1['errors']}", flush=True)
        sat_shm = None
        if args.shm:
            print("(b'') saturation with producers writing into shared-memory rings …", flush=True)
            sat_shm = run_load(info["credit_bind"], info["publish"], rate=0, seconds=args.seconds, warmup=args.warmup,
                               producers=args.producers, streams=args.producers, arrival="fixed", frames_spec=spec,
                               server_pid=proc.pid, stream_prefix="satshm", shared_memory=True).as_dict()
            cpu_shm = sat_shm["cpu_ms_per_frame"]
            print(f"    {sat_shm['achieved_fps']:.1f} frames/s end to end ({sat_shm['shm_frames']} of "
                  f"{sat_shm['sent']} frames through the rings); CPU per frame: server {cpu_shm['server']:.2f} ms, "
                  f"producers {cpu_shm['producers']:.2f} ms, subscriber {cpu_shm['subscriber']:.2f} ms", flush=True)
        light_fps = max(1.0, args.light * sat["achieved_fps"])
        print(f"(c) light load: {light_fps:.1f} frames/s on one stream …", flush=True)
        light = run_load(info["credit_bind"], info["publish"], rate=light_fps, seconds=args.seconds, warmup=args.warmup,
                         producers=1, streams=1, arrival="fixed", frames_spec=spec, server_pid=proc.pid,
                         stream_prefix="light").as_dict()
        print("    stage p50 (ms): " + ", ".join(f"{k} {v['p50']:.3f}" for k, v in light["stages_ms"].items()))
        light_shm = None
        if args.shm:
            print(f"(c'') light load through shared memory: {light_fps:.1f} frames/s on one stream …", flush=True)
            light_shm = run_load(info["credit_bind"], info["publish"], rate=light_fps, seconds=args.seconds,
                                 warmup=args.warmup, producers=1, streams=1, arrival="fixed", frames_spec=spec,
                                 server_pid=proc.pid, stream_prefix="lightshm", shared_memory=True).as_dict()
            print("    stage p50 (ms): " + ", ".join(f"{k} {v['p50']:.3f}" for k, v in light_shm["stages_ms"].items()))
        pairs = []
        for i in range(args.pairs):
            def sat_block(shm: bool, tag: str, i: int = i) -> float:
                return run_load(info["credit_bind"], info["publish"], rate=0, seconds=args.pair_seconds, warmup=1.5,
                                producers=args.producers, streams=args.producers, arrival="fixed", frames_spec=spec,
                                server_pid=proc.pid, stream_prefix=f"p{i}{tag}", shared_memory=shm).achieved_fps
            blocks = ["ceiling", "wire"] + (["shm"] if args.shm else [])
            if i % 2:
                blocks.reverse()
            pair = {}
            for b in blocks:
                pair[b] = (pipeline_ceiling(path, args.workers, args.pair_seconds, (w, h))["fps"] if b == "ceiling"
                           else sat_block(b == "shm", b))
            pairs.append(pair)
            print(f"(e) pair {i + 1}: pipeline ceiling {pair['ceiling']:.1f}, saturation {pair['wire']:.1f} "
                  f"({pair['wire'] / pair['ceiling']:.3f})" + (f", shared memory {pair['shm']:.1f} "
                                                               f"({pair['shm'] / pair['ceiling']:.3f})"
                                                               if args.shm else "") + " frames/s", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)

    # the machine's speed drifts between minutes: both ceilings again, the stronger one counts
    print("(a'') both ceilings again after the served runs …", flush=True)
    ceil_after, _ = ceiling(path, args.workers, args.seconds)
    pc_after = pipeline_ceiling(path, args.workers, args.seconds, (w, h))
    print(f"    raw {ceil_after:.1f} (before {ceil_fps:.1f}), pipeline {pc_after['fps']:.1f} (before {pc['fps']:.1f}) "
          f"frames/s", flush=True)
    pc = {**pc, "fps_before": pc["fps"], "fps_after": pc_after["fps"], "fps": max(pc["fps"], pc_after["fps"])}
    ceil_before, ceil_fps = ceil_fps, max(ceil_fps, ceil_after)
    ratio, ratio_pipe = sat["achieved_fps"] / ceil_fps, sat["achieved_fps"] / pc["fps"]
    overhead = light["latency_ms"]["p50"] - invoke_p50
    rss = max(sat["server_rss_mib"] or 0, light["server_rss_mib"] or 0)
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cores": len(usable_cores()),
        "model": path.name, "workers": args.workers, "transport": args.transport, "max_batch": args.max_batch,
        "frame": f"{args.size} {args.fmt}", "ceiling_fps": ceil_fps, "ceiling_fps_before_after": [ceil_before, ceil_after], "invoke_p50_ms": invoke_p50,
        "pipeline_ceiling": pc, "saturation": sat, "saturation_v1": sat_v1, "light": light, "efficiency": ratio,
        "saturation_shm": sat_shm, "light_shm": light_shm,
        "efficiency_pipeline": ratio_pipe, "light_p50_minus_invoke_ms": overhead, "server_rss_mib": rss,
        "pairs": pairs,
    }
    print()
    print("| figure | value | target |")
    print("|---|---|---|")
    print(f"| (a) raw ceiling, {args.workers} interpreters (higher of before {ceil_before:.1f} / after "
          f"{ceil_after:.1f}) | {ceil_fps:.1f} frames/s | |")
    print(f"| (a') pipeline ceiling, {args.workers} × (kernel + invoke) (higher of before {pc['fps_before']:.1f} / "
          f"after {pc['fps_after']:.1f}) | {pc['fps']:.1f} frames/s | |")
    print(f"| (b) end to end at saturation | {sat['achieved_fps']:.1f} frames/s | |")
    print(f"| (b)/(a) | {ratio:.3f} | |")
    print(f"| (b)/(a') | {ratio_pipe:.3f} | ≥ 0.85 |")
    if sat_v1 is not None:
        print(f"| (b') v1 (PUSH) producers at saturation, / (a') | {sat_v1['achieved_fps']:.1f} frames/s, "
              f"{sat_v1['achieved_fps'] / pc['fps']:.3f} | |")
    print(f"| CPU ms per frame: server tree / producers / subscriber | {cpu['server']:.2f} / {cpu['producers']:.2f} / "
          f"{cpu['subscriber']:.2f} | |")
    print(f"| invoke p50 (one interpreter) | {invoke_p50:.2f} ms | |")
    print(f"| light load {light_fps:.0f} fps: e2e p50 / p99 | {light['latency_ms']['p50']:.2f} / "
          f"{light['latency_ms']['p99']:.2f} ms | |")
    print(f"| e2e p50 − invoke p50 | {overhead:.2f} ms | |")
    if sat_shm is not None and light_shm is not None:
        cs = sat_shm["cpu_ms_per_frame"]
        print(f"| (b'') shared-memory producers at saturation | {sat_shm['achieved_fps']:.1f} frames/s | |")
        print(f"| (b'')/(a') | {sat_shm['achieved_fps'] / pc['fps']:.3f} | ≥ 0.85 |")
        print(f"| shared memory, CPU ms per frame: server tree / producers / subscriber | {cs['server']:.2f} / "
              f"{cs['producers']:.2f} / {cs['subscriber']:.2f} | |")
        print(f"| shared memory, light load {light_fps:.0f} fps: e2e p50 / p99 | "
              f"{light_shm['latency_ms']['p50']:.2f} / {light_shm['latency_ms']['p99']:.2f} ms | |")
    print(f"| server RSS (workers included) | {rss:.0f} MiB | |")
    for key, label in (("wire", "(e) saturation / pipeline ceiling"), ("shm", "(e) shared memory / pipeline ceiling")):
        if pairs and key in pairs[0]:
            r = sorted(p[key] / p["ceiling"] for p in pairs)
            med = r[len(r) // 2] if len(r) % 2 else (r[len(r) // 2 - 1] + r[len(r) // 2]) / 2
            result[f"pairs_ratio_{key}"] = med
            print(f"| {label}, median of {len(r)} interleaved pairs (range) | **{med:.3f}** ({r[0]:.3f}–{r[-1]:.3f}) "
                  f"| ≥ 0.85 |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
