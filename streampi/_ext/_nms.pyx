# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Greedy non-maximum suppression and YOLO candidate selection: the hot loops only, no GIL.

``streampi/decoders/nms.py`` and ``streampi/decoders/yolo.py`` are the documented API: they
check shapes, dtypes and values and allocate the outputs; these functions trust them.

Why a compiled loop: greedy NMS is sequential (whether a box is kept depends on every kept box
before it), so NumPy can only vectorise one kept box at a time or pay for every pairwise
overlap; here each candidate is tested only against the kept boxes that could reach it (a
grid of kept boxes), and the loop ends at ``max_detections``. The score order comes from a
stable LSD radix sort of the score bits (O(n), where NumPy's stable sort of floats is a merge
sort). YOLO heads are scanned once, in memory order, for each cell's best class.
"""

from libc.stdlib cimport malloc, free
from libc.math cimport fabs
from libc.string cimport memcpy, memset
from libc.stdint cimport uint32_t, uint64_t, int32_t

cdef extern from *:
    # restrict-qualified pointers: the running best of each column is read and written in one
    # loop; without them the C compiler cannot rule out aliasing and does not vectorise it
    ctypedef float* f32_out "float * __restrict__"
    ctypedef int32_t* i32_out "int32_t * __restrict__"
    ctypedef const float* f32_in "const float * __restrict__"

ctypedef fused real:
    float
    double


cdef inline uint64_t _descending_key(real value) noexcept nogil:
    """An unsigned key whose ascending order is ``value``'s descending order (-0.0 == 0.0)."""
    cdef uint32_t u32
    cdef uint64_t u64
    cdef float f
    cdef double d
    if real is float:
        f = value
        if f == 0.0:
            f = 0.0  # -0.0 sorts with 0.0, as the values compare equal
        memcpy(&u32, &f, 4)
        u32 = (~u32) if (u32 >> 31) else (u32 | <uint32_t>0x80000000)  # ascending bit pattern
        return <uint64_t>(~u32)
    else:
        d = value
        if d == 0.0:
            d = 0.0
        memcpy(&u64, &d, 8)
        u64 = (~u64) if (u64 >> 63) else (u64 | <uint64_t>0x8000000000000000)
        return ~u64


def score_order(const real[::1] scores, Py_ssize_t[::1] order):
    """``order`` := indices of ``scores`` from the highest score down, equal scores in index
    order (what ``np.argsort(-scores, kind="stable")`` gives). NaN is refused by the caller.

    LSD radix sort, 8 bits a pass, skipping the passes whose digit is the same in every key
    (for scores in [0, 1] most high digits are)."""
    cdef Py_ssize_t n = scores.shape[0]
    cdef Py_ssize_t i, k, total
    cdef int p, digit, passes
    cdef uint64_t key
    cdef uint64_t *keys
    cdef uint64_t *keys2
    cdef Py_ssize_t *idx
    cdef Py_ssize_t *idx2
    cdef Py_ssize_t *tmp_idx
    cdef uint64_t *tmp_keys
    cdef Py_ssize_t counts[8][256]
    cdef Py_ssize_t offsets[256]
    if n == 0:
        return
    passes = 4 if real is float else 8
    keys = <uint64_t *> malloc(2 * n * sizeof(uint64_t))
    idx = <Py_ssize_t *> malloc(2 * n * sizeof(Py_ssize_t))
    if keys == NULL or idx == NULL:
        free(keys)
        free(idx)
        raise MemoryError()
    keys2 = keys + n
    idx2 = idx + n
    with nogil:
        memset(counts, 0, sizeof(counts))
        for i in range(n):
            key = _descending_key(scores[i])
            keys[i] = key
            idx[i] = i
            for p in range(passes):
                counts[p][(key >> (8 * p)) & 255] += 1
        for p in range(passes):
            digit = (keys[0] >> (8 * p)) & 255
            if counts[p][digit] == n:
                continue  # every key has this digit: the pass would not move anything
            total = 0
            for k in range(256):
                offsets[k] = total
                total += counts[p][k]
            for i in range(n):
                key = keys[i]
                digit = (key >> (8 * p)) & 255
                keys2[offsets[digit]] = key
                idx2[offsets[digit]] = idx[i]
                offsets[digit] += 1
            tmp_keys = keys
            keys = keys2
            keys2 = tmp_keys
            tmp_idx = idx
            idx = idx2
            idx2 = tmp_idx
        for i in range(n):
            order[i] = idx[i]
    # one block each, whichever half the last pass left the data in
    free(keys if keys < keys2 else keys2)
    free(idx if idx < idx2 else idx2)


