"""The ``anchors`` decoder configured by a MediaPipe graph's options, pasted as they are.

References: the option blocks of MediaPipe's face detection graph (text copied verbatim from
``mediapipe/modules/face_detection/face_detection.pbtxt``, with the values that
``face_detection_short_range.pbtxt`` puts in through ``option_value``), MediaPipe's own anchor
golden files (tests/data/mediapipe), and a plain-loop twin of MediaPipe's
``TensorsToDetectionsCalculator::ProcessCPU`` and ``WeightedNonMaxSuppression`` written from
their C++ text.
"""

from __future__ import annotations

import argparse
import gzip
import math
import re
from pathlib import Path

import numpy as np
import pytest

from streampi.cli._argtypes import add_decoder_arguments, decoder_overrides
from streampi.decoders import make_decoder
from streampi.decoders.anchors import anchors_from_options, ssd_anchors
from streampi.decoders.base import Options
from streampi.errors import ModelError
from streampi.model import TensorSpec
from streampi.preprocess import Transform

DATA = Path(__file__).parent / "data" / "mediapipe"

# -- MediaPipe's text, as it is ---------------------------------------------------------------
# face_detection.pbtxt's three calculator nodes' option blocks (verbatim) ...
SSD_ANCHORS = """
    [mediapipe.SsdAnchorsCalculatorOptions.ext] {
        num_layers: 1
        min_scale: 0.1484375
        max_scale: 0.75
        anchor_offset_x: 0.5
        anchor_offset_y: 0.5
        aspect_ratios: 1.0
        fixed_anchor_size: true
    }
"""
TENSORS_TO_DETECTIONS = """
    [mediapipe.TensorsToDetectionsCalculatorOptions.ext] {
      num_classes: 1
      num_coords: 16
      box_coord_offset: 0
      keypoint_coord_offset: 4
      num_keypoints: 6
      num_values_per_keypoint: 2
      sigmoid_score: true
      score_clipping_thresh: 100.0
      reverse_output_order: true
    }
"""
NON_MAX_SUPPRESSION = """
    [mediapipe.NonMaxSuppressionCalculatorOptions.ext] {
      min_suppression_threshold: 0.3
      overlap_type: INTERSECTION_OVER_UNION
      algorithm: WEIGHTED
    }
"""
# ... and the option_value lines of those nodes with face_detection_short_range.pbtxt's values
# (tensor_width/height 128 → input_size_width/height; num_layers replaces the block's 1).
SHORT_RANGE_VALUES = """
      input_size_width: 128
      input_size_height: 128
      num_layers: 4
      strides: 8
      strides: 16
      strides: 16
      strides: 16
      interpolated_scale_aspect_ratio: 1.0

      num_boxes: 896
      x_scale: 128.0
      y_scale: 128.0
      h_scale: 128.0
      w_scale: 128.0
      min_score_thresh: 0.5
"""

#: The same decoder in streampi's own names where it has them.
OWN_NAMES = {"num_layers": 4, "min_scale": 0.1484375, "max_scale": 0.75, "input_size_width": 128,
             "input_size_height": 128, "strides": [8, 16, 16, 16], "fixed_anchor_size": True, "num_coords": 16,
             "num_keypoints": 6, "sigmoid_score": True, "score_clipping_thresh": 100.0,
             "reverse_output_order": True, "x_scale": 128.0, "y_scale": 128.0, "h_scale": 128.0,
             "w_scale": 128.0, "score_threshold": 0.5, "iou_threshold": 0.3, "weighted_nms": True}


