"""One loaded TFLite model: its tensor specs, batch resizing, invocation, dequantization.

:class:`Model` knows TFLite and nothing of sockets. The serving path writes frames
straight into :meth:`Model.input_view` (a NumPy view of the interpreter's own input
buffer), calls :meth:`Model.invoke` and reads :meth:`Model.outputs_float`.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import re
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, get_backend
from .errors import ModelError, ModelFileError, UnsupportedModelError, UnsupportedOpError

#: Where the bundled models live (installed with the package).
BUNDLED_DIR = Path(__file__).resolve().parent / "models"
#: The model the demo and ``streampi serve`` use when none is named.
DEFAULT_MODEL = "shapes_int8"


def bundled_model(name: str = DEFAULT_MODEL) -> Path:
    """Path of a bundled model by stem (``"shapes_int8"``, ``"mobilenet_v2_int8"``, ...)."""
    path = BUNDLED_DIR / f"{name}.tflite"
    if not path.is_file():
        have = sorted(p.stem for p in BUNDLED_DIR.glob("*.tflite"))
        raise ModelFileError(f"no bundled model {name!r}; bundled: {', '.join(have)}")
    return path


def resolve_model(name_or_path: str | Path) -> Path:
    """A path as given, or the bundled model of that name."""
    p = Path(name_or_path)
    if p.suffix == ".tflite" or p.exists() or "/" in str(name_or_path):
        return p
    return bundled_model(str(name_or_path))


#: Input dtypes the preprocessing kernels can write.
KERNEL_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.float32))
TFLITE_MAGIC = b"TFL3"


@dataclass(frozen=True)
class TensorSpec:
    """What a model expects of (or gives in) one tensor."""

    name: str
    index: int
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.name,
                "scale": self.scale, "zero_point": self.zero_point}


def _spec(d: dict) -> TensorSpec:
    scale, zp = d.get("quantization", (0.0, 0))
    sig = d.get("shape_signature", d["shape"])
    return TensorSpec(str(d["name"]), int(d["index"]), tuple(int(x) for x in d["shape"]),
                      tuple(int(x) for x in sig), np.dtype(d["dtype"]), float(scale), int(zp))


def _schema_module() -> Any | None:
    """The flatbuffer schema classes generated from TFLite's ``schema.fbs``, or None.

    LiteRT ships them (``ai_edge_litert.schema_py_generated``, a dependency of streampi),
    as does full TensorFlow; tflite-runtime does not.
    """
    for name in ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated"):
        try:
            return importlib.import_module(name)
        except Exception:  # ImportError, or a broken install of the package around it
            continue
    return None


def _index_problems(model: Any, file_size: int) -> list[str]:
    """Indices and offsets in an unpacked model that point at nothing.

    The flatbuffer reader only checks that bytes exist; these are the references between
    tables that an interpreter follows without (in older runtimes) checking them first.
    """
    problems: list[str] = []
    buffers = model.buffers or []
    n_codes = len(model.operatorCodes or [])
    subgraphs = model.subgraphs or []
    if not subgraphs:
        problems.append("it has no subgraph")
    for b, buf in enumerate(buffers):
        if buf.offset or buf.size:  # weights stored after the flatbuffer (models over 2 GB)
            if buf.offset <= 1 or buf.offset + buf.size > file_size:
                problems.append(f"buffer {b} points at bytes {buf.offset}..{buf.offset + buf.size}, "
                                f"outside the {file_size}-byte file")
    for g, sg in enumerate(subgraphs):
        tensors = sg.tensors or []
        n = len(tensors)
        for t, tensor in enumerate(tensors):
            if not 0 <= tensor.buffer < max(len(buffers), 1):
                problems.append(f"subgraph {g} tensor {t} uses buffer {tensor.buffer} of {len(buffers)}")
        for what, idx in (("input", sg.inputs), ("output", sg.outputs)):
            for i in (idx if idx is not None else []):
                if not 0 <= int(i) < n:
                    problems.append(f"subgraph {g} {what} names tensor {int(i)} of {n}")
        for o, op in enumerate(sg.operators or []):
            if not 0 <= op.opcodeIndex < n_codes:
                problems.append(f"subgraph {g} operator {o} has opcode {op.opcodeIndex} of {n_codes}")
            for field in (op.inputs, op.outputs, op.intermediates):
                for i in (field if field is not None else []):
                    if not -1 <= int(i) < n:  # -1 marks an omitted optional input
                        problems.append(f"subgraph {g} operator {o} names tensor {int(i)} of {n}")
        if len(problems) > 20:
            break
    for sig in model.signatureDefs or []:
        if not 0 <= sig.subgraphIndex < len(subgraphs):
            problems.append(f"signature names subgraph {sig.subgraphIndex} of {len(subgraphs)}")
    return problems


#: (path, size, mtime, inode) of files already verified in this process: workers and
#: ``streampi inspect`` build several interpreters from one file.
_verified: set[tuple[str, int, int, int]] = set()


def check_tflite_file(path: Path, backend: str | None = None) -> None:
    """Raise :class:`ModelFileError` unless ``path`` is a readable, intact TFLite flatbuffer.

    Why the whole file is walked, not just the identifier: tflite-runtime (2.14 and older)
    hands the file to the interpreter without running the flatbuffer verifier, so a
    truncated or corrupt model crashes the process (SIGSEGV) instead of raising. Here the
    whole model is unpacked through the schema's generated Python classes, whose every read
    is bounds-checked (a read past the end raises instead of crashing), and the references
    between tables (tensor, buffer, opcode and subgraph indices, external buffer offsets)
    are checked against what exists. That costs about 20 ms for a 230 kB model and 80 ms for
    a 4 MB one, once per file per process, against 0.2-0.4 s for probe-loading the model in
    a child process (see docs/runtimes.md). ``backend`` names the interpreter that child
    uses where no schema module is importable (the default backend when None).
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"model path is not a file: {path}")
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        if key in _verified:
            return
        with path.open("rb") as f:
            data = f.read()
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    if len(data) < 8:
        raise ModelFileError(f"{path} is not a TFLite model: the file is {'empty' if not data else 'too short'}")
    if data[4:8] != TFLITE_MAGIC:
        raise ModelFileError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier)")
    schema = _schema_module()
    if schema is None:
        _probe_in_child(path, backend)
    else:
        try:
            model = schema.ModelT.InitFromPackedBuf(data, 0)
            problems = _index_problems(model, len(data))
        except Exception as exc:  # struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError...
            raise ModelFileError(
                f"{path} is not a valid TFLite model: its flatbuffer is truncated or corrupt "
                f"({type(exc).__name__}: {exc})") from exc
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ModelFileError(f"{path} is not a valid TFLite model: its flatbuffer is corrupt: "
                                 + "; ".join(problems[:3]) + more)
    _verified.add(key)


