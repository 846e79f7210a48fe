/* norm.c — normalisation over the trailing dims: layer_norm (fused forward, optional weight and
 * bias) and layer_norm_backward (the input gradient in one fused pass per row, with a composite
 * backward of its own, so layer_norm is differentiable to any order); rms_norm and
 * rms_norm_backward over the last dim, built the same way. */
#include "kernels.h"
#include "ops.h"

#include <stdio.h>

/* layer_norm: inputs x, then weight if has_weight, then bias if has_bias.
 * layer_norm_backward: inputs (g, x); has_weight and has_bias are 0. */
typedef struct norm_attr {
    int naxes; /* trailing dims normalised over, 1..ndim */
    int has_weight;
    int has_bias;
    double eps;
} norm_attr;

/* Rows and row length of x around its last `naxes` dims (rows counted from the leading dims, so
 * that an empty row length still gives the right row count). */
static void split_rows(const tg_view *x, int naxes, int64_t *rows, int64_t *n)
{
    *rows = 1, *n = 1;
    for (int d = 0; d < x->ndim; d++) {
        if (d < x->ndim - naxes)
            *rows *= x->shape[d];
        else
            *n *= x->shape[d];
    }
}

/* The parts every check shares: x (input `xi`) is float, naxes and eps are valid. */
static tg_status check_x(tg_check *c, int xi)
{
    const norm_attr *at = c->attr;
    tg_status st = tg_check_float(c, xi);
    if (st)
        return st;
    const tg_view *x = c->in[xi];
    if (at->naxes < 1 || at->naxes > x->ndim)
        return tg_check_fail(c, TG_RANGE, "naxes %d out of range for a %d-d input (need 1..%d)",
                             at->naxes, x->ndim, x->ndim);
    if (!(at->eps >= 0) || !isfinite(at->eps))
        return tg_check_fail(c, TG_INVALID, "eps must be finite and >= 0, not %g", at->eps);
    return TG_OK;
}

/* Input i (weight or bias) has x's dtype and exactly the normalised shape. */
static tg_status check_affine(tg_check *c, int i, const char *what)
{
    const norm_attr *at = c->attr;
    const tg_view *x = c->in[0], *v = c->in[i];
    if (v->dtype != x->dtype)
        return tg_check_fail(c, TG_DTYPE, "%s is %s, the input %s", what, tg_dtype_name(v->dtype),
                             tg_dtype_name(x->dtype));
    bool same = v->ndim == at->naxes;
    for (int d = 0; same && d < at->naxes; d++)
        same = v->shape[d] == x->shape[x->ndim - at->naxes + d];
    if (!same) {
        char want[128], got[128];
        tg_format_shape(want, sizeof want, 0, at->naxes, x->shape + x->ndim - at->naxes);
        tg_format_shape(got, sizeof got, 0, v->ndim, v->shape);
        return tg_check_fail(c, TG_SHAPE, "%s has shape %s, not the normalised shape %s", what, got,
                             want);
    }
    return TG_OK;
}

/* Row sums run in LANES independent double accumulators (added pairwise at the end): one chain
 * of dependent adds would bound the loops by the add latency, and the compiler may not reorder
 * floating-point sums by itself. */
#define LANES 8
static double lanes_total(const double *acc)
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* The statistics of a row of n elements (n > 0), two passes in double around a shift: with
 * c = the row's first element, d_j = x_j - c (exact when x_j is close to c), m = mean(d) and
 * x_j - mean(x) = d_j - m. Rows with a large common offset (1e4 + small noise) then keep the
 * digits of their spread. *rstd = 1 / sqrt(var + eps), biased variance. */
