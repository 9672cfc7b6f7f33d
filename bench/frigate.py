#!/usr/bin/env python3
"""Frigate's detectors served by streampi against Frigate's own CPU detector, same model, same
cores, one run.

    python bench/frigate.py [--model ssd_mobilenet_v2_320_int8] [--seconds 5] [--rounds 2]
    python bench/frigate.py --tree main=main --tree new=HEAD --frigate-endpoint tcp,ipc --rounds 4

For 1, 2 and 4 detectors (each a process, as Frigate runs them):

* ``cpu``: what a Frigate user runs today, Frigate's CPU detector (``cpu_tfl.py``): each
  process holds its own interpreter (``num_threads`` 3, Frigate's default) and invokes it in
  the process, then reads the four outputs of the SSD post-processing op into the 20 × 6 rows
  as ``detector_utils.tflite_detect_raw`` does. The tensor is the model's input: float32 in
  0..1 (Frigate's ``input_dtype: float``) for a float model.
* ``ceiling``: one process per streampi worker, each invoking a single-thread interpreter back
  to back (what streampi's workers run, without requests): the requests/s no server of this
  interpreter and model can pass on these cores. When ceiling ÷ four CPU detectors is under
  1.3, the 4-detector target cannot be met on the machine at hand, by streampi or anything
  else; streampi ÷ ceiling is then what is left to gain.
* ``streampi``: each process is Frigate's ``zmq`` detector (a REQ socket in lock-step, the
  plugin's timeouts), against ``streampi serve MODEL --frigate`` (a child process, one worker
  per core); the tensor is uint8 (``input_dtype: int``) at the model's size, as
  ``streampi frigate-config`` sets it. ``streampi@320`` (a model whose input is not
  320×320): the same with 320×320 tensors, which streampi resizes to the model's input.

``--tree NAME=DIR`` (repeatable; a source tree, or a git revision of this checkout exported
with its compiled kernels, as in bench/v1flood.py) serves each figure from each tree, and
``--frigate-endpoint tcp,ipc`` from each endpoint kind (``ipc://`` is Frigate's default on one
machine): rows ``streampi[NAME,ipc]``. Each round starts one server per tree and endpoint, and
runs their figures of one detector count back to back, in an order that reverses every round
(ABBA), right after the CPU figure of that count.

Prints requests/s (all detectors together), p50/p99 of one request as the detector sees it,
for streampi the CPU time its server process spends per request outside the workers' invokes
(event loop, door, scheduler, results: the fixed cost of a request), and the ratios the issue sets as targets: with 4 detectors streampi ≥ 1.3× the requests/s of
four CPU detectors; with 1, streampi's p50 within 1 ms of the in-process invoke. The targets
are reported, met or not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import signal
import sys
import tempfile
import time

import numpy as np

FRIGATE_NUM_THREADS = 3  # CpuDetectorConfig.num_threads's default


def cpu_detector(model_path: str, tensor: np.ndarray, start_at: float, seconds: float, num_threads: int,
                 out: mp.Queue) -> None:
    """One Frigate CPU detector process: its own interpreter, invoked here. With ``num_threads``
    1 and one process per core it is the ceiling: what any server of this interpreter can reach
    on these cores (invokes back to back, nothing received, nothing sent)."""
    try:
        from tflite_runtime.interpreter import Interpreter
    except ModuleNotFoundError:
        from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    outs = interpreter.get_output_details()
    # Frigate reads boxes, classes, scores, count as the model lists them (TF1 exports' order);
    # converters list them in other orders, so they are taken here in the op's order, which
    # names ending in ``:k`` give, else by shape (the work is the same)
    positions = [o["name"].rpartition(":")[2] for o in outs]
    if all(p.isdigit() for p in positions) and len(set(positions)) == 4:
        boxes_i, classes_i, scores_i, count_i = (o["index"] for _, o in sorted(zip(map(int, positions), outs),
                                                                              key=lambda t: t[0]))
    else:
        count_i = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 1)
        boxes_i = next(o["index"] for o in outs if len(o["shape"]) == 3)
        classes_i, scores_i = (o["index"] for o in outs if len(o["shape"]) == 2)

    def detect_raw() -> np.ndarray:
        interpreter.set_tensor(inp, tensor)
        interpreter.invoke()
        boxes = interpreter.tensor(boxes_i)()[0]
        class_ids = interpreter.tensor(classes_i)()[0]
        scores = interpreter.tensor(scores_i)()[0]
        count = int(interpreter.tensor(count_i)()[0])
        detections = np.zeros((20, 6), np.float32)
        for i in range(count):
            if scores[i] < 0.4 or i == 20:
                break
            detections[i] = [class_ids[i], float(scores[i]), boxes[i][0], boxes[i][1], boxes[i][2], boxes[i][3]]
        return detections

    while time.time() < start_at:  # warm up until every detector starts together
        detect_raw()
    took, end = [], time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        detect_raw()
        took.append(time.perf_counter() - t0)
    out.put({"latencies": took, "timeouts": 0})


def zmq_detector(endpoint: str, model_name: str, tensor: np.ndarray, start_at: float, seconds: float,
                 timeout_ms: int, out: mp.Queue) -> None:
    """One Frigate zmq detector process, as its plugin does it."""
    import zmq

    ctx = zmq.Context()

    def new_socket() -> zmq.Socket:
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.RCVTIMEO, timeout_ms)
        s.setsockopt(zmq.SNDTIMEO, timeout_ms)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        s.send_multipart([json.dumps({"model_request": True, "model_name": model_name}).encode()])
        s.setsockopt(zmq.RCVTIMEO, 30000)
        reply = json.loads(s.recv_multipart()[0])
        s.setsockopt(zmq.RCVTIMEO, timeout_ms)
        assert reply.get("model_available") and reply.get("model_loaded"), reply
        return s

    sock = new_socket()
    header = json.dumps({"shape": list(tensor.shape), "dtype": tensor.dtype.name, "model_type": "ssd"}).encode()
    timeouts = 0

    def detect_raw() -> None:
        nonlocal sock, timeouts
        try:
            sock.send_multipart([header, memoryview(tensor.tobytes(order="C"))])
            reply = sock.recv_multipart()
            assert len(reply) == 1 and len(reply[0]) == 480
        except zmq.Again:
            timeouts += 1
            sock.close(linger=0)
            sock = new_socket()

    while time.time() < start_at:
        detect_raw()
    took, end = [], time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        detect_raw()
        took.append(time.perf_counter() - t0)
    out.put({"latencies": took, "timeouts": timeouts})
    sock.close(linger=0)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process so far, its threads included, its children not."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_detectors(target, args_of, n: int, seconds: float, server_pid: int | None = None) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + 3.0  # spawn and load, then warm up until then
    procs = [ctx.Process(target=target, args=(*args_of(i, start_at, seconds), q)) for i in range(n)]
    for p in procs:
        p.start()
    while time.time() < start_at + 0.5:  # (the measured window starts about then)
        time.sleep(0.05)
    cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
    results = [q.get(timeout=seconds + 120) for _ in procs]
    cpu1 = cpu_seconds(server_pid) if server_pid else 0.0
    for p in procs:
        p.join(30)
    lat = np.concatenate([r["latencies"] for r in results]) * 1e3
    row = {"detectors": n, "requests_per_s": len(lat) / seconds, "p50_ms": float(np.percentile(lat, 50)),
           "p99_ms": float(np.percentile(lat, 99)), "timeouts": sum(r["timeouts"] for r in results)}
    if server_pid:  # the server's own process (event loop, doors, scheduler), not its workers' invokes
        row["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1e3 / max(1, len(lat))
    return row


def start_tree_server(tree: str | None, args: list[str]):
    """``streampi serve args`` from ``tree`` or the installed streampi (bench/v1flood.py's)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from v1flood import start_tree_server as start

    return start(tree, args)


def tree_dir(value: str, keep: contextlib.ExitStack) -> str:
    """``--tree``'s directory (bench/v1flood.py's: a directory, or a revision exported)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from v1flood import tree_dir as export

    return export(value, keep)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ssd_mobilenet_v2_320_int8",
                    help="an SSD-postprocess .tflite (Frigate's CPU detector reads those four outputs); the default "
                         "is the bundled 320x320 SSD MobileNetV2 (random weights), Frigate's size")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=1, help="alternate cpu and streampi this many times")
    ap.add_argument("--detectors", default="1,2,4")
    ap.add_argument("--workers", type=int, default=None, help="streampi's workers (default: one per core)")
    ap.add_argument("--timeout-ms", type=int, default=200, help="the zmq detectors' request_timeout_ms")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the ceiling figure (single-thread "
                    "interpreters, one per worker, invoked back to back)")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                    help="serve from this source tree or git revision (repeat to compare, ABBA)")
    ap.add_argument("--frigate-endpoint", default="tcp", help="tcp, ipc or tcp,ipc: the door's endpoint kind(s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from streampi.model import Model, resolve_model
    from streampi.runtime_info import usable_cores
    from streampi.synthetic import ScenesGenerator
    path = resolve_model(args.model)
    probe = Model(path)
    h, w, _ = probe.image_input()
    scene = ScenesGenerator(seed=22).scene(w, h)[0]
    scene320 = ScenesGenerator(seed=22).scene(320, 320)[0]
    if probe.input.dtype == np.float32:
        cpu_tensor = (scene[None].astype(np.float32) / 255).astype(np.float32)  # Frigate's input_dtype: float
    else:
        cpu_tensor = scene[None].astype(probe.input.dtype)
    counts = [int(x) for x in args.detectors.split(",")]
    workers = args.workers or len(usable_cores())
    keep = contextlib.ExitStack()
    sock_dir = keep.enter_context(tempfile.TemporaryDirectory(prefix="frigate-bench-"))
    trees: list[tuple[str, str | None]] = [(name, tree_dir(value, keep)) for name, value in
                                           (t.split("=", 1) for t in args.tree)] or [("", None)]
    kinds_of_endpoint = args.frigate_endpoint.split(",")
    if not set(kinds_of_endpoint) <= {"tcp", "ipc"}:
        raise SystemExit(f"--frigate-endpoint: tcp, ipc or tcp,ipc, got {args.frigate_endpoint!r}")
    configs = [(tree, ep) for tree in trees for ep in kinds_of_endpoint]
    labels = ["streampi" + (f"[{','.join(x for x in (tree[0], ep if len(kinds_of_endpoint) > 1 else '') if x)}]"
                            if len(configs) > 1 else "") for tree, ep in configs]
    rows: list[dict] = []
    for rnd in range(args.rounds):
        # each CPU figure right before the streampi figures of the same count: on a shared
        # machine the pairs then see alike loads (the servers idle during the other figures)
        servers = []
        try:
            for k, ((_, tree), ep) in enumerate(configs):
                door = "tcp://127.0.0.1:*" if ep == "tcp" else f"ipc://{sock_dir}/frigate-{rnd}-{k}.sock"
                servers.append(start_tree_server(tree, [str(path), "--bind", "tcp://127.0.0.1:*", "--publish",
                                                        "tcp://127.0.0.1:*", "--frigate", door, "--workers",
                                                        str(workers), "--log-level", "warning"]))
            kinds = [("", scene[None])] + ([("@320", scene320[None])] if (w, h) != (320, 320) else [])
            if not args.no_ceiling:
                rows.append({"kind": "ceiling", "round": rnd, **run_detectors(
                    cpu_detector, lambda i, s, d: (str(path), cpu_tensor, s, d, 1), workers, args.seconds)})
            order = list(range(len(configs)))
            for n in counts:
                rows.append({"kind": "cpu", "round": rnd, **run_detectors(
                    cpu_detector, lambda i, s, d: (str(path), cpu_tensor, s, d, FRIGATE_NUM_THREADS), n, args.seconds)})
                for k in order if rnd % 2 == 0 else order[::-1]:
                    proc, info = servers[k]
                    for suffix, tensor in kinds:
                        rows.append({"kind": labels[k] + suffix, "round": rnd, **run_detectors(
                            zmq_detector, lambda i, s, d, t=tensor, e=info["frigate"]: (e, path.name, t, s, d,
                                                                                        args.timeout_ms),
                            n, args.seconds, server_pid=proc.pid)})
        finally:
            for proc, _ in servers:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
    keep.close()

    def best(kind: str, n: int) -> dict:  # the best round of each (the machine is shared)
        return max((r for r in rows if r["kind"] == kind and r["detectors"] == n), key=lambda r: r["requests_per_s"])

    def paired(kind: str, n: int, of, ceiling_of: bool = False) -> list[float]:  # per round: of(kind's row, the CPU
        return [of(next(r for r in rows if r["kind"] == kind and r["round"] == k  # row); the ceiling has one a round
                        and (ceiling_of or r["detectors"] == n)),
                   next(r for r in rows if r["kind"] == "cpu" and r["detectors"] == n and r["round"] == k))
                for k in range(args.rounds)]

    cpu_model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                     platform.processor())
    summary = {"model": path.name, "input": f"{w}x{h}", "cpu": cpu_model, "cores": len(usable_cores()),
               "machine": platform.machine(), "loadavg_after": os.getloadavg(), "streampi_workers": workers,
               "frigate_num_threads": FRIGATE_NUM_THREADS, "rows": rows}
    n_max = max(counts)
    for label in labels:  # the keys say "streampi" with one tree and endpoint, else the row's label
        if 1 in counts:
            summary[f"p50_1_{label}_minus_cpu_ms"] = best(label, 1)["p50_ms"] - best("cpu", 1)["p50_ms"]
            summary[f"p50_1_{label}_minus_cpu_ms_per_round"] = paired(label, 1, lambda a, b: a["p50_ms"] - b["p50_ms"])
        summary[f"throughput_{n_max}_{label}_over_cpu"] = best(label, n_max)["requests_per_s"] / \
            best("cpu", n_max)["requests_per_s"]
        summary[f"throughput_{n_max}_{label}_over_cpu_per_round"] = paired(
            label, n_max, lambda a, b: a["requests_per_s"] / b["requests_per_s"])
        if not args.no_ceiling:
            summary[f"throughput_{n_max}_{label}_over_ceiling_per_round"] = [
                s / c for s, c in zip(paired(label, n_max, lambda a, b: a["requests_per_s"]),
                                      paired("ceiling", n_max, lambda a, b: a["requests_per_s"], ceiling_of=True))]
        for n in counts:
            summary[f"median_{n}_{label}"] = {key: float(np.median([r[key] for r in rows if r["kind"] == label
                                                                    and r["detectors"] == n]))
                                              for key in ("requests_per_s", "p50_ms", "server_cpu_ms_per_request")}
    if not args.no_ceiling:
        summary[f"throughput_ceiling_over_cpu_{n_max}_per_round"] = paired(
            "ceiling", n_max, lambda a, b: a["requests_per_s"] / b["requests_per_s"], ceiling_of=True)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"model {path.name} ({w}x{h} input), {summary['cores']} cores of {cpu_model} ({platform.machine()}); "
          f"streampi: {workers} workers; Frigate CPU detectors: num_threads {FRIGATE_NUM_THREADS}; "
          f"{args.seconds:g} s per figure, {args.rounds} round(s)")
    width = max(14, *(len(label) + 4 for label in labels))
    print(f"{'kind':{width}} {'round':>5} {'detectors':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'timeouts':>8} "
          f"{'server CPU ms/req':>17}")
    for r in rows:
        cpu = f"{r['server_cpu_ms_per_request']:>17.3f}" if "server_cpu_ms_per_request" in r else f"{'':>17}"
        print(f"{r['kind']:{width}} {r['round']:>5} {r['detectors']:>9} {r['requests_per_s']:>9.1f} "
              f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['timeouts']:>8} {cpu}")
    if not args.no_ceiling:
        cc = summary[f"throughput_ceiling_over_cpu_{n_max}_per_round"]
        print(f"ceiling ({workers} single-thread interpreters back to back) / {n_max} cpu detectors: per round "
              f"{', '.join(f'{x:.2f}x' for x in cc)}, median {float(np.median(cc)):.2f}x "
              f"({'the 1.3x target is out of reach on this machine' if np.median(cc) < 1.3 else 'room for 1.3x'})")
    for label in labels:
        print(f"{label}: median over rounds, " + "; ".join(
            f"{n} detector(s) {m['requests_per_s']:.1f} req/s, server CPU {m['server_cpu_ms_per_request']:.3f} ms/req"
            for n in counts for m in [summary[f"median_{n}_{label}"]]))
        ratio = summary[f"throughput_{n_max}_{label}_over_cpu"]
        per_round = summary[f"throughput_{n_max}_{label}_over_cpu_per_round"]
        print(f"  {n_max} detectors: {label} / cpu requests/s = {ratio:.2f}x, best round of each (target >= 1.3x: "
              f"{'met' if ratio >= 1.3 else 'NOT met'}); per round {', '.join(f'{x:.2f}x' for x in per_round)}, "
              f"median {float(np.median(per_round)):.2f}x")
        if not args.no_ceiling:
            sc = summary[f"throughput_{n_max}_{label}_over_ceiling_per_round"]
            print(f"  {label} / ceiling: per round {', '.join(f'{x:.2f}' for x in sc)}, median {float(np.median(sc)):.2f}")
        if 1 in counts:
            d = summary[f"p50_1_{label}_minus_cpu_ms"]
            per_round = summary[f"p50_1_{label}_minus_cpu_ms_per_round"]
            print(f"  1 detector: {label} p50 - in-process p50 = {d:+.2f} ms, best round of each (target <= 1 ms: "
                  f"{'met' if d <= 1.0 else 'NOT met'}); per round {', '.join(f'{x:+.2f}' for x in per_round)} ms, "
                  f"median {float(np.median(per_round)):+.2f} ms")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in summary['loadavg_after'])}")


if __name__ == "__main__":
    main()
