"""Decoders against independent references: hand-computed boxes, a plain-loop NMS, a
MediaPipe anchor count, the PNG spec, and the preprocessing geometry worked out by hand."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest

from streampi.config import ModelConfig
from streampi.decoders import auto_kind, make_decoder, summarize
from streampi.decoders.anchors import ssd_anchors
from streampi.decoders.nms import nms, weighted_nms
from streampi.errors import ModelError
from streampi.model import TensorSpec
from streampi.preprocess import Preprocessor, Transform


def spec(shape, name="out") -> TensorSpec:
    shape = tuple(shape)
    return TensorSpec(name, 0, shape, shape, np.dtype(np.float32), 0.0, 0)


def identity(w=100, h=100) -> Transform:
    return Transform(1.0, 1.0, 0.0, 0.0, 0, 0, w, h, w, h)


# -- references written with plain loops ---------------------------------------------------
def ref_iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def ref_nms(boxes, scores, thr, max_det, classes=None) -> list[int]:
    order = sorted(range(len(scores)), key=lambda k: (-scores[k], k))
    kept: list[int] = []
    for k in order:
        if len(kept) == max_det:
            break
        if all(ref_iou(boxes[k], boxes[j]) <= thr or (classes is not None and classes[k] != classes[j])
               for j in kept):
            kept.append(k)
    return kept


# -- classify ----------------------------------------------------------------------------------
def test_classify_top_k_matches_sorted_reference_with_ties():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((3, 1000)).astype(np.float32), 2)  # many ties
    dec = make_decoder([spec((3, 1000))], ModelConfig(top_k=7))
    for i in range(3):
        want = sorted(range(1000), key=lambda k: (-scores[i, k], k))[:7]
        got = dec.frame_result([scores], i, None)["top"]
        assert [g[0] for g in got] == want
        assert [g[2] for g in got] == pytest.approx([float(scores[i, k]) for k in want])
    assert set(dec.frame_result([scores], 0, None)) == {"top"}  # raw scores only on request
    full = make_decoder([spec((3, 1000))], ModelConfig(decoder={"raw_outputs": True}))
    assert set(full.frame_result([scores], 0, None)) == {"top", "outputs"}


def test_classify_labels_and_raw_outputs():
    scores = np.array([[0.1, 0.7, 0.2]], np.float32)
    dec = make_decoder([spec((1, 3))], ModelConfig(labels=("a", "b"), top_k=5, decoder={"raw_outputs": True}))
    r = dec.frame_result([scores], 0, None)
    assert r["top"] == [[1, "b", pytest.approx(0.7)], [2, None, pytest.approx(0.2)], [0, "a", pytest.approx(0.1)]]
    assert np.frombuffer(r["outputs"][0]["data"], "<f4").tolist() == pytest.approx([0.1, 0.7, 0.2])


# -- NMS ---------------------------------------------------------------------------------------------
def test_nms_overlap_hand_computed():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float)
    scores = np.array([0.9, 0.8, 0.7])
    # IoU(0, 1) = 81 / (100 + 100 - 81) = 0.6807
    assert nms(boxes, scores, 0.5, 100).tolist() == [0, 2]
    assert nms(boxes, scores, 0.69, 100).tolist() == [0, 1, 2]
    assert nms(boxes, scores, 0.5, 1).tolist() == [0]


def test_nms_ties_keep_the_lower_index():
    boxes = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    scores = np.array([0.5, 0.8, 0.8])
    assert nms(boxes, scores, 0.5, 100).tolist() == [1, 0]
    # IoU exactly at the threshold is kept (suppression needs more than the threshold)
    half = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], float)  # IoU 0.5
    assert nms(half, np.array([0.9, 0.8]), 0.5, 100).tolist() == [0, 1]


def test_nms_per_class_and_agnostic():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0.5, 0, 10.5, 10]], float)
    scores = np.array([0.9, 0.8, 0.7])
    classes = np.array([0, 1, 0])
    assert nms(boxes, scores, 0.5, 100, classes).tolist() == [0, 1]
    assert nms(boxes, scores, 0.5, 100).tolist() == [0]


def test_nms_zero_and_all_distinct():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5, 10).tolist() == []
    boxes = np.array([[k * 20, 0, k * 20 + 10, 10] for k in range(6)], float)
    scores = np.array([0.3, 0.9, 0.5, 0.6, 0.95, 0.4])
    assert nms(boxes, scores, 0.5, 100).tolist() == [4, 1, 3, 2, 5, 0]


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_plain_loop_reference(seed):
    rng = np.random.default_rng(seed)
    n = 300
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(5, 30, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = np.round(rng.random(n), 2)
    classes = rng.integers(0, 3, n)
    assert nms(boxes, scores, 0.45, 50).tolist() == ref_nms(boxes, scores, 0.45, 50)
    assert nms(boxes, scores, 0.45, 50, classes).tolist() == ref_nms(boxes, scores, 0.45, 50, classes)


def test_weighted_nms_averages_by_score():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.6, 0.2, 0.5])
    kps = np.array([[[1, 1]], [[3, 1]], [[55, 55]]], float)
    b, s, k, idx = weighted_nms(boxes, scores, 0.3, 10, kps)  # IoU(0, 1) = 80/120
    np.testing.assert_allclose(b, [[0.5, 0, 10.5, 10], [50, 50, 60, 60]])  # x0 = 0.75·0 + 0.25·2
    assert s.tolist() == [0.6, 0.5] and idx.tolist() == [0, 2]
    np.testing.assert_allclose(k[0], [[1.5, 1]])


# -- yolo ----------------------------------------------------------------------------------------
def test_yolo_v8_hand_computed_boxes_through_letterbox():
    # 2 classes, 5 candidates, in input pixels of a 100×100 input
    out = np.zeros((1, 6, 5), np.float32)
    out[0, :4, 0] = [50, 40, 20, 10]   # → [40, 35, 60, 45]
    out[0, 5, 0] = 0.9                 # class 1
    out[0, :4, 1] = [51, 40, 20, 10]   # overlaps candidate 0, same class: suppressed
    out[0, 5, 1] = 0.8
    out[0, :4, 2] = [51, 40, 20, 10]   # same box, class 0: kept per class
    out[0, 4, 2] = 0.7
    out[0, :4, 3] = [10, 10, 4, 4]     # below the threshold
    out[0, 4, 3] = 0.1
    dec = make_decoder([spec((1, 6, 5))], ModelConfig(labels=("a", "b")),
                       kind="yolo", options={"coords": "pixels", "layout": "v8"})
    # a 200×120 frame letterboxed into 100×100: scale 0.5, offset y 20
    t = Transform(0.5, 0.5, 0.0, 20.0, 0, 0, 200, 120, 100, 100)
    dets = dec.frame_result([out], 0, t)["detections"]
    assert [(d["class"], d["label"]) for d in dets] == [(1, "b"), (0, "a")]
    assert dets[0]["box"] == pytest.approx([80, 30, 120, 50])
    assert dets[1]["box"] == pytest.approx([82, 30, 122, 50])
    assert dets[0]["score"] == pytest.approx(0.9)
    agnostic = make_decoder([spec((1, 6, 5))], None, kind="yolo",
                            options={"coords": "pixels", "layout": "v8", "class_agnostic": True})
    assert len(agnostic.frame_result([out], 0, t)["detections"]) == 1


def test_yolo_v5_objectness_normalized_and_clipped():
    out = np.zeros((1, 200, 7), np.float32)   # 2 classes
    out[0, 0] = [0.5, 0.5, 0.2, 0.4, 0.8, 0.25, 0.75]   # score 0.8 * 0.75 = 0.6, class 1
    out[0, 1] = [0.98, 0.1, 0.2, 0.2, 0.9, 0.9, 0.1]    # box runs off the right edge
    out[0, 2] = [0.3, 0.3, 0.1, 0.1, 0.2, 0.9, 0.9]     # 0.18 < 0.25
    dec = make_decoder([spec((1, 200, 7))], None)
    assert dec.kind == "yolo" and dec.layout == "v5"
    dets = dec.frame_result([out], 0, identity(64, 64))["detections"]
    assert [d["class"] for d in dets] == [0, 1]
    assert dets[0]["score"] == pytest.approx(0.81)
    assert dets[0]["box"] == pytest.approx([0.88 * 64, 0.0, 64.0, 0.2 * 64])  # clipped at x = 64
    assert dets[1]["box"] == pytest.approx([0.4 * 64, 0.3 * 64, 0.6 * 64, 0.7 * 64])
    assert dets[1]["score"] == pytest.approx(0.6)
    assert "outputs" not in dec.frame_result([out], 0, None)  # box decoders: raw outputs are opt-in
    raw = make_decoder([spec((1, 200, 7))], None, options={"raw_outputs": True}).frame_result([out], 0, None)
    assert np.frombuffer(raw["outputs"][0]["data"], "<f4").reshape(200, 7).tolist() == out[0].tolist()


def test_yolo_nms_layout_and_zero_detections():
    out = np.zeros((1, 10, 6), np.float32)
    out[0, 0] = [10, 20, 30, 40, 0.9, 3]
    out[0, 1] = [12, 20, 30, 40, 0.4, 3]   # overlapping: NMS already done in the model, kept
    dec = make_decoder([spec((1, 10, 6))], None, kind="yolo", options={"layout": "nms", "coords": "pixels"})
    dets = dec.frame_result([out], 0, identity())["detections"]
    assert [d["box"] for d in dets] == [[10, 20, 30, 40], [12, 20, 30, 40]]
    assert [d["class"] for d in dets] == [3, 3]
    assert dec.frame_result([np.zeros((1, 10, 6), np.float32)], 0, identity())["detections"] == []
    with pytest.raises(ModelError, match="layout"):
        make_decoder([spec((1, 10, 6))], None, kind="yolo")  # ambiguous


@pytest.mark.parametrize("n", [5, 400])  # the few-candidates path and the compiled NMS path
def test_yolo_drops_candidates_with_non_finite_boxes_or_scores(n):
    """Garbage outputs (NaN, an overflowed inf) cost those candidates, not the frame."""
    out = np.zeros((1, 6, n), np.float32)
    out[0, 0, :] = out[0, 1, :] = 10.0 + np.arange(n) * 20.0  # 4×4 boxes, far apart, in pixels
    out[0, 2:4, :] = 4.0
    out[0, 4, :] = 0.9
    out[0, 0, 1] = np.nan
    out[0, 2, 2] = np.inf
    out[0, 4, 3] = np.nan   # a NaN class score: the cell is dropped
    dec = make_decoder([spec((1, 6, n))], None, kind="yolo",
                       options={"coords": "pixels", "layout": "v8", "max_detections": 1000})
    dets = dec.frame_result([out], 0, None)["detections"]
    assert len(dets) == n - 3
    assert all(np.isfinite(d["box"]).all() and np.isfinite(d["score"]) for d in dets)


def test_yolo_all_candidates_above_threshold_all_kept_when_apart():
    n = 64
    out = np.zeros((1, 5, n), np.float32)
    out[0, 0] = np.arange(n) * 10 + 5
    out[0, 1] = 5
    out[0, 2:4] = 8
    out[0, 4] = np.linspace(0.3, 0.99, n)
    dec = make_decoder([spec((1, 5, n))], None, kind="yolo", options={"coords": "pixels", "max_detections": 1000})
    dets = dec.frame_result([out], 0, None)["detections"]
    assert len(dets) == n
    assert [d["box"][0] for d in dets] == pytest.approx([(n - 1 - k) * 10 + 1 for k in range(n)])


# -- ssd_postprocess ---------------------------------------------------------------------------------
def ssd_tensors():
    boxes = np.zeros((1, 10, 4), np.float32)
    boxes[0, 0] = [0.1, 0.2, 0.5, 0.6]   # ymin, xmin, ymax, xmax
    boxes[0, 1] = [0.0, 0.0, 0.25, 0.25]
    boxes[0, 2] = [0.5, 0.5, 0.9, 0.9]   # past the count
    classes = np.array([[2, 0, 1] + [0] * 7], np.float32)
    scores = np.array([[0.9, 0.2, 0.8] + [0] * 7], np.float32)
    count = np.array([2], np.float32)
    return boxes, classes, scores, count


@pytest.mark.parametrize("order", ["tf1", "tf2"])
def test_ssd_postprocess_outputs_found_by_shape_in_either_order(order):
    boxes, classes, scores, count = ssd_tensors()
    if order == "tf1":
        specs = [spec((1, 10, 4), "a"), spec((1, 10), "b"), spec((1, 10), "c"), spec((1,), "d")]
        outs = [boxes, classes, scores, count]
    else:
        specs = [spec((1, 10), "a"), spec((1, 10, 4), "b"), spec((1,), "c"), spec((1, 10), "d")]
        outs = [scores, boxes, count, classes]
    assert auto_kind(specs)[0] == "ssd_postprocess"
    dec = make_decoder(specs, ModelConfig(labels=("x", "y", "z")), options={"score_threshold": 0.1})
    assert dec.batchable is False
    t = Transform(0.5, 0.5, 0.0, 0.0, 0, 0, 200, 200, 100, 100)   # a 200×200 frame stretched to 100×100
    dets = dec.frame_result(outs, 0, t)["detections"]
    assert [(d["class"], d["label"]) for d in dets] == [(2, "z"), (0, "x")]
    assert dets[0]["box"] == pytest.approx([40, 20, 120, 100])
    assert dets[1]["box"] == pytest.approx([0, 0, 50, 50])


def test_ssd_postprocess_all_whole_scores_fall_back_to_export_order():
    boxes, classes, scores, count = ssd_tensors()
    scores[0, :2] = 1.0   # whole numbers: values alone cannot tell
    specs = [spec((1, 10), "x"), spec((1, 10, 4), "y"), spec((1,), "z"), spec((1, 10), "w")]  # TF2
    dec = make_decoder(specs, None)
    dets = dec.frame_result([scores, boxes, count, classes], 0, None)["detections"]
    assert [d["class"] for d in dets] == [2, 0] and [d["score"] for d in dets] == [1.0, 1.0]
    # names with the op's output positions decide: classes :1 before scores :2
    named = [spec((1, 10), "PartitionedCall:2"), spec((1,), "PartitionedCall:3"),
             spec((1, 10, 4), "PartitionedCall:0"), spec((1, 10), "PartitionedCall:1")]
    dets = make_decoder(named, None).frame_result([scores, count, boxes, classes], 0, None)["detections"]
    assert [d["class"] for d in dets] == [2, 0]


# -- anchors (MediaPipe) ------------------------------------------------------------------------------
BLAZEFACE = {"num_layers": 4, "min_scale": 0.1484375, "max_scale": 0.75, "input_size_width": 128,
             "input_size_height": 128, "anchor_offset_x": 0.5, "anchor_offset_y": 0.5, "strides": [8, 16, 16, 16],
             "aspect_ratios": [1.0], "fixed_anchor_size": True, "num_classes": 1, "num_boxes": 896,
             "num_coords": 16, "box_coord_offset": 0, "keypoint_coord_offset": 4, "num_keypoints": 6,
             "num_values_per_keypoint": 2, "sigmoid_score": True, "score_clipping_thresh": 100.0,
             "reverse_output_order": True, "x_scale": 128.0, "y_scale": 128.0, "h_scale": 128.0,
             "w_scale": 128.0, "min_score_thresh": 0.5, "min_suppression_threshold": 0.3}


def test_blazeface_anchors():
    opts = {k: BLAZEFACE[k] for k in ("num_layers", "strides", "input_size_width", "input_size_height",
                                      "min_scale", "max_scale", "fixed_anchor_size")}
    a = ssd_anchors(**opts)
    assert a.shape == (896, 4)   # 16·16·2 + 8·8·6, as MediaPipe's face detector expects
    assert a[0].tolist() == [0.5 / 16, 0.5 / 16, 1.0, 1.0] and a[1].tolist() == a[0].tolist()
    assert a[2].tolist() == [1.5 / 16, 0.5 / 16, 1.0, 1.0]
    assert a[512].tolist() == [0.5 / 8, 0.5 / 8, 1.0, 1.0] and a[517].tolist() == a[512].tolist()
    assert a[518].tolist() == [1.5 / 8, 0.5 / 8, 1.0, 1.0]
    sized = ssd_anchors(num_layers=1, strides=[32], input_size_width=64, input_size_height=64, min_scale=0.2,
                        max_scale=0.6, aspect_ratios=[1.0, 4.0])
    # one layer: scale (0.2+0.6)/2 = 0.4; ratio 4 → w 0.8, h 0.2; interpolated sqrt(0.4·1)
    assert sized.shape == (12, 4)
    np.testing.assert_allclose(sized[:3, 2:], [[0.4, 0.4], [0.8, 0.2], [math.sqrt(0.4)] * 2])


def test_anchors_decoder_blazeface_box_and_keypoints():
    specs = [spec((1, 896, 16), "regressors"), spec((1, 896, 1), "classificators")]
    options = {k: v for k, v in BLAZEFACE.items() if k != "num_boxes"}
    dec = make_decoder(specs, None, kind="anchors", options=options)
    reg = np.zeros((1, 896, 16), np.float32)
    logits = np.full((1, 896, 1), -10.0, np.float32)
    # anchor 2: centre (1.5/16, 0.5/16) = (12, 4) px of 128; box +8 px in x, 32×16 px
    reg[0, 2, :4] = [8, 0, 32, 16]
    reg[0, 2, 4:6] = [-4, 2]                   # keypoint 0 at (12-4, 4+2) = (8, 6) px
    logits[0, 2, 0] = 2.0
    reg[0, 3, :6] = [8, 0, 32, 16, -4, 2]      # the same box and keypoint from the next anchor: merged
    logits[0, 3, 0] = 1.0
    t = Transform(0.5, 0.5, 0.0, 0.0, 0, 0, 256, 256, 128, 128)
    dets = dec.frame_result([reg, logits], 0, t)["detections"]
    assert len(dets) == 1
    # anchor 3 shares the cell (two anchors per cell), so the weighted mean is the same box:
    # input [4, -4, 36, 12] px → frame ×2, y clipped at 0
    assert dets[0]["box"] == pytest.approx([8, 0, 72, 24])
    assert dets[0]["score"] == pytest.approx(1 / (1 + math.exp(-2)))
    assert dets[0]["keypoints"][0] == pytest.approx([16, 12])


def test_anchors_decoder_names_bad_options():
    specs = [spec((1, 896, 16)), spec((1, 896, 1))]
    options = {k: v for k, v in BLAZEFACE.items() if k != "num_boxes"}
    with pytest.raises(ModelError, match="'x_scal'"):
        make_decoder(specs, None, kind="anchors", options={**options, "x_scal": 1.0})
    with pytest.raises(ModelError, match="'strides'"):
        make_decoder(specs, None, kind="anchors", options={**options, "strides": [8, 16]})
    with pytest.raises(ModelError, match="num_layers"):
        make_decoder(specs, None, kind="anchors", options={})
    with pytest.raises(ModelError, match="896"):
        make_decoder([spec((1, 100, 16)), spec((1, 100, 1))], None, kind="anchors", options=options)


# -- segment -------------------------------------------------------------------------------------
def read_png_gray8(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(tag + body)
        if tag == b"IHDR":
            size = struct.unpack(">II", body[:8])
            assert body[8:10] == b"\x08\x00"
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, w + 1)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:]


def test_segment_class_map_fractions_and_letterbox_crop():
    scores = np.zeros((1, 16, 16, 3), np.float32)
    scores[0, :, :, 0] = 1.0
    scores[0, 4:12, 0:8, 1] = 2.0     # left half of the content rows: class 1
    scores[0, 4:12, 8:16, 2] = 2.0    # right half: class 2
    dec = make_decoder([spec((1, 16, 16, 3))], ModelConfig(labels=("bg", "one", "two")))
    # a 64×32 frame letterboxed into 32×32 (output map at half the input's resolution):
    # content rows 8..24 of the input = rows 4..12 of the map
    t = Transform(0.5, 0.5, 0.0, 8.0, 0, 0, 64, 32, 32, 32)
    seg = dec.frame_result([scores], 0, t)["segmentation"]
    assert seg["box"] == pytest.approx([0, 0, 64, 32])
    cmap = read_png_gray8(seg["png"])
    assert cmap.shape == (8, 16) and (seg["width"], seg["height"]) == (16, 8)
    assert (cmap[:, :8] == 1).all() and (cmap[:, 8:] == 2).all()
    assert seg["fractions"] == {"one": 0.5, "two": 0.5}
    small = make_decoder([spec((1, 16, 16, 3))], None, options={"max_size": 4}).frame_result([scores], 0, None)
    s = small["segmentation"]
    assert (s["width"], s["height"]) == (4, 4)
    assert read_png_gray8(s["png"]).tolist() == [[0] * 4, [1, 1, 2, 2], [1, 1, 2, 2], [0] * 4]
    assert s["fractions"] == {"0": 0.5, "1": 0.25, "2": 0.25}


# -- selection and errors -----------------------------------------------------------------------------
def test_auto_selection():
    assert auto_kind([spec((1, 1000))])[0] == "classify"
    assert auto_kind([spec((1, 84, 8400))])[0] == "yolo"
    assert auto_kind([spec((1, 25200, 85))])[0] == "yolo"
    assert auto_kind([spec((1, 100, 6))])[0] == "raw"        # v5 with one class, or NMS-in-model
    assert auto_kind([spec((1, 64, 64, 21))])[0] == "segment"
    assert auto_kind([spec((1, 896, 16)), spec((1, 896, 1))])[0] == "raw"   # anchors need options
    assert make_decoder([spec((1, 4))], None).kind == "classify"
    assert make_decoder([spec((1, 896, 16)), spec((1, 896, 1))], None).kind == "raw"


def test_misconfigured_decoders_name_the_problem():
    with pytest.raises(ModelError, match="unknown decoder kind 'yolov9'"):
        make_decoder([spec((1, 84, 8400))], None, kind="yolov9")
    with pytest.raises(ModelError, match="unknown option 'score_treshold'"):
        make_decoder([spec((1, 84, 8400))], None, options={"score_treshold": 0.3})
    with pytest.raises(ModelError, match="'iou_threshold'.*within"):
        make_decoder([spec((1, 84, 8400))], ModelConfig(decoder={"kind": "yolo", "iou_threshold": 2}))
    with pytest.raises(ModelError, match="'max_detections'.*integer"):
        make_decoder([spec((1, 84, 8400))], None, options={"max_detections": 2.5})
    with pytest.raises(ModelError, match="'coords'"):
        make_decoder([spec((1, 84, 8400))], None, options={"coords": "cm"})
    with pytest.raises(ModelError, match="classify decoder needs"):
        make_decoder([spec((1, 84, 8400))], None, kind="classify")
    with pytest.raises(ModelError, match="ssd_postprocess decoder needs"):
        make_decoder([spec((1, 10))], None, kind="ssd_postprocess")
    with pytest.raises(ModelError, match="decoder must be a JSON object"):
        ModelConfig(decoder=["yolo"])


def test_command_line_kind_overrides_sidecar():
    cfg = ModelConfig(decoder={"kind": "yolo", "layout": "v8", "score_threshold": 0.6})
    dec = make_decoder([spec((1, 6, 300))], cfg, options={"iou_threshold": 0.3})
    assert (dec.det.score_threshold, dec.det.iou_threshold) == (0.6, 0.3)
    assert make_decoder([spec((1, 6, 300))], cfg, kind="raw").kind == "raw"   # sidecar options dropped


def test_summary_lines():
    r = {"detections": [{"box": [1.2, 2, 30, 40], "score": 0.912, "class": 2, "label": "triangle"},
                        {"box": [5, 5, 9, 9], "score": 0.5, "class": 0, "label": None}]}
    assert summarize(r) == "2 det: triangle 0.91 [1,2,30,40]; 0 0.50 [5,5,9,9]"
    assert summarize({"detections": []}) == "no detections"
    assert summarize({"top": [[3, "cross", 0.9876]]}) == "cross 0.988"


# -- boxes come back where they were drawn ------------------------------------------------------------
def hand_transform(mode: str, fw: int, fh: int, iw: int, ih: int):
    """frame → input mapping worked out from the geometry's description (not its code)."""
    if mode == "stretch":
        return lambda x, y: (x * iw / fw, y * ih / fh)
    if mode == "letterbox":
        s = min(iw / fw, ih / fh)
        cw, ch = round(fw * s), round(fh * s)
        ox, oy = (iw - cw) // 2, (ih - ch) // 2
        return lambda x, y: (x * cw / fw + ox, y * ch / fh + oy)
    # crop: the largest centred region with the input's aspect
    if fw * ih > fh * iw:
        cw = round(fh * iw / ih)
        x0 = (fw - cw) // 2
        return lambda x, y: ((x - x0) * iw / cw, y * ih / fh)
    ch = round(fw * ih / iw)
    y0 = (fh - ch) // 2
    return lambda x, y: (x * iw / fw, (y - y0) * ih / ch)


