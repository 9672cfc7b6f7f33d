"""Builds streampi's Cython kernels; all metadata lives in pyproject.toml."""

import os
import shutil
import sys
import sysconfig

from setuptools import Extension, setup


def _check_compiler() -> None:
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        sys.exit(
            f"streampi: no C compiler found ({cc!r} is not on the PATH); the preprocessing kernels need one.\n"
            "  On Debian / Raspberry Pi OS: sudo apt-get install build-essential python3-dev\n"
            "  Then run the install again."
        )


if any(cmd in sys.argv for cmd in ("build_ext", "bdist_wheel", "install", "develop", "editable_wheel")):
    _check_compiler()

import platform  # noqa: E402

from Cython.Build import cythonize  # noqa: E402

# -ffp-contract=off: GCC fuses a*b+c into one fused multiply-add by default wherever the target
# has one (every aarch64 CPU; x86 with -march=native), which rounds once instead of twice and so
# moves area sums and bilinear weights across rounding ties: the Pi gave other bytes than x86.
# -fno-fast-math keeps it so should CFLAGS ask otherwise. The integer code has no char of
# unspecified signedness (uint8_t throughout), so nothing else depends on the architecture.
# -fno-math-errno lets GCC inline lrintf (one instruction) instead of calling libm for each of
# the area path's 150 000 roundings a frame: errno is the only thing it changes, results are
# the same bytes.
extra = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno"]
if os.environ.get("STREAMPI_NATIVE"):  # opt-in: tune for the build machine's own CPU
    extra.append("-march=native")
inc = ["streampi/_ext"]
AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"]
extensions = [Extension("streampi._ext._kernels", ["streampi/_ext/_kernels.pyx"], include_dirs=inc,
                        extra_compile_args=extra)]
# greedy NMS and YOLO candidate selection (plain portable C: no SIMD intrinsics, one build everywhere)
extensions.append(Extension("streampi._ext._nms", ["streampi/_ext/_nms.pyx"], extra_compile_args=extra))
# the motion gate at the camera (plain portable C, integer arithmetic: one build everywhere)
extensions.append(Extension("streampi._ext._motion", ["streampi/_ext/_motion.pyx"], extra_compile_args=extra))
if platform.machine().lower() in ("x86_64", "amd64") and not os.environ.get("STREAMPI_NATIVE"):
    # the same source built for AVX2 (no FMA: identical float results); picked at import when the CPU has it.
    extensions.append(Extension("streampi._ext._kernels_avx2", ["streampi/_ext/_kernels_avx2.pyx"],
                                include_dirs=inc, extra_compile_args=[*extra, "-mavx2"]))
    # and for AVX-512 (Skylake-SP and later, Zen 4): the same AVX2 intrinsics EVEX-encoded with 32
    # registers, the compiler's own loops 512 bits wide; 10-25 % faster where the CPU has it.
    extensions.append(Extension("streampi._ext._kernels_avx512", ["streampi/_ext/_kernels_avx512.pyx"],
                                include_dirs=inc, extra_compile_args=[*extra, "-mavx2", *AVX512]))
if platform.machine().lower() in ("aarch64", "arm64"):
    # NEON is in every aarch64 CPU; the hand-written NEON paths live in a second build so that the
    # baseline (the compiler's own vectorisation only) stays available to compare against.
    extensions.append(Extension("streampi._ext._kernels_neon", ["streampi/_ext/_kernels_neon.pyx"],
                                include_dirs=inc, extra_compile_args=[*extra, "-DSTREAMPI_NEON"]))

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3},
        annotate=bool(os.environ.get("STREAMPI_ANNOTATE")),
    ),
)
