# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""The motion gate's hot loop: a luma image sampled on a coarse grid, compared with a running
background, the background updated; one pass, no GIL.

``streampi/sources/motion.py`` is the documented API: it checks the frame, lays out the sample
positions and owns the background; :func:`motion_pass` still checks every index it is handed
against its buffers (``ValueError``), since its loops run without bounds checks.

The frame is never read whole: each cell of the grid (``gw`` × ``gh`` cells over the frame) is
the sum of ``sx`` × ``sy`` luma samples spread over it; the gate samples ``sx = 4`` points on one
row a cell, so a 1280×720 frame on the default 64 × 36 grid costs 9 216 byte loads on 36 of its
720 rows, where the preprocessing kernel reads 448 rows in full (and a frame fresh from a camera
comes from memory, not from a cache: the rows touched are what it costs). Everything is integer
arithmetic with no division per cell (cells and background are sample sums × 256; the caller
scales the threshold to them), so every build and architecture gives the same decisions, and
the NumPy twin in ``tests/test_motion.py`` gives the same numbers.
"""

from cpython.buffer cimport PyBUF_RECORDS_RO, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint8_t, int32_t, int64_t

cdef extern from *:
    ctypedef int32_t* i32_out "int32_t * __restrict__"
    ctypedef const int32_t* i32_in "const int32_t * __restrict__"

cdef enum:
    MODE_PLANE = 0
    MODE_RGB = 1

#: luma modes: the plane's bytes are luma (Y plane, gray), or packed RGB to weigh
LUMA_PLANE = MODE_PLANE
LUMA_RGB = MODE_RGB


def motion_pass(object plane, int mode, int ro, int go, int bo, const int32_t[::1] layout, Py_ssize_t nx,
                int sx, int sy, int32_t[::1] state, int threshold, int alpha, bint follow_light, bint init):
    """Sample ``plane`` into the cells and compare them with the background; return the number
    of changed cells.

    ``plane``: any buffer of bytes (format ``B``) of 2 dimensions (rows × bytes) or 3 (rows ×
    pixels × bytes of a pixel), bytes contiguous within a row, rows any stride apart: an I420
    frame's whole array (its first rows are the Y plane), a row-padded RGB view. ``layout``
    holds ``nx = gw * sx`` byte offsets within a row (sample columns, cell after cell), then
    ``gh * sy`` row indices; cell ``(j, i)`` is 256 × the sum of the luma at rows
    ``ys[j*sy:(j+1)*sy]`` × columns ``xs[i*sx:(i+1)*sx]``. ``mode`` LUMA_PLANE reads each
    sample's byte as luma; LUMA_RGB reads R, G, B at byte offsets ``ro``, ``go``, ``bo`` from it
    and weighs them (BT.601, OpenCV's RGB2GRAY weights in Q15). ``state`` holds the ``gw * gh``
    cells, then the background.

    A cell has changed when ``|cell - background - offset| > threshold`` (in the cells' unit),
    the offset being the mean difference over all cells when ``follow_light`` (a global change
    of light moves every cell alike; C division, towards zero) and 0 otherwise. Then every
    background cell moves ``(difference * alpha) >> 16`` towards its cell. ``init``: the
    background becomes the cells, nothing is compared (returns 0)."""
    cdef Py_buffer view
    cdef Py_ssize_t ny = layout.shape[0] - nx
    cdef Py_ssize_t gw = nx // sx if sx > 0 else 0
    cdef Py_ssize_t gh = ny // sy if sy > 0 else 0
    cdef Py_ssize_t n_cells = gw * gh
    cdef Py_ssize_t rows, width, stride, k, changed
    cdef const int32_t* xs
    cdef const int32_t* ys
    cdef int reach = 0
    if mode == MODE_RGB:
        reach = max(ro, go, bo)
        if min(ro, go, bo) < 0:
            raise ValueError(f"channel offsets must be >= 0, got {ro}, {go}, {bo}")
    elif mode != MODE_PLANE:
        raise ValueError(f"unknown luma mode {mode}")
    if sx < 1 or sy < 1 or nx < 0 or n_cells < 1 or nx != gw * sx or ny != gh * sy:
        raise ValueError(f"{nx} sample columns and {ny} sample rows do not make whole cells of {sx}×{sy} samples")
    if state.shape[0] != 2 * n_cells:
        raise ValueError(f"state ({state.shape[0]}) must hold the cells and the background: 2 × {gw}×{gh}")
    if threshold < 0 or not 0 <= alpha <= 65536:
        raise ValueError(f"threshold must be >= 0 and alpha in 0..65536, got {threshold}, {alpha}")
    xs, ys = &layout[0], &layout[nx]
    PyObject_GetBuffer(plane, &view, PyBUF_RECORDS_RO)
    try:
        if view.itemsize != 1 or view.format == NULL or view.format[0] != b'B' or view.format[1] != 0:
            raise ValueError(f"the plane must hold bytes (uint8), got format {view.format!r}")
        if view.ndim not in (2, 3):
            raise ValueError(f"the plane must have 2 or 3 dimensions, got {view.ndim}")
        rows, width, stride = view.shape[0], view.shape[1], view.strides[0]
        if view.ndim == 3:
            if view.strides[2] != 1 or view.strides[1] != view.shape[2]:
                raise ValueError("the plane's bytes must be contiguous within a row")
            width = width * view.shape[2]
        elif view.strides[1] != 1:
            raise ValueError(f"the plane's bytes must be contiguous within a row (stride {view.strides[1]})")
        if rows < 1 or width < 1:
            raise ValueError("the plane is empty")
        if stride < width:
            raise ValueError(f"rows {stride} bytes apart overlap rows of {width} bytes")
        for k in range(nx):
            if xs[k] < 0 or xs[k] + reach >= width:
                raise ValueError(f"sample column {k} at byte {xs[k]} (+{reach}) is outside the row of {width} bytes")
        for k in range(ny):
            if ys[k] < 0 or ys[k] >= rows:
                raise ValueError(f"sample row {k} at {ys[k]} is outside the plane's {rows} rows")
        with nogil:
            changed = _pass(<const uint8_t*>view.buf, stride, mode, ro, go, bo, xs, ys, gw, gh, sx, sy, &state[0],
                            &state[n_cells], threshold, alpha, follow_light, init)
    finally:
        PyBuffer_Release(&view)
    return changed


cdef Py_ssize_t _pass(const uint8_t* base, Py_ssize_t stride, int mode, int ro, int go, int bo,
                      i32_in xs, i32_in ys, Py_ssize_t gw, Py_ssize_t gh, int sx, int sy,
                      i32_out cells, i32_out bg, int threshold, int alpha, bint follow_light,
                      bint init) noexcept nogil:
    cdef Py_ssize_t i, j, k, m, q, n_cells = gw * gh, changed = 0
    cdef const uint8_t* row
    cdef const uint8_t* p
    cdef int32_t acc
    cdef int64_t total, offset, d
    for j in range(gh):
        for i in range(gw):
            cells[j * gw + i] = 0
        for k in range(sy):
            row = base + ys[j * sy + k] * stride
            if mode == MODE_PLANE and sx == 4:  # the gate's layout: four loads a cell, unrolled
                for i in range(gw):
                    cells[j * gw + i] += (row[xs[4 * i]] + row[xs[4 * i + 1]]) + (row[xs[4 * i + 2]] + row[xs[4 * i + 3]])
            elif mode == MODE_PLANE:
                for i in range(gw):
                    acc = 0
                    for m in range(sx):
                        acc += row[xs[i * sx + m]]
                    cells[j * gw + i] += acc
            else:
                for i in range(gw):
                    acc = 0
                    for m in range(sx):
                        p = row + xs[i * sx + m]
                        acc += (p[ro] * 9798 + p[go] * 19235 + p[bo] * 3735 + 16384) >> 15
                    cells[j * gw + i] += acc
        for i in range(gw):
            cells[j * gw + i] <<= 8
    if init:
        for q in range(n_cells):
            bg[q] = cells[q]
        return 0
    offset = 0
    if follow_light:
        total = 0
        for q in range(n_cells):
            total += cells[q] - bg[q]
        offset = total // n_cells  # C division: truncates towards zero
    for q in range(n_cells):
        d = cells[q] - bg[q]
        changed += (d - offset > threshold) | (offset - d > threshold)  # no branch: noise is random
        bg[q] += <int32_t>((d * alpha) >> 16)
    return changed
