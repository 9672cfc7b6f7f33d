"""MQTT and Home Assistant (``streampi mqtt``, ``streampi serve --mqtt``) against a real broker.

Mosquitto (/usr/sbin/mosquitto) runs on a free loopback port with a config written here; a
real server runs in a thread; the bridge is a real process. What arrives on the broker is read
by a paho-mqtt client playing Home Assistant: its checks of the discovery configs are written
from Home Assistant's MQTT discovery documentation (topic form, required keys per component,
abbreviations, Jinja value templates, availability), not from streampi's constants.

Most events here are published by the test itself through ``Server.publish("_events" /
"_snapshots", ...)`` with payloads shaped as docs/integrations.md says (so that each case,
a relabelled object, a broker away mid-event, is exactly the one meant);
``test_a_moving_scene_through_the_real_tracker`` runs the real tracker on MovingScenes,
whose tracks are known, end to end.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from streampi.client import Producer, Subscriber
from streampi.integrations.mqtt import MqttConfigError, MqttState, parse_broker
from streampi.serving import ServerOptions
from streampi.testing import ServerThread, start_server, wait_subscribed

MOSQUITTO = "/usr/sbin/mosquitto"
needs_broker = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="Mosquitto is not installed "
                                  "(Debian package mosquitto; .ci/run installs it)")
paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'streampi[mqtt]')")
jinja2 = pytest.importorskip("jinja2", reason="jinja2 is not installed (the test extra)")

# -- Home Assistant's side, from its MQTT discovery documentation ------------------------------
#: <discovery_prefix>/<component>/[<node_id>/]<object_id>/config, ids in [a-zA-Z0-9_-]
DISCOVERY_TOPIC = re.compile(r"^homeassistant/(?P<component>[a-z_]+)/(?:(?P<node>[a-zA-Z0-9_-]+)/)?"
                             r"(?P<object>[a-zA-Z0-9_-]+)/config$")
#: the abbreviations a discovery payload may use (a subset of Home Assistant's list)
ABBREVIATIONS = {"stat_t": "state_topic", "t": "topic", "uniq_id": "unique_id", "dev": "device",
                 "avty_t": "availability_topic", "avty": "availability", "pl_avail": "payload_available",
                 "pl_not_avail": "payload_not_available", "val_tpl": "value_template", "dev_cla": "device_class",
                 "pl_on": "payload_on", "pl_off": "payload_off", "unit_of_meas": "unit_of_measurement"}
DEVICE_ABBREVIATIONS = {"ids": "identifiers", "mf": "manufacturer", "mdl": "model", "sw": "sw_version"}
#: the topic each component reads its state from, required by its platform schema
STATE_KEY = {"binary_sensor": "state_topic", "sensor": "state_topic", "camera": "topic"}


def expand(config: dict) -> dict:
    out = {ABBREVIATIONS.get(k, k): v for k, v in config.items()}
    if isinstance(out.get("device"), dict):
        out["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in out["device"].items()}
    return out


def render(template: str | None, payload: str) -> str:
    """A value template as Home Assistant renders it: Jinja with ``value`` the payload."""
    if template is None:
        return payload
    return jinja2.Environment().from_string(template).render(value=payload).strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A broker of our own on 127.0.0.1:port (no persistence: a restart forgets everything)."""

    def __init__(self, folder: Path, port: int | None = None, extra: str = "") -> None:
        self.port = port or free_port()
        self.folder = folder
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        conf = self.folder / f"mosquitto-{self.port}.conf"
        # (as root, Mosquitto would become user mosquitto, who cannot read pytest's private folders)
        conf.write_text(f"listener {self.port} 127.0.0.1\npersistence false\n"
                        + ("user root\n" if os.geteuid() == 0 else "")
                        + (self.extra or "allow_anonymous true\n"))
        self.log = open(self.folder / f"mosquitto-{self.port}.log", "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                assert self.proc.poll() is None, f"mosquitto exited: {(self.folder / f'mosquitto-{self.port}.log').read_text()}"
                time.sleep(0.05)
        raise TimeoutError("mosquitto did not listen")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@pytest.fixture
def broker(tmp_path):
    if not Path(MOSQUITTO).exists():
        pytest.skip("Mosquitto is not installed (Debian package mosquitto; .ci/run installs it)")
    b = Mosquitto(tmp_path).start()
    yield b
    b.kill()


class HomeAssistant:
    """A paho-mqtt client that listens as Home Assistant does (and reconnects for ever)."""

    def __init__(self, port: int, topics=("homeassistant/#", "streampi/#"), auth: tuple[str, str] | None = None,
                 ca: str | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.connections = 0
        self.topics = topics
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"ha-test-{os.getpid()}-{port}")
        if auth is not None:
            self.client.username_pw_set(*auth)
        if ca is not None:
            self.client.tls_set(ca_certs=ca)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason, props) -> None:
        if not reason.is_failure:
            for t in self.topics:
                client.subscribe(t, qos=1)
            with self.lock:
                self.connections += 1

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def seen(self, topic: str | None = None, since: int = 0) -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return [m for m in self.messages[since:] if topic is None or m[0] == topic]

    def mark(self) -> int:
        with self.lock:
            return len(self.messages)

    def last(self, topic: str) -> bytes | None:
        got = self.seen(topic)
        return got[-1][1] if got else None

    def wait(self, predicate, timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; got topics {sorted({m[0] for m in self.seen()})}")

    def configs(self, since: int = 0) -> dict[str, dict]:
        """The latest discovery config of each discovery topic (an empty payload removes one)."""
        out = {}
        for topic, payload, _ in self.seen(since=since):
            if topic.startswith("homeassistant/") and topic.endswith("/config"):
                if payload:
                    out[topic] = json.loads(payload)
                else:
                    out.pop(topic, None)
        return out

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def check_discovery(ha: HomeAssistant, since: int = 0) -> dict[str, dict]:
    """Every discovery config is well formed as Home Assistant reads it, and its topics exist."""
    configs = ha.configs(since)
    assert configs, "no discovery config"
    unique_ids = set()
    for topic, raw in configs.items():
        m = DISCOVERY_TOPIC.match(topic)
        assert m, f"not a discovery topic: {topic}"
        component = m["component"]
        assert component in STATE_KEY, f"unexpected component {component}"
        cfg = expand(raw)
        assert isinstance(cfg.get(STATE_KEY[component]), str), f"{topic}: no {STATE_KEY[component]}"
        assert "+" not in cfg[STATE_KEY[component]] and "#" not in cfg[STATE_KEY[component]]
        assert isinstance(cfg.get("unique_id"), str) and cfg["unique_id"] not in unique_ids, topic
        unique_ids.add(cfg["unique_id"])
        dev = cfg.get("device")
        assert isinstance(dev, dict) and dev.get("identifiers"), f"{topic}: a device needs identifiers"
        avail = cfg.get("availability_topic") or (cfg.get("availability") or [{}])[0].get("topic")
        assert avail, f"{topic}: no availability"
        assert ha.last(avail) == cfg.get("payload_available", "online").encode(), f"{topic}: {avail} is not online"
    # one device for the whole server
    assert len({json.dumps(expand(c)["device"], sort_keys=True) for c in configs.values()}) == 1
    return configs


def retained_on_subscribe(port: int, topic_filter: str, wait: float = 2.0,
                          auth: tuple[str, str] | None = None) -> dict[str, bytes]:
    """What a client connecting now receives as retained on ``topic_filter``."""
    got: dict[str, bytes] = {}
    done = threading.Event()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"late-{time.monotonic_ns()}")
    if auth is not None:
        c.username_pw_set(*auth)
    c.on_connect = lambda cl, u, f, r, p: cl.subscribe(topic_filter, qos=1)
    c.on_message = lambda cl, u, m: got.__setitem__(m.topic, bytes(m.payload)) if m.retain else None
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(wait)  # retained messages come at once after the subscription
    c.disconnect()
    c.loop_stop()
    return got


