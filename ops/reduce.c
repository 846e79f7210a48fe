/* reduce.c — reductions: sum mean max min over axes, and sum_to (the broadcast reduction). */
#include "kernels.h"
#include "ops.h"
#include "parallel.h"
#include "vmath.h"

typedef struct reduce_attr {
    int naxes; /* 0: all axes; -1: invalid request (reported by the check) */
    int axes[TG_MAX_DIMS];
    int keepdim;
} reduce_attr;

/* Marks reduced axes in `mask`; fails on out-of-range or repeated axes. */
static tg_status reduce_axes(tg_check *c, const reduce_attr *at, bool *mask)
{
    int nd = c->in[0]->ndim;
    if (at->naxes < 0 || at->naxes > TG_MAX_DIMS)
        return tg_check_fail(c, TG_INVALID, "invalid axis list");
    for (int d = 0; d < nd; d++)
        mask[d] = at->naxes == 0;
    for (int i = 0; i < at->naxes; i++) {
        int ax = at->axes[i] < 0 ? at->axes[i] + nd : at->axes[i];
        if (nd == 0 && (at->axes[i] == 0 || at->axes[i] == -1) && at->naxes == 1)
            return TG_OK; /* a 0-d tensor has one implicit axis of size 1, as in PyTorch */
        if (ax < 0 || ax >= nd)
            return tg_check_fail(c, TG_RANGE, "axis %d out of range for %d dims", at->axes[i], nd);
        if (mask[ax])
            return tg_check_fail(c, TG_INVALID, "axis %d repeated", at->axes[i]);
        mask[ax] = true;
    }
    return TG_OK;
}

static tg_status reduce_check(tg_check *c)
{
    const reduce_attr *at = c->attr;
    bool mask[TG_MAX_DIMS];
    tg_status st = tg_check_float(c, 0);
    if (!st)
        st = reduce_axes(c, at, mask);
    if (st)
        return st;
    const tg_view *x = c->in[0];
    c->out->dtype = x->dtype;
    c->out->ndim = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (!mask[d])
            c->out->shape[c->out->ndim++] = x->shape[d];
        else if (at->keepdim)
            c->out->shape[c->out->ndim++] = 1;
    }
    return TG_OK;
}

/* Output stride (in elements) of each input dim: 0 for dims that are reduced. `reduced[d]`
 * marks them; the output is the input's shape with those dims dropped (or kept as 1). */
static void out_strides(const tg_view *x, const bool *reduced, int64_t *ostride)
{
    int64_t run = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        if (reduced[d] || x->shape[d] == 1) {
            ostride[d] = 0;
        } else {
            ostride[d] = run;
            run *= x->shape[d];
        }
    }
}

enum { R_SUM, R_MAX, R_MIN };

/* The general case: y[out(i)] (op)= x[i] for every input element, walking the input row by
 * row (reductions whose merged shape is none of the fast cases below). */
#define REDUCE_LOOP(T, name)                                                                       \
    static void name(const tg_view *x, const int64_t *ostride, int kind, T *y, int64_t ny)         \
    {                                                                                              \
        T init = kind == R_SUM ? 0 : kind == R_MAX ? -INFINITY : INFINITY;                         \
        for (int64_t i = 0; i < ny; i++)                                                           \
            y[i] = init;                                                                           \
        if (x->numel == 0)                                                                         \
            return;                                                                                \
        const T *xs = x->data;                                                                     \
        int nd = x->ndim;                                                                          \
        int64_t inner = nd ? x->shape[nd - 1] : 1, istride = nd ? ostride[nd - 1] : 0;             \
        int64_t idx[TG_MAX_DIMS] = {0};                                                            \
        for (int64_t row = 0; row < x->numel / inner; row++) {                                     \
            int64_t off = 0;                                                                       \
            for (int d = 0; d < nd - 1; d++)                                                       \
                off += idx[d] * ostride[d];                                                        \
            const T *xr = xs + row * inner;                                                        \
            T *yr = y + off;                                                                       \
            if (istride == 0) {                                                                    \
                double acc = yr[0];                                                                \
                if (kind == R_SUM)                                                                 \
                    for (int64_t j = 0; j < inner; j++)                                            \
                        acc += xr[j];                                                              \
                else if (kind == R_MAX)                                                            \
                    for (int64_t j = 0; j < inner; j++)                                            \
                        acc = (xr[j] > acc || isnan(xr[j])) ? xr[j] : acc;                         \
                else                                                                               \
                    for (int64_t j = 0; j < inner; j++)                                            \
                        acc = (xr[j] < acc || isnan(xr[j])) ? xr[j] : acc;                         \
                yr[0] = (T)acc;                                                                    \
            } else if (kind == R_SUM) {                                                            \
                for (int64_t j = 0; j < inner; j++)                                                \
                    yr[j] += xr[j];                                                                \
            } else if (kind == R_MAX) {                                                            \
                for (int64_t j = 0; j < inner; j++)                                                \
                    yr[j] = (xr[j] > yr[j] || isnan(xr[j])) ? xr[j] : yr[j];                       \
            } else {                                                                               \
                for (int64_t j = 0; j < inner; j++)                                                \
                    yr[j] = (xr[j] < yr[j] || isnan(xr[j])) ? xr[j] : yr[j];                       \
            }                                                                                      \
            for (int d = nd - 2; d >= 0; d--) {                                                    \
                if (++idx[d] < x->shape[d])                                                        \
                    break;                                                                         \
                idx[d] = 0;                                                                        \
            }                                                                                      \
        }                                                                                          \
    }
