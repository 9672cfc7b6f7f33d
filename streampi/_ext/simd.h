/* Hand-vectorised pieces of the kernels, used where the compiler cannot vectorise by itself.
 *
 * Each function handles the first n pixels it safely can and returns n; the caller's scalar
 * loop does the rest. Integer arithmetic is identical to the scalar code, so results are
 * bit-for-bit the same (tested: test_simd_and_baseline_builds_agree). Builds without the
 * instruction set get stubs that return 0: the baseline build, which is also what every
 * other architecture gets. x86-64 has an AVX2 build (-mavx2), aarch64 a NEON build
 * (-DSTREAMPI_NEON; NEON itself is part of every aarch64 CPU).
 */
#ifndef STREAMPI_SIMD_H
#define STREAMPI_SIMD_H

#include <stdint.h>

#if defined(__AVX2__)
#include <immintrin.h>

/* Horizontal bilinear pass of two source rows p and q (3 channels at byte offsets o0..o2 in
 * pixels of ps bytes), Q11 weights a0/a1 at source pixels x0/x1, into planar int32 rows h and
 * g (channel k of pixel x at [k * dw + x]). Gathers read 4 bytes at each pixel, so a block runs only while its farthest
 * pixel ends 4 bytes inside the row (row_bytes). */
static inline int streampi_hline2_rgb(const uint8_t *p, const uint8_t *q, int ps, int o0, int o1, int o2,
                                      int dw, const int *x0, const int *x1, const int *a0, const int *a1,
                                      int32_t *h, int32_t *g, int row_bytes)
{
    const __m256i vps = _mm256_set1_epi32(ps);
    const __m256i mask = _mm256_set1_epi32(0xFF);
    const __m128i s0 = _mm_cvtsi32_si128(8 * o0), s1 = _mm_cvtsi32_si128(8 * o1), s2 = _mm_cvtsi32_si128(8 * o2);
    int x = 0;
    for (; x + 8 <= dw; x += 8) {
        if (x1[x + 7] * ps + 4 > row_bytes || x0[x + 7] * ps + 4 > row_bytes)
            break;
        __m256i i0 = _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(x0 + x)), vps);
        __m256i i1 = _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(x1 + x)), vps);
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(a0 + x));
        __m256i w1 = _mm256_loadu_si256((const __m256i *)(a1 + x));
        __m256i P0 = _mm256_i32gather_epi32((const int *)p, i0, 1);
        __m256i P1 = _mm256_i32gather_epi32((const int *)p, i1, 1);
        __m256i Q0 = _mm256_i32gather_epi32((const int *)q, i0, 1);
        __m256i Q1 = _mm256_i32gather_epi32((const int *)q, i1, 1);
#define STREAMPI_CH(V, s) _mm256_and_si256(_mm256_srl_epi32((V), (s)), mask)
#define STREAMPI_MIX(A, B, s) _mm256_add_epi32(_mm256_mullo_epi32(STREAMPI_CH(A, s), w0), \
                                                _mm256_mullo_epi32(STREAMPI_CH(B, s), w1))
        _mm256_storeu_si256((__m256i *)(h + x), STREAMPI_MIX(P0, P1, s0));
        _mm256_storeu_si256((__m256i *)(h + dw + x), STREAMPI_MIX(P0, P1, s1));
        _mm256_storeu_si256((__m256i *)(h + 2 * dw + x), STREAMPI_MIX(P0, P1, s2));
        _mm256_storeu_si256((__m256i *)(g + x), STREAMPI_MIX(Q0, Q1, s0));
        _mm256_storeu_si256((__m256i *)(g + dw + x), STREAMPI_MIX(Q0, Q1, s1));
        _mm256_storeu_si256((__m256i *)(g + 2 * dw + x), STREAMPI_MIX(Q0, Q1, s2));
#undef STREAMPI_MIX
#undef STREAMPI_CH
    }
    return x;
}

#define STREAMPI_SIMD_BUILD "avx2"

#elif defined(STREAMPI_NEON) && defined(__ARM_NEON)
#include <arm_neon.h>
#include <string.h>

/* Four 32-bit little-endian words, one at each of base + idx[k] * ps (NEON has no gather:
 * lane loads instead). */
static inline int32x4_t streampi_ld4(const uint8_t *base, const int *idx, int ps)
{
    int32_t t[4];
    memcpy(&t[0], base + idx[0] * ps, 4);
    memcpy(&t[1], base + idx[1] * ps, 4);
    memcpy(&t[2], base + idx[2] * ps, 4);
    memcpy(&t[3], base + idx[3] * ps, 4);
    return vld1q_s32(t);
}

/* The NEON twin of the AVX2 function above: same blocks (of 4 pixels), same bounds rule,
 * same integer arithmetic (channel byte times Q11 weight, summed in 32 bits), same bytes. */
static inline int streampi_hline2_rgb(const uint8_t *p, const uint8_t *q, int ps, int o0, int o1, int o2,
                                      int dw, const int *x0, const int *x1, const int *a0, const int *a1,
                                      int32_t *h, int32_t *g, int row_bytes)
{
    const int32x4_t mask = vdupq_n_s32(0xFF);
    const int32x4_t s0 = vdupq_n_s32(-8 * o0), s1 = vdupq_n_s32(-8 * o1), s2 = vdupq_n_s32(-8 * o2);
    int x = 0;
    for (; x + 4 <= dw; x += 4) {
        if (x1[x + 3] * ps + 4 > row_bytes || x0[x + 3] * ps + 4 > row_bytes)
            break;
        int32x4_t w0 = vld1q_s32(a0 + x), w1 = vld1q_s32(a1 + x);
        int32x4_t P0 = streampi_ld4(p, x0 + x, ps), P1 = streampi_ld4(p, x1 + x, ps);
        int32x4_t Q0 = streampi_ld4(q, x0 + x, ps), Q1 = streampi_ld4(q, x1 + x, ps);
#define STREAMPI_CH(V, s) vandq_s32(vreinterpretq_s32_u32(vshlq_u32(vreinterpretq_u32_s32(V), (s))), mask)
#define STREAMPI_MIX(A, B, s) vmlaq_s32(vmulq_s32(STREAMPI_CH(A, s), w0), STREAMPI_CH(B, s), w1)
        vst1q_s32(h + x, STREAMPI_MIX(P0, P1, s0));
        vst1q_s32(h + dw + x, STREAMPI_MIX(P0, P1, s1));
        vst1q_s32(h + 2 * dw + x, STREAMPI_MIX(P0, P1, s2));
        vst1q_s32(g + x, STREAMPI_MIX(Q0, Q1, s0));
        vst1q_s32(g + dw + x, STREAMPI_MIX(Q0, Q1, s1));
        vst1q_s32(g + 2 * dw + x, STREAMPI_MIX(Q0, Q1, s2));
#undef STREAMPI_MIX
#undef STREAMPI_CH
    }
    return x;
}
#define STREAMPI_SIMD_BUILD "neon"

#else

static inline int streampi_hline2_rgb(const uint8_t *p, const uint8_t *q, int ps, int o0, int o1, int o2,
                                      int dw, const int *x0, const int *x1, const int *a0, const int *a1,
                                      int32_t *h, int32_t *g, int row_bytes)
{
    (void)p; (void)q; (void)ps; (void)o0; (void)o1; (void)o2; (void)dw; (void)x0; (void)x1;
    (void)a0; (void)a1; (void)h; (void)g; (void)row_bytes;
    return 0;
}
#define STREAMPI_SIMD_BUILD "baseline"

#endif
#endif
