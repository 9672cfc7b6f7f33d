"""Greedy non-maximum suppression, vectorised over candidates.

Order: by score, highest first; equal scores keep their input order (a stable sort), so
the lower index wins a tie. A candidate is suppressed when its IoU with a kept box is
*greater than* the threshold. Per-class NMS shifts each class's boxes to a region of its
own (one pass instead of one per class); class-agnostic NMS lets any box suppress any.
"""

from __future__ import annotations

import numpy as np


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``[x0, y0, x1, y1]`` box with each row of ``boxes``."""
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _class_shifted(boxes: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    if classes is None or len(boxes) == 0:
        return boxes
    span = float(np.max(boxes) - min(0.0, float(np.min(boxes)))) + 1.0
    return boxes + (classes.astype(boxes.dtype) * span)[:, None]


#: Up to this many candidates, plain Python beats NumPy's per-call overhead.
SMALL = 16


def _nms_small(boxes, scores, iou_threshold, max_detections, classes) -> np.ndarray:
    """The same greedy NMS on lists, for a handful of candidates (a small detector's frame)."""
    b = np.asarray(boxes, np.float64).tolist()
    s = np.asarray(scores).tolist()
    c = None if classes is None else np.asarray(classes).tolist()
    t = float(iou_threshold)
    kept: list[int] = []
    for k in sorted(range(len(s)), key=lambda j: -s[j]):  # sorted() is stable: ties keep order
        if len(kept) == max_detections:
            break
        x0, y0, x1, y1 = b[k]
        area = (x1 - x0) * (y1 - y0)
        for j in kept:
            if c is not None and c[j] != c[k]:
                continue
            u0, v0, u1, v1 = b[j]
            iw = min(x1, u1) - max(x0, u0)
            ih = min(y1, v1) - max(y0, v0)
            if iw > 0 and ih > 0:
                inter = iw * ih
                if inter * (1.0 + t) > t * (area + (u1 - u0) * (v1 - v0)):
                    break
        else:
            kept.append(k)
    return np.asarray(kept, np.intp)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_detections: int,
        classes: np.ndarray | None = None) -> np.ndarray:
    """Indices of the kept boxes, best first. ``classes`` given: per-class NMS.

    Each round keeps the best remaining box and drops the ones it overlaps, testing
    ``inter > t · union`` as ``inter · (1 + t) > t · (area_a + area_b)`` (no division), on
    coordinate columns compacted after every round so later rounds touch fewer boxes.
    """
    n = len(scores)
    if n == 0:
        return np.zeros(0, np.intp)
    if n <= SMALL:
        return _nms_small(boxes, scores, iou_threshold, max_detections, classes)
    order = np.argsort(-np.asarray(scores), kind="stable")
    b = _class_shifted(np.asarray(boxes, np.float64), classes)[order]
    x0, y0, x1, y1 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    area = (x1 - x0) * (y1 - y0)
    t = float(iou_threshold)
    keep = []
    idx = np.arange(n)
    while idx.size and len(keep) < max_detections:
        keep.append(idx[0])
        if idx.size == 1:
            break
        ax0, ay0, ax1, ay1, aa = x0[0], y0[0], x1[0], y1[0], area[0]
        x0, y0, x1, y1, area, idx = x0[1:], y0[1:], x1[1:], y1[1:], area[1:], idx[1:]
        iw = np.minimum(x1, ax1)
        iw -= np.maximum(x0, ax0)
        np.maximum(iw, 0.0, out=iw)
        ih = np.minimum(y1, ay1)
        ih -= np.maximum(y0, ay0)
        np.maximum(ih, 0.0, out=ih)
        iw *= ih  # intersection
        alive = iw * (1.0 + t) <= t * (area + aa)
        if not alive.all():
            x0, y0, x1, y1, area, idx = x0[alive], y0[alive], x1[alive], y1[alive], area[alive], idx[alive]
    return order[np.asarray(keep, np.intp)]


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_detections: int,
                 extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """MediaPipe's WEIGHTED suppression: each kept box (and its ``extra`` values, such as
    keypoints) becomes the score-weighted mean of the candidates that overlap it by more
    than the threshold (itself included); its score stays the best one.

    Returns ``(boxes, scores, extra, indices of the best candidates)``.
    """
    n = len(scores)
    if n == 0:
        return boxes[:0], scores[:0], None if extra is None else extra[:0], np.zeros(0, np.intp)
    order = np.argsort(-scores, kind="stable")
    b = np.asarray(boxes, np.float64)[order]
    s = np.asarray(scores, np.float64)[order]
    e = None if extra is None else np.asarray(extra, np.float64)[order].reshape(n, -1)
    out_b, out_s, out_e, out_i = [], [], [], []
    idx = np.arange(n)
    while idx.size and len(out_b) < max_detections:
        first = idx[0]
        overlap = iou_one_to_many(b[first], b[idx]) > iou_threshold
        overlap[0] = True
        group, idx = idx[overlap], idx[~overlap]
        w = s[group] / s[group].sum()
        out_b.append(w @ b[group])
        out_s.append(s[first])
        out_i.append(order[first])
        if e is not None:
            out_e.append(w @ e[group])
    ext = None if extra is None else np.asarray(out_e).reshape(len(out_b), *np.shape(extra)[1:])
    return np.asarray(out_b), np.asarray(out_s), ext, np.asarray(out_i, np.intp)
