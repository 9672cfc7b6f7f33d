/* Hand-vectorised pieces of the kernels, used where the compiler cannot vectorise by itself.
 *
 * Each function handles the first n elements it safely can and returns n; the caller's scalar
 * loop does the rest. Integer arithmetic is identical to the scalar code, so results are
 * bit-for-bit the same (tested: test_simd_and_baseline_builds_agree). Builds without the
 * instruction set get stubs that return 0: the baseline build, which is also what every
 * other architecture gets. x86-64 has an AVX2 build (-mavx2), aarch64 a NEON build
 * (-DSTREAMPI_NEON; NEON itself is part of every aarch64 CPU).
 *
 * The bilinear pass (OpenCV's INTER_LINEAR fixed point) in three steps:
 *  - streampi_hrow_rgb: horizontal pass of one or two packed 3- or 4-byte-pixel rows (weights
 *    laid out by streampi_hprep). Output pixel x reads the STREAMPI_HROW_READ bytes at
 *    p + xofs[x], which hold both of its taps (source pixels x0 and x0+1): one plain load per
 *    output pixel, no gathers. Each channel is p[x0]*w0 + p[x0+1]*w1 with Q11 weights, kept as
 *    that sum >> 4 (all the vertical pass uses; at most 32655, an int16), STREAMPI_HLANES int16
 *    per pixel: 4 on x86 and in the baseline build (3 channels and a zero), 3 on NEON (compact).
 *  - streampi_hrow_yuv: the same horizontal pass for a 4:2:0 row (I420, NV12), read in place:
 *    only the two taps of each output pixel are converted to RGB (BT.601, the scalar code's
 *    int32 arithmetic), straight into the multiply; the baseline build converts whole rows.
 *  - streampi_vrow: vertical pass of two such rows into uint8, with OpenCV's vector rounding
 *    ((h0*b0 >> 16) + (h1*b1 >> 16) + 2) >> 2, written compact (c bytes per pixel). It may
 *    write up to 16 bytes past the c*dw it returns (the caller's row has that slack).
 *  - streampi_vrow_lut (NEON): the vertical pass and the lookup table in one step, straight
 *    into the output slot, when one table serves every byte.
 *  - streampi_lut8: the per-channel 256-entry lookup table (normalise + quantize) of a compact
 *    uint8 row into the output slot, never writing past the n bytes it returns.
 */
#ifndef STREAMPI_SIMD_H
#define STREAMPI_SIMD_H

#include <stdint.h>
#include <string.h>

/* The tables of the 4:2:0 tap pass (streampi_hrow_yuv, AVX2 and NEON): per block of 4 output
 * pixels, 96 bytes of byte-shuffle masks (Y, U, V; 16 bytes per 2 pixels and plane, which is
 * also a 16-byte NEON tbl table) that put each tap's byte of the pixel's 8-byte load into an
 * int32 lane: tap 0 at byte 0, tap 1 at x1 - x0 (luma) or at the chroma step (0 or 1 sample;
 * NV12: 2 bytes a sample, V one byte after U); 0x80 picks zero. yofs[x] = cx + x0 is tap 0's
 * byte in the Y row, cofs[x] its chroma sample's byte in the U (or UV) row. masks holds
 * 24 * (dw + 3) bytes. */
static inline void streampi_yuvprep(const int *x0, const int *x1, int cx, int nv12, int dw, uint8_t *masks,
                                    int *yofs, int *cofs)
{
    const int cs = nv12 ? 2 : 1;
    memset(masks, 0x80, 24 * (size_t)(dw + 3));
    for (int x = 0; x < dw; x++) {
        const int c0 = (cx + x0[x]) >> 1, c1 = (cx + x1[x]) >> 1;
        uint8_t *m = masks + 96 * (x >> 2) + 16 * ((x >> 1) & 1) + 8 * (x & 1);
        const int base = 8 * (x & 1);  /* the pixel's 8 bytes in its 128-bit lane */
        yofs[x] = cx + x0[x];
        cofs[x] = c0 * cs;
        m[0] = (uint8_t)base;
        m[4] = (uint8_t)(base + x1[x] - x0[x]);
        m[32] = (uint8_t)base;
        m[36] = (uint8_t)(base + (c1 - c0) * cs);
        m[64] = (uint8_t)(base + (nv12 ? 1 : 0));
        m[68] = (uint8_t)(base + (c1 - c0) * cs + (nv12 ? 1 : 0));
    }
}

#if defined(__AVX2__)
#include <immintrin.h>

/* Horizontal pass, AVX2. Per channel, (p0*a0 + p1*a1) >> 4 with Q11 weights a <= 2048 equals
 * 2*(p0*(a0 >> 5) + p1*(a1 >> 5)) + ((p0*(a0 & 31) + p1*(a1 & 31)) >> 4) exactly (the first sum
 * times 32 is a multiple of 16), and both sums are one pmaddubsw each: unsigned pixel bytes times
 * signed byte weights (at most 64 and 31), byte pairs summed into int16 without saturating
 * (at most 255 * 64 + 255 * 64 and 255 * 62). So the result comes out as int16 directly. */
#define STREAMPI_HROW_READ 8
#define STREAMPI_HROW_VEC 1  /* the horizontal pass is vectorised (worth regrouping rows for it) */

/* The weights as pmaddubsw wants them, for blocks of 4 pixels: 32 bytes of (a0 >> 5, a1 >> 5)
 * pairs (4 a pixel: 3 channels and the zero), then 32 bytes of (a0 & 31, a1 & 31). wtab holds
 * 16 * (dw + 3) bytes. */
static inline void streampi_hprep(const int *a0, const int *a1, int dw, uint8_t *wtab)
{
    for (int x = 0; x < dw; x++) {
        uint8_t *w = wtab + 64 * (x >> 2) + 8 * (x & 3);
        for (int k = 0; k < 4; k++) {
            w[2 * k] = (uint8_t)(a0[x] >> 5);
            w[2 * k + 1] = (uint8_t)(a1[x] >> 5);
            w[32 + 2 * k] = (uint8_t)(a0[x] & 31);
            w[32 + 2 * k + 1] = (uint8_t)(a1[x] & 31);
        }
    }
}

/* the 8 bytes at r + o[0..3], one 128-bit lane per 2 pixels */
static inline __m256i streampi_load4(const uint8_t *r, const int *o)
{
    __m128i ab = _mm_loadl_epi64((const __m128i *)(r + o[0]));
    __m128i cd = _mm_loadl_epi64((const __m128i *)(r + o[2]));
    ab = _mm_castpd_si128(_mm_loadh_pd(_mm_castsi128_pd(ab), (const double *)(r + o[1])));
    cd = _mm_castpd_si128(_mm_loadh_pd(_mm_castsi128_pd(cd), (const double *)(r + o[3])));
    return _mm256_setr_m128i(ab, cd);
}

/* 4 pixels of row r at byte offsets o[0..3] (8 bytes each: both taps), as 16 int16 */
static inline __m256i streampi_hquad(const uint8_t *r, const int *o, __m256i mask, __m256i whi, __m256i wlo)
{
    __m256i v = _mm256_shuffle_epi8(streampi_load4(r, o), mask);
    __m256i hi = _mm256_maddubs_epi16(v, whi), lo = _mm256_maddubs_epi16(v, wlo);
    return _mm256_add_epi16(_mm256_add_epi16(hi, hi), _mm256_srli_epi16(lo, 4));
}

