/* shape.c — shape ops: reshape (a view), permute, broadcast_to. */
#include "kernels.h"
#include "ops.h"

typedef struct shape_attr {
    int ndim; /* -1: invalid request (reported by the check) */
    int64_t shape[TG_MAX_DIMS];
} shape_attr;

static shape_attr make_shape(int ndim, const int64_t *shape)
{
    shape_attr at;
    memset(&at, 0, sizeof at);
    at.ndim = ndim < 0 || ndim > TG_MAX_DIMS || (ndim > 0 && !shape) ? -1 : ndim;
    for (int d = 0; d < at.ndim; d++)
        at.shape[d] = shape[d];
    return at;
}

/* y = x with a new shape (same buffer);  dx += reshape(g, x.shape) */
static tg_status reshape_check(tg_check *c)
{
    const shape_attr *at = c->attr;
    const tg_view *x = c->in[0];
    if (at->ndim < 0)
        return tg_check_fail(c, TG_INVALID, "invalid target shape");
    int infer = -1;
    int64_t *shape = c->out->shape;
    for (int d = 0; d < at->ndim; d++) {
        shape[d] = at->shape[d];
        if (at->shape[d] == -1 && infer < 0) {
            infer = d;
            shape[d] = 1;
        } else if (at->shape[d] < 0) {
            return tg_check_fail(c, TG_SHAPE, "dim %d is %lld", d, (long long)at->shape[d]);
        }
    }
    int64_t known;
    if (!tg__shape_ok(at->ndim, shape, &known))
        return tg_check_fail(c, TG_SHAPE, "target shape overflows");
    c->out->dtype = x->dtype;
    c->out->ndim = at->ndim;
    if (infer >= 0) {
        if (known == 0 || x->numel % known)
            return tg_check_fail(c, TG_SHAPE, "cannot infer dim %d: %lld elements", infer,
                                 (long long)x->numel);
        shape[infer] = x->numel / known;
        known = x->numel;
    }
    if (known != x->numel)
        return tg_check_fail(c, TG_SHAPE, "%lld elements cannot take a shape of %lld",
                             (long long)x->numel, (long long)known);
    c->alias = 0;
    return TG_OK;
}
static void reshape_backward(const tg_backward_io *io)
{
    tg_tensor x = io->inputs[0];
    io->grad_inputs[0] = tg_reshape(io->grad_output, tg_ndim(x), tg_shape(x));
}
static int example_reshape(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int64_t s[] = {2, 3, 4};
    shape_attr *at = attr;
    if (index == 0)
        *at = make_shape(2, (int64_t[]){6, -1});
    else if (index == 1)
        *at = make_shape(4, (int64_t[]){4, 1, 3, 2});
    else
        return 0;
    in[0] = tg__example(tp, 3, s, -1, 1, 0, 51);
    return 1;
}
const tg_op_def tg__op_reshape = {.name = "reshape",
                                  .ninputs = 1,
                                  .attr_size = sizeof(shape_attr),
                                  .check = reshape_check,
                                  .backward = reshape_backward,
                                  .example = example_reshape};
tg_tensor tg_reshape(tg_tensor a, int ndim, const int64_t *shape)
{
    shape_attr at = make_shape(ndim, shape);
    return tg__apply1(TG__OP_reshape, a, &at);
}

/* y = x with dims reordered: y.shape[i] = x.shape[perm[i]];  dx += permute(g, inverse(perm)) */
typedef struct perm_attr {
    int ndim;
    int perm[TG_MAX_DIMS];
} perm_attr;

static tg_status permute_check(tg_check *c)
{
    const perm_attr *at = c->attr;
    const tg_view *x = c->in[0];
    if (at->ndim != x->ndim)
        return tg_check_fail(c, TG_SHAPE, "permutation of %d dims for a %d-dim input", at->ndim,
                             x->ndim);
    bool seen[TG_MAX_DIMS] = {false};
    c->out->dtype = x->dtype;
    c->out->ndim = x->ndim;
    for (int d = 0; d < at->ndim; d++) {
        int p = tg__axis(at->perm[d], x->ndim);
        if (p < 0 || seen[p])
            return tg_check_fail(c, TG_INVALID, "not a permutation (entry %d is %d)", d,
                                 at->perm[d]);
        seen[p] = true;
        c->out->shape[d] = x->shape[p];
    }
    return TG_OK;
}
static void permute_forward(const tg_kernel *k)
{
    const perm_attr *at = k->attr;
    const tg_view *x = k->in[0], *y = k->out;
    int nd = x->ndim;
    size_t es = tg_dtype_size(x->dtype);
    if (y->numel == 0)
        return;
    int64_t xstride[TG_MAX_DIMS], s[TG_MAX_DIMS]; /* s: x's stride along each y dim */
    int64_t run = 1;
    for (int d = nd - 1; d >= 0; d--) {
        xstride[d] = run;
        run *= x->shape[d];
    }
    for (int d = 0; d < nd; d++)
        s[d] = xstride[at->perm[d] < 0 ? at->perm[d] + nd : at->perm[d]];
    if (nd == 0) {
        memcpy(y->data, x->data, es);
        return;
    }
    int64_t inner = y->shape[nd - 1], is = s[nd - 1], idx[TG_MAX_DIMS] = {0};
    const char *xs = x->data;
    char *ys = y->data;
    for (int64_t row = 0; row < y->numel / inner; row++) {
        int64_t off = 0;
        for (int d = 0; d < nd - 1; d++)
            off += idx[d] * s[d];
        if (es == 4) {
            const float *xr = (const float *)xs + off;
            float *yr = (float *)ys + row * inner;
            for (int64_t j = 0; j < inner; j++)
                yr[j] = xr[j * is];
        } else {
            const double *xr = (const double *)xs + off;
            double *yr = (double *)ys + row * inner;
            for (int64_t j = 0; j < inner; j++)
                yr[j] = xr[j * is];
        }
        for (int d = nd - 2; d >= 0; d--) {
            if (++idx[d] < y->shape[d])
                break;
            idx[d] = 0;
        }
    }
}
static void permute_backward(const tg_backward_io *io)
{
    const perm_attr *at = io->attr;
    int inv[TG_MAX_DIMS];
    for (int d = 0; d < at->ndim; d++)
        inv[at->perm[d] < 0 ? at->perm[d] + at->ndim : at->perm[d]] = d;
    io->grad_inputs[0] = tg_permute(io->grad_output, at->ndim, inv);
}
static int example_permute(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int64_t s[] = {2, 3, 4};
    perm_attr *at = attr;
    memset(at, 0, sizeof *at);
    at->ndim = 3;
    if (index == 0)
        at->perm[0] = 2, at->perm[1] = 0, at->perm[2] = 1;
    else if (index == 1)
        at->perm[0] = 0, at->perm[1] = -1, at->perm[2] = 1;
    else
        return 0;
    in[0] = tg__example(tp, 3, s, -1, 1, 0, 52);
    return 1;
}
const tg_op_def tg__op_permute = {.name = "permute",
                                  .ninputs = 1,
                                  .attr_size = sizeof(perm_attr),
                                  .check = permute_check,
                                  .forward = permute_forward,
                                  .backward = permute_backward,
                                  .example = example_permute};

