"""``streampi inspect MODEL``: what a .tflite is, whether and how fast it runs here, what to do.

Exit codes: 0 the model is servable, 1 it loads but has a blocking problem (an unresolved
op, an input the kernels cannot feed), 2 it is not a usable model file at all.
"""

from __future__ import annotations

import argparse
import sys

from ._argtypes import BACKENDS, delegate, frame_size, positive_float, positive_int, run_and_report, size_bytes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .tflite file or a bundled model's name")
    p.add_argument("--bench", action="store_true", help="measure latency, throughput; recommend a configuration")
    p.add_argument("--profile", action="store_true",
                   help="time each op alone, show the top ops and which ops XNNPACK takes (and its partitions)")
    p.add_argument("--runs", type=positive_int, default=50, help="invokes per latency figure (--bench, --profile)")
    p.add_argument("--seconds", type=positive_float, default=1.0, help="seconds per throughput figure (--bench)")
    p.add_argument("--memory", type=size_bytes, help="memory budget for the server, e.g. 2G: will it fit?")
    p.add_argument("--max-frame-memory", type=size_bytes, default=256 * 2**20, metavar="SIZE",
                   help="with --memory: the server's --max-frame-memory, the frames it may hold (default 256M)")
    p.add_argument("--frame-size", type=frame_size, default=(640, 480),
                   help="the frames you usually send, WxH (default 640x480)")
    p.add_argument("--delegate", type=delegate, help="PATH[:key=value,...] a delegate library to try")
    p.add_argument("--backend", choices=BACKENDS, help="only this backend")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from ..model import resolve_model
    from ..tools.inspect import InspectOptions, inspect, print_report

    path = resolve_model(args.model)
    progress = (lambda msg: print(f"… {msg}", file=sys.stderr, flush=True)) if args.bench or args.profile \
        else (lambda msg: None)
    options = InspectOptions(backend=args.backend, delegate=args.delegate, bench=args.bench, runs=args.runs,
                             seconds=args.seconds, memory=args.memory, frame_size=args.frame_size,
                             max_frame_memory=args.max_frame_memory, profile=args.profile)
    rep = run_and_report(args, "inspect", path, lambda: inspect(path, options, progress), print_report)
    if rep is None:
        return 2
    blocking = any(f["severity"] == "problem" for f in rep["findings"])
    return 1 if blocking or not any(r.get("loads") for r in rep["runtime"].values()) else 0
