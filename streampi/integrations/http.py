"""The DeepStack / CodeProject.AI HTTP API: the detector Home Assistant's DeepStack
integrations, Frigate's ``deepstack`` detector, Blue Iris and CodeProject.AI clients call.

``streampi serve MODEL --http 127.0.0.1:8080`` answers

- ``POST /v1/vision/detection``: a ``multipart/form-data`` body with the image (JPEG or PNG) in
  the field ``image`` and, optionally, ``min_confidence`` (default 0.45) and ``api_key``; the
  answer is ``{"success": true, "predictions": [{"label", "confidence", "x_min", "y_min",
  "x_max", "y_max"}, ...], "duration": ...}`` with integer boxes in the image's pixels, best
  first (Frigate's client stops at the first prediction under its threshold), plus the
  fields CodeProject.AI adds (``count``, ``message``, ``inferenceMs``, ``processMs``, ...);
- ``POST /v1/vision/custom/<model name>``: the same for the model this server runs, by name;
  a classifier answers its top classes there (``label`` and ``confidence`` of the best, and
  ``predictions`` ``[{"label", "confidence"}]``), and on ``/v1/vision/scene``;
- ``POST /v1/vision/custom/list``: ``{"success": true, "models": [<model name>]}``.

The same web face serves the live view (``GET /``, ``/api/stats``, each stream's MJPEG picture:
:mod:`streampi.integrations.live_view`).

Errors are DeepStack's: ``{"success": false, "error": "..."}`` with a 4xx status (5xx when
the server failed or is busy). Each request is a frame of the stream ``http`` (a ``queue``
stream unless ``--policy http=...`` says otherwise): it is scheduled, batched with the
cameras' frames and answered exactly once (:meth:`streampi.serving.server.Server.submit`).
A JPEG goes to the server as it came (its header is checked against ``--max-pixels`` before
anything is decoded, and the server decodes it at the model's scale); a PNG is decoded here
with Pillow, in a thread, after the same check on its header.

Everything a client sends is bounded: the body (``--http-max-upload``, 413), the time it
takes to arrive (``--http-timeout``, 408), the requests held at once (``--http-max-requests``,
503 at once past it), the open connections (``--http-max-connections``: the longest-open idle
one is closed to make room) and idle connections (closed after ``--http-timeout``).

The web server is aiohttp on the server's own event loop (docs/http.md gives what that costs).
"""

from __future__ import annotations

import asyncio
import hmac
import io
import ipaddress
import logging
import math
import os
import time
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web

from .. import protocol
from ..errors import StreampiError

log = logging.getLogger("streampi.http")

#: the stream every request is a frame of (in results, metrics and the scheduler)
STREAM = "http"
#: DeepStack's default threshold (deepstack-python, Home Assistant's integrations)
DEFAULT_MIN_CONFIDENCE = 0.45
#: the environment variable that may hold the API key
API_KEY_ENV = "STREAMPI_HTTP_API_KEY"
#: a form field other than the image (min_confidence, api_key, ...) is at most this long
MAX_FIELD_BYTES = 1024
#: the form fields read (others are read and dropped)
FORM_FIELDS = ("image", "min_confidence", "api_key")
#: parts of one multipart body, at most
MAX_PARTS = 16
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: the HTTP status of each error code of the server's answers (others: 500)
STATUS_OF_ERROR = {"bad_frame": 400, "overloaded": 503, "dropped": 503, "unavailable": 503, "shutdown": 503}


class ApiError(Exception):
    """A request answered with an error: ``status`` and DeepStack's ``error`` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) → (host, port); a StreampiError saying why not."""
    host, sep, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not host or not 0 <= port <= 65535:
        raise StreampiError(f"--http takes HOST:PORT (e.g. 127.0.0.1:8080, 0.0.0.0:80, [::1]:8080), got {text!r}")
    return host, port


