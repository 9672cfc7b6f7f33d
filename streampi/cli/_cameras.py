"""``streampi produce`` for cameras: one runner per camera, each reading its source on the source's
own thread, taking the newest frame at the camera's ``fps``, gating it on motion when asked, and
sending it; and ``--config cameras.toml``, several cameras in one process.

A runner never exits on a camera fault (the source reopens the camera with back-off) nor on a
server that does not answer (the frame is counted unsent, the next one tries again). Every frame
decoded ends in exactly one count::

    decoded = sent + replaced + skipped_motion + unsent

``replaced``: superseded by a newer frame before it was taken (the camera sends faster than
``fps``), or held by the producer for want of credit and then replaced; ``skipped_motion``: the
motion gate kept it back; ``unsent``: the server did not take it in time. The counts, and
``reconnects``, are printed every ``--stats-every`` seconds and at the end.

Cameras run as threads of one process: decoding runs in FFmpeg (PyAV releases the GIL) and the
rest is a few Python calls per frame; bench/cameras.py measured threads against one process per
camera for four streams (docs/cameras.md).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StreampiError
from ..sources.live import LiveSource

log = logging.getLogger("streampi.camera")

DEFAULT_LIVE_FPS = 5.0
SEND_TIMEOUT_S = 2.0


@dataclass
class Camera:
    """One camera's settings: a ``[[camera]]`` table of cameras.toml, or produce's flags."""

    stream: str
    source: str
    connect: str | None = None
    protocol: str = "1.1"
    fps: float | None = None  # None: 5 for a camera, 30 for synthetic frames and files
    decoder: str = "pyav"
    threads: str | None = None
    transport: str = "tcp"
    ffmpeg_codec: str | None = None
    size: tuple[int, int] = (320, 240)
    fmt: str | None = None  # synthetic: rgb; a device: its own
    motion: bool = False
    idle_every: float = 10.0
    motion_hold: float = 2.0
    curve_secret: str | None = None
    curve_server: str | None = None
    shared_memory: bool = False


def motion_gate(idle_every: float, hold: float) -> Any:
    """A :class:`streampi.sources.motion.MotionGate`, imported only when ``--motion`` asks."""
    try:
        from ..sources.motion import MotionGate
    except ModuleNotFoundError as exc:
        if exc.name not in ("streampi.sources.motion", "streampi._ext._motion"):
            raise
        raise StreampiError("--motion: the motion gate is not available in this streampi (no "
                            "streampi.sources.motion)") from None
    return MotionGate(idle_every=idle_every, hold=hold)


@dataclass
class Counts:
    decoded: int = 0
    sent: int = 0
    replaced: int = 0
    skipped_motion: int = 0
    unsent: int = 0
    reconnects: int = 0
    state: str = ""

    def line(self, stream: str) -> str:
        extra = f" unsent {self.unsent}" if self.unsent else ""
        return (f"camera {stream}: decoded {self.decoded} sent {self.sent} replaced {self.replaced} "
                f"skipped_motion {self.skipped_motion}{extra} reconnects {self.reconnects} ({self.state})")


class CameraRunner:
    """One camera: its source (opened by :meth:`open`, in the caller's thread, so that a source
    that cannot be opened is said before anything starts), its producer, its gate, its loop."""

    def __init__(self, camera: Camera, stop: threading.Event, *, count: int = 0, seconds: float = 0.0) -> None:
        self.camera, self.stop = camera, stop
        self.count, self.seconds = count, seconds
        self.source: Any = None
        self.producer: Any = None
        self.gate: Any = None
        self.sends = self.skipped = self.unsent = 0
        self.error: BaseException | None = None
        self._server_down = self._gate_failed = False
        self.thread = threading.Thread(target=self._run_safely, name=f"produce {camera.stream}", daemon=True)

    def open(self) -> None:
        from ..client import Producer
        from ..sources import open_source

        cam = self.camera
        if cam.motion:
            self.gate = motion_gate(cam.idle_every, cam.motion_hold)
        self.source = open_source(cam.source, size=cam.size, fmt=cam.fmt, seed=None, loop=True, decoder=cam.decoder,
                                  threads=cam.threads, transport=cam.transport, ffmpeg_codec=cam.ffmpeg_codec,
                                  wait=True)
        try:
            self.producer = Producer(cam.connect, stream=cam.stream, curve_secret=cam.curve_secret,
                                     curve_server=cam.curve_server, protocol_version=cam.protocol,
                                     shared_memory=cam.shared_memory,
                                     when_full="replace" if cam.protocol == "1.1" else None)
        except BaseException:
            self.source.close()
            raise

    @property
    def fps(self) -> float:
        if self.camera.fps is not None:
            return self.camera.fps
        return DEFAULT_LIVE_FPS if self.source.live else 30.0

    def counts(self) -> Counts:
        src = self.source
        dropped = self.producer.dropped if self.producer is not None else 0
        if isinstance(src, LiveSource):
            stats = src.stats()
            return Counts(decoded=stats["decoded"], sent=self.sends - dropped,
                          replaced=stats["replaced"] + dropped, skipped_motion=self.skipped,
                          unsent=self.unsent, reconnects=stats["reconnects"],
                          state=stats["state"] + (f": {stats['reason']}" if stats["state"] == "down" else ""))
        taken = self.sends + self.skipped + self.unsent
        return Counts(decoded=taken, sent=self.sends - dropped, replaced=dropped, skipped_motion=self.skipped,
                      unsent=self.unsent, state="reading")

    def _run_safely(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # a bug, not a camera fault: said, and the others go on
            self.error = exc
            log.error("camera %s stopped: %s: %s", self.camera.stream, type(exc).__name__, exc)

    def _next(self, frames: Any, timeout: float) -> Any:
        if isinstance(self.source, LiveSource):
            return self.source.take(timeout)
        return next(frames, None)

    def _run(self) -> None:
        period = 1.0 / self.fps if self.fps > 0 else 0.0
        frames = None if isinstance(self.source, LiveSource) else iter(self.source)
        t0 = tick = time.monotonic()
        while not self.stop.is_set():
            if self.count and self.sends + self.skipped + self.unsent >= self.count:
                break
            if self.seconds and time.monotonic() - t0 >= self.seconds:
                break
            if period:  # at most fps frames a second: wait for the tick, then take the newest
                if self.stop.wait(max(0.0, tick - time.monotonic())):
                    break
                tick = max(tick + period, time.monotonic())
            frame = self._next(frames, 0.5)
            if frame is None:
                if frames is not None:
                    break  # a file's last frame went out
                continue
            if self.gate is not None and not self._gate_passes(frame, frames is not None):
                self.skipped += 1
                continue
            self._send(frame)

    def _gate_passes(self, frame: Any, recorded: bool) -> bool:
        """The motion gate's decision. A recording is gated on its own clock (its frames' pts: a
        file read faster than real time keeps its idle and hold seconds), a camera on the wall
        clock. A frame the gate cannot read (a corrupt JPEG part) is sent: the server says why."""
        from ..errors import FrameError

        try:
            if recorded and frame.pts is not None:
                return bool(self.gate.check(frame, frame.pts))
            return bool(self.gate.check(frame))
        except FrameError as exc:
            if not self._gate_failed:
                self._gate_failed = True
                log.warning("camera %s: the motion gate cannot read a frame (%s); such frames are sent",
                            self.camera.stream, exc)
            return True

    def _send(self, frame: Any) -> None:
        meta: dict[str, Any] = {}
        if frame.label is not None:
            meta["label"] = frame.label
        if frame.pts is not None:
            meta["pts"] = round(frame.pts, 6)
        try:
            self.producer.send(frame.data, fmt=frame.fmt, width=frame.width, height=frame.height,
                               ts=frame.captured, meta=meta or None, timeout=SEND_TIMEOUT_S)
        except (TimeoutError, ConnectionError) as exc:
            self.unsent += 1
            if not self._server_down:
                self._server_down = True
                log.warning("camera %s: the server does not take frames: %s", self.camera.stream, exc)
            return
        self.sends += 1
        if self._server_down:
            self._server_down = False
            log.info("camera %s: the server takes frames again", self.camera.stream)

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
        if self.producer is not None:
            self.producer.close()


def run_cameras(cameras: list[Camera], *, count: int = 0, seconds: float = 0.0, stats_every: float = 60.0,
                stop: threading.Event | None = None) -> list[Counts]:
    """Run every camera until ``stop`` is set (SIGTERM, SIGINT), or each has taken ``count``
    frames, or ``seconds`` passed; print each camera's counts every ``stats_every`` seconds
    (0: only at the end) to standard error. Returns the final counts."""
    stop = stop or threading.Event()
    runners = [CameraRunner(cam, stop, count=count, seconds=seconds) for cam in cameras]
    opened: list[CameraRunner] = []
    try:
        for runner in runners:  # each first open in turn: a source that cannot be opened is said now
            runner.open()
            opened.append(runner)
        for runner in runners:
            runner.thread.start()
        last = time.monotonic()
        while any(r.thread.is_alive() for r in runners):
            if stop.wait(0.2):
                break
            if stats_every and time.monotonic() - last >= stats_every:
                last = time.monotonic()
                for r in runners:
                    print(r.counts().line(r.camera.stream), file=sys.stderr, flush=True)
    finally:
        stop.set()
        for r in runners:
            if r.thread.is_alive():
                r.thread.join(10)
        for r in opened:
            r.close()
    final = [r.counts() for r in runners]
    for r, counts in zip(runners, final):
        print(counts.line(r.camera.stream), file=sys.stderr, flush=True)
    failed = [r for r in runners if r.error is not None]
    if failed:
        raise StreampiError("; ".join(f"camera {r.camera.stream}: {type(r.error).__name__}: {r.error}"
                                      for r in failed))
    return final


# -- cameras.toml ---------------------------------------------------------------------------------
_KEYS: dict[str, type | tuple[type, ...]] = {
    "stream": str, "source": str, "connect": str, "protocol": str, "fps": (int, float), "decoder": str,
    "threads": str, "transport": str, "ffmpeg-codec": str, "size": str, "fmt": str, "motion": bool,
    "idle-every": (int, float), "motion-hold": (int, float), "curve-secret": str, "curve-server": str,
    "shared-memory": bool,
}
_TOP_KEYS = {"stats-every": (int, float), "camera": list, "defaults": dict}


def _check(path: Path, where: str, key: str, value: Any, kinds: type | tuple[type, ...]) -> None:
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and kinds is not bool)
    if not ok:
        names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise StreampiError(f"{path}: {where}{key}: expected {names}, got {value!r}")


def _table(path: Path, where: str, table: dict[str, Any]) -> dict[str, Any]:
    import difflib

    out = {}
    for key, value in table.items():
        norm = key.replace("_", "-")
        if norm not in _KEYS:
            near = difflib.get_close_matches(norm, list(_KEYS), n=1)
            raise StreampiError(f"{path}: {where}unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        _check(path, where, key, value, _KEYS[norm])
        out[norm.replace("-", "_")] = value
    return out


def load_cameras(path: str | Path) -> tuple[list[Camera], dict[str, Any]]:
    """The cameras of a cameras.toml (contrib/cameras.toml shows every key) and its top-level
    settings (``stats-every``). Every mistake names the file, the camera and the key."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    from ..formats import FORMATS
    from ..protocol import valid_stream
    from ..sources import DECODERS
    from ._argtypes import frame_size

    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise StreampiError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise StreampiError(f"{path}: not valid TOML: {exc}") from None
    for key in doc:
        if key.replace("_", "-") not in _TOP_KEYS:
            raise StreampiError(f"{path}: unknown top-level key {key!r} (expected [defaults], [[camera]] and "
                                f"stats-every)")
    settings = {"stats_every": float(doc.get("stats-every", doc.get("stats_every", 60.0)))}
    defaults = _table(path, "[defaults] ", doc.get("defaults", {}))
    tables = doc.get("camera", [])
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise StreampiError(f"{path}: no cameras: add one [[camera]] table per camera, each with stream and source")
    cameras, seen = [], set()
    for i, table in enumerate(tables):
        where = f"camera {table.get('stream', i + 1)}: "
        values = {**defaults, **_table(path, where, table)}
        for need in ("stream", "source"):
            if need not in values:
                raise StreampiError(f"{path}: {where}{need} is missing")
        if not valid_stream(values["stream"]):
            raise StreampiError(f"{path}: {where}stream must be 1-64 characters of [A-Za-z0-9._-], not starting "
                                f"with '_'")
        if values["stream"] in seen:
            raise StreampiError(f"{path}: {where}a second camera with the same stream name")
        seen.add(values["stream"])
        choices = {"protocol": ("1.1", "1"), "decoder": DECODERS, "threads": ("1", "auto"),
                   "transport": ("tcp", "udp"), "fmt": FORMATS}
        for key, allowed in choices.items():
            if key in values and values[key] not in allowed:
                raise StreampiError(f"{path}: {where}{key} must be one of {', '.join(allowed)}, got {values[key]!r}")
        for key in ("fps", "idle_every", "motion_hold"):
            if key in values and not values[key] >= 0:
                raise StreampiError(f"{path}: {where}{key.replace('_', '-')} must be >= 0, got {values[key]!r}")
        if "size" in values:
            try:
                values["size"] = frame_size(values["size"])
            except Exception as exc:
                raise StreampiError(f"{path}: {where}size: {exc}") from None
        if "fps" in values:
            values["fps"] = float(values["fps"])
        cameras.append(Camera(**values))
    return cameras, settings

