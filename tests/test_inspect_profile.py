"""`streampi inspect --profile`: per-op times, the delegate's partitions as the runtime reports them,
the findings built on them, and pruning measured (the real CLI, real interpreters, models written here)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streampi import bundled_model

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
flatbuffer_utils = pytest.importorskip("ai_edge_litert.tools.flatbuffer_utils")
interpreter = pytest.importorskip("ai_edge_litert.interpreter")

TYPES = {np.dtype(np.float32): schema.TensorType.FLOAT32, np.dtype(np.int32): schema.TensorType.INT32,
         np.dtype(np.int8): schema.TensorType.INT8}


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streampi", "inspect", *args], capture_output=True, text=True,
                          timeout=timeout)


class Builder:
    """A small .tflite written op by op with the schema's own classes."""

    def __init__(self) -> None:
        self.model = schema.ModelT()
        self.model.version, self.model.operatorCodes, self.model.buffers = 3, [], [schema.BufferT()]
        self.sg = schema.SubGraphT()
        self.sg.tensors, self.sg.operators = [], []
        self.model.subgraphs = [self.sg]
        self.codes: dict[int, int] = {}

    def tensor(self, shape, data=None, dtype=np.float32, scale=None) -> int:
        t = schema.TensorT()
        t.shape, t.type, t.name, t.buffer = list(shape), TYPES[np.dtype(dtype)], f"t{len(self.sg.tensors)}", 0
        if scale is not None:
            t.quantization = schema.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [scale], [0]
        if data is not None:
            b = schema.BufferT()
            b.data = np.ascontiguousarray(data, dtype).view(np.uint8).ravel()
            self.model.buffers.append(b)
            t.buffer = len(self.model.buffers) - 1
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def op(self, name, inputs, outputs, options=None, options_type=None) -> None:
        code = getattr(schema.BuiltinOperator, name)
        if code not in self.codes:
            oc = schema.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            self.model.operatorCodes.append(oc)
            self.codes[code] = len(self.model.operatorCodes) - 1
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes[code], list(inputs), list(outputs)
        if options is not None:
            o.builtinOptions, o.builtinOptionsType = options, getattr(schema.BuiltinOptions, options_type)
        self.sg.operators.append(o)

    def add(self, x, shape) -> int:
        y = self.tensor(shape)
        self.op("ADD", [x, self.tensor([shape[-1]], np.ones(shape[-1], np.float32))], [y], schema.AddOptionsT(),
                "AddOptions")
        return y

    def write(self, path, inputs, outputs):
        self.sg.inputs, self.sg.outputs = list(inputs), list(outputs)
        path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(self.model)))
        return path


def delegate_nodes(path) -> int:
    """DELEGATE nodes of the model as this test's own interpreter loads it (XNNPACK by default)."""
    interp = interpreter.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    return sum(1 for o in interp._get_ops_details() if o["op_name"] == "DELEGATE")


