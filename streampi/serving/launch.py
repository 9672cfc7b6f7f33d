"""Start ``streampi serve`` in a child process and wait for it to be ready (the demo, the
benchmarks, tests). Light: it imports neither an interpreter nor the compiled kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time


def start_server(args: list[str], timeout: float = 120.0) -> tuple[subprocess.Popen, dict]:
    """Run ``streampi serve`` with ``args`` in a child process; return it and its ready line
    (JSON). ``--control`` and ``--credit-bind`` default to ephemeral ports here, so that
    several servers may run at once."""
    for flag in ("--control", "--credit-bind"):
        if flag not in args:
            args = [*args, flag, "tcp://127.0.0.1:*"]
    cmd = [sys.executable, "-m", "streampi", "serve", "--ready-json", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
