#!/usr/bin/env python3
"""What handing a frame to a worker costs: a thread (what streampi does) against a process.

    python bench/handoff.py [--size 640x480] [--n 2000]

Thread: the worker receives a reference to the bytes ZeroMQ already holds (queue.SimpleQueue).
Process: the frame crosses to the worker over a ZeroMQ ipc:// socket, the usual way to feed a
pool of interpreter processes. Both measured as a round trip with a small reply, per frame.

Then what streampi's worker processes actually pay (``--models``): the server writes the model
input into the worker's shared-memory slot and the worker process copies it into its
interpreter, invokes and writes the outputs back; the hand-off is that round trip less the
invoke, measured with a real worker process on each bundled model.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import threading
import time

import numpy as np
import zmq


def _echo_process(endpoint: str) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    s.connect(endpoint)
    while True:
        msg = s.recv(copy=False)
        if len(msg) == 0:
            break
        s.send(b"ok")
    s.close()
    ctx.term()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--models", default="shapes_int8,mobilenet_v2_int8", help="bundled models for the worker slot")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8).tobytes()

    inbox: queue.SimpleQueue = queue.SimpleQueue()
    outbox: queue.SimpleQueue = queue.SimpleQueue()

    def worker() -> None:
        while (item := inbox.get()) is not None:
            outbox.put(len(item))

    t = threading.Thread(target=worker)
    t.start()
    for _ in range(100):
        inbox.put(frame)
        outbox.get()
    t0 = time.perf_counter()
    for _ in range(args.n):
        inbox.put(frame)
        outbox.get()
    thread_us = (time.perf_counter() - t0) / args.n * 1e6
    inbox.put(None)
    t.join()

    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    endpoint = "ipc:///tmp/streampi-handoff-bench"
    s.bind(endpoint)
    p = mp.get_context("spawn").Process(target=_echo_process, args=(endpoint,))
    p.start()
    for _ in range(100):
        s.send(frame, copy=False)
        s.recv()
    t0 = time.perf_counter()
    for _ in range(args.n):
        s.send(frame, copy=False)
        s.recv()
    proc_us = (time.perf_counter() - t0) / args.n * 1e6
    s.send(b"")
    p.join(10)
    s.close()
    ctx.term()
    print(f"frame {w}x{h} RGB ({len(frame) / 1024:.0f} KiB), {args.n} round trips")
    print(f"| hand-off | µs per frame |\n|---|---|\n| thread (reference) | {thread_us:.1f} |\n"
          f"| process over ipc:// | {proc_us:.1f} |\n| ratio process/thread | {proc_us / thread_us:.1f} |")
    print("\n| streampi worker process, per batch of 1 | run p50 µs | invoke p50 µs | hand-off p50 µs |\n|---|---|---|---|")
    for name in args.models.split(","):
        run_us, invoke_us = slot_round_trips(name, args.n // 4)
        print(f"| {name} | {run_us:.0f} | {invoke_us:.0f} | {run_us - invoke_us:.0f} |")


def slot_round_trips(model: str, n: int) -> tuple[float, float]:
    """p50 µs of a worker process's whole batch round trip and of its invoke alone."""
    import os

    from streampi import bundled_model
    from streampi.serving import ServerOptions
    from streampi.serving.workers import ProcessRunner, WorkerSlot, WorkerSpec, _fork_server

    spec = WorkerSpec.from_model(bundled_model(model), ServerOptions())
    slot = WorkerSlot(0, spec, isolation="process", cores=[0])
    runner = ProcessRunner(spec, 0, [0], slot._block_fd, slot._in, slot._out, _fork_server())
    os.sched_setaffinity(0, {0})  # the slot thread and its worker share a core, as in the server
    try:
        for _ in range(50):
            runner.run(1)
        runs, invokes = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            _, invoke_ms = runner.run(1)
            runs.append((time.perf_counter() - t0) * 1e6)
            invokes.append(invoke_ms * 1e3)
    finally:
        runner.stop()
    return float(np.median(runs)), float(np.median(invokes))


if __name__ == "__main__":
    main()