def parse_pbtxt(text: str) -> dict:
    """Protobuf text format → the decoder's option form: a field written once is a value, a
    repeated one a list; an enum's bare word a string (as ``--decoder-option`` passes it);
    ``[extension] { ... }`` blocks are opened into their fields."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\[[\w.]+\]|[\w.+-]+|[{}:]', re.sub(r"#.*", "", text))
    pos = 0

    def block(end: str | None) -> dict:
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != end:
            name = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            if tokens[pos] == "{":
                pos += 1
                value = block("}")
                pos += 1
                if name.startswith("["):
                    out.update(value)
                    continue
            else:
                value = scalar(tokens[pos])
                pos += 1
            if name in out:
                out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [value]
            else:
                out[name] = value
        return out

    def scalar(tok: str):
        if tok.startswith('"'):
            return tok[1:-1]
        if tok in ("true", "false"):
            return tok == "true"
        try:
            return int(tok)
        except ValueError:
            pass
        try:
            return float(tok)
        except ValueError:
            return tok  # an enum's name

    return block(None)


def pasted() -> dict:
    options = {}
    for text in (SSD_ANCHORS, TENSORS_TO_DETECTIONS, NON_MAX_SUPPRESSION, SHORT_RANGE_VALUES):
        options.update(parse_pbtxt(text))
    return options


def spec(shape, name="out") -> TensorSpec:
    shape = tuple(shape)
    return TensorSpec(name, 0, shape, shape, np.dtype(np.float32), 0.0, 0)


SPECS = [spec((1, 896, 16), "regressors"), spec((1, 896, 1), "classificators")]


# -- MediaPipe's pipeline in plain loops, from its C++ ------------------------------------------
def blazeface_anchors() -> list[tuple[float, float, float, float]]:
    """SsdAnchorsCalculator for the short-range graph: stride 8 → 16×16 cells × 2 anchors
    (aspect 1 and the interpolated one), strides 16, 16, 16 → one 8×8 grid × 6; fixed size 1."""
    out = []
    for grid, per_cell in ((16, 2), (8, 6)):
        for y in range(grid):
            for x in range(grid):
                out += [((x + 0.5) / grid, (y + 0.5) / grid, 1.0, 1.0)] * per_cell
    return out


def mediapipe_detections(reg: np.ndarray, logits: np.ndarray) -> list[tuple[float, list, list]]:
    """TensorsToDetections (XYWH, sigmoid, clip 100, threshold 0.5) then NonMaxSuppression
    (WEIGHTED, INTERSECTION_OVER_UNION, 0.3): ``[(score, [xmin, ymin, xmax, ymax], keypoints)]``."""
    anchors = blazeface_anchors()
    dets = []
    for i, (ax, ay, aw, ah) in enumerate(anchors):
        score = 1.0 / (1.0 + math.exp(-min(max(float(logits[i, 0]), -100.0), 100.0)))
        if score < 0.5:
            continue
        r = [float(v) for v in reg[i]]
        xc, yc = r[0] / 128 * aw + ax, r[1] / 128 * ah + ay
        w, h = r[2] / 128 * aw, r[3] / 128 * ah
        if w < 0 or h < 0:
            continue
        kps = [[r[4 + 2 * k] / 128 * aw + ax, r[5 + 2 * k] / 128 * ah + ay] for k in range(6)]
        dets.append((score, [xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], kps))

    def iou(a, b):
        ix = min(a[2], b[2]) - max(a[0], b[0])
        iy = min(a[3], b[3]) - max(a[1], b[1])
        if ix < 0 or iy < 0:
            return 0.0
        inter = ix * iy
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    remained = sorted(range(len(dets)), key=lambda k: -dets[k][0])
    out = []
    while remained:
        top = dets[remained[0]]
        candidates = [k for k in remained if iou(dets[k][1], top[1]) > 0.3]
        remained = [k for k in remained if k not in candidates]
        total = sum(dets[k][0] for k in candidates)
        box = [sum(dets[k][1][j] * dets[k][0] for k in candidates) / total for j in range(4)]
        kps = [[sum(dets[k][2][p][j] * dets[k][0] for k in candidates) / total for j in range(2)]
               for p in range(6)]
        out.append((top[0], box, kps))
    return out


def faces_outputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Regressors and logits for three faces, each seen by the anchors near it with noisy
    boxes, plus background noise (a few stray anchors above the threshold)."""
    rng = np.random.default_rng(seed)
    anchors = np.asarray(blazeface_anchors())
    reg = rng.normal(0.0, 4.0, (896, 16)).astype(np.float32)
    logits = rng.normal(-6.0, 2.0, (896, 1)).astype(np.float32)
    for cx, cy, size in ((0.3, 0.35, 0.25), (0.7, 0.6, 0.3), (0.36, 0.42, 0.2)):
        near = np.flatnonzero(np.hypot(anchors[:, 0] - cx, anchors[:, 1] - cy) < size / 2)
        for k in near:
            ax, ay = anchors[k, :2]
            box = [(cx - ax) * 128, (cy - ay) * 128, size * 128, size * 128]
            kps = [((cx + dx * size - ax) * 128, (cy + dy * size - ay) * 128)
                   for dx, dy in ((-0.2, -0.1), (0.2, -0.1), (0, 0.05), (0, 0.2), (-0.4, 0), (0.4, 0))]
            reg[k] = np.asarray(box + [v for p in kps for v in p]) + rng.normal(0.0, 1.5, 16)
            logits[k, 0] = rng.uniform(-1.0, 4.0)
    return reg[None], logits[None]


