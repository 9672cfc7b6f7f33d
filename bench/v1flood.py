#!/usr/bin/env python3
"""What a v1 (PUSH) flood costs, for one or more server source trees, alternating rounds in one run.

    python bench/v1flood.py                                  # the installed streampi, 3 rounds
    python bench/v1flood.py --tree before=/tmp/a --tree after=/tmp/b --rounds 3
    python bench/v1flood.py --tree before=main --tree after=HEAD --rounds 4

Each ``--tree NAME=DIR`` is a streampi source tree (built: its ``streampi/_ext`` holds the
compiled kernels) whose server is started with ``PYTHONPATH=DIR``; ``NAME=REV`` (a git
revision of this checkout, not a directory) is exported to a temporary directory with this
checkout's compiled kernels copied in (so the revision's kernel sources must match them: the
script refuses otherwise). The load generator, the subscriber and the ceiling are this
process's streampi, the same for every tree. Without ``--tree`` the installed streampi is
the one tree. Rounds alternate the trees' order (ABBA), so that a machine whose speed drifts
between minutes weighs on both alike; each round's line ends with the load average
(others' work on a shared machine).

For each tree, each round, one server (``--workers`` workers, max batch 4, ``--queue-size``
16; policy ``latest``, streams ``flood0`` and ``bulk0`` ``queue``) and, one after the other:
  * flood: one v1 producer process sends to a ``queue`` stream as fast as ZeroMQ takes its
    frames, at normal priority, then at nice 19: ok frames/s / the pipeline ceiling (2 threads
    × (kernel + invoke), measured in this process right before and right after the two floods,
    the mean of the two), and how many frames were answered ``overloaded``. Beside it, the two
    things that ratio is made of: the server tree's CPU per ok frame / the ceiling's CPU per
    frame (what the server adds to the ceiling's work), the cores the load generator's own
    processes (producer, subscriber) took from the machine meanwhile, and the machine's idle
    cores (/proc/stat: a producer at nice 19 gets a core only when one idles);
  * mixed: a ``latest`` stream at ``--live-fps`` (v1.1), its p50 alone, then beside a v1
    flood of a ``queue`` stream: the ratio (bench/mixed.py's line); and beside a v1.1 flood
    (credit) for reference: what the scheduling alone costs the live stream;
  * the flood's ok frames/s are also given against the same server's v1.1 saturation (the
    overload part's two), a yardstick that shares the machine's minute with the flood;
  * overload: saturation of the ``latest`` streams by v1.1 producers at nice 19 (before and
    after), and between them v1 producers at normal priority offering ``--factor`` × that
    saturation to 4 ``latest`` streams: served/s (ok results that arrived during the run) /
    the mean of the two saturations (``streampi bench --overload``'s line); and the same per
    core of the server tree's CPU (served per server core / saturation per server core): what
    the surplus frames cost the server itself, apart from the cores its producer takes.
Prints each round's figures and the medians per tree; writes bench/results/v1flood.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from streampi.measure import pipeline_ceiling, usable_cores
from streampi.model import resolve_model
from streampi.testing import start_server
from streampi.tools.loadtest import run_load

ROOT = Path(__file__).resolve().parents[1]


def tree_dir(value: str, keep: contextlib.ExitStack) -> str:
    """A directory as given, or a git revision of this checkout exported to a temporary one
    with this checkout's compiled kernels (refused when the revision's kernel sources differ)."""
    if Path(value).is_dir():
        return value
    ext = "streampi/_ext"
    changed = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", value, "--", ext], check=False).returncode
    if changed:
        raise SystemExit(f"--tree {value}: its {ext} sources differ from this checkout's; build it and pass "
                         f"its directory instead")
    out = Path(keep.enter_context(tempfile.TemporaryDirectory(prefix="v1flood-")))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", value], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    for built in (ROOT / ext).glob("*.so"):
        shutil.copy2(built, out / ext / built.name)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", value], check=True, capture_output=True,
                         text=True).stdout.strip()
    print(f"tree {value} = {rev}, exported to {out}", flush=True)
    return str(out)


def start_tree_server(tree: str | None, args: list[str]):
    """``streampi serve args`` from ``tree`` (a source tree put first on PYTHONPATH), or from
    the installed streampi; returns start_server's (process, ready info)."""
    old = os.environ.get("PYTHONPATH")
    if tree:
        os.environ["PYTHONPATH"] = tree
    try:
        return start_server(args)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@contextlib.contextmanager
