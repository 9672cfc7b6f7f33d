"""``ssd_postprocess``: models ending in TFLite's ``TFLite_Detection_PostProcess`` op.

The op emits boxes ``[1, M, 4]`` (``ymin, xmin, ymax, xmax`` normalised to the input),
classes ``[1, M]``, scores ``[1, M]`` and a count ``[1]``. Exports list them in different
orders (TF1: boxes, classes, scores, count; TF2: scores, boxes, count, classes), so they
are picked by shape, then classes and scores by name, else by their values (class
indices are whole numbers). The op fixes the batch at 1: such models are never batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Decoder, DetectionOptions, Options, boxes_to_frame, detection_list, input_size


def match_outputs(specs) -> dict[str, Any] | None:
    """``{"boxes": i, "count": i, "pair": (i, j), "classes": i?, "scores": i?}`` for the
    op's four outputs, or ``None`` when the outputs are not those four."""
    if len(specs) != 4:
        return None
    shapes = [tuple(int(d) for d in s.shape) for s in specs]
    boxes = [k for k, s in enumerate(shapes) if len(s) == 3 and s[2] == 4]
    count = [k for k, s in enumerate(shapes) if int(np.prod(s)) == 1 and len(s) <= 2 and k not in boxes]
    if len(boxes) != 1 or len(count) != 1:
        return None
    m = shapes[boxes[0]][1]
    pair = [k for k, s in enumerate(shapes) if k not in boxes + count and s in ((1, m), (m,))]
    if len(pair) != 2 or shapes[boxes[0]][0] != 1:
        return None
    found = {"boxes": boxes[0], "count": count[0], "pair": tuple(pair)}
    names = [specs[k].name.lower() for k in pair]
    cls = [k for k, n in zip(pair, names) if "class" in n]
    sc = [k for k, n in zip(pair, names) if "score" in n]
    if len(cls) == 1 and len(sc) == 1 and cls != sc:
        found["classes"], found["scores"] = cls[0], sc[0]
    return found


def _position(name: str) -> int | None:
    tail = name.rpartition(":")[2]
    return int(tail) if ":" in name and tail.isdigit() else None


class SsdPostprocessDecoder(Decoder):
    kind = "ssd_postprocess"
    batchable = False

    def __init__(self, specs, labels, options: Options) -> None:
        super().__init__(specs, labels, options)
        found = match_outputs(self.specs)
        if found is None:
            raise ModelError("the ssd_postprocess decoder needs the four outputs of TFLite_Detection_PostProcess "
                             f"(boxes [1,M,4], classes [1,M], scores [1,M], count [1]); the model has "
                             f"{[list(s.shape) for s in self.specs]}")
        self.found = found
        self.label_offset = options.number("label_offset", 0, integer=True)
        self.input_size = options.numbers("input_size", None, length=2)
        self.det = DetectionOptions(options, score_threshold=0.3)

    def _classes_scores(self, outputs: Sequence[np.ndarray], i: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        f = self.found
        if "classes" in f:
            return outputs[f["classes"]][i].reshape(-1)[:n], outputs[f["scores"]][i].reshape(-1)[:n]
        a, b = (outputs[k][i].reshape(-1)[:n] for k in f["pair"])
        a_whole, b_whole = bool(np.all(a == np.round(a))), bool(np.all(b == np.round(b)))
        if a_whole and not b_whole:
            return a, b
        if b_whole and not a_whole:
            return b, a
        # all whole numbers (undecidable from the values): the op emits classes before scores,
        # which names ending in the output position (``...:1``, ``...:2``) still show
        pos = [_position(self.specs[k].name) for k in f["pair"]]
        if None not in pos and pos[0] != pos[1]:
            return (a, b) if pos[0] < pos[1] else (b, a)
        # else by tensor order: TF1 lists boxes, classes, scores; TF2 scores, boxes, ..., classes
        return (b, a) if f["pair"][0] < f["boxes"] else (a, b)

    def decode(self, outputs: Sequence[np.ndarray], i: int, transform) -> dict[str, Any]:
        f, det = self.found, self.det
        boxes_yx = outputs[f["boxes"]][i].reshape(-1, 4)
        n = int(np.clip(round(float(outputs[f["count"]][i].reshape(-1)[0])), 0, len(boxes_yx)))
        classes, scores = self._classes_scores(outputs, i, n)
        keep = np.flatnonzero(scores >= det.score_threshold)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:det.max_detections]
        yx = boxes_yx[keep].astype(np.float64)
        boxes = yx[:, [1, 0, 3, 2]]
        size = input_size(transform, self.input_size)
        boxes = boxes_to_frame(boxes, transform if size is not None else None, size or (1.0, 1.0))
        cls = np.round(classes[keep]).astype(np.int64) + self.label_offset
        return {"detections": detection_list(self, boxes, scores[keep], cls)}
