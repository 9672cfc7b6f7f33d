"""`streampi inspect` on the bundled models and on deliberately broken inputs (the real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

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
    assert any("TFLITE_BUILTINS_INT8" in a for a in advice)  # the converter snippet


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
