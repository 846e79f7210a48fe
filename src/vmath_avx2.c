/* vmath_avx2.c — the vector-math kernels for AVX2 + FMA (8 floats, 4 doubles): vmath_simd.h
 * over AVX2 intrinsics, SLEEF's AVX2 functions called directly. */
#include <immintrin.h>
#include <math.h>
#include <sleef.h>

#include "vmath_impl.h"

/* p 2^k for integral k in [-252, 254]: two exact power-of-two factors (AVX2 has no scalef),
 * so the product rounds once. */
static inline __m256 ldexp_f32(__m256 p, __m256 k)
{
    __m256i ki = _mm256_cvtps_epi32(k);
    __m256i k1 = _mm256_srai_epi32(ki, 1), k2 = _mm256_sub_epi32(ki, k1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

static inline double hsum_pd(__m256d a)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* ---- f32 ---- */
#define T float
#define TS f32
#define VM_F32 1
#define W 8
#define V __m256
#define M __m256
#define TM __m256i
#define ACCV __m256d
#define LD _mm256_loadu_ps
#define ST _mm256_storeu_ps
#define TMASK(r)                                                                                   \
    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(r)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define LDT(p, m) _mm256_maskload_ps(p, m)
#define LDTF(p, m, f) _mm256_blendv_ps(f, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m))
#define STT(p, m, v) _mm256_maskstore_ps(p, m, v)
#define SET _mm256_set1_ps
#define ADD _mm256_add_ps
#define SUB _mm256_sub_ps
#define MUL _mm256_mul_ps
#define DIV _mm256_div_ps
#define FMA _mm256_fmadd_ps
#define FNMA _mm256_fnmadd_ps
#define MAX _mm256_max_ps
#define MIN _mm256_min_ps
#define ABS(v) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v)
#define SQRT _mm256_sqrt_ps
#define ROUND(v) _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define COPYSIGN(mag, sgn)                                                                         \
    _mm256_or_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), mag),                                     \
                 _mm256_and_ps(_mm256_set1_ps(-0.0f), sgn))
#define CMPLT(a, b) _mm256_cmp_ps(a, b, _CMP_LT_OQ)
#define CMPGT(a, b) _mm256_cmp_ps(a, b, _CMP_GT_OQ)
#define CMPUNORD(a, b) _mm256_cmp_ps(a, b, _CMP_UNORD_Q)
#define SEL(m, f, t) _mm256_blendv_ps(f, t, m)
#define MOR _mm256_or_ps
#define MNONE _mm256_setzero_ps()
#define MANY(m) (_mm256_movemask_ps(m) != 0)
#define LDEXP ldexp_f32
#define SLEEF(fn) Sleef_##fn##f8_u10avx2 /* Sleef_expf8_u10avx2, ... */
#define ACC_ZERO _mm256_setzero_pd()
#define ACC_PLUS _mm256_add_pd
#define F32_LO(v) _mm256_cvtps_pd(_mm256_castps256_ps128(v))
#define F32_HI(v) _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))
#define ACC_HSUM hsum_pd
#define ACC_LD _mm256_loadu_pd
#define ACC_ST _mm256_storeu_pd
#define ACC_N 4
#include "vmath_simd.h"

/* ---- f64 ---- */
#define T double
#define TS f64
#define VM_F32 0
#define W 4
#define V __m256d
#define M __m256d
#define TM __m256i
#define ACCV __m256d
#define LD _mm256_loadu_pd
#define ST _mm256_storeu_pd
#define TMASK(r) _mm256_cmpgt_epi64(_mm256_set1_epi64x(r), _mm256_setr_epi64x(0, 1, 2, 3))
#define LDT(p, m) _mm256_maskload_pd(p, m)
#define LDTF(p, m, f) _mm256_blendv_pd(f, _mm256_maskload_pd(p, m), _mm256_castsi256_pd(m))
#define STT(p, m, v) _mm256_maskstore_pd(p, m, v)
#define SET _mm256_set1_pd
#define ADD _mm256_add_pd
#define SUB _mm256_sub_pd
#define MUL _mm256_mul_pd
#define DIV _mm256_div_pd
#define FMA _mm256_fmadd_pd
#define FNMA _mm256_fnmadd_pd
#define MAX _mm256_max_pd
#define MIN _mm256_min_pd
#define ABS(v) _mm256_andnot_pd(_mm256_set1_pd(-0.0), v)
#define SQRT _mm256_sqrt_pd
#define ROUND(v) _mm256_round_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define COPYSIGN(mag, sgn)                                                                         \
    _mm256_or_pd(_mm256_andnot_pd(_mm256_set1_pd(-0.0), mag),                                      \
                 _mm256_and_pd(_mm256_set1_pd(-0.0), sgn))
#define CMPLT(a, b) _mm256_cmp_pd(a, b, _CMP_LT_OQ)
#define CMPGT(a, b) _mm256_cmp_pd(a, b, _CMP_GT_OQ)
#define CMPUNORD(a, b) _mm256_cmp_pd(a, b, _CMP_UNORD_Q)
#define SEL(m, f, t) _mm256_blendv_pd(f, t, m)
#define MOR _mm256_or_pd
#define MNONE _mm256_setzero_pd()
#define MANY(m) (_mm256_movemask_pd(m) != 0)
#define SLEEF(fn) Sleef_##fn##d4_u10avx2 /* Sleef_expd4_u10avx2, ... */
#define ACC_ZERO _mm256_setzero_pd()
#define ACC_PLUS _mm256_add_pd
#define ACC_ADD(a0, a1, v) ((void)(a1), a0 = _mm256_add_pd(a0, v))
#define ACC_HSUM hsum_pd
#define ACC_ROW(p, v) _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p), v))
#define ACC_ROW4(p, a, b, c, d)                                                                    \
    _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p),                                          \
                                      _mm256_add_pd(_mm256_add_pd(a, b), _mm256_add_pd(c, d))))
#include "vmath_simd.h"

const tg__vm_kernels tg__vm_kernels_avx2 = {
    .map_f32 = VM_TABLE_MAP(f32),
    .map_f64 = VM_TABLE_MAP(f64),
    .red_f32 = VM_TABLE_RED(f32),
    .red_f64 = VM_TABLE_RED(f64),
    .rows_f32 = vm_add_rows_f32,
    .rows_f64 = vm_add_rows_f64,
};