# -- the pasted graph ---------------------------------------------------------------------------
def test_the_transcription_holds_every_value_of_the_graph():
    opts = pasted()
    assert opts["algorithm"] == "WEIGHTED" and opts["overlap_type"] == "INTERSECTION_OVER_UNION"
    assert opts["strides"] == [8, 16, 16, 16] and opts["aspect_ratios"] == 1.0 and opts["num_boxes"] == 896
    assert opts["num_layers"] == 4 and opts["input_size_width"] == 128 and opts["min_suppression_threshold"] == 0.3


def test_pasted_graph_gives_mediapipes_detections_and_streampis_own():
    reg, logits = faces_outputs()
    mine = make_decoder(SPECS, None, kind="anchors", options=pasted()).frame_result([reg, logits], 0)["detections"]
    own = make_decoder(SPECS, None, kind="anchors", options=OWN_NAMES).frame_result([reg, logits], 0)["detections"]
    assert mine == own
    want = mediapipe_detections(reg[0], logits[0])
    assert len(want) >= 3 and len(mine) == len(want)
    for got, (score, box, kps) in zip(mine, want):
        assert got["score"] == pytest.approx(score, rel=1e-6)
        assert got["box"] == pytest.approx([v * 128 for v in box], abs=1e-3)
        assert np.ravel(got["keypoints"]) == pytest.approx(np.ravel(kps) * 128, abs=1e-3)
    # and through a frame's transform (a 256×256 frame scaled to the 128×128 input)
    t = Transform(0.5, 0.5, 0.0, 0.0, 0, 0, 256, 256, 128, 128)
    framed = make_decoder(SPECS, None, kind="anchors", options=pasted()).frame_result([reg, logits], 0, t)
    assert np.ravel([d["box"] for d in framed["detections"]]) == pytest.approx(
        np.clip(np.ravel([box for _, box, _ in want]) * 256, 0, 256), abs=1e-3)


def test_weighted_and_default_algorithms_differ_as_weighted_nms_does():
    reg, logits = faces_outputs(1)

    def run(**extra):
        dec = make_decoder(SPECS, None, kind="anchors", options={**pasted(), **extra})
        return dec.frame_result([reg, logits], 0)["detections"]

    weighted, plain = run(), run(algorithm="DEFAULT")
    assert weighted != plain and len(weighted) == len(plain)
    assert plain == run(algorithm="DEFAULT", weighted_nms=False)
    own = make_decoder(SPECS, None, kind="anchors", options={**OWN_NAMES, "weighted_nms": False})
    assert plain == own.frame_result([reg, logits], 0)["detections"]
    # an enum as a .pbtxt writes it, as a JSON string in any case, or as its number
    assert run(algorithm="weighted") == run(algorithm=1) == weighted
    assert run(algorithm=0) == plain
    # streampi's own name wins where both are given (the command line's flags set those)
    assert run(algorithm="DEFAULT", weighted_nms=True) == weighted


