"""Frigate's ``zmq`` detector: a door that answers Frigate's detector processes.

Frigate (0.17 and later) has a detector plugin, ``type: zmq``
(``frigate/detectors/plugins/zmq_ipc.py``), that sends every detection request to an outside
process over a ZeroMQ REQ socket. This door is that outside process: a ROUTER, so any number of
Frigate detectors (each a REQ in lock-step) share one server, and their requests are frames of
the stream ``frigate``: scheduled and batched with every other frame, run by the same workers
and decoders, answered exactly once and published to subscribers like any result.

What Frigate sends and expects (its plugin's code is the specification):

- a detection request is two parts, ``[header, tensor]``: the header is JSON,
  ``{"shape": [1, H, W, 3], "dtype": "uint8", "model_type": "ssd"}`` (``[1, 3, H, W]`` when
  its ``model.input_tensor`` is ``nchw``; ``float32`` when its ``model.input_dtype`` is
  ``float`` (0..1) or ``float_denorm`` (0..255)), the tensor its raw C-order bytes, in the
  channel order of ``model.input_pixel_format``: ``rgb``, ``bgr`` or ``yuv`` (three full-size
  planes Y, U, V, the chroma repeated 2×2 from Frigate's I420 frame);
- the reply is one part of 480 bytes: 20 rows of 6 float32,
  ``[class_id, score, ymin, xmin, ymax, xmax]`` normalised to 0..1 of the tensor, best first,
  zero rows after the last detection. Frigate turns anything else into "no detections", so
  every reply of this door is exactly that, errors included (zero rows);
- the model handshake, sent when the detector starts and again after every timeout:
  ``{"model_request": true, "model_name": NAME}`` (one part) is answered
  ``{"model_available": A, "model_loaded": L}``; when the model is not available Frigate sends
  ``[{"model_data": true, "model_name": NAME}, <the model file>]``, answered
  ``{"model_saved": S, "model_loaded": L}``. Frigate sends detection requests only after
  ``A and L`` or ``S and L``. This door says the model is available when NAME is the served
  model's file name, and compares a model file Frigate sends with the served one: the same
  bytes are a match (remembered, so the file is not sent again). Another model is refused, with
  the reason in both logs, unless ``--frigate-accept-model DIR`` is set: then a valid .tflite
  detection model is saved as ``DIR/NAME`` and the server reloads onto it (new workers load it
  while the old ones serve); the answer waits for the reload (Frigate waits 30 s for it) and
  says whether it loaded.

Frigate waits ``request_timeout_ms`` (200 ms by default) for a reply, then closes its socket,
opens a new one and counts "no detections". A request is therefore checked when it could be
handed to a worker: one older than ``--frigate-deadline`` is answered with zero rows at once and
counted ``expired`` (``streampi_results_total{stream="frigate",outcome="expired"}``), never
run. The door hands the server at most one batch per worker at a time (its *window*) and keeps
the rest in arrival order, so that a request waits in the server for at most one batch before a
worker takes it; requests from sockets Frigate has given up on expire at the door's hand-off
instead of costing an invoke.

Counters (``streampi ctl stats``; ``frigate.received == frigate.answered`` once idle):
``frigate.received``, ``frigate.answered``, ``frigate.ok`` (a result, with or without boxes),
``frigate.expired``, ``frigate.bad_frame`` (a request Frigate should not have sent: wrong
header, shape, dtype or size; logged with the reason), ``frigate.failed`` (the server answered
with an error), ``frigate.overloaded`` (more requests waiting than the door holds),
``frigate.shutdown``, ``frigate.handshakes``, ``frigate.unroutable`` (a reply to a socket
Frigate had already closed), ``frigate.max_waiting`` (the most requests the door held at once,
beyond those handed to the server), ``frigate.models_accepted`` and ``frigate.models_refused``
(model files Frigate sent with ``--frigate-accept-model``: served, or not, with the reason).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import math
import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from .. import protocol
from ..errors import StreampiError

log = logging.getLogger("streampi.frigate")

#: the stream name of Frigate's requests in results, metrics and policies
STREAM = "frigate"
#: rows of a reply (Frigate's detectors all answer 20 rows of 6 float32)
ROWS = 20
REPLY_BYTES = ROWS * 6 * 4
ZERO_REPLY = bytes(REPLY_BYTES)
#: decoders whose results carry boxes (the others cannot answer Frigate)
BOX_DECODERS = ("yolo", "ssd_postprocess", "anchors")
#: requests waiting in the door beyond its window, at most (per batch a worker can hold)
WAITING_PER_WINDOW = 8
#: a reason of a bad request is logged once, then at most once per this many seconds
LOG_EVERY_S = 60.0
#: messages read from the socket in one turn of the event loop, at most
READ_PER_TURN = 64
#: distinct request headers whose parse is remembered (each detector sends the same one)
HEADER_CACHE = 64


# socket calls on every request's path take plain ints: pyzmq's flag enums cost an enum
# operation per call (``zmq.SNDMORE | zmq.NOBLOCK`` in send_multipart, for each part)
_EVENTS, _RCVMORE, _POLLIN = int(zmq.EVENTS), int(zmq.RCVMORE), int(zmq.POLLIN)
_NOBLOCK, _MORE_NOBLOCK = int(zmq.NOBLOCK), int(zmq.SNDMORE | zmq.NOBLOCK)

_ROW = struct.Struct("=6f")  # one row: 6 float32 in the machine's order, as numpy's float32


def detections_to_reply(detections: list[dict], width: int, height: int) -> bytes:
    """streampi's detections (boxes in pixels of a ``width`` × ``height`` image, best first)
    as Frigate's reply: 20 × 6 float32 rows ``[class_id, score, ymin, xmin, ymax, xmax]`` in
    0..1, zero rows after the last (480 bytes, packed straight into the reply)."""
    if not detections:
        return ZERO_REPLY
    buf = bytearray(REPLY_BYTES)
    for i, det in enumerate(detections[:ROWS]):
        x0, y0, x1, y1 = det["box"]
        _ROW.pack_into(buf, i * _ROW.size, det["class"], det["score"], y0 / height, x0 / width, y1 / height,
                       x1 / width)
    return bytes(buf)


def detections_to_rows(detections: list[dict], width: int, height: int) -> np.ndarray:
    """:func:`detections_to_reply` as a 20 × 6 float32 array."""
    return np.frombuffer(detections_to_reply(detections, width, height), np.float32).reshape(ROWS, 6)


class BadRequest(ValueError):
    """A request Frigate's plugin would not send: answered with zero rows, counted, logged."""


