/* embedding.c — rows of a table picked by i64 indices of any shape (embedding), and its backward
 * embedding_backward, which adds gradient rows back at the indices. Each is the other's
 * composite backward, so both are differentiable to any order. */
#include "kernels.h"
#include "ops.h"

#include <stdio.h>

/* embedding_backward only: the number of table rows scattered into. */
typedef struct embedding_attr {
    int64_t rows;
} embedding_attr;

/* Every index lies in [0, rows); the first that does not is named with its position as a
 * multi-index of the index tensor. */
static tg_status check_indices(tg_check *c, const tg_view *idx, int64_t rows)
{
    const int64_t *v = idx->data;
    for (int64_t i = 0; i < idx->numel; i++) {
        if (v[i] >= 0 && v[i] < rows)
            continue;
        int64_t coord[TG_MAX_DIMS], rest = i;
        for (int d = idx->ndim - 1; d >= 0; d--) {
            coord[d] = rest % idx->shape[d]; /* numel > 0: every dim is >= 1 */
            rest /= idx->shape[d];
        }
        char pos[200];
        tg_format_shape(pos, sizeof pos, 0, idx->ndim, coord);
        return tg_check_fail(c, TG_RANGE, "index %lld at position %s is out of range for %lld rows",
                             (long long)v[i], pos, (long long)rows);
    }
    return TG_OK;
}

/* Input i is an i64 index tensor with room for one more dim. */
static tg_status check_index_tensor(tg_check *c, int i)
{
    const tg_view *idx = c->in[i];
    if (idx->dtype != TG_I64)
        return tg_check_fail(c, TG_DTYPE, "indices must be i64, not %s", tg_dtype_name(idx->dtype));
    if (idx->ndim >= TG_MAX_DIMS)
        return tg_check_fail(c, TG_SHAPE, "indices have %d dims; at most %d fit", idx->ndim,
                             TG_MAX_DIMS - 1);
    return TG_OK;
}

/* Row copies and row sums of D elements, one loop per dtype. */
#define ROW_LOOPS(T, sel, add)                                                                     \
    static void sel(const T *table, const int64_t *ix, T *y, int64_t m, int64_t dim)               \
    {                                                                                              \
        for (int64_t e = 0; e < m; e++)                                                            \
            memcpy(y + e * dim, table + ix[e] * dim, (size_t)dim * sizeof(T));                     \
    }                                                                                              \
    static void add(const T *g, const int64_t *ix, T *y, int64_t m, int64_t dim)                   \
    {                                                                                              \
        for (int64_t e = 0; e < m; e++) {                                                          \
            const T *gr = g + e * dim;                                                             \
            T *yr = y + ix[e] * dim;                                                               \
            for (int64_t j = 0; j < dim; j++)                                                      \
                yr[j] += gr[j];                                                                    \
        }                                                                                          \
    }
ROW_LOOPS(float, select_f32, add_f32)
ROW_LOOPS(double, select_f64, add_f64)

/* ---- embedding --------------------------------------------------------------------------- */