def test_bare_enum_words_from_the_command_line():
    parser = argparse.ArgumentParser()
    add_decoder_arguments(parser)
    args = parser.parse_args(["--decoder-option", "algorithm=DEFAULT", "--decoder-option",
                              "overlap_type=INTERSECTION_OVER_UNION", "--decoder-option", 'box_format="XYWH"'])
    flags = decoder_overrides(args)
    assert flags == {"algorithm": "DEFAULT", "overlap_type": "INTERSECTION_OVER_UNION", "box_format": "XYWH"}
    reg, logits = faces_outputs(1)
    dec = make_decoder(SPECS, None, kind="anchors", options={**pasted(), **flags})
    assert not dec.weighted and dec.box_format == "XYWH"
    plain = make_decoder(SPECS, None, kind="anchors", options={**OWN_NAMES, "weighted_nms": False})
    assert dec.frame_result([reg, logits], 0) == plain.frame_result([reg, logits], 0)


# -- refusals: each a ModelError naming the option ----------------------------------------------
@pytest.mark.parametrize("extra, match", [
    ({"overlap_type": "JACCARD"}, r"'overlap_type': streampi suppresses by INTERSECTION_OVER_UNION only.*JACCARD"),
    ({"overlap_type": "MODIFIED_JACCARD"}, r"'overlap_type'.*INTERSECTION_OVER_UNION only"),
    ({"overlap_type": 0}, r"'overlap_type'.*INTERSECTION_OVER_UNION only"),
    ({"overlap_type": "IOU"}, r"'overlap_type': must be one of UNSPECIFIED_OVERLAP_TYPE, JACCARD"),
    ({"algorithm": "WEIGHTY"}, r"'algorithm': must be one of DEFAULT, WEIGHTED .*'WEIGHTY'"),
    ({"num_boxes": 900}, r"'num_boxes': the anchor options make 896 anchors, got 900"),
    ({"algorithmm": "WEIGHTED"}, r"unknown option 'algorithmm'"),
    ({"flip_vertically": True}, r"'flip_vertically': is not supported: .*top left"),
    ({"num_detection_streams": 2}, r"'num_detection_streams': must be 1"),
    ({"max_num_detections": 0}, r"'max_num_detections': must be -1 \(all\) or a positive number"),
    ({"max_results": 0}, r"'max_results': must be -1"),
    ({"allow_classes": [0], "ignore_classes": [0]}, r"'allow_classes' and 'ignore_classes' exclude each other"),
    ({"ignore_classes": 1}, r"'ignore_classes': must hold class ids within \[0, 1\)"),
    ({"tensor_mapping": {"detections_tensor_index": 0, "scores_tensor_index": 1, "anchors_tensor_index": 2}},
     r"'tensor_mapping': anchors_tensor_index is not supported"),
    ({"tensor_mapping": {"detections_tensor_index": 0, "scores_tensor_index": 1, "classes_tensor_index": 2}},
     r"'tensor_mapping': classes_tensor_index .* ssd_postprocess"),
    ({"tensor_mapping": {"detections_tensor_index": 1, "scores_tensor_index": 0}},
     r"'tensor_mapping': outputs 1 and 0 .* are not \[1, 896, 16\] regressors"),
    ({"box_boundaries_indices": {"ymin": 0, "xmin": 0}}, r"'box_boundaries_indices': must be an object mapping"),
    ({"fixed_anchors": [{"x_center": 0.5, "y_center": 0.5, "w": 1, "h": 1}]},
     r"'input_size_width': must not be set beside fixed_anchors"),
    ({"feature_map_width": [16, 8, 8, 8]}, r"'feature_map_height' is required"),
    ({"multiscale_anchor_generation": True, "min_level": 5, "max_level": 4}, r"'max_level': must be at least"),
    ({"input_size_width": 100_000, "input_size_height": 100_000, "strides": [1, 16, 16, 16]},
     r"make \d+ anchors, more than 1000000"),
    ({"aspect_ratios": [1.0, 0.0]}, r"'aspect_ratios': must be positive"),
])
def test_refusals_name_the_option(extra, match):
    with pytest.raises(ModelError, match=match):
        make_decoder(SPECS, None, kind="anchors", options={**pasted(), **extra})


