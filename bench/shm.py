#!/usr/bin/env python3
"""Frames over the wire, through the server's shared-memory ring, and captured into the ring,
interleaved.

    python bench/shm.py                      # MobileNetV2 int8, 640×480 RGB, 2 workers, 4 rounds
    python bench/shm.py --rounds 6 --frames 300 --transport ipc

One `streampi serve` in its own process (policy queue, light path off so that every frame
takes the same path) and, in this process, one producer at a time sending one frame at a time
(send, wait for its result, pause ``--gap-ms``): blocks over the wire, through the ring, and
captured into the ring (``Producer.frame_buffer``: send copies nothing) rotate, so that the
machine's drift between minutes hits all alike. Every frame is first "captured" (copied from
the source frame: into a reused array, or into the lent slot), as a camera writes each frame
somewhere before it is sent, so the producer's CPU compares what each way adds. Per block: the
end-to-end p50 (send to result, measured here), the server tree's CPU per frame (its workers
included, from /proc) and this process's CPU per frame (the producer and the subscriber).
Prints the medians over rounds and the per-round ratios to the wire's; writes
bench/results/shm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from lightload import tree_cpu_s  # bench/, this script's folder

from streampi.client import Producer, Subscriber
from streampi.model import resolve_model
from streampi.synthetic import ShapesGenerator
from streampi.testing import start_server, wait_subscribed

ROOT = Path(__file__).resolve().parents[1]

MODES = ("wire", "ring", "in_place")


def block(credit_ep: str, sub: Subscriber, server_pid: int, frame: np.ndarray, mode: str, frames: int,
          gap_s: float, stream: str, warm: int = 20) -> dict:
    """One frame at a time; every wait bounded."""
    lat = []
    shm = mode != "wire"
    captured = np.empty_like(frame)
    with Producer(credit_ep, stream=stream, shared_memory=shm, when_full="wait", send_timeout=10) as cam:
        for i in range(warm + frames):
            if i == warm:
                cpu0, mine0 = tree_cpu_s(server_pid), time.process_time()
            t0 = time.perf_counter()
            into = cam.frame_buffer(frame.shape[1], frame.shape[0]) if mode == "in_place" else captured
            np.copyto(into, frame)  # the capture
            seq = cam.send(into, timeout=10)
            while True:
                r = sub.recv(timeout=10)
                if r.get("stream") == stream and r.get("seq") == seq:
                    break
            if not r.get("ok"):
                raise RuntimeError(f"frame answered {r.get('error')}")
            if i >= warm:
                lat.append((time.perf_counter() - t0) * 1e3)
            time.sleep(gap_s)
        server_cpu, mine = tree_cpu_s(server_pid) - cpu0, time.process_time() - mine0
        stats = cam.stats()
    if shm and stats["shm_frames"] < warm + frames:
        raise RuntimeError(f"only {stats['shm_frames']} frames went through the ring: {stats['shared_memory']}")
    if mode == "in_place" and stats["shm_in_place"] < warm + frames - 1:
        raise RuntimeError(f"only {stats['shm_in_place']} frames were captured into the ring")
    return {"p50_ms": float(np.median(lat)), "p90_ms": float(np.percentile(lat, 90)),
            "server_cpu_ms": 1e3 * server_cpu / frames, "client_cpu_ms": 1e3 * mine / frames,
            "shared_memory": stats["shared_memory"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v2_int8")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--frames", type=int, default=200, help="frames per block")
    ap.add_argument("--gap-ms", type=float, default=5.0)
    ap.add_argument("--transport", choices=["tcp", "ipc"], default="tcp", help="of the sockets (both kinds)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shm.json")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    frame = np.ascontiguousarray(ShapesGenerator(seed=0).frame(w, h)[0])
    if args.transport == "ipc":
        tag = os.getpid()
        eps = [f"ipc:///tmp/streampi-shm-{tag}-{n}" for n in ("f", "r", "c")]
    else:
        eps = ["tcp://127.0.0.1:*"] * 3
    path = resolve_model(args.model)
    print(f"machine: {platform.machine()}, load average {os.getloadavg()[0]:.2f}; model {path.name}; "
          f"{args.workers} workers; {args.size} rgb, one frame at a time; sockets over {args.transport}")
    proc, info = start_server([str(path), "--workers", str(args.workers), "--policy", "queue", "--light-threads", "0",
                               "--bind", eps[0], "--publish", eps[1], "--credit-bind", eps[2]])
    rounds = []
    try:
        with Subscriber(info["publish"]) as sub:
            wait_subscribed(sub, info["bind"])
            for r in range(args.rounds):
                order = MODES[r % 3:] + MODES[:r % 3]
                row = {}
                for mode in order:
                    row[mode] = block(info["credit_bind"], sub, proc.pid, frame, mode, args.frames,
                                      args.gap_ms / 1e3, f"r{r}{mode}")
                rounds.append(row)
                print(f"round {r + 1} ({row['ring']['shared_memory']}): " + "; ".join(
                    f"{m} e2e p50 {row[m]['p50_ms']:.2f} ms, server CPU/frame {row[m]['server_cpu_ms']:.2f} ms, "
                    f"client {row[m]['client_cpu_ms']:.3f} ms" for m in MODES), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    print("\n| figure (medians over rounds) | wire | ring | captured into the ring | ring / wire | "
          "captured / wire |\n|---|---:|---:|---:|---:|---:|")
    for key, label in (("p50_ms", "e2e p50, ms"), ("p90_ms", "e2e p90, ms"),
                       ("server_cpu_ms", "server tree CPU per frame, ms"),
                       ("client_cpu_ms", "producer (capture included) + subscriber CPU per frame, ms")):
        med = {m: float(np.median([x[m][key] for x in rounds])) for m in MODES}
        ratios = [float(np.median([x[m][key] / x["wire"][key] for x in rounds])) for m in ("ring", "in_place")]
        print(f"| {label} | {med['wire']:.3f} | {med['ring']:.3f} | {med['in_place']:.3f} | {ratios[0]:.3f} | "
              f"{ratios[1]:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
