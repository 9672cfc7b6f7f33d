"""Remote nodes: the node table alone (tables of what nodes say and what the server decides),
the node messages' bounds, and real `streampi node` processes joined to a server on 127.0.0.1:
a pure dispatcher, a refused model, a refused key, a node killed or stopped mid-run, a crashed
runner on a node. Every frame sent is answered exactly once. (Nodes in network namespaces,
links cut: tests/test_cluster_netns.py.)"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest
from helpers import Load, assert_exactly_once, collect_until, frame_results, scrape, value

from streampi import protocol
from streampi.client import Producer, Subscriber
from streampi.ctl import request
from streampi.errors import ProtocolError
from streampi.serving import ServerOptions
from streampi.serving.nodes import NodeTable
from streampi.testing import ServerThread, wait_subscribed

SHA = "a" * 64


# -- the table, alone ----------------------------------------------------------------------------------
def hello(node_id="n1", sha=SHA, workers=2, max_batch=4, digest="d", mode="frame", name=None):
    return protocol.NodeHello(protocol.VERSION, node_id, name or node_id, sha, "m", workers, max_batch, mode, digest)


def job(stream="cam", seq=0):
    return SimpleNamespace(msg=protocol.FrameMessage(stream, seq, "rgb", b"\0" * 12, 2, 2))


def table(send_ok=True):
    sent = []

    def send(identity, parts):
        sent.append((identity, parts))
        return send_ok

    t = NodeTable(spec=SimpleNamespace(model_info={"name": "m", "sha256": SHA[:12]}), model_sha256=SHA, digest="d",
                  session="s", send=send, silent_s=3.0, clock=lambda: 10.0)
    return t, sent


@pytest.mark.parametrize("bad, words", [
    (dict(sha="b" * 64), "serves m (sha256 aaaaaaaaaaaa); the node runs m (sha256 bbbbbbbbbbbb)"),
    (dict(digest="other"), "model options"),
    (dict(mode="carrier-pigeon"), "--node-send"),
])
def test_a_node_running_something_else_is_refused_with_the_reason(bad, words):
    t, sent = table()
    node, why, lost = t.join(b"id1", hello(**bad), now=0.0)
    assert node is None and words in why and lost == []
    assert len(t) == 0 and t.stats["nodes_refused"] == 1 and t.idle([], {}) == []


def test_in_tensor_mode_a_node_with_other_model_options_is_welcomed():
    """The server runs the kernel and the decoder: a node's own options are never used."""
    t, sent = table()
    t.mode = "tensor"
    node, why, lost = t.join(b"id1", hello(digest="other", mode="frame tensor"), now=0.0)
    assert why is None and node is not None and len(t) == 1
    node, why, _ = t.join(b"id2", hello(node_id="n2", sha="b" * 64, digest="other", mode="frame tensor"), now=0.0)
    assert node is None and "sha256 bbbbbbbbbbbb" in why  # (the model file still must be the server's)


def test_a_welcomed_node_gives_two_units_per_worker_and_idle_new_quick_ones_go_first():
    t, sent = table()
    a, why, _ = t.join(b"a", hello("a", workers=2), now=0.0)
    assert why is None and a.generation == 1
    assert [(u.index, u.unit) for u in a.units] == [(0, 0), (1, 0), (0, 1), (1, 1)]  # 2 batches a worker
    w0, w1, w0b, w1b = a.units
    usable = set(a.units)
    w0.batch_ms = w0b.batch_ms = 5.0  # measured
    assert t.idle(usable, {}) == [w1, w0]  # one unit a worker; not measured yet: first
    w1.batch_ms = w1b.batch_ms = 9.0
    assert t.idle(usable, {}) == [w0, w1]  # quickest first
    assert t.idle(usable, {w0: object()}) == [w1]  # an idle worker before a busy one's second unit
    assert t.idle(usable, {w0: object(), w1: object()}) == [w0b, w1b]  # both busy: their second units
    assert t.idle(usable, {w0: object(), w0b: object()}) == [w1]  # its two batches: no more
    assert t.idle({w1}, {}) == [w1]  # not usable (its worker is restarting): not idle
    b, _, _ = t.join(b"b", hello("b", workers=1), now=1.0)
    assert b.generation == 2 and len(b.units) == 2 and t.idle(usable | set(b.units), {})[0] is b.units[0]