def test_num_boxes_is_checked_against_the_models_outputs():
    small = [spec((1, 100, 16)), spec((1, 100, 1))]
    with pytest.raises(ModelError, match=r"option 'num_boxes': expected outputs \[1, 896, 16\].*\[1, 100, 16\]"):
        make_decoder(small, None, kind="anchors", options=pasted())
    without = {k: v for k, v in pasted().items() if k != "num_boxes"}
    with pytest.raises(ModelError, match=r"anchors decoder: expected outputs \[1, 896, 16\]"):
        make_decoder(small, None, kind="anchors", options=without)


# -- the other options of the three calculators -------------------------------------------------
def golden(n: int) -> np.ndarray:
    with gzip.open(DATA / f"anchor_golden_file_{n}.txt.gz", "rt") as f:
        return np.loadtxt(f, ndmin=2)


def anchors_of(options: dict) -> np.ndarray:
    """The anchors SsdAnchorsCalculator options make, every option read."""
    o = Options("anchors", options)
    anchors, _, _ = anchors_from_options(o)
    o.finish()
    return anchors


@pytest.mark.parametrize("n, text", [
    (0, """num_layers: 5 min_scale: 0.1171875 max_scale: 0.75 input_size_height: 256 input_size_width: 256
           anchor_offset_x: 0.5 anchor_offset_y: 0.5 strides: 8 strides: 16 strides: 32 strides: 32 strides: 32
           aspect_ratios: 1.0 fixed_anchor_size: true"""),
    (1, """num_layers: 6 min_scale: 0.2 max_scale: 0.95 input_size_height: 300 input_size_width: 300
           anchor_offset_x: 0.5 anchor_offset_y: 0.5 strides: 16 strides: 32 strides: 64 strides: 128
           strides: 256 strides: 512 aspect_ratios: 1.0 aspect_ratios: 2.0 aspect_ratios: 0.5
           aspect_ratios: 3.0 aspect_ratios: 0.3333 reduce_boxes_in_lowest_layer: true"""),
    (2, """input_size_height: 640 input_size_width: 640 strides: 64 strides: 128 aspect_ratios: 1.0
           aspect_ratios: 2.0 aspect_ratios: 0.5 multiscale_anchor_generation: true min_level: 6 max_level: 7
           anchor_scale: 3.0 scales_per_octave: 3"""),
])
def test_anchors_match_mediapipes_golden_files(n, text):
    """The three configurations of MediaPipe's ssd_anchors_calculator_test.cc, against its files."""
    want = golden(n)
    got = anchors_of(parse_pbtxt(text))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_feature_maps_and_fixed_anchors_stand_for_strides():
    strided = anchors_of({k: pasted()[k] for k in parse_pbtxt(SSD_ANCHORS + SHORT_RANGE_VALUES)
                          if k not in ("num_boxes", "x_scale", "y_scale", "h_scale", "w_scale", "min_score_thresh")})
    sized = {"feature_map_width": [16, 8, 8, 8], "feature_map_height": [16, 8, 8, 8]}
    reg, logits = faces_outputs(2)
    base = make_decoder(SPECS, None, kind="anchors", options=pasted()).frame_result([reg, logits], 0)
    dec = make_decoder(SPECS, None, kind="anchors", options={**pasted(), **sized})
    np.testing.assert_array_equal(dec.anchors, strided)
    # a feature map other than input/stride moves the anchors
    other = make_decoder([spec((1, 704, 16)), spec((1, 704, 1))], None, kind="anchors", options={
        **pasted(), "feature_map_width": [16, 8, 8, 8], "feature_map_height": [16, 4, 4, 4], "num_boxes": 704})
    assert len(other.anchors) == 16 * 16 * 2 + 4 * 8 * 6 and other.anchors[512][1] == pytest.approx(0.5 / 4)
    fixed = {k: v for k, v in pasted().items() if k not in
             ("num_layers", "min_scale", "max_scale", "input_size_width", "input_size_height")}
    fixed["fixed_anchors"] = [{"x_center": a[0], "y_center": a[1], "w": a[2], "h": a[3]} for a in strided]
    t = Transform(1.0, 1.0, 0.0, 0.0, 0, 0, 128, 128, 128, 128)
    got = make_decoder(SPECS, None, kind="anchors", options=fixed).frame_result([reg, logits], 0, t)
    assert got == make_decoder(SPECS, None, kind="anchors", options=pasted()).frame_result([reg, logits], 0, t)
    assert base["detections"]


