/* vmath.h — the engine's vector math over contiguous arrays (f32 or f64 by `dt`); the only
 * layer that names SLEEF. Each call runs the CPU's best instruction set (AVX-512F, AVX2+FMA or
 * portable C, chosen at run time) and, when the array is large enough to pay for it, splits the
 * work over up to `threads` threads (tg__parallel_for). An output may be the same array as an
 * input (in place); no other overlap is allowed. */
#ifndef TG_VMATH_H
#define TG_VMATH_H

#include "tapegrad.h"

#include "vmath_ops.h"

/* Elementwise ops y[i] = f(a[i], b[i]; c0, c1): TG__VM_<NAME> for each row of TG__VMATH_MAPS in
 * vmath_ops.h, which says what each computes, then their number TG__VM_NOPS. Constants are
 * rounded to the element type first, as PyTorch rounds a Python scalar to the tensor's dtype. */
#define TG__VM_OP_ENUM(name, NAME, KIND, COST, BODY) TG__VM_##NAME,
typedef enum tg__vm_op { TG__VMATH_MAPS(TG__VM_OP_ENUM) TG__VM_NOPS } tg__vm_op;
#undef TG__VM_OP_ENUM

/* Reductions of one contiguous array, on the calling thread (callers split rows or blocks over
 * threads): TG__VM_<NAME> for each row of TG__VMATH_REDUCTIONS in vmath_ops.h, then their number
 * TG__VM_NREDS. Sums accumulate in double in several independent lanes for either element type. */
#define TG__VM_REDUCTION_ENUM(name, NAME) TG__VM_##NAME,
typedef enum tg__vm_red { TG__VMATH_REDUCTIONS(TG__VM_REDUCTION_ENUM) TG__VM_NREDS } tg__vm_red;
#undef TG__VM_REDUCTION_ENUM

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

/* One shorthand per op, tg__vm_<name> for the row `name` of TG__VMATH_MAPS, its arguments by the
 * row's KIND: tg__vm_exp(threads, dt, n, x, y), tg__vm_add(threads, dt, n, a, b, y),
 * tg__vm_sub2(threads, dt, n, x, c0, c1, y). */
#define TG__VM_SHORTHAND_UNARY(function, op)                                                       \
    static inline void function(int threads, tg_dtype dt, int64_t n, const void *x, void *y)       \
    {                                                                                              \
        tg__vm_unary(op, threads, dt, n, x, y);                                                    \
    }
#define TG__VM_SHORTHAND_BINARY(function, op)                                                      \
    static inline void function(int threads, tg_dtype dt, int64_t n, const void *a, const void *b, \
                                void *y)                                                           \
    {                                                                                              \
        tg__vm_binary(op, threads, dt, n, a, b, y);                                                \
    }
#define TG__VM_SHORTHAND_SCALAR(function, op)                                                      \
    static inline void function(int threads, tg_dtype dt, int64_t n, const void *x, double c0,     \
                                double c1, void *y)                                                \
    {                                                                                              \
        tg__vm_map(op, threads, dt, n, x, NULL, c0, c1, y);                                        \
    }
#define TG__VM_SHORTHAND(name, NAME, KIND, COST, BODY)                                             \
    TG__VM_SHORTHAND_##KIND(tg__vm_##name, TG__VM_##NAME)
TG__VMATH_MAPS(TG__VM_SHORTHAND)
#undef TG__VM_SHORTHAND
#undef TG__VM_SHORTHAND_UNARY
#undef TG__VM_SHORTHAND_BINARY
#undef TG__VM_SHORTHAND_SCALAR

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
