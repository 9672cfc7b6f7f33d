"""``streampi bench``: load-test a server with open-loop producers; latency percentiles, sweeps,
the ceilings it is compared with, overload, plots. The load generator is
:mod:`streampi.tools.loadtest`; this module turns its runs into a report."""

from __future__ import annotations

import argparse
import json
import platform
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StreampiError
from ._argtypes import DefaultsHelpFormatter, frame_size

if TYPE_CHECKING:
    from ..tools.loadtest import LatencyHistogram, RunResult

FORMATTER = DefaultsHelpFormatter


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--connect", metavar="FRAMES,RESULTS", help="use a running server (else one is started); "
                   "FRAMES is its --credit-bind endpoint, or its --bind endpoint with --protocol 1")
    g.add_argument("--protocol", choices=["1.1", "1"], default="1.1",
                   help="the producers' protocol: 1.1 (credit-based flow control) or 1 (PUSH)")
    g.add_argument("--server-pid", type=int, help="with --connect: the server's pid, for its CPU and memory")
    g.add_argument("--shared-memory", action="store_true",
                   help="v1.1 producers write raw frames into the server's shared-memory rings (a server on "
                        "this machine): what a camera on the server's own Pi does")
    g.add_argument("--model", default="mobilenet_v2_int8")
    g.add_argument("--workers", type=int, default=None)
    g.add_argument("--threads", type=int, default=1)
    g.add_argument("--max-batch", type=int, default=4)
    g.add_argument("--max-delay-ms", type=float, default=0.0)
    g.add_argument("--policy", default="queue", choices=["latest", "queue"])
    g = p.add_argument_group("load")
    g.add_argument("--rate", type=float, default=100.0,
                   help="offered frames/s in all; 0: as fast as the server takes them (saturation)")
    g.add_argument("--warmup", type=float, default=0.0, help="seconds of load before the measured --seconds")
    g.add_argument("--arrival", choices=["fixed", "poisson"], default="fixed")
    g.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    g.add_argument("--frames", type=int, default=0, help="stop after this many frames in all (0: no limit)")
    g.add_argument("--producers", type=int, default=2, help="producer processes")
    g.add_argument("--streams", type=int, default=2)
    g.add_argument("--size", type=frame_size, default=(640, 480), help="synthetic frame size WxH")
    g.add_argument("--fmt", default="rgb", choices=["rgb", "bgr", "gray", "i420", "jpeg"])
    g.add_argument("--images", help="a folder of .jpg files to send instead of synthetic frames")
    g = p.add_argument_group("modes")
    g.add_argument("--sweep", action="store_true", help="step the rate up until saturation; report the knee")
    g.add_argument("--sweep-start", type=float, default=None, help="first rate (default: 10 %% of the ceiling)")
    g.add_argument("--sweep-factor", type=float, default=1.3)
    g.add_argument("--sweep-steps", type=int, default=12)
    g.add_argument("--sweep-refine", type=int, default=2, help="bisection steps between the knee and the next step")
    g.add_argument("--p99-bound-ms", type=float, default=50.0, help="the knee: highest throughput with p99 under this")
    g.add_argument("--ceiling", action="store_true", help="also measure the raw interpreter ceiling")
    g.add_argument("--baseline", action="store_true", help="also run the REQ/REP + OpenCV baseline")
    g.add_argument("--overload", type=float, default=None, metavar="FACTOR",
                   help="measure saturation, then offer FACTOR x that for --seconds with v1.1 and with v1 "
                        "producers (policy latest): served/s as a fraction of saturation, memory, counts")
    g = p.add_argument_group("output")
    g.add_argument("--json", type=Path, default=Path("bench-result.json"))
    g.add_argument("--png", type=Path, default=None, help="write latency plots here")
    g.add_argument("--no-progress", action="store_true")


def _progress_factory(enabled: bool, label: str):
    """A rich live line while a run goes, or nothing."""
    if not enabled:
        return None, (lambda: None)
    try:
        from rich.live import Live
        from rich.text import Text
    except ImportError:
        return None, (lambda: None)
    live = Live(Text(""), refresh_per_second=4, transient=True)
    live.start()
    last = [0.0]

    def update(res: RunResult, elapsed: float) -> None:
        if elapsed - last[0] < 0.25:
            return
        last[0] = elapsed
        live.update(Text(f"{label}: {elapsed:5.1f} s  answered {res.answered:7d}  ok {res.ok:7d}  dropped "
                         f"{res.dropped:5d}  p50 {res.hist.percentile(50):7.2f} ms  p99 "
                         f"{res.hist.percentile(99):7.2f} ms"))

    return update, live.stop


