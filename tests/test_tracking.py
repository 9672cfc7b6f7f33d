"""The tracker alone (streampi.tracking: pure, no server): detections in, objects with stable
ids out, checked against the ground-truth tracks of streampi.synthetic.MovingScenes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streampi.synthetic import LABELS, MovingScenes
from streampi.tracking import Tracker, TrackerConfig, Zone, iou_matrix, point_in_polygon, score_tracks

FPS = 15.0


def det(box, score=0.8, label="circle"):
    return {"box": list(map(float, box)), "score": score, "class": 0, "label": label}


def noisy_detections(scenes: MovingScenes, seed: int, miss: float = 0.1, jitter: float = 2.0, false_rate: float = 0.05):
    """Each frame's ground truth as a detector would give it: boxes jittered, some objects
    missed, a stray false detection now and then, scores that wander."""
    rng = np.random.default_rng(seed)
    frames = []
    for truth in scenes.truth():
        dets = []
        for _, label, box, visible in truth:
            if visible < 0.3 or rng.random() < miss:
                continue
            b = np.asarray(box) + rng.normal(0, jitter, 4)
            dets.append(det(b, float(rng.uniform(0.4, 0.95)), LABELS[label]))
        if rng.random() < false_rate:
            x, y = rng.uniform(0, scenes.width - 30), rng.uniform(0, scenes.height - 30)
            dets.append(det([x, y, x + 25, y + 25], 0.35, "cross"))
        rng.shuffle(dets)
        frames.append(dets)
    return frames


def run(tracker: Tracker, frames, t0: float = 1000.0):
    """Feed every frame; return (per frame (number, box) of the confirmed tracks, new and ended)."""
    per_frame, new, ended = [], [], []
    for i, dets in enumerate(frames):
        step = tracker.update(dets, t0 + i / FPS)
        new += [t.number for t in step.new]
        ended += [t.number for t in step.ended]
        per_frame.append([(t.number, list(t.box)) for t in tracker.objects if t.missed == 0])  # (seen in it)
    ended += [t.number for t in tracker.end_all().ended]
    return per_frame, new, ended


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_each_object_of_a_moving_scene_is_one_track_from_new_to_end(seed):
    scenes = MovingScenes(seed=seed, objects=8)
    per_frame, new, ended = run(Tracker(TrackerConfig()), noisy_detections(scenes, seed))
    score = score_tracks(list(scenes.truth()), per_frame)
    assert score.objects == 8
    assert (score.missed, score.id_switches, score.fragments, score.false_tracks) == (0, 0, 0, 0), score
    assert score.coverage > 0.9, score
    assert len(new) == len(set(new)) == 8 and sorted(ended) == sorted(new)


def test_score_tracks_sees_a_switch_a_fragment_and_a_false_track():
    """The scoring itself can fail: ids swapped between two objects mid-way, an object cut in
    two, a track on nothing."""
    truth = [[(0, 0, (0, 0, 10, 10), 1.0), (1, 0, (50, 0, 60, 10), 1.0)] for _ in range(6)]
    tracked = [[("a", (0, 0, 10, 10)), ("b", (50, 0, 60, 10))] for _ in range(3)] + \
              [[("b", (0, 0, 10, 10)), ("a", (50, 0, 60, 10)), ("z", (200, 200, 220, 220))] for _ in range(3)]
    score = score_tracks(truth, tracked)
    assert (score.id_switches, score.fragments, score.false_tracks, score.missed) == (2, 2, 1, 0)
    assert score_tracks(truth, [[] for _ in truth]).missed == 2


def test_an_object_exists_after_min_hits_frames_in_a_row():
    tr = Tracker(TrackerConfig(min_hits=3))
    assert not tr.update([det([10, 10, 50, 50])], 0.0).new
    assert not tr.update([], 0.1).new  # missed once before it was confirmed: forgotten
    assert tr.tracks == []
    steps = [tr.update([det([10 + k, 10, 50 + k, 50])], 0.2 + k / 10) for k in range(3)]
    assert [len(s.new) for s in steps] == [0, 0, 1]
    assert [t.number for t in tr.objects] == [steps[2].new[0].number]


def test_an_object_ends_after_max_missed_frames_and_not_before():
    tr = Tracker(TrackerConfig(min_hits=1, max_missed=4, max_missed_s=100))
    (obj,) = tr.update([det([10, 10, 50, 50])], 0.0).new
    for k in range(1, 5):
        assert not tr.update([], k / 10).ended, k  # 4 misses: still there
    assert tr.update([], 0.5).ended == [obj] and obj.ended
    assert tr.objects == []


def test_a_stream_that_stops_sending_ends_its_objects_by_time():
    tr = Tracker(TrackerConfig(min_hits=1, max_missed=1000, max_missed_s=2.0))
    (obj,) = tr.update([det([10, 10, 50, 50])], 10.0).new
    assert not tr.expire(11.9).ended
    assert tr.expire(12.0).ended == [obj]
    assert tr.tracks == [] and obj.last_seen == 10.0


def test_a_missed_object_is_found_again_where_its_motion_takes_it():
    tr = Tracker(TrackerConfig(min_hits=1))
    (obj,) = tr.update([det([0, 0, 30, 30])], 0.0).new
    for k in range(1, 5):
        tr.update([det([20 * k, 0, 20 * k + 30, 30])], k / 10)
    for k in range(5, 8):  # unseen for three frames, moving 20 px a frame meanwhile
        tr.update([], k / 10)
    step = tr.update([det([160, 0, 190, 30])], 0.8)  # no overlap with where it was last seen
    assert not step.new and [t.number for t in tr.objects] == [obj.number] and obj.missed == 0


def test_per_label_score_thresholds():
    tr = Tracker(TrackerConfig(min_hits=1, thresholds={"square": 0.7, "*": 0.5}))
    step = tr.update([det([0, 0, 20, 20], 0.65, "square"), det([50, 0, 70, 20], 0.65, "circle"),
                      det([100, 0, 120, 20], 0.45, "ring"), det([150, 0, 170, 20], 0.75, "square")], 0.0)
    assert sorted((t.label, t.score) for t in step.new) == [("circle", 0.65), ("square", 0.75)]


def test_unusable_detections_are_skipped_not_fatal():
    tr = Tracker(TrackerConfig(min_hits=1))
    step = tr.update([{"score": 0.9}, {"box": [1, 2, 3]}, {"box": [5, 5, 1, 1]}, {"box": [0, 0, float("nan"), 4]},
                      {"box": "no"}, det([0, 0, 10, 10])], 0.0)
    assert len(step.new) == 1


def test_one_object_under_two_labels_is_one_track():
    tr = Tracker(TrackerConfig(min_hits=1))
    step = tr.update([det([0, 0, 40, 40], 0.5, "cross"), det([2, 3, 41, 44], 0.4, "diamond")], 0.0)
    assert [t.label for t in step.new] == ["cross"]


def test_the_label_follows_the_score_weighted_majority():
    tr = Tracker(TrackerConfig(min_hits=1))
    (obj,) = tr.update([det([0, 0, 40, 40], 0.6, "circle")], 0.0).new
    assert "label" not in tr.update([det([1, 0, 41, 40], 0.5, "ring")], 0.1).changed.get(obj, set())
    step = tr.update([det([2, 0, 42, 40], 0.5, "ring")], 0.2)  # ring 1.0 against circle 0.6
    assert "label" in step.changed[obj] and obj.label == "ring"


def test_better_scores_are_reported_once_each():
    tr = Tracker(TrackerConfig(min_hits=1))
    (obj,) = tr.update([det([0, 0, 40, 40], 0.5)], 0.0).new
    scores = [0.4, 0.7, 0.6, 0.9, 0.9]
    improved = [bool(tr.update([det([k, 0, 40 + k, 40], s)], k / 10).improved) for k, s in enumerate(scores, 1)]
    assert improved == [False, True, False, True, False] and obj.top_score == 0.9


def test_zones_are_entered_and_left_with_inertia():
    zone = Zone("drive", ((100, 0), (200, 0), (200, 100), (100, 100)))
    tr = Tracker(TrackerConfig(min_hits=1, zone_inertia=3, zones=(zone,)))
    (obj,) = tr.update([det([20, 40, 120, 90])], 0.0).new  # bottom centre (70, 90): outside
    history = []
    xs = [95, 101, 99, 102, 110, 120, 130, 205, 210, 215, 220]  # the bottom centre's x
    for k, x in enumerate(xs, 1):
        step = tr.update([det([x - 50, 40, x + 50, 90])], k / 10)
        history.append((x, "zones" in step.changed.get(obj, set()), list(obj.zones)))
    # 101 and 99: on the edge, no change; then in three frames in a row (102, 110, 120): entered
    assert [h[1] for h in history] == [False, False, False, False, False, True, False, False, False, True, False]
    assert history[5][2] == ["drive"] and obj.zones == [] and obj.entered_zones == ["drive"]


def test_a_zone_limited_to_streams_applies_to_those_only():
    zone = Zone("door", ((0, 0), (50, 0), (50, 50), (0, 50)), streams=("cam1",))
    assert Tracker(TrackerConfig(zones=(zone,)), stream="cam1").zones == (zone,)
    assert Tracker(TrackerConfig(zones=(zone,)), stream="cam2").zones == ()


def test_ids_are_never_reused_across_the_streams_of_one_numbering():
    numbers = itertools.count(1)
    a, b = Tracker(TrackerConfig(min_hits=1), "a", numbers=numbers), Tracker(TrackerConfig(min_hits=1), "b",
                                                                            numbers=numbers)
    got = []
    for k in range(5):
        got += [t.number for t in a.update([det([k * 100, 0, k * 100 + 20, 20])], k).new]
        got += [t.number for t in b.update([det([k * 100, 0, k * 100 + 20, 20])], k).new]
        a.end_all()
    assert len(got) == len(set(got)) == 10


def test_bad_configurations_are_refused():
    for kwargs, match in [({"min_hits": 0}, "min_hits"), ({"max_missed_s": 0}, "max_missed_s"),
                          ({"iou_threshold": 0}, "iou_threshold"), ({"zone_inertia": 0}, "zone_inertia")]:
        with pytest.raises(ValueError, match=match):
            TrackerConfig(**kwargs)
    z = Zone("a", ((0, 0), (1, 0), (1, 1)))
    with pytest.raises(ValueError, match="defined twice"):
        TrackerConfig(zones=(z, z))
    with pytest.raises(ValueError, match="at least 3 points"):
        Zone("b", ((0, 0), (1, 1)))
    with pytest.raises(ValueError, match=r"\[x, y\]"):
        Zone("c", ((0, 0), (1, 1), (2, "x")))


def test_point_in_polygon_on_a_concave_polygon():
    u_shape = ((0, 0), (30, 0), (30, 30), (20, 30), (20, 10), (10, 10), (10, 30), (0, 30))
    inside = [(5, 5), (25, 25), (15, 5), (5, 29)]
    outside = [(15, 20), (35, 5), (-1, 5), (15, 31)]
    assert all(point_in_polygon(x, y, u_shape) for x, y in inside)
    assert not any(point_in_polygon(x, y, u_shape) for x, y in outside)


def test_iou_matrix_matches_the_pairwise_definition():
    rng = np.random.default_rng(7)
    a = np.sort(rng.uniform(0, 100, (7, 2, 2)), axis=1).transpose(0, 2, 1).reshape(7, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.uniform(0, 100, (5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)[:, [0, 2, 1, 3]]

    def iou(p, q):
        w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        inter = w * h
        return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)

    want = np.array([[iou(p, q) for q in b] for p in a])
    np.testing.assert_allclose(iou_matrix(a, b), want, rtol=1e-12)
    assert iou_matrix(a[:0], b).shape == (0, 5)
