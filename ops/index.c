/* index.c — integer indexing: index_select and gather, and their backward ops index_add and
 * scatter_add. Index tensors are i64 and never carry gradients. */
#include "kernels.h"
#include "ops.h"

#include <stdio.h>

/* index_select / index_add: the axis, and (index_add only) the size of the dim scattered into. */
typedef struct select_attr {
    int axis;
    int64_t size;
} select_attr;

/* gather / scatter_add: the axis, and (scatter_add only) the full shape scattered into. */
typedef struct gather_attr {
    int axis;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
} gather_attr;

/* Input 0 is data of a known dtype, a float gradient where `grad` (index_add, scatter_add);
 * input 1 is an i64 index tensor. */
static tg_status check_operands(tg_check *c, bool grad)
{
    tg_status st = grad ? tg_check_float(c, 0) : TG_OK;
    if (!st && c->in[1]->dtype != TG_I64)
        st = tg_check_fail(c, TG_DTYPE, "index (input 1) must be i64, not %s",
                           tg_dtype_name(c->in[1]->dtype));
    if (!st && tg_dtype_size(c->in[0]->dtype) == 0)
        st = tg_check_fail(c, TG_DTYPE, "unknown dtype %d", (int)c->in[0]->dtype);
    return st;
}

/* index_select / index_add: the index is 1-d and axis names one of ndim dims (*ax). */
static tg_status check_select_axis(tg_check *c, int ndim, int axis, int *ax)
{
    if (c->in[1]->ndim != 1)
        return tg_check_fail(c, TG_SHAPE, "index must be 1-d, not %d-d", c->in[1]->ndim);
    *ax = tg__axis(axis, ndim);
    if (*ax < 0)
        return tg_check_fail(c, TG_RANGE, "axis %d out of range for %d dims", axis, ndim);
    return TG_OK;
}

/* Every entry of the index view lies in [0, size); the first that does not is named with its
 * position (as a multi-index of the index tensor). */
static tg_status check_index_values(tg_check *c, const tg_view *idx, int64_t size, int axis)
{
    const int64_t *v = idx->data;
    for (int64_t i = 0; i < idx->numel; i++) {
        if (v[i] >= 0 && v[i] < size)
            continue;
        int64_t rest = i, coord[TG_MAX_DIMS];
        for (int d = idx->ndim - 1; d >= 0; d--) {
            coord[d] = idx->shape[d] ? rest % idx->shape[d] : 0;
            rest = idx->shape[d] ? rest / idx->shape[d] : 0;
        }
        char pos[200];
        tg_format_shape(pos, sizeof pos, 0, idx->ndim, coord);
        return tg_check_fail(c, TG_RANGE,
                             "index %lld at position %s is out of range for axis %d "
                             "of size %lld",
                             (long long)v[i], pos, axis, (long long)size);
    }
    return TG_OK;
}

/* Calls name##_f32, name##_f64 or name##_i64 by dtype (the checks admit only these three): the
 * kernels below are written once as a macro over the element type T and instantiated for each. */