/* Pixels [0, n) of rows p and q (q may be NULL: p only) into h and g, 4 int16 a pixel (n:
 * pixels whose STREAMPI_HROW_READ-byte read at xofs stays in the row and holds both taps; the
 * caller works that out). The shuffle makes (tap 0, tap 1) byte pairs of channels o0, o1, o2
 * and a zero pair, for each of the two pixels in a 128-bit lane. */
static inline int streampi_hrow_rgb(const uint8_t *p, const uint8_t *q, int ps, int o0, int o1, int o2, int n,
                                    int n16, int dw, const int *xofs, const uint8_t *wtab, int16_t *h, int16_t *g)
{
    const char z = (char)0x80;
    (void)n16; (void)dw;
    const __m128i m = _mm_setr_epi8(o0, ps + o0, o1, ps + o1, o2, ps + o2, z, z,
                                    8 + o0, 8 + ps + o0, 8 + o1, 8 + ps + o1, 8 + o2, 8 + ps + o2, z, z);
    const __m256i mask = _mm256_setr_m128i(m, m);
    int x = 0;
    for (; x + 4 <= n; x += 4) {
        const __m256i whi = _mm256_loadu_si256((const __m256i *)(wtab + 16 * x));
        const __m256i wlo = _mm256_loadu_si256((const __m256i *)(wtab + 16 * x + 32));
        _mm256_storeu_si256((__m256i *)(h + 4 * x), streampi_hquad(p, xofs + x, mask, whi, wlo));
        if (q)
            _mm256_storeu_si256((__m256i *)(g + 4 * x), streampi_hquad(q, xofs + x, mask, whi, wlo));
    }
    return x;
}

/* Horizontal pass of one 4:2:0 row straight from Y, U, V (I420, or NV12 with V == U and the V
 * bytes picked one further), converting only the two taps of each output pixel to RGB: a
 * 1280 → 224 row needs 448 of its 1280 pixels. For 4 output pixels: an 8-byte load per pixel and
 * plane (both taps and both chroma samples among them), a shuffle that puts each tap's byte in
 * an int32 lane (8 taps), BT.601 in exactly the scalar int32 arithmetic (yuv_pixel in
 * _kernels.pyx: ((y - yoff)+ * cy + 2^19 + cv * v + cu * u) >> 20, saturated by the packs), then
 * the pmaddubsw multiply of streampi_hquad on the (tap 0, tap 1) byte pairs. Tables from
 * streampi_yuvprep. */
#define STREAMPI_HROW_YUV 1

/* Pixels [0, n) (n: pixels whose 8-byte loads at yofs and cofs stay inside their rows; the caller
 * works it out), 4 at a time, into h (4 int16 a pixel: channels in model order, swap: B first). */
static inline int streampi_hrow_yuv(const uint8_t *Y, const uint8_t *U, const uint8_t *V, int n, const int *yofs,
                                    const int *cofs, const uint8_t *masks, const uint8_t *wtab, const int *k,
                                    int yoff, int swap, int16_t *h)
{
    /* after the packs a lane holds R of its 4 taps at bytes 0-3, G at 4-7, B at 8-11, zeros at
     * 12-15; each pixel takes (c tap 0, c tap 1) for c in model order, then a zero pair */
    const char c0 = swap ? 8 : 0, c2 = swap ? 0 : 8;  /* where channels 0 and 2 of the model are */
    const __m128i g = _mm_setr_epi8(c0, c0 + 1, 4, 5, c2, c2 + 1, 12, 12, c0 + 2, c0 + 3, 6, 7, c2 + 2, c2 + 3, 12, 12);
    const __m256i group = _mm256_setr_m128i(g, g);
    const __m256i cy = _mm256_set1_epi32(k[0]), cvr = _mm256_set1_epi32(k[1]), cvg = _mm256_set1_epi32(k[2]);
    const __m256i cug = _mm256_set1_epi32(k[3]), cub = _mm256_set1_epi32(k[4]);
    const __m256i half = _mm256_set1_epi32(1 << 19), off = _mm256_set1_epi32(yoff), c128 = _mm256_set1_epi32(128);
    const __m256i zero = _mm256_setzero_si256();
    int x = 0;
    for (; x + 4 <= n; x += 4) {
        const uint8_t *m = masks + 24 * x;
        __m256i y = _mm256_shuffle_epi8(streampi_load4(Y, yofs + x), _mm256_loadu_si256((const __m256i *)m));
        __m256i u = _mm256_shuffle_epi8(streampi_load4(U, cofs + x), _mm256_loadu_si256((const __m256i *)(m + 32)));
        __m256i v = _mm256_shuffle_epi8(streampi_load4(V, cofs + x), _mm256_loadu_si256((const __m256i *)(m + 64)));
        u = _mm256_sub_epi32(u, c128);
        v = _mm256_sub_epi32(v, c128);
        __m256i yy = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_max_epi32(_mm256_sub_epi32(y, off), zero), cy), half);
        __m256i rr = _mm256_srai_epi32(_mm256_add_epi32(yy, _mm256_mullo_epi32(v, cvr)), 20);
        __m256i gg = _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(yy, _mm256_mullo_epi32(v, cvg)),
                                                        _mm256_mullo_epi32(u, cug)), 20);
        __m256i bb = _mm256_srai_epi32(_mm256_add_epi32(yy, _mm256_mullo_epi32(u, cub)), 20);
        __m256i px = _mm256_packus_epi16(_mm256_packs_epi32(rr, gg), _mm256_packs_epi32(bb, zero));
        px = _mm256_shuffle_epi8(px, group);
        const __m256i whi = _mm256_loadu_si256((const __m256i *)(wtab + 16 * x));
        const __m256i wlo = _mm256_loadu_si256((const __m256i *)(wtab + 16 * x + 32));
        __m256i hi = _mm256_maddubs_epi16(px, whi), lo = _mm256_maddubs_epi16(px, wlo);
        _mm256_storeu_si256((__m256i *)(h + 4 * x), _mm256_add_epi16(_mm256_add_epi16(hi, hi), _mm256_srli_epi16(lo, 4)));
    }
    return x;
}

/* The 4:2:0 tap pass, second form (AVX2): chroma from one interleaved UV row (NV12 as it is,
 * I420's U and V rows interleaved once per chroma row by streampi_uv_interleave), and two luma
 * rows that share that chroma row (an output row's two source rows when the first is even)
 * converted with one chroma conversion. No 32-bit multiplies: each product is one pmaddwd of
 * an int16 pair (x, 256*x - 32768) (the byte shuffle puts the tap byte in both halves of an int32
 * lane, one xor flips the top bit) with (c & 255, c >> 8): x*c - 32768*(c >> 8), exactly; the
 * constants (the 2^19 rounding, the -128 of u and v, the 32768s) are added once per channel.
 * max(y - yoff, 0) is a saturating byte subtract. The sums are the scalar int32 sums, so the
 * bytes are yuv_pixel's. Masks from streampi_yuvprep2: per block of 4 pixels 96 bytes (Y, U, V)
 * as streampi_yuvprep's, each tap's byte at bytes 0 and 3 of its int32 lane. */
#define STREAMPI_HROW_YUV2 1

/* w: the frame's width, the bytes of a Y row and of a UV row. When w >= 8, a load that would
 * leave its row starts earlier instead (at w - 8) and the mask picks its bytes further on, so
 * that every pixel takes the vector pass. */
