/* mask.c — ops that build and apply masks: tril and triu (one triangle of the last two dims kept,
 * the rest zero; data moves, so i64 masks can be built too) and masked_fill (a value where a
 * mask is nonzero). */
#include "kernels.h"
#include "ops.h"

/* ---- tril, triu ------------------------------------------------------------------------- */

typedef struct triangle_attr {
    int64_t diagonal; /* 0: the main diagonal; > 0 above it, < 0 below (as PyTorch) */
} triangle_attr;

/* The columns [*lo, *hi) that row i of a matrix of `cols` columns keeps: tril keeps
 * j <= i + diagonal, triu keeps j >= i + diagonal. i + diagonal is clamped to [-1, cols] before
 * it is formed, so no diagonal overflows. */
static void kept_columns(bool upper, int64_t i, int64_t diagonal, int64_t cols, int64_t *lo,
                         int64_t *hi)
{
    int64_t edge = diagonal < -i - 1 ? -1 : diagonal > cols - i ? cols : i + diagonal;
    *lo = upper ? (edge < 0 ? 0 : edge) : 0;
    *hi = upper ? cols : (edge + 1 > cols ? cols : edge + 1);
}

/* f32, f64 or i64 with at least 2 dims; the output has the input's dtype and shape. */
static tg_status triangle_check(tg_check *c)
{
    const tg_view *x = c->in[0];
    if (x->dtype != TG_F32 && x->dtype != TG_F64 && x->dtype != TG_I64)
        return tg_check_fail(c, TG_DTYPE, "input must be f32, f64 or i64, not %s",
                             tg_dtype_name(x->dtype));
    if (x->ndim < 2)
        return tg_check_fail(c, TG_SHAPE, "input needs at least 2 dims, got %d", x->ndim);
    *c->out = *x;
    return TG_OK;
}

/* Row by row over every matrix of the last two dims: the kept columns copied, the others zeroed
 * (all-zero bits are 0 in all three dtypes). */
static void triangle(const tg_kernel *k, bool upper)
{
    const tg_view *x = k->in[0];
    int64_t rows = x->shape[x->ndim - 2], cols = x->shape[x->ndim - 1];
    size_t es = tg_dtype_size(x->dtype);
    if (x->numel == 0)
        return;
    int64_t diagonal = ((const triangle_attr *)k->attr)->diagonal;
    int64_t matrices = x->numel / (rows * cols);
    for (int64_t m = 0; m < matrices; m++)
        for (int64_t i = 0; i < rows; i++) {
            size_t row = (size_t)((m * rows + i) * cols) * es;
            const char *src = (const char *)x->data + row;
            char *dst = (char *)k->out->data + row;
            int64_t lo, hi;
            kept_columns(upper, i, diagonal, cols, &lo, &hi);
            hi = hi < lo ? lo : hi;
            memset(dst, 0, (size_t)lo * es);
            memcpy(dst + (size_t)lo * es, src + (size_t)lo * es, (size_t)(hi - lo) * es);
            memset(dst + (size_t)hi * es, 0, (size_t)(cols - hi) * es);
        }
}

/* Square, wide and tall matrices, batched, with diagonals inside and far outside the matrix. */
static int example_triangle(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const struct {
        int nd;
        int64_t shape[3];
        int64_t diagonal;
    } cases[] = {
        {2, {4, 4}, 0},         {3, {2, 3, 5}, 1},      {2, {5, 3}, -2},
        {2, {3, 4}, INT64_MAX}, {2, {3, 4}, INT64_MIN}, {3, {2, 4, 3}, -1},
    };
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    ((triangle_attr *)attr)->diagonal = cases[index].diagonal;
    in[0] = tg__example(tp, cases[index].nd, cases[index].shape, -2, 2, 0, 301 + (uint64_t)index);
    return 1;
}

/* y = a where j <= i + diagonal, else 0 (last two dims);  da += tril(g, diagonal) */
static void tril_forward(const tg_kernel *k) { triangle(k, false); }
static void tril_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg_tril(io->grad_output, ((const triangle_attr *)io->attr)->diagonal);
}
const tg_op_def tg__op_tril = {.name = "tril",
                               .ninputs = 1,
                               .attr_size = sizeof(triangle_attr),
                               .check = triangle_check,
                               .forward = tril_forward,
                               .backward = tril_backward,
                               .example = example_triangle};
tg_tensor tg_tril(tg_tensor a, int64_t diagonal)
{
    triangle_attr at = {diagonal};
    return tg__apply1(TG__OP_tril, a, &at);
}

