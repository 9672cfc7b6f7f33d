"""Where the time goes inside a model, behind ``streampi inspect MODEL --profile``.

LiteRT's Python API has no per-op profiler, so each op is cut out of the flatbuffer into a
one-op model of its own (its real input and output shapes, types and quantization; constant
inputs kept as buffers, and weights that are only decoded at load, float16 ``DEQUANTIZE`` or
``DENSIFY`` of a constant, kept with the op that reads them) and timed alone: the median of N
invokes at 1 thread, fed with the values that op sees in a real run of the whole model.
What those figures are not: an op timed alone misses what the runtime does across ops
(XNNPACK fuses activations and keeps data in cache between ops of one partition, and the
interpreter copies tensors in and out of each partition), so the report prints the sum of the
ops next to the whole model's invoke, measured the same way.

Which ops XNNPACK takes is read twice: the runtime's own partition report ("Replacing N out of
M node(s) with delegate (TfLiteXNNPackDelegate) node, yielding P partitions"), which LiteRT
logs at VERBOSE level, below its default INFO, so a child process lowers the level of the
runtime's logger and reads the line from its stderr; and, per op, whether the delegate takes
that op's one-op model. Every figure is measured on this machine.
"""

from __future__ import annotations

import copy
import ctypes
import json
import re
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import Backend, get_backend

__all__ = ["cut_op", "delegation_report", "profile", "profile_findings", "read_model"]

#: Ops that only decode a constant weight at load (the runtime evaluates them once).
LOAD_TIME_OPS = ("DEQUANTIZE", "DENSIFY")
RESIZE_OPS = ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")
#: What to do about an op that keeps XNNPACK from taking the graph whole, where a rewrite is known.
REWRITES = {
    "SHAPE": "fix the input shape at export so that shapes are constants (no SHAPE/PACK feeding a RESHAPE)",
    "PACK": "fix the input shape at export so that the new shape of the RESHAPE is a constant",
    "RESHAPE": "give the RESHAPE a constant new shape (fix the input shape at export)",
    "LOG": "move the box decoding (LOG/EXP) out of the model, into post-processing",
    "EXP": "move the box decoding (LOG/EXP) out of the model, into post-processing",
    "ARG_MAX": "take the arg-max of the scores after the model (streampi's post-processing does)",
    "ARG_MIN": "take the arg-min after the model, in post-processing",
    "GATHER": "slice with STRIDED_SLICE (constant begin/end) instead of GATHER, or move it to post-processing",
    "TFLite_Detection_PostProcess": "it is the last op, so it does not split the graph",
    "SQUARED_DIFFERENCE": "write it as SUB then MUL, which XNNPACK takes",
    "L2_NORMALIZATION": "normalise in post-processing",
    "CUMSUM": "move the cumulative sum to post-processing",
    "TOPK_V2": "take the top-k in post-processing",
    "RESIZE_NEAREST_NEIGHBOR": "use RESIZE_BILINEAR or a TRANSPOSE_CONV with a constant filter",
}


