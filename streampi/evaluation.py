"""Mean average precision, to check detectors against ground truth (tests, demo, tools).

PASCAL VOC style: per class, detections of all images ranked by score (ties by order of
appearance), each matched greedily to the unmatched ground-truth box of its class with the
highest IoU of at least ``iou_threshold``; AP is the area under the precision envelope
(all-point interpolation); mAP is the mean over the classes that have ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .decoders.nms import iou_one_to_many


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone envelope of a precision/recall curve."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def mean_average_precision(detections: Sequence[Sequence[dict]], truths: Sequence[tuple[np.ndarray, np.ndarray]],
                           iou_threshold: float = 0.5) -> tuple[float, dict[int, float]]:
    """``(mAP, {class: AP})``.

    ``detections[k]``: image ``k``'s detections as the protocol gives them
    (``{"box", "score", "class"}``); ``truths[k]``: ``(boxes (n, 4), classes (n,))``.
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists for {len(truths)} images")
    classes = sorted({int(c) for _, cs in truths for c in np.asarray(cs).reshape(-1)})
    aps: dict[int, float] = {}
    for c in classes:
        gt = {k: np.asarray(b, np.float64).reshape(-1, 4)[np.asarray(cs).reshape(-1) == c]
              for k, (b, cs) in enumerate(truths)}
        n_gt = sum(len(g) for g in gt.values())
        cand = [(float(d["score"]), k, np.asarray(d["box"], np.float64))
                for k, dets in enumerate(detections) for d in dets if int(d["class"]) == c]
        order = sorted(range(len(cand)), key=lambda j: -cand[j][0])
        used = {k: np.zeros(len(g), bool) for k, g in gt.items()}
        tp = np.zeros(len(cand))
        for rank, j in enumerate(order):
            _, k, box = cand[j]
            g = gt[k]
            if len(g):
                iou = np.where(used[k], -1.0, iou_one_to_many(box, g))
                best = int(np.argmax(iou))
                if iou[best] >= iou_threshold:
                    used[k][best] = True
                    tp[rank] = 1.0
        ctp = np.cumsum(tp)
        recall = ctp / n_gt
        precision = ctp / np.arange(1, len(cand) + 1)
        aps[c] = average_precision(recall, precision) if len(cand) else 0.0
    return (float(np.mean(list(aps.values()))) if aps else float("nan")), aps
