"""``streampi demo``: the whole pipeline on the bundled model, then a summary.

Starts ``streampi serve`` as a child process, sends synthetic camera frames from
:mod:`streampi.synthetic` at a fixed rate (open loop) on several streams, receives every
result, and reports frames sent/answered/dropped, throughput, end-to-end latency and
accuracy against the generator's ground truth.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .client import Producer, Subscriber
from .synthetic import LABELS, ShapesGenerator
from .testing import start_server


@dataclass
class DemoReport:
    sent: int = 0
    results: dict = field(default_factory=dict)  # (stream, seq) -> (result, t_received)
    truth: dict = field(default_factory=dict)  # (stream, seq) -> (label, t_sent)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        answered = len(self.results)
        ok = [(k, r, t) for k, (r, t) in self.results.items() if r["ok"]]
        codes: dict[str, int] = {}
        for r, _ in self.results.values():
            if not r["ok"]:
                codes[r["error"]["code"]] = codes.get(r["error"]["code"], 0) + 1
        lat = np.array([(t - self.truth[k][1]) * 1e3 for k, r, t in ok]) if ok else np.array([np.nan])
        correct = sum(r["top"][0][1] == LABELS[self.truth[k][0]] for k, r, _ in ok)
        return {
            "sent": self.sent, "answered": answered, "ok": len(ok), "dropped": codes.get("dropped", 0),
            "errors": {c: n for c, n in codes.items() if c != "dropped"}, "unanswered": self.sent - answered,
            "throughput_fps": len(ok) / self.seconds if self.seconds else 0.0,
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
            "accuracy": correct / len(ok) if ok else float("nan"),
        }


def run_demo(model: str = "shapes_int8", seconds: float = 10.0, fps: float = 30.0, streams: int = 2,
             size: tuple[int, int] = (320, 240), serve_args: list[str] | None = None, out=print) -> dict:
    """Run the demo; return the summary (also printed)."""
    proc, info = start_server([model, "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               *(serve_args or [])])
    out(f"server ready: model {info['model']} on {info['backend']}, {len(info['workers'])} workers, "
        f"frames in at {info['bind']}, results at {info['publish']}")
    report = DemoReport()
    sub = Subscriber(info["publish"])
    stop_rx = threading.Event()

    def receive() -> None:
        while not stop_rx.is_set():
            try:
                r = sub.recv(timeout=0.2)
            except TimeoutError:
                continue
            if r["stream"].startswith("demo"):
                report.results[(r["stream"], r["seq"])] = (r, time.time())

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    gen = ShapesGenerator(seed=int(time.time()))
    pool = [gen.frame(*size) for _ in range(64)]
    prods = [Producer(info["bind"], stream=f"demo{i}") for i in range(streams)]
    time.sleep(0.5)  # let the subscription reach the publisher before the first result
    out(f"sending {streams} streams of {size[0]}×{size[1]} RGB frames at {fps:g} fps each for {seconds:g} s …")
    t0 = time.time()
    interval = 1.0 / fps
    k = 0
    next_report = t0 + 1
    try:
        while (now := time.time()) - t0 < seconds:
            due = t0 + k * interval
            if due > now:
                time.sleep(due - now)
            for i, p in enumerate(prods):
                frame, label = pool[(k * streams + i) % len(pool)]
                seq = p.send(frame, ts=due)
                report.truth[(p.stream, seq)] = (label, due)
                report.sent += 1
            k += 1
            if time.time() >= next_report:
                next_report += 1
                out(f"  {time.time() - t0:4.1f} s  sent {report.sent:6d}  answered {len(report.results):6d}")
        report.seconds = time.time() - t0
        deadline = time.time() + 15
        while len(report.results) < report.sent and time.time() < deadline:
            time.sleep(0.05)
    finally:
        stop_rx.set()
        rx.join(2)
        for p in prods:
            p.close()
        sub.close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    s = report.summary()
    s["server_exit_code"] = code
    out("")
    out(f"frames sent      {s['sent']}")
    out(f"answered         {s['answered']}  (ok {s['ok']}, dropped {s['dropped']}, errors {sum(s['errors'].values())}"
        f", unanswered {s['unanswered']})")
    out(f"throughput       {s['throughput_fps']:.1f} frames/s")
    out(f"latency          p50 {s['latency_ms']['p50']:.2f} ms   p99 {s['latency_ms']['p99']:.2f} ms (send → result)")
    out(f"accuracy         {s['accuracy'] * 100:.2f} % against the generator's ground truth")
    out(f"server exit code {code}")
    return s
