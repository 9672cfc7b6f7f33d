"""Remote nodes: other machines' workers, joined to this server over ZeroMQ.

A node (``streampi node MODEL --join tcp://server:5570``, :mod:`streampi.serving.node_agent`)
connects out with a DEALER to the server's ROUTER (``--node-bind``), says what it runs and is
welcomed with a *generation* (or refused, with the reason, when its model or model options are
not the server's). To the server's dispatch each of the node's workers is one more worker: a
:class:`NodeUnit`, taking one batch at a time through the same ``_submit`` as a local
:class:`~streampi.serving.workers.WorkerSlot` and reporting through the same events
(``batch_done``, ``batch_lost``: the rerun rule, ``batch_returned``). A node's credit is its
free units (each a batch of at most ``max_batch`` frames); the server hands work to the idle
worker with the shortest measured batch time, local workers first, so a slow or busy node never
builds a queue (the guide's load-balancing broker, with credit).

Liveness (the guide's Paranoid Pirate, with libzmq doing what it can): ZMTP heartbeats on both
sockets close a dead connection; both sides send an application beat every second (the node's
says which of its workers are ready); a node silent for 3 s is lost: the batches it held run
again elsewhere under the rerun rule. A node heard again is a new generation; an answer from an
old generation is discarded (counted ``node_late_results``), never published.

:class:`NodeTable` is the sans-I/O core (no socket, no clock: ``now`` comes in), tested alone
(``tests/test_nodes.py``); :class:`NodeLink` is the driver the server holds.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..errors import ProtocolError

if TYPE_CHECKING:  # (the server imports this module)
    from .server import Server

log = logging.getLogger("streampi.nodes")

#: a lost node is shown as missing (``ctl health``) this long unless it comes back
MISSING_FOR_S = 600.0
#: nodes at most (past it a hello is refused)
MAX_NODES = 256
#: weight of the newest batch in a unit's measured batch time (an exponential average)
EWMA = 0.3
#: batches a node's worker may hold: one running and one waiting on the node, so that the worker
#: does not idle for the hop between two batches (credit: workers x DEPTH batches of max_batch)
DEPTH = 2


def file_sha256(path: Any) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_digest(config: Any) -> str:
    """A digest of a model's options (labels, decoder, normalisation): a node must decode as the server does."""
    return hashlib.sha256(repr(config).encode()).hexdigest()[:16]


#: where each model option comes from on the command line, for a refusal that names them
OPTION_FLAGS = {"mean": "--mean", "std": "--std", "channels": "--channels", "resize": "--resize", "pad": "--pad",
                "labels": "--labels", "top_k": "--top-k", "decoder": "--decoder, --decoder-option",
                "extra": "the model's sidecar"}


def config_fields(config: Any) -> dict[str, str]:
    """A digest of each of a model's options by name (what :func:`config_digest` digests as one)."""
    import dataclasses

    return {f.name: hashlib.sha256(repr(getattr(config, f.name)).encode()).hexdigest()[:12]
            for f in dataclasses.fields(config)}


def options_differing(ours: dict[str, str], theirs: dict[str, str]) -> list[str]:
    """The options (with their flags) whose digests differ; [] when the node sent none (an older one)."""
    if not theirs:
        return []
    return [f"{name} ({OPTION_FLAGS[name]})" if name in OPTION_FLAGS else name
            for name in sorted(set(ours) | set(theirs)) if ours.get(name) != theirs.get(name)]


@dataclass(eq=False)
class NodeUnit:
    """One batch's room on a worker of a node, as the server's dispatch sees it (a worker slot of
    its own: each worker of a node has DEPTH of them)."""

    node: Node
    index: int  # the node's worker
    unit: int = 0  # which of that worker's units
    state: str = "ready"
    frames_done: int = 0
    batches_done: int = 0
    restarts: int = 0
    busy_s: float = 0.0
    batch_ms: float = 0.0  # measured batch time (round trip), 0 until one is done
    holding: int | None = None  # the batch id it holds
    isolation = "node"
    invoking_wide = False
    light_frames = 0
    cores = None
    pid = None

    @property
    def generation(self) -> int:
        return self.node.generation

    @property
    def spec(self) -> Any:
        return self.node.table.spec

    @property
    def node_name(self) -> str:
        return self.node.name

    @property
    def label(self) -> str:
        return f"{self.node.name}/{self.index}.{self.unit}"

    def submit(self, batch: list, alone: bool = False) -> None:
        self.node.table.submit(self, batch)


