/* vmath_avx2.c — the vector-math kernels for AVX2 + FMA (8 floats, 4 doubles). */
#include <immintrin.h>
#include <sleef.h>

#define ISA avx2
#define WF 8
#define WD 4
#define VF __m256
#define VD __m256d
#define LDF _mm256_loadu_ps
#define STF _mm256_storeu_ps
#define LDD _mm256_loadu_pd
#define STD _mm256_storeu_pd
#define SLEEF_F(name) Sleef_##name##f8_u10
#define SLEEF_D(name) Sleef_##name##d4_u10
#define SQRTF _mm256_sqrt_ps
#define SQRTD _mm256_sqrt_pd
#define ADDF _mm256_add_ps
#define SUBF _mm256_sub_ps
#define DIVF _mm256_div_ps
#define SETF _mm256_set1_ps
#define ADDD _mm256_add_pd
#define SUBD _mm256_sub_pd
#define DIVD _mm256_div_pd
#define SETD _mm256_set1_pd

#include "vmath_simd.h"
