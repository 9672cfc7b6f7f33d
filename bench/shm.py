#!/usr/bin/env python3
"""Frames over the wire against frames through the server's shared-memory ring, interleaved.

    python bench/shm.py                      # MobileNetV2 int8, 640×480 RGB, 2 workers, 4 rounds
    python bench/shm.py --rounds 6 --frames 300 --transport ipc

One `streampi serve` in its own process (policy queue, light path off so that every frame
takes the same path) and, in this process, one producer at a time sending one frame at a time
(send, wait for its result, pause ``--gap-ms``): blocks over the wire and through the ring
alternate, ABBA, so that the machine's drift between minutes hits both alike. Per block: the
end-to-end p50 (send to result, measured here), the server tree's CPU per frame (its workers
included, from /proc) and this process's CPU per frame (the producer and the subscriber).
Prints the medians over rounds and the per-round ratios ring / wire; writes
bench/results/shm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightload import tree_cpu_s  # noqa: E402  (bench/ is this script's folder)

from streampi.client import Producer, Subscriber  # noqa: E402
from streampi.model import resolve_model  # noqa: E402
from streampi.synthetic import ShapesGenerator  # noqa: E402
from streampi.testing import start_server, wait_subscribed  # noqa: E402


def block(credit_ep: str, sub: Subscriber, server_pid: int, frame: np.ndarray, shm: bool, frames: int,
          gap_s: float, stream: str, warm: int = 20) -> dict:
    """One frame at a time; every wait bounded."""
    lat = []
    with Producer(credit_ep, stream=stream, shared_memory=shm, when_full="wait", send_timeout=10) as cam:
        for i in range(warm + frames):
            if i == warm:
                cpu0, mine0 = tree_cpu_s(server_pid), time.process_time()
            t0 = time.perf_counter()
            seq = cam.send(frame, timeout=10)
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
                order = (False, True) if r % 2 == 0 else (True, False)
                row = {}
                for shm in order:
                    row["ring" if shm else "wire"] = block(info["credit_bind"], sub, proc.pid, frame, shm,
                                                           args.frames, args.gap_ms / 1e3, f"r{r}{int(shm)}")
                rounds.append(row)
                print(f"round {r + 1}: e2e p50 wire {row['wire']['p50_ms']:.2f} ring {row['ring']['p50_ms']:.2f} ms; "
                      f"server CPU/frame wire {row['wire']['server_cpu_ms']:.2f} ring {row['ring']['server_cpu_ms']:.2f} "
                      f"ms; client CPU/frame wire {row['wire']['client_cpu_ms']:.3f} ring "
                      f"{row['ring']['client_cpu_ms']:.3f} ms ({row['ring']['shared_memory']})", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    print("\n| figure (medians over rounds) | wire | ring | ring / wire (median of per-round ratios) |")
    print("|---|---:|---:|---:|")
    for key, label in (("p50_ms", "e2e p50, ms"), ("p90_ms", "e2e p90, ms"),
                       ("server_cpu_ms", "server tree CPU per frame, ms"),
                       ("client_cpu_ms", "producer + subscriber CPU per frame, ms")):
        a = float(np.median([x["wire"][key] for x in rounds]))
        b = float(np.median([x["ring"][key] for x in rounds]))
        ratio = float(np.median([x["ring"][key] / x["wire"][key] for x in rounds]))
        print(f"| {label} | {a:.3f} | {b:.3f} | {ratio:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
