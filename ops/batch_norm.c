/* batch_norm.c — batch normalisation over every axis but 1 (torch.nn.functional.batch_norm):
 *   batch_norm           the fused forward, with the batch statistics (training) or given ones
 *   batch_norm_stats     the per-channel statistics, [3, C] (below)
 *   batch_norm_sums      the per-channel sums of g and g xh that every gradient needs, [2, C]
 *   batch_norm_backward  the training-mode input gradient, one pass per channel given the sums
 *   batch_norm_update    the running statistics after one training step (no gradient)
 * and tg_batch_norm, which records them and writes the running statistics. Every op but the
 * update has a composite backward of its own, so batch_norm is differentiable to any order.
 *
 * Layout: x [N, C, S...] is read as N blocks of C channels of S = prod(S...) contiguous
 * elements; a channel's M = N S elements are its batch. Every kernel walks x in memory order
 * and keeps its per-channel sums in double, in scratch the check asks for (kernels may not
 * allocate), so [N, C] inputs (S = 1) vectorise across channels and wide images along rows.
 *
 * Statistics travel between the ops as one [3, C] tensor of x's dtype, rows [mean; var; rest]:
 * the mean rounded to the dtype, the biased variance, and what the rounding left of the mean
 * (computed in double around a shift). Kernels centre x as (x - mean) - rest, so a channel at a
 * large offset keeps its digits in the backward as in the forward. The rest is a rounding
 * remainder: a derivative of the mean goes to row 0 (as any rounded result's derivative ignores
 * its rounding), and an op reading the statistics gives row 2 the gradient it gives row 0.
 * Given statistics (the running ones) have no remainder: their rest is 0. */
#include "kernels.h"
#include "ops.h"

#include <stdarg.h>
#include <stdio.h>

/* batch_norm: inputs x, then the statistics [3, C] if has_stats, then weight and bias [C] if
 * given. batch_norm_sums: (g, x, stats); batch_norm_backward: (g, x, stats, sums[, weight]);
 * they use eps (and has_weight); the other flags are 0. */
typedef struct bn_attr {
    int has_stats; /* normalise with the given statistics (evaluation); else the batch's */
    int has_weight;
    int has_bias;
    double eps;
} bn_attr;

/* batch_norm_update: inputs (stats [3, C], running_mean [C], running_var [C]). */
typedef struct bn_update_attr {
    double momentum;
    int64_t count; /* elements per channel in the batch (> 1): the unbiased variance's M */
} bn_update_attr;

/* ---- geometry, checks and the per-channel sums ---------------------------------------------- */

/* x as [N, C, S]. */
static void bn_dims(const tg_view *x, int64_t *N, int64_t *C, int64_t *S)
{
    *N = x->shape[0], *C = x->shape[1], *S = 1;
    for (int d = 2; d < x->ndim; d++)
        *S *= x->shape[d];
}

/* Input i is a float tensor of at least two dims ([N, C, ...]). */
static tg_status check_input(tg_check *c, int i, const char *what)
{
    tg_status st = tg_check_float(c, i);
    if (st)
        return st;
    if (c->in[i]->ndim < 2)
        return tg_check_fail(c, TG_SHAPE, "%s must be [N, C, ...] (2 dims or more), not %d-d", what,
                             c->in[i]->ndim);
    return TG_OK;
}

/* Rows of the statistics tensor, [mean; var; rest] (see the top of the file). */
enum { STATS_ROWS = 3 };

/* Input i has x's dtype and the shape [C] (rows 0) or [rows, C]. */
static tg_status check_channels(tg_check *c, int i, const char *what, int rows)
{
    const tg_view *x = c->in[0], *v = c->in[i];
    if (v->dtype != x->dtype)
        return tg_check_fail(c, TG_DTYPE, "%s is %s, the input %s", what, tg_dtype_name(v->dtype),
                             tg_dtype_name(x->dtype));
    bool ok = rows ? v->ndim == 2 && v->shape[0] == rows && v->shape[1] == x->shape[1]
                   : v->ndim == 1 && v->shape[0] == x->shape[1];
    if (!ok) {
        char got[128];
        tg_format_shape(got, sizeof got, 0, v->ndim, v->shape);
        return rows ? tg_check_fail(c, TG_SHAPE, "%s has shape %s, not [%d,%lld]", what, got, rows,
                                    (long long)x->shape[1])
                    : tg_check_fail(c, TG_SHAPE, "%s has shape %s, not [%lld] (the channels)", what,
                                    got, (long long)x->shape[1]);
    }
    return TG_OK;
}

/* Input i has input 0's dtype and shape (a gradient beside its input). */
static tg_status check_like_input(tg_check *c, int i, const char *what)
{
    const tg_view *x = c->in[0], *v = c->in[i];
    tg_status st = tg_check_float(c, i);
    if (st)
        return st;
    bool same = v->dtype == x->dtype && v->ndim == x->ndim;
    for (int d = 0; same && d < x->ndim; d++)
        same = v->shape[d] == x->shape[d];
    if (!same)
        return tg_check_fail(c, v->dtype != x->dtype ? TG_DTYPE : TG_SHAPE,
                             "%s must have the gradient's dtype and shape", what);
    return TG_OK;
}

static tg_status check_eps(tg_check *c, double eps)
{
    if (!(eps >= 0) || !isfinite(eps))
        return tg_check_fail(c, TG_INVALID, "eps must be finite and >= 0, not %g", eps);
    return TG_OK;
}

/* Scratch of n doubles after `skip` bytes (rounded up to a double's alignment). */
static double *scratch(void *saved, size_t skip)
{
    return (double *)((char *)saved + ((skip + 7) & ~(size_t)7));
}
static size_t scratch_bytes(size_t skip, int64_t doubles)
{
    return ((skip + 7) & ~(size_t)7) + (size_t)doubles * sizeof(double);
}

/* Row sums in LANES independent double accumulators (added pairwise at the end): one chain of
 * dependent adds would bound the loops by the add latency (as in norm.c). */