REDUCE_LOOP(float, reduce_f32)
REDUCE_LOOP(double, reduce_f64)

/* ---- the fast cases, on vmath's SIMD reductions and the context's threads ----------------
 *
 * After dropping size-1 dims and merging neighbours of the same kind, almost every reduction
 * is one of
 *   [K, R]      rows: y[k] = reduce of a contiguous row (R alone: everything);
 *   [O, R, K]   columns: y[o, j] = reduce over r of x[o, r, j] (O may be 1, R may be 1);
 *   [R1, K, R2] y[k] = reduce over r1 of the rows x[r1, k, :] (a conv bias's gradient).
 * Sums accumulate in double for both types, in several SIMD lanes along a row and one double per
 * column down the rows, and round once to the element type at the end: an f32 sum of 16M
 * elements keeps about 1e-16 relative error before that rounding, where one f32 accumulator
 * would lose up to 16M * 2^-24. Every result is computed in an order fixed by the shape alone
 * (long rows in fixed blocks of RB elements whose partial sums are added in order), so it does
 * not depend on the thread count. */

/* Elements per block of a long row; a row has at most NB_MAX of them. */
#define RB_MIN 65536
#define NB_MAX 64
/* Columns per block of the column case: sums (their double accumulators live on the stack),
 * and max/min (which accumulate in the output itself, so wider blocks stream longer runs). */
#define CB 1024
#define CB_EXTREME 16384

typedef struct reduce_job {
    const tg_view *x, *y;
    int kind;
    double scale;
    int64_t outer, rows, cols; /* the case's sizes: [outer, rows, cols] or [rows, cols, inner] */
    int64_t inner, blocks, rb; /* rows case: blocks of rb elements per row; columns: width */
    double *part;              /* rows case: partial results of one long row */
} reduce_job;

static size_t esize(const tg_view *v) { return tg_dtype_size(v->dtype); }

/* Reduction of n contiguous elements to a double. */
static double reduce_span(int kind, tg_dtype dt, int64_t n, const void *x)
{
    tg__vm_red op = kind == R_SUM ? TG__VM_SUM : kind == R_MAX ? TG__VM_MAXALL : TG__VM_MINALL;
    return tg__vm_reduce(op, dt, n, x, 0, NULL);
}

/* Two partial results combined (max/min keep NaN). */
static double combine(int kind, double a, double b)
{
    if (kind == R_SUM)
        return a + b;
    if (isnan(a) || isnan(b))
        return NAN;
    return kind == R_MAX ? (b > a ? b : a) : (b < a ? b : a);
}

static void store(const tg_view *y, int64_t i, double v)
{
    if (y->dtype == TG_F32)
        ((float *)y->data)[i] = (float)v;
    else
        ((double *)y->data)[i] = v;
}

/* Rows case, short rows: rows [r0, r1), one result each. */
static void rows_range(void *user, int64_t r0, int64_t r1)
{
    const reduce_job *j = user;
    const char *x = j->x->data;
    for (int64_t r = r0; r < r1; r++) {
        double v =
            reduce_span(j->kind, j->x->dtype, j->cols, x + (size_t)(r * j->cols) * esize(j->x));
        store(j->y, r, j->kind == R_SUM ? v * j->scale : v);
    }
}

