"""Greedy NMS and YOLO candidate selection against references written here as plain loops.

Both implementations of :func:`streampi.decoders.nms.nms` are checked: the compiled loop
(``streampi/_ext/_nms.pyx``) and the NumPy version a build without the extension falls back
to. OpenCV's ``cv2.dnn.NMSBoxes`` is a second, outside reference where it is installed.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streampi.decoders import make_decoder
from streampi.decoders import nms as nms_module
from streampi.decoders import yolo as yolo_module
from streampi.decoders.nms import nms
from streampi.model import TensorSpec

pytestmark = pytest.mark.skipif(nms_module._kernel is None, reason="the compiled NMS extension is not built")


# -- the reference: the definition, one pair at a time -------------------------------------------
def iou(a, b) -> float:
    """Intersection over union; 0 when the boxes do not overlap (zero-area and inverted boxes)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def greedy(boxes, scores, threshold, max_detections, classes=None) -> list[int]:
    """Visit by score (highest first, lower index first on a tie); keep a box unless a kept box
    of its class overlaps it by an IoU above the threshold; stop at max_detections."""
    boxes, scores = np.asarray(boxes, float).tolist(), np.asarray(scores, float).tolist()
    visit = sorted(range(len(scores)), key=lambda k: (-scores[k], k))
    kept: list[int] = []
    for k in visit:
        if len(kept) >= max_detections:
            break
        rivals = [j for j in kept if classes is None or classes[j] == classes[k]]
        if not any(iou(boxes[k], boxes[j]) > threshold for j in rivals):
            kept.append(k)
    return kept


