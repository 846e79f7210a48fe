/* loss.c — losses: one_hot (a constant for backward rules), cross_entropy and nll_loss as fused
 * per-sample ops with composite backward rules, and the wrappers that apply the reduction; mse,
 * bce_with_logits and the l1/l2 penalties are composites of existing ops. */
#include "kernels.h"
#include "ops.h"
#include "parallel.h"
#include "vmath.h"

#include <stdio.h>

/* The tape of the first of a, b that has one. */
static tg_tape *tape_of(tg_tensor a, tg_tensor b)
{
    return tg_tensor_tape(a) ? tg_tensor_tape(a) : tg_tensor_tape(b);
}

/* Fails on the tape when r is not a tg_reduction; true if it is. */
static bool reduction_ok(tg_tape *tp, tg_reduction r, const char *who)
{
    if (r == TG_REDUCE_MEAN || r == TG_REDUCE_SUM || r == TG_REDUCE_NONE)
        return true;
    tg_tape_fail(tp, TG_INVALID, "%s: unknown reduction %d", who, (int)r);
    return false;
}

static tg_tensor reduce(tg_tensor per, tg_reduction r)
{
    if (r == TG_REDUCE_MEAN)
        return tg_mean_all(per);
    if (r == TG_REDUCE_SUM)
        return tg_sum_all(per);
    return per;
}

/* Every label lies in [0, classes); the first that does not is named with its (flat) position. */
static tg_status check_labels(tg_check *c, const tg_view *labels, int64_t classes)
{
    const int64_t *v = labels->data;
    for (int64_t i = 0; i < labels->numel; i++)
        if (v[i] < 0 || v[i] >= classes)
            return tg_check_fail(c, TG_RANGE,
                                 "label %lld at position %lld is out of range for %lld classes",
                                 (long long)v[i], (long long)i, (long long)classes);
    return TG_OK;
}

/* Shared by cross_entropy and nll_loss: x [N, C] float, labels [N] i64 in [0, C); out [N]. */
static tg_status check_classification(tg_check *c, const char *what)
{
    const tg_view *x = c->in[0], *labels = c->in[1];
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    if (x->ndim != 2)
        return tg_check_fail(c, TG_SHAPE, "%s must be 2-d [N, C], not %d-d", what, x->ndim);
    if (labels->dtype != TG_I64)
        return tg_check_fail(c, TG_DTYPE, "labels must be i64, not %s",
                             tg_dtype_name(labels->dtype));
    if (labels->ndim != 1)
        return tg_check_fail(c, TG_SHAPE, "labels must be 1-d [N], not %d-d", labels->ndim);
    if (labels->numel != x->shape[0])
        return tg_check_fail(c, TG_SHAPE, "%lld labels for a batch of %lld",
                             (long long)labels->numel, (long long)x->shape[0]);
    st = check_labels(c, labels, x->shape[1]);
    if (st)
        return st;
    c->out->dtype = x->dtype;
    c->out->ndim = 1;
    c->out->shape[0] = x->shape[0];
    return TG_OK;
}

/* The classification cases: logits or log-probabilities [N, C] and labels [N]. */
static int classification_case(tg_tape *tp, int index, tg_tensor *in)
{
    static const int64_t l0[] = {2, 0, 1, 1}, l1[] = {4, 0}, l2[] = {0};
    static const struct {
        int64_t n, c;
        const int64_t *labels;
    } cases[] = {{4, 3, l0}, {2, 5, l1}, {1, 1, l2}, {4, 3, l0}};
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    int64_t n = cases[index].n, shape[2] = {n, cases[index].c};
    in[0] = tg__example(tp, 2, shape, -2, 2, 0, 301 + (uint64_t)index);
    in[1] = tg_tensor_from(tp, TG_I64, 1, &n, cases[index].labels);
    return 2;
}

/* ---- one_hot ----------------------------------------------------------------------------- */

typedef struct one_hot_attr {
    int64_t classes;
    int dtype; /* tg_dtype of the output: f32 or f64 */
} one_hot_attr;