#define BY_DTYPE(dt, name, ...)                                                                    \
    ((dt) == TG_F32   ? name##_f32(__VA_ARGS__)                                                    \
     : (dt) == TG_F64 ? name##_f64(__VA_ARGS__)                                                    \
                      : name##_i64(__VA_ARGS__))
#define FOR_EACH_DTYPE(MACRO, name)                                                                \
    MACRO(float, name##_f32) MACRO(double, name##_f64) MACRO(int64_t, name##_i64)

/* The geometry of index_select / index_add: [outer, dim, inner] data, n index entries. */
typedef struct rows {
    int64_t outer, inner, n, dim;
    const int64_t *index;
} rows;

/* ---- index_select / index_add ------------------------------------------------------------ */

/* y = a[..., index, ...] along axis;  da += index_add(g, index; axis, a.shape[axis]) */
static tg_status index_select_check(tg_check *c)
{
    const select_attr *at = c->attr;
    const tg_view *a = c->in[0], *idx = c->in[1];
    int ax = 0;
    tg_status st = check_operands(c, false);
    if (!st)
        st = check_select_axis(c, a->ndim, at->axis, &ax);
    if (!st)
        st = check_index_values(c, idx, a->shape[ax], ax);
    if (st)
        return st;
    *c->out = *a;
    c->out->shape[ax] = idx->numel;
    return TG_OK;
}
/* Rows of `inner` elements: y[o, j, :] = x[o, index[j], :] (x has r->dim rows per o). */
#define SELECT_ROWS(T, name)                                                                       \
    static void name(const rows *r, const void *x, void *y)                                        \
    {                                                                                              \
        for (int64_t o = 0; o < r->outer; o++) {                                                   \
            const T *xo = (const T *)x + o * r->dim * r->inner;                                    \
            T *yo = (T *)y + o * r->n * r->inner;                                                  \
            for (int64_t j = 0; j < r->n; j++) {                                                   \
                const T *xr = xo + r->index[j] * r->inner;                                         \
                T *yr = yo + j * r->inner;                                                         \
                for (int64_t e = 0; e < r->inner; e++)                                             \
                    yr[e] = xr[e];                                                                 \
            }                                                                                      \
        }                                                                                          \
    }
FOR_EACH_DTYPE(SELECT_ROWS, select_rows)
static void index_select_forward(const tg_kernel *k)
{
    const select_attr *at = k->attr;
    const tg_view *x = k->in[0], *y = k->out;
    if (y->numel == 0)
        return;
    int ax = tg__axis(at->axis, x->ndim);
    rows r = {.n = k->in[1]->numel, .dim = x->shape[ax], .index = k->in[1]->data};
    tg__outer_inner(x, ax, &r.outer, &r.inner);
    BY_DTYPE(x->dtype, select_rows, &r, x->data, y->data);
}
static void index_select_backward(const tg_backward_io *io)
{
    const select_attr *at = io->attr;
    tg_tensor a = io->inputs[0];
    select_attr bt = {at->axis, tg_dim(a, at->axis)};
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg__apply2(TG__OP_index_add, io->grad_output, io->inputs[1], &bt);
}
/* Shared by index_select and index_add: the data input's shape, the index and the axis. */
static int select_case(tg_tape *tp, int index, tg_tensor *in, select_attr *at, bool add)
{
    static const int64_t idx0[] = {2, 0, 2, 3}, idx1[] = {3, 3, 1}, idx2[] = {4}, idx3[] = {1, 0};
    static const struct {
        int axis, nd, nidx;
        int64_t shape[3];
        const int64_t *idx;
    } cases[] = {
        {0, 2, 4, {4, 3}, idx0},     /* repeated rows */
        {-1, 3, 3, {2, 3, 4}, idx1}, /* last axis of 3-d, repeated */
        {1, 3, 1, {2, 5, 3}, idx2},  /* middle axis, one entry */
        {-2, 2, 2, {2, 3}, idx3},    /* negative axis on 2-d, a permutation */
        {1, 2, 0, {2, 3}, idx0},     /* empty index: empty result */
    };
    /* The empty case is index_select's only: index_add's source would have no element for the
     * gradient check to perturb. */
    if (index >= (int)(sizeof cases / sizeof cases[0]) - (add ? 1 : 0))
        return 0;
    at->axis = cases[index].axis;
    int nd = cases[index].nd, ax = tg__axis(at->axis, nd);
    int64_t shape[3];
    memcpy(shape, cases[index].shape, sizeof shape);
    at->size = add ? shape[ax] : 0;
    if (add) /* index_add takes the gradient: the selected shape */
        shape[ax] = cases[index].nidx;
    in[0] = tg__example(tp, nd, shape, -1, 1, 0, 101 + (uint64_t)index);
    in[1] = tg_tensor_from(tp, TG_I64, 1, (int64_t[]){cases[index].nidx}, cases[index].idx);
    return 2;
}
static int example_index_select(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    return select_case(tp, index, in, attr, false);
}
const tg_op_def tg__op_index_select = {.name = "index_select",
                                       .ninputs = 2,
                                       .attr_size = sizeof(select_attr),
                                       .check = index_select_check,
                                       .forward = index_select_forward,
                                       .backward = index_select_backward,
                                       .example = example_index_select};

tg_tensor tg_index_select(tg_tensor a, int axis, tg_tensor index)
{
    select_attr at = {axis, 0};
    return tg__apply2(TG__OP_index_select, a, index, &at);
}

/* y = zeros with dim axis of `size`, y[..., index[j], ...] += g[..., j, ...];
 * dg += index_select(gg, index) */
static tg_status index_add_check(tg_check *c)
{
    const select_attr *at = c->attr;
    const tg_view *g = c->in[0], *idx = c->in[1];
    int ax = 0;
    tg_status st = check_operands(c, true);
    if (!st)
        st = check_select_axis(c, g->ndim, at->axis, &ax);
    if (st)
        return st;
    if (g->shape[ax] != idx->numel)
        return tg_check_fail(c, TG_SHAPE,
                             "index has %lld entries, the source has %lld along "
                             "axis %d",
                             (long long)idx->numel, (long long)g->shape[ax], ax);
    if (at->size < 0)
        return tg_check_fail(c, TG_SHAPE, "target dim size %lld is negative", (long long)at->size);
    st = check_index_values(c, idx, at->size, ax);
    if (st)
        return st;
    *c->out = *g;
    c->out->shape[ax] = at->size;
    return TG_OK;
}
/* y[o, index[j], :] += g[o, j, :] (y has r->dim rows per o); repeated indices accumulate. */
#define ADD_ROWS(T, name)                                                                          \
    static void name(const rows *r, const void *g, void *y)                                        \
    {                                                                                              \
        for (int64_t o = 0; o < r->outer; o++) {                                                   \
            const T *go = (const T *)g + o * r->n * r->inner;                                      \
            T *yo = (T *)y + o * r->dim * r->inner;                                                \
            for (int64_t j = 0; j < r->n; j++) {                                                   \
                const T *gr = go + j * r->inner;                                                   \
                T *yr = yo + r->index[j] * r->inner;                                               \
                for (int64_t e = 0; e < r->inner; e++)                                             \
                    yr[e] += gr[e];                                                                \
            }                                                                                      \
        }                                                                                          \
    }
FOR_EACH_DTYPE(ADD_ROWS, add_rows)
static void index_add_forward(const tg_kernel *k)
{
    const select_attr *at = k->attr;
    const tg_view *g = k->in[0], *y = k->out;
    if (y->numel == 0)
        return;
    memset(y->data, 0, (size_t)y->numel * tg_dtype_size(y->dtype));
    int ax = tg__axis(at->axis, g->ndim);
    rows r = {.n = k->in[1]->numel, .dim = at->size, .index = k->in[1]->data};
    tg__outer_inner(g, ax, &r.outer, &r.inner);
    BY_DTYPE(g->dtype, add_rows, &r, g->data, y->data);
}
static void index_add_backward(const tg_backward_io *io)
{
    const select_attr *at = io->attr;
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg_index_select(io->grad_output, at->axis, io->inputs[1]);
}
static int example_index_add(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    return select_case(tp, index, in, attr, true);
}
const tg_op_def tg__op_index_add = {.name = "index_add",
                                    .ninputs = 2,
                                    .attr_size = sizeof(select_attr),
                                    .check = index_add_check,
                                    .forward = index_add_forward,
                                    .backward = index_add_backward,
                                    .example = example_index_add};

/* ---- gather / scatter_add ----------------------------------------------------------------- */

/* The index has the data's ndim and fits inside `shape` on every dim but the axis. */
static tg_status check_gather_shapes(tg_check *c, const tg_view *idx, int ndim,
                                     const int64_t *shape, int axis, int *ax)
{
    if (idx->ndim != ndim)
        return tg_check_fail(c, TG_SHAPE, "index has %d dims, the data has %d", idx->ndim, ndim);
    *ax = tg__axis(axis, ndim);
    if (*ax < 0)
        return tg_check_fail(c, TG_RANGE, "axis %d out of range for %d dims", axis, ndim);
    for (int d = 0; d < ndim; d++)
        if (d != *ax && idx->shape[d] > shape[d])
            return tg_check_fail(c, TG_SHAPE,
                                 "index has %lld along dim %d, more than the data's "
                                 "%lld",
                                 (long long)idx->shape[d], d, (long long)shape[d]);
    return check_index_values(c, idx, shape[*ax], *ax);
}

/* Row-major strides (in elements) of a shape. */
static void strides_of(int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t run = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        stride[d] = run;
        run *= shape[d];
    }
}

/* Walks the index tensor row by row (its last dim innermost). For index element (i0, .., in-1)
 * the data offset is sum_d i_d * stride[d], with the axis coordinate replaced by the index
 * value. BODY sees `e` (flat position in the index / gathered tensor) and `off` (in the data). */
#define GATHER_WALK(idx, ax, dstride, BODY)                                                        \
    do {                                                                                           \
        int nd_ = (idx)->ndim;                                                                     \
        const int64_t *iv_ = (idx)->data;                                                          \
        int64_t inner_ = (idx)->shape[nd_ - 1], c_[TG_MAX_DIMS] = {0};                             \
        /* the last dim's own step into the data: 0 when it is the axis (the value steps) */       \
        int64_t step_ = (ax) == nd_ - 1 ? 0 : (dstride)[nd_ - 1];                                  \
        for (int64_t row_ = 0; row_ < (idx)->numel / inner_; row_++) {                             \
            int64_t base_ = 0;                                                                     \
            for (int d_ = 0; d_ < nd_ - 1; d_++)                                                   \
                if (d_ != (ax))                                                                    \
                    base_ += c_[d_] * (dstride)[d_];                                               \
            for (int64_t j_ = 0; j_ < inner_; j_++) {                                              \
                int64_t e = row_ * inner_ + j_;                                                    \
                int64_t off = base_ + j_ * step_ + iv_[e] * (dstride)[ax];                         \
                BODY;                                                                              \
            }                                                                                      \
            for (int d_ = nd_ - 2; d_ >= 0; d_--) {                                                \
                if (++c_[d_] < (idx)->shape[d_])                                                   \
                    break;                                                                         \
                c_[d_] = 0;                                                                        \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* y = a gathered along axis: y[i][j][k] = a[index[i][j][k]][j][k] (axis 0);
 * da += scatter_add(g, index; axis, a.shape) */
static tg_status gather_check(tg_check *c)
{
    const gather_attr *at = c->attr;
    const tg_view *a = c->in[0], *idx = c->in[1];
    tg_status st = check_operands(c, false);
    if (st)
        return st;
    int ax;
    st = check_gather_shapes(c, idx, a->ndim, a->shape, at->axis, &ax);
    if (st)
        return st;
    *c->out = *idx;
    c->out->dtype = a->dtype;
    return TG_OK;
}
/* y[e] = x[off] over the index tensor's elements. */
#define GATHER(T, name)                                                                            \
    static void name(const tg_view *idx, int ax, const int64_t *stride, const void *x, void *y)    \
    {                                                                                              \
        const T *X = x;                                                                            \
        T *Y = y;                                                                                  \
        GATHER_WALK(idx, ax, stride, Y[e] = X[off]);                                               \
    }
FOR_EACH_DTYPE(GATHER, gather)
static void gather_forward(const tg_kernel *k)
{
    const gather_attr *at = k->attr;
    const tg_view *x = k->in[0], *y = k->out;
    if (y->numel == 0)
        return;
    int ax = tg__axis(at->axis, x->ndim);
    int64_t stride[TG_MAX_DIMS];
    strides_of(x->ndim, x->shape, stride);
    BY_DTYPE(x->dtype, gather, k->in[1], ax, stride, x->data, y->data);
}
static void gather_backward(const tg_backward_io *io)
{
    const gather_attr *at = io->attr;
    tg_tensor a = io->inputs[0];
    gather_attr bt;
    memset(&bt, 0, sizeof bt);
    bt.axis = at->axis;
    bt.ndim = tg_ndim(a);
    memcpy(bt.shape, tg_shape(a), (size_t)bt.ndim * sizeof(int64_t));
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg__apply2(TG__OP_scatter_add, io->grad_output, io->inputs[1], &bt);
}
/* Shared by gather and scatter_add: the data shape, the axis and an index of its own shape. */
static int gather_case(tg_tape *tp, int index, tg_tensor *in, gather_attr *at, bool scatter)
{
    static const int64_t v0[] = {1, 3, 3, 0, 2, 2}, v1[] = {2, 0, 1, 2, 2, 2, 0, 1},
                         v2[] = {3, 0, 0, 1, 2, 3, 3, 3, 1, 0, 2, 2}, v3[] = {0, 2, 1, 1, 2, 2};
    static const struct {
        int axis, nd;
        int64_t shape[3], ishape[3];
        const int64_t *idx;
    } cases[] = {
        {1, 2, {3, 4}, {3, 2}, v0},        /* along columns, repeats within rows */
        {0, 2, {3, 4}, {2, 4}, v1},        /* along rows, repeats within columns */
        {-1, 3, {2, 3, 4}, {2, 2, 3}, v2}, /* 3-d, negative axis, index smaller elsewhere */
        {1, 3, {2, 3, 4}, {1, 3, 2}, v3},  /* 3-d middle axis */
    };
    if (index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    int nd = cases[index].nd;
    memset(at, 0, sizeof *at);
    at->axis = cases[index].axis;
    if (scatter) { /* scatter_add takes the gathered gradient and a's shape */
        at->ndim = nd;
        memcpy(at->shape, cases[index].shape, (size_t)nd * sizeof(int64_t));
    }
    const int64_t *data_shape = scatter ? cases[index].ishape : cases[index].shape;
    in[0] = tg__example(tp, nd, data_shape, -1, 1, 0, 111 + (uint64_t)index);
    in[1] = tg_tensor_from(tp, TG_I64, nd, cases[index].ishape, cases[index].idx);
    return 2;
}
static int example_gather(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    return gather_case(tp, index, in, attr, false);
}
const tg_op_def tg__op_gather = {.name = "gather",
                                 .ninputs = 2,
                                 .attr_size = sizeof(gather_attr),
                                 .check = gather_check,
                                 .forward = gather_forward,
                                 .backward = gather_backward,
                                 .example = example_gather};

tg_tensor tg_gather(tg_tensor a, int axis, tg_tensor index)
{
    gather_attr at;
    memset(&at, 0, sizeof at);
    at.axis = axis;
    return tg__apply2(TG__OP_gather, a, index, &at);
}

/* y = zeros(shape), y[index[i][j][k]][j][k] += g[i][j][k] (axis 0);  dg += gather(gg, index) */
static tg_status scatter_add_check(tg_check *c)
{
    const gather_attr *at = c->attr;
    const tg_view *g = c->in[0], *idx = c->in[1];
    tg_status st = check_operands(c, true);
    if (st)
        return st;
    int64_t numel;
    if (at->ndim < 0 || !tg__shape_ok(at->ndim, at->shape, &numel))
        return tg_check_fail(c, TG_SHAPE, "invalid target shape");
    bool same = g->ndim == idx->ndim;
    for (int d = 0; same && d < g->ndim; d++)
        same = g->shape[d] == idx->shape[d];
    if (!same)
        return tg_check_fail(c, TG_SHAPE, "the source and the index must have the same shape");
    int ax;
    st = check_gather_shapes(c, idx, at->ndim, at->shape, at->axis, &ax);
    if (st)
        return st;
    c->out->dtype = g->dtype;
    c->out->ndim = at->ndim;
    memcpy(c->out->shape, at->shape, sizeof at->shape);
    return TG_OK;
}
/* y[off] += g[e] over the index tensor's elements; repeated indices accumulate. */
#define SCATTER(T, name)                                                                           \
    static void name(const tg_view *idx, int ax, const int64_t *stride, const void *g, void *y)    \
    {                                                                                              \
        const T *G = g;                                                                            \
        T *Y = y;                                                                                  \
        GATHER_WALK(idx, ax, stride, Y[off] += G[e]);                                              \
    }
FOR_EACH_DTYPE(SCATTER, scatter)
static void scatter_add_forward(const tg_kernel *k)
{
    const gather_attr *at = k->attr;
    const tg_view *g = k->in[0], *y = k->out;
    if (y->numel == 0)
        return;
    memset(y->data, 0, (size_t)y->numel * tg_dtype_size(y->dtype));
    if (g->numel == 0)
        return;
    int ax = tg__axis(at->axis, y->ndim);
    int64_t stride[TG_MAX_DIMS];
    strides_of(y->ndim, y->shape, stride);
    BY_DTYPE(g->dtype, scatter, k->in[1], ax, stride, g->data, y->data);
}
static void scatter_add_backward(const tg_backward_io *io)
{
    const gather_attr *at = io->attr;
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg_gather(io->grad_output, at->axis, io->inputs[1]);
}
static int example_scatter_add(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    return gather_case(tp, index, in, attr, true);
}
const tg_op_def tg__op_scatter_add = {.name = "scatter_add",
                                      .ninputs = 2,
                                      .attr_size = sizeof(gather_attr),
                                      .check = scatter_add_check,
                                      .forward = scatter_add_forward,
                                      .backward = scatter_add_backward,
                                      .example = example_scatter_add};
