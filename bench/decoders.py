#!/usr/bin/env python3
"""Decoder cost against what it sits next to, in one run.

    python bench/decoders.py [--repeat 200]

* the bundled detector: decoding one frame (yolo decoder: threshold, NMS, mapping to frame
  pixels) against ``Interpreter.invoke()`` of the same frame (target: decode ≤ 5 % of invoke);
* NMS of 8400 YOLOv8 candidates (a [1, 84, 8400] head): streampi's whole yolo decode and its
  NMS alone against OpenCV's ``cv2.dnn.NMSBoxesBatched`` on the same candidates (target ≤ 1 ms),
  for a realistic head (20 objects, each seen by ~15 cells, the rest background) and the
  worst case (every candidate above the threshold, few overlapping);
* classify top-5 of 1000 classes against a full ``argsort`` (target ≤ 30 µs).

Prints medians in µs and the ratios; everything single-threaded.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streampi import Model, bundled_model, load_config  # noqa: E402
from streampi.decoders import make_decoder  # noqa: E402
from streampi.decoders.nms import nms  # noqa: E402
from streampi.model import TensorSpec  # noqa: E402
from streampi.preprocess import Preprocessor  # noqa: E402
from streampi.synthetic import ScenesGenerator  # noqa: E402


def timeit(fn, repeat: int) -> float:
    """Median µs per call over ``repeat`` calls after a warm-up."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def yolo_head(rng, objects: int, worst: bool) -> np.ndarray:
    """A [1, 84, 8400] YOLOv8 output in 640-pixel input coordinates."""
    n, nc = 8400, 80
    out = np.zeros((1, 4 + nc, n), np.float32)
    if worst:
        out[0, 0:2] = rng.uniform(0, 640, (2, n))
        out[0, 2:4] = rng.uniform(4, 12, (2, n))
        out[0, 4 + rng.integers(0, nc, n), np.arange(n)] = rng.uniform(0.3, 1.0, n)
        return out
    out[0, 0:2] = rng.uniform(0, 640, (2, n))
    out[0, 2:4] = rng.uniform(10, 60, (2, n))
    out[0, 4:] = rng.uniform(0, 0.05, (nc, n))   # background everywhere
    cells = rng.choice(n, objects * 15, replace=False).reshape(objects, 15)
    for k in range(objects):
        cx, cy, w, h = rng.uniform(40, 600), rng.uniform(40, 600), rng.uniform(20, 120), rng.uniform(20, 120)
        c = rng.integers(0, nc)
        idx = cells[k]
        out[0, 0, idx] = cx + rng.normal(0, 2, 15)
        out[0, 1, idx] = cy + rng.normal(0, 2, 15)
        out[0, 2, idx] = w + rng.normal(0, 2, 15)
        out[0, 3, idx] = h + rng.normal(0, 2, 15)
        out[0, 4 + c, idx] = rng.uniform(0.3, 0.95, 15)
    return out


def bench_nms(args) -> None:
    rng = np.random.default_rng(0)
    spec = TensorSpec("out", 0, (1, 84, 8400), (1, 84, 8400), np.dtype(np.float32), 0.0, 0)
    dec = make_decoder([spec], None, options={"coords": "pixels", "score_threshold": 0.25, "iou_threshold": 0.45,
                                              "max_detections": 300})
    for name, worst in (("realistic (20 objects)", False), ("worst case (all 8400 above threshold)", True)):
        nms_case(name, yolo_head(rng, 20, worst), dec, args.repeat)


def nms_case(name: str, out: np.ndarray, dec, repeat: int) -> None:
    scores = out[0, 4:].max(0)
    keep = np.flatnonzero(scores >= 0.25)
    xywh = out[0][:4, keep].T.astype(np.float64)
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    cls = out[0, 4:][:, keep].argmax(0)
    s = scores[keep]
    cv_boxes = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    cv_scores, cv_cls = s.astype(float).tolist(), cls.astype(int).tolist()
    t_decode = timeit(lambda: dec.frame_result([out], 0, None), repeat)
    t_ours = timeit(lambda: nms(boxes, s, 0.45, 300, cls), repeat)
    t_cv = timeit(lambda: cv2.dnn.NMSBoxesBatched(cv_boxes, cv_scores, cv_cls, 0.25, 0.45, top_k=300), repeat)
    n_ours = len(nms(boxes, s, 0.45, 300, cls))
    n_cv = len(cv2.dnn.NMSBoxesBatched(cv_boxes, cv_scores, cv_cls, 0.25, 0.45, top_k=300))
    print(f"NMS, {name}: {len(keep)} candidates above 0.25 → kept {n_ours} (OpenCV {n_cv})")
    print(f"  whole yolo decode [1,84,8400]       {t_decode:9.1f} µs")
    print(f"  streampi NMS (per class)            {t_ours:9.1f} µs")
    print(f"  OpenCV NMSBoxesBatched              {t_cv:9.1f} µs   ratio streampi/OpenCV {t_ours / t_cv:.2f}")


def bench_detector(args) -> None:
    path = bundled_model("shapes_detector")
    model = Model(path, num_threads=1)
    cfg = load_config(path)
    pre = Preprocessor.for_model(model, cfg)
    dec = make_decoder(model.outputs, cfg)
    img, boxes, _ = ScenesGenerator(seed=5).scene(320, 240)
    view = model.input_view()
    transform = pre(img, "rgb", out=view[0])[1]
    del view
    model.invoke()
    outputs = model.outputs_float()
    t_invoke = timeit(model.invoke, args.repeat)
    t_dequant = timeit(model.outputs_float, args.repeat)
    t_decode = timeit(lambda: dec.frame_result(outputs, 0, transform), args.repeat)
    n = len(dec.frame_result(outputs, 0, transform)["detections"])
    print(f"bundled detector {path.name} ({model.input.shape}, output {list(model.outputs[0].shape)}): "
          f"{n} detections, {len(boxes)} drawn")
    print(f"  invoke                              {t_invoke:9.1f} µs")
    print(f"  dequantize outputs                  {t_dequant:9.1f} µs")
    print(f"  yolo decode (threshold, NMS, map)   {t_decode:9.1f} µs   = {t_decode / t_invoke * 100:.1f} % of invoke"
          f" (target ≤ 5 %)")


def bench_classify(args) -> None:
    rng = np.random.default_rng(1)
    scores = rng.random((1, 1000)).astype(np.float32)
    spec = TensorSpec("scores", 0, (1, 1000), (1, 1000), np.dtype(np.float32), 0.0, 0)
    dec = make_decoder([spec], None, options={"raw_outputs": False})
    t_ours = timeit(lambda: dec.frame_result([scores], 0, None), args.repeat)
    t_sort = timeit(lambda: np.argsort(-scores[0], kind="stable")[:5].tolist(), args.repeat)
    print("classify top-5 of 1000 classes")
    print(f"  streampi classify decoder           {t_ours:9.1f} µs")
    print(f"  full stable argsort                 {t_sort:9.1f} µs   ratio {t_ours / t_sort:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    print(f"{platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}, OpenCV {cv2.__version__}")
    bench_detector(args)
    bench_nms(args)
    bench_classify(args)


if __name__ == "__main__":
    main()
