/* vmath.h — the engine's vector math over contiguous arrays (f32 or f64 by `dt`); the only
 * layer that names SLEEF. Each call runs the CPU's best instruction set (AVX-512F, AVX2+FMA or
 * portable C, chosen at run time) and, when the array is large enough to pay for it, splits the
 * work over up to `threads` threads (tg__parallel_for). An output may be the same array as an
 * input (in place); no other overlap is allowed. */
#ifndef TG_VMATH_H
#define TG_VMATH_H

#include "tapegrad.h"

/* Elementwise ops y[i] = f(a[i], b[i]; c0, c1). Constants are rounded to the element type
 * first, as PyTorch rounds a Python scalar to the tensor's dtype. */
typedef enum tg__vm_op {
    /* y = f(a) */
    TG__VM_EXP,
    TG__VM_LOG,
    TG__VM_LOG1P,
    TG__VM_SQRT,
    TG__VM_SIN,
    TG__VM_COS,
    TG__VM_TANH,
    TG__VM_SIGMOID,  /* 1 / (1 + exp(-a)) */
    TG__VM_GELU,     /* tanh approximation, one pass (see vmath_simd.h for the forms) */
    TG__VM_SOFTPLUS, /* a > 20 ? a : log1p(exp(a)), computed stably */
    /* y = f(a, b) */
    TG__VM_ADD,
    TG__VM_SUB,
    TG__VM_MUL,
    TG__VM_DIV,
    TG__VM_MAX,              /* NaN if either is NaN, else the larger (a on ties) */
    TG__VM_MIN,              /* NaN if either is NaN, else the smaller (a on ties) */
    TG__VM_TANH_BACKWARD,    /* a = g, b = y = tanh(x): g (1 - y^2) */
    TG__VM_SIGMOID_BACKWARD, /* a = g, b = y = sigmoid(x): g y (1 - y) */
    TG__VM_RELU_BACKWARD,    /* a = g, b = y = relu(x): y > 0 ? g : 0 */
    TG__VM_GELU_BACKWARD,    /* a = g, b = x: g gelu'(x) */
    /* y = f(a; c0, c1) */
    TG__VM_ADD_SCALAR, /* a + c0 */
    TG__VM_MUL_SCALAR, /* a * c0 */
    TG__VM_SUB2,       /* (a - c0) - c1, rounded after each step (log_softmax) */
    TG__VM_NOPS
} tg__vm_op;

/* Reductions of one contiguous array, on the calling thread (callers split rows or blocks over
 * threads). Sums accumulate in double in several independent lanes for either element type. */
typedef enum tg__vm_red {
    TG__VM_SUM,     /* sum of x */
    TG__VM_MAXALL,  /* max of x; NaN if any element is NaN; -inf if n == 0 */
    TG__VM_MINALL,  /* min of x; NaN if any element is NaN; +inf if n == 0 */
    TG__VM_EXP_SUM, /* y = exp(x - shift) (y may be NULL: not stored); returns the sum of y */
    TG__VM_NREDS
} tg__vm_red;

void tg__vm_map(tg__vm_op op, int threads, tg_dtype dt, int64_t n, const void *a, const void *b,
                double c0, double c1, void *y);
double tg__vm_reduce(tg__vm_red op, tg_dtype dt, int64_t n, const void *x, double shift, void *y);
/* Column sums: acc[j] += sum over r < rows of x[r * stride + j], j < cols, in double, each
 * column added in row order (so the result does not depend on how columns are blocked). */
void tg__vm_add_rows(tg_dtype dt, int64_t rows, int64_t cols, int64_t stride, const void *x,
                     double *acc);

/* Shorthands for the unary and binary maps. */
static inline void tg__vm_unary(tg__vm_op op, int threads, tg_dtype dt, int64_t n, const void *x,
                                void *y)
{
    tg__vm_map(op, threads, dt, n, x, NULL, 0, 0, y);
}
static inline void tg__vm_binary(tg__vm_op op, int threads, tg_dtype dt, int64_t n, const void *a,
                                 const void *b, void *y)
{
    tg__vm_map(op, threads, dt, n, a, b, 0, 0, y);
}
#define TG__VM_UNARY(name, OP)                                                                     \
    static inline void tg__vm_##name(int threads, tg_dtype dt, int64_t n, const void *x, void *y)  \
    {                                                                                              \
        tg__vm_unary(OP, threads, dt, n, x, y);                                                    \
    }
TG__VM_UNARY(exp, TG__VM_EXP)
TG__VM_UNARY(log, TG__VM_LOG)
TG__VM_UNARY(log1p, TG__VM_LOG1P)
TG__VM_UNARY(sqrt, TG__VM_SQRT)
TG__VM_UNARY(sin, TG__VM_SIN)
TG__VM_UNARY(cos, TG__VM_COS)
TG__VM_UNARY(tanh, TG__VM_TANH)
TG__VM_UNARY(sigmoid, TG__VM_SIGMOID)
TG__VM_UNARY(gelu, TG__VM_GELU)
TG__VM_UNARY(softplus, TG__VM_SOFTPLUS)
#undef TG__VM_UNARY

/* y += x, on the calling thread (the backward sweep's accumulation). */
void tg__vm_add_into(tg_dtype dt, int64_t n, const void *x, void *y);

/* Instruction sets, and the best one this CPU runs. */
enum { TG__VM_ISA_SCALAR, TG__VM_ISA_AVX2, TG__VM_ISA_AVX512, TG__VM_NISAS };
int tg__vm_isa_level(void);
/* Its name: "avx512f", "avx2" or "scalar". */
const char *tg__vm_isa(void);

/* For tests: the kernels of instruction set `isa` on the calling thread. False (nothing done)
 * if this CPU cannot run that set. */
bool tg__vm_map_isa(int isa, tg__vm_op op, tg_dtype dt, int64_t n, const void *a, const void *b,
                    double c0, double c1, void *y);
bool tg__vm_reduce_isa(int isa, tg__vm_red op, tg_dtype dt, int64_t n, const void *x, double shift,
                       void *y, double *result);
bool tg__vm_add_rows_isa(int isa, tg_dtype dt, int64_t rows, int64_t cols, int64_t stride,
                         const void *x, double *acc);

#endif
