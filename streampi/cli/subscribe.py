"""``streampi subscribe``: print the results a server publishes, one line each (or JSON)."""

from __future__ import annotations

import argparse
import json

from ._argtypes import add_curve_client


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", default="tcp://127.0.0.1:5556")
    p.add_argument("--stream", action="append", default=[], help="only these streams (repeatable)")
    p.add_argument("--count", type=int, default=0, help="stop after N results")
    p.add_argument("--json", action="store_true", help="print each result as JSON (without the raw outputs)")
    add_curve_client(p)


def format_result(r: dict) -> str:
    t = r.get("timing", {})
    head = f"{r['stream']:>10} {str(r.get('seq')):>7}"
    if not r["ok"]:
        return f"{head}  ERROR {r['error']['code']}: {r['error']['message']}"
    from ..results import summarize

    best = summarize(r)
    line = f"{head}  {best:<24} total {t.get('total_ms', 0):6.2f} ms  infer {t.get('infer_ms', 0):6.2f} ms  " \
           f"batch {r.get('batch', '-')} worker {r.get('worker', '-')}"
    if r.get("node"):  # run on a remote node (docs/cluster.md): which one, and what the link added
        line += f" node {r['node']}"
        if t.get("hop_ms") is not None:
            line += f" hop {t['hop_ms']:.2f} ms"
    return line


def run(args: argparse.Namespace) -> int:
    from ..client import Subscriber

    n = 0
    with Subscriber(args.connect, streams=args.stream, curve_secret=args.curve_secret,
                    curve_server=args.curve_server) as sub:
        try:
            for r in sub:
                if args.json:
                    print(json.dumps({k: v for k, v in r.items() if k != "outputs"}), flush=True)
                else:
                    print(format_result(r), flush=True)
                n += 1
                if args.count and n >= args.count:
                    break
        except KeyboardInterrupt:
            pass
    return 0
