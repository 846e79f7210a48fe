/* gemm_avx2.c — the GEMM micro-kernels for AVX2 + FMA: a 6 x 16 tile of floats, 6 x 8 of
 * doubles (12 accumulators of the 16 ymm registers, 2 for B, 1 for the broadcast). */
#include <immintrin.h>

#define T float
#define V __m256
#define W 8
#define MR 6
#define KC 512
#define LOAD _mm256_loadu_ps
#define STORE _mm256_storeu_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define SET1 _mm256_set1_ps
#define ZERO _mm256_setzero_ps
#define KERNEL kernel_f32
#define DESCRIBE describe_f32
#include "gemm_simd.h"

#define T double
#define V __m256d
#define W 4
#define MR 6
#define KC 256
#define LOAD _mm256_loadu_pd
#define STORE _mm256_storeu_pd
#define FMA _mm256_fmadd_pd
#define ADD _mm256_add_pd
#define SET1 _mm256_set1_pd
#define ZERO _mm256_setzero_pd
#define KERNEL kernel_f64
#define DESCRIBE describe_f64
#include "gemm_simd.h"

tg__gemm_kernel tg__gemm_kernel_avx2(tg_dtype dt)
{
    return dt == TG_F32 ? describe_f32() : describe_f64();
}