@pytest.mark.parametrize("mode", ["letterbox", "crop", "stretch"])
@pytest.mark.parametrize("frame", [(333, 251), (97, 211), (640, 479)])
def test_box_round_trip_through_preprocessing(mode, frame):
    fw, fh = frame
    iw, ih = 96, 80
    pre = Preprocessor((ih, iw, 3), np.float32, resize=mode, interpolation="linear")
    # a white rectangle on black, well inside the part of the frame every mode keeps
    x0, y0, x1, y1 = round(fw * 0.42), round(fh * 0.38), round(fw * 0.61), round(fh * 0.57)
    img = np.zeros((fh, fw, 3), np.uint8)
    img[y0:y1, x0:x1] = 255
    tensor, t = pre(img, "rgb")
    assert (t.frame_width, t.frame_height, t.input_width, t.input_height) == (fw, fh, iw, ih)
    to_input = hand_transform(mode, fw, fh, iw, ih)
    ix0, iy0 = to_input(x0, y0)
    ix1, iy1 = to_input(x1, y1)
    # the rectangle in the input tensor is where the hand-made mapping puts it (±1 input pixel)
    ys, xs = np.nonzero(tensor[..., 0] > 0.5)
    assert abs(xs.min() - ix0) <= 1 and abs(xs.max() + 1 - ix1) <= 1
    assert abs(ys.min() - iy0) <= 1 and abs(ys.max() + 1 - iy1) <= 1
    # a model reporting that box (NMS layout, input pixels) gets it back in frame pixels
    out = np.zeros((1, 4, 6), np.float32)
    out[0, 0] = [ix0, iy0, ix1, iy1, 0.9, 0]
    dec = make_decoder([spec((1, 4, 6))], None, kind="yolo", options={"layout": "nms", "coords": "pixels"})
    box = dec.frame_result([out], 0, t)["detections"][0]["box"]
    assert box == pytest.approx([x0, y0, x1, y1], abs=1e-3)  # float32 model outputs
    # and the box found in the tensor comes back within one input pixel of the drawn one
    out[0, 0, :4] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    found = dec.frame_result([out], 0, t)["detections"][0]["box"]
    px = (fw / iw if mode == "stretch" else 1 / t.scale_x, fh / ih if mode == "stretch" else 1 / t.scale_y)
    assert all(abs(f - d) <= px[k % 2] + 1e-6 for k, (f, d) in enumerate(zip(found, [x0, y0, x1, y1])))


