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

Live frames and queue frames together: a waiting live frame goes first, and the workers are
kept for the next one. A ``latest`` stream is a camera: its frames come at a steady rate, so
the scheduler learns each live stream's period from its arrivals and the time a frame takes
on a worker from what the server reports (:meth:`Scheduler.ran`), and starts no ``queue``
batch that would still run when the next live frame is due: the live frame finds its
workers idle rather than waiting for a queue batch, and (``keep_all``: the server's light
path) runs as it would alone, on every core, while queue frames wait for it. What this costs
the queue streams is bounded: it applies only while a live frame's wait would cost more
than the workers it keeps idle (see :data:`LIVE_KEEP_SHARE`).
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
#: Workers are kept for a live stream's next frame only while a queue frame's run is at most
#: this share of the stream's period (each kept worker idles for about half a queue frame per
#: live frame, plus the live frame's lateness): at 10 live frames/s and 4 ms a queue frame that
#: is 2 % of a worker; a queue frame over this share (a slow model) gets the one-at-a-time rule.
LIVE_KEEP_SHARE = 0.1
#: A live frame is expected this long (at least) after its due time before its workers are
#: given queue work again; the stream's own jitter widens it.
LIVE_SLACK_S = 0.001
#: weight of a new measurement in the running estimates (periods, run times)
_EWMA = 0.2


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


class _LiveClock:
    """When a live stream's next frame is due: its last arrival, its period and its jitter."""

    __slots__ = ("last", "period", "jitter")

    def __init__(self, t: float) -> None:
        self.last, self.period, self.jitter = t, 0.0, 0.0

    def arrived(self, t: float) -> None:
        gap = t - self.last
        self.last = t
        if gap <= 0:
            return
        if not self.period or gap > 3 * self.period or gap < self.period / 3:  # first gap, a pause, a burst
            self.period, self.jitter = gap, gap / 4
            return
        self.jitter += _EWMA * (abs(gap - self.period) - self.jitter)
        self.period += _EWMA * (gap - self.period)

    def due(self, now: float) -> float | None:
        """The next arrival expected (None: silent for over two periods, or no period yet)."""
        if not self.period:
            return None
        due = self.last + self.period
        if now > due + self.slack():
            due += self.period  # that one is late or was skipped at the camera: the next
            if now > due + self.slack():
                return None
        return due

    def slack(self) -> float:
        return LIVE_SLACK_S + 2 * self.jitter


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
        #: hold queue frames back for live frames: keep every idle worker (True: the server's
        #: light path runs a lone live frame on all cores) or one (False)
        self.keep_all = False
        self._clocks: dict[str, _LiveClock] = {}  # live streams' arrivals
        self._run_s = {"queue": 0.0, "latest": 0.0}  # a frame's run on a worker, per policy (ran())
        self._run_dev = 0.0  # ... and how far a queue frame's run strays from it
        self._live_until = 0.0  # a live batch runs alone until about then (keep_all)

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
            clock = self._clocks.get(job.stream)
            if clock is None:
                if len(self._clocks) >= self.max_streams:  # forget the stream heard least recently
                    del self._clocks[min(self._clocks, key=lambda n: self._clocks[n].last)]
                self._clocks[job.stream] = _LiveClock(job.t_recv)
            else:
                clock.arrived(job.t_recv)
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

    def next_batch(self, idle: int, now: float, *, hurry: bool = False, busy: int = 0) -> list[Job] | float | None:
        """A batch for one of ``idle`` idle workers (``busy`` others hold a batch), or the
        time at which to ask again (the batch may still fill within max-delay, or the workers
        are kept for a live frame), or ``None`` when nothing waits.

        Frames are spread over idle workers before they are batched onto one: a batch only
        pays off when every worker is busy (then frames gather and batches fill up).
        ``hurry`` (stopping) skips the max-delay wait and keeps no worker.

        Live frames first: a waiting frame of a ``latest`` stream runs before ``queue`` frames
        (in a batch of live frames only) unless the oldest queue frame has waited
        ``QUEUE_PATIENCE_S``; while live frames keep coming, queue frames run one at a time,
        so that a live frame waits for at most one queue frame's run; and none starts that
        would still run when a steady live stream's next frame is due (:meth:`_keep`).
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
                return self._live_batch(self._take(size, only="latest"), now, busy)
        elif live:
            return self._live_batch(self._take(size), now, busy)
        elif self._last_live is not None and now - self._last_live < LIVE_RECENT_S:
            keep = self._keep(idle, now) if not hurry else 1
            if isinstance(keep, float):
                return keep
            size = keep
        return self._take(size)

    def _live_batch(self, batch: list[Job], now: float, busy: int) -> list[Job]:
        """A batch of live frames leaves; a lone one given while every worker idles and no
        other live frame waits runs alone (``keep_all``): queue frames wait for about its run
        (``holding``). Other live frames waiting go to the other workers at once."""
        if (self.keep_all and busy == 0 and len(batch) == 1 and self._run_s["latest"]
                and all(self._streams[n].policy != "latest" for n in self._order)):
            self._live_until = now + self._run_s["latest"]
        return batch

    def holding(self, now: float) -> bool:
        """True while queue frames wait for a live frame that runs alone (``keep_all``)."""
        return now < self._live_until

    def _keep(self, idle: int, now: float) -> int | float:
        """While live streams are active, with queue frames (only) waiting: 1 (the next
        queue batch is one frame, so that a live frame that comes unforeseen waits for one
        frame's run at most), or the time to ask again when that frame would still run when
        the next live frame is due (the worker is kept for it; its arrival asks sooner)."""
        frame_s = self._run_s["queue"]
        if not frame_s:
            return 1  # no run time known yet
        if now < self._live_until:
            return self._live_until  # a live frame runs alone on every core
        due, clock, rate = None, None, 0.0
        for c in self._clocks.values():
            d = c.due(now)
            if d is not None:
                rate += 1.0 / c.period
                if due is None or d < due:
                    due, clock = d, c
        if due is None or clock is None or frame_s * rate > LIVE_KEEP_SHARE:
            return 1  # no steady live stream, or keeping workers for it would cost too much
        if not self.keep_all and idle > 1:
            return 1  # another idle worker stays free for the live frame
        if now + frame_s + 2 * self._run_dev <= due - clock.jitter:
            return 1  # it ends before the live frame is due
        return due + clock.slack()

    def ran(self, jobs: list[Job], seconds: float) -> None:
        """A batch of ``jobs`` ran on a worker in ``seconds`` (handed over to answered): the
        run times that decide whether a queue frame ends before a live frame is due and how
        long a live frame holds the workers (running means; for queue frames, their spread)."""
        if not jobs or seconds <= 0:
            return
        policy = "latest" if all(self.policy_of(j.stream) == "latest" for j in jobs) else "queue"
        per = seconds / len(jobs)
        old = self._run_s[policy]
        self._run_s[policy] = per if not old else old + _EWMA * (per - old)
        if policy == "queue" and old:
            self._run_dev += _EWMA * (abs(per - old) - self._run_dev)

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
