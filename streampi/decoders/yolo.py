"""``yolo``: boxes from YOLO-family heads, then score threshold and NMS.

Layouts (``layout`` option; guessed from the output's shape when it is unambiguous):

* ``v5``: ``[batch, N, 5 + classes]`` rows of ``cx, cy, w, h, objectness, class scores``;
  a candidate's score is objectness × its best class score.
* ``v8`` (also YOLOv11): ``[batch, 4 + classes, N]``, columns of ``cx, cy, w, h, class
  scores``, no objectness.
* ``nms``: ``[batch, K, 6]`` rows of ``x0, y0, x1, y1, score, class`` (NMS inside the
  model): only the score threshold applies.

Coordinates (``coords``): ``pixels`` of the model input or ``normalized`` to [0, 1] of it;
``auto`` treats a frame's boxes as normalised when none exceeds 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Decoder, DetectionOptions, Options, boxes_to_frame, detection_list, few_detections, input_size
from .nms import SMALL, finite_only, nms

try:
    from .._ext import _nms as _kernel
except ImportError:  # a build without the compiled extension: NumPy selects the candidates
    _kernel = None

LAYOUTS = ("v5", "v8", "nms")


def guess_layout(shape: Sequence[int]) -> str | None:
    """The layout of a ``(batch, a, b)`` output when the shape alone tells it, else ``None``."""
    if len(shape) != 3:
        return None
    a, b = int(shape[1]), int(shape[2])
    if 5 <= a < b:
        return "v8"
    if a > b > 6:
        return "v5"
    return None  # [.., K, 6] is either v5 with one class or the NMS layout


class YoloDecoder(Decoder):
    kind = "yolo"

    def __init__(self, specs, labels, options: Options) -> None:
        super().__init__(specs, labels, options)
        three_d = [k for k, s in enumerate(self.specs) if len(s.shape) == 3]
        if len(three_d) != 1:
            raise ModelError(f"the yolo decoder needs exactly one 3-D output, the model has "
                             f"{[list(s.shape) for s in self.specs]}")
        self.index = three_d[0]
        shape = self.specs[self.index].shape
        guessed = guess_layout(shape)
        self.layout = options.choice("layout", guessed, LAYOUTS)
        if self.layout is None:
            raise options.error("layout", f"the output shape {list(shape)} is ambiguous; set it to v5, v8 or nms")
        a, b = int(shape[1]), int(shape[2])
        need = {"v5": (b, 6, "[batch, N, 5 + classes]"), "v8": (a, 5, "[batch, 4 + classes, N]"),
                "nms": (b, 6, "[batch, K, 6]")}[self.layout]
        if need[0] < need[1] or (self.layout == "nms" and b != 6):
            raise options.error("layout", f"the output shape {list(shape)} does not fit {need[2]}")
        self.coords = options.choice("coords", "auto", ("auto", "pixels", "normalized"))
        self.input_size = options.numbers("input_size", None, length=2)
        self.det = DetectionOptions(options)

    def _unit(self, boxes: np.ndarray, transform) -> tuple[float, float]:
        """Input pixels per box unit: 1, or the input size for normalised boxes."""
        normalized = self.coords == "normalized" or (self.coords == "auto" and boxes.size and boxes.max() <= 2.0)
        if not normalized:
            return (1.0, 1.0)
        size = input_size(transform, self.input_size)
        return size if size is not None else (1.0, 1.0)  # no input size known: boxes stay normalised

    def _few(self, boxes: list, scores: list, classes: list, transform) -> dict[str, Any]:
        if self.coords == "normalized" or (self.coords == "auto" and all(v <= 2.0 for b in boxes for v in b)):
            unit = input_size(transform, self.input_size) or (1.0, 1.0)
        else:
            unit = (1.0, 1.0)
        det = self.det
        return {"detections": few_detections(self, boxes, scores, classes, transform, unit, det.iou_threshold,
                                              det.max_detections, det.agnostic)}

    def candidates(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(boxes [m, 4] x0 y0 x1 y1 float64, scores [m], classes [m])`` of one frame's v5/v8
        head: the cells whose score reaches the threshold, in cell order.

        A cell's class is its best class (the first on a tie) and its score that class's score
        (× objectness for v5), compared with the threshold in the head's precision. Float32
        heads go through the compiled selection (one pass over the class scores, no copies);
        it gives the same candidates as the NumPy code below, which the others take.
        """
        v8 = self.layout == "v8"
        threshold = self.det.score_threshold
        if _kernel is not None and out.dtype == np.float32:
            cells = out.shape[1] if v8 else out.shape[0]
            boxes = np.empty((cells, 4), np.float64)
            scores = np.empty(cells, np.float32)
            classes = np.empty(cells, np.intp)
            select = _kernel.yolo_v8_candidates if v8 else _kernel.yolo_v5_candidates
            # a float32 head meets the threshold in float32, as NumPy compares it with a Python float
            m = select(np.ascontiguousarray(out), np.float32(threshold), boxes, scores, classes)
            return boxes[:m], scores[:m], classes[:m]
        if v8:
            cls_scores = out[4:]  # (classes, N): the best class is looked up only where it scores
            score = cls_scores.max(axis=0)
            keep = (score >= threshold).nonzero()[0]
            best = cls_scores[:, keep].argmax(axis=0)
            xywh = out[:4, keep].T.astype(np.float64)
        else:
            cls_scores = out[:, 5:]
            best_all = cls_scores.argmax(axis=1)
            score = out[:, 4] * cls_scores[np.arange(len(best_all)), best_all]
            keep = np.flatnonzero(score >= threshold)
            best = best_all[keep]
            xywh = out[keep, :4].astype(np.float64)
        half = xywh[:, 2:] * 0.5
        boxes = np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], 1)
        return boxes, score[keep], best

    def decode(self, outputs: Sequence[np.ndarray], i: int, transform) -> dict[str, Any]:
        out = outputs[self.index][i]
        det = self.det
        if self.layout == "nms":
            keep = np.flatnonzero(out[:, 4] >= det.score_threshold)
            keep = keep[np.argsort(-out[keep, 4], kind="stable")][:det.max_detections]
            boxes, scores, classes = finite_only(out[keep, :4].astype(np.float64), out[keep, 4], out[keep, 5])
        else:
            boxes, scores, classes = finite_only(*self.candidates(out))
            if len(scores) <= SMALL:
                return self._few(boxes.tolist(), scores.tolist(), classes.tolist(), transform)
            kept = nms(boxes, scores, det.iou_threshold, det.max_detections, None if det.agnostic else classes)
            boxes, scores, classes = boxes[kept], scores[kept], classes[kept]
        boxes = boxes_to_frame(boxes, transform, self._unit(boxes, transform))
        return {"detections": detection_list(self, boxes, scores, classes.astype(np.int64))}
