"""The model doctor behind ``streampi inspect MODEL`` for deploying on a Raspberry Pi.

Tells, before deploying, what a ``.tflite`` model is (inputs, outputs, quantization, ops,
size, memory), whether the installed backends run it, and with ``--bench`` how fast it is on
*this* machine and which serving configuration to use. Findings are printed in plain words.
Every figure is measured here; nothing is estimated for another machine.

Exit codes: 0 the model is servable, 1 it loads but has a blocking problem (an unresolved
op, an input the kernels cannot feed), 2 it is not a usable model file at all.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import Backend, available_backends, get_backend
from ..config import embedded_labels, load_config, sidecar_path
from ..errors import ModelError, ModelFileError, StreampiError
from ..measure import back_to_back_fps, invoke_ms, ready, rss_bytes, runtime_report
from ..model import Model, check_tflite_file
from ..runtime_info import backend_notes, describe_runtime, summary_line, usable_cores
from ..units import format_bytes


@dataclass
class InspectOptions:
    """What to look at, as ``streampi inspect``'s flags say it."""

    backend: str | None = None  # only this backend (default: every installed one)
    delegate: tuple[str, dict[str, str]] | None = None  # a delegate library to try: (path, options)
    bench: bool = False  # measure latency and throughput, recommend a configuration
    runs: int = 50  # invokes per latency figure
    seconds: float = 1.0  # seconds per throughput figure
    memory: int | None = None  # the server's memory budget in bytes: will it fit?
    frame_size: tuple[int, int] = (640, 480)  # the frames the cameras send
    max_frame_memory: int = 256 * 2**20  # the server's --max-frame-memory: frames it may hold
    profile: bool = False  # time each op alone, read the delegate's partitions (tools/profile.py)


def _is_custom(op_name: str) -> bool:
    return not op_name.replace("_", "").replace("2D", "").replace("3D", "").isupper() or op_name == "CUSTOM"


def quantization_kind(tensors: list[dict], ops: list[str], input_dtype: np.dtype) -> str:
    dtypes = collections.Counter(np.dtype(t["dtype"]).name for t in tensors)
    if input_dtype in (np.dtype(np.int8), np.dtype(np.uint8)):
        return "full-integer (int8/uint8 input and activations)"
    if dtypes.get("float16"):
        return "float16 weights (float32 compute)"
    if (dtypes.get("int8") or dtypes.get("uint8")) and "QUANTIZE" in ops:
        return "full-integer with a float32 interface (QUANTIZE/DEQUANTIZE at the edges)"
    if dtypes.get("int8") or dtypes.get("uint8"):
        return "dynamic-range (int8 weights, float32 activations)"
    return "float32 (not quantized)"


