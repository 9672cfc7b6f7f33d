"""Interpreter workers: each owns one interpreter, pinned to its own core(s).

A worker is a thread. The two jobs that cost anything, preprocessing (the Cython kernel)
and ``Interpreter.invoke()``, both release the GIL, so N worker threads run on N cores in
parallel while frames stay where ZeroMQ received them (no copy, no IPC); the measurement
behind this choice is in docs/architecture.md. :func:`run_batch` is the whole per-batch
job and knows nothing of threads, so a process-based worker can reuse it unchanged.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import ModelConfig
from .decoders import Decoder, make_decoder
from .errors import FrameError, StreampiError
from .model import Model
from .preprocess import Preprocessor


@dataclass
class Outcome:
    """What happened to one frame in a batch: a result payload or an error."""

    payload: dict | None = None
    error: tuple[str, str] | None = None  # (code, message)
    pre_ms: float = 0.0
    timing: dict = field(default_factory=dict)


def usable_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def run_batch(model: Model, pre: Preprocessor, post: Decoder, frames: Sequence[Any]) -> list[Outcome]:
    """Preprocess ``frames`` into the model's input batch, invoke, split the results.

    Each frame needs ``fmt``, ``data``, ``width``, ``height``. A frame that fails to
    preprocess gets an error outcome; the others still run.
    """
    n = len(frames)
    outcomes = [Outcome() for _ in range(n)]
    if model.batch_resizable:
        groups = [list(range(n))]
        model.resize_batch(n)
    else:
        groups = [[i] for i in range(n)]  # fixed batch: one frame after another
    for group in groups:
        view = model.input_view()
        good = []
        for slot, i in enumerate(group):
            f = frames[i]
            t0 = time.perf_counter()
            try:
                transform = pre(f.data, f.fmt, f.width, f.height, out=view[slot])[1]  # no reference to the slot kept
                good.append((slot, i, transform))
            except FrameError as exc:
                outcomes[i].error = ("bad_frame", str(exc))
            outcomes[i].pre_ms = (time.perf_counter() - t0) * 1e3
        del view
        if not good:
            continue
        t0 = time.perf_counter()
        model.invoke()
        t1 = time.perf_counter()
        outputs = model.outputs_float()
        for slot, i, transform in good:
            outcomes[i].payload = post.frame_result(outputs, slot, transform)
        t2 = time.perf_counter()
        infer_ms, post_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3 / len(good)
        for _, i, _ in good:
            outcomes[i].timing = {"infer_ms": infer_ms, "post_ms": post_ms}
    return outcomes


class Worker(threading.Thread):
    """One interpreter instance in a thread of its own, pinned to ``cores``.

    ``submit(batch)`` hands it a list of frames; ``on_done(worker, batch, outcomes)``
    is called from the worker thread when they are done (the server bounces it into
    its event loop). Loading happens in the thread; :meth:`wait_ready` reports failures.
    """

    def __init__(self, index: int, model_path: str, config: ModelConfig, *, backend: str | None, threads: int,
                 cores: Sequence[int] | None, max_batch: int,
                 on_done: Callable[[Worker, list, list[Outcome]], None],
                 delegates: Sequence[tuple[str, dict]] = ()) -> None:
        super().__init__(name=f"streampi-worker-{index}", daemon=True)
        self.index, self.model_path, self.config = index, model_path, config
        self.backend_name, self.threads, self.cores, self.max_batch = backend, threads, cores, max_batch
        self.on_done, self.delegates = on_done, list(delegates)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.model: Model | None = None
        self.batches = 0

    def run(self) -> None:
        try:
            if self.cores:
                os.sched_setaffinity(0, set(self.cores))  # this thread (and the interpreter's pool it starts)
            self.model = Model(self.model_path, backend=self.backend_name, num_threads=self.threads,
                               delegates=self.delegates)
            self.model.image_input()
            if self.model.batch_resizable:
                self.model.resize_batch(self.max_batch)
            self.pre = Preprocessor.for_model(self.model, self.config)
            self.post = make_decoder(self.model.outputs, self.config)
        except BaseException as exc:  # reported to the server by wait_ready
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        while True:
            batch = self._inbox.get()
            if batch is None:
                return
            try:
                outcomes = run_batch(self.model, self.pre, self.post, batch)
            except Exception as exc:  # a bug or an interpreter failure: every frame gets told
                detail = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, StreampiError):
                    traceback.print_exc()
                outcomes = [Outcome(error=("internal", f"worker {self.index} failed: {detail}")) for _ in batch]
            self.batches += 1
            self.on_done(self, batch, outcomes)

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self._ready.wait(timeout):
            raise TimeoutError(f"worker {self.index} did not load its model in {timeout:.0f} s")
        if self.error is not None:
            raise self.error

    def submit(self, batch: list) -> None:
        self._inbox.put(batch)

    def stop(self) -> None:
        self._inbox.put(None)
