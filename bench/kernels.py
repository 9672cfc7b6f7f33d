#!/usr/bin/env python3
"""Preprocessing kernels against OpenCV, single-threaded, in one run.

    python bench/kernels.py [--repeat 300]

Each line times streampi's fused kernel (convert + resize + normalise/quantize, written into
a preallocated slot) against what a user would otherwise write: OpenCV for the colour
conversion, decoding and resizing, then NumPy for the normalisation and int8 quantization.
Prints µs per frame and the ratio streampi / OpenCV (below 1.0: streampi is faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streampi.preprocess import KERNEL_BUILD, Preprocessor  # noqa: E402

SCALE, ZP = 2 / 255, -1  # the bundled int8 models' input quantization ([-1, 1])


def quantize(img: np.ndarray) -> np.ndarray:
    v = img.astype(np.float32) / 127.5 - 1.0
    return np.clip(np.rint(v / SCALE) + ZP, -128, 127).astype(np.int8)


def timeit(fn, repeat: int) -> float:
    """Median µs per call over ``repeat`` calls after a warm-up."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def camera_frame(w: int, h: int) -> np.ndarray:
    rng = np.random.default_rng(w)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "kernels.json")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    out_shape = (224, 224, 3)

    def pre(interpolation: str) -> Preprocessor:
        return Preprocessor(out_shape, np.int8, scale=SCALE, zero_point=ZP, mean=(0.5,), std=(0.5,),
                            interpolation=interpolation)

    slot = np.empty(out_shape, np.int8)
    vga, hd, fhd = camera_frame(640, 480), camera_frame(1280, 720), camera_frame(1920, 1080)
    i420 = cv2.cvtColor(hd, cv2.COLOR_RGB2YUV_I420)
    jpeg = simplejpeg.encode_jpeg(hd, quality=85)
    lin, auto = pre("linear"), pre("auto")
    cases = [
        ("640×480 RGB → 224² int8, bilinear", lambda: lin(vga, "rgb", out=slot),
         lambda: quantize(cv2.resize(vga, (224, 224), interpolation=cv2.INTER_LINEAR))),
        ("640×480 RGB → 224² int8, area (auto)", lambda: auto(vga, "rgb", out=slot),
         lambda: quantize(cv2.resize(vga, (224, 224), interpolation=cv2.INTER_AREA))),
        ("1920×1080 RGB → 224² int8, area", lambda: auto(fhd, "rgb", out=slot),
         lambda: quantize(cv2.resize(fhd, (224, 224), interpolation=cv2.INTER_AREA))),
        ("1280×720 I420 → 224² int8, area", lambda: auto(i420, "i420", out=slot),
         lambda: quantize(cv2.resize(cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420), (224, 224),
                                     interpolation=cv2.INTER_AREA))),
        ("1280×720 JPEG → 224² int8", lambda: auto(jpeg, "jpeg", out=slot),
         lambda: quantize(cv2.resize(cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR),
                                                  cv2.COLOR_BGR2RGB), (224, 224), interpolation=cv2.INTER_AREA))),
    ]
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, OpenCV {cv2.__version__}, "
          f"streampi kernels: {KERNEL_BUILD} build, single-threaded, median of {args.repeat}")
    print("| path | streampi µs | OpenCV + NumPy µs | ratio |")
    print("|---|---|---|---|")
    rows = []
    for name, ours, ref in cases:
        a, b = timeit(ours, args.repeat), timeit(ref, args.repeat)
        rows.append({"path": name, "streampi_us": a, "opencv_us": b, "ratio": a / b})
        print(f"| {name} | {a:.0f} | {b:.0f} | {a / b:.2f} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                                    "opencv": cv2.__version__, "kernels": KERNEL_BUILD, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