static inline void streampi_yuvprep2(const int *x0, const int *x1, int cx, int w, int dw, uint8_t *masks, int *yofs,
                                     int *cofs)
{
    memset(masks, 0x80, 24 * (size_t)(dw + 3));
    for (int x = 0; x < dw; x++) {
        const int c0 = (cx + x0[x]) >> 1, c1 = (cx + x1[x]) >> 1;
        uint8_t *m = masks + 96 * (x >> 2) + 16 * ((x >> 1) & 1) + 8 * (x & 1);
        int yo = cx + x0[x], co = 2 * c0, dy = 0, dc = 0;
        if (w >= 8 && yo + 8 > w) {
            dy = yo - (w - 8);
            yo = w - 8;
        }
        if (w >= 8 && co + 8 > w) {
            dc = co - (w - 8);
            co = w - 8;
        }
        const int base = 8 * (x & 1);
        yofs[x] = yo;
        cofs[x] = co;
        m[0] = m[3] = (uint8_t)(base + dy);
        m[4] = m[7] = (uint8_t)(base + dy + x1[x] - x0[x]);
        m[32] = m[35] = (uint8_t)(base + dc);
        m[36] = m[39] = (uint8_t)(base + dc + 2 * (c1 - c0));
        m[64] = m[67] = (uint8_t)(base + dc + 1);
        m[68] = m[71] = (uint8_t)(base + dc + 2 * (c1 - c0) + 1);
    }
}

/* I420's U and V rows (n samples each) as one NV12-like row of 2n bytes */
static inline void streampi_uv_interleave(const uint8_t *U, const uint8_t *V, int n, uint8_t *uv)
{
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(U + i)), v = _mm256_loadu_si256((const __m256i *)(V + i));
        __m256i lo = _mm256_unpacklo_epi8(u, v), hi = _mm256_unpackhi_epi8(u, v);
        _mm256_storeu_si256((__m256i *)(uv + 2 * i), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i *)(uv + 2 * i + 32), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
    for (; i < n; i++) {
        uv[2 * i] = U[i];
        uv[2 * i + 1] = V[i];
    }
}

/* (c & 255, c >> 8) as the int16 pair pmaddwd multiplies (x, 256*x - 32768) by */
static inline __m256i streampi_cpair(int c)
{
    return _mm256_set1_epi32((int)(((uint32_t)(uint16_t)(int16_t)(c >> 8) << 16) | (uint32_t)(c & 255)));
}

/* one luma row's 4 pixels from the chroma terms: RGB of the 8 taps, then the horizontal multiply */
static inline void streampi_yuv2_row(__m256i y, __m256i cr, __m256i cg, __m256i cb, __m256i cy, __m256i group,
                                     __m256i whi, __m256i wlo, int16_t *h)
{
    const __m256i yy = _mm256_madd_epi16(y, cy);
    __m256i rr = _mm256_srai_epi32(_mm256_add_epi32(yy, cr), 20);
    __m256i gg = _mm256_srai_epi32(_mm256_add_epi32(yy, cg), 20);
    __m256i bb = _mm256_srai_epi32(_mm256_add_epi32(yy, cb), 20);
    __m256i px = _mm256_packus_epi16(_mm256_packs_epi32(rr, gg), _mm256_packs_epi32(bb, _mm256_setzero_si256()));
    px = _mm256_shuffle_epi8(px, group);
    __m256i hi = _mm256_maddubs_epi16(px, whi), lo = _mm256_maddubs_epi16(px, wlo);
    _mm256_storeu_si256((__m256i *)h, _mm256_add_epi16(_mm256_add_epi16(hi, hi), _mm256_srli_epi16(lo, 4)));
}

/* Pixels [0, n) of luma row YA (and YB into hb, when not NULL) whose chroma row is the
 * interleaved UV (n: pixels whose 8-byte loads at yofs and cofs stay inside their rows). */
static inline int streampi_hrow_yuv2(const uint8_t *YA, const uint8_t *YB, const uint8_t *UV, int n, const int *yofs,
                                     const int *cofs, const uint8_t *masks, const uint8_t *wtab, const int *k,
                                     int yoff, int swap, int16_t *ha, int16_t *hb)
{
    const char c0 = swap ? 8 : 0, c2 = swap ? 0 : 8;
    const __m128i g = _mm_setr_epi8(c0, c0 + 1, 4, 5, c2, c2 + 1, 12, 12, c0 + 2, c0 + 3, 6, 7, c2 + 2, c2 + 3, 12, 12);
    const __m256i group = _mm256_setr_m128i(g, g);
    const int cyh = k[0] >> 8, crh = k[1] >> 8, cgvh = k[2] >> 8, cguh = k[3] >> 8, cbh = k[4] >> 8;
    const __m256i cy = streampi_cpair(k[0]), cvr = streampi_cpair(k[1]), cvg = streampi_cpair(k[2]);
    const __m256i cug = streampi_cpair(k[3]), cub = streampi_cpair(k[4]);
    const __m256i kr = _mm256_set1_epi32((1 << 19) + 32768 * (cyh + crh) - 128 * k[1]);
    const __m256i kg = _mm256_set1_epi32((1 << 19) + 32768 * (cyh + cgvh + cguh) - 128 * (k[2] + k[3]));
    const __m256i kb = _mm256_set1_epi32((1 << 19) + 32768 * (cyh + cbh) - 128 * k[4]);
    const __m256i flip = _mm256_set1_epi32((int)0x80000000u), off = _mm256_set1_epi8((char)yoff);
    int x = 0;
    for (; x + 4 <= n; x += 4) {
        const uint8_t *m = masks + 24 * x;
        const __m256i uv = streampi_load4(UV, cofs + x);
        const __m256i u = _mm256_xor_si256(_mm256_shuffle_epi8(uv, _mm256_loadu_si256((const __m256i *)(m + 32))), flip);
        const __m256i v = _mm256_xor_si256(_mm256_shuffle_epi8(uv, _mm256_loadu_si256((const __m256i *)(m + 64))), flip);
        const __m256i cr = _mm256_add_epi32(_mm256_madd_epi16(v, cvr), kr);
        const __m256i cg = _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(v, cvg), _mm256_madd_epi16(u, cug)), kg);
        const __m256i cb = _mm256_add_epi32(_mm256_madd_epi16(u, cub), kb);
        const __m256i my = _mm256_loadu_si256((const __m256i *)m);
        const __m256i whi = _mm256_loadu_si256((const __m256i *)(wtab + 16 * x));
        const __m256i wlo = _mm256_loadu_si256((const __m256i *)(wtab + 16 * x + 32));
        __m256i y = _mm256_shuffle_epi8(_mm256_subs_epu8(streampi_load4(YA, yofs + x), off), my);
        streampi_yuv2_row(_mm256_xor_si256(y, flip), cr, cg, cb, cy, group, whi, wlo, ha + 4 * x);
        if (YB) {
            y = _mm256_shuffle_epi8(_mm256_subs_epu8(streampi_load4(YB, yofs + x), off), my);
            streampi_yuv2_row(_mm256_xor_si256(y, flip), cr, cg, cb, cy, group, whi, wlo, hb + 4 * x);
        }
    }
    return x;
}

static inline __m256i streampi_vmix(__m256i a, __m256i b, __m256i w0, __m256i w1, __m256i two)
{
    return _mm256_srai_epi16(_mm256_add_epi16(_mm256_add_epi16(_mm256_mulhi_epi16(a, w0), _mm256_mulhi_epi16(b, w1)),
                                              two), 2);
}

