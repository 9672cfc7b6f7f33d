# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""The kernels of _kernels.pyx compiled with simd.h's NEON paths (aarch64; chosen at import time
by streampi.preprocess). Integer arithmetic only in those paths, so results equal the baseline build's."""

include "_kernels.pyx"
