/* vmath.c — vector math dispatch: picks the AVX-512F, AVX2+FMA or portable scalar kernels by
 * the CPU's features at run time, so one binary runs on any x86-64. */
#include "vmath.h"

#include <math.h>

enum { ISA_SCALAR, ISA_AVX2, ISA_AVX512 };

static int isa(void)
{
#ifdef TG_VMATH_X86
    if (__builtin_cpu_supports("avx512f"))
        return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return ISA_AVX2;
#endif
    return ISA_SCALAR;
}

const char *tg__vm_isa(void)
{
    static const char *const names[] = {"scalar", "avx2", "avx512f"};
    return names[isa()];
}

void tg__vm_add_into(tg_dtype dt, int64_t n, const void *x, void *y)
{
    if (dt == TG_F32) {
        const float *a = x;
        float *b = y;
        for (int64_t i = 0; i < n; i++)
            b[i] += a[i];
    } else {
        const double *a = x;
        double *b = y;
        for (int64_t i = 0; i < n; i++)
            b[i] += a[i];
    }
}

static float sigmoidf_c(float x) { return 1.0f / (1.0f + expf(-x)); }
static double sigmoid_c(double x) { return 1.0 / (1.0 + exp(-x)); }

#define DECLARE(name, isa)                                                                         \
    void tg__vm_##name##_f32_##isa(int64_t n, const float *x, float *y);                           \
    void tg__vm_##name##_f64_##isa(int64_t n, const double *x, double *y);

#ifdef TG_VMATH_X86
#define DISPATCH_SIMD(name)                                                                        \
    DECLARE(name, avx512)                                                                          \
    DECLARE(name, avx2)                                                                            \
    static bool simd_##name(tg_dtype dt, int64_t n, const void *x, void *y)                        \
    {                                                                                              \
        switch (isa()) {                                                                           \
        case ISA_AVX512:                                                                           \
            if (dt == TG_F32)                                                                      \
                tg__vm_##name##_f32_avx512(n, x, y);                                               \
            else                                                                                   \
                tg__vm_##name##_f64_avx512(n, x, y);                                               \
            return true;                                                                           \
        case ISA_AVX2:                                                                             \
            if (dt == TG_F32)                                                                      \
                tg__vm_##name##_f32_avx2(n, x, y);                                                 \
            else                                                                                   \
                tg__vm_##name##_f64_avx2(n, x, y);                                                 \
            return true;                                                                           \
        }                                                                                          \
        return false;                                                                              \
    }
#else
#define DISPATCH_SIMD(name)                                                                        \
    static bool simd_##name(tg_dtype dt, int64_t n, const void *x, void *y)                        \
    {                                                                                              \
        (void)dt, (void)n, (void)x, (void)y;                                                       \
        return false;                                                                              \
    }
#endif

#define VM_FUNC(name, cf, cd)                                                                      \
    DISPATCH_SIMD(name)                                                                            \
    void tg__vm_##name(tg_dtype dt, int64_t n, const void *x, void *y)                             \
    {                                                                                              \
        if (simd_##name(dt, n, x, y))                                                              \
            return;                                                                                \
        if (dt == TG_F32)                                                                          \
            for (int64_t i = 0; i < n; i++)                                                        \
                ((float *)y)[i] = cf(((const float *)x)[i]);                                       \
        else                                                                                       \
            for (int64_t i = 0; i < n; i++)                                                        \
                ((double *)y)[i] = cd(((const double *)x)[i]);                                     \
    }

VM_FUNC(exp, expf, exp)
VM_FUNC(log, logf, log)
VM_FUNC(log1p, log1pf, log1p)
VM_FUNC(sqrt, sqrtf, sqrt)
VM_FUNC(sin, sinf, sin)
VM_FUNC(cos, cosf, cos)
VM_FUNC(tanh, tanhf, tanh)
VM_FUNC(sigmoid, sigmoidf_c, sigmoid_c)
