"""``streampi demo``: server, producer and subscriber on a bundled model for a few seconds, then a summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._argtypes import DefaultsHelpFormatter, frame_size, positive_int

FORMATTER = DefaultsHelpFormatter


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="shapes_int8")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--fps", type=float, default=30.0, help="frames per second per stream")
    p.add_argument("--streams", type=positive_int, default=2)
    p.add_argument("--size", type=frame_size, default=(320, 240))
    p.add_argument("--json", type=Path, help="also write the summary here")
    p.add_argument("--picture", default="demo-detections.png",
                   help="detectors: write frames with their detections drawn here ('' for none)")


def run(args: argparse.Namespace) -> int:
    from ..tools.demo import run_demo

    s = run_demo(args.model, args.seconds, args.fps, args.streams, args.size, picture=args.picture or None)
    if args.json:
        args.json.write_text(json.dumps(s, indent=2))
    healthy = s["unanswered"] == 0 and s["server_exit_code"] == 0 and s["ok"] > 0
    return 0 if healthy else 1
