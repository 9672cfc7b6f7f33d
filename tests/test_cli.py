"""The command line as users run it: real processes, real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import simplejpeg

from streampi import LABELS, ShapesGenerator
from streampi.serving import ServerOptions
from streampi.testing import ServerThread

CLI = [sys.executable, "-m", "streampi"]


def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo.json"
    r = subprocess.run([*CLI, "demo", "--seconds", "2", "--fps", "20", "--json", str(out)], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(out.read_text())
    # every frame sent is answered, or was replaced at the camera when the server was busy (never sent)
    assert s["sent"] == s["answered"] + s["replaced_at_camera"] and s["answered"] > 0 and s["unanswered"] == 0
    assert s["accuracy"] >= 0.95 and s["server_exit_code"] == 0
    assert "accuracy" in r.stdout and "latency" in r.stdout


@pytest.mark.aarch64
def test_produce_folder_and_subscribe(tmp_path):
    gen = ShapesGenerator(seed=12)
    labels = []
    for i in range(3):
        rgb, label = gen.frame(160, 120)
        (tmp_path / f"{i}.jpg").write_bytes(simplejpeg.encode_jpeg(rgb, quality=95))
        labels.append(LABELS[label])
    with ServerThread("shapes_int8", ServerOptions(policy="queue")) as st:
        sub = subprocess.Popen([*CLI, "subscribe", "--connect", st.results, "--count", "6", "--json"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)  # the subscription reaches the publisher
        r = subprocess.run([*CLI, "produce", "--connect", st.frames, "--source", str(tmp_path), "--count", "3",
                            "--fps", "50", "--streams", "2", "--stream", "dir"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert "sent 6 frames on 2 stream(s)" in r.stderr
        out, _ = sub.communicate(timeout=60)
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == 6 and all(x["ok"] for x in results)
    assert {x["stream"] for x in results} == {"dir0", "dir1"}
    # files are sent in name order, round robin over the streams
    by_stream = {s: [x["top"][0][1] for x in sorted(results, key=lambda x: x["seq"]) if x["stream"] == s]
                 for s in ("dir0", "dir1")}
    assert by_stream["dir0"] == [labels[0], labels[2], labels[1]]


@pytest.mark.aarch64
def test_serve_refuses_a_bad_model_clearly():
    r = subprocess.run([*CLI, "serve", "custom_op"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "StreampiNoSuchOp" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.aarch64
def test_serve_bad_options():
    r = subprocess.run([*CLI, "serve", "--workers", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "must be >= 1 unless nodes run the frames" in r.stderr
    r = subprocess.run([*CLI, "serve", "--workers", "-1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "must be >= 0" in r.stderr
    r = subprocess.run([*CLI, "serve", "--policy", "sometimes"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "policy must be one of" in r.stderr


def test_produce_needs_a_source(tmp_path):
    r = subprocess.run([*CLI, "produce", "--source", str(tmp_path / "nope"), "--count", "1"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "neither" in r.stderr


def test_subscriber_line_format():
    from streampi.cli.subscribe import format_result
    ok = {"stream": "cam0", "seq": 3, "ok": True, "top": [[1, "square", 0.98]], "timing": {"total_ms": 2.5,
          "infer_ms": 1.0}, "batch": 1, "worker": 0}
    assert "square 0.980" in format_result(ok)
    bad = {"stream": "cam0", "seq": 4, "ok": False, "error": {"code": "dropped", "message": "replaced"}}
    assert "ERROR dropped: replaced" in format_result(bad)
    assert " node " not in format_result(ok)
    remote = {**ok, "node": "pi-b", "timing": {**ok["timing"], "hop_ms": 0.71, "node_ms": 3.2}}
    assert format_result(remote).endswith("worker 0 node pi-b hop 0.71 ms")


def test_produce_from_a_video_file(tmp_path):
    import cv2

    gen = ShapesGenerator(seed=13)
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for _ in range(4):
        rgb, _ = gen.frame(160, 120)
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()
    with ServerThread("shapes_int8", ServerOptions(policy="queue")) as st:
        sub = subprocess.Popen([*CLI, "subscribe", "--connect", st.results, "--count", "6", "--json"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        r = subprocess.run([*CLI, "produce", "--connect", st.frames, "--source", str(path), "--count", "6",
                            "--fps", "50", "--stream", "video"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out, _ = sub.communicate(timeout=60)
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == 6 and all(x["ok"] and x["stream"] == "video" for x in results)


def test_serve_labels_file_overrides(tmp_path):

    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing{i}" for i in range(6)) + "\n")
    with ServerThread("shapes_float32", ServerOptions(policy="queue"), labels_file=labels, top_k=2) as st:
        from streampi.client import Producer, Subscriber
        from streampi.testing import wait_subscribed
        with Subscriber(st.results) as sub:
            wait_subscribed(sub, st.frames)
            with Producer(st.frames, stream="lab") as prod:
                rgb, label = ShapesGenerator(seed=2).frame(64, 64)
                prod.send(rgb)
            r = sub.recv(timeout=10)
    assert len(r["top"]) == 2 and r["top"][0][1] == f"thing{label}"


def test_serve_with_a_missing_delegate_falls_back_to_the_cpu(tmp_path):
    from streampi.testing import start_server

    proc, info = start_server(["shapes_int8", "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--delegate", f"{tmp_path}/libnope.so:cache=1"])
    try:
        assert info["delegate_errors"] and "running on the CPU" in info["delegate_errors"][0]
        from streampi.client import Producer, Subscriber
        from streampi.testing import wait_subscribed
        with Subscriber(info["publish"]) as sub:
            wait_subscribed(sub, info["bind"])
            with Producer(info["credit_bind"], stream="cpu") as prod:
                rgb, label = ShapesGenerator(seed=4).frame(64, 64)
                prod.send(rgb)
            r = sub.recv(timeout=10)
        assert r["ok"] and r["top"][0][1] == LABELS[label]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_produce_through_shared_memory_to_a_server_in_another_process():
    from streampi.testing import start_server

    proc, info = start_server(["shapes_int8", "--workers", "1", "--policy", "queue", "--bind", "tcp://127.0.0.1:*",
                               "--publish", "tcp://127.0.0.1:*"])
    try:
        sub = subprocess.Popen([*CLI, "subscribe", "--connect", info["publish"], "--count", "5", "--json"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)  # the subscription reaches the publisher
        r = subprocess.run([*CLI, "produce", "--connect", info["credit_bind"], "--count", "5", "--fps", "50",
                            "--size", "320x240", "--shared-memory"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        # queue stream: slots = min(window + 1, 32) with the default --queue-size 32; 320x240 RGB in whole pages
        assert "shared memory: on: 32 slots of 233472 bytes; 5 frames through the ring" in r.stderr, r.stderr
        out, _ = sub.communicate(timeout=60)
        results = [json.loads(line) for line in out.splitlines()]
        assert len(results) == 5 and all(x["ok"] for x in results)
        r = subprocess.run([*CLI, "produce", "--protocol", "1", "--shared-memory", "--count", "1"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "--shared-memory needs --protocol 1.1" in r.stderr
    finally:
        proc.terminate()
        proc.wait(30)


def test_version_is_the_package_metadata():
    from pathlib import Path

    from streampi.cli.config_file import tomllib  # tomli before Python 3.11

    declared = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["version"]
    out = subprocess.run([sys.executable, "-m", "streampi", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"streampi {declared}"


def test_help_states_each_default_once():
    import re

    from streampi.cli import VERBS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices and "serve" in a.choices)
    for verb in VERBS:
        text = sub.choices[verb].format_help()
        assert "(default: None)" not in text and "(default: [])" not in text, verb
        # one option's help is the text between two option lines; none states its default twice
        for chunk in re.split(r"\n  (?=-)", text):
            assert chunk.count("default:") <= 1, (verb, chunk)
