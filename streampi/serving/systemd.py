"""systemd ``Type=notify`` support: readiness, status, reload, stop and the watchdog.

The protocol is one datagram of ``KEY=VALUE`` lines to the unix socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for Linux's abstract namespace), the same thing
``sd_notify(3)`` sends; it needs no library. Outside systemd (no ``$NOTIFY_SOCKET``) every call
is a cheap no-op, so the server calls the notifier unconditionally.

The watchdog (``WatchdogSec=`` in the unit) restarts a server that stops proving it is alive.
streampi feeds it only while it is *healthy* (every worker alive and no batch held past the
invoke timeout): a server whose event loop hangs, or whose workers cannot be brought back, stops
feeding it and systemd restarts the whole service. A failure the server repairs by itself (one
worker replaced) heals well within ``WatchdogSec`` and never reaches systemd.

How the server uses it::

    notifier = Notifier.from_env()
    notifier.extend_timeout(seconds)      # before the runners load the model
    ...                                   # workers loaded, sockets bound
    notifier.ready(f"serving {model} with {n} workers")
    if notifier.watchdog_interval() is not None:
        tasks[asyncio.ensure_future(feed_watchdog(notifier, server.status))] = "watchdog"
    ...                                   # SIGHUP: notifier.reloading(), then notifier.ready(...) when done
    notifier.stopping()                   # at the start of the stop
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("streampi.systemd")

ENV_SOCKET, ENV_WATCHDOG_USEC, ENV_WATCHDOG_PID = "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"


def socket_address(value: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` → an ``AF_UNIX`` address; ``@name`` is ``\\0name`` (abstract namespace)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"{ENV_SOCKET}={value!r} is neither an absolute path nor @abstract (vsock is not supported)")


def watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """The watchdog period systemd asked for, in µs; ``None`` when there is none for ``pid``."""
    text = environ.get(ENV_WATCHDOG_USEC)
    if not text:
        return None
    owner = environ.get(ENV_WATCHDOG_PID)
    if owner:
        try:
            if int(owner) != pid:
                return None  # meant for another process (an ExecStartPre=, a parent that exec'd us)
        except ValueError:
            log.warning("ignoring %s=%r: not a process id", ENV_WATCHDOG_PID, owner)
            return None
    try:
        usec = int(text)
    except ValueError:
        log.warning("ignoring %s=%r: not a number of microseconds", ENV_WATCHDOG_USEC, text)
        return None
    if usec <= 0:
        log.warning("ignoring %s=%r: not a positive number of microseconds", ENV_WATCHDOG_USEC, text)
        return None
    return usec


class Notifier:
    """Sends state changes to systemd. Never raises: a notification that cannot be sent is
    logged once as a warning (a server must not stop because systemd's socket went away)."""

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec if address is not None else None
        self._sock: socket.socket | None = None
        self._warned = False
        self._last_health: tuple[bool, str] | None = None
        self._serving_status: str | None = None  # what ready()/status() said: shown again once healthy

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd's environment describes (disabled outside systemd). The
        runners' fork server is started without these variables (see
        :func:`streampi.serving.workers._fork_server`): only the server speaks to systemd."""
        env = os.environ if environ is None else environ
        value = env.get(ENV_SOCKET)
        address = None
        if value:
            try:
                address = socket_address(value)
            except ValueError as exc:
                log.warning("not notifying systemd: %s", exc)
        return cls(address, watchdog_usec(env, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; ``True`` when it was sent."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # never stall the event loop on a full socket
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %r: %s (further failures are not logged)", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """The server serves: sockets bound, workers loaded (and after a reload: done)."""
        self._serving_status = status if status is not None else self._serving_status
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """A one-line state for ``systemctl status``."""
        self._serving_status = text
        return self.notify(*_status(text))

    def reloading(self, status: str | None = None) -> bool:
        """A reload (SIGHUP) started; call :meth:`ready` when it is done (or has failed)."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                           *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """The stop began (SIGTERM): systemd shows the service as deactivating."""
        return self.notify("STOPPING=1", *_status(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start or stop: the server asks for its runners' model load
        (a big model on a slow card) before it starts them."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog_interval(self) -> float | None:
        """Seconds between two watchdog calls (half of ``WatchdogSec``); ``None``: no watchdog."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def watchdog(self) -> bool:
        """"Still alive": resets systemd's watchdog timer."""
        return self.notify("WATCHDOG=1")

    def watchdog_if(self, healthy: bool, problems: list[str] | tuple[str, ...] = ()) -> bool:
        """Feed the watchdog only when ``healthy``. When health changes, say so in the log and
        in ``systemctl status`` (the problems; once healthy again, the last :meth:`ready`/
        :meth:`status` text). Returns whether the watchdog was fed."""
        text = "healthy" if healthy else "unhealthy: " + ("; ".join(problems) or "no reason given")
        lines = ["WATCHDOG=1"] if healthy else []
        if (healthy, text) != self._last_health:
            if self._last_health is not None or not healthy:
                (log.info if healthy else log.warning)("health: %s%s", text,
                                                       "" if healthy else " (not feeding the systemd watchdog)")
                lines += _status(self._serving_status or text if healthy else text)
            self._last_health = (healthy, text)
        if not lines:
            return False
        return self.notify(*lines) and healthy

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str | None) -> list[str]:
    return [] if text is None else ["STATUS=" + " ".join(str(text).split())]


async def feed_watchdog(notifier: Notifier, health: Callable[[], Any], interval: float | None = None) -> None:
    """Every ``interval`` (default: half of ``WatchdogSec``) ask ``health()`` and feed the watchdog
    only if it says healthy. ``health`` returns a bool or a map with ``healthy`` and ``problems``
    (``Server.status``). A ``health`` that raises counts as unhealthy. Runs until cancelled."""
    interval = interval if interval is not None else notifier.watchdog_interval()
    if interval is None:
        raise ValueError("no watchdog to feed: WatchdogSec= is not set for this process")
    while True:
        try:
            state = health()
            if isinstance(state, Mapping):
                healthy, problems = bool(state.get("healthy")), list(state.get("problems") or ())
            else:
                healthy, problems = bool(state), []
        except Exception as exc:  # a broken health check must not look healthy
            log.exception("the health check failed")
            healthy, problems = False, [f"health check failed: {exc!r}"]
        notifier.watchdog_if(healthy, problems)
        await asyncio.sleep(interval)