@pytest.mark.parametrize("name,outside", [("shapes_int8", ["SOFTMAX"]), ("shapes_float32", [])])
def test_profile_of_the_bundled_models(name, outside):
    r = run(name, "--profile", "--runs", "5", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    prof = rep["profile"]
    ops = rep["static"]["ops"]
    # every op of the flatbuffer appears once, in order, with its time
    assert [o["index"] for o in prof["ops"]] == list(range(sum(ops.values())))
    from collections import Counter
    assert Counter(o["op"] for o in prof["ops"]) == Counter(ops)
    assert all(o["ms"] > 0 and "error" not in o for o in prof["ops"])
    assert sum(o["share"] for o in prof["ops"]) == pytest.approx(1.0)
    assert sum(o["ms"] for o in prof["ops"]) == pytest.approx(prof["sum_ms"])
    assert prof["invoke_ms"] > 0
    # the runtime's own partition report was read, and agrees with what is known of the model
    d = prof["delegation"]
    assert d["log_lines"] and "TfLiteXNNPackDelegate" in d["log_lines"][0]
    assert d["delegate_nodes"] == delegate_nodes(bundled_model(name))
    assert d["of"] == d["nodes"] == len(prof["ops"])
    # what the runtime took equals the ops XNNPACK takes when cut alone (XNNPACK has no int8 SOFTMAX)
    assert d["replaced"] == d["ops_delegated_alone"] == len(prof["ops"]) - len(d["ops_outside"])
    assert [prof["ops"][i]["op"] for i in d["ops_outside"]] == outside
    # one delegated piece, plus the last op on the interpreter's kernels where it is left out
    assert d["delegate_nodes"] == 1 and d["partitions"] == 1 + len(outside)
    assert not any("splits the graph" in f["text"] or "pieces" in f["text"] for f in rep["findings"])
    # the text report prints the same figures
    text = run(name, "--profile", "--runs", "5").stdout
    assert d["log_lines"][0].split("VERBOSE: ")[-1] in text
    assert "sum of the ops timed alone" in text and "the whole invoke" in text
    top = max(prof["ops"], key=lambda o: o["ms"])
    assert f"{top['index']:>4}  {top['op']:<26}" in text


def test_an_op_xnnpack_refuses_splits_the_graph(tmp_path):
    """SIGN runs on LiteRT's builtin kernels, XNNPACK does not take it: ADD | SIGN | ADD is cut in two."""
    b = Builder()
    shape = [1, 8, 8, 4]
    x = b.tensor(shape)
    y = b.tensor(shape)
    b.op("SIGN", [b.add(x, shape)], [y])
    path = b.write(tmp_path / "split.tflite", [x], [b.add(y, shape)])
    assert delegate_nodes(path) == 2  # the premise, as this test's own interpreter sees it
    rep = json.loads(run(str(path), "--profile", "--runs", "5", "--json").stdout)
    d = rep["profile"]["delegation"]
    assert (d["replaced"], d["of"], d["partitions"], d["delegate_nodes"]) == (2, 3, 3, 2)
    assert d["ops_outside"] == [1]
    assert [o.get("delegated") for o in rep["profile"]["ops"]] == [True, False, True]
    split = [f["text"] for f in rep["findings"] if "pieces" in f["text"]]
    assert len(split) == 1 and "SIGN (op 1)" in split[0] and "2 pieces (3 partitions" in split[0]


def test_the_same_model_without_the_refused_op_is_whole(tmp_path):
    b = Builder()
    shape = [1, 8, 8, 4]
    x = b.tensor(shape)
    y = b.tensor(shape)
    b.op("ABS", [b.add(x, shape)], [y])
    path = b.write(tmp_path / "whole.tflite", [x], [b.add(y, shape)])
    d = json.loads(run(str(path), "--profile", "--runs", "5", "--json").stdout)["profile"]["delegation"]
    assert (d["replaced"], d["of"], d["partitions"], d["delegate_nodes"], d["ops_outside"]) == (3, 3, 1, 1, [])


def test_a_resize_at_the_input_is_pointed_out(tmp_path):
    b = Builder()
    x = b.tensor([1, 96, 96, 3])
    y = b.tensor([1, 48, 48, 3])
    b.op("RESIZE_BILINEAR", [x, b.tensor([2], np.array([48, 48], np.int32), np.int32)], [y],
         schema.ResizeBilinearOptionsT(), "ResizeBilinearOptions")
    path = b.write(tmp_path / "resize.tflite", [x], [b.add(y, [1, 48, 48, 3])])
    rep = json.loads(run(str(path), "--profile", "--runs", "5", "--json").stdout)
    found = [f["text"] for f in rep["findings"] if "RESIZE_BILINEAR (op 0)" in f["text"]]
    assert found and "48×48" in found[0] and "streampi's kernels" in found[0]


def test_a_float_island_in_an_int8_graph_is_costed(tmp_path):
    b = Builder()
    shape = [1, 16, 16, 8]
    x, f, g, y = (b.tensor(shape, dtype=np.int8, scale=0.05), b.tensor(shape), b.tensor(shape),
                  b.tensor(shape, dtype=np.int8, scale=0.05))
    b.op("DEQUANTIZE", [x], [f])
    b.op("ABS", [f], [g])
    b.op("QUANTIZE", [g], [y])
    path = b.write(tmp_path / "island.tflite", [x], [y])
    rep = json.loads(run(str(path), "--profile", "--runs", "5", "--json").stdout)
    island = [f["text"] for f in rep["findings"] if f["text"].startswith("float island")]
    cost = sum(o["ms"] for o in rep["profile"]["ops"])
    assert len(island) == 1 and "DEQUANTIZE, ABS, QUANTIZE (ops 0-2)" in island[0]
    assert f"{cost:.3f} ms, 100% of the ops' time" in island[0]


def _pruned_shapes(zeros: float, sparse: bool):
    """shapes_float32 with ``zeros`` of each filter's weights zeroed (magnitude pruning), optionally
    stored sparse; returns the model and the exact zero fraction of each filter tensor."""
    from streampi.tools.pruning import store_sparse

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(bundled_model("shapes_float32").read_bytes()))
    sg = model.subgraphs[0]
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    fractions, filters = {}, []
    for op in sg.operators:
        name = codes[flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])]
        if name in ("CONV_2D", "FULLY_CONNECTED"):
            t = sg.tensors[op.inputs[1]]
            w = np.asarray(model.buffers[t.buffer].data, np.uint8).view(np.float32).copy()
            w[np.abs(w) < np.quantile(np.abs(w), zeros)] = 0.0
            model.buffers[t.buffer].data = w.view(np.uint8)
            fractions[t.name.decode() if isinstance(t.name, bytes) else t.name] = float(np.mean(w == 0))
            filters.append(int(op.inputs[1]))
    if sparse:
        for i in filters:
            store_sparse(model, i)
    return model, fractions


