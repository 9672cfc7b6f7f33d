"""Everything ``streampi serve`` can set, defined and checked in one place.

Each field of :class:`ServerOptions` carries what ``streampi serve`` shows of it: its help, its
group, its bounds and, where the flag is not the field's name, the flag. ``streampi serve``'s
flags and the keys of its TOML configuration file are derived from these fields
(:func:`streampi.cli.serve.add_arguments`), so that an option is written once: a new field
with a help text is a new flag and a new key.

Light on purpose: importing it (the command line's ``--help``, a config file check) loads
neither an interpreter nor the compiled kernels.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ..backends import BACKEND_NAMES
from ..protocol import Limits
from .scheduler import POLICIES

#: where a worker's interpreter runs: a runner process of its own, or the worker thread itself
ISOLATIONS = ("process", "thread")


def process_isolation_available() -> bool:
    return hasattr(os, "memfd_create") and "forkserver" in multiprocessing.get_all_start_methods()


#: Frigate's model.input_pixel_format and model.input_dtype (docs/frigate.md)
FRIGATE_PIXEL_FORMATS = ("rgb", "bgr", "yuv")
FRIGATE_INPUT_DTYPES = ("int", "float", "float_denorm")

#: door option -> the stream its requests come in on (policy queue: each request waits for its answer)
DOOR_STREAMS = {"frigate": "frigate", "http": "http"}

#: the groups of ``streampi serve --help``, in order
GROUPS = {"sockets": "sockets", "scheduling": "scheduling", "supervision": "supervision",
          "frigate": "Frigate's zmq detector (docs/frigate.md)",
          "http": "the HTTP API: DeepStack / CodeProject.AI detection (docs/http.md)",
          "events": "objects, events and snapshots (docs/integrations.md)",
          "mqtt": "MQTT and Home Assistant: a bridge process beside the server (docs/integrations.md)",
          "authentication": "authentication (CurveZMQ, see docs/security.md)",
          "limits": "limits on untrusted input (docs/protocol.md)"}


def option(default: Any = MISSING, *, help: str, group: str, factory: Any = MISSING, **flag: Any) -> Any:
    """A field of :class:`ServerOptions` that is also a flag of ``streampi serve``.

    ``flag`` may say: ``flag`` (the flag when it is not ``--field-name``), ``negate`` (a switch
    that turns the field off: ``--no-pin``), ``switch`` (a flag of no value that turns the field on:
    ``--events``), ``minimum`` / ``above`` / ``maximum`` (bounds,
    inclusive / exclusive / inclusive), ``choices``, ``metavar``, and ``kind`` for values written
    in a form of their own: ``size`` (``256M``), ``endpoint`` (``none`` turns it off),
    ``delegate`` (``PATH[:key=value,...]``, repeatable), ``policy`` (``POLICY`` or
    ``STREAM=POLICY``, repeatable: sets ``policy`` and ``stream_policies``)."""
    if group not in GROUPS:
        raise ValueError(f"unknown option group {group!r}")
    metadata = {"help": help, "group": group, **flag}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ServerOptions:
    """Everything ``streampi serve`` can set (see ``streampi serve --help``)."""

    # -- sockets
    bind: str = option("tcp://127.0.0.1:5555", group="sockets", help=(
        "endpoint of the PULL socket for protocol v1 frames (PUSH producers, no flow control)"))
    credit_bind: str | None = option("tcp://127.0.0.1:5558", group="sockets", kind="endpoint", help=(
        "endpoint of the ROUTER socket for protocol v1.1 frames (credit-based flow control; streampi's Producer "
        "speaks it by default; 'none' to disable)"))
    shared_memory: bool = option(True, group="sockets", flag="--no-shared-memory", negate=True, help=(
        "hand v1.1 producers on this machine no shared-memory ring: their raw frames come over the wire "
        "(docs/protocol.md, 'Shared memory')"))
    publish: str = option("tcp://127.0.0.1:5556", group="sockets", help="endpoint of the PUB socket for results")
    node_bind: str | None = option(None, group="sockets", metavar="ENDPOINT", help=(
        "accept remote nodes (`streampi node MODEL --join ...`) on this ROUTER endpoint, e.g. tcp://0.0.0.0:5570: "
        "other machines that run batches beside this one's (docs/cluster.md; default: off)"))
    node_send: str = option("tensor", group="sockets", choices=("frame", "tensor"), help=(
        "what crosses the link to a node: the model's input tensor (this server runs the kernel: fewer bytes, "
        "less of the nodes' CPU) or the frame as the producer sent it (the node runs the kernel: spares this "
        "server's CPU, e.g. for JPEG cameras); docs/cluster.md compares them"))
    recv_hwm: int = option(64, group="sockets", minimum=1, help=(
        "v1 frames ZeroMQ buffers per producer before that producer blocks"))
    control: str | None = option("tcp://127.0.0.1:5557", group="sockets", kind="endpoint", help=(
        "endpoint of the control socket for `streampi ctl` ('none' to disable)"))
    metrics_port: int | None = option(None, group="sockets", minimum=0, maximum=65535, metavar="PORT", help=(
        "serve Prometheus metrics over HTTP on this port (0: any free port; default: off)"))
    metrics_bind: str = option("127.0.0.1", group="sockets", metavar="ADDRESS", help=(
        "address of the metrics endpoint (loopback unless you say otherwise)"))
    # -- scheduling
    workers: int | None = option(None, group="scheduling", minimum=0, help=(
        "workers, each an interpreter instance (default: one per usable core; 0: none here, the server "
        "dispatches to its nodes only, see --node-bind)"))
    threads: int = option(1, group="scheduling", minimum=1, help="threads per interpreter")
    light_threads: int | None = option(None, group="scheduling", minimum=0, metavar="N", help=(
        "threads of each worker's wide interpreter, which runs a lone frame while the other workers idle "
        "(default: every usable core; 0: off)"))
    max_batch: int = option(4, group="scheduling", minimum=1, help="largest micro-batch")
    max_delay_ms: float = option(0.0, group="scheduling", minimum=0, help=(
        "how long the oldest frame may wait for a batch to fill (0: run as soon as a worker is free)"))
    policy: str = option("latest", group="scheduling", kind="policy", metavar="POLICY|STREAM=POLICY",
                         choices=POLICIES, help=(
        "latest (a newer frame replaces a waiting one) or queue (every frame, in order); repeat with "
        "STREAM=POLICY for one stream (default: latest)"))
    stream_policies: dict[str, str] = field(default_factory=dict)  # set by the same flag, STREAM=POLICY
    queue_size: int = option(32, group="scheduling", minimum=1, help="frames a queue-policy stream may hold")
    credit: int = option(0, group="scheduling", minimum=0, metavar="N", help=(
        "frames a v1.1 producer may have in flight (0: workers + 1 for latest streams, queue-size for queue "
        "streams)"))
    max_streams: int = option(256, group="scheduling", minimum=1, help="streams with frames waiting, at most")
    max_frame_memory: int = option(256 * 2**20, group="scheduling", kind="size", minimum=0, metavar="SIZE", help=(
        "bytes of frames the server may hold (waiting or running, e.g. 256M; 0: no budget); frames past it are "
        "answered 'overloaded'"))
    pin: bool = option(True, group="scheduling", flag="--no-pin", negate=True, help="do not pin workers to cores")
    backend: str | None = option(None, group="scheduling", choices=BACKEND_NAMES, help=(
        "the interpreter package (default: the first installed of " + ", ".join(BACKEND_NAMES) + ")"))
    delegates: list[tuple[str, dict]] = option(group="scheduling", factory=list, flag="--delegate", kind="delegate",
                                               metavar="PATH[:key=value,...]", help=(
        "load a delegate library in every worker (repeatable); the CPU runs the model if it fails"))
    # -- supervision
    isolation: str = option("process", group="supervision", choices=ISOLATIONS, help=(
        "run each interpreter in a runner process of its own (a crash is survived) or in a thread of the server"))
    invoke_timeout: float = option(10.0, group="supervision", above=0, metavar="SECONDS", help=(
        "kill and replace a runner process stuck this long in one batch (process isolation)"))
    stop_timeout: float = option(5.0, group="supervision", above=0, metavar="SECONDS", help=(
        "at SIGTERM/SIGINT: time to finish held frames; then they are answered 'shutdown'"))
    # -- doors: Frigate's zmq detector (streampi.integrations.frigate)
    frigate: str | None = option(None, group="frigate", metavar="ENDPOINT", help=(
        "answer Frigate's zmq detector here (a ROUTER: any number of Frigate detectors), e.g. "
        "ipc:///tmp/cache/zmq_detector on Frigate's machine or tcp://0.0.0.0:5560; its requests run as stream "
        "'frigate' with the queue policy (default: off)"))
    frigate_deadline_ms: float = option(200.0, group="frigate", flag="--frigate-deadline", above=0, maximum=60_000,
                                        metavar="MS", help=(
        "a Frigate request older than this when it could be handed to a worker is answered with no detections "
        "and counted 'expired', never run (Frigate's request_timeout_ms: it has given up by then)"))
    frigate_pixel_format: str = option("rgb", group="frigate", choices=FRIGATE_PIXEL_FORMATS, help=(
        "Frigate's model.input_pixel_format: the channel order of the tensors it sends"))
    frigate_input_dtype: str = option("int", group="frigate", choices=FRIGATE_INPUT_DTYPES, help=(
        "Frigate's model.input_dtype: int (uint8 tensors), float (float32 in 0..1) or float_denorm "
        "(float32 in 0..255)"))
    frigate_accept_model: str | None = option(None, group="frigate", metavar="DIR", help=(
        "when Frigate's model handshake sends a model this server does not serve, save it in this folder (a "
        "valid .tflite detection model only, under the name Frigate gives it) and serve it (a reload, as "
        "`streampi ctl reload`); a NAME.json sidecar put there beforehand sets its normalisation and decoder "
        "(default: off: such a model is refused)"))

    # -- doors: the HTTP API (streampi.integrations.http)
    http: str | None = option(None, group="http", metavar="HOST:PORT", help=(
        "serve the DeepStack / CodeProject.AI detection API (POST /v1/vision/detection) on this address, e.g. "
        "127.0.0.1:8080 (port 0: any free port; needs the web extra: pip install 'streampi[web]'; default: off)"))
    http_api_key: str | None = option(None, group="http", metavar="KEY", help=(
        "require this api_key form field on every request (401 otherwise); the environment variable "
        "STREAMPI_HTTP_API_KEY or --http-api-key-file keep it off the command line"))
    http_api_key_file: str | None = option(None, group="http", metavar="FILE", help=(
        "read the required api_key from the first line of this file"))
    http_max_upload: int = option(8 * 2**20, group="http", kind="size", minimum=1, metavar="SIZE", help=(
        "largest request body (the image and its form fields), e.g. 8M; larger is answered 413"))
    http_max_requests: int = option(16, group="http", minimum=1, maximum=4096, metavar="N", help=(
        "requests held at once (reading, decoding, waiting or running); more are answered 503 at once"))
    http_max_connections: int = option(256, group="http", minimum=1, maximum=65536, metavar="N", help=(
        "open connections at most; past it the longest-open idle connection is closed (or the new one, "
        "when none is idle)"))
    http_timeout: float = option(15.0, group="http", above=0, maximum=3600, metavar="SECONDS", help=(
        "close a connection idle this long (before its first request too), and answer 408 to a request "
        "whose body takes longer to arrive"))
    view_fps: float = option(5.0, group="http", above=0, maximum=30, metavar="FPS", help=(
        "the live view (--http's page /): pictures per second encoded for a watched stream, at most; a stream "
        "nobody watches costs no picture"))
    view_width: int = option(640, group="http", minimum=64, maximum=4096, metavar="PIXELS", help=(
        "the live view's picture width (smaller frames keep theirs; the height follows the frame's aspect)"))

    # -- objects, events and snapshots (streampi.events)
    events: bool = option(False, group="events", switch=True, help=(
        "track the objects of each stream's detections and publish events (new, update, end) on the topic _events "
        "and their snapshots on _snapshots (--mqtt and --http turn this on too)"))
    events_min_hits: int = option(2, group="events", minimum=1, metavar="N", help=(
        "frames in a row an object must be detected in before it exists (its 'new' event)"))
    events_max_missed: int = option(15, group="events", minimum=0, metavar="N", help=(
        "an object ends after this many frames of its stream without it"))
    events_max_missed_s: float = option(5.0, group="events", above=0, maximum=3600, metavar="SECONDS", help=(
        "an object ends after this long without it, also when its stream stops sending"))
    events_min_score: str | None = option(None, group="events", metavar="[LABEL=]SCORE,...", help=(
        "the least score of a detection an object is made of, per label: e.g. 'person=0.6,car=0.5,*=0.4' (* is "
        "every other label; a bare SCORE is every label; default: every detection the decoder gives)"))
    events_zones: str | None = option(None, group="events", metavar="FILE", help=(
        "zones, polygons in frame pixels, from a TOML (.toml) or JSON (.json) file (docs/integrations.md); an "
        "object is in a zone while its box's bottom centre is"))
    events_snapshot_count: int = option(50, group="events", minimum=0, metavar="N", help=(
        "snapshots kept per stream (the best frame of each object, a JPEG with its box; 0: no snapshots)"))
    events_snapshot_bytes: int = option(16 * 2**20, group="events", kind="size", minimum=1, metavar="SIZE", help=(
        "bytes of snapshots kept per stream, e.g. 16M (the least recently updated go first)"))
    # -- MQTT (streampi.integrations.mqtt_bridge: a child process, not a door of this one)
    mqtt: str | None = option(None, group="mqtt", metavar="URL", help=(
        "publish events, counts, snapshots, stats and Home Assistant discovery to this broker, "
        "mqtt://[user@]host[:port] or mqtts://... (a `streampi mqtt` bridge process started and kept running "
        "beside the server; needs the mqtt extra: pip install 'streampi[mqtt]'; default: off)"))
    mqtt_password_file: str | None = option(None, group="mqtt", metavar="FILE", help=(
        "read the broker password from the first line of this file (or set STREAMPI_MQTT_PASSWORD; a password "
        "in the URL is visible in the process list)"))
    mqtt_ca: str | None = option(None, group="mqtt", metavar="FILE", help=(
        "CA certificate(s) that sign an mqtts:// broker's certificate (default: the system's)"))
    mqtt_prefix: str = option("streampi", group="mqtt", metavar="PREFIX", help="the topic prefix: PREFIX/events, ...")
    mqtt_discovery_prefix: str | None = option("homeassistant", group="mqtt", kind="endpoint", metavar="PREFIX",
                                               help="Home Assistant's discovery prefix ('none': no discovery)")
    mqtt_labels: str | None = option(None, group="mqtt", metavar="LABEL,...", help=(
        "labels whose sensors every stream gets as soon as it is seen (default: every label of the model); "
        "other labels of the model get theirs when first detected"))
    mqtt_node_id: str | None = option(None, group="mqtt", metavar="ID", help=(
        "this server's Home Assistant device id (default: the prefix and the host name)"))
    mqtt_stats_interval: float = option(60.0, group="mqtt", above=0, maximum=86400, metavar="SECONDS",
                                        help="publish PREFIX/stats this often")

    # -- authentication
    curve_secret: str | None = option(None, group="authentication", metavar="SERVER.key_secret", help=(
        "this server's secret certificate: CurveZMQ on every socket"))
    curve_clients: str | None = option(None, group="authentication", metavar="DIR", help=(
        "directory of the public certificates (*.key) allowed in"))
    # -- limits: one flag per field of Limits
    limits: Limits = option(group="limits", factory=Limits, help="bounds on what one frame message may hold")
    # not a flag: results ZeroMQ may queue for a slow subscriber before it drops them (benchmarks raise it)
    send_hwm: int = 100_000

    def __post_init__(self) -> None:
        for door, stream in DOOR_STREAMS.items():  # a door's every request waits for its own answer
            if getattr(self, door) and stream not in self.stream_policies:
                self.stream_policies = {**self.stream_policies, stream: "queue"}

    def events_enabled(self) -> bool:
        """Whether the server tracks objects and publishes events: ``--events``, or a door that
        shows them (``--mqtt``, ``--http``)."""
        return bool(self.events or self.http or getattr(self, "mqtt", None))

    def check(self) -> None:
        """Raise ValueError naming the option (as its flag says it) whose value is out of bounds."""
        for f in fields(self):
            bounds = f.metadata
            value = getattr(self, f.name)
            if value is None or "help" not in bounds or f.name in ("policy", "limits"):
                continue
            name = bounds.get("flag", "--" + f.name.replace("_", "-"))[2:]
            if "choices" in bounds and value not in bounds["choices"]:
                raise ValueError(f"{name} must be one of {', '.join(bounds['choices'])}, got {value!r}")
            if "minimum" in bounds and value < bounds["minimum"]:
                raise ValueError(f"{name} must be >= {bounds['minimum']}, got {value}")
            if "above" in bounds and not value > bounds["above"]:
                raise ValueError(f"{name} must be > {bounds['above']}, got {value}")
            if "maximum" in bounds and value > bounds["maximum"]:
                raise ValueError(f"{name} must be <= {bounds['maximum']}, got {value}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        for stream, pol in self.stream_policies.items():
            if pol not in POLICIES:
                raise ValueError(f"policy of stream {stream!r} must be one of {POLICIES}, got {pol!r}")
        for door, stream in DOOR_STREAMS.items():
            if getattr(self, door) and self.stream_policies.get(stream, "queue") != "queue":
                raise ValueError(f"stream {stream!r} must have the queue policy: each of its clients waits for "
                                 f"the answer to its own request, which a newer request must not replace")
        for name in ("events_zones", "events_min_score"):
            if getattr(self, name) is not None and not self.events_enabled():
                raise ValueError(f"{name.replace('_', '-')} has no effect without --events (or a door that shows "
                                 f"events: --mqtt, --http)")
        if self.events_min_score is not None:
            from ..events import parse_thresholds

            try:
                parse_thresholds(self.events_min_score)
            except ValueError as exc:
                raise ValueError(f"events-min-score: {exc}") from None
        if self.workers == 0 and not self.node_bind:
            raise ValueError("workers must be >= 1 unless nodes run the frames: --workers 0 needs --node-bind "
                             "(docs/cluster.md)")
        if self.isolation == "process" and not process_isolation_available():
            raise ValueError("isolation 'process' needs Linux (fork server and memfd); use --isolation thread")