def test_a_batch_goes_out_with_its_frames_and_comes_back_once():
    t, sent = table()
    node, _, _ = t.join(b"a", hello("a"), now=0.0)
    jobs = [job(seq=1), job(seq=2)]
    node.units[1].submit(jobs)
    identity, parts = sent[-1]
    kind, head, data = protocol.decode_node(parts)
    assert identity == b"a" and kind == protocol.KIND_NODE_BATCH and head.worker == 1
    assert [f[:3] for f in head.frames] == [("cam", 1, "rgb"), ("cam", 2, "rgb")] and len(data) == 2
    assert node.units[1].holding == head.id and node.units[1].index == 1
    assert t.idle(set(node.units), {}) == [node.units[0]]  # the idle worker (not worker 1's second unit)
    assert t.finish(b"a", node.generation, head.id + 1, now=0.5) is None  # no such batch
    unit, back, _ = t.finish(b"a", node.generation, head.id, now=0.5)
    assert unit is node.units[1] and back is jobs and unit.holding is None
    assert t.finish(b"a", node.generation, head.id, now=0.6) is None  # twice: discarded
    assert t.stats["node_late_results"] == 2
    assert node.first_batch == (10.0, 0)  # (the clock says 10 s after it joined; no batch went elsewhere)
    other, _, _ = t.join(b"b", hello("b"), now=10.0)
    node.units[0].submit([job(seq=3)])
    other.units[0].submit([job(seq=4)])
    assert other.first_batch == (0.0, 1)  # one batch went elsewhere between its joining and its first


def test_a_send_that_fails_is_kept_for_the_driver_to_report():
    t, sent = table(send_ok=False)
    node, _, _ = t.join(b"a", hello("a"), now=0.0)
    jobs = [job()]
    node.units[0].submit(jobs)
    assert t.failed_sends == [(node.units[0], jobs, "node a could not be reached")]
    assert node.in_flight == {} and node.units[0].holding is None


def test_a_silent_node_is_lost_with_its_batches_and_its_late_answer_discarded():
    t, sent = table()
    node, _, _ = t.join(b"a", hello("a"), now=0.0)
    jobs = [job()]
    node.units[0].submit(jobs)
    batch_id = protocol.decode_node(sent[-1][1])[1].id
    t.heard(b"a", now=2.0)
    assert t.expire(now=4.9) == []  # heard 2.9 s ago
    (lost_node, held), = t.expire(now=5.0)
    assert lost_node is node and held == [(node.units[0], jobs)]
    assert len(t) == 0 and t.idle(set(node.units), {}) == []
    assert [r["state"] for r in t.describe(now=5.0)] == ["missing"]
    assert t.finish(b"a", node.generation, batch_id, now=6.0) is None  # its late answer
    assert t.stats["node_late_results"] == 1 and t.stats["nodes_lost"] == 1
    again, _, _ = t.join(b"a2", hello("a"), now=7.0)  # back, on a new connection: a new generation
    assert again.generation == 2 and t.missing == {}
    assert t.finish(b"a2", 1, batch_id, now=7.1) is None  # an answer of generation 1 on the new connection