# -- the flatbuffer --------------------------------------------------------------------------------------
def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def read_model(path_or_bytes: Path | bytes) -> Any:
    """The model as the schema's mutable Python objects (``ModelT``)."""
    from ai_edge_litert.tools import flatbuffer_utils

    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def to_bytes(model: Any) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_names(model: Any) -> list[str]:
    """The op name of every operator of the main subgraph, in order."""
    from ai_edge_litert.tools import flatbuffer_utils

    names = {v: k for k, v in vars(_schema().BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = flatbuffer_utils.get_builtin_code_from_operator_code(code)
        if builtin == _schema().BuiltinOperator.CUSTOM:
            custom = code.customCode
            out.append(custom.decode() if isinstance(custom, bytes) else str(custom or "CUSTOM"))
        else:
            out.append(names.get(builtin, f"BUILTIN_{builtin}"))
    return out


def _is_constant(model: Any, tensor: Any) -> bool:
    buf = model.buffers[tensor.buffer] if 0 <= tensor.buffer < len(model.buffers) else None
    return buf is not None and buf.data is not None and len(buf.data) > 0


def _load_time_chain(model: Any, names: list[str], index: int) -> list[int]:
    """Operators before ``index`` that only decode a constant it reads (DEQUANTIZE/DENSIFY of a
    constant, transitively), in graph order."""
    sg = model.subgraphs[0]
    producer = {int(t): i for i, op in enumerate(sg.operators) for t in op.outputs}
    chain: set[int] = set()

    def constant_like(t: int) -> bool:
        if t < 0:
            return True
        if _is_constant(model, sg.tensors[t]):
            return True
        p = producer.get(t)
        if p is None or names[p] not in LOAD_TIME_OPS:
            return False
        if all(constant_like(int(i)) for i in sg.operators[p].inputs):
            chain.add(p)
            return True
        return False

    for t in sg.operators[index].inputs:
        constant_like(int(t))
    return sorted(chain)


def cut_op(model: Any, index: int, names: list[str] | None = None,
           shapes: dict[int, tuple[int, ...]] | None = None) -> tuple[bytes, list[int], list[int]]:
    """A one-op model of operator ``index`` of the main subgraph: (flatbuffer, the original indices of
    its input tensors, of its output tensors). Constant inputs keep their buffers; weights decoded at
    load (DEQUANTIZE/DENSIFY of a constant) keep the op that decodes them; every other input becomes
    an input of the new model. ``shapes``: the tensors' shapes in a real run (for dynamic shapes)."""
    names = names if names is not None else op_names(model)
    sg = model.subgraphs[0]
    ops = [*_load_time_chain(model, names, index), index]
    keep_tensors: list[int] = []
    for i in ops:
        op = sg.operators[i]
        for t in [*op.inputs, *op.outputs, *(op.intermediates or [])]:
            if int(t) >= 0 and int(t) not in keep_tensors:
                keep_tensors.append(int(t))
    new_index = {t: k for k, t in enumerate(keep_tensors)}
    produced = {int(t) for i in ops for t in sg.operators[i].outputs}
    used_buffers = {sg.tensors[t].buffer for t in keep_tensors}
    for other in model.subgraphs[1:]:  # control-flow ops call other subgraphs: they come along whole
        used_buffers |= {t.buffer for t in other.tensors}
    schema = _schema()
    new = schema.ModelT()
    new.version = model.version
    new.description = "streampi profile: one op"
    new.operatorCodes = model.operatorCodes
    new.buffers = [b if k in used_buffers else schema.BufferT() for k, b in enumerate(model.buffers)]
    sub = schema.SubGraphT()
    sub.name = "op"
    sub.tensors = []
    for t in keep_tensors:
        tensor = copy.copy(sg.tensors[t])
        if shapes and t in shapes and not _is_constant(model, tensor):
            tensor.shape = list(shapes[t])
            tensor.shapeSignature = None
        sub.tensors.append(tensor)
    inputs = [t for t in keep_tensors if t not in produced and not _is_constant(model, sg.tensors[t])
              and not sg.tensors[t].isVariable
              and any(t in [int(x) for x in sg.operators[i].inputs] for i in ops)]
    outputs = [int(t) for t in sg.operators[index].outputs if int(t) >= 0]
    sub.inputs = [new_index[t] for t in inputs]
    sub.outputs = [new_index[t] for t in outputs]
    sub.operators = []
    for i in ops:
        op = copy.copy(sg.operators[i])
        op.inputs = [new_index[int(t)] if int(t) >= 0 else -1 for t in op.inputs]
        op.outputs = [new_index[int(t)] for t in op.outputs]
        op.intermediates = [new_index[int(t)] for t in (op.intermediates or [])] or None
        sub.operators.append(op)
    new.subgraphs = [sub, *model.subgraphs[1:]]
    return to_bytes(new), inputs, outputs


# -- running ---------------------------------------------------------------------------------------------
def _input_data(details: list[dict], seed: int = 0) -> list[np.ndarray]:
    """Random inputs over each input's range (a zero image makes some ops, e.g. NMS, do nothing)."""
    rng = np.random.default_rng(seed)
    out = []
    for d in details:
        dtype, shape = np.dtype(d["dtype"]), tuple(int(x) for x in d["shape"])
        if dtype.kind == "f":
            out.append(rng.random(shape, dtype=np.float32).astype(dtype))
        elif dtype in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)):
            info = np.iinfo(dtype)
            out.append(rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype))
        else:
            out.append(np.zeros(shape, dtype))
    return out


