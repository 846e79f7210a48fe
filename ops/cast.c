/* cast.c — dtype conversions (Tensor.to): cast to a float dtype (differentiable: the gradient is
 * cast back) and cast_to_i64 (truncation toward zero, no gradient: i64 is data only). */
#include "kernels.h"
#include "ops.h"

typedef struct cast_attr {
    int dtype; /* a tg_dtype: f32 or f64 (cast); unused by cast_to_i64 */
} cast_attr;

/* Converts n elements of dtype `from` into `to` (plain C conversions: round to nearest between
 * floats, truncation toward zero into i64, whose range the check has verified). */
#define CONVERT(TI, TO, name)                                                                      \
    static void name(const void *src, void *dst, int64_t n)                                        \
    {                                                                                              \
        const TI *x = src;                                                                         \
        TO *y = dst;                                                                               \
        for (int64_t i = 0; i < n; i++)                                                            \
            y[i] = (TO)x[i];                                                                       \
    }
CONVERT(float, float, f32_to_f32)
CONVERT(float, double, f32_to_f64)
CONVERT(double, float, f64_to_f32)
CONVERT(double, double, f64_to_f64)
CONVERT(int64_t, float, i64_to_f32)
CONVERT(int64_t, double, i64_to_f64)
CONVERT(float, int64_t, f32_to_i64)
CONVERT(double, int64_t, f64_to_i64)

/* The conversion from one dtype into another, indexed [from - 1][to - 1] (TG_F32 = 1, ...);
 * NULL where no op converts (into i64 from i64: the wrapper returns the input itself). */
static void (*const converters[3][3])(const void *, void *, int64_t) = {
    {f32_to_f32, f32_to_f64, f32_to_i64},
    {f64_to_f32, f64_to_f64, f64_to_i64},
    {i64_to_f32, i64_to_f64, NULL},
};
static void convert(const tg_kernel *k)
{
    converters[k->in[0]->dtype - 1][k->out->dtype - 1](k->in[0]->data, k->out->data, k->out->numel);
}

/* y = x in dtype `dtype` (f32 or f64; x f32, f64 or i64);  dx += cast(g) to x's dtype (float
 * inputs; an i64 input never needs a gradient) */
static tg_status cast_check(tg_check *c)
{
    int to = ((const cast_attr *)c->attr)->dtype;
    tg_dtype from = c->in[0]->dtype;
    if (from != TG_F32 && from != TG_F64 && from != TG_I64)
        return tg_check_fail(c, TG_DTYPE, "cannot cast from dtype %d", (int)from);
    if (to == TG_I64)
        return tg_check_fail(c, TG_DTYPE,
                             "casts to f32 or f64; i64 is cast_to_i64's (it carries no gradient)");
    if (to != TG_F32 && to != TG_F64)
        return tg_check_fail(c, TG_DTYPE, "cannot cast to unknown dtype %d", to);
    *c->out = *c->in[0];
    c->out->dtype = (tg_dtype)to;
    return TG_OK;
}
static void cast_backward(const tg_backward_io *io)
{
    cast_attr back = {tg_tensor_dtype(io->inputs[0])};
    io->grad_inputs[0] = tg__apply1(TG__OP_cast, io->grad_output, &back);
}
/* Inputs that f32 holds exactly (multiples of 2^-10 in [-4, 4)): f64 -> f32 -> f64 is then the
 * identity, and so is it at x +- 2^-10, the gradient check's step for ops that narrow. */
static int example_cast(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    int n = tg__example_unary(tp, index, in, -4, 4, 0);
    if (n && tg_ok(in[0])) {
        double *d = (double *)tg_data(in[0]); /* the leaf's own buffer, as tg__example does */
        for (int64_t i = 0; i < tg_numel(in[0]); i++)
            d[i] = round(d[i] * 1024) / 1024;
    }
    ((cast_attr *)attr)->dtype = TG_F32;
    return n;
}
const tg_op_def tg__op_cast = {.name = "cast",
                               .ninputs = 1,
                               .attr_size = sizeof(cast_attr),
                               .check = cast_check,
                               .forward = convert,
                               .backward = cast_backward,
                               .example = example_cast};

/* y = x truncated toward zero, as i64 (Tensor.long()); no gradient. The check reads the values:
 * NaN, infinities and values outside [-2^63, 2^63) have no i64 (TG_RANGE, as tg_read says). */
static tg_status cast_to_i64_check(tg_check *c)
{
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    const tg_view *x = c->in[0];
    for (int64_t i = 0; i < x->numel; i++) {
        double v = x->dtype == TG_F32 ? ((const float *)x->data)[i] : ((const double *)x->data)[i];
        if (!(v >= -0x1p63 && v < 0x1p63))
            return tg_check_fail(c, TG_RANGE,
                                 "element %lld is %g, which no i64 holds (NaN, infinite or "
                                 "outside [-2^63, 2^63))",
                                 (long long)i, v);
    }
    *c->out = *x;
    c->out->dtype = TG_I64;
    return TG_OK;
}
/* Values kept 0.05 away from the integers, where truncation would depend on f32 rounding. */
static int example_cast_to_i64(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    int n = tg__example_unary(tp, index, in, -5, 5, 0);
    if (n && tg_ok(in[0])) {
        double *d = (double *)tg_data(in[0]);
        for (int64_t i = 0; i < tg_numel(in[0]); i++) {
            double frac = d[i] - floor(d[i]);
            d[i] += frac < 0.05 ? 0.05 : frac > 0.95 ? -0.05 : 0;
        }
    }
    return n;
}
const tg_op_def tg__op_cast_to_i64 = {.name = "cast_to_i64",
                                      .ninputs = 1,
                                      .flags = TG_OP_NONDIFF,
                                      .check = cast_to_i64_check,
                                      .forward = convert,
                                      .example = example_cast_to_i64};

tg_tensor tg_cast(tg_tensor a, tg_dtype dtype)
{
    if (tg_tensor_dtype(a) == dtype) /* Tensor.to returns self: no node, errors passed on */
        return tg_tensor_check(a, "cast") == TG_OK ? a : tg_error(tg_tensor_tape(a));
    cast_attr at = {(int)dtype};
    return tg__apply1(dtype == TG_I64 ? TG__OP_cast_to_i64 : TG__OP_cast, a, &at);
}
