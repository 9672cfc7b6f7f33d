"""What every decoder shares: option checking, the raw-outputs field, and the mapping of
boxes and keypoints from input-tensor pixels to the camera frame's pixels."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ModelError
from ..model import TensorSpec
from ..preprocess import Transform
from .nms import nms_list


def raw_outputs(specs: Sequence[TensorSpec], outputs: Sequence[np.ndarray], i: int) -> list[dict[str, Any]]:
    """Frame ``i``'s output tensors as the protocol's ``outputs`` field (float32, little-endian)."""
    return [{"name": spec.name, "shape": list(out.shape[1:]), "dtype": "float32",
             "data": np.ascontiguousarray(out[i], dtype="<f4").tobytes()}
            for spec, out in zip(specs, outputs)]


class Options:
    """Reads a decoder's options, each once, and refuses the ones nobody read.

    Errors name the decoder and the option, so a misconfigured sidecar fails at start-up
    with a message that says what to fix.
    """

    def __init__(self, kind: str, options: Mapping[str, Any] | None) -> None:
        if options is not None and not isinstance(options, Mapping):
            raise ModelError(f"the {kind} decoder's options must be a JSON object, got {type(options).__name__}")
        self.kind = kind
        self._values = dict(options or {})
        self._read: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def _raw(self, name: str, default: Any) -> Any:
        self._read.add(name)
        return self._values.get(name, default)

    def error(self, name: str, what: str) -> ModelError:
        return ModelError(f"{self.kind} decoder option {name!r}: {what}, got {self._values.get(name)!r}")

    def number(self, name: str, default: float, *, low: float | None = None, high: float | None = None,
               integer: bool = False) -> Any:
        v = self._raw(name, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and v != int(v)) or v != v:
            raise self.error(name, "must be an integer" if integer else "must be a number")
        if (low is not None and v < low) or (high is not None and v > high):
            raise self.error(name, f"must be within [{low}, {high}]")
        return int(v) if integer else float(v)

    def flag(self, name: str, default: bool) -> bool:
        v = self._raw(name, default)
        if not isinstance(v, bool):
            raise self.error(name, "must be true or false")
        return v

    def choice(self, name: str, default: Any, choices: Sequence[Any]) -> Any:
        v = self._raw(name, default)
        if v not in choices:
            raise self.error(name, f"must be one of {', '.join(map(str, choices))}")
        return v

    def numbers(self, name: str, default: Sequence[float] | None, *, length: int | None = None,
                integer: bool = False, one: bool = False) -> list | None:
        """A list of numbers; ``one``: a single number stands for a list of one (a repeated
        field of a protobuf text file written once, as MediaPipe's ``aspect_ratios: 1.0``)."""
        v = self._raw(name, default)
        if v is None:
            return None
        if one and isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v]
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or not v or any(
                isinstance(x, bool) or not isinstance(x, (int, float)) or (integer and x != int(x)) for x in v):
            raise self.error(name, "must be a non-empty list of " + ("integers" if integer else "numbers"))
        if length is not None and len(v) != length:
            raise self.error(name, f"must hold {length} values")
        return [int(x) if integer else float(x) for x in v]

    def value(self, name: str, default: Any = None) -> Any:
        """The option as given (for a nested object the decoder checks itself)."""
        return self._raw(name, default)

    def text(self, name: str, default: str | None) -> str | None:
        v = self._raw(name, default)
        if v is not None and not isinstance(v, str):
            raise self.error(name, "must be a string")
        return v

    def finish(self) -> None:
        """Raise for the options nobody asked for (usually a typo)."""
        unknown = sorted(set(self._values) - self._read)
        if unknown:
            raise ModelError(f"{self.kind} decoder: unknown option {unknown[0]!r}; known options: "
                             f"{', '.join(sorted(self._read))}")


class Decoder:
    """Turns one frame's slice of the batched outputs into result fields.

    Subclasses set ``kind`` and implement :meth:`decode`; the ``raw_outputs`` option adds
    the output tensors themselves: opt-in for the box and mask decoders, whose outputs are
    large (a YOLOv8 head is 2.8 MB a frame); on by default for ``classify``, whose scores
    are small and which clients of the protocol already read.
    """

    kind = "?"
    batchable = True
    raw_default = False

    def __init__(self, specs: Sequence[TensorSpec], labels: Sequence[str] | None, options: Options) -> None:
        self.specs = list(specs)
        self.labels = tuple(labels) if labels else None
        self.include_raw = options.flag("raw_outputs", self.raw_default)

    def decode(self, outputs: Sequence[np.ndarray], i: int, transform: Transform | None) -> dict[str, Any]:
        raise NotImplementedError

    def frame_result(self, outputs: Sequence[np.ndarray], i: int, transform: Transform | None = None) -> dict[str, Any]:
        """The result fields of frame ``i`` of a batch (``outputs``: float arrays, batch first)."""
        result = self.decode(outputs, i, transform)
        if self.include_raw:
            result["outputs"] = raw_outputs(self.specs, outputs, i)
        return result

    def label(self, c: int) -> str | None:
        labels = self.labels
        return labels[c] if labels is not None and 0 <= c < len(labels) else None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "batchable": self.batchable}


