/* softmax.c — softmax, log_softmax and logsumexp along one axis, stable for any magnitude. */
#include "kernels.h"
#include "ops.h"
#include "parallel.h"
#include "vmath.h"

typedef struct axis_attr {
    int axis;    /* negative counts from the end */
    int keepdim; /* logsumexp only */
} axis_attr;

enum { K_SOFTMAX, K_LOG_SOFTMAX, K_LOGSUMEXP };

/* Elements per stack buffer: the kernels may not allocate, so long rows and wide column blocks
 * are processed in pieces of this many elements. */
#define CHUNK 256

/* A 0-d tensor counts as one axis of size 1, as in NumPy/PyTorch (axis 0 or -1). */
static int span_axis(int axis, int ndim)
{
    int span = ndim ? ndim : 1;
    return axis < 0 ? axis + span : axis;
}

/* The input as [outer, n, inner] around the axis. */
static void split_axis(const tg_view *x, int axis, int64_t *outer, int64_t *n, int64_t *inner)
{
    *outer = 1, *n = 1, *inner = 1;
    for (int d = 0; d < x->ndim; d++) {
        if (d < axis)
            *outer *= x->shape[d];
        else if (d == axis)
            *n = x->shape[d];
        else
            *inner *= x->shape[d];
    }
}

static tg_status axis_check(tg_check *c, bool reduce)
{
    const axis_attr *at = c->attr;
    const tg_view *x = c->in[0];
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    int ax = span_axis(at->axis, x->ndim);
    if (ax < 0 || ax >= (x->ndim ? x->ndim : 1))
        return tg_check_fail(c, TG_RANGE, "axis %d out of range for %d dims", at->axis, x->ndim);
    *c->out = *x;
    if (reduce && x->ndim > 0) {
        if (at->keepdim) {
            c->out->shape[ax] = 1;
        } else {
            for (int d = ax; d < x->ndim - 1; d++)
                c->out->shape[d] = x->shape[d + 1];
            c->out->ndim = x->ndim - 1;
        }
    }
    return TG_OK;
}
static tg_status same_shape_check(tg_check *c) { return axis_check(c, false); }
static tg_status reduce_check(tg_check *c) { return axis_check(c, true); }

/* The shift used before exp: the row's max, or 0 when that is -inf (an empty row or one of only
 * -inf), where subtracting it would turn the row into NaN. */
#define SHIFT(m) ((m) == -INFINITY ? 0 : (m))

/* What a softmax kernel works on: x as [outer, n, inner] around the axis, y, and what to write.
 * `kind` picks it:
 *   softmax      y = exp(x - m) / s
 *   log_softmax  y = (x - m) - log(s)
 *   logsumexp    y = m + log(s)        with m = max along the axis, s = sum of exp(x - m).
 * Sums are kept in double for both types. */
typedef struct softmax_job {
    const tg_view *x, *y;
    int kind;
    int64_t outer, n, inner, blocks; /* blocks: column blocks per outer index (inner > 1) */
} softmax_job;

/* The last axis (inner == 1): rows [r0, r1), each contiguous, through vmath's row reductions
 * (max with its NaN check, then exp and its sum in one pass, both in independent SIMD lanes):
 * two or three passes over a row that stays in cache. */
static void last_axis_rows(void *user, int64_t r0, int64_t r1)
{
    const softmax_job *j = user;
    tg_dtype dt = j->x->dtype;
    size_t es = tg_dtype_size(dt);
    int64_t n = j->n;
    for (int64_t r = r0; r < r1; r++) {
        const char *xr = (const char *)j->x->data + (size_t)(r * n) * es;
        char *yr = (char *)j->y->data + (size_t)(j->kind == K_LOGSUMEXP ? r : r * n) * es;
        double m = tg__vm_reduce(TG__VM_MAXALL, dt, n, xr, 0, NULL);
        m = SHIFT(m);
        if (j->kind == K_SOFTMAX) {
            double s = tg__vm_reduce(TG__VM_EXP_SUM, dt, n, xr, m, yr);
            tg__vm_map(TG__VM_MUL_SCALAR, 1, dt, n, yr, NULL, 1.0 / s, 0, yr);
            continue;
        }
        double ls = log(tg__vm_reduce(TG__VM_EXP_SUM, dt, n, xr, m, NULL));
        if (j->kind == K_LOG_SOFTMAX)
            tg__vm_map(TG__VM_SUB2, 1, dt, n, xr, NULL, m, ls, yr);
        else if (dt == TG_F32)
            *(float *)yr = (float)(m + ls);
        else
            *(double *)yr = m + ls;
    }
}

