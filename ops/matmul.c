/* matmul.c — (batched) matrix product with optional transposed operands. */
#include "gemm.h"
#include "kernels.h"
#include "ops.h"

typedef struct matmul_attr {
    int ta, tb; /* multiply by the transpose of a / b (last two dims swapped) */
} matmul_attr;

/* Shapes of op(a) and op(b) as (rows, cols) with their batch dims. */
static void mat_dims(const tg_view *v, int t, int64_t *rows, int64_t *cols)
{
    int64_t r = v->shape[v->ndim - 2], c = v->shape[v->ndim - 1];
    *rows = t ? c : r;
    *cols = t ? r : c;
}

static tg_status matmul_check(tg_check *c)
{
    const matmul_attr *at = c->attr;
    const tg_view *a = c->in[0], *b = c->in[1];
    for (int i = 0; i < 2; i++) {
        tg_status st = tg_check_float(c, i);
        if (st)
            return st;
    }
    if (a->dtype != b->dtype)
        return tg_check_fail(c, TG_DTYPE, "operands have different dtypes");
    if (a->ndim < 2 || b->ndim < 2)
        return tg_check_fail(c, TG_SHAPE, "operands need at least 2 dims");
    int64_t m, ka, kb, n;
    mat_dims(a, at->ta, &m, &ka);
    mat_dims(b, at->tb, &kb, &n);
    if (ka != kb)
        return tg_check_fail(c, TG_SHAPE, "shapes do not match: %lld columns against %lld rows",
                             (long long)ka, (long long)kb);
    /* Batch dims broadcast like elementwise shapes. */
    int na = a->ndim - 2, nb = b->ndim - 2, nd = na > nb ? na : nb;
    for (int d = 0; d < nd; d++) {
        int64_t sa = d - (nd - na) >= 0 ? a->shape[d - (nd - na)] : 1;
        int64_t sb = d - (nd - nb) >= 0 ? b->shape[d - (nd - nb)] : 1;
        if (sa != sb && sa != 1 && sb != 1)
            return tg_check_fail(c, TG_SHAPE, "batch dims do not broadcast");
        c->out->shape[d] = sa == 1 ? sb : sa;
    }
    c->out->shape[nd] = m;
    c->out->shape[nd + 1] = n;
    c->out->ndim = nd + 2;
    c->out->dtype = a->dtype;
    return TG_OK;
}

static void matmul_forward(const tg_kernel *k)
{
    const matmul_attr *at = k->attr;
    const tg_view *a = k->in[0], *b = k->in[1], *y = k->out;
    int64_t m, kk, n, kb;
    mat_dims(a, at->ta, &m, &kk);
    mat_dims(b, at->tb, &kb, &n);
    size_t es = tg_dtype_size(y->dtype);
    int nd = y->ndim - 2, na = a->ndim - 2, nb = b->ndim - 2;
    int64_t asize = a->shape[na] * a->shape[na + 1], bsize = b->shape[nb] * b->shape[nb + 1];
    /* Matrix strides of a and b along each output batch dim (0 where broadcast). */
    int64_t astr[TG_MAX_DIMS], bstr[TG_MAX_DIMS], ra = 1, rb = 1, batches = 1;
    for (int d = nd - 1; d >= 0; d--) {
        int da = d - (nd - na), db = d - (nd - nb);
        int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
        astr[d] = sa == 1 ? 0 : ra;
        bstr[d] = sb == 1 ? 0 : rb;
        ra *= sa;
        rb *= sb;
        batches *= y->shape[d];
    }
    int64_t lda = a->shape[na + 1], ldb = b->shape[nb + 1], idx[TG_MAX_DIMS] = {0};
    for (int64_t bi = 0; bi < batches; bi++) {
        int64_t oa = 0, ob = 0;
        for (int d = 0; d < nd; d++) {
            oa += idx[d] * astr[d];
            ob += idx[d] * bstr[d];
        }
        tg__gemm(y->dtype, at->ta, at->tb, m, n, kk, (const char *)a->data + oa * asize * es, lda,
                 (const char *)b->data + ob * bsize * es, ldb, 0.0,
                 (char *)y->data + bi * m * n * es, n, k->threads);
        for (int d = nd - 1; d >= 0; d--) {
            if (++idx[d] < y->shape[d])
                break;
            idx[d] = 0;
        }
    }
}

/* y = op(a) op(b): with g = dy,
 *   plain:      da = g b^T      db = a^T g
 *   a^T:        da = b g^T      db = a g
 *   b^T:        da = g b        db = g^T a
 *   a^T, b^T:   da = b^T g^T    db = g^T a^T
 * (batch dims that were broadcast are summed back by the engine). */
static void matmul_backward(const tg_backward_io *io)
{
    const matmul_attr *at = io->attr;
    tg_tensor a = io->inputs[0], b = io->inputs[1], g = io->grad_output;
    if (io->needs_grad[0])
        io->grad_inputs[0] =
            at->ta ? tg_matmul_t(b, g, at->tb, true) : tg_matmul_t(g, b, false, !at->tb);
    if (io->needs_grad[1])
        io->grad_inputs[1] =
            at->tb ? tg_matmul_t(g, a, true, at->ta) : tg_matmul_t(a, g, !at->ta, false);
}

static int example_matmul(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    matmul_attr *at = attr;
    static const struct {
        int na, nb;
        int64_t a[4], b[4];
        int ta, tb;
    } cases[] = {
        {2, 2, {3, 4}, {4, 5}, 0, 0},       {2, 2, {4, 3}, {4, 5}, 1, 0},
        {2, 2, {3, 4}, {5, 4}, 0, 1},       {2, 2, {4, 3}, {5, 4}, 1, 1},
        {3, 2, {2, 3, 4}, {4, 2}, 0, 0},    {4, 3, {2, 1, 3, 4}, {3, 4, 2}, 0, 0},
        {3, 3, {2, 4, 3}, {1, 2, 4}, 1, 1},
    };
    if (index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    at->ta = cases[index].ta;
    at->tb = cases[index].tb;
    in[0] = tg__example(tp, cases[index].na, cases[index].a, -1, 1, 0, 71 + (uint64_t)index);
    in[1] = tg__example(tp, cases[index].nb, cases[index].b, -1, 1, 0, 81 + (uint64_t)index);
    return 2;
}

const tg_op_def tg__op_matmul = {.name = "matmul",
                                 .ninputs = 2,
                                 .attr_size = sizeof(matmul_attr),
                                 .check = matmul_check,
                                 .forward = matmul_forward,
                                 .backward = matmul_backward,
                                 .example = example_matmul};

tg_tensor tg_matmul_t(tg_tensor a, tg_tensor b, bool transpose_a, bool transpose_b)
{
    matmul_attr at = {transpose_a, transpose_b};
    return tg__apply2(TG__OP_matmul, a, b, &at);
}

tg_tensor tg_matmul(tg_tensor a, tg_tensor b) { return tg_matmul_t(a, b, false, false); }