/* y[i..., c] = (labels[i...] == c);  a constant: no gradient */
static tg_status one_hot_check(tg_check *c)
{
    const one_hot_attr *at = c->attr;
    const tg_view *labels = c->in[0];
    if (labels->dtype != TG_I64)
        return tg_check_fail(c, TG_DTYPE, "labels must be i64, not %s",
                             tg_dtype_name(labels->dtype));
    if (labels->ndim >= TG_MAX_DIMS)
        return tg_check_fail(c, TG_SHAPE, "labels have %d dims; at most %d fit", labels->ndim,
                             TG_MAX_DIMS - 1);
    if (at->dtype != TG_F32 && at->dtype != TG_F64)
        return tg_check_fail(c, TG_DTYPE, "the output dtype must be f32 or f64, not %s",
                             tg_dtype_name((tg_dtype)at->dtype));
    if (at->classes < 0)
        return tg_check_fail(c, TG_SHAPE, "class count %lld is negative", (long long)at->classes);
    tg_status st = check_labels(c, labels, at->classes);
    if (st)
        return st;
    c->out->dtype = (tg_dtype)at->dtype;
    c->out->ndim = labels->ndim + 1;
    memcpy(c->out->shape, labels->shape, (size_t)labels->ndim * sizeof(int64_t));
    c->out->shape[labels->ndim] = at->classes;
    return TG_OK;
}
static void one_hot_forward(const tg_kernel *k)
{
    const one_hot_attr *at = k->attr;
    const tg_view *labels = k->in[0], *y = k->out;
    if (y->numel == 0)
        return;
    memset(y->data, 0, (size_t)y->numel * tg_dtype_size(y->dtype));
    const int64_t *v = labels->data;
    for (int64_t i = 0; i < labels->numel; i++) {
        if (y->dtype == TG_F32)
            ((float *)y->data)[i * at->classes + v[i]] = 1;
        else
            ((double *)y->data)[i * at->classes + v[i]] = 1;
    }
}
/* f32 output: the registry gradcheck compares an op on f32 copies of its float inputs with the
 * op on f64 ones; one_hot has none, so its dtype (an attribute) is the same in both runs. */
static int example_one_hot(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int64_t l0[] = {2, 0, 1, 2}, l1[] = {3, 0, 3, 1, 0, 2};
    one_hot_attr *at = attr;
    at->dtype = TG_F32;
    switch (index) {
    case 0:
        at->classes = 3;
        in[0] = tg_tensor_from(tp, TG_I64, 1, (int64_t[]){4}, l0);
        return 1;
    case 1:
        at->classes = 4;
        in[0] = tg_tensor_from(tp, TG_I64, 2, (int64_t[]){2, 3}, l1);
        return 1;
    }
    return 0;
}
const tg_op_def tg__op_one_hot = {.name = "one_hot",
                                  .ninputs = 1,
                                  .attr_size = sizeof(one_hot_attr),
                                  .flags = TG_OP_NONDIFF,
                                  .check = one_hot_check,
                                  .forward = one_hot_forward,
                                  .example = example_one_hot};

/* one_hot(labels; classes) with the dtype of `like`. */
static tg_tensor one_hot(tg_tensor labels, int64_t classes, tg_tensor like)
{
    one_hot_attr at = {classes, (int)tg_tensor_dtype(like)};
    return tg__apply1(TG__OP_one_hot, labels, &at);
}

/* ---- cross_entropy ----------------------------------------------------------------------- */

typedef struct ce_attr {
    double label_smoothing; /* eps in [0, 1] */
} ce_attr;

/* y[n] = (1 - eps) (lse_n - x[n, y_n]) + eps (lse_n - mean_c x[n, c]),  lse_n = logsumexp(x_n);
 * dx += g[n] (softmax(x_n) - q_n),  q = (1 - eps) one_hot(labels) + eps / C */
static tg_status cross_entropy_check(tg_check *c)
{
    double eps = ((const ce_attr *)c->attr)->label_smoothing;
    if (!(eps >= 0 && eps <= 1))
        return tg_check_fail(c, TG_RANGE, "label_smoothing = %g is out of range (need 0..1)", eps);
    return check_classification(c, "logits");
}
/* Per row, through vmath's row reductions (as softmax's): m = max (NaN if any element is NaN),
 * s = sum exp(x - m) in double in one pass, both in independent SIMD lanes; lse - x[y] is taken
 * as (m - x[y]) + log(s), exact in its large part at any magnitude. Label smoothing needs
 * sum_c (m - x_c) = C m - sum_c x_c (the sum in double). Rows are independent: large batches
 * split over the threads. */
typedef struct ce_job {
    const tg_view *x;
    const int64_t *labels;
    const tg_view *y;
    double eps;
} ce_job;

