"""`streampi bench`: a tiny bounded run end to end, and the pieces it measures with."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from streampi.errors import FrameError
from streampi.sources import rgb_to_i420
from streampi.tools.loadtest import LatencyHistogram, RunResult, schedule


def test_latency_histogram_keeps_milliseconds_and_clamps_to_its_range():
    """Values go in and come out in ms, kept in whole µs from 1 µs to an hour: what is below or
    above is counted at the bound, not lost."""
    h = LatencyHistogram()
    assert all(math.isnan(v) for v in h.summary().values())
    for ms in (0.0002, 1.0, 2.0, 3.0, 2 * 3_600_000.0):
        h.add(ms)
    assert h.n == 5
    assert h.min == 0.001  # 0.2 µs counts as 1 µs
    assert h.percentile(50) == pytest.approx(2.0, rel=1e-3) and h.percentile(80) == pytest.approx(3.0, rel=1e-3)
    assert h.max == pytest.approx(3_600_000.0, rel=1e-3)  # two hours count as one
    xs, ys = h.cdf()
    assert [round(x, 2) for x in xs[:4]] == [0.0, 1.0, 2.0, 3.0] and ys == [0.2, 0.4, 0.6, 0.8, 1.0]


def test_run_result_measures_the_window_only_and_counts_everything():
    """A run of 2 s measured from t=100: results whose send time (``ts``) falls in [100, 102)
    are measured, the others (a warm-up frame, one sent as the window closed) only counted."""
    res = RunResult(offered_fps=0, seconds=2.0)
    res.window = (100.0, 102.0)
    timing = {"pre_ms": 0.5, "infer_ms": 1.0, "post_ms": 0.1, "total_ms": 2.0}
    for ts, arrived in ((99.5, 100.01), (100.0, 100.010), (101.0, 101.020), (101.99, 102.020), (102.0, 102.01)):
        res.record({"ok": True, "seq": 0, "ts": ts, "batch": 1, "timing": timing}, arrived=arrived)
    res.record({"ok": False, "seq": 9, "error": {"code": "dropped", "message": "x"}}, arrived=101.5)
    res.sent = 7  # one of them never answered
    d = res.as_dict()
    assert (d["ok"], d["ok_in_window"], d["ok_arrived_in_window"], d["answered"], d["unanswered"]) == (5, 3, 3, 6, 1)
    assert d["achieved_fps"] == 1.5  # 3 frames measured in 2 s
    assert res.hist.n == 3 and d["latency_ms"]["max"] == pytest.approx(30.0, rel=1e-3)
    assert d["latency_ms"]["p50"] == pytest.approx(20.0, rel=1e-3)
    no_window = RunResult(offered_fps=0, seconds=4.0)
    for seq in range(6):
        no_window.record({"ok": True, "seq": seq, "ts": 5.0, "timing": timing}, arrived=5.01)
    assert no_window.achieved_fps == 1.5  # without a window: every ok frame over the run's seconds


def test_stage_breakdown_counts_invoke_per_frame():
    """Every frame of a batch carries the batch's one invoke time: per frame it is / batch."""
    res = RunResult(offered_fps=10, seconds=1)
    for seq in range(4):  # one batch of 4 frames, invoked in 8 ms
        res.record({"ok": True, "seq": seq, "ts": 100.0, "batch": 4,
                    "timing": {"queue_ms": 1.0, "pre_ms": 0.5, "infer_ms": 8.0, "post_ms": 0.1, "total_ms": 10.0}},
                   arrived=100.012)
    res.record({"ok": True, "seq": 4, "ts": 100.0, "batch": 1,
                "timing": {"pre_ms": 0.5, "infer_ms": 3.0, "post_ms": 0.1, "total_ms": 4.0}}, arrived=100.005)
    res.record({"ok": False, "seq": 5, "error": {"code": "dropped", "message": "x"}}, arrived=100.1)
    res.record({"ok": False, "seq": 6, "error": {"code": "bad_frame", "message": "x"}}, arrived=100.1)
    assert res.stages["infer_ms"] == [2.0, 2.0, 2.0, 2.0, 3.0]
    assert res.stages["infer_batch_ms"] == [8.0] * 4 + [3.0]
    assert res.stages["transport_ms"] == pytest.approx([2.0] * 4 + [1.0])
    assert res.batches == [4, 4, 4, 4, 1]
    assert (res.ok, res.dropped, res.errors, res.answered) == (5, 1, {"bad_frame": 1}, 7)


def test_open_loop_schedules():
    fixed = schedule(100, 2.0, 0, "fixed", 1)
    assert len(fixed) == 200 and np.allclose(np.diff(fixed), 0.01)
    poisson = schedule(200, 20.0, 0, "poisson", 1)
    assert abs(len(poisson) / 20.0 - 200) < 10  # the mean rate holds
    gaps = np.diff(poisson)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)  # exponential gaps
    assert len(schedule(100, 10.0, 37, "fixed", 1)) == 37


