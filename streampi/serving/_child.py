"""The main function of a worker process: load the model, then invoke on request.

The server process writes each batch's input tensor into shared memory (a memfd it hands
over once, mapped here too) and sends the batch size over a socket pair; this process
copies the slot into the interpreter, invokes, writes the dequantized outputs back into
shared memory and answers with the invoke time. It holds no frame, no socket to the
network and no state worth saving: when it dies, the server starts another.

Kept small and free of server imports so that the fork server preloads it cheaply.
"""

from __future__ import annotations

import mmap
import os
import time
from multiprocessing import reduction
from typing import Any

import numpy as np

from ..model import Model

try:  # loaded once in the fork server, shared copy-on-write by every worker
    from ai_edge_litert import interpreter as _litert  # noqa: F401
except ImportError:  # pragma: no cover - another backend
    pass


def set_process_name(name: str) -> None:
    """Name this process as ``ps``/``top`` show it (``/proc/self/comm``, 15 bytes)."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:  # pragma: no cover - not Linux
        pass


def layout(max_batch: int, input_shape: tuple[int, ...], input_dtype: str,
           output_shapes: list[tuple[int, ...]]) -> tuple[int, list[int], int]:
    """Byte offsets in the shared block: (input offset 0, [output offsets], total size).
    Outputs are float32, ``max_batch`` frames each; every region starts 64-byte aligned."""
    def align(n: int) -> int:
        return -(-n // 64) * 64

    size = align(max_batch * int(np.prod(input_shape)) * np.dtype(input_dtype).itemsize)
    offsets = []
    for shape in output_shapes:
        offsets.append(size)
        size += align(max_batch * int(np.prod(shape)) * 4)
    return 0, offsets, max(size, 64)


def views(buf: Any, max_batch: int, input_shape: tuple[int, ...], input_dtype: str,
          output_shapes: list[tuple[int, ...]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """NumPy views of the input slots and the output slots inside ``buf``."""
    _, offsets, _ = layout(max_batch, input_shape, input_dtype, output_shapes)
    inp = np.ndarray((max_batch, *input_shape), dtype=input_dtype, buffer=buf, offset=0)
    outs = [np.ndarray((max_batch, *shape), dtype=np.float32, buffer=buf, offset=off)
            for shape, off in zip(output_shapes, offsets)]
    return inp, outs


def main(conn: Any, index: int, cores: list[int] | None, model_path: str, backend: str | None, threads: int,
         delegates: list, max_batch: int, input_shape: tuple[int, ...], input_dtype: str,
         output_shapes: list[tuple[int, ...]]) -> None:
    set_process_name(f"streampi-w{index}")
    if cores:
        try:
            os.sched_setaffinity(0, set(cores))
        except OSError:  # pragma: no cover - a core went away
            pass
    try:
        fd = reduction.recv_handle(conn)
        _, _, size = layout(max_batch, input_shape, input_dtype, output_shapes)
        block = mmap.mmap(fd, size)
        os.close(fd)
        inp, outs = views(block, max_batch, input_shape, input_dtype, output_shapes)
        model = Model(model_path, backend=backend, num_threads=threads, delegates=delegates)
        model.image_input()
        if model.batch_resizable:
            model.resize_batch(max_batch)
    except BaseException as exc:  # reported to the server, which decides what to do
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid(), model.delegate_errors))
    while True:
        try:
            n = conn.recv()
        except (EOFError, OSError):  # the server is gone
            return
        if n is None:
            return
        try:
            if model.batch_resizable:
                model.resize_batch(n)
            model.set_input(inp[:n])
            t0 = time.perf_counter()
            model.invoke()
            infer_ms = (time.perf_counter() - t0) * 1e3
            for out, value in zip(outs, model.outputs_float()):
                out[:n] = value
        except Exception as exc:  # the interpreter refused this batch; the process is fine
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("ok", infer_ms))
