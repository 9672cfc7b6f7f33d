"""Soak: hours-long serving in minutes. A server with worker processes under ~80 % of its
capacity for --minutes, a worker killed (SIGKILL) every --kill-every seconds; prints and
plots throughput, latency p99 and memory over time, and checks the one promise: every frame
sent got exactly one answer (sent = ok + dropped + errors, nothing unanswered).

    python bench/soak.py --minutes 30 --kill-every 300 --png bench/out/soak.png

The capacity is measured first (saturation for a few seconds, same server); the load is
open loop (producer processes on a fixed schedule, ``streampi.tools.loadtest``'s producers).
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from streampi.client import Subscriber
from streampi.ctl import request
from streampi.testing import start_server
from streampi.tools.loadtest import producer_main


def memory(server_pid: int) -> dict[str, float]:
    """RSS and PSS (MiB) of the server and of its worker processes (the fork server's children)."""
    server = psutil.Process(server_pid)
    out = {"server_rss": server.memory_info().rss / 2**20, "server_pss": server.memory_full_info().pss / 2**20,
           "workers_rss": 0.0, "workers_pss": 0.0}
    for child in server.children(recursive=True):
        try:
            if child.name().startswith("streampi-w"):
                out["workers_rss"] += child.memory_info().rss / 2**20
                out["workers_pss"] += child.memory_full_info().pss / 2**20
        except psutil.Error:
            pass
    return out


def drive(info: dict, server_pid: int, *, rate: float, seconds: float, window: float, kill_every: float | None,
          producers: int, streams: int, frames_spec: tuple, tag: str, quiet: bool = False) -> dict:
    """Offer ``rate`` frames/s for ``seconds`` (open loop, producer processes), kill a worker
    every ``kill_every`` s, sample every ``window`` s; wait for every answer (bounded)."""
    names = [f"{tag}{i}" for i in range(streams)]
    groups = [names[i::producers] for i in range(producers)]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    sub = Subscriber(info["publish"], streams=names)
    time.sleep(0.5)
    start_at = time.time() + 2.0
    procs = [ctx.Process(target=producer_main, args=(info["credit_bind"], g, rate / len(groups), seconds, 0, "fixed",
                                                      2000 + i, frames_spec, start_at, q), daemon=True)
             for i, g in enumerate(groups)]
    for p in procs:
        p.start()
    codes: collections.Counter[str] = collections.Counter()
    seen: set[tuple[str, int]] = set()
    doubles = 0
    samples, window_lat, window_ok = [], [], 0
    next_sample = start_at + window
    next_kill = start_at + kill_every if kill_every else float("inf")
    kills, sent, reported, camera_dropped = [], 0, 0, 0
    deadline = start_at + seconds + 120
    while time.time() < deadline:
        now = time.time()
        if now >= next_kill and now < start_at + seconds:
            workers = request(info["control"], "workers")["workers"]
            victim = workers[len(kills) % len(workers)]
            os.kill(victim["pid"], signal.SIGKILL)
            t_kill = time.monotonic()
            while time.monotonic() - t_kill < 10:
                ws = request(info["control"], "workers")["workers"]
                if all(w["state"] == "ready" and w["pid"] != victim["pid"] for w in ws):
                    break
                time.sleep(0.005)
            kills.append({"at_s": now - start_at, "pid": victim["pid"], "back_s": time.monotonic() - t_kill})
            print(f"  t={now - start_at:6.0f} s  killed worker {victim['index']} (pid {victim['pid']}); "
                  f"{len(ws)} workers again after {kills[-1]['back_s']:.3f} s", flush=True)
            next_kill += kill_every
        if now >= next_sample and now < start_at + seconds + window:
            mem = memory(server_pid)
            lat = np.array(window_lat) if window_lat else np.array([np.nan])
            samples.append({"t_s": now - start_at, "ok_fps": window_ok / window,
                            "p50_ms": float(np.nanpercentile(lat, 50)), "p99_ms": float(np.nanpercentile(lat, 99)),
                            **mem})
            smp = samples[-1]
            if not quiet:
                print(f"  t={smp['t_s']:6.0f} s  {smp['ok_fps']:6.1f} ok/s  p99 {smp['p99_ms']:7.1f} ms  RSS server "
                      f"{smp['server_rss']:.0f} + workers {smp['workers_rss']:.0f} MiB", flush=True)
            window_lat, window_ok = [], 0
            next_sample += window
        while not q.empty():
            info = q.get()
            sent += info["sent"]
            camera_dropped += info["client_dropped"]  # v1.1: replaced at the producer, never sent
            reported += 1
        if reported == len(procs) and len(seen) >= sent - camera_dropped:
            break
        try:
            r = sub.recv(timeout=0.05)
        except TimeoutError:
            continue
        key = (r["stream"], r["seq"])
        if key in seen:
            doubles += 1
        seen.add(key)
        if r["ok"]:
            codes["ok"] += 1
            window_ok += 1
            window_lat.append((time.time() - r["ts"]) * 1e3)
        else:
            codes[r["error"]["code"]] += 1
    for p in procs:
        p.join(5)
    sub.close()
    return {"offered_fps": rate, "seconds": seconds, "sent": sent, "camera_dropped": camera_dropped,
            "answered": sum(codes.values()), "unanswered": sent - camera_dropped - len(seen), "answered_twice": doubles, "codes": dict(codes), "kills": kills,
            "samples": samples, "producers_reported": reported == len(procs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v2_int8")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--kill-every", type=float, default=300.0, help="seconds between worker kills")
    ap.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity to offer")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--window", type=float, default=10.0, help="seconds per sample")
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    frames_spec = ("synthetic", size, "rgb")
    proc, info = start_server([args.model, "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--workers", str(args.workers), "--policy", "latest", "--log-level", "warning"])
    try:
        print(f"server pid {proc.pid}, workers {[w['pid'] for w in info['workers']]}", flush=True)
        # capacity: ok results per second while overloaded (policy latest: the excess is dropped,
        # so nothing piles up), from the windows after the first
        sat = drive(info, proc.pid, rate=2000, seconds=8, window=2, kill_every=None, producers=args.producers,
                    streams=args.streams, frames_spec=frames_spec, tag="sat", quiet=True)
        capacity = float(np.median([s["ok_fps"] for s in sat["samples"][1:4]]))
        rate = capacity * args.load
        print(f"capacity {capacity:.0f} frames/s; offering {rate:.0f} frames/s for {args.minutes:g} min, "
              f"a worker killed every {args.kill_every:g} s", flush=True)
        report = drive(info, proc.pid, rate=rate, seconds=args.minutes * 60, window=args.window,
                       kill_every=args.kill_every, producers=args.producers, streams=args.streams,
                       frames_spec=frames_spec, tag="soak")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except Exception:
            proc.kill()
            code = None
    report.update(model=args.model, minutes=args.minutes, capacity_fps=capacity, server_exit_code=code)
    samples, kills, codes = report["samples"], report["kills"], collections.Counter(report["codes"])
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    ok_fps = [s["ok_fps"] for s in samples[1:-1]] or [0]
    rss = [s["server_rss"] + s["workers_rss"] for s in samples] or [0]
    errors = {k: v for k, v in codes.items() if k not in ("ok", "dropped")}
    print(f"sent {report['sent']} = replaced at the camera {report['camera_dropped']} + ok {codes['ok']} + dropped "
          f"{codes['dropped']} + errors {sum(errors.values())} "
          f"{errors}; unanswered {report['unanswered']}; answered twice {report['answered_twice']}")
    print(f"throughput min/median {min(ok_fps):.0f}/{np.median(ok_fps):.0f} ok/s; "
          f"p99 median {np.nanmedian([s['p99_ms'] for s in samples]):.1f} ms, max "
          f"{np.nanmax([s['p99_ms'] for s in samples]):.1f} ms; RSS (server + workers) first {rss[0]:.0f} MiB, "
          f"last {rss[-1]:.0f} MiB, max {max(rss):.0f} MiB; back to {args.workers} workers after "
          f"{max((k['back_s'] for k in kills), default=0):.3f} s at worst")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.png:
        plot(args.png, report, args)
    ok = report["unanswered"] == 0 and report["answered_twice"] == 0 and code == 0 and report["producers_reported"]
    return 0 if ok else 1


def plot(path: Path, report: dict, args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    samples, kills = report["samples"], report["kills"]
    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, [s["ok_fps"] for s in samples])
    axes[0].set_ylabel("ok frames/s")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [s["p99_ms"] for s in samples], label="p99")
    axes[1].plot(t, [s["p50_ms"] for s in samples], label="p50")
    axes[1].set_ylabel("latency ms")
    axes[1].legend()
    axes[2].plot(t, [s["server_rss"] for s in samples], label="server RSS")
    axes[2].plot(t, [s["workers_rss"] for s in samples], label="workers RSS (sum)")
    axes[2].set_ylabel("MiB")
    axes[2].set_xlabel("minutes")
    axes[2].set_ylim(bottom=0)
    axes[2].legend()
    for ax in axes:
        for k in kills:
            ax.axvline(k["at_s"] / 60, color="red", alpha=0.3)
    axes[0].set_title(f"soak: {report['model']}, {report['offered_fps']:.0f} frames/s offered "
                      f"({args.load:.0%} of capacity); a worker killed at each red line")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
