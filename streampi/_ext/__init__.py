"""Compiled kernels (Cython). Import them through :mod:`streampi.preprocess`."""
