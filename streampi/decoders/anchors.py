"""``anchors``: SSD-style anchor heads such as MediaPipe's BlazeFace.

Configured with the options of the three MediaPipe calculators that do this decoding, by
the names (and enum words) of their ``.proto`` files, so an options block can be copied
from a MediaPipe graph ``.pbtxt`` as it is:

- ``SsdAnchorsCalculatorOptions``: the anchors (strides or feature-map sizes, the
  multi-scale generator, or ``fixed_anchors``);
- ``TensorsToDetectionsCalculatorOptions``: boxes and keypoints from the regressors,
  scores from the classificators, the score threshold and the class filters;
- ``NonMaxSuppressionCalculatorOptions``: WEIGHTED or DEFAULT suppression by
  intersection over union.

streampi's own names (``score_threshold``, ``iou_threshold``, ``max_detections``,
``class_agnostic``, ``weighted_nms``) work too and win over MediaPipe's when both are
given (the command line's flags set them). The model has two outputs: regressors
``[1, N, num_coords]`` and scores ``[1, N, num_classes]``. Boxes and keypoints come out
normalised to the input (or in input pixels: ``normalize_coordinates: false``), are
scaled to input pixels, then mapped to the frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Decoder, DetectionOptions, Options, boxes_to_frame, detection_list, input_size, points_to_frame
from .nms import finite_only, nms, weighted_nms

#: The enums of the three calculators' ``.proto`` files: name → number.
BOX_FORMATS = {"UNSPECIFIED": 0, "YXHW": 1, "XYWH": 2, "XYXY": 3}
OVERLAP_TYPES = {"UNSPECIFIED_OVERLAP_TYPE": 0, "JACCARD": 1, "MODIFIED_JACCARD": 2, "INTERSECTION_OVER_UNION": 3}
NMS_ALGORITHMS = {"DEFAULT": 0, "WEIGHTED": 1}

#: More anchors than any detector has (BlazeFace 896, MobileSSD 1917, RetinaNet at 640: 1125):
#: options that would make more are a mistake, refused before the loops run.
MAX_ANCHORS = 1_000_000

#: The SsdAnchors options that generate anchors; MediaPipe refuses them beside ``fixed_anchors``.
_GENERATING = ("input_size_width", "input_size_height", "min_scale", "max_scale", "num_layers")


def enum(o: Options, name: str, default: str | None, values: Mapping[str, int]) -> str | None:
    """A protobuf enum option as a ``.pbtxt`` writes it (a bare word, which the command line
    passes on as a string), as a JSON string (any case) or as its number; → its name."""
    if name not in o:
        return default
    v = o.value(name)
    if isinstance(v, str) and v.strip().upper() in values:
        return v.strip().upper()
    if isinstance(v, int) and not isinstance(v, bool):
        for key, number in values.items():
            if number == v:
                return key
    raise o.error(name, f"must be one of {', '.join(values)} (a bare word as in the .pbtxt, or a JSON string)")


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    return (min_scale + max_scale) * 0.5 if count == 1 else min_scale + (max_scale - min_scale) * index / (count - 1)


def ssd_anchors(*, num_layers: int, strides: list[int], input_size_width: int, input_size_height: int,
                min_scale: float, max_scale: float, anchor_offset_x: float = 0.5, anchor_offset_y: float = 0.5,
                aspect_ratios: Sequence[float] = (1.0,), interpolated_scale_aspect_ratio: float = 1.0,
                reduce_boxes_in_lowest_layer: bool = False, fixed_anchor_size: bool = False,
                feature_map_width: Sequence[int] | None = None,
                feature_map_height: Sequence[int] | None = None) -> np.ndarray:
    """``(N, 4)`` anchors ``[x_center, y_center, w, h]``, normalised, in MediaPipe's order
    (layer by layer, row by row, column by column, anchor by anchor). Layers of equal stride
    share one grid (the first one's); ``feature_map_*`` give each layer's grid size instead of
    the input size over the stride."""
    groups = []
    layer = 0
    while layer < num_layers:
        ratios: list[float] = []
        scales: list[float] = []
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            scale = _scale(min_scale, max_scale, last, len(strides))
            if last == 0 and reduce_boxes_in_lowest_layer:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                for r in aspect_ratios:
                    ratios.append(r)
                    scales.append(scale)
                if interpolated_scale_aspect_ratio > 0.0:
                    nxt = 1.0 if last == len(strides) - 1 else _scale(min_scale, max_scale, last + 1, len(strides))
                    scales.append(math.sqrt(scale * nxt))
                    ratios.append(interpolated_scale_aspect_ratio)
            last += 1
        sizes = [(s * math.sqrt(r), s / math.sqrt(r)) for s, r in zip(scales, ratios)]  # (w, h)
        if feature_map_width is not None and feature_map_height is not None:
            fh, fw = feature_map_height[layer], feature_map_width[layer]
        else:
            stride = strides[layer]
            fh, fw = math.ceil(input_size_height / stride), math.ceil(input_size_width / stride)
        groups.append((sizes, fh, fw))
        layer = last
    _bounded(sum(len(sizes) * fh * fw for sizes, fh, fw in groups))
    anchors = []
    for sizes, fh, fw in groups:
        for y in range(fh):
            for x in range(fw):
                for w, h in sizes:
                    anchors.append(((x + anchor_offset_x) / fw, (y + anchor_offset_y) / fh,
                                    1.0 if fixed_anchor_size else w, 1.0 if fixed_anchor_size else h))
    return np.asarray(anchors, np.float64).reshape(-1, 4)


def multiscale_anchors(*, min_level: int, max_level: int, input_size_width: int, input_size_height: int,
                       aspect_ratios: Sequence[float], anchor_scale: float, scales_per_octave: int,
                       normalize_coordinates: bool, strides: Sequence[int] | None = None,
                       feature_map_width: Sequence[int] | None = None,
                       feature_map_height: Sequence[int] | None = None) -> np.ndarray:
    """MediaPipe's ``multiscale_anchor_generation`` (RetinaNet's grid anchors): level ``l``
    has stride ``2^l``, anchors of ``anchor_scale · 2^l · 2^(k / scales_per_octave)`` for each
    aspect ratio, centred half a stride in when the input size divides by ``2^l``. ``(N, 4)``
    ``[x_center, y_center, w, h]``, in input pixels unless ``normalize_coordinates``."""
    def grid(index: int) -> tuple[int, int]:
        if feature_map_width is not None and feature_map_height is not None:
            return feature_map_height[index], feature_map_width[index]
        assert strides is not None
        return math.ceil(input_size_height / strides[index]), math.ceil(input_size_width / strides[index])

    levels = range(min_level, max_level + 1)
    _bounded(sum(math.prod(grid(k)) for k in range(len(levels))) * len(aspect_ratios) * scales_per_octave)
    anchors = []
    for index, level in enumerate(levels):
        stride = 2.0 ** level
        base = stride * anchor_scale
        scales = [2.0 ** (k / scales_per_octave) for k in range(scales_per_octave)]
        off_y = stride / 2.0 if input_size_height % (2 ** level) == 0 or input_size_height == 1 else 0.0
        off_x = stride / 2.0 if input_size_width % (2 ** level) == 0 or input_size_width == 1 else 0.0
        fh, fw = grid(index)
        for y in range(fh):
            for x in range(fw):
                for r in aspect_ratios:
                    for s in scales:
                        anchors.append((x * stride + off_x, y * stride + off_y,
                                        s * math.sqrt(r) * base, s * base / math.sqrt(r)))
    out = np.asarray(anchors, np.float64).reshape(-1, 4)
    if normalize_coordinates:
        out /= [input_size_width, input_size_height, input_size_width, input_size_height]
    return out


def _bounded(count: int) -> None:
    if count > MAX_ANCHORS:
        raise ModelError(f"anchors decoder: the anchor options make {count} anchors, more than {MAX_ANCHORS} "
                         "(check input_size_width/height, strides and feature_map_width/height)")


def _fixed_anchors(value: Any) -> np.ndarray:
    items = [value] if isinstance(value, Mapping) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise ModelError("anchors decoder option 'fixed_anchors': must be a list of anchors, each an object "
                         "{\"x_center\", \"y_center\", \"w\", \"h\"} (MediaPipe's Anchor)")
    rows = []
    for k, a in enumerate(items):
        if (not isinstance(a, Mapping) or set(a) != {"x_center", "y_center", "w", "h"}
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                       for v in a.values())):
            raise ModelError(f"anchors decoder option 'fixed_anchors': anchor {k} must be an object of the "
                             f"numbers x_center, y_center, w and h, got {a!r}")
        rows.append([a["x_center"], a["y_center"], a["w"], a["h"]])
    return np.asarray(rows, np.float64)


def anchors_from_options(o: Options) -> tuple[np.ndarray, tuple[int, int] | None, bool]:
    """The anchors the SsdAnchorsCalculator options describe, the input size they assume (None
    for ``fixed_anchors``), and whether they are normalised (else in input pixels)."""
    fixed = o.value("fixed_anchors")
    multiscale = o.flag("multiscale_anchor_generation", False)
    num_layers = o.number("num_layers", 1, low=1, integer=True)
    strides = o.numbers("strides", None, integer=True, one=True)
    fm_w = o.numbers("feature_map_width", None, integer=True, one=True)
    fm_h = o.numbers("feature_map_height", None, integer=True, one=True)
    width = o.number("input_size_width", 1, low=1, integer=True)
    height = o.number("input_size_height", 1, low=1, integer=True)
    common = dict(aspect_ratios=o.numbers("aspect_ratios", [1.0], one=True),
                  input_size_width=width, input_size_height=height)
    single = dict(min_scale=o.number("min_scale", 0.1484375, low=0.0), max_scale=o.number("max_scale", 0.75, low=0.0),
                  anchor_offset_x=o.number("anchor_offset_x", 0.5), anchor_offset_y=o.number("anchor_offset_y", 0.5),
                  interpolated_scale_aspect_ratio=o.number("interpolated_scale_aspect_ratio", 1.0),
                  reduce_boxes_in_lowest_layer=o.flag("reduce_boxes_in_lowest_layer", False),
                  fixed_anchor_size=o.flag("fixed_anchor_size", False))
    # read whether or not multi-scale generation is on: MediaPipe ignores them when it is off
    multi = dict(min_level=o.number("min_level", 3, low=0, high=24, integer=True),
                 max_level=o.number("max_level", 7, low=0, high=24, integer=True),
                 anchor_scale=o.number("anchor_scale", 4.0, low=0.0),
                 scales_per_octave=o.number("scales_per_octave", 2, low=1, high=64, integer=True),
                 normalize_coordinates=o.flag("normalize_coordinates", True))
    if fixed is not None:
        clash = [name for name in _GENERATING if name in o] + (["multiscale_anchor_generation"] if multiscale else [])
        if clash:
            raise o.error(clash[0], "must not be set beside fixed_anchors (fixed anchors replace the generated "
                                    "ones; MediaPipe refuses the same)")
        return _fixed_anchors(fixed), None, True
    required = (() if multiscale else ("num_layers", "strides")) + ("input_size_width", "input_size_height")
    for name in required:
        if name not in o:
            raise ModelError(f"anchors decoder: option {name!r} is required (copy the SsdAnchorsCalculator "
                             "options from the MediaPipe graph)")
    if multiscale:
        if multi["max_level"] < multi["min_level"]:
            raise o.error("max_level", f"must be at least min_level ({multi['min_level']})")
        layers, what = multi["max_level"] - multi["min_level"] + 1, "max_level - min_level + 1"
    else:
        layers, what = num_layers, "num_layers"
    if (fm_w is None) != (fm_h is None):
        missing = "feature_map_width" if fm_w is None else "feature_map_height"
        raise ModelError(f"anchors decoder: option {missing!r} is required beside "
                         f"{'feature_map_height' if fm_w is None else 'feature_map_width'!r}")
    for name, sizes in (("feature_map_width", fm_w), ("feature_map_height", fm_h)):
        if sizes is not None and (len(sizes) != layers or min(sizes) < 1):
            raise o.error(name, f"must list {what} ({layers}) positive integers")
    if min(common["aspect_ratios"]) <= 0.0:
        raise o.error("aspect_ratios", "must be positive numbers")
    if strides is not None and min(strides) < 1:
        raise o.error("strides", "must be positive integers")
    if not multiscale or fm_h is None:
        if strides is None:
            raise ModelError("anchors decoder: option 'strides' (or 'feature_map_width' and 'feature_map_height') "
                             "is required for multiscale_anchor_generation")
        if len(strides) != layers:
            raise o.error("strides", f"must list {what} ({layers}) positive integers")
    if multiscale:
        anchors = multiscale_anchors(**common, **multi, strides=strides, feature_map_width=fm_w,
                                     feature_map_height=fm_h)
        return anchors, (width, height), multi["normalize_coordinates"]
    assert strides is not None
    anchors = ssd_anchors(num_layers=num_layers, strides=strides, **common, **single, feature_map_width=fm_w,
                          feature_map_height=fm_h)
    return anchors, (width, height), True


def _box_columns(o: Options) -> list[int] | None:
    """``box_boundaries_indices``: where ymin, xmin, ymax, xmax sit in a decoded box
    ``[ymin, xmin, ymax, xmax]``; → the columns giving ``[xmin, ymin, xmax, ymax]``."""
    value = o.value("box_boundaries_indices")
    if value is None:
        return None
    names = ("ymin", "xmin", "ymax", "xmax")
    idx = {k: value.get(k, d) for d, k in enumerate(names)} if isinstance(value, Mapping) else None
    if (idx is None or not set(value) <= set(names)
            or any(isinstance(v, bool) or not isinstance(v, int) for v in idx.values())
            or sorted(idx.values()) != [0, 1, 2, 3]):
        raise o.error("box_boundaries_indices", "must be an object mapping ymin, xmin, ymax and xmax to 0, 1, 2 "
                                                "and 3, each once")
    return [idx["xmin"], idx["ymin"], idx["xmax"], idx["ymax"]]


class AnchorsDecoder(Decoder):
    kind = "anchors"

    def __init__(self, specs, labels, options: Options) -> None:
        super().__init__(specs, labels, options)
        o = options
        # -- SsdAnchorsCalculatorOptions
        self.anchors, self.input_wh, self.normalized = anchors_from_options(o)
        n = len(self.anchors)
        # -- TensorsToDetectionsCalculatorOptions
        self.num_coords = o.number("num_coords", 4, low=4, integer=True)
        self.box_coord_offset = o.number("box_coord_offset", 0, low=0, integer=True)
        self.keypoint_coord_offset = o.number("keypoint_coord_offset", 4, low=0, integer=True)
        self.num_keypoints = o.number("num_keypoints", 0, low=0, integer=True)
        self.num_values_per_keypoint = o.number("num_values_per_keypoint", 2, low=2, integer=True)
        self.num_classes = o.number("num_classes", 1, low=1, integer=True)
        self.x_scale = o.number("x_scale", 0.0)
        self.y_scale = o.number("y_scale", 0.0)
        self.w_scale = o.number("w_scale", 0.0)
        self.h_scale = o.number("h_scale", 0.0)
        for name in ("x_scale", "y_scale", "w_scale", "h_scale"):
            if getattr(self, name) == 0.0:
                raise o.error(name, "must be set and non-zero (e.g. the input size for BlazeFace)")
        reverse = o.flag("reverse_output_order", False)
        if "box_format" in o:  # MediaPipe: box_format, when given, replaces reverse_output_order
            fmt = enum(o, "box_format", "UNSPECIFIED", BOX_FORMATS)
            self.box_format = "YXHW" if fmt == "UNSPECIFIED" else fmt
        else:
            self.box_format = "XYWH" if reverse else "YXHW"
        self.box_columns = _box_columns(o)
        self.exp_size = o.flag("apply_exponential_on_box_size", False)
        self.sigmoid = o.flag("sigmoid_score", False)
        self.clip = o.number("score_clipping_thresh", 0.0, low=0.0) if "score_clipping_thresh" in o else None
        self.class_mask = self._class_mask(o)
        if o.flag("flip_vertically", False):
            raise o.error("flip_vertically", "is not supported: streampi's input tensors have their origin at the "
                                             "top left, so there is nothing to flip (MediaPipe sets it for GPU "
                                             "textures whose origin is at the bottom left); leave it false")
        max_results = o.number("max_results", -1, integer=True)
        if max_results == 0 or max_results < -1:
            raise o.error("max_results", "must be -1 (all) or a positive number (MediaPipe refuses 0 too)")
        self.max_results = max_results if max_results > 0 else None
        # MediaPipe reads it only for models with the post-processing op inside: no effect here
        o.number("max_classes_per_detection", 1, low=1, integer=True)
        thresh = o.number("min_score_thresh", 0.5, low=0.0, high=1.0)
        if self.box_coord_offset + 4 > self.num_coords:
            raise o.error("box_coord_offset", f"leaves no room for 4 box values in num_coords={self.num_coords}")
        kp_end = self.keypoint_coord_offset + self.num_keypoints * self.num_values_per_keypoint
        if self.num_keypoints and kp_end > self.num_coords:
            raise o.error("num_keypoints", f"needs {kp_end} coordinates, num_coords is {self.num_coords}")
        if "num_boxes" in o and o.number("num_boxes", n, low=1, integer=True) != n:
            raise o.error("num_boxes", f"the anchor options make {n} anchors")
        self.reg_index, self.score_index = self._outputs(o, n)
        # -- NonMaxSuppressionCalculatorOptions (streampi's own names win where both are given)
        algorithm = enum(o, "algorithm", "WEIGHTED", NMS_ALGORITHMS)
        self.weighted = o.flag("weighted_nms", algorithm == "WEIGHTED")
        overlap = enum(o, "overlap_type", "INTERSECTION_OVER_UNION", OVERLAP_TYPES)
        if overlap != "INTERSECTION_OVER_UNION":
            raise o.error("overlap_type", "streampi suppresses by INTERSECTION_OVER_UNION only (JACCARD is MediaPipe's "
                                          "intersection over the enclosing box, MODIFIED_JACCARD the intersection "
                                          "over one box's area)")
        if o.number("num_detection_streams", 1, integer=True) != 1:
            raise o.error("num_detection_streams", "must be 1: the decoder suppresses its one model's detections")
        o.flag("return_empty_detections", False)  # no effect: every answer carries its detections, maybe none
        nms_min = o.number("min_score_threshold", -1.0, high=1.0)
        self.nms_min_score = nms_min if nms_min > 0 else None
        max_num = o.number("max_num_detections", -1, integer=True)
        if max_num == 0 or max_num < -1:
            raise o.error("max_num_detections", "must be -1 (all) or a positive number (MediaPipe refuses 0 too)")
        iou = o.number("min_suppression_threshold", 0.3, low=0.0, high=1.0)
        multiclass = o.flag("multiclass_nms", False)
        self.det = DetectionOptions(o, score_threshold=thresh, iou_threshold=iou,
                                    max_detections=(n if max_num == -1 else max_num) if "max_num_detections" in o
                                    else 100)
        # class-agnostic unless told otherwise, as MediaPipe's multiclass_nms: false
        self.agnostic = self.det.agnostic if "class_agnostic" in o else not multiclass

    def _class_mask(self, o: Options) -> np.ndarray | None:
        allow = o.numbers("allow_classes", None, integer=True, one=True)
        ignore = o.numbers("ignore_classes", None, integer=True, one=True)
        if allow is not None and ignore is not None:
            raise ModelError("anchors decoder: options 'allow_classes' and 'ignore_classes' exclude each other "
                             "(as in MediaPipe); give one")
        chosen, name = (allow, "allow_classes") if allow is not None else (ignore, "ignore_classes")
        if chosen is None:
            return None
        if min(chosen) < 0 or max(chosen) >= self.num_classes:
            raise o.error(name, f"must hold class ids within [0, {self.num_classes}) (num_classes)")
        listed = np.zeros(self.num_classes, bool)
        listed[chosen] = True
        return listed if allow is not None else ~listed

    def _outputs(self, o: Options, n: int) -> tuple[int, int]:
        """The regressors' and the scores' output indices: ``tensor_mapping``'s, else found by shape."""
        shapes = [list(s.shape) for s in self.specs]

        def fits(k: int, width: int, flat_ok: bool) -> bool:
            s = self.specs[k].shape
            return ((len(s) == 3 and s[1] == n and s[2] == width)
                    or (flat_ok and width == 1 and len(s) == 2 and s[1] == n))

        mapping = o.value("tensor_mapping")
        if mapping is not None:
            keys = ("detections_tensor_index", "scores_tensor_index")
            if not isinstance(mapping, Mapping):
                raise o.error("tensor_mapping", "must be an object {\"detections_tensor_index\", "
                                                "\"scores_tensor_index\"}")
            for key in mapping:
                if key in ("classes_tensor_index", "num_detections_tensor_index"):
                    raise o.error("tensor_mapping", f"{key} is for models with the post-processing op inside: "
                                                    "use the ssd_postprocess decoder for those")
                if key == "anchors_tensor_index":
                    raise o.error("tensor_mapping", "anchors_tensor_index is not supported: the anchors come from "
                                                    "the SsdAnchors options or fixed_anchors")
                if key not in keys:
                    raise o.error("tensor_mapping", f"unknown field {key!r}; known: {', '.join(keys)}")
            idx = [mapping.get(k) for k in keys]
            if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < len(self.specs) for v in idx) \
                    or idx[0] == idx[1]:
                raise o.error("tensor_mapping", f"must give detections_tensor_index and scores_tensor_index, two "
                                                f"different output indices below {len(self.specs)}")
            if not fits(idx[0], self.num_coords, False) or not fits(idx[1], self.num_classes, True):
                raise o.error("tensor_mapping", f"outputs {idx[0]} and {idx[1]} of {shapes} are not "
                                                f"[1, {n}, {self.num_coords}] regressors and [1, {n}, "
                                                f"{self.num_classes}] scores")
            return idx[0], idx[1]
        regs = [k for k in range(len(self.specs)) if fits(k, self.num_coords, False)]
        scs = [k for k in range(len(self.specs)) if fits(k, self.num_classes, True) and k not in regs]
        if len(regs) != 1 or len(scs) != 1:
            what = (f"expected outputs [1, {n}, {self.num_coords}] (regressors) and [1, {n}, {self.num_classes}] "
                    f"(scores) for {n} anchors; the model has {shapes}")
            if "num_boxes" in o:
                raise o.error("num_boxes", what)
            raise ModelError(f"anchors decoder: {what}")
        return regs[0], scs[0]

    def decode(self, outputs, i: int, transform) -> dict[str, Any]:
        n = len(self.anchors)
        scores_all = outputs[self.score_index][i].reshape(n, self.num_classes)
        if self.sigmoid:  # MediaPipe clips the logits only on the way into the sigmoid
            if self.clip is not None:
                scores_all = np.clip(scores_all, -self.clip, self.clip)
            scores_all = 1.0 / (1.0 + np.exp(-scores_all))
        if self.class_mask is not None:
            scores_all = np.where(self.class_mask, scores_all, -np.inf)
        classes = scores_all.argmax(axis=1) if self.num_classes > 1 else np.zeros(n, np.int64)
        scores = scores_all[np.arange(n), classes] if self.num_classes > 1 else scores_all[:, 0]
        keep = np.flatnonzero(scores >= self.det.score_threshold)
        reg = outputs[self.reg_index][i][keep].astype(np.float64)
        a = self.anchors[keep]
        o = self.box_coord_offset
        r0, r1, r2, r3 = reg[:, o], reg[:, o + 1], reg[:, o + 2], reg[:, o + 3]
        if self.box_format == "YXHW":
            yc, xc, h, w = r0, r1, r2, r3
        elif self.box_format == "XYWH":
            xc, yc, w, h = r0, r1, r2, r3
        else:  # XYXY: distances from the anchor's centre to the left, top, right and bottom edges
            xc, yc, w, h = (r2 - r0) / 2, (r3 - r1) / 2, r2 + r0, r3 + r1
        xc = xc / self.x_scale * a[:, 2] + a[:, 0]
        yc = yc / self.y_scale * a[:, 3] + a[:, 1]
        if self.exp_size:
            w, h = np.exp(w / self.w_scale) * a[:, 2], np.exp(h / self.h_scale) * a[:, 3]
        else:
            w, h = w / self.w_scale * a[:, 2], h / self.h_scale * a[:, 3]
        if self.box_columns is None:
            boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], 1)
        else:
            boxes = np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], 1)[:, self.box_columns]
        kps = None
        if self.num_keypoints:
            k0 = self.keypoint_coord_offset
            v = reg[:, k0:k0 + self.num_keypoints * self.num_values_per_keypoint].reshape(
                len(keep), self.num_keypoints, self.num_values_per_keypoint)[..., :2]
            kx, ky = (v[..., 1], v[..., 0]) if self.box_format == "YXHW" else (v[..., 0], v[..., 1])
            kps = np.stack([kx / self.x_scale * a[:, 2:3] + a[:, 0:1], ky / self.y_scale * a[:, 3:4] + a[:, 1:2]], -1)
        sc, cl = scores[keep], classes[keep]
        boxes, sc, cl, kps = finite_only(boxes, sc, cl, kps)
        sized = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])  # MediaPipe drops negative sizes
        if not sized.all():
            boxes, sc, cl = boxes[sized], sc[sized], cl[sized]
            kps = None if kps is None else kps[sized]
        if self.max_results is not None:  # the first ones in anchor order, as MediaPipe's max_results
            boxes, sc, cl = boxes[:self.max_results], sc[:self.max_results], cl[:self.max_results]
            kps = None if kps is None else kps[:self.max_results]
        boxes, sc, cl, kps = self._suppress(boxes, sc, cl, kps)
        size = input_size(transform, self.input_wh) if self.normalized else (1.0, 1.0)
        size = size or (1.0, 1.0)  # fixed anchors and no transform: the boxes stay normalised
        boxes = boxes_to_frame(boxes, transform, size)
        if kps is not None:
            kps = points_to_frame(kps, transform, size)
        return {"detections": detection_list(self, boxes, sc, cl, kps)}

    def _suppress(self, boxes, sc, cl, kps):
        det = self.det
        if not self.weighted:
            kept = nms(boxes, sc, det.iou_threshold, det.max_detections, None if self.agnostic else cl)
            boxes, sc, cl, kps = boxes[kept], sc[kept], cl[kept], None if kps is None else kps[kept]
        elif self.agnostic or len(cl) == 0 or (cl == cl[0]).all():
            boxes, sc, kps, idx = weighted_nms(boxes, sc, det.iou_threshold, det.max_detections, kps)
            cl = cl[idx]
        else:  # per class (multiclass_nms), then the best of all classes
            parts = []
            for c in np.unique(cl):
                m = np.flatnonzero(cl == c)
                b, s, k, idx = weighted_nms(boxes[m], sc[m], det.iou_threshold, det.max_detections,
                                            None if kps is None else kps[m])
                parts.append((b, s, k, cl[m][idx]))
            order = np.argsort(-np.concatenate([p[1] for p in parts]), kind="stable")[:det.max_detections]
            boxes = np.concatenate([p[0] for p in parts])[order]
            sc = np.concatenate([p[1] for p in parts])[order]
            cl = np.concatenate([p[3] for p in parts])[order]
            kps = None if kps is None else np.concatenate([p[2] for p in parts])[order]
        if self.nms_min_score is not None:  # MediaPipe's NMS stops at the first candidate below it
            m = sc >= self.nms_min_score
            boxes, sc, cl, kps = boxes[m], sc[m], cl[m], None if kps is None else kps[m]
        return boxes, sc, cl, kps
