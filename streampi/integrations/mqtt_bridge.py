"""The MQTT bridge: a process beside the server that carries its events, counts, snapshots and
stats to an MQTT broker (``streampi mqtt``; ``streampi serve --mqtt URL`` starts one and keeps
it running, :class:`BridgeProcess`).

Why a process and not a door inside the server (docs/integrations.md has the figures):
the serving path cannot be touched by a broker that is down or slow (the bridge reads the
results socket like any subscriber; ZeroMQ drops past its high-water mark, never blocks the
server), and the MQTT client's memory is in a small process of its own.

Threads: paho-mqtt's network thread connects, reconnects with a capped back-off and calls
back; the main thread reads the server's sockets, feeds :class:`~.mqtt.MqttState` and
publishes what it returns. Only the main thread publishes. Delivery:

- events: QoS 0, handed to paho exactly once, only while connected; while the broker is
  away they wait in a bounded backlog (:data:`~.mqtt.EVENT_BACKLOG`, oldest dropped and
  counted) and are sent on the next connection. No retransmission, so no event is
  published twice (an event in a TCP buffer when the broker dies is lost: at most once);
- state (availability, discovery, counts, snapshots): retained, all sent again on every
  connection (a restarted broker without persistence has forgotten them) and when Home
  Assistant announces itself on ``homeassistant/status``.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import msgspec
import zmq

from ..errors import StreampiError
from .mqtt import EVENT_BACKLOG, PASSWORD_ENV, Broker, Message, MqttState

log = logging.getLogger("streampi.mqtt")

#: seconds between two questions to the control socket (availability, labels, restarts)
HEALTH_EVERY_S = 5.0
#: paho's reconnect back-off, seconds
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30


class _Answer(msgspec.Struct):
    """What the bridge reads of a result (msgspec skips the rest: detections, meta, ...)."""

    ok: bool = False
    error: dict | None = None
    timing: dict | None = None


_ANSWER = msgspec.msgpack.Decoder(_Answer)


def check_paho() -> None:
    """Raise when paho-mqtt is missing, without importing it (the server checks for its child)."""
    import importlib.util

    if importlib.util.find_spec("paho") is None or importlib.util.find_spec("paho.mqtt.client") is None:
        raise StreampiError("MQTT needs paho-mqtt: pip install 'streampi[mqtt]'")


def import_paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise StreampiError("MQTT needs paho-mqtt: pip install 'streampi[mqtt]'") from None
    return mqtt


class Bridge:
    """Carry a server's results (``results``: its PUB endpoint) and status (``control``: its
    control endpoint, or ``None``) to ``broker``. :meth:`run` until :meth:`stop`."""

    def __init__(self, results: str, control: str | None, broker: Broker, state: MqttState, *,
                 stats_interval: float = 60.0, announce: list[str] | None = None, client_id: str | None = None,
                 curve_secret: str | None = None, curve_server: str | None = None) -> None:
        self.mqtt = import_paho()
        self.results, self.control, self.broker, self.state = results, control, broker, state
        self.stats_interval, self.announce = stats_interval, announce
        self.curve = {"curve_secret": curve_secret, "curve_server": curve_server}
        self.client_id = client_id or f"{state.node}-{os.getpid()}"
        self.connected = False  # as the main thread knows it (set from the inbox)
        self.backlog: collections.deque[Message] = collections.deque()
        self.counters = {"connections": 0, "events_published": 0, "events_dropped": 0, "publish_failed": 0}
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()  # from paho's thread: what happened
        self._stop = threading.Event()
        self._link = "starting"  # the broker link's state, logged when it changes
        self._server_started: float | None = None
        self._client = self._make_client()

    # -- paho's side (its network thread) ------------------------------------------------------
    def _make_client(self) -> Any:
        mqtt = self.mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set(ca_certs=self.broker.ca_file)
        off = self.state.offline()
        client.will_set(off.topic, off.payload, qos=off.qos, retain=off.retain)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.max_queued_messages_set(EVENT_BACKLOG)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._inbox.put(("refused", str(reason)))
            return
        if self.state.status_topic:
            client.subscribe(self.state.status_topic, qos=1)
        self._inbox.put(("connected", None))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._inbox.put(("disconnected", str(reason)))

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._inbox.put(("unreachable", None))

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic == self.state.status_topic and msg.payload.strip().lower() == b"online":
            self._inbox.put(("ha_online", None))

    # -- the main thread -----------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT when run from the main thread); then say
        ``offline`` and leave. Returns the exit code."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._stop.set())
        ctx = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 10_000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        if self.curve["curve_secret"] or self.curve["curve_server"]:
            from ..auth import apply_client

            apply_client(sub, self.curve["curve_secret"], self.curve["curve_server"])
        sub.connect(self.results)
        log.info("reading %s; publishing to %s under %s/", self.results, self.broker.url, self.state.prefix)
        self._ask_server()
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()
        next_health = time.monotonic() + HEALTH_EVERY_S
        next_stats = time.monotonic() + self.stats_interval
        try:
            while not self._stop.is_set():
                self._handle_inbox()
                if sub.poll(200):
                    for _ in range(1000):  # a bounded burst, then the inbox and the clocks again
                        try:
                            parts = sub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._publish(self._take(parts))
                now = time.monotonic()
                if now >= next_health:
                    next_health = now + HEALTH_EVERY_S
                    self._ask_server()
                if now >= next_stats:
                    next_stats = now + self.stats_interval
                    status = self._ask_server()
                    self._publish([self.state.stats(status, {**self.counters, "backlog": len(self.backlog)})])
        finally:
            self._leave()
            sub.close()
        return 0

    def _take(self, parts: list) -> list[Message]:
        """One message of the results socket -> what to publish."""
        if len(parts) != 2:
            return []
        topic = bytes(parts[0])
        try:
            if topic == b"_events":
                return self.state.on_event(msgspec.msgpack.decode(parts[1]))
            if topic == b"_snapshots":
                return self.state.on_snapshot(msgspec.msgpack.decode(parts[1]))
            if topic.startswith(b"_"):
                return []
            a = _ANSWER.decode(parts[1])
            return self.state.answer(topic.decode(), a.ok, (a.error or {}).get("code"), (a.timing or {}).get("infer_ms"))
        except Exception:  # a message we cannot read is the server's business, not a reason to stop
            self.state.counters["bad_events"] += 1
            return []

    def _ask_server(self) -> dict | None:
        """The control socket's ``stats``: availability, the model's labels, a restart."""
        if self.control is None:
            self._publish(self.state.set_available(True))
            return None
        from ..ctl import request

        try:
            reply = request(self.control, "stats", 1.5, **self.curve)
        except (TimeoutError, zmq.ZMQError):
            reply = None
        if not reply or not reply.get("ok"):
            if self.state.available:
                log.warning("the server does not answer at %s: %s/available is offline", self.control,
                            self.state.prefix)
            self._publish(self.state.set_available(False))
            return None
        out: list[Message] = []
        if not self.state.available:
            log.info("the server answers at %s (%s)", self.control, (reply.get("model") or {}).get("name"))
        out += self.state.set_available(True)
        started = time.time() - float(reply.get("uptime_s") or 0)
        if self._server_started is not None and abs(started - self._server_started) > 2.0:
            log.info("the server restarted: its objects are gone")
            out += self.state.server_restarted()
        self._first_labels = self._server_started is None
        self._server_started = started
        self.state.model = reply.get("model") or self.state.model
        labels = reply.get("labels")
        if labels and (self.state.labels is None or set(labels) != self.state.labels):
            try:
                out += self.state.set_labels(labels, self.announce)
            except StreampiError as exc:
                if self._server_started is None or self._first_labels:
                    raise  # asked for on the command line: say so and stop
                log.error("%s (the model changed); announcing every label", exc)
                out += self.state.set_labels(labels, None)
        self._publish(out)
        return reply

    def _handle_inbox(self) -> None:
        while True:
            try:
                what, detail = self._inbox.get_nowait()
            except queue.Empty:
                return
            if what == "connected":
                self.connected = True
                self.counters["connections"] += 1
                self._link_state("connected", f"connected to {self.broker.url}", logging.INFO)
                self._publish(self.state.on_connect())
                self._flush_backlog()
            elif what == "ha_online":
                log.info("Home Assistant is online: announcing the entities again")
                self._publish(self.state.discovery())
            else:
                self.connected = False
                if what == "disconnected" and self._link == "refused":
                    continue  # (paho's disconnect after a refusal: the same state)
                if what == "disconnected":
                    text = f"lost the broker {self.broker.url} ({detail}); reconnecting"
                elif what == "refused":
                    text = f"the broker {self.broker.url} refused the connection: {detail}; retrying"
                else:
                    text = f"cannot reach the broker {self.broker.url} ({self._why_unreachable()}); retrying"
                self._link_state(what if what != "disconnected" else "unreachable", text, logging.WARNING)

    def _why_unreachable(self) -> str:
        """Why paho could not connect (it does not say): the TCP connection, else TLS, else MQTT."""
        try:
            sock = socket.create_connection((self.broker.host, self.broker.port), timeout=2)
        except OSError as exc:
            return exc.strerror or str(exc)
        with sock:
            if self.broker.tls:
                import ssl

                try:
                    ctx = ssl.create_default_context(cafile=self.broker.ca_file)
                    ctx.wrap_socket(sock, server_hostname=self.broker.host).close()
                except (ssl.SSLError, OSError) as exc:
                    return f"TLS: {exc}"
        return "the MQTT handshake failed"

    def _link_state(self, state: str, text: str, level: int) -> None:
        """Log a change of the broker link once (paho retries every few seconds: not each time)."""
        if state != self._link:
            self._link = state
            log.log(level, "%s", text + (f" (with back-off up to {RECONNECT_MAX_S} s)" if level > logging.INFO else ""))

    def _publish(self, messages: list[Message]) -> None:
        for m in messages:
            if m.kind == "event":
                if not self.connected or self.backlog:
                    self._keep(m)
                    self._flush_backlog()
                elif not self._send(m):
                    self._keep(m)
            elif self.connected:  # state is sent again on the next connection anyway
                self._send(m)

    def _send(self, m: Message) -> bool:
        try:
            info = self._client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
        except (ValueError, OSError):
            self.counters["publish_failed"] += 1
            log.exception("cannot publish on %s", m.topic)
            return m.kind == "event"  # (an event paho refuses is not tried again)
        ok = info.rc == self.mqtt.MQTT_ERR_SUCCESS
        if ok and m.kind == "event":
            self.counters["events_published"] += 1
        return ok

    def _keep(self, m: Message) -> None:
        if len(self.backlog) >= EVENT_BACKLOG:
            self.backlog.popleft()
            self.counters["events_dropped"] += 1
            if self.counters["events_dropped"] == 1 or self.counters["events_dropped"] % 1000 == 0:
                log.warning("the broker has been away for %d events: dropping the oldest (%d so far)",
                            EVENT_BACKLOG, self.counters["events_dropped"])
        self.backlog.append(m)

    def _flush_backlog(self) -> None:
        while self.connected and self.backlog:
            if not self._send(self.backlog[0]):
                return  # not connected after all: the inbox will say so
            self.backlog.popleft()

    def _leave(self) -> None:
        if self.connected:
            off = self.state.offline()
            try:
                self._client.publish(off.topic, off.payload, qos=off.qos, retain=off.retain).wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
        log.info("stopped; %d events published, %d dropped while the broker was away",
                 self.counters["events_published"], self.counters["events_dropped"])


# -- streampi serve --mqtt: the bridge as a supervised child ----------------------------------
def _local(endpoint: str) -> str:
    """An endpoint the server bound, as a process on this machine connects to it."""
    for wildcard in ("tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard):]
    return endpoint


#: set by BridgeProcess for its child: the pid of the server it belongs to
PARENT_ENV = "STREAMPI_MQTT_PARENT"


def die_with_parent() -> None:
    """In a bridge started by a server: be sent SIGTERM when that server goes, however it goes
    (Linux's PR_SET_PDEATHSIG), and leave now if it has already gone."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if str(os.getppid()) != parent:
        raise SystemExit(0)


class BridgeProcess:
    """``streampi mqtt`` as a child of ``streampi serve --mqtt``: started once the server is
    ready, restarted with a capped back-off when it dies (never when it exits 0: it was asked
    to stop), stopped with the server. The password goes to the child in its environment,
    never on its command line."""

    BACKOFF_MAX_S = 60.0
    HEALTHY_AFTER_S = 60.0  # a child that ran this long starts the back-off afresh

    def __init__(self, options: Any, bound: dict[str, str], broker: Broker) -> None:
        argv = [sys.executable, "-m", "streampi", "mqtt", "--broker", broker.url, "--server", _local(bound["publish"]),
                "--control", _local(bound["control"]) if bound.get("control") else "none",
                "--prefix", options.mqtt_prefix, "--discovery-prefix", options.mqtt_discovery_prefix or "none",
                "--stats-interval", str(options.mqtt_stats_interval)]
        if broker.ca_file:
            argv += ["--ca", broker.ca_file]
        if options.mqtt_labels:
            argv += ["--labels", options.mqtt_labels]
        if options.mqtt_node_id:
            argv += ["--node-id", options.mqtt_node_id]
        self.argv = argv
        self.env = {**os.environ, "PYTHONSAFEPATH": "1", PARENT_ENV: str(os.getpid())}
        self.env.pop(PASSWORD_ENV, None)
        if broker.password is not None:
            self.env[PASSWORD_ENV] = broker.password
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="streampi-mqtt-bridge", daemon=True)

    def start(self) -> BridgeProcess:
        self._thread.start()
        return self

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)
            except OSError as exc:
                log.error("cannot start the MQTT bridge: %s", exc)
                return
            self.starts += 1
            code = self.proc.wait()
            if self._stopping.is_set() or code == 0:
                return
            if time.monotonic() - started > self.HEALTHY_AFTER_S:
                delay = 1.0
            log.warning("the MQTT bridge (pid %d) exited with %s; starting it again in %.0f s", self.proc.pid,
                        f"signal {-code}" if code < 0 else f"code {code}", delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.BACKOFF_MAX_S)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(timeout)
