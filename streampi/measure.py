"""Timing of interpreters on this machine, shared by ``streampi inspect``, ``streampi bench``
and the benchmarks under ``bench/``: the ceilings a served run is compared with."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend
from .errors import ModelError
from .model import Model
from .runtime_info import usable_cores

__all__ = ["back_to_back", "back_to_back_fps", "ceiling", "invoke_ms", "pipeline_ceiling", "ready", "rss_bytes",
           "runtime_report", "stage_ms"]


def rss_bytes() -> int | None:
    """Resident memory of this process (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def runtime_report(path: Path, backend: Backend, delegates=()) -> dict[str, Any]:
    """Load for real: resolution of every op, memory after allocate and after one invoke."""
    before = rss_bytes()
    try:
        m = Model(path, backend=backend, delegates=delegates)
    except ModelError as exc:
        return {"loads": False, "error": str(exc)}
    allocated = rss_bytes()
    for i, spec in enumerate(m.inputs):
        m.set_input(np.zeros(spec.shape, spec.dtype), i)
    t0 = time.perf_counter()
    m.invoke()
    first_ms = (time.perf_counter() - t0) * 1e3
    invoked = rss_bytes()
    out: dict[str, Any] = {"loads": True, "first_invoke_ms": first_ms, "delegate_errors": m.delegate_errors,
                           "batch_resizable": m.batch_resizable}
    if before is not None and allocated is not None and invoked is not None:
        out["memory"] = {"after_allocate_bytes": allocated - before, "after_first_invoke_bytes": invoked - before}
    try:
        m.image_input()
        out["servable"] = True
    except ModelError as exc:
        out["servable"] = False
        out["not_servable_because"] = str(exc)
    if delegates:
        ops_after = m.ops()
        out["delegated_nodes"] = sum(1 for o in ops_after if "DELEGATE" in o.upper())
        out["ops_after_delegate"] = len(ops_after)
    return out


def ready(model: Model, warmup: int = 5) -> Model:
    """Fill the inputs with zeros and run ``warmup`` invokes."""
    for i, spec in enumerate(model.inputs):
        model.set_input(np.zeros(spec.shape, spec.dtype), i)
    for _ in range(warmup):
        model.invoke()
    return model


def invoke_ms(model: Model, runs: int) -> list[float]:
    """Milliseconds of ``runs`` invokes of a ready model, one after another."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def back_to_back(steps: Sequence[Callable[[], Any]], seconds: float, settle: float = 0.3) -> float:
    """Calls per second of every ``steps[i]`` run back to back in its own thread, pinned to
    its own core (as the server's workers are), counted over ``seconds`` after ``settle``.
    A step that raises stops the measurement; the error is raised here."""
    cores = usable_cores()
    counts, stop = [0] * len(steps), threading.Event()
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            os.sched_setaffinity(0, {cores[i % len(cores)]})
        except (AttributeError, OSError):
            pass
        try:
            while not stop.is_set():
                steps[i]()
                counts[i] += 1
        except BaseException as exc:  # noqa: BLE001 - raised below, in the caller's thread
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(steps))]
    for t in threads:
        t.start()
    stop.wait(settle)
    c0, t0 = sum(counts), time.perf_counter()
    stop.wait(seconds)
    c1, t1 = sum(counts), time.perf_counter()
    stop.set()
    for t in threads:
        t.join(30)
    if errors:
        raise RuntimeError(f"a back-to-back step failed: {errors[0]!r}") from errors[0]
    return (c1 - c0) / (t1 - t0)


def back_to_back_fps(models: Sequence[Model], seconds: float, settle: float = 0.3) -> float:
    """Frames/s of ready models invoking back to back, one pinned thread each."""
    return back_to_back([m.invoke for m in models], seconds, settle) * models[0].batch_size


# -- the ceilings a served run is compared with -------------------------------------------------------
def ceiling(model_path: Path, n: int, seconds: float, batch: int = 1) -> tuple[float, float]:
    """(frames/s of n interpreter instances invoking back to back on ready tensors, pinned
    one per core; p50 ms of one invoke per frame with the others idle)."""
    models = [ready(Model(model_path, batch_size=batch if batch > 1 else None)) for _ in range(n)]
    one = float(np.median(invoke_ms(models[0], 50))) / batch
    return back_to_back_fps(models, seconds, settle=0.5), one


def stage_ms(model: Model, pre: Any, frame: Any, fmt: str, runs: int) -> tuple[list[float], list[float]]:
    """Milliseconds of ``runs`` kernel calls (``pre``, a :class:`~streampi.preprocess.Preprocessor`,
    writing ``frame`` into the model's input tensor) and of the invoke after each, timed apart."""
    kernel, invoke = [], []
    for _ in range(runs):
        view = model.input_view()
        t0 = time.perf_counter()
        pre(frame, fmt, out=view[0])
        kernel.append((time.perf_counter() - t0) * 1e3)
        del view  # the interpreter refuses to run while a view of its buffers is alive
        t0 = time.perf_counter()
        model.invoke()
        invoke.append((time.perf_counter() - t0) * 1e3)
    return kernel, invoke


def pipeline_ceiling(model_path: Path, n: int, seconds: float, size: tuple[int, int] = (640, 480),
                     settle: float = 0.5, jpeg: bytes | None = None) -> dict[str, float]:
    """What a perfect server could do: ``n`` threads, pinned one per core, each running
    streampi's kernel (resize + quantize into the interpreter's own input tensor) on a
    ``size`` RGB frame already in memory and then invoke, back to back. No sockets, no
    decoding of messages, no scheduling: the server's share is whatever it loses below this.
    ``jpeg``: these JPEG bytes instead, decoded by the kernel each time (as the server does).
    Returns frames/s and the p50 ms of one kernel call and one invoke, each timed apart."""
    import functools

    from .config import load_config
    from .preprocess import Preprocessor
    from .synthetic import ShapesGenerator

    config = load_config(model_path)
    models = [ready(Model(model_path)) for _ in range(n)]
    pres = [Preprocessor.for_model(m, config) for m in models]
    frame, _ = ShapesGenerator(seed=0).frame(*size)
    frame = np.ascontiguousarray(frame)
    fmt = "rgb"
    if jpeg is not None:
        frame, fmt = jpeg, "jpeg"

    def one(i: int) -> None:
        view = models[i].input_view()
        pres[i](frame, fmt, out=view[0])
        del view  # the interpreter refuses to run while a view of its buffers is alive
        models[i].invoke()

    kernel, invoke = stage_ms(models[0], pres[0], frame, fmt, 30)  # timed apart, the other cores idle
    fps = back_to_back([functools.partial(one, i) for i in range(n)], seconds, settle)
    return {"instances": n, "fps": fps, "frame": f"{size[0]}x{size[1]} {fmt}",
            "kernel_p50_ms": float(np.median(kernel)), "invoke_p50_ms": float(np.median(invoke))}