@pytest.fixture(params=["compiled", "numpy"])
def impl(request, monkeypatch):
    """Runs a test with the compiled loop, then with the NumPy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(nms_module, "_kernel", None)
    return request.param


def random_boxes(rng, n, extent=100.0, size=(2.0, 30.0)):
    xy = rng.uniform(0, extent, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(*size, (n, 2))], 1)


# -- hand-checked cases -------------------------------------------------------------------------
def test_exact_threshold_is_not_suppression(impl):
    # IoU of these two is exactly 50 / 100: suppressed only above the threshold
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], float)
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.5, 10).tolist() == [0, 1]
    assert nms(boxes, scores, 0.4375, 10).tolist() == [0]
    assert nms(boxes, scores, 0.0, 10).tolist() == [0]      # any overlap suppresses at 0
    assert nms(boxes, scores, 1.0, 10).tolist() == [0, 1]   # nothing is above 1


def test_ties_go_to_the_lower_index(impl):
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.5, 0.7, 0.7, 0.7], np.float32)
    assert nms(boxes, scores, 0.5, 10).tolist() == [1, 3]       # 1 beats 2 (tie), then suppresses 0
    assert nms(boxes, -scores, 0.5, 10).tolist() == [0, 3]      # ascending: 0 first, suppresses 1 and 2
    same = np.zeros(5, np.float32)
    assert nms(np.tile([0.0, 0, 4, 4], (5, 1)), same, 0.5, 10).tolist() == [0]
    # -0.0 and 0.0 are one score: index order decides
    assert nms(np.array([[0, 0, 4, 4], [0, 0, 4, 4]], float), np.array([-0.0, 0.0]), 0.5, 10).tolist() == [0]


def test_touching_zero_area_and_inverted_boxes_never_suppress(impl):
    boxes = np.array([
        [0, 0, 10, 10],
        [10, 0, 20, 10],    # touches the first along an edge
        [5, 5, 5, 8],       # zero width, inside the first
        [4, 4, 6, 4],       # zero height
        [8, 2, 2, 8],       # inverted x (x1 < x0) over the first
        [2, 8, 8, 2],       # inverted y
        [3, 3, 3, 3],       # a point
    ], float)
    scores = np.linspace(1.0, 0.4, len(boxes))
    for t in (0.0, 0.45):
        assert nms(boxes, scores, t, 100).tolist() == list(range(len(boxes)))
        assert nms(boxes[::-1], scores, t, 100).tolist() == list(range(len(boxes)))


def test_per_class_and_agnostic(impl):
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10], [0, 1, 10, 11]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5, 10).tolist() == [0]
    assert nms(boxes, scores, 0.5, 10, np.array([0, 1, 1, 2])).tolist() == [0, 1, 3]
    # any integer labels: negative, far apart, floats holding whole numbers
    assert nms(boxes, scores, 0.5, 10, np.array([-5, 10**12, 10**12, 7])).tolist() == [0, 1, 3]
    assert nms(boxes, scores, 0.5, 10, np.array([3.0, 1.0, 1.0, 0.0])).tolist() == [0, 1, 3]
    assert nms(boxes, scores, 0.5, 10, np.array([True, False, False, True])).tolist() == [0, 1]


def test_max_detections_and_empty(impl):
    boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], float)
    scores = np.array([0.1, 0.3, 0.2])
    assert nms(boxes, scores, 0.5, 2).tolist() == [1, 2]
    assert nms(boxes, scores, 0.5, 0).tolist() == []
    assert nms(boxes, scores, 0.5, 10**9).tolist() == [1, 2, 0]
    for empty in (np.zeros((0, 4)), np.zeros(0), []):
        out = nms(empty, np.zeros(0), 0.5, 10, np.zeros(0, int))
        assert out.dtype == np.intp and out.tolist() == []
    assert nms(boxes[:1], scores[:1], 0.5, 1, [4]).tolist() == [0]


@pytest.mark.parametrize("bad,message", [
    (dict(boxes=np.zeros((3, 3))), "boxes must have shape"),
    (dict(scores=np.zeros((3, 1))), "scores must be one-dimensional"),
    (dict(scores=np.array([0.1, np.nan, 0.3])), "scores hold NaN"),
    (dict(boxes=np.array([[0, 0, 1, 1], [0, 0, np.inf, 1], [0, 0, 1, 1.0]])), "non-finite coordinates \\(row 1\\)"),
    (dict(boxes=np.array([[0, 0, 1, 1], [0, 0, 1, 1], [np.nan, 0, 1, 1.0]])), "non-finite coordinates \\(row 2\\)"),
    (dict(scores=["a", "b", "c"]), "must be numbers"),
    (dict(iou_threshold=1.5), "iou_threshold must be within"),
    (dict(iou_threshold=float("nan")), "iou_threshold must be within"),
    (dict(iou_threshold="high"), "iou_threshold must be a number"),
    (dict(max_detections=-1), "max_detections must be 0 or more"),
    (dict(max_detections=2.5), "max_detections must be an integer"),
    (dict(classes=np.array([0, 1])), "classes must have shape"),
    (dict(classes=np.array([0, 1.5, 2])), "whole numbers"),
    (dict(classes=np.array([0, np.nan, 2])), "whole numbers"),
    (dict(classes=np.array(["a", "b", "c"])), "classes must be integers"),
])
def test_bad_arguments_are_named(impl, bad, message):
    args = dict(boxes=np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3]], float), scores=np.array([0.3, 0.2, 0.1]),
                iou_threshold=0.5, max_detections=10, classes=None)
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        nms(**args)


# -- random cases against the reference ---------------------------------------------------------
@pytest.mark.aarch64
@pytest.mark.parametrize("n", [2, 9, 16, 17, 100, 513, 1000])
def test_random_boxes_match_the_reference(impl, n):
    rng = np.random.default_rng(n)
    boxes = random_boxes(rng, n, extent=max(40.0, n ** 0.5 * 4))
    thin = rng.random(n) < 0.05
    boxes[thin, 2] = boxes[thin, 0]                                            # some zero-width boxes
    flip = rng.random(n) < 0.05
    boxes[flip, 0], boxes[flip, 2] = boxes[flip, 2].copy(), boxes[flip, 0].copy()  # some inverted ones
    scores = np.round(rng.random(n), 2).astype(np.float32)   # ties
    classes = rng.integers(0, 5, n)
    for cls in (None, classes):
        want = greedy(boxes, scores, 0.45, n, cls)
        assert n < 100 or len(want) < n  # suppression happened
        for limit in (1, 7, 300, n):
            assert nms(boxes, scores, 0.45, limit, cls).tolist() == want[:limit]


def scene(kind: str, rng) -> np.ndarray:
    """Boxes that stress how kept boxes are looked up (the compiled loop files them in a grid)."""
    n = 600
    if kind == "one corner":       # every box starts at the same point
        return np.concatenate([np.zeros((n, 2)), rng.uniform(1, 20, (n, 2))], 1)
    if kind == "one column":       # same x0: the grid has a single column
        xy = np.stack([np.full(n, 3.0), rng.uniform(0, 200, n)], 1)
        return np.concatenate([xy, xy + rng.uniform(5, 15, (n, 2))], 1)
    if kind == "giants":           # small boxes and a few that cover everything
        b = random_boxes(rng, n, extent=300.0)
        b[rng.choice(n, 8, replace=False)] = [[-50, -50, 400, 400], [-40, 0, 900, 310], [0, -40, 310, 900],
                                              [100, 100, 101, 1e6], [-1e6, 5, 1e6, 6], [0, 0, 300, 300],
                                              [150, 150, 160, 160], [1, 1, 299, 299]]
        return b
    if kind == "scales":           # 1e-3 to 1e9 in one set, negative corners
        xy = rng.choice([-1e9, -1.0, 0.0, 1e-3, 1.0, 1e9], (n, 2)) + rng.uniform(0, 1, (n, 2))
        wh = rng.choice([1e-3, 0.5, 2.0, 1e3, 1e9], (n, 2)) * rng.uniform(0.5, 1.5, (n, 2))
        return np.concatenate([xy, xy + wh], 1)
    return random_boxes(rng, n, extent=60.0)   # "dense": most boxes overlap several others


@pytest.mark.aarch64
@pytest.mark.parametrize("kind", ["one corner", "one column", "giants", "scales", "dense"])
def test_stressed_lookups_match_the_reference(impl, kind):
    rng = np.random.default_rng(3)
    boxes = scene(kind, rng)
    scores = np.round(rng.random(len(boxes)), 3)
    classes = rng.integers(0, 3, len(boxes))
    for cls in (None, classes):
        for t in (0.0, 0.3, 0.7):
            want = greedy(boxes, scores, t, len(boxes), cls)
            assert nms(boxes, scores, t, len(boxes), cls).tolist() == want
            assert nms(boxes, scores, t, 25, cls).tolist() == want[:25]


def test_float64_scores_and_float32_boxes(impl):
    rng = np.random.default_rng(5)
    boxes = random_boxes(rng, 400).astype(np.float32)
    scores = rng.random(400)                                  # float64: all 64 bits order them
    scores[::7] = scores[0]
    scores[1] = np.nextafter(scores[0], 1.0)                  # one ulp above the tied value
    assert nms(boxes, scores, 0.3, 400).tolist() == greedy(boxes.astype(float), scores, 0.3, 400)
    assert nms(boxes, scores.tolist(), 0.3, 400, [int(k % 3) for k in range(400)]).tolist() == greedy(
        boxes.astype(float), scores, 0.3, 400, [k % 3 for k in range(400)])


# the same ranks as the compiled radix sort sees them: every float32 / float64 special value
@pytest.mark.aarch64
@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False), min_size=0, max_size=300), st.booleans())
def test_score_order_is_a_stable_descending_sort(values, wide):
    s = np.array(values, np.float64 if wide else np.float32)
    order = np.empty(len(s), np.intp)
    nms_module._kernel.score_order(s, order)
    assert order.tolist() == sorted(range(len(s)), key=lambda k: (-float(s[k]), k))


box_strategy = st.tuples(st.integers(0, 48), st.integers(0, 48), st.integers(-4, 24), st.integers(-4, 24)).map(
    lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))   # integer corners: the reference's arithmetic is exact


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(box_strategy, st.integers(0, 6), st.integers(0, 2)), min_size=0, max_size=60),
       st.sampled_from([0.0, 0.25, 0.375, 0.5, 0.75, 1.0]), st.integers(0, 70), st.booleans())
def test_property_matches_the_reference(rows, threshold, limit, per_class):
    boxes = np.array([r[0] for r in rows], float).reshape(-1, 4)
    scores = np.array([r[1] / 4 for r in rows], np.float32)   # few distinct scores: many ties
    classes = np.array([r[2] for r in rows]) if per_class else None
    want = greedy(boxes, scores, threshold, limit, classes)
    assert nms(boxes, scores, threshold, limit, classes).tolist() == want
    nms_module_kernel, nms_module._kernel = nms_module._kernel, None
    try:
        assert nms(boxes, scores, threshold, limit, classes).tolist() == want
    finally:
        nms_module._kernel = nms_module_kernel


# -- OpenCV as an outside reference ---------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_opencv(seed):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(seed)
    n = 3000
    boxes = random_boxes(rng, n, extent=400.0, size=(4.0, 40.0))
    scores = rng.permutation(n).astype(np.float32) / n + 0.01   # distinct: OpenCV's tie order is its own
    classes = rng.integers(0, 8, n)
    rects = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    # (OpenCV's top_k limits the candidates before suppression, not the boxes kept: it is left
    # unlimited and its result cut to the limit)
    agnostic = np.asarray(cv2.dnn.NMSBoxes(rects, scores.tolist(), 0.0, 0.45)).reshape(-1).tolist()
    per_class = np.asarray(cv2.dnn.NMSBoxesBatched(rects, scores.tolist(), classes.tolist(), 0.0, 0.45)
                           ).reshape(-1).tolist()
    assert 300 < len(agnostic) < len(per_class) < n
    for limit in (300, n):
        assert nms(boxes, scores, 0.45, limit).tolist() == agnostic[:limit]
        assert nms(boxes, scores, 0.45, limit, classes).tolist() == per_class[:limit]


# -- YOLO candidate selection ---------------------------------------------------------------------
def spec(shape) -> TensorSpec:
    return TensorSpec("out", 0, tuple(shape), tuple(shape), np.dtype(np.float32), 0.0, 0)


def candidates_by_loop(head: np.ndarray, layout: str, threshold: float):
    """Cell by cell: best class (first on a tie), its score (× objectness for v5); a NaN class
    score drops the cell; kept when the score reaches the threshold in float32."""
    rows = head.T if layout == "v8" else head
    first = 4 if layout == "v8" else 5
    boxes, scores, classes = [], [], []
    for row in rows:
        cls = [float(v) for v in row[first:]]
        if any(v != v for v in cls):
            continue
        best = max(range(len(cls)), key=lambda c: (cls[c], -c))
        score = np.float32(cls[best]) if layout == "v8" else np.float32(row[4]) * np.float32(cls[best])
        if not score >= np.float32(threshold):
            continue
        cx, cy, w, h = (float(v) for v in row[:4])
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        scores.append(float(score))
        classes.append(best)
    return boxes, scores, classes


@pytest.mark.aarch64
@pytest.mark.parametrize("layout", ["v8", "v5"])
def test_yolo_candidates_match_a_loop(layout):
    rng = np.random.default_rng(11)
    n, nc = 500, 7
    rows = np.zeros((n, (4 if layout == "v8" else 5) + nc), np.float32)
    rows[:, :2] = rng.uniform(0, 640, (n, 2))
    rows[:, 2:4] = rng.uniform(1, 90, (n, 2))
    first = 4 if layout == "v8" else 5
    if layout == "v5":
        rows[:, 4] = np.round(rng.uniform(0.5, 1.0, n), 1)
    rows[:, first:] = np.round(rng.random((n, nc)), 1)            # ties between classes
    rows[::13, first + 2] = np.nan                                 # NaN class scores drop a cell
    rows[5, first:] = 0.7                                          # a cell scoring exactly its threshold
    rows[6, first:] = np.float32(np.inf)
    rows[7, first:] = -np.inf
    head = np.ascontiguousarray(rows.T if layout == "v8" else rows)[None]
    threshold = 0.7
    dec = make_decoder([spec(head.shape)], None, kind="yolo",
                       options={"layout": layout, "coords": "pixels", "score_threshold": threshold})
    want = candidates_by_loop(head[0], layout, threshold)
    assert 50 < len(want[1]) < n
    boxes, scores, classes = dec.candidates(head[0])
    assert boxes.tolist() == want[0] and scores.tolist() == want[1] and classes.tolist() == want[2]
    with pytest.MonkeyPatch.context() as mp:   # the NumPy selection gives the same
        mp.setattr(yolo_module, "_kernel", None)
        boxes, scores, classes = dec.candidates(head[0])
    assert boxes.tolist() == want[0] and scores.tolist() == want[1] and classes.tolist() == want[2]


def test_yolo_decode_of_a_full_head_is_the_same_with_and_without_the_extension(monkeypatch):
    rng = np.random.default_rng(2)
    n, nc = 8400, 80
    head = np.zeros((1, 4 + nc, n), np.float32)
    head[0, :2] = rng.uniform(0, 640, (2, n))
    head[0, 2:4] = rng.uniform(4, 40, (2, n))
    head[0, 4 + rng.integers(0, nc, n), np.arange(n)] = rng.uniform(0.2, 1.0, n)   # nearly all above 0.25
    for agnostic in (False, True):
        dec = make_decoder([spec(head.shape)], None, options={"coords": "pixels", "max_detections": 300,
                                                              "class_agnostic": agnostic})
        compiled = dec.frame_result([head], 0, None)["detections"]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(yolo_module, "_kernel", None)
            mp.setattr(nms_module, "_kernel", None)
            fallback = dec.frame_result([head], 0, None)["detections"]
        assert len(compiled) == 300 and compiled == fallback


WITHOUT_EXTENSION = r"""
import sys

class Refuse:
    "An import hook: this build has no compiled NMS."
    def find_spec(self, name, path=None, target=None):
        if name == "streampi._ext._nms":
            raise ImportError(f"{name} is not built here")
        return None

sys.meta_path.insert(0, Refuse())
import numpy as np
from streampi.decoders import make_decoder, nms, yolo
from streampi.model import TensorSpec
assert nms._kernel is None and yolo._kernel is None
boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], float)
print(nms.nms(boxes, np.array([0.5, 0.9, 0.7, 0.9]), 0.5, 10, np.array([0, 0, 0, 1])).tolist())
head = np.zeros((1, 6, 40), np.float32)
head[0, :2] = np.arange(40) * 20.0
head[0, 2:4] = 8.0
head[0, 4, ::2] = 0.9
spec = TensorSpec("out", 0, (1, 6, 40), (1, 6, 40), np.dtype(np.float32), 0.0, 0)
print(len(make_decoder([spec], None, kind="yolo", options={"coords": "pixels"}).frame_result([head], 0, None)["detections"]))
"""


def test_a_build_without_the_extension_falls_back_to_numpy():
    out = subprocess.run([sys.executable, "-c", WITHOUT_EXTENSION], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[1,", "3,", "2]", "20"]