def _print_table(rows: list[tuple[str, str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
        t = Table(show_header=True, header_style="bold")
        t.add_column("figure")
        t.add_column("value", justify="right")
        for k, v in rows:
            t.add_row(k, v)
        Console().print(t)
    except ImportError:
        for k, v in rows:
            print(f"{k:<44} {v}")


def _overload(args: argparse.Namespace, endpoints: dict[str, str], results_ep: str, server_pid: int,
              frames_spec: tuple, report: dict) -> int:
    """Saturation (v1.1 producers waiting for credit, and v1 producers blocking on ZeroMQ's
    queue; the higher is the server's capacity), then ``--overload`` x that offered for
    ``--seconds`` by v1.1 producers and by v1 producers, policy ``latest``. Prints served/s as a
    fraction of saturation, the server's memory (its whole process tree) after warm-up and at
    the end of each run, and the counts (which must add up: every frame answered once, or
    replaced at the producer)."""
    import numpy as np
    import psutil

    from ..tools.loadtest import run_load, tree_rss_mib

    server = psutil.Process(server_pid)
    kw = dict(producers=args.producers, streams=args.streams, arrival=args.arrival, frames_spec=frames_spec,
              server_pid=server_pid, warmup=args.warmup, producer_nice=19)
    sat_seconds = max(3.0, min(args.seconds, 10.0))
    sats: list[dict] = []

    def saturation() -> float:
        n = len(sats) + 1
        print(f"saturation {n}: v1.1 producers waiting for credit ({sat_seconds:g} s) …", flush=True)
        r = run_load(endpoints["1.1"], results_ep, rate=0, seconds=sat_seconds, stream_prefix=f"sat{n}-", **kw)
        sats.append(r.as_dict())
        print(f"  {r.achieved_fps:.1f} frames/s", flush=True)
        return r.achieved_fps

    # saturation before, between and after the overload runs: each run is compared with the
    # mean of the two that bracket it (a shared machine drifts between minutes)
    before = saturation()
    rss_warm = tree_rss_mib(server)
    rows = []
    for proto in ("1.1", "1"):
        rate = args.overload * before
        print(f"overload x{args.overload:g} = {rate:.0f} frames/s offered, v{proto} producers, {args.seconds:g} s …",
              flush=True)
        r = run_load(endpoints[proto], results_ep, rate=rate, seconds=args.seconds, stream_prefix=f"over{proto}-",
                     **kw, protocol=proto)
        d = r.as_dict()
        d["rss_end_mib"] = tree_rss_mib(server)
        after = saturation()
        d["capacity_fps"] = (before + after) / 2
        d["served_fps"] = d["ok_arrived_in_window"] / d["seconds"]  # served while overloaded, not a backlog after
        d["served_fraction"] = d["served_fps"] / d["capacity_fps"]
        rows.append((proto, d))
        before = after
    capacity = float(np.mean([s["achieved_fps"] for s in sats]))
    report["overload"] = {"factor": args.overload, "capacity_fps": capacity, "saturation": sats,
                          "rss_warm_mib": rss_warm, "runs": {p: d for p, d in rows}}
    sat_list = ", ".join(f"{x['achieved_fps']:.1f}" for x in sats)
    print(f"\nsaturation (v1.1, waiting for credit): {sat_list} "
          f"frames/s; server memory (whole process tree) after warm-up {rss_warm:.0f} MiB")
    print(f"{'producers':<10} {'offered/s':>9} {'sent/s':>8} {'served/s':>9} {'sat/s':>6} {'/ sat':>6} {'RSS end':>8} "
          f"{'RSS +%':>7} "
          f"{'sent':>8} {'camera-dropped':>15} {'ok':>7} {'dropped':>8} {'errors':>7} {'unanswered':>10} "
          f"{'producer CPU':>12}")
    for proto, d in rows:
        errors = sum(d["errors"].values())
        print(f"v{proto:<9} {d['offered_fps']:9.0f} {(d['sent'] - d['client_dropped']) / d['seconds']:8.0f} "
              f"{d['served_fps']:9.1f} {d['capacity_fps']:6.1f} {d['served_fraction']:6.3f} {d['rss_end_mib']:7.0f}M "
              f"{100 * (d['rss_end_mib'] / rss_warm - 1):+6.1f}% {d['sent']:8d} {d['client_dropped']:15d} "
              f"{d['ok']:7d} {d['dropped']:8d} {errors:7d} {d['unanswered']:10d} "
              f"{100 * d['producer_cpu_s'] / (d['seconds'] + args.warmup):11.0f}%")
    print("served/s: ok results that arrived during the run; producers run at nice 19 (cameras are other "
          "devices: their CPU must not come out of the server's share of this machine)")
    print("targets: served/sat >= 0.95 (v1.1) and >= 0.85 (v1); RSS within +10 % of its post-warm-up level")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0 if all(d["unanswered"] == 0 for _, d in rows) else 1


def _sweep(args: argparse.Namespace, report: dict, one_run: Any) -> tuple[list[dict], dict, LatencyHistogram]:
    """Step the offered rate up by ``--sweep-factor`` until the server saturates, then bisect
    between the best rate whose p99 stays under ``--p99-bound-ms`` (nothing dropped or lost)
    and the next step: the knee. Returns the runs by offered rate, the knee's run and the
    histogram to plot."""
    steps: list[dict] = []
    rate = args.sweep_start or 0.1 * report["ceiling"]["fps"]
    best = None
    for i in range(args.sweep_steps):
        d, res = one_run(rate, f"sweep step {i + 1}")
        steps.append(d)
        if d["latency_ms"]["p99"] <= args.p99_bound_ms and d["unanswered"] == 0 and d["dropped"] == 0:
            if best is None or d["achieved_fps"] > best[0]["achieved_fps"]:
                best = (d, res)
        saturated = d["achieved_fps"] < 0.9 * rate or d["latency_ms"]["p99"] > 4 * args.p99_bound_ms
        if saturated:
            break
        rate *= args.sweep_factor
    # refine the knee: bisect between the best rate under the bound and the next step up
    lo = best[0]["offered_fps"] if best else None
    hi = min((s["offered_fps"] for s in steps if lo is not None and s["offered_fps"] > lo), default=None)
    for i in range(args.sweep_refine if lo is not None and hi is not None else 0):
        rate = (lo + hi) / 2
        d, res = one_run(rate, f"refine {i + 1}")
        steps.append(d)
        if d["latency_ms"]["p99"] <= args.p99_bound_ms and d["unanswered"] == 0 and d["dropped"] == 0:
            lo = rate
            if d["achieved_fps"] > best[0]["achieved_fps"]:
                best = (d, res)
        else:
            hi = rate
    steps.sort(key=lambda s: s["offered_fps"])
    report["sweep"] = steps
    report["knee"] = ({"achieved_fps": best[0]["achieved_fps"], "offered_fps": best[0]["offered_fps"],
                       "p99_ms": best[0]["latency_ms"]["p99"], "p99_bound_ms": args.p99_bound_ms}
                      if best else None)
    main, last = best if best else (steps[-1], res)
    return steps, main, last.hist


def _summary_rows(args: argparse.Namespace, report: dict, main: dict) -> list[tuple[str, str]]:
    """The terminal table of a run: counts that add up, latency, stages, CPU, the ratios to the ceilings."""
    offered = f"{main['offered_fps']:.1f}" if main["offered_fps"] else "saturation"
    rows = [("offered / achieved (frames/s)", f"{offered} / {main['achieved_fps']:.1f}"),
            ("sent = ok + dropped + errors", f"{main['sent']} = {main['ok']} + {main['dropped']} + "
                                             f"{sum(main['errors'].values())}  (unanswered {main['unanswered']})"),
            ("latency p50 / p90 / p95 / p99 / max (ms)",
             " / ".join(f"{main['latency_ms'][p]:.2f}" for p in ("p50", "p90", "p95", "p99", "max")))]
    stage_names = {"infer_ms": "infer per frame (infer_ms / batch)", "infer_batch_ms": "infer per batch"}
    for k, v in main["stages_ms"].items():
        rows.append((f"stage {stage_names.get(k, k[:-3])} p50 / p99 (ms)", f"{v['p50']:.3f} / {v['p99']:.3f}"))
    if main["errors"]:
        rows.append(("errors by code", ", ".join(f"{k} {v}" for k, v in main["errors"].items())))
    if main["server_cpu_percent"] is not None:
        rows.append(("server CPU / RSS (workers included)",
                     f"{main['server_cpu_percent']:.0f} % / {main['server_rss_mib']:.0f} MiB"))
    cpu = main["cpu_ms_per_frame"]
    rows.append(("CPU ms per frame: server / producers / subscriber",
                 " / ".join("–" if cpu[k] is None else f"{cpu[k]:.2f}" for k in ("server", "producers", "subscriber"))))
    if report.get("knee"):
        rows.append((f"knee (p99 ≤ {args.p99_bound_ms:g} ms)", f"{report['knee']['achieved_fps']:.1f} frames/s"))
    if "ceiling" in report:
        c = report["ceiling"]
        drift = (f" (before {c['fps_before']:.1f}, after {c['fps_after']:.1f})" if "fps_after" in c else "")
        rows.append(("raw ceiling", f"{c['fps']:.1f} frames/s{drift}"))
        rows.append(("served / raw ceiling", f"{report['efficiency']:.3f}"))
    if "pipeline_ceiling" in report:
        c = report["pipeline_ceiling"]
        rows.append((f"pipeline ceiling (kernel + invoke, {c['frame']})",
                     f"{c['fps']:.1f} frames/s (before {c['fps_before']:.1f}, after {c['fps_after']:.1f})"))
        rows.append(("served / pipeline ceiling", f"{report['efficiency_pipeline']:.3f}"))
    if "vs_baseline" in report:
        vb = report["vs_baseline"]
        rows.append(("throughput / baseline", f"{vb['throughput_ratio']:.2f}"))
        rows.append(("p99 / baseline", f"{vb['p99_ratio']:.3f}"))
    return rows


def run(args: argparse.Namespace) -> int:
    if args.rate < 0 or args.warmup < 0 or args.seconds <= 0:
        raise StreampiError("--rate and --warmup must be ≥ 0 and --seconds > 0")
    if args.shared_memory and args.protocol != "1.1":
        raise StreampiError("--shared-memory needs --protocol 1.1 (the rings come with the credit)")
    from ..measure import ceiling, pipeline_ceiling
    from ..model import resolve_model
    from ..runtime_info import describe_runtime, summary_line, usable_cores
    from ..serving.launch import start_server
    from ..tools.loadtest import plot, run_baseline, run_load

    w, h = args.size
    frames_spec = (args.images or "synthetic", (w, h), args.fmt)
    model_path = resolve_model(args.model)
    if args.overload is not None and not args.connect:
        args.policy = "latest"  # before the configuration is recorded: the report says what ran
    config: dict[str, Any] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "config": config,
                              "machine": {"arch": platform.machine(), "cores": len(usable_cores()),
                                          "python": platform.python_version(), "node": platform.node()},
                              "runtime": describe_runtime()}  # backend, versions, arch, kernels build
    print(f"runtime: {summary_line(report['runtime'])}")
    proc = None
    if args.connect:
        frames_ep, results_ep = args.connect.split(",")
        server_pid = args.server_pid
    else:
        serve_args = [str(model_path), "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                      "--credit-bind", "tcp://127.0.0.1:*",
                      "--threads", str(args.threads), "--max-batch", str(args.max_batch),
                      "--max-delay-ms", str(args.max_delay_ms), "--policy", args.policy]
        if args.workers:
            serve_args += ["--workers", str(args.workers)]
        proc, info = start_server(serve_args)
        frames_ep, results_ep, server_pid = info["bind"], info["publish"], proc.pid
        endpoints = {"1": info["bind"], "1.1": info["credit_bind"]}
        frames_ep = endpoints[args.protocol]
        report["server"] = {"backend": info["backend"], "workers": len(info["workers"]), "model": info["model"],
                            "sha256": info["sha256"]}
        print(f"server: {info['model']} on {info['backend']}, {len(info['workers'])} workers, policy {args.policy}, "
              f"max batch {args.max_batch}")
    try:
        if args.ceiling or (args.sweep and args.sweep_start is None):
            n = (report.get("server") or {}).get("workers") or args.workers or len(usable_cores())
            print(f"measuring the raw ceiling: {n} interpreters back to back …", flush=True)
            ceil_fps, invoke_ms = ceiling(model_path, n, min(5.0, args.seconds))
            report["ceiling"] = {"instances": n, "fps": ceil_fps, "invoke_p50_ms": invoke_ms}
            print(f"  ceiling {ceil_fps:.1f} frames/s (invoke p50 {invoke_ms:.2f} ms)")
            if args.ceiling:
                print(f"measuring the pipeline ceiling: {n} threads, kernel + invoke on a {w}x{h} RGB frame "
                      f"in memory …", flush=True)
                pc = pipeline_ceiling(model_path, n, min(5.0, args.seconds), (w, h))
                report["pipeline_ceiling"] = pc
                print(f"  pipeline ceiling {pc['fps']:.1f} frames/s (kernel p50 {pc['kernel_p50_ms']:.3f} ms, "
                      f"invoke p50 {pc['invoke_p50_ms']:.2f} ms)")

        if args.overload is not None:
            if proc is None:
                raise StreampiError("bench --overload starts its own server (it needs both frame endpoints); "
                                 "drop --connect")
            return _overload(args, endpoints, results_ep, server_pid, frames_spec, report)

        def one_run(rate: float, label: str) -> tuple[dict, RunResult]:
            update, stop = _progress_factory(not args.no_progress, label)
            try:
                res = run_load(frames_ep, results_ep, rate=rate, seconds=args.seconds, producers=args.producers,
                               streams=args.streams, arrival=args.arrival, frames_spec=frames_spec,
                               max_frames=args.frames, server_pid=server_pid, progress=update, warmup=args.warmup,
                               protocol=args.protocol, shared_memory=args.shared_memory)
            finally:
                stop()
            d = res.as_dict()
            if d["producer_failures"]:
                print(f"{label}: WARNING: producer process(es) failed with exit codes {d['producer_failures']}; "
                      f"this run's figures are incomplete", flush=True)
            lat = d["latency_ms"]
            offered = f"{rate:.1f}/s" if rate else "saturation"
            print(f"{label}: offered {offered}, achieved {d['achieved_fps']:.1f}/s, ok {d['ok']}, dropped "
                  f"{d['dropped']}, errors {sum(d['errors'].values())}, p50 {lat['p50']:.2f} ms, "
                  f"p99 {lat['p99']:.2f} ms", flush=True)
            return d, res

        hist_for_cdf: LatencyHistogram
        if args.sweep:
            steps, main, hist_for_cdf = _sweep(args, report, one_run)
        else:
            main, res = one_run(args.rate, "run")
            steps = [main]
            hist_for_cdf = res.hist
        report["run"] = main
        if args.ceiling:
            # the machine's speed drifts between minutes: measure both ceilings again after the
            # served runs and compare against the stronger of the two measurements of each
            n = report["ceiling"]["instances"]
            print("measuring both ceilings again after the runs …", flush=True)
            after_fps, _ = ceiling(model_path, n, min(5.0, args.seconds))
            pc_after = pipeline_ceiling(model_path, n, min(5.0, args.seconds), (w, h))
            for key, after in (("ceiling", after_fps), ("pipeline_ceiling", pc_after["fps"])):
                before = report[key]["fps"]
                report[key].update(fps_before=before, fps_after=after, fps=max(before, after))
            print(f"  raw ceiling {after_fps:.1f}, pipeline ceiling {pc_after['fps']:.1f} frames/s "
                  f"(used: the higher of before and after)")
        if "ceiling" in report:
            top = report["knee"]["achieved_fps"] if report.get("knee") else max(s["achieved_fps"] for s in steps)
            report["efficiency"] = top / report["ceiling"]["fps"]
            if "pipeline_ceiling" in report:
                report["efficiency_pipeline"] = top / report["pipeline_ceiling"]["fps"]
        if args.baseline:
            rate = main["offered_fps"] or main["achieved_fps"]  # at saturation: what the server served
            print(f"baseline (REQ/REP, OpenCV resize, one process) at {rate:.1f}/s …", flush=True)
            base = run_baseline(model_path, rate=rate, seconds=args.seconds, producers=args.producers,
                                arrival=args.arrival, frames_spec=frames_spec, max_frames=args.frames)
            report["baseline"] = base
            report["vs_baseline"] = {
                "throughput_ratio": main["achieved_fps"] / base["achieved_fps"] if base["achieved_fps"] else None,
                "p99_ratio": main["latency_ms"]["p99"] / base["latency_ms"]["p99"]}
            print(f"  baseline achieved {base['achieved_fps']:.1f}/s, p99 {base['latency_ms']['p99']:.2f} ms")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

    rows = _summary_rows(args, report, main)
    print()
    _print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {args.json}")
    if args.png:
        title = (f"streampi {report.get('server', {}).get('model', args.model)}, {w}x{h} {args.fmt}, "
                 f"{report['machine']['arch']} × {report['machine']['cores']} cores, {report['date'][:10]}")
        plot(args.png, steps, hist_for_cdf, title)
        print(f"wrote {args.png}")
    return 0 if main["unanswered"] == 0 and not main["producer_failures"] else 1