#define ROW_STATS(T, name)                                                                         \
    static void name(const T *xr, int64_t n, double eps, double *c, double *m, double *rstd)       \
    {                                                                                              \
        double shift = xr[0], s[LANES] = {0}, v[LANES] = {0};                                      \
        int64_t j = 0;                                                                             \
        for (; j + LANES <= n; j += LANES)                                                         \
            for (int l = 0; l < LANES; l++)                                                        \
                s[l] += xr[j + l] - shift;                                                         \
        for (; j < n; j++)                                                                         \
            s[0] += xr[j] - shift;                                                                 \
        double mean = lanes_total(s) / (double)n;                                                  \
        for (j = 0; j + LANES <= n; j += LANES)                                                    \
            for (int l = 0; l < LANES; l++) {                                                      \
                double d = (xr[j + l] - shift) - mean;                                             \
                v[l] += d * d;                                                                     \
            }                                                                                      \
        for (; j < n; j++) {                                                                       \
            double d = (xr[j] - shift) - mean;                                                     \
            v[0] += d * d;                                                                         \
        }                                                                                          \
        *c = shift;                                                                                \
        *m = mean;                                                                                 \
        *rstd = 1.0 / sqrt(lanes_total(v) / (double)n + eps);                                      \
    }
ROW_STATS(float, row_stats_f32)
ROW_STATS(double, row_stats_f64)

/* ---- layer_norm -------------------------------------------------------------------------- */

/* y = (x - mean) / sqrt(var + eps) * w + b over the last naxes dims (biased variance);
 * with xh = layer_norm(x) (no affine): dx += layer_norm_backward(g * w, x), dw += g * xh,
 * db += g (the engine sums dw and db over the leading dims) */
static tg_status layer_norm_check(tg_check *c)
{
    const norm_attr *at = c->attr;
    int want = 1 + (at->has_weight != 0) + (at->has_bias != 0);
    if (c->ninputs != want)
        return tg_check_fail(c, TG_INVALID, "takes %d inputs (x%s%s), got %d", want,
                             at->has_weight ? ", weight" : "", at->has_bias ? ", bias" : "",
                             c->ninputs);
    tg_status st = check_x(c, 0);
    if (!st && at->has_weight)
        st = check_affine(c, 1, "weight");
    if (!st && at->has_bias)
        st = check_affine(c, 1 + (at->has_weight != 0), "bias");
    if (st)
        return st;
    *c->out = *c->in[0];
    return TG_OK;
}
#define LAYER_NORM_LOOP(T, name, stats)                                                            \
    static void name(const T *x, const T *w, const T *b, T *y, int64_t rows, int64_t n,            \
                     double eps)                                                                   \
    {                                                                                              \
        for (int64_t r = 0; r < rows && n > 0; r++) {                                              \
            const T *xr = x + r * n;                                                               \
            T *yr = y + r * n;                                                                     \
            double c, mu, rstd;                                                                    \
            stats(xr, n, eps, &c, &mu, &rstd);                                                     \
            for (int64_t j = 0; j < n; j++)                                                        \
                yr[j] = (T)(((xr[j] - c) - mu) * rstd);                                            \
            /* The affine part in passes of its own over the row (still in cache): a select in     \
             * the loop above measured slower. */                                                  \
            if (w)                                                                                 \
                for (int64_t j = 0; j < n; j++)                                                    \
                    yr[j] *= w[j];                                                                 \
            if (b)                                                                                 \
                for (int64_t j = 0; j < n; j++)                                                    \
                    yr[j] += b[j];                                                                 \
        }                                                                                          \
    }
