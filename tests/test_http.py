"""The DeepStack / CodeProject.AI HTTP API (``streampi serve --http``), over real HTTP on
loopback against a real server: the ``deepstack-python`` package (the client Home Assistant's
DeepStack integrations use) and aiohttp's client ask, and each answer is checked against the
native ``Producer`` path's answer for the same image. Every bad request gets a clear 4xx (or
503 when busy) while a camera keeps streaming frames through the same server."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import threading
import time
import zlib

import aiohttp
import numpy as np
import pytest
import simplejpeg
from deepstack.core import DeepstackException, DeepstackObject, DeepstackScene
from PIL import Image

from streampi.client import Producer, Subscriber
from streampi.errors import StreampiError
from streampi.integrations.http import parse_address, read_api_key
from streampi.serving import ServerOptions
from streampi.synthetic import ScenesGenerator, ShapesGenerator
from streampi.testing import ServerThread, wait_subscribed

KEY = "s3cret-key"
MAX_UPLOAD = 1 << 20
MAX_REQUESTS = 4
MAX_CONNECTIONS = 32
TIMEOUT = 4.0


def jpeg(img: np.ndarray) -> bytes:
    return simplejpeg.encode_jpeg(img, quality=90)


def png(img: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="PNG")
    return out.getvalue()


SCENES = [ScenesGenerator(seed=2201).scene(640, 480) for _ in range(10)]


@pytest.fixture(scope="module")
def st():
    # the default policy is latest: the door must make its own stream a queue one, or concurrent
    # requests would replace each other ("dropped")
    opts = ServerOptions(workers=2, http="127.0.0.1:0", http_api_key=KEY, http_max_upload=MAX_UPLOAD,
                         http_max_requests=MAX_REQUESTS, http_max_connections=MAX_CONNECTIONS, http_timeout=TIMEOUT,
                         stream_policies={"native": "queue", "cam": "queue"})
    with ServerThread("shapes_detector", opts) as server:
        yield server
    assert server.server.stats["received"] == server.server.stats["answered"]


def base(st) -> str:
    return st.server.bound["http"]


def door(st):
    return st.server.doors[0]


def native(st, images: list[tuple[bytes | np.ndarray, str]]) -> list[dict]:
    """What the native path (Producer → server → Subscriber) answers for each image."""
    with Subscriber(st.results, streams=["native"]) as sub, Producer(st.frames, stream="native") as prod:
        wait_subscribed(sub, st.frames)
        seqs = {prod.send(data, fmt=fmt): k for k, (data, fmt) in enumerate(images)}
        out: dict[int, dict] = {}
        deadline = time.monotonic() + 60
        while len(out) < len(seqs):
            r = sub.recv(timeout=max(0.1, deadline - time.monotonic()))
            if r.get("stream") == "native" and r["seq"] in seqs:
                out[seqs[r["seq"]]] = r
    assert all(r["ok"] for r in out.values()), out
    return [out[k] for k in range(len(images))]


def as_deepstack(result: dict, min_confidence: float) -> list[dict]:
    """The native result as DeepStack's predictions: integer pixels, best first."""
    preds = [{"label": d["label"], "confidence": d["score"], "x_min": round(d["box"][0]),
              "y_min": round(d["box"][1]), "x_max": round(d["box"][2]), "y_max": round(d["box"][3])}
             for d in result["detections"] if d["score"] >= min_confidence]
    return sorted(preds, key=lambda p: -p["confidence"])


def same_predictions(got: list[dict], want: list[dict]) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if set(g) != {"label", "confidence", "x_min", "y_min", "x_max", "y_max"} or g["label"] != w["label"]:
            return False
        if abs(g["confidence"] - w["confidence"]) > 1e-6:
            return False
        if any(not isinstance(g[k], int) or g[k] != w[k] for k in ("x_min", "y_min", "x_max", "y_max")):
            return False
    return True


