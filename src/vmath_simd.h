/* vmath_simd.h — one SIMD implementation of the vector-math kernels, instantiated once per
 * instruction set by vmath_avx2.c and vmath_avx512.c (each compiled with its own -m flags).
 * Expects: ISA (name suffix), WF/WD (float/double lanes), VF/VD (vector types), LDF/STF/LDD/STD
 * (unaligned load/store), SLEEF_F(name)/SLEEF_D(name) (SLEEF function of that width),
 * SQRTF/SQRTD, and arithmetic ADDF/DIVF/SETF/ADDD/DIVD/SETD. */
#include <string.h>

#include "vmath.h"

#define VM_CAT3(a, b, c) a##b##c
#define VM_NAME(name, type, isa) VM_CAT3(tg__vm_##name##_, type##_, isa)

/* Full vectors, then the tail through a zero-padded block (same code path, same rounding). */
#define VM_DEFINE(name, T, type, W, V, LD, ST, BODY)                                               \
    void VM_NAME(name, type, ISA)(int64_t n, const T *x, T *y)                                     \
    {                                                                                              \
        int64_t i = 0;                                                                             \
        for (; i + W <= n; i += W) {                                                               \
            V v = LD(x + i);                                                                       \
            ST(y + i, BODY);                                                                       \
        }                                                                                          \
        if (i < n) {                                                                               \
            T buf[W];                                                                              \
            memset(buf, 0, sizeof buf);                                                            \
            memcpy(buf, x + i, (size_t)(n - i) * sizeof(T));                                       \
            V v = LD(buf);                                                                         \
            ST(buf, BODY);                                                                         \
            memcpy(y + i, buf, (size_t)(n - i) * sizeof(T));                                       \
        }                                                                                          \
    }

#define VM_BOTH(name, bodyf, bodyd)                                                                \
    VM_DEFINE(name, float, f32, WF, VF, LDF, STF, bodyf)                                           \
    VM_DEFINE(name, double, f64, WD, VD, LDD, STD, bodyd)

VM_BOTH(exp, SLEEF_F(exp)(v), SLEEF_D(exp)(v))
VM_BOTH(log, SLEEF_F(log)(v), SLEEF_D(log)(v))
VM_BOTH(log1p, SLEEF_F(log1p)(v), SLEEF_D(log1p)(v))
VM_BOTH(sqrt, SQRTF(v), SQRTD(v))
VM_BOTH(sin, SLEEF_F(sin)(v), SLEEF_D(sin)(v))
VM_BOTH(cos, SLEEF_F(cos)(v), SLEEF_D(cos)(v))
VM_BOTH(tanh, SLEEF_F(tanh)(v), SLEEF_D(tanh)(v))
/* sigmoid(x) = 1 / (1 + exp(-x)); exp(-x) = inf for x << 0 gives exactly 0. */
VM_BOTH(sigmoid, DIVF(SETF(1.0f), ADDF(SETF(1.0f), SLEEF_F(exp)(SUBF(SETF(0.0f), v)))),
        DIVD(SETD(1.0), ADDD(SETD(1.0), SLEEF_D(exp)(SUBD(SETD(0.0), v)))))