/* Vertical pass: c == 3 reads 4 int16 per pixel (8 pixels a block), c == 1 one (32 a block). */
static inline int streampi_vrow(const int16_t *h0, const int16_t *h1, int b0, int b1, int c, int dw, uint8_t *row)
{
    const __m256i w0 = _mm256_set1_epi16((short)b0), w1 = _mm256_set1_epi16((short)b1), two = _mm256_set1_epi16(2);
    int x = 0;
    if (c == 3) {
        const __m256i drop = _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
                                              0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
        for (; x + 8 <= dw; x += 8) {
            __m256i lo = streampi_vmix(_mm256_loadu_si256((const __m256i *)(h0 + 4 * x)),
                                       _mm256_loadu_si256((const __m256i *)(h1 + 4 * x)), w0, w1, two);
            __m256i hi = streampi_vmix(_mm256_loadu_si256((const __m256i *)(h0 + 4 * x + 16)),
                                       _mm256_loadu_si256((const __m256i *)(h1 + 4 * x + 16)), w0, w1, two);
            /* packus interleaves lanes: 0 1 4 5 | 2 3 6 7 → permute to 0 1 2 3 | 4 5 6 7, drop the zeros */
            __m256i v = _mm256_shuffle_epi8(_mm256_permute4x64_epi64(_mm256_packus_epi16(lo, hi), 0xD8), drop);
            _mm_storeu_si128((__m128i *)(row + 3 * x), _mm256_castsi256_si128(v));
            _mm_storeu_si128((__m128i *)(row + 3 * x + 12), _mm256_extracti128_si256(v, 1));
        }
    } else if (c == 1) {
        for (; x + 32 <= dw; x += 32) {
            __m256i lo = streampi_vmix(_mm256_loadu_si256((const __m256i *)(h0 + x)),
                                       _mm256_loadu_si256((const __m256i *)(h1 + x)), w0, w1, two);
            __m256i hi = streampi_vmix(_mm256_loadu_si256((const __m256i *)(h0 + x + 16)),
                                       _mm256_loadu_si256((const __m256i *)(h1 + x + 16)), w0, w1, two);
            _mm256_storeu_si256((__m256i *)(row + x), _mm256_permute4x64_epi64(_mm256_packus_epi16(lo, hi), 0xD8));
        }
    }
    return x;
}

/* 32 bytes through one 256-entry table: 16 pshufb lookups by the low nibble (one per 16-entry
 * piece of the table), then a tree of byte blends picks each byte's piece by the high nibble
 * (bits 4, 5, 6, 7: each shifted to bit 7, which is what blendv reads). */
static inline __m256i streampi_lut32(__m256i x, const __m256i *tab)
{
    const __m256i lo = _mm256_and_si256(x, _mm256_set1_epi8(15));
    __m256i t[16];
    int k;
    for (k = 0; k < 16; k++)
        t[k] = _mm256_shuffle_epi8(_mm256_loadu_si256(tab + k), lo);
    __m256i bit = _mm256_slli_epi16(x, 3);
    for (k = 0; k < 8; k++)
        t[k] = _mm256_blendv_epi8(t[2 * k], t[2 * k + 1], bit);
    bit = _mm256_slli_epi16(x, 2);
    for (k = 0; k < 4; k++)
        t[k] = _mm256_blendv_epi8(t[2 * k], t[2 * k + 1], bit);
    bit = _mm256_slli_epi16(x, 1);
    for (k = 0; k < 2; k++)
        t[k] = _mm256_blendv_epi8(t[2 * k], t[2 * k + 1], bit);
    return _mm256_blendv_epi8(t[0], t[1], x);
}

/* The lookup of n bytes (c channels interleaved). AVX2 has no per-byte-position tables, so
 * only one table for every byte: c == 1, or all channels' tables equal (same_tables). */
static inline int streampi_lut8(const uint8_t *row, int n, int c, const uint8_t *lut, int same_tables, uint8_t *out)
{
    __m256i tab[16];
    int i;
    if ((c != 1 && !same_tables) || n < 32)
        return 0;
    for (i = 0; i < 16; i++)
        tab[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(lut + 16 * i)));
    for (i = 0; i + 32 <= n; i += 32)
        _mm256_storeu_si256((__m256i *)(out + i), streampi_lut32(_mm256_loadu_si256((const __m256i *)(row + i)), tab));
    if (i < n)  /* the last 32 bytes again: same values, nothing past n */
        _mm256_storeu_si256((__m256i *)(out + n - 32),
                            streampi_lut32(_mm256_loadu_si256((const __m256i *)(row + n - 32)), tab));
    return n;
}

#if defined(__AVX512BW__) && defined(__AVX512VL__)
#define STREAMPI_SIMD_BUILD "avx512"  /* the same code, EVEX-encoded; plain loops 512 bits wide */
#else
#define STREAMPI_SIMD_BUILD "avx2"
#endif

#elif defined(STREAMPI_NEON) && defined(__ARM_NEON)
#include <arm_neon.h>

/* The NEON twin of the AVX2 horizontal pass: same pixels, same integer arithmetic, same bytes.
 * The Q11 weights are split as on AVX2 (a = 32*hi + lo, hi <= 64, lo <= 31) so that the products
 * are byte times byte (vmull_u8/vmlal_u8, 8 lanes an instruction): per channel the pair sums
 * p0*2hi0 + p1*2hi1 <= 255*128 and p0*lo0 + p1*lo1 <= 255*62 fit a uint16, and
 * 2*hi_sum + (lo_sum >> 4) (one vsra) is (p0*a0 + p1*a1) >> 4 exactly. Blocks of 4 pixels:
 * four 8-byte loads (both taps each), an 8-byte tbl per tap and 2 pixels puts each pixel's
 * (c0, c1, c2, 0) bytes of that tap in place (index 255 reads as 0). */
#define STREAMPI_HROW_READ 8
#define STREAMPI_HROW_VEC 1
/* A 3-channel horizontal row is compact here: 3 int16 a pixel, so that the vertical pass has no
 * zero lane to compute (a quarter of its work) and writes its bytes without compacting them. */
#define STREAMPI_HLANES 3
/* per 2 pixels 48 bytes: the pair's weights (32), then its mask (16, streampi_hmask); then per
 * 8 pixels 144 bytes for the blocks of 8 (streampi_hblock2) */
#define STREAMPI_WTAB_PAIRS(dw) (24 * ((dw) + 3))
#define STREAMPI_WTAB_BYTES(dw) (STREAMPI_WTAB_PAIRS(dw) + 18 * ((dw) + 8))
#if defined(__GNUC__)
#define STREAMPI_HBLOCK 1  /* blocks of 8 pixels (inline asm: tbl of two given registers) */
#else
#define STREAMPI_HBLOCK 0
#endif

/* The weights for pairs of pixels, 48 bytes a pair (the last 16 for streampi_hmask's mask):
 * 2*hi of tap 0, 2*hi of tap 1, lo of tap 0, lo of tap 1, 8 bytes each (lanes 0-2 the first
 * pixel's channels, 3-5 the second's, 6-7 zero), so that two 16-byte loads fetch a pair's (tap
 * 0's and tap 1's weights side by side), and one pointer steps through weights and masks. wtab
 * holds STREAMPI_WTAB_BYTES(dw) bytes. */