tg_tensor tg_permute(tg_tensor a, int ndim, const int *perm)
{
    perm_attr at;
    memset(&at, 0, sizeof at);
    at.ndim = ndim < 0 || ndim > TG_MAX_DIMS || (ndim > 0 && !perm) ? -1 : ndim;
    for (int d = 0; d < at.ndim; d++)
        at.perm[d] = perm[d];
    return tg__apply1(TG__OP_permute, a, &at);
}

tg_tensor tg_transpose(tg_tensor a, int axis0, int axis1)
{
    perm_attr at;
    memset(&at, 0, sizeof at);
    int nd = tg_ndim(a);
    at.ndim = nd < 0 ? 0 : nd;
    for (int d = 0; d < at.ndim; d++)
        at.perm[d] = d;
    int a0 = tg__axis(axis0, nd), a1 = tg__axis(axis1, nd);
    if (a0 >= 0 && a1 >= 0) {
        at.perm[a0] = a1;
        at.perm[a1] = a0;
    } else if (nd >= 0) {
        at.perm[0] = nd; /* out of range: the check reports it */
    }
    return tg__apply1(TG__OP_permute, a, &at);
}

/* y = x repeated along broadcast dims to `shape`;  dx += sum_to(g, x.shape) */
static tg_status broadcast_to_check(tg_check *c)
{
    const shape_attr *at = c->attr;
    const tg_view *x = c->in[0];
    int64_t numel;
    if (at->ndim < 0 || !tg__shape_ok(at->ndim, at->shape, &numel))
        return tg_check_fail(c, TG_SHAPE, "invalid target shape");
    bool ok = x->ndim <= at->ndim;
    for (int d = 0; ok && d < x->ndim; d++) {
        int64_t s = x->shape[d], t = at->shape[at->ndim - x->ndim + d];
        ok = s == t || s == 1;
    }
    if (!ok)
        return tg_check_fail(c, TG_SHAPE, "input does not broadcast to the target shape");
    c->out->dtype = x->dtype;
    c->out->ndim = at->ndim;
    memcpy(c->out->shape, at->shape, sizeof at->shape);
    return TG_OK;
}
TG__LOOPS1(copy_loop, a)
static void broadcast_to_forward(const tg_kernel *k) { TG__RUN_LOOPS(k, copy_loop); }
static void broadcast_to_backward(const tg_backward_io *io)
{
    tg_tensor x = io->inputs[0];
    io->grad_inputs[0] = tg_sum_to(io->grad_output, tg_ndim(x), tg_shape(x));
}
static int example_broadcast_to(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    shape_attr *at = attr;
    if (index == 0) {
        *at = make_shape(3, (int64_t[]){2, 3, 4});
        in[0] = tg__example(tp, 2, (int64_t[]){3, 1}, -1, 1, 0, 53);
    } else if (index == 1) {
        *at = make_shape(2, (int64_t[]){3, 2});
        in[0] = tg__example(tp, 0, NULL, -1, 1, 0, 54);
    } else {
        return 0;
    }
    return 1;
}
const tg_op_def tg__op_broadcast_to = {.name = "broadcast_to",
                                       .ninputs = 1,
                                       .attr_size = sizeof(shape_attr),
                                       .flags = TG_OP_BROADCAST,
                                       .check = broadcast_to_check,
                                       .forward = broadcast_to_forward,
                                       .backward = broadcast_to_backward,
                                       .example = example_broadcast_to};
tg_tensor tg_broadcast_to(tg_tensor a, int ndim, const int64_t *shape)
{
    shape_attr at = make_shape(ndim, shape);
    return tg__apply1(TG__OP_broadcast_to, a, &at);
}
