"""The live view: what the cameras see and what the model found, in a browser, on the ``--http``
web face (:mod:`streampi.integrations.http` adds these routes to its application).

- ``GET /``: the page (plain HTML and a little JavaScript from ``static/``, no build step, no
  CDN: it works on a Pi with no internet): each stream with its live picture, its counters,
  the workers' health and the latest events with their snapshots;
- ``GET /api/stats``: what the page shows, as JSON;
- ``GET /api/<stream>/live.mjpg``: the stream's live view, an MJPEG stream
  (``multipart/x-mixed-replace``), boxes, labels, scores and track ids drawn;
- ``GET /api/<stream>/latest.jpg``: the stream's next picture, as one JPEG;
- ``GET /api/events/<id>/snapshot.jpg``: an event's snapshot (when events are on).

Cost. The view is a result listener (:meth:`streampi.serving.server.Server.add_listener`): on
every answer it counts (a few dictionary updates), and it copies a frame's pixels only when
someone watches that stream and the stream's next picture is due (``--view-fps``, default 5).
The copy is converted, scaled to ``--view-width`` (default 640) and drawn on in a thread of
the view's own, then encoded once with simplejpeg, whatever the number of viewers; a due
frame that comes while the previous picture is being made replaces the one waiting (one at
most per stream). Nothing of a stream's pictures is kept once its last viewer leaves.

A viewer on a slow link gets the newest picture, not a backlog: a picture is written only once
the viewer has acknowledged the previous one (on Linux; elsewhere once it left the server's
buffers, the kernel's unsent bytes kept small by ``TCP_NOTSENT_LOWAT``); then the newest one is
sent. A viewer whose link takes longer than
``--http-timeout`` for one picture is disconnected. Bounded: :data:`MAX_VIEWERS` viewers at
once (503 past it), :data:`MAX_STREAMS` streams listed and counted, one picture and one
waiting frame per watched stream, :data:`MAX_COPIED_BYTES` of copied frames in all.

Track ids come from the events (``server.events``, see the events contract): when
``server.events`` is None (events off) the pictures show detections without ids and the
events panel says events are off.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hmac
import logging
import math
import re
import socket
import statistics
import struct
import time
from importlib import resources
from typing import Any

import numpy as np
import simplejpeg
from aiohttp import web

try:
    import fcntl
except ImportError:  # not a POSIX system: the kernel's buffers are bounded by TCP_NOTSENT_LOWAT alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("streampi.live_view")

#: viewers at once (MJPEG streams and latest.jpg requests), over all streams
MAX_VIEWERS = 16
#: bytes of frames copied for pictures (waiting or being drawn), over all streams; a due frame
#: past it makes no picture (counted in the server's ``view.frames_skipped``)
MAX_COPIED_BYTES = 64 * 2**20
#: streams listed and counted (the first seen); others are counted in ``streams_not_shown``
MAX_STREAMS = 64
#: latest events shown
EVENTS_SHOWN = 20
#: inference times kept per stream for the median
INFER_SAMPLES = 128
#: seconds over which detections and frames per second are counted
RATE_WINDOW_S = 5
#: bytes an MJPEG connection's kernel holds not yet sent (TCP_NOTSENT_LOWAT): beyond what the link
#: itself carries, a slow viewer's backlog is this and the picture being written, never a queue
VIEWER_NOTSENT = 16 * 1024
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # (Linux's value; Python names it from 3.12 on some builds)
#: Linux's ioctl for a TCP socket's bytes not yet acknowledged by the peer (= TIOCOUTQ)
SIOCOUTQ = 0x5411
#: how often a viewer's unacknowledged bytes are looked at until they are none
ACK_POLL_S = 0.01
#: JPEG quality of the pictures
QUALITY = 75
#: a stream name in a URL: what a topic may be (no '/'), bounded
STREAM_NAME = re.compile(r"[^/\x00]{1,128}")
#: the stream the server answers bad messages on: not a camera
ERRORS_STREAM = "_errors"
#: the page, its script and its style (package data)
STATIC = {"index.html": "text/html", "live.js": "text/javascript", "live.css": "text/css"}
#: how long latest.jpg waits for a stream's next frame
LATEST_WAIT_S = 5.0
#: an MJPEG viewer is sent a picture at least this often (the same again when the stream is idle)
KEEPALIVE_S = 5.0

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255)]


def color_of(label: Any) -> tuple[int, int, int]:
    """One colour per label, the same on every picture and every run."""
    text = str(label)
    return PALETTE[sum(text.encode()) * 31 % len(PALETTE)]


def view_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """The picture's size: ``max_width`` wide at most (never wider than the frame), the
    frame's aspect kept, even sides (what the YUV kernels and JPEG's 4:2:0 like)."""
    w = min(width, max_width)
    h = max(2, round(height * w / width))
    return max(2, w - w % 2), h - h % 2


def iou(a: Any, b: Any) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def track_ids(detections: list[dict], objects: list[dict]) -> list[str | None]:
    """The id of the tracked object each detection is (same label, best overlap, at least 0.3),
    each object given to one detection at most."""
    ids: list[str | None] = [None] * len(detections)
    taken: set[int] = set()
    pairs = []
    for i, d in enumerate(detections):
        for j, o in enumerate(objects):
            if o.get("label") == d.get("label") and o.get("box") is not None:
                overlap = iou(d["box"], o["box"])
                if overlap >= 0.3:
                    pairs.append((overlap, i, j))
    for _, i, j in sorted(pairs, reverse=True):
        if ids[i] is None and j not in taken:
            ids[i], taken = str(objects[j].get("id")), taken | {j}
    return ids


class Picture:
    """One frame to draw: its pixels (a copy), its detections and the tracked objects."""

    __slots__ = ("stream", "seq", "fmt", "data", "width", "height", "detections", "objects", "time", "nbytes")

    def __init__(self, stream: str, seq: Any, fmt: str, data: bytes, width: int | None, height: int | None,
                 detections: list[dict], objects: list[dict]) -> None:
        self.stream, self.seq, self.fmt, self.data = stream, seq, fmt, data
        self.width, self.height, self.detections, self.objects = width, height, detections, objects
        self.time = time.time()
        self.nbytes = len(data)


class Painter:
    """Frame (any wire format) → a JPEG of the view's size with the detections drawn. Runs in
    the view's thread; the kernels and simplejpeg release the GIL."""

    def __init__(self, max_width: int, max_pixels: int) -> None:
        self.max_width, self.max_pixels = max_width, max_pixels
        self._preprocessors: dict[tuple[int, int], Any] = {}
        self._font: Any = None

    def __call__(self, pic: Picture) -> tuple[bytes, int, int, list[str]]:
        width, height = pic.width, pic.height
        if pic.fmt == "jpeg":
            height, width = simplejpeg.decode_jpeg_header(pic.data)[:2]
        w, h = view_size(width, height, self.max_width)
        pre = self._preprocessors.get((w, h))
        if pre is None:
            from ..preprocess import Preprocessor

            if len(self._preprocessors) > 8:  # cameras that change size: keep a few
                self._preprocessors.clear()
            pre = self._preprocessors[(w, h)] = Preprocessor((h, w, 3), np.uint8, scale=1 / 255, channels="rgb",
                                                             max_pixels=self.max_pixels)
        rgb, _ = pre(pic.data, pic.fmt, pic.width, pic.height)
        rgb = rgb.reshape(h, w, 3)
        texts = self.draw(rgb, pic, w / width, h / height)
        return simplejpeg.encode_jpeg(rgb, quality=QUALITY, colorspace="RGB", colorsubsampling="420"), w, h, texts

    def draw(self, rgb: np.ndarray, pic: Picture, fx: float, fy: float) -> list[str]:
        """Draw the detections' boxes and labels (``label score #track-id``); return the labels."""
        dets = [d for d in pic.detections if isinstance(d, dict) and isinstance(d.get("box"), (list, tuple))]
        if not dets:
            return []
        ids = track_ids(dets, pic.objects) if pic.objects else [None] * len(dets)
        h, w = rgb.shape[:2]
        labels = []
        for d, tid in zip(dets, ids):
            x0, y0, x1, y1 = (float(v) for v in d["box"][:4])
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
                continue
            x0, x1 = (int(np.clip(round(v * fx), 0, w - 1)) for v in (x0, x1))
            y0, y1 = (int(np.clip(round(v * fy), 0, h - 1)) for v in (y0, y1))
            label = d.get("label") if d.get("label") is not None else d.get("class")
            color = color_of(label)
            t = 2
            rgb[y0:y0 + t, x0:x1 + 1] = color
            rgb[max(y1 - t + 1, 0):y1 + 1, x0:x1 + 1] = color
            rgb[y0:y1 + 1, x0:x0 + t] = color
            rgb[y0:y1 + 1, max(x1 - t + 1, 0):x1 + 1] = color
            text = f"{label} {float(d.get('score', 0.0)):.2f}" + (f" #{tid}" if tid is not None else "")
            labels.append((x0, y0, text, color))
        if labels:
            self._labels(rgb, labels)
        return [text for _, _, text, _ in labels]

    def _labels(self, rgb: np.ndarray, labels: list) -> None:
        try:
            from PIL import Image, ImageDraw, ImageFont
        except ImportError:  # (Pillow is in the web extra) boxes without text
            return
        if self._font is None:
            try:
                self._font = ImageFont.load_default(size=13)
            except (TypeError, OSError):  # an older Pillow, or one without FreeType: the bitmap font
                self._font = ImageFont.load_default()
        image = Image.fromarray(rgb)
        draw = ImageDraw.Draw(image)
        for x0, y0, text, color in labels:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=self._font)
            tw, th = right - left + 6, bottom - top + 4
            ty = y0 - th if y0 >= th else y0
            draw.rectangle((x0, ty, x0 + tw, ty + th), fill=color)
            dark = sum(color) > 450
            draw.text((x0 + 3 - left, ty + 2 - top), text, fill=(0, 0, 0) if dark else (255, 255, 255), font=self._font)
        rgb[...] = np.asarray(image)


