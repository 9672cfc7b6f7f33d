"""Events and snapshots (streampi.events): a real server with the bundled shapes_detector on
MovingScenes, whose tracks are known; the Events client on the real results socket; the
engine's bounds, rate limits and failures driven through its listener."""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import re
import threading
import time

import numpy as np
import pytest
import simplejpeg

from streampi import events as events_module
from streampi import protocol
from streampi.client import Events, Producer, Subscriber
from streampi.events import (
    EventsConfig,
    EventsEngine,
    SnapshotStore,
    ZonesFileError,
    encode_snapshot,
    load_zones,
    parse_thresholds,
)
from streampi.serving import Server, ServerOptions
from streampi.synthetic import MovingScenes
from streampi.testing import ServerThread, wait_subscribed
from streampi.tracking import TrackerConfig

FPS = 15.0
MIDDLE = """
[[zones]]
name = "middle"
points = [[120, 0], [200, 0], [200, 240], [120, 240]]

[[zones]]
name = "elsewhere"
streams = ["another-camera"]
points = [[0, 0], [320, 0], [320, 240], [0, 240]]
"""


def wait_events_subscribed(ev: Events, st: ServerThread, timeout: float = 10.0) -> None:
    """PUB drops what is sent before a subscription arrives: publish a probe event until it comes."""
    probe = {"type": "end", "before": None, "after": {"id": "probe", "stream": "cam"}}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st._loop.call_soon_threadsafe(st.server.publish, "_events", probe)
        try:
            if ev.recv(timeout=0.1)["after"]["id"] == "probe":
                break
        except TimeoutError:
            continue
    else:
        raise TimeoutError("the events client never received the probe")
    try:
        while True:
            ev.recv(timeout=0.2)
    except TimeoutError:
        pass


def drain(ev: Events | Subscriber, quiet: float = 1.0, limit: int = 10_000) -> list[dict]:
    got = []
    for _ in range(limit):
        try:
            msg = ev.recv(timeout=quiet)
        except TimeoutError:
            break
        if "type" in msg and msg.get("after", {}).get("id") != "probe":
            got.append(msg)
    return got


def send_scene(st: ServerThread, frames, stream: str = "cam", fmt: str = "rgb") -> list[dict]:
    """Every frame, time-stamped as a 15 fps camera would; returns the answers, in order."""
    with Subscriber(st.results, streams=[stream]) as sub, Producer(st.frames, stream=stream) as prod:
        wait_subscribed(sub, st.frames)
        base = time.time()
        for i, img in enumerate(frames):
            prod.send(simplejpeg.encode_jpeg(img) if fmt == "jpeg" else img, fmt=fmt, ts=base + i / FPS)
        answers = [sub.recv(timeout=30) for _ in frames]
    return sorted(answers, key=lambda r: r["seq"])


def by_type(events: list[dict]) -> dict[str, list[dict]]:
    out = collections.defaultdict(list)
    for e in events:
        out[e["type"]].append(e)
    return out


def test_a_moving_scene_gives_one_new_and_one_end_per_object(tmp_path):
    """Six shapes cross the view in turn: six objects, each with one new and one end (ended
    by frames without it), ids stable, every one entering the zone in the middle; their
    snapshots decode at the frame's size; in-process callbacks see what subscribers see; a
    subscriber of every stream gets results only."""
    zones = tmp_path / "zones.toml"
    zones.write_text(MIDDLE)
    scenes = MovingScenes(seed=3, objects=6)
    frames = [img for img, _ in scenes.frames()]
    opts = ServerOptions(workers=1, policy="queue", events=True, events_zones=str(zones), events_max_missed=5)
    seen_in_process, live_at_new = [], {}
    with ServerThread("shapes_detector", opts) as st:
        engine = st.server.events

        def callback(event):
            seen_in_process.append(event)
            if event["type"] == "new":
                live_at_new[event["after"]["id"]] = [o["id"] for o in engine.objects("cam")]

        st._loop.call_soon_threadsafe(engine.add_callback, callback)
        with Events(st.results, snapshots=True) as ev, Subscriber(st.results) as everything:
            wait_events_subscribed(ev, st)
            wait_subscribed(everything, st.frames)
            answers = send_scene(st, frames)
            results_of_all = drain_results(everything)
            st.stop()  # (nothing is left to end: the last shape has left the view)
            got = drain(ev)
        recent = engine.recent(limit=1000)
        kept = {e["after"]["id"]: engine.snapshot(e["after"]["id"]) for e in seen_in_process}
        stats = dict(st.stats)
    assert all(r["ok"] for r in answers) and stats["received"] == stats["answered"]
    events = [m for m in got if m["type"] != "snapshot"]
    snapshots = [m for m in got if m["type"] == "snapshot"]
    kinds = by_type(events)
    assert len(kinds["new"]) == len(kinds["end"]) == len(scenes.tracks) == 6, collections.Counter(
        (e["type"], e["after"]["id"]) for e in events)
    ids = [e["after"]["id"] for e in kinds["new"]]
    assert len(set(ids)) == 6 and all(re.fullmatch(r"cam-\d+", i) for i in ids)
    assert sorted(e["after"]["id"] for e in kinds["end"]) == sorted(ids)
    for oid in ids:  # new first, end last, nothing after the end
        own = [e["type"] for e in events if e["after"]["id"] == oid]
        assert own[0] == "new" and own[-1] == "end" and own.count("new") == own.count("end") == 1, own
    for e in kinds["new"]:
        assert e["before"] is None and e["after"]["end_time"] is None
    for e in events[1:]:
        if e["type"] != "new":
            assert e["before"]["id"] == e["after"]["id"]
    for e in kinds["end"]:
        obj = e["after"]
        assert obj["entered_zones"] == ["middle"], obj  # "elsewhere" is another camera's
        assert obj["zones"] == [] and obj["end_time"] >= obj["start_time"] and obj["has_snapshot"]
        assert set(obj) == {"id", "stream", "label", "score", "top_score", "box", "zones", "entered_zones",
                            "start_time", "end_time", "has_snapshot", "frame_time"}
        assert obj["top_score"] >= obj["score"] > 0 and len(obj["box"]) == 4
    # the labels the objects end with are the shapes that crossed (in the order they appeared)
    assert sorted(e["after"]["label"] for e in kinds["end"]) == sorted(t.name for t in scenes.tracks)
    assert snapshots and {s["id"] for s in snapshots} == set(ids)
    for s in snapshots:
        img = simplejpeg.decode_jpeg(s["jpeg"])
        assert img.shape == (240, 320, 3) and s["stream"] == "cam" and 0 < s["score"] <= 1
    for oid in ids:
        assert simplejpeg.decode_jpeg(kept[oid]).shape == (240, 320, 3)
    assert [e for e in seen_in_process] == events  # the same dicts, in the same order
    assert recent == list(reversed(events))
    assert all(oid in live for oid, live in live_at_new.items()) and len(live_at_new) == 6
    assert results_of_all and all(not r["stream"].startswith("_") or r["stream"] == "_errors"
                                  for r in results_of_all)
    assert {r["stream"] for r in results_of_all} >= {"cam"}


