"""``streampi quantize``: a float ``.tflite`` in, a verified int8 ``.tflite`` (and its sidecar) out.

Why this exists: full-integer quantization is the usual answer to "is my model fast enough on
a Pi 4?", but TensorFlow's converter needs the training code and TensorFlow, and calibrates on
whatever data is at hand. Here ``ai-edge-quantizer`` (no TensorFlow) rewrites the converted
model directly, and calibration sees exactly what the server will feed: every calibration
frame goes through streampi's own :class:`~streampi.preprocess.Preprocessor` with the model's
configuration (sidecar JSON or flags).

A quantizer can produce a model that does not load or that answers differently, so the
result is always verified before it is written: loaded, allocated and invoked; run beside the
float model on held-out frames that calibration never saw (top-1 agreement and top-5 overlap
for classifiers, boxes matched at IoU >= 0.5 for detectors, per-output cosine similarity and
SNR for every model); file sizes, latency of both
at 1 thread and all cores, memory after allocation; and the time and peak memory of the
quantization itself.

Exit codes: 0 written and verified; 1 the result failed verification (not written unless
``--force``); 2 bad input (not a float model, no frames, frames of the wrong kind).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import resource
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelConfig, load_config
from ..errors import FrameError, ModelError, StreampiError
from ..model import Model, check_tflite_file, resolve_model
from ..runtime_info import usable_cores
from ..sources import Frame, open_source
from ..units import format_bytes

#: recipe name → (ai_edge_quantizer.recipe function, output file suffix)
RECIPES: dict[str, tuple[str, str]] = {
    "int8": ("static_wi8_ai8", "int8"),
    "dynamic": ("dynamic_wi8_afp32", "dynamic"),
    "weight-only": ("weight_only_wi8_afp32", "wi8"),
}
SIGNATURE_KEY = "serving_default"
#: Calibration frames handed to the quantizer at a time (its memory grows with each batch).
CALIBRATION_BATCH = 32
NEXT_STEPS = ("try another recipe (--recipe dynamic keeps float activations and loses less), calibrate on more "
              "frames or on frames closer to what the cameras send (--frames, --calibrate), or, with the original "
              "training code, quantization-aware training (tensorflow-model-optimization)")


class QuantizeError(StreampiError):
    """The input cannot be quantized as asked (bad model, bad frames, quantizer failure)."""

    code = "quantize_error"


def _quantizer_modules():
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError:
        raise QuantizeError("streampi quantize needs ai-edge-quantizer: pip install 'streampi[quantize]'") from None
    return quantizer, recipe


# -- the flatbuffer ------------------------------------------------------------------------------
def _read_model_object(data: bytes):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def _write_model_object(model_obj) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model_obj))


def quantized_tensors(model_obj) -> list[str]:
    """Names of tensors that already carry quantization parameters (an int8 or dynamic-range model)."""
    names = []
    for sg in model_obj.subgraphs or []:
        for t in sg.tensors or []:
            q = t.quantization
            if q is not None and q.scale is not None and len(q.scale):
                names.append(t.name.decode() if isinstance(t.name, bytes) else str(t.name))
    return names


def add_signature(model_obj) -> bool:
    """Give a signature-less model a ``serving_default`` signature over subgraph 0's inputs
    and outputs (the quantizer calibrates through a signature runner). Returns True if added."""
    from ai_edge_litert import schema_py_generated as schema

    if model_obj.signatureDefs:
        return False
    sg = model_obj.subgraphs[0]

    def tensor_map(index: int):
        m = schema.TensorMapT()
        name = sg.tensors[index].name
        m.name = name.decode() if isinstance(name, bytes) else str(name)
        m.tensorIndex = int(index)
        return m

    sig = schema.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    sig.inputs = [tensor_map(i) for i in sg.inputs]
    sig.outputs = [tensor_map(i) for i in sg.outputs]
    model_obj.signatureDefs = [sig]
    return True


def expand_float16_weights(model_obj) -> int:
    """Replace each ``DEQUANTIZE`` of a constant float16 weight by the float32 constant it
    computes. Models stored with float16 weights (MediaPipe's, ``shapes_float16``) otherwise
    trip the quantizer, which expects float32 weights. Returns the number of ops removed."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    removed = 0
    for sg in model_obj.subgraphs or []:
        keep = []
        for op in sg.operators or []:
            code = flatbuffer_utils.get_builtin_code_from_operator_code(model_obj.operatorCodes[op.opcodeIndex])
            if code == schema.BuiltinOperator.DEQUANTIZE and len(op.inputs) == 1 and len(op.outputs) == 1:
                src, dst = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
                buf = model_obj.buffers[src.buffer]
                if src.type == schema.TensorType.FLOAT16 and buf.data is not None and len(buf.data):
                    values = np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), np.float16).astype(np.float32)
                    new = schema.BufferT()
                    new.data = np.frombuffer(values.tobytes(), np.uint8)
                    model_obj.buffers.append(new)
                    dst.buffer = len(model_obj.buffers) - 1
                    removed += 1
                    continue
            keep.append(op)
        sg.operators = keep
    if removed:
        _drop_unused_tensors(model_obj)
    return removed