#define LANES 8
static double lanes_total(const double *acc)
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* sum of (r_j - shift), and of ((r_j - shift) - mean)^2, over a row of S elements. */
#define BN_ROW_SUMS(T, sum, squares)                                                               \
    static double sum(const T *r, int64_t S, double shift)                                         \
    {                                                                                              \
        double s[LANES] = {0};                                                                     \
        int64_t j = 0;                                                                             \
        for (; j + LANES <= S; j += LANES)                                                         \
            for (int l = 0; l < LANES; l++)                                                        \
                s[l] += r[j + l] - shift;                                                          \
        for (; j < S; j++)                                                                         \
            s[0] += r[j] - shift;                                                                  \
        return lanes_total(s);                                                                     \
    }                                                                                              \
    static double squares(const T *r, int64_t S, double shift, double mean)                        \
    {                                                                                              \
        double s[LANES] = {0};                                                                     \
        int64_t j = 0;                                                                             \
        for (; j + LANES <= S; j += LANES)                                                         \
            for (int l = 0; l < LANES; l++) {                                                      \
                double d = (r[j + l] - shift) - mean;                                              \
                s[l] += d * d;                                                                     \
            }                                                                                      \
        for (; j < S; j++) {                                                                       \
            double d = (r[j] - shift) - mean;                                                      \
            s[0] += d * d;                                                                         \
        }                                                                                          \
        return lanes_total(s);                                                                     \
    }
BN_ROW_SUMS(float, shifted_sum_f32, centred_squares_f32)
BN_ROW_SUMS(double, shifted_sum_f64, centred_squares_f64)

/* The statistics of every channel, two passes in double around a shift (ops/norm.c's ROW_STATS,
 * per channel): shift = the channel's first element, centre = mean(x - shift) (the mean is shift
 * + centre), var = the mean of ((x - shift) - centre)^2, the biased variance. A channel with a
 * large common offset keeps the digits of its spread. An empty batch has NaN statistics (a mean
 * of nothing). shift, centre, var: C doubles each. */
#define BN_STATS(T, name, sum, squares)                                                            \
    static void name(const T *x, int64_t N, int64_t C, int64_t S, double *shift, double *centre,   \
                     double *var)                                                                  \
    {                                                                                              \
        double count = (double)N * (double)S;                                                      \
        for (int64_t c = 0; c < C; c++) {                                                          \
            shift[c] = count > 0 ? x[c * S] : 0;                                                   \
            centre[c] = var[c] = 0;                                                                \
        }                                                                                          \
        for (int64_t n = 0; n < N; n++) {                                                          \
            const T *xn = x + n * C * S;                                                           \
            for (int64_t c = 0; S == 1 && c < C; c++)                                              \
                centre[c] += xn[c] - shift[c];                                                     \
            for (int64_t c = 0; S != 1 && c < C; c++)                                              \
                centre[c] += sum(xn + c * S, S, shift[c]);                                         \
        }                                                                                          \
        for (int64_t c = 0; c < C; c++)                                                            \
            centre[c] /= count;                                                                    \
        for (int64_t n = 0; n < N; n++) {                                                          \
            const T *xn = x + n * C * S;                                                           \
            for (int64_t c = 0; S == 1 && c < C; c++) {                                            \
                double d = (xn[c] - shift[c]) - centre[c];                                         \
                var[c] += d * d;                                                                   \
            }                                                                                      \
            for (int64_t c = 0; S != 1 && c < C; c++)                                              \
                var[c] += squares(xn + c * S, S, shift[c], centre[c]);                             \
        }                                                                                          \
        for (int64_t c = 0; c < C; c++)                                                            \
            var[c] /= count;                                                                       \
    }
BN_STATS(float, stats_f32, shifted_sum_f32, centred_squares_f32)
BN_STATS(double, stats_f64, shifted_sum_f64, centred_squares_f64)

/* Statistics into double arrays (shift, centre and var: C doubles each), by x's dtype. */
static void channel_stats(const tg_view *x, double *shift, double *centre, double *var)
{
    int64_t N, C, S;
    bn_dims(x, &N, &C, &S);
    if (x->dtype == TG_F32)
        stats_f32(x->data, N, C, S, shift, centre, var);
    else
        stats_f64(x->data, N, C, S, shift, centre, var);
}

/* Element i of a float tensor's data, in double. */
static double element(const tg_view *v, int64_t i)
{
    return v->dtype == TG_F32 ? ((const float *)v->data)[i] : ((const double *)v->data)[i];
}

/* Writes v (n values) into a float tensor's data from element `offset`, rounded to its dtype. */
static void store(const tg_view *v, int64_t offset, const double *values, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (v->dtype == TG_F32)
            ((float *)v->data)[offset + i] = (float)values[i];
        else
            ((double *)v->data)[offset + i] = values[i];
    }
}

/* Writes [mean; var; rest] into row-major [3, C] data of dtype dt from the mean as shift + centre
 * (doubles, centre the smaller part in practice) and var: the mean's rounding to dt and the
 * rounding of shift + centre itself (TwoSum, exact) both go to the rest. */
static void store_statistics(void *data, tg_dtype dt, int64_t C, const double *shift,
                             const double *centre, const double *var)
{
    tg_view v = {data, STATS_ROWS * C, dt, 2, {STATS_ROWS, C}};
    for (int64_t c = 0; c < C; c++) {
        double sum = shift[c] + centre[c], part = sum - shift[c];
        double error = (shift[c] - (sum - part)) + (centre[c] - part); /* shift + centre - sum */
        double mean = dt == TG_F32 ? (float)sum : sum;
        double rest = (sum - mean) + error;
        store(&v, c, &mean, 1);
        store(&v, C + c, &var[c], 1);
        store(&v, 2 * C + c, &rest, 1);
    }
}

/* The statistics' mean as two doubles for centring, mean and rest (row 0 and row 2). */
static void read_mean(const tg_view *stats, int64_t C, double *mean, double *rest)
{
    for (int64_t c = 0; c < C; c++) {
        mean[c] = element(stats, c);
        rest[c] = element(stats, 2 * C + c);
    }
}

/* ---- the composite rules' pieces: per-channel tensors with tapegrad ops --------------------- */

