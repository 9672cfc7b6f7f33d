#!/usr/bin/env python3
"""Light load at the physical limit: the light path (a wide interpreter for a lone frame while
the other workers idle) off against on, alternating rounds, in one run.

    python bench/lightload.py                      # MobileNetV2 int8, 640×480 RGB, 2 workers
    python bench/lightload.py --rounds 4 --frames 300 --seconds 8 --transport ipc

Each round measures, one right after the other (the machine drifts between minutes):
  * the raw figures, in this process, before and after the round's servers (the lower of
    the two is kept: the less disturbed): one invoke at 1 thread and at N threads (N = usable
    cores; the best of them is "invoke at the best thread count") and the kernel alone
    (resize + quantize of a 640×480 RGB frame already in memory);
  * the options at the interpreter level, no server (``options``): light = one invoke with
    the other cores idle, saturation = one interpreter per core invoking back to back:
      today    one 1-thread interpreter per core;
      threads  one N-thread interpreter per core, always (its pool oversubscribes when busy);
      repin    as threads, but when busy each pool's helpers are pinned to the
               interpreter's own core (its light figure is that of threads);
      wide     one 1-thread interpreter per core plus a wide N-thread interpreter (helpers on
               the other cores) for a lone frame: the light path, what the server does;
  * for each of off / on / threads (``streampi serve --light-threads 0``, ``--light-threads
    N``, ``--threads N --light-threads 0``; the order rotates every round): a server in its
    own process, then
      - light load: one frame at a time (send, wait for its result, pause ``--gap-ms``),
        end-to-end p50/p90 measured by the sender, with the stage split from the result's
        timing fields (transport in, queue, preprocess, hand-off, invoke, post, transport out),
        the interpreter threads each frame's invoke used, and the server tree's CPU per frame
        (a thread pool spinning between invokes would show here);
      - saturation: producer processes as fast as the server takes frames (policy ``queue``,
        nothing dropped), ok frames/s after a warm-up, and how many of those frames took the
        light path (read from the server's own status).
  * the floor: the leanest one-process server one could write for this load (a blocking PULL,
    streampi's kernel straight into the input tensor of one N-thread interpreter, an
    ``argpartition`` top-5, a PUB; no workers, isolation, scheduling or validation), light load
    over the same transport, with the frame sent each time and with the frame held in that
    server (each message a trigger: the best any shared-memory design could do). The distance
    from streampi to these floors is the server's own cost; the floor's distance to the target
    is the machine's.
Then the interleaved phase (``--pairs``): an off and an on server alive side by side (the idle
one sleeps), and short alternating blocks against each, ABBA-ordered: a light-load block and
a saturation run per server per pair. Each pair gives an on/off ratio taken a few seconds
apart, which is what survives a machine whose speed drifts by tens of percent between minutes.
Then, once: what the transport alone costs (a Producer to a blocking PULL in this process,
no server), so that the server's share of the rest can be told apart.

Prints the target, light-load p50 <= invoke p50 at the best thread count + kernel + 0.5 ms,
with saturation within 3 %, and whether it is met; writes bench/results/lightload.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

from streampi import protocol
from streampi.client import Producer, Subscriber
from streampi.config import load_config
from streampi.measure import back_to_back, invoke_ms, ready, stage_ms
from streampi.model import Model, resolve_model
from streampi.preprocess import Preprocessor
from streampi.runtime_info import usable_cores
from streampi.synthetic import ShapesGenerator
from streampi.testing import start_server, wait_subscribed
from streampi.tools import loadtest
from streampi.tools.loadtest import run_load

ROOT = Path(__file__).resolve().parents[1]

STAGES = ("in_ms", "queue_ms", "pre_ms", "handoff_ms", "infer_ms", "post_ms", "rest_ms", "out_ms")


def endpoint(transport: str, name: str) -> str:
    if transport == "ipc":
        return f"ipc:///tmp/streampi-lightload-{os.getpid()}-{name}"
    return "tcp://127.0.0.1:*"


def raw_figures(path: Path, frame: np.ndarray, threads: int, runs: int = 200) -> dict[str, float]:
    """p50 ms of one invoke at 1 and at ``threads`` threads, and of the kernel alone."""
    out = {}
    for t in sorted({1, threads}):
        m = ready(Model(path, num_threads=t), 20)
        out[f"invoke_{t}t_ms"] = float(np.median(invoke_ms(m, runs)))
        del m
    m = ready(Model(path))
    kernel, _ = stage_ms(m, Preprocessor.for_model(m, load_config(path)), frame, "rgb", runs)
    out["kernel_ms"] = float(np.median(kernel))
    out["invoke_best_ms"] = min(v for k, v in out.items() if k.startswith("invoke_"))
    return out


def pinned_interpreter(path: Path, threads: int, helpers: set[int] | None) -> Model:
    """An interpreter created while this thread is pinned to ``helpers`` (its pool threads
    inherit that), this thread then back to its old affinity; as the worker processes do."""
    before = os.sched_getaffinity(0)
    if helpers:
        os.sched_setaffinity(0, helpers)
    try:
        return ready(Model(path, num_threads=threads), 10)
    finally:
        os.sched_setaffinity(0, before)


def on_core(core: int, fn):
    """``fn()`` in a thread pinned to ``core``; its result."""
    out = []
    th = threading.Thread(target=lambda: (os.sched_setaffinity(0, {core}), out.append(fn())))
    th.start()
    th.join()
    return out[0]


def options(path: Path, n: int, seconds: float = 1.5, runs: int = 150) -> dict[str, dict[str, float]]:
    """Light-load invoke p50 and saturation frames/s of each option, at the interpreter level."""
    cores = usable_cores()[:n]
    res: dict[str, dict[str, float]] = {}

    def lat(m: Model) -> float:
        return on_core(cores[0], lambda: float(np.median(invoke_ms(m, runs))))

    today = [pinned_interpreter(path, 1, None) for c in cores]
    res["today"] = {"light_ms": lat(today[0]), "saturation_fps": back_to_back([m.invoke for m in today], seconds)}
    wide = pinned_interpreter(path, n, set(cores[1:]) or None)
    res["wide"] = {"light_ms": lat(wide),
                   "saturation_fps": back_to_back([m.invoke for m in today], seconds)}  # the wide one idles
    del wide, today
    threads = [pinned_interpreter(path, n, None) for c in cores]  # pools free to run anywhere
    res["threads"] = {"light_ms": lat(threads[0]),
                      "saturation_fps": back_to_back([m.invoke for m in threads], seconds)}
    del threads
    # at light load its pool is free (the light figure of "threads"); when busy each pool is on
    # its interpreter's core
    repin = [pinned_interpreter(path, n, {c}) for c in cores]
    res["repin"] = {"light_ms": res["threads"]["light_ms"],
                    "saturation_fps": back_to_back([m.invoke for m in repin], seconds)}
    return res


def control(ep: str, cmd: str) -> dict:
    import msgpack
    import zmq

    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 5000)
    s.connect(ep)
    try:
        s.send(msgpack.packb({"cmd": cmd}))
        return msgpack.unpackb(s.recv(), raw=False)
    finally:
        s.close()


def light_frames(ep: str) -> int:
    return sum(w.get("light_frames", 0) for w in control(ep, "workers")["workers"])


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its descendants (the server's runner processes)."""
    import psutil

    return sum(loadtest.tree_cpu_s(psutil.Process(pid)).values())