static inline void streampi_hprep(const int *a0, const int *a1, int dw, uint8_t *wtab)
{
    for (int x = 0; x < dw; x++) {
        uint8_t *w = wtab + 48 * (x >> 1) + 3 * (x & 1);
        if (!(x & 1))  /* a pair's weights: lanes 6-7 (and 3-5 of a lone last pixel) weigh 0 */
            memset(w, 0, 32);
        for (int k = 0; k < 3; k++) {
            w[k] = (uint8_t)(2 * (a0[x] >> 5));
            w[8 + k] = (uint8_t)(2 * (a1[x] >> 5));
            w[16 + k] = (uint8_t)(a0[x] & 31);
            w[24 + k] = (uint8_t)(a1[x] & 31);
            /* a block of 8 pixels: its 24 values as three 8-lane vectors j, 144 bytes: 2*hi of
             * tap 0 | of tap 1 for j = 0, 1, 2 (16 bytes each), lo likewise, then the masks */
            const int lane = 3 * (x & 7) + k, j = lane >> 3, l = lane & 7;
            uint8_t *b = wtab + STREAMPI_WTAB_PAIRS(dw) + 144 * (x >> 3) + 16 * j + l;
            b[0] = (uint8_t)(2 * (a0[x] >> 5));
            b[8] = (uint8_t)(2 * (a1[x] >> 5));
            b[48] = (uint8_t)(a0[x] & 31);
            b[56] = (uint8_t)(a1[x] & 31);
        }
    }
}

/* The byte masks of pairs of pixels whose taps all lie in the 16 bytes at the first one's
 * offset (a shrink by less than about 3.3 of packed RGB: one load for both pixels), 16 bytes a
 * pair at byte 32 of the pair's 48 in wtab: tap 0 of the first pixel's channels, of the second's, two
 * zeros, then the same for tap 1 (index 255 reads as 0). Returns how many leading pixels (an
 * even number, at most n) take that path: pairs [0, returned) fit, and their 16-byte loads stay
 * in the row's row_bytes. */
static inline int streampi_hmask(int ps, int o0, int o1, int o2, const int *xofs, int n, int dw, int row_bytes,
                                 uint8_t *wtab)
{
    const int o[3] = {o0, o1, o2};
    uint8_t *m = wtab + 32;
    (void)dw;
    const int top = ps + (o0 > o1 ? (o0 > o2 ? o0 : o2) : (o1 > o2 ? o1 : o2));  /* the last byte a pixel needs */
    int x = 0;
    for (; x + 2 <= n; x += 2) {
        const int d = xofs[x + 1] - xofs[x];
        if (d < 0 || d + top > 15 || xofs[x] + 16 > row_bytes)
            break;
        for (int l = 0; l < 8; l++) {
            const int at = l < 3 ? o[l] : l < 6 ? d + o[l - 3] : -1;
            m[24 * x + l] = at < 0 ? 255 : (uint8_t)at;
            m[24 * x + 8 + l] = at < 0 ? 255 : (uint8_t)(at + ps);
        }
    }
    /* blocks of 8 such pixels: pairs in four registers (pixel i in register i / 2, at byte
     * 0 or the pair's d); vector j's values come from registers j and j + 1 (pixels 0-2,
     * 2-5, 5-7), a tbl of two registers with indices up to 31 */
    for (int b = 0; 8 * b + 8 <= x; b++) {
        uint8_t *mb = wtab + STREAMPI_WTAB_PAIRS(dw) + 144 * b + 96;
        for (int lane = 0; lane < 24; lane++) {
            const int i = lane / 3, k = lane % 3, j = lane >> 3, l = lane & 7, px = 8 * b + i;
            const int at = 16 * (i / 2 - j) + ((i & 1) ? xofs[px] - xofs[px - 1] : 0) + o[k];
            mb[16 * j + l] = (uint8_t)at;
            mb[16 * j + 8 + l] = (uint8_t)(at + ps);
        }
    }
    return x;
}

/* (tap 0, tap 1) bytes of 8 lanes times their split weights */
static inline int16x8_t streampi_hmul2(uint8x8_t t0, uint8x8_t t1, uint8x8x4_t w)
{
    uint16x8_t hi = vmlal_u8(vmull_u8(t0, w.val[0]), t1, w.val[1]);
    uint16x8_t lo = vmlal_u8(vmull_u8(t0, w.val[2]), t1, w.val[3]);
    return vreinterpretq_s16_u16(vsraq_n_u16(hi, lo, 4));
}

/* the same with tap 0 in the low half of t, tap 1 in the high half, and the weights as two 16-byte
 * registers (2*hi of tap 0 | of tap 1, lo of tap 0 | of tap 1) */
static inline int16x8_t streampi_hmul16(uint8x16_t t, uint8x16_t whi, uint8x16_t wlo)
{
    uint16x8_t hi = vmlal_high_u8(vmull_u8(vget_low_u8(t), vget_low_u8(whi)), t, whi);
    uint16x8_t lo = vmlal_high_u8(vmull_u8(vget_low_u8(t), vget_low_u8(wlo)), t, wlo);
    return vreinterpretq_s16_u16(vsraq_n_u16(hi, lo, 4));
}

#if STREAMPI_HBLOCK
/* 8 pixels of rows p and q (or p only) from four 16-byte loads each (the pairs at offsets a0-a3),
 * with a block's 144 bytes of weights and masks at w: three 2-register tbl, the byte multiply of
 * streampi_hmul16 on three full vectors, 24 int16 at h (and g). Written out because the 2-register
 * tables are overlapping pairs of the four loads (v16-v19), which the intrinsics cannot express
 * without copies. */
#define STREAMPI_HBLOCK_ROW(R, H)                                                                   \
    "ldr q16, [" R ", %[a0]]\n\tldr q17, [" R ", %[a1]]\n\t"                                      \
    "ldr q18, [" R ", %[a2]]\n\tldr q19, [" R ", %[a3]]\n\t"                                      \
    "tbl v3.16b, {v16.16b, v17.16b}, v0.16b\n\t"                                                   \
    "tbl v4.16b, {v17.16b, v18.16b}, v1.16b\n\t"                                                   \
    "tbl v5.16b, {v18.16b, v19.16b}, v2.16b\n\t"                                                   \
    "umull v20.8h, v3.8b, v24.8b\n\tumull v6.8h, v3.8b, v27.8b\n\t"                              \
    "umull v21.8h, v4.8b, v25.8b\n\tumull v7.8h, v4.8b, v28.8b\n\t"                              \
    "umull v22.8h, v5.8b, v26.8b\n\tumull v23.8h, v5.8b, v29.8b\n\t"                             \
    "umlal2 v20.8h, v3.16b, v24.16b\n\tumlal2 v6.8h, v3.16b, v27.16b\n\t"                        \
    "umlal2 v21.8h, v4.16b, v25.16b\n\tumlal2 v7.8h, v4.16b, v28.16b\n\t"                        \
    "umlal2 v22.8h, v5.16b, v26.16b\n\tumlal2 v23.8h, v5.16b, v29.16b\n\t"                       \
    "usra v20.8h, v6.8h, 4\n\tusra v21.8h, v7.8h, 4\n\tusra v22.8h, v23.8h, 4\n\t"               \
    "st1 {v20.8h, v21.8h, v22.8h}, [" H "]\n\t"
#define STREAMPI_HBLOCK_TABLES                                                                      \
    "ld1 {v24.16b, v25.16b, v26.16b}, [%[w]]\n\t"                                                   \
    "add %[w], %[w], 48\n\t"                                                                       \
    "ld1 {v27.16b, v28.16b, v29.16b}, [%[w]]\n\t"                                                   \
    "add %[w], %[w], 48\n\t"                                                                       \
    "ld1 {v0.16b, v1.16b, v2.16b}, [%[w]]\n\t"
#define STREAMPI_HBLOCK_CLOBBERS "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v16", "v17", "v18", "v19", "v20", \
    "v21", "v22", "v23", "v24", "v25", "v26", "v27", "v28", "v29", "memory"

