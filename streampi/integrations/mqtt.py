"""MQTT and Home Assistant: what streampi publishes on a broker, decided without touching one.

The door to MQTT is a bridge process (:mod:`streampi.integrations.mqtt_bridge`, ``streampi
mqtt``, also started by ``streampi serve --mqtt URL``) that reads the server's results socket
(``_events``, ``_snapshots`` and every answer) and its control socket. This module is its
core, in the sans-I/O manner: :class:`MqttState` takes results, events, snapshots, the
server's status and the broker's comings and goings, and returns the :class:`Message` list
to publish; the driver only moves bytes. It imports no MQTT client.

Topics, under a prefix (default ``streampi``; docs/integrations.md):

- ``<prefix>/available``: ``online`` / ``offline`` (retained; ``offline`` is also the last
  will, and is published while the server does not answer its control socket);
- ``<prefix>/events``: each event of the server (``new`` / ``update`` / ``end``, JSON);
- ``<prefix>/<stream>/<label>``: the objects of that label in view now (retained);
- ``<prefix>/<stream>/<label>/snapshot`` and ``<prefix>/<stream>/snapshot``: the latest best
  snapshot (JPEG bytes, retained) of that label / of any label on the stream;
- ``<prefix>/stats``: per stream fps in, processed, dropped, inference ms, and worker health;
- ``<discovery prefix>/{binary_sensor,sensor,camera}/<node>/<object>/config``: Home
  Assistant's MQTT discovery (retained), sent again when Home Assistant says ``online`` on
  ``<discovery prefix>/status``.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..errors import StreampiError

DEFAULT_PREFIX = "streampi"
DEFAULT_DISCOVERY_PREFIX = "homeassistant"
DEFAULT_STATS_INTERVAL = 60.0
PASSWORD_ENV = "STREAMPI_MQTT_PASSWORD"
SCHEMES = {"mqtt": 1883, "mqtts": 8883}
#: events kept while the broker is away (oldest dropped past it, counted and logged)
EVENT_BACKLOG = 1000
#: streams given entities at most (the server's default --max-streams): stream names come from
#: producers, and Home Assistant should not get a device with a thousand cameras from a typo loop
MAX_STREAMS = 256
#: characters Home Assistant allows in a discovery topic's node and object ids
_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
#: a topic level of ours: no wildcard, no separator, not empty
_LEVEL_UNSAFE = re.compile(r"[+#/\x00]")


class MqttConfigError(StreampiError):
    """A broker URL, a password source or a prefix that cannot be used."""


def safe_id(text: str) -> str:
    """``text`` with what Home Assistant refuses in an id (anything but ``[a-zA-Z0-9_-]``) as ``_``."""
    return _ID_UNSAFE.sub("_", text) or "_"


def check_prefix(prefix: str, what: str = "prefix") -> str:
    """A topic prefix: levels separated by ``/``, none empty, no wildcard."""
    levels = prefix.split("/")
    if not prefix or any(not lv or "+" in lv or "#" in lv or "\x00" in lv for lv in levels):
        raise MqttConfigError(f"MQTT {what} {prefix!r}: topic levels separated by '/', none empty, no '+' or '#'")
    return prefix


@dataclass(frozen=True)
class Broker:
    """Where the broker is and who to be there (from ``mqtt://[user[:pass]@]host[:port]``)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @property
    def url(self) -> str:
        """The URL without its password (what is logged and passed on)."""
        user = f"{urllib.parse.quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"


def parse_broker(url: str, *, password_file: str | None = None, ca_file: str | None = None,
                 environ: dict[str, str] | None = None) -> tuple[Broker, list[str]]:
    """The broker ``url`` names, with its password from ``password_file`` (first line), else
    the environment (:data:`PASSWORD_ENV`), else the URL itself; and the warnings to show
    (a password in the URL is visible to every user of the machine in the process list).
    Raises :class:`MqttConfigError` saying what is wrong."""
    environ = os.environ if environ is None else environ
    warnings: list[str] = []
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise MqttConfigError(f"MQTT broker {url!r}: expected mqtt://[user[:password]@]host[:port] or mqtts://...")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttConfigError(f"MQTT broker {url!r}: a broker URL has no path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise MqttConfigError(f"MQTT broker {url!r}: the port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise MqttConfigError(f"MQTT broker {url!r}: no host")
    if port == 0:
        raise MqttConfigError(f"MQTT broker {url!r}: the port must be a number from 1 to 65535")
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    if password is not None:
        warnings.append(f"the MQTT password is in the broker URL, where any user of this machine can read it "
                        f"(the process list); use --mqtt-password-file or {PASSWORD_ENV}")
    if password_file is not None:
        try:
            with open(password_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise MqttConfigError(f"cannot read the MQTT password file {password_file}: "
                                  f"{exc.strerror or exc}") from None
    elif environ.get(PASSWORD_ENV):
        password = environ[PASSWORD_ENV]
    if password is not None and username is None:
        raise MqttConfigError(f"MQTT broker {url!r}: a password needs a user name (mqtt://USER@host)")
    tls = parts.scheme == "mqtts"
    if ca_file is not None:
        if not tls:
            raise MqttConfigError("--mqtt-ca is for a TLS broker: use an mqtts:// URL")
        if not os.path.isfile(ca_file):
            raise MqttConfigError(f"MQTT CA file {ca_file}: no such file")
    return Broker(parts.hostname, port or SCHEMES[parts.scheme], tls, username, password, ca_file), warnings


@dataclass
class Message:
    """One publication: ``payload`` is bytes or text; ``kind`` tells the driver how to
    deliver it (``event``: once, at most, kept while the broker is away; ``state``: the
    latest value, sent again on every connection; ``config``: discovery)."""

    topic: str
    payload: bytes | str
    retain: bool = False
    qos: int = 0
    kind: str = "state"


@dataclass
class _StreamWindow:
    """A stream's answers since the last stats message."""

    answered: int = 0
    ok: int = 0
    dropped: int = 0
    errors: int = 0
    infer_ms_sum: float = 0.0
    infer_n: int = 0


class MqttState:
    """What the bridge knows and owes the broker (see the module's docstring for the topics).

    ``labels``: the model's labels (its label sidecar), which limit the entities announced
    (``None``: any label seen in an event); ``announce``: labels to announce for every stream
    as soon as it is seen (default: all of ``labels``); ``node``: the Home Assistant device
    and node id of this server (default: the prefix and the host name)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, discovery_prefix: str | None = DEFAULT_DISCOVERY_PREFIX, *,
                 node: str | None = None, labels: list[str] | None = None, announce: list[str] | None = None,
                 model: dict | None = None, clock: Any = time.time) -> None:
        self.prefix = check_prefix(prefix)
        self.discovery_prefix = check_prefix(discovery_prefix, "discovery prefix") if discovery_prefix else None
        self.node = safe_id(node or f"{prefix}_{socket.gethostname()}")
        self.clock = clock
        self.model = dict(model or {})
        self.labels: set[str] | None = None
        self.announce: list[str] = []
        self.streams: set[str] = set()  # seen on the results socket
        self.announced: set[tuple[str, str]] = set()  # (stream, label) with entities
        self.active: dict[str, tuple[str, str]] = {}  # object id -> (stream, label): counts come from these
        self.counts: dict[tuple[str, str], int] = {}  # published counts (0 once an object has gone)
        self.set_labels(labels, announce)
        self.snapshots: dict[str, bytes] = {}  # topic -> the latest JPEG (retained state, sent again on connect)
        self.available = False  # the server answers its control socket
        self._window: dict[str, _StreamWindow] = {}
        self._window_start = clock()
        self.counters = {"events": 0, "snapshots": 0, "bad_events": 0, "streams_over_limit": 0}

    # -- configuration -------------------------------------------------------------------------
    def set_labels(self, labels: list[str] | None, announce: list[str] | None = None) -> list[Message]:
        """The model's labels and those announced for every stream (what to announce for the
        streams already seen is returned); a label asked for that the model does not have is a
        :class:`MqttConfigError`."""
        self.labels = set(labels) if labels else None
        if announce is not None:
            unknown = [lb for lb in announce if self.labels is not None and lb not in self.labels]
            if unknown:
                raise MqttConfigError(f"--mqtt-labels: the model has no label {', '.join(map(repr, unknown))} "
                                      f"(its labels: {', '.join(sorted(self.labels or ()))})")
            self.announce = list(announce)
        else:
            self.announce = list(labels or [])
        out: list[Message] = []
        for stream in sorted(self.streams):
            for label in self.announce:
                out += self._announce(stream, label)
        return out

    # -- topics --------------------------------------------------------------------------------
    def topic(self, *levels: str) -> str:
        return "/".join((self.prefix, *(_LEVEL_UNSAFE.sub("_", lv) for lv in levels)))

    @property
    def availability_topic(self) -> str:
        return self.topic("available")

    @property
    def status_topic(self) -> str | None:
        """Where Home Assistant says ``online`` when it starts (its birth message)."""
        return f"{self.discovery_prefix}/status" if self.discovery_prefix else None

    # -- what comes in -------------------------------------------------------------------------
    def on_result(self, result: dict) -> list[Message]:
        """Count one answer of the server toward the next stats message; a stream seen for
        the first time gets its entities."""
        stream = result.get("stream")
        if not isinstance(stream, str):
            return []
        error = result.get("error")
        return self.answer(stream, bool(result.get("ok")), error.get("code") if isinstance(error, dict) else None,
                           (result.get("timing") or {}).get("infer_ms"))

    def answer(self, stream: str, ok: bool, code: str | None = None, infer_ms: Any = None) -> list[Message]:
        """:meth:`on_result` with the fields read (what the bridge decodes of each answer)."""
        if stream.startswith("_"):
            return []
        w = self._window.get(stream)
        if w is None:
            w = self._window[stream] = _StreamWindow()
        w.answered += 1
        if ok:
            w.ok += 1
            if isinstance(infer_ms, (int, float)) and math.isfinite(infer_ms):
                w.infer_ms_sum += infer_ms
                w.infer_n += 1
        elif code in ("dropped", "overloaded"):
            w.dropped += 1
        else:
            w.errors += 1
        return self._see(stream)

    def _see(self, stream: str) -> list[Message]:
        """A stream's entities, the first time it is seen (up to :data:`MAX_STREAMS` streams)."""
        if stream in self.streams:
            return []
        if len(self.streams) >= MAX_STREAMS:
            self.counters["streams_over_limit"] += 1
            return []
        self.streams.add(stream)
        out = self._discover_stream(stream)
        for label in self.announce:
            out += self._announce(stream, label)
        return out

    def on_event(self, event: Any) -> list[Message]:
        """One ``_events`` payload (docs/integrations.md): published as JSON, and the
        counts of its stream and labels. A payload that is not an event is counted
        (``bad_events``) and skipped."""
        try:
            kind, after, before = event["type"], event["after"], event.get("before")
            obj_id, stream, label = str(after["id"]), str(after["stream"]), str(after["label"])
            if kind not in ("new", "update", "end"):
                raise ValueError(kind)
            payload = json.dumps(event, separators=(",", ":"), default=_json_default)
        except (KeyError, TypeError, ValueError):
            self.counters["bad_events"] += 1
            return []
        self.counters["events"] += 1
        out: list[Message] = []
        touched = {self.active.get(obj_id)} if obj_id in self.active else set()
        if isinstance(before, dict) and "label" in before:
            touched.add((stream, str(before["label"])))
        if kind == "end":
            self.active.pop(obj_id, None)
        else:
            self.active[obj_id] = (stream, label)
        touched.add((stream, label))
        out += self._see(stream)
        if stream in self.streams:
            out += self._announce(stream, label)
        out += self._recount(touched)  # the counts first: whoever acts on the event reads them right
        out.append(Message(self.topic("events"), payload, kind="event"))
        return out

    def on_snapshot(self, snap: Any) -> list[Message]:
        """One ``_snapshots`` payload: the JPEG goes to the label's and the stream's snapshot topics."""
        try:
            stream, label, jpeg = str(snap["stream"]), str(snap["label"]), snap["jpeg"]
            if not isinstance(jpeg, (bytes, bytearray, memoryview)):
                raise TypeError
            jpeg = bytes(jpeg)
        except (KeyError, TypeError):
            self.counters["bad_events"] += 1
            return []
        self.counters["snapshots"] += 1
        out = []
        for topic in (self.topic(stream, label, "snapshot"), self.topic(stream, "snapshot")):
            self.snapshots[topic] = jpeg
            out.append(Message(topic, jpeg, retain=True))
        return out

    def server_restarted(self) -> list[Message]:
        """The server started again: its objects are gone (ids start anew), every count is 0."""
        touched = set(self.active.values())
        self.active.clear()
        return self._recount(touched)

    def set_available(self, available: bool) -> list[Message]:
        """The server answers its control socket (or stopped answering): ``<prefix>/available``."""
        if available == self.available:
            return []
        self.available = available
        return [self._availability()]

    # -- what the broker is owed ---------------------------------------------------------------
    def on_connect(self) -> list[Message]:
        """Everything retained, again (a broker that restarted has forgotten it): availability,
        discovery, counts, snapshots."""
        out = [self._availability()]
        out += self.discovery()
        out += [Message(self.topic(s, lb), str(n), retain=True) for (s, lb), n in self.counts.items()]
        out += [Message(t, jpeg, retain=True) for t, jpeg in self.snapshots.items()]
        return out

    def discovery(self) -> list[Message]:
        """Every discovery config (what Home Assistant's ``online`` asks for again)."""
        out: list[Message] = []
        for stream in sorted(self.streams):
            out += self._discover_stream(stream)
        for stream, label in sorted(self.announced):
            out += self._entity_configs(stream, label)
        return out

    def offline(self) -> Message:
        """What the bridge says when it leaves (and its last will)."""
        return Message(self.availability_topic, "offline", retain=True, qos=1)

    def stats(self, status: dict | None, bridge: dict | None = None) -> Message:
        """``<prefix>/stats``: the streams' figures since the last call, the server's workers
        and health (``status``: the control socket's ``stats`` answer, or ``None`` when it did
        not answer), and the bridge's own counters."""
        now = self.clock()
        span = max(now - self._window_start, 1e-3)
        streams = {}
        for name, w in sorted(self._window.items()):
            streams[name] = {"fps_in": round(w.answered / span, 2), "fps_processed": round(w.ok / span, 2),
                             "answered": w.answered, "processed": w.ok, "dropped": w.dropped, "errors": w.errors,
                             "inference_ms": round(w.infer_ms_sum / w.infer_n, 2) if w.infer_n else None}
        self._window = {}
        self._window_start = now
        body: dict[str, Any] = {"time": round(now, 3), "interval_s": round(span, 3), "streams": streams,
                                "server": None, "bridge": {**self.counters, **(bridge or {})}}
        if status is not None:
            body["server"] = {
                "healthy": status.get("healthy"), "problems": status.get("problems", []),
                "model": status.get("model"), "uptime_s": status.get("uptime_s"),
                "counters": status.get("stats", {}),
                "workers": [{k: w.get(k) for k in ("index", "pid", "state", "process", "busy", "restarts",
                                                   "frames_done")} for w in status.get("workers", [])]}
        return Message(self.topic("stats"), json.dumps(body, separators=(",", ":"), default=_json_default))

    # -- inside --------------------------------------------------------------------------------
    def _availability(self) -> Message:
        return Message(self.availability_topic, "online" if self.available else "offline", retain=True, qos=1)

    def _recount(self, touched: set) -> list[Message]:
        out = []
        for key in sorted(k for k in touched if k is not None):
            n = sum(1 for v in self.active.values() if v == key)
            if self.counts.get(key) != n:
                self.counts[key] = n
                out.append(Message(self.topic(*key), str(n), retain=True))
        return out

    def _announce(self, stream: str, label: str) -> list[Message]:
        if (stream, label) in self.announced or (self.labels is not None and label not in self.labels):
            return []
        self.announced.add((stream, label))
        out = self._entity_configs(stream, label)
        if (stream, label) not in self.counts:  # the sensor has a state from the start
            self.counts[(stream, label)] = 0
            out.append(Message(self.topic(stream, label), "0", retain=True))
        return out

    def _device(self) -> dict:
        name = "streampi" if self.prefix == DEFAULT_PREFIX else f"streampi {self.prefix}"
        return {"identifiers": [self.node], "name": name, "manufacturer": "streampi",
                "model": self.model.get("name", "streampi server"), "sw_version": __version__}

    def _config(self, component: str, object_id: str, body: dict) -> Message:
        object_id = safe_id(object_id)
        unique_id = f"{self.node}_{object_id}"
        body = {**body, "unique_id": unique_id, "availability_topic": self.availability_topic,
                "payload_available": "online", "payload_not_available": "offline", "device": self._device(),
                "origin": {"name": "streampi", "sw_version": __version__}}
        topic = f"{self.discovery_prefix}/{component}/{self.node}/{object_id}/config"
        return Message(topic, json.dumps(body, separators=(",", ":")), retain=True, qos=1, kind="config")

    def _discover_stream(self, stream: str) -> list[Message]:
        if self.discovery_prefix is None:
            return []
        return [self._config("camera", f"{stream}_snapshot", {
            "name": f"{stream} snapshot", "topic": self.topic(stream, "snapshot")})]

    def _entity_configs(self, stream: str, label: str) -> list[Message]:
        if self.discovery_prefix is None:
            return []
        state = self.topic(stream, label)
        return [
            self._config("binary_sensor", f"{stream}_{label}_occupancy", {
                "name": f"{stream} {label} occupancy", "state_topic": state, "device_class": "occupancy",
                "value_template": "{{ 'ON' if value | int(0) > 0 else 'OFF' }}"}),
            self._config("sensor", f"{stream}_{label}_count", {
                "name": f"{stream} {label} count", "state_topic": state, "state_class": "measurement",
                "unit_of_measurement": "objects", "icon": "mdi:counter"}),
        ]


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None  # (no bytes in an event; never fail a publication on one)
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