/* Rows case, one long row (j->rows holds its index): blocks [b0, b1) into j->part. */
static void row_blocks(void *user, int64_t b0, int64_t b1)
{
    reduce_job *j = user;
    const char *row = (const char *)j->x->data + (size_t)(j->rows * j->cols) * esize(j->x);
    for (int64_t b = b0; b < b1; b++) {
        int64_t lo = b * j->rb, n = j->cols - lo < j->rb ? j->cols - lo : j->rb;
        j->part[b] = reduce_span(j->kind, j->x->dtype, n, row + (size_t)lo * esize(j->x));
    }
}

/* Columns case: units [u0, u1) of (outer index, block of cb columns). */
static void column_blocks(void *user, int64_t u0, int64_t u1)
{
    const reduce_job *j = user;
    tg_dtype dt = j->x->dtype;
    size_t es = esize(j->x);
    int64_t cb = j->rb, nb = (j->cols + cb - 1) / cb;
    double acc[CB];
    for (int64_t u = u0; u < u1; u++) {
        int64_t o = u / nb, c0 = u % nb * cb, w = j->cols - c0 < cb ? j->cols - c0 : cb;
        const char *x = (const char *)j->x->data + (size_t)(o * j->rows * j->cols + c0) * es;
        int64_t yi = o * j->cols + c0;
        if (j->kind == R_SUM) {
            for (int64_t i = 0; i < w; i++)
                acc[i] = 0;
            tg__vm_add_rows(dt, j->rows, w, j->cols, x, acc);
            for (int64_t i = 0; i < w; i++)
                store(j->y, yi + i, acc[i] * j->scale);
            continue;
        }
        /* max/min straight into the output, a row at a time (NaN-propagating) */
        char *y = (char *)j->y->data + (size_t)yi * es;
        for (int64_t i = 0; i < w; i++)
            store(j->y, yi + i, j->kind == R_MAX ? -INFINITY : INFINITY);
        tg__vm_op op = j->kind == R_MAX ? TG__VM_MAX : TG__VM_MIN;
        for (int64_t r = 0; r < j->rows; r++)
            tg__vm_binary(op, 1, dt, w, x + (size_t)(r * j->cols) * es, y, y);
    }
}

/* [R1, K, R2] case: outputs [k0, k1). */
static void strided_rows(void *user, int64_t k0, int64_t k1)
{
    const reduce_job *j = user;
    size_t es = esize(j->x);
    for (int64_t k = k0; k < k1; k++) {
        double v = j->kind == R_SUM ? 0 : j->kind == R_MAX ? -INFINITY : INFINITY;
        for (int64_t r = 0; r < j->outer; r++) {
            const char *row =
                (const char *)j->x->data + (size_t)((r * j->rows + k) * j->inner) * es;
            v = combine(j->kind, v, reduce_span(j->kind, j->x->dtype, j->inner, row));
        }
        store(j->y, k, j->kind == R_SUM ? v * j->scale : v);
    }
}

/* Runs the reduction through one of the fast cases; false if its shape is none of them. */
static bool reduce_fast(const tg_kernel *k, const bool *reduced, int kind, double scale)
{
    const tg_view *x = k->in[0];
    int64_t size[TG_MAX_DIMS];
    bool red[TG_MAX_DIMS];
    int m = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (x->shape[d] == 1)
            continue;
        if (m > 0 && red[m - 1] == reduced[d])
            size[m - 1] *= x->shape[d];
        else
            size[m] = x->shape[d], red[m] = reduced[d], m++;
    }
    reduce_job j = {x, k->out, kind, scale, 1, 1, 1, 1, 1, 0, NULL};
    double cost = (double)x->numel;
    if (m == 0 || (m == 1 && red[0]) || (m == 2 && !red[0] && red[1])) {
        j.rows = m == 2 ? size[0] : 1; /* [rows, cols], cols reduced */
        j.cols = m == 0 ? 1 : size[m - 1];
        if (j.cols <= RB_MIN) {
            tg__parallel_for(k->threads, j.rows, cost, rows_range, &j);
            return true;
        }
        j.rb = (j.cols + NB_MAX - 1) / NB_MAX;
        j.rb = j.rb < RB_MIN ? RB_MIN : (j.rb + 63) / 64 * 64;
        j.blocks = (j.cols + j.rb - 1) / j.rb;
        double part[NB_MAX];
        j.part = part;
        int64_t rows = j.rows;
        for (int64_t r = 0; r < rows; r++) {
            j.rows = r;
            tg__parallel_for(k->threads, j.blocks, (double)j.cols, row_blocks, &j);
            double v = j.part[0];
            for (int64_t b = 1; b < j.blocks; b++)
                v = combine(kind, v, j.part[b]);
            store(k->out, r, kind == R_SUM ? v * scale : v);
        }
        return true;
    }
    if ((m == 1 && !red[0]) || (m == 2 && red[0] && !red[1])
        || (m == 3 && !red[0] && red[1] && !red[2])) {
        j.outer = m == 3 ? size[0] : 1; /* [outer, rows, cols], rows reduced */
        j.rows = m == 1 ? 1 : size[m - 2];
        j.cols = size[m - 1];
        j.rb = kind == R_SUM ? CB : CB_EXTREME;
        tg__parallel_for(k->threads, j.outer * ((j.cols + j.rb - 1) / j.rb), cost, column_blocks,
                         &j);
        return true;
    }
    if (m == 3 && red[0] && !red[1] && red[2]) {
        j.outer = size[0], j.rows = size[1], j.inner = size[2];
        tg__parallel_for(k->threads, j.rows, cost, strided_rows, &j);
        return true;
    }
    return false;
}

