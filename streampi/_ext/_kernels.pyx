# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Fused colour conversion + resize + normalise/quantize, one pass, no GIL.

The hot loop, plus a check of every size against the buffers it is handed
(``check_arguments``; ``streampi/preprocess.py`` is the documented API and reports bad frames
in its own terms first). Each source row is read once (converted from YUV/gray when needed; the
vector builds' bilinear pass converts 4:2:0 rows only at the taps it reads), resampled
horizontally, combined vertically, and written through a per-channel 256-entry lookup table
(the normalisation and quantization of a uint8 value) straight into the output slot. A call
may write only a band of the slot's rows (two threads can fill one slot).

Arithmetic follows OpenCV so that results can be checked against it: bilinear uses 11-bit
fixed-point weights and OpenCV's vector rounding; area averaging uses float32 weight tables;
YUV 4:2:0 → RGB uses BT.601 fixed-point coefficients with 20 fractional bits.
"""

import operator

from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memcmp, memset
from libc.math cimport floor, ceil, lrintf
from libc.stdint cimport uint8_t, uint16_t, int16_t, int32_t, uint32_t, int64_t, uint64_t

cdef extern from *:
    # restrict-qualified pointers: lets the C compiler vectorise loops that read one row and
    # write another without run-time alias checks
    ctypedef uint8_t* u8_out "uint8_t * __restrict__"
    ctypedef const uint8_t* u8_in "const uint8_t * __restrict__"
    ctypedef float* f32_out "float * __restrict__"
    ctypedef int16_t* i16_out "int16_t * __restrict__"

cdef extern from "simd.h" nogil:
    void streampi_hprep(const int* a0, const int* a1, int dw, uint8_t* wtab)
    int streampi_hrow_rgb(const uint8_t* p, const uint8_t* q, int ps, int o0, int o1, int o2, int n, int n16,
                          int dw, const int* xofs, const uint8_t* wtab, int16_t* h, int16_t* g)
    int streampi_hmask(int ps, int o0, int o1, int o2, const int* xofs, int n, int dw, int row_bytes,
                       uint8_t* wtab)
    int STREAMPI_HROW_READ
    int STREAMPI_HROW_VEC
    int STREAMPI_HLANES
    int STREAMPI_WTAB_BYTES(int dw)
    int streampi_vrow(const int16_t* h0, const int16_t* h1, int b0, int b1, int c, int dw, uint8_t* row)
    int STREAMPI_VLUT
    int streampi_vrow_lut(const int16_t* h0, const int16_t* h1, int b0, int b1, int c, int dw, const uint8_t* lut,
                          uint8_t* out)
    int streampi_lut8(const uint8_t* row, int n, int c, const uint8_t* lut, int same_tables, uint8_t* out)
    const char* STREAMPI_SIMD_BUILD
    int STREAMPI_HROW_YUV
    void streampi_yuvprep(const int* x0, const int* x1, int cx, int nv12, int dw, uint8_t* masks, int* yofs,
                          int* cofs)
    int streampi_hrow_yuv(const uint8_t* Y, const uint8_t* U, const uint8_t* V, int n, const int* yofs,
                          const int* cofs, const uint8_t* masks, const uint8_t* wtab, const int* k, int yoff,
                          int swap, int16_t* h)
    int STREAMPI_HROW_YUV2
    void streampi_yuvprep2(const int* x0, const int* x1, int cx, int w, int dw, uint8_t* masks, int* yofs,
                           int* cofs)
    void streampi_uv_interleave(const uint8_t* U, const uint8_t* V, int n, uint8_t* uv)
    int streampi_hrow_yuv2(const uint8_t* YA, const uint8_t* YB, const uint8_t* UV, int n, const int* yofs,
                           const int* cofs, const uint8_t* masks, const uint8_t* wtab, const int* k, int yoff,
                           int swap, int16_t* ha, int16_t* hb)

cdef enum:
    FMT_RGB = 0
    FMT_BGR = 1
    FMT_RGBA = 2
    FMT_BGRA = 3
    FMT_GRAY = 4
    FMT_I420 = 5
    FMT_NV12 = 6

#: Which hand-vectorised paths this build has: "avx2", "neon" or "baseline".
SIMD_BUILD = STREAMPI_SIMD_BUILD.decode()

FORMAT_CODES = {"rgb": FMT_RGB, "bgr": FMT_BGR, "rgba": FMT_RGBA, "bgra": FMT_BGRA,
                "gray": FMT_GRAY, "i420": FMT_I420, "nv12": FMT_NV12}

# BT.601 limited range (as OpenCV's COLOR_YUV2RGB_I420) and full range (JFIF), Q20.
cdef int SHIFT = 20
cdef int[5] LIMITED = [1220542, 1673527, -852492, -409993, 2116026]   # CY, CVR, CVG, CUG, CUB
cdef int[5] FULL = [1048576, 1470104, -748830, -360857, 1858077]

ctypedef struct Source:
    const uint8_t* data
    int fmt
    int w
    int h
    int cx
    int cy
    int cw
    int ch
    int out_c
    int src_ps       # bytes per pixel of packed formats
    int ps           # pixel stride of the rows fetch() returns
    int off[3]       # channel offsets (in model channel order) within those rows
    int direct       # rows are read in place, no conversion
    int full_range
    uint8_t* buf     # conversion buffer, cw * out_c bytes


cdef inline uint8_t sat8(int v) noexcept nogil:
    return <uint8_t>(0 if v < 0 else (255 if v > 255 else v))


cdef inline int max0(int v) noexcept nogil:
    return v if v > 0 else 0


cdef inline void yuv_pixel(int y, int u, int v, int yoff, const int* k, uint8_t* o, int plane) noexcept nogil:
    cdef int uu = u - 128, vv = v - 128
    cdef int yy = max0(y - yoff) * k[0]
    o[0] = sat8((yy + (1 << 19) + k[1] * vv) >> SHIFT)
    o[plane] = sat8((yy + (1 << 19) + k[2] * vv + k[3] * uu) >> SHIFT)
    o[2 * plane] = sat8((yy + (1 << 19) + k[4] * uu) >> SHIFT)


cdef void yuv_pairs(u8_in Y, u8_in U, u8_in V, int step, int n, int yoff,
                    const int* k, u8_out R, u8_out G, u8_out B) noexcept nogil:
    """Convert ``n`` pixel pairs that each share one chroma sample into planar R, G, B rows
    (planar stores keep this loop vectorisable)."""
    cdef int i, uu, vv, ruv, guv, buv, y0, y1
    cdef int cy = k[0], cvr = k[1], cvg = k[2], cug = k[3], cub = k[4]
    # two copies of one loop on purpose: a constant chroma stride (planar I420: 1,
    # interleaved NV12: 2) is what lets the compiler vectorise it
    if step == 1:
        for i in range(n):
            uu = U[i] - 128
            vv = V[i] - 128
            ruv = (1 << 19) + cvr * vv
            guv = (1 << 19) + cvg * vv + cug * uu
            buv = (1 << 19) + cub * uu
            y0 = max0(Y[2 * i] - yoff) * cy
            y1 = max0(Y[2 * i + 1] - yoff) * cy
            R[2 * i] = sat8((y0 + ruv) >> 20)
            R[2 * i + 1] = sat8((y1 + ruv) >> 20)
            G[2 * i] = sat8((y0 + guv) >> 20)
            G[2 * i + 1] = sat8((y1 + guv) >> 20)
            B[2 * i] = sat8((y0 + buv) >> 20)
            B[2 * i + 1] = sat8((y1 + buv) >> 20)
        return
    for i in range(n):
        uu = U[2 * i] - 128
        vv = V[2 * i] - 128
        ruv = (1 << 19) + cvr * vv
        guv = (1 << 19) + cvg * vv + cug * uu
        buv = (1 << 19) + cub * uu
        y0 = max0(Y[2 * i] - yoff) * cy
        y1 = max0(Y[2 * i + 1] - yoff) * cy
        R[2 * i] = sat8((y0 + ruv) >> 20)
        R[2 * i + 1] = sat8((y1 + ruv) >> 20)
        G[2 * i] = sat8((y0 + guv) >> 20)
        G[2 * i + 1] = sat8((y1 + guv) >> 20)
        B[2 * i] = sat8((y0 + buv) >> 20)
        B[2 * i + 1] = sat8((y1 + buv) >> 20)


cdef const uint8_t* fetch(Source* s, int y) noexcept nogil:
    """Row ``y`` of the crop, as ``cw`` pixels at stride ``s.ps``."""
    cdef int row = s.cy + y
    cdef int x, r, b, yoff, step, npairs
    cdef const uint8_t* p
    cdef const uint8_t* Y
    cdef const uint8_t* U
    cdef const uint8_t* V
    cdef uint8_t* o = s.buf
    cdef const int* k
    if s.direct:
        return s.data + (<int64_t>row * s.w + s.cx) * s.src_ps
    if s.fmt == FMT_I420 or s.fmt == FMT_NV12:
        if s.full_range:
            k = FULL
            yoff = 0
        else:
            k = LIMITED
            yoff = 16
        Y = s.data + <int64_t>row * s.w + s.cx
        if s.out_c == 1:
            return Y  # gray from YUV is the luma plane as it is (as OpenCV's YUV2GRAY)
        if s.fmt == FMT_I420:
            U = s.data + <int64_t>s.w * s.h + <int64_t>(row >> 1) * (s.w >> 1)
            V = U + <int64_t>(s.w >> 1) * (s.h >> 1)
            step = 1
        else:
            U = s.data + <int64_t>s.w * s.h + <int64_t>(row >> 1) * s.w
            V = U + 1
            step = 2
        # pixels come in pairs that share one chroma sample; an odd crop start or end
        # leaves a single pixel at either side
        # the row is returned planar: R at o, G at o + cw, B at o + 2 cw
        x = 0
        if s.cx & 1:
            yuv_pixel(Y[0], U[(s.cx >> 1) * step], V[(s.cx >> 1) * step], yoff, k, o, s.cw)
            x = 1
        U = U + ((s.cx + x) >> 1) * step
        V = V + ((s.cx + x) >> 1) * step
        npairs = (s.cw - x) >> 1
        yuv_pairs(Y + x, U, V, step, npairs, yoff, k, o + x, o + s.cw + x, o + 2 * s.cw + x)
        x = x + 2 * npairs
        if x < s.cw:
            yuv_pixel(Y[x], U[npairs * step], V[npairs * step], yoff, k, o + x, s.cw)
        return o
    # packed colour → one gray channel (OpenCV's RGB2GRAY weights, Q15)
    p = s.data + (<int64_t>row * s.w + s.cx) * s.src_ps
    if s.fmt == FMT_BGR or s.fmt == FMT_BGRA:
        r, b = 2, 0
    else:
        r, b = 0, 2
    for x in range(s.cw):
        o[x] = <uint8_t>((p[r] * 9798 + p[1] * 19235 + p[b] * 3735 + 16384) >> 15)
        p += s.src_ps
    return o


cdef bint same_tables(const uint8_t* lut, int c, int itemsize) noexcept nogil:
    """Whether every channel's lookup table is the first one's (mean and std given as one value):
    then one table serves every byte, which is what a vector lookup can do on AVX2."""
    cdef int k, n = 256 * itemsize
    for k in range(1, c):
        if memcmp(lut, lut + k * n, n) != 0:
            return False
    return True


cdef void emit(const uint8_t* row, int n, int c, int itemsize, const uint8_t* lut, bint same,
               uint8_t* out) noexcept nogil:
    """Write ``n`` pixels of ``c`` channels (compact, c bytes a pixel) through the per-channel LUT."""
    cdef int i, j, start
    cdef const float* flut = <const float*>lut
    cdef float* fout = <float*>out
    if itemsize == 1:
        start = streampi_lut8(row, n * c, c, lut, same, out) // c
        if c == 3:
            for i in range(start, n):
                out[3 * i] = lut[row[3 * i]]
                out[3 * i + 1] = lut[256 + row[3 * i + 1]]
                out[3 * i + 2] = lut[512 + row[3 * i + 2]]
        else:
            for i in range(start, n):
                out[i] = lut[row[i]]
    else:
        for i in range(n):
            for j in range(c):
                fout[c * i + j] = flut[256 * j + row[c * i + j]]


cdef void linear_coeffs(int ssize, int dsize, int* ofs0, int* ofs1, int* a0, int* a1,
                       bint clamp_weights) noexcept nogil:
    """OpenCV's INTER_LINEAR source indices and Q11 weights (half-pixel centres).

    Outside the image OpenCV clamps columns together with their weights, but rows by index
    only (the weights stay as computed): ``clamp_weights`` picks which."""
    cdef double scale = 1.0 / (<double>dsize / ssize)
    cdef float f
    cdef int d, sx
    for d in range(dsize):
        f = <float>((d + 0.5) * scale - 0.5)
        sx = <int>floor(f)
        f -= sx
        if clamp_weights:
            if sx < 0:
                f = 0
                sx = 0
            if sx >= ssize - 1:
                f = 0
                sx = ssize - 1
        ofs0[d] = min(max(sx, 0), ssize - 1)
        ofs1[d] = min(max(sx + 1, 0), ssize - 1)
        a0[d] = <int>lrintf((1.0 - f) * 2048.0)
        a1[d] = <int>lrintf(f * 2048.0)


ctypedef struct HTab:
    # the horizontal pass's tables, the same for every row
    int* x0          # source pixel of tap 0
    int* x1          # source pixel of tap 1
    int* a0          # Q11 weight of tap 0
    int* a1          # Q11 weight of tap 1
    int* xofs        # byte offset of tap 0 (x0 * ps)
    uint8_t* wtab    # the weights laid out for the vector pass (streampi_hprep)
    int nvec         # pixels [0, nvec) read STREAMPI_HROW_READ bytes at xofs inside the row, both taps among them
    int n16          # pixels [0, n16) go in pairs by one 16-byte load (NEON: streampi_hmask; 0 elsewhere)
    int nadj         # pixels [0, nadj) have neighbouring taps (or a second weight of 0)
    int* gofs        # 8 * x: where pixel x's group starts in grp
    uint8_t* grp     # one row regrouped for the vector pass: 8 bytes a pixel (see group3)
    # 4:2:0 rows converted at the taps only (streampi_hrow_yuv), when the build has it:
    int* yofs        # byte of tap 0 in the Y row
    int* cofs        # byte of tap 0's chroma sample in the U (or UV) row
    uint8_t* masks   # the vector pass's shuffle masks (streampi_yuvprep)
    int nyuv         # pixels [0, nyuv) whose 8-byte loads stay inside their rows


cdef inline void hpix3(u8_in p, int i0, int i1, int w0, int w1, int o0, int o1, int o2, i16_out h) noexcept nogil:
    h[0] = <int16_t>((p[i0 + o0] * w0 + p[i1 + o0] * w1) >> 4)
    h[1] = <int16_t>((p[i0 + o1] * w0 + p[i1 + o1] * w1) >> 4)
    h[2] = <int16_t>((p[i0 + o2] * w0 + p[i1 + o2] * w1) >> 4)
    if STREAMPI_HLANES == 4:
        h[3] = 0


cdef void group3(u8_in p, int ps, const int* off, int dw, const HTab* t, bint direct, u8_out grp) noexcept nogil:
    """Both taps of every channel of each destination pixel, as the 8 bytes (c0 at x0, c0 at x1,
    c1 at x0, c1 at x1, c2 at x0, c2 at x1, 0, 0): the layout of two neighbouring packed pixels
    that the vector horizontal pass reads, for rows it cannot read in place (planar YUV rows,
    gray to 3 channels)."""
    cdef int x, i0, i1
    cdef int o0 = off[0], o1 = off[1], o2 = off[2]
    cdef uint16_t c0, c1, c2
    cdef uint64_t v
    x = 0
    if ps == 1 and not direct:
        # planar rows in the conversion buffer (8 bytes of slack): both taps of a channel are the
        # 2 bytes at x0 while they are neighbours (or tap 1 weighs nothing, the clamped edge)
        for x in range(t.nadj):
            i0 = t.x0[x]
            memcpy(&c0, p + i0 + o0, 2)
            memcpy(&c1, p + i0 + o1, 2)
            memcpy(&c2, p + i0 + o2, 2)
            v = c0 | (<uint64_t>c1 << 16) | (<uint64_t>c2 << 32)
            memcpy(grp + 8 * x, &v, 8)
        x = t.nadj
    for x in range(x, dw):
        i0 = t.x0[x] * ps
        i1 = t.x1[x] * ps
        grp[8 * x] = p[i0 + o0]
        grp[8 * x + 1] = p[i1 + o0]
        grp[8 * x + 2] = p[i0 + o1]
        grp[8 * x + 3] = p[i1 + o1]
        grp[8 * x + 4] = p[i0 + o2]
        grp[8 * x + 5] = p[i1 + o2]
        grp[8 * x + 6] = 0
        grp[8 * x + 7] = 0


cdef void hline(u8_in p, u8_in q, int ps, const int* off, int c, int dw, const HTab* t, bint vec,
                bint direct, i16_out h, i16_out g) noexcept nogil:
    """Horizontal bilinear pass of source row p (and q into g, when not NULL: a shrinking resize
    needs two fresh rows for almost every destination row, which then share the tables' loads):
    each channel p[x0]*a0 + p[x1]*a1 (Q11), kept as that sum >> 4 (all the vertical pass uses;
    it fits an int16). 3 channels take STREAMPI_HLANES int16 a pixel: 4 (the fourth 0) where the
    vector pass handles a pixel as one 64-bit group (x86, baseline), 3 on NEON (compact)."""
    cdef int x, i0, i1, w0, w1, start = 0
    cdef int o0 = off[0], o1 = off[1], o2 = off[2]
    if c == 3:
        if vec:
            start = streampi_hrow_rgb(p, q, ps, o0, o1, o2, t.nvec, t.n16, dw, t.xofs, t.wtab, h, g)
        elif STREAMPI_HROW_VEC:
            group3(p, ps, off, dw, t, direct, t.grp)
            start = streampi_hrow_rgb(t.grp, NULL, 1, 0, 2, 4, dw, t.n16, dw, t.gofs, t.wtab, h, NULL)
            if q != NULL:
                group3(q, ps, off, dw, t, direct, t.grp)
                streampi_hrow_rgb(t.grp, NULL, 1, 0, 2, 4, dw, t.n16, dw, t.gofs, t.wtab, g, NULL)
        for x in range(start, dw):
            i0 = t.x0[x] * ps
            i1 = t.x1[x] * ps
            w0 = t.a0[x]
            w1 = t.a1[x]
            hpix3(p, i0, i1, w0, w1, o0, o1, o2, h + STREAMPI_HLANES * x)
            if q != NULL:
                hpix3(q, i0, i1, w0, w1, o0, o1, o2, g + STREAMPI_HLANES * x)
    else:
        for x in range(dw):
            h[x] = <int16_t>((p[t.x0[x] * ps + o0] * t.a0[x] + p[t.x1[x] * ps + o0] * t.a1[x]) >> 4)
        if q != NULL:
            for x in range(dw):
                g[x] = <int16_t>((q[t.x0[x] * ps + o0] * t.a0[x] + q[t.x1[x] * ps + o0] * t.a1[x]) >> 4)


cdef inline void yuv_planes(Source* s, int row, const uint8_t** U, const uint8_t** V, int* step) noexcept nogil:
    """The chroma row of source row ``row`` of a 4:2:0 frame: U and V at a stride of ``step``."""
    if s.fmt == FMT_I420:
        U[0] = s.data + <int64_t>s.w * s.h + <int64_t>(row >> 1) * (s.w >> 1)
        V[0] = U[0] + <int64_t>(s.w >> 1) * (s.h >> 1)
        step[0] = 1
    else:
        U[0] = s.data + <int64_t>s.w * s.h + <int64_t>(row >> 1) * s.w
        V[0] = U[0] + 1
        step[0] = 2


cdef void hyuv_tail(Source* s, int y, int x, int dw, const HTab* t, i16_out h) noexcept nogil:
    """Pixels [x, dw) of the 4:2:0 tap pass of crop row ``y`` in plain C (yuv_pixel's arithmetic)."""
    cdef int row = s.cy + y, i, c, i0, i1, a0, a1, yoff, step
    cdef const uint8_t* Y = s.data + <int64_t>row * s.w
    cdef const uint8_t* U
    cdef const uint8_t* V
    cdef const int* k
    cdef uint8_t rgb0[3]
    cdef uint8_t rgb1[3]
    cdef int swap = s.off[0] != 0
    if s.full_range:
        k, yoff = FULL, 0
    else:
        k, yoff = LIMITED, 16
    yuv_planes(s, row, &U, &V, &step)
    for x in range(x, dw):
        i0 = s.cx + t.x0[x]
        i1 = s.cx + t.x1[x]
        yuv_pixel(Y[i0], U[(i0 >> 1) * step], V[(i0 >> 1) * step], yoff, k, rgb0, 1)
        yuv_pixel(Y[i1], U[(i1 >> 1) * step], V[(i1 >> 1) * step], yoff, k, rgb1, 1)
        a0 = t.a0[x]
        a1 = t.a1[x]
        for i in range(3):
            c = 2 - i if swap else i
            h[STREAMPI_HLANES * x + i] = <int16_t>((rgb0[c] * a0 + rgb1[c] * a1) >> 4)
        if STREAMPI_HLANES == 4:
            h[4 * x + 3] = 0


cdef void hline_yuv(Source* s, int y, int dw, const HTab* t, i16_out h) noexcept nogil:
    """Horizontal bilinear pass of crop row ``y`` of a 4:2:0 frame into 3 channels, converting
    only the two taps of each output pixel (yuv_pixel's arithmetic) instead of the whole row:
    the vector pass where the build has it, plain C for the rest."""
    cdef int row = s.cy + y, x, step
    cdef const uint8_t* U
    cdef const uint8_t* V
    yuv_planes(s, row, &U, &V, &step)
    if step == 2:
        V = U  # NV12: streampi_yuvprep's masks pick V one byte after U in the UV row
    if s.full_range:
        x = streampi_hrow_yuv(s.data + <int64_t>row * s.w, U, V, t.nyuv, t.yofs, t.cofs, t.masks, t.wtab, FULL, 0,
                              s.off[0] != 0, h)
    else:
        x = streampi_hrow_yuv(s.data + <int64_t>row * s.w, U, V, t.nyuv, t.yofs, t.cofs, t.masks, t.wtab, LIMITED,
                              16, s.off[0] != 0, h)
    hyuv_tail(s, y, x, dw, t, h)


cdef void hline_yuv2(Source* s, int ya, int yb, int dw, const HTab* t, uint8_t* uv, int* uvrow, i16_out ha,
                     i16_out hb) noexcept nogil:
    """The tap pass of crop row ``ya``, and of row ``yb`` into ``hb`` when ``yb >= 0`` (it must
    share ``ya``'s chroma row): both rows' taps take one conversion of their chroma
    (streampi_hrow_yuv2). I420's chroma row is interleaved into ``uv`` first, once per chroma row
    (``uvrow`` says which one it holds)."""
    cdef int row = s.cy + ya, x, step
    cdef const uint8_t* U
    cdef const uint8_t* V
    cdef const uint8_t* UV
    cdef const int* k = LIMITED
    if s.full_range:
        k = FULL
    yuv_planes(s, row, &U, &V, &step)
    if s.fmt == FMT_I420:
        if uvrow[0] != row >> 1:
            streampi_uv_interleave(U, V, s.w >> 1, uv)
            uvrow[0] = row >> 1
        UV = uv
    else:
        UV = U
    x = streampi_hrow_yuv2(s.data + <int64_t>row * s.w, s.data + <int64_t>(s.cy + yb) * s.w if yb >= 0 else NULL,
                           UV, t.nyuv, t.yofs, t.cofs, t.masks, t.wtab, k, 0 if s.full_range else 16,
                           s.off[0] != 0, ha, hb)
    hyuv_tail(s, ya, x, dw, t, ha)
    if yb >= 0:
        hyuv_tail(s, yb, x, dw, t, hb)


cdef void vline(const int16_t* H0, const int16_t* H1, int b0, int b1, int c, int dw, u8_out row) noexcept nogil:
    """Vertical pass of two horizontal rows into ``c`` uint8 a pixel, with OpenCV's vector
    rounding: ((h0*b0) >> 16) + ((h1*b1) >> 16), then (+2) >> 2 (h already holds sum >> 4)."""
    cdef int x, k, hs = STREAMPI_HLANES if c == 3 else 1
    cdef int start = streampi_vrow(H0, H1, b0, b1, c, dw, row)
    for x in range(start, dw):
        for k in range(c):
            row[c * x + k] = sat8((((H0[hs * x + k] * b0) >> 16) + ((H1[hs * x + k] * b1) >> 16) + 2) >> 2)


cdef int resize_linear(Source* s, int dw, int dh, int r0, int r1, uint8_t* out, int out_stride, int itemsize,
                       const uint8_t* lut) noexcept nogil:
    """Rows [r0, r1) of the ``dw × dh`` bilinear resize of the crop, row ``dy`` written at
    ``out + dy * out_stride``. Each row depends only on its two source rows (the cache of
    horizontal rows is a saving, not a state), so any band gives the full resize's bytes."""
    cdef int c = s.out_c
    # int16 per horizontal row, and 8 of slack (NEON's pair stores write 2 past their pixels)
    cdef int n = dw * (STREAMPI_HLANES if c == 3 else 1) + 8
    cdef int* xi = <int*>malloc(sizeof(int) * 8 * dw)
    cdef uint8_t* wtab = <uint8_t*>malloc(STREAMPI_WTAB_BYTES(dw) + 8 * dw)
    # 4:2:0 into 3 channels: converted at the taps by the vector pass, where the build has one
    cdef bint yuvtap = c == 3 and (s.fmt == FMT_I420 or s.fmt == FMT_NV12) and STREAMPI_HROW_YUV
    cdef uint8_t* masks = <uint8_t*>malloc(24 * (dw + 3)) if yuvtap else NULL
    # the second form (both rows of a chroma row at once, I420's chroma interleaved once per chroma row)
    cdef bint yuv2 = yuvtap and STREAMPI_HROW_YUV2
    cdef uint8_t* uv = <uint8_t*>malloc(s.w + 32) if yuv2 else NULL
    cdef int uvrow = -1
    cdef int* yi = <int*>malloc(sizeof(int) * 4 * dh)
    cdef int16_t* hb = <int16_t*>malloc(sizeof(int16_t) * 2 * n)
    cdef uint8_t* row = <uint8_t*>malloc(c * dw + 16)  # + the vertical pass's 16 bytes of slack
    cdef HTab t
    cdef int rows[2]
    cdef int16_t* H0
    cdef int16_t* H1
    cdef int dy, i, x, slot, want, row_bytes, chroma_row_bytes, done
    cdef bint vec, same = same_tables(lut, c, itemsize)
    # the vertical pass and the table in one step, where the build has it (one table for every byte)
    cdef bint vlut = STREAMPI_VLUT and itemsize == 1 and (c == 1 or same)
    cdef int hs = STREAMPI_HLANES if c == 3 else 1
    if (xi == NULL or wtab == NULL or yi == NULL or hb == NULL or row == NULL or (yuvtap and masks == NULL)
            or (yuv2 and uv == NULL)):
        free(xi); free(wtab); free(yi); free(hb); free(row); free(masks); free(uv)
        return -1
    t.x0, t.x1, t.a0, t.a1, t.xofs, t.wtab = xi, xi + dw, xi + 2 * dw, xi + 3 * dw, xi + 4 * dw, wtab
    t.gofs, t.grp = xi + 5 * dw, wtab + STREAMPI_WTAB_BYTES(dw)
    linear_coeffs(s.cw, dw, t.x0, t.x1, t.a0, t.a1, True)
    linear_coeffs(s.ch, dh, yi, yi + dh, yi + 2 * dh, yi + 3 * dh, False)
    # the vector horizontal pass reads STREAMPI_HROW_READ bytes at tap 0, which must stay inside the
    # (crop) row and hold tap 1 too (the taps are neighbours, or tap 1 weighs nothing: the clamped
    # right edge)
    vec = c == 3 and s.direct and s.ps >= 3
    row_bytes = s.cw * s.ps
    t.nvec = 0
    t.nadj = 0
    for x in range(dw):
        if t.nadj == x and (t.x1[x] == t.x0[x] + 1 or t.a1[x] == 0):
            t.nadj = x + 1
        t.xofs[x] = t.x0[x] * s.ps
        t.gofs[x] = 8 * x
        if t.nvec == x and t.xofs[x] + STREAMPI_HROW_READ <= row_bytes and (t.x1[x] == t.x0[x] + 1 or t.a1[x] == 0):
            t.nvec = x + 1
    streampi_hprep(t.a0, t.a1, dw, t.wtab)
    t.n16 = 0
    if vec:
        t.n16 = streampi_hmask(s.ps, s.off[0], s.off[1], s.off[2], t.xofs, t.nvec, dw, row_bytes, t.wtab)
    elif c == 3 and STREAMPI_HROW_VEC:  # rows regrouped by group3: 8 bytes a pixel, taps side by side
        t.n16 = streampi_hmask(1, 0, 2, 4, t.gofs, dw, dw, 8 * dw, t.wtab)
    t.yofs, t.cofs, t.masks, t.nyuv = xi + 6 * dw, xi + 7 * dw, masks, 0
    if yuvtap:
        if yuv2:  # chroma always from an NV12-like row (I420's interleaved), of s.w bytes
            streampi_yuvprep2(t.x0, t.x1, s.cx, s.w, dw, masks, t.yofs, t.cofs)
            chroma_row_bytes = s.w
        else:
            streampi_yuvprep(t.x0, t.x1, s.cx, s.fmt == FMT_NV12, dw, masks, t.yofs, t.cofs)
            chroma_row_bytes = s.w if s.fmt == FMT_NV12 else s.w >> 1
        # its 8-byte loads at yofs and cofs must stay inside the Y row and the U (UV) row
        while (t.nyuv < dw and t.yofs[t.nyuv] + 8 <= s.w and t.cofs[t.nyuv] + 8 <= chroma_row_bytes):
            t.nyuv += 1
    rows[0] = -1
    rows[1] = -1
    for dy in range(r0, r1):
        # bring source rows yi[dy] and yi[dh+dy] into the two cached slots; two fresh rows of a
        # packed frame (read in place) in one pass
        if (s.direct and yi[dy] != yi[dh + dy] and rows[0] != yi[dy] and rows[1] != yi[dy]
                and rows[0] != yi[dh + dy] and rows[1] != yi[dh + dy]):
            hline(fetch(s, yi[dy]), fetch(s, yi[dh + dy]), s.ps, s.off, c, dw, &t, vec, s.direct, hb, hb + n)
            rows[0] = yi[dy]
            rows[1] = yi[dh + dy]
        # two fresh rows of one chroma row: one chroma conversion for both
        if (yuv2 and yi[dy] != yi[dh + dy] and rows[0] != yi[dy] and rows[1] != yi[dy]
                and rows[0] != yi[dh + dy] and rows[1] != yi[dh + dy]
                and (s.cy + yi[dy]) >> 1 == (s.cy + yi[dh + dy]) >> 1):
            hline_yuv2(s, yi[dy], yi[dh + dy], dw, &t, uv, &uvrow, hb, hb + n)
            rows[0] = yi[dy]
            rows[1] = yi[dh + dy]
        for i in range(2):
            want = yi[i * dh + dy]
            if rows[0] != want and rows[1] != want:
                slot = 0 if (rows[0] != yi[dy] and rows[0] != yi[dh + dy]) else 1
                if yuv2:
                    hline_yuv2(s, want, -1, dw, &t, uv, &uvrow, hb + slot * n, NULL)
                elif yuvtap:
                    hline_yuv(s, want, dw, &t, hb + slot * n)
                else:
                    hline(fetch(s, want), NULL, s.ps, s.off, c, dw, &t, vec, s.direct, hb + slot * n, NULL)
                rows[slot] = want
        H0 = hb if rows[0] == yi[dy] else hb + n
        H1 = hb if rows[0] == yi[dh + dy] else hb + n
        done = streampi_vrow_lut(H0, H1, yi[2 * dh + dy], yi[3 * dh + dy], c, dw, lut,
                                 out + <int64_t>dy * out_stride) if vlut else 0
        if done < dw:
            vline(H0 + hs * done, H1 + hs * done, yi[2 * dh + dy], yi[3 * dh + dy], c, dw - done, row)
            emit(row, dw - done, c, itemsize, lut, same, out + <int64_t>dy * out_stride + c * done * itemsize)
    free(xi); free(wtab); free(yi); free(hb); free(row); free(masks); free(uv)
    return 0


ctypedef struct AreaPart:
    # one destination pixel's source span in OpenCV's INTER_AREA: an optional first edge
    # (index fi, weight fa; 0 when absent), a run of rn whole cells from rs that all weigh
    # ra = 1/cell, and an optional last edge (li, la)
    int fi
    float fa
    int rs
    int rn
    float ra
    int li
    float la


cdef void area_parts(int ssize, int dsize, AreaPart* parts) noexcept nogil:
    """OpenCV's INTER_AREA weights for each destination index, as first edge + run + last edge."""
    cdef double scale = <double>ssize / dsize
    cdef double f1, f2, cell
    cdef int d, s1, s2
    for d in range(dsize):
        f1 = d * scale
        f2 = f1 + scale
        cell = scale if scale < ssize - f1 else ssize - f1
        s1 = <int>ceil(f1)
        s2 = <int>floor(f2)
        if s2 > ssize - 1:
            s2 = ssize - 1
        if s1 > s2:
            s1 = s2
        parts[d].fi, parts[d].fa = s1, 0.0
        if s1 - f1 > 1e-3:
            parts[d].fi = s1 - 1
            parts[d].fa = <float>((s1 - f1) / cell)
        parts[d].rs, parts[d].rn, parts[d].ra = s1, s2 - s1, <float>(1.0 / cell)
        parts[d].li, parts[d].la = s2, 0.0
        if f2 - s2 > 1e-3:
            parts[d].la = <float>(min(min(f2 - s2, 1.0), cell) / cell)


cdef void vsum_start(u8_in p, int n, uint32_t* S) noexcept nogil:
    cdef int j
    for j in range(n):
        S[j] = p[j]


cdef void vsum_add(u8_in p, int n, uint32_t* S) noexcept nogil:
    cdef int j
    for j in range(n):
        S[j] = S[j] + p[j]


cdef void vscale(u8_in p, int n, float b, f32_out acc) noexcept nogil:
    cdef int j
    for j in range(n):
        acc[j] = b * p[j]


cdef void vadd_run(const uint32_t* S, int n, float b, bint first, f32_out acc) noexcept nogil:
    cdef int j
    if first:
        for j in range(n):
            acc[j] = b * <float>S[j]
    else:
        for j in range(n):
            acc[j] = acc[j] + b * <float>S[j]


cdef void vadd_edge(u8_in p, int n, float b, f32_out acc) noexcept nogil:
    cdef int j
    for j in range(n):
        acc[j] = acc[j] + b * p[j]


cdef void varea(Source* s, const AreaPart* a, int n, uint32_t* S, float* acc) noexcept nogil:
    """One destination row's vertical average: ((fa·first) + ra·Σ run) + la·last, the run
    summed exactly in integers (its rows all weigh the same), so a row of the run costs an
    integer add instead of a float multiply-add. Absent edges (weight 0) are skipped: adding
    0·p changes no float."""
    cdef int r
    if a.rn > 0:
        vsum_start(fetch(s, a.rs), n, S)
        for r in range(a.rs + 1, a.rs + a.rn):
            vsum_add(fetch(s, r), n, S)
    if a.fa != 0:
        vscale(fetch(s, a.fi), n, a.fa, acc)
        if a.rn > 0:
            vadd_run(S, n, a.ra, False, acc)
    elif a.rn > 0:
        vadd_run(S, n, a.ra, True, acc)
    else:
        memset(acc, 0, sizeof(float) * n)
    if a.la != 0:
        vadd_edge(fetch(s, a.li), n, a.la, acc)


cdef inline float harea1(const float* p, int ps, int o, const AreaPart* a) noexcept nogil:
    """((fa·first) + ra·(run summed left to right)) + la·last, for one channel."""
    cdef float run = 0
    cdef int k, i = a.rs * ps + o
    for k in range(a.rn):
        run = run + p[i]
        i = i + ps
    return (a.fa * p[a.fi * ps + o] + a.ra * run) + a.la * p[a.li * ps + o]


cdef void hline_area(const float* p, int ps, const int* off, int c, int dw, const AreaPart* parts,
                     uint8_t* row) noexcept nogil:
    """Horizontal area averages of one vertically averaged row, rounded to uint8 (three
    channels in one pass over the run, each summed left to right as :func:`harea1`)."""
    cdef int x, k, i, o0 = off[0], o1 = off[1], o2 = off[2]
    cdef float r0, r1, r2
    cdef const AreaPart* a
    if c == 3:
        for x in range(dw):
            a = &parts[x]
            r0 = 0
            r1 = 0
            r2 = 0
            i = a.rs * ps
            for k in range(a.rn):
                r0 = r0 + p[i + o0]
                r1 = r1 + p[i + o1]
                r2 = r2 + p[i + o2]
                i = i + ps
            row[3 * x] = sat8(<int>lrintf((a.fa * p[a.fi * ps + o0] + a.ra * r0) + a.la * p[a.li * ps + o0]))
            row[3 * x + 1] = sat8(<int>lrintf((a.fa * p[a.fi * ps + o1] + a.ra * r1) + a.la * p[a.li * ps + o1]))
            row[3 * x + 2] = sat8(<int>lrintf((a.fa * p[a.fi * ps + o2] + a.ra * r2) + a.la * p[a.li * ps + o2]))
    else:
        for x in range(dw):
            row[x] = sat8(<int>lrintf(harea1(p, ps, off[0], &parts[x])))


cdef int resize_area(Source* s, int dw, int dh, int r0, int r1, uint8_t* out, int out_stride, int itemsize,
                     const uint8_t* lut) noexcept nogil:
    """Area averaging with OpenCV's INTER_AREA weights, but vertical first: each destination
    row sums its whole source rows (integers, exact), weighs them and its two partial edge
    rows into a float row as a whole (contiguous loops the compiler vectorises), then the much
    shorter horizontal pass runs once per destination row, in the same first-edge + run +
    last-edge form. The sums are OpenCV's up to float rounding order. Only rows [r0, r1) are
    computed (each destination row starts its sums afresh, so a band gives the full resize's
    bytes)."""
    cdef int c = s.out_c
    cdef int width = s.cw * s.ps if s.ps > 1 or s.off[1] == 0 else 3 * s.cw  # planar YUV rows: 3 planes
    cdef AreaPart* xp = <AreaPart*>malloc(sizeof(AreaPart) * dw)
    cdef AreaPart* yp = <AreaPart*>malloc(sizeof(AreaPart) * dh)
    cdef float* acc = <float*>malloc(sizeof(float) * width)
    cdef uint32_t* S = <uint32_t*>malloc(sizeof(uint32_t) * width)
    cdef uint8_t* row = <uint8_t*>malloc(dw * c)
    cdef int dy
    cdef bint same = same_tables(lut, c, itemsize)
    if xp == NULL or yp == NULL or acc == NULL or S == NULL or row == NULL:
        free(xp); free(yp); free(acc); free(S); free(row)
        return -1
    area_parts(s.cw, dw, xp)
    area_parts(s.ch, dh, yp)
    for dy in range(r0, r1):
        varea(s, &yp[dy], width, S, acc)
        hline_area(acc, s.ps, s.off, c, dw, xp, row)
        emit(row, dw, c, itemsize, lut, same, out + <int64_t>dy * out_stride)
    free(xp); free(yp); free(acc); free(S); free(row)
    return 0


PACKED_BYTES = {FMT_RGB: 3, FMT_BGR: 3, FMT_RGBA: 4, FMT_BGRA: 4, FMT_GRAY: 1}
#: Largest buffer (source frame or output slot) the kernel addresses: its offsets are C ints.
MAX_BUFFER_BYTES = 2**31 - 1


def _index(name, value):
    """``value`` as a Python int (bool refused), so the checks below cannot overflow."""
    if isinstance(value, bool):
        raise TypeError(f"streampi kernel: {name} must be an integer, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"streampi kernel: {name} must be an integer, got {type(value).__name__}") from None


def _rect_inside(what, x, y, w, h, width, height, where):
    if w < 1 or h < 1:
        raise ValueError(f"streampi kernel: {what} of {w}×{h} is empty")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(f"streampi kernel: {what} ({x}, {y}, {w}×{h}) is not inside the {where} "
                         f"of {width}×{height}")


def check_arguments(src_nbytes, fmt, src_w, src_h, cx, cy, cw, ch, out_nbytes, out_w, out_h, out_c, itemsize,
                    dx0, dy0, dw, dh, lut_nbytes, pad_nbytes, row0=0, row1=None):
    """Raise ValueError unless every size and rectangle agrees with the buffer lengths given,
    and the band of output rows [row0, row1) (``row1`` None: ``out_h``) lies in the slot.

    The loops below run without bounds checks, so this is what keeps any caller (not only
    ``streampi.preprocess``, which checks frames in its own terms first) from making the
    kernel read or write outside its buffers."""
    # one call each, no generator: this runs for every frame
    fmt, src_w, src_h = _index("fmt", fmt), _index("src_w", src_w), _index("src_h", src_h)
    cx, cy, cw, ch = _index("cx", cx), _index("cy", cy), _index("cw", cw), _index("ch", ch)
    out_w, out_h, out_c = _index("out_w", out_w), _index("out_h", out_h), _index("out_c", out_c)
    itemsize, dx0, dy0 = _index("itemsize", itemsize), _index("dx0", dx0), _index("dy0", dy0)
    dw, dh = _index("dw", dw), _index("dh", dh)
    if fmt not in FORMAT_CODES.values():
        raise ValueError(f"streampi kernel: unknown format code {fmt}")
    if src_w < 1 or src_h < 1:
        raise ValueError(f"streampi kernel: source of {src_w}×{src_h} is empty")
    if fmt in (FMT_I420, FMT_NV12):
        if src_w % 2 or src_h % 2:
            raise ValueError(f"streampi kernel: a 4:2:0 source needs an even width and height, got {src_w}×{src_h}")
        need = src_w * src_h + 2 * (src_w // 2) * (src_h // 2)
    else:
        need = src_w * src_h * PACKED_BYTES[fmt]
    if need > MAX_BUFFER_BYTES:
        raise ValueError(f"streampi kernel: source of {src_w}×{src_h} needs {need} bytes, "
                         f"more than the {MAX_BUFFER_BYTES} the kernel addresses")
    if src_nbytes != need:
        raise ValueError(f"streampi kernel: source of {src_w}×{src_h} in format {fmt} needs {need} bytes, "
                         f"the buffer has {src_nbytes}")
    _rect_inside("crop", cx, cy, cw, ch, src_w, src_h, "source")
    if out_c not in (1, 3):
        raise ValueError(f"streampi kernel: out_c must be 1 or 3, got {out_c}")
    if itemsize not in (1, 4):
        raise ValueError(f"streampi kernel: itemsize must be 1 (int8/uint8) or 4 (float32), got {itemsize}")
    if out_w < 1 or out_h < 1:
        raise ValueError(f"streampi kernel: destination of {out_w}×{out_h} is empty")
    need = out_w * out_h * out_c * itemsize
    if need > MAX_BUFFER_BYTES:
        raise ValueError(f"streampi kernel: destination of {out_w}×{out_h}×{out_c} needs {need} bytes, "
                         f"more than the {MAX_BUFFER_BYTES} the kernel addresses")
    if out_nbytes != need:
        raise ValueError(f"streampi kernel: destination of {out_w}×{out_h}×{out_c} with {itemsize}-byte "
                         f"elements needs {need} bytes, the buffer has {out_nbytes}")
    _rect_inside("destination rectangle", dx0, dy0, dw, dh, out_w, out_h, "destination")
    if lut_nbytes != 256 * out_c * itemsize:
        raise ValueError(f"streampi kernel: the lookup table needs {256 * out_c * itemsize} bytes "
                         f"(256 per channel and element byte), got {lut_nbytes}")
    if pad_nbytes != out_c * itemsize:
        raise ValueError(f"streampi kernel: the pad value needs {out_c * itemsize} bytes, got {pad_nbytes}")
    row0 = _index("row0", row0)
    row1 = out_h if row1 is None else _index("row1", row1)
    if row0 < 0 or row1 > out_h or row0 > row1:
        raise ValueError(f"streampi kernel: the band of rows [{row0}, {row1}) is not inside the "
                         f"{out_h} rows of the destination (0 <= row0 <= row1 <= {out_h})")
    return row0, row1


def resize_quantize(src, fmt, src_w, src_h, cx, cy, cw, ch, out, out_w, out_h, out_c, itemsize,
                    dx0, dy0, dw, dh, lut, pad, swap_rb, full_range, area, row0=0, row1=None):
    """Convert, resize and quantize one frame into ``out`` (the raw bytes of one slot).

    ``src`` holds a ``src_w × src_h`` frame of format ``fmt``; the crop ``(cx, cy, cw, ch)``
    of it is resampled into the rectangle ``(dx0, dy0, dw, dh)`` of an ``out_h × out_w ×
    out_c`` slot of ``itemsize``-byte elements; the rest of the slot is filled with ``pad``
    (one element per channel). ``lut`` maps each channel's uint8 value to an output element.
    ``src``, ``out``, ``lut`` and ``pad`` are contiguous byte buffers (``out`` writable).
    Every size is checked against those buffers (``ValueError`` when they disagree).

    Only the slot's rows [``row0``, ``row1``) are written (default: every row), with exactly
    the bytes the whole call writes there, padding included, and no byte outside them: two
    threads can fill two bands of one slot at once (the loops run without the GIL). Each call
    repeats the per-frame setup (coefficient tables, row buffers: a few µs).
    """
    cdef const uint8_t[::1] src_v = src
    cdef uint8_t[::1] out_v = out
    cdef const uint8_t[::1] lut_v = lut
    cdef const uint8_t[::1] pad_v = pad
    row0, row1 = check_arguments(src_v.shape[0], fmt, src_w, src_h, cx, cy, cw, ch, out_v.shape[0], out_w, out_h,
                                 out_c, itemsize, dx0, dy0, dw, dh, lut_v.shape[0], pad_v.shape[0], row0, row1)
    _resize_quantize(src_v, fmt, src_w, src_h, cx, cy, cw, ch, out_v, out_w, out_h, out_c, itemsize,
                     dx0, dy0, dw, dh, lut_v, pad_v, bool(swap_rb), bool(full_range), bool(area), row0, row1)


cdef _resize_quantize(const uint8_t[::1] src, int fmt, int src_w, int src_h,
                      int cx, int cy, int cw, int ch,
                      uint8_t[::1] out, int out_w, int out_h, int out_c, int itemsize,
                      int dx0, int dy0, int dw, int dh,
                      const uint8_t[::1] lut, const uint8_t[::1] pad,
                      bint swap_rb, bint full_range, bint area, int row0, int row1):
    """The kernel proper, on arguments check_arguments() accepted: slot rows [row0, row1)."""
    cdef Source s
    cdef int i, y, rc = 0, pixel = out_c * itemsize
    cdef int out_stride = out_w * pixel
    cdef uint8_t* o = &out[0]
    cdef uint8_t* line
    # the band's rows of the destination rectangle, in rectangle coordinates
    cdef int r0 = max(row0, dy0) - dy0, r1 = min(row1, dy0 + dh) - dy0
    if row0 >= row1:
        return
    s.data = &src[0]
    s.fmt = fmt
    s.w, s.h = src_w, src_h
    s.cx, s.cy, s.cw, s.ch = cx, cy, cw, ch
    s.out_c = out_c
    s.full_range = full_range
    s.src_ps = 3 if fmt in (FMT_RGB, FMT_BGR) else (4 if fmt in (FMT_RGBA, FMT_BGRA) else 1)
    s.buf = NULL
    if fmt == FMT_GRAY:
        s.direct, s.ps = 1, 1
        s.off[0] = s.off[1] = s.off[2] = 0
    elif out_c == 1 and (fmt == FMT_I420 or fmt == FMT_NV12):
        s.direct, s.ps = 0, 1  # fetch() hands out the luma row in place
        s.off[0] = s.off[1] = s.off[2] = 0
    elif out_c == 1:
        s.direct, s.ps = 0, 1
        s.off[0] = s.off[1] = s.off[2] = 0
    elif fmt == FMT_I420 or fmt == FMT_NV12:
        s.direct, s.ps = 0, 1  # planar rows, see fetch()
        s.off[0], s.off[1], s.off[2] = 0, cw, 2 * cw
    else:
        s.direct, s.ps = 1, s.src_ps
        if fmt == FMT_BGR or fmt == FMT_BGRA:
            s.off[0], s.off[1], s.off[2] = 2, 1, 0
        else:
            s.off[0], s.off[1], s.off[2] = 0, 1, 2
    if swap_rb and out_c == 3:
        s.off[0], s.off[2] = s.off[2], s.off[0]
    with nogil:
        if not s.direct:
            s.buf = <uint8_t*>malloc(<size_t>cw * out_c + 8)  # + slack: group3 reads 2 bytes at a time
            if s.buf == NULL:
                rc = -1
            else:
                memset(s.buf + <size_t>cw * out_c, 0, 8)
        if s.direct or s.buf != NULL:
            # padding of the band's rows only: whole rows above and below the rectangle, the
            # columns left and right of it on the rows it covers
            for y in range(row0, row1):
                line = o + <int64_t>y * out_stride
                if y < dy0 or y >= dy0 + dh:
                    for i in range(out_w):
                        memcpy(line + <int64_t>i * pixel, &pad[0], pixel)
                else:
                    for i in range(dx0):
                        memcpy(line + <int64_t>i * pixel, &pad[0], pixel)
                    for i in range(dx0 + dw, out_w):
                        memcpy(line + <int64_t>i * pixel, &pad[0], pixel)
            o = o + <int64_t>dy0 * out_stride + <int64_t>dx0 * pixel
            if r0 < r1:
                if area:
                    rc = resize_area(&s, dw, dh, r0, r1, o, out_stride, itemsize, &lut[0])
                else:
                    rc = resize_linear(&s, dw, dh, r0, r1, o, out_stride, itemsize, &lut[0])
        free(s.buf)
    if rc != 0:
        raise MemoryError("streampi kernel: out of memory for row buffers")
