"""`streampi quantize` on the bundled float models: real quantizer, real interpreters, real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

pytest.importorskip("ai_edge_quantizer")

from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from ai_edge_litert.tools import flatbuffer_utils  # noqa: E402

from streampi import LABELS, Model, ShapesGenerator, bundled_model, load_config  # noqa: E402
from streampi.sources import Frame, open_source  # noqa: E402
from streampi.tools.quantize import (  # noqa: E402
    QuantizeOptions,
    model_inputs,
    resample_frames,
    verify_and_write,
)

CLI = [sys.executable, "-m", "streampi", "quantize"]


def quantize_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """The command as users run it, in its own process."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


class Ran:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def quantize(capsys):
    """The same command line through ``streampi.cli.main`` in this process (no interpreter start-up)."""
    from streampi.cli import main

    def run(*args: str) -> Ran:
        capsys.readouterr()
        code = main(["quantize", *args])
        cap = capsys.readouterr()
        return Ran(code, cap.out, cap.err)

    return run


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> tuple[Path, dict]:
    """shapes_float32 quantized by the real CLI, calibrated on synthetic frames."""
    out = tmp_path_factory.mktemp("q") / "shapes_int8_mine.tflite"
    r = quantize_cli("shapes_float32", "--calibrate", "synthetic", "--frames", "120", "--runs", "5",
                     "-o", str(out), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return out, json.loads(r.stdout)


def test_float_classifier_becomes_a_verified_full_integer_model(int8_model):
    out, rep = int8_model
    assert rep["written"] and rep["passed"] and out.is_file()
    assert rep["frames"] == {"total": 120, "calibration": 96, "held_out": 24}
    v = rep["verification"]
    assert v["loads"] and v["kind"] == "classifier"
    assert v["agreement"]["top1_agreement"] >= 0.98 and v["agreement"]["frames"] == 24
    assert v["quantized_input"]["dtype"] == "int8" and [o["dtype"] for o in v["quantized_outputs"]] == ["int8"]
    # mean 0.5, std 0.5: the server writes values in [-1, 1], and the input's int8 range covers exactly that
    assert rep["input_range"] == [-1.0, 1.0]
    assert v["quantized_input"]["scale"] == pytest.approx(2 / 255, rel=1e-4)
    assert v["quantized_bytes"] < 0.35 * v["float_bytes"]
    assert set(v["latency_ms"]["float"]) == set(v["latency_ms"]["quantized"]) and "1" in v["latency_ms"]["float"]
    assert rep["quantization_peak_rss_bytes"] > 0 and rep["timing_s"]["quantize"] > 0
    # checked independently of the tool: the written file is full-integer and agrees on fresh frames
    q, f = Model(out), Model(bundled_model("shapes_float32"))
    assert q.input.dtype == np.int8 and q.outputs[0].dtype == np.int8
    from streampi import Preprocessor

    pq = Preprocessor.for_model(q, load_config(out))
    pf = Preprocessor.for_model(f, load_config(f.path))
    frames, labels = ShapesGenerator(seed=99).batch(60, 160, 120)
    agree = [int(np.argmax(q.run(pq(x, "rgb")[0][None])[0])) == int(np.argmax(f.run(pf(x, "rgb")[0][None])[0]))
             for x in frames]
    assert np.mean(agree) >= 0.98


def test_sidecar_travels(int8_model):
    out, _ = int8_model
    side = json.loads(out.with_suffix(".json").read_text())
    float_cfg = load_config(bundled_model("shapes_float32"))
    cfg = load_config(out)
    assert (cfg.mean, cfg.std, cfg.channels, cfg.resize, cfg.top_k) == \
        (float_cfg.mean, float_cfg.std, float_cfg.channels, float_cfg.resize, float_cfg.top_k)
    assert cfg.labels == float_cfg.labels == LABELS
    assert side["quantized_from"]["model"] == "shapes_float32.tflite" and side["quantized_from"]["verified"]


def test_streampi_serve_serves_the_result(int8_model):
    from streampi.client import Producer, Subscriber
    from streampi.testing import start_server, wait_subscribed

    out, _ = int8_model
    proc, info = start_server([str(out), "--bind", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                               "--workers", "1", "--policy", "queue"])
    try:
        frames, labels = ShapesGenerator(seed=5).batch(20, 160, 120)
        with Subscriber(info["publish"]) as sub:
            wait_subscribed(sub, info["bind"])
            with Producer(info["credit_bind"], stream="q") as prod:
                for x in frames:
                    prod.send(x)
            results = [sub.recv(timeout=20) for _ in frames]
        assert all(r["ok"] for r in results)
        by_seq = {r["seq"]: r["top"][0][1] for r in results}
        right = [by_seq[i] == LABELS[labels[i]] for i in range(len(frames))]
        assert np.mean(right) >= 0.95
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def _strip_signatures(src: Path, dst: Path) -> None:
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(src.read_bytes()))
    model.signatureDefs = []
    dst.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def test_signature_less_model_is_handled(tmp_path):
    src = tmp_path / "nosig.tflite"
    _strip_signatures(bundled_model("shapes_float32"), src)
    (tmp_path / "nosig.json").write_text(json.dumps({"mean": 0.5, "std": 0.5, "labels": list(LABELS)}))
    from ai_edge_litert.interpreter import Interpreter

    assert Interpreter(model_path=str(src)).get_signature_list() == {}
    out = tmp_path / "nosig_int8.tflite"
    r = quantize_cli(str(src), "--calibrate", "synthetic", "--frames", "60", "--runs", "3", "-o", str(out), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert any("signature added" in c for c in rep["prepared"])
    assert rep["verification"]["agreement"]["top1_agreement"] >= 0.98 and out.is_file()


def test_float16_weights_are_expanded_and_quantized(quantize, tmp_path):
    out = tmp_path / "f16_int8.tflite"
    r = quantize("shapes_float16", "--calibrate", "synthetic", "--frames", "60", "--runs", "3", "-o", str(out),
                     "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert any("float16 weights expanded" in c for c in rep["prepared"])
    # the float16 copies are not carried along: the result is smaller than the float16 model
    assert out.stat().st_size < 0.7 * bundled_model("shapes_float16").stat().st_size
    assert Model(out).input.dtype == np.int8


@pytest.mark.parametrize("recipe,input_dtype", [("dynamic", "float32"), ("weight-only", "float32")])
def test_other_recipes(quantize, tmp_path, recipe, input_dtype):
    out = tmp_path / f"{recipe}.tflite"
    r = quantize("shapes_float32", "--recipe", recipe, "--calibrate", "synthetic", "--frames", "30",
                     "--runs", "3", "-o", str(out), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["verification"]["quantized_input"]["dtype"] == input_dtype
    assert rep["verification"]["quantized_bytes"] < 0.35 * rep["verification"]["float_bytes"]


def test_calibration_from_a_folder_of_jpegs_and_pngs(quantize, tmp_path):
    cv2 = pytest.importorskip("cv2")
    gen = ShapesGenerator(seed=3)
    for i in range(12):
        rgb, _ = gen.frame(200, 150)
        if i % 3:
            (tmp_path / f"{i:02d}.jpg").write_bytes(simplejpeg.encode_jpeg(rgb, quality=90))
        else:
            cv2.imwrite(str(tmp_path / f"{i:02d}.png"), rgb[..., ::-1])
    (tmp_path / "notes.txt").write_text("not an image, ignored by suffix")
    frames = list(open_source(tmp_path).sample(100))
    assert len(frames) == 12 and {f.fmt for f in frames} == {"jpeg", "bgr"}
    out = tmp_path / "out" / "m.tflite"
    out.parent.mkdir()
    r = quantize("shapes_float32", "--calibrate", str(tmp_path), "--runs", "3", "-o", str(out), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["frames"] == {"total": 12, "calibration": 10, "held_out": 2}


@pytest.mark.slow
def test_calibration_from_a_video(quantize, tmp_path):
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    gen = ShapesGenerator(seed=8)
    for _ in range(90):
        writer.write(np.ascontiguousarray(gen.frame(160, 120)[0][..., ::-1]))
    writer.release()
    frames = list(open_source(video).sample(30))
    assert len(frames) == 30 and frames[0].fmt == "i420" and frames[0].data.shape == (180, 160)  # PyAV: I420
    # spread over the whole video, not its first 30 frames
    assert frames[-1].origin.endswith("frame 89")
    out = tmp_path / "v.tflite"
    r = quantize("shapes_float32", "--calibrate", str(video), "--frames", "30", "--runs", "3", "-o", str(out),
                     "--json")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("model", ["shapes_float32", "shapes_int8", "mobilenet_v2_int8"])
@pytest.mark.parametrize("config", [{}, {"channels": "bgr", "resize": "letterbox", "pad": 114,
                                         "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}])
def test_model_inputs_equal_the_servers_preprocessing(model, config):
    """Resample once to uint8, then each model's table: the same bytes as the Preprocessor
    the server runs, for float and int8 inputs, raw and JPEG frames."""
    from streampi import Preprocessor

    m = Model(bundled_model(model))
    cfg = load_config(m.path).updated(**config)
    gen = ShapesGenerator(seed=21)
    frames = []
    for w, h in ((320, 240), (97, 203), (640, 360)):
        rgb, _ = gen.frame(w, h)
        frames += [(rgb, "rgb"), (simplejpeg.encode_jpeg(rgb, quality=85), "jpeg")]
    resampled = resample_frames(m, cfg, (Frame(d, f, "t") for d, f in frames), len(frames))
    got = model_inputs(m, cfg, resampled.pixels)
    pre = Preprocessor.for_model(m, cfg)
    want = np.stack([pre(d, f)[0] for d, f in frames])
    assert got.dtype == want.dtype and np.array_equal(got, want)


# -- broken results are reported and not written ------------------------------------------------------------
def _negate_fully_connected_weights(data: bytes) -> bytes:
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    sg = model.subgraphs[0]
    for op in sg.operators:
        code = flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
        if code == schema.BuiltinOperator.FULLY_CONNECTED:
            buf = model.buffers[sg.tensors[op.inputs[1]].buffer]
            w = np.asarray(buf.data, np.uint8).view(np.int8)
            buf.data = np.clip(-w.astype(np.int16), -127, 127).astype(np.int8).view(np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@pytest.mark.parametrize("damage,why", [
    (lambda b: b[: len(b) // 3], "does not run"),                   # a corrupt, truncated file
    (_negate_fully_connected_weights, "below --min-agreement"),    # loads and runs, but answers differently
])
def test_a_broken_result_is_reported_and_not_written(int8_model, tmp_path, damage, why):
    good, _ = int8_model
    float_path = bundled_model("shapes_float32")
    synthetic = open_source("synthetic", seed=11).sample(20)
    frames = resample_frames(Model(float_path), load_config(float_path), synthetic, 20)
    out = tmp_path / "broken.tflite"
    rep = verify_and_write(float_path, load_config(float_path), damage(good.read_bytes()), out, frames,
                           QuantizeOptions(runs=3), {}, {})
    assert not rep["passed"] and not rep["written"] and why in rep["verdict"]
    assert "another recipe" in rep["verdict"]  # says what to try next
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    forced = verify_and_write(float_path, load_config(float_path), damage(good.read_bytes()), out, frames,
                              QuantizeOptions(runs=3, force=True), {}, {})
    assert forced["written"] and not forced["passed"] and out.is_file()
    assert json.loads(out.with_suffix(".json").read_text())["quantized_from"]["verified"] is False


def test_an_impossible_pass_mark_is_refused(quantize, tmp_path):
    r = quantize("shapes_float32", "--calibrate", "synthetic", "--min-agreement", "1.5", "-o",
                     str(tmp_path / "x.tflite"))
    assert r.returncode == 2 and "--min-agreement" in r.stderr
    assert list(tmp_path.iterdir()) == []


# -- bad inputs get clear errors ----------------------------------------------------------------------------
@pytest.mark.parametrize("model,match", [
    ("shapes_int8", "already quantized"),
    ("shapes_dynamic", "already quantized"),
    ("vector_fixed_batch", "NHWC images"),
])
def test_models_that_cannot_be_quantized(quantize, tmp_path, model, match):
    r = quantize(model, "--calibrate", "synthetic", "-o", str(tmp_path / "x.tflite"))
    assert r.returncode == 2 and match in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and list(tmp_path.iterdir()) == []


def test_not_a_model(quantize, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer at all")
    r = quantize(str(bad), "--calibrate", "synthetic")
    assert r.returncode == 2 and "not a TFLite model" in r.stderr and "Traceback" not in r.stderr
    r = quantize(str(tmp_path / "missing.tflite"), "--calibrate", "synthetic")
    assert r.returncode == 2 and "not found" in r.stderr


def test_bad_calibration_sources(quantize, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = quantize("shapes_float32", "--calibrate", str(empty), "-o", str(tmp_path / "x.tflite"))
    assert r.returncode == 2 and "no images in" in r.stderr
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "a.jpg").write_bytes(b"plain text pretending to be a JPEG")
    (wrong / "b.jpg").write_bytes(simplejpeg.encode_jpeg(ShapesGenerator(seed=1).frame(64, 64)[0]))
    r = quantize("shapes_float32", "--calibrate", str(wrong), "-o", str(tmp_path / "x.tflite"))
    assert r.returncode == 2 and "a.jpg cannot be used" in r.stderr and "JPEG" in r.stderr, r.stderr
    notvideo = tmp_path / "clip.mp4"
    notvideo.write_text("not a video")
    r = quantize("shapes_float32", "--calibrate", str(notvideo), "-o", str(tmp_path / "x.tflite"))
    assert r.returncode == 2 and ("not a video" in r.stderr or "no frames" in r.stderr), r.stderr
    r = quantize("shapes_float32", "--calibrate", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "neither 'synthetic'" in r.stderr
    r = quantize("shapes_float32", "--calibrate", "synthetic", "--frames", "1")
    assert r.returncode == 2 and "at least 2" in r.stderr
    r = quantize("shapes_float32", "--calibrate", "synthetic", "--holdout", "1.0")
    assert r.returncode == 2 and "--holdout" in r.stderr
    assert not (tmp_path / "x.tflite").exists()


def test_agreement_figures_of_known_outputs():
    from streampi.tools.quantize import compare_outputs, verdict

    ref = [[np.ones(8, np.float32), np.array([1.0, 0.0], np.float32)] for _ in range(4)]
    scaled = [[np.full(8, 1.1, np.float32), np.array([0.0, 1.0], np.float32)] for _ in range(4)]
    rep = compare_outputs(ref, scaled, classifier=False)
    first, second = rep["outputs"]
    assert first["cosine"] == pytest.approx(1.0) and first["snr_db"] == pytest.approx(20.0, abs=1e-4)
    assert first["max_abs_error"] == pytest.approx(0.1, abs=1e-6)
    assert second["cosine"] == pytest.approx(0.0) and "top1_agreement" not in rep
    ok, why = verdict({"loads": True, "kind": "tensors", "agreement": rep}, 0.98)
    assert not ok and "cosine similarity of the worst output 0.0000" in why
    same = compare_outputs(ref, ref, classifier=False)
    assert verdict({"loads": True, "kind": "tensors", "agreement": same}, 0.98)[0]
    assert same["outputs"][0]["snr_db"] == float("inf")
    # a classifier whose top-1 differs on the third frame
    f = [[np.array(p, np.float32)] for p in ([.5, .2, .1, .1, .05, .05], [.1, .6, .1, .1, .05, .05],
                                             [.35, .3, .2, .1, .03, .02])]
    q = [[np.array(p, np.float32)] for p in ([.5, .2, .1, .1, .05, .05], [.1, .6, .1, .1, .05, .05],
                                             [.05, .35, .2, .1, .05, .25])]
    c = compare_outputs(f, q, classifier=True, labels=[0, 1, 0])
    assert c["top1_agreement"] == pytest.approx(2 / 3) and c["float_accuracy"] == 1.0
    assert c["quantized_accuracy"] == pytest.approx(2 / 3)


def test_quantizer_failure_is_wrapped_with_its_message():
    """The quantizer itself fails on float16 weights it has not been prepared for; the tool
    reports that (in quantize_model: not written, with what to try next) instead of a traceback."""
    from streampi.tools.quantize import QuantizerFailed, run_quantizer

    raw = bundled_model("shapes_float16").read_bytes()
    batch = np.zeros((2, 64, 64, 3), np.float32)
    with pytest.raises(QuantizerFailed, match=r"\w+Error: "):
        run_quantizer(raw, "int8", [batch])


def test_flags_override_the_sidecar_and_travel(quantize, tmp_path):
    labels = tmp_path / "names.txt"
    labels.write_text("\n".join(f"thing{i}" for i in range(6)) + "\n")
    out = tmp_path / "flags.tflite"
    r = quantize("shapes_float32", "--calibrate", "synthetic", "--frames", "30", "--runs", "2", "-o", str(out),
                 "--resize", "letterbox", "--channels", "bgr", "--labels", str(labels), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = load_config(out)
    assert cfg.resize == "letterbox" and cfg.channels == "bgr" and cfg.mean == (0.5,)
    assert cfg.labels == tuple(f"thing{i}" for i in range(6))


def test_a_detector_is_verified_by_matching_boxes(quantize, tmp_path):
    """With streampi's decoders and the bundled float detector: boxes matched at IoU >= 0.5,
    and the decoder settings travel in the sidecar."""
    pytest.importorskip("streampi.decoders")
    src = bundled_model("shapes_float32").parent / "shapes_detector_float32.tflite"
    if not src.is_file():
        pytest.skip("no bundled float detector")
    out = tmp_path / "det_int8.tflite"
    r = quantize(str(src), "--calibrate", "synthetic", "--frames", "60", "--runs", "3", "-o", str(out),
                 "--min-agreement", "0.9", "--json")
    rep = json.loads(r.stdout)
    v = rep["verification"]
    assert v["kind"] == "detector", v
    det = v["agreement"]["detection"]
    assert det["float_detections"] >= 12 and det["agreement"] >= 0.9, det
    assert r.returncode == 0 and out.is_file(), r.stderr
    assert json.loads(out.with_suffix(".json").read_text())["decoder"] == \
        json.loads(src.with_suffix(".json").read_text())["decoder"]
