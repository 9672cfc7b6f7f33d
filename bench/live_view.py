#!/usr/bin/env python3
"""What the live view costs (``streampi serve --http``: the page and its MJPEG pictures).

    python bench/live_view.py                        # shapes_detector, 2 workers, 8 s per run, 3 rounds
    python bench/live_view.py --seconds 20 --rounds 5

Two measurements, each against a server in its own process (``streampi serve MODEL ...``):

- saturation: producers send 640x480 RGB frames as fast as their credit allows (``queue``
  streams, every frame runs); answered frames/s with the web face off, with it on and nobody
  watching (the view's listener counts every answer, copies nothing), and with one viewer
  reading a stream's MJPEG pictures. The target: on and nobody watching within 3 % of off.
- a camera at a fixed rate (``--rate``, default 15 frames/s): the server's CPU (its whole
  process tree, runners included) with nobody watching and with one viewer at ``--view-fps``
  (default 5): the difference is what a viewer costs.

Runs alternate (off, on, viewer, off, on, ...) for ``--rounds`` rounds and the median of each
is printed, so that a neighbour's load on a shared machine hits each alike. The producers and
the viewer run in this process on the same machine: they take CPU from the server; quote the
CPU. Writes bench/out/live_view.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import aiohttp

from streampi.client import Producer, Subscriber
from streampi.runtime_info import describe_runtime
from streampi.serving.launch import start_server, wait_subscribed
from streampi.synthetic import ScenesGenerator


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants (the runner processes)."""
    import psutil

    from streampi.tools.loadtest import tree_cpu_s

    return sum(tree_cpu_s(psutil.Process(pid)).values())


class Viewer:
    """An MJPEG viewer of one stream in a thread of its own: counts the pictures it reads."""

    def __init__(self, url: str) -> None:
        self.url, self.pictures, self.bytes = url, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as s:
            for _ in range(100):  # the stream appears once its camera's first frame is answered
                async with s.get(self.url) as r:
                    if r.status == 404:
                        await asyncio.sleep(0.1)
                        continue
                    reader = aiohttp.MultipartReader.from_response(r)
                    while not self._stop.is_set():
                        part = await reader.next()
                        if part is None:
                            return
                        self.bytes += len(await part.read())
                        self.pictures += 1
                    return

    def __enter__(self) -> Viewer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def load(info: dict, frames: list, streams: int, rate: float | None, seconds: float, warmup: float,
         viewer_url: str | None, pid: int) -> dict:
    """Send frames on ``streams`` streams (as fast as credit allows, or ``rate`` per second each)
    for warmup + seconds; count the answers of the measured part and the server's CPU."""
    stop = threading.Event()
    counted = {"ok": 0, "other": 0}
    measuring = threading.Event()

    def camera(i: int) -> None:
        with Producer(info["credit_bind"], stream=f"cam{i}", when_full="wait", shared_memory=True) as prod:
            t0 = time.monotonic()
            for n in range(10_000_000):  # bounded by the clock below
                if stop.is_set():
                    break
                prod.send(frames[n % len(frames)], timeout=30)
                if rate:
                    stop.wait(max(0.0, t0 + (n + 1) / rate - time.monotonic()))

    with Subscriber(info["publish"], streams=[f"cam{i}" for i in range(streams)]) as sub:
        wait_subscribed(sub, info["credit_bind"])
        threads = [threading.Thread(target=camera, args=(i,), daemon=True) for i in range(streams)]

        def count() -> None:
            while not stop.is_set():
                try:
                    r = sub.recv(timeout=0.5)
                except TimeoutError:
                    continue
                if measuring.is_set() and r.get("stream", "").startswith("cam"):
                    counted["ok" if r.get("ok") else "other"] += 1

        counter = threading.Thread(target=count, daemon=True)
        counter.start()
        for t in threads:
            t.start()
        viewer = Viewer(viewer_url) if viewer_url else None
        if viewer:
            viewer.__enter__()
        try:
            time.sleep(warmup)
            pictures0 = viewer.pictures if viewer else 0
            cpu0, t0 = tree_cpu(pid), time.perf_counter()
            measuring.set()
            time.sleep(seconds)
            measuring.clear()
            wall, cpu = time.perf_counter() - t0, tree_cpu(pid) - cpu0
            pictures = (viewer.pictures - pictures0) if viewer else 0
        finally:
            stop.set()
            if viewer:
                viewer.__exit__()
            for t in threads:
                t.join(30)
            counter.join(5)
    return {"answers_per_s": counted["ok"] / wall, "errors": counted["other"], "server_cpu_pct": 100 * cpu / wall,
            "server_cpu_ms_per_answer": 1e3 * cpu / max(counted["ok"], 1), "viewer_pictures_per_s": pictures / wall}