def static_report(path: Path, backend: Backend) -> dict[str, Any]:
    """What the flatbuffer says, without allocating (works for models that cannot run)."""
    interp = backend.interpreter_class(model_path=str(path))
    inputs = interp.get_input_details()
    outputs = interp.get_output_details()
    ops_details = interp._get_ops_details()
    op_names = [str(o["op_name"]) for o in ops_details]
    tensors = interp.get_tensor_details()
    produced = {int(i) for o in ops_details for i in o["outputs"]}
    consumed = {int(i) for o in ops_details for i in o["inputs"] if int(i) >= 0}
    graph_inputs = {int(d["index"]) for d in inputs}
    by_index = {int(t["index"]): t for t in tensors}
    params = sum(int(np.prod(by_index[i]["shape"])) for i in consumed - produced - graph_inputs if i in by_index)

    def spec(d: dict) -> dict:
        scale, zp = d.get("quantization", (0.0, 0))
        return {"name": d["name"], "shape": [int(x) for x in d["shape"]],
                "shape_signature": [int(x) for x in d.get("shape_signature", d["shape"])],
                "dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zp)}

    return {
        "inputs": [spec(d) for d in inputs], "outputs": [spec(d) for d in outputs],
        "quantization": quantization_kind(tensors, op_names, np.dtype(inputs[0]["dtype"])),
        "ops": dict(collections.Counter(op_names).most_common()),
        "custom_ops": sorted({n for n in op_names if _is_custom(n)}),
        "parameters": params,
    }


#: Filter input of the ops XNNPACK runs as dense or sparse GEMMs (input 1 of each).
FILTER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
#: XNNPACK's sparse inference needs at least this fraction of zeros in the 1x1 convolutions.
XNNPACK_SPARSE_MIN_ZEROS = 2 / 3


def weight_sparsity(path: Path) -> dict[str, Any]:
    """How many filter weights are zero, and whether XNNPACK's sparse inference can apply.

    Pruning is the other half of the usual "make it fast" advice; XNNPACK (the CPU path of
    LiteRT) only exploits it in float models whose weights are *stored* sparse (``DENSIFY``
    ops, from the converter's ``EXPERIMENTAL_SPARSITY``), whose graph opens with a 3×3
    stride-2 convolution on 3 channels, and whose 1×1 convolutions are at least 2/3 zeros
    (the conditions of the TFLite XNNPACK delegate's documentation). Read from the
    flatbuffer, without an interpreter."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    op_name = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
              schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8}
    sg = model.subgraphs[0]
    names = [op_name.get(flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]),
                         "CUSTOM") for op in sg.operators]
    producer = {int(t): op for op in sg.operators for t in op.outputs}

    def stored_values(index: int):
        """(values as stored, number of logical weights, stored sparse?) following DEQUANTIZE/DENSIFY."""
        t = sg.tensors[index]
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        if data is not None and len(data) and t.type in dtypes:
            return np.asarray(data, np.uint8).view(dtypes[t.type]), int(np.prod(t.shape)), t.sparsity is not None
        src = producer.get(index)
        if src is not None and len(src.inputs) == 1:
            values, _, sparse = stored_values(int(src.inputs[0]))
            return values, int(np.prod(t.shape)), sparse
        return None, 0, False

    total = zeros = total_1x1 = zeros_1x1 = 0
    stored_sparse = is_float = False
    first_conv_ok = None
    tensors = []
    for k, (op, name) in enumerate(zip(sg.operators, names)):
        if name not in FILTER_OPS or len(op.inputs) < 2:
            continue
        values, n, sparse = stored_values(int(op.inputs[1]))
        if values is None:
            continue
        stored_sparse |= sparse
        is_float |= values.dtype.kind == "f"
        z = n - int(np.count_nonzero(values))  # a sparse encoding stores (mostly) the non-zeros only
        total, zeros = total + n, zeros + z
        shape = list(sg.tensors[int(op.inputs[1])].shape)
        src = producer.get(int(op.inputs[1]))
        name_of = sg.tensors[int(op.inputs[1])].name
        tensors.append({"op": name, "op_index": k, "tensor": name_of.decode() if isinstance(name_of, bytes)
                        else str(name_of), "shape": shape, "dtype": values.dtype.name, "weights": n,
                        "zero_fraction": z / n if n else 0.0, "stored_sparse": sparse,
                        "densify_op": sg.operators.index(src) if src is not None and sparse else None})
        if name == "CONV_2D":
            if first_conv_ok is None:
                opts = op.builtinOptions
                first_conv_ok = shape[1:] == [3, 3, 3] and getattr(opts, "strideH", 0) == 2
            if shape[1:3] == [1, 1]:
                total_1x1, zeros_1x1 = total_1x1 + n, zeros_1x1 + z
    frac_1x1 = zeros_1x1 / total_1x1 if total_1x1 else 0.0
    why_not = []
    if not is_float:
        why_not.append("its weights are integer (sparse inference is float only)")
    if not stored_sparse:
        why_not.append("its weights are not stored sparse (no DENSIFY ops)")
    if not first_conv_ok:
        why_not.append("it does not open with a 3×3 stride-2 convolution on 3 channels")
    if not total_1x1:
        why_not.append("it has no 1×1 convolutions")
    elif frac_1x1 < XNNPACK_SPARSE_MIN_ZEROS:
        why_not.append(f"its 1×1 convolutions are {frac_1x1:.0%} zeros (at least 67% needed)")
    return {"filter_weights": total, "zero_fraction": zeros / total if total else 0.0,
            "conv1x1_weights": total_1x1, "conv1x1_zero_fraction": frac_1x1, "stored_sparse": stored_sparse,
            "densify_ops": names.count("DENSIFY"), "sparse_inference_possible": not why_not, "why_not": why_not,
            "tensors": tensors}


def quantize_command(path: Path) -> str:
    """The ``streampi quantize`` line for this model (FRAMES: a folder or video of real frames)."""
    return f"streampi quantize {path} --calibrate FRAMES -o {Path(path).stem}_int8.tflite"


def _latency(path: Path, backend: Backend, threads: int, runs: int) -> dict[str, float]:
    times = invoke_ms(ready(Model(path, backend=backend, num_threads=threads)), runs)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}


def _parallel_throughput(path: Path, backend: Backend, k: int, batch: int, seconds: float) -> float:
    """Frames/s of k single-threaded instances, each pinned to its own core, back to back."""
    models = [ready(Model(path, backend=backend, batch_size=batch if batch > 1 else None), 1) for _ in range(k)]
    return back_to_back_fps(models, seconds, settle=0.2)


def bench_report(path: Path, backends: list[Backend], runs: int, seconds: float, progress) -> dict[str, Any]:
    ncores = len(usable_cores())
    latency: dict[str, dict] = {}
    for b in backends:
        for t in range(1, ncores + 1):
            progress(f"latency: {b.name}, {t} thread(s)")
            latency.setdefault(b.name, {})[t] = _latency(path, b, t, runs)
    best_backend = min(backends, key=lambda b: latency[b.name][1]["median_ms"])
    probe = Model(path, backend=best_backend)
    batches = [1, 2, 4] if probe.batch_resizable else [1]
    parallel: dict[str, float] = {}
    for k in range(1, ncores + 1):
        for bs in batches:
            progress(f"throughput: {k} instance(s) × batch {bs} on {best_backend.name}")
            parallel[f"{k}x{bs}"] = _parallel_throughput(path, best_backend, k, bs, seconds)
    # one instance with all cores as interpreter threads, for comparison
    one_multi = 1000.0 / latency[best_backend.name][ncores]["median_ms"]
    best_key = max(parallel, key=parallel.get)
    k, bs = (int(v) for v in best_key.split("x"))
    # a larger batch is worth its latency only when it buys at least 10 % throughput
    if bs > 1 and parallel[best_key] < 1.1 * parallel[f"{k}x1"]:
        bs, best_key = 1, f"{k}x1"
    workers, threads = (k, 1) if parallel[best_key] >= one_multi else (1, ncores)
    return {
        "cores": ncores, "latency": latency, "parallel_fps": parallel, "one_instance_all_threads_fps": one_multi,
        "recommended": {"backend": best_backend.name, "workers": workers, "threads": threads, "max_batch": bs,
                        "expected_fps_here": max(parallel[best_key], one_multi),
                        "flags": f"--backend {best_backend.name} --workers {workers} --threads {threads} "
                                 f"--max-batch {bs}"},
    }


def findings(rep: dict[str, Any], args: InspectOptions) -> list[tuple[str, str]]:
    """(severity, text) pairs; severity is 'problem', 'advice' or 'ok'."""
    out: list[tuple[str, str]] = []
    q = rep["static"]["quantization"]
    if q.startswith("float32") or q.startswith("float16"):
        est = rep.get("int8_estimate") or {}
        if "speedup" in est:
            speed = (f"Measured here on an int8 version made from synthetic frames (invoke time does not depend on the "
                     f"calibration): {est['float_ms']:.2f} ms → {est['int8_ms']:.2f} ms per invoke at 1 thread, "
                     f"{est['speedup']:.1f}× faster, {format_bytes(rep['file_bytes'])} → {format_bytes(est['int8_bytes'])}.")
        elif "error" in est:
            speed = f"The speed-up could not be measured here: {est['error']}."
        else:
            speed = ("int8 kernels usually run 2-3× faster on ARM CPUs such as the Pi's Cortex-A72 (an estimate: "
                     "`streampi inspect --bench` measures it on this machine).")
        out.append(("advice", f"the model is {q}. Full-integer (int8) quantization stores each weight in 1 byte "
                              f"instead of 4 (or 2). {speed} Quantize it on frames like the ones your cameras send "
                              f"(FRAMES: a folder of images or a video; `synthetic` for the bundled shapes), with "
                              f"accuracy checked against this model on held-out frames:\n"
                              f"      {quantize_command(Path(rep['model']))}\n"
                              f"      (pip install 'streampi[quantize]'; see docs/quantize.md)"))
    elif q.startswith("dynamic"):
        out.append(("advice", f"the model is {q}: its activations stay float. A full-integer model is usually faster; "
                              f"make one from the float model this one came from: "
                              f"{quantize_command(Path('FLOAT_MODEL.tflite'))}"))
    sp = rep["static"].get("sparsity")
    if sp and sp["filter_weights"]:
        if sp["sparse_inference_possible"]:
            out.append(("ok", f"XNNPACK sparse inference can apply: {sp['conv1x1_zero_fraction']:.0%} of the 1×1 "
                              f"convolution weights are zero and stored sparse"))
        elif sp["conv1x1_zero_fraction"] >= XNNPACK_SPARSE_MIN_ZEROS and not sp["stored_sparse"]:
            out.append(("advice", f"{sp['conv1x1_zero_fraction']:.0%} of the 1×1 convolution weights are zero, but "
                                  f"they are stored dense: re-convert with tf.lite.Optimize.EXPERIMENTAL_SPARSITY "
                                  f"so that XNNPACK's sparse inference can use them (docs/quantize.md)"))
    for name, run in rep["runtime"].items():
        if not run.get("loads") and not any(op in run["error"] for op in rep["static"]["custom_ops"]):
            out.append(("problem", f"backend {name}: {run['error']}"))
        elif not run.get("servable", True):
            out.append(("problem", f"backend {name} runs it, but streampi cannot feed it: {run['not_servable_because']}"))
        for err in run.get("delegate_errors", []):
            out.append(("advice", f"backend {name}: {err}"))
    for op in rep["static"]["custom_ops"]:
        lacking = [n for n, r in rep["runtime"].items() if not r.get("loads") and op in r.get("error", "")]
        if lacking:
            out.append(("problem", f"custom op {op!r} is not resolved by: {', '.join(lacking)}; register it with the "
                                   f"interpreter or re-export the model without it"))
        else:
            out.append(("ok", f"custom op {op!r} is resolved by every installed backend"))
    inp = rep["static"]["inputs"][0]
    if len(inp["shape"]) == 4:
        area = inp["shape"][1] * inp["shape"][2]
        fw, fh = args.frame_size
        if area > fw * fh:
            out.append(("advice", f"the input ({inp['shape'][2]}×{inp['shape'][1]}) is larger than the frames you "
                                  f"send ({fw}×{fh}): every frame is upscaled, which costs time and adds nothing"))
        elif area > 0.5 * fw * fh:
            out.append(("advice", f"the input ({inp['shape'][2]}×{inp['shape'][1]}) is close to the frame size "
                                  f"({fw}×{fh}); a smaller input would be much cheaper"))
    if args.memory is not None:
        mem = next((r.get("memory") for r in rep["runtime"].values() if r.get("memory")), None)
        if mem:
            per = max(mem["after_first_invoke_bytes"], 1)
            n_workers = rep.get("bench", {}).get("recommended", {}).get("workers") or len(usable_cores())
            base = rep["base_rss_bytes"] or 0  # this process before any model: the same libraries as the server
            # the frames the server may hold, waiting or running, are bounded by its frame budget
            # (--max-frame-memory, every format counted): that bound, not a typical load, must fit
            frames = args.max_frame_memory
            need = base + n_workers * per + frames
            fits = int(max(0, args.memory - base - frames) // per)
            verdict = "fits" if need <= args.memory else "does NOT fit"
            out.append(("ok" if need <= args.memory else "problem",
                        f"memory: {n_workers} workers need about {need / 2**20:.0f} MiB: {per / 2**20:.1f} MiB per "
                        f"interpreter (measured after its first invoke, batch 1), {base / 2**20:.0f} MiB for the "
                        f"process and its libraries (measured), and up to {frames / 2**20:.0f} MiB of frames held "
                        f"(the server's --max-frame-memory, which frames past it are refused at); {verdict} in "
                        f"{args.memory / 2**20:.0f} MiB (at most {fits} workers would; a smaller "
                        f"--max-frame-memory leaves room for more)"))
    bench = rep.get("bench")
    if bench:
        lat = {b: v[1]["median_ms"] for b, v in bench["latency"].items()}
        if len(lat) > 1:
            fast = min(lat, key=lat.get)
            for b, v in lat.items():
                if v > 2 * lat[fast]:
                    out.append(("advice", f"backend {b} is {v / lat[fast]:.1f}× slower than {fast} for this model on "
                                          f"this CPU ({v:.2f} ms vs {lat[fast]:.2f} ms); serve with --backend {fast}"))
    return out


def inspect(path: Path, args: InspectOptions, progress=lambda msg: None) -> dict[str, Any]:
    check_tflite_file(path)
    backends = available_backends()
    if args.backend:
        backends = [get_backend(args.backend)]
    if not backends:
        get_backend()  # raises BackendUnavailable naming what to install
    rep: dict[str, Any] = {"model": str(path), "file_bytes": path.stat().st_size,
                           "backends": [str(b) for b in backends], "base_rss_bytes": rss_bytes()}
    try:
        rep["static"] = static_report(path, backends[0])
    except ValueError as exc:
        raise ModelFileError(f"{path} is not a valid TFLite model: {exc}") from exc
    try:
        rep["static"]["sparsity"] = weight_sparsity(path)
    except Exception as exc:  # the flatbuffer reader raises whatever odd files provoke; the rest still helps
        rep["static"]["sparsity"] = None
        rep["static"]["sparsity_error"] = f"{type(exc).__name__}: {exc}"
    labels = embedded_labels(path)
    side = sidecar_path(path)
    cfg = None
    try:
        cfg = load_config(path)
    except ModelError as exc:
        rep["config_error"] = str(exc)
    rep["metadata"] = {
        "embedded_labels": len(labels) if labels else 0,
        "labels_sample": list(labels[:5]) if labels else [],
        "sidecar": str(side) if side.is_file() else None,
        "normalisation": {"mean": list(cfg.mean), "std": list(cfg.std)} if cfg and side.is_file() else None,
    }
    delegates = [args.delegate] if args.delegate else []
    rep["runtime"] = {}
    for b in backends:
        progress(f"loading on {b.name}")
        rep["runtime"][b.name] = runtime_report(path, b, delegates)
    if args.bench and any(r.get("loads") for r in rep["runtime"].values()):
        runnable = [b for b in backends if rep["runtime"][b.name].get("loads")]
        rep["bench"] = bench_report(path, runnable, args.runs, args.seconds, progress)
        if rep["static"]["quantization"].startswith(("float32", "float16")):
            progress("int8 speed-up: quantizing a scratch copy")
            rep["int8_estimate"] = _int8_estimate(path, args.runs)
    if args.profile and any(r.get("loads") for r in rep["runtime"].values()):
        from .profile import profile, profile_findings

        runnable = next(b for b in backends if rep["runtime"][b.name].get("loads"))
        rep["profile"] = profile(path, runnable, args.runs, progress)
    rep["findings"] = [{"severity": s, "text": t} for s, t in findings(rep, args)]
    if "profile" in rep:
        from .pruning import pruning_findings, pruning_report

        int8_graph = rep["static"]["quantization"].startswith("full-integer")
        rep["findings"] += [{"severity": s, "text": t} for s, t in profile_findings(path, rep["profile"], int8_graph)]
        progress("pruning: the file as stored against a dense copy; XNNPACK on a sparse model made here")
        rep["pruning"] = pruning_report(path, runnable, min(args.runs, 30))
        rep["findings"] += [{"severity": s, "text": t}
                            for s, t in pruning_findings(rep["pruning"], rep["static"].get("sparsity"))]
    rep["runtime_info"] = describe_runtime(args.backend or None)  # what `streampi serve` would run on here
    rep["findings"] += [{"severity": "advice", "text": n} for b in backends for n in backend_notes(describe_runtime(b))]
    return rep


def _int8_estimate(path: Path, runs: int) -> dict[str, Any]:
    try:
        from .quantize import int8_speedup

        return int8_speedup(path, runs)
    except StreampiError as exc:
        return {"error": str(exc)}


def print_report(rep: dict[str, Any], out=print) -> None:
    st = rep["static"]
    out(f"model        {rep['model']}  ({format_bytes(rep['file_bytes'])}, {st['parameters']:,} parameters)")
    out(f"runtime      {summary_line(rep['runtime_info'])}")
    out(f"quantization {st['quantization']}")
    for kind in ("inputs", "outputs"):
        for t in st[kind]:
            q = f"scale {t['scale']:.6g}, zero point {t['zero_point']}" if t["scale"] else "not quantized"
            dyn = " (batch resizable)" if t["shape_signature"][:1] == [-1] else ""
            out(f"{kind[:-1]:<12} {t['name']}: {t['shape']} {t['dtype']}{dyn}, {q}")
    out("ops          " + ", ".join(f"{k}×{v}" for k, v in st["ops"].items()))
    out(f"custom ops   {', '.join(st['custom_ops']) or 'none'}")
    sp = st.get("sparsity")
    if sp and sp["filter_weights"]:
        verdict = "yes" if sp["sparse_inference_possible"] else "no: " + "; ".join(sp["why_not"])
        out(f"weights      {sp['filter_weights']:,} filter weights, {sp['zero_fraction']:.1%} zero "
            f"(1×1 convolutions: {sp['conv1x1_zero_fraction']:.1%}); XNNPACK sparse inference: {verdict}")
        pruned = [t for t in sp.get("tensors", []) if t["zero_fraction"] >= 0.1 or t["stored_sparse"]]
        for t in pruned[:12]:
            how = f", stored sparse (DENSIFY op {t['densify_op']})" if t["stored_sparse"] else ""
            out(f"  {t['tensor'][:48]:<48} {t['op']} op {t['op_index']}, {t['shape']} {t['dtype']}: "
                f"{t['zero_fraction']:.1%} zero{how}")
        if len(pruned) > 12:
            out(f"  … {len(pruned) - 12} more pruned weight tensors (--json lists them all)")
    md = rep["metadata"]
    out(f"labels       {md['embedded_labels']} embedded in the .tflite" + (f" ({', '.join(md['labels_sample'])}, …)"
                                                                          if md["labels_sample"] else ""))
    out(f"sidecar      {md['sidecar'] or 'none'}" + (f"; normalisation mean {md['normalisation']['mean']}, "
                                                      f"std {md['normalisation']['std']}" if md["normalisation"] else ""))
    for name, r in rep["runtime"].items():
        if not r.get("loads"):
            out(f"{name:<12} does not load: {r['error']}")
            continue
        mem = r.get("memory")
        m = (f"; resident memory +{format_bytes(mem['after_allocate_bytes'])} after allocate_tensors, "
             f"+{format_bytes(mem['after_first_invoke_bytes'])} after the first invoke") if mem else ""
        d = (f"; delegate took {r['delegated_nodes']} node(s)" if "delegated_nodes" in r else "")
        out(f"{name:<12} loads; first invoke {r['first_invoke_ms']:.1f} ms{m}{d}")
    b = rep.get("bench")
    if b:
        out("")
        out(f"latency on this machine ({b['cores']} cores), median / p90 per invoke:")
        for backend, per in b["latency"].items():
            out(f"  {backend:<14} " + "   ".join(f"{t} thr {v['median_ms']:.2f} / {v['p90_ms']:.2f} ms"
                                                for t, v in per.items()))
        out("throughput, k single-threaded instances × batch (frames/s):")
        out("  " + "   ".join(f"{k}: {v:.0f}" for k, v in b["parallel_fps"].items())
            + f"   1 instance × {b['cores']} threads: {b['one_instance_all_threads_fps']:.0f}")
        rec = b["recommended"]
        out(f"recommended  streampi serve MODEL {rec['flags']}   (~{rec['expected_fps_here']:.0f} frames/s of "
            f"inference here, before preprocessing)")
    if rep.get("profile"):
        from .profile import print_profile

        out("")
        print_profile(rep["profile"], out)
    out("")
    out("findings:")
    if not rep["findings"]:
        out("  none: the model looks ready to serve")
    for f in rep["findings"]:
        mark = {"problem": "✗", "advice": "!", "ok": "✓"}[f["severity"]]
        out(f"  {mark} {f['text']}")