def server(tree: str | None, workers: int):
    proc, info = start_tree_server(tree, ["mobilenet_v2_int8", "--bind", "tcp://127.0.0.1:*", "--publish",
                                          "tcp://127.0.0.1:*", "--workers", str(workers), "--max-batch", "4",
                                          "--queue-size", "16", "--policy", "latest", "--policy", "flood0=queue",
                                          "--policy", "bulk0=queue"])
    try:
        yield proc, info
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def others_cores(r: dict, args: argparse.Namespace, warmup: float = 1.0) -> float:
    """Cores the load generator's own processes took from the machine during a run: the
    producers (over their warm-up and the run) and the subscriber (over the run)."""
    return r["producer_cpu_s"] / (warmup + args.seconds) + (r["subscriber_cpu_s"] or 0.0) / r["seconds"]


class IdleCores(threading.Thread):
    """The machine's idle cores (``/proc/stat``) over most of a run_load window: from ``delay``
    seconds after it starts (run_load's own start-up of 1.5 s, then the warm-up) for ``span``."""

    def __init__(self, delay: float, span: float) -> None:
        super().__init__(daemon=True)
        self.delay, self.span = delay, span
        self.cores: float | None = None

    @staticmethod
    def _idle_s() -> float:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")  # idle + iowait

    def run(self) -> None:
        time.sleep(self.delay)
        a, t = self._idle_s(), time.monotonic()
        time.sleep(self.span)
        self.cores = (self._idle_s() - a) / (time.monotonic() - t)


