# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""The kernels of _kernels.pyx compiled for x86-64 CPUs with AVX-512 (F, BW, VL, DQ; chosen at import
time by streampi.preprocess when the CPU has them): simd.h's AVX2 paths with EVEX encodings and 32
vector registers, the plain loops vectorised 512 bits wide. No FMA, so results equal the baseline build's."""

include "_kernels.pyx"