static void cross_entropy_rows(void *user, int64_t r0, int64_t r1)
{
    const ce_job *j = user;
    tg_dtype dt = j->x->dtype;
    int64_t cls = j->x->shape[1];
    size_t es = tg_dtype_size(dt);
    for (int64_t r = r0; r < r1; r++) {
        const char *xr = (const char *)j->x->data + (size_t)(r * cls) * es;
        double m = tg__vm_reduce(TG__VM_MAXALL, dt, cls, xr, 0, NULL);
        if (m == -INFINITY)
            m = 0; /* a row of -inf: keep the shift finite (the loss is then NaN or inf) */
        double ls = log(tg__vm_reduce(TG__VM_EXP_SUM, dt, cls, xr, m, NULL));
        int64_t at = j->labels[r];
        double xy = dt == TG_F32 ? ((const float *)xr)[at] : ((const double *)xr)[at];
        double v = (m - xy) + ls;
        if (j->eps != 0) {
            double sx = (double)cls * m - tg__vm_reduce(TG__VM_SUM, dt, cls, xr, 0, NULL);
            v = (1 - j->eps) * v + j->eps * (sx / (double)cls + ls);
        }
        if (dt == TG_F32)
            ((float *)j->y->data)[r] = (float)v;
        else
            ((double *)j->y->data)[r] = v;
    }
}
static void cross_entropy_forward(const tg_kernel *k)
{
    const tg_view *x = k->in[0];
    ce_job j = {x, k->in[1]->data, k->out, ((const ce_attr *)k->attr)->label_smoothing};
    tg__parallel_for(k->threads, x->shape[0], 4.0 * (double)x->numel, cross_entropy_rows, &j);
}
/* g [N] as a column [N, 1], to broadcast over the classes. */
static tg_tensor column(tg_tensor g) { return tg_reshape(g, 2, (int64_t[]){tg_numel(g), 1}); }
static void cross_entropy_backward(const tg_backward_io *io)
{
    double eps = ((const ce_attr *)io->attr)->label_smoothing;
    tg_tensor x = io->inputs[0];
    if (!io->needs_grad[0])
        return;
    int64_t cls = tg_dim(x, 1);
    tg_tensor q = one_hot(io->inputs[1], cls, x);
    if (eps > 0)
        q = tg_add_scalar(tg_mul_scalar(q, 1 - eps), eps / (double)cls);
    io->grad_inputs[0] = tg_mul(column(io->grad_output), tg_sub(tg_softmax(x, 1), q));
}
static int example_cross_entropy(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const double eps[] = {0, 0.1, 0.3, 0.2};
    if (index < 0 || index > 3)
        return 0;
    ((ce_attr *)attr)->label_smoothing = eps[index];
    return classification_case(tp, index, in);
}
const tg_op_def tg__op_cross_entropy = {.name = "cross_entropy",
                                        .ninputs = 2,
                                        .attr_size = sizeof(ce_attr),
                                        .check = cross_entropy_check,
                                        .forward = cross_entropy_forward,
                                        .backward = cross_entropy_backward,
                                        .example = example_cross_entropy};

tg_tensor tg_cross_entropy(tg_tensor logits, tg_tensor labels, tg_reduction r,
                           double label_smoothing)
{
    tg_tape *tp = tape_of(logits, labels);
    if (!reduction_ok(tp, r, "cross_entropy"))
        return tg_error(tp);
    ce_attr at = {label_smoothing};
    return reduce(tg__apply2(TG__OP_cross_entropy, logits, labels, &at), r);
}

/* ---- nll_loss ---------------------------------------------------------------------------- */

/* y[n] = -x[n, y_n];  dx += -g[n] one_hot(labels) */
static tg_status nll_loss_check(tg_check *c) { return check_classification(c, "log_probs"); }
static void nll_loss_forward(const tg_kernel *k)
{
    const tg_view *x = k->in[0];
    const int64_t *labels = k->in[1]->data;
    int64_t rows = x->shape[0], cls = x->shape[1];
    for (int64_t r = 0; r < rows; r++) {
        if (x->dtype == TG_F32)
            ((float *)k->out->data)[r] = -((const float *)x->data)[r * cls + labels[r]];
        else
            ((double *)k->out->data)[r] = -((const double *)x->data)[r * cls + labels[r]];
    }
}
static void nll_loss_backward(const tg_backward_io *io)
{
    tg_tensor x = io->inputs[0];
    if (io->needs_grad[0])
        io->grad_inputs[0] =
            tg_mul(column(tg_neg(io->grad_output)), one_hot(io->inputs[1], tg_dim(x, 1), x));
}
static int example_nll_loss(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return index < 3 ? classification_case(tp, index, in) : 0;
}
const tg_op_def tg__op_nll_loss = {.name = "nll_loss",
                                   .ninputs = 2,
                                   .check = nll_loss_check,
                                   .forward = nll_loss_forward,
                                   .backward = nll_loss_backward,
                                   .example = example_nll_loss};

