#!/usr/bin/env python3
"""Saturation through the default client, for several server source trees in alternating rounds.

    python bench/saturation_ab.py --tree before=/tmp/a --tree after=/tmp/b --rounds 6

Each ``--tree NAME=DIR`` is a built streampi source tree whose server is started with
``PYTHONPATH=DIR`` (policy ``queue``, 2 workers, max batch 4, ``--queue-size 16``); the
producers (``--producers`` processes sending ``--streams`` streams through
:class:`~streampi.client.Producer`, v1.1, as fast as credit allows), the subscriber and the
pipeline ceiling are this process's streampi. Rounds alternate the trees' order; each round
measures the ceiling (3 s) and then the served run. Prints frames/s, the ratio to the
ceiling and the CPU per frame of the server's process tree, the producers and the subscriber
(CPU per frame survives a shared machine's swings better than frames/s), and their medians.
"""
import argparse
import json
import os
import signal
import statistics

from streampi.measure import pipeline_ceiling
from streampi.model import resolve_model
from streampi.testing import start_server
from streampi.tools.loadtest import run_load


def one(tree, a, tag):
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = tree
    try:
        proc, info = start_server(["mobilenet_v2_int8", "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                                   "--workers", "2", "--max-batch", "4", "--queue-size", "16", "--policy", "queue"])
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    try:
        spec = ("synthetic", (640, 480), "rgb")
        run_load(info["credit_bind"], info["publish"], rate=0, seconds=1.5, producers=1, streams=1, arrival="fixed",
                 frames_spec=spec, stream_prefix="warm")
        r = run_load(info["credit_bind"], info["publish"], rate=0, seconds=a.seconds, warmup=1.5, producers=a.producers,
                     streams=a.streams, arrival="fixed", frames_spec=spec, server_pid=proc.pid,
                     stream_prefix=f"s{tag}").as_dict()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    c = r["cpu_ms_per_frame"]
    return {"fps": r["achieved_fps"], "server": c["server"], "producers": c["producers"], "subscriber": c["subscriber"],
            "total": c["server"] + c["producers"] + c["subscriber"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--out")
    a = ap.parse_args()
    trees = [t.split("=", 1) for t in a.tree]
    model = resolve_model("mobilenet_v2_int8")
    rows = {n: [] for n, _ in trees}
    for rnd in range(a.rounds):
        for name, tree in (trees if rnd % 2 == 0 else trees[::-1]):
            pc = pipeline_ceiling(model, 2, 3.0, (640, 480))
            d = one(tree, a, f"{rnd}{name}")
            d["ceiling"] = pc["fps"]
            d["ratio"] = d["fps"] / pc["fps"]
            rows[name].append(d)
            print(f"round {rnd+1} {name:>9}: {d['fps']:6.1f} fps, ceiling {pc['fps']:6.1f} ({d['ratio']:.3f}); CPU ms/frame "
                  f"server {d['server']:.2f} producers {d['producers']:.2f} subscriber {d['subscriber']:.2f} = {d['total']:.2f}",
                  flush=True)
    print()
    for k in ("fps", "ratio", "server", "producers", "subscriber", "total"):
        print(f"median {k:>10}: " + "  ".join(f"{n} {statistics.median(x[k] for x in rows[n]):.3f}" for n, _ in trees))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)

if __name__ == "__main__":
    main()
