#!/usr/bin/env python3
"""What CurveZMQ costs on 640×480 RGB frames: throughput and CPU with and without it, one run.

    python bench/curve.py [--frames 400] [--seconds 8] [--rounds 2]

(a) transport: a PUSH and a PULL socket on tcp://127.0.0.1 in this process move N frames of
    640×480×3 bytes as fast as they can; frames/s, MB/s and CPU ms per frame (this process,
    ZeroMQ's I/O threads included);
(b) end to end: producer → ``streampi serve`` (its own process, policy ``queue``) → subscriber,
    for S seconds at saturation; results/s and the server process's CPU ms per frame.
Plain and CURVE runs alternate (A B A B ...) so that drift between minutes hits both alike;
the table gives the best of the rounds and the ratio CURVE / plain.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import zmq

from streampi.auth import apply_client, keygen
from streampi.client import Producer, Subscriber
from streampi.testing import start_server

ROOT = Path(__file__).resolve().parents[1]

W, H = 640, 480


def make_keys(root: Path) -> dict[str, Path]:
    allowed = root / "allowed"
    keys: dict[str, Path] = {"allowed": allowed}
    keys["server"], keys["server_secret"] = keygen(root, "server")
    for name in ("cam", "viewer"):
        keys[name], _ = keygen(allowed, name)
        keys[name + "_secret"] = root / f"{name}.key_secret"
        (allowed / f"{name}.key_secret").rename(keys[name + "_secret"])
    return keys


def transport(frames: int, keys: dict | None) -> dict:
    """Move ``frames`` frames PUSH → PULL over loopback TCP; wall time and process CPU."""
    from streampi.auth import CurveServer

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    curve = None
    if keys:
        curve = CurveServer.from_files(keys["server_secret"], keys["allowed"])
        curve.start(ctx)
        curve.apply(pull)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 8)
    if keys:
        apply_client(push, keys["cam_secret"], keys["server"])
    push.connect(f"tcp://127.0.0.1:{port}")
    payload = np.random.default_rng(0).integers(0, 256, W * H * 3, np.uint8).tobytes()
    # one frame through first: the handshake is not what is measured
    push.send(payload)
    assert pull.poll(10_000), "no handshake"
    pull.recv()

    def send() -> None:
        for _ in range(frames):
            push.send(payload, copy=False)

    cpu0, t0 = time.process_time(), time.perf_counter()
    sender = threading.Thread(target=send)
    sender.start()
    got = 0
    deadline = time.monotonic() + 120
    while got < frames and time.monotonic() < deadline:
        if pull.poll(1000):
            pull.recv(copy=False)
            got += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    sender.join(30)
    push.close(0)
    pull.close(0)
    if curve:
        curve.stop()
    ctx.term()
    return {"frames": got, "fps": got / wall, "mbps": got * len(payload) / wall / 1e6, "cpu_ms": cpu / got * 1e3}


def end_to_end(seconds: float, keys: dict | None) -> dict:
    args = ["--workers", "2", "--policy", "queue", "--bind", "tcp://127.0.0.1:0", "--publish", "tcp://127.0.0.1:0"]
    prod_kw: dict = {}
    sub_kw: dict = {}
    if keys:
        args += ["--curve-secret", str(keys["server_secret"]), "--curve-clients", str(keys["allowed"])]
        prod_kw = {"curve_secret": keys["cam_secret"], "curve_server": keys["server"]}
        sub_kw = {"curve_secret": keys["viewer_secret"], "curve_server": keys["server"]}
    proc, info = start_server(args)
    try:
        server = psutil.Process(proc.pid)
        frame = np.random.default_rng(1).integers(0, 256, (H, W, 3), np.uint8)
        with Subscriber(info["publish"], streams=["bench"], **sub_kw) as sub, \
                Producer(info["credit_bind"], stream="bench", sndhwm=8, **prod_kw) as prod:
            for _ in range(100):  # until the subscription has reached the server
                prod.send(frame, timeout=10)
                try:
                    sub.recv(timeout=0.3)
                    break
                except TimeoutError:
                    continue
            while True:  # drain
                try:
                    sub.recv(timeout=0.5)
                except TimeoutError:
                    break
            stop = threading.Event()
            sent = [0]

            def produce() -> None:
                while not stop.is_set():
                    try:
                        prod.send(frame, timeout=0.5)
                        sent[0] += 1
                    except TimeoutError:
                        pass

            cpu0 = sum(server.cpu_times()[:2])
            t0 = time.perf_counter()
            thread = threading.Thread(target=produce)
            thread.start()
            got = 0
            while time.perf_counter() - t0 < seconds:
                try:
                    sub.recv(timeout=1)
                    got += 1
                except TimeoutError:
                    pass
            wall = time.perf_counter() - t0
            cpu = sum(server.cpu_times()[:2]) - cpu0
            stop.set()
            thread.join(10)
        return {"results": got, "fps": got / wall, "server_cpu_ms": cpu / max(got, 1) * 1e3}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=400, help="frames per transport run")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per end-to-end run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-server", action="store_true", help="transport only")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, pyzmq {zmq.__version__}, "
          f"libzmq {zmq.zmq_version()}, frames {W}x{H} RGB ({W * H * 3} bytes)")
    with tempfile.TemporaryDirectory() as tmp:
        keys = make_keys(Path(tmp))
        t: dict[str, list] = {"plain": [], "curve": []}
        e: dict[str, list] = {"plain": [], "curve": []}
        for r in range(args.rounds):
            for mode in ("plain", "curve"):
                t[mode].append(transport(args.frames, keys if mode == "curve" else None))
                x = t[mode][-1]
                print(f"round {r} transport  {mode:<5} {x['fps']:8.1f} frames/s {x['mbps']:8.1f} MB/s "
                      f"{x['cpu_ms']:6.2f} CPU ms/frame", flush=True)
            if not args.no_server:
                for mode in ("plain", "curve"):
                    e[mode].append(end_to_end(args.seconds, keys if mode == "curve" else None))
                    x = e[mode][-1]
                    print(f"round {r} end-to-end {mode:<5} {x['fps']:8.1f} results/s "
                          f"{x['server_cpu_ms']:6.2f} server CPU ms/frame", flush=True)
    bt = {m: max(t[m], key=lambda x: x["fps"]) for m in t}
    print(f"\ntransport, best of {args.rounds}: plain {bt['plain']['fps']:.1f} frames/s "
          f"({bt['plain']['cpu_ms']:.2f} CPU ms/frame), CURVE {bt['curve']['fps']:.1f} frames/s "
          f"({bt['curve']['cpu_ms']:.2f} CPU ms/frame): throughput x{bt['curve']['fps'] / bt['plain']['fps']:.2f}, "
          f"CPU per frame x{bt['curve']['cpu_ms'] / bt['plain']['cpu_ms']:.2f}, "
          f"+{bt['curve']['cpu_ms'] - bt['plain']['cpu_ms']:.2f} ms per frame")
    if not args.no_server:
        be = {m: max(e[m], key=lambda x: x["fps"]) for m in e}
        print(f"end to end, best of {args.rounds}: plain {be['plain']['fps']:.1f} results/s "
              f"({be['plain']['server_cpu_ms']:.2f} server CPU ms/frame), CURVE {be['curve']['fps']:.1f} results/s "
              f"({be['curve']['server_cpu_ms']:.2f} server CPU ms/frame): "
              f"throughput x{be['curve']['fps'] / be['plain']['fps']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