def _without_delegate(backend: Backend, content: bytes, **kwargs: Any) -> Any:
    """An interpreter of ``content`` on the runtime's own kernels (no default XNNPACK delegate)."""
    resolver = getattr(sys.modules.get(backend.interpreter_class.__module__), "OpResolverType", None)
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return backend.interpreter_class(model_content=content, num_threads=1, **kwargs)
    except TypeError:  # an older interpreter without these arguments
        return backend.interpreter_class(model_content=content, num_threads=1)


def invoked_once(content: bytes, backend: Backend) -> Any:
    """An interpreter of the model (without delegate, every tensor kept) after one invoke on
    test inputs: each tensor holds the value the model computes for it."""
    interp = _without_delegate(backend, content, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    details = interp.get_input_details()
    for d, x in zip(details, _input_data(details)):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    return interp


def capture_tensors(content: bytes, backend: Backend) -> dict[int, np.ndarray]:
    """Every tensor's value after one invoke of the whole model (without delegate, all tensors kept)."""
    interp = invoked_once(content, backend)
    values = {}
    for t in interp.get_tensor_details():
        try:
            values[int(t["index"])] = interp.get_tensor(int(t["index"]))
        except ValueError:  # a tensor without data (optional, or freed)
            continue
    return values


def _median_invoke_ms(interp: Any, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _delegated_outputs(interp: Any) -> set[int]:
    """Tensors written by a DELEGATE node of a loaded interpreter."""
    try:
        return {int(t) for o in interp._get_ops_details() if o.get("op_name") == "DELEGATE" for t in o["outputs"]}
    except Exception:  # private API: absent on some backends
        return set()


def time_submodel(content: bytes, backend: Backend, inputs: list[np.ndarray | None], runs: int,
                  default_delegate: bool = True) -> dict[str, Any]:
    """Median ms of ``runs`` invokes of a one-op model at 1 thread, and whether XNNPACK took its op."""
    if default_delegate:
        interp = backend.interpreter_class(model_content=content, num_threads=1)
    else:
        interp = _without_delegate(backend, content)
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), inputs):
        data = _input_data([d])[0] if x is None or tuple(x.shape) != tuple(d["shape"]) else x
        interp.set_tensor(d["index"], np.array(data, dtype=d["dtype"], order="C"))  # 0-d stays 0-d
    ms = _median_invoke_ms(interp, runs)
    out_idx = {int(d["index"]) for d in interp.get_output_details()}
    return {"ms": ms, "delegated": bool(out_idx) and out_idx <= _delegated_outputs(interp)}


def whole_invoke_ms(path: Path, backend: Backend, runs: int) -> float:
    """Median ms of the whole model's invoke at 1 thread, on the same inputs as the ops."""
    interp = backend.interpreter_class(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    details = interp.get_input_details()
    for d, x in zip(details, _input_data(details)):
        interp.set_tensor(d["index"], x)
    return _median_invoke_ms(interp, runs)


# -- the runtime's own partition report ------------------------------------------------------------------
#: The line LiteRT (and TensorFlow Lite before it) prints when a delegate takes nodes of a subgraph.
PARTITION_LINE = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]+)\) node, yielding "
                            r"(\d+) partitions(?: for subgraph (\d+))?")
_SEVERITY_SYMBOL = b"_ZN6tflite16logging_internal13MinimalLogger21minimum_log_severity_E"
_LINE_FORMAT = b"Replacing %d out of %d node(s) with delegate"