/* y[i..., :] = table[indices[i...], :];  dtable += embedding_backward(g, indices; rows) */
static tg_status embedding_check(tg_check *c)
{
    const tg_view *table = c->in[0], *idx = c->in[1];
    tg_status st = tg_check_float(c, 0);
    if (!st)
        st = check_index_tensor(c, 1);
    if (st)
        return st;
    if (table->ndim != 2)
        return tg_check_fail(c, TG_SHAPE, "the table must be 2-d [rows, dim], not %d-d",
                             table->ndim);
    st = check_indices(c, idx, table->shape[0]);
    if (st)
        return st;
    c->out->dtype = table->dtype;
    c->out->ndim = idx->ndim + 1;
    memcpy(c->out->shape, idx->shape, (size_t)idx->ndim * sizeof(int64_t));
    c->out->shape[idx->ndim] = table->shape[1];
    return TG_OK;
}
static void embedding_forward(const tg_kernel *k)
{
    const tg_view *table = k->in[0], *idx = k->in[1];
    if (k->out->numel == 0)
        return;
    if (table->dtype == TG_F32)
        select_f32(table->data, idx->data, k->out->data, idx->numel, table->shape[1]);
    else
        select_f64(table->data, idx->data, k->out->data, idx->numel, table->shape[1]);
}
static void embedding_backward(const tg_backward_io *io)
{
    embedding_attr at = {tg_dim(io->inputs[0], 0)};
    if (io->needs_grad[0])
        io->grad_inputs[0] =
            tg__apply2(TG__OP_embedding_backward, io->grad_output, io->inputs[1], &at);
}
/* Shared by embedding and embedding_backward: a [5, 3] table and indices of several shapes. */
static int embedding_case(tg_tape *tp, int index, tg_tensor *in, bool backward)
{
    static const int64_t i0[] = {1, 0, 4, 1}, i1[] = {2, 2, 0, 3, 4, 2}, i2[] = {3};
    static const struct {
        int nd;
        int64_t shape[2];
        const int64_t *idx;
    } cases[] = {
        {1, {4}, i0},    /* a repeated row */
        {2, {2, 3}, i1}, /* 2-d indices, a row used three times */
        {0, {0}, i2},    /* one 0-d index: output [3] */
        {1, {0}, i0},    /* no indices: empty output (embedding only) */
    };
    int ncases = (int)(sizeof cases / sizeof cases[0]) - (backward ? 1 : 0);
    if (index < 0 || index >= ncases)
        return 0;
    int nd = cases[index].nd;
    in[1] = tg_tensor_from(tp, TG_I64, nd, cases[index].shape, cases[index].idx);
    if (backward) { /* the gradient: indices.shape + [3] */
        int64_t gshape[3] = {3, 3, 3};
        memcpy(gshape, cases[index].shape, (size_t)nd * sizeof(int64_t));
        in[0] = tg__example(tp, nd + 1, gshape, -1, 1, 0, 241 + (uint64_t)index);
    } else {
        in[0] = tg__example(tp, 2, (int64_t[]){5, 3}, -1, 1, 0, 231 + (uint64_t)index);
    }
    return 2;
}
static int example_embedding(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return embedding_case(tp, index, in, false);
}
const tg_op_def tg__op_embedding = {.name = "embedding",
                                    .ninputs = 2,
                                    .check = embedding_check,
                                    .forward = embedding_forward,
                                    .backward = embedding_backward,
                                    .example = example_embedding};

tg_tensor tg_embedding(tg_tensor table, tg_tensor indices)
{
    return tg__apply2(TG__OP_embedding, table, indices, NULL);
}

/* ---- embedding_backward ------------------------------------------------------------------ */

/* y = zeros [rows, D], y[indices[i...], :] += g[i..., :] (repeats accumulate);
 * dg += embedding(gg, indices) */
static tg_status embedding_bw_check(tg_check *c)
{
    const embedding_attr *at = c->attr;
    const tg_view *g = c->in[0], *idx = c->in[1];
    tg_status st = tg_check_float(c, 0);
    if (!st)
        st = check_index_tensor(c, 1);
    if (st)
        return st;
    bool same = g->ndim == idx->ndim + 1;
    for (int d = 0; same && d < idx->ndim; d++)
        same = g->shape[d] == idx->shape[d];
    if (!same)
        return tg_check_fail(c, TG_SHAPE, "the gradient must have the indices' shape plus one dim");
    if (at->rows < 0)
        return tg_check_fail(c, TG_SHAPE, "row count %lld is negative", (long long)at->rows);
    st = check_indices(c, idx, at->rows);
    if (st)
        return st;
    c->out->dtype = g->dtype;
    c->out->ndim = 2;
    c->out->shape[0] = at->rows;
    c->out->shape[1] = g->shape[g->ndim - 1];
    return TG_OK;
}
static void embedding_bw_forward(const tg_kernel *k)
{
    const tg_view *g = k->in[0], *idx = k->in[1], *y = k->out;
    if (y->numel == 0)
        return;
    memset(y->data, 0, (size_t)y->numel * tg_dtype_size(y->dtype));
    if (y->dtype == TG_F32)
        add_f32(g->data, idx->data, y->data, idx->numel, y->shape[1]);
    else
        add_f64(g->data, idx->data, y->data, idx->numel, y->shape[1]);
}
static void embedding_bw_backward(const tg_backward_io *io)
{
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg_embedding(io->grad_output, io->inputs[1]);
}
static int example_embedding_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    ((embedding_attr *)attr)->rows = 5;
    return embedding_case(tp, index, in, true);
}
const tg_op_def tg__op_embedding_backward = {.name = "embedding_backward",
                                             .ninputs = 2,
                                             .attr_size = sizeof(embedding_attr),
                                             .check = embedding_bw_check,
                                             .forward = embedding_bw_forward,
                                             .backward = embedding_bw_backward,
                                             .example = example_embedding_bw};