class _Request:
    __slots__ = ("envelope", "parts", "fmt", "width", "height", "t_recv", "done")

    def __init__(self, envelope: list, parts: list, fmt: str, width: int, height: int, t_recv: float) -> None:
        self.envelope, self.parts, self.fmt = envelope, parts, fmt
        self.width, self.height, self.t_recv = width, height, t_recv
        self.done = False


class FrigateDoor:
    """Frigate's detectors, answered (see the module's docstring)."""

    def __init__(self, options: Any) -> None:
        self.endpoint: str = options.frigate
        self.deadline = float(options.frigate_deadline_ms) / 1e3
        self.pixel_format: str = options.frigate_pixel_format
        self.input_dtype: str = options.frigate_input_dtype
        self.limits = options.limits
        self.stats: collections.Counter[str] = collections.Counter()  # the server's, once open
        self.sock: Any = None
        self._waiting: collections.deque[_Request] = collections.deque()
        self._in_server = 0
        self._pumping = False
        self._taking = True
        self._seq = 0
        self._logged: dict[str, tuple[float, int]] = {}  # reason -> (last logged, times since)
        self._matching_names: set[str] = set()  # model names Frigate proved by content to be ours
        self._headers: dict[bytes, Any] = {}  # a request header's bytes -> its JSON, parsed once
        self._read_scheduled = False
        self._reader_fd: int | None = None
        self.accept_dir: Path | None = Path(options.frigate_accept_model) if options.frigate_accept_model else None
        self._accepting: dict[str, asyncio.Future] = {}  # sha256 of a model being saved and loaded -> its reply
        self._tasks: set[asyncio.Task] = set()
        self._served_key: tuple | None = None

    # -- the door interface -----------------------------------------------------------------
    async def open(self, server: Any) -> dict[str, str]:
        from ..decoders import make_decoder

        self.server = server
        self.stats = server.stats
        self.metrics = server.metrics
        kind = make_decoder(server.spec.outputs, server.config).kind
        if kind not in BOX_DECODERS:
            raise StreampiError(f"--frigate needs a detection model (a {', '.join(BOX_DECODERS)} decoder); "
                                f"{server.model_path.name} is decoded by '{kind}', which gives no boxes")
        self._served()
        if self.accept_dir is not None and not (self.accept_dir.is_dir() and os.access(self.accept_dir, os.W_OK)):
            raise StreampiError(f"--frigate-accept-model {self.accept_dir}: not a folder this server can write in")
        if self.endpoint.startswith("ipc://"):
            folder = os.path.dirname(self.endpoint[len("ipc://"):]) or "."
            if not os.path.isdir(folder):
                raise StreampiError(f"cannot bind --frigate {self.endpoint}: the folder {folder} does not exist "
                                    f"(with Frigate in a container, bind a folder both can see)")
        sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 200)  # the last replies still leave at shutdown
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a reply to a socket Frigate closed is counted, not lost unseen
        sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes)
        sock.setsockopt(zmq.RCVHWM, 1000)
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise StreampiError(f"cannot bind --frigate {self.endpoint}: {exc}") from exc
        self.sock = sock
        if server.options.curve_secret is not None:
            log.warning("--frigate %s is not CurveZMQ-authenticated (Frigate's zmq detector cannot be): bind it to "
                        "loopback, an ipc path or a network only Frigate reaches", self.endpoint)
        # read and written without futures: a reader callback on the socket's descriptor reads
        # every message waiting (as the server reads its own sockets), and replies leave from
        # the server's callbacks
        self._send_now = zmq.Socket.shadow(sock.underlying)
        bound = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        log.info("answering Frigate's zmq detector at %s (%s, %s tensors, deadline %.0f ms)", bound,
                 self.pixel_format, self.input_dtype, self.deadline * 1e3)
        return {"frigate": bound}

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader_fd = self._send_now.getsockopt(zmq.FD)
        self._loop.add_reader(self._reader_fd, self._on_readable)
        self._on_readable()  # what arrived before the reader was added
        try:
            await self._loop.create_future()  # until cancelled at shutdown
        finally:
            self._remove_reader()

    def _remove_reader(self) -> None:
        if self._reader_fd is not None:
            self._loop.remove_reader(self._reader_fd)
            self._reader_fd = None

    def _on_readable(self) -> None:
        """The socket's descriptor signalled (on an edge), or a turn left messages behind: read
        what is waiting, at most READ_PER_TURN messages a turn."""
        self._read_scheduled = False
        sock = self._send_now
        if self.sock is None:
            return
        getsockopt, recv = sock.getsockopt, sock.recv
        for _ in range(READ_PER_TURN):
            try:
                if not getsockopt(_EVENTS) & _POLLIN:  # (cheaper than raising zmq.Again)
                    return
                parts = [recv(_NOBLOCK, copy=False)]  # (recv_multipart, without its per-part enums)
                while getsockopt(_RCVMORE):
                    parts.append(recv(_NOBLOCK, copy=False))
            except zmq.ZMQError as exc:  # (not expected on a ROUTER; never a reason to stop serving)
                log.warning("receiving a Frigate request failed: %s", exc)
                return
            try:
                self._take(parts, time.perf_counter())
            except Exception:  # a bug here costs this request its boxes, not the door
                log.exception("handling a Frigate request failed")
                self.stats["frigate.internal"] += 1
        self._schedule_read()

    def _schedule_read(self) -> None:
        """Read in a coming turn even without a descriptor event: a turn stopped before the
        socket was empty, or a reply sent on it consumed the edge of a request that arrived
        meanwhile."""
        if not self._read_scheduled and self._reader_fd is not None:
            self._read_scheduled = True
            self._loop.call_soon(self._on_readable)

    def stop_taking(self) -> None:
        """No new requests; those waiting in the door (never handed to the server) get zero
        rows now: Frigate's next request finds this server gone and waits for it."""
        self._taking = False
        while self._waiting:
            self._answer(self._waiting.popleft(), ZERO_REPLY, "shutdown")

    async def close(self) -> None:
        for task in [*self._tasks, *self._accepting.values()]:  # a model being saved and loaded: no answer
            task.cancel()
        while self._waiting:  # (open failed after requests came: nothing waits, normally)
            self._answer(self._waiting.popleft(), ZERO_REPLY, "shutdown")
        if self._reader_fd is not None:
            self._remove_reader()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _served(self) -> tuple[Path, str]:
        """The served model's file and sha256 (read again when the server serves another file:
        a reload by Frigate's handshake or by `streampi ctl reload`), and the door's window."""
        server = self.server
        path = Path(server.model_path)
        try:
            st = path.stat()
            key = (str(path), st.st_size, st.st_mtime_ns)
        except OSError:
            key = (str(path), None, None)
        if key != self._served_key:
            self.model_path = path
            self.model_sha256 = hashlib.sha256(path.read_bytes()).hexdigest() if key[1] is not None else ""
            self.labels = tuple(server.config.labels or ())
            self.window = server.n_workers * (server.options.max_batch if server.spec.batchable else 1)
            self.max_waiting = WAITING_PER_WINDOW * self.window
            self._served_key = key
        return self.model_path, self.model_sha256

    # -- requests ----------------------------------------------------------------------------
    def _take(self, parts: list, t_recv: float) -> None:
        """One message from a Frigate detector: answer it now or queue it for the server."""
        # REQ's envelope: its identity, an empty delimiter, then the request's parts
        if len(parts) > 1 and len(parts[1]) == 0:  # (a REQ's: one identity, then the delimiter)
            cut: int | None = 1
        else:
            cut = next((i for i, p in enumerate(parts) if i > 0 and len(p) == 0), None)
        envelope, body = (parts[:cut + 1], parts[cut + 1:]) if cut is not None else (parts[:1], parts[1:])
        envelope = [p.bytes for p in envelope]
        if not body:
            self._bad(envelope, "an empty request (no header part)")
            return
        raw = body[0].bytes
        header = self._headers.get(raw)
        if header is None:
            try:
                header = json.loads(raw)
            except (UnicodeDecodeError, ValueError) as exc:
                self._bad(envelope, f"the header is not JSON ({exc})")
                return
            if isinstance(header, dict) and "shape" in header and len(self._headers) < HEADER_CACHE:
                self._headers[raw] = header  # (a detection request's: read-only from here on)
        if not isinstance(header, dict):
            self._bad(envelope, f"the header is a JSON {type(header).__name__}, not an object")
            return
        if "model_request" in header or "model_data" in header:
            self._handshake(envelope, header, body)
            return
        self.stats["frigate.received"] += 1
        if not self._taking:
            self._count_answer("shutdown")
            self._send(envelope, ZERO_REPLY)
            return
        try:
            fmt, data, width, height = self.tensor_frame(header, body)
        except BadRequest as exc:
            self._bad(envelope, str(exc), counted=True)
            return
        self._queue(envelope, fmt, data, width, height, t_recv)

    def _queue(self, envelope: list, fmt: str, data: Any, width: int, height: int, t_recv: float) -> None:
        """A checked detection request: into the door's queue, or answered now."""
        self._seq += 1
        frame = protocol.encode_frame(STREAM, self._seq, fmt, data, width, height)
        req = _Request(envelope, frame, fmt, width, height, t_recv)
        self._expire_stale(t_recv)
        if len(self._waiting) >= self.max_waiting:
            self._answer(req, ZERO_REPLY, "overloaded")
            self._log("overloaded", f"more than {self.max_waiting} Frigate requests are waiting for a worker; "
                                    f"answered with no detections (more detectors than this server can serve?)")
            return
        self._waiting.append(req)
        self.stats["frigate.max_waiting"] = max(self.stats["frigate.max_waiting"], len(self._waiting))
        self._pump()

    def tensor_frame(self, header: dict, body: list) -> tuple[str, Any, int, int]:
        """A detection request as a streampi frame ``(fmt, data, width, height)``, or
        :class:`BadRequest` saying what is wrong with it."""
        if len(body) != 2:
            raise BadRequest(f"a detection request has 2 parts (header, tensor), this one {len(body)}")
        shape, dtype = header.get("shape"), header.get("dtype")
        if not (isinstance(shape, list) and len(shape) == 4 and all(type(d) is int for d in shape)):
            raise BadRequest(f"shape must be 4 integers ([1, H, W, 3] or [1, 3, H, W]), got {shape!r}")
        want_dtype = "uint8" if self.input_dtype == "int" else "float32"
        if dtype != want_dtype:
            raise BadRequest(f"dtype {dtype!r}, but --frigate-input-dtype {self.input_dtype} means {want_dtype} "
                             f"(set it as Frigate's model.input_dtype)")
        if shape[0] != 1:
            raise BadRequest(f"one image per request (shape[0] == 1), got shape {shape}")
        if shape[3] == 3:
            layout, height, width = "nhwc", shape[1], shape[2]
        elif shape[1] == 3:
            layout, height, width = "nchw", shape[2], shape[3]
        else:
            raise BadRequest(f"shape {shape} has no 3-channel axis: Frigate's model.input_tensor must be nhwc or nchw")
        if width < 1 or height < 1 or width * height > self.limits.max_pixels:
            raise BadRequest(f"a tensor of {width}×{height} is outside 1 .. {self.limits.max_pixels} pixels")
        itemsize = 1 if dtype == "uint8" else 4
        payload = body[1].buffer
        if len(payload) != width * height * 3 * itemsize:
            raise BadRequest(f"shape {shape} of {dtype} needs {width * height * 3 * itemsize} bytes, "
                             f"got {len(payload)}")
        if layout == "nhwc" and dtype == "uint8" and self.pixel_format != "yuv":
            return self.pixel_format, payload, width, height  # as it came: no copy
        pixels = np.frombuffer(payload, np.uint8 if dtype == "uint8" else np.float32).reshape(shape)
        pixels = pixels[0] if layout == "nhwc" else pixels[0].transpose(1, 2, 0)
        if dtype == "float32":
            scale = 255.0 if self.input_dtype == "float" else 1.0
            pixels = np.clip(np.rint(np.nan_to_num(pixels * scale)), 0, 255).astype(np.uint8)
        if self.pixel_format != "yuv":
            return self.pixel_format, np.ascontiguousarray(pixels), width, height
        if width % 2 or height % 2:
            raise BadRequest(f"a yuv tensor needs an even width and height, got {width}×{height}")
        # Frigate's yuv tensor repeats each chroma sample of its I420 frame over 2×2 pixels:
        # taking one of each 2×2 gives that I420 frame back, exactly
        i420 = np.empty(width * height * 3 // 2, np.uint8)
        quarter = (width // 2) * (height // 2)
        i420[:width * height] = pixels[:, :, 0].ravel()
        i420[width * height:width * height + quarter] = pixels[0::2, 0::2, 1].ravel()
        i420[width * height + quarter:] = pixels[0::2, 0::2, 2].ravel()
        return "i420", i420, width, height

    def _expire_stale(self, now: float) -> None:
        """Answer the waiting requests Frigate has given up on (the oldest are first)."""
        while self._waiting and now - self._waiting[0].t_recv > self.deadline:
            self._answer(self._waiting.popleft(), ZERO_REPLY, "expired")

    def _pump(self) -> None:
        """Hand the server waiting requests while the window has room (never re-entered:
        a frame the server answers at once calls back into here)."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._waiting and self._in_server < self.window:
                req = self._waiting.popleft()
                if time.perf_counter() - req.t_recv > self.deadline:
                    self._answer(req, ZERO_REPLY, "expired")
                    continue
                self._in_server += 1
                self.server.submit(req.parts, lambda result, req=req: self._on_result(req, result))
                req.parts = None  # the server holds the frame now
        finally:
            self._pumping = False

    def _on_result(self, req: _Request, result: dict) -> None:
        """The server's one answer to a request (called on the server's loop)."""
        self._in_server -= 1
        try:
            if result.get("ok"):
                reply = detections_to_reply(result.get("detections") or [], req.width, req.height)
                self._answer(req, reply, "ok")
            else:
                error = result.get("error") or {}
                self._log(f"failed.{error.get('code')}", f"a Frigate request was answered with no detections: "
                                                         f"{error.get('code')}: {error.get('message')}")
                self._answer(req, ZERO_REPLY, "failed", metric=False)  # (the server counted its error)
        finally:
            self._pump()

    # -- answers ----------------------------------------------------------------------------
    def _answer(self, req: _Request, payload: bytes, outcome: str, metric: bool = True) -> None:
        if req.done:
            self.stats["frigate.errors.double_answer"] += 1
            log.error("internal error: a Frigate request answered twice")
            return
        req.done = True
        req.parts = None
        self._count_answer(outcome, metric=metric and outcome != "ok")  # (counted before Frigate can see it)
        self._send(req.envelope, payload)

    def _count_answer(self, outcome: str, metric: bool = True) -> None:
        self.stats["frigate.answered"] += 1
        self.stats[f"frigate.{outcome}"] += 1
        if metric and self.metrics is not None:  # what the server answered is in its metrics already
            self.metrics.received.inc()
            self.metrics.result(STREAM, outcome, None)

    def _bad(self, envelope: list, reason: str, counted: bool = False) -> None:
        """A message Frigate's plugin would not send: zero rows, a count, a log line."""
        if not counted:
            self.stats["frigate.received"] += 1
        self._count_answer("bad_frame")
        self._send(envelope, ZERO_REPLY)
        self._log("bad:" + reason, f"bad Frigate request: {reason}")

    def _send(self, envelope: list, payload: bytes) -> None:
        sock = self._send_now
        try:  # (send_multipart, part by part: a ROUTER refuses at the first part or not at all)
            for part in envelope:
                sock.send(part, _MORE_NOBLOCK)
            sock.send(payload, _NOBLOCK)
        except zmq.ZMQError as exc:  # the socket that asked is gone (Frigate timed out and reset it)
            self.stats["frigate.unroutable"] += 1
            if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                self._log("send", f"a reply to Frigate could not be sent: {exc}")
        if self._reader_fd is not None and sock.getsockopt(_EVENTS) & _POLLIN:
            self._schedule_read()  # (the send consumed the descriptor's edge of a waiting request)

    def _log(self, key: str, message: str) -> None:
        """Log ``message`` the first time, then at most every LOG_EVERY_S per ``key``."""
        now = time.monotonic()
        last, since = self._logged.get(key, (-math.inf, 0))
        if now - last >= LOG_EVERY_S:
            log.warning("%s%s", message, f" (and {since} more like it)" if since else "")
            self._logged[key] = (now, 0)
        else:
            self._logged[key] = (last, since + 1)

    # -- the model handshake -----------------------------------------------------------------
    def _handshake(self, envelope: list, header: dict, body: list) -> None:
        self.stats["frigate.handshakes"] += 1
        name = header.get("model_name")
        served, sha256 = self._served()
        if not isinstance(name, str) or not name:
            reply: dict[str, Any] = {"error": "model_name missing"}
        elif "model_request" in header:
            ours = name == served.name or name in self._matching_names
            reply = {"model_available": ours, "model_loaded": ours, "model_name": name}
            if ours:
                reply["message"] = f"streampi serves {served.name} ({sha256[:12]})"
            else:
                reply["message"] = f"streampi serves {served.name}; send {name} to " + \
                    ("serve it" if self.accept_dir is not None else "compare")
                self._log(f"model:{name}", f"Frigate's model.path is {name}, this server serves {served.name}: "
                                           f"asked Frigate for the file (docs/frigate.md)")
        else:
            data = body[1].buffer if len(body) >= 2 else b""
            digest = hashlib.sha256(data).hexdigest() if len(body) >= 2 else ""
            if len(body) >= 2 and digest == sha256:
                self._matching_names.add(name)
                reply = {"model_saved": True, "model_loaded": True, "model_name": name,
                         "message": f"{name} is the model streampi serves ({served.name})"}
                log.info("Frigate's model %s is the served model %s (same bytes)", name, served.name)
            elif self.accept_dir is not None and len(body) >= 2:
                self._start_accepting(envelope, name, bytes(data), digest)
                return  # answered once the model is saved and loaded (or refused)
            else:
                reply = {"model_saved": False, "model_loaded": False, "model_name": name,
                         "message": f"streampi serves {served.name} ({sha256[:12]}), not {name}; it does not "
                                    f"load a model Frigate sends unless started with --frigate-accept-model DIR: "
                                    f"serve that model, or point Frigate's model.path at {served.name} "
                                    f"(streampi frigate-config)"}
                self._log(f"model_data:{name}", f"Frigate sent model {name} ({len(data)} bytes), which is not the "
                                                f"served {served.name}: Frigate's detector will not start. Serve "
                                                f"that model, start with --frigate-accept-model DIR, or set "
                                                f"Frigate's model.path to {served.name} (`streampi frigate-config` "
                                                f"prints the config)")
        self._send(envelope, json.dumps(reply).encode())

    def _start_accepting(self, envelope: list, name: str, data: bytes, digest: str) -> None:
        """Save and serve the model Frigate sent; its handshake is answered when that is done.
        Detectors that send the same model meanwhile (they start together) wait for the same
        reload."""
        pending = self._accepting.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._accept_model(name, data, digest))
            self._accepting[digest] = pending
            pending.add_done_callback(lambda _f: self._accepting.pop(digest, None))

        async def answer() -> None:
            reply = await asyncio.shield(pending)
            self._send(envelope, json.dumps({**reply, "model_name": name}).encode())

        task = asyncio.ensure_future(answer())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_model(self, name: str, data: bytes, digest: str) -> dict[str, Any]:
        """``{"model_saved", "model_loaded", "message"}`` for the model file Frigate sent."""
        from ..decoders import make_decoder
        from ..model import Model, check_tflite_file

        def refuse(why: str, saved: bool = False) -> dict[str, Any]:
            log.error("Frigate's model %s (%d bytes, %s) not served: %s", name, len(data), digest[:12], why)
            self.stats["frigate.models_refused"] += 1
            return {"model_saved": saved, "model_loaded": False, "message": f"streampi: {why}"}

        base = os.path.basename(name)
        if base != name or not protocol_name_ok(base):
            return refuse(f"the model name {name!r} is not a plain file name ending in .tflite")
        target = self.accept_dir / base  # type: ignore[operator]
        tmp = self.accept_dir / f".{base}.{os.getpid()}.partial"  # type: ignore[operator]
        loop = asyncio.get_running_loop()

        def save_and_check() -> str | None:
            """Write the file aside, check it is a TFLite model, put it in place, then check that
            it gives boxes (with its sidecar ``NAME.json`` in DIR, if one is there)."""
            from ..config import load_config

            try:
                tmp.write_bytes(data)
                check_tflite_file(tmp)
                outputs = Model(tmp).outputs
                os.replace(tmp, target)
                kind = make_decoder(outputs, load_config(target)).kind
            except (StreampiError, ValueError, OSError) as exc:
                return f"{name} is not a model streampi can serve: {exc}"
            finally:
                tmp.unlink(missing_ok=True)
            if kind not in BOX_DECODERS:
                target.unlink(missing_ok=True)
                return f"{name} is decoded by '{kind}', which gives no boxes (Frigate needs a detection model)"
            return None

        why = await loop.run_in_executor(None, save_and_check)
        if why is not None:
            return refuse(why)
        log.info("Frigate sent model %s (%d bytes, %s): saved as %s; reloading onto it", name, len(data),
                 digest[:12], target)
        result = await self.server.reload(str(target))
        if not result.get("ok"):
            return refuse(f"saved as {target}, but the reload failed: {result.get('error')}", saved=True)
        self._served()
        self.stats["frigate.models_accepted"] += 1
        return {"model_saved": True, "model_loaded": True,
                "message": f"streampi saved {name} as {target} and serves it ({digest[:12]})"}


def protocol_name_ok(name: str) -> bool:
    """A model file name Frigate may give: letters, digits, ``._-``, ending in .tflite."""
    return (name.endswith(".tflite") and not name.startswith(".") and len(name) <= 255
            and all(c.isalnum() or c in "._-" for c in name))
