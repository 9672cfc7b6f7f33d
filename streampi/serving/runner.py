"""The main function of a runner process: load the model, then invoke on request.

A worker (:class:`~streampi.serving.workers.WorkerSlot`, a thread of the server) runs its
interpreter here with ``--isolation process``.

The server process writes each batch's input tensor into shared memory (a memfd it hands
over once, mapped here too) and sends the batch size over a socket pair; this process
copies the slot into the interpreter, invokes, writes the dequantized outputs back into
shared memory and answers with the invoke time. It holds no frame, no socket to the
network and no state worth saving: when it dies, the server starts another.

The *light path*: besides its one-thread interpreter (one per core when every worker is
busy), the process may hold a second, wide interpreter of the same model whose helper
threads run on the other cores. The server asks for it for a lone frame while every other
worker idles, so that a frame at light load gets every idle core. XNNPACK creates its
thread pool when the interpreter is created and the pool's threads inherit the creating
thread's CPU affinity at that moment: the wide interpreter is therefore created while this
thread is pinned to the *other* cores, and this thread is pinned back to its own core after.

Requests and replies on the hot path are fixed-size structs written straight to the socket
(:data:`REQUEST`, :data:`REPLY`), not pickles: a round trip costs about half as much.

Kept small and free of server imports so that the fork server preloads it cheaply. The
start-up handshake says where this process imported streampi from: the server refuses a runner
that runs other code than its own.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from multiprocessing import reduction
from typing import Any

import numpy as np

import streampi

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


#: worker → runner: frames in the batch (0: exit), 1 to run it on the wide interpreter
REQUEST = struct.Struct("<ii")
#: runner → worker: status (0 ok, 1 error: a message follows as one ``send_bytes``),
#: interpreter threads of the invoke, invoke milliseconds
REPLY = struct.Struct("<iid")
OK, ERROR = 0, 1


def read_exact(fd: int, size: int) -> bytes:
    """``size`` bytes from a stream socket (a short read is continued); EOFError at its end."""
    data = os.read(fd, size)
    while len(data) < size:
        more = os.read(fd, size - len(data))
        if not more:
            raise EOFError("the other end closed the socket")
        data += more
    return data


def pinned_while(cores: list[int] | None, create: Any) -> Any:
    """``create()`` with this thread pinned to ``cores`` (threads it starts inherit them),
    then this thread's affinity as before."""
    if not cores:
        return create()
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, set(cores))
    except OSError:  # pragma: no cover - a core went away: the pool floats
        return create()
    try:
        return create()
    finally:
        os.sched_setaffinity(0, before)


def load_light(model_path: str, backend: str | None, threads: int, delegates: list,
               helper_cores: list[int] | None) -> Model:
    """The wide interpreter at batch 1, its helper threads pinned to ``helper_cores``."""
    def create() -> Model:
        m = Model(model_path, backend=backend, num_threads=threads, delegates=delegates)
        m.image_input()
        if m.batch_resizable and m.batch_size != 1:
            m.resize_batch(1)
        return m

    return pinned_while(helper_cores, create)


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
         output_shapes: list[tuple[int, ...]], light_threads: int = 0,
         helper_cores: list[int] | None = None) -> None:
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
        light = load_light(model_path, backend, light_threads, delegates, helper_cores) \
            if light_threads > threads else None
    except BaseException as exc:  # reported to the server, which decides what to do
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid(), model.delegate_errors, streampi.__file__))
    sock = conn.fileno()
    while True:
        try:
            n, wide = REQUEST.unpack(read_exact(sock, REQUEST.size))
        except (EOFError, OSError):  # the server is gone
            return
        if n <= 0:
            return
        try:
            interp = light if wide and n == 1 and light is not None else model
            if interp is model and model.batch_resizable:
                model.resize_batch(n)
            interp.set_input(inp[:n])
            t0 = time.perf_counter()
            interp.invoke()
            infer_ms = (time.perf_counter() - t0) * 1e3
            for out, value in zip(outs, interp.outputs_float()):
                out[:n] = value
        except Exception as exc:  # the interpreter refused this batch; the process is fine
            os.write(sock, REPLY.pack(ERROR, 0, 0.0))
            conn.send_bytes(f"{type(exc).__name__}: {exc}".encode())
            continue
        os.write(sock, REPLY.pack(OK, interp.num_threads, infer_ms))
