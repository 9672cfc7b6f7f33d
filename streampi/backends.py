"""Find a TFLite interpreter package.

streampi runs on whichever of these is installed, in this order of preference:

``litert``          ``ai-edge-litert`` (LiteRT, the maintained successor of tflite-runtime)
``tflite_runtime``  ``tflite-runtime`` (older; needs ``numpy<2``)
``tensorflow``      ``tensorflow.lite`` (full TensorFlow; heavy, a last resort)

Set ``STREAMPI_BACKEND`` (or pass ``backend=``) to force one.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import BackendUnavailable

_MODULES = {
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite_runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow.lite", "tensorflow-cpu"),
}
BACKEND_NAMES: tuple[str, ...] = tuple(_MODULES)


@dataclass(frozen=True)
class Backend:
    """An importable interpreter package."""

    name: str
    interpreter_class: Callable[..., Any]
    load_delegate: Callable[..., Any]
    version: str

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


def _import(name: str) -> Backend:
    module_name, pip_name = _MODULES[name]
    try:
        mod = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or numpy ABI errors from tflite-runtime
        raise BackendUnavailable(
            f"interpreter backend {name!r} is not usable ({type(exc).__name__}: {exc}); "
            f"install it with: pip install {pip_name}"
        ) from exc
    if name == "tensorflow":
        interp, delegate = mod.Interpreter, mod.experimental.load_delegate
    else:
        interp, delegate = mod.Interpreter, mod.load_delegate
    top = importlib.import_module(module_name.split(".")[0])
    version = str(getattr(top, "__version__", "unknown"))
    if name == "tflite_runtime":
        _check_numpy_abi(version)
    return Backend(name, interp, delegate, version)


def _check_numpy_abi(tflite_runtime_version: str) -> None:
    """tflite-runtime (last release 2.14.0) is compiled against NumPy 1.x.

    Under NumPy 2 it still imports, but creating an interpreter fails with
    ``SystemError ... _ARRAY_API not found``; say so before any model is loaded.
    """
    import numpy

    numpy_major = int(numpy.__version__.split(".")[0])
    try:
        runtime = tuple(int(x) for x in tflite_runtime_version.split(".")[:2])
    except ValueError:
        runtime = (0, 0)
    if numpy_major >= 2 and runtime <= (2, 14):
        raise BackendUnavailable(
            f"interpreter backend 'tflite_runtime' {tflite_runtime_version} is built for NumPy 1.x and cannot run "
            f"with numpy {numpy.__version__} here; install it with: pip install 'numpy<2' "
            f"(or use LiteRT: pip install ai-edge-litert)")


_cache: dict[str, Backend] = {}


def get_backend(name: str | None = None) -> Backend:
    """Return the backend called ``name``, or the first usable one.

    Raises :class:`BackendUnavailable` naming what to install.
    """
    name = name or os.environ.get("STREAMPI_BACKEND") or None
    if name is not None:
        if name not in _MODULES:
            raise BackendUnavailable(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
        if name not in _cache:
            _cache[name] = _import(name)
        return _cache[name]
    errors = []
    for candidate in BACKEND_NAMES:
        try:
            return get_backend(candidate)
        except BackendUnavailable as exc:
            errors.append(str(exc))
    raise BackendUnavailable(
        "no TFLite interpreter is installed; install one with: pip install 'streampi[litert]' "
        "(or pip install ai-edge-litert)\n  "
        + "\n  ".join(errors)
    )


def available_backends() -> list[Backend]:
    """Every backend that imports on this machine, in order of preference."""
    found = []
    for name in BACKEND_NAMES:
        try:
            found.append(get_backend(name))
        except BackendUnavailable:
            pass
    return found
