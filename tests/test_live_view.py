"""The live view (``streampi serve --http``: the page ``/``, ``/api/stats``, the MJPEG pictures,
``latest.jpg``), over real HTTP on loopback against a real server running the bundled detector,
fed by real producers: aiohttp's client and a raw socket that reads slowly ask, headless
Chromium (driven over the DevTools protocol) opens the page."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
import simplejpeg

from streampi.client import Producer
from streampi.integrations.live_view import MAX_VIEWERS, track_ids, view_size
from streampi.serving import ServerOptions
from streampi.synthetic import ScenesGenerator
from streampi.testing import ServerThread

VIEW_FPS = 5.0
VIEW_WIDTH = 320
SOURCE = (640, 480)  # the cameras' frames: pictures are VIEW_WIDTH wide
POOL = 6  # frames each camera cycles through: frame seq % POOL
CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent


def encode(rgb: np.ndarray, fmt: str) -> tuple[object, dict]:
    """``rgb`` as a frame of wire format ``fmt``: (payload, send's keywords)."""
    h, w = rgb.shape[:2]
    if fmt == "rgb":
        return rgb, {"fmt": "rgb"}
    if fmt == "bgr":
        return np.ascontiguousarray(rgb[..., ::-1]), {"fmt": "bgr"}
    if fmt == "rgba":
        return np.ascontiguousarray(np.dstack([rgb, np.full((h, w), 255, np.uint8)])), {"fmt": "rgba"}
    if fmt == "gray":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), {"fmt": "gray"}
    if fmt in ("i420", "nv12"):
        i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)
        if fmt == "nv12":
            y, u, v = i420[:w * h], i420[w * h:w * h * 5 // 4], i420[w * h * 5 // 4:]
            i420 = np.concatenate([y, np.stack([u, v], -1).reshape(-1)])
        return i420.tobytes(), {"fmt": fmt, "width": w, "height": h}
    if fmt == "jpeg":
        return simplejpeg.encode_jpeg(rgb, quality=92), {"fmt": "jpeg"}
    raise ValueError(fmt)


def reference(rgb: np.ndarray, fmt: str) -> np.ndarray:
    """What a picture of ``rgb`` sent as ``fmt`` shows (before the boxes), at the view's size."""
    if fmt == "gray":
        rgb = np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, 2)
    w, h = view_size(rgb.shape[1], rgb.shape[0], VIEW_WIDTH)
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)


FORMATS = ("rgb", "bgr", "rgba", "gray", "i420", "nv12", "jpeg")
STREAMS = {**{f"cam-{fmt}": fmt for fmt in FORMATS}, "cam-still": "rgb"}
SCENES = [ScenesGenerator(seed=2401 + k).scene(*SOURCE)[0] for k in range(POOL)]


class Cameras:
    """One producer per stream, each sending its POOL frames in turn at ``rate`` frames/s until
    stopped (bounded: ``seconds`` at most); a ``still`` stream sends the first scene every time
    (objects that stay where they are: what a tracker follows)."""

    def __init__(self, st, streams: dict[str, str], rate: float = 15.0, seconds: float = 240.0,
                 still: tuple[str, ...] = ()) -> None:
        self.st, self.rate, self.seconds = st, rate, seconds
        self.payloads = {name: [encode(SCENES[0] if name in still else s, fmt) for s in SCENES]
                         for name, fmt in streams.items()}
        self.sent = dict.fromkeys(streams, 0)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(name,), daemon=True) for name in streams]

    def _run(self, name: str) -> None:
        with Producer(self.st.frames, stream=name) as prod:
            t0 = time.monotonic()
            for n in range(int(self.rate * self.seconds)):
                if self._stop.is_set() or time.monotonic() - t0 > self.seconds:
                    break
                payload, kw = self.payloads[name][n % POOL]
                prod.send(payload, seq=n, **kw)
                self.sent[name] += 1
                self._stop.wait(max(0.0, t0 + (n + 1) / self.rate - time.monotonic()))

    def __enter__(self) -> Cameras:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


