"""Backend contract tests on the bundled models (real interpreters, real files)."""

from __future__ import annotations

import os
import subprocess
import sys

import flatbuffers
import numpy as np
import pytest

from streampi import LABELS, Model, ShapesGenerator, bundled_model, load_config
from streampi.backends import BACKEND_NAMES, available_backends, get_backend
from streampi.errors import BackendUnavailable, ModelFileError, UnsupportedModelError, UnsupportedOpError
from streampi.model import _probe_in_child, check_tflite_file, dequantize
from streampi.preprocess import Preprocessor


@pytest.mark.aarch64
def test_backend_preference_and_forcing(monkeypatch):
    installed = [b.name for b in available_backends()]
    assert installed and installed == [n for n in BACKEND_NAMES if n in installed]  # in order of preference
    forced = os.environ.get("STREAMPI_BACKEND")
    assert get_backend().name == (forced or installed[0])
    monkeypatch.delenv("STREAMPI_BACKEND", raising=False)
    assert get_backend().name == installed[0]
    for name in installed:
        monkeypatch.setenv("STREAMPI_BACKEND", name)
        assert get_backend().name == name
        assert Model(bundled_model("shapes_int8")).backend.name == name
        assert get_backend("litert" if name != "litert" else installed[-1]).name != name or len(installed) == 1
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        get_backend("onnx")


def test_missing_backend_names_what_to_install():
    missing = [b for b in BACKEND_NAMES if b not in {x.name for x in available_backends()}]
    if not missing:
        pytest.skip("every backend is installed here")
    with pytest.raises(BackendUnavailable, match="pip install"):
        get_backend(missing[0])


def test_tflite_runtime_under_numpy2_is_unavailable_with_a_reason():
    """Runs where tflite-runtime is installed next to NumPy 2 (scripts/check-tflite-runtime makes one)."""
    import importlib.util

    if importlib.util.find_spec("tflite_runtime") is None or int(np.__version__.split(".")[0]) < 2:
        pytest.skip("needs tflite-runtime installed with numpy>=2")
    with pytest.raises(BackendUnavailable, match="numpy<2"):
        get_backend("tflite_runtime")
    assert "tflite_runtime" not in {b.name for b in available_backends()}


def test_int8_specs():
    m = Model(bundled_model("shapes_int8"))
    spec = m.input
    assert spec.shape == (1, 64, 64, 3) and spec.dtype == np.int8
    assert spec.shape_signature[0] == -1 and m.batch_resizable
    assert spec.scale == pytest.approx(2 / 255, rel=1e-3) and spec.zero_point == -1
    out = m.outputs[0]
    assert out.shape == (1, len(LABELS)) and out.dtype == np.int8 and out.quantized
    assert m.image_input() == (64, 64, 3)
    assert len(m.sha256) == 64
    assert "CONV_2D" in m.ops()


def test_float_and_uint8_specs():
    f = Model(bundled_model("shapes_float32"))
    assert f.input.dtype == np.float32 and not f.input.quantized
    u = Model(bundled_model("shapes_uint8"))
    assert u.input.dtype == np.uint8 and u.input.quantized


def test_batch_resize_and_invoke():
    m = Model(bundled_model("shapes_int8"), num_threads=2)
    m.resize_batch(5)
    view = m.input_view()
    assert view.shape == (5, 64, 64, 3)
    view[:] = 0
    del view  # the interpreter refuses to run while a view of its buffers is alive
    m.invoke()
    (scores,) = m.outputs_float()
    assert scores.shape == (5, 6) and scores.dtype == np.float32
    assert np.allclose(scores.sum(axis=1), 1.0, atol=0.05)  # softmax, dequantized
    with pytest.raises(ValueError):
        m.resize_batch(0)


def test_fixed_batch_cannot_resize():
    m = Model(bundled_model("vector_fixed_batch"))
    assert not m.batch_resizable
    with pytest.raises(UnsupportedModelError, match="fixed"):
        m.resize_batch(4)
    with pytest.raises(UnsupportedModelError, match="NHWC"):
        m.image_input()
    out = m.run(np.array([[-1.0, 0.0, 1.0, 2.0]], np.float32))
    assert np.allclose(out[0], [[0, 0, 2, 4]])


def test_dequantize():
    m = Model(bundled_model("shapes_int8"))
    spec = m.outputs[0]
    q = np.array([[-128, 0, 127]], np.int8)
    assert np.allclose(dequantize(q, spec), (q.astype(np.float32) - spec.zero_point) * spec.scale)


def _file(tmp_path, content):
    if content is None:
        return tmp_path / "nope.tflite"
    if content == "dir":
        return tmp_path
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    return path