def drain_results(sub: Subscriber, quiet: float = 0.5) -> list[dict]:
    out = []
    for _ in range(10_000):
        try:
            out.append(sub.recv(timeout=quiet))
        except TimeoutError:
            break
    return out


def test_objects_of_a_stream_that_stops_sending_end_by_time_and_the_rest_at_shutdown():
    scenes = MovingScenes(seed=5, objects=6)
    frames = [img for img, _ in scenes.frames()]
    opts = ServerOptions(workers=1, policy="queue", events=True, events_max_missed_s=0.5)
    with ServerThread("shapes_detector", opts) as st, Events(st.results, streams=["cam"]) as ev:
        wait_events_subscribed(ev, st)
        send_scene(st, frames[:20], stream="cam")  # shapes mid-way: then the camera goes silent
        by_time = by_type(drain(ev, quiet=3.0))
        assert by_time["new"] and len(by_time["end"]) == len(by_time["new"])
        assert st.server.events.objects() == []
    with ServerThread("shapes_detector", ServerOptions(workers=1, policy="queue", events=True)) as st, \
            Events(st.results, streams=["cam"]) as ev:
        wait_events_subscribed(ev, st)
        send_scene(st, frames[:20], stream="cam")
        live = st.server.events.objects("cam")
        st.stop()
        at_stop = by_type(drain(ev))
    assert len(live) == len(at_stop["new"]) >= 2
    assert sorted(e["after"]["id"] for e in at_stop["end"]) == sorted(o["id"] for o in live)


def test_a_failing_snapshot_never_costs_an_answer_nor_an_event():
    scenes = MovingScenes(seed=3, objects=3)
    frames = [img for img, _ in scenes.frames()]

    def broken_encoder(*args, **kwargs):
        raise RuntimeError("this encoder is broken")

    with ServerThread("shapes_detector", ServerOptions(workers=1, policy="queue", events=True)) as st, \
            Events(st.results, snapshots=True) as ev:
        st.server.events._encode = broken_encoder
        wait_events_subscribed(ev, st)
        answers = send_scene(st, frames, fmt="jpeg")
        st.stop()
        got = drain(ev)
        stats = dict(st.stats)
    assert len(answers) == len(frames) and all(r["ok"] for r in answers)
    assert stats["received"] == stats["answered"] and stats["errors.snapshot"] > 0
    kinds = by_type(got)
    assert len(kinds["new"]) == len(kinds["end"]) == 3 and not kinds["snapshot"]
    assert not any(e["after"]["has_snapshot"] for e in got)


def test_a_bad_zones_file_stops_the_server_before_it_binds(tmp_path):
    bad = tmp_path / "zones.toml"
    bad.write_text('[[zones]]\nname = "a"\npoints = [[0, 0], [1, 1]]\n')
    with pytest.raises(ZonesFileError, match=r"zones\.toml: zone 1: zone 'a' needs at least 3 points"):
        Server("shapes_detector", ServerOptions(events=True, events_zones=str(bad)))