def _probe_in_child(path: Path, backend: str | None = None, timeout: float = 60.0) -> None:
    """Load ``path`` in a child process with the default backend; a crash there is a bad file.

    Used only where no schema module is importable (a tflite-runtime-only install).
    """
    code = ("import sys\nfrom streampi.backends import get_backend\n"
            "get_backend(sys.argv[2] or None).interpreter_class(model_path=sys.argv[1])\n")
    try:
        r = subprocess.run([sys.executable, "-c", code, str(path), backend or ""], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ModelFileError(f"{path}: loading it took over {timeout:.0f} s in a probe process") from exc
    if r.returncode < 0:
        raise ModelFileError(f"{path} is not a valid TFLite model: loading it crashed the interpreter "
                             f"(signal {-r.returncode}); the file is truncated or corrupt")
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise ModelFileError(f"{path} is not a valid TFLite model: {last}")


class Model:
    """A ``.tflite`` file loaded into one interpreter instance.

    Parameters
    ----------
    path : the ``.tflite`` file.
    backend : ``"litert"``, ``"tflite_runtime"``, ``"tensorflow"`` or ``None`` for the
        first installed (see :mod:`streampi.backends`).
    num_threads : threads of this interpreter instance.
    delegates : ``(library_path, options_dict)`` pairs. A delegate that cannot be
        loaded gives a warning and the model runs on the CPU.
    batch_size : resize the batch dimension now (see :meth:`resize_batch`).
    """

    def __init__(self, path: str | Path, *, backend: str | Backend | None = None, num_threads: int = 1,
                 delegates: Sequence[tuple[str, dict]] = (), batch_size: int | None = None) -> None:
        self.path = Path(path)
        check_tflite_file(self.path, backend.name if isinstance(backend, Backend) else backend)
        self.backend = backend if isinstance(backend, Backend) else get_backend(backend)
        self.num_threads = int(num_threads)
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.delegate_errors: list[str] = []
        loaded = []
        for lib, options in delegates:
            try:
                # dlopen it ourselves first: LiteRT's Delegate object raises again from its
                # destructor when the library is missing
                ctypes.CDLL(lib)
                loaded.append(self.backend.load_delegate(lib, dict(options or {})))
            except (OSError, ValueError, RuntimeError) as exc:
                msg = f"delegate {lib} could not be loaded ({exc}); running on the CPU"
                self.delegate_errors.append(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
        self.delegates = loaded
        try:
            self._interp = self.backend.interpreter_class(
                model_path=str(self.path), num_threads=self.num_threads,
                experimental_delegates=loaded or None)
        except ValueError as exc:
            raise ModelFileError(f"{self.path} is not a valid TFLite model: {exc}") from exc
        self._allocate()
        self.inputs = [_spec(d) for d in self._interp.get_input_details()]
        self.outputs = [_spec(d) for d in self._interp.get_output_details()]
        if not self.inputs:
            raise UnsupportedModelError(f"{self.path} has no inputs")
        if batch_size is not None:
            self.resize_batch(batch_size)

    def _allocate(self) -> None:
        try:
            self._interp.allocate_tensors()
        except RuntimeError as exc:
            text = str(exc)
            m = re.search(r"unresolved custom op: ([^\s.]+)", text) or re.search(
                r"Didn't find op for builtin opcode '([^']+)'", text)
            if m:
                op = m.group(1)
                raise UnsupportedOpError(
                    f"{self.path.name} uses op {op!r}, which the {self.backend.name} backend cannot resolve; "
                    f"register it or re-export the model without it", op=op) from exc
            raise ModelError(f"{self.path.name} cannot be prepared: {text.splitlines()[0]}") from exc

    # -- identity ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.stem

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    # -- image input -------------------------------------------------------------------
    def image_input(self) -> tuple[int, int, int]:
        """``(height, width, channels)`` of the image input, checked for the kernels.

        Raises :class:`UnsupportedModelError` when the input is not an NHWC image of a
        dtype the kernels write (int8, uint8, float32) with 1 or 3 channels.
        """
        spec = self.input
        if len(spec.shape) != 4 or spec.shape[3] not in (1, 3):
            raise UnsupportedModelError(
                f"{self.name}: input {spec.name!r} has shape {list(spec.shape)}; streampi feeds "
                f"NHWC images with 1 or 3 channels")
        if spec.dtype not in KERNEL_DTYPES:
            raise UnsupportedModelError(
                f"{self.name}: input dtype {spec.dtype.name} is not supported; the kernels write "
                f"int8, uint8 or float32 (re-convert the model with one of those input types)")
        return spec.shape[1], spec.shape[2], spec.shape[3]

    # -- batching ----------------------------------------------------------------------
    @property
    def batch_resizable(self) -> bool:
        """True when the model declares a dynamic batch dimension."""
        return bool(self.input.shape_signature) and self.input.shape_signature[0] == -1

    @property
    def batch_size(self) -> int:
        return self.input.shape[0]

    def resize_batch(self, n: int) -> None:
        """Set the batch dimension of every input to ``n`` (a no-op when it already is)."""
        n = int(n)
        if n < 1:
            raise ValueError(f"batch size must be >= 1, got {n}")
        if n == self.batch_size:
            return
        if not self.batch_resizable:
            raise UnsupportedModelError(
                f"{self.name}: the batch dimension is fixed at {self.batch_size} "
                f"(shape signature {list(self.input.shape_signature)})")
        for spec in self.inputs:
            self._interp.resize_tensor_input(spec.index, [n, *spec.shape[1:]], strict=False)
        self._allocate()
        self.inputs = [_spec(d) for d in self._interp.get_input_details()]
        self.outputs = [_spec(d) for d in self._interp.get_output_details()]

    # -- running -----------------------------------------------------------------------
    def input_view(self, i: int = 0) -> np.ndarray:
        """A writable NumPy view of input ``i``'s buffer inside the interpreter.

        Valid until the next :meth:`resize_batch`; drop it before :meth:`invoke` (the
        interpreter refuses to run while a view of its buffers is alive).
        """
        return self._interp.tensor(self.inputs[i].index)()

    def set_input(self, data: np.ndarray, i: int = 0) -> None:
        self._interp.set_tensor(self.inputs[i].index, data)

    def invoke(self) -> None:
        """Run the model on what is in the input buffers (releases the GIL in LiteRT)."""
        self._interp.invoke()

    def output(self, i: int = 0) -> np.ndarray:
        """A copy of output ``i`` as the model produced it (possibly quantized)."""
        return self._interp.get_tensor(self.outputs[i].index)

    def outputs_float(self) -> list[np.ndarray]:
        """Every output, dequantized to float32 where it is quantized."""
        return [dequantize(self.output(i), spec) for i, spec in enumerate(self.outputs)]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Convenience: set input 0 to ``batch`` (resizing the batch), invoke, return float outputs."""
        batch = np.asarray(batch)
        if batch.ndim == len(self.input.shape) - 1:
            batch = batch[None]
        if batch.shape[0] != self.batch_size:
            self.resize_batch(batch.shape[0])
        if batch.dtype != self.input.dtype:
            raise ModelError(f"{self.name}: input wants {self.input.dtype.name}, got {batch.dtype.name}")
        self.set_input(batch)
        self.invoke()
        return self.outputs_float()

    def ops(self) -> list[str]:
        """Op names of the model's nodes, in execution order (empty where the backend cannot tell)."""
        try:
            return [str(d.get("op_name", "?")) for d in self._interp._get_ops_details()]
        except Exception:  # private API: absent on some backends
            return []

    def __repr__(self) -> str:
        return f"<Model {self.name} {list(self.input.shape)} {self.input.dtype.name} on {self.backend}>"


def dequantize(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``(q - zero_point) * scale`` as float32 for quantized tensors; floats pass through."""
    if spec.quantized and array.dtype.kind in "iu":
        return (array.astype(np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale)
    return array.astype(np.float32, copy=False)
