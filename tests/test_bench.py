"""`streampi bench`: a tiny bounded run end to end, and the pieces it measures with."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest

from streampi.errors import FrameError
from streampi.sources import rgb_to_i420
from streampi.tools.loadtest import LatencyHistogram, RunResult, schedule


def test_histogram_percentiles_within_a_tenth_of_a_percent():
    rng = np.random.default_rng(0)
    samples = rng.lognormal(0.5, 1.0, 20_000)
    h = LatencyHistogram()
    for s in samples:
        h.add(float(s))
    assert h.n == samples.size
    for p in (50, 90, 95, 99):
        exact = np.percentile(samples, p, method="inverted_cdf")
        assert h.percentile(p) == pytest.approx(exact, rel=0.0011, abs=0.001)  # 3 digits, 1 µs units
    assert h.percentile(100) == h.max == pytest.approx(samples.max(), rel=0.0011)
    s = h.summary()
    assert s["p50"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]
    xs, ys = h.cdf()
    assert xs == sorted(xs) and ys == sorted(ys) and ys[-1] == 1.0
    assert ys[int(np.searchsorted(xs, h.percentile(50)))] >= 0.5
    assert math.isnan(LatencyHistogram().percentile(50))


def _record_in_child(values, out):
    h = LatencyHistogram()
    for v in values:
        h.add(v)
    out.put(h.encode())


def test_histograms_from_other_processes_merge_exactly():
    """Producer processes send their histograms as bytes; the sum equals one histogram of all."""
    rng = np.random.default_rng(1)
    parts = [rng.exponential(3.0, 5000) + 0.05 for _ in range(3)]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_record_in_child, args=(list(map(float, v)), q)) for v in parts]
    for p in procs:
        p.start()
    blobs = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    merged = LatencyHistogram()
    for b in blobs:
        merged.merge(b)
    whole = LatencyHistogram()
    for v in np.concatenate(parts):
        whole.add(float(v))
    assert merged.n == whole.n == 15000
    for p in (1, 50, 90, 99, 99.9, 100):
        assert merged.percentile(p) == whole.percentile(p)
    everything = np.concatenate(parts)
    assert merged.percentile(99) == pytest.approx(np.percentile(everything, 99, method="inverted_cdf"), rel=0.0011)


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


def _bench(tmp_path, *extra):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "streampi", "bench", "--model", "shapes_int8", "--seconds", "1.5", "--rate", "60",
           "--producers", "1", "--streams", "2", "--size", "160x120", "--no-progress", "--json", str(out), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text())


def test_tiny_bounded_run_adds_up(tmp_path):
    rep = _bench(tmp_path, "--ceiling", "--baseline", "--png", str(tmp_path / "b.png"))
    run = rep["run"]
    assert run["sent"] == run["ok"] + run["dropped"] + sum(run["errors"].values())
    assert run["unanswered"] == 0 and run["sent"] == 90
    lat = run["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert set(run["stages_ms"]) >= {"queue_ms", "pre_ms", "infer_ms", "post_ms", "transport_ms"}
    assert rep["ceiling"]["fps"] > 0 and 0 < rep["efficiency"]
    pc = rep["pipeline_ceiling"]
    assert pc["fps"] > 0 and pc["kernel_p50_ms"] > 0 and pc["invoke_p50_ms"] > 0 and pc["frame"] == "160x120 rgb"
    assert rep["efficiency_pipeline"] == pytest.approx(run["achieved_fps"] / pc["fps"])
    for c in (rep["ceiling"], pc):  # measured before and after the runs; the stronger counts
        assert c["fps"] == max(c["fps_before"], c["fps_after"]) and min(c["fps_before"], c["fps_after"]) > 0
    assert rep["vs_baseline"]["throughput_ratio"] > 0 and rep["vs_baseline"]["p99_ratio"] > 0
    assert rep["baseline"]["answered"] == 90
    assert rep["config"]["model"] == "shapes_int8" and rep["server"]["workers"] >= 1
    assert rep["machine"]["cores"] >= 1 and run["server_rss_mib"] > 0
    assert run["cpu_ms_per_frame"]["server"] > 0 and run["cpu_ms_per_frame"]["producers"] > 0
    lateness = run["send_lateness_ms"]  # merged from the producer process's histogram
    assert lateness is not None and 0 <= lateness["p50"] <= lateness["max"]
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_short_sweep_reports_a_knee(tmp_path):
    rep = _bench(tmp_path, "--sweep", "--sweep-start", "40", "--sweep-factor", "2", "--sweep-steps", "2",
                 "--sweep-refine", "0", "--p99-bound-ms", "1000")
    assert len(rep["sweep"]) == 2
    assert [s["offered_fps"] for s in rep["sweep"]] == [40, 80]
    assert rep["knee"]["achieved_fps"] > 0 and rep["knee"]["p99_ms"] <= 1000


def test_overload_runs_both_protocols_and_counts_add_up(tmp_path):
    rep = _bench(tmp_path, "--overload", "4", "--seconds", "1")
    ov = rep["overload"]
    assert len(ov["saturation"]) == 3 and all(s["achieved_fps"] > 0 for s in ov["saturation"])
    v11, v1 = ov["runs"]["1.1"], ov["runs"]["1"]
    for run in (v11, v1):
        assert run["unanswered"] == 0 and not run["producer_failures"]
        assert run["sent"] == run["client_dropped"] + run["ok"] + run["dropped"] + sum(run["errors"].values())
        assert run["served_fps"] > 0 and run["rss_end_mib"] > 0 and ov["rss_warm_mib"] > 0
    assert v11["client_dropped"] > 0  # 4x overload: v1.1 cameras replace what has no credit
    assert v1["client_dropped"] == 0 and v1["dropped"] > 0  # v1: the server answers the replaced frames


def test_saturation_run_counts_the_whole_server_tree(tmp_path):
    """Workers are children of a fork-server child: the CPU and memory figures must reach them."""
    import psutil

    from streampi.testing import start_server
    from streampi.tools.loadtest import run_load, tree_cpu_s, tree_rss_mib

    proc, info = start_server(["shapes_int8", "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--workers", "2", "--policy", "queue", "--log-level", "warning"])
    try:
        server = psutil.Process(proc.pid)
        worker_pids = {w["pid"] for w in info["workers"]}
        assert not worker_pids & {c.pid for c in server.children()}  # grandchildren, not children
        assert worker_pids <= set(tree_cpu_s(server))
        assert tree_rss_mib(server) > server.memory_info().rss / 2**20
        res = run_load(info["credit_bind"], info["publish"], rate=0, seconds=1.0, warmup=0.5, producers=1, streams=2,
                       arrival="fixed", frames_spec=("synthetic", (160, 120), "rgb"), server_pid=proc.pid,
                       stream_prefix="sat")
    finally:
        proc.terminate()
        proc.wait(30)
    d = res.as_dict()
    assert d["sent"] > 0 and d["unanswered"] == 0 and d["producer_failures"] == []
    assert d["sent"] == d["ok"] + d["dropped"] + sum(d["errors"].values())
    assert 0 < d["ok_in_window"] < d["ok"]  # the warm-up's frames are counted, not measured
    assert d["achieved_fps"] == d["ok_in_window"] / 1.0 and res.hist.n == d["ok_in_window"]
    cpu = d["cpu_ms_per_frame"]
    assert cpu["server"] > 0 and cpu["producers"] > 0 and cpu["subscriber"] > 0
    assert d["send_lateness_ms"] is None  # saturation has no schedule to be late for


def test_transport_bench_runs_both_transports(tmp_path):
    """bench/transport.py: every timed frame sent arrives (it checks), over tcp and ipc, RGB and JPEG."""
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "bench" / "transport.py"
    out = tmp_path / "transport.json"
    r = subprocess.run([sys.executable, str(script), "--size", "160x120", "--seconds", "0.3", "--rounds", "1",
                        "--warm", "5", "--out", str(out)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(out.read_text())
    assert set(rep["median"]) == {"rgb/tcp", "rgb/ipc", "jpeg/tcp", "jpeg/ipc"}
    for key, row in rep["median"].items():
        assert row["fps"] > 0 and row["send_cpu_us"] > 0 and row["recv_cpu_us"] > 0, key
    assert rep["median"]["rgb/tcp"]["frame_bytes"] > 160 * 120 * 3  # the pixels and the header
    assert rep["median"]["jpeg/tcp"]["frame_bytes"] < rep["median"]["rgb/tcp"]["frame_bytes"]
    assert "| RGB" in r.stdout and "ipc / tcp throughput" in r.stdout


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