@pytest.mark.parametrize(("name", "text", "message"), [
    ("z.yaml", "zones: []", r"TOML \(\.toml\) or JSON \(\.json\), got \.yaml"),
    ("z.toml", "[[zones]\nname=", r"not valid TOML"),
    ("z.json", '{"zones": [', r"not valid JSON"),
    ("z.json", '{"zone": []}', r"expected one key, 'zones'.*found: zone"),
    ("z.json", '{"zones": {"a": 1}}', r"'zones' must be a list of tables, got dict"),
    ("z.json", '{"zones": [{"points": [[0, 0], [1, 0], [1, 1]]}]}', r"zone 1: 'name' is missing"),
    ("z.json", '{"zones": [{"name": "a", "points": [[0, 0], [1, 0], [1, 1]], "colour": 1}]}',
     r"zone 1: unknown key\(s\) colour"),
    ("z.json", '{"zones": [{"name": "a", "points": [[0, 0], [1, 0], [1, "x"]]}]}', r"zone 1: .*\[x, y\]"),
    ("z.json", '{"zones": [{"name": "a", "points": [0, 1, 2]}]}', r"points must be a list of \[x, y\] pairs"),
    ("z.json", '{"zones": [{"name": "a", "points": [[0, 0], [1, 0], [1, 1]], "streams": "cam"}]}',
     r"streams must be a list"),
    ("z.json", '{"zones": [{"name": "a", "points": [[0, 0], [1, 0], [1, 1]]}, '
               '{"name": "a", "points": [[0, 0], [1, 0], [1, 1]]}]}', r"zone 'a' is defined twice"),
])
def test_bad_zones_files_get_clear_errors(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ZonesFileError, match=message) as info:
        load_zones(path)
    assert str(path) in str(info.value)


def test_zones_files_in_toml_and_json_say_the_same(tmp_path):
    (tmp_path / "z.toml").write_text(MIDDLE)
    (tmp_path / "z.json").write_text('{"zones": [{"name": "middle", "points": [[120, 0], [200, 0], [200, 240], '
                                     '[120, 240]]}, {"name": "elsewhere", "streams": ["another-camera"], '
                                     '"points": [[0, 0], [320, 0], [320, 240], [0, 240]]}]}')
    assert load_zones(tmp_path / "z.toml") == load_zones(tmp_path / "z.json")
    with pytest.raises(ZonesFileError, match="cannot read"):
        load_zones(tmp_path / "missing.json")


def test_thresholds_parse_or_say_why():
    assert parse_thresholds("person=0.6, car=0.5,*=0.4") == {"person": 0.6, "car": 0.5, "*": 0.4}
    assert parse_thresholds("0.3") == {"*": 0.3}
    for text, message in [("person=high", "not a number"), ("car=1.5", "between 0 and 1"), ("=0.5", "no label"),
                          ("a=0.1,a=0.2", "given twice")]:
        with pytest.raises(ValueError, match=message):
            parse_thresholds(text)
    with pytest.raises(ValueError, match="events-min-score: .*not a number"):
        ServerOptions(events=True, events_min_score="person=high").check()


def test_events_are_on_with_events_mqtt_or_http():
    assert not ServerOptions().events_enabled()
    assert ServerOptions(events=True).events_enabled() and ServerOptions(http="127.0.0.1:0").events_enabled()
    for kwargs in ({"events_zones": "zones.toml"}, {"events_min_score": "0.5"}):
        with pytest.raises(ValueError, match="has no effect without --events"):
            ServerOptions(**kwargs).check()
        ServerOptions(events=True, **kwargs).check()
        ServerOptions(http="127.0.0.1:0", **kwargs).check()


# -- snapshots from every wire format --------------------------------------------------------
def rgb_to_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 full range (JPEG's YCbCr), chroma averaged over 2×2 blocks."""
    f = rgb.astype(np.float64)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    u = 128 - 0.168736 * f[..., 0] - 0.331264 * f[..., 1] + 0.5 * f[..., 2]
    v = 128 + 0.5 * f[..., 0] - 0.418688 * f[..., 1] - 0.081312 * f[..., 2]
    h, w = y.shape
    sub = [c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (u, v)]
    return tuple(np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, *sub))