static void reduce_run(const tg_kernel *k, const bool *reduced, int kind, double scale)
{
    if (k->in[0]->numel > 0 && reduce_fast(k, reduced, kind, scale))
        return;
    int64_t ostride[TG_MAX_DIMS] = {0};
    out_strides(k->in[0], reduced, ostride);
    int64_t n = k->out->numel;
    if (k->out->dtype == TG_F32) {
        float *y = k->out->data;
        reduce_f32(k->in[0], ostride, kind, y, n);
        for (int64_t i = 0; scale != 1 && i < n; i++)
            y[i] = (float)(y[i] * scale);
    } else {
        double *y = k->out->data;
        reduce_f64(k->in[0], ostride, kind, y, n);
        for (int64_t i = 0; scale != 1 && i < n; i++)
            y[i] *= scale;
    }
}

static int64_t reduced_count(const tg_view *x, const reduce_attr *at, bool *mask)
{
    int nd = x->ndim;
    for (int d = 0; d < nd; d++)
        mask[d] = at->naxes == 0;
    for (int i = 0; i < at->naxes && nd > 0; i++)
        mask[at->axes[i] < 0 ? at->axes[i] + nd : at->axes[i]] = true;
    int64_t count = 1;
    for (int d = 0; d < nd; d++)
        if (mask[d])
            count *= x->shape[d];
    return count;
}

/* The gradient of a reduction, reshaped to keepdim form so it broadcasts against the input. */
static tg_tensor keepdim_grad(const tg_backward_io *io, tg_tensor t)
{
    const reduce_attr *at = io->attr;
    if (at->keepdim)
        return t;
    tg_tensor x = io->inputs[0];
    bool mask[TG_MAX_DIMS];
    tg_view xv = tg__meta(x);
    reduced_count(&xv, at, mask);
    int64_t shape[TG_MAX_DIMS];
    int nd = tg_ndim(x);
    for (int d = 0; d < nd; d++)
        shape[d] = mask[d] ? 1 : tg_dim(x, d);
    return tg_reshape(t, nd, shape);
}

static int example_reduce(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int64_t s[] = {2, 3, 4};
    reduce_attr *at = attr;
    memset(at, 0, sizeof *at);
    switch (index) {
    case 0: /* everything */
        break;
    case 1:
        at->naxes = 1, at->axes[0] = 1;
        break;
    case 2:
        at->naxes = 2, at->axes[0] = 0, at->axes[1] = -1, at->keepdim = 1;
        break;
    case 3:
        at->naxes = 1, at->axes[0] = 2;
        break;
    case 4: /* a 0-d input reduced over its implicit axis */
        at->naxes = 1, at->axes[0] = -1, at->keepdim = 1;
        in[0] = tg__example(tp, 0, NULL, -1, 1, 0, 32);
        return 1;
    default:
        return 0;
    }
    /* Distinct values (no ties), so max/min have a gradient everywhere. */
    in[0] = tg_add(tg_mul_scalar(tg_arange(tp, TG_F64, 24), 0.1),
                   tg__example(tp, 1, (int64_t[]){24}, 0, 0.05, 0, 31));
    in[0] = tg_reshape(in[0], 3, s);
    return 1;
}

