"""One loaded TFLite model: its tensor specs, batch resizing, invocation, dequantization.

:class:`Model` knows TFLite and nothing of sockets. The serving path writes frames
straight into :meth:`Model.input_view` (a NumPy view of the interpreter's own input
buffer), calls :meth:`Model.invoke` and reads :meth:`Model.outputs_float`.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
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


def check_tflite_file(path: Path) -> None:
    """Raise :class:`ModelFileError` unless ``path`` is a readable TFLite flatbuffer."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    if len(head) < 8:
        raise ModelFileError(f"{path} is not a TFLite model: the file is {'empty' if not head else 'too short'}")
    if head[4:8] != TFLITE_MAGIC:
        raise ModelFileError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier)")


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
        check_tflite_file(self.path)
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