def read_api_key(options: Any) -> str | None:
    """The key requests must carry: --http-api-key, else the first line of --http-api-key-file,
    else $STREAMPI_HTTP_API_KEY; None: no key needed."""
    if options.http_api_key:
        return options.http_api_key
    if options.http_api_key_file:
        try:
            with open(options.http_api_key_file, encoding="utf-8") as f:
                key = f.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise StreampiError(f"cannot read --http-api-key-file {options.http_api_key_file}: {exc}") from exc
        if not key:
            raise StreampiError(f"--http-api-key-file {options.http_api_key_file} holds no key on its first line")
        return key
    return os.environ.get(API_KEY_ENV) or None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's first chunk (IHDR), before anything is decoded."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ApiError(400, "invalid image file: a PNG must start with its IHDR chunk")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def decode_png(data: bytes, max_pixels: int) -> np.ndarray:
    """A PNG as an RGB array, its header checked against ``max_pixels`` before it is decoded."""
    w, h = png_size(data)
    if w <= 0 or h <= 0 or w * h > max_pixels:
        raise ApiError(400, f"invalid image file: the PNG header claims {w}x{h} pixels; "
                            f"the limit is {max_pixels} (--max-pixels)")
    try:
        from PIL import Image
    except ImportError:
        raise ApiError(415, "PNG images need Pillow on the server (pip install 'streampi[web]'); "
                            "send a JPEG") from None
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            if im.size != (w, h):
                raise ApiError(400, "invalid image file: not a readable PNG")
            return np.asarray(im.convert("RGB"))
    except ApiError:
        raise
    except Exception as exc:  # Pillow says a bad PNG in many ways (OSError, SyntaxError, ValueError, ...)
        raise ApiError(400, f"invalid image file: not a readable PNG ({exc})") from None


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own errors (no such route, wrong method) in DeepStack's shape too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return web.json_response({"success": False, "error": exc.reason, "code": exc.status},
                                 status=exc.status, headers=headers)


