#!/usr/bin/env python3
"""Transport cost of 640×480 frames PUSH → PULL: tcp://127.0.0.1 against ipc://, in one run.

    python bench/transport.py [--seconds 2] [--rounds 3] [--size 640x480]

What a local producer pays to hand a frame to a server on the same machine, and what the
server pays to take it: a `streampi.client.Producer` (the camera side, default settings:
the frame is copied into the message) sends as fast as the socket takes frames to a plain
PULL socket that receives them the way the server does (no copy out of ZeroMQ, nothing
decoded), each in its own process. For each of RGB (raw 640×480×3) and JPEG (quality 90)
frames, the two transports alternate, round after round, so that drift in the machine's load
hits both alike. Prints frames/s, MB/s and CPU per frame (sender, receiver, both) as the
median over the rounds, and the ratio ipc / tcp; writes bench/results/transport.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

END = b"end"  # the payload of the sender's last frame: its timed part is over


def make_frame(fmt: str, w: int, h: int):
    from streampi.synthetic import ShapesGenerator

    rgb, _ = ShapesGenerator(seed=3).frame(w, h)
    rgb = np.ascontiguousarray(rgb)
    if fmt == "jpeg":
        import simplejpeg
        return simplejpeg.encode_jpeg(rgb, quality=90)
    return rgb


def receiver(endpoint: str, warm: int, ready: mp.Queue, out: mp.Queue, timeout_s: float) -> None:
    """PULL: skip ``warm`` frames, then count frames and bytes until END; report time and CPU."""
    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    if endpoint.startswith("tcp://"):
        port = pull.bind_to_random_port(endpoint)
        endpoint = f"{endpoint}:{port}"
    else:
        pull.bind(endpoint)
    ready.put(endpoint)
    n = nbytes = seen = 0
    t0 = cpu0 = None
    try:
        while True:
            if not pull.poll(int(timeout_s * 1000)):
                out.put({"error": f"no frame for {timeout_s} s"})
                return
            parts = pull.recv_multipart(copy=False)
            if len(parts[-1]) == len(END) and parts[-1].bytes == END:
                break
            seen += 1
            if seen == warm:
                t0, cpu0 = time.perf_counter(), time.process_time()
            elif seen > warm:
                n += 1
                nbytes += sum(len(p.buffer) for p in parts)
        if t0 is None:
            out.put({"error": "the sender ended before the warm-up did"})
            return
        out.put({"frames": n, "bytes": nbytes, "seconds": time.perf_counter() - t0,
                 "cpu_s": time.process_time() - cpu0})
    finally:
        pull.close()
        ctx.term()


def sender(endpoint: str, fmt: str, size: tuple[int, int], warm: int, seconds: float, max_frames: int,
           out: mp.Queue) -> None:
    """A streampi Producer at full speed: ``warm`` frames, then ``seconds`` (or ``max_frames``)."""
    import zmq

    from streampi.client import Producer

    frame = make_frame(fmt, *size)
    kind = "jpeg" if fmt == "jpeg" else "rgb"
    with Producer(endpoint, stream="t", sndhwm=8, protocol_version="1") as p:  # the raw transport: PUSH → PULL
        for _ in range(warm):
            p.send(frame, fmt=kind, timeout=30)
        cpu0, t0, n = time.process_time(), time.perf_counter(), 0
        while n < max_frames and time.perf_counter() - t0 < seconds:
            p.send(frame, fmt=kind, timeout=30)
            n += 1
        cpu = time.process_time() - cpu0
        p.send(END, fmt="jpeg", timeout=30)  # the receiver decodes nothing: it knows this payload
    zmq.Context.instance().term()
    out.put({"frames": n, "cpu_s": cpu})


def trial(transport: str, fmt: str, size: tuple[int, int], seconds: float, max_frames: int, warm: int) -> dict:
    ctx = mp.get_context("spawn")
    ready, rq, sq = ctx.Queue(), ctx.Queue(), ctx.Queue()
    if transport == "ipc":
        endpoint = f"ipc://{tempfile.gettempdir()}/streampi-transport-{os.getpid()}-{time.monotonic_ns()}"
    else:
        endpoint = "tcp://127.0.0.1"
    recv = ctx.Process(target=receiver, args=(endpoint, warm, ready, rq, 30.0))
    recv.start()
    try:
        bound = ready.get(timeout=60)
        send = ctx.Process(target=sender, args=(bound, fmt, size, warm, seconds, max_frames, sq))
        send.start()
        r = rq.get(timeout=seconds + 120)
        s = sq.get(timeout=60)
        send.join(30)
        recv.join(30)
    finally:
        for p in (recv, locals().get("send")):
            if p is not None and p.is_alive():
                p.terminate()
                p.join(5)
        if transport == "ipc":
            Path(endpoint[len("ipc://"):]).unlink(missing_ok=True)
    if "error" in r:
        raise RuntimeError(f"{transport} {fmt}: {r['error']}")
    if r["frames"] != s["frames"]:
        raise RuntimeError(f"{transport} {fmt}: sent {s['frames']} timed frames, received {r['frames']}")
    return {"fps": r["frames"] / r["seconds"], "mb_s": r["bytes"] / r["seconds"] / 1e6,
            "frame_bytes": r["bytes"] / max(1, r["frames"]), "frames": r["frames"],
            "send_cpu_us": 1e6 * s["cpu_s"] / max(1, s["frames"]), "recv_cpu_us": 1e6 * r["cpu_s"] / max(1, r["frames"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed part of each trial")
    ap.add_argument("--max-frames", type=int, default=50_000, help="bound on the frames of one trial")
    ap.add_argument("--warm", type=int, default=50, help="frames sent before the timed part")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of tcp and ipc per format")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "transport.json")
    args = ap.parse_args()
    if args.seconds <= 0 or args.rounds < 1 or args.max_frames < 1 or args.warm < 1:
        raise SystemExit("transport.py: --seconds > 0, --rounds, --max-frames and --warm ≥ 1")
    w, h = (int(v) for v in args.size.lower().split("x"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    trials: dict[tuple[str, str], list[dict]] = {}
    for rnd in range(args.rounds):
        for fmt in ("rgb", "jpeg"):
            order = ("tcp", "ipc") if rnd % 2 == 0 else ("ipc", "tcp")  # neither always goes first
            for transport in order:
                t = trial(transport, fmt, (w, h), args.seconds, args.max_frames, args.warm)
                trials.setdefault((fmt, transport), []).append(t)
                print(f"  round {rnd + 1} {fmt:4} {transport}: {t['fps']:8.0f} frames/s, send "
                      f"{t['send_cpu_us']:6.1f} µs, receive {t['recv_cpu_us']:6.1f} µs per frame", flush=True)

    def med(fmt: str, transport: str, key: str) -> float:
        return float(np.median([t[key] for t in trials[(fmt, transport)]]))

    print()
    print(f"| frame ({args.size}) | transport | frames/s | MB/s | send CPU µs/frame | receive CPU µs/frame "
          f"| both µs/frame |")
    print("|---|---|---:|---:|---:|---:|---:|")
    summary = {}
    for fmt in ("rgb", "jpeg"):
        for transport in ("tcp", "ipc"):
            row = {k: med(fmt, transport, k) for k in ("fps", "mb_s", "frame_bytes", "send_cpu_us", "recv_cpu_us")}
            row["both_cpu_us"] = row["send_cpu_us"] + row["recv_cpu_us"]
            summary[f"{fmt}/{transport}"] = row
            label = f"RGB {row['frame_bytes'] / 1e3:.0f} kB" if fmt == "rgb" else f"JPEG {row['frame_bytes'] / 1e3:.0f} kB"
            print(f"| {label} | {transport} | {row['fps']:.0f} | {row['mb_s']:.0f} | {row['send_cpu_us']:.1f} | "
                  f"{row['recv_cpu_us']:.1f} | {row['both_cpu_us']:.1f} |")
    print()
    for fmt in ("rgb", "jpeg"):
        tcp, ipc = summary[f"{fmt}/tcp"], summary[f"{fmt}/ipc"]
        print(f"{fmt}: ipc / tcp throughput {ipc['fps'] / tcp['fps']:.2f}, CPU per frame "
              f"{ipc['both_cpu_us'] / tcp['both_cpu_us']:.2f}")
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.machine(), "cores": os.cpu_count(),
              "size": args.size, "seconds": args.seconds, "rounds": args.rounds, "median": summary,
              "trials": {f"{f}/{t}": v for (f, t), v in trials.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
