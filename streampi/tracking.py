"""Per-stream object tracking: detections in, objects with stable ids out (pure: no sockets,
no server, no clock of its own; every call is given the time).

A :class:`Tracker` follows the objects of one stream. Each :meth:`Tracker.update` takes the
``detections`` of one answered frame (``{"box": [x0, y0, x1, y1], "score": s, "label": ...}``,
as the box decoders give them, docs/detection.md) and associates them with the tracks it has
by IoU, greedily (the pair with the highest IoU first), against each track's box moved by its
velocity. What it returns (a :class:`Step`) says which objects were confirmed (seen in
``min_hits`` frames in a row: ``new``), which changed (label, zones, a better score) and which
ended (missed in more than ``max_missed`` frames, or not seen for ``max_missed_s`` seconds;
:meth:`Tracker.expire` ends them by time alone, for a stream that stopped sending).

Zones are polygons in frame pixels; an object is in a zone when the bottom centre of its box
is, and enters (or leaves) it once that has held for ``zone_inertia`` frames in a row, so
that a box jittering on a zone's edge does not flap in and out.

Why greedy IoU and not norfair: ``bench/tracking.py`` measures both on the same scenes (the
figures are in docs/integrations.md): on detections of non-overlapping objects, the case of a
fixed camera that this tracker is for, greedy association made no more identity switches and
cost a fraction of norfair's CPU per frame, with no dependency beyond NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Step", "Track", "TrackScore", "Tracker", "TrackerConfig", "Zone", "iou_matrix", "point_in_polygon",
           "score_tracks"]


def point_in_polygon(x: float, y: float, points: Sequence[tuple[float, float]]) -> bool:
    """Whether ``(x, y)`` lies inside the polygon ``points`` (even-odd rule, ray casting)."""
    inside = False
    n = len(points)
    j = n - 1
    for i in range(n):
        xi, yi = points[i]
        xj, yj = points[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


@dataclass(frozen=True)
class Zone:
    """A named polygon in frame pixels; ``streams`` limits it to those streams (empty: all)."""

    name: str
    points: tuple[tuple[float, float], ...]
    streams: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a zone's name must be a non-empty string, got {self.name!r}")
        if len(self.points) < 3:
            raise ValueError(f"zone {self.name!r} needs at least 3 points, got {len(self.points)}")
        for p in self.points:
            if len(p) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                      for v in p):
                raise ValueError(f"zone {self.name!r}: each point is [x, y] in frame pixels, got {list(p)!r}")

    def applies_to(self, stream: str) -> bool:
        return not self.streams or stream in self.streams

    def contains(self, x: float, y: float) -> bool:
        return point_in_polygon(x, y, self.points)


@dataclass
class TrackerConfig:
    """How a :class:`Tracker` decides (the ``--events-*`` options of ``streampi serve``)."""

    min_hits: int = 2  # frames in a row an object must be seen in before it exists
    max_missed: int = 15  # frames without it after which it ends
    max_missed_s: float = 5.0  # seconds without it after which it ends (also when no frame comes)
    iou_threshold: float = 0.2  # least IoU of a detection with a track's predicted box to continue it
    thresholds: dict[str, float] = field(default_factory=dict)  # label (or "*": any other) -> least score
    zones: tuple[Zone, ...] = ()
    zone_inertia: int = 3  # frames in a row before entering or leaving a zone counts
    # a detection overlapping one already taken this frame by more than this starts no track: detectors
    # with NMS per class report an object they are unsure of under two labels (None: off)
    duplicate_iou: float | None = 0.5

    def __post_init__(self) -> None:
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if self.max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {self.max_missed}")
        if not self.max_missed_s > 0:
            raise ValueError(f"max_missed_s must be > 0, got {self.max_missed_s}")
        if not 0 < self.iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.zone_inertia < 1:
            raise ValueError(f"zone_inertia must be >= 1, got {self.zone_inertia}")
        names = [z.name for z in self.zones]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"zone {name!r} is defined twice")

    def threshold(self, label: str) -> float:
        t = self.thresholds.get(label)
        return t if t is not None else self.thresholds.get("*", 0.0)


class Track:
    """One followed object. ``confirmed`` once seen ``min_hits`` times; the rest is its state."""

    __slots__ = ("number", "box", "score", "top_score", "label", "label_scores", "hits", "missed",
                 "confirmed", "first_seen", "last_seen", "last_motion_t", "velocity", "zones", "entered_zones",
                 "zone_runs", "top_box", "ended")

    def __init__(self, number: int, box: np.ndarray, score: float, label: str, t: float, motion_t: float) -> None:
        self.number = number
        self.box = box
        self.score = score
        self.top_score = score
        self.top_box = box
        self.label = label
        self.label_scores: dict[str, float] = {label: score}
        self.hits = 1
        self.missed = 0
        self.confirmed = False
        self.ended = False
        self.first_seen = self.last_seen = t
        self.last_motion_t = motion_t
        self.velocity = (0.0, 0.0)  # pixels per second of the box's centre
        self.zones: list[str] = []  # the zones it is in now (after inertia), in the config's order
        self.entered_zones: list[str] = []  # every zone it has entered, in the order it did
        self.zone_runs: dict[str, int] = {}  # zone -> frames in a row whose position disagrees with `zones`

    def predicted(self, motion_t: float) -> np.ndarray:
        dt = min(max(motion_t - self.last_motion_t, 0.0), 1.0)  # (a long gap: no wild extrapolation)
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        return self.box + np.array([dx, dy, dx, dy])

    def __repr__(self) -> str:
        return (f"Track({self.number}, {self.label}, score={self.score:.2f}, hits={self.hits}, "
                f"missed={self.missed}, box={[round(float(v), 1) for v in self.box]})")


@dataclass
class Step:
    """What one update or expiry changed. ``changed`` maps a confirmed track to what changed
    about it (``label``, ``zones``, ``score``: a better top score); ``new`` tracks are not in it."""

    new: list[Track] = field(default_factory=list)
    changed: dict[Track, set[str]] = field(default_factory=dict)
    ended: list[Track] = field(default_factory=list)
    improved: list[Track] = field(default_factory=list)  # confirmed tracks whose top score this frame raised

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.ended or self.improved)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (n×4) with every box of ``b`` (m×4), ``[x0, y0, x1, y1]``."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _label_of(det: dict) -> str:
    label = det.get("label")
    return str(label) if label is not None else str(det.get("class", "object"))


class Tracker:
    """The objects of one stream (see the module's docstring).

    >>> tr = Tracker(TrackerConfig(min_hits=2))
    >>> tr.update([{"box": [10, 10, 50, 50], "score": 0.9, "label": "circle"}], t=0.0).new
    []
    >>> [t.number for t in tr.update([{"box": [12, 10, 52, 50], "score": 0.8, "label": "circle"}], t=0.1).new]
    [1]
    """

    def __init__(self, config: TrackerConfig | None = None, stream: str = "", first_number: int = 1,
                 numbers: Any = None) -> None:
        self.config = config or TrackerConfig()
        self.stream = stream
        self.zones = tuple(z for z in self.config.zones if z.applies_to(stream))
        self.tracks: list[Track] = []
        # where track numbers come from: shared by every stream's tracker of a server (ids unique per run)
        self._numbers = numbers if numbers is not None else iter(range(first_number, 2**62))

    @property
    def objects(self) -> list[Track]:
        """The confirmed tracks that have not ended."""
        return [t for t in self.tracks if t.confirmed]

    def _filter(self, detections: Iterable[dict]) -> tuple[np.ndarray, list[float], list[str]]:
        boxes, scores, labels = [], [], []
        for det in detections:
            try:
                box = [float(v) for v in det["box"]]
                score = float(det.get("score", 1.0))
            except (KeyError, TypeError, ValueError):
                continue  # not a box detection: nothing to follow
            if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
                continue
            label = _label_of(det)
            if score < self.config.threshold(label):
                continue
            boxes.append(box)
            scores.append(score)
            labels.append(label)
        return np.asarray(boxes, np.float64).reshape(-1, 4), scores, labels

    def update(self, detections: Iterable[dict], t: float, motion_t: float | None = None) -> Step:
        """Take one frame's detections, received at ``t`` (seconds; the clock :meth:`expire` is
        given too). ``motion_t`` is when the frame was taken, if known (the producer's ``ts``):
        objects move with the camera's clock, not with the moments frames reach the server,
        which can come in bursts."""
        if motion_t is None or not math.isfinite(motion_t):
            motion_t = t
        boxes, scores, labels = self._filter(detections)
        step = Step()
        tracks = self.tracks
        pairs: list[tuple[int, int]] = []
        if tracks and len(boxes):
            last_boxes = np.stack([tr.box for tr in tracks])
            dt = np.clip(motion_t - np.array([tr.last_motion_t for tr in tracks]), 0.0, 1.0)  # (as Track.predicted)
            shift = np.array([tr.velocity for tr in tracks]) * dt[:, None]
            predicted = last_boxes + np.concatenate([shift, shift], axis=1)
            iou = iou_matrix(predicted, boxes)
            # a track seen in the last frame may also continue where it was (a velocity measured on
            # frames that came in a burst must not lose it); one missed since goes where it was going
            recent = np.array([tr.missed == 0 for tr in tracks])
            if recent.any():
                last = iou_matrix(last_boxes, boxes)
                iou = np.where(recent[:, None], np.maximum(iou, last), iou)
            # greedy: the best pair first; a same-label pair wins a near tie (a label seldom flips)
            same = np.array([tr.label for tr in tracks], dtype=object)[:, None] == np.array(labels, dtype=object)
            rank = iou + 0.05 * same
            order = np.argsort(-rank, axis=None, kind="stable")
            used_t, used_d = set(), set()
            for flat in order:
                i, j = divmod(int(flat), len(boxes))
                if rank.flat[flat] < self.config.iou_threshold:
                    break  # (sorted: every pair after it ranks lower still)
                if iou[i, j] < self.config.iou_threshold:
                    continue
                if i in used_t or j in used_d:
                    continue
                used_t.add(i)
                used_d.add(j)
                pairs.append((i, j))
        matched_t = {i for i, _ in pairs}
        matched_d = {j for _, j in pairs}
        for i, j in pairs:
            self._continue(tracks[i], boxes[j], scores[j], labels[j], t, motion_t, step)
        survivors = []
        for i, tr in enumerate(tracks):
            if i not in matched_t:
                tr.missed += 1
                if not tr.confirmed:  # a tentative track must be seen in consecutive frames
                    continue
                if tr.missed > self.config.max_missed or t - tr.last_seen >= self.config.max_missed_s:
                    tr.ended = True
                    step.ended.append(tr)
                    continue
                self._zones(tr, None, step)
            survivors.append(tr)
        taken = [boxes[j] for j in matched_d]
        dup = self.config.duplicate_iou
        for j in sorted(range(len(boxes)), key=lambda k: -scores[k]):
            if j not in matched_d:
                if dup is not None and taken and iou_matrix(boxes[j:j + 1], np.stack(taken)).max() > dup:
                    continue  # the same object again, under another label (per-class NMS): no new track
                taken.append(boxes[j])
                tr = Track(next(self._numbers), boxes[j], scores[j], labels[j], t, motion_t)
                self._zones(tr, boxes[j], None)
                if self.config.min_hits <= 1:
                    tr.confirmed = True
                    step.new.append(tr)
                survivors.append(tr)
        self.tracks = survivors
        return step

    def _continue(self, tr: Track, box: np.ndarray, score: float, label: str, t: float, motion_t: float,
                  step: Step) -> None:
        dt = motion_t - tr.last_motion_t
        if 0 < dt <= 2.0:  # (plain floats: NumPy's per-call cost is most of it on 2-element arrays)
            x0, y0, x1, y1 = box.tolist()
            p0, q0, p1, q1 = tr.box.tolist()
            vx, vy = (x0 + x1 - p0 - p1) / (2 * dt), (y0 + y1 - q0 - q1) / (2 * dt)
            if tr.hits > 1:
                vx, vy = 0.5 * (tr.velocity[0] + vx), 0.5 * (tr.velocity[1] + vy)
            tr.velocity = (vx, vy)
        tr.box, tr.score, tr.last_seen, tr.last_motion_t = box, score, t, motion_t
        tr.hits += 1
        tr.missed = 0
        tr.label_scores[label] = tr.label_scores.get(label, 0.0) + score
        best_label = max(tr.label_scores, key=lambda k: (tr.label_scores[k], k == tr.label))
        changes: set[str] = set()
        if best_label != tr.label:
            tr.label = best_label
            changes.add("label")
        if score > tr.top_score:
            tr.top_score, tr.top_box = score, box
            changes.add("score")
        if not tr.confirmed:
            self._zones(tr, box, None)
            if tr.hits >= self.config.min_hits:
                tr.confirmed = True
                step.new.append(tr)
            return
        if "score" in changes:
            step.improved.append(tr)
        if self._zones(tr, box, step):
            changes.add("zones")
        if changes:
            step.changed.setdefault(tr, set()).update(changes)

    def _zones(self, tr: Track, box: np.ndarray | None, step: Step | None) -> bool:
        """Count this frame's position (None: not seen: no evidence) toward the track's zones;
        True when the zones it is in changed."""
        if not self.zones or box is None:
            return False
        x, y = (box[0] + box[2]) / 2, box[3]
        inertia = self.config.zone_inertia
        changed = False
        for zone in self.zones:
            inside = zone.contains(x, y)
            if inside == (zone.name in tr.zones):
                tr.zone_runs.pop(zone.name, None)
                continue
            run = tr.zone_runs.get(zone.name, 0) + 1
            if run < inertia:
                tr.zone_runs[zone.name] = run
                continue
            tr.zone_runs.pop(zone.name, None)
            changed = True
            if inside:
                tr.zones.append(zone.name)
                if zone.name not in tr.entered_zones:
                    tr.entered_zones.append(zone.name)
            else:
                tr.zones.remove(zone.name)
        if changed:
            order = [z.name for z in self.zones]
            tr.zones.sort(key=order.index)
        return changed

    def expire(self, t: float) -> Step:
        """End the confirmed tracks not seen for ``max_missed_s`` seconds at ``t`` (a stream that
        stopped sending), and forget tentative ones as old."""
        step = Step()
        keep = []
        for tr in self.tracks:
            if t - tr.last_seen >= self.config.max_missed_s:
                if tr.confirmed:
                    tr.ended = True
                    step.ended.append(tr)
                continue
            keep.append(tr)
        self.tracks = keep
        return step

    def end_all(self) -> Step:
        """End every confirmed track (the server stops)."""
        step = Step(ended=[tr for tr in self.tracks if tr.confirmed])
        for tr in step.ended:
            tr.ended = True
        self.tracks = []
        return step


@dataclass
class TrackScore:
    """How tracks followed known objects (:func:`score_tracks`)."""

    objects: int  # ground-truth objects that were fully in view at some frame
    missed: int  # of those, never matched by a track
    id_switches: int  # frames where an object's track differs from the one that had it before
    fragments: int  # tracks beyond the first one per object (an object cut into several)
    false_tracks: int  # tracks that never matched an object
    coverage: float  # share of the frames with an object fully in view where a track had it

    def as_dict(self) -> dict[str, Any]:
        return {"objects": self.objects, "missed": self.missed, "id_switches": self.id_switches,
                "fragments": self.fragments, "false_tracks": self.false_tracks, "coverage": round(self.coverage, 4)}


def score_tracks(truth: Sequence[Sequence[tuple]], tracked: Sequence[Sequence[tuple[Any, Sequence[float]]]],
                 iou: float = 0.3, in_view: float = 0.9) -> TrackScore:
    """Compare tracks with ground truth, frame by frame (the CLEAR-MOT counts that matter here).

    ``truth[i]``: the objects of frame ``i`` as ``(object id, label, box, visible share)`` (what
    :meth:`streampi.synthetic.MovingScenes.frames` gives); ``tracked[i]``: the tracks a tracker
    reported for that frame, ``(track id, box)``. In each frame, objects and tracks are paired
    greedily by IoU (at least ``iou``); objects less than ``in_view`` in view may be matched but
    are not required to be."""
    ids_of: dict[Any, list[Any]] = {}
    last: dict[Any, Any] = {}
    matched_tracks: set[Any] = set()
    all_tracks: set[Any] = set()
    required, covered, switches = 0, 0, 0
    seen_objects: set[Any] = set()
    for objs, tracks in zip(truth, tracked):
        all_tracks.update(t for t, _ in tracks)
        for o in objs:
            if o[3] >= in_view:
                seen_objects.add(o[0])
        if not objs:
            continue
        pairs: dict[Any, Any] = {}
        if tracks:
            m = iou_matrix(np.asarray([o[2] for o in objs], np.float64).reshape(-1, 4),
                           np.asarray([b for _, b in tracks], np.float64).reshape(-1, 4))
            used_o, used_t = set(), set()
            for flat in np.argsort(-m, axis=None, kind="stable"):
                i, j = divmod(int(flat), len(tracks))
                if m[i, j] < iou:
                    break
                if i in used_o or j in used_t:
                    continue
                used_o.add(i)
                used_t.add(j)
                pairs[objs[i][0]] = tracks[j][0]
        for o in objs:
            tid = pairs.get(o[0])
            if o[3] >= in_view:
                required += 1
                covered += tid is not None
            if tid is None:
                continue
            matched_tracks.add(tid)
            if o[0] in last and last[o[0]] != tid:
                switches += 1
            last[o[0]] = tid
            if tid not in ids_of.setdefault(o[0], []):
                ids_of[o[0]].append(tid)
    return TrackScore(objects=len(seen_objects), missed=len(seen_objects - set(ids_of)), id_switches=switches,
                      fragments=sum(len(v) - 1 for v in ids_of.values()),
                      false_tracks=len(all_tracks - matched_tracks), coverage=covered / required if required else 1.0)
