/* cumsum.c — cumulative sums along one axis (torch.cumsum), forward or from the end. Each one is
 * the other's gradient, so cumsum is differentiable to any order with no other op. */
#include "kernels.h"
#include "ops.h"

typedef struct cumsum_attr {
    int axis;    /* negative counts from the end; a 0-d tensor has axis 0 (or -1) */
    int reverse; /* 0: y_i = sum_{k <= i} x_k;  1: y_i = sum_{k >= i} x_k (the gradient's) */
} cumsum_attr;

/* Columns summed together when the axis is not the last: the running sums of one block of
 * columns live on the stack, as kernels may not allocate. */
#define BLOCK 256

/* The input as [outer, n, inner] around axis `ax` (a 0-d tensor is one element: 1, 1, 1). */
static void split_axis(const tg_view *x, int ax, int64_t *outer, int64_t *n, int64_t *inner)
{
    *outer = 1, *n = 1, *inner = 1;
    for (int d = 0; d < x->ndim; d++) {
        if (d < ax)
            *outer *= x->shape[d];
        else if (d == ax)
            *n = x->shape[d];
        else
            *inner *= x->shape[d];
    }
}

/* The axis in [0, ndim) (0 for a 0-d tensor), or -1 when out of range. */
static int cumsum_axis(int axis, int ndim)
{
    int span = ndim ? ndim : 1;
    if (axis < -span || axis >= span)
        return -1;
    return axis < 0 ? axis + span : axis;
}

/* Running sums in double (as PyTorch accumulates f32 on the CPU), rounded once per element:
 * along contiguous rows when the axis is last, else over blocks of columns, row by row. */
#define CUMSUM_LOOP(T, name)                                                                       \
    static void name(const T *x, T *y, int64_t outer, int64_t n, int64_t inner, bool reverse)      \
    {                                                                                              \
        int64_t first = reverse ? n - 1 : 0, step = reverse ? -1 : 1;                              \
        for (int64_t o = 0; o < outer; o++) {                                                      \
            const T *xo = x + o * n * inner;                                                       \
            T *yo = y + o * n * inner;                                                             \
            if (inner == 1) {                                                                      \
                double acc = 0;                                                                    \
                for (int64_t i = 0, k = first; i < n; i++, k += step) {                            \
                    acc += xo[k];                                                                  \
                    yo[k] = (T)acc;                                                                \
                }                                                                                  \
                continue;                                                                          \
            }                                                                                      \
            for (int64_t j0 = 0; j0 < inner; j0 += BLOCK) {                                        \
                int64_t m = inner - j0 < BLOCK ? inner - j0 : BLOCK;                               \
                double acc[BLOCK];                                                                 \
                for (int64_t j = 0; j < m; j++)                                                    \
                    acc[j] = 0;                                                                    \
                for (int64_t i = 0, k = first; i < n; i++, k += step) {                            \
                    const T *xr = xo + k * inner + j0;                                             \
                    T *yr = yo + k * inner + j0;                                                   \
                    for (int64_t j = 0; j < m; j++) {                                              \
                        acc[j] += xr[j];                                                           \
                        yr[j] = (T)acc[j];                                                         \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
CUMSUM_LOOP(float, cumsum_f32)
CUMSUM_LOOP(double, cumsum_f64)

/* y_i = sum_{k <= i} x_k along the axis (from the end when reverse);
 * dx += cumsum(g) in the other direction */
static tg_status cumsum_check(tg_check *c)
{
    const cumsum_attr *at = c->attr;
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    if (cumsum_axis(at->axis, c->in[0]->ndim) < 0)
        return tg_check_fail(c, TG_RANGE, "axis %d out of range for %d dims", at->axis,
                             c->in[0]->ndim);
    if (at->reverse != 0 && at->reverse != 1)
        return tg_check_fail(c, TG_INVALID, "reverse must be 0 or 1, not %d", at->reverse);
    *c->out = *c->in[0];
    return TG_OK;
}
static void cumsum_forward(const tg_kernel *k)
{
    const cumsum_attr *at = k->attr;
    int64_t outer, n, inner;
    split_axis(k->in[0], cumsum_axis(at->axis, k->in[0]->ndim), &outer, &n, &inner);
    if (k->out->dtype == TG_F32)
        cumsum_f32(k->in[0]->data, k->out->data, outer, n, inner, at->reverse);
    else
        cumsum_f64(k->in[0]->data, k->out->data, outer, n, inner, at->reverse);
}
static void cumsum_backward(const tg_backward_io *io)
{
    const cumsum_attr *at = io->attr;
    cumsum_attr back = {at->axis, !at->reverse};
    io->grad_inputs[0] = tg__apply1(TG__OP_cumsum, io->grad_output, &back);
}
static int example_cumsum(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const struct {
        int nd, axis, reverse;
        int64_t shape[3];
    } cases[] = {
        {2, 1, 0, {3, 4}},     /* the last axis: contiguous rows */
        {2, 0, 0, {3, 4}},     /* the first: columns */
        {3, -2, 0, {2, 3, 4}}, /* a middle one, negative */
        {3, 2, 1, {2, 3, 4}},  /* from the end */
        {3, 0, 1, {3, 2, 2}},  /* from the end, over columns */
        {0, 0, 0, {0}},        /* a 0-d tensor */
    };
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    cumsum_attr *at = attr;
    at->axis = cases[index].axis;
    at->reverse = cases[index].reverse;
    in[0] = tg__example(tp, cases[index].nd, cases[index].shape, -2, 2, 0, 251 + (uint64_t)index);
    return 1;
}
const tg_op_def tg__op_cumsum = {.name = "cumsum",
                                 .ninputs = 1,
                                 .attr_size = sizeof(cumsum_attr),
                                 .check = cumsum_check,
                                 .forward = cumsum_forward,
                                 .backward = cumsum_backward,
                                 .example = example_cumsum};

tg_tensor tg_cumsum(tg_tensor a, int axis)
{
    cumsum_attr at = {axis, 0};
    return tg__apply1(TG__OP_cumsum, a, &at);
}
