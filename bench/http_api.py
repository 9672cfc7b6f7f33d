#!/usr/bin/env python3
"""The DeepStack / CodeProject.AI HTTP API (``streampi serve --http``): requests/s and latency
with 1 and 8 concurrent clients, 640x480 JPEG, on a detector, against the native path (a
``Producer`` and a ``Subscriber``) on the same server, the same images and the same number of
clients in flight, in one run.

    python bench/http_api.py                                  # shapes_detector, 2 workers, 10 s per run
    python bench/http_api.py --model my_ssd.tflite --seconds 30 --clients 1 4 8

The server runs in its own process (``streampi serve MODEL --http 127.0.0.1:0 --policy queue``).
Each client sends one image, waits for its answer, sends the next (lock-step, as Home Assistant
and Frigate do); after a warm-up, a run lasts ``--seconds`` (and at most ``--max-requests``
requests per client). Printed per run: answers/s, p50 and p99 from send to answer as the client
sees it, the client's CPU per answer (this process), and the server's CPU (its whole process
tree, runners included) per answer: the
difference between the HTTP and the native row is what the web face costs the server (aiohttp
on the server's event loop: parsing the request and the multipart body, the JSON answer).
Also measured: ``requests.post`` without a session at 1 client, a new TCP connection per
request as Frigate's ``deepstack`` detector and the ``deepstack-python`` client do. The clients
run in this process on the same machine, so they take CPU from the server: quote the CPU.
Writes bench/out/http.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import simplejpeg

from streampi.client import Producer, Subscriber
from streampi.runtime_info import describe_runtime
from streampi.serving.launch import start_server, wait_subscribed
from streampi.synthetic import ScenesGenerator


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants (the runner processes)."""
    import psutil

    from streampi.tools.loadtest import tree_cpu_s

    return sum(tree_cpu_s(psutil.Process(pid)).values())


class Run:
    """Latencies of one run and the server's CPU across it."""

    def __init__(self, name: str, clients: int, pid: int) -> None:
        self.name, self.clients, self.pid = name, clients, pid
        self.latencies: list[float] = []
        self.errors = 0

    def start(self) -> None:
        self.t0, self.cpu0, self.client0 = time.perf_counter(), tree_cpu(self.pid), time.process_time()

    def stop(self) -> dict:
        wall, cpu = time.perf_counter() - self.t0, tree_cpu(self.pid) - self.cpu0
        client = time.process_time() - self.client0
        n = len(self.latencies)
        return {"path": self.name, "clients": self.clients, "answers": n, "errors": self.errors,
                "per_s": n / wall, "p50_ms": percentile(self.latencies, 50) * 1e3,
                "p99_ms": percentile(self.latencies, 99) * 1e3, "server_cpu_ms": cpu / max(n, 1) * 1e3,
                "client_cpu_ms": client / max(n, 1) * 1e3}


async def http_run(url: str, images: list[bytes], clients: int, seconds: float, warmup: float, cap: int,
                   run: Run) -> dict:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(k: int) -> bool:
            form = aiohttp.FormData()
            form.add_field("image", images[k % len(images)], filename="frame.jpg", content_type="image/jpeg")
            async with session.post(url, data=form) as r:
                body = await r.json()
                return r.status == 200 and body["success"]

        async def client(i: int, until: float, measure: bool) -> None:
            k = i
            for _ in range(cap):
                if time.perf_counter() >= until:
                    return
                t = time.perf_counter()
                ok = await one(k)
                if measure:
                    if ok:
                        run.latencies.append(time.perf_counter() - t)
                    else:
                        run.errors += 1
                k += clients

        await asyncio.gather(*(client(i, time.perf_counter() + warmup, False) for i in range(clients)))
        run.start()
        await asyncio.gather(*(client(i, time.perf_counter() + seconds, True) for i in range(clients)))
        return run.stop()


def requests_run(url: str, images: list[bytes], seconds: float, warmup: float, cap: int, run: Run) -> dict:
    import requests

    def loop(until: float, measure: bool) -> None:
        for k in range(cap):
            if time.perf_counter() >= until:
                return
            t = time.perf_counter()
            r = requests.post(url, files={"image": images[k % len(images)]}, timeout=30)  # no session
            if measure:
                if r.status_code == 200:
                    run.latencies.append(time.perf_counter() - t)
                else:
                    run.errors += 1

    loop(time.perf_counter() + warmup, False)
    run.start()
    loop(time.perf_counter() + seconds, True)
    return run.stop()