LAYER_NORM_LOOP(float, layer_norm_f32, row_stats_f32)
LAYER_NORM_LOOP(double, layer_norm_f64, row_stats_f64)
static void layer_norm_forward(const tg_kernel *k)
{
    const norm_attr *at = k->attr;
    const void *w = at->has_weight ? k->in[1]->data : NULL;
    const void *b = at->has_bias ? k->in[1 + (at->has_weight != 0)]->data : NULL;
    int64_t rows, n;
    split_rows(k->in[0], at->naxes, &rows, &n);
    if (k->out->dtype == TG_F32)
        layer_norm_f32(k->in[0]->data, w, b, k->out->data, rows, n, at->eps);
    else
        layer_norm_f64(k->in[0]->data, w, b, k->out->data, rows, n, at->eps);
}
static tg_tensor normalise(tg_tensor x, int naxes, double eps)
{
    norm_attr at = {naxes, 0, 0, eps};
    return tg__apply1(TG__OP_layer_norm, x, &at);
}
static void layer_norm_backward(const tg_backward_io *io)
{
    const norm_attr *at = io->attr;
    tg_tensor g = io->grad_output, x = io->inputs[0];
    int wi = at->has_weight ? 1 : 0, bi = at->has_bias ? 1 + wi : 0;
    if (io->needs_grad[0]) {
        tg_tensor gx = wi ? tg_mul(g, io->inputs[wi]) : g;
        norm_attr bt = {at->naxes, 0, 0, at->eps};
        io->grad_inputs[0] = tg__apply2(TG__OP_layer_norm_backward, gx, x, &bt);
    }
    if (wi && io->needs_grad[wi])
        io->grad_inputs[wi] = tg_mul(g, normalise(x, at->naxes, at->eps));
    if (bi && io->needs_grad[bi])
        io->grad_inputs[bi] = g;
}
static int example_layer_norm(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const struct {
        int nd, naxes, w, b;
        int64_t shape[3];
    } cases[] = {
        {2, 1, 1, 1, {3, 4}},    /* the usual case */
        {3, 2, 1, 0, {2, 3, 4}}, /* two trailing dims, weight only */
        {3, 1, 0, 1, {2, 3, 4}}, /* bias only */
        {1, 1, 0, 0, {5}},       /* one row, no affine */
        {3, 3, 1, 1, {2, 2, 3}}, /* everything is one row */
    };
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    norm_attr *at = attr;
    at->naxes = cases[index].naxes;
    at->has_weight = cases[index].w;
    at->has_bias = cases[index].b;
    at->eps = 1e-5;
    int nd = cases[index].nd, n = 0;
    const int64_t *shape = cases[index].shape;
    in[n++] = tg__example(tp, nd, shape, -2, 2, 0, 201 + (uint64_t)index);
    if (at->has_weight)
        in[n++] = tg__example(tp, at->naxes, shape + nd - at->naxes, 0.5, 1.5, 0, 211);
    if (at->has_bias)
        in[n++] = tg__example(tp, at->naxes, shape + nd - at->naxes, -1, 1, 0, 212);
    return n;
}
const tg_op_def tg__op_layer_norm = {.name = "layer_norm",
                                     .ninputs = TG_VARIADIC,
                                     .attr_size = sizeof(norm_attr),
                                     .check = layer_norm_check,
                                     .forward = layer_norm_forward,
                                     .backward = layer_norm_backward,
                                     .example = example_layer_norm};

tg_tensor tg_layer_norm(tg_tensor x, int naxes, tg_tensor weight, tg_tensor bias, double eps)
{
    tg_tensor in[3] = {x};
    int n = 1;
    norm_attr at = {naxes, 0, 0, eps};
    if (tg_tensor_tape(weight)) { /* a zero-initialised handle (no tape) means none */
        at.has_weight = 1;
        in[n++] = weight;
    }
    if (tg_tensor_tape(bias)) {
        at.has_bias = 1;
        in[n++] = bias;
    }
    return tg__apply(TG__OP_layer_norm, n, in, &at);
}

/* ---- layer_norm_backward ----------------------------------------------------------------- */

/* z = J g with J = d layer_norm(x) / dx (symmetric), per row of n:
 *   z = rstd (g - mean(g) - xh mean(g xh)),  xh = (x - mean(x)) rstd,  rstd = 1/sqrt(var + eps);
 * dg += layer_norm_backward(gg, x) (J is symmetric),
 * dx += -(rstd / n) (xh sum(gg z) + z sum(gg xh) + (J gg) sum(g xh))   (row sums) */