cdef enum:
    # the grid of kept boxes has about one cell per BOXES_PER_CELL boxes that may be kept, at
    # most MAX_CELLS (one wide box makes every candidate visit every cell: keep that cheap)
    BOXES_PER_CELL = 2
    MAX_CELLS = 4096


cdef inline Py_ssize_t _cell(double v, double origin, double inverse_size, Py_ssize_t cells) noexcept nogil:
    """The grid column (or row) of coordinate ``v``: monotone in ``v``, clamped to the grid."""
    cdef double f = (v - origin) * inverse_size
    if not f > 0.0:  # (also the whole grid in one cell: inverse_size 0)
        return 0
    if f >= cells:
        return cells - 1
    return <Py_ssize_t> f


def greedy_nms(const double[:, ::1] boxes, const Py_ssize_t[::1] order, const int32_t[::1] class_ids,
               double iou_threshold, Py_ssize_t[::1] kept):
    """Greedy NMS over ``boxes`` (``[x0, y0, x1, y1]`` rows) in ``order``; writes the kept
    indices to ``kept`` (its length is the limit, ``max_detections``) and returns their count.

    ``class_ids`` or ``None`` for class-agnostic NMS. A candidate is suppressed by a kept box
    of its class whose intersection with it is positive and
    ``inter · (1 + t) > t · (area_a + area_b)`` (IoU > t without a division).

    Kept boxes are filed in a uniform grid by their top-left corner. A kept box can only
    intersect a candidate if its corner lies left of and above the candidate's far corner and
    no further than the widest (tallest) kept box from its near corner, so a candidate visits
    those cells only, not every kept box: in dense scenes most candidates meet the box that
    suppresses them among a handful. The exact test decides; the grid only skips boxes that
    cannot intersect (with a margin far above rounding).
    """
    cdef Py_ssize_t n = order.shape[0]
    cdef Py_ssize_t limit = kept.shape[0]
    cdef Py_ssize_t m = 0
    cdef Py_ssize_t k, src, q, gx, gy, cells, col, row, col0, col1, row0, row1, target
    cdef int32_t c = 0
    cdef int32_t link
    cdef bint per_class = class_ids is not None
    cdef bint suppressed
    cdef double x0, y0, x1, y1, area, iw, ih, reach_x, reach_y
    cdef double t = iou_threshold
    cdef double t1 = 1.0 + iou_threshold
    cdef double lo_x, hi_x, lo_y, hi_y, inv_w, inv_h
    cdef double widest = 0.0
    cdef double tallest = 0.0
    if n == 0 or limit == 0:
        return 0
    if limit > n:
        limit = n
    target = limit // BOXES_PER_CELL
    if target > MAX_CELLS:
        target = MAX_CELLS
    gx = 1
    while (gx + 1) * (gx + 1) <= target:
        gx += 1
    gy = gx
    cells = gx * gy
    cdef double *columns = <double *> malloc(5 * limit * sizeof(double))
    cdef int32_t *kept_class = <int32_t *> malloc(limit * sizeof(int32_t))
    cdef int32_t *next_in_cell = <int32_t *> malloc(limit * sizeof(int32_t))
    cdef int32_t *cell_head = <int32_t *> malloc(cells * sizeof(int32_t))
    if columns == NULL or kept_class == NULL or next_in_cell == NULL or cell_head == NULL:
        free(columns)
        free(kept_class)
        free(next_in_cell)
        free(cell_head)
        raise MemoryError()
    cdef double *kx0 = columns
    cdef double *ky0 = columns + limit
    cdef double *kx1 = columns + 2 * limit
    cdef double *ky1 = columns + 3 * limit
    cdef double *karea = columns + 4 * limit
    with nogil:
        for q in range(cells):
            cell_head[q] = -1
        # the grid spans the candidates' top-left corners
        lo_x = hi_x = boxes[order[0], 0]
        lo_y = hi_y = boxes[order[0], 1]
        for k in range(n):
            src = order[k]
            if boxes[src, 0] < lo_x:
                lo_x = boxes[src, 0]
            if boxes[src, 0] > hi_x:
                hi_x = boxes[src, 0]
            if boxes[src, 1] < lo_y:
                lo_y = boxes[src, 1]
            if boxes[src, 1] > hi_y:
                hi_y = boxes[src, 1]
        inv_w = gx / (hi_x - lo_x) if hi_x > lo_x else 0.0
        inv_h = gy / (hi_y - lo_y) if hi_y > lo_y else 0.0
        for k in range(n):
            src = order[k]
            x0 = boxes[src, 0]
            y0 = boxes[src, 1]
            x1 = boxes[src, 2]
            y1 = boxes[src, 3]
            area = (x1 - x0) * (y1 - y0)
            if per_class:
                c = class_ids[src]
            # corners from which a kept box (no wider than the widest, no taller than the
            # tallest kept so far) can reach this one; the margin covers the rounding of widths
            reach_x = x0 - widest
            reach_x -= 1e-9 * (fabs(reach_x) + widest) + 1e-300
            reach_y = y0 - tallest
            reach_y -= 1e-9 * (fabs(reach_y) + tallest) + 1e-300
            col0 = _cell(reach_x, lo_x, inv_w, gx)
            col1 = _cell(x1, lo_x, inv_w, gx)
            row0 = _cell(reach_y, lo_y, inv_h, gy)
            row1 = _cell(y1, lo_y, inv_h, gy)
            suppressed = False
            row = row0
            while row <= row1 and not suppressed:
                for col in range(col0, col1 + 1):
                    link = cell_head[row * gx + col]
                    while link >= 0:
                        if not per_class or kept_class[link] == c:
                            iw = (x1 if x1 < kx1[link] else kx1[link]) - (x0 if x0 > kx0[link] else kx0[link])
                            if iw > 0:
                                ih = (y1 if y1 < ky1[link] else ky1[link]) - (y0 if y0 > ky0[link] else ky0[link])
                                if ih > 0 and iw * ih * t1 > t * (area + karea[link]):
                                    suppressed = True
                                    break
                        link = next_in_cell[link]
                    if suppressed:
                        break
                row += 1
            if suppressed:
                continue
            kx0[m] = x0
            ky0[m] = y0
            kx1[m] = x1
            ky1[m] = y1
            karea[m] = area
            kept_class[m] = c
            q = _cell(y0, lo_y, inv_h, gy) * gx + _cell(x0, lo_x, inv_w, gx)
            next_in_cell[m] = cell_head[q]
            cell_head[q] = <int32_t> m
            if x1 - x0 > widest:
                widest = x1 - x0
            if y1 - y0 > tallest:
                tallest = y1 - y0
            kept[m] = src
            m += 1
            if m == limit:
                break
    free(columns)
    free(kept_class)
    free(next_in_cell)
    free(cell_head)
    return m