def _elf_symbol_value(path: str, name: bytes) -> int | None:
    """st_value of a symbol in an ELF64 little-endian file's .symtab (local symbols too), or None."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    for sec in sections:
        if sec[1] != 2:  # SHT_SYMTAB
            continue
        off, size, link, entsize = sec[4], sec[5], sec[6], sec[9]
        strtab = sections[link][4]
        for k in range(size // max(entsize, 1)):
            st_name, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", data, off + k * entsize)
            start = strtab + st_name
            if data[start:start + len(name) + 1] == name + b"\0":
                return value
    return None


def _lower_log_level() -> str | None:
    """Set the runtime's minimal logger to VERBOSE in this process; the library it found, or None.

    The logger's level is a static of the interpreter library with no setter in the Python API;
    it is found through the library's own symbol table and written in place."""
    for line in open("/proc/self/maps"):
        parts = line.split()
        if len(parts) < 6 or not parts[5].endswith(".so") or int(parts[2], 16) != 0:
            continue
        lib = parts[5]
        try:
            if _LINE_FORMAT not in Path(lib).read_bytes():
                continue
            value = _elf_symbol_value(lib, _SEVERITY_SYMBOL)
        except OSError:
            continue
        if value:
            ctypes.c_int.from_address(int(parts[0].split("-")[0], 16) + value).value = 0  # TFLITE_LOG_VERBOSE
            return lib
    return None


def _delegation_child(path: str, backend_name: str) -> None:
    """In a child process: load the model with the default delegate, print what the runtime says."""
    backend = get_backend(backend_name)
    lib = _lower_log_level()
    interp = backend.interpreter_class(model_path=path, num_threads=1)
    interp.allocate_tensors()
    ops = interp._get_ops_details()
    sys.stderr.flush()
    print(json.dumps({"logger": lib, "nodes": [str(o["op_name"]) for o in ops],
                      "delegate_outputs": [[int(t) for t in o["outputs"]] for o in ops
                                           if o["op_name"] == "DELEGATE"]}))


def delegation_report(path: Path, backend: Backend, timeout: float = 120.0) -> dict[str, Any]:
    """What the runtime itself says of the default delegate's partitions (read from a child's fd 2)."""
    r = subprocess.run([sys.executable, "-m", "streampi.tools.profile", str(path), backend.name],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"loading the model in a child process failed: {last}"}
    child = json.loads(r.stdout.strip().splitlines()[-1])
    n_original = len([n for n in child["nodes"] if n != "DELEGATE"])
    out: dict[str, Any] = {"nodes": n_original, "delegate_nodes": child["nodes"].count("DELEGATE"),
                           "log_lines": [], "logger_found": bool(child["logger"])}
    for line in r.stderr.splitlines():
        m = PARTITION_LINE.search(line)
        if m and (m.group(5) in (None, "0")):
            out["log_lines"].append(line.strip())
            out.update(replaced=int(m.group(1)), of=int(m.group(2)), delegate=m.group(3), partitions=int(m.group(4)))
    if "replaced" not in out:
        out["replaced"] = 0 if not out["delegate_nodes"] else None
    return out