def test_a_node_joining_again_gives_back_what_its_old_generation_held():
    t, _ = table()
    old, _, _ = t.join(b"a", hello("a"), now=0.0)
    jobs = [job()]
    old.units[0].submit(jobs)
    same, why, lost = t.join(b"a", hello("a"), now=0.5)  # a hello again on the same connection
    assert same is old and why is None and lost == [] and old.in_flight
    new, why, lost = t.join(b"a-again", hello("a"), now=1.0)  # a new connection: a new generation
    assert why is None and lost == [(old.units[0], jobs)] and new.generation == old.generation + 1
    assert list(t.nodes) == [b"a-again"] and t.missing == {}  # back at once: not missing


def test_beats_carry_the_workers_states_of_this_generation_only():
    t, _ = table()
    node, _, _ = t.join(b"a", hello("a"), now=0.0)
    assert t.beat(b"a", protocol.NodeBeat(node.generation, ["ready", "backoff"]), now=1.0) == [node.units[1],
                                                                                              node.units[3]]
    assert [u.state for u in node.units] == ["ready", "backoff"] * 2 and node.units[1].restarts == 1
    assert t.beat(b"a", protocol.NodeBeat(node.generation + 5, ["starting", "starting"]), now=1.5) == []
    assert node.heard == 1.5 and [u.state for u in node.units] == ["ready", "backoff"] * 2


def test_a_node_that_leaves_is_not_missing():
    t, _ = table()
    t.join(b"a", hello("a"), now=0.0)
    t.leave(b"a", now=1.0)
    assert len(t) == 0 and t.missing == {} and t.describe(1.0) == []


# -- the node messages' bounds ---------------------------------------------------------------------------
def test_node_messages_round_trip_and_bad_ones_are_refused_with_a_reason():
    head = protocol.NodeBatchHead(7, 2, 0, [("cam", 1, "rgb", 2, 2)])
    kind, body, data = protocol.decode_node(protocol.encode_node(protocol.KIND_NODE_BATCH, head, [b"x" * 12]))
    assert body == head and data == [b"x" * 12]
    done = protocol.NodeDone(7, 2, [protocol.NodeOutcome({"label": "a"}, None, 0.1, {"infer_ms": 1.0})], 3.0)
    assert protocol.decode_node(protocol.encode_node(protocol.KIND_NODE_DONE, done))[1] == done
    assert protocol.decode_node([protocol.KIND_NODE_BYE]) == (protocol.KIND_NODE_BYE, None, [])
    pack = protocol.pack
    cases = [
        ([b"frame", b"x"], "a node message starts with"),
        ([], "empty"),
        ([protocol.KIND_NODE_HELLO], "needs its map"),
        ([protocol.KIND_NODE_HELLO, b"\xc1"], "bad node-hello"),
        ([protocol.KIND_NODE_HELLO, pack({**msgspec.structs.asdict(hello()), "model_sha256": "zz"})], "model_sha256"),
        ([protocol.KIND_NODE_HELLO, pack({**msgspec.structs.asdict(hello()), "workers": 1000})], "workers"),
        ([protocol.KIND_NODE_BEAT, b"\x80" + b"x" * 2000], "larger than"),
        ([protocol.KIND_NODE_BATCH, pack(msgspec.structs.asdict(head))], "carries 0 data parts"),
        ([protocol.KIND_NODE_BATCH, pack({**msgspec.structs.asdict(head), "frames": [["cam", 1, "rgb", 2, 2]] * 65}),
          *([b"x"] * 65)], "frames"),
        ([protocol.KIND_NODE_BEAT, pack({}), b"extra"], "has 2 parts"),
        ([protocol.KIND_NODE_BYE, b"x"], "alone"),
    ]
    for parts, words in cases:
        with pytest.raises(ProtocolError, match=words):
            protocol.decode_node(parts)


