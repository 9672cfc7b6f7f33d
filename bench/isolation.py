"""Worker processes against worker threads, same model, same load, one run.

For each isolation (alternating, ``--rounds`` times, so that drift on a shared machine hits
both alike): saturation throughput (policy ``latest``, offered far above capacity: the excess
is dropped, so ok/s is the capacity), light-load latency p50/p99, CPU per ok frame of the
server *and its worker processes*, and the memory of each process (RSS, and PSS: what a
2 GB Pi really pays when workers share the interpreter's pages).

    python bench/isolation.py --rounds 2 --seconds 6
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import numpy as np
import psutil

from streampi.testing import start_server
from streampi.tools.loadtest import run_load, tree_cpu_s


def tree_cpu(pid: int) -> float:
    return sum(tree_cpu_s(psutil.Process(pid)).values())


def tree_memory(pid: int) -> dict:
    server = psutil.Process(pid)
    out = {"server": {"rss": server.memory_info().rss / 2**20, "pss": server.memory_full_info().pss / 2**20},
           "workers": []}
    for child in server.children(recursive=True):
        try:
            name = child.name()
            if name.startswith("streampi-w"):
                out["workers"].append({"name": name, "rss": child.memory_info().rss / 2**20,
                                       "pss": child.memory_full_info().pss / 2**20})
            elif "forkserver" in " ".join(child.cmdline()):
                out["forkserver"] = {"rss": child.memory_info().rss / 2**20, "pss": child.memory_full_info().pss / 2**20}
        except psutil.Error:
            pass
    out["total_pss"] = out["server"]["pss"] + sum(w["pss"] for w in out["workers"]) + \
        out.get("forkserver", {}).get("pss", 0.0)
    return out


def one(isolation: str, args: argparse.Namespace) -> dict:
    proc, info = start_server([args.model, "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--workers", str(args.workers), "--policy", "latest", "--isolation", isolation,
                               "--log-level", "warning"])
    spec = ("synthetic", (640, 480), "rgb")
    try:
        kw = dict(producers=args.producers, streams=4, arrival="fixed", frames_spec=spec)
        run_load(info["credit_bind"], info["publish"], rate=args.light_rate, seconds=2, stream_prefix="warm", **kw)
        light = run_load(info["credit_bind"], info["publish"], rate=args.light_rate, seconds=args.seconds,
                         stream_prefix="light", **kw)
        cpu0 = tree_cpu(proc.pid)
        sat = run_load(info["credit_bind"], info["publish"], rate=args.overload_rate, seconds=args.seconds,
                       stream_prefix="sat", **kw)
        cpu = tree_cpu(proc.pid) - cpu0
        mem = tree_memory(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lat = light.hist.summary()
    return {"isolation": isolation, "saturation_fps": sat.ok / sat.seconds, "light_p50_ms": lat["p50"],
            "light_p99_ms": lat["p99"], "cpu_ms_per_frame": 1e3 * cpu / max(1, sat.ok + sat.dropped),
            "memory": mem, "unanswered": light.sent - light.answered + sat.sent - sat.answered}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v2_int8")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--light-rate", type=float, default=40.0)
    ap.add_argument("--overload-rate", type=float, default=2500.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    runs = []
    for r in range(args.rounds):
        for iso in (("thread", "process") if r % 2 == 0 else ("process", "thread")):
            res = one(iso, args)
            runs.append(res)
            print(f"round {r + 1} {iso:<7}: saturation {res['saturation_fps']:6.1f} ok/s, light p50 "
                  f"{res['light_p50_ms']:.2f} ms p99 {res['light_p99_ms']:.2f} ms, CPU {res['cpu_ms_per_frame']:.2f} "
                  f"ms/frame, PSS total {res['memory']['total_pss']:.0f} MiB", flush=True)

    def med(iso: str, key: str) -> float:
        return float(np.median([r[key] for r in runs if r["isolation"] == iso]))

    print(f"\n{args.model}, {args.workers} workers, 640x480 RGB, medians of {args.rounds} rounds\n")
    print("| figure | thread | process | process / thread |")
    print("|---|---:|---:|---:|")
    for key, label in (("saturation_fps", "saturation ok frames/s"), ("light_p50_ms", "light-load p50 ms"),
                       ("light_p99_ms", "light-load p99 ms"), ("cpu_ms_per_frame", "CPU ms per frame (all processes)")):
        t, p = med("thread", key), med("process", key)
        print(f"| {label} | {t:.2f} | {p:.2f} | {p / t:.3f} |")
    last = {r["isolation"]: r["memory"] for r in runs}
    t, p = last["thread"], last["process"]
    print(f"| server RSS / PSS MiB | {t['server']['rss']:.0f} / {t['server']['pss']:.0f} | "
          f"{p['server']['rss']:.0f} / {p['server']['pss']:.0f} | |")
    for w in p["workers"]:
        print(f"| {w['name']} RSS / PSS MiB | – | {w['rss']:.0f} / {w['pss']:.0f} | |")
    if "forkserver" in p:
        print(f"| fork server RSS / PSS MiB | – | {p['forkserver']['rss']:.0f} / {p['forkserver']['pss']:.0f} | |")
    print(f"| all processes, PSS MiB | {t['total_pss']:.0f} | {p['total_pss']:.0f} | {p['total_pss'] / t['total_pss']:.2f} |")
    print(f"\nlight-load p50 difference: {med('process', 'light_p50_ms') - med('thread', 'light_p50_ms'):+.2f} ms; "
          f"unanswered frames in all runs: {sum(r['unanswered'] for r in runs)}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