@pytest.fixture(scope="module")
def st():
    opts = ServerOptions(workers=1, http="127.0.0.1:0", view_fps=VIEW_FPS, view_width=VIEW_WIDTH)
    with ServerThread("shapes_detector", opts) as server:
        with Cameras(server, STREAMS, still=("cam-still",)):
            wait_for(lambda: len(live(server).streams) == len(STREAMS))
            yield server
    assert server.server.stats["received"] == server.server.stats["answered"]


def live(st):
    return st.server.doors[0].live


def base(st) -> str:
    return st.server.bound["http"]


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {predicate}")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes, dict]:
    async with session.get(url) as r:
        return r.status, await r.read(), dict(r.headers)


def median_error(picture: np.ndarray, want: np.ndarray) -> float:
    """The median pixel's mean absolute difference (the boxes drawn are not the median pixel)."""
    return float(np.median(np.abs(picture.astype(int) - want).mean(-1)))


def test_each_wire_format_becomes_a_picture_of_the_view_width_in_the_right_colours(st):
    async def go():
        async with aiohttp.ClientSession() as s:
            return {fmt: await get(s, f"{base(st)}/api/cam-{fmt}/latest.jpg") for fmt in FORMATS}

    for fmt, (status, body, headers) in run(go()).items():
        assert status == 200 and headers["Content-Type"] == "image/jpeg", (fmt, status, body[:200])
        picture = simplejpeg.decode_jpeg(body)
        seq = int(headers["X-Frame-Seq"])
        want = reference(SCENES[seq % POOL], fmt)
        assert picture.shape == want.shape == (240, 320, 3), fmt
        # JPEG's losses, the conversion's rounding: small; a frame of another seq or swapped channels: large
        others = [median_error(picture, reference(SCENES[k], fmt)) for k in range(POOL) if k != seq % POOL]
        err = median_error(picture, want)
        assert err < 4 and min(others) > 2 * err + 2, (fmt, err, others)
        if fmt != "gray":
            assert median_error(picture, want[..., ::-1]) > 8, fmt


def test_the_pictures_show_the_detections_boxes(st):
    """Where a detection's box is, the picture has the box's colour along its edge."""
    async def go():
        async with aiohttp.ClientSession() as s:
            return await get(s, f"{base(st)}/api/cam-rgb/latest.jpg")

    for _ in range(10):  # a picture whose frame has a detection (most have one)
        status, body, headers = run(go())
        assert status == 200
        picture = simplejpeg.decode_jpeg(body).astype(int)
        plain = reference(SCENES[int(headers["X-Frame-Seq"]) % POOL], "rgb").astype(int)
        diff = np.abs(picture - plain).sum(-1) > 90  # pixels drawn on
        if diff.mean() > 0.002:
            ys, xs = np.nonzero(diff)
            # drawn pixels form lines: whole rows or columns of a box, not scattered noise
            assert np.bincount(ys).max() > 20 or np.bincount(xs).max() > 20
            return
    raise AssertionError("no picture had a box drawn on it")


def read_parts(raw: bytes) -> tuple[list[tuple[dict, bytes]], bytes]:
    """Whole MJPEG parts in ``raw`` (after the response's headers): ([(headers, jpeg)], rest)."""
    parts = []
    while True:
        start = raw.find(b"--frame\r\n")
        head_end = raw.find(b"\r\n\r\n", start)
        if start < 0 or head_end < 0:
            return parts, raw
        headers = dict(line.split(": ", 1) for line in raw[start + 9:head_end].decode().split("\r\n"))
        n = int(headers["Content-Length"])
        if len(raw) < head_end + 4 + n + 2:
            return parts, raw
        parts.append((headers, raw[head_end + 4:head_end + 4 + n]))
        raw = raw[head_end + 4 + n + 2:]


async def mjpeg_parts(session: aiohttp.ClientSession, url: str, count: int) -> list[tuple[int, bytes]]:
    async with session.get(url) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        reader = aiohttp.MultipartReader.from_response(r)
        out = []
        while len(out) < count:
            part = await reader.next()
            out.append((int(part.headers["X-Frame-Seq"]), bytes(await part.read())))
        return out


