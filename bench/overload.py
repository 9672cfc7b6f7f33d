"""10x overload for 60 s, policy latest, v1.1 producers (credit) and v1 producers (PUSH), same run.

A recipe over ``streampi bench --overload``: it measures the server's saturation
throughput (the higher of v1.1 producers waiting for credit and v1 producers blocking on
ZeroMQ's queue), then offers ``--factor`` x that from one producer process sending to 4
streams, first over v1.1, then over v1, and prints served/s as a fraction of saturation, the
server's memory (its whole process tree, workers included) after warm-up and at the end of
each run, and the counts: sent, replaced at the camera (v1.1), ok, dropped at the server,
errors, unanswered.

    python bench/overload.py                       # MobileNetV2 int8, 640x480 RGB, 60 s per run
    python bench/overload.py --seconds 10 --model shapes_int8
"""

from __future__ import annotations

import argparse
import sys

from streampi.cli import main

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factor", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--model", default="mobilenet_v2_int8")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--fmt", default="rgb")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", default="bench/out/overload.json")
    a = ap.parse_args()
    argv = ["bench", "--overload", str(a.factor), "--seconds", str(a.seconds), "--warmup", "2", "--model", a.model,
            "--size", a.size, "--fmt", a.fmt, "--producers", "1", "--streams", "4", "--no-progress",
            "--json", a.json]
    if a.workers:
        argv += ["--workers", str(a.workers)]
    sys.exit(main(argv))