/* A [C] tensor shaped [1, C, 1, ...] to broadcast against x (of ndim dims). */
static tg_tensor per_channel(tg_tensor v, int ndim)
{
    int64_t shape[TG_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        shape[d] = 1;
    shape[1] = tg_dim(v, 0);
    return tg_reshape(v, ndim, shape);
}

/* The sum of t (of ndim dims) over every axis but 1: [C]. */
static tg_tensor channel_sum(tg_tensor t)
{
    int axes[TG_MAX_DIMS], n = 0;
    for (int d = 0; d < tg_ndim(t); d++)
        if (d != 1)
            axes[n++] = d;
    return tg_sum(t, n, axes, false);
}

/* Row i of an [R, C] tensor, as [C]. */
static tg_tensor row(tg_tensor t, int i)
{
    return tg_reshape(tg_slice(t, 0, i, i + 1, 1), 1, (int64_t[]){tg_dim(t, 1)});
}

/* 1 / sqrt(var + eps), [C]. */
static tg_tensor rstd(tg_tensor var, double eps) { return tg_pow(tg_add_scalar(var, eps), -0.5); }

/* Elements per channel of x, as a double. */
static double per_channel_count(tg_tensor x)
{
    int64_t c = tg_dim(x, 1);
    return c > 0 ? (double)tg_numel(x) / (double)c : 0;
}

/* (x - mean) / sqrt(var + eps) with given statistics: batch_norm in evaluation form, no affine. */
static tg_tensor normalised(tg_tensor x, tg_tensor stats, double eps)
{
    bn_attr at = {1, 0, 0, eps};
    return tg__apply2(TG__OP_batch_norm, x, stats, &at);
}

/* The gradient of a [3, C] statistics input from the mean's and the variance's: the rest gets
 * the mean's (the op reads mean + rest). */
static tg_tensor statistics_grad(tg_tensor dmean, tg_tensor dvar)
{
    tg_tensor rows[3] = {dmean, dvar, dmean};
    return tg_stack(3, rows, 0);
}

/* ---- batch_norm ----------------------------------------------------------------------------- */

/* y = (x - mean) / sqrt(var + eps) * w + b per channel, with the batch's mean and biased
 * variance (training) or given statistics s (evaluation). Training: with s = the batch's and
 * u = batch_norm_sums(g, x, s) = [sum g; sum g xh]:
 *   dx += batch_norm_backward(g, x, s, u, w),  dw += u[1],  db += u[0];
 * evaluation, r = 1 / sqrt(var + eps):
 *   dx += g w r,  dmean += -w r u[0],  dvar += -w r^2 u[1] / 2,  dw += u[1],  db += u[0]
 * Scratch: training keeps the batch statistics in x's dtype ([3, C], for the backward) before
 * three double arrays; evaluation has the arrays only. */
static tg_status batch_norm_check(tg_check *c)
{
    const bn_attr *at = c->attr;
    int stats = !!at->has_stats, want = 1 + stats + !!at->has_weight + !!at->has_bias;
    if (c->ninputs != want)
        return tg_check_fail(c, TG_INVALID, "takes %d inputs (x%s%s%s), got %d", want,
                             stats ? ", statistics" : "", at->has_weight ? ", weight" : "",
                             at->has_bias ? ", bias" : "", c->ninputs);
    tg_status st = check_input(c, 0, "the input");
    if (!st)
        st = check_eps(c, at->eps);
    if (!st && stats)
        st = check_channels(c, 1, "the statistics", STATS_ROWS);
    if (!st && at->has_weight)
        st = check_channels(c, 1 + stats, "the weight", 0);
    if (!st && at->has_bias)
        st = check_channels(c, 1 + stats + !!at->has_weight, "the bias", 0);
    if (st)
        return st;
    const tg_view *x = c->in[0];
    int64_t N, C, S;
    bn_dims(x, &N, &C, &S);
    if (!stats && x->numel == C && C > 0) { /* PyTorch's words */
        char shape[128];
        tg_format_shape(shape, sizeof shape, 0, x->ndim, x->shape);
        return tg_check_fail(c, TG_INVALID,
                             "expected more than 1 value per channel when training, got input "
                             "size %s",
                             shape);
    }
    *c->out = *x;
    size_t kept = stats ? 0 : STATS_ROWS * (size_t)C * tg_dtype_size(x->dtype);
    c->saved_bytes = scratch_bytes(kept, 3 * C);
    return TG_OK;
}
/* y = ((x - shift[c]) - centre[c]) scale[c] + bias[c], in double, rounded once: the mean is
 * shift + centre, kept in two parts so that x - mean keeps its digits at any offset. */
#define BN_APPLY(T, name)                                                                          \
    static void name(const T *x, T *y, int64_t N, int64_t C, int64_t S, const double *shift,       \
                     const double *centre, const double *scale, const T *b)                        \
    {                                                                                              \
        for (int64_t n = 0; n < N; n++) {                                                          \
            const T *xn = x + n * C * S;                                                           \
            T *yn = y + n * C * S;                                                                 \
            for (int64_t c = 0; S == 1 && c < C; c++)                                              \
                yn[c] = (T)(((xn[c] - shift[c]) - centre[c]) * scale[c] + (b ? b[c] : 0));         \
            for (int64_t c = 0; S != 1 && c < C; c++) {                                            \
                const T *xr = xn + c * S;                                                          \
                T *yr = yn + c * S;                                                                \
                double h = shift[c], m = centre[c], k = scale[c], o = b ? b[c] : 0;                \
                for (int64_t j = 0; j < S; j++)                                                    \
                    yr[j] = (T)(((xr[j] - h) - m) * k + o);                                        \
            }                                                                                      \
        }                                                                                          \
    }
BN_APPLY(float, apply_f32)
BN_APPLY(double, apply_f64)
static void batch_norm_forward(const tg_kernel *k)
{
    const bn_attr *at = k->attr;
    const tg_view *x = k->in[0];
    int stats = !!at->has_stats;
    const tg_view *w = at->has_weight ? k->in[1 + stats] : NULL;
    const tg_view *b = at->has_bias ? k->in[1 + stats + !!at->has_weight] : NULL;
    int64_t N, C, S;
    bn_dims(x, &N, &C, &S);
    size_t kept = stats ? 0 : STATS_ROWS * (size_t)C * tg_dtype_size(x->dtype);
    double *shift = scratch(k->saved, kept), *centre = shift + C, *scale = centre + C;
    if (stats) {
        read_mean(k->in[1], C, shift, centre);
        for (int64_t c = 0; c < C; c++)
            scale[c] = element(k->in[1], C + c);
    } else {
        channel_stats(x, shift, centre, scale);
        store_statistics(k->saved, x->dtype, C, shift, centre, scale); /* the backward's */
    }
    for (int64_t c = 0; c < C; c++)
        scale[c] = 1.0 / sqrt(scale[c] + at->eps) * (w ? element(w, c) : 1);
    if (x->dtype == TG_F32)
        apply_f32(x->data, k->out->data, N, C, S, shift, centre, scale, b ? b->data : NULL);
    else
        apply_f64(x->data, k->out->data, N, C, S, shift, centre, scale, b ? b->data : NULL);
}
/* The training-mode rule: the batch statistics as a tensor. Unrecorded (first order), the
 * forward's own, kept in its scratch (no pass over x); recorded (TG_CREATE_GRAPH),
 * batch_norm_stats(x), so that the recorded gradient depends on x through them too. */
static tg_tensor batch_statistics(const tg_backward_io *io)
{
    tg_tensor x = io->inputs[0];
    tg_tape *tp = tg_tensor_tape(x);
    if (tg_tape_grad_enabled(tp))
        return tg__apply1(TG__OP_batch_norm_stats, x, NULL);
    int64_t shape[2] = {STATS_ROWS, tg_dim(x, 1)};
    return tg_tensor_from(tp, tg_tensor_dtype(x), 2, shape, io->saved);
}
static void batch_norm_backward(const tg_backward_io *io)
{
    const bn_attr *at = io->attr;
    int stats = !!at->has_stats;
    int wi = at->has_weight ? 1 + stats : 0, bi = at->has_bias ? 1 + stats + !!wi : 0;
    tg_tensor g = io->grad_output, x = io->inputs[0], none = {0};
    tg_tensor w = wi ? io->inputs[wi] : none;
    tg_tensor s = stats ? io->inputs[1] : batch_statistics(io), u = none;
    /* The sums: every gradient in training, all but the input's in evaluation. */
    if (!stats || io->needs_grad[1] || (wi && io->needs_grad[wi]) || (bi && io->needs_grad[bi])) {
        bn_attr sums_attr = {0, 0, 0, at->eps};
        u = tg__apply3(TG__OP_batch_norm_sums, g, x, s, &sums_attr);
    }
    if (wi && io->needs_grad[wi])
        io->grad_inputs[wi] = row(u, 1);
    if (bi && io->needs_grad[bi])
        io->grad_inputs[bi] = row(u, 0);
    if (!stats) {
        if (io->needs_grad[0]) {
            bn_attr bw = {0, !!wi, 0, at->eps};
            tg_tensor in[5] = {g, x, s, u, w};
            io->grad_inputs[0] = tg__apply(TG__OP_batch_norm_backward, 4 + !!wi, in, &bw);
        }
        return;
    }
    tg_tensor r = rstd(row(s, 1), at->eps), k = wi ? tg_mul(r, w) : r;
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg_mul(g, per_channel(k, tg_ndim(x)));
    if (io->needs_grad[1])
        io->grad_inputs[1] = statistics_grad(tg_neg(tg_mul(k, row(u, 0))),
                                             tg_mul_scalar(tg_mul(tg_mul(k, r), row(u, 1)), -0.5));
}
/* Given statistics [3, C] for the examples: mean in [-0.5, 0.5), var in [0.5, 2), rest in
 * [-0.01, 0.01) (any values: the ops are functions of mean + rest). */
static tg_tensor example_statistics(tg_tape *tp, int64_t C, uint64_t seed)
{
    tg_tensor rows[3] = {tg__example(tp, 1, &C, -0.5, 0.5, 0, seed),
                         tg__example(tp, 1, &C, 0.5, 2, 0, seed + 1),
                         tg__example(tp, 1, &C, -0.01, 0.01, 0, seed + 2)};
    return tg_stack(3, rows, 0);
}
static int example_batch_norm(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const struct {
        int nd, stats, w, b;
        int64_t shape[4];
    } cases[] = {
        {2, 0, 0, 0, {4, 3}},       /* training, [N, C], no affine */
        {4, 0, 1, 1, {2, 3, 2, 2}}, /* training, images, affine */
        {3, 0, 1, 0, {3, 2, 5}},    /* training, weight only */
        {2, 1, 1, 1, {4, 3}},       /* evaluation, affine */
        {4, 1, 0, 0, {2, 3, 2, 2}}, /* evaluation, images, no affine */
    };
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    bn_attr *at = attr;
    at->has_stats = cases[index].stats;
    at->has_weight = cases[index].w;
    at->has_bias = cases[index].b;
    at->eps = 1e-5;
    const int64_t *shape = cases[index].shape, *channels = shape + 1;
    int n = 0;
    in[n++] = tg__example(tp, cases[index].nd, shape, -2, 2, 0, 261 + (uint64_t)index);
    if (at->has_stats)
        in[n++] = example_statistics(tp, *channels, 266);
    if (at->has_weight)
        in[n++] = tg__example(tp, 1, channels, 0.5, 1.5, 0, 269);
    if (at->has_bias)
        in[n++] = tg__example(tp, 1, channels, -1, 1, 0, 270);
    return n;
}
const tg_op_def tg__op_batch_norm = {.name = "batch_norm",
                                     .ninputs = TG_VARIADIC,
                                     .attr_size = sizeof(bn_attr),
                                     .check = batch_norm_check,
                                     .forward = batch_norm_forward,
                                     .backward = batch_norm_backward,
                                     .example = example_batch_norm};

/* ---- batch_norm_stats ----------------------------------------------------------------------- */

/* s = [mean; var; rest] per channel (biased variance), [3, C];
 * dx += (g[0] + 2 g[1] (x - mean)) / M  (M = N S per channel; the rest, a rounding remainder,
 * passes no gradient on) */
static tg_status stats_check(tg_check *c)
{
    tg_status st = check_input(c, 0, "the input");
    if (st)
        return st;
    int64_t C = c->in[0]->shape[1];
    c->out->dtype = c->in[0]->dtype;
    c->out->ndim = 2;
    c->out->shape[0] = STATS_ROWS;
    c->out->shape[1] = C;
    c->saved_bytes = scratch_bytes(0, 3 * C);
    return TG_OK;
}
static void stats_forward(const tg_kernel *k)
{
    int64_t C = k->in[0]->shape[1];
    double *shift = scratch(k->saved, 0), *centre = shift + C, *var = centre + C;
    channel_stats(k->in[0], shift, centre, var);
    store_statistics(k->out->data, k->out->dtype, C, shift, centre, var);
}
static void stats_backward(const tg_backward_io *io)
{
    tg_tensor g = io->grad_output, x = io->inputs[0], s = io->output;
    int nd = tg_ndim(x);
    double M = per_channel_count(x);
    double inv = M > 0 ? 1.0 / M : 0;
    tg_tensor centred = tg_sub(tg_sub(x, per_channel(row(s, 0), nd)), per_channel(row(s, 2), nd));
    tg_tensor from_var = tg_mul(centred, per_channel(tg_mul_scalar(row(g, 1), 2 * inv), nd));
    io->grad_inputs[0] = tg_add(from_var, per_channel(tg_mul_scalar(row(g, 0), inv), nd));
}
static int example_stats(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const struct {
        int nd;
        int64_t shape[4];
    } cases[] = {{2, {4, 3}}, {4, {2, 3, 2, 2}}, {3, {3, 2, 5}}};
    (void)attr;
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    in[0] = tg__example(tp, cases[index].nd, cases[index].shape, -2, 2, 0, 271 + (uint64_t)index);
    return 1;
}
const tg_op_def tg__op_batch_norm_stats = {.name = "batch_norm_stats",
                                           .ninputs = 1,
                                           .check = stats_check,
                                           .forward = stats_forward,
                                           .backward = stats_backward,
                                           .example = example_stats};

/* ---- batch_norm_sums ------------------------------------------------------------------------ */

/* u = [sum g; sum g xh] per channel, [2, C], xh = (x - mean) r, r = 1 / sqrt(var + eps), with
 * the statistics s = [mean; var; rest] (the mean taken as mean + rest);
 * dg += gu[0] + gu[1] xh,  dx += gu[1] r g,  dmean (and drest) += -gu[1] r u[0],
 * dvar += -gu[1] r^2 u[1] / 2 */
static tg_status sums_check(tg_check *c)
{
    const bn_attr *at = c->attr;
    if (at->has_stats || at->has_weight || at->has_bias)
        return tg_check_fail(c, TG_INVALID, "takes no flags but eps");
    tg_status st = check_input(c, 0, "the gradient");
    if (!st)
        st = check_like_input(c, 1, "the input");
    if (!st)
        st = check_channels(c, 2, "the statistics", STATS_ROWS);
    if (!st)
        st = check_eps(c, at->eps);
    if (st)
        return st;
    int64_t C = c->in[0]->shape[1];
    c->out->dtype = c->in[0]->dtype;
    c->out->ndim = 2;
    c->out->shape[0] = 2;
    c->out->shape[1] = C;
    c->saved_bytes = scratch_bytes(0, 4 * C);
    return TG_OK;
}
/* sg[c] += g, sgx[c] += g ((x - mean[c]) - rest[c]), in double. */
#define BN_SUMS(T, name)                                                                           \
    static void name(const T *g, const T *x, int64_t N, int64_t C, int64_t S, const double *mean,  \
                     const double *rest, double *sg, double *sgx)                                  \
    {                                                                                              \
        for (int64_t n = 0; n < N; n++) {                                                          \
            const T *gn = g + n * C * S, *xn = x + n * C * S;                                      \
            for (int64_t c = 0; S == 1 && c < C; c++) {                                            \
                sg[c] += gn[c];                                                                    \
                sgx[c] += gn[c] * ((xn[c] - mean[c]) - rest[c]);                                   \
            }                                                                                      \
            for (int64_t c = 0; S != 1 && c < C; c++) {                                            \
                const T *gr = gn + c * S, *xr = xn + c * S;                                        \
                double m = mean[c], e = rest[c], a[LANES] = {0}, b[LANES] = {0};                   \
                int64_t j = 0;                                                                     \
                for (; j + LANES <= S; j += LANES)                                                 \
                    for (int l = 0; l < LANES; l++) {                                              \
                        a[l] += gr[j + l];                                                         \
                        b[l] += gr[j + l] * ((xr[j + l] - m) - e);                                 \
                    }                                                                              \
                for (; j < S; j++) {                                                               \
                    a[0] += gr[j];                                                                 \
                    b[0] += gr[j] * ((xr[j] - m) - e);                                             \
                }                                                                                  \
                sg[c] += lanes_total(a);                                                           \
                sgx[c] += lanes_total(b);                                                          \
            }                                                                                      \
        }                                                                                          \
    }
BN_SUMS(float, sums_f32)
BN_SUMS(double, sums_f64)
static void sums_forward(const tg_kernel *k)
{
    const bn_attr *at = k->attr;
    const tg_view *g = k->in[0], *x = k->in[1], *s = k->in[2];
    int64_t N, C, S;
    bn_dims(x, &N, &C, &S);
    double *mean = scratch(k->saved, 0), *rest = mean + C, *sg = rest + C, *sgx = sg + C;
    read_mean(s, C, mean, rest);
    for (int64_t c = 0; c < C; c++)
        sg[c] = sgx[c] = 0;
    if (x->dtype == TG_F32)
        sums_f32(g->data, x->data, N, C, S, mean, rest, sg, sgx);
    else
        sums_f64(g->data, x->data, N, C, S, mean, rest, sg, sgx);
    /* sum g xh = r sum g (x - mean); an empty batch sums to 0 whatever r is. */
    for (int64_t c = 0; c < C && N * S > 0; c++)
        sgx[c] *= 1.0 / sqrt(element(s, C + c) + at->eps);
    store(k->out, 0, sg, C);
    store(k->out, C, sgx, C);
}
static void sums_backward(const tg_backward_io *io)
{
    const bn_attr *at = io->attr;
    tg_tensor gu = io->grad_output, g = io->inputs[0], x = io->inputs[1];
    tg_tensor s = io->inputs[2], u = io->output;
    int nd = tg_ndim(x);
    tg_tensor r = rstd(row(s, 1), at->eps), gu1 = row(gu, 1);
    if (io->needs_grad[0]) {
        tg_tensor xh = normalised(x, s, at->eps);
        io->grad_inputs[0] = tg_add(per_channel(row(gu, 0), nd), tg_mul(per_channel(gu1, nd), xh));
    }
    if (io->needs_grad[1])
        io->grad_inputs[1] = tg_mul(g, per_channel(tg_mul(gu1, r), nd));
    if (io->needs_grad[2])
        io->grad_inputs[2] =
            statistics_grad(tg_neg(tg_mul(tg_mul(gu1, r), row(u, 0))),
                            tg_mul_scalar(tg_mul(tg_mul(gu1, tg_square(r)), row(u, 1)), -0.5));
}
/* (g, x, statistics) for the examples. */
static int example_sums_inputs(tg_tape *tp, int index, tg_tensor *in, uint64_t seed)
{
    static const struct {
        int nd;
        int64_t shape[4];
    } cases[] = {{2, {4, 3}}, {4, {2, 3, 2, 2}}, {3, {3, 2, 5}}};
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    const int64_t *shape = cases[index].shape;
    in[0] = tg__example(tp, cases[index].nd, shape, -1, 1, 0, seed + (uint64_t)index);
    in[1] = tg__example(tp, cases[index].nd, shape, -2, 2, 0, seed + 3 + (uint64_t)index);
    in[2] = example_statistics(tp, shape[1], seed + 6);
    return 3;
}
static int example_sums(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    ((bn_attr *)attr)->eps = 1e-5;
    return example_sums_inputs(tp, index, in, 281);
}
const tg_op_def tg__op_batch_norm_sums = {.name = "batch_norm_sums",
                                          .ninputs = 3,
                                          .attr_size = sizeof(bn_attr),
                                          .check = sums_check,
                                          .forward = sums_forward,
                                          .backward = sums_backward,
                                          .example = example_sums};

/* ---- batch_norm_backward -------------------------------------------------------------------- */

/* z = k (g - u[0] / M - xh u[1] / M) per channel, k = w r, xh = (x - mean) r, r = 1 /
 * sqrt(var + eps), M = N S: the training-mode input gradient when s = [mean; var; rest] are the
 * batch's statistics and u = batch_norm_sums(g, x, s) (J g for the symmetric J = dxh/dx, scaled
 * by w). As a function of all its inputs, with gz its output's gradient and sums per channel:
 *   dg += k gz,  du[0] += -k sum(gz) / M,  du[1] += -k sum(gz xh) / M,
 *   dx += -k u[1] r gz / M,  dmean (and drest) += k u[1] r sum(gz) / M,
 *   dvar += k u[1] r^2 sum(gz xh) / (2 M) - dk w r^3 / 2  (dk r^3 / 2 without w),
 *   dw += dk r,  dk = sum(gz g) - u[0] sum(gz) / M - u[1] sum(gz xh) / M */
static tg_status bn_backward_check(tg_check *c)
{
    const bn_attr *at = c->attr;
    int want = 4 + !!at->has_weight;
    if (at->has_stats || at->has_bias)
        return tg_check_fail(c, TG_INVALID, "takes no flags but has_weight and eps");
    if (c->ninputs != want)
        return tg_check_fail(c, TG_INVALID, "takes %d inputs (g, x, statistics, sums%s), got %d",
                             want, at->has_weight ? ", weight" : "", c->ninputs);
    tg_status st = check_input(c, 0, "the gradient");
    if (!st)
        st = check_like_input(c, 1, "the input");
    if (!st)
        st = check_channels(c, 2, "the statistics", STATS_ROWS);
    if (!st)
        st = check_channels(c, 3, "the sums", 2);
    if (!st && at->has_weight)
        st = check_channels(c, 4, "the weight", 0);
    if (!st)
        st = check_eps(c, at->eps);
    if (st)
        return st;
    *c->out = *c->in[0];
    c->saved_bytes = scratch_bytes(0, 5 * c->in[0]->shape[1]);
    return TG_OK;
}
/* z = a[c] g + b[c] + d[c] ((x - mean[c]) - rest[c]), in double. */
#define BN_BACKWARD(T, name)                                                                       \
    static void name(const T *g, const T *x, T *z, int64_t N, int64_t C, int64_t S,                \
                     const double *mean, const double *rest, const double *a, const double *b,     \
                     const double *d)                                                              \
    {                                                                                              \
        for (int64_t n = 0; n < N; n++) {                                                          \
            const T *gn = g + n * C * S, *xn = x + n * C * S;                                      \
            T *zn = z + n * C * S;                                                                 \
            for (int64_t c = 0; S == 1 && c < C; c++)                                              \
                zn[c] = (T)(a[c] * gn[c] + b[c] + d[c] * ((xn[c] - mean[c]) - rest[c]));           \
            for (int64_t c = 0; S != 1 && c < C; c++) {                                            \
                const T *gr = gn + c * S, *xr = xn + c * S;                                        \
                T *zr = zn + c * S;                                                                \
                double m = mean[c], e = rest[c], ac = a[c], bc = b[c], dc = d[c];                  \
                for (int64_t j = 0; j < S; j++)                                                    \
                    zr[j] = (T)(ac * gr[j] + bc + dc * ((xr[j] - m) - e));                         \
            }                                                                                      \
        }                                                                                          \
    }
BN_BACKWARD(float, backward_f32)
BN_BACKWARD(double, backward_f64)
static void bn_backward_forward(const tg_kernel *k)
{
    const bn_attr *at = k->attr;
    const tg_view *g = k->in[0], *x = k->in[1], *s = k->in[2], *u = k->in[3];
    int64_t N, C, S;
    bn_dims(x, &N, &C, &S);
    if (N * S == 0)
        return;
    double M = (double)N * (double)S;
    double *mean = scratch(k->saved, 0), *rest = mean + C, *a = rest + C, *b = a + C, *d = b + C;
    read_mean(s, C, mean, rest);
    for (int64_t c = 0; c < C; c++) {
        double r = 1.0 / sqrt(element(s, C + c) + at->eps);
        a[c] = at->has_weight ? r * element(k->in[4], c) : r;
        b[c] = -a[c] * element(u, c) / M;
        d[c] = -a[c] * element(u, C + c) * r / M;
    }
    if (x->dtype == TG_F32)
        backward_f32(g->data, x->data, k->out->data, N, C, S, mean, rest, a, b, d);
    else
        backward_f64(g->data, x->data, k->out->data, N, C, S, mean, rest, a, b, d);
}
static void bn_backward_backward(const tg_backward_io *io)
{
    const bn_attr *at = io->attr;
    tg_tensor gz = io->grad_output, g = io->inputs[0], x = io->inputs[1];
    tg_tensor s = io->inputs[2], u = io->inputs[3];
    tg_tensor w = at->has_weight ? io->inputs[4] : (tg_tensor){0};
    int nd = tg_ndim(x);
    double M = per_channel_count(x), inv = M > 0 ? 1.0 / M : 0;
    tg_tensor r = rstd(row(s, 1), at->eps), k = at->has_weight ? tg_mul(r, w) : r;
    tg_tensor u0 = row(u, 0), u1 = row(u, 1);
    tg_tensor xh = normalised(x, s, at->eps);
    tg_tensor s_gz = channel_sum(gz), s_gzxh = channel_sum(tg_mul(gz, xh));
    tg_tensor ku1 = tg_mul_scalar(tg_mul(k, u1), inv); /* k u[1] / M */
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg_mul(gz, per_channel(k, nd));
    if (io->needs_grad[1])
        io->grad_inputs[1] = tg_neg(tg_mul(gz, per_channel(tg_mul(ku1, r), nd)));
    if (io->needs_grad[3]) {
        tg_tensor rows[2] = {tg_mul(k, s_gz), tg_mul(k, s_gzxh)};
        io->grad_inputs[3] = tg_mul_scalar(tg_stack(2, rows, 0), -inv);
    }
    bool weight_grad = at->has_weight && io->needs_grad[4];
    if (!io->needs_grad[2] && !weight_grad)
        return;
    /* dk = sum(gz (g - u[0] / M - xh u[1] / M)), the gradient of the prefactor k = w r. */
    tg_tensor dk = tg_sub(channel_sum(tg_mul(gz, g)),
                          tg_mul_scalar(tg_add(tg_mul(u0, s_gz), tg_mul(u1, s_gzxh)), inv));
    if (weight_grad)
        io->grad_inputs[4] = tg_mul(dk, r);
    if (io->needs_grad[2]) {
        tg_tensor dr = at->has_weight ? tg_mul(dk, w) : dk;
        tg_tensor r2 = tg_square(r);
        tg_tensor through_xh = tg_mul_scalar(tg_mul(tg_mul(ku1, r2), s_gzxh), 0.5);
        tg_tensor through_k = tg_mul_scalar(tg_mul(dr, tg_mul(r2, r)), -0.5);
        io->grad_inputs[2] =
            statistics_grad(tg_mul(tg_mul(ku1, r), s_gz), tg_add(through_xh, through_k));
    }
}
static int example_bn_backward(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    int n = example_sums_inputs(tp, index, in, 291);
    if (!n)
        return 0;
    bn_attr *at = attr;
    at->eps = 1e-5;
    at->has_weight = index != 1;
    int64_t C = tg_dim(in[1], 1);
    in[n++] = tg__example(tp, 2, (int64_t[]){2, C}, -1, 1, 0, 301 + (uint64_t)index);
    if (at->has_weight)
        in[n++] = tg__example(tp, 1, &C, 0.5, 1.5, 0, 304);
    return n;
}
const tg_op_def tg__op_batch_norm_backward = {.name = "batch_norm_backward",
                                              .ninputs = TG_VARIADIC,
                                              .attr_size = sizeof(bn_attr),
                                              .check = bn_backward_check,
                                              .forward = bn_backward_forward,
                                              .backward = bn_backward_backward,
                                              .example = example_bn_backward};

/* ---- batch_norm_update ---------------------------------------------------------------------- */

/* [new running_mean; new running_var] = (1 - momentum) [running_mean; running_var]
 *   + momentum [mean + rest; var M / (M - 1)]  (the unbiased variance), in double: PyTorch's
 * update of the running statistics from a batch's statistics (batch_norm_stats), [2, C]. No
 * gradient. */
static tg_status update_check(tg_check *c)
{
    const bn_update_attr *at = c->attr;
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    const tg_view *s = c->in[0];
    if (s->ndim != 2 || s->shape[0] != STATS_ROWS)
        return tg_check_fail(c, TG_SHAPE, "the statistics must be [3, C] (mean; var; rest)");
    for (int i = 1; i < 3; i++) {
        const tg_view *v = c->in[i];
        const char *what = i == 1 ? "running_mean" : "running_var";
        if (v->dtype != s->dtype)
            return tg_check_fail(c, TG_DTYPE, "%s is %s, the statistics %s", what,
                                 tg_dtype_name(v->dtype), tg_dtype_name(s->dtype));
        if (v->ndim != 1 || v->shape[0] != s->shape[1])
            return tg_check_fail(c, TG_SHAPE, "%s must have shape [%lld]", what,
                                 (long long)s->shape[1]);
    }
    if (!(at->momentum >= 0 && at->momentum <= 1))
        return tg_check_fail(c, TG_RANGE, "momentum must be in [0, 1], not %g", at->momentum);
    if (at->count < 2)
        return tg_check_fail(c, TG_RANGE,
                             "a batch of %lld values per channel has no unbiased variance",
                             (long long)at->count);
    *c->out = *s;
    c->out->shape[0] = 2;
    return TG_OK;
}
static void update_forward(const tg_kernel *k)
{
    const bn_update_attr *at = k->attr;
    const tg_view *s = k->in[0];
    int64_t C = s->shape[1];
    double m = at->momentum, unbiased = (double)at->count / (double)(at->count - 1);
    for (int64_t c = 0; c < C; c++) {
        double mean = element(s, c) + element(s, 2 * C + c);
        double v[2] = {m * mean + (1 - m) * element(k->in[1], c),
                       m * (element(s, C + c) * unbiased) + (1 - m) * element(k->in[2], c)};
        store(k->out, c, &v[0], 1);
        store(k->out, C + c, &v[1], 1);
    }
}
static int example_update(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const double momenta[] = {0.1, 0.5, 1.0};
    if (index < 0 || index > 2)
        return 0;
    bn_update_attr *at = attr;
    at->momentum = momenta[index];
    at->count = 8;
    int64_t C = 3 + index;
    in[0] = tg__example(tp, 2, (int64_t[]){STATS_ROWS, C}, 0.2, 2, 0, 311 + (uint64_t)index);
    in[1] = tg__example(tp, 1, &C, -1, 1, 0, 314);
    in[2] = tg__example(tp, 1, &C, 0.5, 2, 0, 315);
    return 3;
}
const tg_op_def tg__op_batch_norm_update = {.name = "batch_norm_update",
                                            .ninputs = 3,
                                            .attr_size = sizeof(bn_update_attr),
                                            .flags = TG_OP_NONDIFF,
                                            .check = update_check,
                                            .forward = update_forward,
                                            .example = example_update};

/* ---- tg_batch_norm -------------------------------------------------------------------------- */

/* Records a batch_norm error on x's tape, in the engine's form: "batch_norm: <what> (input
 * f32[4,3]; node 7)". Returns the error handle. */
static tg_tensor bn_fail(tg_tensor x, tg_status status, const char *fmt, ...)
{
    tg_tape *tp = tg_tensor_tape(x);
    char what[256], shape[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    tg_format_shape(shape, sizeof shape, tg_tensor_dtype(x), tg_ndim(x), tg_shape(x));
    tg_tape_fail(tp, status, "batch_norm: %s (input %s; node %zu)", what, shape,
                 tg_tape_node_count(tp) + 1);
    return tg_error(tp);
}

/* A running statistic is a parameter of x's context, dtype and channels. */
static bool bn_running_ok(tg_tensor x, tg_param *p, const char *what, tg_tensor *err)
{
    char want[128], got[128];
    int64_t C = tg_dim(x, 1);
    if (tg_param_ctx(p) == tg_tape_ctx(tg_tensor_tape(x)) && tg_param_dtype(p) == tg_tensor_dtype(x)
        && tg_param_ndim(p) == 1 && tg_param_shape(p)[0] == C)
        return true;
    tg_format_shape(want, sizeof want, tg_tensor_dtype(x), 1, &C);
    tg_format_shape(got, sizeof got, tg_param_dtype(p), tg_param_ndim(p), tg_param_shape(p));
    if (tg_param_ctx(p) != tg_tape_ctx(tg_tensor_tape(x)))
        *err = bn_fail(x, TG_INVALID, "%s belongs to another context", what);
    else
        *err = bn_fail(x, tg_param_dtype(p) != tg_tensor_dtype(x) ? TG_DTYPE : TG_SHAPE,
                       "%s is %s, not %s (the input's dtype and channels)", what, got, want);
    return false;
}

tg_tensor tg_batch_norm(tg_tensor x, tg_param *running_mean, tg_param *running_var,
                        tg_tensor weight, tg_tensor bias, bool training, double momentum,
                        double eps)
{
    if (tg_tensor_check(x, "batch_norm") != TG_OK)
        return tg_error(tg_tensor_tape(x));
    tg_tape *tp = tg_tensor_tape(x);
    tg_tensor err;
    if (tg_ndim(x) < 2)
        return bn_fail(x, TG_SHAPE, "the input must be [N, C, ...] (2 dims or more)");
    if (!(momentum >= 0 && momentum <= 1))
        return bn_fail(x, TG_RANGE, "momentum must be in [0, 1], not %g", momentum);
    if (!running_mean != !running_var)
        return bn_fail(x, TG_INVALID, "give both running statistics or neither");
    if (running_mean && running_mean == running_var)
        return bn_fail(x, TG_INVALID, "running_mean and running_var are one parameter");
    if (!training && !running_mean)
        return bn_fail(x, TG_INVALID, "evaluation needs the running statistics");
    if (running_mean
        && (!bn_running_ok(x, running_mean, "running_mean", &err)
            || !bn_running_ok(x, running_var, "running_var", &err)))
        return err;
    tg_tensor in[4] = {x};
    bn_attr at = {!training, 0, 0, eps};
    int n = 1;
    if (!training) { /* the running statistics as constants, with no rest */
        int64_t C = tg_dim(x, 1);
        tg_tensor rows[3] = {tg_detach(tg_param_tensor(tp, running_mean)),
                             tg_detach(tg_param_tensor(tp, running_var)),
                             tg_zeros(tp, tg_tensor_dtype(x), 1, &C)};
        in[n++] = tg_stack(3, rows, 0);
    }
    if (tg_tensor_tape(weight)) { /* a zero-initialised handle (no tape) means none */
        at.has_weight = 1;
        in[n++] = weight;
    }
    if (tg_tensor_tape(bias)) {
        at.has_bias = 1;
        in[n++] = bias;
    }
    tg_tensor y = tg__apply(TG__OP_batch_norm, n, in, &at);
    int64_t C = tg_dim(x, 1), count = C > 0 ? tg_numel(x) / C : 0;
    if (!training || !running_mean || count == 0 || !tg_ok(y))
        return y; /* PyTorch leaves the running statistics alone for an empty batch */
    /* The update from the batch's statistics, recorded beside y (no gradient flows through
     * them: the running statistics are not on any path to a loss). */
    bool was = tg_tape_set_grad(tp, false);
    tg_tensor stats = tg__apply1(TG__OP_batch_norm_stats, x, NULL);
    bn_update_attr ut = {momentum, count};
    tg_tensor next = tg__apply3(TG__OP_batch_norm_update, stats, tg_param_tensor(tp, running_mean),
                                tg_param_tensor(tp, running_var), &ut);
    tg_tape_set_grad(tp, was);
    if (!tg_ok(next))
        return tg_error(tp);
    size_t bytes = (size_t)C * tg_dtype_size(tg_tensor_dtype(x));
    memcpy(tg_param_write(running_mean), tg_data(next), bytes);
    memcpy(tg_param_write(running_var), (const char *)tg_data(next) + bytes, bytes);
    return y;
}
