"""The streaming server: ZeroMQ ingest, per-stream policy, micro-batching, publishing.

One asyncio event loop (uvloop when installed) does the cheap work: it receives frame
messages, validates their headers, applies each stream's policy, forms micro-batches and
publishes results. Interpreter workers (threads pinned to cores, :mod:`streampi.workers`)
do the expensive work: preprocessing straight into the input tensor and ``invoke()``.

Every frame that reaches the server gets exactly one result message. The one place
that decides a frame's fate is :meth:`Server._settle`: results, errors and drops all go
through it, and it refuses to answer a frame twice.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from . import protocol
from .config import ModelConfig, load_config
from .errors import ProtocolError, StreampiError
from .model import Model, resolve_model
from .protocol import FrameMessage, Limits
from .workers import Outcome, Worker, usable_cores

POLICIES = ("latest", "queue")


@dataclass
class Job:
    """A frame the server accepted, from receipt to its one result."""

    msg: FrameMessage
    keep: Any  # the received zmq frames: the pixels live in their buffers
    t_recv: float = field(default_factory=time.perf_counter)
    t_batch: float = 0.0
    settled: bool = False

    # the attributes run_batch reads
    @property
    def fmt(self) -> str:
        return self.msg.fmt

    @property
    def data(self) -> Any:
        return self.msg.data

    @property
    def width(self) -> int | None:
        return self.msg.width

    @property
    def height(self) -> int | None:
        return self.msg.height


class StreamState:
    """Frames of one stream waiting for a worker."""

    def __init__(self, name: str, policy: str, capacity: int) -> None:
        self.name, self.policy = name, policy
        self.capacity = 1 if policy == "latest" else capacity
        self.pending: collections.deque[Job] = collections.deque()
        self.space = asyncio.Event()
        self.space.set()


@dataclass
class ServerOptions:
    """Everything ``streampi serve`` can set (see ``streampi serve --help``)."""

    bind: str = "tcp://127.0.0.1:5555"
    publish: str = "tcp://127.0.0.1:5556"
    workers: int | None = None
    threads: int = 1
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
    curve_secret: str | None = None  # curve hook: the server's NAME.key_secret
    curve_clients: str | None = None  # curve hook: directory of the allowed clients' NAME.key

    def check(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        for stream, pol in self.stream_policies.items():
            if pol not in POLICIES:
                raise ValueError(f"policy of stream {stream!r} must be one of {POLICIES}, got {pol!r}")
        for name in ("threads", "max_batch", "queue_size", "max_streams", "recv_hwm"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max-delay-ms must be >= 0, got {self.max_delay_ms}")


class Server:
    """Serve one model. ``await server.serve()`` runs until :meth:`stop`; :meth:`run`
    is the blocking form with uvloop and SIGINT/SIGTERM handling (what the CLI calls).

    >>> server = Server("shapes_int8", ServerOptions(workers=2))   # doctest: +SKIP
    >>> server.run()                                                # doctest: +SKIP
    """

    def __init__(self, model: str = "shapes_int8", options: ServerOptions | None = None,
                 config: ModelConfig | None = None, **config_overrides: Any) -> None:
        self.options = options or ServerOptions()
        self.options.check()
        self._curve = None  # curve hook: keys checked before anything starts
        if self.options.curve_secret is not None or self.options.curve_clients is not None:  # curve hook
            from .auth import CurveServer  # curve hook
            self._curve = CurveServer.from_files(self.options.curve_secret, self.options.curve_clients)  # curve hook
        self.model_path = resolve_model(model)
        # load once here so that a bad model fails at start-up, before any socket is bound
        probe = Model(self.model_path, backend=self.options.backend, delegates=self.options.delegates)
        probe.image_input()
        self.delegate_errors = probe.delegate_errors
        self.config = config or load_config(self.model_path, **config_overrides)
        self.model_info = {"name": probe.name, "sha256": probe.sha256[:12]}
        self.backend = str(probe.backend)
        self.batch_resizable = probe.batch_resizable
        del probe
        cores = usable_cores()
        self.n_workers = self.options.workers or len(cores)
        self._cores = cores
        self.stats: collections.Counter[str] = collections.Counter()
        self._streams: dict[str, StreamState] = {}
        self._ready_order: collections.deque[str] = collections.deque()
        self._stopping = False
        self.bound: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------
    def _worker_cores(self, i: int) -> list[int] | None:
        if not self.options.pin:
            return None
        t = self.options.threads
        return [self._cores[(i * t + k) % len(self._cores)] for k in range(t)]

    def _start_workers(self) -> None:
        loop = asyncio.get_running_loop()

        def done(worker: Worker, batch: list, outcomes: list[Outcome]) -> None:
            loop.call_soon_threadsafe(self._batch_done, worker, batch, outcomes)

        self.workers = [Worker(i, str(self.model_path), self.config, backend=self.options.backend,
                               threads=self.options.threads, cores=self._worker_cores(i),
                               max_batch=self.options.max_batch, on_done=done, delegates=self.options.delegates)
                        for i in range(self.n_workers)]
        for w in self.workers:
            w.start()
        for w in self.workers:
            w.wait_ready()
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        for w in self.workers:
            self._idle.put_nowait(w)
        self._busy = 0

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Run until :meth:`stop` is called; then finish what was accepted and return."""
        opts = self.options
        self._stop_event = asyncio.Event()
        self._work = asyncio.Event()  # set whenever a job is queued
        self._all_idle = asyncio.Event()
        self._start_workers()
        ctx = zmq.asyncio.Context.instance()
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, opts.recv_hwm)
        self.pull.setsockopt(zmq.MAXMSGSIZE, opts.limits.max_message_bytes)
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, opts.send_hwm)
        self.pub.setsockopt(zmq.LINGER, 2000)
        if self._curve is not None:  # curve hook: every socket the server opens
            self._curve.start(ctx)  # curve hook
            for sock in (self.pull, self.pub):  # curve hook
                self._curve.apply(sock)  # curve hook
        try:
            self.pull.bind(opts.bind)
            self.pub.bind(opts.publish)
        except zmq.ZMQError as exc:
            self._close_sockets()
            self._stop_workers()
            raise StreampiError(f"cannot bind {opts.bind} / {opts.publish}: {exc}") from exc
        # blocking-API twins of the same sockets: draining what is already queued and publishing
        # through them skips the asyncio future machinery (~60 µs a message)
        self._pull_now = zmq.Socket.shadow(self.pull.underlying)
        self._pub_now = zmq.Socket.shadow(self.pub.underlying)
        self.bound = {"bind": self.pull.getsockopt(zmq.LAST_ENDPOINT).decode(),
                      "publish": self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()}
        ingest = asyncio.ensure_future(self._ingest())
        dispatch = asyncio.ensure_future(self._dispatch())
        if ready is not None:
            ready.set()
        try:
            await self._stop_event.wait()
        finally:
            self._stop_event.set()  # also when serve() itself is cancelled
            await asyncio.gather(ingest, return_exceptions=True)
            await self._drain_received()
            self._stopping = True
            self._work.set()
            try:
                await asyncio.wait_for(dispatch, timeout=60)
            except asyncio.TimeoutError:
                dispatch.cancel()
            self._stop_workers()
            self._close_sockets()

    def stop(self) -> None:
        """Stop taking frames; :meth:`serve` then finishes and publishes what was accepted."""
        if hasattr(self, "_stop_event"):
            self._stop_event.set()

    def _stop_workers(self) -> None:
        for w in getattr(self, "workers", []):
            w.stop()
        for w in getattr(self, "workers", []):
            w.join(timeout=10)

    def _close_sockets(self) -> None:
        for name in ("pull", "pub"):
            sock = getattr(self, name, None)
            if sock is not None and not sock.closed:
                sock.close()
        if getattr(self, "_curve", None) is not None:  # curve hook
            self._curve.stop()  # curve hook

    def run(self, on_ready: Any = None) -> int:
        """Serve until SIGINT/SIGTERM; return the exit code (0 after a clean stop)."""
        try:
            import uvloop
            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            pass

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
            ready = asyncio.Event()
            task = asyncio.ensure_future(self.serve(ready))
            await asyncio.wait([task, asyncio.ensure_future(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
            if ready.is_set() and on_ready is not None:
                on_ready(self)
            await task

        asyncio.run(main())
        return 0

    # -- ingest ------------------------------------------------------------------------------
    async def _ingest(self) -> None:
        """Receive until stop. Never cancelled from outside: a cancelled task could drop a
        message its receive had already taken off the socket; only the pending receive is
        cancelled here, and a message it already holds is still handled."""
        stop = asyncio.ensure_future(self._stop_event.wait())
        while True:
            fut = self.pull.recv_multipart(copy=False)
            await asyncio.wait({fut, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not fut.done():
                fut.cancel()
                await asyncio.gather(fut, return_exceptions=True)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                await self._receive(fut.result())
            if stop.done():
                return
            for _ in range(64):  # then what is already queued, without a trip through the event loop
                try:
                    parts = self._pull_now.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                await self._receive(parts)

    async def _drain_received(self) -> None:
        """At stop: answer the frames ZeroMQ has already received for us (bounded, so that a
        producer that keeps sending cannot hold the stop up)."""
        for _ in range(self.options.recv_hwm * 2):
            try:
                parts = self._pull_now.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            await self._receive(parts)

    async def _receive(self, parts: list) -> None:
        self.stats["received"] += 1
        try:
            msg = protocol.decode_frame(parts, self.options.limits)
        except ProtocolError as exc:
            self._reject(exc)
            return
        await self._admit(Job(msg, parts))

    def _reject(self, exc: ProtocolError) -> None:
        stream, seq = getattr(exc, "stream", None), getattr(exc, "seq", None)
        self.stats["errors.bad_frame"] += 1
        self.stats["answered"] += 1
        result = protocol.error_result("bad_frame", str(exc), stream, seq)
        result["model"] = self.model_info
        self._publish(result)

    async def _admit(self, job: Job) -> None:
        name = job.msg.stream
        state = self._streams.get(name)
        if state is None:
            if len(self._streams) >= self.options.max_streams:
                self._settle(job, error=("overloaded", f"more than {self.options.max_streams} streams have "
                                                       f"frames waiting; try again later"))
                return
            policy = self.options.stream_policies.get(name, self.options.policy)
            state = self._streams[name] = StreamState(name, policy, self.options.queue_size)
        self.stats["accepted"] += 1
        if state.policy == "latest":
            if state.pending:
                old = state.pending.popleft()
                self._settle(old, error=("dropped", f"replaced by a newer frame of stream {name} (seq {job.msg.seq})"))
            state.pending.append(job)
            self.stats["max_pending"] = max(self.stats["max_pending"], len(state.pending))
        else:
            try:
                while len(state.pending) >= state.capacity:  # back-pressure: stop reading until there is room
                    state.space.clear()
                    self.stats["backpressure_waits"] += 1
                    await state.space.wait()
            finally:  # also when a stop cancels the wait: an accepted frame is always answered
                state = self._streams.setdefault(name, state)
                state.pending.append(job)
                self.stats["max_pending"] = max(self.stats["max_pending"], len(state.pending))
                if name not in self._ready_order:
                    self._ready_order.append(name)
                self._work.set()
            return
        if name not in self._ready_order:
            self._ready_order.append(name)
        self._work.set()

    # -- batching ----------------------------------------------------------------------------
    def _pending(self) -> int:
        return sum(len(s.pending) for s in self._streams.values())

    def _batch_cap(self) -> int:
        """How large the next batch could get if we waited (latest streams hold one frame each)."""
        room = sum(1 if s.policy == "latest" else s.capacity for s in self._streams.values())
        could_add_streams = len(self._streams) < self.options.max_streams
        return self.options.max_batch if could_add_streams else min(self.options.max_batch, room)

    def _oldest(self) -> float:
        return min(s.pending[0].t_recv for s in self._streams.values() if s.pending)

    def _take(self, n: int) -> list[Job]:
        """Up to ``n`` jobs, round robin over streams so that no stream starves another."""
        batch: list[Job] = []
        while len(batch) < n and self._ready_order:
            name = self._ready_order.popleft()
            state = self._streams[name]
            batch.append(state.pending.popleft())
            state.space.set()
            if state.pending:
                self._ready_order.append(name)
            else:
                del self._streams[name]
        return batch

    async def _dispatch(self) -> None:
        max_batch, delay = self.options.max_batch, self.options.max_delay_ms / 1e3
        while True:
            worker = await self._idle.get()
            while not self._ready_order:
                if self._stopping:
                    self._idle.put_nowait(worker)
                    await self._drain_workers()
                    return
                self._work.clear()
                await self._work.wait()
            # micro-batching: wait up to max-delay (from the oldest frame's arrival) for more
            while not self._stopping and self._pending() < min(max_batch, self._batch_cap()):
                left = self._oldest() + delay - time.perf_counter()
                if left <= 0:
                    break
                self._work.clear()
                try:
                    await asyncio.wait_for(self._work.wait(), left)
                except asyncio.TimeoutError:
                    break
            # spread frames over idle workers before batching them onto one: a batch only
            # pays off when every worker is busy (then frames gather and batches fill up)
            share = -(-self._pending() // (self._idle.qsize() + 1))
            batch = self._take(min(max_batch, share) if self.batch_resizable else 1)
            now = time.perf_counter()
            for job in batch:
                job.t_batch = now
            self._busy += 1
            self.stats["batches"] += 1
            self.stats["batched_frames"] += len(batch)
            worker.submit(batch)

    async def _drain_workers(self) -> None:
        while self._busy:
            self._all_idle.clear()
            await self._all_idle.wait()

    def _batch_done(self, worker: Worker, batch: list[Job], outcomes: list[Outcome]) -> None:
        self._busy -= 1
        self._idle.put_nowait(worker)
        if not self._busy:
            self._all_idle.set()
        for job, out in zip(batch, outcomes):
            if out.error is not None:
                self._settle(job, error=out.error, outcome=out, worker=worker.index, batch=len(batch))
            else:
                self._settle(job, outcome=out, worker=worker.index, batch=len(batch))

    # -- the one place a frame's fate is decided ---------------------------------------------
    def _settle(self, job: Job, *, error: tuple[str, str] | None = None, outcome: Outcome | None = None,
                worker: int | None = None, batch: int | None = None) -> None:
        if job.settled:
            self.stats["errors.double_settle"] += 1
            print(f"streampi: internal error: frame {job.msg.stream}/{job.msg.seq} settled twice", file=sys.stderr)
            return
        job.settled = True
        msg = job.msg
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
        if batch is not None:
            result["batch"] = batch
        if worker is not None:
            result["worker"] = worker
        result["model"] = self.model_info
        self.stats["answered"] += 1
        job.keep = None  # release the received buffers
        self._publish(result)

    def _publish(self, result: dict) -> None:
        try:
            self._pub_now.send_multipart(protocol.encode_result(result), flags=zmq.NOBLOCK)
        except zmq.Again:  # (PUB itself never blocks: past a slow subscriber's HWM it drops unreported)
            self.stats["publish_dropped"] += 1
