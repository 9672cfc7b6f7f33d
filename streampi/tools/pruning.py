"""What pruning does on this runtime, measured: ``streampi inspect MODEL --pruning``.

Pruning zeroes weights; what that buys depends on how the zeros are stored and on the runtime.
A model whose weights are *stored* sparse (a sparsity encoding plus a ``DENSIFY`` op, from the
converter's ``EXPERIMENTAL_SPARSITY``) is compared with a dense copy of itself (the same weights
written out dense, the ``DENSIFY`` ops gone): file size, load time, resident memory and invoke
time, each variant loaded in its own child process. Whether XNNPACK's sparse inference is on in
the installed runtime (it applies to float 1×1 convolutions at ≥ 2/3 zeros) is measured on a
small float model made here: a 3×3 stride-2 convolution, two 1×1 convolutions with 80 % zeros
and a global average, stored dense and stored sparse, timed with XNNPACK.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import Backend, get_backend
from .profile import _input_data, _median_invoke_ms, invoked_once, op_names, read_model, to_bytes

__all__ = ["dense_copy", "measure_file", "pruning_report", "sparse_inference_probe", "store_sparse"]

_TYPES = {np.dtype(np.float32): "FLOAT32", np.dtype(np.int8): "INT8", np.dtype(np.int32): "INT32"}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _opcode(model: Any, name: str) -> int:
    schema = _schema()
    code = getattr(schema.BuiltinOperator, name)
    for k, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
            return k
    oc = schema.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def store_sparse(model: Any, tensor_index: int) -> None:
    """Store a constant weight tensor of the main subgraph sparse, in place: every dimension dense but
    the last, which is compressed (CSR: only the non-zeros and their positions are kept), read through
    a new ``DENSIFY`` op, as the converter's ``EXPERIMENTAL_SPARSITY`` writes pruned weights."""
    schema = _schema()
    sg = model.subgraphs[0]
    t = sg.tensors[tensor_index]
    dtype = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT8: np.int8}[t.type]
    dense = np.asarray(model.buffers[t.buffer].data, np.uint8).view(dtype).reshape(t.shape)
    rows = dense.reshape(-1, dense.shape[-1])
    segments = np.concatenate([[0], np.cumsum(np.count_nonzero(rows, axis=1))]).astype(np.int32)
    indices = np.concatenate([np.flatnonzero(r) for r in rows]).astype(np.int32)
    values = rows[rows != 0]
    sparsity = schema.SparsityParametersT()
    sparsity.traversalOrder = list(range(len(t.shape)))
    sparsity.blockMap = []
    sparsity.dimMetadata = []
    for d, size in enumerate(t.shape):
        dm = schema.DimensionMetadataT()
        if d < len(t.shape) - 1:
            dm.format, dm.denseSize = schema.DimensionType.DENSE, int(size)
        else:
            dm.format = schema.DimensionType.SPARSE_CSR
            dm.arraySegmentsType = dm.arrayIndicesType = schema.SparseIndexVector.Int32Vector
            dm.arraySegments, dm.arrayIndices = schema.Int32VectorT(), schema.Int32VectorT()
            dm.arraySegments.values, dm.arrayIndices.values = segments.tolist(), indices.tolist()
        sparsity.dimMetadata.append(dm)
    buf = schema.BufferT()
    buf.data = np.ascontiguousarray(values).view(np.uint8)
    model.buffers.append(buf)
    stored = schema.TensorT()
    stored.shape, stored.type, stored.name = list(t.shape), t.type, f"{t.name}_sparse"
    stored.buffer, stored.sparsity, stored.quantization = len(model.buffers) - 1, sparsity, t.quantization
    sg.tensors.append(stored)
    if sum(1 for other in sg.tensors if other.buffer == t.buffer) == 1:
        model.buffers[t.buffer] = schema.BufferT()  # the dense values are gone from the file
    t.buffer = 0  # the dense tensor is now what DENSIFY writes
    op = schema.OperatorT()
    op.opcodeIndex = _opcode(model, "DENSIFY")
    op.inputs, op.outputs = [len(sg.tensors) - 1], [tensor_index]
    op.builtinOptionsType = schema.BuiltinOptions.DensifyOptions
    op.builtinOptions = schema.DensifyOptionsT()
    sg.operators.insert(0, op)