def light_load(ready_info: dict, proc_pid: int, frame: np.ndarray, frames: int, gap_s: float,
               warm: int = 30, shared_memory: bool = False, in_place: bool = False) -> dict:
    """One frame at a time: send, wait for its result, pause. Bounded: every wait has a timeout.
    ``shared_memory``: the producer writes the frame into the server's ring (a camera on the
    server's machine) and only the header crosses the socket; ``in_place``: the camera captures
    into a slot of the ring (``Producer.frame_buffer``; the capture, a copy of the frame, is
    before the clock starts, as a camera's own capture is), so ``send`` copies nothing."""
    lat, stages = [], {k: [] for k in STAGES}
    threads: collections.Counter = collections.Counter()
    with Producer(ready_info["credit_bind"], stream="light", shared_memory=shared_memory) as prod, \
            Subscriber(ready_info["publish"]) as sub:
        wait_subscribed(sub, ready_info["bind"])
        cpu0 = None
        for i in range(warm + frames):
            if i == warm:
                cpu0 = tree_cpu_s(proc_pid)
            sent = frame
            if in_place:
                sent = prod.frame_buffer(frame.shape[1], frame.shape[0])
                np.copyto(sent, frame)  # the capture
            t_wall = time.time()
            t0 = time.perf_counter()
            seq = prod.send(sent, fmt="rgb", ts=t_wall, timeout=5)
            while True:
                r = sub.recv(timeout=5)
                if r.get("stream") == "light" and r.get("seq") == seq:
                    break
            t1 = time.perf_counter()
            if not r.get("ok"):
                raise RuntimeError(f"light-load frame answered {r.get('error')}")
            if i >= warm:
                e2e = (t1 - t0) * 1e3
                t = r["timing"]
                lat.append(e2e)
                threads[t.get("invoke_threads")] += 1
                inside = {k: t.get(k, 0.0) for k in ("queue_ms", "pre_ms", "handoff_ms", "infer_ms", "post_ms")}
                row = {"in_ms": (t["recv"] - t_wall) * 1e3, **inside,
                       "rest_ms": t["total_ms"] - sum(inside.values())}
                row["out_ms"] = e2e - row["in_ms"] - t["total_ms"]
                for k, v in row.items():
                    stages[k].append(v)
            time.sleep(gap_s)
        cpu = tree_cpu_s(proc_pid) - (cpu0 or 0.0)
        if in_place and prod.shm_in_place < warm + frames - 1:
            raise RuntimeError(f"only {prod.shm_in_place} light-load frames were captured into the ring")
        if shared_memory and prod.shm_frames < warm + frames:
            raise RuntimeError(f"only {prod.shm_frames} light-load frames went through the ring: "
                               f"{prod.stats()['shared_memory']}")
    return {"p50_ms": float(np.median(lat)), "p90_ms": float(np.percentile(lat, 90)), "frames": len(lat),
            "stages_p50_ms": {k: float(np.median(v)) for k, v in stages.items()},
            "invoke_threads": {str(k): v for k, v in threads.items()},
            "server_cpu_ms_per_frame": 1e3 * cpu / max(1, len(lat))}


