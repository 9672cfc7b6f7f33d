"""``streampi ctl``: ask a running server over its control socket; ``health`` is the probe that
systemd, scripts and monitors call (exit code 0 only when every worker is up and none is stuck)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..ctl import COMMANDS, request
from ._argtypes import add_curve_client


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("model", nargs="?", help="reload: the model to serve (default: the served file, read again)")
    p.add_argument("--connect", default="tcp://127.0.0.1:5557", help="the server's control endpoint")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    p.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    add_curve_client(p)


def run(args: argparse.Namespace) -> int:
    try:
        model = args.model
        if model and Path(model).exists():  # the server may run in another directory
            model = str(Path(model).resolve())
        extra = {"model": model} if args.command == "reload" and model else {}
        timeout = max(args.timeout, 130.0) if args.command == "reload" else args.timeout  # workers load the model
        reply = request(args.connect, args.command, timeout, curve_secret=args.curve_secret,
                        curve_server=args.curve_server, **extra)
    except TimeoutError as exc:
        print(f"streampi: error: {exc}", file=sys.stderr)
        return 2
    if not reply.get("ok"):  # (a failed reload: the old model keeps serving)
        print(f"streampi: error: {reply.get('error')}", file=sys.stderr)
        return 2
    if args.json or args.command == "stats":
        print(json.dumps(reply, indent=2, sort_keys=True))
    elif args.command == "reload":
        m, was = reply["model"], reply["previous"]
        print(f"now serving {m['name']} ({m['sha256']}), was {was['name']} ({was['sha256']})")
    else:
        if args.command == "health":
            print("healthy" if reply["healthy"] else "UNHEALTHY")
        for w in reply["workers"]:
            held = ", ".join(f"{s}/{q}" for s, q in w["holding"]) or "-"
            print(f"w{w['index']}  pid {w['pid']}  gen {w['generation']}  {w['state']:<8} cores {w['cores']}  "
                  f"frames {w['frames_done']}  restarts {w['restarts']}  holding {held}")
        for n in reply.get("nodes", []):  # remote nodes (docs/cluster.md)
            if n["state"] == "missing":
                print(f"node {n['node']}  {n['address'] or '?'}  gen {n['generation']}  MISSING for "
                      f"{n['missing_s']:.1f} s: {n['why']}")
            else:
                print(f"node {n['node']}  {n['address'] or '?'}  gen {n['generation']}  key {n['key'] or '-'}  "
                      f"credit {n['credit']}/{n['credit_max']}  batch {n['batch_ms']:.1f} ms  "
                      f"frames {n['frames_done']}  workers {' '.join(n['worker_states'])}")
        if args.command == "health":
            for problem in reply.get("problems", []):
                print(f"  {problem}")
    if args.command == "health":
        return 0 if reply["healthy"] else 1
    return 0