class DetectionOptions:
    """Score threshold, IoU threshold, max detections and class-agnostic NMS: the options
    every box decoder takes (same names in the sidecar and on the command line)."""

    def __init__(self, options: Options, *, score_threshold: float = 0.25, iou_threshold: float = 0.45,
                 max_detections: int = 100) -> None:
        self.score_threshold = options.number("score_threshold", score_threshold, low=0.0, high=1.0)
        self.iou_threshold = options.number("iou_threshold", iou_threshold, low=0.0, high=1.0)
        self.max_detections = options.number("max_detections", max_detections, low=1, integer=True)
        self.agnostic = options.flag("class_agnostic", False)


def input_size(transform: Transform | None, fallback: Sequence[int] | None) -> tuple[float, float] | None:
    """``(width, height)`` of the model input, from the frame's transform or an option."""
    if transform is not None and transform.input_width and transform.input_height:
        return float(transform.input_width), float(transform.input_height)
    if fallback:
        return float(fallback[0]), float(fallback[1])
    return None


@functools.lru_cache(maxsize=256)
def _affine(t: Transform, unit_x: float, unit_y: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``frame = value · a + b`` for ``[x, y]`` pairs in units of ``unit`` input pixels
    (``x_frame = (x_input - offset) / scale + crop``), and the frame size to clip to.
    Cached: a camera's frames share one transform."""
    a = np.array([unit_x / t.scale_x, unit_y / t.scale_y])
    b = np.array([t.crop_x - t.offset_x / t.scale_x, t.crop_y - t.offset_y / t.scale_y])
    hi = np.array([t.frame_width, t.frame_height], np.float64) if t.frame_width and t.frame_height else None
    return a, b, hi


def boxes_to_frame(boxes: np.ndarray, transform: Transform | None,
                   unit: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """``(n, 4)`` ``[x0, y0, x1, y1]`` in units of ``unit`` input pixels (1: pixels; the input
    size: normalised) → frame pixels, clipped to the frame; without a transform, → input pixels."""
    if transform is None:
        return boxes * np.tile(unit, 2) if unit != (1.0, 1.0) else boxes
    a, b, hi = _affine(transform, float(unit[0]), float(unit[1]))
    out = boxes.reshape(-1, 2, 2) * a
    out += b
    if hi is not None:
        np.clip(out, 0.0, hi, out=out)
    return out.reshape(-1, 4)


def points_to_frame(points: np.ndarray, transform: Transform | None,
                    unit: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """``(..., 2)`` ``[x, y]`` like :func:`boxes_to_frame`."""
    if transform is None:
        return points * np.asarray(unit) if unit != (1.0, 1.0) else points
    a, b, hi = _affine(transform, float(unit[0]), float(unit[1]))
    out = points * a
    out += b
    if hi is not None:
        np.clip(out, 0.0, hi, out=out)
    return out


@functools.lru_cache(maxsize=256)
def _affine_floats(t: Transform, unit_x: float, unit_y: float) -> tuple[float, float, float, float, float, float]:
    """:func:`_affine` as plain floats (``ax, ay, bx, by, width, height``; size 0: no clip)."""
    return (unit_x / t.scale_x, unit_y / t.scale_y, t.crop_x - t.offset_x / t.scale_x,
            t.crop_y - t.offset_y / t.scale_y, float(t.frame_width or 0), float(t.frame_height or 0))


def few_detections(decoder: Decoder, boxes: list, scores: list, classes: list, transform: Transform | None,
                   unit: tuple[float, float], iou_threshold: float, max_detections: int,
                   agnostic: bool) -> list[dict[str, Any]]:
    """NMS, frame mapping and the ``detections`` list in plain Python, for the handful of
    candidates a small detector leaves above its threshold (NumPy's per-call overhead would
    cost more than the work). Same results as the array path."""
    kept = nms_list(boxes, scores, iou_threshold, max_detections, None if agnostic else classes)
    if transform is None:
        ax, ay, bx, by, fw, fh = float(unit[0]), float(unit[1]), 0.0, 0.0, 0.0, 0.0
    else:
        ax, ay, bx, by, fw, fh = _affine_floats(transform, float(unit[0]), float(unit[1]))
    out = []
    for k in kept:
        x0, y0, x1, y1 = boxes[k]
        box = [x0 * ax + bx, y0 * ay + by, x1 * ax + bx, y1 * ay + by]
        if fw and fh and not (0.0 <= box[0] <= fw and 0.0 <= box[2] <= fw and 0.0 <= box[1] <= fh
                              and 0.0 <= box[3] <= fh):
            box = [min(max(box[0], 0.0), fw), min(max(box[1], 0.0), fh),
                   min(max(box[2], 0.0), fw), min(max(box[3], 0.0), fh)]
        c = int(classes[k])
        out.append({"box": box, "score": float(scores[k]), "class": c, "label": decoder.label(c)})
    return out


def detection_list(decoder: Decoder, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                   keypoints: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The protocol's ``detections``: ``[{"box", "score", "class", "label", "keypoints"?}]``."""
    out = []
    box_rows, score_list, class_list = boxes.tolist(), scores.tolist(), classes.tolist()
    kp_rows = keypoints.tolist() if keypoints is not None else None
    for k in range(len(box_rows)):
        c = int(class_list[k])
        d = {"box": box_rows[k], "score": float(score_list[k]), "class": c, "label": decoder.label(c)}
        if kp_rows is not None:
            d["keypoints"] = kp_rows[k]
        out.append(d)
    return out
