"""Timing of interpreters on this machine, shared by ``streampi inspect`` and ``streampi bench``."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .model import Model
from .runtime_info import usable_cores

__all__ = ["back_to_back", "back_to_back_fps", "invoke_ms", "ready", "usable_cores"]


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