def listener_cost(n: int = 200_000) -> float:
    """Seconds the view's listener takes on one answer of a stream nobody watches (what every
    frame pays with the web face on), timed in this process on a real LiveView."""
    import collections

    from streampi.integrations.live_view import LiveView
    from streampi.protocol import FrameMessage
    from streampi.serving import ServerOptions

    class Host:  # what LiveView asks of its server for this: a listener slot and counters
        stats: collections.Counter = collections.Counter()

        def add_listener(self, fn):
            self.fn = fn
            return lambda: None

    async def go() -> float:
        host = Host()
        view = LiveView(host, ServerOptions(http="127.0.0.1:0"))
        frame = FrameMessage("cam0", 0, "rgb", memoryview(bytes(640 * 480 * 3)), 640, 480)
        results = [{"v": 1, "stream": f"cam{k % 4}", "seq": k, "ok": True, "timing": {"infer_ms": 1.0},
                    "detections": [{"label": "circle", "score": 0.9, "box": [1.0, 2.0, 30.0, 40.0]}]}
                   for k in range(64)]
        t0 = time.perf_counter()
        for k in range(n):
            host.fn(results[k & 63], frame)
        elapsed = time.perf_counter() - t0
        view.close()
        return elapsed / n

    return asyncio.run(go())


def one_run(model: str, workers: int, web: bool, viewer: bool, a: argparse.Namespace, frames: list,
            rate: float | None, streams: int) -> dict:
    args = [model, "--workers", str(workers), "--policy", "queue", "--bind", "tcp://127.0.0.1:*",
            "--publish", "tcp://127.0.0.1:*", "--control", "none"]
    if web:
        args += ["--http", "127.0.0.1:0", "--view-fps", str(a.view_fps)]
    proc, info = start_server(args)
    try:
        url = f"{info['http']}/api/cam0/live.mjpg" if viewer else None
        return load(info, frames, streams, rate, a.seconds, a.warmup, url, proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes_detector")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--streams", type=int, default=2, help="producers at saturation")
    ap.add_argument("--rate", type=float, default=15.0, help="the fixed-rate camera's frames/s")
    ap.add_argument("--view-fps", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default="bench/out/live_view.json")
    a = ap.parse_args()

    gen = ScenesGenerator(seed=24)
    frames = [gen.scene(640, 480)[0] for _ in range(16)]
    saturation = {"off": [], "on, nobody watching": [], "on, one viewer": []}
    fixed = {"on, nobody watching": [], "on, one viewer": []}
    for _ in range(a.rounds):
        for name, web, viewer in (("off", False, False), ("on, nobody watching", True, False),
                                  ("on, one viewer", True, True)):
            saturation[name].append(one_run(a.model, a.workers, web, viewer, a, frames, None, a.streams))
        for name, viewer in (("on, nobody watching", False), ("on, one viewer", True)):
            fixed[name].append(one_run(a.model, a.workers, True, viewer, a, frames, a.rate, 1))

    def median(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    runtime = describe_runtime()
    print(f"streampi live view, {a.model}, {a.workers} workers, 640x480 RGB; CPU {runtime.get('cpu')} "
          f"({platform.machine()}, {os.cpu_count()} cores), {runtime.get('backend')} "
          f"{runtime.get('backend_version')}; median of {a.rounds} rounds of {a.seconds:g} s")
    print(f"saturation ({a.streams} producers, queue streams):")
    print(f"  {'web face':24} {'answers/s':>10} {'server CPU %':>13} {'CPU ms/answer':>14} {'pictures/s':>11}")
    for name, rows in saturation.items():
        print(f"  {name:24} {median(rows, 'answers_per_s'):>10.1f} {median(rows, 'server_cpu_pct'):>13.0f} "
              f"{median(rows, 'server_cpu_ms_per_answer'):>14.3f} {median(rows, 'viewer_pictures_per_s'):>11.1f}")
    off = median(saturation["off"], "answers_per_s")
    off_cpu = median(saturation["off"], "server_cpu_ms_per_answer")
    for name in ("on, nobody watching", "on, one viewer"):
        print(f"  {name} / off: answers/s {median(saturation[name], 'answers_per_s') / off:.3f}, server CPU per "
              f"answer {median(saturation[name], 'server_cpu_ms_per_answer') / off_cpu:.3f}")
    per_answer = listener_cost()
    print(f"  the view's listener on one answer, nobody watching: {per_answer * 1e6:.2f} us "
          f"({100 * per_answer * 1e3 / off_cpu:.2f} % of the server's CPU per answer off)")
    print(f"one camera at {a.rate:g} frames/s, web face on:")
    print(f"  {'':24} {'answers/s':>10} {'server CPU %':>13} {'pictures/s':>11}")
    for name, rows in fixed.items():
        print(f"  {name:24} {median(rows, 'answers_per_s'):>10.1f} {median(rows, 'server_cpu_pct'):>13.1f} "
              f"{median(rows, 'viewer_pictures_per_s'):>11.1f}")
    cost = median(fixed["on, one viewer"], "server_cpu_pct") - median(fixed["on, nobody watching"], "server_cpu_pct")
    print(f"  one viewer at {a.view_fps:g} pictures/s costs the server {cost:+.1f} % of one core")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": a.model, "workers": a.workers, "runtime": runtime, "rounds": a.rounds,
                               "seconds": a.seconds, "saturation": saturation, "fixed_rate": fixed,
                               "listener_s_per_answer": per_answer, "loadavg": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