MODES = {"off": "--light-threads 0", "on": "--light-threads {n}", "threads": "--threads {n} --light-threads 0"}


def one_server(args: argparse.Namespace, mode: str, frame: np.ndarray, tag: str) -> dict:
    proc, info = start(args, mode, tag)
    try:
        light = light_load(info, proc.pid, frame, args.frames, args.gap_ms / 1e3)
        light_shm = (light_load(info, proc.pid, frame, args.frames, args.gap_ms / 1e3, shared_memory=True)
                     if args.shm and mode == "on" else None)
        light_in_place = (light_load(info, proc.pid, frame, args.frames, args.gap_ms / 1e3, shared_memory=True,
                                     in_place=True) if args.shm and mode == "on" else None)
        before = light_frames(info["control"])
        res = run_load(info["credit_bind"], info["publish"], rate=0, seconds=args.seconds, warmup=args.warmup,
                       producers=args.producers, streams=4, arrival="fixed",
                       frames_spec=("synthetic", args.wh, "rgb"), server_pid=proc.pid, stream_prefix=f"sat{tag}")
        d = res.as_dict()
        sat = {"ok_fps": d["achieved_fps"], "sent": d["sent"], "ok": d["ok"], "unanswered": d["unanswered"],
               "errors": d["errors"], "light_frames": light_frames(info["control"]) - before,
               "server_cpu_ms_per_frame": d["cpu_ms_per_frame"]["server"]}
    finally:
        proc.terminate()
        proc.wait(30)
    return {"light": light, "saturation": sat, "light_shm": light_shm, "light_in_place": light_in_place}


def start(args: argparse.Namespace, mode: str, tag: str) -> tuple:
    cmd = [args.model, "--bind", endpoint(args.transport, f"f{tag}"), "--publish", endpoint(args.transport, f"r{tag}"),
           "--credit-bind", endpoint(args.transport, f"c{tag}"), "--workers", str(args.workers), "--max-batch", str(args.max_batch), "--policy", "queue",
           "--log-level", "warning", *MODES[mode].format(n=args.light_threads).split()]
    return start_server(cmd)


def interleaved(args: argparse.Namespace, frame: np.ndarray) -> list[dict]:
    """Pairs of (light-load block, saturation run) against an off and an on server kept alive
    together; the order within a pair flips every pair."""
    # --control off: both servers run with the light path off (an A/A check of the method)
    servers = {m: start(args, "off" if args.control == "off" else m, f"i{m}") for m in ("off", "on")}
    pairs = []
    try:
        for i in range(args.pairs):
            pair: dict = {}
            for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
                proc, info = servers[mode]
                light = light_load(info, proc.pid, frame, args.pair_frames, args.gap_ms / 1e3, warm=10)
                before = light_frames(info["control"])
                res = run_load(info["credit_bind"], info["publish"], rate=0, seconds=args.pair_seconds, warmup=2.0,
                               producers=args.producers, streams=4, arrival="fixed",
                               frames_spec=("synthetic", args.wh, "rgb"), server_pid=proc.pid,
                               stream_prefix=f"p{i}{mode}")
                d = res.as_dict()
                pair[mode] = {"light_p50_ms": light["p50_ms"], "light_p90_ms": light["p90_ms"],
                              "infer_p50_ms": light["stages_p50_ms"]["infer_ms"],
                              "ok_fps": d["achieved_fps"], "unanswered": d["unanswered"],
                              "server_cpu_ms_per_frame": d["cpu_ms_per_frame"]["server"],
                              "light_frames_at_saturation": light_frames(info["control"]) - before}
            if not pair["off"]["ok_fps"] or not pair["on"]["ok_fps"]:
                # the producer processes started after the run's end (spawning them is slow on a
                # loaded machine): no figure, not a zero
                print(f"pair {i + 1}: a saturation run got no frames in its window; pair left out", flush=True)
                continue
            pair["light_ratio"] = pair["on"]["light_p50_ms"] / pair["off"]["light_p50_ms"]
            pair["saturation_ratio"] = pair["on"]["ok_fps"] / pair["off"]["ok_fps"]
            print(f"pair {i + 1}: light p50 off {pair['off']['light_p50_ms']:.2f} on {pair['on']['light_p50_ms']:.2f} ms"
                  f" | saturation off {pair['off']['ok_fps']:.0f} on {pair['on']['ok_fps']:.0f} ok/s "
                  f"(on/off {pair['saturation_ratio']:.3f})", flush=True)
            pairs.append(pair)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            proc.wait(30)
    return pairs


