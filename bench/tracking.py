#!/usr/bin/env python3
"""Object tracking: streampi's greedy IoU tracker against norfair, and what snapshots cost.

    python bench/tracking.py [--frames 600] [--seeds 4] [--no-server]

* CPU per frame on 20 objects: 20 boxes moving across a 1280×720 view (jittered, 5 % missed
  per frame), the same detections to both trackers; process CPU time per frame, single thread;
* behaviour on procedural scenes whose tracks are known (:class:`streampi.synthetic.MovingScenes`):
  (a) the bundled ``shapes_detector``'s own detections, through a real server (``--no-server``
  skips it), and (b) the ground truth made harder: 15 % missed, 3 px jitter, stray detections;
  counted by :func:`streampi.tracking.score_tracks`: id switches, fragments (an object cut
  into several tracks), missed objects, false tracks, coverage;
* norfair's install footprint (what the events feature would add to a Pi's install);
* what an event costs the server's loop: the engine's listener per frame on 20 objects, and a
  snapshot per frame format and size (simplejpeg), against copying the frame for later.

norfair is looked for where Python finds it. It declares ``numpy<2`` and ``rich<15``, which a
plain ``pip install norfair`` would force onto streampi's environment, so install it beside it:

    pip install --target /tmp/norfair --no-deps norfair==2.3.0 filterpy
    PYTHONPATH=/tmp/norfair python bench/tracking.py

(SciPy and Matplotlib, which filterpy needs, come with streampi's dev extra.) Its code runs on
NumPy 2 as it is; the install footprint counts what a normal install of it pulls.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time

import numpy as np

from streampi import protocol
from streampi.events import EventsConfig, EventsEngine, encode_snapshot
from streampi.synthetic import LABELS, MovingScenes
from streampi.tracking import Tracker, TrackerConfig, score_tracks

FPS = 15.0


# -- detections ------------------------------------------------------------------------------
def crowd(n_objects: int, frames: int, seed: int, width: int = 1280, height: int = 720) -> list[list[dict]]:
    """``n_objects`` boxes bouncing around the view, each frame's detections (5 % missed)."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(40, 90, (n_objects, 2))
    pos = rng.uniform(0, 1, (n_objects, 2)) * (np.array([width, height]) - size)
    vel = rng.uniform(-8, 8, (n_objects, 2))
    labels = rng.integers(0, len(LABELS), n_objects)
    out = []
    for _ in range(frames):
        pos += vel
        for axis, limit in ((0, width), (1, height)):
            bounce = (pos[:, axis] < 0) | (pos[:, axis] + size[:, axis] > limit)
            vel[bounce, axis] *= -1
            pos[:, axis] = np.clip(pos[:, axis], 0, limit - size[:, axis])
        dets = []
        for k in range(n_objects):
            if rng.random() < 0.05:
                continue
            x0, y0 = pos[k] + rng.normal(0, 1.5, 2)
            dets.append({"box": [float(x0), float(y0), float(x0 + size[k, 0]), float(y0 + size[k, 1])],
                         "score": float(rng.uniform(0.5, 0.95)), "class": int(labels[k]),
                         "label": LABELS[labels[k]]})
        out.append(dets)
    return out


def hard_truth(scenes: MovingScenes, seed: int) -> list[list[dict]]:
    rng = np.random.default_rng(seed)
    frames = []
    for truth in scenes.truth():
        dets = []
        for _, label, box, visible in truth:
            if visible < 0.3 or rng.random() < 0.15:
                continue
            b = np.asarray(box) + rng.normal(0, 3.0, 4)
            dets.append({"box": b.tolist(), "score": float(rng.uniform(0.3, 0.95)), "class": int(label),
                         "label": LABELS[label]})
        if rng.random() < 0.08:
            x, y = rng.uniform(0, scenes.width - 30), rng.uniform(0, scenes.height - 30)
            dets.append({"box": [x, y, x + 25, y + 25], "score": 0.35, "class": 3, "label": "cross"})
        frames.append(dets)
    return frames


