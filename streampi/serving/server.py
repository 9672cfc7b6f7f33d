"""The streaming server: a thin asyncio driver around the scheduler and the workers.

One event loop (uvloop when installed) receives frame messages, validates their headers
(:mod:`streampi.protocol`), feeds the pure :class:`~streampi.serving.scheduler.Scheduler`
and :class:`~streampi.serving.peers.PeerTable` and carries out what they decide: answers,
credit, batches for idle workers, re-runs. Workers (:mod:`streampi.serving.workers`)
preprocess, have their runners invoke, and post-process off the loop. ``streampi ctl`` and
health are answered by :mod:`streampi.serving.control`; the options are in
:mod:`streampi.serving.options`.

Every frame that reaches the server gets exactly one result message. The one place that
decides a frame's fate is :meth:`Server._settle`: results, errors and drops all go through
it, it refuses to answer a frame twice, and everything after the decision (building,
encoding, publishing) is guarded per frame so that one failure cannot leave another frame
unanswered. Background tasks are supervised: one that fails stops the server loudly.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from .. import __version__, protocol
from ..config import ModelConfig
from ..errors import ProtocolError, StreampiError
from ..model import resolve_model
from ..runtime_info import usable_cores
from . import control
from .options import DOOR_STREAMS, ServerOptions
from .peers import Peer, PeerTable
from .scheduler import Job, Scheduler
from .systemd import Notifier, feed_watchdog
from .workers import LOAD_TIMEOUT_S, Events, Handover, Occupancy, Outcome, WorkerSlot, WorkerSpec

__all__ = ["Server", "ServerFailure", "ServerOptions"]

log = logging.getLogger("streampi.server")
#: the longest a v1 frame that found its queue full waits for room (Server._park_v1)
V1_PARK_S = 0.1


class ServerFailure(StreampiError):
    """A part of the server failed and the server stopped (its frames were all answered)."""


class Server(Events):
    """Serve one model. ``await server.serve()`` runs until :meth:`stop`; :meth:`run`
    is the blocking form with uvloop and SIGINT/SIGTERM handling (what the CLI calls).

    >>> server = Server("shapes_int8", ServerOptions(workers=2))   # doctest: +SKIP
    >>> server.run()                                                # doctest: +SKIP
    """

    def __init__(self, model: str = "shapes_int8", options: ServerOptions | None = None,
                 config: ModelConfig | None = None, **config_overrides: Any) -> None:
        self.options = opts = options or ServerOptions()
        opts.check()
        self._curve = None  # keys are checked before anything starts
        if opts.curve_secret is not None or opts.curve_clients is not None:
            from ..auth import CurveServer

            self._curve = CurveServer.from_files(opts.curve_secret, opts.curve_clients)
        self._overrides = config_overrides  # the command line's model options: kept for reloads
        self.model_path = resolve_model(model)
        # load once here so that a bad model fails at start-up, before any socket is bound
        self.spec = WorkerSpec.from_model(self.model_path, opts, config, config_overrides)
        self.delegate_errors, self.backend = list(self.spec.delegate_errors), self.spec.backend_name
        self.config = self.spec.config
        from ..runtime_info import describe_runtime

        self.runtime_info = describe_runtime(opts.backend)  # where the figures come from
        self._cores = usable_cores()
        self.n_workers = opts.workers if opts.workers is not None else len(self._cores)  # 0: nodes only
        self.nodes: Any = None  # serving/nodes.py: the remote nodes (--node-bind)
        self.stats: collections.Counter[str] = collections.Counter()
        self.sched = Scheduler(policy=opts.policy, stream_policies=opts.stream_policies,
                               queue_size=opts.queue_size, max_streams=opts.max_streams, max_batch=opts.max_batch,
                               max_delay=opts.max_delay_ms / 1e3, batchable=self.spec.batchable)
        self.sched.keep_all = self.spec.light_path  # a lone live frame runs on every core
        self.slots: list[WorkerSlot] = []
        self._occupancy = Occupancy()  # which workers hold a batch (the light path's "the others idle")
        self.bound: dict[str, str] = {}
        self.stopping = False  # no more frames come in; finish what is held
        self._closed = False  # sockets closed: nothing is published any more
        self._unavailable = False  # every worker is in back-off: answer at once
        self.in_hand: dict[WorkerSlot, Handover] = {}  # the batch each worker holds, and since when
        self.usable: set[WorkerSlot] = set()  # workers whose interpreter is up
        self._retiring: list[WorkerSlot] = []  # workers of the previous model, finishing their batch
        self._reload_lock = asyncio.Lock()
        self._bg: set[asyncio.Task] = set()
        self.held_bytes = 0  # bytes of received frames not yet answered
        self.peers = PeerTable(  # the v1.1 producers: credit and shared-memory rings
            f"{os.getpid():x}.{int(time.time() * 1e3) & 0xFFFFFFFF:x}",  # this server's run
            policy_of=self.sched.policy_of, default_policy=opts.policy, window=self._window,
            credit_owed=lambda: self._loop.call_soon(self._send_credit), stats=self.stats,
            shared_memory=opts.shared_memory, max_message_bytes=opts.limits.max_message_bytes,
            frame_memory=opts.max_frame_memory)
        self.metrics: Any = None
        self.doors: list[Any] = []  # streampi.integrations: faces other tools talk to
        self._listeners: list[Callable[[dict, Any], None]] = []  # see add_listener
        self.events: Any = None  # streampi.events.EventsEngine when events are on (the zones file is read here)
        if opts.events_enabled():
            from ..events import EventsEngine

            self.events = EventsEngine.from_options(opts, skip_streams=frozenset(DOOR_STREAMS.values()))
        self.started_at = time.time()
        self.notifier = Notifier.from_env()  # systemd Type=notify; a no-op outside systemd

    @property
    def model_info(self) -> dict:
        return self.spec.model_info

    @property
    def batch_resizable(self) -> bool:
        return self.spec.batch_resizable

    # -- lifecycle ---------------------------------------------------------------------------
    def _worker_cores(self, i: int) -> list[int] | None:
        if not self.options.pin:
            return None
        t = self.options.threads
        return [self._cores[(i * t + k) % len(self._cores)] for k in range(t)]

    def _emit(self, fn: Any, *args: Any) -> None:
        """From a worker thread into the loop (bounced through :meth:`_event`)."""
        try:
            self._loop.call_soon_threadsafe(self._event, fn, *args)
        except RuntimeError:  # the loop is closed: the server has stopped, nothing to tell
            pass

    async def _new_slots(self, spec: WorkerSpec) -> list[WorkerSlot]:
        """Start one worker per index for ``spec``; all of them or none (stopped again)."""
        slots = [WorkerSlot(i, spec, isolation=self.options.isolation, cores=self._worker_cores(i),
                            emit=self._emit, events=self, occupancy=self._occupancy, light_cores=self._cores)
                 for i in range(self.n_workers)]
        for slot in slots:
            slot.start()
        errors = []
        for slot in slots:
            try:
                await self._loop.run_in_executor(None, slot.wait_ready)
            except BaseException as exc:
                errors.append(exc)
        if errors:
            await self._stop_slots(slots, deadline=time.monotonic() + 5)
            raise errors[0]
        return slots

    async def reload(self, model: str | None = None) -> dict[str, Any]:
        """Serve ``model`` (default: the model file served now, read again): new workers load
        it while the old ones keep serving; then new batches go to the new workers and the old
        ones finish the batch they hold and stop. No batch mixes two models, and each result
        names its model. A model that cannot be served leaves the old one serving; the reply
        and the log say why."""
        self.notifier.reloading(f"reloading {model or self.model_path}")
        try:
            return await self._reload(model)
        finally:  # READY=1 ends systemd's "reloading" state, whether the reload worked or not
            self.notifier.ready(self._serving_status())

    def _serving_status(self) -> str:
        """The line ``systemctl status`` shows while serving."""
        return (f"serving {self.model_info['name']} ({self.model_info['sha256']}) with {self.n_workers} "
                f"{self.options.isolation} workers")

    async def _reload(self, model: str | None) -> dict[str, Any]:
        async with self._reload_lock:
            old_info = dict(self.model_info)
            try:
                path = resolve_model(model) if model else self.model_path
                spec = await self._loop.run_in_executor(
                    None, WorkerSpec.from_model, path, self.options, None, self._overrides)
                slots = await self._new_slots(spec)
            except (StreampiError, ValueError, OSError) as exc:
                why = f"reload of {model or self.model_path} failed, still serving {old_info['name']} " \
                      f"({old_info['sha256']}): {exc}"
                log.error("%s", why)
                self.stats["reloads_failed"] += 1
                return {"ok": False, "error": why}
            if self.stopping:
                await self._stop_slots(slots, deadline=time.monotonic() + 5)
                return {"ok": False, "error": "the server is stopping"}
            old = self.slots
            self.slots, self.spec, self.model_path, self.backend = slots, spec, Path(path), spec.backend_name
            self.config = spec.config
            self.sched.batchable, self.sched.keep_all = spec.batchable, spec.light_path
            if self.nodes is not None:  # nodes run the previous model: refused, to rejoin with the new one
                self.nodes.model_changed()
            for slot in old:
                self.usable.discard(slot)
                slot.stop()  # after the batch it holds, if any
            self._retiring.extend(old)
            self._background(self._retire(old))
            self.stats["reloads"] += 1
            self._wake.set()
            log.info("reloaded: now serving %s (%s), was %s (%s)", spec.model_info["name"], spec.model_info["sha256"],
                     old_info["name"], old_info["sha256"])
            return {"ok": True, "model": spec.model_info, "previous": old_info}

    async def _retire(self, slots: list[WorkerSlot]) -> None:
        await self._stop_slots(slots, deadline=time.monotonic() + self.options.invoke_timeout + 5)
        self._retiring = [s for s in self._retiring if s not in slots]
        for slot in slots:  # nothing may keep a retired worker (and its shared memory) alive
            self.usable.discard(slot)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _start_workers(self) -> None:
        # under systemd: each runner loads the model within LOAD_TIMEOUT_S (a slow card, a big
        # model), however short the unit's start timeout
        self.notifier.extend_timeout(LOAD_TIMEOUT_S + 10)
        self.slots = await self._new_slots(self.spec)
        if self.slots:
            self.delegate_errors = self.slots[0].delegate_errors or self.delegate_errors

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Run until :meth:`stop` is called; then answer what was accepted and return.
        Raises :class:`ServerFailure` when a part of the server failed (after the stop)."""
        opts = self.options
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._wake = asyncio.Event()  # dispatch: work arrived, a worker got free, stopping
        self._quiet = asyncio.Event()  # stop: nothing waiting, nothing in flight
        self._read_scheduled = False  # ingest: a read turn is already scheduled
        self._v1_parked: Job | None = None  # a v1 frame waiting for room; the PULL socket waits with it
        self._v1_timer: asyncio.TimerHandle | None = None
        self._ingest_failed: asyncio.Future = self._loop.create_future()  # handling a message raised
        await self._start_workers()
        try:
            self._open_sockets()
        except BaseException:
            await self._stop_workers(deadline=time.monotonic() + 5)
            raise
        if opts.metrics_port is not None:
            from .metrics import Metrics

            self.metrics = Metrics(self.status, lambda: {
                **self.model_info, "backend": self.backend, "isolation": opts.isolation,
                "backend_version": self.runtime_info.get("backend_version"),
                "kernels": self.runtime_info.get("kernels"), "streampi_version": __version__}, opts.max_streams)
            try:
                port = self.metrics.serve(opts.metrics_port, opts.metrics_bind)
            except OSError as exc:
                self._close_sockets()
                await self._stop_workers(deadline=time.monotonic() + 5)
                raise StreampiError(f"cannot serve metrics on {opts.metrics_bind}:{opts.metrics_port}: {exc}") from exc
            self.bound["metrics"] = f"http://{opts.metrics_bind}:{port}/metrics"
        if self.events is not None:  # before the doors open: they may use it
            self.events.attach(self)
        from ..integrations import doors_for

        try:
            self.doors = doors_for(opts)
            for door in self.doors:
                self.bound.update(await door.open(self))
        except BaseException:
            for door in self.doors:
                await door.close()
            self._close_sockets()
            if self.metrics is not None:
                self.metrics.close()
            await self._stop_workers(deadline=time.monotonic() + 5)
            raise
        tasks = {asyncio.ensure_future(self._ingest()): "ingest", asyncio.ensure_future(self._dispatch()): "dispatch"}
        for door in self.doors:
            tasks[asyncio.ensure_future(door.run())] = f"{type(door).__name__}"
        if self.control is not None:
            tasks[asyncio.ensure_future(control.serve(self, self.control))] = "control"
        if self.nodes is not None:
            tasks[asyncio.ensure_future(self.nodes.run())] = "nodes"
        self._tasks = tasks
        log.info("serving %s (%s) with %d %s workers", self.model_info["name"], self.model_info["sha256"],
                 self.n_workers, opts.isolation)
        self.notifier.ready(self._serving_status())
        if self.notifier.watchdog_interval() is not None:  # WatchdogSec=: fed only while healthy
            tasks[asyncio.ensure_future(feed_watchdog(self.notifier, self.status))] = "watchdog"
        if ready is not None:
            ready.set()
        stop = asyncio.ensure_future(self._stop_event.wait())
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                ended_on_stop = not task.cancelled() and task.exception() is None and self._stop_event.is_set()
                if task is not stop and not ended_on_stop:
                    failure = task.exception() if not task.cancelled() else asyncio.CancelledError()
                    failure = failure or RuntimeError(f"the {tasks[task]} task ended by itself")
                    log.critical("the %s task failed: %r; stopping", tasks[task], failure,
                                 exc_info=failure if isinstance(failure, Exception) else None)
                    self.stats["failures"] += 1
                    break
        finally:
            stop.cancel()
            await self._shutdown()
        if failure is not None:
            raise ServerFailure(f"the server stopped because a part of it failed: {failure!r}") from failure

    def stop(self) -> None:
        """Stop taking frames; :meth:`serve` then answers what was accepted and returns."""
        if hasattr(self, "_stop_event"):
            self._stop_event.set()

    def _open_sockets(self) -> None:
        opts = self.options
        ctx = zmq.asyncio.Context.instance()
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, opts.recv_hwm)
        self.pull.setsockopt(zmq.MAXMSGSIZE, opts.limits.max_message_bytes)
        self.router = ctx.socket(zmq.ROUTER) if opts.credit_bind else None
        if self.router is not None:  # v1.1: credit bounds what each producer sends; the HWM only backs it up
            self.router.setsockopt(zmq.RCVHWM, max(opts.recv_hwm, 4 * opts.queue_size))
            self.router.setsockopt(zmq.SNDHWM, 1000)
            self.router.setsockopt(zmq.LINGER, 0)
            self.router.setsockopt(zmq.MAXMSGSIZE, opts.limits.max_message_bytes)
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, opts.send_hwm)
        self.pub.setsockopt(zmq.LINGER, 2000)
        self.control = ctx.socket(zmq.REP) if opts.control else None
        if self.control is not None:
            self.control.setsockopt(zmq.LINGER, 0)
            self.control.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
        if self._curve is not None:  # every socket the server opens
            self._curve.start(ctx)
            for sock in (self.pull, self.router, self.pub, self.control):
                if sock is not None:
                    self._curve.apply(sock)
        try:
            self.pull.bind(opts.bind)
            if self.router is not None:
                self.router.bind(opts.credit_bind)
            self.pub.bind(opts.publish)
            if self.control is not None:
                self.control.bind(opts.control)
        except zmq.ZMQError as exc:
            self._close_sockets()
            raise StreampiError(f"cannot bind {opts.bind} / {opts.credit_bind} / {opts.publish} / "
                                f"{opts.control}: {exc}") from exc
        if opts.node_bind:  # remote nodes join here (serving/nodes.py)
            from .nodes import NodeLink

            self.nodes = NodeLink(self)
            try:
                node_bind = self.nodes.open(ctx, opts.node_bind, self._curve, opts.limits.max_message_bytes)
            except zmq.ZMQError as exc:
                self._close_sockets()
                raise StreampiError(f"cannot bind --node-bind {opts.node_bind}: {exc}") from exc
        # blocking-API twins of the same sockets: draining what is already queued and publishing
        # through them skips the asyncio future machinery (~60 µs a message)
        self._pull_now = zmq.Socket.shadow(self.pull.underlying)
        self._pub_now = zmq.Socket.shadow(self.pub.underlying)
        self._router_now = zmq.Socket.shadow(self.router.underlying) if self.router is not None else None
        self.bound = {"bind": self.pull.getsockopt(zmq.LAST_ENDPOINT).decode(),
                      "publish": self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()}
        if self.router is not None:
            self.bound["credit_bind"] = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        if self.control is not None:
            self.bound["control"] = self.control.getsockopt(zmq.LAST_ENDPOINT).decode()
        if self.nodes is not None:
            self.bound["node_bind"] = node_bind

    def _close_sockets(self) -> None:
        self._closed = True
        self.peers.close_rings("the server stopped")
        if self.nodes is not None:
            self.nodes.close()
        for name in ("pull", "router", "pub", "control"):
            sock = getattr(self, name, None)
            if sock is not None and not sock.closed:
                sock.close()
        if self._curve is not None:
            self._curve.stop()

    async def _shutdown(self) -> None:
        """One deadline (``stop_timeout``) for the whole stop: stop reading, answer what is
        held (run it if there is time, else ``shutdown``), stop the workers, close."""
        deadline = time.monotonic() + self.options.stop_timeout
        self._stop_event.set()
        self.notifier.stopping("stopping: answering the frames held")
        for door in self.doors:  # no new requests; those held are still answered below
            door.stop_taking()
        ingest = next((t for t, name in self._tasks.items() if name == "ingest"), None)
        if ingest is not None and not ingest.done():
            await asyncio.wait([ingest], timeout=max(0.0, deadline - time.monotonic()))
        if ingest is not None and ingest.done() and not ingest.cancelled() and ingest.exception() is None:
            await self._drain_received()
        self.stopping = True
        self._wake.set()
        dispatch = next(t for t, name in self._tasks.items() if name == "dispatch")
        if not dispatch.done():
            self._check_quiet()
            await asyncio.wait([asyncio.ensure_future(self._quiet.wait())],
                               timeout=max(0.0, deadline - time.monotonic() - 0.5))
        self._unpark_v1()  # (stopping: into the queue, answered with it below)
        for job in self.sched.take_all():
            self._settle(job, error=("shutdown", "the server stopped before this frame could run"))
        for slot, handed in list(self.in_hand.items()):
            for job in handed.jobs:
                if not job.settled:
                    self._settle(job, error=("shutdown", f"the server stopped while worker {slot.index} ran "
                                                         f"this frame"))
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stop_workers(deadline=max(deadline, time.monotonic() + 0.5))
        if self.events is not None:  # every frame is answered: the objects end, on a socket still open
            self.events.close()
        for door in self.doors:
            await door.close()
        self._close_sockets()
        if self.metrics is not None:
            self.metrics.close()
        log.info("stopped; received %d, answered %d", self.stats["received"], self.stats["answered"])

    async def _stop_workers(self, deadline: float) -> None:
        await self._stop_slots([*self.slots, *self._retiring], deadline)

    async def _stop_slots(self, slots: list[WorkerSlot], deadline: float) -> None:
        for slot in slots:
            slot.stop()
        for slot in slots:
            left = deadline - time.monotonic()
            if left > 0:
                await self._loop.run_in_executor(None, slot.join, left)
        for slot in slots:
            if slot.is_alive():
                log.warning("worker %d did not stop in time; killing its runner process", slot.index)
                slot.kill()

    def run(self, on_ready: Any = None) -> int:
        """Serve until SIGINT/SIGTERM; return the exit code (0 after a clean stop, 1 when a
        part of the server failed)."""
        try:
            import uvloop
            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            pass

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
            if hasattr(signal, "SIGHUP"):  # reload the model file (e.g. after replacing it)
                loop.add_signal_handler(signal.SIGHUP, lambda: self._background(self.reload()))
            ready = asyncio.Event()
            task = asyncio.ensure_future(self.serve(ready))
            await asyncio.wait([task, asyncio.ensure_future(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
            if ready.is_set() and on_ready is not None:
                on_ready(self)
            await task

        try:
            asyncio.run(main())
        except ServerFailure as exc:
            log.critical("%s", exc)
            return 1
        return 0

    # -- ingest ------------------------------------------------------------------------------
    async def _ingest(self) -> None:
        """Receive from both frame sockets until stop. The sockets are read by a reader
        callback on their ZeroMQ descriptors (:meth:`_on_readable`): one callback per wake-up,
        no future per message or per poll. A frame is admitted or answered at once, so one full
        stream never stops the others; only a v1 frame whose ``queue`` stream is full waits
        aside for a moment, with the v1 socket (:meth:`_park_v1`). Ends (raising) when
        handling a message failed: a bug there stops the server rather than losing frames."""
        loop = self._loop
        fds = [sock.getsockopt(zmq.FD) for sock in (self._pull_now, self._router_now) if sock is not None]
        for fd in fds:
            loop.add_reader(fd, self._on_readable)
        self._on_readable()  # what arrived before the readers were added
        stop = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({stop, self._ingest_failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            for fd in fds:
                loop.remove_reader(fd)
        if self._ingest_failed.done():
            raise self._ingest_failed.exception()  # type: ignore[misc]

    def _on_readable(self) -> None:
        """A frame socket's descriptor signalled, or a read turn left messages behind.

        ZeroMQ's descriptor signals on an edge: each socket is read until ``zmq.Again``, in
        turns of at most 64 messages a socket with the loop's other work (workers' results,
        credit) in between; a turn that stops early schedules the next one itself. Dispatch
        runs right after the turn, so that the frames read together can share a batch and a
        lone frame reaches an idle worker without another trip through the loop."""
        self._read_scheduled = False
        if self._stop_event.is_set() or self._ingest_failed.done():
            return
        try:
            handled, more = self._read_queued(64)
            if handled:
                self._dispatch_ready()
        except BaseException as exc:
            self._ingest_failed.set_exception(exc)
            return
        if more:
            self._schedule_read()

    def _schedule_read(self) -> None:
        """Read the frame sockets in a coming loop turn even without a descriptor event:
        sending on the ROUTER (credit) can consume the edge of a message that arrived
        meanwhile, and a read turn may stop before a socket is empty."""
        if not self._read_scheduled and not self._closed:
            self._read_scheduled = True
            self._loop.call_soon(self._on_readable)

    def _read_queued(self, per_socket: int) -> tuple[int, bool]:
        """Handle up to ``per_socket`` messages already received by each frame socket;
        return how many were handled and whether a socket may hold more."""
        handled, more = 0, False
        for sock, receive in ((self._pull_now, self._receive), (self._router_now, self._receive_v11)):
            if sock is None or (self._v1_parked is not None and sock is self._pull_now):
                continue
            for _ in range(per_socket):
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                handled += 1
                receive(parts)
                if self._v1_parked is not None and sock is self._pull_now:
                    break  # the rest wait (their producers' queues fill: back-pressure)
            else:
                more = True
        return handled, more

    async def _drain_received(self) -> None:
        """At stop: answer the frames ZeroMQ has already received for us (bounded, so that a
        producer that keeps sending cannot hold the stop up)."""
        self._unpark_v1()  # (stopping: admitted whatever the room)
        for _ in range(max(1, self.options.recv_hwm * 2 // 64)):
            if not self._read_queued(64)[1]:  # every socket read to zmq.Again
                return

    def _park_v1(self, job: Job) -> None:
        """A v1 frame found its ``queue`` stream full: hold it aside and stop reading the PULL
        socket until a batch leaves for a worker (room: it is admitted then), or ``V1_PARK_S``
        at most (then it is answered ``overloaded``, as a v1 frame that finds no room always
        was, and reading goes on). Without this a producer that floods over v1 has every
        surplus frame received (0.9 MB for 640×480 RGB), decoded and answered ``overloaded``
        one by one, and the live streams beside it wait for that work; parked, the frames
        behind it wait in ZeroMQ's queue and then in the producer's, whose PUSH blocks at its
        high-water mark (v1's own back-pressure), and the flood is served at the speed of the
        workers at little cost. v1.1 producers (the ROUTER) and doors are read all along."""
        self._v1_parked = job
        self.stats["v1_parked"] += 1
        self._v1_timer = self._loop.call_later(V1_PARK_S, self._unpark_v1, True)

    def _unpark_v1(self, expired: bool = False) -> None:
        """Offer the parked v1 frame again (a batch left, the wait expired, or the server
        stops); once it is admitted or answered, read the v1 socket again."""
        job = self._v1_parked
        if job is None:
            return
        offer = self.sched.offer(job, force=self._stop_event.is_set())
        if offer.full and not expired:
            return  # still no room: wait on (the timer is running)
        self._v1_parked = None
        if self._v1_timer is not None:
            self._v1_timer.cancel()
            self._v1_timer = None
        self._offered(job, offer)
        self._schedule_read()
    # -- protocol v1.1: credit ---------------------------------------------------------------
    def _window(self, policy: str) -> int:
        if self.options.credit:
            return self.options.credit
        if policy != "latest":
            return self.options.queue_size
        return self.n_workers + (len(self.nodes.table.units) if self.nodes is not None else 0) + 1

    def _receive_v11(self, parts: list) -> None:
        identity, kind = bytes(parts[0]), bytes(parts[1]) if len(parts) > 1 else b""
        now = time.monotonic()
        if kind == protocol.KIND_FRAME and len(parts) > 2:
            peer, over_credit = self.peers.frame(identity, now)
            self._receive(parts[2:], peer, over_credit=over_credit)
        elif kind == protocol.KIND_HELLO:
            try:
                hello = protocol.decode_hello_message(parts[1:])
            except ProtocolError as exc:
                self._refuse(exc)
                return
            self.peers.hello(identity, hello, now)
        elif kind == protocol.KIND_BYE and len(parts) == 2:
            self.peers.bye(identity)
        elif kind == protocol.KIND_BYE:
            self._refuse(ProtocolError(f"a protocol v1.1 bye is the part b'bye' alone, got {len(parts) - 1} parts"))
        else:
            self._refuse(ProtocolError(f"a protocol v1.1 message starts with the part b'frame', b'hello' or b'bye' "
                                       f"(then the frame's parts), got {protocol.bounded_repr(kind[:32])}"))

    def _send_credit(self) -> None:
        """Send the credit owed (one message per producer per loop turn, however many answers)."""
        due = self.peers.take_credit()
        if self._closed or self._router_now is None:
            return
        for identity, credit in due:
            try:
                self._router_now.send_multipart([identity, *protocol.encode_credit(credit)], zmq.NOBLOCK)
                self.stats["credit_messages"] += 1
            except zmq.ZMQError:  # gone, or not reading: it asks again (hello) while it waits
                self.stats["credit_unsent"] += 1
        self._schedule_read()

    # -- frames ------------------------------------------------------------------------------
    def submit(self, parts: list, reply: Callable[[dict], None]) -> None:
        """Take a frame from a door (a detector API another tool calls): ``parts`` as a producer
        sends them (:func:`streampi.protocol.encode_frame`), checked, scheduled, batched and run
        as any frame, and answered exactly once through ``reply(result)``, with a result or an
        error saying why; the result is also published on its stream like every other. Call
        it on the server's event loop; ``reply`` runs there and must not block."""
        self._receive(parts, reply=reply)

    def add_listener(self, listener: Callable[[dict, Any], None]) -> Callable[[], None]:
        """Have ``listener(result, frame)`` called after every answer the server gives (what a
        tracker, a live view or an MQTT door watch), on the server's event loop, right after the
        result is published. ``frame`` is the answered frame's
        :class:`~streampi.protocol.FrameMessage` (``fmt``, ``width``, ``height``, ``data``),
        or ``None`` for a message that never parsed as a frame. Its ``data`` lives in the
        received buffer or the producer's shared memory and is valid only during the call:
        copy what must be kept (and only when it is needed: the call is on every frame's path).
        The listener must not block; an exception it raises is counted
        (``errors.listener``) and logged, and never costs an answer. Returns a function that
        removes the listener."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
        return remove

    def publish(self, topic: str, payload: dict) -> None:
        """Publish ``payload`` (a msgpack map) on the results socket under ``topic``, a topic
        of the server's own (it starts with ``_``, as ``_errors`` does, so it can never be a
        stream's name): what doors and listeners use to speak to subscribers (``_events``).
        Never blocks; a message past a slow subscriber's high-water mark is dropped by ZeroMQ,
        as results are."""
        if not topic.startswith("_"):
            raise ValueError(f"a server topic starts with '_' (stream names cannot), got {topic!r}")
        self._send_parts([topic.encode(), protocol.pack(payload)])

    def _tell_listeners(self, result: dict, frame: Any) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(result, frame)
            except Exception:
                self.stats["errors.listener"] += 1
                log.exception("a result listener failed on frame %s/%s", result.get("stream"), result.get("seq"))

    def _receive(self, parts: list, peer: Peer | None = None, over_credit: bool = False,
                 reply: Callable[[dict], None] | None = None) -> None:
        self.stats["received"] += 1
        if self.metrics is not None:
            self.metrics.received.inc()
        ring = peer.ring if peer is not None else None
        try:
            msg = protocol.decode_frame(parts, self.options.limits, ring)
        except ProtocolError as exc:
            self._reject(exc, peer, reply)
            return
        if peer is not None and peer.stream != msg.stream:
            self.peers.heard(peer.identity, msg.stream, time.monotonic())  # its stream's policy sets its window
        nbytes = sum(len(p.buffer) if hasattr(p, "buffer") else len(p) for p in parts)
        if msg.shm_slot is not None:
            nbytes += len(msg.data)
            self.stats["shm_frames"] += 1
        else:
            ring = None
        job = Job(msg.stream, msg.seq, msg, parts, time.perf_counter(), nbytes=nbytes, peer=peer, ring=ring,
                  reply=reply)
        self.held_bytes += job.nbytes
        if over_credit:  # a v1.1 producer that does not count (or frames it queued across a restart)
            self.stats["credit_exceeded"] += 1
            self._settle(job, error=("overloaded", f"this producer has more frames in flight than its credit "
                                                   f"({job.peer.window}); see protocol v1.1 in docs/protocol.md"))
            return
        try:
            self._admit(job)
        except BaseException as exc:  # a bug while taking this frame in: answer it, then fail
            if not job.settled and job not in self.sched:
                self._settle(job, error=("internal", f"the server failed taking this frame in ({type(exc).__name__})"))
            raise

    def _admit(self, job: Job) -> None:
        """Admit ``job`` or answer it now; never waits. A v1.1 frame always finds room in
        its ``queue`` stream (its producer's credit bounds how many it can have sent); a v1
        frame that finds its ``queue`` stream full waits aside for room for a moment
        (:meth:`_park_v1`), then is answered ``overloaded``."""
        if self._unavailable:
            self._settle(job, error=("unavailable", "no worker can run the model now (they keep failing "
                                                    "to start); see the server's log"))
            return
        budget = self.options.max_frame_memory
        if budget and self.held_bytes > budget:  # (this frame's bytes included)
            self.stats["over_memory_budget"] += 1
            self._settle(job, error=("overloaded", f"the server holds {self.held_bytes / 2**20:.1f} MiB of "
                                                   f"frames, past its --max-frame-memory of {budget / 2**20:.1f} "
                                                   f"MiB; try again later"))
            return
        offer = self.sched.offer(job, force=job.peer is not None or self._stop_event.is_set())
        if offer.full and job.peer is None and job.reply is None and self._v1_parked is None:  # the v1 socket's
            self._park_v1(job)
            return
        self._offered(job, offer)

    def _offered(self, job: Job, offer: Any) -> None:
        if offer.full:
            self.stats["queue_full"] += 1
            self._settle(job, error=("overloaded", f"stream {job.stream}'s queue is full ({self.options.queue_size} "
                                                   f"frames, --queue-size); a protocol v1.1 producer waits for "
                                                   f"credit instead"))
            return
        for other, code, text in offer.answers:
            self._settle(other, error=(code, text))
        if offer.admitted:
            self.stats["accepted"] += 1
            self.stats["max_pending"] = max(self.stats["max_pending"], self.sched.depth(job.stream))
            self._wake.set()

    def _refuse(self, exc: ProtocolError) -> None:
        """Answer a message that is not a frame (nor a well-formed hello or bye): received, and answered."""
        self.stats["received"] += 1
        self._reject(exc)

    def _reject(self, exc: ProtocolError, peer: Peer | None = None,
                reply: Callable[[dict], None] | None = None) -> None:
        stream, seq = getattr(exc, "stream", None), getattr(exc, "seq", None)
        if peer is not None:
            self.peers.answered(peer)
        self.stats["errors.bad_frame"] += 1
        self.stats["answered"] += 1
        result = protocol.error_result("bad_frame", str(exc), stream, seq)
        result["model"] = self.model_info
        if self.metrics is not None:
            self.metrics.result(result["stream"], "bad_frame", None)
        if reply is not None:
            self._reply(reply, result)
        self._send(result)
        if self._listeners:
            self._tell_listeners(result, None)

    def _reply(self, reply: Callable[[dict], None], result: dict) -> None:
        """A door's answer: a failing callback is counted and logged, never lost silently, and
        never stops the server from publishing the result."""
        try:
            reply(result)
        except Exception:
            self.stats["errors.door_reply"] += 1
            log.exception("a door's reply to frame %s/%s failed", result.get("stream"), result.get("seq"))

    # -- dispatch ----------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        """Hand batches to idle workers whenever something changed (``_wake``), and when a
        batch being gathered is due (the scheduler's deadline)."""
        while True:
            timeout = self._dispatch_ready()
            self._check_quiet()
            self._wake.clear()
            if timeout is None:
                await self._wake.wait()
            else:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass

    def _dispatch_ready(self) -> float | None:
        """Give every idle worker the batch the scheduler has for it now; return how long
        until a batch being gathered is due (None: nothing to wait for). Synchronous, so
        that the ingest and the workers' results can call it in the same loop turn."""
        while True:
            idle: list[Any] = [s for s in self.slots if s in self.usable and s not in self.in_hand]
            if self.nodes is not None:  # a node's workers after the local ones, quickest first
                idle += self.nodes.table.idle(self.usable, self.in_hand)
            if not idle:
                return None
            now = time.perf_counter()
            decision = self.sched.next_batch(len(idle), now, hurry=self.stopping, busy=len(self.in_hand))
            if isinstance(decision, list):  # alone: no other batch runs, nor will before it ends
                alone = not self.in_hand and (not self.sched.pending or self.sched.holding(now))
                self._submit(idle[0], decision, alone=alone)
                if self.nodes is not None:
                    self.nodes.after_dispatch()
                continue
            return None if decision is None else max(0.0, decision - time.perf_counter())

    def _submit(self, slot: WorkerSlot, batch: list[Job], alone: bool = False) -> None:
        if self._v1_parked is not None:  # room in the queues again, maybe for it
            self._unpark_v1()
        now = time.perf_counter()
        for job in batch:
            job.t_batch = now
        self.stats["batches"] += 1
        self.in_hand[slot] = Handover(batch, self.stats["batches"], time.monotonic())
        self.stats["batched_frames"] += len(batch)
        if self.metrics is not None:
            self.metrics.batch.observe(len(batch))
        slot.submit(batch, alone=alone)

    def _check_quiet(self) -> None:
        if self.sched.pending == 0 and not self.in_hand:
            self._quiet.set()
        else:
            self._quiet.clear()

    # -- what the workers tell (run in the loop) ------------------------------------------------
    def _event(self, fn: Any, slot: WorkerSlot, *args: Any) -> None:
        """Run a worker's event; if handling it fails, the frames it carried still get
        their one answer and the worker is free again (a bug here must not wedge a worker)."""
        try:
            fn(slot, *args)
        except Exception as exc:
            log.exception("handling %s of worker %s failed", getattr(fn, "__name__", fn), slot.index)
            self.stats["failures.event"] += 1
            batch = args[0] if args and isinstance(args[0], list) else []
            if batch:
                self.in_hand.pop(slot, None)
            for job in batch:
                if not job.settled:
                    self._settle(job, error=("internal", f"the server failed handling this frame's result "
                                                         f"({type(exc).__name__})"))
            self._wake.set()

    def worker_state(self, slot: WorkerSlot, state: str) -> None:
        if state == "ready":
            self.usable.add(slot)
        else:
            self.usable.discard(slot)
        down = bool(self.slots) and all(s.state == "backoff" for s in self.slots)
        if down and self.nodes is not None:  # a node's ready workers still run the model
            down = not any(u.state == "ready" for u in self.nodes.table.units)
        if down and not self._unavailable:
            log.error("no worker can run the model; answering frames 'unavailable' until one starts")
            for job in self.sched.take_all():
                self._settle(job, error=("unavailable", "no worker can run the model now (they keep failing "
                                                        "to start); see the server's log"))
        self._unavailable = down
        self._wake.set()

    def batch_done(self, slot: WorkerSlot, batch: list[Job], outcomes: list[Outcome]) -> None:
        handed = self.in_hand.pop(slot, None)
        if batch and batch[0].t_batch:  # how long a frame runs: the scheduler keeps workers for live frames by it
            self.sched.ran(batch, time.perf_counter() - batch[0].t_batch)
        worker = {"worker": slot.index, "generation": slot.generation, "batch": len(batch),
                  "batch_id": handed.batch_id if handed is not None else None, "model": slot.spec.model_info}
        if getattr(slot, "node_name", None) is not None:  # a remote node's worker (serving/nodes.py)
            worker["node"] = slot.node_name
        for job, out in zip(batch, outcomes):
            if job.settled:  # answered `shutdown` at the stop deadline
                self.stats["late_results"] += 1
                continue
            self._settle(job, error=out.error, outcome=out, worker=worker)
        self._dispatch_ready()  # the freed worker takes its next batch in this loop turn
        self._wake.set()

    def batch_lost(self, slot: WorkerSlot, batch: list[Job], reason: str) -> None:
        self.in_hand.pop(slot, None)
        self.usable.discard(slot)  # it is restarting: its "ready" comes when it is back
        self.stats["batches_lost"] += 1
        for job in batch:
            if job.settled:
                continue
            job.runs_lost += 1
            if job.runs_lost >= 2:
                self._settle(job, error=("worker_lost", f"the worker running this frame died twice, the second "
                                                        f"time running it alone ({reason})"))
            elif self.stopping and self._closed:
                self._settle(job, error=("shutdown", "the server stopped"))
            else:
                self.stats["reruns"] += 1
                self.sched.rerun(job)
        self._wake.set()

    def batch_returned(self, slot: WorkerSlot, batch: list[Job]) -> None:
        self.in_hand.pop(slot, None)
        for job in batch:
            if not job.settled:
                self.sched.rerun(job)
        self._wake.set()

    # -- the one place a frame's fate is decided ---------------------------------------------
    def _settle(self, job: Job, *, error: tuple[str, str] | None = None, outcome: Outcome | None = None,
                worker: dict | None = None) -> None:
        if job.settled:
            self.stats["errors.double_settle"] += 1
            log.error("internal error: frame %s/%s settled twice", job.stream, job.seq)
            return
        job.settled = True
        self.stats["answered"] += 1
        self.held_bytes -= job.nbytes
        msg = job.msg
        try:
            now = time.perf_counter()
            timing: dict[str, Any] = {"recv": msg.recv, "total_ms": (now - job.t_recv) * 1e3}
            if job.t_batch:
                timing["queue_ms"] = (job.t_batch - job.t_recv) * 1e3
            if outcome is not None:
                timing["pre_ms"] = outcome.pre_ms
                timing.update(outcome.timing)
            if error is not None:
                result = protocol.error_result(error[0], error[1], msg.stream, msg.seq, msg.ts, msg.meta, msg.has_meta)
                self.stats[f"errors.{error[0]}"] += 1
            else:
                result = {"v": protocol.VERSION, "stream": msg.stream, "seq": msg.seq, "ok": True}
                if msg.ts is not None:
                    result["ts"] = msg.ts
                if msg.has_meta:
                    result["meta"] = msg.meta
                result.update(outcome.payload)  # type: ignore[union-attr]
                self.stats["ok"] += 1
            result["timing"] = timing
            if worker is not None:
                result.update(worker)
            if job.runs_lost:
                result["rerun"] = job.runs_lost  # its first run was lost with a dead worker
            result.setdefault("model", self.model_info)
            if self.metrics is not None:
                self.metrics.result(job.stream, "ok" if error is None else error[0], timing)
            parts = protocol.encode_result(result)
        except Exception as exc:  # this frame's answer could not be built: say so, alone
            log.exception("cannot build the result of frame %s/%s", job.stream, job.seq)
            self.stats["errors.internal"] += 1
            result = {"v": protocol.VERSION, "stream": job.stream, "seq": job.seq, "ok": False,
                      "error": {"code": "internal", "message": f"the result could not be built: {type(exc).__name__}"}}
            parts = [job.stream.encode(), protocol.pack(result)]
        try:
            if job.reply is not None:
                self._reply(job.reply, result)
            self._send_parts(parts)
            if self._listeners:
                self._tell_listeners(result, msg)  # the pixels are still there
        finally:
            job.keep = None  # release the received buffers
            if job.ring is not None:  # the producer may write this slot again once its credit says so
                job.ring.release(job.msg.shm_slot)
            if job.peer is not None:
                self.peers.answered(job.peer)

    def _send(self, result: dict) -> None:
        try:
            parts = protocol.encode_result(result)
        except Exception:
            log.exception("cannot encode an error result")
            return
        self._send_parts(parts)

    def _send_parts(self, parts: list) -> None:
        if self._closed:
            self.stats["late_results"] += 1
            return
        for attempt in (1, 2):  # a second try: one transient failure must not cost an answer
            try:  # (PUB never blocks: past a slow subscriber's HWM it drops, unreported)
                self._pub_now.send_multipart(parts, flags=zmq.NOBLOCK)
                return
            except Exception:
                self.stats["publish_failed"] += 1
                log.exception("publishing a result failed (attempt %d of 2)", attempt)

    # -- control socket ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What ``streampi ctl`` shows: the workers, the counters, health (:mod:`.control`)."""
        return control.status(self)