static tg_status layer_norm_bw_check(tg_check *c)
{
    const norm_attr *at = c->attr;
    if (at->has_weight || at->has_bias)
        return tg_check_fail(c, TG_INVALID, "takes no weight or bias");
    tg_status st = tg_check_float(c, 0);
    if (!st)
        st = check_x(c, 1);
    if (st)
        return st;
    const tg_view *g = c->in[0], *x = c->in[1];
    if (g->dtype != x->dtype)
        return tg_check_fail(c, TG_DTYPE, "gradient and input have different dtypes");
    bool same = g->ndim == x->ndim;
    for (int d = 0; same && d < g->ndim; d++)
        same = g->shape[d] == x->shape[d];
    if (!same)
        return tg_check_fail(c, TG_SHAPE, "gradient and input must have the same shape");
    *c->out = *x;
    return TG_OK;
}
#define LAYER_NORM_BW_LOOP(T, name, stats)                                                         \
    static void name(const T *g, const T *x, T *z, int64_t rows, int64_t n, double eps)            \
    {                                                                                              \
        for (int64_t r = 0; r < rows && n > 0; r++) {                                              \
            const T *gr = g + r * n, *xr = x + r * n;                                              \
            T *zr = z + r * n;                                                                     \
            double c, mu, rstd, sg[LANES] = {0}, sgx[LANES] = {0};                                 \
            stats(xr, n, eps, &c, &mu, &rstd);                                                     \
            int64_t j = 0;                                                                         \
            for (; j + LANES <= n; j += LANES)                                                     \
                for (int l = 0; l < LANES; l++) {                                                  \
                    sg[l] += gr[j + l];                                                            \
                    sgx[l] += gr[j + l] * (((xr[j + l] - c) - mu) * rstd);                         \
                }                                                                                  \
            for (; j < n; j++) {                                                                   \
                sg[0] += gr[j];                                                                    \
                sgx[0] += gr[j] * (((xr[j] - c) - mu) * rstd);                                     \
            }                                                                                      \
            double a = lanes_total(sg) / (double)n, b = lanes_total(sgx) / (double)n;              \
            for (j = 0; j < n; j++)                                                                \
                zr[j] = (T)(rstd * (gr[j] - a - (((xr[j] - c) - mu) * rstd) * b));                 \
        }                                                                                          \
    }
