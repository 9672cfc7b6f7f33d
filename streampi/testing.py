"""Helpers to run a server inside a test or a benchmark (real sockets, loopback).

:func:`start_server` (``streampi serve`` in a child process) lives in
:mod:`streampi.serving.launch`; it is re-exported here for tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from .serving.launch import start_server, wait_subscribed
from .serving.options import ServerOptions
from .serving.server import Server

__all__ = ["ServerThread", "start_server", "wait_subscribed"]


class ServerThread:
    """A :class:`~streampi.serving.Server` on its own event loop in a background thread.

    Binds ephemeral loopback ports unless told otherwise; ``frames`` (protocol v1.1, what
    :class:`~streampi.client.Producer` speaks by default), ``frames_v1`` (PUSH) and
    ``results`` are the endpoints to connect to. Use as a context manager: leaving it stops the server
    gracefully (every accepted frame answered) and re-raises a failure of the server.
    """

    def __init__(self, model: str = "shapes_int8", options: ServerOptions | None = None, **config: Any) -> None:
        options = options or ServerOptions()
        ephemeral = "tcp://127.0.0.1:*"  # the defaults' fixed ports: several servers may run at once
        options = dataclasses.replace(options, **{name: ephemeral for name in ("bind", "credit_bind", "publish", "control")
                                                  if getattr(options, name) == getattr(ServerOptions, name)})
        self.server = Server(model, options, **config)
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            ready = asyncio.Event()
            task = asyncio.ensure_future(self.server.serve(ready))
            waiter = asyncio.ensure_future(ready.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if task.done():
                await task  # a start-up failure: raised here, reported by start()
            self._ready.set()
            await task

        try:
            asyncio.run(go())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def start(self) -> ServerThread:
        self._thread = threading.Thread(target=self._main, name="streampi-server", daemon=True)
        self._thread.start()
        self._ready.wait(120)
        if self.error is not None:
            raise self.error
        self.frames_v1, self.results = self.server.bound["bind"], self.server.bound["publish"]
        self.frames = self.server.bound.get("credit_bind", self.frames_v1)
        self.control = self.server.bound.get("control")
        return self

    def stop(self, timeout: float = 60) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.server.stop)
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def stats(self):
        return self.server.stats

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 10.0) -> Any:
        """``fn(*args)`` on the server's loop (where its listeners and doors run, so that what
        it reads or changes is not in the middle of a loop turn); returns what it returns, or
        raises what it raised."""
        done: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:  # handed to the calling thread
                done.set_exception(exc)
        self._loop.call_soon_threadsafe(run)
        return done.result(timeout=timeout)
