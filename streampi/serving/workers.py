"""Workers, supervised: one slot per worker index, its runner restarted when it dies.

Names, used the same everywhere: a *worker* is a :class:`WorkerSlot` (what ``--workers``
counts and ``streampi ctl workers`` lists), a thread of the server process pinned to the
worker's core(s). It takes a batch, preprocesses every frame straight into the batch's input
slot (the Cython kernel releases the GIL), has its *runner* invoke the interpreter, and
post-processes. Where the runner lives is the *isolation*:

* ``process`` (the default): :class:`ProcessRunner`, a process (``streampi-w<index>``,
  running :mod:`streampi.serving.runner`) started by a fork server. The input slot is shared
  memory, so a frame is written once, by the kernel, and the runner process only copies the
  slot into its interpreter. A crash of the interpreter (a segfaulting delegate, ``abort()``,
  the OOM killer) kills the runner, not the server: the worker notices at once (the process
  sentinel), reports the batch as lost so that the server can run its frames again, and
  starts a new runner.
* ``thread``: :class:`ThreadRunner`, the interpreter in the worker thread itself (for
  platforms without ``fork``/memfd): cheaper by a pipe round trip, but a crash takes the
  server down.

The *light path*: a frame that arrives while every worker idles would run on one core with
the others idle. Each runner therefore also holds a wide interpreter (``light_threads``
threads, its helpers pinned to the other cores) and runs a lone frame on it when the server
says the other workers are idle (``submit(batch, alone=True)``) and none of them got work
since (:class:`Occupancy`, checked again just before the invoke). When workers are busy
every batch runs on the one-thread interpreters, one per core, as before: the wide
interpreters' thread pools sleep (XNNPACK's workers do not spin between invokes; measured by
``bench/lightload.py``), so saturation pays nothing for them.

Figures behind this design are in docs/architecture.md.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
import os
import queue
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import connection, reduction
from typing import Any

import numpy as np

import streampi

from ..config import ModelConfig, load_config
from ..decoders import make_decoder
from ..errors import FrameError, StreampiError
from ..model import Model, TensorSpec
from ..preprocess import Preprocessor
from ..runtime_info import usable_cores
from . import runner as runner_process
from .options import ISOLATIONS, ServerOptions, process_isolation_available  # noqa: F401 - part of this module's API

log = logging.getLogger("streampi.workers")

#: a worker that finished a batch, or stayed up this long, is healthy: replaced at once
HEALTHY_AFTER_S = 10.0
BACKOFF_MAX_S = 30.0
LOAD_TIMEOUT_S = 120.0


@dataclass
class Outcome:
    """What happened to one frame in a batch: a result payload or an error."""

    payload: dict | None = None
    error: tuple[str, str] | None = None  # (code, message)
    pre_ms: float = 0.0
    timing: dict = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker of one server loads and how batches are laid out."""

    model_path: str
    config: ModelConfig
    input: TensorSpec  # at batch 1
    image_shape: tuple[int, int, int]
    outputs: tuple[TensorSpec, ...]  # at batch 1
    batch_resizable: bool
    backend: str | None = None
    threads: int = 1
    max_batch: int = 4
    delegates: tuple = ()
    invoke_timeout: float = 10.0
    model_info: dict = field(default_factory=dict)  # name and sha256 prefix: every result names its model
    batchable: bool = True  # the model and its decoder can take batches of several frames
    #: threads of the wide interpreter that runs a lone frame while the other workers idle;
    #: the light path exists only when this is more than ``threads``
    light_threads: int = 0
    delegate_errors: tuple[str, ...] = ()  # delegates that failed to load when the model was probed
    backend_name: str = ""  # the interpreter backend the probe ran on

    @classmethod
    def from_model(cls, path: Any, opts: ServerOptions, config: ModelConfig | None = None,
                   overrides: dict[str, Any] | None = None) -> WorkerSpec:
        """Load ``path`` once (in this process) and describe what every worker will load: a
        model that cannot be served fails here, with its reason, before any worker starts."""
        probe = Model(path, backend=opts.backend, delegates=opts.delegates)
        image_shape = probe.image_input()
        config = config or load_config(path, **(overrides or {}))
        decoder = make_decoder(probe.outputs, config)  # a misconfigured decoder fails here, naming the option
        Preprocessor(image_shape, probe.input.dtype, scale=probe.input.scale, zero_point=probe.input.zero_point,
                     mean=config.mean, std=config.std, channels=config.channels, resize=config.resize, pad=config.pad)
        if probe.batch_resizable and probe.batch_size != 1:
            probe.resize_batch(1)
        return cls(str(path), config, probe.input, image_shape, tuple(probe.outputs), probe.batch_resizable,
                   backend=opts.backend, threads=opts.threads, max_batch=opts.max_batch,
                   delegates=tuple(opts.delegates), invoke_timeout=opts.invoke_timeout,
                   model_info={"name": probe.name, "sha256": probe.sha256[:12]},
                   batchable=probe.batch_resizable and decoder.batchable,
                   light_threads=len(usable_cores()) if opts.light_threads is None else opts.light_threads,
                   delegate_errors=tuple(probe.delegate_errors), backend_name=str(probe.backend))

    @property
    def light_path(self) -> bool:
        return self.light_threads > self.threads

    @property
    def slots(self) -> int:
        return self.max_batch if self.batch_resizable else 1

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(d) for d in o.shape[1:]) for o in self.outputs]


