#!/usr/bin/env python3
"""What a pause costs the next bit of work on this machine: encoding one 640×480 RGB frame
message (streampi.protocol.encode_frame, a few µs back to back), timed right after a pause
of 0, 0.5, 2 and 10 ms spent sleeping or spinning.

    python bench/coldstart.py [--runs 200]

On a machine shared with other tenants (a VM), caches and the core's state are lost while a
thread waits, so every hop of a lightly loaded server (producer, server, worker, subscriber:
each wakes from a wait) costs far more than the same hop under load. This is the figure that
tells such a machine from a quiet one before its light-load latencies are read.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from streampi import protocol


def after_pause(frame: np.ndarray, pause_s: float, spin: bool, runs: int) -> float:
    """p50 µs of one encode_frame right after a pause."""
    took = []
    for i in range(runs):
        if spin:
            end = time.perf_counter() + pause_s
            while time.perf_counter() < end:
                pass
        elif pause_s:
            time.sleep(pause_s)
        t0 = time.perf_counter()
        protocol.encode_frame("cam", i, "rgb", frame, frame.shape[1], frame.shape[0], ts=1.0)
        took.append(time.perf_counter() - t0)
    return float(np.median(took)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    print("| pause before the encode | after sleeping, µs | after spinning, µs |\n|---|---:|---:|")
    for pause in (0.0, 0.0005, 0.002, 0.01):
        print(f"| {pause * 1e3:g} ms | {after_pause(frame, pause, False, args.runs):.1f} | "
              f"{after_pause(frame, pause, True, args.runs):.1f} |")


if __name__ == "__main__":
    main()
