"""``anchors``: SSD-style anchor heads such as MediaPipe's BlazeFace.

Configured with the option names of MediaPipe's ``SsdAnchorsCalculatorOptions`` and
``TensorsToDetectionsCalculatorOptions`` (plus ``min_suppression_threshold`` and
``weighted_nms`` for its suppression step), so the values can be copied from a
MediaPipe graph ``.pbtxt``. The model has two outputs: regressors ``[1, N, num_coords]``
and scores ``[1, N, num_classes]``. Boxes and keypoints come out normalised to the input,
are scaled to input pixels, then mapped to the frame.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Decoder, DetectionOptions, Options, boxes_to_frame, detection_list, input_size, points_to_frame
from .nms import finite_only, nms, weighted_nms


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    return (min_scale + max_scale) * 0.5 if count == 1 else min_scale + (max_scale - min_scale) * index / (count - 1)


def ssd_anchors(*, num_layers: int, strides: list[int], input_size_width: int, input_size_height: int,
                min_scale: float, max_scale: float, anchor_offset_x: float = 0.5, anchor_offset_y: float = 0.5,
                aspect_ratios: list[float] = (1.0,), interpolated_scale_aspect_ratio: float = 1.0,
                reduce_boxes_in_lowest_layer: bool = False, fixed_anchor_size: bool = False) -> np.ndarray:
    """``(N, 4)`` anchors ``[x_center, y_center, w, h]``, normalised, in MediaPipe's order
    (layer by layer, row by row, column by column, anchor by anchor)."""
    anchors = []
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
        stride = strides[layer]
        fh, fw = math.ceil(input_size_height / stride), math.ceil(input_size_width / stride)
        for y in range(fh):
            for x in range(fw):
                for w, h in sizes:
                    anchors.append(((x + anchor_offset_x) / fw, (y + anchor_offset_y) / fh,
                                    1.0 if fixed_anchor_size else w, 1.0 if fixed_anchor_size else h))
        layer = last
    return np.asarray(anchors, np.float64).reshape(-1, 4)


class AnchorsDecoder(Decoder):
    kind = "anchors"

    def __init__(self, specs, labels, options: Options) -> None:
        super().__init__(specs, labels, options)
        o = options
        for required in ("num_layers", "strides", "input_size_width", "input_size_height"):
            if required not in o:
                raise ModelError(f"anchors decoder: option {required!r} is required (copy the "
                                 "SsdAnchorsCalculator options from the MediaPipe graph)")
        num_layers = o.number("num_layers", 1, low=1, integer=True)
        strides = o.numbers("strides", None, integer=True)
        if strides is None or len(strides) != num_layers or min(strides) < 1:
            raise o.error("strides", f"must list num_layers ({num_layers}) positive integers")
        width = o.number("input_size_width", 0, low=1, integer=True)
        height = o.number("input_size_height", 0, low=1, integer=True)
        self.anchors = ssd_anchors(
            num_layers=num_layers, strides=strides, input_size_width=width, input_size_height=height,
            min_scale=o.number("min_scale", 0.1484375, low=0.0), max_scale=o.number("max_scale", 0.75, low=0.0),
            anchor_offset_x=o.number("anchor_offset_x", 0.5), anchor_offset_y=o.number("anchor_offset_y", 0.5),
            aspect_ratios=o.numbers("aspect_ratios", [1.0]),
            interpolated_scale_aspect_ratio=o.number("interpolated_scale_aspect_ratio", 1.0),
            reduce_boxes_in_lowest_layer=o.flag("reduce_boxes_in_lowest_layer", False),
            fixed_anchor_size=o.flag("fixed_anchor_size", False))
        self.input_wh = (width, height)
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
        self.reverse = o.flag("reverse_output_order", False)
        self.exp_size = o.flag("apply_exponential_on_box_size", False)
        self.sigmoid = o.flag("sigmoid_score", False)
        self.clip = o.number("score_clipping_thresh", 0.0, low=0.0) if "score_clipping_thresh" in o else None
        thresh = o.number("min_score_thresh", 0.5, low=0.0, high=1.0)
        iou = o.number("min_suppression_threshold", 0.3, low=0.0, high=1.0)
        self.weighted = o.flag("weighted_nms", True)
        self.det = DetectionOptions(o, score_threshold=thresh, iou_threshold=iou)
        if self.box_coord_offset + 4 > self.num_coords:
            raise o.error("box_coord_offset", f"leaves no room for 4 box values in num_coords={self.num_coords}")
        kp_end = self.keypoint_coord_offset + self.num_keypoints * self.num_values_per_keypoint
        if self.num_keypoints and kp_end > self.num_coords:
            raise o.error("num_keypoints", f"needs {kp_end} coordinates, num_coords is {self.num_coords}")
        n = len(self.anchors)
        regs = [k for k, s in enumerate(self.specs) if len(s.shape) == 3 and s.shape[1] == n
                and s.shape[2] == self.num_coords]
        scs = [k for k, s in enumerate(self.specs) if len(s.shape) in (2, 3) and s.shape[1] == n
               and (s.shape[2] if len(s.shape) == 3 else 1) == self.num_classes and k not in regs]
        if len(regs) != 1 or len(scs) != 1:
            raise ModelError(f"anchors decoder: expected outputs [1, {n}, {self.num_coords}] (regressors) and "
                             f"[1, {n}, {self.num_classes}] (scores) for {n} anchors; the model has "
                             f"{[list(s.shape) for s in self.specs]}")
        self.reg_index, self.score_index = regs[0], scs[0]

    def decode(self, outputs, i: int, transform) -> dict[str, Any]:
        raw_scores = outputs[self.score_index][i].reshape(len(self.anchors), self.num_classes)
        if self.clip is not None:
            raw_scores = np.clip(raw_scores, -self.clip, self.clip)
        scores_all = 1.0 / (1.0 + np.exp(-raw_scores)) if self.sigmoid else raw_scores
        classes = scores_all.argmax(axis=1) if self.num_classes > 1 else np.zeros(len(self.anchors), np.int64)
        scores = scores_all[np.arange(len(classes)), classes] if self.num_classes > 1 else scores_all[:, 0]
        keep = np.flatnonzero(scores >= self.det.score_threshold)
        reg = outputs[self.reg_index][i][keep].astype(np.float64)
        a = self.anchors[keep]
        o = self.box_coord_offset
        if self.reverse:
            xc, yc, w, h = reg[:, o], reg[:, o + 1], reg[:, o + 2], reg[:, o + 3]
        else:
            yc, xc, h, w = reg[:, o], reg[:, o + 1], reg[:, o + 2], reg[:, o + 3]
        xc = xc / self.x_scale * a[:, 2] + a[:, 0]
        yc = yc / self.y_scale * a[:, 3] + a[:, 1]
        if self.exp_size:
            w, h = np.exp(w / self.w_scale) * a[:, 2], np.exp(h / self.h_scale) * a[:, 3]
        else:
            w, h = w / self.w_scale * a[:, 2], h / self.h_scale * a[:, 3]
        boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], 1)
        kps = None
        if self.num_keypoints:
            k0 = self.keypoint_coord_offset
            v = reg[:, k0:k0 + self.num_keypoints * self.num_values_per_keypoint].reshape(
                len(keep), self.num_keypoints, self.num_values_per_keypoint)[..., :2]
            kx, ky = (v[..., 0], v[..., 1]) if self.reverse else (v[..., 1], v[..., 0])
            kps = np.stack([kx / self.x_scale * a[:, 2:3] + a[:, 0:1], ky / self.y_scale * a[:, 3:4] + a[:, 1:2]], -1)
        sc, cl = scores[keep], classes[keep]
        boxes, sc, cl, kps = finite_only(boxes, sc, cl, kps)
        det = self.det
        if self.weighted:
            # MediaPipe's suppression is class-agnostic unless told otherwise
            boxes, sc, kps, idx = weighted_nms(boxes, sc, det.iou_threshold, det.max_detections, kps)
            cl = cl[idx]
        else:
            kept = nms(boxes, sc, det.iou_threshold, det.max_detections, None if det.agnostic else cl)
            boxes, sc, cl = boxes[kept], sc[kept], cl[kept]
            kps = None if kps is None else kps[kept]
        size = input_size(transform, self.input_wh)
        boxes = boxes_to_frame(boxes, transform, size)
        if kps is not None:
            kps = points_to_frame(kps, transform, size)
        return {"detections": detection_list(self, boxes, sc, cl, kps)}
