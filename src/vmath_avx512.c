/* vmath_avx512.c — the vector-math kernels for AVX-512F (16 floats, 8 doubles). */
#include <immintrin.h>
#include <sleef.h>

#define ISA avx512
#define WF 16
#define WD 8
#define VF __m512
#define VD __m512d
#define LDF _mm512_loadu_ps
#define STF _mm512_storeu_ps
#define LDD _mm512_loadu_pd
#define STD _mm512_storeu_pd
#define SLEEF_F(name) Sleef_##name##f16_u10
#define SLEEF_D(name) Sleef_##name##d8_u10
#define SQRTF _mm512_sqrt_ps
#define SQRTD _mm512_sqrt_pd
#define ADDF _mm512_add_ps
#define SUBF _mm512_sub_ps
#define DIVF _mm512_div_ps
#define SETF _mm512_set1_ps
#define ADDD _mm512_add_pd
#define SUBD _mm512_sub_pd
#define DIVD _mm512_div_pd
#define SETD _mm512_set1_pd

#include "vmath_simd.h"
