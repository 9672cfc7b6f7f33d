"""Greedy non-maximum suppression.

Order: by score, highest first; equal scores keep their input order (a stable sort), so
the lower index wins a tie. A candidate is suppressed when its IoU with a kept box is
*greater than* the threshold; boxes that do not intersect (including zero-area and inverted
boxes) never suppress each other. Per-class NMS tests a candidate against the kept boxes of
its own class only; class-agnostic NMS lets any box suppress any. Selection stops at
``max_detections`` kept boxes.

:func:`nms` checks its arguments here and runs the loop in the compiled extension
(``streampi/_ext/_nms.pyx``): greedy NMS is sequential, so NumPy could only vectorise one kept
box at a time. Where the extension was not built, the NumPy version below gives the same
indices, slower.
"""

from __future__ import annotations

import operator

import numpy as np

try:
    from .._ext import _nms as _kernel
except ImportError:  # a build without the compiled extension: the NumPy version below
    _kernel = None


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
    return np.asarray(nms_list(boxes, scores, iou_threshold, max_detections, classes), np.intp)


def nms_list(boxes, scores, iou_threshold, max_detections, classes) -> list[int]:
    """:func:`nms` on Python lists (or arrays), returning a list of indices."""
    b = boxes if isinstance(boxes, list) else np.asarray(boxes, np.float64).tolist()
    s = scores if isinstance(scores, list) else np.asarray(scores).tolist()
    c = classes if classes is None or isinstance(classes, list) else np.asarray(classes).tolist()
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
    return kept


#: From this many candidates on, blocks of pairwise overlaps beat one round per kept box.
LARGE = 512
BLOCK = 256