def test_the_mjpeg_view_sends_new_pictures_at_most_view_fps_and_nothing_is_kept_unwatched(st):
    view = live(st).streams["cam-i420"]
    before = view.pictures
    time.sleep(1.0)  # nobody watches: frames come, no picture is made
    assert view.pictures == before and view.jpeg is None and view.viewers == 0

    async def go():
        async with aiohttp.ClientSession() as s:
            t0 = time.monotonic()
            parts = await mjpeg_parts(s, f"{base(st)}/api/cam-i420/live.mjpg", 8)
            return parts, time.monotonic() - t0

    made_before = view.pictures
    parts, seconds = run(go())
    seqs = [seq for seq, _ in parts]
    assert seqs == sorted(set(seqs)), seqs  # each picture newer than the last
    for _, body in parts:
        assert simplejpeg.decode_jpeg(body).shape == (240, 320, 3)
    # at most --view-fps: the camera sends 15 frames/s, the pictures skip frames
    assert view.pictures - made_before <= VIEW_FPS * seconds + 2, (view.pictures - made_before, seconds)
    assert seqs[-1] - seqs[0] >= 2 * (len(seqs) - 1)
    wait_for(lambda: view.viewers == 0)
    assert view.jpeg is None and view.waiting is None  # the last viewer left: nothing kept
    wait_for(lambda: live(st).copied_bytes == 0)


def test_frames_past_the_copy_budget_make_no_picture(st, monkeypatch):
    import streampi.integrations.live_view as live_view

    monkeypatch.setattr(live_view, "MAX_COPIED_BYTES", 640 * 480 * 3 - 1)  # less than one cam-rgb frame
    skipped = st.server.stats["view.frames_skipped"]

    async def go():
        async with aiohttp.ClientSession() as s:
            return await get(s, f"{base(st)}/api/cam-rgb/latest.jpg"), await get(s, f"{base(st)}/api/cam-gray/latest.jpg")

    (status, body, _), (gray_status, _, _) = run(go())
    assert status == 503 and "no picture of stream 'cam-rgb'" in json.loads(body)["error"]
    assert st.server.stats["view.frames_skipped"] > skipped
    assert gray_status == 200  # a gray frame (a third of the bytes) fits
    assert live(st).copied_bytes == 0


def test_a_picture_is_encoded_once_whatever_the_number_of_viewers(st):
    view = live(st).streams["cam-rgb"]

    async def go():
        async with aiohttp.ClientSession() as s:
            return await asyncio.gather(*[mjpeg_parts(s, f"{base(st)}/api/cam-rgb/live.mjpg", 6) for _ in range(4)])

    made_before = view.pictures
    streams = run(go())
    made = view.pictures - made_before
    by_seq: dict[int, set[bytes]] = {}
    for parts in streams:
        for seq, body in parts:
            by_seq.setdefault(seq, set()).add(body)
    assert all(len(bodies) == 1 for bodies in by_seq.values())  # every viewer got the same bytes
    assert made <= len(by_seq) + 4, (made, len(by_seq))  # not one encode per viewer