def _repacked(mutate) -> bytes:
    """The bundled int8 model, unpacked, changed by ``mutate`` and packed again."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    model = schema.ModelT.InitFromPackedBuf(bundled_model().read_bytes(), 0)
    mutate(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _patched(offset: int, value: bytes) -> bytes:
    data = bytearray(bundled_model().read_bytes())
    data[offset:offset + len(value)] = value
    return bytes(data)


def _set(obj_path: str, value):
    def mutate(model):
        *parents, last = obj_path.split(".")
        obj = model
        for part in parents:
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        setattr(obj, last, value)
    return mutate


def _root_table_vtable_before_the_file() -> bytes:
    data = bundled_model().read_bytes()
    root = int.from_bytes(data[:4], "little")
    return _patched(root, (root + 64).to_bytes(4, "little", signed=True))  # vtable = root - soffset < 0


BAD_MODEL_FILES = {
    "missing": (None, "not found"),
    "directory": ("dir", "not a file"),
    "empty": (b"", "empty"),
    "garbage": (b"hello, I am not a model", "TFL3"),
    "wrong-identifier": (_patched(4, b"TFL2"), "TFL3"),
    "truncated": (bundled_model().read_bytes()[:3000], "not a valid TFLite model"),
    "truncated-half": (bundled_model().read_bytes()[: bundled_model().stat().st_size // 2], "truncated or corrupt"),
    "root-outside": (_patched(0, (1 << 30).to_bytes(4, "little")), "truncated or corrupt"),
    "vtable-before-start": (_root_table_vtable_before_the_file(), "truncated or corrupt"),
}
REPACKED_BAD = {
    "tensor-buffer-outside": ("subgraphs.0.tensors.3.buffer", 9999, "uses buffer 9999"),
    "op-input-outside": ("subgraphs.0.operators.0.inputs", [0, 4000, 2], "names tensor 4000"),
    "opcode-outside": ("subgraphs.0.operators.1.opcodeIndex", 77, "opcode 77"),
    "graph-input-outside": ("subgraphs.0.inputs", [512], "input names tensor 512"),
    "external-buffer-outside": ("buffers.1.offset", 1 << 40, "outside the"),
}


def _file(tmp_path, content):
    if content is None:
        return tmp_path / "nope.tflite"
    if content == "dir":
        return tmp_path
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    return path


@pytest.mark.aarch64
@pytest.mark.parametrize("backend", [b.name for b in available_backends()])
@pytest.mark.parametrize("case", list(BAD_MODEL_FILES))
def test_bad_model_files(tmp_path, backend, case):
    """Every backend, tflite-runtime included (it crashes on these without the check)."""
    content, match = BAD_MODEL_FILES[case]
    with pytest.raises(ModelFileError, match=match):
        Model(_file(tmp_path, content), backend=backend)


@pytest.mark.parametrize("backend", [b.name for b in available_backends()])
@pytest.mark.parametrize("case", list(REPACKED_BAD))
def test_corrupt_references_between_tables(tmp_path, backend, case):
    where, value, match = REPACKED_BAD[case]
    good = _file(tmp_path, _repacked(lambda m: None))
    assert Model(good, backend=backend).input.shape == (1, 64, 64, 3)  # repacking alone is harmless
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(_repacked(_set(where, value)))
    with pytest.raises(ModelFileError, match=match):
        Model(bad, backend=backend)


def test_a_file_changed_after_checking_is_checked_again(tmp_path):
    path = _file(tmp_path, bundled_model().read_bytes())
    check_tflite_file(path)
    path.write_bytes(bundled_model().read_bytes()[:3000])
    with pytest.raises(ModelFileError, match="truncated"):
        check_tflite_file(path)


def test_probe_in_a_child_process(tmp_path):
    """The fallback where no schema module is importable: a crash or error in the child is a bad file."""
    backend = get_backend().name
    _probe_in_child(bundled_model(), backend)  # a good model passes
    with pytest.raises(ModelFileError, match="not a valid TFLite model"):
        _probe_in_child(_file(tmp_path, bundled_model().read_bytes()[:3000]), backend)


def test_the_truncated_file_is_what_crashes_an_unchecked_tflite_runtime(tmp_path):
    """Shows why the check exists: tflite-runtime itself dies on the truncated file."""
    if "tflite_runtime" not in {b.name for b in available_backends()}:
        pytest.skip("tflite-runtime is not installed here (scripts/check-tflite-runtime installs it)")
    path = _file(tmp_path, bundled_model().read_bytes()[:3000])
    r = subprocess.run([sys.executable, "-c", "import sys, tflite_runtime.interpreter as t\n"
                        "t.Interpreter(model_path=sys.argv[1])", str(path)], capture_output=True, timeout=120)
    assert r.returncode != 0  # a signal (SIGSEGV) with tflite-runtime 2.14


def test_unresolved_custom_op_is_named():
    with pytest.raises(UnsupportedOpError, match="StreampiNoSuchOp") as info:
        Model(bundled_model("custom_op"))
    assert info.value.op == "StreampiNoSuchOp"


def test_missing_delegate_falls_back_to_cpu():
    with pytest.warns(RuntimeWarning, match="running on the CPU"):
        m = Model(bundled_model("shapes_int8"), delegates=[("libstreampi_no_such_delegate.so", {"k": "v"})])
    assert m.delegate_errors and not m.delegates
    m.set_input(np.zeros(m.input.shape, m.input.dtype))
    m.invoke()


def test_unknown_bundled_model():
    with pytest.raises(ModelFileError, match="bundled"):
        bundled_model("nope")


def test_config_from_sidecar_and_embedded_labels(tmp_path):
    cfg = load_config(bundled_model("shapes_int8"))
    assert cfg.mean == (0.5,) and cfg.std == (0.5,) and cfg.labels == LABELS and cfg.top_k == 3
    # labels embedded in the .tflite's zip are found without any sidecar
    lone = tmp_path / "m.tflite"
    lone.write_bytes(bundled_model("shapes_int8").read_bytes())
    assert load_config(lone).labels == LABELS
    assert load_config(bundled_model("shapes_float32")).labels == LABELS  # via the sidecar's file
    assert load_config(lone, top_k=1, mean=[0.1, 0.2, 0.3]).mean == (0.1, 0.2, 0.3)


def _accuracy(model_name: str, frames: np.ndarray, labels: np.ndarray) -> float:
    m = Model(bundled_model(model_name))
    cfg = load_config(m.path)
    pre = Preprocessor.for_model(m, cfg)
    m.resize_batch(len(frames))
    batch = m.input_view()
    for i, f in enumerate(frames):
        pre(f, "rgb", out=batch[i])
    del batch
    m.invoke()
    return float((m.outputs_float()[0].argmax(axis=1) == labels).mean())


def test_int8_accuracy_on_fresh_frames():
    """≥ 95 % and within 2 points of the float twin, on frames the model never saw."""
    gen = ShapesGenerator(seed=20261124)
    frames, labels = gen.batch(400, 64, 64)
    acc8 = _accuracy("shapes_int8", frames, labels)
    accf = _accuracy("shapes_float32", frames, labels)
    accu = _accuracy("shapes_uint8", frames, labels)
    print(f"accuracy int8 {acc8:.3f} float32 {accf:.3f} uint8 {accu:.3f}")
    assert acc8 >= 0.95 and accu >= 0.95
    assert abs(acc8 - accf) <= 0.02


def test_accuracy_on_camera_sized_frames():
    gen = ShapesGenerator(seed=99)
    frames, labels = gen.batch(100, 320, 240)
    assert _accuracy("shapes_int8", frames, labels) >= 0.95


def test_input_dtype_the_kernels_cannot_write():
    m = Model(bundled_model("int16_input"))
    assert m.input.dtype == np.int16
    with pytest.raises(UnsupportedModelError, match="int16 is not supported"):
        m.image_input()


def test_build_without_a_compiler_says_what_to_install():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "setup.py", "build_ext"], cwd=root, capture_output=True, text=True,
                       env={**os.environ, "CC": "/nonexistent/cc"}, timeout=120)
    assert r.returncode != 0
    assert "no C compiler found" in r.stderr and "build-essential python3-dev" in r.stderr


DIST_NAMES = {"litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime", "tensorflow": "tensorflow-cpu"}


@pytest.mark.parametrize("backend", [b.name for b in available_backends()])
def test_describe_runtime_names_where_figures_come_from(backend):
    from importlib.metadata import version

    from streampi.preprocess import _cpu_has
    from streampi.runtime_info import describe_runtime, summary_line

    info = describe_runtime(backend)
    assert info["backend"] == backend
    assert info["backend_version"] == version(DIST_NAMES[backend])  # the installed distribution's own record
    assert info["arch"] == subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()
    assert info["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert info["numpy"] == version("numpy")
    avx512 = all(_cpu_has(f) for f in ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"))
    choice = os.environ.get("STREAMPI_KERNELS")
    expected_build = ("avx512" if avx512 and choice not in ("baseline", "avx2") else "avx2") \
        if _cpu_has("avx2") and choice != "baseline" else {"aarch64": "neon", "arm64": "neon"}.get(info["arch"], "baseline")
    assert info["kernels"] in (expected_build, "baseline")  # baseline where the optimised build is not compiled
    assert f"{backend} {info['backend_version']}" in summary_line(info)


def test_describe_runtime_of_a_missing_backend_says_why():
    from streampi.runtime_info import describe_runtime

    missing = [b for b in BACKEND_NAMES if b not in {x.name for x in available_backends()}]
    if not missing:
        pytest.skip("every backend is installed here")
    info = describe_runtime(missing[0])
    assert info["backend"] is None and "pip install" in info["backend_error"]
    assert info["kernels"] and info["python"]


def test_inspect_reports_the_runtime_and_the_legacy_runtime_notes():
    r = subprocess.run([sys.executable, "-m", "streampi", "inspect", "shapes_int8", "--json"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    import json

    rep = json.loads(r.stdout)
    default = get_backend().name
    assert rep["runtime_info"]["backend"] == default and rep["runtime_info"]["python"] == sys.version.split()[0]
    legacy = [f for f in rep["findings"] if "tflite-runtime" in f["text"] and "docs/runtimes.md" in f["text"]]
    assert bool(legacy) == ("tflite_runtime" in rep["runtime"])
    text = subprocess.run([sys.executable, "-m", "streampi", "inspect", "shapes_int8"], capture_output=True,
                          text=True, timeout=300).stdout
    assert f"runtime      {default} " in text and f"kernels {rep['runtime_info']['kernels']}" in text