LAYER_NORM_BW_LOOP(float, layer_norm_bw_f32, row_stats_f32)
LAYER_NORM_BW_LOOP(double, layer_norm_bw_f64, row_stats_f64)
static void layer_norm_bw_forward(const tg_kernel *k)
{
    const norm_attr *at = k->attr;
    int64_t rows, n;
    split_rows(k->in[1], at->naxes, &rows, &n);
    if (k->out->dtype == TG_F32)
        layer_norm_bw_f32(k->in[0]->data, k->in[1]->data, k->out->data, rows, n, at->eps);
    else
        layer_norm_bw_f64(k->in[0]->data, k->in[1]->data, k->out->data, rows, n, at->eps);
}
static void layer_norm_bw_backward(const tg_backward_io *io)
{
    const norm_attr *at = io->attr;
    tg_tensor gg = io->grad_output, g = io->inputs[0], x = io->inputs[1], z = io->output;
    tg_tensor jgg = tg__apply2(TG__OP_layer_norm_backward, gg, x, at);
    if (io->needs_grad[0])
        io->grad_inputs[0] = jgg;
    if (!io->needs_grad[1])
        return;
    int axes[TG_MAX_DIMS], nd = tg_ndim(x);
    int64_t n = 1;
    for (int i = 0; i < at->naxes; i++) {
        axes[i] = nd - at->naxes + i;
        n *= tg_dim(x, axes[i]);
    }
    /* rstd in keepdim form, written with differentiable ops (x-dependent at every order). */
    tg_tensor xc = tg_sub(x, tg_mean(x, at->naxes, axes, true));
    tg_tensor var = tg_mean(tg_square(xc), at->naxes, axes, true);
    tg_tensor rstd = tg_pow(tg_add_scalar(var, at->eps), -0.5);
    tg_tensor xh = normalise(x, at->naxes, at->eps);
    tg_tensor l = tg_sum(tg_mul(gg, z), at->naxes, axes, true);
    tg_tensor p = tg_sum(tg_mul(g, xh), at->naxes, axes, true);
    tg_tensor q = tg_sum(tg_mul(gg, xh), at->naxes, axes, true);
    tg_tensor s = tg_add(tg_add(tg_mul(xh, l), tg_mul(z, q)), tg_mul(jgg, p));
    io->grad_inputs[1] = tg_mul(tg_mul_scalar(rstd, n ? -1.0 / (double)n : 0.0), s);
}
static int example_layer_norm_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const struct {
        int nd, naxes;
        int64_t shape[3];
    } cases[] = {{2, 1, {3, 4}}, {3, 2, {2, 3, 4}}, {1, 1, {5}}};
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    norm_attr *at = attr;
    at->naxes = cases[index].naxes;
    at->eps = 1e-5;
    in[0] = tg__example(tp, cases[index].nd, cases[index].shape, -1, 1, 0, 221 + (uint64_t)index);
    in[1] = tg__example(tp, cases[index].nd, cases[index].shape, -2, 2, 0, 224 + (uint64_t)index);
    return 2;
}
const tg_op_def tg__op_layer_norm_backward = {.name = "layer_norm_backward",
                                              .ninputs = 2,
                                              .attr_size = sizeof(norm_attr),
                                              .check = layer_norm_bw_check,
                                              .forward = layer_norm_bw_forward,
                                              .backward = layer_norm_bw_backward,
                                              .example = example_layer_norm_bw};

/* ---- rms_norm ---------------------------------------------------------------------------- */

/* rms_norm: inputs x, then weight if has_weight. rms_norm_backward: inputs (g, x), then the
 * weight if has_weight. */
typedef struct rms_attr {
    int has_weight;
    double eps;
} rms_attr;

/* x (input `xi`) is float with at least one dim, eps is valid, and `want` inputs are given. */
static tg_status rms_check_x(tg_check *c, int xi, int want)
{
    const rms_attr *at = c->attr;
    if (c->ninputs != want)
        return tg_check_fail(c, TG_INVALID, "takes %d inputs%s, got %d", want,
                             at->has_weight ? " (with the weight)" : "", c->ninputs);
    tg_status st = tg_check_float(c, xi);
    if (st)
        return st;
    if (c->in[xi]->ndim < 1)
        return tg_check_fail(c, TG_SHAPE, "needs at least one dim to normalise over");
    if (!(at->eps >= 0) || !isfinite(at->eps))
        return tg_check_fail(c, TG_INVALID, "eps must be finite and >= 0, not %g", at->eps);
    return TG_OK;
}

/* Input i (the weight) has x's dtype and the shape [last dim of x]. */
static tg_status rms_check_weight(tg_check *c, int i, const tg_view *x)
{
    const tg_view *w = c->in[i];
    if (w->dtype != x->dtype)
        return tg_check_fail(c, TG_DTYPE, "weight is %s, the input %s", tg_dtype_name(w->dtype),
                             tg_dtype_name(x->dtype));
    if (w->ndim != 1 || w->shape[0] != x->shape[x->ndim - 1])
        return tg_check_fail(c, TG_SHAPE, "weight must have shape [%lld], the input's last dim",
                             (long long)x->shape[x->ndim - 1]);
    return TG_OK;
}

/* 1 / sqrt(mean(x^2) + eps) of a row of n > 0 elements, the squares summed in double (no shift
 * is needed: the terms are all positive, so the sum does not cancel). */
