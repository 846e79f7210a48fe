/* gemm_avx512.c — the GEMM micro-kernels for AVX-512F: a 14 x 32 tile of floats, 14 x 16 of
 * doubles (28 accumulators of the 32 zmm registers, 2 for B, 1 for the broadcast). */
#include <immintrin.h>

#define T float
#define V __m512
#define W 16
#define MR 14
#define KC 256
#define LOAD _mm512_loadu_ps
#define STORE _mm512_storeu_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define SET1 _mm512_set1_ps
#define ZERO _mm512_setzero_ps
#define KERNEL kernel_f32
#define DESCRIBE describe_f32
#include "gemm_simd.h"

#define T double
#define V __m512d
#define W 8
#define MR 14
#define KC 128
#define LOAD _mm512_loadu_pd
#define STORE _mm512_storeu_pd
#define FMA _mm512_fmadd_pd
#define ADD _mm512_add_pd
#define SET1 _mm512_set1_pd
#define ZERO _mm512_setzero_pd
#define KERNEL kernel_f64
#define DESCRIBE describe_f64
#include "gemm_simd.h"

tg__gemm_kernel tg__gemm_kernel_avx512(tg_dtype dt)
{
    return dt == TG_F32 ? describe_f32() : describe_f64();
}
