"""What ``streampi ctl`` asks a server, and its health: one place, read by every prober.

:func:`status` is what ``ctl workers``/``health``/``stats`` show, what the Prometheus
endpoint exports (``streampi_healthy``) and what feeds the systemd watchdog. It is read from
the server's state now, never cached, so that health is never a stale "ok". A worker is
unhealthy when it is not ready (starting, in back-off), when its runner process is stopped
or dead, or when it has held its batch for longer than ``--invoke-timeout`` since the server
handed it over (a runner past the timeout is killed by its worker: a batch held longer means
the worker itself is stuck).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from .. import protocol
from ..ctl import COMMANDS

if TYPE_CHECKING:  # (the server imports this module)
    from .server import Server
    from .workers import WorkerSlot

def process_state(slot: WorkerSlot) -> str:
    """``running``, ``stopped`` (SIGSTOP, a debugger), ``dead``: read now, never cached."""
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


def status(server: Server) -> dict[str, Any]:
    """The workers, the counters and health of ``server``."""
    now = time.monotonic()
    workers, problems = [], []
    for slot in server.slots:
        handed = server.in_hand.get(slot)
        held_s = now - handed.since if handed is not None else None
        process = process_state(slot)
        workers.append({"index": slot.index, "pid": slot.pid, "generation": slot.generation, "state": slot.state,
                        "cores": slot.cores, "busy": handed is not None,
                        "holding": [[j.stream, j.seq] for j in handed.jobs] if handed is not None else [],
                        "held_s": round(held_s, 3) if held_s is not None else None, "wide": slot.invoking_wide,
                        "frames_done": slot.frames_done, "restarts": slot.restarts, "busy_s": round(slot.busy_s, 3),
                        "light_frames": slot.light_frames, "process": process})
        if slot not in server.usable:
            problems.append(f"worker {slot.index} is {slot.state}")
        elif process != "running":
            problems.append(f"worker {slot.index} (pid {slot.pid}) is {process}")
        elif held_s is not None and held_s > server.options.invoke_timeout:
            problems.append(f"worker {slot.index} has held a batch for {held_s:.1f} s")
    nodes: list[dict[str, Any]] = []
    if server.nodes is not None:  # remote nodes (serving/nodes.py): the joined ones and the missing ones
        nodes = server.nodes.table.describe(now)
        for row in nodes:
            if row["state"] == "missing":
                problems.append(f"node {row['node']} ({row['address'] or '?'}, generation {row['generation']}) is "
                                f"missing: {row['why']}, {row['missing_s']:.1f} s ago")
        for unit in server.nodes.table.units:
            handed = server.in_hand.get(unit)
            held_s = now - handed.since if handed is not None else None
            if held_s is not None and held_s > server.options.invoke_timeout + 3:
                problems.append(f"node worker {unit.label} has held a batch for {held_s:.1f} s")
    if server.stopping:
        problems.append("stopping")
    peers = server.peers
    labels = getattr(server.config, "labels", None)
    return {"healthy": not problems, "problems": problems, "model": server.model_info,
            "labels": list(labels) if labels else None,  # what the model can find (an MQTT bridge's entities)
            "isolation": server.options.isolation, "workers": workers, "nodes": nodes, "pending": server.sched.pending,
            "frame_bytes_held": server.held_bytes, "credit_producers": len(peers), "credit_in_flight": peers.in_flight,
            "shm_rings": peers.rings, "shm_ring_bytes": peers.ring_bytes, "stats": dict(server.stats),
            "uptime_s": round(time.time() - server.started_at, 3)}


#: a request is a command and a model path: anything longer is not one
MAX_REQUEST_BYTES = 8192


async def answer(server: Server, raw: bytes) -> dict[str, Any]:
    """The reply to one request: a msgpack map ``{"cmd": ...}`` (and its arguments)."""
    if len(raw) > MAX_REQUEST_BYTES:  # what a decoder may build is bounded by the bytes it is given
        return {"ok": False, "error": f"bad request (more than {MAX_REQUEST_BYTES} bytes)"}
    try:
        req = msgspec.msgpack.decode(raw)
    except (msgspec.MsgspecError, RecursionError) as exc:
        return {"ok": False, "error": f"bad request: not msgpack ({exc})"}
    try:
        cmd = req.get("cmd") if isinstance(req, dict) else None
        if cmd == "reload":
            target = req.get("model")
            if target is not None and not isinstance(target, str):
                return {"ok": False, "error": "reload takes a model path (a string)"}
            return await server.reload(target)
        if cmd not in COMMANDS:
            return {"ok": False, "error": f"unknown command; expected one of: {', '.join(COMMANDS)}"}
        now = status(server)
        if cmd == "workers":
            return {"ok": True, "workers": now["workers"], "nodes": now["nodes"]}
        if cmd == "health":
            return {"ok": True, "healthy": now["healthy"], "problems": now["problems"], "workers": now["workers"],
                    "nodes": now["nodes"]}
        return {"ok": True, **now}
    except Exception as exc:
        return {"ok": False, "error": f"bad request ({type(exc).__name__})"}


async def serve(server: Server, sock: Any) -> None:
    """Answer ``streampi ctl`` on the REP socket ``sock``, one request at a time, until cancelled."""
    while True:
        raw = await sock.recv()
        await sock.send(protocol.pack(await answer(server, raw)))