def wire(fmt: str, rgb: np.ndarray) -> bytes:
    if fmt == "rgb":
        return rgb.tobytes()
    if fmt == "bgr":
        return rgb[..., ::-1].tobytes()
    if fmt in ("rgba", "bgra"):
        c = rgb if fmt == "rgba" else rgb[..., ::-1]
        return np.concatenate([c, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2).tobytes()
    if fmt == "gray":
        return rgb_to_yuv(rgb)[0].tobytes()
    if fmt == "jpeg":
        return simplejpeg.encode_jpeg(rgb, quality=95)
    y, u, v = rgb_to_yuv(rgb)
    if fmt == "i420":
        return y.tobytes() + u.tobytes() + v.tobytes()
    uv = np.stack([u, v], axis=2)
    return y.tobytes() + uv.tobytes()  # nv12


@pytest.mark.parametrize("fmt", ["rgb", "bgr", "rgba", "bgra", "gray", "i420", "nv12", "jpeg"])
def test_a_snapshot_of_every_wire_format_shows_the_frame_with_its_box(fmt):
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[..., 2] = 200  # a blue frame
    rgb[40:80, 60:100] = (200, 40, 40)  # a red square
    data = wire(fmt, rgb)
    before = bytes(data)
    jpeg = encode_snapshot(fmt, 160, 120, memoryview(data), [58.0, 38.0, 102.0, 82.0])
    assert bytes(data) == before  # the received frame is never written to
    img = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    assert img.shape == (120, 160, 3)
    edge = img[38:40, 62:98].reshape(-1, 3).mean(axis=0)  # the box's top edge
    centre = img[55:65, 75:85].reshape(-1, 3).mean(axis=0)
    outside = img[5:15, 5:15].reshape(-1, 3).mean(axis=0)
    if fmt == "gray":
        assert edge[0] > 230 and abs(centre[0] - outside[0]) > 10
    else:
        assert edge[1] > 150 and edge[1] > edge[0] + 60 and edge[1] > edge[2] + 60, edge  # green
        assert centre[0] > 150 and centre[1] < 90, centre  # red, untouched
        assert outside[2] > 150 and outside[0] < 60, outside  # blue, untouched


def test_a_snapshot_of_a_box_at_the_frame_edge_and_beyond():
    rgb = np.zeros((48, 64, 3), np.uint8)
    for box in ([-10, -10, 5, 5], [60, 40, 80, 60], [0, 0, 64, 48], [10, 10, 10.5, 10.2]):
        assert simplejpeg.decode_jpeg(encode_snapshot("rgb", 64, 48, rgb.tobytes(), box)).shape == (48, 64, 3)
    with pytest.raises(ValueError, match="no snapshot of a 'yuyv' frame"):
        encode_snapshot("yuyv", 64, 48, b"", [0, 0, 1, 1])


# -- the engine, driven through its listener ---------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def frame_of(stream: str, seq: int, rgb: np.ndarray, recv: float) -> protocol.FrameMessage:
    h, w = rgb.shape[:2]
    return protocol.FrameMessage(stream, seq, "rgb", memoryview(rgb.tobytes()), w, h, recv=recv)


def result_of(stream: str, seq: int, dets: list[dict]) -> dict:
    return {"v": protocol.VERSION, "stream": stream, "seq": seq, "ok": True, "detections": dets}


def square(x: float, score: float) -> dict:
    return {"box": [x, 10.0, x + 30.0, 40.0], "score": score, "class": 1, "label": "square"}


def test_a_better_score_is_told_at_most_once_a_second_and_its_snapshot_too():
    clock, published = Clock(), []
    engine = EventsEngine(EventsConfig(tracker=TrackerConfig(min_hits=1)),
                          publish=lambda topic, payload: published.append((topic, payload)), clock=clock)
    rgb = np.zeros((60, 80, 3), np.uint8)
    t0 = 1000.0
    for k, score in enumerate([0.5, 0.6, 0.7, 0.8]):  # four better scores within 0.3 s
        clock.t += 0.1
        engine.on_result(result_of("cam", k, [square(10 + k, score)]), frame_of("cam", k, rgb, t0 + k / 10))
    kinds = [(topic, p.get("type")) for topic, p in published]
    assert kinds == [("_events", "new"), ("_snapshots", None)]  # the rest held back by the rate limit
    clock.t += 1.0
    engine.tick(t0 + 1.4)
    kinds = [(topic, p.get("type")) for topic, p in published]
    assert kinds[2:] == [("_snapshots", None), ("_events", "update")]
    assert published[-1][1]["after"]["top_score"] == 0.8 and published[2][1]["score"] == 0.8
    engine.close()
    assert published[-1][1]["type"] == "end" and len(published) == 5  # nothing changed since: no snapshot


def test_the_snapshot_store_is_bounded_per_stream_by_count_and_bytes():
    store = SnapshotStore(max_count=3, max_bytes=1000)
    for k in range(5):
        assert store.put("a", f"a-{k}", bytes(100))
    assert store.count("a") == 3 and [store.get(f"a-{k}") is not None for k in range(5)] == [False] * 2 + [True] * 3
    assert store.put("b", "b-0", bytes(600)) and store.put("b", "b-1", bytes(600))  # the first must go
    assert store.get("b-0") is None and store.nbytes("b") == 600 and store.count("a") == 3
    assert not store.put("b", "huge", bytes(1001)) and store.get("b-1") is not None
    assert store.put("a", "a-2", bytes(10)) and store.nbytes("a") == 210  # replaced, moved to the newest
    store.put("a", "a-5", bytes(10))
    assert store.get("a-3") is None and store.get("a-2") is not None and store.evicted == 4


def test_an_engine_with_a_small_store_evicts_and_says_so_in_its_events():
    engine = EventsEngine(EventsConfig(tracker=TrackerConfig(min_hits=1), snapshot_count=2), publish=None)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (60, 200, 3), np.uint8)
    ids = []
    for k in range(4):  # four objects side by side, one new each frame
        dets = [square(5 + 45 * j, 0.9) for j in range(k + 1)]
        engine.on_result(result_of("cam", k, dets), frame_of("cam", k, rgb, 1000.0 + k / 10))
        ids = [o["id"] for o in engine.objects("cam")]
    assert len(ids) == 4 and [engine.snapshot(i) is not None for i in ids] == [False, False, True, True]
    assert [o["has_snapshot"] for o in engine.objects("cam")] == [False, False, True, True]
    assert engine.store.evicted == 2


