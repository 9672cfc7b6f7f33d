"""Which decoder a model gets: the sidecar's or the command line's ``kind``, else the one
the outputs' shapes call for when that is unambiguous, else ``raw``."""

from __future__ import annotations

from collections.abc import Sequence

from ..model import TensorSpec
from .ssd_postprocess import match_outputs
from .yolo import guess_layout

KINDS = ("classify", "ssd_postprocess", "yolo", "anchors", "segment", "raw")


def auto_kind(specs: Sequence[TensorSpec]) -> tuple[str, str]:
    """``(kind, why)`` chosen from the output shapes alone."""
    shapes = [list(s.shape) for s in specs]
    if len(specs) == 1 and len(shapes[0]) == 2 and shapes[0][1] >= 2:
        return "classify", f"one (batch, classes) output {shapes[0]}"
    if match_outputs(specs) is not None:
        return "ssd_postprocess", "the four outputs of TFLite_Detection_PostProcess"
    if len(specs) == 1 and len(shapes[0]) == 3 and guess_layout(shapes[0]) and max(shapes[0][1:]) >= 100:
        return "yolo", f"one {shapes[0]} output in the YOLO {guess_layout(shapes[0])} layout"
    if len(specs) == 1 and len(shapes[0]) == 4 and min(shapes[0][1:3]) >= 8 and 2 <= shapes[0][3] <= 256:
        return "segment", f"one per-pixel score map {shapes[0]}"
    return "raw", f"no decoder fits the outputs {shapes} unambiguously (set \"decoder\" in the sidecar)"
