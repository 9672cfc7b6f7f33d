"""The control socket's client: ask a running server for its health, workers, stats, or a reload
(``streampi ctl`` is its command-line face; scripts and tests call :func:`request`)."""

from __future__ import annotations

from typing import Any

import msgspec
import zmq

COMMANDS = ("health", "workers", "stats", "reload")


def request(endpoint: str, cmd: str, timeout: float = 3.0, *, curve_secret: str | None = None,
            curve_server: str | None = None, **args: Any) -> dict:
    """Send one command (with ``args``); return the reply map. Raises TimeoutError when no
    server answers. ``curve_secret``/``curve_server``: key files when the server uses CurveZMQ."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        if curve_secret or curve_server:
            from .auth import apply_client

            apply_client(sock, curve_secret, curve_server)
        sock.connect(endpoint)
        sock.send(msgspec.msgpack.encode({"cmd": cmd, **args}))
        try:
            reply = sock.recv()
        except zmq.Again:
            raise TimeoutError(f"no answer from {endpoint} in {timeout:g} s: is `streampi serve` running "
                               f"with --control {endpoint}?") from None
        return msgspec.msgpack.decode(reply)
    finally:
        sock.close()