/* y = a where j >= i + diagonal, else 0 (last two dims);  da += triu(g, diagonal) */
static void triu_forward(const tg_kernel *k) { triangle(k, true); }
static void triu_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg_triu(io->grad_output, ((const triangle_attr *)io->attr)->diagonal);
}
const tg_op_def tg__op_triu = {.name = "triu",
                               .ninputs = 1,
                               .attr_size = sizeof(triangle_attr),
                               .check = triangle_check,
                               .forward = triu_forward,
                               .backward = triu_backward,
                               .example = example_triangle};
tg_tensor tg_triu(tg_tensor a, int64_t diagonal)
{
    triangle_attr at = {diagonal};
    return tg__apply1(TG__OP_triu, a, &at);
}

/* ---- masked_fill ------------------------------------------------------------------------ */

typedef struct fill_attr {
    double value;
} fill_attr;

/* a is f32 or f64; the mask is of a's dtype or i64; the two broadcast together (as
 * torch.masked_fill does out of place) to the output's shape. */
static tg_status masked_fill_check(tg_check *c)
{
    const tg_view *a = c->in[0], *mask = c->in[1];
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    if (mask->dtype != a->dtype && mask->dtype != TG_I64)
        return tg_check_fail(c, TG_DTYPE, "mask must be %s (like a) or i64, not %s",
                             tg_dtype_name(a->dtype), tg_dtype_name(mask->dtype));
    tg_view *out = c->out;
    out->ndim = 0;
    if (!tg__broadcast_into(&out->ndim, out->shape, a->ndim, a->shape)
        || !tg__broadcast_into(&out->ndim, out->shape, mask->ndim, mask->shape))
        return tg_check_fail(c, TG_SHAPE, "a and mask do not broadcast");
    out->dtype = a->dtype;
    return TG_OK;
}

/* y = mask != 0 ? value : a over broadcast operands, for element type T and mask type M; `user`
 * points at the value in T. */
#define FILL_LOOP(T, M, name)                                                                      \
    static void name(int64_t n, char *const *p, const int64_t *s, void *user)                      \
    {                                                                                              \
        const T value = *(const T *)user;                                                          \
        T *y = (T *)p[2];                                                                          \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T a = *(const T *)(p[0] + i * s[0]);                                                   \
            M mask = *(const M *)(p[1] + i * s[1]);                                                \
            y[i] = mask != 0 ? value : a;                                                          \
        }                                                                                          \
    }
FILL_LOOP(float, float, fill_f32)
FILL_LOOP(float, int64_t, fill_f32_i64)
FILL_LOOP(double, double, fill_f64)
FILL_LOOP(double, int64_t, fill_f64_i64)

/* y = mask != 0 ? value : a;  da += masked_fill(g, mask, 0) (the mask gets no gradient) */
static void masked_fill_forward(const tg_kernel *k)
{
    double value = ((const fill_attr *)k->attr)->value;
    bool i64 = k->in[1]->dtype == TG_I64;
    if (k->out->dtype == TG_F32) {
        float v = (float)value;
        tg_kernel_loop(k, i64 ? fill_f32_i64 : fill_f32, &v);
    } else {
        tg_kernel_loop(k, i64 ? fill_f64_i64 : fill_f64, &value);
    }
}
static void masked_fill_backward(const tg_backward_io *io)
{
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg_masked_fill(io->grad_output, io->inputs[1], 0.0);
}
/* Float and i64 masks, same shape and broadcast either way. */
static int example_masked_fill(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int64_t s34[] = {3, 4}, s4[] = {4}, s31[] = {3, 1}, s14[] = {1, 4};
    static const int64_t bits[] = {1, 0, 0, 1};
    ((fill_attr *)attr)->value = index == 1 ? -1.5 : 2.5;
    switch (index) {
    case 0:
        in[0] = tg__example(tp, 2, s34, -2, 2, 0, 321);
        in[1] = tg_gt(tg__example(tp, 2, s34, -1, 1, 0, 322), tg_constant(tp, TG_F64, 0.0));
        return 2;
    case 1:
        in[0] = tg__example(tp, 2, s34, -2, 2, 0, 323);
        in[1] = tg_tensor_from(tp, TG_I64, 1, s4, bits);
        return 2;
    case 2:
        in[0] = tg__example(tp, 2, s31, -2, 2, 0, 324);
        in[1] = tg_tensor_from(tp, TG_I64, 2, s14, bits);
        return 2;
    }
    return 0;
}
const tg_op_def tg__op_masked_fill = {.name = "masked_fill",
                                      .ninputs = 2,
                                      .attr_size = sizeof(fill_attr),
                                      .check = masked_fill_check,
                                      .forward = masked_fill_forward,
                                      .backward = masked_fill_backward,
                                      .example = example_masked_fill};
tg_tensor tg_masked_fill(tg_tensor a, tg_tensor mask, double value)
{
    fill_attr at = {value};
    return tg__apply2(TG__OP_masked_fill, a, mask, &at);
}