/* Any other axis: column blocks of up to CHUNK contiguous elements (block b of outer index
 * b / blocks), so every vmath call sees contiguous runs; per column the same steps as a row. */
#define COLUMN_BLOCKS(T, name, DT)                                                                 \
    static void name(void *user, int64_t b0, int64_t b1)                                           \
    {                                                                                              \
        const softmax_job *j = user;                                                               \
        const int64_t n = j->n, inner = j->inner;                                                  \
        T mx[CHUNK], tmp[CHUNK];                                                                   \
        double acc[CHUNK];                                                                         \
        for (int64_t b = b0; b < b1; b++) {                                                        \
            int64_t o = b / j->blocks, c0 = b % j->blocks * CHUNK;                                 \
            int64_t w = inner - c0 < CHUNK ? inner - c0 : CHUNK;                                   \
            const T *xo = (const T *)j->x->data + o * n * inner + c0;                              \
            T *yo = (T *)j->y->data + (j->kind == K_LOGSUMEXP ? o * inner : o * n * inner) + c0;   \
            for (int64_t i = 0; i < w; i++)                                                        \
                mx[i] = -INFINITY, acc[i] = 0;                                                     \
            for (int64_t r = 0; r < n; r++) /* NaN-propagating: x > m or x NaN takes x */          \
                tg__vm_binary(TG__VM_MAX, 1, DT, w, xo + r * inner, mx, mx);                       \
            for (int64_t i = 0; i < w; i++)                                                        \
                mx[i] = SHIFT(mx[i]);                                                              \
            for (int64_t r = 0; r < n; r++) {                                                      \
                /* softmax keeps exp(x - m) in the output; the others need it only summed. */      \
                T *e = j->kind == K_SOFTMAX ? yo + r * inner : tmp;                                \
                tg__vm_binary(TG__VM_SUB, 1, DT, w, xo + r * inner, mx, e);                        \
                if (j->kind == K_LOG_SOFTMAX)                                                      \
                    memcpy(yo + r * inner, e, (size_t)w * sizeof(T));                              \
                tg__vm_exp(1, DT, w, e, e);                                                        \
                tg__vm_add_rows(DT, 1, w, 0, e, acc);                                              \
            }                                                                                      \
            if (j->kind == K_SOFTMAX) {                                                            \
                for (int64_t i = 0; i < w; i++)                                                    \
                    tmp[i] = (T)(1.0 / acc[i]);                                                    \
                for (int64_t r = 0; r < n; r++)                                                    \
                    tg__vm_binary(TG__VM_MUL, 1, DT, w, yo + r * inner, tmp, yo + r * inner);      \
                continue;                                                                          \
            }                                                                                      \
            tg__vm_log(1, TG_F64, w, acc, acc);                                                    \
            if (j->kind == K_LOGSUMEXP) {                                                          \
                for (int64_t i = 0; i < w; i++)                                                    \
                    yo[i] = (T)(mx[i] + acc[i]);                                                   \
                continue;                                                                          \
            }                                                                                      \
            for (int64_t r = 0; r < n; r++) {                                                      \
                T *yr = yo + r * inner;                                                            \
                for (int64_t i = 0; i < w; i++)                                                    \
                    yr[i] = (T)(yr[i] - acc[i]);                                                   \
            }                                                                                      \
        }                                                                                          \
    }
COLUMN_BLOCKS(float, column_blocks_f32, TG_F32)
COLUMN_BLOCKS(double, column_blocks_f64, TG_F64)

/* Rows (or column blocks) are independent: large inputs split them over the threads. */
static void run(const tg_kernel *k, int kind)
{
    softmax_job j = {k->in[0], k->out, kind, 0, 0, 0, 0};
    int axis = span_axis(((const axis_attr *)k->attr)->axis, k->in[0]->ndim);
    split_axis(k->in[0], axis, &j.outer, &j.n, &j.inner);
    double cost = 4.0 * (double)k->in[0]->numel;
    if (j.inner == 1) {
        tg__parallel_for(k->threads, j.outer, cost, last_axis_rows, &j);
        return;
    }
    j.blocks = (j.inner + CHUNK - 1) / CHUNK;
    tg__parallel_for(k->threads, j.outer * j.blocks, cost,
                     k->out->dtype == TG_F32 ? column_blocks_f32 : column_blocks_f64, &j);
}

/* sum(t, axis, keepdim); a 0-d t is its own sum (tg_sum has no axis 0 there). */
static tg_tensor sum_keep(tg_tensor t, int axis)
{
    return tg_ndim(t) == 0 ? t : tg_sum(t, 1, &axis, true);
}

