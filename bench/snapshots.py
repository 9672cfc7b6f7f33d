#!/usr/bin/env python3
"""Snapshots encoded on the server's loop (inline) against in the encoder thread.

    python bench/snapshots.py [--rounds 4] [--seconds 6] [--objects 20] [--fps 15]

One real server (``shapes_detector``, events on, one worker), two streams:

* ``heavy``: 1280×720 I420 frames (:class:`streampi.synthetic.MovingScenes` with sensor noise,
  what a camera's ``lores``/PyAV stream gives) at ``--fps``; the model's answers go out as
  usual, and the events engine sees ``--objects`` boxes wandering over the view in each of
  them (``bench/tracking.py``'s crowd: 5 % missed, scores drawn at random, so the objects'
  best scores keep rising and snapshots are asked for as often as the rate limit lets);
* ``light``: a 64×48 frame at a time, sent once the previous one is answered (latest policy):
  its end-to-end latency is what a stream beside the heavy one sees.

Rounds alternate ABBA between the modes (``inline``: the engine encodes on the loop as it does
when used alone; ``thread``: the encoder thread, what an attached engine does; ``none``: no
snapshots at all, the tracker and the events alone), each on
fresh heavy stream names so that every round starts with new objects. Per round: the light
stream's p50/p99, the loop's time per heavy frame spent in the events engine (its listener,
and in thread mode the callbacks that take the encoded snapshots back: "landing"), wall and
the loop thread's CPU, the snapshots made and their mean encode time. Before the rounds: what the copy of a frame costs against its encode.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracking import crowd  # noqa: E402

from streampi.client import Producer, Subscriber  # noqa: E402
from streampi.events import encode_snapshot  # noqa: E402
from streampi.serving import ServerOptions  # noqa: E402
from streampi.synthetic import MovingScenes  # noqa: E402
from streampi.testing import ServerThread, wait_subscribed  # noqa: E402

W, H = 1280, 720


def i420_of(rgb: np.ndarray) -> bytes:
    f = rgb.astype(np.float32)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    u = 128 - 0.168736 * f[..., 0] - 0.331264 * f[..., 1] + 0.5 * f[..., 2]
    v = 128 + 0.5 * f[..., 0] - 0.418688 * f[..., 1] - 0.081312 * f[..., 2]
    h, w = y.shape
    planes = [y] + [c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (u, v)]
    return b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{info['Model name'].strip()}, {info['CPU(s)'].strip()} CPUs ({platform.machine()})"
    except (OSError, subprocess.CalledProcessError, KeyError):
        return platform.processor() or platform.machine()


def median_us(fn, repeat: int = 30) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


class Meter:
    """The events engine's time on the loop for the heavy streams, per round."""

    def __init__(self, st: ServerThread, dets: list[list[dict]]) -> None:
        self.st, self.engine, self.dets = st, st.server.events, dets
        self.loop_s, self.land_s, self.cpu_s, self.frames = 0.0, 0.0, 0.0, 0
        st.call(self._wire)

    def _wire(self) -> None:
        engine = self.engine
        engine._remove_listener()
        engine._remove_listener = self.st.server.add_listener(self.listen)
        land = engine._land

        def timed_land(job):
            t0, c0 = time.perf_counter(), time.thread_time()
            land(job)
            self.land_s += time.perf_counter() - t0
            self.cpu_s += time.thread_time() - c0
        engine._land = timed_land

    def listen(self, result: dict, frame) -> None:
        if result.get("stream", "").startswith("heavy") and result.get("ok"):
            result = {**result, "detections": self.dets[result["seq"] % len(self.dets)]}
            self.frames += 1
        t0, c0 = time.perf_counter(), time.thread_time()
        self.engine.on_result(result, frame)
        self.loop_s += time.perf_counter() - t0
        self.cpu_s += time.thread_time() - c0

    def take(self) -> tuple[float, float, float, int]:
        out = self.st.call(lambda: (self.loop_s, self.land_s, self.cpu_s, self.frames))
        self.st.call(self._reset)
        return out

    def _reset(self) -> None:
        self.loop_s, self.land_s, self.cpu_s, self.frames = 0.0, 0.0, 0.0, 0


def heavy(st: ServerThread, stream: str, frames: list[bytes], fps: float, seconds: float, stop: threading.Event):
    with Producer(st.frames, stream=stream) as prod:
        t0 = time.monotonic()
        for k in range(int(seconds * fps)):
            if stop.is_set():
                break
            prod.send(frames[k % len(frames)], fmt="i420", width=W, height=H)
            time.sleep(max(0.0, t0 + (k + 1) / fps - time.monotonic()))