def test_results_that_are_not_detections_are_ignored():
    engine = EventsEngine(EventsConfig(tracker=TrackerConfig(min_hits=1)), publish=None)
    rgb = np.zeros((60, 80, 3), np.uint8)
    engine.on_result({"stream": "cam", "seq": 0, "ok": True, "top": [[1, "square", 0.9]]},
                     frame_of("cam", 0, rgb, 1.0))
    engine.on_result({"stream": "cam", "seq": 1, "ok": False, "error": {"code": "dropped"}},
                     frame_of("cam", 1, rgb, 1.1))
    engine.on_result(result_of("_errors", 2, [square(0, 0.9)]), None)
    assert engine.trackers == {} and engine.recent() == []
    engine.on_result(result_of("cam", 3, [square(0, 0.9)]), frame_of("cam", 3, rgb, 1.2))
    engine.on_result(result_of("cam", 2, [square(0, 0.9)]), frame_of("cam", 2, rgb, 1.15))  # late: skipped
    assert [e["type"] for e in engine.recent()] == ["new"] and engine.stats["events.stale_frames"] == 1



def test_the_doors_requests_make_no_objects():
    from streampi.serving.options import DOOR_STREAMS

    engine = EventsEngine.from_options(ServerOptions(events=True), frozenset(DOOR_STREAMS.values()))
    rgb = np.zeros((60, 80, 3), np.uint8)
    for k, stream in enumerate(("http", "frigate", "cam")):
        engine.on_result(result_of(stream, k, [square(0, 0.9)]), frame_of(stream, k, rgb, 1.0 + k))
        engine.on_result(result_of(stream, k + 10, [square(0, 0.9)]), frame_of(stream, k + 10, rgb, 1.5 + k))
    assert [o["stream"] for o in engine.objects()] == ["cam"]


def test_async_events_keep_their_streams_and_bring_snapshots_when_asked():
    import asyncio

    from streampi.client import AsyncEvents

    def obj(oid, stream):
        return {"id": oid, "stream": stream}

    async def main(st: ServerThread) -> list[dict]:
        async with AsyncEvents(st.results, streams=["cam"], snapshots=True) as ev:
            got: list[dict] = []
            for _ in range(100):  # until the subscription is through: the marker comes back
                st._loop.call_soon_threadsafe(st.server.publish, "_events",
                                              {"type": "end", "before": None, "after": obj("marker", "cam")})
                try:
                    if (await ev.recv(timeout=0.1))["after"]["id"] == "marker":
                        break
                except TimeoutError:
                    continue
            for topic, payload in [("_events", {"type": "new", "before": None, "after": obj("other-1", "other")}),
                                   ("_events", {"what": "not an event"}),
                                   ("_eventsx", {"type": "new", "before": None, "after": obj("cam-9", "cam")}),
                                   ("_snapshots", {"id": "other-1", "stream": "other", "label": "a", "score": 1.0,
                                                   "jpeg": b"x"}),
                                   ("_events", {"type": "new", "before": None, "after": obj("cam-1", "cam")}),
                                   ("_snapshots", {"id": "cam-1", "stream": "cam", "label": "a", "score": 0.5,
                                                   "jpeg": b"\xff\xd8"})]:
                st._loop.call_soon_threadsafe(st.server.publish, topic, payload)
            for _ in range(10):
                try:
                    msg = await ev.recv(timeout=1.0)
                except TimeoutError:
                    break
                if msg.get("after", {}).get("id") != "marker":
                    got.append(msg)
            return got

    with ServerThread("shapes_int8", ServerOptions(workers=1, events=True)) as st:
        got = asyncio.run(main(st))
    assert got == [{"type": "new", "before": None, "after": obj("cam-1", "cam")},
                   {"type": "snapshot", "id": "cam-1", "stream": "cam", "label": "a", "score": 0.5, "jpeg": b"\xff\xd8"}]


def test_serve_events_ends_every_object_at_sigterm_before_its_socket_closes(tmp_path):
    """`streampi serve --events` as a process: objects in view when SIGTERM comes each get
    their end event, received by a subscriber (published before the socket closed)."""
    import signal

    from streampi.testing import start_server

    zones = tmp_path / "zones.json"
    zones.write_text('{"zones": [{"name": "all", "points": [[0, 0], [320, 0], [320, 240], [0, 240]]}]}')
    frames = [img for img, _ in MovingScenes(seed=5, objects=6).frames()][:20]
    proc, info = start_server(["shapes_detector", "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--events", "--events-zones", str(zones), "--events-max-missed-s", "600",
                               "--policy", "queue", "--workers", "1"])
    try:
        # a Subscriber of _events (and _errors, which wait_subscribed hears: its subscriptions go in order)
        with Subscriber(info["publish"], streams=["_events"]) as ev, \
                Subscriber(info["publish"], streams=["cam"]) as sub:
            wait_subscribed(ev, info["bind"])
            wait_subscribed(sub, info["bind"])
            with Producer(info["credit_bind"], stream="cam") as prod:
                base = time.time()
                for i, img in enumerate(frames):
                    prod.send(img, ts=base + i / FPS)
            answers = [sub.recv(timeout=30) for _ in frames]
            before = by_type(drain(ev, quiet=1.0))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            after = by_type(drain(ev, quiet=1.0))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert all(r["ok"] for r in answers)
    assert len(before["new"]) >= 2 and not before["end"]
    assert sorted(e["after"]["id"] for e in after["end"]) == sorted(e["after"]["id"] for e in before["new"])
    assert all(e["after"]["entered_zones"] == ["all"] and e["after"]["end_time"] for e in after["end"])