#define ROW_RMS(T, name)                                                                           \
    static double name(const T *xr, int64_t n, double eps)                                         \
    {                                                                                              \
        double s[LANES] = {0};                                                                     \
        int64_t j = 0;                                                                             \
        for (; j + LANES <= n; j += LANES)                                                         \
            for (int l = 0; l < LANES; l++)                                                        \
                s[l] += (double)xr[j + l] * xr[j + l];                                             \
        for (; j < n; j++)                                                                         \
            s[0] += (double)xr[j] * xr[j];                                                         \
        return 1.0 / sqrt(lanes_total(s) / (double)n + eps);                                       \
    }
ROW_RMS(float, row_rms_f32)
ROW_RMS(double, row_rms_f64)

/* y = x / sqrt(mean(x^2) + eps) * w over the last dim (PyTorch >= 2.4's
 * torch.nn.functional.rms_norm with normalized_shape = [last dim]); with xn = rms_norm(x):
 * dx += rms_norm_backward(g, x, w), dw += g * xn (the engine sums dw over the leading dims) */
static tg_status rms_norm_check(tg_check *c)
{
    const rms_attr *at = c->attr;
    tg_status st = rms_check_x(c, 0, 1 + (at->has_weight != 0));
    if (!st && at->has_weight)
        st = rms_check_weight(c, 1, c->in[0]);
    if (st)
        return st;
    *c->out = *c->in[0];
    return TG_OK;
}
#define RMS_NORM_LOOP(T, name, rms)                                                                \
    static void name(const T *x, const T *w, T *y, int64_t rows, int64_t n, double eps)            \
    {                                                                                              \
        for (int64_t r = 0; r < rows && n > 0; r++) {                                              \
            const T *xr = x + r * n;                                                               \
            T *yr = y + r * n;                                                                     \
            double scale = rms(xr, n, eps);                                                        \
            for (int64_t j = 0; j < n; j++)                                                        \
                yr[j] = (T)(xr[j] * scale);                                                        \
            if (w) /* PyTorch's order: the normalised row, rounded, times the weight */            \
                for (int64_t j = 0; j < n; j++)                                                    \
                    yr[j] *= w[j];                                                                 \
        }                                                                                          \
    }
RMS_NORM_LOOP(float, rms_norm_f32, row_rms_f32)
RMS_NORM_LOOP(double, rms_norm_f64, row_rms_f64)
static void rms_norm_forward(const tg_kernel *k)
{
    const rms_attr *at = k->attr;
    const void *w = at->has_weight ? k->in[1]->data : NULL;
    int64_t rows, n;
    split_rows(k->in[0], 1, &rows, &n);
    if (k->out->dtype == TG_F32)
        rms_norm_f32(k->in[0]->data, w, k->out->data, rows, n, at->eps);
    else
        rms_norm_f64(k->in[0]->data, w, k->out->data, rows, n, at->eps);
}
static void rms_norm_backward(const tg_backward_io *io)
{
    const rms_attr *at = io->attr;
    tg_tensor g = io->grad_output, x = io->inputs[0];
    if (io->needs_grad[0]) {
        tg_tensor in[3] = {g, x, at->has_weight ? io->inputs[1] : (tg_tensor){0}};
        io->grad_inputs[0] = tg__apply(TG__OP_rms_norm_backward, 2 + at->has_weight, in, at);
    }
    if (at->has_weight && io->needs_grad[1]) {
        rms_attr plain = {0, at->eps};
        io->grad_inputs[1] = tg_mul(g, tg__apply1(TG__OP_rms_norm, x, &plain));
    }
}
static int example_rms_norm(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const struct {
        int nd, w;
        int64_t shape[3];
    } cases[] = {
        {2, 1, {3, 4}},    /* the usual case */
        {3, 0, {2, 3, 4}}, /* no weight */
        {1, 1, {5}},       /* one row */
        {2, 1, {3, 1}},    /* rows of one element */
    };
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    rms_attr *at = attr;
    at->has_weight = cases[index].w;
    at->eps = 1e-5;
    int nd = cases[index].nd;
    const int64_t *shape = cases[index].shape;
    in[0] = tg__example(tp, nd, shape, -2, 2, 0.2, 231 + (uint64_t)index);
    if (at->has_weight)
        in[1] = tg__example(tp, 1, shape + nd - 1, 0.5, 1.5, 0, 235);
    return 1 + at->has_weight;
}
const tg_op_def tg__op_rms_norm = {.name = "rms_norm",
                                   .ninputs = TG_VARIADIC,
                                   .attr_size = sizeof(rms_attr),
                                   .check = rms_norm_check,
                                   .forward = rms_norm_forward,
                                   .backward = rms_norm_backward,
                                   .example = example_rms_norm};

