"""Where a figure comes from: the interpreter, CPU and builds it was measured with, and the
cores this process may use (:func:`usable_cores`, where the server pins its workers).

Benchmarks, ``streampi inspect`` and the server's ``--ready-json`` report
:func:`describe_runtime`, so that a latency measured on an x86 laptop with LiteRT and the
AVX2 kernels is never mistaken for one measured on a Pi with tflite-runtime and NEON.
:func:`backend_notes` says, in plain words, where the chosen interpreter is known to behave
differently from LiteRT (figures in docs/runtimes.md).
"""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

from .backends import Backend, get_backend
from .errors import BackendUnavailable


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity mask), where workers get pinned."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def cpu_model() -> str | None:
    """The CPU's name as Linux reports it (x86 ``model name``; on ARM the part number), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "model name" in fields:
        return fields["model name"]
    arm_parts = {"0xd03": "Cortex-A53", "0xd07": "Cortex-A57", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76"}
    part = fields.get("CPU part")
    if part:
        return arm_parts.get(part.lower(), f"ARM part {part}")
    return fields.get("Model") or None


def describe_runtime(backend: str | Backend | None = None) -> dict[str, Any]:
    """The interpreter backend and version, CPU architecture and model, the kernels build
    (``avx512``, ``avx2``, ``neon`` or ``baseline``), and the Python and NumPy versions in use.

    ``backend`` is a backend name or object; None means the one streampi would choose
    (``STREAMPI_BACKEND`` or the first installed). When it is not usable, ``backend`` and
    ``backend_version`` are None and ``backend_error`` says why.
    """
    from .preprocess import KERNEL_BUILD  # imports the compiled kernels: the build in use

    info: dict[str, Any] = {"backend": None, "backend_version": None}
    try:
        b = backend if isinstance(backend, Backend) else get_backend(backend)
        info["backend"], info["backend_version"] = b.name, b.version
    except BackendUnavailable as exc:
        info["backend_error"] = str(exc)
    info.update({
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "kernels": KERNEL_BUILD,
        "python": platform.python_version(),
        "numpy": np.__version__,
    })
    return info


def summary_line(info: dict[str, Any]) -> str:
    """One line for terminals: ``litert 2.3.0 on x86_64 (…), kernels avx2, Python 3.11.7, numpy 2.4.6``."""
    backend = f"{info['backend']} {info['backend_version']}" if info.get("backend") else "no backend"
    cpu = f" ({info['cpu']})" if info.get("cpu") else ""
    return (f"{backend} on {info['arch']}{cpu}, kernels {info['kernels']}, Python {info['python']}, "
            f"numpy {info['numpy']}")


def backend_notes(info: dict[str, Any]) -> list[str]:
    """Known differences of the described backend from LiteRT, as advice; empty for LiteRT."""
    notes: list[str] = []
    if info.get("backend") == "tflite_runtime":
        notes.append(
            f"tflite-runtime {info['backend_version']} is the legacy interpreter: its last release is 2.14.0 "
            f"(2023), it needs numpy<2 and Python <= 3.11, and it loads model files without verifying them "
            f"(streampi verifies every file first). LiteRT (pip install ai-edge-litert) is its maintained "
            f"successor; see docs/runtimes.md")
        if info.get("arch") in ("x86_64", "AMD64", "i686"):
            notes.append(
                "on x86-64, tflite-runtime 2.14 ran the bundled int8 models 5-15× slower than LiteRT 2.3 "
                "(shapes_int8 0.34 vs 0.07 ms, mobilenet_v2_int8 171 vs 11 ms per invoke; float32 models equally "
                "fast; docs/runtimes.md); compare both here with `streampi inspect MODEL --bench`")
    elif info.get("backend") is None and "numpy<2" in info.get("backend_error", ""):
        notes.append(info["backend_error"])
    return notes
