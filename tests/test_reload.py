"""Hot model reload under load: every frame answered once, each stream switches model once, no
batch mixes two models; failed reloads of every kind keep the old model serving."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time

import pytest
from helpers import FRAME, Load, assert_exactly_once, collect_until, frame_results

from streampi import bundled_model
from streampi.client import Producer, Subscriber
from streampi.ctl import request
from streampi.serving import ServerOptions
from streampi.testing import ServerThread, start_server, wait_subscribed


def test_reload_under_load_switches_each_stream_once_and_loses_nothing():
    opts = ServerOptions(workers=2, policy="queue", max_batch=4)
    with ServerThread("shapes_int8", opts) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        load = Load(st.frames, producers=4, streams_each=2, rate=30, seconds=5).start()
        time.sleep(2)
        reply = request(st.control, "reload", timeout=60, model=str(bundled_model("shapes_uint8")))
        load.join()
        results = collect_until(sub, lambda out: len(frame_results(out)) >= len(load.sent))
        status = st.server.status()
    assert reply["ok"], reply
    assert reply["model"]["name"] == "shapes_uint8" and reply["previous"]["name"] == "shapes_int8"
    codes = assert_exactly_once(load.sent, results)
    assert codes == {"ok": len(load.sent)}
    per_stream = collections.defaultdict(list)
    for r in sorted(results, key=lambda r: r["seq"]):
        per_stream[r["stream"]].append(r["model"]["name"])
    for stream, names in per_stream.items():
        switches = sum(a != b for a, b in zip(names, names[1:]))
        assert switches <= 1 and names[0] == "shapes_int8", (stream, names)
    assert sum(n[-1] == "shapes_uint8" for n in per_stream.values()) == len(per_stream)
    batches = collections.defaultdict(set)
    for r in results:
        batches[r["batch_id"]].add(r["model"]["sha256"])
    mixed = {k: v for k, v in batches.items() if len(v) > 1}
    assert not mixed, mixed
    assert status["model"]["name"] == "shapes_uint8"
    assert all(w["state"] == "ready" for w in status["workers"])


@pytest.mark.parametrize("bad, reason", [
    ("missing.tflite", "not found"),
    ("garbage", "not a"),
    ("int16_input", "int16"),
    ("custom_op", "StreampiNoSuchOp"),
])
def test_failed_reload_keeps_the_old_model_serving(tmp_path, bad, reason):
    if bad == "missing.tflite":
        target = str(tmp_path / "missing.tflite")
    elif bad == "garbage":
        target = str(tmp_path / "garbage.tflite")
        (tmp_path / "garbage.tflite").write_bytes(b"TFL3" * 100)
    else:
        target = str(bundled_model(bad))
    with ServerThread("shapes_int8", ServerOptions(workers=1, policy="queue")) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        reply = request(st.control, "reload", timeout=60, model=target)
        with Producer(st.frames, stream="after") as prod:
            sent = {("after", prod.send(FRAME[:120, :160].copy())): 1 for _ in range(5)}
        results = collect_until(sub, lambda out: len(out) >= 5, timeout=20)
        status = st.server.status()
    assert reply["ok"] is False
    assert "still serving shapes_int8" in reply["error"] and reason.lower() in reply["error"].lower(), reply
    assert assert_exactly_once(sent, results) == {"ok": 5}
    assert {r["model"]["name"] for r in results} == {"shapes_int8"}
    assert status["stats"]["reloads_failed"] == 1 and all(w["generation"] == 1 for w in status["workers"])


def test_sighup_reloads_the_model_file_and_ctl_reports_it(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(bundled_model("shapes_int8").read_bytes())
    proc, info = start_server([str(path), "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--workers", "1"])
    try:
        first = request(info["control"], "stats")["model"]
        path.write_bytes(bundled_model("shapes_uint8").read_bytes())  # a new version of the file
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and request(info["control"], "stats")["model"] == first:
            time.sleep(0.1)
        second = request(info["control"], "stats")["model"]
        out = subprocess.run([sys.executable, "-m", "streampi", "ctl", "reload", str(bundled_model("shapes_int8")),
                              "--connect", info["control"]], capture_output=True, text=True, timeout=60)
        bad = subprocess.run([sys.executable, "-m", "streampi", "ctl", "reload", str(tmp_path / "nope.tflite"),
                              "--connect", info["control"]], capture_output=True, text=True, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert first["sha256"] != second["sha256"] and second["name"] == "model"
    assert out.returncode == 0 and "now serving shapes_int8" in out.stdout
    assert bad.returncode == 2 and "still serving shapes_int8" in bad.stderr


def test_retired_workers_are_released_after_a_reload():
    """Months of reloads must not accumulate old workers (each holds shared memory)."""
    import gc
    import weakref

    with ServerThread("shapes_int8", ServerOptions(workers=2, policy="queue")) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        with Producer(st.frames, stream="r") as prod:
            for _ in range(10):
                prod.send(FRAME[:120, :160].copy())
        collect_until(sub, lambda out: len(out) >= 10, timeout=20)
        old = [weakref.ref(s) for s in st.server.slots]
        assert request(st.control, "reload", timeout=60, model=str(bundled_model("shapes_uint8")))["ok"]
        deadline = time.monotonic() + 20
        while st.server._retiring and time.monotonic() < deadline:
            time.sleep(0.05)
        gc.collect()
        alive = [r() for r in old if r() is not None]
    assert not alive, f"{len(alive)} retired workers still referenced"