def test_boxes_are_clipped_to_the_frame():
    out = np.zeros((1, 4, 6), np.float32)
    out[0, 0] = [-5, 2, 50, 90, 0.9, 1]    # reaches into the letterbox bars
    dec = make_decoder([spec((1, 4, 6))], None, kind="yolo", options={"layout": "nms", "coords": "pixels"})
    t = Transform(0.5, 0.5, 0.0, 20.0, 0, 0, 100, 60, 50, 50)   # 100×60 frame in a 50×50 letterbox
    assert dec.frame_result([out], 0, t)["detections"][0]["box"] == [0.0, 0.0, 100.0, 60.0]


# -- mAP -------------------------------------------------------------------------------------------
def test_mean_average_precision_hand_computed():
    from streampi.evaluation import mean_average_precision

    truths = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 0])),
              (np.array([[0, 0, 10, 10]]), np.array([1]))]
    dets = [[{"box": [0, 0, 10, 10], "score": 0.9, "class": 0},       # TP
             {"box": [0, 0, 10, 9], "score": 0.8, "class": 0},        # duplicate: FP
             {"box": [20, 20, 30, 30], "score": 0.7, "class": 0}],    # TP
            [{"box": [50, 50, 60, 60], "score": 0.95, "class": 1},    # FP
             {"box": [1, 0, 11, 10], "score": 0.6, "class": 1}]]      # IoU 90/110 = 0.82: TP
    m, aps = mean_average_precision(dets, truths)
    # class 0: P/R = (1, .5), (.5, .5), (.667, 1) → envelope 1 on [0, .5], .667 on (.5, 1] → 0.8333
    # class 1: (0, 0), (.5, 1) → 0.5
    assert aps[0] == pytest.approx(0.5 + 0.5 * 2 / 3) and aps[1] == pytest.approx(0.5)
    assert m == pytest.approx((0.5 + 1 / 3 + 0.5) / 2)
    assert mean_average_precision([[], []], truths)[0] == 0.0
    perfect = [[{"box": list(b), "score": 1.0, "class": int(c)} for b, c in zip(*t)] for t in truths]
    assert mean_average_precision(perfect, truths)[0] == 1.0


