"""The bundled shapes detector end to end: scenes from the generator go through a real
server (ZeroMQ on 127.0.0.1, real interpreters, Cython preprocessing, letterbox), and the
detections that come back, in frame pixels, are scored against the drawn boxes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import simplejpeg

from streampi import Model, bundled_model, load_config
from streampi.client import Producer, Subscriber
from streampi.decoders import auto_kind, make_decoder
from streampi.evaluation import mean_average_precision
from streampi.serving import ServerOptions
from streampi.synthetic import LABELS, ScenesGenerator
from streampi.testing import ServerThread, start_server, wait_subscribed


def scenes(n: int, seed: int, sizes=((320, 240), (333, 251), (240, 320), (96, 96))):
    gen = ScenesGenerator(seed=seed)
    return [gen.scene(*sizes[k % len(sizes)]) for k in range(n)]


def detect_through_server(model: str, frames, options: ServerOptions | None = None, jpeg: bool = False,
                          timeout: float = 60.0):
    """Send every scene, return (results by index, the server's stats)."""
    with ServerThread(model, options or ServerOptions(workers=2, policy="queue", max_batch=4)) as st:
        with Subscriber(st.results) as sub, Producer(st.frames, stream="scenes") as prod:
            wait_subscribed(sub, st.frames)
            seqs = {}
            for k, (img, _, _) in enumerate(frames):
                payload = simplejpeg.encode_jpeg(img, quality=95) if jpeg else img
                seqs[prod.send(payload, fmt="jpeg" if jpeg else "rgb")] = k
            results, deadline = {}, time.monotonic() + timeout
            while len(results) < len(seqs):
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(results)} of {len(seqs)} results arrived"
                r = sub.recv(timeout=left)
                if r.get("stream") == "scenes":
                    results[seqs[r["seq"]]] = r
        return results, st.stats


def score(results, frames) -> float:
    for r in results.values():
        assert r["ok"], r
    dets = [results[k]["detections"] for k in range(len(frames))]
    return mean_average_precision(dets, [(b, c) for _, b, c in frames])[0]


def test_bundled_detector_is_small_and_selects_yolo_from_its_outputs():
    path = bundled_model("shapes_detector")
    assert 100 * 1024 < path.stat().st_size < 2 * 1024 * 1024
    model = Model(path)
    assert model.input.dtype == np.int8 and all(s.dtype == np.int8 for s in model.outputs)
    assert auto_kind(model.outputs)[0] == "yolo"   # no sidecar needed to pick the decoder
    cfg = load_config(path)
    assert cfg.resize == "letterbox" and cfg.decoder["kind"] == "yolo" and cfg.labels == LABELS
    assert make_decoder(model.outputs, cfg).layout == "v8"


def test_detector_through_the_server_finds_the_drawn_shapes():
    frames = scenes(120, seed=9001)
    results, stats = detect_through_server("shapes_detector", frames)
    m = score(results, frames)
    assert m >= 0.80, f"mAP@0.5 {m:.3f}"
    r = results[0]
    assert "outputs" not in r   # raw outputs are opt-in for detectors
    d = r["detections"][0]
    assert set(d) == {"box", "score", "class", "label"} and d["label"] == LABELS[d["class"]]
    fw, fh = 320, 240
    for r in results.values():
        for d in r["detections"]:
            x0, y0, x1, y1 = d["box"]
            assert 0 <= x0 < x1 <= fw + 80 and 0 <= y0 < y1 <= fh + 80   # frame pixels, clipped


def test_detector_boxes_in_frame_pixels_from_large_jpegs():
    frames = scenes(40, seed=9002, sizes=((1280, 720), (801, 599)))
    results, _ = detect_through_server("shapes_detector", frames, jpeg=True)
    for k, (img, _, _) in enumerate(frames):
        h, w = img.shape[:2]
        assert all(0 <= d["box"][2] <= w and 0 <= d["box"][3] <= h for d in results[k]["detections"])
    assert score(results, frames) >= 0.75