def _suppressed_by(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """``(len(a), len(b))``: box ``a[j]`` overlaps ``b[i]`` by an IoU above ``t``."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    np.maximum(iw, 0.0, out=iw)
    np.maximum(ih, 0.0, out=ih)
    iw *= ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return (iw > 0.0) & (iw * (1.0 + t) > t * (area_a[:, None] + area_b[None, :]))


def _nms_blocks(b: np.ndarray, t: float, max_detections: int) -> np.ndarray:
    """Greedy NMS over score-sorted boxes, ``BLOCK`` candidates at a time.

    A block's candidates are first checked against the boxes kept so far, then among
    themselves with the fixed point of ``keep[i] = alive[i] and no kept j < i overlaps i``
    (Cluster-NMS): each sweep settles at least one more leading candidate, so it ends with
    exactly the greedy result, usually after a few sweeps.
    """
    kept: list[np.ndarray] = []
    kept_boxes = b[:0]
    count = 0
    for start in range(0, len(b), BLOCK):
        blk = b[start:start + BLOCK]
        alive = ~_suppressed_by(kept_boxes, blk, t).any(0) if len(kept_boxes) else np.ones(len(blk), bool)
        cand = np.flatnonzero(alive)
        if cand.size:
            m = np.triu(_suppressed_by(blk[cand], blk[cand], t), 1)
            keep = np.ones(cand.size, bool)
            for _ in range(cand.size):
                new = ~(m & keep[:, None]).any(0)
                if (new == keep).all():
                    break
                keep = new
            chosen = cand[keep]
            kept.append(start + chosen)
            kept_boxes = np.concatenate([kept_boxes, blk[chosen]])
            count += chosen.size
        if count >= max_detections:
            break
    return np.concatenate(kept)[:max_detections] if kept else np.zeros(0, np.intp)


def _class_ids(classes, n: int) -> np.ndarray:
    """``classes`` (integers, or floats holding whole numbers) as int32 labels that are equal
    exactly where the classes are (renumbered when they do not fit in int32)."""
    c = np.asarray(classes)
    if c.shape != (n,):
        raise ValueError(f"nms: classes must have shape ({n},) like the scores, got {c.shape}")
    if c.dtype.kind == "f":
        if not np.isfinite(c).all() or (c != np.round(c)).any():
            raise ValueError("nms: classes must be whole numbers")
    elif c.dtype.kind not in "iub":
        raise ValueError(f"nms: classes must be integers, got dtype {c.dtype}")
    if n == 0:
        return np.zeros(0, np.int32)
    if c.dtype.kind != "f" and c.dtype.itemsize <= 4 and c.dtype != np.uint32:
        return np.ascontiguousarray(c, np.int32)
    lo, hi = c.min(), c.max()
    if -2**31 <= lo and hi < 2**31:
        return np.ascontiguousarray(c, np.int32)
    return np.unique(c, return_inverse=True)[1].reshape(-1).astype(np.int32)


def _checked(boxes, scores, iou_threshold, max_detections) -> tuple[np.ndarray, np.ndarray, float, int]:
    """The arguments of :func:`nms` as the kernel takes them, or a ``ValueError`` naming the bad one."""
    try:
        s = np.asarray(scores)
        s = np.ascontiguousarray(s, np.float32 if s.dtype == np.float32 else np.float64)
        b = np.ascontiguousarray(boxes, np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"nms: boxes and scores must be numbers ({exc})") from None
    if s.ndim != 1:
        raise ValueError(f"nms: scores must be one-dimensional, got shape {s.shape}")
    if b.shape != (len(s), 4) and not (b.size == 0 and len(s) == 0):
        raise ValueError(f"nms: boxes must have shape ({len(s)}, 4) for {len(s)} scores, got {b.shape}")
    if np.isnan(s).any():
        raise ValueError("nms: scores hold NaN")
    if not np.isfinite(b).all():
        raise ValueError(f"nms: boxes hold non-finite coordinates (row {int(np.argmin(np.isfinite(b).all(1)))})")
    try:
        t = float(iou_threshold)
    except (TypeError, ValueError):
        raise ValueError(f"nms: iou_threshold must be a number, got {iou_threshold!r}") from None
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"nms: iou_threshold must be within [0, 1], got {iou_threshold!r}")
    try:
        limit = operator.index(max_detections)
    except TypeError:
        raise ValueError(f"nms: max_detections must be an integer, got {max_detections!r}") from None
    if limit < 0:
        raise ValueError(f"nms: max_detections must be 0 or more, got {limit}")
    return b.reshape(-1, 4), s, t, limit


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_detections: int,
        classes: np.ndarray | None = None) -> np.ndarray:
    """Indices of the kept boxes, best first. ``classes`` given: per-class NMS.

    ``boxes``: ``(n, 4)`` ``[x0, y0, x1, y1]``, finite; ``scores``: ``(n,)``, no NaN;
    ``iou_threshold`` in [0, 1]; ``max_detections`` ≥ 0; ``classes``: ``(n,)`` integers.
    Anything else is a ``ValueError`` naming the argument.
    """
    b, s, t, limit = _checked(boxes, scores, iou_threshold, max_detections)
    n = len(s)
    ids = _class_ids(classes, n) if classes is not None else None
    if n == 0 or limit == 0:
        return np.zeros(0, np.intp)
    if _kernel is None:
        if ids is not None and (ids.min() < 0 or ids.max() >= 4 * n + 1024):
            ids = np.unique(ids, return_inverse=True)[1].reshape(-1)  # the class shift wants small ids
        return _nms_numpy(b, s, t, limit, ids)
    order = np.empty(n, np.intp)
    _kernel.score_order(s, order)
    kept = np.empty(min(limit, n), np.intp)
    count = _kernel.greedy_nms(b, order, ids, t, kept)
    return kept[:count]


def _nms_numpy(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_detections: int,
               classes: np.ndarray | None = None) -> np.ndarray:
    """:func:`nms` without the compiled extension (checked arguments).

    Per-class NMS shifts each class's boxes to a region of its own (one pass instead of one
    per class). Each round keeps the best remaining box and drops the ones it overlaps, testing
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
    if n > LARGE:
        return order[_nms_blocks(b, float(iou_threshold), max_detections)]
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
        alive = (iw <= 0.0) | (iw * (1.0 + t) <= t * (area + aa))
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


def finite_only(boxes: np.ndarray, scores: np.ndarray, *more: np.ndarray | None) -> tuple:
    """The candidates whose box and score are finite numbers (a model's garbage output, e.g.
    an ``exp`` that overflowed, must not fail the frame or suppress real boxes): ``boxes``,
    ``scores`` and every array of ``more`` (None passes through) with the same rows kept."""
    ok = np.isfinite(scores)
    ok &= np.isfinite(boxes).all(axis=1)
    if ok.all():
        return (boxes, scores, *more)
    return (boxes[ok], scores[ok], *(m[ok] if m is not None else None for m in more))