def test_box_formats_and_boundaries():
    """One anchor at the centre of a 100×100 input, scales 1 (values in input fractions)."""
    opts = {"fixed_anchors": {"x_center": 0.5, "y_center": 0.5, "w": 1.0, "h": 1.0}, "num_boxes": 1,
            "num_coords": 4, "x_scale": 1.0, "y_scale": 1.0, "w_scale": 1.0, "h_scale": 1.0, "min_score_thresh": 0.0}
    specs = [spec((1, 1, 4)), spec((1, 1, 1))]
    reg = np.asarray([[[0.1, -0.2, 0.4, 0.2]]], np.float32)
    score = np.ones((1, 1, 1), np.float32)
    t = Transform(1.0, 1.0, 0.0, 0.0, 0, 0, 100, 100, 100, 100)

    def box(**extra):
        dec = make_decoder(specs, None, kind="anchors", options={**opts, **extra})
        return dec.frame_result([reg, score], 0, t)["detections"][0]["box"]

    # YXHW (the default): centre y 0.6, x 0.3; h 0.4, w 0.2
    yxhw, xywh = pytest.approx([20, 40, 40, 80]), pytest.approx([40, 20, 80, 40])
    assert box() == yxhw and box(box_format="YXHW") == yxhw
    # XYWH, as reverse_output_order: centre x 0.6, y 0.3; w 0.4, h 0.2
    assert box(box_format="XYWH") == xywh and box(reverse_output_order=True) == xywh and box(box_format=2) == xywh
    # box_format given replaces reverse_output_order, even UNSPECIFIED (read as YXHW)
    assert box(box_format="UNSPECIFIED", reverse_output_order=True) == pytest.approx([20, 40, 40, 80])
    # XYXY: distances to the left, top, right, bottom: xmin = .5 - .1... as MediaPipe computes it
    # (x_center = (-0.1 + 0.4)/2 + 0.5 = 0.65, w = 0.5; y_center = (0.2 + 0.2)/2 + 0.5 = 0.7, h = 0)
    assert box(box_format="XYXY", min_score_thresh=0.0) == pytest.approx([40, 70, 90, 70])
    # box_boundaries_indices: the decoded [ymin, xmin, ymax, xmax] read in another order
    assert box(box_boundaries_indices={"xmin": 0, "ymin": 1, "xmax": 2, "ymax": 3}) == pytest.approx([40, 20, 80, 40])