@pytest.mark.parametrize("n", [3, 12, 16, 17, 40])
def test_nms_small_and_large_paths_agree_with_reference(n):
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 40, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (n, 2))], 1)
    scores = np.round(rng.random(n), 1)   # ties
    classes = rng.integers(0, 2, n)
    for cls in (None, classes):
        assert nms(boxes, scores, 0.3, 100, cls).tolist() == ref_nms(boxes, scores, 0.3, 100, cls)


@pytest.mark.parametrize("seed,spread", [(0, 100.0), (1, 600.0), (2, 30.0)])
def test_nms_block_path_matches_reference(seed, spread):
    rng = np.random.default_rng(seed)
    n = 800   # above the size where blocks of pairwise overlaps take over
    xy = rng.uniform(0, spread, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(3, 25, (n, 2))], 1)
    scores = np.round(rng.random(n), 2)
    classes = rng.integers(0, 4, n)
    for cls in (None, classes):
        ref = ref_nms(boxes, scores, 0.45, n, cls)   # a smaller limit keeps a prefix of this
        for max_det in (10, 300, n):
            assert nms(boxes, scores, 0.45, max_det, cls).tolist() == ref[:max_det]


@pytest.mark.parametrize("layout", ["v8", "v5"])
def test_yolo_few_candidate_path_equals_array_path(layout, monkeypatch):
    from streampi.decoders import yolo

    rng = np.random.default_rng(7)
    n, nc = 200, 3
    rows = np.zeros((n, 5 + nc), np.float32)
    rows[:, :2] = rng.uniform(-0.05, 1.05, (n, 2))   # some boxes run off the input: clipped
    rows[:, 2:4] = rng.uniform(0.05, 0.3, (n, 2))
    rows[:, 4] = 1.0
    rows[:, 5:] = rng.random((n, nc)) ** 80           # about ten candidates above 0.3
    assert 3 <= (rows[:, 5:].max(1) >= 0.3).sum() <= 16
    out = rows[None] if layout == "v5" else np.concatenate([rows[:, :4], rows[:, 5:]], 1).T[None].copy()
    specs = [spec(out.shape)]
    t = Transform(0.3, 0.3, 0.0, 12.0, 0, 0, 320, 240, 96, 96)
    dec = make_decoder(specs, ModelConfig(labels=("a", "b", "c")),
                       options={"coords": "normalized", "score_threshold": 0.3, "iou_threshold": 0.3})
    few = dec.frame_result([out], 0, t)["detections"]
    monkeypatch.setattr(yolo, "SMALL", -1)
    many = dec.frame_result([out], 0, t)["detections"]
    assert 3 <= len(few) == len(many)
    for a, b in zip(few, many):
        assert (a["class"], a["label"]) == (b["class"], b["label"]) and a["score"] == pytest.approx(b["score"])
        assert a["box"] == pytest.approx(b["box"], abs=1e-9)