def dense_copy(content: bytes, backend: Backend) -> bytes:
    """The model with every stored-sparse weight written out dense and its DENSIFY op removed: the
    runtime's own DENSIFY kernel decodes the weights (one invoke, every tensor kept)."""
    model = read_model(content)
    names = op_names(model)
    sg = model.subgraphs[0]
    densify = [i for i, n in enumerate(names) if n == "DENSIFY"]
    if not densify:
        return content
    interp = invoked_once(content, backend)  # the runtime's DENSIFY kernel decodes the weights
    schema = _schema()
    for i in densify:
        out = int(sg.operators[i].outputs[0])
        buf = schema.BufferT()
        buf.data = np.ascontiguousarray(interp.get_tensor(out)).view(np.uint8).ravel()
        model.buffers.append(buf)
        sg.tensors[out].buffer = len(model.buffers) - 1
        stored = sg.tensors[int(sg.operators[i].inputs[0])]
        model.buffers[stored.buffer] = schema.BufferT()
        stored.sparsity = None  # its index arrays would stay in the file otherwise
    sg.operators = [op for i, op in enumerate(sg.operators) if i not in densify]
    return to_bytes(model)


# -- measuring a file in a child process ----------------------------------------------------------------
def _measure_child(path: str, backend_name: str, runs: int) -> None:
    from ..measure import rss_bytes

    backend = get_backend(backend_name)
    before = rss_bytes()
    t0 = time.perf_counter()
    interp = backend.interpreter_class(model_path=path, num_threads=1)
    interp.allocate_tensors()
    load_ms = (time.perf_counter() - t0) * 1e3
    loaded = rss_bytes()
    details = interp.get_input_details()
    for d, x in zip(details, _input_data(details)):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    invoked = rss_bytes()
    print(json.dumps({"load_ms": load_ms, "invoke_ms": _median_invoke_ms(interp, runs),
                      "rss_after_load_bytes": (loaded - before) if before and loaded else None,
                      "rss_after_invoke_bytes": (invoked - before) if before and invoked else None}))


def measure_file(path: Path, backend: Backend, runs: int, timeout: float = 120.0) -> dict[str, Any]:
    """Size, load time, resident memory (after load, after the first invoke) and median invoke time of
    one model file at 1 thread, loaded in a child process of its own (so memory is its alone)."""
    r = subprocess.run([sys.executable, "-m", "streampi.tools.pruning", str(path), backend.name, str(runs)],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"measuring {Path(path).name} failed: {last}"}
    return {"file_bytes": Path(path).stat().st_size, **json.loads(r.stdout.strip().splitlines()[-1])}