def test_a_slow_viewer_gets_the_newest_picture_not_a_backlog(st):
    """A client that stops reading for a while (its link is slow) then reads again: after what
    its link held, the next picture is the newest the server made, not the ones in between."""
    view = live(st).streams["cam-rgb"]
    host, port = base(st).removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a link that holds little
    sock.settimeout(30)
    sock.connect((host, int(port)))
    try:
        sock.sendall(f"GET /api/cam-rgb/live.mjpg HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += sock.recv(65536)
        head, raw = raw.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        parts: list = []
        while len(parts) < 2:
            raw += sock.recv(65536)
            new, raw = read_parts(raw)
            parts += new
        made = view.pictures
        wait_for(lambda: view.pictures >= made + 10)  # the link holds the viewer back ...
        newest = view.picture_seq  # ... while ten pictures are made
        got: list = []
        rest = raw
        for _ in range(10_000):  # bounded
            rest += sock.recv(65536)
            new, rest = read_parts(rest)
            got += new
            if any(int(h["X-Frame-Seq"]) >= newest for h, _ in got):
                break
    finally:
        sock.close()
    seqs = [int(h["X-Frame-Seq"]) for h, _ in got]
    # what the link held (a picture or two), then the newest: not the ten made in between
    assert seqs and seqs[-1] >= newest and len(seqs) <= 4, (seqs, newest)
    for _, body in got:
        simplejpeg.decode_jpeg(body)
    wait_for(lambda: view.viewers == 0)


def test_ffmpeg_reads_the_mjpeg_view_as_a_video_of_changing_pictures(st):
    """ffmpeg's mpjpeg demuxer (what VLC's and ffplay's users meet) takes the stream as it is."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed (Debian package ffmpeg; .ci/run installs it)")
    out = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", f"{base(st)}/api/cam-nv12/live.mjpg",
                          "-frames:v", "4", "-vsync", "passthrough", "-f", "framemd5", "-"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Input #0, mpjpeg" in out.stderr and "320x240" in out.stderr
    hashes = [line.split(",")[-1].strip() for line in out.stdout.splitlines() if line.startswith("0,")]
    assert len(hashes) == 4 and all(a != b for a, b in zip(hashes, hashes[1:])), out.stdout  # each a new one


def test_stats_count_each_stream_and_say_when_events_are_off(st):
    async def go():
        async with aiohttp.ClientSession() as s:
            first = await (await s.get(f"{base(st)}/api/stats")).json()
            await asyncio.sleep(1.5)
            return first, await (await s.get(f"{base(st)}/api/stats")).json()

    first, second = run(go())
    assert set(second["streams"]) == set(STREAMS)
    for name, s in second["streams"].items():
        f = first["streams"][name]
        assert s["frames_in"] > f["frames_in"] and s["processed"] > f["processed"], name
        assert s["frames_in"] == s["processed"] + s["dropped"] + s["errors"]
        assert s["fps_in"] > 0 and s["infer_p50_ms"] > 0 and s["detections_per_s"] >= 0
    assert second["healthy"] and [w["state"] for w in second["workers"]] == ["ready"]
    assert second["model"]["name"] == "shapes_detector"
    assert second["view"] == {"fps": VIEW_FPS, "width": VIEW_WIDTH, "viewers": 0, "max_viewers": MAX_VIEWERS}
    if getattr(st.server, "events", None) is None:
        assert second["events_enabled"] is False and second["events"] is None


def test_bad_requests_are_clear_errors(st):
    async def go():
        async with aiohttp.ClientSession() as s:
            return [await get(s, base(st) + path) for path in (
                "/api/nowhere/latest.jpg", "/api/nowhere/live.mjpg", "/api/events/cam-rgb-1/snapshot.jpg",
                "/static/../http.py", "/static/nothing.js", "/api/" + "x" * 200 + "/latest.jpg")]

    answers = run(go())
    assert [status for status, _, _ in answers] == [404, 404, 404, 404, 404, 400]
    for _status, body, _ in answers:
        answer = json.loads(body)
        assert answer["success"] is False and answer["error"], answer
    assert "no stream 'nowhere'" in json.loads(answers[0][1])["error"]
    if getattr(st.server, "events", None) is None:
        assert "events are off" in json.loads(answers[2][1])["error"]


def test_viewers_are_bounded_and_each_one_that_leaves_frees_its_place(st):
    async def go():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            held = [await s.get(f"{base(st)}/api/cam-gray/live.mjpg") for _ in range(MAX_VIEWERS)]
            try:
                assert [r.status for r in held] == [200] * MAX_VIEWERS
                status, body, _ = await get(s, f"{base(st)}/api/cam-gray/live.mjpg")
                assert status == 503 and "viewers already" in json.loads(body)["error"]
            finally:
                for r in held:
                    r.close()
            for _ in range(200):  # bounded: the server sees them go at its next write
                if live(st).viewers == 0:
                    break
                await asyncio.sleep(0.1)
            return await mjpeg_parts(s, f"{base(st)}/api/cam-gray/live.mjpg", 1)

    assert len(run(go())) == 1


def test_the_page_and_its_files_are_served_from_the_package(st):
    async def go():
        async with aiohttp.ClientSession() as s:
            return [await get(s, base(st) + path) for path in ("/", "/static/live.js", "/static/live.css")]

    (s1, page, h1), (s2, js, h2), (s3, css, h3) = run(go())
    assert (s1, s2, s3) == (200, 200, 200)
    assert h1["Content-Type"].startswith("text/html") and b'src="static/live.js"' in page
    assert h2["Content-Type"].startswith("text/javascript") and b"live.mjpg" in js
    assert b"http://" not in page + js + css and b"https://" not in page + js + css  # nothing from the internet


def test_track_ids_go_to_the_detection_each_object_is():
    dets = [{"label": "circle", "box": [0, 0, 10, 10]}, {"label": "square", "box": [20, 20, 30, 30]},
            {"label": "circle", "box": [50, 50, 60, 60]}]
    objects = [{"id": "cam-3", "label": "circle", "box": [51, 51, 61, 61]},
               {"id": "cam-1", "label": "square", "box": [0, 0, 10, 10]},  # another label: not the first
               {"id": "cam-2", "label": "circle", "box": [1, 0, 11, 10]}]
    assert track_ids(dets, objects) == ["cam-2", None, "cam-3"]


# -- a real browser ---------------------------------------------------------------------------------
class DevTools:
    """Chromium's DevTools protocol over its websocket (docs: chromedevtools.github.io/devtools-protocol):
    ``{"id", "method", "params"}`` in, ``{"id", "result"}`` or ``{"id", "error"}`` back, events between."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive(timeout=30)).data)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]

    async def value(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")


#: the page's first live picture, drawn on a canvas: (naturalWidth, naturalHeight, a digest of its pixels)
PICTURE = """(() => {
  const img = document.querySelector('img.live');
  if (!img || !img.complete || !img.naturalWidth) return null;
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height).data; let h = 0;
  for (let i = 0; i < px.length; i += 7) h = (h * 31 + px[i]) >>> 0;
  return [img.naturalWidth, img.naturalHeight, h];
})()"""
FRAMES_IN = "[...document.querySelectorAll('dd[data-counter=frames_in]')].map(e => Number(e.textContent))"


@pytest.fixture
def chromium(tmp_path):
    if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
        pytest.skip("headless Chromium is not installed (Debian package chromium; .ci/run installs it)")
    profile = tmp_path / "profile"
    proc = subprocess.Popen([CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"), "--headless",
                             "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "--window-size=1280,900", "--no-first-run", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = profile / "DevToolsActivePort"  # Chromium writes its port and browser path there
        wait_for(lambda: active.exists() and len(active.read_text().split()) >= 2 or proc.poll() is not None, 60)
        assert proc.poll() is None, "chromium exited at start"
        yield int(active.read_text().split()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_headless_chromium_shows_live_pictures_that_change_and_counters_that_move(st, chromium, tmp_path):
    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{chromium}/json/list") as r:
                page = next(t for t in await r.json() if t["type"] == "page")
            async with s.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                dev = DevTools(ws)
                await dev.call("Page.enable")
                await dev.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1,
                               mobile=False)
                await dev.call("Page.navigate", url=base(st) + "/")
                pictures, counters = [], []
                for _ in range(600):  # bounded: 60 s at most
                    picture = await dev.value(PICTURE)
                    frames_in = await dev.value(FRAMES_IN)
                    if picture is not None and frames_in:
                        if not pictures or picture != pictures[-1]:
                            pictures.append(picture)
                        if not counters or frames_in != counters[-1]:
                            counters.append(frames_in)
                    if len(pictures) >= 3 and len(counters) >= 3:
                        break
                    await asyncio.sleep(0.1)
                streams = await dev.value("[...document.querySelectorAll('.stream')].map(e => e.dataset.stream)")
                health = await dev.value("document.getElementById('health').textContent")
                live_imgs = await dev.value("document.querySelectorAll('img.live').length")
                shot = await dev.call("Page.captureScreenshot", format="png")
                return pictures, counters, streams, health, live_imgs, base64.b64decode(shot["data"])

    pictures, counters, streams, health, live_imgs, png = run(go())
    assert len(pictures) >= 3, pictures  # the MJPEG picture decodes and changes
    assert all(p[0] == 320 and p[1] == 240 for p in pictures)
    assert len(counters) >= 3 and counters[-1][0] > counters[0][0]  # the counters move
    assert sorted(streams) == sorted(STREAMS)
    assert health == "healthy" and live_imgs == 4  # the first four streams are watched
    assert png.startswith(b"\x89PNG") and cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (900, 1280)
    (tmp_path / "live-view.png").write_bytes(png)
    if os.environ.get("STREAMPI_UPDATE_SCREENSHOT"):  # docs/img/live-view.png is made by this test
        (ROOT / "docs" / "img" / "live-view.png").write_bytes(png)


# -- the events (server.events, the events contract) ------------------------------------------------
class ContractEvents:
    """The in-process face of the events contract (docs: the events' fields), standing in while a
    server has no events of its own: each stream's objects are the detections its cameras' frames
    got, one object per scene and detection (id ``<stream>-<scene>-<n>``), learnt from the answers."""

    def __init__(self, server) -> None:
        self.objs: dict[tuple[str, int, int], dict] = {}
        self.scenes_seen: set[tuple[str, int]] = set()
        self.snapshots = {"cam-rgb-0-0": simplejpeg.encode_jpeg(SCENES[0][:64, :64].copy())}
        self.remove = server.add_listener(self._answer)

    def _answer(self, result: dict, frame) -> None:
        if result.get("ok") and str(result.get("stream", "")).startswith("cam-"):
            scene = result["seq"] % POOL
            self.scenes_seen.add((result["stream"], scene))
            for n, d in enumerate(result["detections"]):
                oid = f"{result['stream']}-{scene}-{n}"
                self.objs[(result["stream"], scene, n)] = {
                    "id": oid, "stream": result["stream"], "label": d["label"], "score": d["score"],
                    "top_score": d["score"], "box": list(d["box"]), "zones": [], "entered_zones": [],
                    "start_time": 0.0, "end_time": None, "has_snapshot": oid in self.snapshots, "frame_time": 0.0}

    def objects(self, stream=None) -> list[dict]:
        return [o for o in list(self.objs.values()) if stream is None or o["stream"] == stream]

    def recent(self, limit: int = 20) -> list[dict]:
        shown = sorted(self.objects(), key=lambda o: not o["has_snapshot"])[:limit]
        return [{"type": "new", "before": None, "after": o} for o in shown]

    def snapshot(self, object_id: str) -> bytes | None:
        return self.snapshots.get(object_id)

    def add_callback(self, fn):
        return lambda: None


def test_track_ids_events_and_snapshots_come_from_the_servers_events(st):
    server = st.server
    own = getattr(server, "events", None)
    events = own or ContractEvents(server)
    if own is None:
        server.events = events
    # the stand-in's ids say which scene a picture shows; a tracker follows the objects that stay
    stream = "cam-rgb" if own is None else "cam-still"
    try:
        if own is None:  # the stand-in knows every scene's objects
            wait_for(lambda: all(("cam-rgb", k) in events.scenes_seen for k in range(POOL)))

        async def go():
            async with aiohttp.ClientSession() as s, s.get(f"{base(st)}/api/{stream}/live.mjpg") as r:
                reader = aiohttp.MultipartReader.from_response(r)
                for _ in range(100):  # bounded: 20 s of pictures; until an object is tracked and has a snapshot
                    part = await reader.next()
                    await part.read()
                    stats = await (await s.get(f"{base(st)}/api/stats")).json()  # while the picture is kept
                    picture = stats["streams"][stream]["picture"]
                    if picture and any("#" in t for t in picture["labels"]) and \
                            any(e["after"].get("has_snapshot") for e in stats["events"] or []):
                        break
                snaps = [await get(s, f"{base(st)}/api/events/{e['after']['id']}/snapshot.jpg")
                         for e in stats["events"] if e["after"]["has_snapshot"]][:3]
                missing = await get(s, f"{base(st)}/api/events/no-such-object/snapshot.jpg")
                return picture, stats, snaps, missing

        picture, stats, snaps, missing = run(go())
    finally:
        if own is None:
            events.remove()
            server.events = None
    assert stats["events_enabled"] is True and stats["events"] and len(stats["events"]) <= 20
    assert all(e["type"] in ("new", "update", "end") and e["after"]["id"] for e in stats["events"])
    ids = [text.rsplit("#", 1)[1] for text in picture["labels"] if "#" in text]
    assert ids, picture  # the picture names the tracked objects it shows
    if own is None:  # the stand-in's ids say which scene: the picture's own
        scene = picture["seq"] % POOL
        assert all(i.startswith(f"cam-rgb-{scene}-") for i in ids), (ids, scene)
    assert snaps and all(status == 200 and simplejpeg.decode_jpeg(body).size for status, body, _ in snaps)
    assert missing[0] == 404 and "no snapshot" in json.loads(missing[1])["error"]


def test_a_viewer_watching_when_the_server_stops_sees_its_stream_end_and_the_server_stops():
    opts = ServerOptions(workers=1, http="127.0.0.1:0")
    ended = threading.Event()
    with ServerThread("shapes_detector", opts) as server, Cameras(server, {"cam": "rgb"}, rate=10):
        wait_for(lambda: "cam" in server.server.doors[0].live.streams)
        host, port = server.server.bound["http"].removeprefix("http://").rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        sock.settimeout(30)
        sock.sendall(f"GET /api/cam/live.mjpg HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        received = bytearray()

        def read() -> None:
            for _ in range(100_000):  # bounded
                try:
                    chunk = sock.recv(65536)
                except (TimeoutError, OSError):
                    return
                if not chunk:
                    ended.set()
                    return
                received.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_for(lambda: received.count(b"--frame\r\n") >= 2)
    reader.join(30)
    sock.close()
    assert ended.is_set()  # the stream ended (EOF), not cut by a timeout
    assert server.server.stats["received"] == server.server.stats["answered"]


def test_with_an_api_key_the_page_and_its_routes_need_it_and_a_viewer_that_stops_reading_is_let_go():
    key, timeout = "view-key", 1.5
    opts = ServerOptions(workers=1, http="127.0.0.1:0", http_api_key=key, http_timeout=timeout)
    with ServerThread("shapes_detector", opts) as server, Cameras(server, {"cam": "rgb"}, rate=10):
        wait_for(lambda: "cam" in server.server.doors[0].live.streams)
        url = server.server.bound["http"]

        async def go():
            async with aiohttp.ClientSession() as s:
                paths = ["/", "/api/stats", "/api/cam/latest.jpg", "/api/cam/live.mjpg"]
                without = [await get(s, url + p) for p in paths]
                wrong = [await get(s, url + p + "?api_key=nope") for p in paths]
                right = [await get(s, url + p + f"?api_key={key}") for p in paths[:3]]
                parts = await mjpeg_parts(s, f"{url}/api/cam/live.mjpg?api_key={key}", 1)
                return without, wrong, right, parts

        without, wrong, right, parts = run(go())
        live_view = server.server.doors[0].live
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.socket() as sock:  # a viewer that never reads
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            sock.sendall(f"GET /api/cam/live.mjpg?api_key={key} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            wait_for(lambda: server.server.stats["view.slow_viewers_closed"] == 1)
            wait_for(lambda: live_view.viewers == 0)  # its place is free again
            sock.settimeout(30)
            received = 0
            for _ in range(100_000):  # bounded: what the kernel held, then the end
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += len(chunk)
    assert [a[0] for a in without + wrong] == [401] * 8
    assert "api_key" in json.loads(without[0][1])["error"]
    assert [a[0] for a in right] == [200] * 3 and len(parts) == 1


@pytest.mark.parametrize("field, value, says", [("view_fps", 0, "view-fps must be > 0"),
                                                ("view_fps", 31, "view-fps must be <= 30"),
                                                ("view_width", 63, "view-width must be >= 64")])
def test_the_view_options_are_bounded_and_name_their_flag(field, value, says):
    with pytest.raises(ValueError, match=says):
        ServerOptions(**{field: value}).check()