def test_a_subscriber_gets_events_beside_results_only_when_asked():
    event = {"type": "new", "before": None, "after": {"id": "cam-1", "stream": "cam"}}
    with ServerThread("shapes_int8", ServerOptions(workers=1, events=True)) as st, \
            Subscriber(st.results, events=True) as every_and_events, Subscriber(st.results) as every, \
            Subscriber(st.results, streams=["cam"], events=True) as cam_and_events:
        for sub in (every_and_events, every, cam_and_events):
            wait_subscribed(sub, st.frames)
        for topic, payload in [("_events", event), ("_snapshots", {"id": "cam-1", "jpeg": b""}),
                               ("_other", {"n": 1})]:
            st._loop.call_soon_threadsafe(st.server.publish, topic, payload)
        with Producer(st.frames, stream="cam") as prod:
            prod.send(np.zeros((48, 64, 3), np.uint8))
        got = {name: drain_results(sub) for name, sub in
               (("every_and_events", every_and_events), ("every", every), ("cam_and_events", cam_and_events))}
    for name, msgs in got.items():
        kinds = [("event" if "type" in m else m["stream"]) for m in msgs]
        kinds = [k for k in kinds if k != "_errors"]  # (the other subscribers' probes)
        assert kinds == (["cam"] if name == "every" else ["event", "cam"]), (name, msgs)


# -- snapshots encoded off the loop ------------------------------------------------------------
def green_edge(jpeg: bytes, box) -> np.ndarray:
    """The mean colour of the top edge of ``box`` (2 px) in the decoded snapshot."""
    img = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    x0, y0, x1, _ = (int(round(float(v))) for v in box)
    return img[max(0, y0):y0 + 2, x0 + 3:x1 - 3].reshape(-1, 3).mean(axis=0)


def test_a_slow_snapshot_encode_holds_no_stream_back():
    """The first snapshot's encode is held until another stream's frames are answered: they
    are (it runs in the encoder thread, not on the loop; inline, the loop would wait for it
    until its bounded wait ran out, and it would say so). Then its snapshot comes, made from
    the copy of its frame: the frame's size, the box drawn; the object's ``new`` said no
    snapshot yet, and an ``update`` after the snapshot says it has one."""
    frames = [img for img, _ in MovingScenes(seed=3, objects=6).frames()][:30]
    started, released = threading.Event(), threading.Event()
    waited, calls, threads = [], [], set()

    def slow_encode(fmt, width, height, data, box, quality):
        threads.add(threading.current_thread().name)
        calls.append((fmt, width, height, [float(v) for v in box]))
        if not started.is_set():
            started.set()
            waited.append(released.wait(20))  # bounded: the test fails rather than hangs
        return encode_snapshot(fmt, width, height, data, box, quality)

    with ServerThread("shapes_detector", ServerOptions(workers=1, policy="queue", events=True)) as st, \
            Events(st.results, snapshots=True) as ev:
        engine = st.server.events
        engine._encode = slow_encode
        wait_events_subscribed(ev, st)
        try:
            answers = send_scene(st, frames)
            assert started.wait(10), "no snapshot was asked for"
            other = send_scene(st, [np.zeros((240, 320, 3), np.uint8)] * 5, stream="other")
        finally:
            released.set()
        got = drain(ev)  # the snapshots, now encoded
        st.stop()
        got += drain(ev)
        kept = {e["after"]["id"]: engine.snapshot(e["after"]["id"]) for e in got if e["type"] == "new"}
        stats = dict(st.stats)
    assert waited == [True]  # the other stream's answers came while the encode was held
    assert len(answers) == 30 and len(other) == 5 and all(r["ok"] for r in answers + other)
    assert stats["received"] == stats["answered"] and stats["events.snapshots"] == len(calls) >= 2
    assert threads and all(name.startswith("streampi-snapshots") for name in threads), threads
    snaps = [m for m in got if m["type"] == "snapshot"]
    assert snaps, got
    first = snaps[0]  # one thread: the first encode asked for is the first published
    fmt, width, height, box = calls[0]
    assert (fmt, width, height) == ("rgb", 320, 240)
    assert simplejpeg.decode_jpeg(first["jpeg"]).shape == (240, 320, 3)
    edge = green_edge(first["jpeg"], box)
    assert edge[1] > 150 and edge[1] > edge[0] + 60 and edge[1] > edge[2] + 60, edge  # the box, in green
    own = [m for m in got if m.get("id") == first["id"] or m.get("after", {}).get("id") == first["id"]]
    assert own[0]["type"] == "new" and not own[0]["after"]["has_snapshot"]
    told = next(k for k, m in enumerate(own) if m["type"] != "snapshot" and m["after"]["has_snapshot"])
    assert own[told]["type"] == "update" and not own[told]["before"]["has_snapshot"]
    assert own.index(first) < told  # the snapshot is out before an event says it is there
    for oid, jpeg in kept.items():
        assert jpeg is not None and simplejpeg.decode_jpeg(jpeg).shape == (240, 320, 3), oid