class Camera:
    """A producer streaming frames into the server while a test runs: every one must be answered ok."""

    def __init__(self, st) -> None:
        self.st, self.sent, self.results = st, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        frame = ShapesGenerator(seed=3).frame(320, 240)[0]
        with Subscriber(self.st.results, streams=["cam"]) as sub, Producer(self.st.frames, stream="cam") as prod:
            wait_subscribed(sub, self.st.frames)
            self._ready.set()
            for _ in range(2000):  # bounded
                if self._stop.is_set():
                    break
                prod.send(frame)
                self.sent += 1
                self.results.append(self._next(sub))

    @staticmethod
    def _next(sub: Subscriber) -> dict:
        while True:  # (other tests' probes come on _errors)
            r = sub.recv(timeout=30)
            if r.get("stream") == "cam":
                return r

    def __enter__(self) -> Camera:
        self._ready = threading.Event()
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive()
        assert self.sent > 0 and len(self.results) == self.sent
        assert all(r["ok"] for r in self.results), [r for r in self.results if not r["ok"]][:3]


# -- the clients users run -------------------------------------------------------------------
def test_deepstack_python_gets_the_native_paths_boxes_in_the_images_pixels(st):
    images = [jpeg(img) for img, _, _ in SCENES]
    want = native(st, [(data, "jpeg") for data in images])
    host, port = parse_address(base(st)[len("http://"):])
    client = DeepstackObject(ip=host, port=port, api_key=KEY, min_confidence=0.3, timeout=30)
    answers: list = [None] * len(images)

    def ask(first: int) -> None:  # MAX_REQUESTS clients at once (more would be answered 503): batched
        for k in range(first, len(images), MAX_REQUESTS):
            try:
                answers[k] = client.detect(images[k])
            except DeepstackException as exc:
                answers[k] = exc

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(MAX_REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(isinstance(a, Exception) or a is None for a in answers), answers
    assert sum(len(a) for a in answers) >= len(images)  # the shapes are found: the comparison is not empty
    for k in range(len(images)):
        assert same_predictions(answers[k], as_deepstack(want[k], 0.3)), (k, answers[k], want[k]["detections"])
    for got in answers:  # in the image's pixels
        for p in got:
            assert 0 <= p["x_min"] < p["x_max"] <= 640 and 0 <= p["y_min"] < p["y_max"] <= 480


def test_min_confidence_defaults_to_deepstacks_and_filters(st):
    data = jpeg(SCENES[0][0])
    want = native(st, [(data, "jpeg")])[0]

    async def go():
        async with aiohttp.ClientSession() as s:
            out = {}
            for conf in (None, "0", "0.9"):
                form = aiohttp.FormData()
                form.add_field("image", data, filename="a.jpg", content_type="image/jpeg")
                form.add_field("api_key", KEY)
                if conf is not None:
                    form.add_field("min_confidence", conf)
                async with s.post(base(st) + "/v1/vision/detection", data=form) as r:
                    assert r.status == 200
                    out[conf] = await r.json()
            return out

    out = asyncio.run(go())
    assert same_predictions(out[None]["predictions"], as_deepstack(want, 0.45))
    assert same_predictions(out["0"]["predictions"], as_deepstack(want, 0.0))
    assert same_predictions(out["0.9"]["predictions"], as_deepstack(want, 0.9))
    assert len(out["0"]["predictions"]) > len(out["0.9"]["predictions"])
    body = out[None]
    assert body["success"] is True and body["count"] == len(body["predictions"])
    assert body["moduleId"] == "shapes_detector" and body["duration"] > 0


def test_a_png_is_decoded_and_gets_the_raw_frames_boxes(st):
    img = SCENES[1][0]
    want = native(st, [(img, "rgb")])[0]
    host, port = parse_address(base(st)[len("http://"):])
    got = DeepstackObject(ip=host, port=port, api_key=KEY, min_confidence=0.3, timeout=30).detect(png(img))
    assert got and same_predictions(got, as_deepstack(want, 0.3))


def test_the_custom_route_names_the_model_and_lists_it(st):
    data = jpeg(SCENES[2][0])
    host, port = parse_address(base(st)[len("http://"):])
    by_detection = DeepstackObject(ip=host, port=port, api_key=KEY, timeout=30).detect(data)
    by_name = DeepstackObject(ip=host, port=port, api_key=KEY, timeout=30, custom_model="shapes_detector").detect(data)
    assert by_name == by_detection and by_name
    with pytest.raises(DeepstackException, match="404"):
        DeepstackObject(ip=host, port=port, api_key=KEY, timeout=30, custom_model="yolov5").detect(data)

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.post(base(st) + "/v1/vision/custom/list", data={"api_key": KEY}) as r:
                return r.status, await r.json()

    assert asyncio.run(go()) == (200, {"success": True, "models": ["shapes_detector"]})


# -- bad requests: each a clear 4xx, the camera unaffected -----------------------------------
def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) says ``width`` x ``height``."""
    data = bytearray(jpeg(SCENES[0][0][:64, :64]))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR says ``width`` x ``height`` (with a valid CRC), and a tiny body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 64)
    chunk += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


GOOD = jpeg(SCENES[3][0])
BAD_REQUESTS = [  # (name, form fields or raw body, status, words of the error)
    ("oversized upload", {"image": GOOD + b"\0" * MAX_UPLOAD}, 413, "--http-max-upload"),
    ("non-image bytes", {"image": b"GIF89a this is not a picture"}, 400, "neither JPEG nor PNG"),
    ("truncated JPEG", {"image": GOOD[: len(GOOD) // 3]}, 400, "invalid image file"),
    ("JPEG header claiming 60000x60000", {"image": jpeg_claiming(60000, 60000)}, 400, "60000"),
    ("PNG header claiming 60000x60000", {"image": png_claiming(60000, 60000)}, 400, "60000x60000"),
    ("corrupt PNG", {"image": png(SCENES[0][0])[:200]}, 400, "not a readable PNG"),
    ("wrong api key", {"image": GOOD, "api_key": "guess"}, 401, "Incorrect api key"),
    ("missing api key", {"image": GOOD, "api_key": None}, 401, "Incorrect api key"),
    ("no image field", {"picture": GOOD}, 400, "No valid image file found"),
    ("min_confidence not a number", {"image": GOOD, "min_confidence": "high"}, 400, "Invalid value for min_confidence"),
    ("min_confidence above 1", {"image": GOOD, "min_confidence": "1.5"}, 400, "cannot be greater than 1"),
    ("a JSON body", b'{"image": "aGVsbG8="}', 400, "multipart/form-data"),
]


async def post(session: aiohttp.ClientSession, url: str, fields: dict | bytes) -> tuple[int, dict]:
    if isinstance(fields, bytes):
        kw = {"data": fields, "headers": {"Content-Type": "application/json"}}
    else:
        form = aiohttp.FormData()
        fields = {"api_key": KEY, **fields}
        for name, value in fields.items():
            if value is None:
                continue
            if isinstance(value, bytes):
                form.add_field(name, value, filename="upload", content_type="application/octet-stream")
            else:
                form.add_field(name, value)
        kw = {"data": form}
    async with session.post(url, **kw) as r:
        return r.status, await r.json(content_type=None)


def test_each_bad_request_is_a_clear_4xx_and_the_camera_keeps_streaming(st):
    with Camera(st) as cam, Subscriber(st.results, streams=["http"]) as sub:
        wait_subscribed(sub, st.frames)

        async def go():
            async with aiohttp.ClientSession() as s:
                out = {}
                for name, fields, _, _ in BAD_REQUESTS:
                    out[name] = await post(s, base(st) + "/v1/vision/detection", fields)
                async with s.get(base(st) + "/v1/vision/detection") as r:
                    out["GET"] = r.status, await r.json(content_type=None)
                async with s.post(base(st) + "/v1/vision/nothing-here") as r:
                    out["unknown route"] = r.status, await r.json(content_type=None)
                out["after"] = await post(s, base(st) + "/v1/vision/detection", {"image": GOOD})
                return out

        out = asyncio.run(go())
        published = []  # what reached the server, as its subscribers saw it: up to the last request's result
        while not published or not published[-1]["ok"]:
            r = sub.recv(timeout=30)
            if r.get("stream") == "http":
                published.append(r)
    for name, _, status, words in BAD_REQUESTS:
        got_status, body = out[name]
        assert (got_status, body["success"]) == (status, False), (name, got_status, body)
        assert words in body["error"], (name, body)
    assert out["GET"][0] == 405 and out["GET"][1]["success"] is False
    assert out["unknown route"][0] == 404 and out["unknown route"][1]["success"] is False
    assert out["after"][0] == 200 and out["after"][1]["predictions"]
    # the truncated JPEG and the one claiming 60000x60000 were refused by the server (its checks run
    # before anything is decoded); every other bad request was refused before it reached it
    assert [r["error"]["code"] for r in published[:-1]] == ["bad_frame", "bad_frame"]
    assert "60000" in published[1]["error"]["message"]
    assert cam.sent > 0
    assert st.server.stats["received"] == st.server.stats["answered"]


def raw_request(port: int, fields: list[tuple[str, bytes]]) -> tuple[socket.socket, bytes, bytes]:
    """A connected socket and the head and body of a multipart request, sent by hand so that a
    test can stop halfway through the body."""
    boundary = "streampi-test-boundary"
    body = b""
    for name, value in fields:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    head = (f"POST /v1/vision/detection HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock, head, body


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_past_max_requests_a_request_is_answered_503_at_once_and_the_held_ones_complete(st):
    port = parse_address(base(st)[len("http://"):])[1]
    held = []
    for _ in range(MAX_REQUESTS):  # each sends its head and half its body, then waits
        sock, head, body = raw_request(port, [("api_key", KEY.encode()), ("image", GOOD)])
        sock.sendall(head + body[: len(body) // 2])
        held.append((sock, body[len(body) // 2:]))
    try:
        assert wait_for(lambda: door(st).active == MAX_REQUESTS), door(st).active

        async def one_more():
            async with aiohttp.ClientSession() as s:
                return await post(s, base(st) + "/v1/vision/detection", {"image": GOOD})

        status, body = asyncio.run(one_more())
        assert status == 503 and body["success"] is False and "--http-max-requests" in body["error"]
        for sock, rest in held:  # the held requests were not dropped: they complete
            sock.sendall(rest)
        answers = [read_response(sock) for sock, _ in held]
    finally:
        for sock, _ in held:
            sock.close()
    assert [status for status, _ in answers] == [200] * MAX_REQUESTS, answers


def test_a_body_that_stops_arriving_is_answered_408(st):
    port = parse_address(base(st)[len("http://"):])[1]
    sock, head, body = raw_request(port, [("api_key", KEY.encode()), ("image", GOOD)])
    with sock:
        sock.sendall(head + body[:100])
        status, answer = read_response(sock)  # within --http-timeout (the socket's own timeout is 30 s)
    assert status == 408 and b"--http-timeout" in answer


def test_idle_connections_are_closed_and_do_not_keep_a_client_out(st):
    port = parse_address(base(st)[len("http://"):])[1]
    before = st.server.stats["http.connections_closed"]
    accepted = st.server.stats["http.connections"]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3 * MAX_CONNECTIONS)]
    try:
        assert wait_for(lambda: st.server.stats["http.connections"] - accepted == len(idle))
        assert door(st).connections <= MAX_CONNECTIONS  # the longest-open idle ones were closed
        with Camera(st):
            async def ask():
                async with aiohttp.ClientSession() as s:
                    return await post(s, base(st) + "/v1/vision/detection", {"image": GOOD})

            status, body = asyncio.run(ask())  # the idle connections make room for it
            assert status == 200 and body["predictions"]
            closed = 0
            for sock in idle:  # each is closed by the server: past the cap at once, the rest when idle too long
                try:
                    closed += sock.recv(1) == b""
                except ConnectionResetError:
                    closed += 1
        assert closed == len(idle)
        assert st.server.stats["http.connections_closed"] - before >= 2 * MAX_CONNECTIONS
    finally:
        for sock in idle:
            sock.close()


# -- a classifier, and options --------------------------------------------------------------
def test_a_classifier_answers_its_classes_by_name_and_refuses_the_detection_route():
    img = ShapesGenerator(seed=11).frame(160, 120)[0]
    data = jpeg(img)
    with ServerThread("shapes_int8", ServerOptions(workers=1, http="127.0.0.1:0", isolation="thread")) as st:
        with Subscriber(st.results, streams=["native"]) as sub, Producer(st.frames, stream="native") as prod:
            wait_subscribed(sub, st.frames)
            seq = prod.send(data, fmt="jpeg")
            want = next(r for r in iter(lambda: sub.recv(timeout=30), None) if r.get("seq") == seq)
        host, port = parse_address(st.server.bound["http"][len("http://"):])
        scene = DeepstackScene(ip=host, port=port, timeout=30).recognize(data)
        named = DeepstackObject(ip=host, port=port, timeout=30, custom_model="shapes_int8", min_confidence=0.0)

        async def go():
            async with aiohttp.ClientSession() as s:
                return [await post(s, st.server.bound["http"] + "/v1/vision/detection", {"image": data})
                        for _ in range(2)]

        accepted = st.server.stats["accepted"]
        refused = asyncio.run(go())
        predictions = named.detect(data)
        stats = dict(st.server.stats)
    index, label, score = want["top"][0]
    assert (scene["label"], scene["confidence"]) == (label, pytest.approx(score, abs=1e-6))
    assert [(p["label"], pytest.approx(p["confidence"], abs=1e-6)) for p in predictions] == \
        [(lb, sc) for _, lb, sc in want["top"]]
    for status, body in refused:
        assert status == 400 and "classifier" in body["error"] and "/v1/vision/custom/shapes_int8" in body["error"]
    # the server knew from the scene request's answer that its model is a classifier: the detection
    # requests were refused before they ran; only the custom one ran
    assert stats["accepted"] - accepted == 1
    assert stats["received"] == stats["answered"]


def test_the_api_key_can_come_from_a_file_or_the_environment(tmp_path, monkeypatch):
    opts = ServerOptions(http="127.0.0.1:0")
    monkeypatch.delenv("STREAMPI_HTTP_API_KEY", raising=False)
    assert read_api_key(opts) is None
    monkeypatch.setenv("STREAMPI_HTTP_API_KEY", "from-env")
    assert read_api_key(opts) == "from-env"
    (tmp_path / "key").write_text("from-file\nsecond line\n")
    opts.http_api_key_file = str(tmp_path / "key")
    assert read_api_key(opts) == "from-file"
    opts.http_api_key = "from-flag"
    assert read_api_key(opts) == "from-flag"
    opts.http_api_key, opts.http_api_key_file = None, str(tmp_path / "missing")
    with pytest.raises(StreampiError, match="cannot read --http-api-key-file"):
        read_api_key(opts)


@pytest.mark.parametrize("text", ["8080", "localhost", "127.0.0.1:http", ":8080", "1.2.3.4:70000"])
def test_a_bad_http_address_is_refused_naming_the_flag(text):
    with pytest.raises(StreampiError, match="--http takes HOST:PORT"):
        parse_address(text)


def test_a_server_whose_http_port_is_taken_does_not_start_and_says_why():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(StreampiError, match="cannot serve the HTTP API on 127.0.0.1"):
            with ServerThread("shapes_int8", ServerOptions(workers=1, http=address, isolation="thread")):
                pass