def one_round(tree: str | None, args: argparse.Namespace, spec: tuple, model: Path, tag: str) -> dict:
    out: dict = {}
    size = spec[1]
    with server(tree, args.workers) as (proc, info):
        v1, v11, pub = info["bind"], info["credit_bind"], info["publish"]
        kw = dict(arrival="fixed", frames_spec=spec, server_pid=proc.pid)
        # warm the workers and the server's paths
        run_load(v11, pub, rate=0, seconds=1.5, producers=1, streams=1, stream_prefix=f"warm{tag}", **kw)
        if "flood" in args.parts:
            # the ceiling right before and right after the two floods (the server idle meanwhile), and
            # their mean as the yardstick: the machine's speed drifts by up to ~20 % between minutes
            ceilings = [pipeline_ceiling(model, args.workers, 3.0, size)["fps"]]
            floods = {}
            idle = {}
            for nice in (0, 19):
                idle[nice] = IdleCores(1.5 + 1.0 + 0.5, max(0.5, args.seconds - 1.0))
                idle[nice].start()
                floods[nice] = run_load(v1, pub, rate=0, seconds=args.seconds, warmup=1.0, producers=1, streams=1,
                                        protocol="1", producer_nice=nice, stream_prefix="flood", **kw).as_dict()
                idle[nice].join()
            ceilings.append(pipeline_ceiling(model, args.workers, 3.0, size)["fps"])
            ceiling = out["ceiling_fps"] = statistics.fmean(ceilings)
            out["ceilings"] = ceilings
            ceiling_ms = args.workers * 1e3 / ceiling  # CPU ms per frame of the ceiling's own work
            for nice, r in floods.items():
                server_ms = r["cpu_ms_per_frame"]["server"]
                out[f"flood_nice{nice}"] = {"ok_fps": r["achieved_fps"], "ratio": r["achieved_fps"] / ceiling,
                                            "sent": r["sent"], "ok": r["ok"], "errors": r["errors"],
                                            "unanswered": r["unanswered"], "server_ms_per_ok": server_ms,
                                            "server_per_ceiling": server_ms / ceiling_ms,
                                            "server_cores": r["server_cpu_s"] / r["seconds"],
                                            "others_cores": others_cores(r, args), "idle_cores": idle[nice].cores}
        live_kw = dict(rate=args.live_fps, seconds=args.seconds, warmup=1.0, producers=1, streams=1, **kw)
        alone = run_load(v11, pub, stream_prefix=f"livea{tag}x", **live_kw).as_dict() if "mixed" in args.parts else {}
        for proto in ("1", "1.1") if "mixed" in args.parts else ():
            bulk: dict = {}

            def flood(proto: str = proto, bulk: dict = bulk) -> None:
                bulk.update(run_load(v1 if proto == "1" else v11, pub, rate=0, seconds=args.seconds + 2, warmup=0.0,
                                     producers=1, streams=1, protocol=proto, stream_prefix="bulk", **kw).as_dict())

            t = threading.Thread(target=flood)
            t.start()
            beside = run_load(v11, pub, stream_prefix=f"liveb{proto}{tag}x", **live_kw).as_dict()
            t.join()
            out["mixed" if proto == "1" else "mixed_v11"] = {
                "alone_p50": alone["latency_ms"]["p50"], "beside_p50": beside["latency_ms"]["p50"],
                "ratio": beside["latency_ms"]["p50"] / alone["latency_ms"]["p50"],
                "beside_unanswered": beside["unanswered"], "bulk_ok_fps": bulk.get("achieved_fps"),
                "bulk_errors": bulk.get("errors")}

        def saturation(n: int) -> tuple[float, float]:
            """ok frames/s, and ok frames per second of the server tree's CPU"""
            sat = run_load(v11, pub, rate=0, seconds=args.sat_seconds, warmup=1.0, producers=1, streams=4,
                           producer_nice=19, stream_prefix=f"sat{n}{tag}x", **kw)
            return sat.achieved_fps, sat.achieved_fps * sat.seconds / sat.server_cpu_s

        if "overload" not in args.parts:
            return out
        before = saturation(1)
        r = run_load(v1, pub, rate=args.factor * before[0], seconds=args.seconds, warmup=1.0, producers=1,
                     streams=4, protocol="1", stream_prefix=f"over{tag}x", **kw).as_dict()
        after = saturation(2)
        served = r["ok_arrived_in_window"] / r["seconds"]
        server_cores = r["server_cpu_s"] / r["seconds"]
        out["overload"] = {"saturation": [before[0], after[0]], "served_fps": served,
                           "ratio": served / ((before[0] + after[0]) / 2), "sent": r["sent"], "ok": r["ok"],
                           "dropped": r["dropped"], "errors": r["errors"], "unanswered": r["unanswered"],
                           "p50": r["latency_ms"]["p50"], "server_ms_per_ok": r["cpu_ms_per_frame"]["server"],
                           "server_cores": server_cores, "others_cores": others_cores(r, args),
                           # served per core the server had, against saturation per core: what the
                           # surplus frames cost the server itself, apart from the cores the
                           # load generator's producer took from it
                           "ratio_per_core": served / server_cores / ((before[1] + after[1]) / 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--sat-seconds", type=float, default=4.0)
    ap.add_argument("--live-fps", type=float, default=10.0)
    ap.add_argument("--factor", type=float, default=3.9)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--parts", type=lambda v: v.split(","), default=["flood", "mixed", "overload"],
                    help="which parts to run, comma-separated: flood, mixed, overload (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "v1flood.json")
    args = ap.parse_args()
    keep = contextlib.ExitStack()
    trees = [(name, tree_dir(value, keep)) for name, value in (t.split("=", 1) for t in args.tree)] \
        or [("installed", None)]
    w, h = (int(v) for v in args.size.split("x"))
    spec = ("synthetic", (w, h), "rgb")  # (its size is the ceiling's too)
    model = resolve_model("mobilenet_v2_int8")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {len(usable_cores())} usable cores; "
          f"model {model.name}, {args.size} RGB, {args.workers} workers", flush=True)
    rows: dict[str, list[dict]] = {name: [] for name, _ in trees}
    for rnd in range(args.rounds):
        order = trees if rnd % 2 == 0 else trees[::-1]
        for name, tree in order:
            d = one_round(tree, args, spec, model, f"{rnd}{name}")
            rows[name].append(d)
            d["loadavg"] = os.getloadavg()[0]
            line = [f"round {rnd + 1} {name:>10}"]
            if "flood" in args.parts:
                fl0, fl19 = d["flood_nice0"], d["flood_nice19"]
                line.append(f"ceiling {d['ceilings'][0]:.1f}/{d['ceilings'][1]:.1f}; flood ok/ceiling "
                            f"{fl0['ratio']:.3f} (nice 19: {fl19['ratio']:.3f}; server CPU/frame "
                            f"{fl19['server_per_ceiling']:.2f}x the ceiling's; server {fl19['server_cores']:.2f} "
                            f"cores, load generator {fl19['others_cores']:.2f}, idle {fl19['idle_cores']:.2f} (at "
                            f"normal priority {fl0['idle_cores']:.2f}); refused {fl0['errors']} / "
                            f"{fl19['errors']})")
            if "mixed" in args.parts:
                mx = d["mixed"]
                line.append(f"live p50 {mx['beside_p50']:.2f} vs {mx['alone_p50']:.2f} ms = {mx['ratio']:.2f}x; queue "
                            f"flood beside it {mx['bulk_ok_fps'] or 0:.1f} ok frames/s (v1.1: "
                            f"{d['mixed_v11']['bulk_ok_fps'] or 0:.1f}, live {d['mixed_v11']['ratio']:.2f}x)")
            if "overload" in args.parts:
                ov = d["overload"]
                line.append(f"v1 at {args.factor:g}x: served {ov['served_fps']:.1f} / sat "
                            f"{sum(ov['saturation']) / 2:.1f} = {ov['ratio']:.3f} (p50 {ov['p50']:.1f} ms; server "
                            f"{ov['server_cores']:.2f} cores, load generator {ov['others_cores']:.2f}; per server "
                            f"core {ov['ratio_per_core']:.3f})")
            print("; ".join(line) + f"; load average {d['loadavg']:.2f}", flush=True)

    def med(name: str, *keys: str) -> float:
        vals = []
        for d in rows[name]:
            for k in keys:
                d = d.get(k) if isinstance(d, dict) else None
            vals.append(d)
        return statistics.median(vals) if None not in vals else float("nan")

    for name, _ in trees if {"flood", "overload"} <= set(args.parts) else ():  # a steadier yardstick: the
        for d in rows[name]:  # same server's v1.1 saturation
            sat = sum(d["overload"]["saturation"]) / 2
            for k in ("flood_nice0", "flood_nice19"):
                d[k]["per_saturation"] = d[k]["ok_fps"] / sat
    print()
    print(f"| figure (median of {args.rounds} rounds) | " + " | ".join(n for n, _ in trees) + " | target |")
    print("|---|" + "---:|" * len(trees) + "---:|")
    for label, keys, target in (
            ("pipeline ceiling, frames/s", ("ceiling_fps",), ""),
            ("v1 PUSH flooding a queue stream: ok frames/s / pipeline ceiling", ("flood_nice0", "ratio"), ""),
            ("the same, flooding process at nice 19", ("flood_nice19", "ratio"), "≥ 0.85"),
            ("v1 flood ok frames/s / the same server's v1.1 saturation (normal priority)",
             ("flood_nice0", "per_saturation"), ""),
            ("the same, flooding process at nice 19", ("flood_nice19", "per_saturation"), ""),
            ("server tree CPU ms per ok frame, flood at nice 19", ("flood_nice19", "server_ms_per_ok"), ""),
            ("the same / the ceiling's CPU ms per frame", ("flood_nice19", "server_per_ceiling"), ""),
            ("cores the load generator took (producer + subscriber), flood at nice 19",
             ("flood_nice19", "others_cores"), ""),
            ("idle cores of the machine, flood at nice 19", ("flood_nice19", "idle_cores"), ""),
            ("the same, flood at normal priority", ("flood_nice0", "idle_cores"), ""),
            ("a latest stream's p50 beside a v1 flood × alone", ("mixed", "ratio"), "≤ 2"),
            ("(reference) the same beside a v1.1 flood (credit)", ("mixed_v11", "ratio"), ""),
            ("the v1 queue flood beside the live stream: ok frames/s", ("mixed", "bulk_ok_fps"), ""),
            ("the v1.1 queue flood beside the live stream: ok frames/s", ("mixed_v11", "bulk_ok_fps"), ""),
            (f"v1 PUSH at {args.factor:g}× saturation under latest: served / saturation", ("overload", "ratio"),
             "≥ 0.85"),
            ("cores the load generator took meanwhile (its v1 producer at normal priority + subscriber)",
             ("overload", "others_cores"), ""),
            ("the same line per core of server CPU: served per server core / saturation per server core",
             ("overload", "ratio_per_core"), "")):
        figures = [med(n, *keys) for n, _ in trees]
        if all(f == f for f in figures):  # (parts not run: left out)
            print(f"| {label} | " + " | ".join(f"{f:.3f}" for f in figures) + f" | {target} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "args": vars(args) | {"out": str(args.out)},
                                    "rounds": rows}, indent=1, default=str))
    print(f"\nwrote {args.out}")
    keep.close()


if __name__ == "__main__":
    main()
