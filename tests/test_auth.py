"""CurveZMQ: keys, an authenticated server, and what unknown or misconfigured clients get.

Real sockets on 127.0.0.1, a real server with pyzmq's authenticator, real handshakes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth

from streampi import LABELS, ShapesGenerator
from streampi.auth import CurveServer, apply_client, is_loopback, keygen
from streampi.client import AsyncProducer, AsyncSubscriber, Producer, Subscriber
from streampi.errors import AuthError
from streampi.protocol import encode_frame
from streampi.serving import ServerOptions
from streampi.testing import ServerThread, start_server


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """Key pairs: the server, an allowed camera and viewer, a stranger, and a fake server."""
    root = tmp_path_factory.mktemp("keys")
    allowed = root / "allowed"
    out: dict[str, Path] = {"allowed": allowed}
    for name, where in [("server", root), ("cam", allowed), ("viewer", allowed), ("stranger", root),
                        ("fake_server", root)]:
        public, secret = keygen(where, name)
        out[name], out[name + "_secret"] = public, secret
    # the allowed directory holds public keys only, as an operator would copy them
    for secret in allowed.glob("*.key_secret"):
        secret.rename(root / secret.name)
        out[secret.name.removesuffix(".key_secret") + "_secret"] = root / secret.name
    return out


@pytest.fixture(scope="module")
def server(keys):
    opts = ServerOptions(workers=1, policy="queue", curve_secret=str(keys["server_secret"]),
                         curve_clients=str(keys["allowed"]))
    with ServerThread("shapes_int8", opts) as st:
        yield st


def client_keys(keys, who: str, server_key: str = "server") -> dict:
    return {"curve_secret": keys[who + "_secret"], "curve_server": keys[server_key]}


def wait_subscribed(sub: Subscriber, frames: str, keys, timeout: float = 10.0) -> None:
    """Send malformed probes through an allowed CURVE socket until ``sub`` sees an answer
    (ZeroMQ's PUB drops what it sends before a subscription has reached it)."""
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    apply_client(push, keys["cam_secret"], keys["server"])
    push.connect(frames)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if push.poll(100, zmq.POLLOUT):
                push.send(b"\xc1probe")  # never valid msgpack: answered on _errors
            try:
                if sub.recv(timeout=0.2)["stream"] != "_errors":
                    continue
            except (TimeoutError, AuthError):  # the handshake may still be under way
                continue
            try:
                while True:
                    sub.recv(timeout=0.3)
            except TimeoutError:
                return
        raise TimeoutError("the subscriber never received a result")
    finally:
        push.close()


def frame(seed: int = 1) -> tuple[np.ndarray, str]:
    rgb, label = ShapesGenerator(seed=seed).frame(64, 64)
    return rgb, LABELS[label]


# -- keys ------------------------------------------------------------------------------------
def test_keygen_writes_pyzmq_certificates(tmp_path):
    public, secret = keygen(tmp_path / "new", "cam7")
    assert public == tmp_path / "new" / "cam7.key" and secret == tmp_path / "new" / "cam7.key_secret"
    pub_key, no_secret = zmq.auth.load_certificate(public)
    pub_key2, secret_key = zmq.auth.load_certificate(secret)
    assert pub_key == pub_key2 and len(pub_key) == 40 and no_secret is None and len(secret_key) == 40
    assert zmq.curve_public(secret_key) == pub_key
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    with pytest.raises(AuthError, match="exists already"):
        keygen(tmp_path / "new", "cam7")
    with pytest.raises(AuthError, match="plain file name"):
        keygen(tmp_path, "../evil")


def test_keygen_from_the_command_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "streampi", "keygen", str(tmp_path), "--name", "srv"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "srv.key").is_file() and (tmp_path / "srv.key_secret").is_file()
    again = subprocess.run([sys.executable, "-m", "streampi", "keygen", str(tmp_path), "--name", "srv"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists already" in again.stderr


def test_bad_key_files_give_clear_errors(keys, tmp_path):
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text("not a certificate\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ((tmp_path / "missing.key_secret", keys["allowed"]), "does not exist"),
        ((keys["server"], keys["allowed"]), "holds no secret key"),  # the public file by mistake
        ((garbage, keys["allowed"]), "is not a ZeroMQ certificate"),
        ((keys["server_secret"], tmp_path / "nowhere"), "not a directory"),
        ((keys["server_secret"], empty), "no public certificates"),
        ((keys["server_secret"], None), "needs --curve-clients"),
        ((None, keys["allowed"]), "needs --curve-secret"),
    ]
    for args, match in cases:
        with pytest.raises(AuthError, match=match):
            CurveServer.from_files(*args)
    with pytest.raises(AuthError, match="curve_server="):
        Producer("tcp://127.0.0.1:1", curve_secret=keys["cam_secret"])
    with pytest.raises(AuthError, match="does not exist"):
        Subscriber("tcp://127.0.0.1:1", curve_secret=tmp_path / "nope", curve_server=keys["server"])


def test_is_loopback():
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("tcp://localhost:1") and is_loopback("ipc:///tmp/x")
    assert is_loopback("tcp://[::1]:5555")
    assert not is_loopback("tcp://0.0.0.0:5555") and not is_loopback("tcp://*:5555")
    assert not is_loopback("tcp://192.168.1.10:5555")


# -- an authenticated server ----------------------------------------------------------------
def test_allowed_clients_are_served(server, keys):
    with Subscriber(server.results, **client_keys(keys, "viewer")) as sub:
        wait_subscribed(sub, server.frames_v1, keys)
        with Producer(server.frames, stream="cam", **client_keys(keys, "cam")) as cam:
            rgb, label = frame()
            seq = cam.send(rgb, timeout=10)
            r = sub.recv(timeout=30)
    assert r["ok"] and r["stream"] == "cam" and r["seq"] == seq and r["top"][0][1] == label


def test_unknown_producer_is_never_decoded_or_answered(server, keys):
    with Subscriber(server.results, **client_keys(keys, "viewer")) as sub:
        wait_subscribed(sub, server.frames_v1, keys)
        before = dict(server.stats)
        t0 = time.monotonic()
        with Producer(server.frames, stream="intruder", **client_keys(keys, "stranger")) as bad:
            with pytest.raises(AuthError, match="refused this client's key"):
                bad.send(frame()[0], timeout=3)
        assert time.monotonic() - t0 < 6
        # a plain (no CURVE) sender gets nowhere either
        plain = zmq.Context.instance().socket(zmq.PUSH)
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(server.frames_v1)
        try:
            plain.send_multipart(encode_frame("plain", 0, "rgb", frame()[0], 64, 64), zmq.NOBLOCK)
        except zmq.Again:  # the server refused its handshake before the frame could even be queued
            pass
        with pytest.raises(TimeoutError):
            print("unexpected", sub.recv(timeout=1.5))
        plain.close()
        assert server.stats["received"] == before["received"]  # not one message reached the decoder
        assert server.stats["answered"] == before["answered"]


def test_unknown_subscriber_receives_nothing(server, keys):
    with Subscriber(server.results, **client_keys(keys, "viewer")) as good_sub, \
            Subscriber(server.results, handshake_timeout=3, **client_keys(keys, "stranger")) as bad_sub:
        wait_subscribed(good_sub, server.frames_v1, keys)
        # a raw SUB socket with the stranger's keys, which no handshake check guards
        raw = zmq.Context.instance().socket(zmq.SUB)
        raw.setsockopt(zmq.LINGER, 0)
        apply_client(raw, keys["stranger_secret"], keys["server"])
        raw.subscribe(b"")
        raw.connect(server.results)
        time.sleep(0.5)
        with Producer(server.frames, stream="cam", **client_keys(keys, "cam")) as cam:
            for i in range(3):
                cam.send(frame(i)[0], timeout=10)
        for _ in range(3):
            assert good_sub.recv(timeout=30)["stream"] == "cam"
        t0 = time.monotonic()
        with pytest.raises(AuthError, match="refused this client's key"):
            bad_sub.recv(timeout=2)
        assert time.monotonic() - t0 < 4
        assert raw.poll(1000) == 0  # nothing arrived
        raw.close()


def test_wrong_server_key_fails_clearly_within_the_timeout(server, keys):
    wrong = client_keys(keys, "cam", server_key="fake_server")
    for call in (lambda: Producer(server.frames, stream="cam", **wrong).send(frame()[0], timeout=2),
                 lambda: Subscriber(server.results, **wrong).recv(timeout=2),
                 lambda: Subscriber(server.results, handshake_timeout=2, **wrong).recv()):
        t0 = time.monotonic()
        with pytest.raises(AuthError, match="not this server's public key"):
            call()
        assert time.monotonic() - t0 < 4


def test_curve_client_against_a_plain_server_fails_clearly(keys):
    with ServerThread("shapes_int8", ServerOptions(workers=1)) as st:
        t0 = time.monotonic()
        with pytest.raises(AuthError, match="does not use CurveZMQ"):
            Producer(st.frames, **client_keys(keys, "cam")).send(frame()[0], timeout=2)
        assert time.monotonic() - t0 < 4


def test_async_clients_with_keys(server, keys):
    async def go() -> dict:
        sub = AsyncSubscriber(server.results, streams=["acam"], **client_keys(keys, "viewer"))
        cam = AsyncProducer(server.frames, stream="acam", **client_keys(keys, "cam"))
        try:
            for i in range(40):  # until the subscription has reached the server
                await cam.send(frame(i)[0])
                try:
                    return await sub.recv(timeout=0.5)
                except TimeoutError:
                    continue
            raise TimeoutError("no result")
        finally:
            cam.close()
            sub.close()

    r = asyncio.run(go())
    assert r["ok"] and r["stream"] == "acam"

    async def wrong() -> None:
        with AsyncSubscriber(server.results, **client_keys(keys, "cam", server_key="fake_server")) as sub:
            await sub.recv(timeout=2)

    with pytest.raises(AuthError):
        asyncio.run(wrong())


# -- the command line ------------------------------------------------------------------------
def test_serve_produce_subscribe_with_keys(keys):
    proc, info = start_server(["--workers", "1", "--policy", "queue", "--bind", "tcp://127.0.0.1:0",
                               "--publish", "tcp://127.0.0.1:0", "--curve-secret", str(keys["server_secret"]),
                               "--curve-clients", str(keys["allowed"])])
    try:
        sub = subprocess.Popen([sys.executable, "-m", "streampi", "subscribe", "--connect", info["publish"],
                                "--stream", "cli", "--count", "3", "--json",
                                "--curve-secret", str(keys["viewer_secret"]), "--curve-server", str(keys["server"])],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)  # the subscription must reach the server first
        prod = subprocess.run([sys.executable, "-m", "streampi", "produce", "--connect", info["credit_bind"],
                               "--stream", "cli", "--count", "30", "--fps", "30", "--size", "64x64",
                               "--curve-secret", str(keys["cam_secret"]), "--curve-server", str(keys["server"])],
                              capture_output=True, text=True, timeout=60)
        assert prod.returncode == 0, prod.stderr
        out, err = sub.communicate(timeout=60)
        assert sub.returncode == 0, err
        lines = out.strip().splitlines()
        assert len(lines) == 3 and all('"stream": "cli"' in line and '"ok": true' in line for line in lines)
        # a stranger's produce fails with a clear message and exit code 2
        bad = subprocess.run([sys.executable, "-m", "streampi", "produce", "--connect", info["credit_bind"],
                              "--count", "1", "--curve-secret", str(keys["stranger_secret"]),
                              "--curve-server", str(keys["server"])], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "refused this client's key" in bad.stderr, bad.stderr
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0


def test_serve_refuses_bad_keys_before_starting(keys, tmp_path):
    run = subprocess.run([sys.executable, "-m", "streampi", "serve", "--curve-secret", str(keys["server"]),
                          "--curve-clients", str(keys["allowed"])], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "holds no secret key" in run.stderr


def test_control_socket_answers_only_allowed_clients(server, keys):
    from streampi.ctl import request

    allowed = request(server.control, "health", timeout=5, curve_secret=str(keys["viewer_secret"]),
                      curve_server=str(keys["server"]))
    with pytest.raises(TimeoutError):  # no key: the handshake never completes, nothing is answered
        request(server.control, "health", timeout=1)
    with pytest.raises((TimeoutError, AuthError)):  # a key the server does not know
        request(server.control, "health", timeout=1, curve_secret=str(keys["stranger_secret"]),
                curve_server=str(keys["server"]))
    assert allowed["ok"] and allowed["healthy"]
