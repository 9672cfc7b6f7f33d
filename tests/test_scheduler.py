"""The scheduler alone: arrival sequences in, batches and answers out (no sockets, no clock)."""

from __future__ import annotations

import pytest

from streampi.serving.scheduler import Job, Scheduler


def run(sched: Scheduler, script: list[tuple]) -> list:
    """Play ``script`` against ``sched``; return what each step produced, compactly:

    ``("offer", "a1", t)`` -> ``"admitted"``, ``"full"`` or ``"refused"``, plus ``"x:code"`` for
    every frame answered on the spot; ``("next", idle, now)`` -> a list of frame names, a
    deadline (float) or ``None``; ``("rerun", "a1")`` -> ``None``; ``("all",)`` -> names.
    Frames are named stream + seq: ``"a1"`` is stream ``a``, seq 1."""
    jobs: dict[str, Job] = {}
    out = []
    for step in script:
        if step[0] == "offer":
            name, t = step[1], step[2]
            force = len(step) > 3 and step[3] == "force"
            job = jobs[name] = Job(name[0], int(name[1:]), t_recv=t)
            offer = sched.offer(job, force=force)
            word = "admitted" if offer.admitted else "full" if offer.full else "refused"
            out.append([word, *[f"{j.stream}{j.seq}:{code}" for j, code, _ in offer.answers]])
        elif step[0] == "next":
            got = sched.next_batch(step[1], step[2], hurry=len(step) > 3)
            out.append([f"{j.stream}{j.seq}" for j in got] if isinstance(got, list) else got)
        elif step[0] == "rerun":
            sched.rerun(jobs[step[1]])
            out.append(None)
        elif step[0] == "all":
            out.append(sorted(f"{j.stream}{j.seq}" for j in sched.take_all()))
    return out