/* y = sum over axes of x;  dx += broadcast(g) */
static void sum_forward(const tg_kernel *k)
{
    bool mask[TG_MAX_DIMS];
    reduced_count(k->in[0], k->attr, mask);
    reduce_run(k, mask, R_SUM, 1.0);
}
static void sum_backward(const tg_backward_io *io)
{
    tg_tensor x = io->inputs[0];
    io->grad_inputs[0] =
        tg_broadcast_to(keepdim_grad(io, io->grad_output), tg_ndim(x), tg_shape(x));
}
const tg_op_def tg__op_sum = {.name = "sum",
                              .ninputs = 1,
                              .attr_size = sizeof(reduce_attr),
                              .check = reduce_check,
                              .forward = sum_forward,
                              .backward = sum_backward,
                              .example = example_reduce};

/* y = mean over axes of x;  dx += broadcast(g) / count */
static void mean_forward(const tg_kernel *k)
{
    bool mask[TG_MAX_DIMS];
    int64_t count = reduced_count(k->in[0], k->attr, mask);
    reduce_run(k, mask, R_SUM, count ? 1.0 / (double)count : NAN);
}
static void mean_backward(const tg_backward_io *io)
{
    tg_tensor x = io->inputs[0];
    bool mask[TG_MAX_DIMS];
    tg_view xv = tg__meta(x);
    int64_t count = reduced_count(&xv, io->attr, mask);
    tg_tensor g = tg_mul_scalar(keepdim_grad(io, io->grad_output), 1.0 / (double)count);
    io->grad_inputs[0] = tg_broadcast_to(g, tg_ndim(x), tg_shape(x));
}
const tg_op_def tg__op_mean = {.name = "mean",
                               .ninputs = 1,
                               .attr_size = sizeof(reduce_attr),
                               .check = reduce_check,
                               .forward = mean_forward,
                               .backward = mean_backward,
                               .example = example_reduce};

/* y = max (min) over axes of x;  dx += g * [x == y] / (number of ties) */
static void extreme_backward(const tg_backward_io *io)
{
    tg_tensor x = io->inputs[0];
    tg_tensor mask = tg_eq(x, keepdim_grad(io, io->output));
    int all[TG_MAX_DIMS];
    const reduce_attr *at = io->attr;
    int n = at->naxes;
    for (int i = 0; i < (n ? n : tg_ndim(x)); i++)
        all[i] = n ? at->axes[i] : i;
    tg_tensor ties = tg_sum(mask, n ? n : tg_ndim(x), all, true);
    io->grad_inputs[0] = tg_mul(tg_div(mask, ties), keepdim_grad(io, io->grad_output));
}
static void max_forward(const tg_kernel *k)
{
    bool mask[TG_MAX_DIMS];
    reduced_count(k->in[0], k->attr, mask);
    reduce_run(k, mask, R_MAX, 1.0);
}
static void min_forward(const tg_kernel *k)
{
    bool mask[TG_MAX_DIMS];
    reduced_count(k->in[0], k->attr, mask);
    reduce_run(k, mask, R_MIN, 1.0);
}
static tg_status extreme_check(tg_check *c)
{
    tg_status st = reduce_check(c);
    if (!st && c->in[0]->numel == 0)
        return tg_check_fail(c, TG_SHAPE, "max/min of an empty tensor");
    return st;
}
const tg_op_def tg__op_max = {.name = "max",
                              .ninputs = 1,
                              .attr_size = sizeof(reduce_attr),
                              .check = extreme_check,
                              .forward = max_forward,
                              .backward = extreme_backward,
                              .example = example_reduce};
const tg_op_def tg__op_min = {.name = "min",
                              .ninputs = 1,
                              .attr_size = sizeof(reduce_attr),
                              .check = extreme_check,
                              .forward = min_forward,
                              .backward = extreme_backward,
                              .example = example_reduce};