def yolo_v8_candidates(const float[:, ::1] head, float score_threshold, double[:, ::1] boxes,
                       float[::1] scores, Py_ssize_t[::1] classes):
    """Candidates of a YOLOv8 head ``[4 + classes, N]`` (rows ``cx, cy, w, h``, class scores):
    a column's score is its best class score (the first best class wins a tie; a NaN anywhere
    in its class scores drops it, as NumPy's max would propagate it), kept when
    ``score >= score_threshold`` in float32. Writes each kept column's ``[x0, y0, x1, y1]``
    (float64), score and class, in column order; returns how many.

    The class scores are read row by row (the memory order), keeping a running best per
    column, so the loop over columns vectorises.
    """
    cdef Py_ssize_t nc = head.shape[0] - 4
    cdef Py_ssize_t n = head.shape[1]
    cdef Py_ssize_t c, k, m = 0
    cdef f32_in row
    cdef float v, b
    cdef int32_t better
    cdef double cx, cy, hw, hh
    cdef f32_out best = <float *> malloc(n * sizeof(float))
    cdef i32_out arg = <int32_t *> malloc(n * sizeof(int32_t))
    if best == NULL or arg == NULL:
        free(best)
        free(arg)
        raise MemoryError()
    with nogil:
        row = &head[4, 0]
        for k in range(n):
            best[k] = row[k]
            arg[k] = 0
        for c in range(1, nc):
            row = &head[4 + c, 0]
            for k in range(n):
                v = row[k]
                b = best[k]
                # a NaN takes the place and keeps it (nothing compares greater than NaN): the
                # column's score is then NaN and fails the threshold, as with NumPy's max
                # (the class through an integer mask: a select the C compiler vectorises)
                better = -<int32_t> ((v > b) | (v != v))
                arg[k] = (<int32_t> c & better) | (arg[k] & ~better)
                best[k] = v if better else b
        for k in range(n):
            if best[k] >= score_threshold:
                cx = head[0, k]
                cy = head[1, k]
                hw = <double> head[2, k] * 0.5
                hh = <double> head[3, k] * 0.5
                boxes[m, 0] = cx - hw
                boxes[m, 1] = cy - hh
                boxes[m, 2] = cx + hw
                boxes[m, 3] = cy + hh
                scores[m] = best[k]
                classes[m] = arg[k]
                m += 1
    free(best)
    free(arg)
    return m