def test_synthetic_i420_is_valid():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0] = 255
    yuv = rgb_to_i420(rgb)
    assert yuv.shape == (48, 48)
    from streampi.preprocess import preprocess
    out, _ = preprocess(yuv, "i420", (8, 8, 3), np.uint8, scale=1 / 255)
    assert out[..., 0].min() > 230 and out[..., 1].max() < 30  # red stays red


def _bench(out_dir, *extra):
    out = out_dir / "bench.json"
    cmd = [sys.executable, "-m", "streampi", "bench", "--model", "shapes_int8", "--seconds", "1.5", "--rate", "60",
           "--producers", "1", "--streams", "2", "--size", "160x120", "--no-progress", "--json", str(out), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text())


def test_tiny_bounded_run_adds_up(tmp_path):
    """60 frames/s for 1.5 s (no warm-up): 90 frames, each answered; all of them ok, so the run
    served exactly 60 frames/s, whatever this machine's speed."""
    rep = _bench(tmp_path, "--ceiling", "--baseline", "--png", str(tmp_path / "b.png"))
    run = rep["run"]
    assert run["sent"] == run["answered"] == 90 and run["unanswered"] == 0
    assert run["sent"] == run["ok"] + run["dropped"] + sum(run["errors"].values())
    assert run["ok"] == run["ok_in_window"] == 90 and run["achieved_fps"] == pytest.approx(60.0)
    lat = run["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert set(run["stages_ms"]) >= {"queue_ms", "pre_ms", "infer_ms", "post_ms", "transport_ms"}
    pc = rep["pipeline_ceiling"]
    assert pc["kernel_p50_ms"] > 0 and pc["invoke_p50_ms"] > 0 and pc["frame"] == "160x120 rgb"
    for c in (rep["ceiling"], pc):  # measured before and after the runs: the report never takes the weaker
        assert min(c["fps_before"], c["fps_after"]) > 0 and c["fps"] >= c["fps_before"] and c["fps"] >= c["fps_after"]
    # served against each ceiling: the 60 frames/s this run served by construction
    assert rep["efficiency"] == pytest.approx(60.0 / rep["ceiling"]["fps"])
    assert rep["efficiency_pipeline"] == pytest.approx(60.0 / pc["fps"])
    assert rep["baseline"]["answered"] == 90
    assert rep["vs_baseline"]["throughput_ratio"] > 0 and rep["vs_baseline"]["p99_ratio"] > 0
    assert rep["config"]["model"] == "shapes_int8" and rep["config"]["policy"] == "queue" and rep["server"]["workers"] >= 1
    assert rep["machine"]["cores"] >= 1 and run["server_rss_mib"] > 0
    assert run["cpu_ms_per_frame"]["server"] > 0 and run["cpu_ms_per_frame"]["producers"] > 0
    lateness = run["send_lateness_ms"]  # merged from the producer process's histogram
    assert lateness is not None and 0 <= lateness["p50"] <= lateness["max"]
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_short_sweep_reports_a_knee(tmp_path):
    """Two steps, 40 and 80 frames/s for 1.5 s, every frame answered ok within a p99 of 1 s:
    the knee is the faster step, and it served what it was offered."""
    rep = _bench(tmp_path, "--sweep", "--sweep-start", "40", "--sweep-factor", "2", "--sweep-steps", "2",
                 "--sweep-refine", "0", "--p99-bound-ms", "1000")
    sweep = rep["sweep"]
    assert [s["offered_fps"] for s in sweep] == [40, 80]
    assert [s["sent"] for s in sweep] == [s["answered"] for s in sweep] == [s["ok"] for s in sweep] == [60, 120]
    assert [s["achieved_fps"] for s in sweep] == pytest.approx([40.0, 80.0])
    assert rep["knee"]["offered_fps"] == 80 and rep["knee"]["achieved_fps"] == pytest.approx(80.0)
    assert rep["knee"]["p99_ms"] == sweep[1]["latency_ms"]["p99"] <= 1000
    assert rep["run"]["offered_fps"] == 80  # the report's run is the knee's


@pytest.fixture(scope="module")
def overload_report(tmp_path_factory):
    """One ``streampi bench --overload 4`` run, read by the tests below (it starts its own server)."""
    return _bench(tmp_path_factory.mktemp("overload"), "--overload", "4", "--seconds", "1")


def test_overload_runs_both_protocols_and_counts_add_up(overload_report):
    ov = overload_report["overload"]
    assert len(ov["saturation"]) == 3 and all(s["achieved_fps"] > 0 for s in ov["saturation"])
    v11, v1 = ov["runs"]["1.1"], ov["runs"]["1"]
    for run in (v11, v1):
        assert run["unanswered"] == 0 and not run["producer_failures"]
        assert run["sent"] == run["client_dropped"] + run["ok"] + run["dropped"] + sum(run["errors"].values())
        assert run["served_fps"] > 0 and run["rss_end_mib"] > 0 and ov["rss_warm_mib"] > 0
    assert v11["client_dropped"] > 0  # 4x overload: v1.1 cameras replace what has no credit
    assert v1["client_dropped"] == 0 and v1["dropped"] > 0  # v1: the server answers the replaced frames


def test_overload_report_records_the_policy_its_server_ran(overload_report):
    """--overload runs its server with policy latest (the v1 run's `dropped` answers above are
    that policy at work); the report must say so."""
    assert overload_report["config"]["policy"] == "latest"


@pytest.fixture(scope="module")
def load_server():
    """A `streampi serve` child with two workers: (process, ready info), stopped after the module."""
    from streampi.testing import start_server

    proc, info = start_server(["shapes_int8", "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--workers", "2", "--policy", "queue", "--log-level", "warning"])
    try:
        yield proc, info
    finally:
        proc.terminate()
        proc.wait(30)


def _server_counts(info: dict) -> dict:
    """The server's own counters, read over its control socket (a counter not yet touched is 0)."""
    from streampi.ctl import request

    stats = request(info["control"], "stats")["stats"]
    return {key: stats.get(key, 0) for key in ("received", "answered")}


def test_saturation_run_counts_the_whole_server_tree(load_server):
    """Workers are children of a fork-server child: the CPU and memory figures must reach them.
    Every frame the producers report sent is one the server counted received and answered."""
    import psutil

    from streampi.tools.loadtest import run_load, tree_cpu_s, tree_rss_mib

    proc, info = load_server
    server = psutil.Process(proc.pid)
    worker_pids = {w["pid"] for w in info["workers"]}
    assert not worker_pids & {c.pid for c in server.children()}  # grandchildren, not children
    assert worker_pids <= set(tree_cpu_s(server))
    assert tree_rss_mib(server) > server.memory_info().rss / 2**20
    before = _server_counts(info)
    res = run_load(info["credit_bind"], info["publish"], rate=0, seconds=1.0, warmup=0.5, producers=1, streams=2,
                   arrival="fixed", frames_spec=("synthetic", (160, 120), "rgb"), server_pid=proc.pid,
                   stream_prefix="sat")
    after = _server_counts(info)
    d = res.as_dict()
    assert d["sent"] > 0 and d["unanswered"] == 0 and d["producer_failures"] == []
    assert d["sent"] == after["received"] - before["received"] and d["answered"] == after["answered"] - before["answered"]
    assert d["sent"] == d["ok"] + d["dropped"] + sum(d["errors"].values())
    assert 0 < d["ok_in_window"] < d["ok"]  # the warm-up's frames are counted, not measured
    assert res.hist.n == d["ok_in_window"]
    cpu = d["cpu_ms_per_frame"]
    assert cpu["server"] > 0 and cpu["producers"] > 0 and cpu["subscriber"] > 0
    assert d["send_lateness_ms"] is None  # saturation has no schedule to be late for


def test_send_lateness_of_every_producer_process_is_merged(load_server):
    """Two producer processes on a schedule each record how late every send was and hand the
    histogram back as bytes: the merged histogram holds one value per frame the server received."""
    from streampi.tools.loadtest import run_load

    proc, info = load_server
    before = _server_counts(info)
    res = run_load(info["credit_bind"], info["publish"], rate=40, seconds=1.0, producers=2, streams=2,
                   arrival="fixed", frames_spec=("synthetic", (160, 120), "rgb"), stream_prefix="late")
    received = _server_counts(info)["received"] - before["received"]
    assert res.unsent == 0 and res.producer_failures == []
    assert res.send_lateness.n == res.sent == 40  # 20 from each process, every one timed
    assert received == res.answered == res.sent - res.client_dropped  # (a v1.1 camera replaces what has no credit)


def test_the_pipeline_ceiling_of_jpeg_frames_decodes_each_one():
    """The JPEG ceiling (bench/peer.py's bound) runs the kernel's decoder on the bytes given:
    the frame it names is a JPEG, and bytes that are no JPEG fail as the server's would."""
    from streampi.measure import pipeline_ceiling
    from streampi.model import resolve_model
    from streampi.tools.loadtest import make_frames

    path = resolve_model("shapes_int8")
    jpeg = make_frames("synthetic", (640, 480), "jpeg", n=1)[0][0]
    assert bytes(jpeg[:2]) == b"\xff\xd8"
    raw = pipeline_ceiling(path, 1, 0.3, (640, 480))
    jp = pipeline_ceiling(path, 1, 0.3, (640, 480), jpeg=jpeg)
    assert jp["frame"] == "640x480 jpeg" and raw["frame"] == "640x480 rgb"
    assert jp["fps"] > 0 and jp["kernel_p50_ms"] > 0
    with pytest.raises(FrameError):
        pipeline_ceiling(path, 1, 0.1, (640, 480), jpeg=b"\xff\xd8 no JPEG after all")