# -- real nodes on 127.0.0.1 ----------------------------------------------------------------------------
def start_node(join: str, name: str, model: str = "shapes_int8", workers: int = 1, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streampi", "node", model, "--join", join, "--name", name,
                             "--workers", str(workers), "--light-threads", "0", "--ready-json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_joined(st: ServerThread, name: str, after: int = 0, timeout: float = 90.0) -> int:
    """The generation of node ``name`` once it has joined with a generation above ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in list(st.server.nodes.table.nodes.values()):
            if node.name == name and node.generation > after:
                return node.generation
        time.sleep(0.05)
    raise AssertionError(f"node {name} did not join: {st.server.status()['nodes']}")


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def dispatcher(**kw) -> ServerOptions:
    return ServerOptions(workers=kw.pop("workers", 0), node_bind="tcp://127.0.0.1:*", **kw)


@pytest.fixture(scope="module")
def local_answer():
    """What a server with a local worker answers for protocol_frame() (the nodes must answer the same)."""
    with ServerThread("shapes_int8", ServerOptions(workers=1, policy="queue")) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        with Producer(st.frames, stream="cam") as prod:
            prod.send(protocol_frame(), timeout=10)
        return sub.recv(timeout=10)


@pytest.mark.parametrize("send", ["frame", "tensor"])
def test_a_pure_dispatcher_runs_every_frame_on_its_node_and_lists_it(send, local_answer):
    opts = dispatcher(policy="queue", metrics_port=0, node_send=send)
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        node = start_node(st.server.bound["node_bind"], "n1")
        try:
            results = answers_once_joined(st, sub, "n1", 30)
            workers = request(st.control, "workers", timeout=5)
            health = request(st.control, "health", timeout=5)
            samples = scrape(st.server.bound["metrics"])
        finally:
            code, err = stop(node)
    assert sorted(r["seq"] for r in results) == list(range(30))  # each once (a batch handed back runs later)
    assert all(r["ok"] and r["node"] == "n1" and r["worker"] == 0 for r in results), results[0]
    assert all(r["timing"]["hop_ms"] >= 0 and r["timing"]["node_ms"] > 0 for r in results)
    assert all(r["top"] == local_answer["top"] for r in results), (results[0]["top"], local_answer["top"])
    assert workers["workers"] == []
    (row,) = workers["nodes"]
    assert row["node"] == "n1" and row["address"] == "127.0.0.1" and row["frames_done"] == 30
    assert row["credit_max"] == 8 and row["generation"] >= 1 and row["batch_ms"] > 0  # 1 worker x 2 batches x 4
    assert health["healthy"] is True, health
    assert value(samples, "streampi_node_up", node="n1") == 1 and value(samples, "streampi_node_frames_total", node="n1") == 30
    assert value(samples, "streampi_node_credit", node="n1") == 8 and value(samples, "streampi_node_batch_seconds",
                                                                            node="n1") > 0
    assert code == 0, err
    assert "joined" in err and "frames 30" in err


def answers_once_joined(st: ServerThread, sub: Subscriber, node: str, n: int) -> list[dict]:
    """Once ``node`` has joined: ``n`` frames sent on stream ``cam``, and their answers."""
    wait_joined(st, node)
    wait_subscribed(sub, st.frames)
    with Producer(st.frames, stream="cam") as prod:
        for _ in range(n):
            prod.send(protocol_frame(), timeout=10)
    return collect_until(sub, lambda out: len(out) >= n)


def protocol_frame():
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (64, 96, 3), np.uint8)


@pytest.mark.parametrize("extra, words, send", [
    (("shapes_float32",), "this server serves shapes_int8", "tensor"),
    (("shapes_int8", "--top-k", "2"), "model options differ from the server's (top_k (--top-k))", "frame"),
    (("shapes_int8", "--channels", "bgr", "--resize", "letterbox"), "(channels (--channels), resize (--resize))",
     "frame"),
])
def test_a_node_with_another_model_or_other_options_is_refused_on_both_sides(extra, words, send, caplog):
    with ServerThread("shapes_int8", dispatcher(node_send=send)) as st:
        model, *flags = extra
        node = start_node(st.server.bound["node_bind"], "wrong", model, 1, *flags)
        code, err = stop_when_exited(node, 90)
        stats = dict(st.stats)
        nodes = st.server.status()["nodes"]
    assert code == 2, err
    assert "refused this node" in err and words in err
    assert stats["nodes_refused"] >= 1 and nodes == []
    assert any("refused node wrong" in r.getMessage() and words in r.getMessage() for r in caplog.records)


def test_in_tensor_mode_a_node_started_without_the_servers_options_answers_as_the_server(local_answer):
    """The default --node-send tensor: a node given only the model file (here even other options)
    joins, and its frames are answered with the server's kernel and decoder options."""
    with ServerThread("shapes_int8", dispatcher(policy="queue")) as st, Subscriber(st.results) as sub:
        node = start_node(st.server.bound["node_bind"], "bare", "shapes_int8", 1, "--top-k", "1", "--channels", "bgr")
        try:
            results = answers_once_joined(st, sub, "bare", 8)
        finally:
            code, err = stop(node)
    assert code == 0, err
    assert sorted(r["seq"] for r in results) == list(range(8))
    assert len(local_answer["top"]) > 1  # (so that the node's --top-k 1 would show)
    assert all(r["ok"] and r["node"] == "bare" and r["top"] == local_answer["top"] for r in results), results[0]


def stop_when_exited(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return stop(proc)
    return proc.returncode, err


def test_a_node_with_an_unknown_key_gets_nothing_and_one_with_a_listed_key_joins(tmp_path):
    from streampi.auth import keygen

    allowed = tmp_path / "allowed"
    server_pub, server_secret = keygen(tmp_path, "server")
    keygen(allowed, "cam")
    _, stranger = keygen(tmp_path / "strangers", "stranger")
    _, member = keygen(tmp_path / "members", "member")
    (allowed / "member.key").write_bytes((tmp_path / "members" / "member.key").read_bytes())  # listed; stranger not
    opts = dispatcher(curve_secret=str(server_secret), curve_clients=str(allowed))
    with ServerThread("shapes_int8", opts) as st:
        join = st.server.bound["node_bind"]
        refused = start_node(join, "stranger", "shapes_int8", 1, "--curve-secret", str(stranger),
                             "--curve-server", str(server_pub))
        code, err = stop_when_exited(refused, 90)
        assert st.server.status()["nodes"] == [] and st.stats["nodes_joined"] == 0
        deadline = time.monotonic() + 10  # the server's socket monitor reports on its own loop turn,
        while not st.stats["node_handshakes_refused"] and time.monotonic() < deadline:  # maybe after the
            time.sleep(0.05)  # node has already exited
        assert st.stats["node_handshakes_refused"] >= 1  # the server's socket monitor saw it
        welcome = start_node(join, "member", "shapes_int8", 1, "--curve-secret", str(member),
                             "--curve-server", str(server_pub))
        try:
            wait_joined(st, "member")
            (row,) = st.server.status()["nodes"]
        finally:
            stop(welcome)
    assert code == 2, err
    assert "refused this node's CurveZMQ key" in err
    public = (tmp_path / "members" / "member.key").read_text()
    assert row["node"] == "member" and row["key"] and row["key"] in public


def run_with_two_nodes(model: str, act, seconds: float = 5.0, rate: float = 20.0, send: str = "frame"):
    """Two one-worker nodes behind a dispatcher, a queue-policy load; ``act(st, nodes)`` mid-run."""
    opts = dispatcher(policy="queue", queue_size=16, node_send=send)
    with ServerThread(model, opts) as st, Subscriber(st.results) as sub:
        join = st.server.bound["node_bind"]
        nodes = {name: start_node(join, name, model) for name in ("a", "b")}
        try:
            for name in nodes:
                wait_joined(st, name)
            wait_subscribed(sub, st.frames)
            load = Load(st.frames, producers=2, streams_each=1, rate=rate, seconds=seconds).start()
            info = act(st, nodes)
            load.join()
            results = collect_until(sub, lambda out: len(frame_results(out)) >= len(load.sent), timeout=90)
            status = st.server.status()
            stats = dict(st.stats)
        finally:
            for proc in nodes.values():
                stop(proc)
    return load, results, status, stats, info


def wait_node_holding(st: ServerThread, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(getattr(u, "node_name", None) == name for u in list(st.server.in_hand)):
            return
        time.sleep(0.001)
    raise AssertionError(f"node {name} never held a batch")


@pytest.mark.parametrize("send", ["frame", "tensor"])
def test_a_node_killed_mid_run_loses_nothing_and_health_names_it(send, caplog):
    def kill_a(st, nodes):
        time.sleep(1.5)
        wait_node_holding(st, "a")
        nodes["a"].kill()  # SIGKILL: no bye
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not st.server.status()["problems"]:
            time.sleep(0.05)
        return request(st.control, "health", timeout=5)

    load, results, status, stats, health = run_with_two_nodes("mobilenet_v2_int8", kill_a, send=send)
    codes = assert_exactly_once(load.sent, results)
    print(f"{len(load.sent)} frames: {dict(codes)}; reruns {stats.get('reruns', 0)}; {health['problems']}")
    assert set(codes) <= {"ok", "worker_lost"} and codes["ok"] > 0
    assert stats["answered"] == stats["received"] and stats["nodes_lost"] == 1 and stats["reruns"] >= 1
    assert health["healthy"] is False
    assert any(p.startswith("node a (127.0.0.1, generation") and "is missing: " in p for p in health["problems"])
    assert any(r.getMessage().startswith("node a (127.0.0.1, generation") and "is lost: " in r.getMessage()
               for r in caplog.records)
    after = [r for r in results if r["ok"] and r["seq"] > 0]
    assert {r["node"] for r in after} >= {"b"}
    assert [n["node"] for n in status["nodes"] if n["state"] == "joined"] == ["b"]


@pytest.mark.slow
def test_a_stopped_node_is_lost_its_frames_run_elsewhere_and_it_comes_back_a_new_generation():
    def stop_a(st, nodes):
        wait_node_holding(st, "a")
        generation = next(n.generation for n in st.server.nodes.table.nodes.values() if n.name == "a")
        os.kill(nodes["a"].pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not st.stats["nodes_lost"]:
                time.sleep(0.05)
        finally:
            os.kill(nodes["a"].pid, signal.SIGCONT)
        return generation, wait_joined(st, "a", after=generation)

    load, results, status, stats, (before, after) = run_with_two_nodes("mobilenet_v2_int8", stop_a, seconds=6)
    codes = assert_exactly_once(load.sent, results)
    print(f"{len(load.sent)} frames: {dict(codes)}; reruns {stats.get('reruns', 0)}, late answers discarded "
          f"{stats.get('node_late_results', 0)}; generation {before} -> {after}")
    assert set(codes) <= {"ok", "worker_lost"} and codes["ok"] > 0
    assert stats["nodes_lost"] >= 1 and stats["reruns"] >= 1 and after > before
    assert stats["answered"] == stats["received"]
    gens = collections.Counter(r["generation"] for r in results if r["ok"] and r["node"] == "a")
    assert after in gens or status["nodes"], gens  # (it may come back when the load is over)


@pytest.mark.slow
def test_a_node_restarts_its_crashed_runner_and_the_batch_runs_again():
    def kill_runner(st, nodes):
        wait_node_holding(st, "a")
        ready = json.loads(nodes["a"].stdout.readline())  # --ready-json: the runners' pids
        runner = ready["workers"][0]["pid"]
        assert Path(f"/proc/{runner}").exists()
        os.kill(runner, signal.SIGKILL)
        return runner

    load, results, status, stats, killed = run_with_two_nodes("mobilenet_v2_int8", kill_runner)
    codes = assert_exactly_once(load.sent, results)
    print(f"{len(load.sent)} frames: {dict(codes)}; reruns {stats.get('reruns', 0)}; batches lost "
          f"{stats.get('batches_lost', 0)}")
    assert set(codes) <= {"ok", "worker_lost"} and codes["ok"] > 0
    assert stats.get("nodes_lost", 0) == 0  # the node lived; its worker came back
    a = next(n for n in status["nodes"] if n["node"] == "a")
    assert a["worker_states"] == ["ready"] and stats["nodes_joined"] == 2  # the same generation throughout
    assert stats["batches_lost"] >= 1 and stats["reruns"] >= 1  # the node told, the server ran it again
    assert json.dumps(status["problems"]) == "[]"


def test_a_reload_refuses_the_nodes_running_the_previous_model_and_loses_no_frame():
    with ServerThread("shapes_int8", dispatcher(policy="queue")) as st, Subscriber(st.results) as sub:
        join = st.server.bound["node_bind"]
        old, new = start_node(join, "old"), None
        try:
            wait_joined(st, "old")
            wait_subscribed(sub, st.frames)
            with Producer(st.frames, stream="cam") as prod:
                for _ in range(10):
                    prod.send(protocol_frame(), timeout=10)
                before = collect_until(sub, lambda out: len(out) >= 10)  # (a frame held over the reload would
                reply = request(st.control, "reload", timeout=60, model="shapes_uint8")  # wait for a node)
                code, err = stop_when_exited(old, 60)
                new = start_node(join, "new", "shapes_uint8")
                wait_joined(st, "new")
                for _ in range(10):
                    prod.send(protocol_frame(), timeout=10)
                results = before + collect_until(sub, lambda out: len(out) >= 10)
        finally:
            for proc in (old, new):
                if proc is not None:
                    stop(proc)
    assert reply["ok"] is True, reply
    assert code == 2 and "the server now serves shapes_uint8" in err
    # each once, the first ten before the reload (a batch a node hands back runs after the next one)
    assert sorted(r["seq"] for r in results[:10]) == list(range(10))
    assert sorted(r["seq"] for r in results) == list(range(20)) and all(r["ok"] for r in results)
    assert {r["node"] for r in results if r["seq"] >= 10} == {"new"}
    assert all(r["model"]["name"] == "shapes_uint8" for r in results if r["seq"] >= 10)


def test_a_dispatcher_without_a_node_answers_unavailable_until_one_joins():
    with ServerThread("shapes_int8", dispatcher(policy="queue")) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        with Producer(st.frames, stream="cam") as prod:
            prod.send(protocol_frame(), timeout=10)  # waits for a node, then is answered: none came
            first = sub.recv(timeout=30)
            node = start_node(st.server.bound["node_bind"], "n1")
            try:
                wait_joined(st, "n1")
                prod.send(protocol_frame(), timeout=10)
                second = sub.recv(timeout=30)
            finally:
                stop(node)
    assert first["seq"] == 0 and first["error"]["code"] == "unavailable"
    assert second["seq"] == 1 and second["ok"] and second["node"] == "n1"


def test_a_door_request_runs_on_a_node_and_is_answered_through_its_reply():
    """The doors (Frigate, HTTP) hand frames to Server.submit: a node runs them like any frame."""
    import queue

    with ServerThread("shapes_int8", dispatcher(policy="queue")) as st:
        node = start_node(st.server.bound["node_bind"], "n1")
        try:
            wait_joined(st, "n1")
            got: queue.Queue = queue.Queue()
            parts = protocol.encode_frame("door", 7, "rgb", protocol_frame(), 96, 64)
            st._loop.call_soon_threadsafe(st.server.submit, parts, got.put)
            result = got.get(timeout=30)
        finally:
            stop(node)
    assert result["stream"] == "door" and result["seq"] == 7 and result["ok"] and result["node"] == "n1"
    assert got.empty()  # one answer