# -- events shaped as the contract says ---------------------------------------------------------
def obj(oid: str, label: str, score: float, t: float, end: float | None = None, stream: str = "cam0") -> dict:
    return {"id": oid, "stream": stream, "label": label, "score": score, "top_score": score,
            "box": [10.0, 20.0, 110.0, 220.0], "zones": [], "entered_zones": [], "start_time": 1.7e9,
            "end_time": end, "has_snapshot": False, "frame_time": t}


def event(kind: str, before: dict | None, after: dict) -> dict:
    return {"type": kind, "before": before, "after": after}


def publish(st: ServerThread, topic: str, payload: dict) -> None:
    done = threading.Event()

    def go():
        st.server.publish(topic, payload)
        done.set()
    st._loop.call_soon_threadsafe(go)
    assert done.wait(5)


class BridgeProc:
    def __init__(self, tmp_path: Path, *args: str, env: dict | None = None) -> None:
        self.log_path = tmp_path / f"bridge-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "streampi", "mqtt", *args], stdout=self.log,
                                     stderr=subprocess.STDOUT, env={**os.environ, "PYTHONSAFEPATH": "1", **(env or {})})

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            assert self.proc.poll() is None, f"the bridge exited: {self.text()}"
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} never logged: {self.text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def feed_until(st: ServerThread, stream: str, done, limit: int = 400) -> int:
    """Send frames on ``stream`` until ``done()`` (the bridge has seen the stream), bounded."""
    frame = np.zeros((48, 64, 3), np.uint8)
    with Producer(st.frames, stream=stream) as cam:
        for i in range(limit):
            cam.send(frame)
            if done():
                return i + 1
            time.sleep(0.05)
    raise AssertionError(f"the bridge never announced stream {stream}")


@pytest.fixture
def server():
    with ServerThread("shapes_detector", ServerOptions(workers=1, isolation="thread",
                                                       stream_policies={"cam1": "queue"})) as st:  # every frame sent
        yield st


def camera_config_seen(ha: HomeAssistant, stream: str):
    return lambda: any(expand(c).get("topic") == f"streampi/{stream}/snapshot" for c in ha.configs().values())


# -- the core, without a broker ------------------------------------------------------------------
@pytest.mark.parametrize("url,env,expect", [
    ("mqtt://broker.lan", {}, ("broker.lan", 1883, False, None, None)),
    ("mqtts://broker.lan", {}, ("broker.lan", 8883, True, None, None)),
    ("mqtt://ha@10.0.0.2:1884", {"STREAMPI_MQTT_PASSWORD": "pw"}, ("10.0.0.2", 1884, False, "ha", "pw")),
    ("mqtt://ha:in%40url@[::1]:1999", {}, ("::1", 1999, False, "ha", "in@url")),
])
def test_broker_urls(url, env, expect):
    b, warnings = parse_broker(url, environ=env)
    assert (b.host, b.port, b.tls, b.username, b.password) == expect
    assert "in%40url" not in b.url and "in@url" not in b.url  # never the password in what is logged
    assert bool(warnings) == ("in%40url" in url)


@pytest.mark.parametrize("url,needle", [
    ("http://broker", "expected mqtt://"), ("broker.lan:1883", "expected mqtt://"), ("mqtt://", "no host"),
    ("mqtt://h:99999", "port"), ("mqtt://h:x", "port"), ("mqtt://h/topic", "no path"),
    ("mqtt://:pw@h", "user name"),
])
def test_bad_broker_urls_say_why(url, needle):
    with pytest.raises(MqttConfigError, match=needle):
        parse_broker(url, environ={})


def test_password_file_wins_and_ca_needs_tls(tmp_path):
    f = tmp_path / "pw"
    f.write_text("from-file\nignored\n")
    b, warnings = parse_broker("mqtt://u:in-url@h", password_file=str(f), environ={"STREAMPI_MQTT_PASSWORD": "env"})
    assert b.password == "from-file" and warnings  # (the URL's password still warns)
    with pytest.raises(MqttConfigError, match="cannot read"):
        parse_broker("mqtt://u@h", password_file=str(tmp_path / "missing"), environ={})
    with pytest.raises(MqttConfigError, match="mqtts"):
        parse_broker("mqtt://h", ca_file=str(f), environ={})
    with pytest.raises(MqttConfigError, match="no such file"):
        parse_broker("mqtts://h", ca_file=str(tmp_path / "nope.pem"), environ={})


def test_counts_follow_the_objects():
    st = MqttState(node="n", labels=["person", "car"], announce=["person"])
    counts = {}

    def apply(msgs):
        for m in msgs:
            if m.retain and m.topic.count("/") == 2 and not m.topic.endswith(("snapshot", "available")):
                counts[m.topic] = int(m.payload)
    apply(st.on_result({"stream": "cam0", "ok": True, "timing": {"infer_ms": 5.0}}))
    assert counts == {"streampi/cam0/person": 0}  # announced for the stream at once
    a, b = obj("a", "person", 0.6, 1.0), obj("b", "person", 0.7, 1.0)
    apply(st.on_event(event("new", None, a)))
    apply(st.on_event(event("new", None, b)))
    assert counts["streampi/cam0/person"] == 2
    apply(st.on_event(event("update", a, {**a, "label": "car"})))  # a relabelled object moves
    assert counts["streampi/cam0/person"] == 1 and counts["streampi/cam0/car"] == 1
    apply(st.on_event(event("end", b, {**b, "end_time": 2.0})))
    apply(st.on_event(event("end", a, {**a, "label": "car", "end_time": 2.0})))
    assert counts == {"streampi/cam0/person": 0, "streampi/cam0/car": 0}
    apply(st.on_event(event("new", None, obj("c", "person", 0.9, 3.0))))
    assert counts["streampi/cam0/person"] == 1
    apply(st.server_restarted())  # its objects are gone with it
    assert counts["streampi/cam0/person"] == 0
    assert st.on_event({"type": "new"}) == [] and st.counters["bad_events"] == 1  # not an event: skipped, counted
    # stream names come from producers: entities for MAX_STREAMS of them at most
    from streampi.integrations.mqtt import MAX_STREAMS

    for i in range(MAX_STREAMS + 5):
        st.on_result({"stream": f"s{i}", "ok": True})
    assert len(st.streams) == MAX_STREAMS and st.counters["streams_over_limit"] == 6  # (cam0 was the first)
    kinds = [m.kind for m in st.on_event(event("new", None, obj("z", "person", 0.9, 4.0, stream="s300")))]
    assert "event" in kinds and "config" not in kinds  # its events still go out, without entities
    with pytest.raises(MqttConfigError, match="no label 'dog'"):
        MqttState(labels=["person"], announce=["dog"])


# -- against Mosquitto ---------------------------------------------------------------------------
@needs_broker
def test_events_counts_snapshots_stats_and_discovery(broker, server, tmp_path):
    ha = HomeAssistant(broker.port)
    bridge = BridgeProc(tmp_path, "--broker", broker.url, "--server", server.results, "--control", server.control,
                        "--stats-interval", "1", "--labels", "circle,square")
    try:
        ha.wait(lambda: ha.last("streampi/available") == b"online", what="availability online")
        feed_until(server, "cam0", camera_config_seen(ha, "cam0"))
        ha.wait(lambda: len(ha.configs()) >= 5, what="the discovery of cam0")  # camera + 2 labels x 2
        configs = check_discovery(ha)
        comps = sorted(DISCOVERY_TOPIC.match(t)["component"] for t in configs)
        assert comps == ["binary_sensor", "binary_sensor", "camera", "sensor", "sensor"]
        by_state = {expand(c)["state_topic"]: expand(c) for c in configs.values() if "state_topic" in expand(c)}
        assert set(by_state) == {"streampi/cam0/circle", "streampi/cam0/square"}
        occupancy = expand(next(c for t, c in configs.items()
                                if DISCOVERY_TOPIC.match(t)["component"] == "binary_sensor"
                                and expand(c)["state_topic"] == "streampi/cam0/circle"))

        def occupied(topic):
            return render(occupancy.get("value_template"), ha.last(topic).decode()) == occupancy.get("payload_on", "ON")

        assert ha.last("streampi/cam0/circle") == b"0" and not occupied("streampi/cam0/circle")

        # events: two circles come, one goes, then the other; a snapshot of the first
        t = time.time()
        a, b = obj("cam0-1", "circle", 0.61, t), obj("cam0-2", "circle", 0.55, t + 0.1)
        sent = [event("new", None, a), event("new", None, b),
                event("update", a, {**a, "score": 0.8, "top_score": 0.8, "frame_time": t + 0.2}),
                event("end", b, {**b, "end_time": t + 0.3, "frame_time": t + 0.3})]
        for ev, count in zip(sent, [b"1", b"2", b"2", b"1"]):
            publish(server, "_events", ev)
            ha.wait(lambda ev=ev: any(json.loads(p) == ev for _, p, _ in ha.seen("streampi/events")), what=ev["type"])
            ha.wait(lambda count=count: ha.last("streampi/cam0/circle") == count, what=f"count {count}")
        assert occupied("streampi/cam0/circle")
        jpeg = simplejpeg.encode_jpeg(np.full((32, 32, 3), 200, np.uint8))
        publish(server, "_snapshots", {"id": "cam0-1", "stream": "cam0", "label": "circle", "score": 0.8, "jpeg": jpeg})
        ha.wait(lambda: ha.last("streampi/cam0/snapshot") == jpeg, what="the snapshot")
        assert ha.last("streampi/cam0/circle/snapshot") == jpeg
        last = event("end", a, {**a, "end_time": t + 0.5, "frame_time": t + 0.5})
        publish(server, "_events", last)
        sent.append(last)
        ha.wait(lambda: ha.last("streampi/cam0/circle") == b"0", what="count back to 0")
        got = [json.loads(p) for _, p, _ in ha.seen("streampi/events")]
        assert got == sent  # each once, in order, as published
        assert not occupied("streampi/cam0/circle")

        # a label the server never announced for every stream gets its entities when first seen
        publish(server, "_events", event("new", None, obj("cam0-3", "triangle", 0.9, t + 1)))
        ha.wait(lambda: ha.last("streampi/cam0/triangle") == b"1", what="triangle count")
        ha.wait(lambda: any(expand(c).get("state_topic") == "streampi/cam0/triangle" for c in ha.configs().values()),
                what="triangle discovery")
        # a label the model does not have: published as an event, no entity
        publish(server, "_events", event("new", None, obj("cam0-4", "unicorn", 0.9, t + 2)))
        ha.wait(lambda: len(ha.seen("streampi/events")) == len(sent) + 2, what="the unicorn event")
        assert not any("unicorn" in t for t in ha.configs())

        # retained: what Home Assistant gets when it starts later
        late = retained_on_subscribe(broker.port, "#")
        assert late["streampi/available"] == b"online" and late["streampi/cam0/circle"] == b"0"
        assert late["streampi/cam0/snapshot"] == jpeg
        assert set(ha.configs()) <= set(late)

        # stats every second: the stream's answers, the workers
        ha.wait(lambda: any(json.loads(p)["streams"].get("cam0") for _, p, _ in ha.seen("streampi/stats")),
                what="stats with cam0")
        stats = [json.loads(p) for _, p, _ in ha.seen("streampi/stats")]
        cam = next(s["streams"]["cam0"] for s in stats if s["streams"].get("cam0"))
        assert cam["answered"] >= 1 and cam["fps_in"] > 0 and cam["processed"] + cam["dropped"] + cam["errors"] == \
            cam["answered"]
        assert stats[-1]["server"]["healthy"] is True and len(stats[-1]["server"]["workers"]) == 1

        # Home Assistant's birth message: every config again
        mark = ha.mark()
        ha.publish("homeassistant/status", "online")
        ha.wait(lambda: set(ha.configs(mark)) == set(ha.configs()), what="discovery again")
    finally:
        assert bridge.stop() == 0
        ha.close()
    late = retained_on_subscribe(broker.port, "streampi/available")
    assert late == {"streampi/available": b"offline"}  # said on the way out


@needs_broker
def test_broker_killed_and_restarted(broker, server, tmp_path):
    ha = HomeAssistant(broker.port)
    bridge = BridgeProc(tmp_path, "--broker", broker.url, "--server", server.results, "--control", server.control,
                        "--stats-interval", "1")
    sub = Subscriber(server.results, streams=["cam1"])
    try:
        ha.wait(lambda: ha.last("streampi/available") == b"online", what="online")
        feed_until(server, "cam0", camera_config_seen(ha, "cam0"))
        t = time.time()
        objs = [obj(f"cam0-{i}", "circle", 0.5, t + i) for i in range(4)]
        published = []

        def send(ev):
            publish(server, "_events", ev)
            published.append(ev)
        send(event("new", None, objs[0]))
        ha.wait(lambda: len(ha.seen("streampi/events")) == 1, what="the first event")

        broker.kill()
        bridge.wait_log("lost the broker")
        # the broker is away: events wait in the bridge; frames are served as ever
        send(event("new", None, objs[1]))
        send(event("update", objs[0], {**objs[0], "score": 0.9, "frame_time": t + 10}))
        wait_subscribed(sub, server.frames)
        frame = np.zeros((48, 64, 3), np.uint8)
        with Producer(server.frames, stream="cam1") as cam:
            for _ in range(20):
                cam.send(frame)
            cam.flush(10)
        answers = [sub.recv(timeout=30) for _ in range(20)]
        assert sorted(r["seq"] for r in answers if r["stream"] == "cam1") == list(range(20))

        broker.start()  # the same port, nothing retained
        bridge.wait_log("connected to", timeout=60)
        ha.wait(lambda: ha.connections >= 2, what="the listener back")
        # re-announced on the new broker: availability, discovery, counts
        ha.wait(lambda: retained_on_subscribe(broker.port, "streampi/available").get("streampi/available") == b"online",
                what="online again")
        late = retained_on_subscribe(broker.port, "#")
        assert any(t.startswith("homeassistant/camera/") for t in late), sorted(late)
        assert late.get("streampi/cam0/circle") == b"2"  # both circles, counted from the events
        send(event("end", objs[1], {**objs[1], "end_time": t + 20, "frame_time": t + 20}))
        send(event("end", objs[0], {**objs[0], "end_time": t + 21, "frame_time": t + 21}))
        ha.wait(lambda: ha.last("streampi/cam0/circle") == b"0", what="the ends")
        check_discovery(ha, since=0)
        got = [json.loads(p) for _, p, _ in ha.seen("streampi/events")]
        keys = [(e["type"], e["after"]["id"], e["after"]["frame_time"]) for e in got]
        assert len(keys) == len(set(keys)), "an event was published twice"
        assert all(e in published for e in got)
        assert got[0] == published[0] and got[-2:] == published[-2:]
        # every event handed to the broker exactly once, none dropped (the bridge's own account)
        ha.wait(lambda: any(json.loads(p)["bridge"]["events_published"] == len(published)
                            for _, p, _ in ha.seen("streampi/stats")), what="the bridge's account")
        last = [json.loads(p) for _, p, _ in ha.seen("streampi/stats")][-1]
        assert last["bridge"]["events_dropped"] == 0 and last["bridge"]["connections"] >= 2
        assert bridge.text().count("lost the broker") == 1  # a state change is logged once
    finally:
        sub.close()
        assert bridge.stop() == 0
        ha.close()


def test_bad_urls_stop_the_commands_with_a_reason(capsys, tmp_path):
    from streampi.cli import main

    assert main(["mqtt", "--broker", "http://broker.lan"]) == 2
    assert "expected mqtt://" in capsys.readouterr().err
    assert main(["mqtt", "--broker", "mqtt://u@h", "--password-file", str(tmp_path / "none")]) == 2
    assert "cannot read the MQTT password file" in capsys.readouterr().err
    # serve checks before it loads anything (no server, no bridge started)
    assert main(["serve", "--mqtt", "mqtt://h:99999", "--control", "none"]) == 2
    assert "port must be a number" in capsys.readouterr().err
    assert main(["serve", "--mqtt", "mqtt://h", "--mqtt-prefix", "a/#"]) == 2
    assert "no '+' or '#'" in capsys.readouterr().err


@needs_broker
def test_unreachable_broker_is_retried_and_logged_once(server, tmp_path):
    port = free_port()  # nothing listens there yet
    bridge = BridgeProc(tmp_path, "--broker", f"mqtt://127.0.0.1:{port}", "--server", server.results,
                        "--control", server.control)
    try:
        bridge.wait_log("cannot reach the broker")
        assert "Connection refused" in bridge.text()
        time.sleep(4)  # paho retries after 1 s, then 2 s: at least two more attempts, none logged
        assert bridge.proc.poll() is None
        b = Mosquitto(tmp_path, port).start()
        try:
            ha = HomeAssistant(port)
            ha.wait(lambda: ha.last("streampi/available") == b"online", timeout=60, what="online once it is there")
            ha.close()
            assert bridge.text().count("cannot reach the broker") == 1
            assert bridge.text().count("connected to") == 1
        finally:
            assert bridge.stop() == 0
            b.kill()
    finally:
        bridge.stop()


@needs_broker
@pytest.mark.skipif(not Path("/usr/bin/mosquitto_passwd").exists(), reason="mosquitto_passwd is not installed")
def test_serve_mqtt_password_and_supervision(tmp_path):
    psutil = pytest.importorskip("psutil")
    pwfile = tmp_path / "passwd"
    subprocess.run(["/usr/bin/mosquitto_passwd", "-b", "-c", str(pwfile), "cam", "s3cret pass"], check=True,
                   capture_output=True)
    subprocess.run(["/usr/bin/mosquitto_passwd", "-b", str(pwfile), "ha", "ha-pass"], check=True, capture_output=True)
    b = Mosquitto(tmp_path, extra=f"allow_anonymous false\npassword_file {pwfile}\n").start()
    ha = HomeAssistant(b.port, auth=("ha", "ha-pass"))
    wrong = BridgeProc(tmp_path, "--broker", f"mqtt://cam@127.0.0.1:{b.port}", "--control", "none",
                       env={"STREAMPI_MQTT_PASSWORD": "wrong"})
    proc = None
    try:
        wrong.wait_log("refused the connection")
        time.sleep(2.5)  # a retry or two, logged once
        assert wrong.text().count("refused the connection") == 1 and wrong.proc.poll() is None
        wrong.stop()
        pw = tmp_path / "pw"
        pw.write_text("s3cret pass\n")
        proc, info = start_server(["shapes_detector", "--workers", "1", "--isolation", "thread", "--mqtt",
                                   f"mqtt://cam@127.0.0.1:{b.port}", "--mqtt-password-file", str(pw),
                                   "--mqtt-stats-interval", "1"])
        ha.wait(lambda: ha.last("streampi/available") == b"online", timeout=60, what="online")
        children = [c for c in psutil.Process(proc.pid).children() if "mqtt" in c.cmdline()]
        assert len(children) == 1
        first = children[0]
        assert "s3cret" not in " ".join(first.cmdline())  # the password never on a command line
        ha.wait(lambda: any(json.loads(p)["server"] for _, p, _ in ha.seen("streampi/stats")), what="stats")
        mark = ha.mark()
        first.kill()  # SIGKILL: the broker says the last will, the server starts another bridge
        ha.wait(lambda: [p for _, p, _ in ha.seen("streampi/available", mark)][:1] == [b"offline"], what="the will")
        ha.wait(lambda: ha.seen("streampi/available", mark)[-1][1] == b"online", timeout=60, what="online again")
        again = [c for c in psutil.Process(proc.pid).children() if "mqtt" in c.cmdline()]
        assert len(again) == 1 and again[0].pid != first.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not again[0].is_running() or again[0].status() == psutil.STATUS_ZOMBIE
        assert retained_on_subscribe(b.port, "streampi/available", auth=("ha", "ha-pass")) == \
            {"streampi/available": b"offline"}  # said on the way out
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        wrong.stop()
        ha.close()
        b.kill()



def test_the_bridge_loads_no_interpreter_and_the_server_no_mqtt_client():
    """The bridge is a small process (no interpreter, no kernels); ``serve --mqtt`` checks that
    paho-mqtt is there without importing it (its client lives in the child)."""
    code = ("import sys\n"
            "import streampi.cli.mqtt, streampi.integrations.mqtt_bridge as b\n"
            "from streampi.integrations.mqtt import parse_broker\n"
            "b.check_paho(); b.Bridge  # what serve --mqtt does in the server's process\n"
            "print(sorted(m for m in sys.modules if m.startswith(('streampi._ext', 'ai_edge_litert', "
            "'tflite_runtime', 'streampi.serving.server', 'streampi.preprocess', 'paho.mqtt.client'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate it signs for 127.0.0.1 (openssl), as a broker owner makes them."""
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=streampi test CA")
    ssl("req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.pem", "-days", "2", "-extfile", "san.ext")
    return folder / "ca.pem", folder / "broker.pem", folder / "broker.key"


@needs_broker
@pytest.mark.skipif(not Path("/usr/bin/openssl").exists(), reason="openssl is not installed")
def test_mqtts_with_a_ca_file(tmp_path):
    ca, cert, key = make_certificates(tmp_path)
    b = Mosquitto(tmp_path, extra=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\nallow_anonymous true\n")
    b.start()
    ha = HomeAssistant(b.port, topics=("streampi/#",), ca=str(ca))
    untrusted = BridgeProc(tmp_path, "--broker", f"mqtts://127.0.0.1:{b.port}", "--control", "none")
    trusted = None
    try:
        untrusted.wait_log("cannot reach the broker")
        assert "certificate verify failed" in untrusted.text()  # the system's CAs do not know ours: said why
        assert untrusted.stop() == 0
        assert ha.last("streampi/available") is None
        trusted = BridgeProc(tmp_path, "--broker", f"mqtts://127.0.0.1:{b.port}", "--ca", str(ca), "--control", "none")
        ha.wait(lambda: ha.last("streampi/available") == b"online", what="online over TLS")
    finally:
        untrusted.stop()
        if trusted is not None:
            assert trusted.stop() == 0
        ha.close()
        b.kill()


@needs_broker
@pytest.mark.skipif(importlib.util.find_spec("streampi.events") is None,
                    reason="the tracker (streampi.events) is not on this branch yet")
def test_a_moving_scene_through_the_real_tracker(broker, tmp_path):
    """End to end: MovingScenes (shapes crossing the view one after another, tracks known)
    through the bundled detector and the server's tracker; on the broker, the same events as on
    the server's ``_events`` topic, in order, one ``new`` and one ``end`` per shape, the counts
    back to 0 and a snapshot that decodes."""
    from streampi.synthetic import MovingScenes

    scenes = MovingScenes(seed=3, objects=6)
    shots = list(scenes.frames())
    truth_tracks = {t for _, truth in shots for t, *_ in truth}
    opts = ServerOptions(**{"workers": 1, "isolation": "thread", "policy": "queue", "events": True,
                            "events_max_missed": 5, "events_max_missed_s": 1.0})  # the last one ends by time
    ha = HomeAssistant(broker.port)
    with ServerThread("shapes_detector", opts) as st:
        bridge = BridgeProc(tmp_path, "--broker", broker.url, "--server", st.results, "--control", st.control,
                            "--labels", "circle")
        raw = Subscriber(st.results, streams=["_events"], errors=False)
        try:
            ha.wait(lambda: ha.last("streampi/available") == b"online", what="online")
            feed_until(st, "warmup", camera_config_seen(ha, "warmup"))  # the bridge hears the server
            with Subscriber(st.results, streams=["cam"]) as sub, Producer(st.frames, stream="cam") as cam:
                wait_subscribed(sub, st.frames)
                base = time.time()
                for i, (img, _) in enumerate(shots):
                    cam.send(img, ts=base + i / 15.0)
                answers = [sub.recv(timeout=30) for _ in shots]
            assert all(r["ok"] for r in answers)
            zmq_events: list[dict] = []

            def ended() -> bool:
                kinds = collections.Counter(e["type"] for e in zmq_events)
                return kinds["new"] > 0 and kinds["new"] == kinds["end"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # what the server published, read apart from the bridge
                try:
                    zmq_events.append(raw.recv(timeout=2.0))
                except TimeoutError:
                    if ended():
                        break
            assert ended(), f"not every object ended: {collections.Counter(e['type'] for e in zmq_events)}"
            ha.wait(lambda: len(ha.seen("streampi/events")) >= len(zmq_events), what="every event on the broker")
        finally:
            raw.close()
            assert bridge.stop() == 0
    got = [json.loads(p) for _, p, _ in ha.seen("streampi/events")]
    ha.close()
    assert got == zmq_events  # the same events, in order, each once
    ids = collections.Counter((e["type"], e["after"]["id"]) for e in got)
    news = sorted(i for (kind, i) in ids if kind == "new")
    assert len(news) == len(truth_tracks)  # one object per shape that crossed the view
    assert all(ids[("new", i)] == 1 and ids[("end", i)] == 1 for i in news)
    for label in {e["after"]["label"] for e in got}:
        assert ha.last(f"streampi/cam/{label}") == b"0"
    snap = ha.last("streampi/cam/snapshot")
    assert snap is not None and simplejpeg.decode_jpeg(snap).shape[2] == 3


@needs_broker
def test_a_server_that_stops_answering_makes_its_entities_unavailable(broker, tmp_path):
    st = ServerThread("shapes_detector", ServerOptions(workers=1, isolation="thread")).start()
    ha = HomeAssistant(broker.port)
    bridge = BridgeProc(tmp_path, "--broker", broker.url, "--server", st.results, "--control", st.control)
    try:
        ha.wait(lambda: ha.last("streampi/available") == b"online", what="online")
        st.stop()  # the server goes; the bridge stays connected to the broker
        ha.wait(lambda: ha.last("streampi/available") == b"offline", what="offline")
        assert bridge.proc.poll() is None
        bridge.wait_log("the server does not answer")
        assert "lost the broker" not in bridge.text()
    finally:
        st.stop()
        assert bridge.stop() == 0
        ha.close()


@needs_broker
def test_a_label_the_model_does_not_have_stops_the_bridge(broker, server, tmp_path):
    bridge = BridgeProc(tmp_path, "--broker", broker.url, "--server", server.results, "--control", server.control,
                        "--labels", "circle,dog")
    assert bridge.proc.wait(60) == 2
    bridge.stop()
    assert "the model has no label 'dog'" in bridge.text() and "circle" in bridge.text()
