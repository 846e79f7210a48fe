/* vmath_avx512.c — the vector-math kernels for AVX-512F (16 floats, 8 doubles): vmath_simd.h
 * over AVX-512F intrinsics only (no DQ/BW/VL), SLEEF's AVX-512F functions called directly. */
#include <immintrin.h>
#include <math.h>
#include <sleef.h>

#include "vmath_impl.h"

/* ---- f32 ---- */
#define T float
#define TS f32
#define VM_F32 1
#define W 16
#define V __m512
#define M __mmask16
#define TM __mmask16
#define ACCV __m512d
#define LD _mm512_loadu_ps
#define ST _mm512_storeu_ps
#define TMASK(r) ((__mmask16)((1u << (r)) - 1))
#define LDT(p, m) _mm512_maskz_loadu_ps(m, p)
#define LDTF(p, m, f) _mm512_mask_loadu_ps(f, m, p)
#define STT(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define SET _mm512_set1_ps
#define ADD _mm512_add_ps
#define SUB _mm512_sub_ps
#define MUL _mm512_mul_ps
#define DIV _mm512_div_ps
#define FMA _mm512_fmadd_ps
#define FNMA _mm512_fnmadd_ps
#define MAX _mm512_max_ps
#define MIN _mm512_min_ps
#define ABS _mm512_abs_ps
#define SQRT _mm512_sqrt_ps
#define ROUND(v) _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/* Bitwise select (imm 0xd8: mask ? sign : mag) of the sign bit. */
#define COPYSIGN(mag, sgn)                                                                         \
    _mm512_castsi512_ps(_mm512_ternarylogic_epi32(                                                 \
        _mm512_castps_si512(mag), _mm512_castps_si512(sgn), _mm512_set1_epi32(INT32_MIN), 0xd8))
#define CMPLT(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)
#define CMPGT(a, b) _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ)
#define CMPUNORD(a, b) _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q)
#define SEL(m, f, t) _mm512_mask_blend_ps(m, f, t)
#define MOR(a, b) ((__mmask16)((a) | (b)))
#define MNONE ((__mmask16)0)
#define MANY(m) ((m) != 0)
#define LDEXP _mm512_scalef_ps
#define SLEEF(fn) Sleef_##fn##f16_u10avx512f /* Sleef_expf16_u10avx512f, ... */
#define ACC_ZERO _mm512_setzero_pd()
#define ACC_PLUS _mm512_add_pd
#define F32_LO(v) _mm512_cvtps_pd(_mm512_castps512_ps256(v))
#define F32_HI(v) _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
#define ACC_HSUM _mm512_reduce_add_pd
#define ACC_LD _mm512_loadu_pd
#define ACC_ST _mm512_storeu_pd
#define ACC_N 8
#include "vmath_simd.h"

/* ---- f64 ---- */
#define T double
#define TS f64
#define VM_F32 0
#define W 8
#define V __m512d
#define M __mmask8
#define TM __mmask8
#define ACCV __m512d
#define LD _mm512_loadu_pd
#define ST _mm512_storeu_pd
#define TMASK(r) ((__mmask8)((1u << (r)) - 1))
#define LDT(p, m) _mm512_maskz_loadu_pd(m, p)
#define LDTF(p, m, f) _mm512_mask_loadu_pd(f, m, p)
#define STT(p, m, v) _mm512_mask_storeu_pd(p, m, v)
#define SET _mm512_set1_pd
#define ADD _mm512_add_pd
#define SUB _mm512_sub_pd
#define MUL _mm512_mul_pd
#define DIV _mm512_div_pd
#define FMA _mm512_fmadd_pd
#define FNMA _mm512_fnmadd_pd
#define MAX _mm512_max_pd
#define MIN _mm512_min_pd
#define ABS _mm512_abs_pd
#define SQRT _mm512_sqrt_pd
#define ROUND(v) _mm512_roundscale_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define COPYSIGN(mag, sgn)                                                                         \
    _mm512_castsi512_pd(_mm512_ternarylogic_epi64(                                                 \
        _mm512_castpd_si512(mag), _mm512_castpd_si512(sgn), _mm512_set1_epi64(INT64_MIN), 0xd8))
#define CMPLT(a, b) _mm512_cmp_pd_mask(a, b, _CMP_LT_OQ)
#define CMPGT(a, b) _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ)
#define CMPUNORD(a, b) _mm512_cmp_pd_mask(a, b, _CMP_UNORD_Q)
#define SEL(m, f, t) _mm512_mask_blend_pd(m, f, t)
#define MOR(a, b) ((__mmask8)((a) | (b)))
#define MNONE ((__mmask8)0)
#define MANY(m) ((m) != 0)
#define LDEXP _mm512_scalef_pd
#define SLEEF(fn) Sleef_##fn##d8_u10avx512f /* Sleef_expd8_u10avx512f, ... */
#define ACC_ZERO _mm512_setzero_pd()
#define ACC_PLUS _mm512_add_pd
#define ACC_ADD(a0, a1, v) ((void)(a1), a0 = _mm512_add_pd(a0, v))
#define ACC_HSUM _mm512_reduce_add_pd
#define ACC_ROW(p, v) _mm512_storeu_pd(p, _mm512_add_pd(_mm512_loadu_pd(p), v))
#define ACC_ROW4(p, a, b, c, d)                                                                    \
    _mm512_storeu_pd(p, _mm512_add_pd(_mm512_loadu_pd(p),                                          \
                                      _mm512_add_pd(_mm512_add_pd(a, b), _mm512_add_pd(c, d))))
#include "vmath_simd.h"

const tg__vm_kernels tg__vm_kernels_avx512 = {
    .map_f32 = VM_TABLE_MAP(f32),
    .map_f64 = VM_TABLE_MAP(f64),
    .red_f32 = VM_TABLE_RED(f32),
    .red_f64 = VM_TABLE_RED(f64),
    .rows_f32 = vm_add_rows_f32,
    .rows_f64 = vm_add_rows_f64,
};
