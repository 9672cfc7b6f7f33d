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
 *    that sum >> 4 (all the vertical pass uses; at most 32655, an int16), 4 int16 per pixel
 *    (3 channels and a zero).
 *  - streampi_hrow_yuv: the same horizontal pass for a 4:2:0 row (I420, NV12), read in place:
 *    only the two taps of each output pixel are converted to RGB (BT.601, the scalar code's
 *    int32 arithmetic), straight into the multiply; the baseline build converts whole rows.
 *  - streampi_vrow: vertical pass of two such rows into uint8, with OpenCV's vector rounding
 *    ((h0*b0 >> 16) + (h1*b1 >> 16) + 2) >> 2, written compact (c bytes per pixel). It may
 *    write up to 16 bytes past the c*dw it returns (the caller's row has that slack).
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
                                    const int *xofs, const uint8_t *wtab, int16_t *h, int16_t *g)
{
    const char z = (char)0x80;
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

#define STREAMPI_SIMD_BUILD "avx2"

#elif defined(STREAMPI_NEON) && defined(__ARM_NEON)
#include <arm_neon.h>

/* The NEON twin of the AVX2 horizontal pass: same pixels, same integer arithmetic (channel byte
 * times Q11 weight, summed in 32 bits, >> 4), same bytes. Blocks of 2 pixels (one 8-byte load
 * each); tbl picks each tap's channels (index 16 reads as 0). */
#define STREAMPI_HROW_READ 8
#define STREAMPI_HROW_VEC 1

static inline int16x8_t streampi_hmix(const uint8_t *r, int a, int b, uint8x8_t m0, uint8x8_t m1,
                                      uint16x8_t w0, uint16x8_t w1)
{
    uint8x16_t ab = vcombine_u8(vld1_u8(r + a), vld1_u8(r + b));
    uint16x8_t tap0 = vmovl_u8(vqtbl1_u8(ab, m0)), tap1 = vmovl_u8(vqtbl1_u8(ab, m1));
    uint32x4_t lo = vmlal_u16(vmull_u16(vget_low_u16(tap0), vget_low_u16(w0)), vget_low_u16(tap1), vget_low_u16(w1));
    uint32x4_t hi = vmlal_high_u16(vmull_high_u16(tap0, w0), tap1, w1);
    return vreinterpretq_s16_u16(vshrn_high_n_u32(vshrn_n_u32(lo, 4), hi, 4));
}

/* The weights as w0 | w1 << 16, one int32 a pixel (wtab holds 16 * (dw + 3) bytes). */
static inline void streampi_hprep(const int *a0, const int *a1, int dw, uint8_t *wtab)
{
    int32_t *wpair = (int32_t *)wtab;
    for (int x = 0; x < dw; x++)
        wpair[x] = a0[x] | (a1[x] << 16);
}

static inline int streampi_hrow_rgb(const uint8_t *p, const uint8_t *q, int ps, int o0, int o1, int o2, int n,
                                    const int *xofs, const uint8_t *wtab, int16_t *h, int16_t *g)
{
    const int32_t *wpair = (const int32_t *)wtab;
    const uint8_t t0[8] = {(uint8_t)o0, (uint8_t)o1, (uint8_t)o2, 16, (uint8_t)(8 + o0), (uint8_t)(8 + o1),
                           (uint8_t)(8 + o2), 16};
    const uint8_t t1[8] = {(uint8_t)(ps + o0), (uint8_t)(ps + o1), (uint8_t)(ps + o2), 16, (uint8_t)(8 + ps + o0),
                           (uint8_t)(8 + ps + o1), (uint8_t)(8 + ps + o2), 16};
    const uint8x8_t m0 = vld1_u8(t0), m1 = vld1_u8(t1);
    int x = 0;
    for (; x + 2 <= n; x += 2) {
        /* wpair as u16: w0, w1 of pixel 0, then of pixel 1 */
        uint16x4_t w = vreinterpret_u16_s32(vld1_s32(wpair + x));
        uint16x8_t w0 = vcombine_u16(vdup_lane_u16(w, 0), vdup_lane_u16(w, 2));
        uint16x8_t w1 = vcombine_u16(vdup_lane_u16(w, 1), vdup_lane_u16(w, 3));
        vst1q_s16(h + 4 * x, streampi_hmix(p, xofs[x], xofs[x + 1], m0, m1, w0, w1));
        if (q)
            vst1q_s16(g + 4 * x, streampi_hmix(q, xofs[x], xofs[x + 1], m0, m1, w0, w1));
    }
    return x;
}

/* (a*w0 >> 16) + (b*w1 >> 16) + 2 >> 2 of 8 int16, saturated to uint8 */
static inline uint8x8_t streampi_vmix(int16x8_t a, int16x8_t b, int16x4_t w0, int16x4_t w1)
{
    int16x8_t s0 = vcombine_s16(vshrn_n_s32(vmull_s16(vget_low_s16(a), w0), 16),
                                vshrn_n_s32(vmull_s16(vget_high_s16(a), w0), 16));
    int16x8_t s1 = vcombine_s16(vshrn_n_s32(vmull_s16(vget_low_s16(b), w1), 16),
                                vshrn_n_s32(vmull_s16(vget_high_s16(b), w1), 16));
    return vqmovun_s16(vshrq_n_s16(vaddq_s16(vaddq_s16(s0, s1), vdupq_n_s16(2)), 2));
}

static inline int streampi_vrow(const int16_t *h0, const int16_t *h1, int b0, int b1, int c, int dw, uint8_t *row)
{
    const int16x4_t w0 = vdup_n_s16((int16_t)b0), w1 = vdup_n_s16((int16_t)b1);
    int x = 0;
    if (c == 3) {
        for (; x + 4 <= dw; x += 4) {  /* 4 pixels of 4 int16 → 12 bytes (and 4 to be overwritten) */
            uint8x8_t lo = streampi_vmix(vld1q_s16(h0 + 4 * x), vld1q_s16(h1 + 4 * x), w0, w1);
            uint8x8_t hi = streampi_vmix(vld1q_s16(h0 + 4 * x + 8), vld1q_s16(h1 + 4 * x + 8), w0, w1);
            static const uint8_t drop[16] = {0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 3, 7, 11, 15};
            vst1q_u8(row + 3 * x, vqtbl1q_u8(vcombine_u8(lo, hi), vld1q_u8(drop)));
        }
    } else if (c == 1) {
        for (; x + 8 <= dw; x += 8)
            vst1_u8(row + x, streampi_vmix(vld1q_s16(h0 + x), vld1q_s16(h1 + x), w0, w1));
    }
    return x;
}

/* 16 bytes through one 256-entry table (four 64-entry tbl/tbx lookups) */
static inline uint8x16_t streampi_lut16(uint8x16_t x, const uint8_t *lut)
{
    const uint8x16_t k64 = vdupq_n_u8(64);
    uint8x16_t r = vqtbl4q_u8(vld1q_u8_x4(lut), x);
    x = vsubq_u8(x, k64);
    r = vqtbx4q_u8(r, vld1q_u8_x4(lut + 64), x);
    x = vsubq_u8(x, k64);
    r = vqtbx4q_u8(r, vld1q_u8_x4(lut + 128), x);
    x = vsubq_u8(x, k64);
    return vqtbx4q_u8(r, vld1q_u8_x4(lut + 192), x);
}

/* One table for every byte (c == 1 or same_tables), or three de-interleaved (vld3/vst3). */
static inline int streampi_lut8(const uint8_t *row, int n, int c, const uint8_t *lut, int same_tables, uint8_t *out)
{
    int i;
    if (c == 1 || same_tables) {
        if (n < 16)
            return 0;
        for (i = 0; i + 16 <= n; i += 16)
            vst1q_u8(out + i, streampi_lut16(vld1q_u8(row + i), lut));
        if (i < n)  /* the last 16 bytes again: same values, nothing past n */
            vst1q_u8(out + n - 16, streampi_lut16(vld1q_u8(row + n - 16), lut));
        return n;
    }
    if (c != 3 || n < 48)
        return 0;
    for (i = 0; i + 48 <= n; i += 48) {
        uint8x16x3_t v = vld3q_u8(row + i);
        v.val[0] = streampi_lut16(v.val[0], lut);
        v.val[1] = streampi_lut16(v.val[1], lut + 256);
        v.val[2] = streampi_lut16(v.val[2], lut + 512);
        vst3q_u8(out + i, v);
    }
    if (i < n) {  /* n is a multiple of 3: the last 48 bytes start on a pixel */
        uint8x16x3_t v = vld3q_u8(row + n - 48);
        v.val[0] = streampi_lut16(v.val[0], lut);
        v.val[1] = streampi_lut16(v.val[1], lut + 256);
        v.val[2] = streampi_lut16(v.val[2], lut + 512);
        vst3q_u8(out + n - 48, v);
    }
    return n;
}


/* The NEON twin of the AVX2 4:2:0 tap pass: the same masks (streampi_yuvprep, one 16-byte tbl
 * table per 2 pixels and plane), the same int32 arithmetic (vmlaq_s32 is an integer multiply-add,
 * exact), saturated by vqmovun/vqmovn, then streampi_hmix's widening multiply. */
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
     * tap 1), 4-7 G, 8-11 B, 12-15 zero; pick each pixel's channels in model order per tap */
    const int32_t *wpair = (const int32_t *)wtab;
    const uint8_t c0 = swap ? 8 : 0, c2 = swap ? 0 : 8;
    const uint8_t t0[8] = {c0, 4, c2, 12, (uint8_t)(c0 + 2), 6, (uint8_t)(c2 + 2), 12};
    const uint8_t t1[8] = {(uint8_t)(c0 + 1), 5, (uint8_t)(c2 + 1), 12, (uint8_t)(c0 + 3), 7, (uint8_t)(c2 + 3), 12};
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
        uint16x8_t tap0 = vmovl_u8(vqtbl1_u8(px, m0)), tap1 = vmovl_u8(vqtbl1_u8(px, m1));
        uint16x4_t w = vreinterpret_u16_s32(vld1_s32(wpair + x));
        uint16x8_t w0 = vcombine_u16(vdup_lane_u16(w, 0), vdup_lane_u16(w, 2));
        uint16x8_t w1 = vcombine_u16(vdup_lane_u16(w, 1), vdup_lane_u16(w, 3));
        uint32x4_t lo = vmlal_u16(vmull_u16(vget_low_u16(tap0), vget_low_u16(w0)), vget_low_u16(tap1), vget_low_u16(w1));
        uint32x4_t hi = vmlal_high_u16(vmull_high_u16(tap0, w0), tap1, w1);
        vst1q_s16(h + 4 * x, vreinterpretq_s16_u16(vshrn_high_n_u32(vshrn_n_u32(lo, 4), hi, 4)));
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
                                    const int *xofs, const uint8_t *wtab, int16_t *h, int16_t *g)
{
    (void)p; (void)q; (void)ps; (void)o0; (void)o1; (void)o2; (void)n; (void)xofs; (void)wtab; (void)h; (void)g;
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
#endif