tg_tensor tg_rms_norm(tg_tensor x, tg_tensor weight, double eps)
{
    rms_attr at = {0, eps};
    if (!tg_tensor_tape(weight)) /* a zero-initialised handle (no tape) means none */
        return tg__apply1(TG__OP_rms_norm, x, &at);
    at.has_weight = 1;
    return tg__apply2(TG__OP_rms_norm, x, weight, &at);
}

/* ---- rms_norm_backward ------------------------------------------------------------------- */

/* z = J (w g) with J = d rms_norm(x) / dx = r I - (r^3 / n) x x^T (symmetric), per row of n,
 * r = 1 / sqrt(mean(x^2) + eps):  z = r w g - (r^3 / n) x p,  p = sum(x w g);
 * with h = w g, q = sum(x gg), c = sum(gg h) (row sums) and jgg = J gg:
 *   dg += w jgg,  dw += g jgg,
 *   dx += -(r^3 / n) (x c + p gg + q h) + (3 r^5 / n^2) p q x */
static tg_status rms_norm_bw_check(tg_check *c)
{
    const rms_attr *at = c->attr;
    tg_status st = tg_check_float(c, 0);
    if (!st)
        st = rms_check_x(c, 1, 2 + (at->has_weight != 0));
    if (st)
        return st;
    const tg_view *g = c->in[0], *x = c->in[1];
    if (g->dtype != x->dtype)
        return tg_check_fail(c, TG_DTYPE, "gradient and input have different dtypes");
    bool same = g->ndim == x->ndim;
    for (int d = 0; same && d < g->ndim; d++)
        same = g->shape[d] == x->shape[d];
    if (!same)
        return tg_check_fail(c, TG_SHAPE, "gradient and input must have the same shape");
    if (at->has_weight && (st = rms_check_weight(c, 2, x)))
        return st;
    *c->out = *x;
    return TG_OK;
}
/* Two passes over a row in cache: the sums (r and p), then z. */
#define RMS_NORM_BW_LOOP(T, name, rms)                                                             \
    static void name(const T *g, const T *x, const T *w, T *z, int64_t rows, int64_t n,            \
                     double eps)                                                                   \
    {                                                                                              \
        for (int64_t r = 0; r < rows && n > 0; r++) {                                              \
            const T *gr = g + r * n, *xr = x + r * n;                                              \
            T *zr = z + r * n;                                                                     \
            double scale = rms(xr, n, eps), p[LANES] = {0};                                        \
            int64_t j = 0;                                                                         \
            for (; j + LANES <= n; j += LANES)                                                     \
                for (int l = 0; l < LANES; l++)                                                    \
                    p[l] += (double)xr[j + l] * gr[j + l] * (w ? w[j + l] : 1);                    \
            for (; j < n; j++)                                                                     \
                p[0] += (double)xr[j] * gr[j] * (w ? w[j] : 1);                                    \
            double cube = scale * scale * scale * lanes_total(p) / (double)n;                      \
            for (j = 0; j < n; j++)                                                                \
                zr[j] = (T)(scale * gr[j] * (w ? w[j] : 1) - cube * xr[j]);                        \
        }                                                                                          \
    }