static inline void streampi_hblock2(const uint8_t *p, const uint8_t *q, const int64_t *a, const uint8_t *w,
                                    int16_t *h, int16_t *g)
{
    __asm__ volatile(STREAMPI_HBLOCK_TABLES STREAMPI_HBLOCK_ROW("%[p]", "%[h]") STREAMPI_HBLOCK_ROW("%[q]", "%[g]")
                     : [w] "+r"(w)
                     : [p] "r"(p), [q] "r"(q), [h] "r"(h), [g] "r"(g), [a0] "r"(a[0]), [a1] "r"(a[1]), [a2] "r"(a[2]),
                       [a3] "r"(a[3])
                     : STREAMPI_HBLOCK_CLOBBERS);
}

static inline void streampi_hblock1(const uint8_t *p, const int64_t *a, const uint8_t *w, int16_t *h)
{
    __asm__ volatile(STREAMPI_HBLOCK_TABLES STREAMPI_HBLOCK_ROW("%[p]", "%[h]")
                     : [w] "+r"(w)
                     : [p] "r"(p), [h] "r"(h), [a0] "r"(a[0]), [a1] "r"(a[1]), [a2] "r"(a[2]), [a3] "r"(a[3])
                     : STREAMPI_HBLOCK_CLOBBERS);
}
#endif

/* streampi_hmul16 of the same pixels of two rows, from their 16 loaded bytes and the pair's mask.
 * GCC 12 copies each accumulator once before its tied multiply-add (4 extra instructions a step
 * of the hottest loop); the same instructions written out keep them in place. */
static inline void streampi_hpair16(uint8x16_t tp, uint8x16_t tq, uint8x16_t mk, uint8x16_t whi, uint8x16_t wlo,
                                    int16x8_t *hp, int16x8_t *hq)
{
#if defined(__GNUC__)
    uint16x8_t sp, lp, sq, lq;
    __asm__("tbl %[tp].16b, {%[tp].16b}, %[mk].16b\n\t"
            "tbl %[tq].16b, {%[tq].16b}, %[mk].16b\n\t"
            "umull %[sp].8h, %[tp].8b, %[whi].8b\n\t"
            "umull %[lp].8h, %[tp].8b, %[wlo].8b\n\t"
            "umull %[sq].8h, %[tq].8b, %[whi].8b\n\t"
            "umull %[lq].8h, %[tq].8b, %[wlo].8b\n\t"
            "umlal2 %[sp].8h, %[tp].16b, %[whi].16b\n\t"
            "umlal2 %[lp].8h, %[tp].16b, %[wlo].16b\n\t"
            "umlal2 %[sq].8h, %[tq].16b, %[whi].16b\n\t"
            "umlal2 %[lq].8h, %[tq].16b, %[wlo].16b\n\t"
            "usra %[sp].8h, %[lp].8h, 4\n\t"
            "usra %[sq].8h, %[lq].8h, 4"
            : [tp] "+w"(tp), [tq] "+w"(tq), [sp] "=&w"(sp), [lp] "=&w"(lp), [sq] "=&w"(sq), [lq] "=&w"(lq)
            : [mk] "w"(mk), [whi] "w"(whi), [wlo] "w"(wlo));
    *hp = vreinterpretq_s16_u16(sp);
    *hq = vreinterpretq_s16_u16(sq);
#else
    *hp = streampi_hmul16(vqtbl1q_u8(tp, mk), whi, wlo);
    *hq = streampi_hmul16(vqtbl1q_u8(tq, mk), whi, wlo);
#endif
}

/* Pixels [0, n) of rows p and q (q may be NULL) into h and g, 3 int16 a pixel, two pixels a step:
 * pixels [0, n16) with one 16-byte load for both (streampi_hmask's masks; blocks of 8 first),
 * the rest with an 8-byte load each (a last odd pixel alone). A step stores 8 int16: the last 2 land on the next pixel (written next, or
 * later by the caller's scalar loop) or in the row's slack. */
static inline int streampi_hrow_rgb(const uint8_t *p, const uint8_t *q, int ps, int o0, int o1, int o2, int n,
                                    int n16, int dw, const int *xofs, const uint8_t *wtab, int16_t *h, int16_t *g)
{
    const uint8_t *w = wtab;
    const int *xo = xofs, *end = xofs + n16;
#if STREAMPI_HBLOCK
    {
        const uint8_t *wb = wtab + STREAMPI_WTAB_PAIRS(dw);
        const int *bend = xofs + (n16 & ~7);
        for (; xo < bend; xo += 8, wb += 144, w += 192, h += 24) {
            const int64_t a[4] = {xo[0], xo[2], xo[4], xo[6]};
            if (q) {
                streampi_hblock2(p, q, a, wb, h, g);
                g += 24;
            } else {
                streampi_hblock1(p, a, wb, h);
            }
        }
    }
#endif
    if (q) {
        for (; xo < end; xo += 2, w += 48, h += 6, g += 6) {
            const int64_t a = xo[0];
            const uint8x16_t whi = vld1q_u8(w), wlo = vld1q_u8(w + 16), mk = vld1q_u8(w + 32);
            int16x8_t hp, hq;
            streampi_hpair16(vld1q_u8(p + a), vld1q_u8(q + a), mk, whi, wlo, &hp, &hq);
            vst1q_s16(h, hp);
            vst1q_s16(g, hq);
        }
    } else {
        for (; xo < end; xo += 2, w += 48, h += 6) {
            const uint8x16_t tp = vqtbl1q_u8(vld1q_u8(p + xo[0]), vld1q_u8(w + 32));
            vst1q_s16(h, streampi_hmul16(tp, vld1q_u8(w), vld1q_u8(w + 16)));
        }
    }
    int x = (int)(xo - xofs);
    if (x >= n)
        return x;
    /* per 2 pixels (16 loaded bytes, 8 a pixel): tap 0 of each pixel's channels, then tap 1 */
    const uint8_t t0[8] = {(uint8_t)o0, (uint8_t)o1, (uint8_t)o2, (uint8_t)(8 + o0), (uint8_t)(8 + o1),
                           (uint8_t)(8 + o2), 255, 255};
    const uint8_t t1[8] = {(uint8_t)(ps + o0), (uint8_t)(ps + o1), (uint8_t)(ps + o2), (uint8_t)(8 + ps + o0),
                           (uint8_t)(8 + ps + o1), (uint8_t)(8 + ps + o2), 255, 255};
    const uint8x8_t m0 = vld1_u8(t0), m1 = vld1_u8(t1);
    for (; x + 2 <= n; x += 2, h += 6) {
        const int64_t a = xofs[x], b = xofs[x + 1];
        const uint8x8x4_t wt = vld1_u8_x4(wtab + 24 * x);
        const uint8x16_t ab = vcombine_u8(vld1_u8(p + a), vld1_u8(p + b));
        vst1q_s16(h, streampi_hmul2(vqtbl1_u8(ab, m0), vqtbl1_u8(ab, m1), wt));
        if (q) {
            const uint8x16_t cd = vcombine_u8(vld1_u8(q + a), vld1_u8(q + b));
            vst1q_s16(g, streampi_hmul2(vqtbl1_u8(cd, m0), vqtbl1_u8(cd, m1), wt));
            g += 6;
        }
    }
    if (x < n) {  /* a last pixel alone (x even: the first of its pair's weights; the rest weigh 0) */
        const uint8x8x4_t wt = vld1_u8_x4(wtab + 24 * x);
        const uint8x16_t ab = vcombine_u8(vld1_u8(p + xofs[x]), vdup_n_u8(0));
        vst1q_s16(h, streampi_hmul2(vqtbl1_u8(ab, m0), vqtbl1_u8(ab, m1), wt));
        if (q) {
            const uint8x16_t cd = vcombine_u8(vld1_u8(q + xofs[x]), vdup_n_u8(0));
            vst1q_s16(g, streampi_hmul2(vqtbl1_u8(cd, m0), vqtbl1_u8(cd, m1), wt));
        }
        x++;
    }
    return x;
}