def _drop_unused_tensors(model_obj) -> None:
    """Remove tensors no op, graph input/output or signature refers to (and empty their
    buffers), renumbering every reference: the float16 copies left by
    :func:`expand_float16_weights` would otherwise be carried into the quantized file."""
    for si, sg in enumerate(model_obj.subgraphs or []):
        used = {int(i) for op in sg.operators or [] for i in list(op.inputs) + list(op.outputs) if i >= 0}
        used |= {int(i) for i in sg.inputs} | {int(i) for i in sg.outputs}
        for sig in model_obj.signatureDefs or []:
            if sig.subgraphIndex == si:
                used |= {m.tensorIndex for m in list(sig.inputs or []) + list(sig.outputs or [])}
        if len(used) == len(sg.tensors):
            continue
        new_index = {old: new for new, old in enumerate(sorted(used))}
        buffers_kept = {sg.tensors[i].buffer for i in used}
        for i, t in enumerate(sg.tensors):
            if i not in used and t.buffer not in buffers_kept and t.buffer > 0:
                model_obj.buffers[t.buffer].data = None
        sg.tensors = [sg.tensors[i] for i in sorted(used)]
        for op in sg.operators or []:
            op.inputs = [new_index[int(i)] if i >= 0 else -1 for i in op.inputs]
            op.outputs = [new_index[int(i)] for i in op.outputs]
            if op.intermediates is not None and len(op.intermediates):
                op.intermediates = [new_index[int(i)] for i in op.intermediates if int(i) in new_index]
        sg.inputs = [new_index[int(i)] for i in sg.inputs]
        sg.outputs = [new_index[int(i)] for i in sg.outputs]
        for sig in model_obj.signatureDefs or []:
            if sig.subgraphIndex == si:
                for m in list(sig.inputs or []) + list(sig.outputs or []):
                    m.tensorIndex = new_index[m.tensorIndex]


def signature_names(model_bytes: bytes) -> tuple[str, str]:
    """(signature key, name of its first input) as the quantizer's signature runner sees them."""
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_content=model_bytes).get_signature_list()
    key = SIGNATURE_KEY if SIGNATURE_KEY in sigs else next(iter(sigs))
    return key, sigs[key]["inputs"][0]