def native_run(info: dict, images: list[bytes], clients: int, seconds: float, warmup: float, cap: int,
               run: Run) -> dict:
    lock = threading.Lock()
    phase = {"until": 0.0, "measure": False}
    ready, go, done = threading.Barrier(clients + 1), threading.Barrier(clients + 1), threading.Barrier(clients + 1)

    def client(i: int) -> None:
        stream = f"native{i}"
        with Subscriber(info["publish"], streams=[stream]) as sub, \
                Producer(info["credit_bind"], stream=stream, when_full="wait") as prod:
            wait_subscribed(sub, info["credit_bind"])
            ready.wait()
            for _ in range(2):  # the warm-up, then the measured run
                go.wait()
                k = i
                for _ in range(cap):
                    if time.perf_counter() >= phase["until"]:
                        break
                    t = time.perf_counter()
                    seq = prod.send(images[k % len(images)], fmt="jpeg")
                    while True:
                        r = sub.recv(timeout=30)
                        if r.get("stream") == stream and r.get("seq") == seq:
                            break
                    if phase["measure"]:
                        with lock:
                            if r["ok"]:
                                run.latencies.append(time.perf_counter() - t)
                            else:
                                run.errors += 1
                    k += clients
                done.wait()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    phase.update(until=time.perf_counter() + warmup, measure=False)
    go.wait()
    done.wait()
    phase.update(until=time.perf_counter() + seconds, measure=True)
    run.start()
    go.wait()
    done.wait()
    out = run.stop()
    for t in threads:
        t.join(30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes_detector")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--max-requests", type=int, default=100_000, help="per client and run, at most")
    ap.add_argument("--json", default="bench/out/http.json")
    a = ap.parse_args()

    gen = ScenesGenerator(seed=22)
    images = [simplejpeg.encode_jpeg(gen.scene(640, 480)[0], quality=90) for _ in range(32)]
    proc, info = start_server([a.model, "--http", "127.0.0.1:0", "--workers", str(a.workers), "--policy", "queue",
                               "--http-max-requests", str(max(16, max(a.clients))),
                               "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*"])
    url = info["http"] + "/v1/vision/detection"
    rows = []
    try:
        for c in a.clients:
            rows.append(asyncio.run(http_run(url, images, c, a.seconds, a.warmup, a.max_requests,
                                             Run("http (aiohttp client)", c, proc.pid))))
            rows.append(native_run(info, images, c, a.seconds, a.warmup, a.max_requests,
                                   Run("native (Producer)", c, proc.pid)))
        rows.append(requests_run(url, images, a.seconds, a.warmup, a.max_requests,
                                 Run("http (requests, a connection per request)", 1, proc.pid)))
    finally:
        proc.terminate()
        proc.wait(30)

    runtime = describe_runtime()
    print(f"streampi HTTP API, {a.model}, {a.workers} workers, 640x480 JPEG; CPU {runtime.get('cpu')} "
          f"({platform.machine()}, {os.cpu_count()} cores), {runtime.get('backend')} {runtime.get('backend_version')}")
    print(f"{'path':44} {'clients':>7} {'answers/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/answer':>21} "
          f"{'client CPU ms/answer':>21} {'errors':>6}")
    for r in rows:
        print(f"{r['path']:44} {r['clients']:>7} {r['per_s']:>10.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['server_cpu_ms']:>21.2f} {r['client_cpu_ms']:>21.2f} {r['errors']:>6}")
    for c in a.clients:
        h = next(r for r in rows if r["path"].startswith("http (aiohttp") and r["clients"] == c)
        n = next(r for r in rows if r["path"].startswith("native") and r["clients"] == c)
        print(f"{c} client(s): HTTP / native answers/s {h['per_s'] / n['per_s']:.2f}, p50 +{h['p50_ms'] - n['p50_ms']:.2f} "
              f"ms, server CPU +{h['server_cpu_ms'] - n['server_cpu_ms']:.2f} ms per answer")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": a.model, "workers": a.workers, "runtime": runtime, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