RMS_NORM_BW_LOOP(float, rms_norm_bw_f32, row_rms_f32)
RMS_NORM_BW_LOOP(double, rms_norm_bw_f64, row_rms_f64)
static void rms_norm_bw_forward(const tg_kernel *k)
{
    const rms_attr *at = k->attr;
    const void *w = at->has_weight ? k->in[2]->data : NULL;
    int64_t rows, n;
    split_rows(k->in[1], 1, &rows, &n);
    if (k->out->dtype == TG_F32)
        rms_norm_bw_f32(k->in[0]->data, k->in[1]->data, w, k->out->data, rows, n, at->eps);
    else
        rms_norm_bw_f64(k->in[0]->data, k->in[1]->data, w, k->out->data, rows, n, at->eps);
}
static void rms_norm_bw_backward(const tg_backward_io *io)
{
    const rms_attr *at = io->attr;
    tg_tensor gg = io->grad_output, g = io->inputs[0], x = io->inputs[1];
    tg_tensor w = at->has_weight ? io->inputs[2] : (tg_tensor){0};
    rms_attr plain = {0, at->eps};
    tg_tensor jgg = tg__apply2(TG__OP_rms_norm_backward, gg, x, &plain);
    if (io->needs_grad[0])
        io->grad_inputs[0] = at->has_weight ? tg_mul(jgg, w) : jgg;
    if (at->has_weight && io->needs_grad[2])
        io->grad_inputs[2] = tg_mul(g, jgg);
    if (!io->needs_grad[1])
        return;
    int last = tg_ndim(x) - 1;
    double n = (double)tg_dim(x, last);
    tg_tensor h = at->has_weight ? tg_mul(g, w) : g;
    /* The row factors in keepdim form, written with differentiable ops. */
    tg_tensor ms = tg_add_scalar(tg_mean(tg_square(x), 1, &last, true), at->eps);
    tg_tensor r3 = tg_pow(ms, -1.5), r5 = tg_pow(ms, -2.5);
    tg_tensor p = tg_sum(tg_mul(x, h), 1, &last, true);
    tg_tensor q = tg_sum(tg_mul(x, gg), 1, &last, true);
    tg_tensor c = tg_sum(tg_mul(gg, h), 1, &last, true);
    tg_tensor terms = tg_add(tg_add(tg_mul(x, c), tg_mul(gg, p)), tg_mul(h, q));
    tg_tensor first = tg_mul(tg_mul_scalar(r3, -1.0 / n), terms);
    tg_tensor second = tg_mul(tg_mul_scalar(tg_mul(r5, tg_mul(p, q)), 3.0 / (n * n)), x);
    io->grad_inputs[1] = tg_add(first, second);
}
static int example_rms_norm_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const struct {
        int nd, w;
        int64_t shape[3];
    } cases[] = {{2, 0, {3, 4}}, {3, 1, {2, 3, 4}}, {1, 1, {5}}};
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    rms_attr *at = attr;
    at->has_weight = cases[index].w;
    at->eps = 1e-5;
    int nd = cases[index].nd;
    const int64_t *shape = cases[index].shape;
    in[0] = tg__example(tp, nd, shape, -1, 1, 0, 241 + (uint64_t)index);
    in[1] = tg__example(tp, nd, shape, -2, 2, 0, 244 + (uint64_t)index);
    if (at->has_weight)
        in[2] = tg__example(tp, 1, shape + nd - 1, 0.5, 1.5, 0, 247);
    return 2 + at->has_weight;
}
const tg_op_def tg__op_rms_norm_backward = {.name = "rms_norm_backward",
                                            .ninputs = TG_VARIADIC,
                                            .attr_size = sizeof(rms_attr),
                                            .check = rms_norm_bw_check,
                                            .forward = rms_norm_bw_forward,
                                            .backward = rms_norm_bw_backward,
                                            .example = example_rms_norm_bw};