tg_tensor tg_nll_loss(tg_tensor log_probs, tg_tensor labels, tg_reduction r)
{
    tg_tape *tp = tape_of(log_probs, labels);
    if (!reduction_ok(tp, r, "nll_loss"))
        return tg_error(tp);
    return reduce(tg__apply2(TG__OP_nll_loss, log_probs, labels, NULL), r);
}

/* ---- composite losses --------------------------------------------------------------------- */

/* Two live tensors of one dtype and one shape, or an error on the tape naming `who`. Handles
 * that are not live pass: the op that uses them reports them. */
static bool same_meta(tg_tape *tp, tg_tensor a, tg_tensor b, const char *who, const char *an,
                      const char *bn)
{
    if (!tg_ok(a) || !tg_ok(b))
        return true;
    tg_view va = tg__meta(a), vb = tg__meta(b);
    bool same = va.dtype == vb.dtype && va.ndim == vb.ndim;
    for (int d = 0; same && d < va.ndim; d++)
        same = va.shape[d] == vb.shape[d];
    if (same)
        return true;
    char sa[160], sb[160];
    tg_format_shape(sa, sizeof sa, va.dtype, va.ndim, va.shape);
    tg_format_shape(sb, sizeof sb, vb.dtype, vb.ndim, vb.shape);
    tg_tape_fail(tp, va.dtype != vb.dtype ? TG_DTYPE : TG_SHAPE,
                 "%s: %s %s and %s %s must have the same dtype and shape", who, an, sa, bn, sb);
    return false;
}

/* (pred - target)^2, reduced over all elements */
tg_tensor tg_mse_loss(tg_tensor pred, tg_tensor target, tg_reduction r)
{
    tg_tape *tp = tape_of(pred, target);
    if (!reduction_ok(tp, r, "mse_loss")
        || !same_meta(tp, pred, target, "mse_loss", "pred", "target"))
        return tg_error(tp);
    return reduce(tg_square(tg_sub(pred, target)), r);
}

/* softplus(x) - x t, written as (1 - t) x + softplus(-x) (PyTorch's form: no cancellation when
 * x is large and t = 1), reduced over all elements. d/dx = sigmoid(x) - t, d/dt = -x. */
tg_tensor tg_bce_with_logits(tg_tensor logits, tg_tensor targets, tg_reduction r)
{
    tg_tape *tp = tape_of(logits, targets);
    if (!reduction_ok(tp, r, "bce_with_logits")
        || !same_meta(tp, logits, targets, "bce_with_logits", "logits", "targets"))
        return tg_error(tp);
    tg_tensor one_minus_t = tg_add_scalar(tg_neg(targets), 1.0);
    return reduce(tg_add(tg_mul(one_minus_t, logits), tg_softplus(tg_neg(logits))), r);
}

/* sum_i sum(f(ts[i])) over n >= 1 tensors of one dtype on one tape. */
static tg_tensor penalty(int n, const tg_tensor *ts, tg_tensor (*f)(tg_tensor), const char *who)
{
    if (n < 1 || !ts)
        return tg_error(NULL); /* no tensor, no tape to report on */
    tg_tape *tp = tg_tensor_tape(ts[0]);
    for (int i = 1; i < n; i++) {
        if (tg_ok(ts[0]) && tg_ok(ts[i]) && tg_tensor_dtype(ts[i]) != tg_tensor_dtype(ts[0])) {
            tg_tape_fail(tp, TG_DTYPE, "%s: tensor %d is %s, tensor 0 is %s", who, i,
                         tg_dtype_name(tg_tensor_dtype(ts[i])),
                         tg_dtype_name(tg_tensor_dtype(ts[0])));
            return tg_error(tp);
        }
    }
    tg_tensor acc = tg_sum_all(f(ts[0]));
    for (int i = 1; i < n; i++)
        acc = tg_add(acc, tg_sum_all(f(ts[i])));
    return acc;
}

tg_tensor tg_l1_penalty(int n, const tg_tensor *ts) { return penalty(n, ts, tg_abs, "l1_penalty"); }

tg_tensor tg_l2_penalty(int n, const tg_tensor *ts)
{
    return penalty(n, ts, tg_square, "l2_penalty");
}
