"""A simulated cluster on one machine: a ``--workers 0`` server (a pure dispatcher) and 1, 2, 3
one-worker nodes, each node in its own network namespace behind a veth pair and in its own CPU
cgroup with a quota (``--quota`` of a core: a slower machine than this one), the same model and
the same frames. One run, as root (namespaces, veth, cgroups):

    sudo .venv/bin/python bench/cluster.py --quota 0.3 --seconds 10

Prints, with the CPU it ran on:

* throughput (ok frames/s) of 1, 2 and 3 nodes at saturation (``queue`` streams whose producers
  always have a frame waiting), and 3 nodes / 1 node (target >= 2.5);
* the hop at light load: p50 of ``hop_ms`` (the server's round trip to the node less the
  node's own time on the batch) and of the node's own time (target: hop <= 1 ms);
* what each way of sharing the work costs, for choosing what crosses the link: the frame as
  sent (the node runs the kernel; what streampi sends) or the model's input tensor (the server
  runs the kernel): the server's CPU per frame as it runs now, the kernel's time per frame on
  this CPU (what the server would add per frame in tensor mode), and a round trip of each
  size over the veth link.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from streampi.client import Producer, Subscriber
from streampi.runtime_info import describe_runtime
from streampi.testing import start_server, wait_subscribed

FRAME = np.random.default_rng(3).integers(0, 256, (480, 640, 3), np.uint8)
TAG = f"spb{os.getpid() % 100000}"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class CpuGroup:
    """A cgroup with ``quota`` of one core: v1's cpu controller (cpu.cfs_quota_us) or v2's cpu.max."""

    PERIOD = 100_000

    def __init__(self, name: str, quota: float) -> None:
        v1 = Path("/sys/fs/cgroup/cpu")
        v2 = Path("/sys/fs/cgroup")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.path, self.v2 = v1 / name, False
        elif "cpu" in (v2 / "cgroup.controllers").read_text().split():
            self.path, self.v2 = v2 / name, True
        else:
            raise SystemExit("no cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2 cpu.max) here")
        self.path.mkdir(exist_ok=True)
        self.set(quota)

    def set(self, quota: float) -> None:
        if self.v2:
            (self.path / "cpu.max").write_text(f"{int(quota * self.PERIOD)} {self.PERIOD}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(self.PERIOD))
            (self.path / "cpu.cfs_quota_us").write_text(str(int(quota * self.PERIOD)))

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


class Node:
    """``streampi node`` in a namespace of its own (veth 10.78.<k>.1 <-> .2), in a CPU cgroup."""

    def __init__(self, k: int, model: str, port: int, quota: float) -> None:
        self.ns, here, there = f"{TAG}-n{k}", f"{TAG}s{k}", f"{TAG}n{k}"
        self.here = here
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        sh("ip", "link", "set", there, "netns", self.ns)
        sh("ip", "addr", "add", f"10.78.{k}.1/24", "dev", here)
        sh("ip", "link", "set", here, "up")
        for args in (("addr", "add", f"10.78.{k}.2/24", "dev", there), ("link", "set", there, "up"),
                     ("link", "set", "lo", "up")):
            sh("ip", "netns", "exec", self.ns, "ip", *args)
        self.server_side = f"10.78.{k}.1"
        self.cgroup = CpuGroup(f"{TAG}-n{k}", quota)
        self.proc = None
        if model:
            self.proc = self.run([sys.executable, "-m", "streampi", "node", model, "--join",
                                  f"tcp://{self.server_side}:{port}", "--name", f"n{k}", "--workers", "1",
                                  "--light-threads", "0", "--no-pin", "--log-level", "warning"])

    def run(self, argv: list[str]) -> subprocess.Popen:
        """``argv`` inside the namespace and the cgroup (moved there before it starts)."""
        script = f'echo $$ > {self.cgroup.path}/cgroup.procs && exec ip netns exec {self.ns} "$@"'
        return subprocess.Popen(["sh", "-c", script, "sh", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.here], capture_output=True)
        self.cgroup.remove()


def ctl(info: dict, cmd: str) -> dict:
    from streampi.ctl import request

    return request(info["control"], cmd, timeout=5)


def wait_nodes(info: dict, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(r["state"] == "joined" for r in ctl(info, "workers")["nodes"]) >= n:
            return
        time.sleep(0.2)
    raise SystemExit(f"{n} nodes did not join: {ctl(info, 'workers')}")


def saturate(info: dict, streams: int, seconds: float, warmup: float = 3.0) -> tuple[float, list[dict]]:
    """ok frames/s with ``streams`` queue-policy producers that always have a frame waiting."""
    stop = threading.Event()

    def produce(k: int) -> None:
        with Producer(info["credit_bind"], stream=f"cam{k}") as prod:
            while not stop.is_set():
                try:
                    prod.send(FRAME, timeout=1)
                except TimeoutError:
                    pass

    results: list[dict] = []
    with Subscriber(info["publish"]) as sub:
        wait_subscribed(sub, info["credit_bind"])
        threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(streams)]
        for t in threads:
            t.start()
        t_end = time.monotonic() + warmup + seconds
        t_start = time.monotonic() + warmup
        while time.monotonic() < t_end:
            try:
                r = sub.recv(timeout=0.5)
            except TimeoutError:
                continue
            if time.monotonic() >= t_start and r.get("ok"):
                results.append(r)
        stop.set()
        for t in threads:
            t.join(10)
    return len(results) / seconds, results


def light(info: dict, frames: int, fps: float) -> list[dict]:
    out = []
    with Subscriber(info["publish"]) as sub, Producer(info["credit_bind"], stream="light") as prod:
        wait_subscribed(sub, info["credit_bind"])
        for _ in range(frames):
            prod.send(FRAME, timeout=10)
            try:
                r = sub.recv(timeout=10)
            except TimeoutError:
                continue
            if r.get("ok"):
                out.append(r)
            time.sleep(1 / fps)
    return out


def p50(results: list[dict], key: str) -> float:
    values = [r["timing"][key] for r in results if key in r.get("timing", {})]
    return statistics.median(values) if values else float("nan")


def echo_round_trip(node: Node, sizes: list[int], rounds: int = 40) -> dict[int, float]:
    """p50 ms of sending ``size`` bytes to a DEALER in the node's namespace and back a byte."""
    import zmq

    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port(f"tcp://{node.server_side}")
    code = ("import zmq,sys; s=zmq.Context().socket(zmq.DEALER); s.connect(sys.argv[1]); s.send(b'hi')\n"
            "while True:\n m=s.recv()\n if m==b'bye': break\n s.send(b'k')")
    proc = node.run([sys.executable, "-c", code, f"tcp://{node.server_side}:{port}"])
    ident, _ = router.recv_multipart()
    out = {}
    for size in sizes:
        payload = os.urandom(size)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            router.send_multipart([ident, payload])
            router.recv_multipart()
            times.append((time.perf_counter() - t0) * 1e3)
        out[size] = statistics.median(times)
    router.send_multipart([ident, b"bye"])
    proc.wait(10)
    router.close()
    return out