def test_class_filters_results_and_multiclass():
    """Three anchors in a row, two classes; plain scores (no sigmoid)."""
    anchors = [{"x_center": x, "y_center": 0.5, "w": 1.0, "h": 1.0} for x in (0.3, 0.35, 0.8)]
    opts = {"fixed_anchors": anchors, "num_coords": 4, "num_classes": 2, "x_scale": 1.0, "y_scale": 1.0,
            "w_scale": 1.0, "h_scale": 1.0, "min_score_thresh": 0.1, "min_suppression_threshold": 0.3}
    specs = [spec((1, 3, 4)), spec((1, 3, 2))]
    reg = np.tile(np.asarray([0.0, 0.0, 0.2, 0.2], np.float32), (1, 3, 1))  # 0.2 squares at the anchors
    scores = np.asarray([[[0.9, 0.2], [0.3, 0.8], [0.6, 0.7]]], np.float32)

    def run(**extra):
        dec = make_decoder(specs, None, kind="anchors", options={**opts, **extra})
        return [(d["class"], round(d["score"], 3)) for d in dec.frame_result([reg, scores], 0)["detections"]]

    # class-agnostic by default (multiclass_nms: false): box 1 (IoU 0.6 with box 0) is merged into box 0
    assert run() == [(0, 0.9), (1, 0.7)] == run(algorithm="DEFAULT")
    assert run(multiclass_nms=True) == [(0, 0.9), (1, 0.8), (1, 0.7)] == run(class_agnostic=False)
    assert run(multiclass_nms=True, algorithm="DEFAULT") == [(0, 0.9), (1, 0.8), (1, 0.7)]
    assert run(ignore_classes=[1]) == [(0, 0.9), (0, 0.6)] == run(allow_classes=0)
    assert run(allow_classes=[1]) == [(1, 0.8), (1, 0.7)]
    assert run(max_results=2) == [(0, 0.9)]                      # the first two in anchor order, then merged
    assert run(max_num_detections=1) == [(0, 0.9)] == run(max_detections=1)
    assert run(min_score_threshold=0.8) == [(0, 0.9)]
    assert run(max_num_detections=-1, return_empty_detections=True, max_classes_per_detection=1,
               num_detection_streams=1, overlap_type="INTERSECTION_OVER_UNION") == run()
    # tensor_mapping picks the outputs by index
    swapped = make_decoder([specs[1], specs[0]], None, kind="anchors", options={
        **opts, "tensor_mapping": {"detections_tensor_index": 1, "scores_tensor_index": 0}})
    assert [d["score"] for d in swapped.frame_result([scores, reg], 0)["detections"]] == pytest.approx([0.9, 0.7])


def test_multiscale_unnormalised_anchors_are_input_pixels():
    opts = parse_pbtxt("""input_size_height: 64 input_size_width: 64 strides: 32 multiscale_anchor_generation: true
                          min_level: 5 max_level: 5 anchor_scale: 1.0 scales_per_octave: 1
                          normalize_coordinates: false""")
    a = anchors_of(opts)
    # level 5: stride 32, 2×2 cells, centred half a stride in (64 divides by 32), 32-pixel anchors
    np.testing.assert_allclose(a, [[16, 16, 32, 32], [48, 16, 32, 32], [16, 48, 32, 32], [48, 48, 32, 32]])
    dec = make_decoder([spec((1, 4, 4)), spec((1, 4, 1))], None, kind="anchors", options={
        **opts, "num_coords": 4, "x_scale": 1.0, "y_scale": 1.0, "w_scale": 1.0, "h_scale": 1.0,
        "min_score_thresh": 0.5})
    reg = np.zeros((1, 4, 4), np.float32)
    reg[0, 3] = [0.25, 0.0, 0.5, 1.0]   # YXHW: y +8 px, h 16 px, w 32 px at anchor (48, 48)
    scores = np.asarray([[[0.0], [0.0], [0.0], [1.0]]], np.float32)
    t = Transform(0.5, 0.5, 0.0, 0.0, 0, 0, 128, 128, 64, 64)
    assert dec.frame_result([reg, scores], 0, t)["detections"][0]["box"] == pytest.approx([64, 96, 128, 128])


def test_streampi_anchor_helper_unchanged_by_feature_maps():
    plain = ssd_anchors(num_layers=2, strides=[8, 16], input_size_width=32, input_size_height=32,
                        min_scale=0.2, max_scale=0.6)
    sized = ssd_anchors(num_layers=2, strides=[8, 16], input_size_width=32, input_size_height=32,
                        min_scale=0.2, max_scale=0.6, feature_map_width=[4, 2], feature_map_height=[4, 2])
    np.testing.assert_array_equal(plain, sized)