def test_ssd_postprocess_model_runs_unbatched_through_the_server():
    path = bundled_model("shapes_detector_ssd")
    model = Model(path)
    assert "TFLite_Detection_PostProcess" in model.ops()
    assert auto_kind(model.outputs)[0] == "ssd_postprocess"
    dec = make_decoder(model.outputs, load_config(path))
    assert dec.kind == "ssd_postprocess" and dec.batchable is False
    frames = scenes(60, seed=9003)
    results, _ = detect_through_server("shapes_detector_ssd", frames,
                                       ServerOptions(workers=1, policy="queue", max_batch=4))
    assert all(r["batch"] == 1 for r in results.values())
    assert score(results, frames) >= 0.75


@pytest.mark.slow
def test_int8_detector_map_on_500_frames_within_3_points_of_float():
    frames = scenes(500, seed=int(time.time()) % 100000)
    m_int8 = score(detect_through_server("shapes_detector", frames)[0], frames)
    m_float = score(detect_through_server("shapes_detector_float32", frames)[0], frames)
    print(f"mAP@0.5 int8 {m_int8:.4f} float32 {m_float:.4f}")
    assert m_int8 >= 0.80
    assert m_int8 >= m_float - 0.03


CLI = [sys.executable, "-m", "streampi"]


def test_serve_names_a_misconfigured_decoder_option():
    r = subprocess.run([*CLI, "serve", "shapes_detector", "--bind", "tcp://127.0.0.1:*", "--publish",
                        "tcp://127.0.0.1:*", "--decoder-option", "layuot=\"v5\""],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "unknown option 'layuot'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*CLI, "serve", "shapes_detector", "--bind", "tcp://127.0.0.1:*", "--publish",
                        "tcp://127.0.0.1:*", "--iou-threshold", "1.5"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'iou_threshold'" in r.stderr and "Traceback" not in r.stderr


def test_serve_flags_and_subscribe_prints_detections():
    frames = scenes(4, seed=9004, sizes=((320, 240),))
    proc, info = start_server(["shapes_detector", "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--max-detections", "1", "--raw-outputs", "--policy", "queue"])
    sub = None
    try:
        sub = subprocess.Popen([*CLI, "subscribe", "--connect", info["publish"], "--count", "4",
                                "--stream", "cam"], stdout=subprocess.PIPE, text=True)
        with Subscriber(info["publish"], streams=["cam"]) as direct:
            wait_subscribed(direct, info["bind"])
            time.sleep(1.5)  # the command's subscription reaches the publisher too
            with Producer(info["credit_bind"], stream="cam") as prod:
                for img, _, _ in frames:
                    prod.send(img)
            got = [direct.recv(timeout=30) for _ in frames]
        out, _ = sub.communicate(timeout=60)
    finally:
        if sub is not None and sub.poll() is None:
            sub.kill()
            sub.wait(10)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert all(len(r["detections"]) == 1 and len(r["outputs"]) == 1 for r in got)   # the flags took effect
    lines = out.strip().splitlines()
    assert len(lines) == 4
    for line, r in zip(lines, got):
        d = r["detections"][0]
        assert f"1 det: {d['label']} {d['score']:.2f} [" in line


def test_demo_with_the_detector_reports_map_and_draws_the_picture(tmp_path):
    out = tmp_path / "demo.json"
    picture = tmp_path / "demo-detections.png"
    r = subprocess.run([*CLI, "demo", "--model", "shapes_detector", "--seconds", "2", "--fps", "10", "--json",
                        str(out), "--picture", str(picture)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(out.read_text())
    assert s["sent"] == s["ok"] > 0 and s["map50"] >= 0.8
    assert "mAP@0.5" in r.stdout and str(picture) in r.stdout
    from PIL import Image

    with Image.open(picture) as img:
        assert img.size == (3 * 324 + 4, 2 * 244 + 4)   # 6 frames of 320×240 in a 3×2 grid
        yellow = (np.asarray(img.convert("RGB")) == (255, 255, 0)).all(-1)
        assert yellow.sum() > 1000   # boxes and label plates drawn