/* (a*w0 >> 16) + (b*w1 >> 16) + 2 >> 2 of 8 int16, saturated to uint8. a, b >= 0 (horizontal
 * sums) and w0, w1 in [0, 2048], so vqdmulh's (2*a*w) >> 16 never saturates, and its >> 1 is
 * (a*w) >> 16 exactly (floor of a floor); vqrshrun adds the 2, shifts by 2 and saturates. */
static inline int16x8_t streampi_vsum(int16x8_t a, int16x8_t b, int16x8_t w0, int16x8_t w1)
{
    return vsraq_n_s16(vshrq_n_s16(vqdmulhq_s16(a, w0), 1), vqdmulhq_s16(b, w1), 1);
}

/* 16 bytes of the vertical pass from 16 int16 of each row */
static inline uint8x16_t streampi_v16(const int16_t *h0, const int16_t *h1, int16x8_t w0, int16x8_t w1)
{
    const int16x8x2_t a = vld1q_s16_x2(h0), b = vld1q_s16_x2(h1);
    return vqrshrun_high_n_s16(vqrshrun_n_s16(streampi_vsum(a.val[0], b.val[0], w0, w1), 2),
                               streampi_vsum(a.val[1], b.val[1], w0, w1), 2);
}

/* The rows are compact (c int16 a pixel), so both channel counts are one loop over c*dw values,
 * its last 16 done again when they do not fill a step (same values). */
static inline int streampi_vrow(const int16_t *h0, const int16_t *h1, int b0, int b1, int c, int dw, uint8_t *row)
{
    const int16x8_t w0 = vdupq_n_s16((int16_t)b0), w1 = vdupq_n_s16((int16_t)b1);
    const int n = c * dw;
    int i;
    if (n < 16)
        return 0;
    for (i = 0; i + 16 <= n; i += 16)
        vst1q_u8(row + i, streampi_v16(h0 + i, h1 + i, w0, w1));
    if (i < n)
        vst1q_u8(row + n - 16, streampi_v16(h0 + n - 16, h1 + n - 16, w0, w1));
    return dw;
}

/* 16 bytes through one 256-entry table held in four 64-byte quads (tbl/tbx: index 64 and up
 * leaves a byte as it is, so each quad fills its quarter after subtracting 64 per step) */
#define STREAMPI_LUT16(x, t0, t1, t2, t3)                                                                 \
    vqtbx4q_u8(vqtbx4q_u8(vqtbx4q_u8(vqtbl4q_u8(t0, x), t1, vsubq_u8(x, vdupq_n_u8(64))), t2,              \
                          vsubq_u8(x, vdupq_n_u8(128))), t3, vsubq_u8(x, vdupq_n_u8(192)))

/* One table for every byte (c == 1 or same_tables), loaded into registers once per call (the
 * stores to out may alias it as far as the compiler knows), or three de-interleaved (vld3/vst3). */
static inline int streampi_lut8(const uint8_t *row, int n, int c, const uint8_t *lut, int same_tables, uint8_t *out)
{
    int i;
    if (c == 1 || same_tables) {
        if (n < 16)
            return 0;
        const uint8x16x4_t t0 = vld1q_u8_x4(lut), t1 = vld1q_u8_x4(lut + 64);
        const uint8x16x4_t t2 = vld1q_u8_x4(lut + 128), t3 = vld1q_u8_x4(lut + 192);
        for (i = 0; i + 16 <= n; i += 16) {
            const uint8x16_t x = vld1q_u8(row + i);
            vst1q_u8(out + i, STREAMPI_LUT16(x, t0, t1, t2, t3));
        }
        if (i < n) {  /* the last 16 bytes again: same values, nothing past n */
            const uint8x16_t x = vld1q_u8(row + n - 16);
            vst1q_u8(out + n - 16, STREAMPI_LUT16(x, t0, t1, t2, t3));
        }
        return n;
    }
    if (c != 3 || n < 48)
        return 0;
    for (i = 0; i + 48 <= n || i < n; i += 48) {
        const int at = i + 48 <= n ? i : n - 48;  /* the last 48 bytes again (n is a multiple of 3) */
        uint8x16x3_t v = vld3q_u8(row + at);
        for (int k = 0; k < 3; k++) {
            const uint8_t *t = lut + 256 * k;
            const uint8x16_t x = v.val[k];
            v.val[k] = STREAMPI_LUT16(x, vld1q_u8_x4(t), vld1q_u8_x4(t + 64), vld1q_u8_x4(t + 128),
                                      vld1q_u8_x4(t + 192));
        }
        vst3q_u8(out + at, v);
    }
    return n;
}


/* The vertical pass and the table in one: 16 values a step straight from the two horizontal rows
 * into the output slot (the rows are compact, c int16 a pixel, and one table serves every byte:
 * c == 1 or same_tables, so a step need not start at a pixel), the table held in registers; the
 * last 16 done again when they do not fill a step (same values). Returns the pixels written (all
 * of them, or 0 when the row has fewer than 16 values). */
#define STREAMPI_VLUT 1

static inline int streampi_vrow_lut(const int16_t *h0, const int16_t *h1, int b0, int b1, int c, int dw,
                                    const uint8_t *lut, uint8_t *out)
{
    const int n = c * dw;
    if (n < 16)
        return 0;
    const int16x8_t w0 = vdupq_n_s16((int16_t)b0), w1 = vdupq_n_s16((int16_t)b1);
    const uint8x16x4_t t0 = vld1q_u8_x4(lut), t1 = vld1q_u8_x4(lut + 64);
    const uint8x16x4_t t2 = vld1q_u8_x4(lut + 128), t3 = vld1q_u8_x4(lut + 192);
    const int16_t *a = h0, *b = h1, *end = h0 + (n & ~15);
    uint8_t *o = out;
    for (; a < end; a += 16, b += 16, o += 16) {
        const uint8x16_t x = streampi_v16(a, b, w0, w1);
        vst1q_u8(o, STREAMPI_LUT16(x, t0, t1, t2, t3));
    }
    if (n & 15) {
        const uint8x16_t x = streampi_v16(h0 + n - 16, h1 + n - 16, w0, w1);
        vst1q_u8(out + n - 16, STREAMPI_LUT16(x, t0, t1, t2, t3));
    }
    return dw;
}

/* The NEON twin of the AVX2 4:2:0 tap pass: the same masks (streampi_yuvprep, one 16-byte tbl
 * table per 2 pixels and plane), the same int32 arithmetic (vmlaq_s32 is an integer multiply-add,
 * exact), saturated by vqmovun/vqmovn, then the byte multiply of streampi_hmul2. */
#define STREAMPI_HROW_YUV 1

/* the 4 taps of 2 pixels (8-byte loads at r + o[0], r + o[1]) as int32, placed by a mask */
static inline int32x4_t streampi_taps2(const uint8_t *r, const int *o, const uint8_t *mask)
{
    return vreinterpretq_s32_u8(vqtbl1q_u8(vcombine_u8(vld1_u8(r + o[0]), vld1_u8(r + o[1])), vld1q_u8(mask)));
}