@dataclass(eq=False)
class Node:
    """One node in one generation: its connection (the ROUTER's routing id) and its workers."""

    table: NodeTable
    identity: bytes
    hello: protocol.NodeHello
    generation: int
    heard: float
    address: str = ""
    key: str = ""
    joined: float = 0.0
    units: list[NodeUnit] = field(default_factory=list)
    #: batch id -> (unit, jobs, perf_counter when sent)
    in_flight: dict[int, tuple[NodeUnit, list, float]] = field(default_factory=dict)
    lost: bool = False
    batches_before: int = 0  # batches the server had sent when this node joined
    first_batch: tuple[float, int] | None = None  # (seconds after joining, batches sent elsewhere meanwhile)

    @property
    def name(self) -> str:
        return self.hello.name

    @property
    def node_id(self) -> str:
        return self.hello.node_id


@dataclass
class Missing:
    """A node that was lost and has not come back (what ``ctl health`` names)."""

    name: str
    address: str
    generation: int
    since: float
    why: str


class NodeTable:
    """The nodes of one server, sans I/O.

    ``spec``: the server's worker spec (model_info); ``model_sha256`` and ``digest``: what a
    node must run; ``send(identity, parts) -> bool``: send a message to a node (False when it
    cannot be routed: the node is gone). ``stats``: the server's counters."""

    def __init__(self, *, spec: Any, model_sha256: str, digest: str, session: str,
                 send: Callable[[bytes, list], bool], stats: collections.Counter | None = None,
                 silent_s: float = protocol.NODE_SILENT_S, clock: Callable[[], float] = time.monotonic,
                 mode: str = "frame", prepare: Callable[[NodeUnit, list, int], None] | None = None) -> None:
        self.spec, self.model_sha256, self.digest, self.session = spec, model_sha256, digest, session
        #: what crosses the link; in tensor mode ``prepare(unit, jobs, batch_id)`` runs the kernel off the
        #: loop and hands the tensors to :meth:`send_prepared`
        self.mode, self.prepare = mode, prepare
        self._send = send
        self.stats = stats if stats is not None else collections.Counter()
        self.silent_s, self.clock = silent_s, clock
        self.nodes: dict[bytes, Node] = {}
        self.missing: dict[str, Missing] = {}  # node_id -> the last lost generation
        self._generation = 0
        self._batch_id = 0
        #: (unit, jobs, why) lost by a send that failed inside submit: the driver reports them
        self.failed_sends: list[tuple[NodeUnit, list, str]] = []

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def units(self) -> list[NodeUnit]:
        return [u for n in self.nodes.values() for u in n.units]

    # -- what nodes say ------------------------------------------------------------------------------
    def join(self, identity: bytes, hello: protocol.NodeHello, now: float, address: str = "",
             key: str = "") -> tuple[Node | None, str | None, list[tuple[NodeUnit, list]]]:
        """A hello: ``(node, None, lost)`` when welcomed (``lost``: the batches of its previous
        generation, which it no longer runs for us), or ``(None, reason, [])`` when refused."""
        why = None
        if hello.model_sha256 != self.model_sha256:
            why = (f"this server serves {self.spec.model_info['name']} (sha256 {self.model_sha256[:12]}); the node "
                   f"runs {hello.model_name} (sha256 {hello.model_sha256[:12]}): give the node the server's model file")
        elif self.mode not in hello.mode.split():
            why = f"this server sends each node the {self.mode} (--node-send); the node takes {hello.mode!r}"
        elif self.mode == "frame" and hello.config_digest != self.digest:
            # (in tensor mode the server runs the kernel and the decoder: the node only invokes the
            # model, so its options are never used and a node needs nothing but the model file)
            ours = config_fields(self.spec.config) if hasattr(self.spec, "config") else {}
            differ = options_differing(ours, hello.config_fields)
            what = ", ".join(differ) if differ else "labels, decoder, mean/std, channels, resize"
            why = (f"the node's model options differ from the server's ({what}), and this server sends it frames "
                   f"(--node-send frame): start the node with the options the server was started with, or serve "
                   f"with --node-send tensor (the default), where a node needs only the model file")
        elif len(self.nodes) >= MAX_NODES and identity not in self.nodes:
            why = f"this server has {MAX_NODES} nodes already"
        if why is not None:
            self.stats["nodes_refused"] += 1
            return None, why, []
        same = self.nodes.get(identity)
        if same is not None and same.node_id == hello.node_id and same.hello == hello:
            same.heard = now  # a hello again on the same connection (its welcome crossed a beat): the same generation
            self.stats["node_hellos_again"] += 1
            return same, None, []
        lost: list[tuple[NodeUnit, list]] = []
        for old in [n for n in self.nodes.values() if n.node_id == hello.node_id or n.identity == identity]:
            lost += self.lose(old, "it joined again (a new generation)", now)
        self._generation += 1
        node = Node(self, identity, hello, self._generation, now, address, key, joined=now,
                    batches_before=self._batch_id)
        # the first unit of every worker first: at light load each worker holds one batch at most
        node.units = [NodeUnit(node, k % hello.workers, k // hello.workers) for k in range(hello.workers * DEPTH)]
        self.nodes[identity] = node
        self.missing.pop(hello.node_id, None)
        self.stats["nodes_joined"] += 1
        return node, None, lost

    def heard(self, identity: bytes, now: float) -> Node | None:
        node = self.nodes.get(identity)
        if node is not None:
            node.heard = now
        return node

    def beat(self, identity: bytes, beat: protocol.NodeBeat, now: float) -> list[NodeUnit]:
        """A node's beat: the units whose state changed (None: not a node of this generation)."""
        node = self.heard(identity, now)
        if node is None or beat.generation != node.generation:
            return []
        changed = []
        for unit in node.units:
            if unit.index >= len(beat.states):
                continue
            state = beat.states[unit.index]
            if unit.state != state:
                if unit.state == "ready" and state != "ready" and unit.unit == 0:
                    unit.restarts += 1
                unit.state = state
                changed.append(unit)
        return changed

    def finish(self, identity: bytes, generation: int, batch_id: int, now: float) -> tuple[NodeUnit, list, float] | None:
        """A batch came back (done, lost or returned): its unit, jobs and send time; None for
        an answer that is late (its node was lost since, or it names no batch in flight)."""
        node = self.heard(identity, now)
        if node is None or node.generation != generation or batch_id not in node.in_flight:
            self.stats["node_late_results"] += 1
            return None
        unit, jobs, sent = node.in_flight.pop(batch_id)
        unit.holding = None
        return unit, jobs, sent

    def measured(self, unit: NodeUnit, frames: int, batch_ms: float) -> None:
        unit.frames_done += frames
        unit.batches_done += 1
        unit.busy_s += batch_ms / 1e3
        if unit.batches_done == 1:  # a runner's first invoke is a warm-up (arena, caches): not its speed
            return
        unit.batch_ms = batch_ms if not unit.batch_ms else (1 - EWMA) * unit.batch_ms + EWMA * batch_ms

    # -- what the server does --------------------------------------------------------------------------
    def idle(self, usable: Iterable[Any], in_hand: Any) -> list[NodeUnit]:
        """The units that can take a batch now: one per worker of the least loaded workers (idle
        workers while there are any; a busy worker's second batch only when every worker holds
        one, so that frames spread over idle workers before they wait on a node), quickest
        first; a unit not measured yet goes first, so that a node that just joined gets work at once."""
        usable = set(usable)
        offer: dict[tuple[bytes, int], NodeUnit] = {}
        held: collections.Counter = collections.Counter()
        for n in self.nodes.values():
            if n.lost:
                continue
            for u in n.units:
                key = (n.identity, u.index)
                if u.holding is not None or u in in_hand:
                    held[key] += 1
                elif u in usable and u.state == "ready" and key not in offer:
                    offer[key] = u
        if not offer:
            return []
        least = min(held[key] for key in offer)
        return sorted((u for key, u in offer.items() if held[key] == least), key=lambda u: u.batch_ms)

    def submit(self, unit: NodeUnit, jobs: list) -> None:
        """Send ``jobs`` to ``unit``'s node; a send that fails is kept in ``failed_sends``."""
        self._batch_id += 1
        batch_id = self._batch_id
        if self.prepare is not None:  # tensor mode: the kernel runs first, off the loop
            self._hold(unit, jobs, batch_id)
            self.prepare(unit, jobs, batch_id)
            return
        frames, data = [], []
        for job in jobs:
            msg = job.msg
            frames.append((msg.stream, msg.seq, msg.fmt, msg.width, msg.height))
            data.append(msg.data)
        self._hold(unit, jobs, batch_id)
        self.send_prepared(unit, batch_id, frames, data)

    def _hold(self, unit: NodeUnit, jobs: list, batch_id: int) -> None:
        node = unit.node
        unit.holding = batch_id
        if node.first_batch is None:  # how soon a node that joined got work
            node.first_batch = (self.clock() - node.joined, batch_id - node.batches_before - 1)
        node.in_flight[batch_id] = (unit, jobs, time.perf_counter())
        self.stats["node_batches"] += 1

    def send_prepared(self, unit: NodeUnit, batch_id: int, frames: list, data: list) -> None:
        """Send batch ``batch_id`` (still held by ``unit``: else its node was lost meanwhile)."""
        node = unit.node
        if node.lost or batch_id not in node.in_flight:
            return
        head = protocol.NodeBatchHead(batch_id, node.generation, unit.index, frames)
        jobs = node.in_flight[batch_id][1]
        node.in_flight[batch_id] = (unit, jobs, time.perf_counter())  # the round trip starts now
        if not self._send(node.identity, protocol.encode_node(protocol.KIND_NODE_BATCH, head, data)):
            node.in_flight.pop(batch_id, None)
            unit.holding = None
            self.failed_sends.append((unit, jobs, f"node {node.name} could not be reached"))

    def expire(self, now: float) -> list[tuple[Node, list[tuple[NodeUnit, list]]]]:
        """Nodes silent for ``silent_s``: lost, with the batches they held."""
        out = []
        for node in [n for n in self.nodes.values() if now - n.heard >= self.silent_s]:
            out.append((node, self.lose(node, f"silent for {now - node.heard:.1f} s", now)))
        for node_id in [k for k, m in self.missing.items() if now - m.since > MISSING_FOR_S]:
            del self.missing[node_id]
        return out

    def lose(self, node: Node, why: str, now: float) -> list[tuple[NodeUnit, list]]:
        """Forget ``node`` (this generation); return the batches it held, to run elsewhere."""
        if self.nodes.get(node.identity) is node:
            del self.nodes[node.identity]
        if node.lost:
            return []
        node.lost = True
        self.stats["nodes_lost"] += 1
        self.missing[node.node_id] = Missing(node.name, node.address, node.generation, now, why)
        held = [(unit, jobs) for unit, jobs, _ in node.in_flight.values()]
        node.in_flight.clear()
        for unit in node.units:
            unit.holding = None
            unit.state = "lost"
        return held

    def leave(self, identity: bytes, now: float) -> list[tuple[NodeUnit, list]]:
        """A node said goodbye: gone, not missing."""
        node = self.nodes.get(identity)
        if node is None:
            return []
        held = self.lose(node, "it left", now)
        self.missing.pop(node.node_id, None)
        return held

    # -- what ctl shows ------------------------------------------------------------------------------
    def describe(self, now: float) -> list[dict[str, Any]]:
        rows = []
        for node in self.nodes.values():
            free = sum(1 for u in node.units if u.holding is None and u.state == "ready")
            rows.append({"node": node.name, "address": node.address, "key": node.key, "generation": node.generation,
                         "workers": node.hello.workers, "credit": free * node.hello.max_batch,
                         "credit_max": len(node.units) * node.hello.max_batch, "state": "joined",
                         "heard_s": round(now - node.heard, 3), "runtime": node.hello.runtime,
                         "batch_ms": round(min((u.batch_ms for u in node.units if u.batch_ms), default=0.0), 3),
                         "frames_done": sum(u.frames_done for u in node.units),
                         "first_batch_s": round(node.first_batch[0], 3) if node.first_batch else None,
                         "worker_states": [u.state for u in node.units if u.unit == 0]})
        for m in self.missing.values():
            rows.append({"node": m.name, "address": m.address, "generation": m.generation, "state": "missing",
                         "missing_s": round(now - m.since, 3), "why": m.why})
        return rows


class NodeLink:
    """The server's side of the nodes: the ROUTER at ``--node-bind`` and the table, driven
    from the server's event loop (a reader callback on the socket, a beat task)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.sock: Any = None
        self._now: Any = None
        self._read_scheduled = False
        self._no_node_since: float | None = None  # --workers 0 and no node ready: since when
        self.mode = server.options.node_send
        #: tensor mode: batch id -> (indexes of the frames sent, their transforms, the others' errors, kernel ms)
        self._sent_tensors: dict[int, tuple[list[int], dict, dict, list[float]]] = {}
        if self.mode == "tensor":  # the kernel runs here, in threads (it releases the GIL), off the loop
            import threading
            from concurrent.futures import ThreadPoolExecutor

            from ..decoders import make_decoder
            from ..runtime_info import usable_cores

            self._pool = ThreadPoolExecutor(max(1, len(usable_cores())), thread_name_prefix="streampi-node-kernel")
            self._local = threading.local()
            self._post = make_decoder(list(server.spec.outputs), server.spec.config)
        self.table = NodeTable(spec=server.spec, model_sha256=file_sha256(server.model_path),
                               digest=config_digest(server.spec.config), session=server.peers._session,
                               send=self._send, stats=server.stats, mode=self.mode,
                               prepare=self._prepare if self.mode == "tensor" else None)

    # -- sockets ------------------------------------------------------------------------------------
    def open(self, ctx: Any, endpoint: str, curve: Any, max_message_bytes: int) -> str:
        import zmq

        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a node that is gone fails at once
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        sock.setsockopt(zmq.SNDHWM, 1000)
        ivl = int(protocol.NODE_BEAT_S * 1000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)  # libzmq's own liveness: a dead TCP connection is closed
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(protocol.NODE_SILENT_S * 1000))
        if curve is not None:
            curve.apply(sock)
        sock.bind(endpoint)
        self.sock = sock
        self._now = zmq.Socket.shadow(sock.underlying)
        # the socket's own events: a connection that closed (a node's beat finds out whose at once) and
        # a handshake refused (an unknown CurveZMQ key: that node gets nothing and sends nothing in)
        self._monitor_owner = sock.get_monitor_socket(
            zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self._monitor = zmq.Socket.shadow(self._monitor_owner.underlying)
        return sock.getsockopt(zmq.LAST_ENDPOINT).decode()

    def close(self) -> None:
        if self.mode == "tensor":
            self._pool.shutdown(wait=False, cancel_futures=True)
        monitor = getattr(self, "_monitor", None)
        if monitor is not None and not monitor.closed:
            try:
                self.sock.disable_monitor()
            except Exception:
                pass
            self._monitor_owner.close(linger=0)
        if self.sock is not None and not self.sock.closed:
            try:
                self.server._loop.remove_reader(self._now.getsockopt(__import__("zmq").FD))
            except Exception:
                pass
            self.sock.close()

    def _send(self, identity: bytes, parts: list) -> bool:
        import zmq

        if self.sock is None or self.sock.closed:
            return False
        try:
            self._now.send_multipart([identity, *parts], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:  # EHOSTUNREACH (gone) or EAGAIN (not reading): lost either way
            self.server.stats["node_send_failed"] += 1
            return False
        self._schedule_read()  # a send can consume the descriptor's edge
        return True

    def _schedule_read(self) -> None:
        if not self._read_scheduled and self.sock is not None and not self.sock.closed:
            self._read_scheduled = True
            self.server._loop.call_soon(self._on_readable)

    async def run(self) -> None:
        """Read the node socket and beat, until cancelled."""
        import asyncio

        import zmq

        loop = self.server._loop
        fd, mon_fd = self._now.getsockopt(zmq.FD), self._monitor.getsockopt(zmq.FD)
        loop.add_reader(fd, self._on_readable)
        loop.add_reader(mon_fd, self._on_monitor)
        self._on_readable()
        try:
            while True:
                await asyncio.sleep(protocol.NODE_BEAT_S / 2)
                self.tick()
                self._on_monitor()  # (its descriptor signals on an edge)
        finally:
            loop.remove_reader(fd)
            loop.remove_reader(mon_fd)

    def _on_monitor(self) -> None:
        import zmq
        from zmq.utils.monitor import parse_monitor_message

        probe = False
        while not self._monitor.closed:
            try:
                event = parse_monitor_message(self._monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            if event["event"] == zmq.EVENT_DISCONNECTED:
                probe = True
            else:
                self.server.stats["node_handshakes_refused"] += 1
                log.warning("a node's handshake on %s failed (%s): an unknown CurveZMQ key, or no CurveZMQ on its side",
                            event["endpoint"].decode(errors="replace"), zmq.Event(event["event"]).name)
        if probe:  # whose connection closed: a beat to each node now (a gone one cannot be routed to)
            self._beat_all(time.monotonic())

    def tick(self) -> None:
        now = time.monotonic()
        self._check_available(now)
        if self._sent_tensors:  # (of batches lost with their node)
            held = {b for n in self.table.nodes.values() for b in n.in_flight}
            self._sent_tensors = {b: m for b, m in self._sent_tensors.items() if b in held}
        for node, held in self.table.expire(now):
            self._lost(node, held, f"silent for {protocol.NODE_SILENT_S:.1f} s")
        self._beat_all(now)

    def _beat_all(self, now: float) -> None:
        beat = protocol.encode_node(protocol.KIND_NODE_BEAT, protocol.NodeBeat())
        for node in list(self.table.nodes.values()):
            if not self._send(node.identity, beat):
                self._lost(node, self.table.lose(node, "its connection is gone", now), "its connection is gone")

    def _check_available(self, now: float) -> None:
        """A server without local workers whose nodes are all gone (or never came) for
        NODE_SILENT_S answers ``unavailable`` at once, as one whose workers all back off does,
        until a node is ready again: no frame waits for ever."""
        server = self.server
        if server.n_workers:
            return
        if any(u.state == "ready" for u in self.table.units):
            self._no_node_since = None
            return
        if self._no_node_since is None:
            self._no_node_since = now
        elif now - self._no_node_since >= protocol.NODE_SILENT_S and not server._unavailable:
            log.warning("no node has been ready for %.0f s (this server has no workers of its own, --workers 0); "
                      "answering frames 'unavailable' until one joins", now - self._no_node_since)
            server._unavailable = True
            for job in server.sched.take_all():
                server._settle(job, error=("unavailable", "no node can run the model now (this server has no "
                                                          "workers of its own); see the server's log"))

    def _on_readable(self) -> None:
        import zmq

        self._read_scheduled = False
        if self.sock is None or self.sock.closed:
            return
        for _ in range(64):
            try:
                parts = self._now.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                self._handle(parts)
            except Exception:  # a bug handling one node message: logged; the node's beats decide its fate
                self.server.stats["failures.node_message"] += 1
                log.exception("handling a node message failed")
        else:
            self._schedule_read()
        self._report_failed_sends()
        self.server._dispatch_ready()

    # -- messages ------------------------------------------------------------------------------------
    def _handle(self, parts: list) -> None:
        identity = bytes(parts[0])
        now = time.monotonic()
        try:
            kind, body, _ = protocol.decode_node(parts[1:], self.server.options.limits.max_message_bytes)
        except ProtocolError as exc:
            self.server.stats["node_bad_messages"] += 1
            log.warning("a bad message from a node: %s", exc)
            return
        server = self.server
        table = self.table
        if kind == protocol.KIND_NODE_HELLO:
            frame = parts[0]
            address = _prop(frame, "Peer-Address")
            key = _prop(frame, "User-Id")
            node, why, lost = table.join(identity, body, now, address, key)
            for unit, jobs in lost:  # its old connection's batches: run again (the node did not fail them)
                server.batch_returned(unit, jobs)
            if node is None:
                log.error("refused node %s at %s: %s", body.name, address or "?", why)
                self._send(identity, protocol.encode_node(protocol.KIND_NODE_REFUSED, protocol.NodeReason(why)))
                return
            self._send(identity, protocol.encode_node(protocol.KIND_NODE_WELCOME, protocol.NodeWelcome(
                node.generation, table.session, body.mode)))
            log.info("node %s joined from %s: generation %d, %d workers x batch %d (%s)", node.name, address or "?",
                     node.generation, body.workers, body.max_batch, body.runtime)
            for unit in node.units:
                server.worker_state(unit, "ready")
            self._credit_changed()
            return
        node = table.nodes.get(identity)
        if kind == protocol.KIND_NODE_BYE:
            if node is not None:
                log.info("node %s left", node.name)
                self._lost(node, table.leave(identity, now), "it left")
            return
        if node is None:  # lost (or this server restarted): it must join again
            if kind == protocol.KIND_NODE_DONE:
                table.stats["node_late_results"] += 1
            self._send(identity, protocol.encode_node(protocol.KIND_NODE_REJOIN, protocol.NodeReason(
                "this server does not know this node (it was lost, or the server restarted): say hello again")))
            return
        if kind == protocol.KIND_NODE_BEAT:
            table.beat(identity, body, now)
            self._sync(node)
            return
        if kind in (protocol.KIND_NODE_DONE, protocol.KIND_NODE_LOST, protocol.KIND_NODE_RETURNED):
            got = table.finish(identity, body.generation, body.id, now)
            if got is None:
                return
            unit, jobs, sent = got
            if kind != protocol.KIND_NODE_DONE:
                self._sent_tensors.pop(body.id, None)
            if kind == protocol.KIND_NODE_DONE:
                self._done(unit, jobs, sent, body)
            elif kind == protocol.KIND_NODE_LOST:
                server.batch_lost(unit, jobs, f"node {unit.node.name}: {body.reason}")  # (out of use until
                # its node's beat says it is ready again)
            else:
                server.batch_returned(unit, jobs)
            return
        table.stats["node_bad_messages"] += 1  # a server-to-node kind sent by a node

    def _sync(self, node: Node) -> None:
        """The server's usable workers follow the states the node's beats tell."""
        for unit in node.units:
            if (unit.state == "ready") != (unit in self.server.usable):
                self.server.worker_state(unit, unit.state)

    # -- tensor mode: the kernel here, the invoke there, the decoder here --------------------------------
    def _prepare(self, unit: NodeUnit, jobs: list, batch_id: int) -> None:
        self._pool.submit(self._kernel, unit, jobs, batch_id)

    def _kernel(self, unit: NodeUnit, jobs: list, batch_id: int) -> None:
        """(A kernel thread.) Each frame into a tensor of its own; then back to the loop."""
        import numpy as np

        from ..errors import FrameError
        from ..preprocess import Preprocessor

        spec = self.server.spec
        pre = getattr(self._local, "pre", None)
        if pre is None:
            c = spec.config
            pre = self._local.pre = Preprocessor(spec.image_shape, spec.input.dtype, scale=spec.input.scale,
                                                 zero_point=spec.input.zero_point, mean=c.mean, std=c.std,
                                                 channels=c.channels, resize=c.resize, pad=c.pad)
        good, tensors, transforms, errors, pre_ms = [], [], {}, {}, []
        for k, job in enumerate(jobs):
            t0 = time.perf_counter()
            msg = job.msg
            try:
                out = np.empty(spec.image_shape, spec.input.dtype)
                transforms[k] = pre(msg.data, msg.fmt, msg.width, msg.height, out=out)[1]
                good.append(k)
                tensors.append(out)
            except FrameError as exc:
                errors[k] = ("bad_frame", str(exc))
            except Exception as exc:
                errors[k] = ("internal", f"preprocessing failed: {type(exc).__name__}: {exc}")
            pre_ms.append((time.perf_counter() - t0) * 1e3)
        try:
            self.server._loop.call_soon_threadsafe(self._kernel_done, unit, jobs, batch_id, good, tensors, transforms,
                                                   errors, pre_ms)
        except RuntimeError:  # the loop is closed: the server has stopped
            pass

    def _kernel_done(self, unit: NodeUnit, jobs: list, batch_id: int, good: list[int], tensors: list,
                     transforms: dict, errors: dict, pre_ms: list[float]) -> None:
        node = unit.node
        if not good:  # nothing to run: answered here
            got = self.table.finish(node.identity, node.generation, batch_id, time.monotonic())
            if got is not None:
                from .workers import Outcome

                self.server.batch_done(unit, jobs, [Outcome(error=errors[k], pre_ms=pre_ms[k]) for k in range(len(jobs))])
            return
        self._sent_tensors[batch_id] = (good, transforms, errors, pre_ms)
        frames = [(jobs[k].msg.stream, jobs[k].msg.seq, "tensor", None, None) for k in good]
        self.table.send_prepared(unit, batch_id, frames, tensors)
        self._report_failed_sends()

    def _tensor_outcomes(self, unit: NodeUnit, jobs: list, done: protocol.NodeDone, meta: tuple) -> list:
        """The node's raw outputs of each frame, decoded here (with the transform of its kernel)."""
        import numpy as np

        from .workers import Outcome

        good, transforms, errors, pre_ms = meta
        outcomes = [Outcome(error=errors.get(k), pre_ms=pre_ms[k]) for k in range(len(jobs))]
        if len(done.outcomes) != len(good):
            for k in good:
                outcomes[k].error = ("internal", f"node {unit.node.name} answered {len(done.outcomes)} outcomes for "
                                                 f"{len(good)} tensors")
            return outcomes
        for k, o in zip(good, done.outcomes):
            out = outcomes[k]
            out.timing = dict(o.timing)
            if o.error is not None:
                out.error = tuple(o.error)  # type: ignore[assignment]
                continue
            t0 = time.perf_counter()
            try:
                arrays = [np.frombuffer(data, "<f4").reshape([1, *shape]) for shape, data in o.payload["tensor_outputs"]]
                out.payload = self._post.frame_result(arrays, 0, transforms[k])
            except Exception as exc:
                out.error = ("internal", f"decoding node {unit.node.name}'s outputs failed: {type(exc).__name__}: {exc}")
            out.timing["post_ms"] = (time.perf_counter() - t0) * 1e3
        return outcomes

    def _done(self, unit: NodeUnit, jobs: list, sent: float, done: protocol.NodeDone) -> None:
        from .workers import Outcome

        round_trip_ms = (time.perf_counter() - sent) * 1e3
        self.table.measured(unit, len(jobs), round_trip_ms)
        meta = self._sent_tensors.pop(done.id, None)
        if meta is not None:
            outcomes = self._tensor_outcomes(unit, jobs, done, meta)
            for out in outcomes:
                out.timing.update(node_ms=done.node_ms, hop_ms=max(0.0, round_trip_ms - done.node_ms))
        elif len(done.outcomes) != len(jobs):
            outcomes = [Outcome(error=("internal", f"node {unit.node.name} answered {len(done.outcomes)} outcomes "
                                                   f"for a batch of {len(jobs)}")) for _ in jobs]
        else:
            outcomes = []
            for o in done.outcomes:
                timing = dict(o.timing)
                timing.update(node_ms=done.node_ms, hop_ms=max(0.0, round_trip_ms - done.node_ms))
                outcomes.append(Outcome(payload=o.payload if o.error is None else None,
                                        error=tuple(o.error) if o.error is not None else None,  # type: ignore[arg-type]
                                        pre_ms=o.pre_ms, timing=timing))
                if o.error is None and o.payload is None:
                    outcomes[-1].error = ("internal", f"node {unit.node.name} sent an outcome with no payload")
        self.server.batch_done(unit, jobs, outcomes)

    def _lost(self, node: Node, held: list[tuple[NodeUnit, list]], why: str) -> None:
        if why != "it left":
            log.warning("node %s (%s, generation %d) is lost: %s; its %d batch(es) run again elsewhere", node.name,
                        node.address or "?", node.generation, why, len(held))
        for unit, jobs in held:
            self.server.batch_lost(unit, jobs, f"node {node.name} is lost ({why})")
        for unit in node.units:
            self.server.usable.discard(unit)
        self._credit_changed()

    def _report_failed_sends(self) -> None:
        while self.table.failed_sends:
            unit, jobs, why = self.table.failed_sends.pop()
            node = unit.node
            self.server.batch_lost(unit, jobs, why)
            if not node.lost:
                self._lost(node, self.table.lose(node, "its connection is gone", time.monotonic()),
                           "its connection is gone")

    def _credit_changed(self) -> None:
        """The workers changed: a ``latest`` producer's window (workers + 1) follows them."""
        server = self.server
        for peer in server.peers:
            window = server._window(peer.policy)
            if window != peer.window:
                peer.window = window
                server.peers.owe_credit(peer)
        server._wake.set()

    def model_changed(self) -> None:
        """A reload: nodes run the old model, so each is refused now (its batches run again here
        or on nodes that join with the new model, without counting as a lost run); a node
        restarted on the new file joins again."""
        server, table, now = self.server, self.table, time.monotonic()
        table.spec, table.model_sha256 = server.spec, file_sha256(server.model_path)
        table.digest = config_digest(server.spec.config)
        if self.mode == "tensor":  # the kernel and the decoder of the new model
            import threading

            from ..decoders import make_decoder

            self._local = threading.local()
            self._post = make_decoder(list(server.spec.outputs), server.spec.config)
        why = (f"the server now serves {server.spec.model_info['name']} (sha256 {table.model_sha256[:12]}): restart "
               f"the node with that model")
        for node in list(table.nodes.values()):
            self._send(node.identity, protocol.encode_node(protocol.KIND_NODE_REFUSED, protocol.NodeReason(why)))
            for unit, jobs in table.leave(node.identity, now):
                server.batch_returned(unit, jobs)
            for unit in node.units:
                server.usable.discard(unit)
            log.warning("node %s refused after the reload: it runs the previous model", node.name)
        self._credit_changed()

    def after_dispatch(self) -> None:
        """Batches whose send failed inside a dispatch: reported in a coming loop turn."""
        if self.table.failed_sends:
            self.server._loop.call_soon(self._report_failed_sends)


def _prop(frame: Any, name: str) -> str:
    try:
        return str(frame.get(name))
    except Exception:
        return ""
