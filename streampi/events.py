"""Objects and events: what ``streampi serve --events`` (and ``--mqtt``, ``--http``) adds.

:class:`EventsEngine` is a result listener of the server (:meth:`Server.add_listener
<streampi.serving.server.Server.add_listener>`): each ``ok`` answer's ``detections`` feed the
:class:`~streampi.tracking.Tracker` of its stream, and what the trackers decide becomes events:

- ``new`` when an object is confirmed (seen in ``--events-min-hits`` frames in a row),
- ``update`` when its label or its zones change (at once) or its best score rises (at most
  once a second per object),
- ``end`` when it has not been seen for ``--events-max-missed`` frames or
  ``--events-max-missed-s`` seconds (also when its stream stops sending), and at shutdown,
  before the results socket closes.

Each is a map ``{"type", "before", "after"}`` whose objects carry ``id``, ``stream``, ``label``,
``score``, ``top_score``, ``box``, ``zones``, ``entered_zones``, ``start_time``, ``end_time``,
``has_snapshot`` and ``frame_time`` (times: when the server received the frame, unix seconds),
published on the server topic ``_events`` (docs/integrations.md) and handed to in-process
callbacks (:meth:`EventsEngine.add_callback`).

Snapshots: the frame in which an object scored best, as a JPEG with its box drawn, from
whatever format the frame came in (rgb, bgr, rgba, bgra, gray, i420, nv12, jpeg). Encoding
costs milliseconds, so it is done only when an object's best score rises, at most once a
second per object (a better frame in between is copied and encoded when the second is up, or
at the object's end); each encoded snapshot is kept in a store bounded in count and bytes per
stream (the least recently updated goes first) and published on ``_snapshots`` as ``{"id",
"stream", "label", "score", "jpeg"}``. A snapshot that fails to encode is counted and logged;
the answer it came with was published before.

Attached to a server, the engine encodes in one thread (``streampi-snapshots``), never on the
loop: it hands the thread a copy of the frame (the frame's pixels are the server's only during
the listener's call), at most :data:`ENCODES_PER_STREAM` per stream at a time (a better frame
past that waits as one held back by the rate limit does), and takes the JPEG back on the loop,
where it is stored, counted and published. Events do not wait for it: ``has_snapshot`` in an
event says what the store holds then, so a ``new`` event usually says false, and once the
snapshot is stored (and published) an ``update`` says true. A per-object generation keeps an
older frame's encode, ending late, from replacing a newer snapshot. :meth:`EventsEngine.close`
takes the encodes in flight directly (the loop is busy running it), bounded by
:data:`CLOSE_WAIT_S` in all, then encodes the objects' last frames itself before their ends.
Used alone (no server, no loop), the engine encodes inline, synchronously.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StreampiError
from .tracking import Step, Track, Tracker, TrackerConfig, Zone

__all__ = ["EVENTS_TOPIC", "SNAPSHOTS_TOPIC", "EventsConfig", "EventsEngine", "SnapshotStore", "ZonesFileError",
           "encode_snapshot", "load_zones", "parse_thresholds"]

log = logging.getLogger("streampi.events")

EVENTS_TOPIC = "_events"
SNAPSHOTS_TOPIC = "_snapshots"
#: raw copies of frames waiting for their object's next snapshot (held back by the rate limit, or
#: queued for the encoder thread), per stream, at most
PENDING_BYTES_PER_STREAM = 32 * 2**20
#: snapshots queued for the encoder thread (or encoding) per stream; past it a better frame waits
ENCODES_PER_STREAM = 2
#: how long ``close()`` waits, in all, for the snapshots being encoded
CLOSE_WAIT_S = 2.0
#: how often the engine looks at the clock: objects of silent streams, rate-limited updates
TICK_S = 0.25


class ZonesFileError(StreampiError, ValueError):
    """The zones file cannot be used; the message names the file and what is wrong."""


def parse_thresholds(text: str | None) -> dict[str, float]:
    """``"person=0.6,car=0.5,*=0.4"`` (or a bare ``"0.5"`` for every label) → ``{label: score}``;
    ``*`` is every label not named. ValueError saying what is wrong."""
    out: dict[str, float] = {}
    if text is None or not text.strip():
        return out
    for item in text.split(","):
        item = item.strip()
        label, sep, value = item.rpartition("=")
        label = label.strip() if sep else "*"
        if not label:
            raise ValueError(f"an item of LABEL=SCORE has no label: {item!r}")
        try:
            score = float(value)
        except ValueError:
            raise ValueError(f"the score of {item!r} is not a number") from None
        if not 0 <= score <= 1:
            raise ValueError(f"the score of {item!r} must be between 0 and 1")
        if label in out:
            raise ValueError(f"label {label!r} is given twice")
        out[label] = score
    return out


def load_zones(path: str | Path) -> tuple[Zone, ...]:
    """Read a zones file: TOML (``.toml``) or JSON (``.json``), a list ``zones`` of tables with
    ``name``, ``points`` (``[[x, y], ...]``, frame pixels, at least 3) and optionally
    ``streams`` (the streams it applies to; default: every stream)::

        [[zones]]
        name = "driveway"
        streams = ["cam0"]
        points = [[0, 300], [640, 300], [640, 480], [0, 480]]
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ZonesFileError(f"{path}: a zones file is TOML (.toml) or JSON (.json), got {path.suffix or 'no suffix'}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ZonesFileError(f"{path}: cannot read the zones file: {exc.strerror or exc}") from None
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # pragma: no cover - Python 3.10
                import tomli as tomllib

            doc = tomllib.loads(raw.decode("utf-8"))
        else:
            doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ZonesFileError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"zones"}:
        found = ", ".join(sorted(doc)) if isinstance(doc, dict) else type(doc).__name__
        raise ZonesFileError(f"{path}: expected one key, 'zones' (a list of zones), found: {found or 'nothing'}")
    items = doc["zones"]
    if not isinstance(items, list):
        raise ZonesFileError(f"{path}: 'zones' must be a list of tables, got {type(items).__name__}")
    zones = []
    for k, item in enumerate(items):
        where = f"{path}: zone {k + 1}"
        if not isinstance(item, dict):
            raise ZonesFileError(f"{where}: must be a table with name and points, got {type(item).__name__}")
        unknown = set(item) - {"name", "points", "streams"}
        if unknown:
            raise ZonesFileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: name, points, streams)")
        for key in ("name", "points"):
            if key not in item:
                raise ZonesFileError(f"{where}: '{key}' is missing")
        points, streams = item["points"], item.get("streams", [])
        if not isinstance(points, list) or not all(isinstance(p, list) for p in points):
            raise ZonesFileError(f"{where}: points must be a list of [x, y] pairs")
        if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
            raise ZonesFileError(f"{where}: streams must be a list of stream names")
        try:
            zones.append(Zone(item["name"], tuple(tuple(p) for p in points), tuple(streams)))
        except (ValueError, TypeError) as exc:
            raise ZonesFileError(f"{where}: {exc}") from None
    names = [z.name for z in zones]
    for name in names:
        if names.count(name) > 1:
            raise ZonesFileError(f"{path}: zone {name!r} is defined twice")
    return tuple(zones)


