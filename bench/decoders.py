#!/usr/bin/env python3
"""Decoder cost against what it sits next to, in one run.

    python bench/decoders.py [--repeat 200]

* the bundled detector: decoding one frame (yolo decoder: threshold, NMS, mapping to frame
  pixels) against ``Interpreter.invoke()`` of the same frame (target: decode ≤ 5 % of invoke);
* NMS of 8400 YOLOv8 candidates (a [1, 84, 8400] head): streampi's whole yolo decode and its
  NMS alone, per class and class-agnostic, against OpenCV's ``cv2.dnn.NMSBoxesBatched`` and
  ``cv2.dnn.NMSBoxes`` on the same candidates (target ≤ 1 ms), for a realistic head (20
  objects, each seen by ~15 cells, the rest background), the worst case of the issue (every
  candidate above the threshold, few overlapping) and the NMS loop's own worst case (every
  candidate above the threshold in 299 tight clusters: each is tested against up to 299 kept
  boxes before it is suppressed). OpenCV is called with ``top_k=300``, its fastest use: it then
  suppresses among the 300 best candidates only (the output says whether that gave streampi's
  boxes; left unlimited it takes ~1000× longer on the worst case);
* classify top-5 of 1000 classes against a full ``argsort`` (target ≤ 30 µs).

Prints medians in µs and the ratios; everything single-threaded.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from streampi import Model, bundled_model, load_config
from streampi.decoders import make_decoder
from streampi.decoders.nms import nms
from streampi.model import TensorSpec
from streampi.preprocess import Preprocessor
from streampi.synthetic import ScenesGenerator

ROOT = Path(__file__).resolve().parents[1]


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


def clustered_head(rng) -> np.ndarray:
    """A [1, 84, 8400] head whose 8400 cells all score above 0.25, in 299 tight clusters of one
    class on a grid: the 299 best cells are one per cluster, every other cell overlaps its
    cluster's best by IoU ~0.8 and is tested against the kept boxes until it meets it."""
    n, nc, clusters = 8400, 80, 299
    out = np.zeros((1, 4 + nc, n), np.float32)
    grid = np.stack(np.meshgrid(np.arange(18), np.arange(17)), -1).reshape(-1, 2)[:clusters] * 35.0 + 20.0
    member = np.arange(n) % clusters
    out[0, 0:2] = (grid[member] + rng.uniform(-1, 1, (n, 2))).T
    out[0, 2:4] = 16.0
    out[0, 4] = np.where(np.arange(n) < clusters, rng.uniform(0.9, 1.0, n), rng.uniform(0.3, 0.85, n))
    return out


def bench_nms(args) -> None:
    rng = np.random.default_rng(0)
    spec = TensorSpec("out", 0, (1, 84, 8400), (1, 84, 8400), np.dtype(np.float32), 0.0, 0)
    options = {"coords": "pixels", "score_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 300}
    dec = make_decoder([spec], None, options=options)
    agnostic = make_decoder([spec], None, options={**options, "class_agnostic": True})
    for name, out in (("realistic (20 objects)", yolo_head(rng, 20, False)),
                      ("worst case (all 8400 above threshold)", yolo_head(rng, 20, True)),
                      ("dense clusters (all 8400 above threshold, 299 clusters)", clustered_head(rng))):
        nms_case(name, out, dec, agnostic, args.repeat)


def nms_case(name: str, out: np.ndarray, dec, agnostic, repeat: int) -> None:
    scores = out[0, 4:].max(0)
    keep = np.flatnonzero(scores >= 0.25)
    xywh = out[0][:4, keep].T.astype(np.float64)
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    cls = out[0, 4:][:, keep].argmax(0)
    s = scores[keep]
    cv_boxes = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    cv_scores, cv_cls = s.astype(float).tolist(), cls.astype(int).tolist()
    print(f"NMS, {name}: {len(keep)} candidates above 0.25")
    t_decode = timeit(lambda: dec.frame_result([out], 0, None), repeat)
    t_decode_agnostic = timeit(lambda: agnostic.frame_result([out], 0, None), repeat)
    print(f"  whole yolo decode [1,84,8400]       {t_decode:9.1f} µs   class-agnostic {t_decode_agnostic:9.1f} µs")
    for label, ours, theirs in (
            ("per class", lambda: nms(boxes, s, 0.45, 300, cls),
             lambda: cv2.dnn.NMSBoxesBatched(cv_boxes, cv_scores, cv_cls, 0.25, 0.45, top_k=300)),
            ("agnostic", lambda: nms(boxes, s, 0.45, 300),
             lambda: cv2.dnn.NMSBoxes(cv_boxes, cv_scores, 0.25, 0.45, top_k=300))):
        t_ours, t_cv = timeit(ours, repeat), timeit(theirs, repeat)
        kept, kept_cv = ours().tolist(), np.asarray(theirs()).reshape(-1).tolist()
        same = "same boxes" if kept == kept_cv else "other boxes"
        verdict = "≤ 1 ms: met" if t_ours <= 1000 else "> 1 ms: NOT met"
        print(f"  streampi NMS ({label:9})            {t_ours:9.1f} µs   kept {len(kept)}   target {verdict}")
        print(f"  OpenCV, top_k=300                   {t_cv:9.1f} µs   kept {len(kept_cv)} ({same})"
              f"   ratio streampi/OpenCV {t_ours / t_cv:.2f}")


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