def summarize_pairs(pairs: list[dict]) -> None:
    if not pairs:
        return
    lr, sr = [p["light_ratio"] for p in pairs], [p["saturation_ratio"] for p in pairs]

    def m(mode: str, key: str) -> float:
        return float(np.median([p[mode][key] for p in pairs]))

    print(f"\ninterleaved, {len(pairs)} pairs, both servers alive: light-load p50 off {m('off', 'light_p50_ms'):.2f} on "
          f"{m('on', 'light_p50_ms'):.2f} ms (on/off per pair: median {np.median(lr):.3f}, range {min(lr):.3f}–"
          f"{max(lr):.3f}); saturation off {m('off', 'ok_fps'):.1f} on {m('on', 'ok_fps'):.1f} ok/s (on/off per pair: "
          f"median {np.median(sr):.3f}, range {min(sr):.3f}–{max(sr):.3f}; on higher in "
          f"{sum(v > 1 for v in sr)} of {len(sr)}); server CPU per frame at saturation off "
          f"{m('off', 'server_cpu_ms_per_frame'):.3f} on {m('on', 'server_cpu_ms_per_frame'):.3f} ms; frames on the "
          f"light path at saturation: {sum(p['on']['light_frames_at_saturation'] for p in pairs)}; unanswered: "
          f"{sum(p[k]['unanswered'] for p in pairs for k in ('off', 'on'))}")


def transport_alone(frame: np.ndarray, transport: str, n: int = 300, gap_s: float = 0.005) -> dict:
    """One-way ms of a 640×480 RGB frame message from a Producer to a blocking PULL in a thread
    of this process (decoded with streampi's protocol): the transport with no server around it."""
    import zmq

    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.bind(endpoint(transport, "alone"))
    ep = pull.getsockopt(zmq.LAST_ENDPOINT).decode()
    got: list[float] = []

    def receive() -> None:
        pull.setsockopt(zmq.RCVTIMEO, 5000)
        for _ in range(n + 20):
            try:
                parts = pull.recv_multipart(copy=False)
            except zmq.Again:
                return
            t = time.time()
            msg = protocol.decode_frame(parts, protocol.Limits())
            got.append((t - msg.ts) * 1e3)

    th = threading.Thread(target=receive, daemon=True)
    th.start()
    with Producer(ep, stream="alone", protocol_version="1") as prod:  # the transport alone: PUSH → PULL
        for _ in range(n + 20):
            prod.send(frame, fmt="rgb", ts=time.time(), timeout=5)
            time.sleep(gap_s)
    th.join(30)
    pull.close()
    return {"one_way_p50_ms": float(np.median(got[20:])), "one_way_p90_ms": float(np.percentile(got[20:], 90))}


def _floor_server(model: str, threads: int, pull_ep: str, pub_ep: str, held: bool, ready_q) -> None:
    """The leanest server one could write for this light load, in its own process: a blocking
    PULL, the frame decoded by hand, streampi's kernel writing straight into the interpreter's
    input tensor, one ``threads``-thread interpreter, an ``argpartition`` top-5, a PUB. No
    workers, no isolation, no scheduling, no validation. ``held``: the frame is kept in this
    process and each message is only a trigger (the best a shared-memory design could do).
    Ends on a message with seq -1, or after 60 s without one."""
    import msgpack
    import zmq

    path = resolve_model(model)
    m = ready(Model(path, num_threads=threads), 20)
    pre = Preprocessor.for_model(m, load_config(path))
    ctx = zmq.Context()
    pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
    pull.setsockopt(zmq.RCVTIMEO, 60000)
    pull.bind(pull_ep)
    pub.bind(pub_ep)
    ready_q.put((pull.getsockopt(zmq.LAST_ENDPOINT).decode(), pub.getsockopt(zmq.LAST_ENDPOINT).decode()))
    frame = None
    try:
        while True:
            try:
                parts = pull.recv_multipart(copy=False)
            except zmq.Again:
                return
            head = msgpack.unpackb(parts[0].buffer)
            if head["seq"] < 0:
                return
            if not held:
                frame = np.frombuffer(parts[1].buffer, np.uint8).reshape(head["h"], head["w"], 3)
            elif len(parts[1].buffer):
                frame = np.frombuffer(bytes(parts[1].buffer), np.uint8).reshape(head["h"], head["w"], 3)
            view = m.input_view()
            pre(frame, "rgb", out=view[0])
            del view
            m.invoke()
            scores = m.outputs_float()[0][0]
            top = np.argpartition(-scores, 4)[:5]
            pub.send(msgpack.packb({"seq": head["seq"], "top": top.tolist()}))
    finally:
        pull.close(0)
        pub.close(0)
        ctx.term()