# -- snapshots -------------------------------------------------------------------------------
_GREEN = {"rgb": (0, 255, 0), "bgr": (0, 255, 0), "rgba": (0, 255, 0, 255), "bgra": (0, 255, 0, 255)}
_GREEN_YUV = (150, 44, 21)  # BT.601 full range, as JPEG's YCbCr
_COLOURSPACES = {"rgb": "RGB", "bgr": "BGR", "rgba": "RGBA", "bgra": "BGRA"}


def _rect(plane: np.ndarray, box: tuple[int, int, int, int], thickness: int, value: Any) -> None:
    """Draw the outline of ``box`` (x0, y0, x1, y1, exclusive, already clipped) into ``plane``."""
    x0, y0, x1, y1 = box
    t = max(1, min(thickness, (x1 - x0 + 1) // 2, (y1 - y0 + 1) // 2))
    plane[y0:y0 + t, x0:x1] = value
    plane[max(y0, y1 - t):y1, x0:x1] = value
    plane[y0:y1, x0:x0 + t] = value
    plane[y0:y1, max(x0, x1 - t):x1] = value


def _clip_box(box: Any, width: int, height: int, scale: int = 1) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(v) / scale for v in box)
    w, h = width // scale, height // scale
    xa, ya = min(max(int(math.floor(x0)), 0), w - 1), min(max(int(math.floor(y0)), 0), h - 1)
    xb, yb = min(max(int(math.ceil(x1)), xa + 1), w), min(max(int(math.ceil(y1)), ya + 1), h)
    return xa, ya, xb, yb


def encode_snapshot(fmt: str, width: int, height: int, data: Any, box: Any, quality: int = 80) -> bytes:
    """The frame ``data`` (``fmt``, ``width`` × ``height``, as the server received it) as a JPEG
    with ``box`` (``[x0, y0, x1, y1]`` in frame pixels) drawn in green. The frame is copied
    first: ``data`` is never written to."""
    import simplejpeg

    thickness = max(2, round(min(width, height) / 160))
    if fmt == "jpeg":
        img = simplejpeg.decode_jpeg(bytes(data) if not isinstance(data, bytes) else data, colorspace="RGB",
                                     fastdct=True, fastupsample=True)
        height, width = img.shape[:2]
        _rect(img, _clip_box(box, width, height), thickness, _GREEN["rgb"])
        return simplejpeg.encode_jpeg(img, quality=quality, colorspace="RGB", colorsubsampling="420", fastdct=True)
    buf = np.frombuffer(data, np.uint8)
    if fmt in _COLOURSPACES:
        img = buf.reshape(height, width, len(_GREEN[fmt])).copy()
        _rect(img, _clip_box(box, width, height), thickness, _GREEN[fmt])
        return simplejpeg.encode_jpeg(img, quality=quality, colorspace=_COLOURSPACES[fmt], colorsubsampling="420",
                                      fastdct=True)
    if fmt == "gray":
        img = buf.reshape(height, width, 1).copy()
        _rect(img, _clip_box(box, width, height), thickness, 255)
        return simplejpeg.encode_jpeg(img, quality=quality, colorspace="GRAY", fastdct=True)
    if fmt in ("i420", "nv12"):
        n, cw, ch = width * height, width // 2, height // 2
        y = buf[:n].reshape(height, width).copy()
        if fmt == "i420":
            u = buf[n:n + cw * ch].reshape(ch, cw).copy()
            v = buf[n + cw * ch:n + 2 * cw * ch].reshape(ch, cw).copy()
        else:
            uv = buf[n:n + 2 * cw * ch].reshape(ch, cw, 2)
            u, v = np.ascontiguousarray(uv[..., 0]), np.ascontiguousarray(uv[..., 1])
        _rect(y, _clip_box(box, width, height), thickness, _GREEN_YUV[0])
        half = _clip_box(box, width, height, scale=2)
        _rect(u, half, max(1, thickness // 2), _GREEN_YUV[1])
        _rect(v, half, max(1, thickness // 2), _GREEN_YUV[2])
        return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality, fastdct=True)
    raise ValueError(f"no snapshot of a {fmt!r} frame")


class SnapshotStore:
    """Snapshots by object id, bounded per stream by count and bytes; the least recently
    updated goes first when a new one does not fit."""

    def __init__(self, max_count: int = 50, max_bytes: int = 16 * 2**20) -> None:
        self.max_count, self.max_bytes = max_count, max_bytes
        self._streams: dict[str, collections.OrderedDict[str, bytes]] = {}
        self._bytes: collections.Counter[str] = collections.Counter()
        self._stream_of: dict[str, str] = {}
        self.evicted = 0

    def put(self, stream: str, object_id: str, jpeg: bytes) -> bool:
        """Keep ``jpeg`` as ``object_id``'s snapshot; False when it cannot fit at all."""
        if self.max_count <= 0 or len(jpeg) > self.max_bytes:
            return False
        store = self._streams.setdefault(stream, collections.OrderedDict())
        old = store.pop(object_id, None)
        if old is not None:
            self._bytes[stream] -= len(old)
        store[object_id] = jpeg
        self._stream_of[object_id] = stream
        self._bytes[stream] += len(jpeg)
        while len(store) > self.max_count or self._bytes[stream] > self.max_bytes:
            gone, data = store.popitem(last=False)
            self._bytes[stream] -= len(data)
            del self._stream_of[gone]
            self.evicted += 1
        return True

    def get(self, object_id: str) -> bytes | None:
        stream = self._stream_of.get(object_id)
        return None if stream is None else self._streams[stream].get(object_id)

    def __contains__(self, object_id: str) -> bool:
        return object_id in self._stream_of

    def count(self, stream: str) -> int:
        return len(self._streams.get(stream, ()))

    def nbytes(self, stream: str) -> int:
        return self._bytes[stream]


# -- the engine ------------------------------------------------------------------------------
@dataclass
class EventsConfig:
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    update_interval: float = 1.0  # seconds between two updates of one object for a better score alone
    snapshot_interval: float = 1.0  # seconds between two snapshots of one object
    snapshot_count: int = 50  # snapshots kept per stream (0: none taken)
    snapshot_bytes: int = 16 * 2**20  # bytes of snapshots kept per stream
    snapshot_quality: int = 80
    recent: int = 100  # events kept for recent()
    # streams that are no camera: a door's requests (DeepStack's HTTP API, Frigate's detector) are
    # stills from anywhere, or frames Frigate tracks itself; their detections make no objects
    skip_streams: frozenset[str] = frozenset()

    @classmethod
    def from_options(cls, opts: Any, skip_streams: frozenset[str] = frozenset()) -> EventsConfig:
        """From :class:`~streampi.serving.options.ServerOptions` (reads the zones file);
        ``skip_streams``: the doors' streams, whose requests make no objects."""
        zones = load_zones(opts.events_zones) if opts.events_zones else ()
        tracker = TrackerConfig(min_hits=opts.events_min_hits, max_missed=opts.events_max_missed,
                                max_missed_s=opts.events_max_missed_s,
                                thresholds=parse_thresholds(opts.events_min_score), zones=zones)
        return cls(tracker=tracker, snapshot_count=opts.events_snapshot_count,
                   snapshot_bytes=opts.events_snapshot_bytes, skip_streams=skip_streams)


class _Object:
    """The engine's side of a confirmed track: its id, what was last published, its snapshot."""

    __slots__ = ("track", "id", "stream", "frame_time", "published", "last_event", "dirty", "snap_time",
                 "snap_pending", "snap_score", "snap_gen", "snap_kept")

    def __init__(self, track: Track, stream: str, frame_time: float) -> None:
        self.track, self.stream, self.id = track, stream, f"{stream}-{track.number}"
        self.frame_time = frame_time
        self.published: dict | None = None
        self.last_event = -math.inf  # monotonic time of its last event
        self.dirty = False  # a better score not yet told (rate limit)
        self.snap_time = -math.inf  # monotonic time of its last snapshot
        self.snap_pending: tuple | None = None  # (fmt, width, height, bytes, box, score): a better frame
        self.snap_score = -math.inf  # the score of the snapshot kept
        self.snap_gen = 0  # snapshots asked for so far: the generation of the latest
        self.snap_kept = 0  # the generation of the snapshot in the store (an older one never replaces it)


class _Encode:
    """A snapshot for the encoder thread: a copy of the frame, its object and generation."""

    __slots__ = ("obj", "gen", "args", "score", "nbytes", "future", "done")

    def __init__(self, obj: _Object, gen: int, args: tuple, score: float, nbytes: int) -> None:
        self.obj, self.gen, self.args, self.score, self.nbytes = obj, gen, args, score, nbytes
        self.future: concurrent.futures.Future | None = None
        self.done = False  # its result was taken (or given up) on the loop


class EventsEngine:
    """Trackers per stream, events and snapshots (see the module's docstring). Everything runs
    on the server's event loop but the JPEG encoding of snapshots, which is done in one thread
    once the engine is attached to a server (inline, synchronously, when it is used alone);
    ``publish(topic, payload)`` is the server's :meth:`publish`.

    What in-process doors use (the contract of docs/integrations.md): :meth:`add_callback`,
    :meth:`snapshot`, :meth:`recent`, :meth:`objects`."""

    def __init__(self, config: EventsConfig | None = None, publish: Callable[[str, dict], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, stats: collections.Counter | None = None) -> None:
        self.config = config or EventsConfig()
        self._publish = publish
        self._clock = clock
        self.stats: collections.Counter[str] = stats if stats is not None else collections.Counter()
        self.trackers: dict[str, Tracker] = {}
        self._numbers = iter(range(1, 2**62))  # ids are unique per server run, across streams
        self._objects: dict[int, _Object] = {}  # track number -> object, while it lives
        self._last_frame: dict[str, float] = {}  # stream -> receive time of the last frame tracked
        self._callbacks: list[Callable[[dict], None]] = []
        self._recent: collections.deque[dict] = collections.deque(maxlen=self.config.recent)
        self.store = SnapshotStore(self.config.snapshot_count, self.config.snapshot_bytes)
        self._pending_bytes: collections.Counter[str] = collections.Counter()
        self._encode = encode_snapshot
        self._loop: Any = None
        self._threaded = False  # snapshots are encoded in the thread (attached, not closing)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._encodes: dict[_Encode, None] = {}  # in flight, in the order given to the thread
        self._encoding: collections.Counter[str] = collections.Counter()  # in flight per stream
        self._timer: Any = None
        self._remove_listener: Callable[[], None] | None = None
        self.closed = False

    @classmethod
    def from_options(cls, opts: Any, skip_streams: frozenset[str] = frozenset()) -> EventsEngine:
        return cls(EventsConfig.from_options(opts, skip_streams))

    # -- wiring ------------------------------------------------------------------------------
    def attach(self, server: Any) -> None:
        """Listen to ``server``'s answers, speak on its results socket, look at the clock."""
        self._publish = server.publish
        self.stats = server.stats
        self._loop = server._loop
        self._threaded = True
        self._remove_listener = server.add_listener(self.on_result)
        self._timer = self._loop.call_later(TICK_S, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        try:
            self.tick(time.time())
        except Exception:
            self.stats["errors.events"] += 1
            log.exception("the events engine's tick failed")
        self._timer = self._loop.call_later(TICK_S, self._tick)

    def close(self, wait: float | None = None) -> None:
        """Publish the snapshots being encoded (waiting ``wait`` seconds in all for them,
        default :data:`CLOSE_WAIT_S`), end every object (``end`` events, their last snapshots,
        encoded here), then stop. Called by the server on its loop at shutdown, after every
        frame is answered and before the socket closes."""
        if self.closed:
            return
        if self._remove_listener is not None:
            self._remove_listener()
        self._drain(CLOSE_WAIT_S if wait is None else wait)
        self._threaded = False
        for stream, tracker in list(self.trackers.items()):
            self._apply(stream, tracker.end_all(), None, None)
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _drain(self, wait: float) -> None:
        """Take the results of the encodes in flight here (close() runs on the loop: their
        call_soon_threadsafe callbacks would come too late); past ``wait`` seconds in all, the
        rest are given up, counted (``events.snapshots_abandoned``) and logged."""
        deadline = time.monotonic() + wait
        abandoned = 0
        for job in list(self._encodes):
            assert job.future is not None
            try:
                job.future.exception(timeout=max(0.0, deadline - time.monotonic()))
            except concurrent.futures.TimeoutError:
                job.future.cancel()
                self._release(job)
                abandoned += 1
                continue
            except concurrent.futures.CancelledError:
                pass
            self._land(job)
        if abandoned:
            self.stats["events.snapshots_abandoned"] += abandoned
            log.warning("%d snapshot(s) still being encoded after %.1f s at shutdown: not published", abandoned, wait)

    # -- the contract's in-process API ----------------------------------------------------------
    def add_callback(self, fn: Callable[[dict], None]) -> Callable[[], None]:
        """Call ``fn(event)`` on the server's loop for every event (the dict published); it must
        not block. An exception it raises is counted (``errors.event_callback``) and logged.
        Returns a function that removes it."""
        self._callbacks.append(fn)

        def remove() -> None:
            if fn in self._callbacks:
                self._callbacks.remove(fn)
        return remove

    def snapshot(self, object_id: str) -> bytes | None:
        """The JPEG of that object's best frame with its box drawn, while the store keeps it."""
        return self.store.get(object_id)

    def recent(self, limit: int = 20) -> list[dict]:
        """The latest events, newest first."""
        return list(reversed(self._recent))[:max(0, limit)]

    def objects(self, stream: str | None = None) -> list[dict]:
        """The objects tracked now (confirmed, not ended), as the events' objects."""
        return [self._describe(obj) for obj in self._objects.values()
                if stream is None or obj.stream == stream]

    # -- results in ----------------------------------------------------------------------------
    def on_result(self, result: dict, frame: Any) -> None:
        """The server's listener: an ``ok`` answer with ``detections`` moves its stream's tracker."""
        if self.closed or frame is None or not result.get("ok"):
            return
        detections = result.get("detections")
        if detections is None:
            return
        stream = result["stream"]
        if stream in self.config.skip_streams:
            return
        t = float(getattr(frame, "recv", None) or time.time())
        if t < self._last_frame.get(stream, -math.inf):
            self.stats["events.stale_frames"] += 1  # answered after a newer frame of its stream: skipped
            return
        self._last_frame[stream] = t
        tracker = self.trackers.get(stream)
        if tracker is None:
            tracker = self.trackers[stream] = Tracker(self.config.tracker, stream, numbers=self._numbers)
        ts = result.get("ts")
        step = tracker.update(detections, t, ts if isinstance(ts, (int, float)) and not isinstance(ts, bool) else None)
        if step:
            self._apply(stream, step, frame, t)

    def tick(self, now: float) -> None:
        """What the clock decides: objects of streams gone silent end, updates held back by the
        rate limit go out, better frames held back get their snapshot."""
        mono = self._clock()
        for stream, tracker in list(self.trackers.items()):
            step = tracker.expire(now)
            if step:
                self._apply(stream, step, None, None)
            if not tracker.tracks and now - self._last_frame.get(stream, now) > tracker.config.max_missed_s:
                del self.trackers[stream]  # a stream long silent: forget it (its ids are never reused)
                self._last_frame.pop(stream, None)
        for obj in list(self._objects.values()):
            if obj.snap_pending is not None and mono - obj.snap_time >= self.config.snapshot_interval:
                self._snapshot_pending(obj, mono)
            if obj.dirty and mono - obj.last_event >= self.config.update_interval:
                self._event("update", obj)

    def _apply(self, stream: str, step: Step, frame: Any, t: float | None) -> None:
        """Turn what a tracker decided into events and snapshots; ``frame`` and ``t`` are the
        frame that caused it (None: the clock or the shutdown did)."""
        mono = self._clock()
        for track in step.new:
            obj = self._objects[track.number] = _Object(track, stream, t if t is not None else track.last_seen)
            if frame is not None:
                self._take_snapshot(obj, frame, mono)
            self._event("new", obj)
            if obj.snap_pending is None and obj.id in self.store:
                self._publish_snapshot(obj)
        for track, changes in step.changed.items():
            obj = self._objects.get(track.number)
            if obj is None:
                continue
            if t is not None:
                obj.frame_time = t
            if "score" in changes and frame is not None:
                self._take_snapshot(obj, frame, mono, publish=True)
            if changes - {"score"} or mono - obj.last_event >= self.config.update_interval:
                self._event("update", obj)
            else:
                obj.dirty = True
        for track in step.ended:
            obj = self._objects.get(track.number)
            if obj is None:
                continue
            if obj.snap_pending is not None:  # a better frame since its last snapshot
                self._snapshot_pending(obj, mono, force=True)
            self._event("end", obj)
            del self._objects[track.number]

    # -- snapshots -----------------------------------------------------------------------------
    def _take_snapshot(self, obj: _Object, frame: Any, mono: float, publish: bool = False) -> None:
        """The object's best frame is this one: encode it now (in the thread: a copy of it), or
        (rate limit, or the thread has enough of its stream's) copy it for later. ``publish``:
        publish it once kept (the new object's is published after its event, when inline)."""
        if self.config.snapshot_count <= 0:
            return
        track = obj.track
        nbytes = len(frame.data) if not hasattr(frame.data, "nbytes") else frame.data.nbytes
        if mono - obj.snap_time >= self.config.snapshot_interval and \
                (not self._threaded or self._encoding[obj.stream] < ENCODES_PER_STREAM):
            self._drop_pending(obj)
            if not self._threaded:
                self._store(obj, frame.fmt, frame.width, frame.height, frame.data, track.box, track.score, mono,
                            publish)
            elif self._pending_bytes[obj.stream] + nbytes > PENDING_BYTES_PER_STREAM:
                self.stats["events.snapshots_skipped"] += 1  # keeps its earlier snapshot
            else:  # the frame's pixels are the server's only during this call: the thread gets a copy
                self._submit(obj, (frame.fmt, frame.width, frame.height, bytes(frame.data), track.box.copy()),
                             track.score, nbytes, mono, counted=False)
            return
        self._drop_pending(obj)
        if self._pending_bytes[obj.stream] + nbytes > PENDING_BYTES_PER_STREAM:
            self.stats["events.snapshots_skipped"] += 1  # keeps its earlier snapshot
            return
        obj.snap_pending = (frame.fmt, frame.width, frame.height, bytes(frame.data), track.box.copy(), track.score)
        self._pending_bytes[obj.stream] += nbytes

    def _drop_pending(self, obj: _Object) -> None:
        if obj.snap_pending is not None:
            self._pending_bytes[obj.stream] -= len(obj.snap_pending[3])
            obj.snap_pending = None

    def _snapshot_pending(self, obj: _Object, mono: float, force: bool = False) -> None:
        """Encode the better frame held back; when the thread has enough of its stream's, it
        waits for the next tick, unless ``force`` (the object ends: its copy goes to the thread,
        counted in the stream's bytes until encoded)."""
        if self._threaded and not force and self._encoding[obj.stream] >= ENCODES_PER_STREAM:
            return
        fmt, width, height, data, box, score = obj.snap_pending  # type: ignore[misc]
        if self._threaded:
            obj.snap_pending = None  # its bytes stay counted until the encode is done
            self._submit(obj, (fmt, width, height, data, box), score, len(data), mono, counted=True)
            return
        self._drop_pending(obj)
        self._store(obj, fmt, width, height, data, box, score, mono, publish=True)

    def _store(self, obj: _Object, fmt: str, width: int, height: int, data: Any, box: Any, score: float,
               mono: float, publish: bool) -> None:
        """Encode here, on the caller's thread, and keep it."""
        obj.snap_time = mono
        obj.snap_gen += 1
        t0 = time.perf_counter()
        try:
            jpeg = self._encode(fmt, width, height, data, box, self.config.snapshot_quality)
        except Exception as exc:
            self._encode_failed(obj, fmt, exc)
            return
        self._keep(obj, obj.snap_gen, jpeg, score, int((time.perf_counter() - t0) * 1e6), publish)

    def _submit(self, obj: _Object, args: tuple, score: float, nbytes: int, mono: float, counted: bool) -> None:
        """Give a copy of the frame to the encoder thread; its result comes back on the loop.
        ``counted``: its bytes are in the stream's already (a held-back frame)."""
        obj.snap_time = mono
        obj.snap_gen += 1
        job = _Encode(obj, obj.snap_gen, args, score, nbytes)
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                                   thread_name_prefix="streampi-snapshots")
        self._encoding[obj.stream] += 1
        if not counted:
            self._pending_bytes[obj.stream] += nbytes
        self._encodes[job] = None
        job.future = self._executor.submit(self._encode_timed, job)
        job.future.add_done_callback(lambda _future: self._encoded(job))

    def _encode_timed(self, job: _Encode) -> tuple[bytes, int]:
        """In the encoder thread: the JPEG and how long it took (µs)."""
        t0 = time.perf_counter()
        jpeg = self._encode(*job.args, self.config.snapshot_quality)
        return jpeg, int((time.perf_counter() - t0) * 1e6)

    def _encoded(self, job: _Encode) -> None:
        """In the encoder thread (or wherever the future ends): back to the loop."""
        try:
            self._loop.call_soon_threadsafe(self._land, job)
        except RuntimeError:  # the loop is closed: the server has stopped (close() gave it up)
            pass

    def _release(self, job: _Encode) -> None:
        job.done = True
        self._encodes.pop(job, None)
        self._encoding[job.obj.stream] -= 1
        self._pending_bytes[job.obj.stream] -= job.nbytes

    def _land(self, job: _Encode) -> None:
        """On the loop: an encode is over; keep and publish its snapshot, as inline. An object
        whose events said it had no snapshot gets an ``update`` saying it has one now."""
        if job.done:
            return
        self._release(job)
        future = job.future
        assert future is not None
        if future.cancelled():
            return
        obj, exc = job.obj, future.exception()
        if exc is not None:
            self._encode_failed(obj, job.args[0], exc)
            return
        jpeg, us = future.result()
        had = obj.id in self.store
        if self._keep(obj, job.gen, jpeg, job.score, us, publish=True) and not had \
                and self._objects.get(obj.track.number) is obj and obj.published is not None \
                and not obj.published["has_snapshot"]:
            self._event("update", obj)

    def _encode_failed(self, obj: _Object, fmt: str, exc: BaseException) -> None:
        self.stats["errors.snapshot"] += 1
        log.error("the snapshot of object %s (a %s frame) could not be encoded", obj.id, fmt,
                  exc_info=(type(exc), exc, exc.__traceback__))

    def _keep(self, obj: _Object, gen: int, jpeg: bytes, score: float, us: int, publish: bool) -> bool:
        """Put an encoded snapshot in the store (unless a newer one of its object is there)."""
        self.stats["events.snapshots"] += 1
        self.stats["events.snapshot_us"] += us
        if gen < obj.snap_kept:
            self.stats["events.snapshots_stale"] += 1  # an older frame's encode ended after a newer one's
            return False
        if not self.store.put(obj.stream, obj.id, jpeg):
            self.stats["events.snapshots_too_big"] += 1
            return False
        obj.snap_kept, obj.snap_score = gen, score
        if publish:
            self._publish_snapshot(obj)
        return True

    def _publish_snapshot(self, obj: _Object) -> None:
        jpeg = self.store.get(obj.id)
        if jpeg is None or self._publish is None:
            return
        try:
            self._publish(SNAPSHOTS_TOPIC, {"id": obj.id, "stream": obj.stream, "label": obj.track.label,
                                            "score": float(obj.snap_score), "jpeg": jpeg})
        except Exception:
            self.stats["errors.events_publish"] += 1
            log.exception("publishing the snapshot of %s failed", obj.id)

    # -- events out ----------------------------------------------------------------------------
    def _describe(self, obj: _Object) -> dict:
        tr = obj.track
        return {"id": obj.id, "stream": obj.stream, "label": tr.label, "score": float(tr.score),
                "top_score": float(tr.top_score), "box": [float(v) for v in tr.box], "zones": list(tr.zones),
                "entered_zones": list(tr.entered_zones), "start_time": float(tr.first_seen),
                "end_time": float(tr.last_seen) if tr.ended else None, "has_snapshot": obj.id in self.store,
                "frame_time": float(obj.frame_time)}

    def _event(self, kind: str, obj: _Object) -> None:
        after = self._describe(obj)
        event = {"type": kind, "before": obj.published, "after": after}
        obj.published, obj.last_event, obj.dirty = after, self._clock(), False
        self.stats[f"events.{kind}"] += 1
        self._recent.append(event)
        if self._publish is not None:
            try:
                self._publish(EVENTS_TOPIC, event)
            except Exception:
                self.stats["errors.events_publish"] += 1
                log.exception("publishing a %s event of %s failed", kind, obj.id)
        for fn in tuple(self._callbacks):
            try:
                fn(event)
            except Exception:
                self.stats["errors.event_callback"] += 1
                log.exception("an events callback failed on the %s event of %s", kind, obj.id)
