# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""The kernels of _kernels.pyx compiled for x86-64 CPUs with AVX2 (chosen at import time by
streampi.preprocess when the CPU has it; no FMA, so results equal the baseline build's)."""

include "_kernels.pyx"
