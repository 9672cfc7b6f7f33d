"""Tools for preparing models to serve (each an optional ``streampi`` verb with its own extra).

:mod:`streampi.tools.quantize` turns a float ``.tflite`` into a full-integer one
(``pip install streampi[quantize]``).
"""
