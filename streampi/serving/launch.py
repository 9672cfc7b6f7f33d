"""Start ``streampi serve`` in a child process and wait for it to be ready, and wait for a
subscriber to be heard by it (the demo, the benchmarks, tests). Light: it imports neither an
interpreter nor the compiled kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import zmq

if TYPE_CHECKING:
    from ..client import Subscriber


def start_server(args: list[str], timeout: float = 120.0) -> tuple[subprocess.Popen, dict]:
    """Run ``streampi serve`` with ``args`` in a child process; return it and its ready line
    (JSON). ``--control`` and ``--credit-bind`` default to ephemeral ports here, so that
    several servers may run at once."""
    for flag in ("--control", "--credit-bind"):
        if flag not in args:
            args = [*args, flag, "tcp://127.0.0.1:*"]
    cmd = [sys.executable, "-m", "streampi", "serve", "--ready-json", *args]
    # PYTHONSAFEPATH: `python -m` would put the working directory first on sys.path, and a
    # streampi/ source tree there would be served instead of the installed package (Python 3.11+)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"streampi serve exited with code {proc.wait()} before it was ready")
        if line.startswith("{"):
            info = json.loads(line)
            if info.get("ready"):
                threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep draining
                return proc, info
    proc.kill()
    raise TimeoutError("streampi serve did not get ready in time")


def wait_subscribed(sub: Subscriber, frames_endpoint: str, timeout: float = 10.0) -> None:
    """Block until ``sub`` receives results (ZeroMQ's PUB drops messages sent before a
    subscription has reached it): sends malformed probes, answered on ``_errors``.
    ``frames_endpoint`` may be either frame endpoint: a probe goes through a PUSH (v1) and
    a DEALER (v1.1), and only the one of the matching kind gets through."""
    ctx = zmq.Context.instance()
    push, dealer = ctx.socket(zmq.PUSH), ctx.socket(zmq.DEALER)
    for sock in (push, dealer):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 16)
        sock.connect(frames_endpoint)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for sock, parts in ((push, [b"\xc1probe"]), (dealer, [b"frame", b"\xc1probe"])):  # 0xc1: never msgpack
                try:
                    sock.send_multipart(parts, zmq.NOBLOCK)
                except zmq.Again:
                    pass
            try:
                while True:
                    r = sub.recv(timeout=0.1)
                    if r.get("stream") == "_errors":
                        _drain(sub)
                        return
            except TimeoutError:
                continue
        raise TimeoutError("the subscriber never received a result")
    finally:
        push.close()
        dealer.close()


def _drain(sub: Subscriber) -> None:
    try:
        while True:
            sub.recv(timeout=0.2)
    except TimeoutError:
        pass