@dataclass
class Handover:
    """A batch the server handed to a worker: its frames, its number, and when (monotonic
    seconds): health judges each worker by the age of the batch it holds."""

    jobs: list
    batch_id: int
    since: float


class WorkerLost(Exception):
    """The runner process died (or was killed for hanging) while it held a batch."""


class WorkerStartError(StreampiError):
    """A worker could not load its model."""


class Occupancy:
    """Which worker slots of one server hold a batch now (submitted and not finished).

    Shared by the slots: a slot runs a lone frame on its wide interpreter only while no
    other slot holds work, checked just before the invoke, so that a frame handed to another
    worker while this one preprocessed keeps the wide interpreter off the busy cores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holding: set[Any] = set()

    def hold(self, slot: Any) -> None:
        with self._lock:
            self._holding.add(slot)

    def release(self, slot: Any) -> None:
        with self._lock:
            self._holding.discard(slot)

    def others_busy(self, slot: Any) -> bool:
        with self._lock:
            return len(self._holding) - (slot in self._holding) > 0


def helper_cores(own: Sequence[int] | None, light_cores: Sequence[int] | None) -> list[int] | None:
    """Where the wide interpreter's helper threads run: the cores other than the worker's own
    (its own core runs the invoking thread). ``None`` (not pinned) when the worker is not."""
    if not own or not light_cores:
        return None
    others = [c for c in light_cores if c not in own]
    return others or None


BAND_WAIT_S = 10.0  # a band helper that has not finished by then is broken: the frame fails


class BandWriters:
    """Threads that write bands of a lone frame's input rows while the other cores idle.

    At light load the kernel (~0.65 ms for a 640×480 frame on the area path) would run on the
    worker's core with the others idle: the light path splits it into bands of output rows
    (:meth:`Preprocessor.bands`), one per helper thread plus one for the calling thread. Each
    helper is pinned to one of the other cores (the wide interpreter's helper cores) and
    started on first use; bands are disjoint and the kernel writes without the GIL, so the slot
    gets the bytes one whole call would write."""

    def __init__(self, helpers: int, cores: Sequence[int] | None, name: str) -> None:
        self.helpers, self._cores, self._name = helpers, list(cores) if cores else [], name
        self._todo: list[queue.SimpleQueue] = []
        self._done: queue.SimpleQueue = queue.SimpleQueue()

    def _start(self) -> None:
        for k in range(self.helpers):
            todo: queue.SimpleQueue = queue.SimpleQueue()
            core = self._cores[k % len(self._cores)] if self._cores else None
            threading.Thread(target=self._serve, args=(todo, core), name=f"{self._name}-band{k}", daemon=True).start()
            self._todo.append(todo)

    def _serve(self, todo: queue.SimpleQueue, core: int | None) -> None:
        if core is not None:
            try:
                os.sched_setaffinity(0, {core})
            except OSError:
                pass
        while True:
            item = todo.get()
            if item is None:
                return
            pre, frame, out, rows = item
            failure: BaseException | None = None
            try:
                pre.write(frame, out, rows)
            except BaseException as exc:  # told to the caller, which fails the frame (its traceback
                failure = exc.with_traceback(None)  # would keep the slot alive through the frames' locals)
            # no reference to the slot may outlive the write: with --isolation thread it is the
            # interpreter's own input tensor, which cannot be resized while a view of it lives
            del item, pre, frame, out
            self._done.put(failure)
            del failure

    def write(self, pre: Preprocessor, frame: Any, out: np.ndarray, n: int | None = None) -> None:
        """Write ``frame`` into the slot ``out`` in ``n`` bands (default: one per helper and this
        thread), this thread taking the last one."""
        if not self._todo:
            self._start()
        n = self.helpers + 1 if n is None else min(n, self.helpers + 1)
        bands = pre.bands(frame, n)
        for todo, rows in zip(self._todo, bands[:-1]):
            todo.put((pre, frame, out, rows))
        failure: BaseException | None = None
        try:
            pre.write(frame, out, bands[-1])
        except BaseException as exc:
            failure = exc
        for _ in range(n - 1):  # every helper is done with ``out`` before it is used again
            try:
                exc = self._done.get(timeout=BAND_WAIT_S)
            except queue.Empty:
                exc = RuntimeError(f"a band helper did not finish within {BAND_WAIT_S:g} s")
            failure = failure or exc
        if failure is not None:
            raise failure

    def stop(self) -> None:
        for todo in self._todo:
            todo.put(None)
        self._todo = []


# -- runners: where the interpreter runs ------------------------------------------------------
class ThreadRunner:
    """The interpreter in the worker thread itself (``--isolation thread``)."""

    threads_used = 0

    def __init__(self, spec: WorkerSpec, helpers: list[int] | None = None) -> None:
        self.spec = spec
        self.pid = os.getpid()
        self.streampi_file = streampi.__file__
        self.model = Model(spec.model_path, backend=spec.backend, num_threads=spec.threads,
                           delegates=list(spec.delegates))
        self.model.image_input()
        if self.model.batch_resizable:
            self.model.resize_batch(spec.max_batch)
        self.light = runner_process.load_light(spec.model_path, spec.backend, spec.light_threads, list(spec.delegates),
                                       helpers) if spec.light_path else None
        self.delegate_errors = self.model.delegate_errors

    def inputs(self, n: int) -> np.ndarray:
        if self.model.batch_resizable:
            self.model.resize_batch(n)
        return self.model.input_view()

    def run(self, n: int, wide: bool = False) -> tuple[list[np.ndarray], float]:
        """Invoke on the first ``n`` input slots (the wide interpreter if ``wide`` and it can);
        the outputs and the invoke's milliseconds. ``threads_used``: that invoke's threads."""
        interp = self.model
        if wide and n == 1 and self.light is not None:
            interp = self.light
            interp.set_input(self.model.input_view()[:1])  # 150 KB for MobileNetV2: ~10 µs
        t0 = time.perf_counter()
        interp.invoke()
        infer_ms = (time.perf_counter() - t0) * 1e3
        self.threads_used = interp.num_threads
        return interp.outputs_float(), infer_ms

    def alive(self) -> bool:
        return True

    def stop(self, timeout: float = 0.0) -> None:
        self.model = self.light = None  # type: ignore[assignment]

    kill = stop


class ProcessRunner:
    """The interpreter in a runner process (``--isolation process``); batches in and out
    through shared memory."""

    threads_used = 0

    def __init__(self, spec: WorkerSpec, index: int, cores: Sequence[int] | None, block_fd: int,
                 inputs: np.ndarray, outputs: list[np.ndarray], ctx: Any, helpers: list[int] | None = None) -> None:
        self.spec, self._inputs, self._outputs = spec, inputs, outputs
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=runner_process.main, name=f"streampi-w{index}", daemon=True,
            args=(child_conn, index, list(cores) if cores else None, spec.model_path, spec.backend, spec.threads,
                  list(spec.delegates), spec.slots, spec.image_shape, str(np.dtype(spec.input.dtype)),
                  spec.output_shapes, spec.light_threads if spec.light_path else 0, helpers))
        self.proc.start()
        child_conn.close()
        try:
            reduction.send_handle(self._conn, block_fd, self.proc.pid)
            if not connection.wait([self._conn, self.proc.sentinel], LOAD_TIMEOUT_S):
                raise WorkerStartError(f"the runner of worker {index} did not load its model in "
                                       f"{LOAD_TIMEOUT_S:.0f} s")
            msg = self._conn.recv() if self._conn.poll() else None
        except (EOFError, OSError) as exc:
            msg = None
            detail = str(exc)
        else:
            detail = ""
        if not msg or msg[0] != "ready":
            self.kill()
            if msg and msg[0] == "error":
                raise WorkerStartError(msg[1])
            raise WorkerStartError(f"the runner process of worker {index} died while loading the model "
                                   f"(exit code {self.proc.exitcode}) {detail}".strip())
        self.pid, self.delegate_errors, self.streampi_file = msg[1], msg[2], msg[3]
        if not same_file(self.streampi_file, streampi.__file__):
            self.kill()
            raise WorkerStartError(
                f"the runner process of worker {index} imported streampi from {self.streampi_file}, but the server "
                f"imported it from {streampi.__file__}: the runners' fork server found another streampi first "
                f"(PYTHONPATH changed after the server started?)")
        # the hot path: fixed-size structs on the socket, one poll object for the socket and
        # the process sentinel (multiprocessing's pickles and per-call selector cost twice as much)
        self._fd = self._conn.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._poll.register(self.proc.sentinel, select.POLLIN)

    def inputs(self, n: int) -> np.ndarray:
        return self._inputs

    def run(self, n: int, wide: bool = False) -> tuple[list[np.ndarray], float]:
        """As :meth:`ThreadRunner.run`, in the runner process."""
        try:
            os.write(self._fd, runner_process.REQUEST.pack(n, int(wide)))
        except OSError as exc:
            raise WorkerLost(f"process {self.pid} is gone ({exc})") from None
        timeout = self.spec.invoke_timeout
        ready = {fd for fd, _ in self._poll.poll(timeout * 1e3 if timeout > 0 else None)}
        if self._fd in ready:
            try:
                status, threads, infer_ms = runner_process.REPLY.unpack(runner_process.read_exact(self._fd, runner_process.REPLY.size))
                if status != runner_process.OK:
                    raise RuntimeError(self._conn.recv_bytes().decode(errors="replace"))
            except (EOFError, OSError):
                raise WorkerLost(self._death()) from None
            self.threads_used = threads
            return [o[:n] for o in self._outputs], infer_ms
        if not ready:
            self.kill()
            raise WorkerLost(f"invoke took longer than --invoke-timeout {timeout:g} s; process {self.pid} killed")
        raise WorkerLost(self._death())

    def _death(self) -> str:
        self.proc.join(1.0)
        code = self.proc.exitcode
        if code is not None and code < 0:
            import signal
            try:
                return f"process {self.pid} killed by {signal.Signals(-code).name}"
            except ValueError:
                pass
        return f"process {self.pid} exited with code {code}"

    def alive(self) -> bool:
        return self.proc.exitcode is None

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the runner process to exit; kill it if it has not after ``timeout`` seconds."""
        try:
            os.write(self._conn.fileno(), runner_process.REQUEST.pack(0, 0))
        except (OSError, ValueError):  # gone, or the connection is closed already
            pass
        self.proc.join(timeout)
        self.kill()

    def kill(self) -> None:
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(2.0)
        self._conn.close()


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


_mp_context: Any = None
_mp_lock = threading.Lock()
#: left out of the fork server's environment: systemd's notify socket and watchdog are the
#: server's alone (a runner must never speak for it)
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _fork_server() -> Any:
    """The multiprocessing context runner processes start from: a fork server that has
    already imported numpy, the interpreter and :mod:`streampi.serving.runner`, so that a
    replacement runner starts in milliseconds plus the model's load time.

    The fork server is a new interpreter (``python -c ...``): it is started here, with
    ``PYTHONSAFEPATH=1`` (Python 3.11+), so that the working directory is not first on its
    ``sys.path`` and a ``streampi/`` folder there is not what the runners import. Each runner
    also reports the streampi it imported in its start-up handshake (every Python version)."""
    global _mp_context
    with _mp_lock:
        if _mp_context is None:
            from multiprocessing import forkserver

            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["streampi.serving.runner"])
            saved = {name: os.environ.get(name) for name in ("PYTHONSAFEPATH", *_NOT_INHERITED)}
            os.environ["PYTHONSAFEPATH"] = "1"
            for name in _NOT_INHERITED:
                os.environ.pop(name, None)
            try:
                forkserver.ensure_running()
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
            _mp_context = ctx
    return _mp_context