class Floor:
    """A :func:`_floor_server` in its own process and the light load against it: the e2e p50
    below which no server on these sockets, with this frame, on this machine, can go."""

    def __init__(self, args: argparse.Namespace, held: bool, tag: str) -> None:
        import multiprocessing

        import zmq

        mp = multiprocessing.get_context("spawn")
        q = mp.Queue()
        self.held = held
        self.proc = mp.Process(target=_floor_server, daemon=True, args=(
            args.model, args.light_threads, endpoint(args.transport, f"floorf{tag}"),
            endpoint(args.transport, f"floorr{tag}"), held, q))
        self.proc.start()
        pull_ep, pub_ep = q.get(timeout=60)
        ctx = zmq.Context.instance()
        self.push, self.sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
        self.push.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVTIMEO, 5000)
        self.push.connect(pull_ep)
        self.sub.connect(pub_ep)
        self.seq = 0
        time.sleep(0.5)  # the subscription reaches the PUB

    def light_load(self, frame: np.ndarray, frames: int, gap_s: float, warm: int = 30) -> dict:
        import msgpack

        h, w = frame.shape[:2]
        lat = []
        for i in range(warm + frames):
            seq, self.seq = self.seq, self.seq + 1
            t0 = time.perf_counter()
            self.push.send_multipart([msgpack.packb({"seq": seq, "w": w, "h": h}),
                                      frame if not self.held or seq == 0 else b""], copy=False)
            while msgpack.unpackb(self.sub.recv())["seq"] != seq:
                pass
            if i >= warm:
                lat.append((time.perf_counter() - t0) * 1e3)
            time.sleep(gap_s)
        return {"p50_ms": float(np.median(lat)), "p90_ms": float(np.percentile(lat, 90)), "frames": len(lat)}

    def close(self) -> None:
        import msgpack

        self.push.send_multipart([msgpack.packb({"seq": -1}), b""])
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
        self.push.close()
        self.sub.close()


def floor_light_load(args: argparse.Namespace, frame: np.ndarray, held: bool) -> dict:
    floor = Floor(args, held, "r")
    try:
        return floor.light_load(frame, args.frames, args.gap_ms / 1e3)
    finally:
        floor.close()


LIGHT_MODES = ("wire", "ring", "in_place", "floor", "floor_held")


def light_interleaved(args: argparse.Namespace, frame: np.ndarray, path: Path) -> list[dict]:
    """Light load only, against a streampi server (light path on) and the two floors alive
    side by side: short blocks of each, the order rotating every pair, with the raw invoke
    and kernel figures (so each pair's target) measured in the same pair. streampi over
    ``--transport``, through the ring, and captured into the ring; the floor with the frame
    sent, and with the frame held."""
    proc, info = start(args, "on", "L")
    floors = {"floor": Floor(args, False, "w"), "floor_held": Floor(args, True, "h")}
    pairs = []
    try:
        for i in range(args.light_pairs):
            pair: dict = {"raw": raw_figures(path, frame, args.light_threads, runs=60)}
            pair["target_ms"] = pair["raw"]["invoke_best_ms"] + pair["raw"]["kernel_ms"] + 0.5
            order = LIGHT_MODES[i % len(LIGHT_MODES):] + LIGHT_MODES[:i % len(LIGHT_MODES)]
            for mode in order:
                gap = args.gap_ms / 1e3
                if mode in floors:
                    pair[mode] = floors[mode].light_load(frame, args.pair_frames, gap, warm=10)
                else:
                    pair[mode] = light_load(info, proc.pid, frame, args.pair_frames, gap, warm=10,
                                            shared_memory=mode != "wire", in_place=mode == "in_place")
            pairs.append(pair)
            print(f"light pair {i + 1}: target {pair['target_ms']:.2f} ms | " + ", ".join(
                f"{m} {pair[m]['p50_ms']:.2f}" for m in LIGHT_MODES))
    finally:
        for f in floors.values():
            f.close()
        proc.terminate()
        proc.wait(30)
    return pairs