# -- does XNNPACK's sparse inference apply here? ---------------------------------------------------------
def _probe_model(sparse: bool, zeros: float = 0.8, size: int = 112, channels: int = 128) -> bytes:
    """A float model made for the question: 3×3 stride-2 convolution on 3 channels, two 1×1 convolutions
    with ``zeros`` of their weights zero (stored sparse or dense), a global average."""
    schema = _schema()
    rng = np.random.default_rng(0)
    model = schema.ModelT()
    model.version, model.operatorCodes, model.buffers = 3, [], [schema.BufferT()]
    sg = schema.SubGraphT()
    sg.tensors, sg.operators = [], []
    model.subgraphs = [sg]

    def tensor(shape, data=None, dtype=np.float32):
        t = schema.TensorT()
        t.shape, t.type, t.name, t.buffer = list(shape), getattr(schema.TensorType, _TYPES[np.dtype(dtype)]), \
            f"t{len(sg.tensors)}", 0
        if data is not None:
            b = schema.BufferT()
            b.data = np.ascontiguousarray(data, dtype).view(np.uint8).ravel()
            model.buffers.append(b)
            t.buffer = len(model.buffers) - 1
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    def op(name, inputs, outputs, options, options_type):
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = _opcode(model, name), list(inputs), list(outputs)
        o.builtinOptions, o.builtinOptionsType = options, getattr(schema.BuiltinOptions, options_type)
        sg.operators.append(o)

    def conv(x, cin, cout, k, stride, hw, prune):
        w = rng.normal(0, 0.1, (cout, k, k, cin)).astype(np.float32)
        if prune:
            w[np.abs(w) < np.quantile(np.abs(w), zeros)] = 0.0
        opts = schema.Conv2DOptionsT()
        opts.padding, opts.strideH, opts.strideW = schema.Padding.SAME, stride, stride
        opts.fusedActivationFunction = schema.ActivationFunctionType.RELU
        opts.dilationHFactor = opts.dilationWFactor = 1
        wt = tensor(w.shape, w)
        y = tensor([1, hw, hw, cout])
        op("CONV_2D", [x, wt, tensor([cout], np.zeros(cout, np.float32))], [y], opts, "Conv2DOptions")
        return y, wt

    x = tensor([1, size, size, 3])
    h, _ = conv(x, 3, 32, 3, 2, size // 2, False)
    h, w1 = conv(h, 32, channels, 1, 1, size // 2, True)
    h, w2 = conv(h, channels, channels, 1, 1, size // 2, True)
    out = tensor([1, channels])
    mean = schema.ReducerOptionsT()
    mean.keepDims = False
    op("MEAN", [h, tensor([2], np.array([1, 2], np.int32), np.int32)], [out], mean, "ReducerOptions")
    sg.inputs, sg.outputs = [x], [out]
    if sparse:
        store_sparse(model, w2)
        store_sparse(model, w1)
    return to_bytes(model)


def sparse_inference_probe(backend: Backend, runs: int = 30) -> dict[str, Any]:
    """Invoke time with XNNPACK of the probe model stored dense and stored sparse (80 % zeros in its
    1×1 convolutions), each the best of 3 medians of ``runs`` invokes in a child process, alternated:
    sparse inference pays in this runtime when the sparse one is clearly (1.2×) faster."""
    with tempfile.TemporaryDirectory(prefix="streampi-sparse-") as tmp:
        paths = {}
        for kind in ("dense", "sparse"):
            paths[kind] = Path(tmp) / f"probe_{kind}.tflite"
            paths[kind].write_bytes(_probe_model(kind == "sparse"))
        # alternated, best of 3 medians each: the machine may be busy with other work for a moment
        rounds: dict[str, list[dict[str, Any]]] = {"dense": [], "sparse": []}
        for _ in range(3):
            for kind, p in paths.items():
                rounds[kind].append(measure_file(p, backend, runs))
    errors = [r["error"] for v in rounds.values() for r in v if "error" in r]
    if errors:
        return {"error": errors[0]}
    got = {kind: min(v, key=lambda r: r["invoke_ms"]) for kind, v in rounds.items()}
    speedup = got["dense"]["invoke_ms"] / got["sparse"]["invoke_ms"]
    # within ±20 %: the runtime densifies the weights and runs the same dense kernels either way
    effect = "faster" if speedup >= 1.2 else "slower" if speedup <= 1 / 1.2 else "same"
    return {"dense_ms": got["dense"]["invoke_ms"], "sparse_ms": got["sparse"]["invoke_ms"], "speedup": speedup,
            "dense_bytes": got["dense"]["file_bytes"], "sparse_bytes": got["sparse"]["file_bytes"],
            "zeros": 0.8, "effect": effect, "enabled": effect == "faster",
            "model": "float 1×112×112×3 → 3×3/2 conv (32) → 1×1 conv (128) → 1×1 conv (128) → global mean"}


def pruning_report(path: Path, backend: Backend, runs: int = 30) -> dict[str, Any]:
    """The stored-sparse model against its dense copy (when it has DENSIFY ops), and the probe."""
    content = Path(path).read_bytes()
    names = op_names(read_model(content))
    rep: dict[str, Any] = {"densify_ops": names.count("DENSIFY")}
    if rep["densify_ops"]:
        with tempfile.TemporaryDirectory(prefix="streampi-dense-") as tmp:
            dense = Path(tmp) / "dense.tflite"
            dense.write_bytes(dense_copy(content, backend))
            rep["as_stored"] = measure_file(Path(path), backend, runs)
            rep["dense_copy"] = measure_file(dense, backend, runs)
        a, d = rep["as_stored"], rep["dense_copy"]
        if "error" not in a and "error" not in d:
            faster = d["invoke_ms"] / a["invoke_ms"]
            rep["invoke_speedup"] = faster
            rep["runs_sparse"] = faster >= 1.2
    rep["probe"] = sparse_inference_probe(backend, runs)
    return rep


def _mib(b: int | None) -> str:
    return f"{b / 2**20:.1f} MiB" if b is not None else "?"


def pruning_findings(rep: dict[str, Any], sparsity: dict[str, Any] | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    probe = rep.get("probe", {})
    if "error" in probe:
        out.append(("advice", f"XNNPACK's sparse inference could not be measured: {probe['error']}"))
        probe_text = ""
    else:
        state = {"faster": "pays on this machine", "slower": "takes another path here, and it is slower",
                 "same": "makes no measurable difference to the invoke here"}[probe["effect"]]
        probe_text = (f"storing pruned weights sparse {state}: a float model made for the measurement, whose 1×1 "
                      f"convolutions are 80% zeros, invokes with XNNPACK in {probe['sparse_ms']:.2f} ms stored sparse "
                      f"against {probe['dense_ms']:.2f} ms stored dense ({probe['speedup']:.2f}×, measured; XNNPACK's "
                      f"sparse kernels are tuned for ARM NEON, so measure on the Pi itself)")
    a, d = rep.get("as_stored"), rep.get("dense_copy")
    if a and d and "error" not in a and "error" not in d:
        verdict = ("runs them sparse: the file as stored invokes faster than its dense copy" if rep["runs_sparse"]
                   else "densifies them at load and runs them dense: the file as stored is no faster than its "
                        "dense copy")
        out.append(("ok" if rep["runs_sparse"] else "advice",
                    f"stored-sparse weights ({rep['densify_ops']} DENSIFY ops): this runtime {verdict} "
                    f"(measured, each in its own process: as stored {a['file_bytes'] / 1024:.0f} kB, load "
                    f"{a['load_ms']:.1f} ms, resident +{_mib(a['rss_after_invoke_bytes'])}, invoke "
                    f"{a['invoke_ms']:.2f} ms; dense copy {d['file_bytes'] / 1024:.0f} kB, load {d['load_ms']:.1f} ms, "
                    f"resident +{_mib(d['rss_after_invoke_bytes'])}, invoke {d['invoke_ms']:.2f} ms)"
                    + (f". {probe_text}" if probe_text else "")))
    elif probe_text:
        zeros = sparsity.get("conv1x1_zero_fraction", 0.0) if sparsity else 0.0
        what = (f"this model's 1×1 convolutions are {zeros:.0%} zeros" if sparsity and sparsity.get("conv1x1_weights")
                else "this model has no float 1×1 convolutions to prune")
        tail = {"faster": "", "same": "; here pruning stored sparse shrinks the file, not the invoke",
                "slower": "; here pruning stored sparse shrinks the file and slows the invoke"}[probe["effect"]]
        out.append(("ok" if probe["enabled"] else "advice", f"pruning: {probe_text}; {what}{tail}"))
    return out


if __name__ == "__main__":  # the child of measure_file
    _measure_child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
