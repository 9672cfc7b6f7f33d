#!/usr/bin/env python3
"""MQTT: what the bridge costs, and what a broker that is down does to serving.

    python bench/mqtt.py                       # shapes_detector, 2 workers, 10 s per run, 2 rounds
    python bench/mqtt.py --seconds 20 --rounds 3

Memory: the resident memory (RSS, and USS: what only that process holds) of a ``streampi
mqtt`` bridge connected to a broker (Mosquitto, started here on a free loopback port) and to a
server under load, after the run; against what paho-mqtt would add to the server's own process
were the door inside it (a process that has imported the server, measured before and after
importing paho-mqtt and starting a client's network thread).

Serving: saturation throughput (frames answered per second; two v1.1 producers sending as fast
as their credit allows, queue policy, 320x240 RGB) of ``streampi serve --events`` without MQTT
(``--mqtt`` turns the tracker on, so the baseline runs it too), with
``--mqtt`` pointing at a port where no broker listens (the bridge retrying), and with
``--mqtt`` to a broker that is up (every answer read by the bridge; its stats every second),
in alternating rounds. Printed: answers/s per configuration (median of the rounds) and the
ratio to no MQTT, the server's CPU per frame, and the bridge's CPU (its process alone) per
1000 answers. Producers and subscriber run in this process on the same machine: quote the CPU.
Writes bench/out/mqtt.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from streampi.client import Producer, Subscriber
from streampi.runtime_info import describe_runtime
from streampi.serving.launch import start_server, wait_subscribed

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(folder: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\npersistence false\nallow_anonymous true\n"
                    + ("user root\n" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def cpu_s(pid: int, children: bool = True) -> float:
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *(proc.children(recursive=True) if children else [])]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def bridge_of(pid: int) -> psutil.Process | None:
    for c in psutil.Process(pid).children():
        try:
            if "mqtt" in c.cmdline():
                return c
        except psutil.NoSuchProcess:
            pass
    return None


def saturate(info: dict, seconds: float, warmup: float) -> tuple[int, float]:
    """Two producers as fast as credit allows; answers counted by a subscriber."""
    frame = np.random.default_rng(1).integers(0, 255, (240, 320, 3), np.uint8)
    count = [0]
    stop = threading.Event()
    counting = threading.Event()
    sub = Subscriber(info["publish"], streams=["s0", "s1"])
    wait_subscribed(sub, info["credit_bind"])

    def recv() -> None:
        while not stop.is_set():
            try:
                r = sub.recv(timeout=0.2)
            except TimeoutError:
                continue
            if counting.is_set() and r.get("stream") in ("s0", "s1"):
                count[0] += 1

    def produce(stream: str) -> None:
        with Producer(info["credit_bind"], stream=stream) as cam:
            while not stop.is_set():
                cam.send(frame, timeout=1.0)

    threads = [threading.Thread(target=recv), *(threading.Thread(target=produce, args=(s,)) for s in ("s0", "s1"))]
    for t in threads:
        t.start()
    time.sleep(warmup)
    counting.set()
    t0 = time.monotonic()
    time.sleep(seconds)
    counting.clear()
    elapsed = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(10)
    sub.close()
    return count[0], elapsed


def run_config(name: str, args: list[str], a: argparse.Namespace) -> dict:
    proc, info = start_server([a.model, "--workers", str(a.workers), "--policy", "queue", *args])
    try:
        time.sleep(4.0)  # the bridge starts once the server is ready: its start-up is not counted
        bridge = bridge_of(proc.pid)
        server_cpu0 = cpu_s(proc.pid) - (cpu_s(bridge.pid, False) if bridge else 0.0)
        bridge_cpu0 = cpu_s(bridge.pid, False) if bridge else 0.0
        n, elapsed = saturate(info, a.seconds, a.warmup)
        bridge_cpu = (cpu_s(bridge.pid, False) - bridge_cpu0) if bridge else 0.0
        server_cpu = cpu_s(proc.pid) - (cpu_s(bridge.pid, False) if bridge else 0.0) - server_cpu0
        mem = None
        if bridge is not None:
            full = bridge.memory_full_info()
            mem = {"rss_mb": full.rss / 2**20, "uss_mb": full.uss / 2**20}
        return {"config": name, "answers": n, "seconds": elapsed, "fps": n / elapsed,
                "server_cpu_ms_per_frame": server_cpu * 1e3 / max(n, 1),
                "bridge_cpu_ms_per_1000": bridge_cpu * 1e6 / max(n, 1) if bridge else None, "bridge_memory": mem}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


IN_SERVER = """
import os, sys, psutil
me = psutil.Process()
import streampi.serving.server  # what the server process has loaded
from streampi.serving import Server, ServerOptions
server = Server("shapes_detector", ServerOptions(workers=1, isolation="thread", control=None))
before = me.memory_full_info()
import paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
c.connect_async("127.0.0.1", int(sys.argv[1]))
c.loop_start()
import time; time.sleep(1.0)
after = me.memory_full_info()
c.loop_stop()
print((after.rss - before.rss) / 2**20, (after.uss - before.uss) / 2**20, before.rss / 2**20)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes_detector")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default="bench/out/mqtt.json")
    a = ap.parse_args()
    if not Path(MOSQUITTO).exists():
        sys.exit("bench/mqtt.py needs Mosquitto (apt-get install mosquitto)")
    runtime = describe_runtime(None)
    print(f"streampi MQTT bridge, {a.model}, {a.workers} workers; CPU {runtime.get('cpu')} "
          f"({platform.machine()}, {os.cpu_count()} cores), {runtime.get('backend')} {runtime.get('backend_version')}")
    with tempfile.TemporaryDirectory() as tmp:
        broker, port = start_broker(Path(tmp))
        try:
            down = free_port()  # nothing listens there
            configs = [("no MQTT", ["--events"]),  # --mqtt turns the tracker on: the baseline has it too
                       ("--mqtt, broker down", ["--mqtt", f"mqtt://127.0.0.1:{down}"]),
                       ("--mqtt, broker up", ["--mqtt", f"mqtt://127.0.0.1:{port}", "--mqtt-stats-interval", "1"])]
            runs: list[dict] = []
            for r in range(a.rounds):
                for name, args in configs:
                    res = run_config(name, args, a)
                    res["round"] = r
                    runs.append(res)
                    print(f"  round {r}: {name:<22} {res['fps']:8.1f} answers/s", flush=True)
            out = subprocess.run([sys.executable, "-c", IN_SERVER, str(port)], capture_output=True, text=True,
                                 timeout=120)
            in_server = [float(x) for x in out.stdout.split()] if out.returncode == 0 else None
        finally:
            broker.kill()
            broker.wait()
    base = statistics.median(r["fps"] for r in runs if r["config"] == "no MQTT")
    print(f"\n{'configuration':<22} {'answers/s':>10} {'vs no MQTT':>11} {'server CPU ms/frame':>20} "
          f"{'bridge CPU ms/1000':>19}")
    summary = {}
    for name, _ in configs:
        rs = [r for r in runs if r["config"] == name]
        fps = statistics.median(r["fps"] for r in rs)
        srv = statistics.median(r["server_cpu_ms_per_frame"] for r in rs)
        br = [r["bridge_cpu_ms_per_1000"] for r in rs if r["bridge_cpu_ms_per_1000"] is not None]
        summary[name] = {"fps": fps, "ratio": fps / base, "server_cpu_ms_per_frame": srv,
                         "bridge_cpu_ms_per_1000": statistics.median(br) if br else None}
        print(f"{name:<22} {fps:10.1f} {fps / base:11.3f} {srv:20.3f} "
              f"{(f'{statistics.median(br):.1f}' if br else '-'):>19}")
    mems = [r["bridge_memory"] for r in runs if r["bridge_memory"] and r["config"] == "--mqtt, broker up"]
    if mems:
        print(f"\nbridge process (connected, after the run): RSS {statistics.median(m['rss_mb'] for m in mems):.1f} MB, "
              f"USS {statistics.median(m['uss_mb'] for m in mems):.1f} MB")
    if in_server:
        print(f"paho-mqtt inside the server's process instead: +{in_server[0]:.1f} MB RSS, +{in_server[1]:.1f} MB USS "
              f"(on a server process of {in_server[2]:.1f} MB RSS)")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"cpu": runtime.get("cpu"), "machine": platform.machine(),
                                        "cores": os.cpu_count(), "model": a.model, "workers": a.workers,
                                        "runs": runs, "summary": summary, "bridge_memory": mems,
                                        "paho_in_server_mb": in_server}, indent=2))


if __name__ == "__main__":
    main()