class HttpDoor:
    """The HTTP API as a door of :class:`~streampi.serving.server.Server` (see
    :mod:`streampi.integrations`)."""

    def __init__(self, options: Any) -> None:
        self.options = options  # checked in open(): a bad value there stops the server cleanly
        self.server: Any = None
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._taking = True
        self._active = 0  # requests held (reading, decoding, waiting or running)
        self._busy: set[Any] = set()  # connections whose request is being handled
        self._seq = 0
        self._kinds: dict[str, str] = {}  # model sha256 -> "detections" or "top", learnt from answers
        self._key: bytes | None = None
        self.live: Any = None  # the live view (streampi.integrations.live_view), made in open()

    @property
    def active(self) -> int:
        """Requests held now (reading, decoding, waiting or running)."""
        return self._active

    @property
    def connections(self) -> int:
        """Connections open now."""
        if self._runner is None:
            return 0
        return sum(h.transport is not None for h in self._runner.server.connections)

    # -- the door interface ---------------------------------------------------------------
    async def open(self, server: Any) -> dict:
        opts = self.options
        host, port = parse_address(opts.http)
        key = read_api_key(opts)
        self._key = key.encode() if key else None
        self.server, self._loop = server, asyncio.get_running_loop()
        self._max_pixels = opts.limits.max_pixels
        app = web.Application(middlewares=[_json_errors], client_max_size=opts.http_max_upload)
        app.router.add_post("/v1/vision/detection", self._detection)
        app.router.add_post("/v1/vision/custom/list", self._list)
        app.router.add_post("/v1/vision/custom/{model}", self._custom)
        app.router.add_post("/v1/vision/scene", self._scene)
        from .live_view import LiveView  # the page, /api/stats, the MJPEG views (docs/integrations.md)

        self.live = LiveView(server, opts, self._key, self._busy)
        self.live.add_routes(app)
        self.app = app
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0,
                                     keepalive_timeout=opts.http_timeout)
        await self._runner.setup()
        try:
            self._listener = await self._loop.create_server(self._protocol, host, port, reuse_address=True)
        except OSError as exc:
            raise StreampiError(f"cannot serve the HTTP API on {opts.http}: {exc}") from exc
        bound_port = self._listener.sockets[0].getsockname()[1]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{bound_port}"
        if self._key is None and not _is_loopback(host):
            log.warning("the HTTP API on %s answers anyone who can reach it: set --http-api-key (or %s)",
                        self.url, API_KEY_ENV)
        log.info("HTTP API (DeepStack / CodeProject.AI) at %s/v1/vision/detection, live view at %s/", self.url,
                 self.url)
        return {"http": self.url}

    async def run(self) -> None:
        await self._loop.create_future()  # aiohttp serves from the loop; this task only waits to be cancelled

    def stop_taking(self) -> None:
        self._taking = False
        if self.live is not None:
            self.live.close()  # the MJPEG streams end now, not at the runner's shutdown timeout
        if self._listener is not None:
            self._listener.close()

    async def close(self) -> None:
        if self.live is not None:
            self.live.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- connections --------------------------------------------------------------------
    def _protocol(self) -> Any:
        handler = self._runner.server()  # type: ignore[union-attr]
        self.server.stats["http.connections"] += 1
        self._loop.call_soon(self._cap_connections, handler, 4)
        return handler

    def _cap_connections(self, newest: Any, tries: int) -> None:
        """Past --http-max-connections, close the longest-open idle connection (an idle
        client must not keep a working one out), or the newest when every other is busy."""
        if self._runner is None:
            return
        if newest.transport is None:  # its transport calls connection_made in a later loop turn
            if tries:
                self._loop.call_soon(self._cap_connections, newest, tries - 1)
            return
        # oldest first; a connection being closed has no transport any more
        conns = [h for h in self._runner.server.connections if h.transport is not None]
        if len(conns) <= self.options.http_max_connections:
            return
        victim = next((h for h in conns if h is not newest and h not in self._busy), newest)
        self.server.stats["http.connections_closed"] += 1
        victim.force_close()

    # -- routes --------------------------------------------------------------------------
    async def _detection(self, request: web.Request) -> web.Response:
        return await self._handle(request, "detection")

    async def _scene(self, request: web.Request) -> web.Response:
        return await self._handle(request, "scene")

    async def _custom(self, request: web.Request) -> web.Response:
        name, served = request.match_info["model"], self.server.model_info["name"]
        if name != served:
            return self._error(404, f"no custom model {name[:80]!r} here: this server runs {served!r} "
                                    f"(/v1/vision/custom/{served}, or /v1/vision/detection)")
        return await self._handle(request, "custom")

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"success": True, "models": [self.server.model_info["name"]]})

    # -- one request ----------------------------------------------------------------------
    async def _handle(self, request: web.Request, route: str) -> web.Response:
        t0 = time.perf_counter()
        if not self._taking:
            return self._error(503, "the server is stopping", retry=True)
        if self._active >= self.options.http_max_requests:
            return self._error(503, f"busy: {self._active} requests are being answered (--http-max-requests "
                                    f"{self.options.http_max_requests}); try again", retry=True)
        self._active += 1
        conn = request.protocol
        self._busy.add(conn)
        try:
            form = await self._read_form(request)
            if self._key is not None and not hmac.compare_digest(form.get("api_key", b""), self._key):
                raise ApiError(401, "Incorrect api key")
            min_confidence = self._min_confidence(form.get("min_confidence"))
            image = form.get("image")
            if not image:
                others = f" (this one has {form[''].decode()})" if "" in form else ""
                raise ApiError(400, f"No valid image file found: send the image in the multipart form field "
                                    f"'image'{others}")
            self._refuse_by_kind(route, self._kinds.get(self.server.model_info["sha256"]))
            parts = await self._frame(image)
            if not self._taking:
                raise ApiError(503, "the server is stopping")
            result = await self._run(parts)
            return self._answer(route, result, min_confidence, t0)
        except ApiError as exc:
            response = self._error(exc.status, exc.message, retry=exc.status == 503)
            if exc.status == 408:  # a client that stopped sending: close once answered, not wait for its body
                response.force_close()
                await response.prepare(request)
                await response.write_eof()
                conn.force_close()  # (the transport sends what it holds, then closes)
            return response
        finally:
            self._active -= 1
            self._busy.discard(conn)

    async def _read_form(self, request: web.Request) -> dict[str, bytes]:
        limit = self.options.http_max_upload
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, f"the request body is {request.content_length} bytes; the limit is {limit} "
                                f"(--http-max-upload)")
        if request.content_type != "multipart/form-data":
            raise ApiError(400, "No valid image file found: send a multipart/form-data body with the image "
                                "in the field 'image'")
        try:
            return await asyncio.wait_for(self._read_parts(request, limit), self.options.http_timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {self.options.http_timeout:g} s "
                                f"(--http-timeout)") from None
        except ApiError:
            raise
        except (ValueError, AssertionError, RuntimeError, ConnectionError) as exc:  # a malformed multipart body
            raise ApiError(400, f"malformed multipart body: {exc}") from None

    async def _read_parts(self, request: web.Request, limit: int) -> dict[str, bytes]:
        """The form's known fields (image, min_confidence, api_key); others are read and
        dropped, their names kept under ``""`` for the error that says the image is missing."""
        reader = await request.multipart()
        form: dict[str, bytes] = {}
        others: list[str] = []
        total = 0
        for _ in range(MAX_PARTS + 1):
            part = await reader.next()
            if part is None:
                if others:
                    form[""] = ", ".join(repr(n[:40]) for n in others).encode()
                return form
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "malformed multipart body: nested multipart parts are not taken")
            name = part.name or ""
            keep = name in FORM_FIELDS and name not in form
            data = bytearray()
            while chunk := await part.read_chunk(256 * 1024):
                total += len(chunk)
                if total > limit:
                    raise ApiError(413, f"the request body is more than {limit} bytes (--http-max-upload)")
                if keep:
                    data += chunk
                    if name != "image" and len(data) > MAX_FIELD_BYTES:
                        raise ApiError(400, f"form field {name!r} is longer than {MAX_FIELD_BYTES} bytes")
            if keep:
                form[name] = bytes(data)
            else:
                others.append(name)
        raise ApiError(400, f"malformed multipart body: more than {MAX_PARTS} parts")

    @staticmethod
    def _min_confidence(raw: bytes | None) -> float:
        if raw is None or not raw.strip():
            return DEFAULT_MIN_CONFIDENCE
        try:
            value = float(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "Invalid value for min_confidence") from None
        if math.isnan(value):
            raise ApiError(400, "Invalid value for min_confidence")
        if value > 1.0:
            raise ApiError(400, "min_confidence cannot be greater than 1")
        return value

    def _refuse_by_kind(self, route: str, kind: str | None) -> None:
        name = self.server.model_info["name"]
        if route == "detection" and kind == "top":
            raise ApiError(400, f"this server runs a classifier ({name}), not a detector: ask "
                                f"/v1/vision/custom/{name} (or /v1/vision/scene) for its classes")
        if route == "scene" and kind == "detections":
            raise ApiError(400, f"this server runs a detector ({name}), not a classifier: ask /v1/vision/detection")
        if kind == "other":
            raise ApiError(400, f"this server's model ({name}) answers neither detections nor classes")

    async def _frame(self, image: bytes) -> list:
        """The frame message of one uploaded image."""
        self._seq += 1
        if image.startswith(JPEG_MAGIC):
            return protocol.encode_frame(STREAM, self._seq, "jpeg", image)
        if image.startswith(PNG_MAGIC):
            rgb = await self._loop.run_in_executor(None, decode_png, image, self._max_pixels)
            return protocol.encode_frame(STREAM, self._seq, "rgb", rgb, rgb.shape[1], rgb.shape[0])
        raise ApiError(400, f"invalid image file: neither JPEG nor PNG (it starts with {image[:8].hex(' ')})")

    async def _run(self, parts: list) -> dict:
        """Hand the frame to the server and wait for its one answer."""
        answered: asyncio.Future = self._loop.create_future()

        def reply(result: dict) -> None:
            if not answered.done():  # (cancelled: the server is closing this connection)
                answered.set_result(result)

        self.server.submit(parts, reply)
        return await answered

    # -- answers --------------------------------------------------------------------------
    def _answer(self, route: str, result: dict, min_confidence: float, t0: float) -> web.Response:
        if not result.get("ok"):
            err = result.get("error") or {}
            code, message = err.get("code", "internal"), err.get("message", "")
            status = STATUS_OF_ERROR.get(code, 500)
            if code == "bad_frame":
                raise ApiError(400, f"invalid image file: {message}")
            if status == 503:
                raise ApiError(503, f"{code}: {message}")
            raise ApiError(500, f"an error occurred on the server ({code}): {message}")
        kind = "detections" if "detections" in result else "top" if "top" in result else "other"
        self._kinds[result["model"]["sha256"]] = kind
        self._refuse_by_kind(route, kind)
        timing = result.get("timing", {})
        body: dict[str, Any] = {"success": True}
        if kind == "detections":
            preds = [{"label": d["label"] if d.get("label") is not None else str(d["class"]),
                      "confidence": float(d["score"]),
                      "x_min": round(d["box"][0]), "y_min": round(d["box"][1]),
                      "x_max": round(d["box"][2]), "y_max": round(d["box"][3])}
                     for d in result["detections"] if d["score"] >= min_confidence]
            preds.sort(key=lambda p: -p["confidence"])
            body["predictions"] = preds
            body["message"] = f"found {len(preds)} object{'s' if len(preds) != 1 else ''}"
            body["command"] = "detect"
        else:
            top = [{"label": label if label is not None else str(index), "confidence": float(score)}
                   for index, label, score in result["top"]]
            best = top[0] if top else {"label": None, "confidence": 0.0}
            body["label"], body["confidence"] = best["label"], best["confidence"]
            body["predictions"] = [p for p in top if p["confidence"] >= min_confidence]
            body["message"] = f"{best['label']} ({best['confidence']:.2f})"
            body["command"] = "classify"
        elapsed = time.perf_counter() - t0
        body.update(count=len(body["predictions"]), duration=elapsed,
                    inferenceMs=round(timing.get("infer_ms", 0.0)), processMs=round(timing.get("total_ms", 0.0)),
                    analysisRoundTripMs=round(elapsed * 1e3), moduleId=result["model"]["name"],
                    processedBy="streampi", code=200)
        self.server.stats["http.ok"] += 1
        return web.json_response(body)

    def _error(self, status: int, message: str, retry: bool = False) -> web.Response:
        self.server.stats[f"http.status_{status}"] += 1
        return web.json_response({"success": False, "error": message, "duration": 0, "code": status},
                                 status=status, headers={"Retry-After": "1"} if retry else None)