static tg_tensor reduce(int id, tg_tensor a, int naxes, const int *axes, bool keepdim)
{
    reduce_attr at = {0};
    at.keepdim = keepdim;
    at.naxes = naxes;
    if (naxes < 0 || naxes > TG_MAX_DIMS || (naxes > 0 && !axes))
        at.naxes = -1;
    for (int i = 0; i < at.naxes; i++)
        at.axes[i] = axes[i];
    return tg__apply1(id, a, &at);
}
tg_tensor tg_sum(tg_tensor a, int naxes, const int *axes, bool keepdim)
{
    return reduce(TG__OP_sum, a, naxes, axes, keepdim);
}
tg_tensor tg_mean(tg_tensor a, int naxes, const int *axes, bool keepdim)
{
    return reduce(TG__OP_mean, a, naxes, axes, keepdim);
}
tg_tensor tg_max(tg_tensor a, int naxes, const int *axes, bool keepdim)
{
    return reduce(TG__OP_max, a, naxes, axes, keepdim);
}
tg_tensor tg_min(tg_tensor a, int naxes, const int *axes, bool keepdim)
{
    return reduce(TG__OP_min, a, naxes, axes, keepdim);
}
tg_tensor tg_sum_all(tg_tensor a) { return reduce(TG__OP_sum, a, 0, NULL, false); }
tg_tensor tg_mean_all(tg_tensor a) { return reduce(TG__OP_mean, a, 0, NULL, false); }
tg_tensor tg_max_all(tg_tensor a) { return reduce(TG__OP_max, a, 0, NULL, false); }
tg_tensor tg_min_all(tg_tensor a) { return reduce(TG__OP_min, a, 0, NULL, false); }

/* y = x summed over the dims where `shape` broadcasts to x;  dx += broadcast_to(g, x.shape) */
typedef struct shape_attr {
    int ndim;
    int64_t shape[TG_MAX_DIMS];
} shape_attr;

static bool broadcasts_to(int nd, const int64_t *from, const tg_view *to)
{
    if (nd > to->ndim)
        return false;
    int off = to->ndim - nd;
    for (int d = 0; d < nd; d++)
        if (from[d] != 1 && from[d] != to->shape[off + d])
            return false;
    return true;
}

static tg_status sum_to_check(tg_check *c)
{
    const shape_attr *at = c->attr;
    int64_t numel;
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    if (at->ndim < 0 || !tg__shape_ok(at->ndim, at->shape, &numel))
        return tg_check_fail(c, TG_SHAPE, "invalid target shape");
    if (!broadcasts_to(at->ndim, at->shape, c->in[0]))
        return tg_check_fail(c, TG_SHAPE, "target shape does not broadcast to the input");
    c->out->dtype = c->in[0]->dtype;
    c->out->ndim = at->ndim;
    memcpy(c->out->shape, at->shape, sizeof at->shape);
    return TG_OK;
}
static void sum_to_forward(const tg_kernel *k)
{
    const shape_attr *at = k->attr;
    const tg_view *x = k->in[0];
    bool mask[TG_MAX_DIMS];
    int off = x->ndim - at->ndim;
    for (int d = 0; d < x->ndim; d++)
        mask[d] = d < off || (at->shape[d - off] == 1 && x->shape[d] != 1);
    reduce_run(k, mask, R_SUM, 1.0);
}
static void sum_to_backward(const tg_backward_io *io)
{
    tg_tensor x = io->inputs[0];
    io->grad_inputs[0] = tg_broadcast_to(io->grad_output, tg_ndim(x), tg_shape(x));
}
static int example_sum_to(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int64_t s[] = {2, 3, 4};
    shape_attr *at = attr;
    memset(at, 0, sizeof *at);
    switch (index) {
    case 0:
        at->ndim = 1, at->shape[0] = 4;
        break;
    case 1:
        at->ndim = 3, at->shape[0] = 2, at->shape[1] = 1, at->shape[2] = 4;
        break;
    case 2:
        at->ndim = 0;
        break;
    default:
        return 0;
    }
    in[0] = tg__example(tp, 3, s, -1, 1, 0, 41);
    return 1;
}
const tg_op_def tg__op_sum_to = {.name = "sum_to",
                                 .ninputs = 1,
                                 .attr_size = sizeof(shape_attr),
                                 .check = sum_to_check,
                                 .forward = sum_to_forward,
                                 .backward = sum_to_backward,
                                 .example = example_sum_to};

tg_tensor tg_sum_to(tg_tensor a, int ndim, const int64_t *shape)
{
    shape_attr at = {0};
    at.ndim = ndim < 0 || ndim > TG_MAX_DIMS || (ndim > 0 && !shape) ? -1 : ndim;
    for (int d = 0; d < at.ndim; d++)
        at.shape[d] = shape[d];
    return tg__apply1(TG__OP_sum_to, a, &at);
}
