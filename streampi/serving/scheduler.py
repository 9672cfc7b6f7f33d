"""Which frame runs when: per-stream policies, round robin, micro-batches, re-runs.

This is the pure core of the server (the "sans-I/O" shape of h11): no sockets, threads,
clocks or asyncio. The server feeds it arrivals, asks it for batches and tells it about
frames to run again; it answers with decisions, and the server carries them out. Every
fate of a frame is therefore a table-driven unit test (``tests/test_scheduler.py``).

Fates the scheduler decides (the server turns them into result messages):

* ``dropped``: a ``latest`` stream's waiting frame was replaced by a newer one;
* ``overloaded``: a new stream arrived while ``max_streams`` streams had frames waiting;
* a ``queue`` stream at capacity is *full*: the frame is not admitted (the server answers
  a v1 frame ``overloaded``; v1.1 frames are offered with ``force``: their producer's
  credit already bounds them).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

POLICIES = ("latest", "queue")
#: A waiting ``latest`` (live) frame runs before ``queue`` frames, unless the oldest queue
#: frame has waited this long (so that live streams cannot starve a queue stream for ever).
QUEUE_PATIENCE_S = 1.0
#: While a live frame arrived this recently, queue frames run one at a time, so that a live
#: frame never waits behind a whole batch of queue frames.
LIVE_RECENT_S = 1.0


@dataclass(eq=False)
class Job:
    """A frame the server accepted, from receipt to its one result."""

    stream: str
    seq: int
    msg: Any = None  # the decoded FrameMessage (pixels still in ZeroMQ's buffer)
    keep: Any = None  # the received ZeroMQ frames that own those pixels
    t_recv: float = 0.0
    t_batch: float = 0.0
    settled: bool = False
    runs_lost: int = 0  # runs that ended with the worker dying under it
    nbytes: int = 0  # bytes of the received message the server holds for it
    peer: Any = None  # the protocol v1.1 producer that sent it (its credit returns with the answer)
    ring: Any = None  # the shared-memory ring whose slot holds its pixels (released with the answer)
    reply: Any = None  # a door's callback (Server.submit), given the result as well as the subscribers


@dataclass
class Offer:
    """What became of one arrival."""

    admitted: bool
    full: bool = False  # queue stream at capacity (not admitted, no answer decided here)
    answers: list[tuple[Job, str, str]] = field(default_factory=list)  # (job, error code, message) to send now


class _Stream:
    __slots__ = ("name", "policy", "capacity", "pending")

    def __init__(self, name: str, policy: str, capacity: int) -> None:
        self.name, self.policy = name, policy
        self.capacity = 1 if policy == "latest" else capacity
        self.pending: collections.deque[Job] = collections.deque()


class Scheduler:
    """Frames waiting for a worker, and the batches they form.

    Parameters mirror ``streampi serve``: ``policy`` and ``stream_policies`` (``latest``
    or ``queue``), ``queue_size`` (frames a ``queue`` stream may hold), ``max_streams``
    (streams with frames waiting), ``max_batch``, ``max_delay`` (seconds the oldest
    frame may wait for a batch to fill) and ``batchable`` (False for models that run
    one frame at a time).
    """

    def __init__(self, *, policy: str = "latest", stream_policies: dict[str, str] | None = None,
                 queue_size: int = 32, max_streams: int = 256, max_batch: int = 4, max_delay: float = 0.0,
                 batchable: bool = True) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.stream_policies = dict(stream_policies or {})
        self.queue_size, self.max_streams = int(queue_size), int(max_streams)
        self.max_batch, self.max_delay = int(max_batch), float(max_delay)
        self.batchable = bool(batchable)
        self._streams: dict[str, _Stream] = {}
        self._order: collections.deque[str] = collections.deque()  # streams with frames, round robin
        self._reruns: collections.deque[Job] = collections.deque()  # run again alone, before new work
        self.pending = 0
        self._last_live: float | None = None  # t_recv of the newest frame of a latest stream

    def policy_of(self, stream: str) -> str:
        return self.stream_policies.get(stream, self.policy)

    # -- arrivals --------------------------------------------------------------------------
    def offer(self, job: Job, *, force: bool = False) -> Offer:
        """Admit ``job`` or say why not. ``force`` admits into a full ``queue`` stream
        (used while stopping: the frame is already off the socket and must be answered)."""
        state = self._streams.get(job.stream)
        if state is None:
            if len(self._streams) >= self.max_streams:
                return Offer(False, answers=[(job, "overloaded", f"more than {self.max_streams} streams have "
                                                                  f"frames waiting; try again later")])
            state = self._streams[job.stream] = _Stream(job.stream, self.policy_of(job.stream), self.queue_size)
        answers: list[tuple[Job, str, str]] = []
        was_waiting = bool(state.pending)
        if state.policy == "latest":
            self._last_live = job.t_recv if self._last_live is None else max(self._last_live, job.t_recv)
            if state.pending:
                old = state.pending.popleft()
                self.pending -= 1
                answers.append((old, "dropped", f"replaced by a newer frame of stream {job.stream} (seq {job.seq})"))
        elif len(state.pending) >= state.capacity and not force:
            return Offer(False, full=True)
        state.pending.append(job)
        self.pending += 1
        if not was_waiting:
            self._order.append(job.stream)
        return Offer(True, answers=answers)

    def __contains__(self, job: Job) -> bool:
        """True while ``job`` waits here (to be run, or run again)."""
        state = self._streams.get(job.stream)
        return (state is not None and any(j is job for j in state.pending)) or any(j is job for j in self._reruns)

    def depth(self, stream: str) -> int:
        """Frames of ``stream`` waiting."""
        state = self._streams.get(stream)
        return len(state.pending) if state is not None else 0

    def rerun(self, job: Job) -> None:
        """Run ``job`` again, alone and before anything new (its worker died under it)."""
        self._reruns.append(job)
        self.pending += 1

    # -- batches ---------------------------------------------------------------------------
    def _cap(self) -> int:
        """How large the next batch could get by waiting (a latest stream holds one frame)."""
        if len(self._streams) < self.max_streams:
            return self.max_batch
        return min(self.max_batch, sum(s.capacity for s in self._streams.values()))

    def _oldest(self) -> float:
        return min(s.pending[0].t_recv for s in self._streams.values() if s.pending)

    def next_batch(self, idle: int, now: float, *, hurry: bool = False) -> list[Job] | float | None:
        """A batch for one of ``idle`` idle workers, or the time at which to ask again
        (the batch may still fill within max-delay), or ``None`` when nothing waits.

        Frames are spread over idle workers before they are batched onto one: a batch only
        pays off when every worker is busy (then frames gather and batches fill up).
        ``hurry`` (stopping) skips the max-delay wait.

        Live frames first: a waiting frame of a ``latest`` stream runs before ``queue`` frames
        (in a batch of live frames only) unless the oldest queue frame has waited
        ``QUEUE_PATIENCE_S``; and while live frames keep coming, queue frames run one at a
        time, so that a live frame waits for at most one queue frame's invoke.
        """
        if self._reruns:
            self.pending -= 1
            return [self._reruns.popleft()]
        if not self._order:
            return None
        if not hurry and self.max_delay > 0 and self.pending < min(self.max_batch, self._cap()):
            deadline = self._oldest() + self.max_delay
            if deadline > now:
                return deadline
        share = -(-self.pending // max(1, idle))
        size = min(self.max_batch, share) if self.batchable else 1
        live = [n for n in self._order if self._streams[n].policy == "latest"]
        if live and len(live) < len(self._order):  # live and queue frames both wait
            oldest_queue = min(self._streams[n].pending[0].t_recv for n in self._order
                               if self._streams[n].policy != "latest")
            if now - oldest_queue < QUEUE_PATIENCE_S:
                return self._take(size, only="latest")
        elif not live and self._last_live is not None and now - self._last_live < LIVE_RECENT_S:
            size = 1
        return self._take(size)

    def _take(self, n: int, only: str | None = None) -> list[Job]:
        batch: list[Job] = []
        passed: list[str] = []  # streams of another policy: they keep their turn
        while len(batch) < n and self._order:
            name = self._order.popleft()
            state = self._streams[name]
            if only is not None and state.policy != only:
                passed.append(name)
                continue
            batch.append(state.pending.popleft())
            if state.pending:
                self._order.append(name)
            else:
                del self._streams[name]
        self._order.extendleft(reversed(passed))
        self.pending -= len(batch)
        return batch

    def take_all(self) -> list[Job]:
        """Every waiting frame (to answer them at once: shutdown, no worker available)."""
        jobs = list(self._reruns)
        self._reruns.clear()
        for name in self._order:
            jobs.extend(self._streams[name].pending)
        self._streams.clear()
        self._order.clear()
        self.pending = 0
        return jobs
