"""The demo behind ``streampi demo``: the whole pipeline on the bundled model, then a summary.

Starts ``streampi serve`` as a child process, sends synthetic camera frames from
:mod:`streampi.synthetic` at a fixed rate (open loop) on several streams, receives every
result, and reports frames sent/answered/dropped, throughput, end-to-end latency and
accuracy against the generator's ground truth. For a detector (``--model
shapes_detector``) the frames are multi-shape scenes, the accuracy is mAP@0.5 against the
drawn boxes, and a picture of frames with their detections is written
(``demo-detections.png``; needs Pillow: ``pip install 'streampi[demo]'``).
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..client import Producer, Subscriber
from ..serving.launch import start_server, wait_subscribed
from ..synthetic import LABELS, ScenesGenerator, ShapesGenerator

DETECTION_KINDS = ("yolo", "ssd_postprocess", "anchors")


def decoder_kind(model: str) -> str:
    """The decoder ``streampi serve`` will pick for ``model`` (sidecar or auto-selection)."""
    from ..config import load_config
    from ..decoders import make_decoder
    from ..model import Model, resolve_model

    path = resolve_model(model)
    return make_decoder(Model(path).outputs, load_config(path)).kind


@dataclass
class DemoReport:
    sent: int = 0
    replaced: set = field(default_factory=set)  # (stream, seq) replaced at the camera (no credit): never sent
    results: dict = field(default_factory=dict)  # (stream, seq) -> (result, t_received)
    truth: dict = field(default_factory=dict)  # (stream, seq) -> (label or scene index, t_sent)
    seconds: float = 0.0
    scenes: list | None = None  # detection mode: the (frame, boxes, classes) pool

    def summary(self) -> dict[str, Any]:
        answered = len(self.results)
        ok = [(k, r, t) for k, (r, t) in self.results.items() if r["ok"]]
        codes: dict[str, int] = {}
        for r, _ in self.results.values():
            if not r["ok"]:
                codes[r["error"]["code"]] = codes.get(r["error"]["code"], 0) + 1
        lat = np.array([(t - self.truth[k][1]) * 1e3 for k, r, t in ok]) if ok else np.array([np.nan])
        if self.scenes is not None:
            from ..evaluation import mean_average_precision

            dets = [r.get("detections", []) for _, r, _ in ok]
            truths = [self.scenes[self.truth[k][0]][1:] for k, _, _ in ok]
            map50 = mean_average_precision(dets, truths)[0] if ok else float("nan")
        correct = 0 if self.scenes is not None else sum(
            bool(r.get("top")) and r["top"][0][1] == LABELS[self.truth[k][0]] for k, r, _ in ok)
        return {
            "sent": self.sent, "answered": answered, "ok": len(ok), "dropped": codes.get("dropped", 0),
            "errors": {c: n for c, n in codes.items() if c != "dropped"}, "replaced_at_camera": len(self.replaced),
            "unanswered": self.sent - len(self.replaced) - answered,
            "throughput_fps": len(ok) / self.seconds if self.seconds else 0.0,
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
            **({"map50": map50} if self.scenes is not None else
               {"accuracy": correct / len(ok) if ok else float("nan")}),
        }


def run_demo(model: str = "shapes_int8", seconds: float = 10.0, fps: float = 30.0, streams: int = 2,
             size: tuple[int, int] = (320, 240), serve_args: list[str] | None = None, out=print,
             picture: str | None = "demo-detections.png") -> dict:
    """Run the demo; return the summary (also printed)."""
    detecting = decoder_kind(model) in DETECTION_KINDS
    proc, info = start_server([model, "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               *(serve_args or [])])
    out(f"server ready: model {info['model']} on {info['backend']}, {len(info['workers'])} workers, "
        f"frames in at {info['bind']}, results at {info['publish']}")
    report = DemoReport()
    sub = Subscriber(info["publish"])
    wait_subscribed(sub, info["credit_bind"])  # results published before the subscription arrives are lost
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
    if detecting:
        scene_gen = ScenesGenerator(seed=int(time.time()))
        report.scenes = [scene_gen.scene(*size) for _ in range(64)]
        pool = [(frame, k) for k, (frame, _, _) in enumerate(report.scenes)]
    else:
        gen = ShapesGenerator(seed=int(time.time()))
        pool = [gen.frame(*size) for _ in range(64)]
    prods = [Producer(info["credit_bind"], stream=f"demo{i}",
                      on_drop=lambda seq, s=f"demo{i}": report.replaced.add((s, seq))) for i in range(streams)]
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
        while len(report.results) + len(report.replaced) < report.sent and time.time() < deadline:
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
        f", unanswered {s['unanswered']}); replaced at the camera for want of credit {s['replaced_at_camera']}")
    out(f"throughput       {s['throughput_fps']:.1f} frames/s")
    out(f"latency          p50 {s['latency_ms']['p50']:.2f} ms   p99 {s['latency_ms']['p99']:.2f} ms (send → result)")
    if detecting:
        out(f"mAP@0.5          {s['map50'] * 100:.2f} % against the boxes the generator drew")
        if picture:
            s["picture"] = draw_picture(report, picture, out)
    else:
        out(f"accuracy         {s['accuracy'] * 100:.2f} % against the generator's ground truth")
    out(f"server exit code {code}")
    return s


def draw_picture(report: DemoReport, path: str, out=print, count: int = 6) -> str | None:
    """Write ``count`` answered frames in a grid, detections drawn with label and score."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        out("picture          skipped: Pillow is not installed (pip install 'streampi[demo]')")
        return None
    shown = sorted((k for k, (r, _) in report.results.items() if r["ok"]), key=lambda k: (k[1], k[0]))[:count]
    if not shown:
        return None
    h, w = report.scenes[0][0].shape[:2]
    cols = min(3, len(shown))
    rows = -(-len(shown) // cols)
    sheet = Image.new("RGB", (cols * (w + 4) + 4, rows * (h + 4) + 4), (30, 30, 30))
    for n, key in enumerate(shown):
        frame = report.scenes[report.truth[key][0]][0]
        tile = Image.fromarray(frame)
        draw = ImageDraw.Draw(tile)
        for d in report.results[key][0].get("detections", []):
            x0, y0, x1, y1 = d["box"]
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 0), width=2)
            text = f"{d.get('label') or d['class']} {d['score']:.2f}"
            tw = draw.textlength(text)
            ty = y0 - 12 if y0 >= 12 else y1
            draw.rectangle([x0, ty, x0 + tw + 4, ty + 11], fill=(255, 255, 0))
            draw.text((x0 + 2, ty), text, fill=(0, 0, 0))
        sheet.paste(tile, (4 + (n % cols) * (w + 4), 4 + (n // cols) * (h + 4)))
    sheet.save(path)
    out(f"picture          {path} ({len(shown)} frames with their detections)")
    return path