def detector_frames(seeds: list[int]) -> dict[int, list[list[dict]]]:
    """The bundled detector's detections of each seed's scene, through a real server."""
    from streampi.client import Producer, Subscriber
    from streampi.serving import ServerOptions
    from streampi.testing import ServerThread, wait_subscribed

    out = {}
    with ServerThread("shapes_detector", ServerOptions(workers=1, policy="queue")) as st:
        for seed in seeds:
            frames = [img for img, _ in MovingScenes(seed=seed, objects=8).frames()]
            stream = f"scene{seed}"
            with Subscriber(st.results, streams=[stream]) as sub, Producer(st.frames, stream=stream) as prod:
                wait_subscribed(sub, st.frames)
                for img in frames:
                    prod.send(img)
                answers = sorted((sub.recv(timeout=60) for _ in frames), key=lambda r: r["seq"])
            out[seed] = [r["detections"] for r in answers]
    return out


# -- the trackers, behind one face -----------------------------------------------------------
class Ours:
    name = "streampi (greedy IoU)"

    def __init__(self) -> None:
        self.tracker = Tracker(TrackerConfig(min_hits=2, max_missed=15, max_missed_s=1e9))

    def step(self, dets: list[dict], t: float) -> list[tuple]:
        self.tracker.update(dets, t)
        return [(tr.number, tr.box.tolist()) for tr in self.tracker.objects if tr.missed == 0]


class Norfair:
    def __init__(self, distance: str = "iou") -> None:
        import norfair

        self.norfair = norfair
        self.name = f"norfair {getattr(norfair, '__version__', '')} ({distance})"
        # the same rules as ours: IoU >= 0.2 (distance 1 - IoU <= 0.8), an object after its second
        # hit, gone after 15 frames without it; euclidean: pixels between the boxes' corner vectors
        threshold = 0.8 if distance == "iou" else 80
        self.tracker = norfair.Tracker(distance_function=distance, distance_threshold=threshold,
                                       hit_counter_max=15, initialization_delay=1)

    def step(self, dets: list[dict], t: float) -> list[tuple]:
        nd = [self.norfair.Detection(np.array([d["box"][:2], d["box"][2:]], dtype=np.float64),
                                     scores=np.array([d["score"], d["score"]]), label=d.get("label"))
              for d in dets]
        objs = self.tracker.update(detections=nd)
        seen = {id(d) for d in nd}
        return [(o.id, o.estimate.reshape(-1).tolist()) for o in objs if id(o.last_detection) in seen]


def trackers(have_norfair: bool):
    makers = [Ours]
    if have_norfair:
        makers += [lambda: Norfair("iou"), lambda: Norfair("euclidean")]
    return makers


def cpu_per_frame(make, frames: list[list[dict]]) -> float:
    tr = make()
    for k, dets in enumerate(frames[:30]):  # warm-up
        tr.step(dets, k / FPS)
    tr = make()
    t0 = time.process_time()
    for k, dets in enumerate(frames):
        tr.step(dets, k / FPS)
    return (time.process_time() - t0) / len(frames) * 1e6


def behaviour(make, frame_sets: list[tuple[list, list]]) -> dict:
    total: dict = {}
    for truth, dets in frame_sets:
        tr = make()
        tracked = [tr.step(d, k / FPS) for k, d in enumerate(dets)]
        for key, value in score_tracks(truth, tracked).as_dict().items():
            total[key] = total.get(key, 0) + value
    total["coverage"] = round(total["coverage"] / len(frame_sets), 4)
    return total


# -- footprint -------------------------------------------------------------------------------
def installed_mib(dist: str) -> float | None:
    from importlib import metadata

    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        return None
    total = 0
    for f in files:
        try:
            total += os.path.getsize(f.locate())
        except OSError:
            pass
    return total / 2**20