/* The cases every op here is checked on: 2-d along each axis, 3-d along a negative and a leading
 * axis. Moderate values: finite differences need them (the 1e4 rows are checked against PyTorch
 * in tests/test_reference.c). */
static int example_axis(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int64_t s34[] = {3, 4}, s234[] = {2, 3, 4};
    static const int axes[] = {0, 1, -2, -1, 0};
    axis_attr *at = attr;
    if (index >= 5)
        return 0;
    at->axis = axes[index];
    at->keepdim = index % 2;
    if (index < 2)
        in[0] = tg__example(tp, 2, s34, -2, 2, 0, 71 + (uint64_t)index);
    else
        in[0] = tg__example(tp, 3, s234, -2, 2, 0, 71 + (uint64_t)index);
    return 1;
}

/* y = exp(x - max) / sum(exp(x - max));  dx += y * (g - sum(g * y, axis, keepdim)) */
static void softmax_forward(const tg_kernel *k) { run(k, K_SOFTMAX); }
static void softmax_backward(const tg_backward_io *io)
{
    tg_tensor g = io->grad_output, y = io->output;
    int axis = span_axis(((const axis_attr *)io->attr)->axis, tg_ndim(y));
    io->grad_inputs[0] = tg_mul(y, tg_sub(g, sum_keep(tg_mul(g, y), axis)));
}
const tg_op_def tg__op_softmax = {.name = "softmax",
                                  .ninputs = 1,
                                  .attr_size = sizeof(axis_attr),
                                  .check = same_shape_check,
                                  .forward = softmax_forward,
                                  .backward = softmax_backward,
                                  .example = example_axis};
tg_tensor tg_softmax(tg_tensor a, int axis)
{
    axis_attr at = {axis, 0};
    return tg__apply1(TG__OP_softmax, a, &at);
}

/* y = x - logsumexp(x);  dx += g - exp(y) * sum(g, axis, keepdim)
 * exp(y) is taken as softmax(x): the same value, computed stably, and differentiable again
 * without depending on the elementwise exp op. */
static void log_softmax_forward(const tg_kernel *k) { run(k, K_LOG_SOFTMAX); }
static void log_softmax_backward(const tg_backward_io *io)
{
    tg_tensor g = io->grad_output, x = io->inputs[0];
    int axis = ((const axis_attr *)io->attr)->axis;
    tg_tensor sm = tg_softmax(x, axis);
    io->grad_inputs[0] = tg_sub(g, tg_mul(sm, sum_keep(g, span_axis(axis, tg_ndim(x)))));
}
const tg_op_def tg__op_log_softmax = {.name = "log_softmax",
                                      .ninputs = 1,
                                      .attr_size = sizeof(axis_attr),
                                      .check = same_shape_check,
                                      .forward = log_softmax_forward,
                                      .backward = log_softmax_backward,
                                      .example = example_axis};
tg_tensor tg_log_softmax(tg_tensor a, int axis)
{
    axis_attr at = {axis, 0};
    return tg__apply1(TG__OP_log_softmax, a, &at);
}

/* y = max + log(sum(exp(x - max)));  dx += g_k * exp(x - y_k)   (g_k: g in keepdim form)
 * exp(x - y_k) is taken as softmax(x), the same value (see log_softmax). */
static void logsumexp_forward(const tg_kernel *k) { run(k, K_LOGSUMEXP); }
static void logsumexp_backward(const tg_backward_io *io)
{
    const axis_attr *at = io->attr;
    tg_tensor g = io->grad_output, x = io->inputs[0];
    int nd = tg_ndim(x);
    if (!at->keepdim && nd > 0) {
        int64_t shape[TG_MAX_DIMS];
        memcpy(shape, tg_shape(x), (size_t)nd * sizeof *shape);
        shape[span_axis(at->axis, nd)] = 1;
        g = tg_reshape(g, nd, shape);
    }
    io->grad_inputs[0] = tg_mul(g, tg_softmax(x, at->axis));
}
const tg_op_def tg__op_logsumexp = {.name = "logsumexp",
                                    .ninputs = 1,
                                    .attr_size = sizeof(axis_attr),
                                    .check = reduce_check,
                                    .forward = logsumexp_forward,
                                    .backward = logsumexp_backward,
                                    .example = example_axis};
tg_tensor tg_logsumexp(tg_tensor a, int axis, bool keepdim)
{
    axis_attr at = {axis, keepdim};
    return tg__apply1(TG__OP_logsumexp, a, &at);
}