def kernel_ms(model: str, rounds: int = 200) -> float:
    from streampi.model import Model, resolve_model
    from streampi.preprocess import Preprocessor

    m = Model(resolve_model(model))
    shape = m.image_input()
    pre = Preprocessor(shape, m.input.dtype, scale=m.input.scale, zero_point=m.input.zero_point)
    out = np.empty((1, *shape), m.input.dtype)
    pre(FRAME, "rgb", 640, 480, out=out[0])
    t0 = time.perf_counter()
    for _ in range(rounds):
        pre(FRAME, "rgb", 640, 480, out=out[0])
    return (time.perf_counter() - t0) / rounds * 1e3


def throttled(nodes: list[Node]) -> list[int]:
    """Each node's cgroup: periods in which it was throttled (it wanted more than its quota)."""
    out = []
    for node in nodes:
        stat = dict(line.split() for line in (node.cgroup.path / "cpu.stat").read_text().splitlines())
        out.append(int(stat.get("nr_throttled", 0)))
    return out


def run_mode(args: argparse.Namespace, send: str) -> dict:
    """1, 2, 3 nodes, then 2 and 1 again (drift on a shared machine hits both ends alike)."""
    proc, info = start_server([args.model, "--workers", "0", "--node-bind", "tcp://0.0.0.0:*", "--node-send", send,
                               "--policy", "queue", "--queue-size", "8", "--bind", "tcp://127.0.0.1:*",
                               "--publish", "tcp://127.0.0.1:*"])
    port = int(info["node_bind"].rsplit(":", 1)[1])
    server = psutil.Process(proc.pid)
    nodes: list[Node] = []
    out: dict = {"points": [], "throughput": {}}

    def point(n: int) -> None:
        wait_nodes(info, n)
        cpu0, thr0 = sum(server.cpu_times()[:2]), throttled(nodes)
        fps, res = saturate(info, streams=2 * n + 1, seconds=args.seconds)
        cpu_ms = (sum(server.cpu_times()[:2]) - cpu0) / max(1, len(res)) * 1e3
        thr = [b - a for a, b in zip(thr0, throttled(nodes))]
        sizes = collections.Counter(r["batch"] for r in res)
        out["points"].append({"nodes": n, "fps": fps, "server_cpu_ms_per_frame": cpu_ms, "throttled_periods": thr,
                              "frames_by_batch_size": dict(sizes)})
        print(f"  [{send}] {n} node(s): {fps:.1f} ok frames/s; server CPU {cpu_ms:.2f} ms a frame; periods the "
              f"nodes were throttled (of {int(args.seconds * 10)}): {thr}; frames by batch size "
              f"{dict(sorted(sizes.items()))}", flush=True)

    try:
        for n in (1, 2, 3):
            quota = args.light_quota if n == 1 else args.quota
            nodes.append(Node(len(nodes) + 1 + (10 if send == "tensor" else 0), args.model, port, quota))
            if n == 1:  # light load first: the hop (the node under --light-quota: the hop, not CFS throttling)
                wait_nodes(info, 1)
                res = light(info, args.light_frames, 4.0)
                out["light"] = {k: p50(res, k) for k in ("hop_ms", "node_ms", "infer_ms", "pre_ms", "total_ms")}
                lt = out["light"]
                print(f"  [{send}] light load, 1 node: p50 hop {lt['hop_ms']:.2f} ms over the node's own "
                      f"{lt['node_ms']:.2f} ms (kernel {lt['pre_ms']:.2f} ms, invoke {lt['infer_ms']:.2f} ms); "
                      f"total {lt['total_ms']:.2f} ms (node quota {args.light_quota:g} core)", flush=True)
                nodes[0].cgroup.set(args.quota)
                saturate(info, streams=3, seconds=4, warmup=1)  # unmeasured: the runner's first batches of 4
            point(n)
        for n in (2, 1):
            nodes.pop().close()
            time.sleep(1)
            point(n)
    finally:
        for node in nodes:
            node.close()
        proc.terminate()
        proc.wait(30)
    for n in (1, 2, 3):
        fps = [p["fps"] for p in out["points"] if p["nodes"] == n]
        out["throughput"][n] = sum(fps) / len(fps)
    out["scaling_3_over_1"] = out["throughput"][3] / out["throughput"][1] if out["throughput"][1] else float("nan")
    out["server_cpu_ms_per_frame"] = statistics.median(p["server_cpu_ms_per_frame"] for p in out["points"])
    print(f"  [{send}] mean ok frames/s: " + ", ".join(f"{n} node(s) {v:.1f}" for n, v in out["throughput"].items())
          + f"; 3 nodes / 1 node {out['scaling_3_over_1']:.2f}x (target >= 2.5x)", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenet_v2_int8")
    ap.add_argument("--quota", type=float, default=0.3, help="each node's share of one core")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per point")
    ap.add_argument("--light-frames", type=int, default=60, help="frames at light load (4 a second)")
    ap.add_argument("--light-quota", type=float, default=1.0, help="the node's share of a core at light load")
    ap.add_argument("--send", choices=["frame", "tensor", "both"], default="both", help="what crosses the link")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/cluster.py needs root (network namespaces, veth pairs, cgroups)", file=sys.stderr)
        return 2
    runtime = describe_runtime(None)
    load = os.getloadavg()
    print(f"CPU: {runtime['cpu']} ({runtime['arch']}, {os.cpu_count()} cores, load average {load[0]:.1f} at the "
          f"start), {runtime['backend']} {runtime['backend_version']}; model {args.model}, 640x480 RGB frames; "
          f"each node: 1 worker, {args.quota:g} of a core", flush=True)
    figures: dict = {"cpu": runtime["cpu"], "cores": os.cpu_count(), "load_average": load, "quota": args.quota,
                     "model": args.model, "modes": {}}
    for send in (["frame", "tensor"] if args.send == "both" else [args.send]):
        figures["modes"][send] = run_mode(args, send)
    probe = Node(99, "", 0, args.quota)
    try:
        trips = echo_round_trip(probe, [150_528, 921_600])
    finally:
        probe.close()
    k_ms = kernel_ms(args.model)
    figures["link"] = {"tensor_150528_B_ms": trips[150_528], "frame_921600_B_ms": trips[921_600],
                       "kernel_ms_one_core": k_ms}
    print(f"the link: round trip p50 of a 224x224x3 int8 tensor (150,528 B) {trips[150_528]:.2f} ms, of a 640x480 RGB "
          f"frame (921,600 B) {trips[921_600]:.2f} ms over the veth; the kernel takes {k_ms:.2f} ms a frame on one "
          f"core of this CPU")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
