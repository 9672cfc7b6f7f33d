#!/usr/bin/env python3
"""The motion gate's cost against the kernel pass of the same frame, and what it saves, in one run.

    python bench/motion.py [--repeat 300] [--json PATH]

Cost: for each line, ``MotionGate.check`` of a frame (the whole call: checks, sample positions,
the compiled pass) and the compiled pass alone (``_motion.motion_pass``), timed interleaved with
``Preprocessor`` writing the same frame into a 224×224×3 int8 slot (``streampi.preprocess``, the
server's kernel pass; bilinear, as the brief's target names it, and the server's default ``auto``,
which picks area averaging for these shrinks). The gate alternates between two frames of the
procedural view (an object moves between them), so the background is updated as on a camera.
Each callable alternates between the two frames. Median µs per frame and the gate's share of the
kernel pass, twice: "cold" (32 MB written before each timed call, so the frame comes from memory,
as a frame fresh from a camera or a decoder mostly does) and "warm" (the frame likely in a cache).
The target is ≤ 10 % for 1280×720 I420 (bilinear).

Saving: the gate with its defaults over the procedural view of ``streampi.sources.scene`` (120 s
at 5 fps, long idle stretches under drifting light and sensor noise, four movements): frames
sent for each reason, idle frames not sent, frames of a movement's first second missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import simplejpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streampi._ext import _motion  # noqa: E402
from streampi.preprocess import KERNEL_BUILD, Preprocessor  # noqa: E402
from streampi.runtime_info import cpu_model  # noqa: E402
from streampi.sources import Frame  # noqa: E402
from streampi.sources.convert import from_rgb  # noqa: E402
from streampi.sources.motion import MotionGate  # noqa: E402
from streampi.sources.scene import MotionScene  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/kernels.py: the interleaved timer
from kernels import timeit_interleaved  # noqa: E402

SCALE, ZP = 2 / 255, -1  # the bundled int8 models' input quantization ([-1, 1])


_FLUSH = np.zeros(32 << 20, np.uint8)  # larger than any last-level cache here or on a Pi


def flush() -> None:
    """Write 32 MB (untimed), so that the next call finds its frame in memory and not in a cache,
    as a frame fresh from a camera or a decoder mostly is."""
    _FLUSH[::64] += 1


def cost_line(w: int, h: int, fmt: str, repeat: int, cold: bool) -> dict:
    scene = MotionScene(w, h, fps=5.0, seconds=30.0, seed=1)
    start = scene.starts()[0]
    pair = [scene.frame(start - 1)[0], scene.frame(start + 2)[0]]  # still, then an object in view
    data = [from_rgb(rgb, fmt) if fmt != "jpeg" else simplejpeg.encode_jpeg(rgb, quality=90) for rgb in pair]
    frames = [Frame(d, fmt, f"{w}x{h} {fmt}") for d in data]
    gate = MotionGate()
    clock = iter(range(10**9))
    turn = {"gate": 0, "pass": 0, "linear": 0, "auto": 0}

    def next_of(name: str) -> int:  # each callable alternates between the two frames
        turn[name] ^= 1
        return turn[name]

    def check():
        gate.check(frames[next_of("gate")], now=next(clock) * 0.2)

    check()
    check()
    grid = gate._grid
    reads = [gate._read(f) for f in frames]  # (the buffer the kernel reads, its plan)
    plan = reads[0][1]
    state = gate._state.copy()

    def kernel_only():
        plane, _ = reads[next_of("pass")]
        _motion.motion_pass(plane, plan.mode, *plan.offsets, plan.layout, plan.nx, plan.sx, plan.sy, state,
                            plan.threshold, 13107, True, False)

    pre = {interp: Preprocessor((224, 224, 3), np.int8, scale=SCALE, zero_point=ZP, interpolation=interp)
           for interp in ("linear", "auto")}
    slot = pre["linear"].new_slot()
    fns = [check, kernel_only] + [lambda k=k, p=p: p(data[next_of(k)], fmt, out=slot) for k, p in pre.items()]
    gate_us, kernel_us, linear_us, auto_us = timeit_interleaved(fns, repeat, np.median, flush if cold else None)
    return {"line": f"{w}×{h} {fmt}", "cache": "cold" if cold else "warm", "grid": f"{grid.gw}×{grid.gh}×{grid.sx}",
            "gate_us": gate_us, "pass_us": kernel_us, "preprocess_linear_us": linear_us,
            "preprocess_auto_us": auto_us, "share_linear": gate_us / linear_us, "share_auto": gate_us / auto_us}


def saving() -> dict:
    scene = MotionScene(320, 240, fps=5.0, seed=0)
    gate = MotionGate()
    sent = np.array([gate.check(Frame(from_rgb(scene.frame(i)[0], "i420"), "i420", "x"), now=i / scene.fps)
                     for i in range(len(scene))])
    idle = ~scene.moving
    first = [i for s in scene.starts() for i in range(s, s + int(scene.fps))]
    return {"frames": len(scene), "idle_frames": int(idle.sum()), "moving_frames": int(scene.moving.sum()),
            "counts": dict(gate.counts), "idle_not_sent": float(1 - sent[idle].mean()),
            "first_second_missed": int(sum(not sent[i] for i in first)),
            "moving_missed": int((scene.moving & ~sent).sum()), "sent": int(sent.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    started = time.localtime()
    cpu = cpu_model() or platform.processor() or platform.machine()
    print(f"bench/motion.py  {time.strftime('%Y-%m-%d %H:%M', started)}  CPU: {cpu} ({os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f})  kernels: {KERNEL_BUILD}  repeat {args.repeat}")
    lines = [cost_line(w, h, fmt, args.repeat, cold)
             for cold in (True, False)
             for w, h, fmt in ((1280, 720, "i420"), (1280, 720, "nv12"), (1280, 720, "rgb"), (1280, 720, "jpeg"),
                               (640, 360, "i420"), (1920, 1080, "i420"))]
    print("\nµs per frame (median); share = gate / kernel pass of the same frame into 224×224×3 int8")
    head = f"{'frame':<16}{'cache':>6}{'grid':>12}{'gate':>9}{'pass':>8}{'kernel bilinear':>17}{'kernel auto':>13}" \
           f"{'share bil.':>12}{'share auto':>12}"
    print(head)
    for r in lines:
        print(f"{r['line']:<16}{r['cache']:>6}{r['grid']:>12}{r['gate_us']:>9.1f}{r['pass_us']:>8.1f}"
              f"{r['preprocess_linear_us']:>17.1f}{r['preprocess_auto_us']:>13.1f}"
              f"{r['share_linear']:>12.1%}{r['share_auto']:>12.1%}")
    print("(gate: MotionGate.check, the whole call; pass: the compiled sampler and background update alone;"
          " cold: the frame in memory, not in a cache; jpeg: the gate's reduced grey decode included, the kernel's"
          " decode at the model's scale included)")
    saved = saving()
    print(f"\nprocedural view, 320×240, {saved['frames']} frames at 5 fps ({saved['idle_frames']} idle, "
          f"{saved['moving_frames']} moving), defaults: sent {saved['sent']} {saved['counts']}")
    print(f"idle frames not sent {saved['idle_not_sent']:.1%}; frames of a movement's first second missed "
          f"{saved['first_second_missed']}; moving frames missed {saved['moving_missed']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d", started), "cpu": cpu,
                                               "kernels": KERNEL_BUILD, "cost": lines, "saving": saved}, indent=1))


if __name__ == "__main__":
    main()