def test_an_encode_that_raises_is_counted_and_the_encoder_goes_on():
    """The first encode raises in the encoder thread: counted and logged; the thread and the
    server go on, and the later snapshots are made there."""
    frames = [img for img, _ in MovingScenes(seed=3, objects=3).frames()]
    calls = []

    def flaky_encode(*args):
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise RuntimeError("this frame cannot be encoded")
        return encode_snapshot(*args)

    with ServerThread("shapes_detector", ServerOptions(workers=1, policy="queue", events=True)) as st, \
            Events(st.results, snapshots=True) as ev:
        st.server.events._encode = flaky_encode
        wait_events_subscribed(ev, st)
        answers = send_scene(st, frames)
        st.stop()
        got = drain(ev)
        stats = dict(st.stats)
    assert len(answers) == len(frames) and all(r["ok"] for r in answers)
    assert stats["received"] == stats["answered"] and stats["errors.snapshot"] == 1
    assert stats["events.snapshots"] == len(calls) - 1 >= 2
    # the failing one and the next in the encoder thread (those of objects still in view at the stop: inline)
    assert all(name.startswith("streampi-snapshots") for name in calls[:2]), calls
    kinds = by_type(got)
    assert len(kinds["new"]) == len(kinds["end"]) == 3
    assert len(kinds["snapshot"]) >= 2 and all(simplejpeg.decode_jpeg(s["jpeg"]).shape == (240, 320, 3)
                                               for s in kinds["snapshot"])


def test_a_slow_encode_ending_after_a_newer_one_does_not_replace_it():
    """Two encoders (so that encodes can end out of order): the object's first snapshot is held
    while its better frame's is made and kept; when the first ends, it is counted as stale,
    neither kept nor published."""
    opts = ServerOptions(workers=1, events=True, events_min_hits=1)
    dark, bright = np.full((60, 80, 3), 30, np.uint8), np.full((60, 80, 3), 220, np.uint8)
    gate, waited = threading.Event(), []

    def encode(fmt, width, height, data, box, quality):
        if not waited:
            waited.append(None)
            waited[0] = gate.wait(20)  # bounded: the test fails rather than hangs
        return encode_snapshot(fmt, width, height, data, box, quality)

    with ServerThread("shapes_int8", opts) as st, Events(st.results, snapshots=True) as ev:
        engine = st.server.events
        engine.config.snapshot_interval = 0.0  # every better frame is encoded at once
        engine._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        engine._encode = encode
        wait_events_subscribed(ev, st)
        t0 = time.time()
        st.call(engine.on_result, result_of("cam", 0, [square(10, 0.5)]), frame_of("cam", 0, dark, t0))
        st.call(engine.on_result, result_of("cam", 1, [square(11, 0.8)]), frame_of("cam", 1, bright, t0 + 0.1))
        before = drain(ev, quiet=0.5)  # the better frame's snapshot, kept and published
        gate.set()
        for _ in range(100):  # bounded: until the first encode has ended
            if st.call(lambda: st.stats["events.snapshots"]) == 2:
                break
            time.sleep(0.05)
        kept = st.call(engine.snapshot, "cam-1")
        stats = dict(st.stats)
        st.stop()
        after = drain(ev)
    assert waited == [True]
    assert [(m["type"], m.get("score")) for m in before] == [("new", None), ("snapshot", 0.8), ("update", None)]
    assert not before[0]["after"]["has_snapshot"] and before[2]["after"]["has_snapshot"]
    assert simplejpeg.decode_jpeg(kept)[50, 70].mean() > 180  # the bright frame's, not the dark one's
    assert stats["events.snapshots"] == 2 and stats.get("events.snapshots_stale") == 1
    assert [m["type"] for m in after] == ["end"]  # the stale one is never published


