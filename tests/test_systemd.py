"""systemd notifications against a real unix datagram socket, as systemd would receive them, and the
unit file checked by ``systemd-analyze verify`` where it is installed."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import systemd_verify

from streampi.serving import systemd

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "contrib" / "streampi.service"


class NotifySocket:
    """What systemd listens on: a datagram socket that learns each sender's pid (SO_PASSCRED)."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(0.2)

    def read_all(self, until: float) -> list[tuple[int, dict[str, str], list[str]]]:
        """(sender pid, fields, lines) of every datagram until the deadline or a quiet 0.5 s."""
        out, quiet_since = [], time.monotonic()
        while time.monotonic() < until and time.monotonic() - quiet_since < 0.5:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            quiet_since = time.monotonic()
            pid = next(struct.unpack("iII", d)[0] for level, kind, d in ancdata
                       if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
            lines = data.decode().split("\n")
            out.append((pid, dict(line.split("=", 1) for line in lines), lines))
        return out

    def close(self) -> None:
        self.sock.close()


def run_python(code: str, env: dict[str, str], timeout: float = 30) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


LIFECYCLE = """
from streampi.serving.systemd import Notifier
n = Notifier.from_env()
assert n.enabled
print(n.watchdog_interval(), flush=True)
n.ready("serving shapes_int8 with 2 workers")
n.watchdog_if(True)
n.watchdog_if(False, ["worker 1 is restarting"])
n.watchdog_if(False, ["worker 1 is restarting"])
n.watchdog_if(True)
n.reloading("reloading model.tflite")
n.ready("serving model with 2 workers")
n.extend_timeout(7.5)
n.stopping()
"""


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_lifecycle_datagrams_reach_the_socket(tmp_path, abstract):
    name = f"streampi-test-{uuid.uuid4().hex}"
    address, env_value = (b"\0" + name.encode(), "@" + name) if abstract else (str(tmp_path / "notify"),) * 2
    listener = NotifySocket(address)
    try:
        proc = run_python(LIFECYCLE, {"NOTIFY_SOCKET": env_value, "WATCHDOG_USEC": "30000000"})
        out, err = proc.communicate(timeout=30)
        got = listener.read_all(time.monotonic() + 10)
    finally:
        listener.close()
    assert proc.returncode == 0, err
    assert out.strip() == "15.0"  # WatchdogSec=30 → feed every 15 s
    assert {pid for pid, _, _ in got} == {proc.pid}  # NotifyAccess=main: it must come from the main pid
    lines = [m[2] for m in got]
    assert lines[0] == ["READY=1", "STATUS=serving shapes_int8 with 2 workers"]
    assert lines[1] == ["WATCHDOG=1"]  # healthy from the start: the ready status stays
    assert lines[2] == ["STATUS=unhealthy: worker 1 is restarting"]  # not fed; said once
    assert lines[3] == ["WATCHDOG=1", "STATUS=serving shapes_int8 with 2 workers"]  # fed again, status back
    assert lines[4][0] == "RELOADING=1" and lines[4][2] == "STATUS=reloading model.tflite"
    assert 0 < int(got[4][1]["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[5] == ["READY=1", "STATUS=serving model with 2 workers"]
    assert lines[6] == ["EXTEND_TIMEOUT_USEC=7500000"]
    assert lines[7] == ["STOPPING=1"]
    assert len(lines) == 8
    assert "unhealthy: worker 1 is restarting (not feeding the systemd watchdog)" in err


FEEDER = """
import asyncio, sys, time
from streampi import logs
from streampi.serving.systemd import Notifier, feed_watchdog
logs.setup("info")
n = Notifier.from_env()
calls = []
def health():
    calls.append(time.monotonic())
    k = len(calls)
    if k == 7:
        raise RuntimeError("status failed")
    return {"healthy": not 4 <= k <= 8, "problems": ["worker 0 (pid 1) is stopped"]}
async def main():
    task = asyncio.ensure_future(feed_watchdog(n, health))
    while len(calls) < 12:
        await asyncio.sleep(0.01)
    task.cancel()
asyncio.run(main())
print(len(calls), round(calls[-1] - calls[0], 2), flush=True)
"""


def test_the_watchdog_is_fed_only_while_healthy(tmp_path):
    listener = NotifySocket(str(tmp_path / "notify"))
    try:
        proc = run_python(FEEDER, {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "100000"})
        out, err = proc.communicate(timeout=30)
        got = listener.read_all(time.monotonic() + 10)
    finally:
        listener.close()
    assert proc.returncode == 0, err
    calls, span = out.split()
    assert int(calls) == 12 and float(span) >= 11 * 0.05 * 0.9  # every WatchdogSec/2 = 50 ms
    fed = ["WATCHDOG=1" in lines for _, _, lines in got]
    # health calls 1-3 healthy (fed), 4-8 unhealthy (7 raised: one datagram per change of status, none
    # fed), 9-12 healthy again (fed)
    assert fed == [True] * 3 + [False] * 3 + [True] * 4
    statuses = [f["STATUS"] for _, f, _ in got if "STATUS" in f]
    assert statuses == ["unhealthy: worker 0 (pid 1) is stopped",
                        "unhealthy: health check failed: RuntimeError('status failed')",
                        "unhealthy: worker 0 (pid 1) is stopped", "healthy"]
    assert "the health check failed | Traceback" in err


def test_outside_systemd_everything_is_a_no_op():
    n = systemd.Notifier.from_env({})
    assert not n.enabled and n.watchdog_interval() is None
    assert n.ready("x") is False and n.watchdog() is False and n.watchdog_if(True) is False and n.stopping() is False


def test_environment_parsing():
    pid = os.getpid()
    assert systemd.socket_address("@name") == b"\0name"
    assert systemd.socket_address("/run/systemd/notify") == "/run/systemd/notify"
    with pytest.raises(ValueError, match="neither an absolute path"):
        systemd.socket_address("vsock:2:1234")
    assert systemd.watchdog_usec({"WATCHDOG_USEC": "20000000"}, pid) == 20_000_000
    assert systemd.watchdog_usec({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(pid)}, pid) == 20_000_000
    assert systemd.watchdog_usec({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(pid + 1)}, pid) is None
    for bad in ("", "0", "-5", "soon"):
        assert systemd.watchdog_usec({"WATCHDOG_USEC": bad}, pid) is None
    n = systemd.Notifier.from_env({"NOTIFY_SOCKET": "relative/path", "WATCHDOG_USEC": "1000000"})
    assert not n.enabled and n.watchdog_interval() is None  # no socket: no watchdog to feed either
    n = systemd.Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000"})
    assert n.enabled and n.watchdog_interval() == 0.5


def test_a_vanished_socket_is_a_warning_not_a_crash(tmp_path, caplog):
    n = systemd.Notifier(str(tmp_path / "gone"))
    assert n.ready("x") is False and n.watchdog() is False
    assert sum("cannot notify systemd" in r.message for r in caplog.records) == 1  # said once
    n.close()


# -- the unit file ------------------------------------------------------------------------------------
def test_unit_file_has_what_the_service_needs():
    text = UNIT.read_text()
    settings = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["Restart"] == "on-failure" and settings["User"] == "streampi"
    assert settings["WatchdogSec"].endswith("s") and int(settings["WatchdogSec"][:-1]) > 10  # > --invoke-timeout
    assert settings["MemoryMax"].endswith("M") and settings["ProtectSystem"] == "strict"
    assert "kill -HUP $MAINPID" in settings["ExecReload"]
    assert "--config /etc/streampi/streampi.toml" in settings["ExecStart"]


def test_unit_file_passes_systemd_analyze_verify(tmp_path):
    code, out, problems = systemd_verify(UNIT.read_text(), "streampi.service", tmp_path)
    assert code == 0 and not problems, out


# -- the real server under a notify socket ---------------------------------------------------------
def _server_notifies() -> bool:
    from streampi.serving import server

    return hasattr(server, "feed_watchdog")


@pytest.mark.skipif(not _server_notifies(), reason="the server does not call the systemd notifier yet "
                                                   "(streampi.serving.server imports no feed_watchdog)")
def test_server_is_ready_feeds_the_watchdog_only_while_healthy_and_says_stopping(tmp_path):
    """As under systemd: READY=1 once serving, WATCHDOG=1 every WatchdogSec/2 while healthy, none while
    a worker is stopped (SIGSTOP), again once it runs (SIGCONT), STOPPING=1 at SIGTERM."""
    import json
    import signal

    listener = NotifySocket(str(tmp_path / "notify"))
    cmd = [sys.executable, "-m", "streampi", "serve", "shapes_int8", "--workers", "2", "--ready-json",
           "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*", "--control", "none",
           "--credit-bind", "tcp://127.0.0.1:*"]
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}  # fed every 0.2 s
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stopped_pid = None
    try:
        info = json.loads(proc.stdout.readline())
        runner_environ = [Path(f"/proc/{w['pid']}/environ").read_bytes().split(b"\0") for w in info["workers"]]
        healthy = listener.read_all(time.monotonic() + 1.0)
        stopped_pid = info["workers"][1]["pid"]
        os.kill(stopped_pid, signal.SIGSTOP)
        unhealthy = listener.read_all(time.monotonic() + 1.5)
        os.kill(stopped_pid, signal.SIGCONT)
        stopped_pid = None
        recovered = listener.read_all(time.monotonic() + 1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        stopping = listener.read_all(time.monotonic() + 2)
    finally:
        if stopped_pid is not None:
            os.kill(stopped_pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
    assert proc.returncode == 0, err
    assert {pid for pid, _, _ in healthy + unhealthy + recovered + stopping} == {proc.pid}  # the main process only
    # before the runners load the model: more time to start than the unit's TimeoutStartSec, if need be
    assert int(healthy[0][1]["EXTEND_TIMEOUT_USEC"]) >= 120_000_000 and len(healthy[0][1]) == 1
    assert healthy[1][1]["READY"] == "1" and healthy[1][1]["STATUS"].startswith("serving shapes_int8")
    # only the server speaks to systemd: its runner processes do not inherit the variables
    assert all(not var.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_USEC=")) for env in runner_environ for var in env)
    assert sum("WATCHDOG" in f for _, f, _ in healthy) >= 3
    # from the first check that saw the stopped worker on (what came before was sent before the SIGSTOP)
    seen = next(i for i, (_, f, _) in enumerate(unhealthy)
                if f.get("STATUS", "").startswith(f"unhealthy: worker 1 (pid {info['workers'][1]['pid']}) is stopped"))
    assert seen <= 2 and not any("WATCHDOG" in f for _, f, _ in unhealthy[seen:])
    assert sum("WATCHDOG" in f for _, f, _ in recovered) >= 3
    at = next(i for i, (_, f, _) in enumerate(stopping) if f.get("STOPPING") == "1")
    assert not any("WATCHDOG" in f for _, f, _ in stopping[at:])  # stopping is not healthy


def _server_reloads() -> bool:
    from streampi.serving import Server

    return _server_notifies() and hasattr(Server, "reload")


@pytest.mark.skipif(not _server_reloads(), reason="the server does not reload on SIGHUP or does not notify systemd "
                                                  "yet")
def test_sighup_reload_says_reloading_then_ready(tmp_path):
    """``systemctl reload`` (SIGHUP): RELOADING=1 with the monotonic time systemd checks, then READY=1 once
    the new workers serve; a reload that fails also ends with READY=1 (the old model keeps serving)."""
    import json
    import signal

    model = tmp_path / "model.tflite"
    shutil.copy(ROOT / "streampi" / "models" / "shapes_int8.tflite", model)
    listener = NotifySocket(str(tmp_path / "notify"))
    cmd = [sys.executable, "-m", "streampi", "serve", str(model), "--workers", "1", "--ready-json",
           "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*", "--control", "none",
           "--credit-bind", "tcp://127.0.0.1:*"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")})
    try:
        json.loads(proc.stdout.readline())
        started = listener.read_all(time.monotonic() + 2)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.send_signal(signal.SIGHUP)
        reloaded = listener.read_all(time.monotonic() + 20)
        model.write_bytes(b"not a model")
        proc.send_signal(signal.SIGHUP)
        failed = listener.read_all(time.monotonic() + 20)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
    assert proc.returncode == 0, err
    assert [next(iter(f)) for _, f, _ in started] == ["EXTEND_TIMEOUT_USEC", "READY"]
    for got in (reloaded, failed):
        assert [next(iter(f)) for _, f, _ in got] == ["RELOADING", "READY"], got
        assert int(got[0][1]["MONOTONIC_USEC"]) >= before
        assert got[0][1]["STATUS"] == f"reloading {model}" and got[1][1]["STATUS"].startswith("serving model (")
    assert "reload of" in err and "failed, still serving model" in err