# -- calibration frames --------------------------------------------------------------------------
def split_holdout(n: int, holdout: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(calibration indices, held-out indices): a seeded shuffle, at least one of each."""
    if not 0.0 < holdout < 1.0:
        raise QuantizeError(f"--holdout must be between 0 and 1 (exclusive), got {holdout}")
    k = min(n - 1, max(1, int(round(n * holdout))))
    order = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in order[k:]), sorted(int(i) for i in order[:k])


def _progress(total: int, text: str, enabled: bool):
    """A rich progress bar on stderr when available and wanted, else a no-op."""
    if enabled:
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=True)
            task = prog.add_task(text, total=total)
            return prog, (lambda: prog.advance(task))
        except ImportError:
            pass

    class _Null:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    return _Null(), (lambda: None)


@dataclass
class Resampled:
    """Frames resampled to the model's input size but not yet normalised: ``pixels`` is
    ``(n, H, W, C)`` uint8, what the kernels hold before their lookup table. A 224×224 frame
    takes 150 KB here whatever the camera's resolution, and every model (float, or int8 with
    any input scale) gets its own input from it with :func:`model_inputs`."""

    pixels: np.ndarray
    labels: list[int | None]
    origins: list[str]

    def take(self, indices: list[int]) -> Resampled:
        return Resampled(self.pixels[indices], [self.labels[i] for i in indices], [self.origins[i] for i in indices])


def resample_frames(model: Model, config: ModelConfig, frames: Iterable[Frame], n: int,
                    show_progress: bool = False) -> Resampled:
    """Run each frame through the model's resize (the fused kernel, with the model's geometry,
    channel order and padding) into uint8: the kernel with an identity table (scale 1/255,
    mean 0, std 1). Raises :class:`QuantizeError` naming the first frame that cannot be used."""
    from ..preprocess import Preprocessor

    identity = Preprocessor(model.image_input(), np.uint8, scale=1 / 255, zero_point=0, mean=(0.0,), std=(1.0,),
                            channels=config.channels, resize=config.resize, pad=config.pad)
    pixels = identity.new_slot(n)
    labels: list[int | None] = []
    origins: list[str] = []
    bar, advance = _progress(n, "reading frames", show_progress)
    with bar:
        for f in frames:
            try:
                identity(f.data, f.fmt, out=pixels[len(labels)])
            except (FrameError, ValueError, TypeError) as exc:
                raise QuantizeError(f"calibration frame {f.origin} cannot be used: {exc}") from exc
            labels.append(f.label)
            origins.append(f.origin)
            advance()
    return Resampled(pixels[:len(labels)], labels, origins)


def model_inputs(model: Model, config: ModelConfig, pixels: np.ndarray) -> np.ndarray:
    """The model's input batch for resampled ``pixels``: the lookup table the server's
    Preprocessor builds for this model (normalisation, then the input's quantization),
    applied per channel, exactly as the kernel applies it after resampling."""
    from ..preprocess import Preprocessor

    lut = Preprocessor.for_model(model, config).lut
    return lut[np.arange(lut.shape[0]), pixels]


# -- verification -----------------------------------------------------------------------------------
def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def _snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - test) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def is_classifier(model: Model) -> bool:
    """One output of shape (batch, classes) with at least two classes."""
    return len(model.outputs) == 1 and len(model.outputs[0].shape) == 2 and model.outputs[0].shape[1] >= 2


def compare_outputs(float_outputs: list[list[np.ndarray]], quant_outputs: list[list[np.ndarray]],
                    classifier: bool, labels: list[int | None] | None = None) -> dict[str, Any]:
    """Agreement of two models' (dequantized) outputs, frame by frame.

    ``*_outputs[i]`` holds the outputs of frame ``i``. Classifiers: top-1 agreement and the
    mean overlap of the top-5 sets (and accuracy of each where ``labels`` are known); every
    model: per-output mean cosine similarity and SNR in dB."""
    n = len(float_outputs)
    res: dict[str, Any] = {"frames": n}
    per_output = []
    for j in range(len(float_outputs[0])):
        ref = np.stack([o[j] for o in float_outputs])
        got = np.stack([o[j] for o in quant_outputs])
        per_output.append({"cosine": float(np.mean([_cosine(r, g) for r, g in zip(ref, got)])),
                           "snr_db": _snr_db(ref, got), "max_abs_error": float(np.max(np.abs(ref - got)))})
    res["outputs"] = per_output
    if classifier:
        f = np.stack([o[0].reshape(-1) for o in float_outputs])
        q = np.stack([o[0].reshape(-1) for o in quant_outputs])
        k = min(5, f.shape[1])
        top_f, top_q = np.argsort(-f, axis=1)[:, :k], np.argsort(-q, axis=1)[:, :k]
        res["top1_agreement"] = float(np.mean(top_f[:, 0] == top_q[:, 0]))
        res["top5_overlap"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_f, top_q)]))
        res["top_k"] = k
        if labels is not None and all(lb is not None for lb in labels):
            truth = np.asarray(labels)
            res["float_accuracy"] = float(np.mean(top_f[:, 0] == truth))
            res["quantized_accuracy"] = float(np.mean(top_q[:, 0] == truth))
    return res


def detection_agreement(model: Model, config: ModelConfig, float_outputs: list[list[np.ndarray]],
                        quant_outputs: list[list[np.ndarray]], iou_threshold: float = 0.5) -> dict[str, Any] | None:
    """For detectors (a :mod:`streampi.decoders` decoder that gives ``detections``): the
    float model's detections are the reference; each is matched greedily (best score first) to
    an unmatched detection of the quantized model of the same class with IoU ≥
    ``iou_threshold``. Agreement = matched / the larger of the two counts, so both missed and
    extra boxes count against it. None when the model is not a detector (or streampi has no
    decoders)."""
    try:
        from ..decoders import make_decoder
        from ..decoders.nms import iou_one_to_many
    except ImportError:
        return None
    try:
        decoder = make_decoder(model.outputs, config)
        first = decoder.frame_result([o[None] for o in float_outputs[0]], 0, None)
    except (ModelError, ValueError, TypeError, KeyError):
        return None
    if "detections" not in first:
        return None
    matched = n_float = n_quant = 0
    for f, q in zip(float_outputs, quant_outputs):
        fd = decoder.frame_result([o[None] for o in f], 0, None)["detections"]
        qd = decoder.frame_result([o[None] for o in q], 0, None)["detections"]
        n_float, n_quant = n_float + len(fd), n_quant + len(qd)
        used = np.zeros(len(qd), bool)
        for d in sorted(fd, key=lambda d: -d["score"]):
            cands = [j for j, e in enumerate(qd) if not used[j] and e["class"] == d["class"]]
            if not cands:
                continue
            ious = iou_one_to_many(np.asarray(d["box"], np.float64), np.asarray([qd[j]["box"] for j in cands],
                                                                                np.float64))
            k = int(np.argmax(ious))
            if ious[k] >= iou_threshold:
                used[cands[k]] = True
                matched += 1
    most = max(n_float, n_quant)
    return {"float_detections": n_float, "quantized_detections": n_quant, "matched": matched,
            "iou_threshold": iou_threshold, "agreement": matched / most if most else 1.0}


def run_model(model: Model, batch: np.ndarray) -> list[list[np.ndarray]]:
    """Outputs (dequantized) of each frame of ``batch``, one invoke per frame as the server's
    batch-1 path does."""
    out = []
    for x in batch:
        out.append([o[0].copy() for o in model.run(x[None])])
    return out


def _latency_ms(path: Path, threads: int, runs: int) -> float:
    from ..measure import invoke_ms, ready

    return float(np.median(invoke_ms(ready(Model(path, num_threads=threads)), runs)))


def _memory_after_allocate(path: Path) -> dict[str, int] | None:
    from ..backends import get_backend
    from ..measure import runtime_report

    rep = runtime_report(path, get_backend())
    return rep.get("memory")


def verify(float_path: Path, quant_path: Path, float_config: ModelConfig, frames: Resampled,
           runs: int = 30) -> dict[str, Any]:
    """Load, allocate and invoke ``quant_path``; compare it with ``float_path`` on ``frames``
    (each model fed its own input made from the same resampled frames, as the server would
    make it); sizes, latency at 1 thread and all cores, memory after allocation.

    Returns a dict with ``loads`` False and ``error`` when the quantized model cannot run."""
    rep: dict[str, Any] = {"float_bytes": float_path.stat().st_size, "quantized_bytes": quant_path.stat().st_size}
    try:
        check_tflite_file(quant_path)
        qmodel = Model(quant_path)
        x = np.zeros(qmodel.input.shape, qmodel.input.dtype)
        qmodel.set_input(x)
        qmodel.invoke()
    except (ModelError, RuntimeError, ValueError) as exc:
        rep.update(loads=False, error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return rep
    rep["loads"] = True
    fmodel = Model(float_path)
    rep["quantized_input"] = {"dtype": qmodel.input.dtype.name, "scale": qmodel.input.scale,
                              "zero_point": qmodel.input.zero_point}
    rep["quantized_outputs"] = [{"dtype": s.dtype.name, "scale": s.scale, "zero_point": s.zero_point}
                                for s in qmodel.outputs]
    try:
        fbatch = model_inputs(fmodel, float_config, frames.pixels)
        qbatch = model_inputs(qmodel, float_config, frames.pixels)
        fout, qout = run_model(fmodel, fbatch), run_model(qmodel, qbatch)
    except (ModelError, RuntimeError, ValueError) as exc:
        rep.update(loads=False, error=f"the quantized model fails on held-out frames: {exc}")
        return rep
    classifier = is_classifier(fmodel)
    rep["kind"] = "classifier" if classifier else "tensors"
    rep["agreement"] = compare_outputs(fout, qout, classifier, frames.labels)
    detection = None if classifier else detection_agreement(fmodel, float_config, fout, qout)
    if detection is not None:
        rep["kind"] = "detector"
        rep["agreement"]["detection"] = detection
    cores = len(usable_cores())
    rep["latency_ms"] = {
        "float": {str(t): _latency_ms(float_path, t, runs) for t in sorted({1, cores})},
        "quantized": {str(t): _latency_ms(quant_path, t, runs) for t in sorted({1, cores})},
    }
    rep["memory_after_allocate_bytes"] = {
        "float": (_memory_after_allocate(float_path) or {}).get("after_allocate_bytes"),
        "quantized": (_memory_after_allocate(quant_path) or {}).get("after_allocate_bytes"),
    }
    return rep


def verdict(rep: dict[str, Any], min_agreement: float) -> tuple[bool, str]:
    """(passed, why) for a verification report."""
    if not rep.get("loads"):
        return False, f"the quantized model does not run: {rep.get('error')}"
    ag = rep["agreement"]
    if rep["kind"] == "classifier":
        v, what = ag["top1_agreement"], "top-1 agreement with the float model"
    elif rep["kind"] == "detector":
        d = ag["detection"]
        v, what = d["agreement"], (f"detection agreement with the float model ({d['matched']} of "
                                   f"{max(d['float_detections'], d['quantized_detections'])} boxes matched at IoU >= "
                                   f"{d['iou_threshold']})")
    else:
        v, what = min(o["cosine"] for o in ag["outputs"]), "cosine similarity of the worst output"
    if v >= min_agreement:
        return True, f"{what} {v:.4f} >= {min_agreement}"
    return False, f"{what} {v:.4f} is below --min-agreement {min_agreement}"


# -- the whole job --------------------------------------------------------------------------------------
@dataclass
class QuantizeOptions:
    recipe: str = "int8"
    frames: int = 200
    holdout: float = 0.2
    min_agreement: float = 0.98
    force: bool = False
    seed: int = 0
    runs: int = 30
    progress: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def sidecar_for(config: ModelConfig, origin: dict[str, Any]) -> dict[str, Any]:
    """The output's sidecar: the float model's configuration, with labels inline so the file
    does not depend on where the float model's labels file was."""
    side: dict[str, Any] = {"mean": list(config.mean), "std": list(config.std), "channels": config.channels,
                            "resize": config.resize, "pad": int(config.pad), "top_k": int(config.top_k)}
    if config.labels:
        side["labels"] = list(config.labels)
    decoder = getattr(config, "decoder", None)
    if decoder:
        side["decoder"] = dict(decoder)
    for k, v in config.extra.items():
        if k != "quantized_from":
            side[k] = v
    side["quantized_from"] = origin
    return side


class QuantizerFailed(QuantizeError):
    """ai-edge-quantizer raised while calibrating or rewriting the model."""


def prepare_for_quantizer(model_obj, float_bytes: bytes) -> tuple[bytes, list[str]]:
    """The float model as the quantizer can take it, and the list of changes made."""
    changes = []
    if expand_float16_weights(model_obj):
        changes.append("float16 weights expanded to float32 (the quantizer needs float32 weights)")
    if add_signature(model_obj):
        changes.append(f"a '{SIGNATURE_KEY}' signature added (the model had none; the quantizer calibrates "
                       f"through a signature)")
    return (_write_model_object(model_obj) if changes else float_bytes), changes


def run_quantizer(prepared: bytes, recipe_name: str, calib_batches: Iterable[np.ndarray],
                  progress: bool = False, input_range: tuple[str, float, float] | None = None) -> tuple[bytes, float]:
    """(quantized model bytes, seconds of calibration). ``calib_batches`` yields batches of
    model inputs; each is calibrated in turn, carrying the statistics over (the quantizer's
    per-sample moving average runs on as if all came at once), so memory stays that of one
    batch. ``input_range`` (tensor name, min, max) replaces the estimated range of the
    model's input by the exact one. Raises :class:`QuantizerFailed` with the quantizer's own
    message."""
    quantizer_mod, recipe_mod = _quantizer_modules()
    t0 = time.perf_counter()
    calib_s = 0.0
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            # LiteRT warns that calibration keeps every intermediate tensor: that is the point
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            if not progress:  # the quantizer's own calibration bar (tqdm) cannot be turned off
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            q = quantizer_mod.Quantizer(bytearray(prepared), getattr(recipe_mod, RECIPES[recipe_name][0])())
            calibration = {}
            if q.need_calibration:
                key, input_name = signature_names(prepared)
                for batch in calib_batches:
                    calibration = q.calibrate({key: [{input_name: x[None]} for x in batch]},
                                              previous_calibration_result=calibration or None,
                                              num_threads=len(usable_cores()))
                if input_range is not None and input_range[0] in calibration:
                    name, lo, hi = input_range
                    qsv = calibration[name]
                    calibration[name] = {**qsv, "min": np.full_like(qsv["min"], lo), "max": np.full_like(qsv["max"], hi)}
            calib_s = time.perf_counter() - t0
            result = q.quantize(calibration or None, enable_progress_report=False)
            return bytes(result.quantized_model), calib_s
    except StreampiError:
        raise
    except Exception as exc:  # the quantizer fails with any exception type on models it does not handle
        raise QuantizerFailed(f"{type(exc).__name__}: {exc}") from exc


def int8_speedup(path: Path, runs: int = 30, frames: int = 16) -> dict[str, Any]:
    """Quantize ``path`` to int8 in a temporary file, calibrated on synthetic frames through the
    model's Preprocessor, and time both models here at 1 thread. Invoke time does not depend on
    the calibration, so this measures the speed-up a real ``streampi quantize`` would give
    (not its accuracy). Used by ``streampi inspect --bench``. Raises :class:`QuantizeError`."""
    path = Path(path)
    float_bytes = path.read_bytes()
    model_obj = _read_model_object(float_bytes)
    if quantized_tensors(model_obj):
        raise QuantizeError("the model is already quantized")
    fmodel, config = Model(path), load_config(path)
    with open_source("synthetic", size=(160, 120)) as source:
        resampled = resample_frames(fmodel, config, source.sample(frames), frames)
    prepared, _ = prepare_for_quantizer(model_obj, float_bytes)
    quantized, _ = run_quantizer(prepared, "int8", [model_inputs(fmodel, config, resampled.pixels)])
    with tempfile.TemporaryDirectory(prefix="streampi-int8-") as tmp:
        qpath = Path(tmp) / f"{path.stem}_int8.tflite"
        qpath.write_bytes(quantized)
        float_ms, int8_ms = _latency_ms(path, 1, runs), _latency_ms(qpath, 1, runs)
        int8_bytes = qpath.stat().st_size
    return {"float_ms": float_ms, "int8_ms": int8_ms, "speedup": float_ms / int8_ms, "int8_bytes": int8_bytes}


def exact_input_range(model: Model, config: ModelConfig) -> tuple[str, float, float]:
    """(input tensor name, min, max) of every value the server can write into the float
    input: the extremes of the Preprocessor's table. The quantizer would estimate the input
    range from the calibration frames (a moving average of per-frame extremes, which clips the
    darkest and brightest pixels); the table gives it exactly, so no pixel is ever clipped."""
    from ..preprocess import Preprocessor

    lut = Preprocessor.for_model(model, config).lut
    return model.input.name, float(lut.min()), float(lut.max())


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def quantize_model(model: str | Path, source: str, out: str | Path | None, opts: QuantizeOptions,
                   log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Quantize, verify, and write ``out`` (+ sidecar) when verification passes or ``opts.force``.

    Returns the report; ``report["written"]`` tells whether the output exists and
    ``report["passed"]`` whether it met ``opts.min_agreement``. Raises :class:`QuantizeError`
    (or another :class:`StreampiError`) for bad inputs."""
    if opts.recipe not in RECIPES:
        raise QuantizeError(f"unknown recipe {opts.recipe!r}; choose one of {', '.join(RECIPES)}")
    if not 0.0 < opts.min_agreement <= 1.0:
        raise QuantizeError(f"--min-agreement must be in (0, 1], got {opts.min_agreement}")
    _quantizer_modules()  # a clear message when the extra is missing, before any work
    path = resolve_model(model)
    check_tflite_file(path)
    float_bytes = path.read_bytes()
    try:
        model_obj = _read_model_object(float_bytes)
    except Exception as exc:  # the flatbuffer reader raises whatever the bytes provoke
        raise QuantizeError(f"{path} is not a readable TFLite model: {exc}") from exc
    already = quantized_tensors(model_obj)
    if already:
        raise QuantizeError(f"{path.name} is already quantized ({len(already)} tensors carry quantization "
                            f"parameters, e.g. {already[0]!r}); quantizing it again would only lose accuracy. "
                            f"Serve it as it is, or quantize the float model it was made from")
    fmodel = Model(path)
    fmodel.image_input()  # raises UnsupportedModelError for inputs the kernels cannot feed
    if fmodel.input.dtype != np.float32:
        raise QuantizeError(f"{path.name} has a {fmodel.input.dtype.name} input; streampi quantize takes float32 models")
    config = load_config(path, **{k: v for k, v in opts.overrides.items() if v is not None})
    out_path = Path(out) if out else Path.cwd() / f"{path.stem}_{RECIPES[opts.recipe][1]}.tflite"
    if out_path.resolve() == path.resolve():
        raise QuantizeError("the output would overwrite the float model; choose another -o")
    if not out_path.parent.is_dir():
        raise QuantizeError(f"the output folder {out_path.parent} does not exist")

    rep: dict[str, Any] = {"model": str(path), "output": str(out_path), "recipe": opts.recipe,
                           "calibration_source": source}
    t0 = time.perf_counter()
    if not 0.0 < opts.holdout < 1.0:
        raise QuantizeError(f"--holdout must be between 0 and 1 (exclusive), got {opts.holdout}")
    if opts.frames < 2:
        raise QuantizeError(f"--frames must be at least 2 (some to calibrate, some to verify), got {opts.frames}")
    with open_source(source, size=(320, 240), seed=opts.seed) as frame_source:
        frames = resample_frames(fmodel, config, frame_source.sample(opts.frames), opts.frames, opts.progress)
    if len(frames.labels) < 2:
        raise QuantizeError(f"only {len(frames.labels)} frame could be read from {source}; at least 2 are needed")
    calib_idx, hold_idx = split_holdout(len(frames.labels), opts.holdout, opts.seed)
    hold_frames = frames.take(hold_idx)
    n_calib, n_hold = len(calib_idx), len(hold_idx)
    rep["frames"] = {"total": len(frames.labels), "calibration": n_calib, "held_out": n_hold}
    calib = (model_inputs(fmodel, config, frames.pixels[calib_idx[i:i + CALIBRATION_BATCH]])
             for i in range(0, n_calib, CALIBRATION_BATCH))
    rep["timing_s"] = {"frames": time.perf_counter() - t0}
    log(f"{n_calib} calibration frames, {n_hold} held out for verification")

    prepared, changes = prepare_for_quantizer(model_obj, float_bytes)
    rep["prepared"] = changes
    for c in changes:
        log(c)

    input_range = exact_input_range(fmodel, config)
    rep["input_range"] = list(input_range[1:])

    rss_before = _peak_rss_bytes()
    t1 = time.perf_counter()
    try:
        quantized, rep["timing_s"]["calibrate"] = run_quantizer(prepared, opts.recipe, calib, opts.progress,
                                                                input_range)
    except QuantizerFailed as exc:
        rep.update(written=False, passed=False, quantizer_error=str(exc),
                   verdict=f"the quantizer failed ({exc}); {NEXT_STEPS}")
        return rep
    rep["timing_s"]["quantize"] = time.perf_counter() - t1
    rep["quantization_peak_rss_bytes"] = max(_peak_rss_bytes(), rss_before)

    origin = {"model": path.name, "recipe": opts.recipe, "calibration": source,
              "calibration_frames": n_calib, "held_out_frames": n_hold}
    verify_and_write(path, config, quantized, out_path, hold_frames, opts, rep, origin)
    rep["timing_s"]["total"] = time.perf_counter() - t0
    return rep


def verify_and_write(float_path: Path, config: ModelConfig, quantized: bytes, out_path: Path, frames: Resampled,
                     opts: QuantizeOptions, rep: dict[str, Any], origin: dict[str, Any]) -> dict[str, Any]:
    """Verify ``quantized`` against ``float_path`` on ``frames`` and write it (and its sidecar)
    to ``out_path`` only if it passes or ``opts.force``. The candidate is verified from a
    temporary file beside the output, so a failed result never lands at ``out_path``.
    Fills ``rep`` (``verification``, ``passed``, ``verdict``, ``written``) and returns it."""
    fd, tmp_name = tempfile.mkstemp(suffix=".tflite", prefix=f".{out_path.stem}.", dir=out_path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(quantized)
        t0 = time.perf_counter()
        rep["verification"] = verify(float_path, tmp, config, frames, opts.runs)
        rep.setdefault("timing_s", {})["verify"] = time.perf_counter() - t0
        passed, why = verdict(rep["verification"], opts.min_agreement)
        rep["passed"] = passed
        rep["verdict"] = why if passed else f"{why}; {NEXT_STEPS}"
        rep["written"] = passed or opts.force
        if rep["written"]:
            os.replace(tmp, out_path)
            side = sidecar_for(config, {**origin, "verified": passed})
            out_path.with_suffix(".json").write_text(json.dumps(side, indent=2) + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return rep


# -- the verb ---------------------------------------------------------------------------------------------
def print_report(rep: dict[str, Any], out=print) -> None:
    fr = rep["frames"]
    out(f"model        {rep['model']}  →  {rep['output']}  (recipe {rep['recipe']})")
    out(f"calibration  {fr['calibration']} frames from {rep['calibration_source']}; {fr['held_out']} held out")
    for c in rep.get("prepared", []):
        out(f"prepared     {c}")
    if "quantizer_error" in rep:
        out(f"quantizer    failed: {rep['quantizer_error']}")
        out(f"result       NOT written: {rep['verdict']}")
        return
    t = rep["timing_s"]
    out(f"quantizing   {t['quantize']:.2f} s (calibration {t['calibrate']:.2f} s); peak resident memory of this "
        f"process {format_bytes(rep['quantization_peak_rss_bytes'])}")
    v = rep["verification"]
    out(f"size         {format_bytes(v['float_bytes'])} → {format_bytes(v['quantized_bytes'])} "
        f"({v['float_bytes'] / max(v['quantized_bytes'], 1):.1f}× smaller)")
    if not v.get("loads"):
        out(f"verification the quantized model does not run: {v['error']}")
    else:
        qi = v["quantized_input"]
        q = f" (scale {qi['scale']:.6g}, zero point {qi['zero_point']})" if qi["scale"] else ""
        rng = rep.get("input_range")
        q += f"; input range [{rng[0]:.4g}, {rng[1]:.4g}] from the preprocessing table" if rng and qi["scale"] else ""
        out(f"interface    input {qi['dtype']}{q}, outputs " + ", ".join(o["dtype"] for o in v["quantized_outputs"]))
        ag = v["agreement"]
        if v["kind"] == "classifier":
            acc = (f"; accuracy on labelled frames float {ag['float_accuracy']:.3f}, quantized "
                   f"{ag['quantized_accuracy']:.3f}" if "float_accuracy" in ag else "")
            out(f"agreement    top-1 {ag['top1_agreement']:.4f}, top-{ag['top_k']} overlap {ag['top5_overlap']:.4f} "
                f"on {ag['frames']} held-out frames{acc}")
        if "detection" in ag:
            d = ag["detection"]
            out(f"detections   {d['matched']} matched at IoU >= {d['iou_threshold']} of {d['float_detections']} "
                f"(float) and {d['quantized_detections']} (quantized): agreement {d['agreement']:.4f}")
        for j, o in enumerate(ag["outputs"]):
            out(f"output {j:<5} cosine {o['cosine']:.5f}, SNR {o['snr_db']:.1f} dB, max |error| {o['max_abs_error']:.4g}")
        for threads in v["latency_ms"]["float"]:
            f_ms, q_ms = v["latency_ms"]["float"][threads], v["latency_ms"]["quantized"][threads]
            out(f"latency      {threads} thread(s): float {f_ms:.3f} ms, quantized {q_ms:.3f} ms "
                + (f"({f_ms / q_ms:.2f}× faster here)" if q_ms <= f_ms else f"({q_ms / f_ms:.2f}× SLOWER here)"))
        mem = v["memory_after_allocate_bytes"]
        out(f"memory       after allocate_tensors: float +{format_bytes(mem['float'])}, quantized +{format_bytes(mem['quantized'])}")
    out(f"result       {'written' if rep['written'] else 'NOT written'}: {rep['verdict']}")
    if rep["written"]:
        out(f"serve it     streampi serve {rep['output']}")