class StreamView:
    """One stream's counters and, while someone watches it, its newest picture."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames_in = self.processed = self.dropped = self.errors = self.detections = 0
        self.infer_ms: collections.deque[float] = collections.deque(maxlen=INFER_SAMPLES)
        self.buckets: collections.deque[list] = collections.deque(maxlen=RATE_WINDOW_S + 2)  # [second, frames, dets]
        self.last_result = 0.0
        # the picture, while watched
        self.viewers = 0
        self.due = 0.0  # monotonic time the next picture is due
        self.waiting: Picture | None = None  # a due frame that came while one was being made
        self.painting = False
        self.jpeg: bytes | None = None
        self.size: tuple[int, int] | None = None
        self.picture_seq: Any = None  # the frame seq of the picture
        self.picture_labels: list[str] = []  # what is written on it
        self.picture_time = 0.0
        self.version = 0  # pictures made since the stream was first watched
        self.changed = asyncio.Event()
        self.pictures = 0  # pictures encoded (all time)

    def count(self, result: dict, now: float) -> None:
        self.frames_in += 1
        self.last_result = now
        dets = 0
        if result.get("ok"):
            self.processed += 1
            found = result.get("detections")
            dets = len(found) if isinstance(found, list) else 0
            self.detections += dets
            infer = result.get("timing", {}).get("infer_ms")
            if infer is not None:
                self.infer_ms.append(infer)
        elif (result.get("error") or {}).get("code") in ("dropped", "overloaded", "expired"):
            self.dropped += 1
        else:
            self.errors += 1
        sec = int(now)
        buckets = self.buckets
        if buckets and buckets[-1][0] == sec:
            buckets[-1][1] += 1
            buckets[-1][2] += dets
        else:
            buckets.append([sec, 1, dets])

    def rates(self, now: float) -> tuple[float, float]:
        """(frames, detections) per second over the last full seconds."""
        sec = int(now)
        frames = dets = 0
        for s, n, d in self.buckets:
            if sec - RATE_WINDOW_S <= s < sec:
                frames += n
                dets += d
        return frames / RATE_WINDOW_S, dets / RATE_WINDOW_S

    def forget_picture(self) -> None:
        self.waiting, self.jpeg, self.size, self.picture_seq = None, None, None, None

    def stats(self, now: float) -> dict[str, Any]:
        fps, dps = self.rates(now)
        return {"frames_in": self.frames_in, "processed": self.processed, "dropped": self.dropped,
                "errors": self.errors, "detections": self.detections, "fps_in": round(fps, 2),
                "detections_per_s": round(dps, 2),
                "infer_p50_ms": round(statistics.median(self.infer_ms), 2) if self.infer_ms else None,
                "last_result_age_s": round(now - self.last_result, 3) if self.last_result else None,
                "viewers": self.viewers, "pictures": self.pictures,
                "picture": {"seq": self.picture_seq, "width": self.size[0], "height": self.size[1],
                            "bytes": len(self.jpeg), "age_s": round(time.time() - self.picture_time, 3),
                            "labels": self.picture_labels}
                if self.jpeg is not None and self.size is not None else None}


class LiveView:
    """The live view's routes and its listener on one server (see the module's docstring)."""

    def __init__(self, server: Any, options: Any, key: bytes | None = None, busy: set | None = None) -> None:
        self.server, self.options, self._key = server, options, key
        self._busy = busy if busy is not None else set()  # the door's connections not to close as idle
        self.fps, self.width = float(options.view_fps), int(options.view_width)
        self.streams: dict[str, StreamView] = {}
        self.streams_not_shown = 0
        self.viewers = 0
        self.copied_bytes = 0  # frames copied for pictures, waiting or being drawn
        self.closing = False
        self._painter = Painter(self.width, options.limits.max_pixels)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="streampi-view")
        self._loop = asyncio.get_running_loop()
        self._remove = server.add_listener(self._on_result)
        self._static: dict[str, bytes] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/api/stats", self._stats)
        app.router.add_get("/api/events/{id}/snapshot.jpg", self._snapshot)
        app.router.add_get("/api/{stream}/latest.jpg", self._latest)
        app.router.add_get("/api/{stream}/live.mjpg", self._mjpeg)

    def close(self) -> None:
        """End every MJPEG stream and stop listening (at the server's stop)."""
        self.closing = True
        self._remove()
        for view in self.streams.values():
            view.changed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def events(self) -> Any:
        return getattr(self.server, "events", None)

    # -- the listener: on every answer, on the server's loop ------------------------------------
    def _on_result(self, result: dict, frame: Any) -> None:
        stream = result.get("stream")
        if not isinstance(stream, str) or stream == ERRORS_STREAM:
            return
        view = self.streams.get(stream)
        now = time.monotonic()
        if view is None:
            if len(self.streams) >= MAX_STREAMS:
                self.streams_not_shown += 1
                return
            view = self.streams[stream] = StreamView(stream)
        view.count(result, time.time())
        if not view.viewers or frame is None or now < view.due or not result.get("ok"):
            return
        period = 1.0 / self.fps  # on the beat (a 15 frames/s camera gives 5 pictures/s, not 3.75)
        view.due = view.due + period if now - view.due < period else now + period
        events = self.events
        objects = []
        if events is not None:
            try:
                objects = events.objects(stream)
            except Exception:
                log.exception("the events' objects of stream %s could not be read", stream)
        nbytes = frame.data.nbytes if isinstance(frame.data, memoryview) else len(frame.data)
        replaced = view.waiting.nbytes if view.waiting is not None else 0
        if self.copied_bytes - replaced + nbytes > MAX_COPIED_BYTES:
            self.server.stats["view.frames_skipped"] += 1
            return
        dets = result.get("detections")
        pic = Picture(stream, result.get("seq"), frame.fmt, bytes(frame.data), frame.width, frame.height,
                      list(dets) if isinstance(dets, list) else [], objects)
        self.copied_bytes += pic.nbytes - replaced
        if view.painting:
            view.waiting = pic  # the newest wins
        else:
            self._paint(view, pic)

    def _paint(self, view: StreamView, pic: Picture) -> None:
        view.painting = True
        try:
            future = self._loop.run_in_executor(self._pool, self._painter, pic)
        except RuntimeError:  # closing: the pool is shut down
            view.painting = False
            self.copied_bytes -= pic.nbytes
            return
        future.add_done_callback(lambda f: self._painted(view, pic, f))

    def _painted(self, view: StreamView, pic: Picture, future: asyncio.Future) -> None:
        view.painting = False
        self.copied_bytes -= pic.nbytes
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.server.stats["view.picture_failed"] += 1
            log.warning("the live view of stream %s could not draw frame %s: %s", view.name, pic.seq, exc)
        elif view.viewers:
            view.jpeg, w, h, view.picture_labels = future.result()
            view.size, view.picture_seq, view.picture_time = (w, h), pic.seq, pic.time
            view.version += 1
            view.pictures += 1
            self.server.stats["view.pictures"] += 1
            view.changed.set()
            view.changed = asyncio.Event()
        if not view.viewers:
            self._forget(view)
        elif view.waiting is not None:
            waiting, view.waiting = view.waiting, None
            self._paint(view, waiting)

    # -- watching ----------------------------------------------------------------------------------
    def _check_key(self, request: web.Request) -> None:
        if self._key is None:
            return
        given = request.query.get("api_key", "").encode()
        if not hmac.compare_digest(given, self._key):
            raise web.HTTPUnauthorized(reason="this server needs its API key: add ?api_key=... to the address")

    def _view_of(self, request: web.Request) -> StreamView:
        self._check_key(request)
        name = request.match_info["stream"]
        if not STREAM_NAME.fullmatch(name):
            raise web.HTTPBadRequest(reason="a stream name is 1 to 128 characters")
        view = self.streams.get(name)
        if view is None:
            known = ", ".join(repr(n) for n in sorted(self.streams)[:10]) or "none yet"
            raise web.HTTPNotFound(reason=f"no stream {name[:128]!r} has sent a frame (streams: {known})")
        return view

    def _watch(self, view: StreamView) -> None:
        if self.closing:
            raise web.HTTPServiceUnavailable(reason="the server is stopping")
        if self.viewers >= MAX_VIEWERS:
            raise web.HTTPServiceUnavailable(reason=f"{self.viewers} viewers already (the live view's limit is "
                                                    f"{MAX_VIEWERS}); try again later")
        self.viewers += 1
        view.viewers += 1
        if view.viewers == 1:
            view.due = 0.0  # the next frame makes a picture

    def _unwatch(self, view: StreamView) -> None:
        self.viewers -= 1
        view.viewers -= 1
        if not view.viewers and not view.painting:
            self._forget(view)

    def _forget(self, view: StreamView) -> None:
        if view.waiting is not None:
            self.copied_bytes -= view.waiting.nbytes
        view.forget_picture()

    async def _next_picture(self, view: StreamView, after: int, timeout: float) -> bool:
        """Wait for a picture newer than version ``after``; False when none came in time."""
        deadline = time.monotonic() + timeout
        while view.version <= after or view.jpeg is None:
            left = deadline - time.monotonic()
            if left <= 0 or self.closing:
                return False
            try:
                await asyncio.wait_for(view.changed.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True

    async def _latest(self, request: web.Request) -> web.Response:
        view = self._view_of(request)
        self._watch(view)
        try:
            if not await self._next_picture(view, view.version, LATEST_WAIT_S):
                raise web.HTTPServiceUnavailable(reason=f"no picture of stream {view.name!r} within {LATEST_WAIT_S:g} "
                                                        f"s: it sent no frame the model answered, or the view's "
                                                        f"budget for copied frames was full", headers={"Retry-After": "1"})
            jpeg, seq = view.jpeg, view.picture_seq
        finally:
            self._unwatch(view)
        return web.Response(body=jpeg, content_type="image/jpeg", headers={
            "Cache-Control": "no-store", "X-Frame-Seq": str(seq)})

    async def _mjpeg(self, request: web.Request) -> web.StreamResponse:
        view = self._view_of(request)
        self._watch(view)
        conn = request.protocol
        self._busy.add(conn)  # a viewer is not an idle connection for --http-max-connections
        try:
            response = web.StreamResponse(headers={
                "Content-Type": "multipart/x-mixed-replace; boundary=frame", "Cache-Control": "no-store"})
            response.force_close()
            transport, sock = request.transport, None
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6) and fcntl is not None:
                    try:  # the window may grow on a fast link; what waits unsent stays small
                        sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, VIEWER_NOTSENT)
                    except OSError:  # not Linux: the send buffer bounds it
                        pass
                else:
                    sock = None
                transport.set_write_buffer_limits(high=0)  # drain() waits until the picture left our buffer
            writer = await response.prepare(request)
            self.server.stats["view.streams_opened"] += 1
            sent = 0
            while not self.closing:
                await self._next_picture(view, sent, KEEPALIVE_S)  # (none in time: the last one again)
                if self.closing:
                    break
                if view.jpeg is None:
                    continue
                jpeg, seq, sent = view.jpeg, view.picture_seq, view.version
                head = (f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                        f"X-Frame-Seq: {seq}\r\n\r\n").encode()
                try:
                    await asyncio.wait_for(self._send(response, writer, head + jpeg + b"\r\n", sock),
                                           self.options.http_timeout)
                except asyncio.TimeoutError:
                    self.server.stats["view.slow_viewers_closed"] += 1
                    log.info("a viewer of stream %s took more than %g s for one picture: disconnected", view.name,
                             self.options.http_timeout)
                    if request.transport is not None:
                        request.transport.abort()  # what it has not read is dropped, not waited for
                    break
                except ConnectionError:  # the viewer went away
                    break
            return response
        finally:
            self._busy.discard(conn)
            self._unwatch(view)

    @staticmethod
    async def _send(response: web.StreamResponse, writer: Any, data: bytes, sock: Any) -> None:
        """Write one picture; return once the viewer has it (its bytes have left our buffers and,
        on Linux, the kernel's: the viewer acknowledged them), so that the next one written is
        the newest then, never a queue."""
        await response.write(data)
        await writer.drain()
        if sock is None:
            return
        for _ in range(100_000):  # (bounded by --http-timeout around this call)
            try:
                unacknowledged = struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0"))[0]
            except (OSError, ValueError):  # closed, or no such ioctl here
                return
            if unacknowledged <= 0:
                return
            await asyncio.sleep(ACK_POLL_S)

    # -- the page and its data -------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.Response:
        self._check_key(request)
        return self._file("index.html")

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC or name == "index.html":
            raise web.HTTPNotFound(reason=f"no file {name[:80]!r}")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        body = self._static.get(name)
        if body is None:
            body = self._static[name] = resources.files(__package__).joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=STATIC[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    def stats(self) -> dict[str, Any]:
        status = self.server.status()
        now = time.time()
        events = self.events
        recent: list[dict] | None = None
        if events is not None:
            try:
                recent = events.recent(EVENTS_SHOWN)
            except Exception:
                log.exception("the recent events could not be read")
                recent = []
        workers = [{k: w.get(k) for k in ("index", "pid", "state", "process", "busy", "restarts", "frames_done",
                                          "busy_s", "held_s")} for w in status["workers"]]
        return {"model": {"name": status["model"].get("name"), "sha256": status["model"].get("sha256")},
                "healthy": status["healthy"], "problems": status["problems"], "workers": workers,
                "uptime_s": status["uptime_s"], "pending": status["pending"],
                "streams": {name: view.stats(now) for name, view in sorted(self.streams.items())},
                "streams_not_shown": self.streams_not_shown,
                "view": {"fps": self.fps, "width": self.width, "viewers": self.viewers, "max_viewers": MAX_VIEWERS},
                "events_enabled": events is not None, "events": recent}

    async def _stats(self, request: web.Request) -> web.Response:
        self._check_key(request)
        return web.json_response(self.stats(), headers={"Cache-Control": "no-store"})

    async def _snapshot(self, request: web.Request) -> web.Response:
        self._check_key(request)
        events = self.events
        if events is None:
            raise web.HTTPNotFound(reason="events are off on this server (streampi serve --events)")
        object_id = request.match_info["id"]
        jpeg = events.snapshot(object_id) if len(object_id) <= 256 else None
        if jpeg is None:
            raise web.HTTPNotFound(reason=f"no snapshot of object {object_id[:256]!r} (unknown, or no longer kept)")
        return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "max-age=60"})
