# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Greedy non-maximum suppression and YOLO candidate selection: the hot loops only, no GIL.

``streampi/decoders/nms.py`` and ``streampi/decoders/yolo.py`` are the documented API: they
check shapes, dtypes and values and allocate the outputs; these functions trust them.

Why a compiled loop: greedy NMS is sequential (whether a box is kept depends on every kept box
before it), so NumPy can only vectorise one kept box at a time or pay for every pairwise
overlap; here each candidate is tested against the kept boxes only, per class, and the loop
ends at ``max_detections``. The score order comes from a stable LSD radix sort of the score
bits (O(n), where NumPy's stable sort of floats is a merge sort).
"""

from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t

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


def greedy_nms(const double[:, ::1] boxes, const Py_ssize_t[::1] order, const int32_t[::1] class_ids,
               Py_ssize_t n_classes, double iou_threshold, Py_ssize_t[::1] kept):
    """Greedy NMS over ``boxes`` (``[x0, y0, x1, y1]`` rows) in ``order``; writes the kept
    indices to ``kept`` (its length is the limit, ``max_detections``) and returns their count.

    ``class_ids`` (dense ids in ``[0, n_classes)``) or ``None`` for class-agnostic NMS. A
    candidate is tested only against the kept boxes of its own class (each class's kept boxes
    form a chain); it is suppressed when the intersection is positive and
    ``inter · (1 + t) > t · (area_a + area_b)``, i.e. IoU > t without a division.
    """
    cdef Py_ssize_t n = order.shape[0]
    cdef Py_ssize_t limit = kept.shape[0]
    cdef Py_ssize_t m = 0
    cdef Py_ssize_t k, j, src
    cdef int32_t c = 0
    cdef int32_t link
    cdef bint per_class = class_ids is not None
    cdef bint suppressed
    cdef double x0, y0, x1, y1, area, iw, ih
    cdef double t = iou_threshold
    cdef double t1 = 1.0 + iou_threshold
    cdef double *kb
    cdef int32_t *head = NULL
    cdef int32_t *chain = NULL
    if n == 0 or limit == 0:
        return 0
    if limit > n:
        limit = n
    kb = <double *> malloc(5 * limit * sizeof(double))  # x0, y0, x1, y1, area of each kept box
    if per_class:
        head = <int32_t *> malloc(n_classes * sizeof(int32_t))
        chain = <int32_t *> malloc(limit * sizeof(int32_t))
    if kb == NULL or (per_class and (head == NULL or chain == NULL)):
        free(kb)
        free(head)
        free(chain)
        raise MemoryError()
    with nogil:
        if per_class:
            for j in range(n_classes):
                head[j] = -1
        for k in range(n):
            src = order[k]
            x0 = boxes[src, 0]
            y0 = boxes[src, 1]
            x1 = boxes[src, 2]
            y1 = boxes[src, 3]
            area = (x1 - x0) * (y1 - y0)
            suppressed = False
            if per_class:
                c = class_ids[src]
                link = head[c]
                while link >= 0:
                    j = 5 * link
                    iw = (x1 if x1 < kb[j + 2] else kb[j + 2]) - (x0 if x0 > kb[j] else kb[j])
                    if iw > 0:
                        ih = (y1 if y1 < kb[j + 3] else kb[j + 3]) - (y0 if y0 > kb[j + 1] else kb[j + 1])
                        if ih > 0 and iw * ih * t1 > t * (area + kb[j + 4]):
                            suppressed = True
                            break
                    link = chain[link]
            else:
                for j in range(0, 5 * m, 5):
                    iw = (x1 if x1 < kb[j + 2] else kb[j + 2]) - (x0 if x0 > kb[j] else kb[j])
                    if iw > 0:
                        ih = (y1 if y1 < kb[j + 3] else kb[j + 3]) - (y0 if y0 > kb[j + 1] else kb[j + 1])
                        if ih > 0 and iw * ih * t1 > t * (area + kb[j + 4]):
                            suppressed = True
                            break
            if suppressed:
                continue
            j = 5 * m
            kb[j] = x0
            kb[j + 1] = y0
            kb[j + 2] = x1
            kb[j + 3] = y1
            kb[j + 4] = area
            if per_class:
                chain[m] = head[c]
                head[c] = <int32_t> m
            kept[m] = src
            m += 1
            if m == limit:
                break
    free(kb)
    free(head)
    free(chain)
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
