"""Decoders: model outputs → result fields, one small module per model family.

:func:`make_decoder` picks and configures one per model (at start-up, so a misconfigured
decoder fails then, naming the option); the workers then call
``decoder.frame_result(outputs, i, transform)`` for every frame of a batch. Boxes and
keypoints come out in the camera frame's pixels through the frame's
:class:`~streampi.preprocess.Transform`.

========================  ====================================================
kind                      outputs
========================  ====================================================
``classify``              ``top``: the best classes of a (batch, classes) output
``ssd_postprocess``       ``detections`` from TFLite_Detection_PostProcess
``yolo``                  ``detections`` from YOLOv5/v8/v11 heads (or NMS-in-model)
``anchors``               ``detections`` (with keypoints) from MediaPipe-style anchors
``segment``               ``segmentation``: a class map as PNG and class fractions
``raw``                   ``outputs``: the tensors themselves
========================  ====================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ModelError
from ..model import TensorSpec
from ..results import summarize  # re-exported: it reads what the decoders write
from .anchors import AnchorsDecoder
from .base import Decoder, Options
from .classify import ClassifyDecoder
from .raw import RawDecoder
from .segment import SegmentDecoder
from .selection import KINDS, auto_kind
from .ssd_postprocess import SsdPostprocessDecoder
from .yolo import YoloDecoder

__all__ = ["KINDS", "Decoder", "make_decoder", "auto_kind", "summarize"]

_CLASSES = {"classify": ClassifyDecoder, "ssd_postprocess": SsdPostprocessDecoder, "yolo": YoloDecoder,
            "anchors": AnchorsDecoder, "segment": SegmentDecoder, "raw": RawDecoder}


def make_decoder(output_specs: Sequence[TensorSpec], config: Any = None, kind: str | None = None,
                 options: Mapping[str, Any] | None = None) -> Decoder:
    """The decoder for a model's outputs.

    ``config`` is a :class:`~streampi.config.ModelConfig` (labels, ``top_k`` and the
    sidecar's ``"decoder": {"kind": ..., ...options}``); ``kind``/``options`` override
    it (``streampi serve --decoder``): options given with the sidecar's own kind are
    merged over the sidecar's, another kind starts afresh. Raises
    :class:`~streampi.errors.ModelError` naming the bad option.
    """
    specs = list(output_specs)
    section = dict(getattr(config, "decoder", None) or {})
    if not isinstance(section, dict):
        raise ModelError(f"the sidecar's \"decoder\" must be a JSON object, got {section!r}")
    sidecar_kind = section.pop("kind", None)
    chosen = kind if kind is not None else sidecar_kind
    merged = {**section, **(options or {})} if chosen == sidecar_kind else dict(options or {})
    if chosen is None:
        chosen, _ = auto_kind(specs)
    if chosen not in _CLASSES:
        raise ModelError(f"unknown decoder kind {chosen!r}; expected one of {', '.join(KINDS)}")
    labels = getattr(config, "labels", None)
    opts = Options(chosen, merged)
    if chosen == "classify":
        decoder = ClassifyDecoder(specs, labels, opts, top_k=int(getattr(config, "top_k", 5)))
    else:
        decoder = _CLASSES[chosen](specs, labels, opts)
    opts.finish()
    return decoder