def test_close_publishes_the_snapshots_being_encoded():
    """An encode still running when the server stops: close() waits for it and publishes its
    snapshot (and the update saying the object has it) before the end events."""
    frames = [img for img, _ in MovingScenes(seed=5, objects=6).frames()][:20]
    closing, waited, made = threading.Event(), [], []

    with ServerThread("shapes_detector", ServerOptions(workers=1, policy="queue", events=True)) as st, \
            Events(st.results, streams=["cam"], snapshots=True) as ev:
        engine = st.server.events
        close = engine.close

        def close_and_say(*args, **kwargs):
            closing.set()
            return close(*args, **kwargs)

        def encode_when_closing(*args):
            if not threading.current_thread().name.startswith("streampi-snapshots"):
                return encode_snapshot(*args)  # (the objects' last frames, encoded by close() itself)
            waited.append(closing.wait(20))  # bounded: the test fails rather than hangs
            made.append(encode_snapshot(*args))
            return made[-1]

        engine.close = close_and_say
        engine._encode = encode_when_closing
        wait_events_subscribed(ev, st)
        send_scene(st, frames)
        live = [o["id"] for o in st.call(engine.objects, "cam")]
        early = drain(ev, quiet=0.5)
        st.stop()
        late = drain(ev)
        stats = dict(st.stats)
    assert live and not [m for m in early if m["type"] == "snapshot"]  # every encode waits for close()
    assert waited and all(waited) and not stats.get("events.snapshots_abandoned")
    snaps = [m for m in late if m["type"] == "snapshot"]
    assert made and set(made) <= {m["jpeg"] for m in snaps}  # every one made in the thread was published
    assert {m["id"] for m in snaps} >= set(live)
    ends = [m for m in late if m["type"] == "end"]
    assert sorted(m["after"]["id"] for m in ends) == sorted(live) and all(m["after"]["has_snapshot"] for m in ends)
    for oid in live:  # its snapshot before its end
        own = [m["type"] for m in late if oid in (m.get("id"), m.get("after", {}).get("id"))]
        assert own.index("snapshot") < own.index("end"), own


def test_close_gives_up_an_encode_past_its_bound(monkeypatch, caplog):
    """An encode that outlasts close()'s bound is counted and logged, not waited for; every
    object still ends."""
    monkeypatch.setattr(events_module, "CLOSE_WAIT_S", 0.3)
    frames = [img for img, _ in MovingScenes(seed=5, objects=6).frames()][:20]
    gate = threading.Event()

    def stuck_encode(*args):
        if threading.current_thread().name.startswith("streampi-snapshots"):
            gate.wait(20)  # set after the server stopped (the last frames, encoded by close(), are not held)
        return encode_snapshot(*args)

    caplog.set_level(logging.WARNING, logger="streampi.events")
    try:
        with ServerThread("shapes_detector", ServerOptions(workers=1, policy="queue", events=True)) as st, \
                Events(st.results, streams=["cam"], snapshots=True) as ev:
            st.server.events._encode = stuck_encode
            wait_events_subscribed(ev, st)
            send_scene(st, frames)
            live = [o["id"] for o in st.call(st.server.events.objects, "cam")]
            in_flight = st.call(lambda: len(st.server.events._encodes))
            st.stop()
            got = drain(ev)
            stats = dict(st.stats)
    finally:
        gate.set()
    assert live and 1 <= in_flight <= 2  # (at most 2 per stream: the other objects' frames wait)
    assert stats["events.snapshots_abandoned"] == in_flight
    assert any("still being encoded" in r.getMessage() for r in caplog.records)
    assert sorted(m["after"]["id"] for m in got if m["type"] == "end") == sorted(live)


def test_at_most_two_encodes_per_stream_the_rest_wait_their_turn():
    """Five objects appear at once while the encoder is held: two of their snapshots go to the
    thread, three frames wait (copied); once it is free, the clock sends those too: five
    snapshots, none skipped, each object's picture its own."""
    opts = ServerOptions(workers=1, events=True, events_min_hits=1)
    rgb = np.zeros((60, 260, 3), np.uint8)
    gate, held = threading.Event(), []

    def encode(*args):
        if threading.current_thread().name.startswith("streampi-snapshots") and not held:
            held.append(gate.wait(20))  # bounded: the test fails rather than hangs
        return encode_snapshot(*args)

    with ServerThread("shapes_int8", opts) as st, Events(st.results, snapshots=True) as ev:
        engine = st.server.events
        engine._encode = encode
        wait_events_subscribed(ev, st)
        dets = [square(5 + 50 * j, 0.9) for j in range(5)]
        st.call(engine.on_result, result_of("cam", 0, dets), frame_of("cam", 0, rgb, time.time()))
        in_flight, waiting = st.call(lambda: (len(engine._encodes),
                                                  sum(o.snap_pending is not None for o in engine._objects.values())))
        gate.set()
        got = drain(ev, quiet=1.0)  # (the clock looks at the waiting frames every 0.25 s)
        stats = dict(st.stats)
        objects = st.call(engine.objects, "cam")
        kept = {o["id"]: st.call(engine.snapshot, o["id"]) for o in objects}
    assert held == [True] and (in_flight, waiting) == (2, 3)
    snaps = [m for m in got if m["type"] == "snapshot"]
    assert sorted(m["id"] for m in snaps) == sorted(kept) and len(kept) == 5
    assert stats["events.snapshots"] == 5 and not stats.get("events.snapshots_skipped")
    for o in objects:  # its own box drawn in its picture
        edge = green_edge(kept[o["id"]], o["box"])
        assert edge[1] > 150 and edge[1] > edge[0] + 60 and edge[1] > edge[2] + 60, (o, edge)
    updates = [m for m in got if m["type"] == "update"]
    assert sorted(m["after"]["id"] for m in updates) == sorted(kept) and all(m["after"]["has_snapshot"] for m in updates)