def summarize_light_pairs(pairs: list[dict]) -> None:
    if not pairs:
        return
    print(f"\nlight load interleaved, {len(pairs)} pairs (streampi with the light path on, and the floors, alive side "
          f"by side; each pair's target from its own invoke and kernel figures), p50 ms, medians over pairs:")
    print("| path | p50 | p90 | minus the pair's target | minus the held-frame floor | pairs meeting the target |\n"
          "|---|---:|---:|---:|---:|---:|")
    for m in LIGHT_MODES:
        p50 = np.median([p[m]["p50_ms"] for p in pairs])
        p90 = np.median([p[m]["p90_ms"] for p in pairs])
        over = np.median([p[m]["p50_ms"] - p["target_ms"] for p in pairs])
        floor = np.median([p[m]["p50_ms"] - p["floor_held"]["p50_ms"] for p in pairs])
        met = sum(p[m]["p50_ms"] <= p["target_ms"] for p in pairs)
        print(f"| {m} | {p50:.2f} | {p90:.2f} | {over:+.2f} | {floor:+.2f} | {met} of {len(pairs)} |")
    print(f"target (median over pairs): {np.median([p['target_ms'] for p in pairs]):.2f} ms = invoke "
          f"{np.median([p['raw']['invoke_best_ms'] for p in pairs]):.2f} + kernel "
          f"{np.median([p['raw']['kernel_ms'] for p in pairs]):.2f} + 0.5")
    stages = {m: {k: np.median([p[m]["stages_p50_ms"][k] for p in pairs]) for k in STAGES}
              for m in ("wire", "ring", "in_place")}
    print("| stage | wire | ring | captured into the ring |\n|---|---:|---:|---:|")
    for k in STAGES:
        print(f"| {k[:-3]} | {stages['wire'][k]:.3f} | {stages['ring'][k]:.3f} | {stages['in_place'][k]:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v2_int8")
    ap.add_argument("--workers", type=int, default=len(usable_cores()))
    ap.add_argument("--light-threads", type=int, default=len(usable_cores()))
    ap.add_argument("--max-batch", type=int, default=4, help="the server's default")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--frames", type=int, default=200, help="light-load frames per server")
    ap.add_argument("--gap-ms", type=float, default=10.0, help="pause between light-load frames")
    ap.add_argument("--seconds", type=float, default=6.0, help="saturation: measured seconds")
    ap.add_argument("--warmup", type=float, default=2.0, help="saturation: seconds before measuring")
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--transport", default="tcp", choices=["tcp", "ipc"])
    ap.add_argument("--shm", action="store_true",
                    help="also measure the on server's light load with a producer writing into its shared-memory "
                         "ring (a camera on the server's machine), right after the same load over --transport")
    ap.add_argument("--pairs", type=int, default=8, help="interleaved pairs (0: none)")
    ap.add_argument("--pair-frames", type=int, default=60, help="light-load frames per server per pair")
    ap.add_argument("--pair-seconds", type=float, default=4.0, help="saturation seconds per server per pair")
    ap.add_argument("--pairs-only", action="store_true", help="only the interleaved phase")
    ap.add_argument("--light-pairs", type=int, default=6,
                    help="interleaved light-load pairs: streampi (wire, ring, captured into the ring) and the "
                         "floors side by side (0: none)")
    ap.add_argument("--light-only", action="store_true", help="only the interleaved light-load pairs")
    ap.add_argument("--control", choices=["on", "off"], default="on",
                    help="the second server of the interleaved phase: on, or off again (an A/A check)")
    ap.add_argument("--no-threads-mode", dest="threads_mode", action="store_false",
                    help="skip the server with N-thread interpreters everywhere")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lightload.json")
    args = ap.parse_args()
    args.wh = tuple(int(v) for v in args.size.lower().split("x"))
    path = resolve_model(args.model)
    frame = np.ascontiguousarray(ShapesGenerator(seed=0).frame(*args.wh)[0])
    n = args.light_threads
    print(f"machine: {platform.machine()}, {len(usable_cores())} usable cores, load average "
          f"{os.getloadavg()[0]:.2f}; model {path.name}; {args.workers} workers, max batch {args.max_batch}; "
          f"frames {args.size} rgb over {args.transport}; light threads {n}; {args.rounds} rounds")
    if args.pairs_only:
        summarize_pairs(interleaved(args, frame))
        return
    if args.light_only:
        light_pairs = light_interleaved(args, frame, path)
        summarize_light_pairs(light_pairs)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "out"},
                                        "light_pairs": light_pairs}, indent=1, default=str))
        print(f"wrote {args.out}")
        return
    rounds = []
    modes = ["off", "on", "threads"] if args.threads_mode else ["off", "on"]
    for r in range(args.rounds):
        before = raw_figures(path, frame, n)
        row = {"load_average": os.getloadavg()[0], "options": options(path, n)}
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
            row[mode] = one_server(args, mode, frame, f"{r}{mode}")
        row["floor"] = floor_light_load(args, frame, held=False)
        row["floor_held"] = floor_light_load(args, frame, held=True)
        after = raw_figures(path, frame, n)
        row["raw"] = raw = {k: min(before[k], after[k]) for k in before}
        row["raw_before"], row["raw_after"] = before, after
        rounds.append(row)
        target = raw["invoke_best_ms"] + raw["kernel_ms"] + 0.5
        print(f"round {r + 1}: invoke 1t {raw['invoke_1t_ms']:.2f} ms, {n}t {raw.get(f'invoke_{n}t_ms', 0):.2f} ms, "
              f"kernel {raw['kernel_ms']:.2f} ms -> target {target:.2f} ms | light p50 off "
              f"{row['off']['light']['p50_ms']:.2f} on {row['on']['light']['p50_ms']:.2f} ms | saturation off "
              f"{row['off']['saturation']['ok_fps']:.0f} on {row['on']['saturation']['ok_fps']:.0f} ok/s | floor "
              f"{row['floor']['p50_ms']:.2f}, held frame {row['floor_held']['p50_ms']:.2f} ms")

    def med(get) -> float:
        return float(np.median([get(x) for x in rounds]))

    def light(mode: str, key: str) -> float:
        return med(lambda x: x[mode]["light"][key])

    def stage(mode: str, key: str) -> float:
        return med(lambda x: x[mode]["light"]["stages_p50_ms"][key])

    inv1, invn = med(lambda x: x["raw"]["invoke_1t_ms"]), med(lambda x: x["raw"].get(f"invoke_{n}t_ms", np.nan))
    kernel, best = med(lambda x: x["raw"]["kernel_ms"]), med(lambda x: x["raw"]["invoke_best_ms"])
    target = best + kernel + 0.5
    table = [("light-load p50, ms", "p50_ms"), ("light-load p90, ms", "p90_ms"),
             ("server CPU per light-load frame, ms", "server_cpu_ms_per_frame")]
    print(f"\nmedians of {args.rounds} rounds\n\n| figure | off | on | on / off |\n|---|---:|---:|---:|")
    for label, key in table:
        a, b = light("off", key), light("on", key)
        print(f"| {label} | {a:.2f} | {b:.2f} | {b / a:.3f} |")
    sat_off, sat_on = med(lambda x: x["off"]["saturation"]["ok_fps"]), med(lambda x: x["on"]["saturation"]["ok_fps"])
    print(f"| saturation, ok frames/s | {sat_off:.1f} | {sat_on:.1f} | {sat_on / sat_off:.3f} |")
    print(f"| frames on the light path at saturation | "
          f"{sum(x['off']['saturation']['light_frames'] for x in rounds)} | "
          f"{sum(x['on']['saturation']['light_frames'] for x in rounds)} | |")
    unanswered = sum(x[m]["saturation"]["unanswered"] for x in rounds for m in ("off", "on"))
    threads = {m: sum((collections.Counter(x[m]["light"]["invoke_threads"]) for x in rounds), collections.Counter())
               for m in ("off", "on")}
    print(f"\nlight-load invokes by interpreter threads: off {dict(threads['off'])}, on {dict(threads['on'])}; "
          f"unanswered frames at saturation: {unanswered}")
    ratios = [x["on"]["saturation"]["ok_fps"] / x["off"]["saturation"]["ok_fps"] for x in rounds]
    print(f"saturation on/off per round: {', '.join(f'{v:.3f}' for v in ratios)}")
    if args.threads_mode:
        print(f"\nserver with {n}-thread interpreters everywhere (--threads {n} --light-threads 0): light-load p50 "
              f"{light('threads', 'p50_ms'):.2f} ms, p90 {light('threads', 'p90_ms'):.2f} ms; saturation "
              f"{med(lambda x: x['threads']['saturation']['ok_fps']):.1f} ok/s = "
              f"{med(lambda x: x['threads']['saturation']['ok_fps']) / sat_off:.3f} of off")
    print(f"\noptions at the interpreter level (medians of {args.rounds} rounds):\n"
          "| option | light-load invoke p50, ms | saturation, frames/s (back to back, one per core) |\n|---|---:|---:|")
    for opt in ("today", "threads", "repin", "wide"):
        figures = [float(np.median([x["options"][opt][k] for x in rounds])) for k in ("light_ms", "saturation_fps")]
        print(f"| {opt} | {figures[0]:.2f} | {figures[1]:.0f} |")
    print("\nstages at light load, p50 ms (medians over rounds; in/out: transport and the server's socket "
          "handling; rest: the server's time in no stage):\n| stage | off | on |\n|---|---:|---:|")
    for k in STAGES:
        print(f"| {k[:-3]} | {stage('off', k):.3f} | {stage('on', k):.3f} |")
    server_on = sum(stage("on", k) for k in STAGES if k not in ("in_ms", "out_ms"))
    floor, floor_held = med(lambda x: x["floor"]["p50_ms"]), med(lambda x: x["floor_held"]["p50_ms"])
    print(f"\nthe floor (the leanest one-process server, {n}-thread interpreter, kernel into its input tensor, "
          f"PULL/PUB over {args.transport}): light-load p50 {floor:.2f} ms, p90 "
          f"{med(lambda x: x['floor']['p90_ms']):.2f} ms; with the frame held in the server (a trigger message): "
          f"p50 {floor_held:.2f} ms. streampi on: {light('on', 'p50_ms'):.2f} ms = floor {light('on', 'p50_ms') - floor:+.2f} ms; "
          f"the floor against the target: {floor - target:+.2f} ms, the held-frame floor: {floor_held - target:+.2f} ms")
    if args.shm:
        shm_p50 = med(lambda x: x["on"]["light_shm"]["p50_ms"])
        print(f"\nlight path on, the frame through a shared-memory ring (the same server, right after): p50 "
              f"{shm_p50:.2f} ms, p90 {med(lambda x: x['on']['light_shm']['p90_ms']):.2f} ms against "
              f"{light('on', 'p50_ms'):.2f} / {light('on', 'p90_ms'):.2f} over {args.transport} -> target "
              f"{target:.2f} ms {'met' if shm_p50 <= target else 'NOT met'} (over by {shm_p50 - target:+.2f} ms); "
              f"held-frame floor {shm_p50 - floor_held:+.2f} ms")
        place_p50 = med(lambda x: x["on"]["light_in_place"]["p50_ms"])
        print(f"captured into the ring (Producer.frame_buffer, no copy in send): p50 {place_p50:.2f} ms, p90 "
              f"{med(lambda x: x['on']['light_in_place']['p90_ms']):.2f} ms -> target "
              f"{'met' if place_p50 <= target else 'NOT met'} ({place_p50 - target:+.2f} ms); held-frame floor "
              f"{place_p50 - floor_held:+.2f} ms")
        print("| stage | on, " + args.transport + " | on, shared memory | on, captured into the ring |\n|---|---:|---:|---:|")
        for k in STAGES:
            print(f"| {k[:-3]} | {stage('on', k):.3f} | {med(lambda x, k=k: x['on']['light_shm']['stages_p50_ms'][k]):.3f} | "
                  f"{med(lambda x, k=k: x['on']['light_in_place']['stages_p50_ms'][k]):.3f} |")
    pairs = interleaved(args, frame) if args.pairs else []
    summarize_pairs(pairs)
    light_pairs = light_interleaved(args, frame, path) if args.light_pairs else []
    summarize_light_pairs(light_pairs)
    alone = {t: transport_alone(frame, t) for t in ("tcp", "ipc")}
    print("\ntransport alone (Producer → blocking PULL in this process, decoded, no server), one way: "
          + ", ".join(f"{t} p50 {v['one_way_p50_ms']:.3f} / p90 {v['one_way_p90_ms']:.3f} ms" for t, v in alone.items()))
    light_on = light("on", "p50_ms")
    sat_ratio = float(np.median([p["saturation_ratio"] for p in pairs])) if pairs else sat_on / sat_off
    sat_ok = abs(sat_ratio - 1) <= 0.03
    print(f"\ninvoke p50: 1 thread {inv1:.2f} ms, {n} threads {invn:.2f} ms; kernel {kernel:.2f} ms "
          f"(medians over rounds of the lower of the figures before and after each round's servers)")
    met = sum(x["on"]["light"]["p50_ms"] <= x["raw"]["invoke_best_ms"] + x["raw"]["kernel_ms"] + 0.5 for x in rounds)
    print(f"rounds where the light-load p50 (on) met that round's target: {met} of {len(rounds)}")
    print(f"target: light-load p50 <= {best:.2f} (invoke, best thread count) + {kernel:.2f} (kernel) + 0.5 = "
          f"{target:.2f} ms: on {light_on:.2f} ms -> {'met' if light_on <= target else 'NOT met'} "
          f"(over by {light_on - target:+.2f} ms); saturation on/off {sat_ratio:.3f} "
          f"({'median of the interleaved pairs' if pairs else 'medians of the rounds'}) -> "
          f"{'within' if sat_ok else 'NOT within'} 3 %")
    print(f"the server's share alone (receipt to publish, sum of stage p50s, on): {server_on:.2f} ms against "
          f"{target:.2f} ms; transport alone, one way: tcp {alone['tcp']['one_way_p50_ms']:.2f} ms, "
          f"ipc {alone['ipc']['one_way_p50_ms']:.2f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "out"}, "rounds": rounds,
                                    "transport_alone": alone, "pairs": pairs, "light_pairs": light_pairs,
                                    "target_ms": target, "light_on_p50_ms": light_on,
                                    "saturation_ratio": sat_ratio}, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