static inline int streampi_hrow_yuv(const uint8_t *Y, const uint8_t *U, const uint8_t *V, int n, const int *yofs,
                                    const int *cofs, const uint8_t *masks, const uint8_t *wtab, const int *k,
                                    int yoff, int swap, int16_t *h)
{
    /* after the narrowing, bytes 0-3 hold R of the 4 taps (pixel 0 tap 0, tap 1, pixel 1 tap 0,
     * tap 1), 4-7 G, 8-11 B, 12-15 zero; pick each pixel's channels in model order per tap, the
     * two pixels in lanes 0-2 and 3-5 (the pair weights' layout) */
    const uint8_t c0 = swap ? 8 : 0, c2 = swap ? 0 : 8;
    const uint8_t t0[8] = {c0, 4, c2, (uint8_t)(c0 + 2), 6, (uint8_t)(c2 + 2), 12, 12};
    const uint8_t t1[8] = {(uint8_t)(c0 + 1), 5, (uint8_t)(c2 + 1), (uint8_t)(c0 + 3), 7, (uint8_t)(c2 + 3), 12, 12};
    const uint8x8_t m0 = vld1_u8(t0), m1 = vld1_u8(t1);
    const int32x4_t cy = vdupq_n_s32(k[0]), cvr = vdupq_n_s32(k[1]), cvg = vdupq_n_s32(k[2]);
    const int32x4_t cug = vdupq_n_s32(k[3]), cub = vdupq_n_s32(k[4]);
    const int32x4_t half = vdupq_n_s32(1 << 19), off = vdupq_n_s32(yoff), c128 = vdupq_n_s32(128);
    const int32x4_t zero = vdupq_n_s32(0);
    int x = 0;
    for (; x + 2 <= n; x += 2) {
        const uint8_t *m = masks + 96 * (x >> 2) + 16 * ((x >> 1) & 1);
        int32x4_t y = streampi_taps2(Y, yofs + x, m);
        int32x4_t u = vsubq_s32(streampi_taps2(U, cofs + x, m + 32), c128);
        int32x4_t v = vsubq_s32(streampi_taps2(V, cofs + x, m + 64), c128);
        int32x4_t yy = vaddq_s32(vmulq_s32(vmaxq_s32(vsubq_s32(y, off), zero), cy), half);
        int32x4_t rr = vshrq_n_s32(vmlaq_s32(yy, v, cvr), 20);
        int32x4_t gg = vshrq_n_s32(vmlaq_s32(vmlaq_s32(yy, v, cvg), u, cug), 20);
        int32x4_t bb = vshrq_n_s32(vmlaq_s32(yy, u, cub), 20);
        uint8x16_t px = vcombine_u8(vqmovn_u16(vcombine_u16(vqmovun_s32(rr), vqmovun_s32(gg))),
                                    vqmovn_u16(vcombine_u16(vqmovun_s32(bb), vdup_n_u16(0))));
        /* 3 int16 a pixel: the last 2 of the 8 land on the next pixel (written next) or the row's slack */
        vst1q_s16(h + 3 * x, streampi_hmul2(vqtbl1_u8(px, m0), vqtbl1_u8(px, m1), vld1_u8_x4(wtab + 24 * x)));
    }
    return x;
}

#define STREAMPI_SIMD_BUILD "neon"

#else

#define STREAMPI_HROW_READ 8
#define STREAMPI_HROW_VEC 0

static inline void streampi_hprep(const int *a0, const int *a1, int dw, uint8_t *wtab)
{
    (void)a0; (void)a1; (void)dw; (void)wtab;
}

static inline int streampi_hrow_rgb(const uint8_t *p, const uint8_t *q, int ps, int o0, int o1, int o2, int n,
                                    int n16, int dw, const int *xofs, const uint8_t *wtab, int16_t *h, int16_t *g)
{
    (void)p; (void)q; (void)ps; (void)o0; (void)o1; (void)o2; (void)n; (void)n16; (void)dw; (void)xofs; (void)wtab;
    (void)h; (void)g;
    return 0;
}

static inline int streampi_vrow(const int16_t *h0, const int16_t *h1, int b0, int b1, int c, int dw, uint8_t *row)
{
    (void)h0; (void)h1; (void)b0; (void)b1; (void)c; (void)dw; (void)row;
    return 0;
}

static inline int streampi_lut8(const uint8_t *row, int n, int c, const uint8_t *lut, int same_tables, uint8_t *out)
{
    (void)row; (void)n; (void)c; (void)lut; (void)same_tables; (void)out;
    return 0;
}


#define STREAMPI_HROW_YUV 0

static inline int streampi_hrow_yuv(const uint8_t *Y, const uint8_t *U, const uint8_t *V, int n, const int *yofs,
                                    const int *cofs, const uint8_t *masks, const uint8_t *wtab, const int *k,
                                    int yoff, int swap, int16_t *h)
{
    (void)Y; (void)U; (void)V; (void)n; (void)yofs; (void)cofs; (void)masks; (void)wtab; (void)k; (void)yoff;
    (void)swap; (void)h;
    return 0;
}

#define STREAMPI_SIMD_BUILD "baseline"

#endif

/* What the builds above leave out: the 4:2:0 second form (x86 only), the fused vertical pass and
 * table (NEON only), and the 4-lane row layout (every build but NEON). */
#ifndef STREAMPI_HROW_YUV2
#define STREAMPI_HROW_YUV2 0

static inline void streampi_yuvprep2(const int *x0, const int *x1, int cx, int w, int dw, uint8_t *masks, int *yofs,
                                     int *cofs)
{
    (void)x0; (void)x1; (void)cx; (void)w; (void)dw; (void)masks; (void)yofs; (void)cofs;
}

static inline void streampi_uv_interleave(const uint8_t *U, const uint8_t *V, int n, uint8_t *uv)
{
    (void)U; (void)V; (void)n; (void)uv;
}

static inline int streampi_hrow_yuv2(const uint8_t *YA, const uint8_t *YB, const uint8_t *UV, int n, const int *yofs,
                                     const int *cofs, const uint8_t *masks, const uint8_t *wtab, const int *k,
                                     int yoff, int swap, int16_t *ha, int16_t *hb)
{
    (void)YA; (void)YB; (void)UV; (void)n; (void)yofs; (void)cofs; (void)masks; (void)wtab; (void)k; (void)yoff;
    (void)swap; (void)ha; (void)hb;
    return 0;
}

#endif

#ifndef STREAMPI_VLUT
#define STREAMPI_VLUT 0

static inline int streampi_vrow_lut(const int16_t *h0, const int16_t *h1, int b0, int b1, int c, int dw,
                                    const uint8_t *lut, uint8_t *out)
{
    (void)h0; (void)h1; (void)b0; (void)b1; (void)c; (void)dw; (void)lut; (void)out;
    return 0;
}
#endif

#ifndef STREAMPI_HLANES
#define STREAMPI_HLANES 4  /* int16 a pixel of a 3-channel horizontal row: 3 channels and a zero */
#define STREAMPI_WTAB_BYTES(dw) (16 * ((dw) + 3))  /* bytes of streampi_hprep's weight tables */

static inline int streampi_hmask(int ps, int o0, int o1, int o2, const int *xofs, int n, int dw, int row_bytes,
                                 uint8_t *wtab)
{
    (void)ps; (void)o0; (void)o1; (void)o2; (void)xofs; (void)n; (void)dw; (void)row_bytes; (void)wtab;
    return 0;
}
#endif

#endif