# -- the slot ------------------------------------------------------------------------------------
class Events:
    """What a slot tells the server (each call is bounced into the server's event loop)."""

    def worker_state(self, slot: WorkerSlot, state: str) -> None: ...
    def batch_done(self, slot: WorkerSlot, batch: list, outcomes: list[Outcome]) -> None: ...
    def batch_lost(self, slot: WorkerSlot, batch: list, reason: str) -> None: ...
    def batch_returned(self, slot: WorkerSlot, batch: list) -> None: ...


_STOP = object()


class WorkerSlot(threading.Thread):
    """Worker ``index``: preprocesses, has its runner invoke, post-processes, and starts a
    new runner when the runner process dies (at once after a healthy run; with a
    back-off of 1, 2, 4 … 30 s while it keeps dying young: a crash loop).

    States (``state``): ``starting``, ``ready``, ``backoff``, ``stopped``.
    """

    def __init__(self, index: int, spec: WorkerSpec, *, isolation: str = "process",
                 cores: Sequence[int] | None = None, emit: Callable[..., None] | None = None,
                 events: Events | None = None, occupancy: Occupancy | None = None,
                 light_cores: Sequence[int] | None = None) -> None:
        super().__init__(name=f"streampi-w{index}", daemon=True)
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.index, self.spec, self.isolation = index, spec, isolation
        self.cores = list(cores) if cores else None
        #: the other workers' slots (shared), and the cores the light path may use (default:
        #: every core this process may run on, read now: servers build slots on their loop thread)
        self.occupancy = occupancy or Occupancy()
        self._helpers = helper_cores(self.cores, light_cores if light_cores is not None else usable_cores())
        self._alone = False  # the server said the other workers idle when it gave the batch in hand
        self.light_frames = 0  # frames run on the wide interpreter
        self.invoking_wide = False  # the batch in hand is being invoked on the wide interpreter now
        self._emit = emit or (lambda fn, *args: fn(*args))
        self.events = events or Events()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self.start_error: BaseException | None = None
        self.runner: Any = None
        self.state = "starting"
        self.generation = 0
        self.restarts = 0
        self.frames_done = 0
        self.batches_done = 0
        self.busy_s = 0.0
        self._failures = 0  # deaths in a row of workers that never got healthy
        self.started = time.monotonic()
        self._batches_this_run = 0
        self._block_fd = -1
        self.last_done = time.monotonic()
        self.delegate_errors: list[str] = []
        self.pre = Preprocessor(spec.image_shape, spec.input.dtype, scale=spec.input.scale,
                                zero_point=spec.input.zero_point, mean=spec.config.mean, std=spec.config.std,
                                channels=spec.config.channels, resize=spec.config.resize, pad=spec.config.pad)
        self.post = make_decoder(list(spec.outputs), spec.config)
        #: the light path's kernel share: one band helper per other core the wide interpreter uses
        band_helpers = spec.light_threads - 1 if self._helpers is None else min(spec.light_threads - 1, len(self._helpers))
        self._bands = BandWriters(band_helpers, self._helpers, self.name) if spec.light_path else None
        if isolation == "process":
            self._block_fd = os.memfd_create(f"streampi-w{index}", getattr(os, "MFD_CLOEXEC", 0))
            _, _, size = runner_process.layout(spec.slots, spec.image_shape, str(np.dtype(spec.input.dtype)),
                                       spec.output_shapes)
            os.ftruncate(self._block_fd, size)
            self._block = mmap.mmap(self._block_fd, size)
            self._in, self._out = runner_process.views(self._block, spec.slots, spec.image_shape,
                                               str(np.dtype(spec.input.dtype)), spec.output_shapes)

    # -- driven by the server -------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        runner = self.runner
        return runner.pid if runner is not None else None

    def wait_ready(self, timeout: float = LOAD_TIMEOUT_S + 5) -> None:
        """Block until the first model load finished; raise its error if it failed."""
        if not self._ready.wait(timeout):
            raise WorkerStartError(f"worker {self.index} did not load its model in {timeout:.0f} s")
        if self.start_error is not None:
            raise self.start_error

    def submit(self, batch: list, alone: bool = False) -> None:
        """Hand ``batch`` to this worker. ``alone``: every other worker idles and nothing else
        waits, so a lone frame may take the wide interpreter (if none of them gets work
        before its invoke)."""
        self.occupancy.hold(self)
        self._inbox.put((batch, alone))

    def stop(self) -> None:
        """Finish the batch in hand, then stop the interpreter and the thread."""
        self._stopping.set()
        self._inbox.put(_STOP)

    def kill(self) -> None:
        """Kill the runner process now (at the end of a stop deadline)."""
        runner = self.runner
        if isinstance(runner, ProcessRunner):
            runner.kill()

    # -- the thread ---------------------------------------------------------------------------------
    def _new_runner(self) -> Any:
        self.generation += 1
        if self.isolation == "thread":
            return ThreadRunner(self.spec, self._helpers)
        return ProcessRunner(self.spec, self.index, self.cores, self._block_fd, self._in, self._out,
                              _fork_server(), self._helpers)

    def _set_state(self, state: str) -> None:
        self.state = state
        self._emit(self.events.worker_state, self, state)

    def run(self) -> None:
        if self.cores:
            try:
                os.sched_setaffinity(0, set(self.cores))  # this thread: the kernel runs on the worker's core
            except OSError:
                pass
        try:
            self.runner = self._new_runner()
            self.delegate_errors = list(self.runner.delegate_errors)
        except BaseException as exc:  # reported by wait_ready
            self.start_error = exc
            self.state = "stopped"
            self._ready.set()
            self._close_block()
            return
        self._ready.set()
        self.started = time.monotonic()
        self._set_state("ready")
        try:
            self._serve()
        finally:
            if self.runner is not None:
                self.runner.stop()
            if self._bands is not None:
                self._bands.stop()
            self.state = "stopped"
            self._close_block()

    def _serve(self) -> None:
        while True:
            try:
                item = self._inbox.get(timeout=0.2)
            except queue.Empty:
                if not self.runner.alive():  # the runner died while idle: nothing to re-run, replace it
                    if not self._replace(self.runner._death()):
                        return
                continue
            if item is _STOP:
                return
            batch, self._alone = item
            t0 = time.monotonic()
            try:
                outcomes = self._run(batch)
            except WorkerLost as lost:
                self.busy_s += time.monotonic() - t0
                self.occupancy.release(self)
                self._emit(self.events.batch_lost, self, batch, str(lost))
                if not self._replace(str(lost)):
                    return
                continue
            except Exception as exc:  # a bug in this thread: the batch is told, the thread lives on
                log.exception("worker %d: batch failed", self.index)
                outcomes = [Outcome(error=("internal", f"worker {self.index} failed: {type(exc).__name__}: {exc}"))
                            for _ in batch]
            self.busy_s += time.monotonic() - t0
            self.frames_done += len(batch)
            self.batches_done += 1
            self._batches_this_run += 1
            self.last_done = time.monotonic()
            self.occupancy.release(self)  # before the server hears of it and hands out more
            self._emit(self.events.batch_done, self, batch, outcomes)

    def _replace(self, reason: str) -> bool:
        """Start a new runner after a death; False when stopping instead."""
        log.warning("the runner of worker %d (pid %s, generation %d) died: %s", self.index, self.pid, self.generation, reason)
        self.runner.kill()
        young = self._batches_this_run == 0 and time.monotonic() - self.started < HEALTHY_AFTER_S
        self._failures = self._failures + 1 if young else 0
        while not self._stopping.is_set():
            if self._failures:
                delay = min(BACKOFF_MAX_S, 2.0 ** (self._failures - 1))
                self._set_state("backoff")
                self._return_waiting()
                log.warning("worker %d keeps dying young; next start in %.0f s", self.index, delay)
                if self._stopping.wait(delay):
                    return False
            self._set_state("starting")
            try:
                self.runner = self._new_runner()
            except WorkerStartError as exc:
                self._failures += 1
                log.error("the runner of worker %d could not start (generation %d): %s", self.index, self.generation, exc)
                continue
            self.restarts += 1
            self.started = time.monotonic()
            self._batches_this_run = 0
            log.info("worker %d has a new runner: pid %s, generation %d", self.index, self.pid, self.generation)
            self._set_state("ready")
            return True
        return False

    def _return_waiting(self) -> None:
        """Hand batches already queued here back to the server: this worker may be down long."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is _STOP:
                self._inbox.put(_STOP)
                return
            self.occupancy.release(self)
            self._emit(self.events.batch_returned, self, item[0])

    def _close_block(self) -> None:
        """Close the memfd; the mapping goes when the last view of it does."""
        if self.isolation == "process" and self._block_fd >= 0:
            os.close(self._block_fd)
            self._block_fd = -1

    def _run(self, batch: Sequence[Any]) -> list[Outcome]:
        """Preprocess, invoke, post-process one batch. Every frame gets an outcome; a
        failure of one frame (preprocessing, post-processing) is that frame's alone."""
        outcomes = [Outcome() for _ in batch]
        good: list[int] = []
        transforms: dict[int, Any] = {}  # how each frame maps to the input (boxes go back through it)
        view = self.runner.inputs(len(batch))
        # a lone frame while the other workers idle: its kernel may use their cores too
        light = (self._alone and len(batch) == 1 and self._bands is not None and self._bands.helpers > 0
                 and not self.occupancy.others_busy(self))
        for k, job in enumerate(batch):
            t0 = time.perf_counter()
            msg = job.msg
            try:
                if light:
                    frame = self.pre.prepare(msg.data, msg.fmt, msg.width, msg.height)
                    # only where the split pays (a cost model of the kernel against the hand-off)
                    if (n := self.pre.band_count(frame, self._bands.helpers + 1)) > 1:  # type: ignore[union-attr]
                        self._bands.write(self.pre, frame, view[len(good)], n)  # type: ignore[union-attr]
                        outcomes[k].timing["pre_bands"] = n
                    else:
                        self.pre.write(frame, view[len(good)])
                    transforms[k] = frame.transform
                else:
                    transforms[k] = self.pre(msg.data, msg.fmt, msg.width, msg.height, out=view[len(good)])[1]
                good.append(k)
            except FrameError as exc:
                outcomes[k].error = ("bad_frame", str(exc))
            except Exception as exc:  # a bug or MemoryError: this frame's, not the batch's
                log.exception("preprocessing %s/%s failed", msg.stream, msg.seq)
                outcomes[k].error = ("internal", f"preprocessing failed: {type(exc).__name__}: {exc}")
            outcomes[k].pre_ms = (time.perf_counter() - t0) * 1e3
        del view
        if not good:
            return outcomes
        # the light path: a lone frame, the other workers idle when it was handed over and still now
        wide = (self._alone and len(good) == 1 and self.spec.light_path
                and not self.occupancy.others_busy(self))
        t_run = time.perf_counter()
        self.invoking_wide = wide
        try:  # (the good frames are at the front of the input slots)
            outputs, infer_ms = self.runner.run(len(good), wide)
        except WorkerLost:
            raise
        except Exception as exc:  # the interpreter failed on this batch
            log.error("worker %d: invoke failed: %s", self.index, exc)
            for k in good:
                outcomes[k].error = ("internal", f"worker {self.index} failed: {type(exc).__name__}: {exc}")
            return outcomes
        finally:
            self.invoking_wide = False
        # the worker process's share beyond invoke: the pipe round trip and the copies in and out
        handoff_ms = (time.perf_counter() - t_run) * 1e3 - infer_ms if self.isolation == "process" else None
        threads = self.runner.threads_used
        if threads > self.spec.threads:
            self.light_frames += 1
        for pos, k in enumerate(good):
            t0 = time.perf_counter()
            try:
                outcomes[k].payload = self.post.frame_result(outputs, pos, transforms[k])
            except Exception as exc:
                log.exception("post-processing %s/%s failed", batch[k].msg.stream, batch[k].msg.seq)
                outcomes[k].error = ("internal", f"post-processing failed: {type(exc).__name__}: {exc}")
            outcomes[k].timing.update(infer_ms=infer_ms, post_ms=(time.perf_counter() - t0) * 1e3,
                                      invoke_threads=threads)
            if handoff_ms is not None:
                outcomes[k].timing["handoff_ms"] = handoff_ms
        return outcomes
