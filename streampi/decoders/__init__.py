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


def _num(v: float) -> str:
    return f"{v:.0f}"


def summarize(result: dict, max_items: int = 4) -> str:
    """A one-line human summary of a result's decoded fields (for ``streampi subscribe``)."""
    if "detections" in result:
        dets = result["detections"]
        if not dets:
            return "no detections"
        parts = [f"{d.get('label') or d['class']} {d['score']:.2f} "
                 f"[{','.join(_num(v) for v in d['box'])}]" for d in dets[:max_items]]
        more = f" +{len(dets) - max_items} more" if len(dets) > max_items else ""
        return f"{len(dets)} det: " + "; ".join(parts) + more
    if "segmentation" in result:
        seg = result["segmentation"]
        top = sorted(seg.get("fractions", {}).items(), key=lambda kv: -kv[1])[:max_items]
        return f"mask {seg['width']}x{seg['height']}: " + ", ".join(f"{k} {v * 100:.0f}%" for k, v in top)
    top = result.get("top") or []
    if top:
        return f"{top[0][1] or top[0][0]} {top[0][2]:.3f}"
    return f"{len(result.get('outputs', []))} outputs"


def add_arguments(parser: Any) -> None:
    """``streampi serve``'s decoder flags (they override the sidecar's ``"decoder"``)."""
    from .selection import KINDS as kinds

    g = parser.add_argument_group("decoding (overrides the sidecar's \"decoder\")")
    g.add_argument("--decoder", choices=kinds, help="decoder kind (default: the sidecar's, else chosen from the "
                                                   "output shapes)")
    g.add_argument("--decoder-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a decoder option, VALUE as JSON (e.g. layout=\"v5\", strides=[8,16]); repeatable")
    g.add_argument("--score-threshold", type=float, help="drop detections scoring below this")
    g.add_argument("--iou-threshold", type=float, help="NMS: suppress boxes overlapping a better one by more")
    g.add_argument("--max-detections", type=int, help="detections per frame, at most")
    g.add_argument("--class-agnostic", action="store_true", default=None, help="NMS across classes")
    g.add_argument("--raw-outputs", action="store_true", default=None, help="also send the output tensors")


def overrides_from_arguments(args: Any) -> dict[str, Any] | None:
    """The ``decoder`` override for :func:`streampi.config.load_config` from parsed flags."""
    import json

    section: dict[str, Any] = {}
    for item in getattr(args, "decoder_option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ModelError(f"--decoder-option takes KEY=VALUE, got {item!r}")
        try:
            section[key] = json.loads(value)
        except ValueError:
            section[key] = value  # a bare word: a string
    for name in ("score_threshold", "iou_threshold", "max_detections", "class_agnostic", "raw_outputs"):
        value = getattr(args, name, None)
        if value is not None:
            section[name] = value
    if getattr(args, "decoder", None):
        section["kind"] = args.decoder
    return section or None
