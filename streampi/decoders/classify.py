"""``classify``: the ``top_k`` best classes of a ``(batch, classes)`` score output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Decoder, Options


class ClassifyDecoder(Decoder):
    """``"top": [[class_index, label or None, score], ...]``, best first; equal scores
    rank the lower class index first. ``argpartition`` picks the ``k`` best in O(classes),
    then only those ``k`` are sorted."""

    kind = "classify"  # raw scores only on request (--raw-outputs): results stay small

    def __init__(self, specs, labels, options: Options, *, top_k: int = 5) -> None:
        super().__init__(specs, labels, options)
        self.top_k = options.number("top_k", top_k, low=0, integer=True)
        two_d = [k for k, s in enumerate(self.specs) if len(s.shape) == 2]
        if len(two_d) != 1:
            raise ModelError(f"the classify decoder needs exactly one (batch, classes) output, the model has "
                             f"{[list(s.shape) for s in self.specs]}")
        self.index = two_d[0]

    def decode(self, outputs: Sequence[np.ndarray], i: int, transform) -> dict[str, Any]:
        if self.top_k == 0:
            return {}
        scores = outputs[self.index][i]
        n = scores.shape[0]
        k = min(self.top_k, n)
        if k < n:
            kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
            part = np.flatnonzero(scores >= kth)  # the k best and any ties with the k-th, by index
        else:
            part = np.arange(n)
        idx = part[np.argsort(-scores[part], kind="stable")][:k]
        labels, vals = self.labels, scores[idx].tolist()
        return {"top": [[j, labels[j] if labels and j < len(labels) else None, v]
                        for j, v in zip(idx.tolist(), vals)]}
