/* vec.c — the public vector math (tg_vec_map, tg_vec_reduce): a checked front to the kernel
 * tables of vmath.h that the built-in ops use, for the kernels of users' ops. */
#include "internal.h"

#include <math.h>

#include "vmath.h"

/* Each public op, its vector-math op and what it reads. */
typedef struct vec_entry {
    tg__vm_op op;
    bool binary; /* reads b */
} vec_entry;

static const vec_entry maps[] = {
    [TG_VEC_EXP] = {TG__VM_EXP, false},
    [TG_VEC_LOG] = {TG__VM_LOG, false},
    [TG_VEC_LOG1P] = {TG__VM_LOG1P, false},
    [TG_VEC_SQRT] = {TG__VM_SQRT, false},
    [TG_VEC_SIN] = {TG__VM_SIN, false},
    [TG_VEC_COS] = {TG__VM_COS, false},
    [TG_VEC_TANH] = {TG__VM_TANH, false},
    [TG_VEC_SIGMOID] = {TG__VM_SIGMOID, false},
    [TG_VEC_GELU] = {TG__VM_GELU, false},
    [TG_VEC_SOFTPLUS] = {TG__VM_SOFTPLUS, false},
    [TG_VEC_ADD] = {TG__VM_ADD, true},
    [TG_VEC_SUB] = {TG__VM_SUB, true},
    [TG_VEC_MUL] = {TG__VM_MUL, true},
    [TG_VEC_DIV] = {TG__VM_DIV, true},
    [TG_VEC_MAX] = {TG__VM_MAX, true},
    [TG_VEC_MIN] = {TG__VM_MIN, true},
    [TG_VEC_TANH_BACKWARD] = {TG__VM_TANH_BACKWARD, true},
    [TG_VEC_SIGMOID_BACKWARD] = {TG__VM_SIGMOID_BACKWARD, true},
    [TG_VEC_RELU_BACKWARD] = {TG__VM_RELU_BACKWARD, true},
    [TG_VEC_GELU_BACKWARD] = {TG__VM_GELU_BACKWARD, true},
    [TG_VEC_ADD_SCALAR] = {TG__VM_ADD_SCALAR, false},
    [TG_VEC_MUL_SCALAR] = {TG__VM_MUL_SCALAR, false},
};

static const tg__vm_red reductions[] = {
    [TG_VEC_SUM] = TG__VM_SUM,
    [TG_VEC_MAXALL] = TG__VM_MAXALL,
    [TG_VEC_MINALL] = TG__VM_MINALL,
    [TG_VEC_EXP_SUM] = TG__VM_EXP_SUM,
};

static bool float_dtype(tg_dtype dt) { return dt == TG_F32 || dt == TG_F64; }

tg_status tg_vec_map(tg_vec_op op, int threads, tg_dtype dt, int64_t n, const void *a,
                     const void *b, double c, void *y)
{
    if ((unsigned)op >= sizeof maps / sizeof maps[0] || !float_dtype(dt) || n < 0)
        return TG_INVALID;
    const vec_entry *e = &maps[op];
    if (n > 0 && (!a || !y || (e->binary && !b)))
        return TG_INVALID;
    if (n > 0)
        tg__vm_map(e->op, threads > 1 ? threads : 1, dt, n, a, e->binary ? b : NULL, c, 0, y);
    return TG_OK;
}

tg_status tg_vec_reduce(tg_vec_reduction r, tg_dtype dt, int64_t n, const void *x, double shift,
                        void *y, double *result)
{
    if (result)
        *result = NAN;
    if ((unsigned)r >= sizeof reductions / sizeof reductions[0] || !float_dtype(dt) || n < 0
        || !result || (n > 0 && !x))
        return TG_INVALID;
    double empty = 0; /* the kernels never see a NULL array, even for n = 0 */
    if (n == 0)
        x = &empty, y = NULL;
    *result = tg__vm_reduce(reductions[r], dt, n, x, shift, r == TG_VEC_EXP_SUM ? y : NULL);
    return TG_OK;
}
