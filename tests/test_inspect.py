"""`streampi inspect` on the bundled models and on deliberately broken inputs (the real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streampi import bundled_model


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streampi", "inspect", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_int8_model_report():
    r = run("shapes_int8")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "full-integer" in out and "[1, 64, 64, 3] int8" in out and "zero point -1" in out
    assert "CONV_2D×8" in out and "custom ops   none" in out
    assert "6 embedded" in out and "circle" in out
    assert "after allocate_tensors" in out and "after the first invoke" in out


def test_json_report_of_float_model_advises_quantization():
    r = run("shapes_float32", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["static"]["quantization"].startswith("float32")
    assert rep["static"]["parameters"] == 211_096
    assert rep["runtime"]["litert"]["loads"] and rep["runtime"]["litert"]["servable"]
    advice = [f["text"] for f in rep["findings"] if f["severity"] == "advice"]
    # the exact command line, runnable as printed once FRAMES is named
    line = next(a for a in advice if "streampi quantize" in a).split("\n")[1].strip()
    assert line == f"streampi quantize {bundled_model('shapes_float32')} --calibrate FRAMES -o shapes_float32_int8.tflite"
    from streampi.cli import build_parser
    args = build_parser().parse_args(line.replace("FRAMES", "synthetic").split()[1:])
    assert args.calibrate == "synthetic" and str(args.output) == "shapes_float32_int8.tflite"


@pytest.mark.parametrize("model,kind", [("shapes_float16", "float16"), ("shapes_dynamic", "dynamic-range"),
                                        ("shapes_uint8", "full-integer")])
def test_quantization_kinds(model, kind):
    rep = json.loads(run(model, "--json").stdout)
    assert rep["static"]["quantization"].startswith(kind)


def test_memory_budget():
    ok = json.loads(run("mobilenet_v2_int8", "--json", "--memory", "2G").stdout)
    assert any(f["text"].startswith("memory") and "fits" in f["text"] for f in ok["findings"])
    r = run("mobilenet_v2_int8", "--json", "--memory", "20M")
    assert r.returncode == 1
    tight = json.loads(r.stdout)
    assert any(f["severity"] == "problem" and "does NOT fit" in f["text"] for f in tight["findings"])


def test_input_larger_than_frames():
    rep = json.loads(run("mobilenet_v2_int8", "--json", "--frame-size", "160x120").stdout)
    assert any("larger than the frames you send" in f["text"] for f in rep["findings"])


def test_custom_op_model_is_a_problem():
    r = run("custom_op")
    assert r.returncode == 1
    assert "StreampiNoSuchOp" in r.stdout and "not resolved by: litert" in r.stdout


def test_non_image_model_is_a_problem():
    r = run("vector_fixed_batch")
    assert r.returncode == 1 and "cannot feed it" in r.stdout


def test_missing_delegate_falls_back(tmp_path):
    r = run("shapes_int8", "--delegate", str(tmp_path / "libnope.so") + ":a=1")
    assert r.returncode == 0
    assert "running on the CPU" in r.stdout


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"definitely not a flatbuffer", "not a TFLite model"),
    ("truncated", "not a valid TFLite model"),
])
def test_broken_files(tmp_path, content, match):
    path = tmp_path / "broken.tflite"
    path.write_bytes(bundled_model().read_bytes()[:4000] if content == "truncated" else content)
    r = run(str(path))
    assert r.returncode == 2
    assert match in r.stderr and "Traceback" not in r.stderr


def test_directory_and_missing(tmp_path):
    r = run(str(tmp_path))
    assert r.returncode == 2 and "not a file" in r.stderr
    r = run(str(tmp_path / "nope.tflite"))
    assert r.returncode == 2 and "not found" in r.stderr


def test_bench_recommends_servable_flags():
    r = run("shapes_int8", "--bench", "--runs", "10", "--seconds", "0.2", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)["bench"]["recommended"]
    assert rec["workers"] >= 1 and rec["max_batch"] in (1, 2, 4)
    # the flags are accepted by `streampi serve` as they are
    from streampi.cli import build_parser
    args = build_parser().parse_args(["serve", "shapes_int8", *rec["flags"].split()])
    assert args.workers == rec["workers"] and args.max_batch == rec["max_batch"]


def test_int8_model_gets_no_quantization_advice():
    rep = json.loads(run("shapes_int8", "--json").stdout)
    assert not any("streampi quantize" in f["text"] for f in rep["findings"])


def test_dynamic_range_model_is_pointed_at_its_float_model():
    rep = json.loads(run("shapes_dynamic", "--json").stdout)
    assert any("from the float model" in f["text"] and "streampi quantize" in f["text"] for f in rep["findings"])


def test_weight_sparsity_of_a_pruned_model(tmp_path):
    """Zero a known share of every filter (magnitude pruning, as tensorflow-model-optimization does)."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated", reason="LiteRT's model tools write the file")
    flatbuffer_utils = pytest.importorskip("ai_edge_litert.tools.flatbuffer_utils")

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(bundled_model("shapes_float32").read_bytes()))
    sg = model.subgraphs[0]
    filters = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    zeroed = total = 0
    for op in sg.operators:
        if codes[flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])] in filters:
            buf = model.buffers[sg.tensors[op.inputs[1]].buffer]
            w = np.asarray(buf.data, np.uint8).view(np.float32).copy()
            w[np.abs(w) < np.quantile(np.abs(w), 0.8)] = 0.0
            zeroed, total = zeroed + int(np.sum(w == 0)), total + w.size
            buf.data = w.view(np.uint8)
    pruned = tmp_path / "pruned.tflite"
    pruned.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    r = run(str(pruned), "--json")
    assert r.returncode == 0, r.stderr
    sp = json.loads(r.stdout)["static"]["sparsity"]
    assert sp["filter_weights"] == total == 210_672
    assert sp["zero_fraction"] == pytest.approx(zeroed / total) and 0.79 < sp["zero_fraction"] < 0.81
    assert not sp["sparse_inference_possible"] and "not stored sparse" in " ".join(sp["why_not"])
    text = run(str(pruned)).stdout
    assert "80.0% zero" in text and "XNNPACK sparse inference: no" in text


def test_sparsity_of_the_dense_models():
    sp = json.loads(run("mobilenet_v2_int8", "--json").stdout)["static"]["sparsity"]
    assert sp["conv1x1_weights"] > 0 and sp["zero_fraction"] < 0.05
    assert "its weights are integer (sparse inference is float only)" in sp["why_not"]


def test_bench_measures_the_int8_speedup():
    pytest.importorskip("ai_edge_quantizer")
    r = run("shapes_float32", "--bench", "--runs", "10", "--seconds", "0.2", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    est = rep["int8_estimate"]
    assert est["int8_bytes"] < 0.35 * rep["file_bytes"]
    # the scratch copy is int8 and invokes faster than the float model (medians of 10 invokes each;
    # shapes_float32's int8 copy is about 3x faster on x86-64 and aarch64): what the finding tells the user
    assert est["int8_ms"] < est["float_ms"] and est["speedup"] > 1
    assert f"{est['speedup']:.1f}× faster" in " ".join(f["text"] for f in rep["findings"])
    assert any("Measured here on an int8 version" in f["text"] for f in rep["findings"])