CASES = {
    "latest replaces the waiting frame of its stream": (
        dict(policy="latest"),
        [("offer", "a1", 0.0), ("offer", "a2", 0.1), ("offer", "b1", 0.1), ("next", 1, 0.2), ("next", 1, 0.2)],
        [["admitted"], ["admitted", "a1:dropped"], ["admitted"], ["a2", "b1"], None],
    ),
    "queue keeps every frame in order, up to its size": (
        dict(policy="queue", queue_size=2, max_batch=1),
        [("offer", "a1", 0), ("offer", "a2", 0), ("offer", "a3", 0), ("next", 1, 0), ("offer", "a3", 0),
         ("next", 1, 0), ("next", 1, 0), ("next", 1, 0)],
        [["admitted"], ["admitted"], ["full"], ["a1"], ["admitted"], ["a2"], ["a3"], None],
    ),
    "a full queue stream takes a frame when forced (stopping)": (
        dict(policy="queue", queue_size=1),
        [("offer", "a1", 0), ("offer", "a2", 0, "force"), ("next", 1, 0)],
        [["admitted"], ["admitted"], ["a1", "a2"]],
    ),
    "per-stream policies; a live frame goes first, alone, and queue frames run one at a time after it": (
        dict(policy="latest", stream_policies={"q": "queue"}, max_batch=8),
        [("offer", "q1", 0), ("offer", "q2", 0), ("offer", "l1", 0), ("offer", "l2", 0), ("next", 1, 0),
         ("next", 1, 0.5), ("next", 1, 0.6), ("offer", "q3", 2.0), ("offer", "q4", 2.0), ("next", 1, 2.0)],
        [["admitted"], ["admitted"], ["admitted"], ["admitted", "l1:dropped"], ["l2"], ["q1"], ["q2"],
         ["admitted"], ["admitted"], ["q3", "q4"]],
    ),
    "a queue frame that waited long enough goes before live frames": (
        dict(policy="latest", stream_policies={"q": "queue"}, max_batch=8),
        [("offer", "q1", 0), ("offer", "l1", 1.5), ("next", 1, 1.5), ("next", 1, 1.6)],
        [["admitted"], ["admitted"], ["q1", "l1"], None],
    ),
    "max-streams refuses a new stream, not a known one": (
        dict(policy="queue", max_streams=2),
        [("offer", "a1", 0), ("offer", "b1", 0), ("offer", "c1", 0), ("offer", "a2", 0), ("next", 1, 0),
         ("offer", "c2", 0)],
        [["admitted"], ["admitted"], ["refused", "c1:overloaded"], ["admitted"], ["a1", "b1", "a2"], ["admitted"]],
    ),
    "round robin over streams within a batch and across batches": (
        dict(policy="queue", max_batch=3),
        [("offer", "a1", 0), ("offer", "a2", 0), ("offer", "a3", 0), ("offer", "a4", 0), ("offer", "b1", 0),
         ("offer", "c1", 0), ("offer", "c2", 0), ("next", 1, 0), ("next", 1, 0), ("next", 1, 0)],
        [["admitted"]] * 7 + [["a1", "b1", "c1"], ["a2", "c2", "a3"], ["a4"]],
    ),
    "frames are spread over idle workers before batching": (
        dict(policy="queue", max_batch=4),
        [("offer", "a1", 0), ("offer", "a2", 0), ("offer", "b1", 0), ("next", 3, 0), ("next", 2, 0),
         ("next", 1, 0)],
        [["admitted"]] * 3 + [["a1"], ["b1"], ["a2"]],
    ),
    "max-batch bounds a batch": (
        dict(policy="queue", max_batch=2),
        [("offer", "a1", 0), ("offer", "a2", 0), ("offer", "a3", 0), ("next", 1, 0), ("next", 1, 0)],
        [["admitted"]] * 3 + [["a1", "a2"], ["a3"]],
    ),
    "a model that cannot batch runs one frame at a time": (
        dict(policy="queue", max_batch=4, batchable=False),
        [("offer", "a1", 0), ("offer", "b1", 0), ("next", 1, 0), ("next", 1, 0)],
        [["admitted"]] * 2 + [["a1"], ["b1"]],
    ),
    "max-delay waits from the oldest frame's arrival, then runs what it has": (
        dict(policy="queue", max_batch=3, max_delay=0.010),
        [("offer", "a1", 1.000), ("next", 1, 1.002), ("offer", "b1", 1.004), ("next", 1, 1.005),
         ("next", 1, 1.010)],
        [["admitted"], 1.010, ["admitted"], 1.010, ["a1", "b1"]],
    ),
    "max-delay stops waiting once the batch is full": (
        dict(policy="queue", max_batch=2, max_delay=0.010),
        [("offer", "a1", 1.000), ("offer", "a2", 1.001), ("next", 1, 1.002)],
        [["admitted"], ["admitted"], ["a1", "a2"]],
    ),
    "max-delay does not wait for frames that cannot come (every stream known and latest)": (
        dict(policy="latest", max_batch=4, max_delay=0.010, max_streams=2),
        [("offer", "a1", 1.000), ("offer", "b1", 1.000), ("next", 1, 1.001)],
        [["admitted"], ["admitted"], ["a1", "b1"]],
    ),
    "stopping (hurry) skips the max-delay wait": (
        dict(policy="queue", max_batch=4, max_delay=1.0),
        [("offer", "a1", 1.0), ("next", 1, 1.0, "hurry")],
        [["admitted"], ["a1"]],
    ),
    "a frame to run again goes first and alone": (
        dict(policy="queue", max_batch=4),
        [("offer", "a1", 0), ("offer", "a2", 0), ("offer", "b1", 0), ("next", 1, 0), ("rerun", "a1"),
         ("offer", "b2", 0), ("next", 1, 0), ("next", 1, 0)],
        [["admitted"]] * 3 + [["a1", "b1", "a2"], None, ["admitted"], ["a1"], ["b2"]],
    ),
    "take_all empties everything, re-runs included": (
        dict(policy="queue"),
        [("offer", "a1", 0), ("offer", "b1", 0), ("next", 1, 0), ("rerun", "a1"), ("offer", "b2", 0),
         ("all",), ("next", 1, 0)],
        [["admitted"], ["admitted"], ["a1", "b1"], None, ["admitted"], ["a1", "b2"], None],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_scheduler_table(name):
    options, script, expected = CASES[name]
    sched = Scheduler(**options)
    assert run(sched, script) == expected
    assert sched.pending == sum(sched.depth(s) for s in "abcdlq") + len(sched._reruns)


def test_pending_counts_every_waiting_frame():
    sched = Scheduler(policy="queue", max_batch=2)
    for i in range(5):
        sched.offer(Job("a", i))
    sched.offer(Job("b", 0))
    assert sched.pending == 6
    assert len(sched.next_batch(1, 0.0)) == 2
    assert sched.pending == 4
    assert sched.depth("a") == 4 and sched.depth("b") == 0  # b's one frame went with a's first
    offer = sched.offer(Job("a", 5))
    assert offer.admitted and not offer.full  # queue_size 32: still room


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="policy must be one of"):
        Scheduler(policy="newest")


# -- keeping workers for a steady live stream's next frame ------------------------------------------
def steady_live(sched: Scheduler, period: float = 0.1, frames: int = 12, queue_run: float = 0.010,
                live_run: float = 0.004) -> float:
    """A live stream ``l`` at a steady ``period``, each frame run at once, and queue frames known
    to run ``queue_run`` each; returns the last live frame's arrival."""
    t = 0.0
    for i in range(frames):
        t = i * period
        sched.offer(Job("l", i, t_recv=t))
        batch = sched.next_batch(2, t)
        assert [j.stream for j in batch] == ["l"]
        sched.ran(batch, live_run)
    sched.ran([Job("q", 999)], queue_run)
    return t


def test_a_queue_frame_that_would_run_into_a_live_frame_waits_for_it():
    sched = Scheduler(policy="latest", stream_policies={"q": "queue"})
    last = steady_live(sched)
    for i in range(3):
        sched.offer(Job("q", i, t_recv=last + 0.01))
    due = last + 0.1
    assert [j.seq for j in sched.next_batch(1, last + 0.05)] == [0]  # ends long before the live frame
    wait = sched.next_batch(1, due - 0.005)  # 10 ms of run would end 5 ms after it is due: kept
    assert isinstance(wait, float) and due < wait < due + 0.01
    assert [j.seq for j in sched.next_batch(2, due - 0.005)] == [1]  # another idle worker stays free for it
    sched.offer(Job("l", 100, t_recv=due + 0.0005))
    assert [j.stream for j in sched.next_batch(1, due + 0.0005)] == ["l"]  # and it finds one
    assert sched.pending == 1


def test_keep_all_holds_queue_frames_while_a_lone_live_frame_runs():
    sched = Scheduler(policy="latest", stream_policies={"q": "queue"})
    sched.keep_all = True
    last = steady_live(sched)
    sched.offer(Job("q", 0, t_recv=last + 0.01))
    due = last + 0.1
    assert isinstance(sched.next_batch(2, due - 0.005), float)  # every worker kept, not one
    sched.offer(Job("l", 100, t_recv=due))
    assert [j.stream for j in sched.next_batch(2, due, busy=0)] == ["l"]
    assert sched.holding(due + 0.001)
    assert sched.next_batch(1, due + 0.001) == pytest.approx(due + 0.004)  # its run: 4 ms
    assert not sched.holding(due + 0.0041)
    assert [j.seq for j in sched.next_batch(2, due + 0.0041)] == [0]
    # a live frame given while another worker is busy does not run alone: nothing is held for it
    sched.offer(Job("q", 1, t_recv=due + 0.01))
    sched.offer(Job("l", 101, t_recv=due + 0.1))
    assert [j.stream for j in sched.next_batch(1, due + 0.1, busy=1)] == ["l"]
    assert not sched.holding(due + 0.1001)


@pytest.mark.parametrize("case", ["slow queue frames", "live stream gone quiet", "stopping", "unknown run time"])
def test_workers_are_not_kept_when_it_would_cost_too_much_or_cannot_help(case):
    sched = Scheduler(policy="latest", stream_policies={"q": "queue"})
    sched.keep_all = True
    last = steady_live(sched, queue_run=0.02 if case == "slow queue frames" else 0.010)  # 20 % of the period
    if case == "unknown run time":
        sched = Scheduler(policy="latest", stream_policies={"q": "queue"})
        sched.keep_all = True
        for i in range(12):
            sched.offer(Job("l", i, t_recv=i * 0.1))
            sched.next_batch(2, i * 0.1)
    sched.offer(Job("q", 0, t_recv=last + 0.01))
    sched.offer(Job("q", 1, t_recv=last + 0.01))
    now = last + 0.35 if case == "live stream gone quiet" else last + 0.095
    got = sched.next_batch(1, now, hurry=case == "stopping")
    assert [j.seq for j in got] == [0]  # one queue frame: the one-at-a-time rule while live frames came


def test_a_live_frame_is_not_held_alone_while_other_live_frames_wait():
    """Live streams only (a v1 camera flood under ``latest``): nothing is held for a lone live
    frame while other live frames wait; they go to the other idle workers at once."""
    sched = Scheduler(policy="latest")
    sched.keep_all = True
    steady_live(sched)
    sched.offer(Job("a", 0, t_recv=1.25))
    sched.offer(Job("b", 0, t_recv=1.25))
    first = sched.next_batch(2, 1.25, busy=0)
    assert len(first) == 1 and not sched.holding(1.2501)
    assert len(sched.next_batch(1, 1.2501, busy=1)) == 1 and sched.pending == 0