def light(st: ServerThread, sub: Subscriber, prod: Producer, seconds: float) -> list[float]:
    img = np.full((48, 64, 3), 90, np.uint8)
    out: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(out) < 100_000:
        t0 = time.perf_counter()
        seq = prod.send(img)
        while True:
            r = sub.recv(timeout=10)
            if r["seq"] == seq:
                break
        out.append((time.perf_counter() - t0) * 1e3)
        time.sleep(0.01)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="rounds of each mode (ABBA order)")
    ap.add_argument("--seconds", type=float, default=6.0, help="length of a round")
    ap.add_argument("--objects", type=int, default=20, help="objects the engine sees in each heavy frame")
    ap.add_argument("--fps", type=float, default=15.0, help="the heavy stream's frame rate")
    ap.add_argument("--modes", default="inline,thread,none",
                    help="modes to alternate (none: no snapshots at all, the engine's floor)")
    args = ap.parse_args()

    print(f"CPU: {cpu_name()}; Python {platform.python_version()}")
    scenes = MovingScenes(seed=7, width=W, height=H, lanes=4, objects=12, radius=(0.06, 0.08))
    rgbs = [img for img, _ in scenes.frames()][:45]
    frames = [i420_of(img) for img in rgbs]
    dets = crowd(args.objects, 600, seed=1, width=W, height=H)

    box = [400.0, 200.0, 520.0, 330.0]
    view = memoryview(frames[0])
    copy_us = median_us(lambda: bytes(view))
    enc_us = median_us(lambda: encode_snapshot("i420", W, H, view, box))
    print(f"\n== a snapshot of a 1280x720 I420 frame (median of 30) ==\n"
          f"copy for the thread {copy_us:8.0f} us\nencode             {enc_us:8.0f} us  ({enc_us / copy_us:.0f}x the copy)")

    opts = ServerOptions(workers=1, events=True, events_max_missed_s=600.0)
    modes = args.modes.split(",")
    order = [m for k in range(args.rounds) for m in (modes if k % 2 == 0 else modes[::-1])]
    rows: dict[str, list[tuple]] = {m: [] for m in modes}
    with ServerThread("shapes_detector", opts) as st, Subscriber(st.results, streams=["light"]) as sub, \
            Producer(st.frames, stream="light") as prod:
        wait_subscribed(sub, st.frames)
        meter = Meter(st, dets)
        light(st, sub, prod, 1.0)  # warm-up
        print(f"\n== {len(order)} rounds of {args.seconds:.0f} s, {args.objects} objects on the heavy stream "
              f"at {args.fps:g} fps ==")
        print(f"{'round':>5} {'mode':>7} {'light p50':>10} {'light p99':>10} {'loop/frame':>11} "
              f"{'(landing)':>10} {'loop CPU':>9} {'snapshots':>9} {'encode':>8}")
        for r, mode in enumerate(order):
            st.call(setattr, st.server.events, "_threaded", mode == "thread")
            st.call(setattr, st.server.events.config, "snapshot_count", 0 if mode == "none" else 50)
            meter.take()
            before = dict(st.stats)
            stop = threading.Event()
            t = threading.Thread(target=heavy, args=(st, f"heavy-{r}", frames, args.fps, args.seconds, stop))
            t.start()
            try:
                lat = light(st, sub, prod, args.seconds)
            finally:
                stop.set()
                t.join()
            time.sleep(0.3)  # the last encodes land
            loop_s, land_s, cpu_s, nframes = meter.take()
            stats = dict(st.stats)
            snaps = stats.get("events.snapshots", 0) - before.get("events.snapshots", 0)
            enc = (stats.get("events.snapshot_us", 0) - before.get("events.snapshot_us", 0)) / max(1, snaps)
            p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
            per_frame = (loop_s + land_s) / max(1, nframes) * 1e6
            land, cpu = land_s / max(1, nframes) * 1e6, cpu_s / max(1, nframes) * 1e6
            rows[mode].append((p50, p99, per_frame, cpu, snaps, enc))
            print(f"{r:>5} {mode:>7} {p50:8.2f}ms {p99:8.2f}ms {per_frame:9.0f}us {land:8.0f}us {cpu:7.0f}us "
                  f"{snaps:>9} {enc:6.0f}us")
    print(f"\n== medians over the rounds (ratio: to {modes[0]}) ==")
    for k, name in enumerate(("light p50 (ms)", "light p99 (ms)", "loop per heavy frame (us)",
                              "loop CPU per heavy frame (us)")):
        meds = {m: statistics.median(row[k] for row in rows[m]) for m in modes}
        print(f"{name:>30}: " + "  ".join(f"{m} {v:8.2f} ({v / meds[modes[0]]:.2f}x)" for m, v in meds.items()))


if __name__ == "__main__":
    main()
