"""A node: this machine's workers, joined to a server elsewhere (``streampi node MODEL --join``).

The node loads the model, starts its worker slots (:class:`~streampi.serving.workers.WorkerSlot`,
each with its runner process, restarted when it dies exactly as the server restarts its own),
and connects out with a DEALER to the server's ``--node-bind`` ROUTER, so that a node behind
NAT, or one started at any time, joins. It says what it runs (the model file's sha256, its
model options' digest, its runtime, its workers and their max batch); the server welcomes it
with a generation or refuses it with the reason, which the node logs before it exits with
code 2. Then it runs the batches the server sends (with ``--node-send tensor``, the default, the
model's input tensors: the server ran the kernel and decodes the raw outputs, so the node's own
model options are not used; with ``frame``, the frames as the producers sent them: the node runs
the kernel and the decoder) and answers each batch once: done, lost (its runner died under it: the
server runs the frames again elsewhere) or returned (its worker is backing off).

Liveness: ZMTP heartbeats on the connection (libzmq closes it after 3 s without traffic and
reconnects), a socket monitor (a refused CurveZMQ key ends the node with a clear error; a
disconnection means the server will see a new connection: the node says hello again), and a
beat each second with its workers' states. A server silent for 3 s is taken as lost: the node
says hello again until it is welcomed (a new generation; answers for the old one are discarded
by the server).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from .. import __version__, protocol
from ..config import ModelConfig
from ..errors import StreampiError
from ..model import resolve_model
from ..runtime_info import usable_cores
from .nodes import config_digest, config_fields, file_sha256
from .options import ServerOptions
from .workers import Events, Outcome, WorkerSlot, WorkerSpec

log = logging.getLogger("streampi.node")

_MONITORED = (zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
              | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
              | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class NodeRefused(StreampiError):
    """The server refused this node (another model, other model options, an unknown key)."""


@dataclass(eq=False)
class NodeJob:
    """A frame of a batch from the server, as a worker slot reads it (``job.msg``)."""

    msg: protocol.FrameMessage
    batch_id: int
    generation: int


class NodeAgent(Events):
    """Run ``model`` for the server at ``join``. ``options``: the worker fields of
    :class:`ServerOptions` (workers, threads, max_batch, isolation, backend, invoke_timeout,
    light_threads, pin). ``curve_secret``/``curve_server``: this node's secret key file and
    the server's public key file (CurveZMQ, as every streampi client)."""

    def __init__(self, model: str, join: str, options: ServerOptions | None = None, *, name: str | None = None,
                 curve_secret: Any = None, curve_server: Any = None, config: ModelConfig | None = None,
                 **config_overrides: Any) -> None:
        self.options = opts = options or ServerOptions()
        opts.check()
        self.join_endpoint = join
        self.name = (name or socket.gethostname())[:64]
        self.node_id = uuid.uuid4().hex
        self.curve = (curve_secret, curve_server) if curve_secret or curve_server else None
        if self.curve is not None:  # a bad key file fails here, before anything starts
            from ..auth import apply_client

            probe = zmq.Context.instance().socket(zmq.DEALER)
            try:
                apply_client(probe, curve_secret, curve_server)
            finally:
                probe.close()
        self.model_path = resolve_model(model)
        self.spec = WorkerSpec.from_model(self.model_path, opts, config, config_overrides)
        self.sha256 = file_sha256(self.model_path)
        self.digest = config_digest(self.spec.config)
        self._cores = usable_cores()
        self.n_workers = opts.workers or len(self._cores)
        self.slots: list[WorkerSlot] = []
        self.generation = 0  # 0: not joined
        self.heard = 0.0  # monotonic time of the server's last message
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._received: dict[int, float] = {}  # batch id -> when it came (the node's time on it)
        self._stop = False
        self.stats: dict[str, int] = {"batches": 0, "frames": 0, "lost": 0, "returned": 0, "joins": 0,
                                      "stale_batches": 0}

    # -- Events, from the worker threads: into the main loop through the queue and the pipe -----------
    def _emit(self, fn: Any, *args: Any) -> None:
        self.events.put((fn, args))
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # the pipe is full: the loop is awake anyway
            pass

    def worker_state(self, slot: WorkerSlot, state: str) -> None:
        self._beat()

    def batch_done(self, slot: WorkerSlot, batch: list, outcomes: list[Outcome]) -> None:
        job = batch[0]
        out = [protocol.NodeOutcome(o.payload, tuple(o.error) if o.error else None, o.pre_ms, o.timing)  # type: ignore[arg-type]
               for o in outcomes]
        node_ms = (time.perf_counter() - self._received.pop(job.batch_id, time.perf_counter())) * 1e3
        self.stats["frames"] += len(batch)
        self._send(protocol.KIND_NODE_DONE, protocol.NodeDone(job.batch_id, job.generation, out, node_ms))

    def batch_lost(self, slot: WorkerSlot, batch: list, reason: str) -> None:
        job = batch[0]
        self._received.pop(job.batch_id, None)
        self.stats["lost"] += 1
        self._send(protocol.KIND_NODE_LOST, protocol.NodeLost(job.batch_id, job.generation, reason[:400]))

    def batch_returned(self, slot: WorkerSlot, batch: list) -> None:
        job = batch[0]
        self._received.pop(job.batch_id, None)
        self.stats["returned"] += 1
        self._send(protocol.KIND_NODE_RETURNED, protocol.NodeLost(job.batch_id, job.generation, "returned"))

    # -- the link --------------------------------------------------------------------------------------
    def _send(self, kind: bytes, body: Any) -> bool:
        try:
            self.sock.send_multipart(protocol.encode_node(kind, body), zmq.NOBLOCK)
            return True
        except zmq.ZMQError:  # not connected (IMMEDIATE): the server counts this node lost meanwhile
            return False

    def _hello(self) -> None:
        from ..runtime_info import describe_runtime

        info = describe_runtime(self.options.backend)
        runtime = f"{info.get('backend', '?')} {info.get('backend_version', '')} on {info.get('cpu', '?')} ({info.get('arch', '?')})"
        self._send(protocol.KIND_NODE_HELLO, protocol.NodeHello(
            protocol.VERSION, self.node_id, self.name, self.sha256, self.spec.model_info["name"][:64], self.n_workers,
            self.spec.max_batch if self.spec.batchable else 1, " ".join(protocol.NODE_MODES), self.digest, runtime[:400],
            __version__, config_fields(self.spec.config)))
        self._hello_sent = time.monotonic()

    def _beat(self) -> None:
        if self.generation:
            self._send(protocol.KIND_NODE_BEAT, protocol.NodeBeat(self.generation, [s.state for s in self.slots]))

    def _connect(self, ctx: zmq.Context) -> None:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # nothing queued for a connection that is not up
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, self.options.limits.max_message_bytes + 64 * 1024)
        ivl = int(protocol.NODE_BEAT_S * 1000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(protocol.NODE_SILENT_S * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TTL, int(protocol.NODE_SILENT_S * 1000))
        if self.curve is not None:
            from ..auth import apply_client

            apply_client(sock, *self.curve)
        addr = f"inproc://streampi-node-monitor-{id(self)}"
        sock.monitor(addr, _MONITORED)
        self.monitor = ctx.socket(zmq.PAIR)
        self.monitor.setsockopt(zmq.LINGER, 0)
        self.monitor.connect(addr)
        sock.connect(self.join_endpoint)
        self.sock = sock

    # -- running -------------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop = True
        try:
            os.write(self._wake_w, b"s")
        except OSError:
            pass

    def start_workers(self) -> None:
        from .workers import Occupancy

        occupancy = Occupancy()
        cores = self._cores
        t = self.options.threads
        self.slots = [NodeWorkerSlot(i, self.spec, isolation=self.options.isolation,
                                 cores=[cores[(i * t + k) % len(cores)] for k in range(t)] if self.options.pin else None,
                                 emit=self._emit, events=self, occupancy=occupancy, light_cores=cores)
                      for i in range(self.n_workers)]
        for slot in self.slots:
            slot.start()
        for slot in self.slots:
            slot.wait_ready()

    def run(self, on_ready: Any = None) -> int:
        """Serve the server until SIGTERM/SIGINT (0) or a refusal (2: the reason is logged)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop())
        self.start_workers()
        ctx = zmq.Context()
        self._connect(ctx)
        if on_ready is not None:
            on_ready(self)
        code = 0
        try:
            self._loop()
        except NodeRefused as exc:
            log.error("%s", exc)
            code = 2
        finally:
            if self.generation:
                try:
                    self.sock.send_multipart(protocol.encode_node(protocol.KIND_NODE_BYE), zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
            for slot in self.slots:
                slot.stop()
            for slot in self.slots:
                slot.join(5)
                if slot.is_alive():
                    slot.kill()
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self.monitor.close()
            self.sock.setsockopt(zmq.LINGER, 500)  # the bye
            self.sock.close()
            ctx.term()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return code

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        self._hello_sent = 0.0
        next_beat = time.monotonic() + protocol.NODE_BEAT_S
        while not self._stop:
            ready = dict(poller.poll(max(0, int((next_beat - time.monotonic()) * 1000)) + 1))
            if self.monitor in ready:
                self._on_monitor()
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            while True:  # the workers' events
                try:
                    fn, args = self.events.get_nowait()
                except queue.Empty:
                    break
                try:
                    fn(*args)
                except Exception:
                    log.exception("handling a worker's event failed")
            if self.sock in ready:
                for _ in range(64):
                    try:
                        parts = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._on_message(parts)
            now = time.monotonic()
            if self.generation and now - self.heard >= protocol.NODE_SILENT_S:
                log.warning("the server was silent for %.1f s; joining again", now - self.heard)
                self.generation = 0
            if now >= next_beat:
                next_beat = now + protocol.NODE_BEAT_S
                if self.generation:
                    self._beat()
                elif now - self._hello_sent >= 2 * protocol.NODE_BEAT_S:
                    self._hello()

    def _on_monitor(self) -> None:
        while self.monitor.poll(0):
            event = parse_monitor_message(self.monitor.recv_multipart())
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                log.info("connected to %s", self.join_endpoint)
                self.generation = 0
                self._hello()
            elif kind == zmq.EVENT_DISCONNECTED:
                if self.generation:
                    log.warning("disconnected from %s; joining again when the connection is back", self.join_endpoint)
                self.generation = 0
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise NodeRefused(f"the server at {self.join_endpoint} refused this node's CurveZMQ key (is its "
                                  f"NAME.key in the server's --curve-clients directory?)")
            elif kind & (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                log.warning("the handshake with %s failed (%s): is --curve-server the server's public key, and "
                            "does the server use CurveZMQ?", self.join_endpoint, event["value"])

    def _on_message(self, parts: list) -> None:
        try:
            kind, body, data = protocol.decode_node(parts, self.options.limits.max_message_bytes)
        except Exception as exc:
            log.warning("a bad message from the server: %s", exc)
            return
        self.heard = time.monotonic()
        if kind == protocol.KIND_NODE_WELCOME:
            self.generation = body.generation
            self.stats["joins"] += 1
            log.info("joined %s as %s: generation %d, %d workers, the server sends the %s", self.join_endpoint,
                     self.name, self.generation, self.n_workers, body.mode)
            self._beat()
        elif kind == protocol.KIND_NODE_REFUSED:
            raise NodeRefused(f"the server at {self.join_endpoint} refused this node: {body.reason}")
        elif kind == protocol.KIND_NODE_REJOIN:
            log.info("the server asks this node to join again: %s", body.reason)
            self.generation = 0
            self._hello()
        elif kind == protocol.KIND_NODE_BATCH:
            self._on_batch(body, data)

    def _on_batch(self, head: protocol.NodeBatchHead, data: list) -> None:
        if head.generation != self.generation or head.worker >= len(self.slots):
            self.stats["stale_batches"] += 1  # (the server has already counted it lost)
            return
        jobs = []
        for (stream, seq, fmt, w, h), part in zip(head.frames, data):
            msg = protocol.FrameMessage(stream, seq, fmt, part.buffer if hasattr(part, "buffer") else part, w, h)
            jobs.append(NodeJob(msg, head.id, head.generation))
        self._received[head.id] = time.perf_counter()
        self.stats["batches"] += 1
        self.slots[head.worker].submit(jobs)


class NodeWorkerSlot(WorkerSlot):
    """A node's worker: a frame batch runs as on the server (the kernel here); a tensor batch
    (``--node-send tensor``: the server ran the kernel) is copied into the input slot, invoked,
    and its raw outputs go back for the server to decode."""

    def _run(self, batch: Any) -> list[Outcome]:
        if batch[0].msg.fmt != "tensor":
            return super()._run(batch)
        import numpy as np

        outcomes = [Outcome() for _ in batch]
        view = self.runner.inputs(len(batch))
        t0 = time.perf_counter()
        for k, job in enumerate(batch):
            src = np.frombuffer(job.msg.data, view.dtype)
            want = view[k].size
            if src.size != want:  # (the same model on both sides: never, unless a bug)
                del view
                return [Outcome(error=("internal", f"a tensor of {src.size} values for an input of {want}"))
                        for _ in batch]
            view[k] = src.reshape(view[k].shape)
        del view
        copy_ms = (time.perf_counter() - t0) * 1e3
        t_run = time.perf_counter()
        outputs, infer_ms = self.runner.run(len(batch), False)  # (WorkerLost: the batch is lost, told as such)
        handoff_ms = (time.perf_counter() - t_run) * 1e3 - infer_ms if self.isolation == "process" else None
        for pos, out in enumerate(outcomes):
            out.payload = {"tensor_outputs": [[list(o.shape[1:]), np.ascontiguousarray(o[pos], "<f4").tobytes()]
                                              for o in outputs]}
            out.timing.update(infer_ms=infer_ms, copy_ms=copy_ms, invoke_threads=self.runner.threads_used)
            if handoff_ms is not None:
                out.timing["handoff_ms"] = handoff_ms
        return outcomes