def yolo_v5_candidates(const float[:, ::1] rows, float score_threshold, double[:, ::1] boxes,
                       float[::1] scores, Py_ssize_t[::1] classes):
    """Candidates of a YOLOv5 head ``[N, 5 + classes]`` (``cx, cy, w, h, objectness``, class
    scores): a row's score is objectness × its best class score in float32 (the first best
    class wins a tie; a NaN among the class scores drops the row, as NumPy's argmax would pick
    the NaN), kept when ``score >= score_threshold``. Outputs as :func:`yolo_v8_candidates`."""
    cdef Py_ssize_t n = rows.shape[0]
    cdef Py_ssize_t nc = rows.shape[1] - 5
    cdef Py_ssize_t c, k, m = 0
    cdef const float *r
    cdef float v, b, score
    cdef Py_ssize_t arg
    cdef bint nan
    cdef double cx, cy, hw, hh
    with nogil:
        for k in range(n):
            r = &rows[k, 0]
            b = r[5]
            arg = 0
            nan = b != b
            for c in range(1, nc):
                v = r[5 + c]
                if v > b:
                    b = v
                    arg = c
                nan = nan | (v != v)
            if nan:
                continue
            score = r[4] * b
            if score >= score_threshold:
                cx = r[0]
                cy = r[1]
                hw = <double> r[2] * 0.5
                hh = <double> r[3] * 0.5
                boxes[m, 0] = cx - hw
                boxes[m, 1] = cy - hh
                boxes[m, 2] = cx + hw
                boxes[m, 3] = cy + hh
                scores[m] = score
                classes[m] = arg
                m += 1
    return m
