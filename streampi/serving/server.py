"""The streaming server: a thin asyncio driver around the scheduler and the workers.

One event loop (uvloop when installed) receives frame messages, validates their headers
(:mod:`streampi.protocol`), feeds the pure :class:`~streampi.serving.scheduler.Scheduler`
and carries out what it decides: answers, batches for idle workers, re-runs. Worker slots
(:mod:`streampi.serving.workers`) preprocess, invoke and post-process off the loop.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from .. import __version__, protocol, shared_frames
from ..config import ModelConfig, load_config
from ..decoders import make_decoder
from ..errors import ProtocolError, StreampiError
from ..measure import usable_cores
from ..model import Model, resolve_model
from ..preprocess import Preprocessor
from ..protocol import Limits
from .scheduler import POLICIES, Job, Scheduler
from .systemd import Notifier, feed_watchdog
from .workers import (
    ISOLATIONS,
    Events,
    Occupancy,
    Outcome,
    WorkerSlot,
    WorkerSpec,
    process_isolation_available,
)

log = logging.getLogger("streampi.server")


class ServerFailure(StreampiError):
    """A part of the server failed and the server stopped (its frames were all answered)."""


#: v1.1 producers the server remembers; past it the least recently heard idle one is forgotten
#: (it is greeted as new, with a new session, when it is heard again).
MAX_PEERS = 4096
#: When every shared-memory ring is out, a producer silent this long loses its ring to a new one.
RING_IDLE_S = 30.0


@dataclass(eq=False)
class Peer:
    """One protocol v1.1 producer (a DEALER socket), as the server counts its credit."""

    identity: bytes  # the ROUTER's routing id for it
    session: str  # changes whenever the server starts counting it afresh
    stream: str | None
    policy: str
    window: int
    received: int = 0  # its frame messages received in this session
    acked: int = 0  # ... and answered
    forgotten: bool = False
    ring: Any = None  # its shared-memory ring (shared_frames.Ring), if it asked for one and got it
    shm_refused: str | None = None  # why it did not get one
    heard: float = 0.0  # monotonic time of its last message


@dataclass
class ServerOptions:
    """Everything ``streampi serve`` can set (see ``streampi serve --help``)."""

    bind: str = "tcp://127.0.0.1:5555"  # protocol v1: PUSH producers (no flow control)
    credit_bind: str | None = "tcp://127.0.0.1:5558"  # protocol v1.1: DEALER producers with credit; None: off
    credit: int = 0  # frames a v1.1 producer may have in flight; 0: workers + 1 (latest), queue-size (queue)
    publish: str = "tcp://127.0.0.1:5556"
    control: str | None = "tcp://127.0.0.1:5557"
    workers: int | None = None
    threads: int = 1
    light_threads: int | None = None  # a lone frame while the other workers idle: None every core, 0 off
    max_batch: int = 4
    max_delay_ms: float = 0.0
    policy: str = "latest"
    stream_policies: dict[str, str] = field(default_factory=dict)
    queue_size: int = 32
    max_streams: int = 256
    recv_hwm: int = 64
    send_hwm: int = 100_000
    pin: bool = True
    backend: str | None = None
    delegates: list[tuple[str, dict]] = field(default_factory=list)  # (library, options); CPU if it fails
    limits: Limits = field(default_factory=Limits)
    isolation: str = "process"
    invoke_timeout: float = 10.0
    stop_timeout: float = 5.0
    max_frame_memory: int = 256 * 2**20  # bytes of frames held (waiting or running); past it: overloaded. 0: none
    metrics_port: int | None = None  # Prometheus endpoint; None: off
    curve_secret: str | None = None  # the server's NAME.key_secret (streampi.auth): CurveZMQ on every socket
    curve_clients: str | None = None  # directory of the allowed clients' NAME.key
    metrics_bind: str = "127.0.0.1"
    shared_memory: bool = True  # hand v1.1 producers on this machine that ask a shared-memory ring for their frames

    def check(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        for stream, pol in self.stream_policies.items():
            if pol not in POLICIES:
                raise ValueError(f"policy of stream {stream!r} must be one of {POLICIES}, got {pol!r}")
        for name in ("threads", "max_batch", "queue_size", "max_streams", "recv_hwm"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.light_threads is not None and self.light_threads < 0:
            raise ValueError(f"light-threads must be >= 0 (0: off), got {self.light_threads}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max-delay-ms must be >= 0, got {self.max_delay_ms}")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {self.isolation!r}")
        if self.isolation == "process" and not process_isolation_available():
            raise ValueError("isolation 'process' needs Linux (fork server and memfd); use --isolation thread")
        if not self.invoke_timeout > 0:
            raise ValueError(f"invoke-timeout must be > 0 seconds, got {self.invoke_timeout}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics-port must be a TCP port (0 for any free one), got {self.metrics_port}")
        if self.credit < 0:
            raise ValueError(f"credit must be >= 0 (0: workers + 1 for latest streams, queue-size for queue "
                             f"streams), got {self.credit}")
        if self.max_frame_memory < 0:
            raise ValueError(f"max-frame-memory must be >= 0 bytes (0: no budget), got {self.max_frame_memory}")
        if not self.stop_timeout > 0:
            raise ValueError(f"stop-timeout must be > 0 seconds, got {self.stop_timeout}")


def make_spec(path: Any, opts: ServerOptions, config: ModelConfig | None,
              overrides: dict[str, Any]) -> tuple[WorkerSpec, list[str], str]:
    """Load ``path`` once (in this process) and describe what every worker will load:
    a model that cannot be served fails here, with its reason, before any worker starts.
    Returns the spec, the delegate errors and the backend's name."""
    probe = Model(path, backend=opts.backend, delegates=opts.delegates)
    image_shape = probe.image_input()
    config = config or load_config(path, **overrides)
    decoder = make_decoder(probe.outputs, config)  # a misconfigured decoder fails here, naming the option
    Preprocessor(image_shape, probe.input.dtype, scale=probe.input.scale, zero_point=probe.input.zero_point,
                 mean=config.mean, std=config.std, channels=config.channels, resize=config.resize, pad=config.pad)
    if probe.batch_resizable and probe.batch_size != 1:
        probe.resize_batch(1)
    spec = WorkerSpec(str(path), config, probe.input, image_shape, tuple(probe.outputs), probe.batch_resizable,
                      backend=opts.backend, threads=opts.threads, max_batch=opts.max_batch,
                      delegates=tuple(opts.delegates), invoke_timeout=opts.invoke_timeout,
                      model_info={"name": probe.name, "sha256": probe.sha256[:12]},
                      batchable=probe.batch_resizable and decoder.batchable,
                      light_threads=len(usable_cores()) if opts.light_threads is None else opts.light_threads)
    return spec, list(probe.delegate_errors), str(probe.backend)


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
        self.spec, self.delegate_errors, self.backend = make_spec(self.model_path, opts, config, config_overrides)
        self.config = self.spec.config
        from ..runtime_info import describe_runtime

        self.runtime_info = describe_runtime(opts.backend)  # where the figures come from
        self._cores = usable_cores()
        self.n_workers = opts.workers or len(self._cores)
        self.stats: collections.Counter[str] = collections.Counter()
        self.sched = Scheduler(policy=opts.policy, stream_policies=opts.stream_policies,
                               queue_size=opts.queue_size, max_streams=opts.max_streams, max_batch=opts.max_batch,
                               max_delay=opts.max_delay_ms / 1e3, batchable=self.spec.batchable)
        self.slots: list[WorkerSlot] = []
        self._occupancy = Occupancy()  # which workers hold a batch (the light path's "the others idle")
        self.bound: dict[str, str] = {}
        self._stopping = False  # no more frames come in; finish what is held
        self._closed = False  # sockets closed: nothing is published any more
        self._unavailable = False  # every worker is in back-off: answer at once
        self._in_hand: dict[WorkerSlot, list[Job]] = {}  # the batch each worker holds
        self._usable: set[WorkerSlot] = set()  # workers whose interpreter is up
        self._retiring: list[WorkerSlot] = []  # workers of the previous model, finishing their batch
        self._reload_lock = asyncio.Lock()
        self._bg: set[asyncio.Task] = set()
        self._batch_ids: dict[WorkerSlot, int] = {}  # the number of the batch each worker holds
        self._held_bytes = 0  # bytes of received frames not yet answered
        self._peers: collections.OrderedDict[bytes, Peer] = collections.OrderedDict()  # v1.1 producers, LRU first
        self._credit_due: dict[Peer, None] = {}  # peers owed a credit message (insertion-ordered set)
        self._peer_serial = 0
        self._rings = 0  # shared-memory rings handed out and not yet closed
        self._ring_bytes = 0  # ... and their bytes (address space; pages exist where a producer wrote)
        self._session = f"{os.getpid():x}.{int(time.time() * 1e3) & 0xFFFFFFFF:x}"  # this server's run
        self.metrics: Any = None
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
                spec, _, backend = await self._loop.run_in_executor(
                    None, make_spec, path, self.options, None, self._overrides)
                slots = await self._new_slots(spec)
            except (StreampiError, ValueError, OSError) as exc:
                why = f"reload of {model or self.model_path} failed, still serving {old_info['name']} " \
                      f"({old_info['sha256']}): {exc}"
                log.error("%s", why)
                self.stats["reloads_failed"] += 1
                return {"ok": False, "error": why}
            if self._stopping:
                await self._stop_slots(slots, deadline=time.monotonic() + 5)
                return {"ok": False, "error": "the server is stopping"}
            old = self.slots
            self.slots, self.spec, self.model_path, self.backend = slots, spec, Path(path), backend
            self.config = spec.config
            self.sched.batchable = spec.batchable
            for slot in old:
                self._usable.discard(slot)
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
            self._usable.discard(slot)
            self._batch_ids.pop(slot, None)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _start_workers(self) -> None:
        self.slots = await self._new_slots(self.spec)
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
        tasks = {asyncio.ensure_future(self._ingest()): "ingest", asyncio.ensure_future(self._dispatch()): "dispatch"}
        if self.control is not None:
            tasks[asyncio.ensure_future(self._control())] = "control"
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

    def _close_sockets(self) -> None:
        self._closed = True
        for peer in self._peers.values():
            self._drop_ring(peer, "the server stopped")
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
        ingest = next((t for t, name in self._tasks.items() if name == "ingest"), None)
        if ingest is not None and not ingest.done():
            await asyncio.wait([ingest], timeout=max(0.0, deadline - time.monotonic()))
        if ingest is not None and ingest.done() and not ingest.cancelled() and ingest.exception() is None:
            await self._drain_received()
        self._stopping = True
        self._wake.set()
        dispatch = next(t for t, name in self._tasks.items() if name == "dispatch")
        if not dispatch.done():
            self._check_quiet()
            await asyncio.wait([asyncio.ensure_future(self._quiet.wait())],
                               timeout=max(0.0, deadline - time.monotonic() - 0.5))
        for job in self.sched.take_all():
            self._settle(job, error=("shutdown", "the server stopped before this frame could run"))
        for slot, batch in list(self._in_hand.items()):
            for job in batch:
                if not job.settled:
                    self._settle(job, error=("shutdown", f"the server stopped while worker {slot.index} ran "
                                                         f"this frame"))
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stop_workers(deadline=max(deadline, time.monotonic() + 0.5))
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
                log.warning("worker %d did not stop in time; killing its process", slot.index)
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
        no future per message or per poll. Nothing here waits for room: a frame is admitted or
        answered at once, so one full stream never stops the others. Ends (raising) when
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
            if sock is None:
                continue
            for _ in range(per_socket):
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                handled += 1
                receive(parts)
            else:
                more = True
        return handled, more

    async def _drain_received(self) -> None:
        """At stop: answer the frames ZeroMQ has already received for us (bounded, so that a
        producer that keeps sending cannot hold the stop up)."""
        for _ in range(max(1, self.options.recv_hwm * 2 // 64)):
            if not self._read_queued(64)[1]:  # every socket read to zmq.Again
                return

    # -- protocol v1.1: credit ---------------------------------------------------------------
    def _window(self, policy: str) -> int:
        if self.options.credit:
            return self.options.credit
        return self.n_workers + 1 if policy == "latest" else self.options.queue_size

    def _peer(self, identity: bytes, stream: str | None) -> Peer:
        """This producer's state, made (and greeted) when the server does not know it: new,
        or the server restarted, or it was forgotten while idle."""
        peer = self._peers.get(identity)
        if peer is not None:
            peer.heard = time.monotonic()
            self._peers.move_to_end(identity)
            if stream is not None and peer.stream != stream:
                peer.stream = stream
                policy = self.sched.policy_of(stream)
                if policy != peer.policy:
                    peer.policy, peer.window = policy, self._window(policy)
                    self._owe_credit(peer)
            return peer
        while len(self._peers) >= MAX_PEERS:  # forget the least recently heard (idle ones first)
            idle = next((k for k, p in self._peers.items() if p.acked == p.received), None)
            old = self._peers.pop(idle if idle is not None else next(iter(self._peers)))
            old.forgotten = True
            self._drop_ring(old, "forgotten")
            self.stats["credit_peers_forgotten"] += 1
        self._peer_serial += 1
        policy = self.sched.policy_of(stream) if stream is not None else self.options.policy
        peer = self._peers[identity] = Peer(identity, f"{self._session}.{self._peer_serial}", stream, policy,
                                           self._window(policy), heard=time.monotonic())
        self.stats["credit_peers"] += 1
        self._owe_credit(peer)
        return peer

    def _grant_ring(self, peer: Peer, slot_bytes: int) -> None:
        """Give ``peer`` a shared-memory ring for its frames, or say in ``shm_refused`` why not
        (the producer then sends over the wire). Slots: one more than its window (each frame
        in flight holds one), within the bounds of :mod:`streampi.shared_frames`."""
        def refuse(why: str) -> None:
            peer.shm_refused = why
            self.stats["shm_refused"] += 1

        if not self.options.shared_memory:
            return refuse("this server hands out no shared memory (--no-shared-memory)")
        if not shared_frames.available():
            return refuse("shared-memory frames need Linux")
        if slot_bytes > self.options.limits.max_message_bytes:
            return refuse(f"a slot of {slot_bytes} bytes is larger than a frame may be "
                          f"({self.options.limits.max_message_bytes})")
        if self._rings >= shared_frames.MAX_RINGS:
            self._reclaim_ring()
        if self._rings >= shared_frames.MAX_RINGS:
            return refuse(f"this server has handed out its {shared_frames.MAX_RINGS} shared-memory rings")
        slot_bytes = shared_frames.round_up(slot_bytes)
        slots = min(peer.window + 1, shared_frames.MAX_SLOTS, shared_frames.MAX_RING_BYTES // slot_bytes)
        if slots < 1:
            return refuse(f"a slot of {slot_bytes} bytes is larger than a ring may be "
                          f"({shared_frames.MAX_RING_BYTES})")
        budget = self.options.max_frame_memory  # the rings' address space, all together, within the frame budget
        if budget:
            def room() -> int:
                return (budget - self._ring_bytes - shared_frames.HEADER_BYTES) // slot_bytes

            while room() < min(slots, 2) and self._reclaim_ring():  # silent producers' rings make room first
                pass
            slots = min(slots, room())
            if slots < 2:
                return refuse(f"the shared-memory rings handed out ({self._ring_bytes / 2**20:.1f} MiB) leave no "
                              f"room for 2 slots of {slot_bytes} bytes within --max-frame-memory "
                              f"({budget / 2**20:.1f} MiB)")
        try:
            peer.ring = shared_frames.Ring(slots, slot_bytes)
        except OSError as exc:
            return refuse(f"the server could not make a ring: {exc}")
        peer.shm_refused = None
        self._rings += 1
        self._ring_bytes += peer.ring.ring_bytes
        self.stats["shm_rings"] += 1

    def _reclaim_ring(self) -> bool:
        """Every ring is out, or the frame memory budget is: close the one of the producer
        heard least recently, if it has been silent for RING_IDLE_S and the server holds none
        of its frames (a producer that stopped without saying goodbye). Its credit says so,
        and a producer reads its credit before it sends again. True if one was closed."""
        now = time.monotonic()
        for peer in self._peers.values():  # least recently heard first
            if peer.ring is not None and now - peer.heard >= RING_IDLE_S and not peer.ring.held:
                self._drop_ring(peer, "the server reclaimed this producer's shared-memory ring after "
                                      f"{RING_IDLE_S:g} s of silence")
                self._owe_credit(peer)
                return True
        return False

    def _drop_ring(self, peer: Peer, why: str) -> None:
        if peer.ring is not None:
            self._ring_bytes -= peer.ring.ring_bytes
            peer.ring.close()
            peer.ring = None
            peer.shm_refused = why
            self._rings -= 1

    def _receive_v11(self, parts: list) -> None:
        identity, kind = bytes(parts[0]), bytes(parts[1]) if len(parts) > 1 else b""
        if kind == protocol.KIND_FRAME and len(parts) > 2:
            peer = self._peer(identity, None)
            peer.received += 1
            held = peer.received - peer.acked
            if held > self.stats["credit_peak_in_flight"]:
                self.stats["credit_peak_in_flight"] = held
            self._receive(parts[2:], peer, over_credit=held > peer.window)
            return
        if kind == protocol.KIND_HELLO:
            try:
                hello = protocol.decode_hello_message(parts[1:])
            except ProtocolError as exc:
                self._reject(exc)
                return
            self.stats["credit_hellos"] += 1
            peer = self._peer(identity, hello.stream)
            if hello.shm_bytes is not None and peer.ring is None:
                self._grant_ring(peer, hello.shm_bytes)
            self._owe_credit(peer)
            return
        if kind == protocol.KIND_BYE:
            if len(parts) == 2:
                self._forget(identity)
                return
            self.stats["received"] += 1
            self._reject(ProtocolError(f"a protocol v1.1 bye is the part b'bye' alone, got {len(parts) - 1} parts"))
            return
        self.stats["received"] += 1
        self._reject(ProtocolError(f"a protocol v1.1 message starts with the part b'frame', b'hello' or b'bye' "
                                   f"(then the frame's parts), got {protocol.bounded_repr(kind[:32])}"))

    def _forget(self, identity: bytes) -> None:
        """A producer said goodbye (it is closing): its ring is freed now rather than after
        RING_IDLE_S of silence, and its credit is forgotten. Its frames still in flight are
        answered as usual; a slot they hold stays mapped until then."""
        peer = self._peers.pop(identity, None)
        self.stats["credit_byes"] += 1
        if peer is not None:
            peer.forgotten = True
            self._drop_ring(peer, "the producer said goodbye")

    def _owe_credit(self, peer: Peer) -> None:
        if not self._credit_due:
            self._loop.call_soon(self._send_credit)  # one message per peer per loop turn, however many answers
        self._credit_due[peer] = None

    def _send_credit(self) -> None:
        due, self._credit_due = self._credit_due, {}
        if self._closed or self._router_now is None:
            return
        for peer in due:
            if peer.forgotten:
                continue
            try:
                ring = peer.ring
                credit = (protocol.Credit(peer.session, peer.window, peer.acked, peer.policy,
                                          shm_refused=peer.shm_refused) if ring is None else
                          protocol.Credit(peer.session, peer.window, peer.acked, peer.policy,
                                          ring.offer_wire, ring.seen, tuple(ring.held)))
                self._router_now.send_multipart([peer.identity, *protocol.encode_credit(credit)], zmq.NOBLOCK)
                self.stats["credit_messages"] += 1
            except zmq.ZMQError:  # gone, or not reading: it asks again (hello) while it waits
                self.stats["credit_unsent"] += 1
        self._schedule_read()

    # -- frames ------------------------------------------------------------------------------
    def _receive(self, parts: list, peer: Peer | None = None, over_credit: bool = False) -> None:
        self.stats["received"] += 1
        if self.metrics is not None:
            self.metrics.received.inc()
        ring = peer.ring if peer is not None else None
        try:
            msg = protocol.decode_frame(parts, self.options.limits, ring)
        except ProtocolError as exc:
            self._reject(exc, peer)
            return
        if peer is not None and peer.stream != msg.stream:
            self._peer(peer.identity, msg.stream)  # its stream's policy sets its window
        nbytes = sum(len(p.buffer) if hasattr(p, "buffer") else len(p) for p in parts)
        if msg.shm_slot is not None:
            nbytes += len(msg.data)
            self.stats["shm_frames"] += 1
        else:
            ring = None
        job = Job(msg.stream, msg.seq, msg, parts, time.perf_counter(), nbytes=nbytes, peer=peer, ring=ring)
        self._held_bytes += job.nbytes
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
        frame that finds its ``queue`` stream full is answered ``overloaded``."""
        if self._unavailable:
            self._settle(job, error=("unavailable", "no worker can run the model now (they keep failing "
                                                    "to start); see the server's log"))
            return
        budget = self.options.max_frame_memory
        if budget and self._held_bytes > budget:  # (this frame's bytes included)
            self.stats["over_memory_budget"] += 1
            self._settle(job, error=("overloaded", f"the server holds {self._held_bytes / 2**20:.1f} MiB of "
                                                   f"frames, past its --max-frame-memory of {budget / 2**20:.1f} "
                                                   f"MiB; try again later"))
            return
        offer = self.sched.offer(job, force=job.peer is not None or self._stop_event.is_set())
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

    def _reject(self, exc: ProtocolError, peer: Peer | None = None) -> None:
        stream, seq = getattr(exc, "stream", None), getattr(exc, "seq", None)
        if peer is not None:
            peer.acked += 1
            self._owe_credit(peer)
        self.stats["errors.bad_frame"] += 1
        self.stats["answered"] += 1
        result = protocol.error_result("bad_frame", str(exc), stream, seq)
        result["model"] = self.model_info
        if self.metrics is not None:
            self.metrics.result(result["stream"], "bad_frame", None)
        self._send(result)

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
            idle = [s for s in self.slots if s in self._usable and s not in self._in_hand]
            if not idle:
                return None
            decision = self.sched.next_batch(len(idle), time.perf_counter(), hurry=self._stopping)
            if isinstance(decision, list):
                self._submit(idle[0], decision, alone=not self._in_hand and not self.sched.pending)
                continue
            return None if decision is None else max(0.0, decision - time.perf_counter())

    def _submit(self, slot: WorkerSlot, batch: list[Job], alone: bool = False) -> None:
        now = time.perf_counter()
        for job in batch:
            job.t_batch = now
        self._in_hand[slot] = batch
        self.stats["batches"] += 1
        self._batch_ids[slot] = self.stats["batches"]
        self.stats["batched_frames"] += len(batch)
        if self.metrics is not None:
            self.metrics.batch.observe(len(batch))
        slot.submit(batch, alone=alone)

    def _check_quiet(self) -> None:
        if self.sched.pending == 0 and not self._in_hand:
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
            log.exception("handling %s of worker %d failed", getattr(fn, "__name__", fn), slot.index)
            self.stats["failures.event"] += 1
            batch = args[0] if args and isinstance(args[0], list) else []
            if batch:
                self._in_hand.pop(slot, None)
            for job in batch:
                if not job.settled:
                    self._settle(job, error=("internal", f"the server failed handling this frame's result "
                                                         f"({type(exc).__name__})"))
            self._wake.set()

    def worker_state(self, slot: WorkerSlot, state: str) -> None:
        if state == "ready":
            self._usable.add(slot)
        else:
            self._usable.discard(slot)
        down = bool(self.slots) and all(s.state == "backoff" for s in self.slots)
        if down and not self._unavailable:
            log.error("no worker can run the model; answering frames 'unavailable' until one starts")
            for job in self.sched.take_all():
                self._settle(job, error=("unavailable", "no worker can run the model now (they keep failing "
                                                        "to start); see the server's log"))
        self._unavailable = down
        self._wake.set()

    def batch_done(self, slot: WorkerSlot, batch: list[Job], outcomes: list[Outcome]) -> None:
        self._in_hand.pop(slot, None)
        worker = {"worker": slot.index, "generation": slot.generation, "batch": len(batch),
                  "batch_id": self._batch_ids.pop(slot, None), "model": slot.spec.model_info}
        for job, out in zip(batch, outcomes):
            if job.settled:  # answered `shutdown` at the stop deadline
                self.stats["late_results"] += 1
                continue
            self._settle(job, error=out.error, outcome=out, worker=worker)
        self._dispatch_ready()  # the freed worker takes its next batch in this loop turn
        self._wake.set()

    def batch_lost(self, slot: WorkerSlot, batch: list[Job], reason: str) -> None:
        self._in_hand.pop(slot, None)
        self._batch_ids.pop(slot, None)
        self._usable.discard(slot)  # it is restarting: its "ready" comes when it is back
        self.stats["batches_lost"] += 1
        for job in batch:
            if job.settled:
                continue
            job.runs_lost += 1
            if job.runs_lost >= 2:
                self._settle(job, error=("worker_lost", f"the worker running this frame died twice, the second "
                                                        f"time running it alone ({reason})"))
            elif self._stopping and self._closed:
                self._settle(job, error=("shutdown", "the server stopped"))
            else:
                self.stats["reruns"] += 1
                self.sched.rerun(job)
        self._wake.set()

    def batch_returned(self, slot: WorkerSlot, batch: list[Job]) -> None:
        self._in_hand.pop(slot, None)
        self._batch_ids.pop(slot, None)
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
        self._held_bytes -= job.nbytes
        if job.ring is not None:  # the producer may write this slot again once its credit says so
            job.ring.release(job.msg.shm_slot)
        if job.peer is not None:
            job.peer.acked += 1
            self._owe_credit(job.peer)
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
            parts = [job.stream.encode(), msgpack.packb({
                "v": protocol.VERSION, "stream": job.stream, "seq": job.seq, "ok": False,
                "error": {"code": "internal", "message": f"the result could not be built: {type(exc).__name__}"}})]
        finally:
            job.keep = None  # release the received buffers
        self._send_parts(parts)

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
            try:
                self._pub_now.send_multipart(parts, flags=zmq.NOBLOCK)
                return
            except zmq.Again:  # (PUB itself never blocks: past a slow subscriber's HWM it drops unreported)
                self.stats["publish_dropped"] += 1
                return
            except Exception:
                self.stats["publish_failed"] += 1
                log.exception("publishing a result failed (attempt %d of 2)", attempt)

    # -- control socket ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What ``streampi ctl`` shows: the workers, the counters, health."""
        now = time.monotonic()
        workers = []
        for slot in self.slots:
            held = self._in_hand.get(slot, [])
            workers.append({"index": slot.index, "pid": slot.pid, "generation": slot.generation,
                            "state": slot.state, "cores": slot.cores, "busy": bool(held),
                            "holding": [[j.stream, j.seq] for j in held], "frames_done": slot.frames_done,
                            "restarts": slot.restarts, "busy_s": round(slot.busy_s, 3),
                            "light_frames": slot.light_frames})
        problems = []
        for slot, w in zip(self.slots, workers):
            w["process"] = process_state(slot)
            if slot not in self._usable:
                problems.append(f"worker {slot.index} is {slot.state}")
            elif w["process"] != "running":
                problems.append(f"worker {slot.index} (pid {slot.pid}) is {w['process']}")
            elif held and now - slot.last_done > self.options.invoke_timeout:
                problems.append(f"worker {slot.index} has held a batch for {now - slot.last_done:.1f} s")
        if self._stopping:
            problems.append("stopping")
        healthy = not problems
        return {"healthy": healthy, "problems": problems, "model": self.model_info, "isolation": self.options.isolation,
                "workers": workers, "pending": self.sched.pending, "frame_bytes_held": self._held_bytes,
                "credit_producers": len(self._peers),
                "credit_in_flight": sum(p.received - p.acked for p in self._peers.values()),
                "shm_rings": self._rings, "shm_ring_bytes": self._ring_bytes,
                "stats": dict(self.stats),
                "uptime_s": round(time.time() - self.started_at, 3)}

    async def _control(self) -> None:
        """Answer ``streampi ctl``: one msgpack map in (``{"cmd": ...}``), one out."""
        sock = self.control
        while True:
            raw = await sock.recv()
            try:
                req = msgpack.unpackb(raw, raw=False, max_str_len=1024, max_map_len=16, max_array_len=16)
                cmd = req.get("cmd") if isinstance(req, dict) else None
                status = self.status()
                if cmd == "workers":
                    reply = {"ok": True, "workers": status["workers"]}
                elif cmd == "health":
                    reply = {"ok": True, "healthy": status["healthy"], "problems": status["problems"],
                             "workers": status["workers"]}
                elif cmd == "stats":
                    reply = {"ok": True, **status}
                elif cmd == "reload":
                    target = req.get("model")
                    if target is not None and not isinstance(target, str):
                        reply = {"ok": False, "error": "reload takes a model path (a string)"}
                    else:
                        reply = await self.reload(target)
                else:
                    reply = {"ok": False, "error": "unknown command; expected one of: health, workers, stats, reload"}
            except Exception as exc:
                reply = {"ok": False, "error": f"bad request ({type(exc).__name__})"}
            await sock.send(msgpack.packb(reply))


def process_state(slot: WorkerSlot) -> str:
    """``running``, ``stopped`` (SIGSTOP, a debugger), ``dead``: read now, never cached, so
    that health is never a stale "ok"."""
    runner = slot.runner
    if runner is None or not runner.alive():
        return "dead"
    if slot.isolation == "thread":
        return "running"
    try:
        with open(f"/proc/{slot.pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "running"  # no /proc: what alive() said
    return {b"T": "stopped", b"t": "stopped", b"Z": "dead", b"X": "dead"}.get(state, "running")