# -- the profile -----------------------------------------------------------------------------------------
def profile(path: Path, backend: Backend, runs: int = 50, progress=lambda msg: None) -> dict[str, Any]:
    """Per-op times (one-op models, median of ``runs`` invokes at 1 thread), the whole invoke, and
    which ops the default delegate takes."""
    path = Path(path)
    content = path.read_bytes()
    model = read_model(content)
    names = op_names(model)
    sg = model.subgraphs[0]
    progress("profile: one invoke of the whole model, keeping every tensor")
    values = capture_tensors(content, backend)
    shapes = {k: tuple(v.shape) for k, v in values.items()}
    ops = []
    for i, name in enumerate(names):
        progress(f"profile: op {i + 1}/{len(names)} {name}")
        entry: dict[str, Any] = {"index": i, "op": name,
                                 "output": [{"shape": list(shapes.get(int(t), sg.tensors[int(t)].shape)),
                                             "dtype": _dtype_name(sg.tensors[int(t)].type)}
                                            for t in sg.operators[i].outputs if int(t) >= 0]}
        entry["load_time_only"] = name in LOAD_TIME_OPS and all(
            _is_constant(model, sg.tensors[int(t)]) for t in sg.operators[i].inputs if int(t) >= 0)
        try:
            sub, inputs, _ = cut_op(model, i, names, shapes)
            # a weight decoded at load is timed on the runtime's own kernel, which decodes it once (in
            # the whole model XNNPACK folds it into the op that reads it)
            entry.update(time_submodel(sub, backend, [values.get(t) for t in inputs], runs,
                                       default_delegate=not entry["load_time_only"]))
        except Exception as exc:  # an op that cannot run alone (e.g. a custom op): reported, not fatal
            entry.update(ms=0.0, delegated=None, error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        ops.append(entry)
    # a weight decoded at load goes with the op that reads it: XNNPACK takes the decoding op when it
    # takes its reader (alone, it has nothing to take), so it is counted with its reader's one-op model
    consumers = _consumers(sg)
    for o in ops:
        if o["load_time_only"] and not o.get("error"):
            readers = [ops[j] for t in sg.operators[o["index"]].outputs for j in consumers.get(int(t), [])]
            if readers and all(r.get("delegated") is not None for r in readers):
                o["delegated"] = all(r["delegated"] for r in readers)
                o["delegated_with_reader"] = True
    total = sum(o["ms"] for o in ops)
    for o in ops:
        o["share"] = o["ms"] / total if total > 0 else 0.0
    by_type: dict[str, dict[str, float]] = {}
    for o in ops:
        t = by_type.setdefault(o["op"], {"count": 0, "ms": 0.0, "share": 0.0})
        t["count"] += 1
        t["ms"] += o["ms"]
        t["share"] += o["share"]
    progress("profile: the whole invoke")
    invoke = whole_invoke_ms(path, backend, runs)
    progress("profile: the delegate's partitions, as the runtime reports them")
    delegation = delegation_report(path, backend)
    alone = sum(1 for o in ops if o.get("delegated"))
    delegation["ops_delegated_alone"] = alone
    delegation["ops_outside"] = [o["index"] for o in ops if o.get("delegated") is False]
    return {
        "backend": str(backend), "threads": 1, "runs": runs, "ops": ops, "sum_ms": total, "invoke_ms": invoke,
        "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["ms"])), "delegation": delegation,
        "what_it_is": "each op cut into a one-op model and timed alone (median of the invokes, 1 thread, XNNPACK "
                      "on), fed with the values it sees in a real run",
        "what_it_is_not": "fusion across ops, data kept in cache from one op to the next and the copies at "
                          "partition edges; compare the sum of the ops with the whole invoke",
    }


def _dtype_name(tensor_type: int) -> str:
    names = {v: k for k, v in vars(_schema().TensorType).items() if not k.startswith("_")}
    return names.get(tensor_type, str(tensor_type)).lower()


def _consumers(sg: Any) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, op in enumerate(sg.operators):
        for t in op.inputs:
            out.setdefault(int(t), []).append(i)
    return out


def profile_findings(path: Path, prof: dict[str, Any], int8_graph: bool) -> list[tuple[str, str]]:
    """(severity, text) findings a user can act on, from a profile."""
    model = read_model(Path(path))
    sg = model.subgraphs[0]
    names = op_names(model)
    ops = prof["ops"]
    out: list[tuple[str, str]] = []
    d = prof["delegation"]
    partitions = d.get("partitions")
    delegated_parts = d.get("delegate_nodes", 0)
    outside = [i for i in d.get("ops_outside", []) if not ops[i].get("load_time_only")]
    if delegated_parts > 1:
        # an op outside the delegate splits the graph when delegated ops come both before and after it
        first = min((o["index"] for o in ops if o.get("delegated")), default=0)
        last = max((o["index"] for o in ops if o.get("delegated")), default=-1)
        splitting = [i for i in outside if first < i < last]
        listed = ", ".join(f"{names[i]} (op {i})" for i in splitting) or "ops the delegate refused"
        fixes = list(dict.fromkeys(REWRITES.get(names[i], f"replace {names[i]} with ops XNNPACK takes, or move it "
                                                          f"out of the model") for i in splitting))
        if {"SHAPE", "RESHAPE"} <= {names[i] for i in splitting}:
            int_ops = {i for i in splitting if all(x["dtype"].startswith("int") for x in ops[i]["output"])}
            fixes = list(dict.fromkeys(REWRITES.get(names[i], f"replace {names[i]} with ops XNNPACK takes, or "
                                                              f"move it out of the model")
                                       for i in splitting if i not in int_ops and names[i] != "RESHAPE"))
            fixes = ["the RESHAPE's new shape is computed at run time (SHAPE → … → RESHAPE), and XNNPACK takes "
                     "only constant shapes: convert the model with a fixed input shape (batch 1), so that the "
                     "converter folds the shape into a constant", *[f for f in fixes if "shape" not in f]]
        cost = sum(ops[i]["ms"] for i in splitting)
        out.append(("advice", f"XNNPACK runs this graph in {delegated_parts} pieces ({partitions or '?'} partitions "
                              f"in all, as the runtime reports), cut by {listed}, which it does not take "
                              f"({cost:.3f} ms on the interpreter's own kernels, plus a copy out of and back into "
                              f"the delegate at each cut); to keep it whole: " + "; ".join(fixes)))
    elif outside:
        cost = sum(ops[i]["ms"] for i in outside)
        share = sum(ops[i]["share"] for i in outside)
        listed = ", ".join(f"{names[i]} (op {i})" for i in outside[:6]) + (" …" if len(outside) > 6 else "")
        out.append(("ok", f"{len(outside)} op(s) run outside XNNPACK without splitting it ({listed}): "
                          f"{cost:.3f} ms, {share:.0%} of the ops' time"))
    # float islands in an int8 graph
    if int8_graph:
        consumers = _consumers(sg)
        pairs = []
        for i, name in enumerate(names):
            if name != "DEQUANTIZE" or ops[i].get("load_time_only"):
                continue
            inner = [i]
            frontier = list(consumers.get(int(sg.operators[i].outputs[0]), []))
            seen: set[int] = set()
            while frontier:
                j = frontier.pop()
                if j in seen:
                    continue
                seen.add(j)
                inner.append(j)
                if names[j] != "QUANTIZE":
                    for t in sg.operators[j].outputs:
                        frontier.extend(consumers.get(int(t), []))
            if any(names[j] == "QUANTIZE" for j in inner):
                pairs.append(sorted(set(inner)))
        for group in pairs:
            cost = sum(ops[j]["ms"] for j in group)
            share = sum(ops[j]["share"] for j in group)
            inside = ", ".join(names[j] for j in group)
            out.append(("advice", f"float island in the int8 graph: {inside} (ops {group[0]}-{group[-1]}) "
                                  f"dequantize, compute in float and quantize back: {cost:.3f} ms, {share:.0%} of "
                                  f"the ops' time; quantize those ops too (the converter falls back to float for "
                                  f"ops it cannot quantize: check they have int8 kernels)"))
    # a resize at the input
    graph_inputs = {int(t) for t in sg.inputs}
    for i, name in enumerate(names):
        if name in RESIZE_OPS and int(sg.operators[i].inputs[0]) in graph_inputs:
            shape = ops[i]["output"][0]["shape"]
            hw = f"{shape[2]}×{shape[1]}" if len(shape) == 4 else str(shape)
            out.append(("advice", f"{name} (op {i}) resizes the model's input to {hw} inside the model: "
                                  f"{ops[i]['ms']:.3f} ms ({ops[i]['share']:.0%}) per invoke. streampi's kernels "
                                  f"resize each frame straight into the input tensor as they convert it; export "
                                  f"the model with a {hw} input and drop the resize"))
    # float16 weights
    f16 = [i for i, name in enumerate(names) if name == "DEQUANTIZE" and ops[i].get("load_time_only")
           and sg.tensors[int(sg.operators[i].inputs[0])].type == _schema().TensorType.FLOAT16]
    if f16:
        size = sum(len(model.buffers[sg.tensors[int(sg.operators[i].inputs[0])].buffer].data) for i in f16)
        out.append(("advice", f"{len(f16)} float16 weight tensor(s) ({size / 1024:.0f} kB in the file) are "
                              f"dequantized to float32 at load: the file is half the size, but memory and compute "
                              f"are float32 (the DEQUANTIZE ops run once, {sum(ops[i]['ms'] for i in f16):.3f} ms "
                              f"per invoke after that); an int8 model is smaller in memory and faster"))
    return out


def print_profile(prof: dict[str, Any], out=print, top: int = 10) -> None:
    out(f"profile      {prof['backend']}, {prof['threads']} thread, median of {prof['runs']} invokes per figure")
    ranked = sorted(prof["ops"], key=lambda o: -o["ms"])
    out(f"  {'op':>4}  {'':<26} {'ms':>8} {'share':>6}  XNNPACK  output")
    for o in ranked[:top]:
        xnn = {True: "yes", False: "no", None: "?"}[o.get("delegated")]
        shape = "; ".join(f"{x['shape']} {x['dtype']}" for x in o["output"])
        note = " (decoded once, at load)" if o.get("load_time_only") else ""
        err = f"  ({o['error']})" if o.get("error") else ""
        out(f"  {o['index']:>4}  {o['op']:<26} {o['ms']:>8.3f} {o['share']:>6.1%}  {xnn:<7}  {shape}{note}{err}")
    if len(ranked) > top:
        rest = ranked[top:]
        out(f"  {'':>4}  {f'{len(rest)} more ops':<26} {sum(o['ms'] for o in rest):>8.3f} "
            f"{sum(o['share'] for o in rest):>6.1%}")
    out("  by op type:  " + ", ".join(f"{k}×{v['count']} {v['share']:.0%}" for k, v in prof["by_type"].items()))
    ratio = prof["sum_ms"] / prof["invoke_ms"] if prof["invoke_ms"] else float("nan")
    out(f"  sum of the ops timed alone {prof['sum_ms']:.3f} ms; the whole invoke {prof['invoke_ms']:.3f} ms "
        f"(sum/whole {ratio:.2f})")
    out(f"  what these are: {prof['what_it_is']}")
    out(f"  what they miss: {prof['what_it_is_not']}")
    d = prof["delegation"]
    if "error" in d:
        out(f"  XNNPACK      {d['error']}")
        return
    if d.get("log_lines"):
        out(f"  XNNPACK      the runtime: \"{d['log_lines'][-1]}\"")
    elif d.get("delegate_nodes"):
        out(f"  XNNPACK      the runtime printed no partition line; its node list has {d['delegate_nodes']} "
            f"delegate node(s)")
    else:
        out("  XNNPACK      the delegate took no node")
    out(f"               {d['delegate_nodes']} delegated partition(s); {d['ops_delegated_alone']} of {d['nodes']} ops "
        f"taken when cut alone" + (f", runtime: {d['replaced']}" if d.get("replaced") is not None else ""))
    if d.get("replaced") is not None and d["replaced"] != d["ops_delegated_alone"]:
        out("               (the counts differ: the delegate takes some ops only alongside others, or not alone)")
    if d.get("ops_outside"):
        out("               outside the delegate: " + ", ".join(
            f"{prof['ops'][i]['op']} (op {i})" for i in d["ops_outside"]))


if __name__ == "__main__":  # the child of delegation_report
    _delegation_child(sys.argv[1], sys.argv[2])
