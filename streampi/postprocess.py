"""Model outputs → the per-frame part of a result message (``outputs`` and ``top``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .model import TensorSpec


class Postprocessor:
    """Splits batched float outputs per frame and ranks classifier scores.

    A model counts as a classifier when it has one output of shape ``(batch, classes)``
    with at least two classes; its results then carry ``top``: the ``top_k`` best
    ``[class_index, label or None, score]``.
    """

    def __init__(self, outputs: Sequence[TensorSpec], labels: Sequence[str] | None = None, top_k: int = 5) -> None:
        self.specs = list(outputs)
        self.labels = tuple(labels) if labels else None
        self.top_k = int(top_k)
        self.is_classifier = len(self.specs) == 1 and len(self.specs[0].shape) == 2 and self.specs[0].shape[1] >= 2

    def frame_result(self, outputs: Sequence[np.ndarray], i: int) -> dict[str, Any]:
        """``{"outputs": [...], "top": [...]}`` for frame ``i`` of a batch."""
        result: dict[str, Any] = {"outputs": [
            {"name": spec.name, "shape": list(out.shape[1:]), "dtype": "float32",
             "data": np.ascontiguousarray(out[i], dtype="<f4").tobytes()}
            for spec, out in zip(self.specs, outputs)]}
        if self.is_classifier and self.top_k > 0:
            scores = outputs[0][i]
            k = min(self.top_k, scores.shape[0])
            idx = np.argsort(-scores, kind="stable")[:k]  # ties: the lower class index first
            labels = self.labels
            result["top"] = [[int(j), labels[j] if labels and j < len(labels) else None, float(scores[j])]
                             for j in idx]
        return result