def test_sparsity_of_a_pruned_model_stored_sparse(tmp_path):
    model, fractions = _pruned_shapes(0.7, sparse=True)
    path = tmp_path / "pruned_sparse.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    dense_model, _ = _pruned_shapes(0.7, sparse=False)
    dense_path = tmp_path / "pruned_dense.tflite"
    dense_path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(dense_model)))
    # the stored-sparse file computes what the dense one does (the encoding is read by the runtime's DENSIFY)
    outs = []
    for p in (dense_path, path):
        interp = interpreter.Interpreter(model_path=str(p))
        interp.allocate_tensors()
        x = np.random.default_rng(3).random((1, 64, 64, 3), dtype=np.float32)
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)

    r = run(str(path), "--profile", "--runs", "5", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    sp = rep["static"]["sparsity"]
    assert sp["stored_sparse"] and sp["densify_ops"] == len(fractions) == 9
    got = {t["tensor"]: t for t in sp["tensors"]}
    assert set(got) == set(fractions)
    for name, fraction in fractions.items():
        assert got[name]["zero_fraction"] == pytest.approx(fraction)
        assert got[name]["stored_sparse"] and rep["profile"]["ops"][got[name]["densify_op"]]["op"] == "DENSIFY"
    # measured against a dense copy of itself, each in its own process
    pr = rep["pruning"]
    assert pr["densify_ops"] == 9
    assert pr["as_stored"]["file_bytes"] == path.stat().st_size
    assert pr["dense_copy"]["file_bytes"] > 1.5 * pr["as_stored"]["file_bytes"]
    assert pr["as_stored"]["invoke_ms"] > 0 and pr["dense_copy"]["invoke_ms"] > 0
    text = [f["text"] for f in rep["findings"] if f["text"].startswith("stored-sparse weights (9 DENSIFY ops)")]
    assert len(text) == 1 and ("runs them sparse" in text[0]) == pr["runs_sparse"]
    # the DENSIFY ops run once, at load: each is listed in the profile as such
    assert all(o["load_time_only"] for o in rep["profile"]["ops"] if o["op"] == "DENSIFY")


def test_dense_copy_is_the_same_model_without_densify(tmp_path):
    from streampi.backends import get_backend
    from streampi.tools.profile import op_names, read_model
    from streampi.tools.pruning import dense_copy

    model, _ = _pruned_shapes(0.5, sparse=True)
    content = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    dense = dense_copy(content, get_backend("litert"))
    assert "DENSIFY" not in op_names(read_model(dense)) and op_names(read_model(content)).count("DENSIFY") == 9
    outs = []
    for c in (content, dense):
        interp = interpreter.Interpreter(model_content=c)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], np.full((1, 64, 64, 3), 0.3, np.float32))
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_sparse_inference_probe_is_measured():
    from streampi.backends import get_backend
    from streampi.tools.pruning import sparse_inference_probe

    probe = sparse_inference_probe(get_backend("litert"), runs=5)
    assert probe["dense_ms"] > 0 and probe["sparse_ms"] > 0
    assert probe["speedup"] == pytest.approx(probe["dense_ms"] / probe["sparse_ms"])
    assert probe["effect"] in ("faster", "slower", "same")
    assert probe["sparse_bytes"] < 0.6 * probe["dense_bytes"]  # 80 % zeros stored as values + indices