# -- snapshots -------------------------------------------------------------------------------
def median_us(fn, repeat: int) -> float:
    """Median CPU time of this thread per call (a shared machine's waits not counted)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return float(np.median(times)) * 1e6


def snapshot_costs(repeat: int) -> list[tuple[str, float, float]]:
    import simplejpeg

    rows = []
    scene = MovingScenes(seed=1, objects=3, width=1280, height=720)
    big = next(f for f, truth in scene.frames() if len(truth) >= 2)
    for w, h in ((640, 480), (1280, 720)):
        rgb = np.ascontiguousarray(big[:h, :w])
        y = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.uint8)
        i420 = y.tobytes() + bytes(w * h // 2)
        wires = {"rgb": rgb.tobytes(), "i420": i420, "jpeg": simplejpeg.encode_jpeg(rgb, quality=90)}
        box = [w * 0.3, h * 0.3, w * 0.6, h * 0.7]
        for fmt, data in wires.items():
            enc = median_us(lambda fmt=fmt, data=data, w=w, h=h, box=box: encode_snapshot(fmt, w, h, data, box), repeat)
            copy = median_us(lambda data=data: bytes(memoryview(data)), repeat)
            rows.append((f"{fmt} {w}x{h}", enc, copy))
    return rows


def engine_cost(frames: list[list[dict]]) -> tuple[float, dict]:
    """CPU per frame of the events engine's listener (tracking, events, snapshots as they come)."""
    published = []
    engine = EventsEngine(EventsConfig(), publish=lambda topic, payload: published.append(topic))
    rgb = np.zeros((720, 1280, 3), np.uint8)
    data = memoryview(rgb.tobytes())
    t0 = time.process_time()
    for k, dets in enumerate(frames):
        msg = protocol.FrameMessage("cam", k, "rgb", data, 1280, 720, recv=1000.0 + k / FPS)
        engine.on_result({"stream": "cam", "seq": k, "ok": True, "detections": dets}, msg)
        if k % 4 == 3:
            engine.tick(1000.0 + k / FPS)
    per_frame = (time.process_time() - t0) / len(frames) * 1e6
    engine.close()
    return per_frame, {t: published.count(t) for t in set(published)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=600, help="frames of the 20-object CPU run")
    ap.add_argument("--seeds", type=int, default=4, help="procedural scenes per behaviour run")
    ap.add_argument("--repeat", type=int, default=30, help="snapshot encodes per figure")
    ap.add_argument("--no-server", action="store_true", help="skip the bundled detector's run through a server")
    args = ap.parse_args()
    have_norfair = importlib.util.find_spec("norfair") is not None
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}, NumPy {np.__version__}")
    if not have_norfair:
        print("norfair: not installed (pip install norfair): streampi's tracker alone")

    print("\n== CPU per frame, 20 objects (process CPU time, µs) ==")
    frames = crowd(20, args.frames, seed=1)
    base = None
    for make in trackers(have_norfair):
        us = cpu_per_frame(make, frames)
        base = base or us
        print(f"  {make().name:<36} {us:9.0f} µs   {us / base:5.1f}×")

    seeds = list(range(1, args.seeds + 1))
    sets = {"hard ground truth (15 % missed, 3 px jitter, strays)":
            [(list(MovingScenes(seed=s, objects=8).truth()), hard_truth(MovingScenes(seed=s, objects=8), s))
             for s in seeds]}
    if not args.no_server:
        found = detector_frames(seeds)
        sets = {f"shapes_detector through the server ({len(seeds)} scenes, 8 shapes each)":
                [(list(MovingScenes(seed=s, objects=8).truth()), found[s]) for s in seeds], **sets}
    for title, frame_sets in sets.items():
        print(f"\n== behaviour: {title} ==")
        print(f"  {'tracker':<36} {'objects':>7} {'missed':>6} {'id sw.':>6} {'frag.':>6} {'false':>6} {'cover':>6}")
        for make in trackers(have_norfair):
            r = behaviour(make, frame_sets)
            print(f"  {make().name:<36} {r['objects']:7d} {r['missed']:6d} {r['id_switches']:6d} "
                  f"{r['fragments']:6d} {r['false_tracks']:6d} {r['coverage']:6.3f}")

    print("\n== install footprint (installed here, MiB) ==")
    for dist in ("norfair", "filterpy", "scipy", "matplotlib", "rich"):
        mib = installed_mib(dist)
        print(f"  {dist:<12} {'not installed' if mib is None else f'{mib:7.1f}'}")

    print("\n== what events cost the server's loop ==")
    us, published = engine_cost(frames)
    print(f"  events engine per frame, 20 objects, 1280x720 rgb: {us:7.0f} µs CPU "
          f"({', '.join(f'{v} {k}' for k, v in sorted(published.items()))})")
    print(f"  {'snapshot (median µs)':<24} {'encode':>8} {'copy for later':>15}")
    for name, enc, copy in snapshot_costs(args.repeat):
        print(f"  {name:<24} {enc:8.0f} {copy:15.0f}")


if __name__ == "__main__":
    sys.exit(main())
