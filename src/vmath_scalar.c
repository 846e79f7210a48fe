/* vmath_scalar.c — the portable kernels: vmath_simd.h with one lane of plain C and libm, for
 * CPUs without AVX2+FMA and for non-x86 builds. The f32 fused kernels use the same own exp and
 * tanh as the vector sets (fmaf is exact there too), so their results match lane for lane. */
#include <math.h>
#include <stdbool.h>

#include "vmath_impl.h"

/* ---- f32 ---- */
#define T float
#define TS f32
#define VM_F32 1
#define W 1
#define V float
#define M bool
#define TM bool
#define ACCV double
#define LD(p) (*(p))
#define ST(p, v) (*(p) = (v))
#define TMASK(r) ((r) > 0)
#define LDT(p, m) ((void)(m), *(p))
#define LDTF(p, m, f) ((void)(m), (void)(f), *(p))
#define STT(p, m, v) ((void)(m), *(p) = (v))
#define SET(c) ((float)(c))
#define ADD(a, b) ((a) + (b))
#define SUB(a, b) ((a) - (b))
#define MUL(a, b) ((a) * (b))
#define DIV(a, b) ((a) / (b))
#define FMA(a, b, c) fmaf(a, b, c)
#define FNMA(a, b, c) fmaf(-(a), b, c)
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define ABS fabsf
#define SQRT sqrtf
#define ROUND rintf
#define COPYSIGN copysignf
#define CMPLT(a, b) ((a) < (b))
#define CMPGT(a, b) ((a) > (b))
#define CMPUNORD(a, b) (isnan(a) || isnan(b))
#define SEL(m, f, t) ((m) ? (t) : (f))
#define MOR(a, b) ((a) || (b))
#define MNONE false
#define MANY(m) (m)
#define LDEXP(p, k) ldexpf(p, (k) == (k) ? (int)(k) : 0)
#define SLEEF(fn) fn##f /* libm: expf, logf, ... */
#define ACC_ZERO 0.0
#define ACC_PLUS(a, b) ((a) + (b))
#define ACC_ADD(a0, a1, v) ((void)(a1), (a0) += (double)(v))
#define ACC_HSUM(a) (a)
#define ACC_ROW(p, v) (*(p) += (double)(v))
#define ACC_ROW4(p, a, b, c, d) (*(p) += ((double)(a) + (double)(b)) + ((double)(c) + (double)(d)))
#include "vmath_simd.h"

/* ---- f64 ---- */
#define T double
#define TS f64
#define VM_F32 0
#define W 1
#define V double
#define M bool
#define TM bool
#define ACCV double
#define LD(p) (*(p))
#define ST(p, v) (*(p) = (v))
#define TMASK(r) ((r) > 0)
#define LDT(p, m) ((void)(m), *(p))
#define LDTF(p, m, f) ((void)(m), (void)(f), *(p))
#define STT(p, m, v) ((void)(m), *(p) = (v))
#define SET(c) ((double)(c))
#define ADD(a, b) ((a) + (b))
#define SUB(a, b) ((a) - (b))
#define MUL(a, b) ((a) * (b))
#define DIV(a, b) ((a) / (b))
#define FMA(a, b, c) fma(a, b, c)
#define FNMA(a, b, c) fma(-(a), b, c)
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define ABS fabs
#define SQRT sqrt
#define ROUND rint
#define COPYSIGN copysign
#define CMPLT(a, b) ((a) < (b))
#define CMPGT(a, b) ((a) > (b))
#define CMPUNORD(a, b) (isnan(a) || isnan(b))
#define SEL(m, f, t) ((m) ? (t) : (f))
#define MOR(a, b) ((a) || (b))
#define MNONE false
#define MANY(m) (m)
#define SLEEF(fn) fn /* libm: exp, log, ... */
#define ACC_ZERO 0.0
#define ACC_PLUS(a, b) ((a) + (b))
#define ACC_ADD(a0, a1, v) ((void)(a1), (a0) += (v))
#define ACC_HSUM(a) (a)
#define ACC_ROW(p, v) (*(p) += (v))
#define ACC_ROW4(p, a, b, c, d) (*(p) += ((a) + (b)) + ((c) + (d)))
#include "vmath_simd.h"

const tg__vm_kernels tg__vm_kernels_scalar = {
    .map_f32 = VM_TABLE_MAP(f32),
    .map_f64 = VM_TABLE_MAP(f64),
    .red_f32 = VM_TABLE_RED(f32),
    .red_f64 = VM_TABLE_RED(f64),
    .rows_f32 = vm_add_rows_f32,
    .rows_f64 = vm_add_rows_f64,
};
