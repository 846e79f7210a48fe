/* dropout.c — inverted dropout with a counter-based mask: whether element i is kept depends only
 * on (seed, i), so no mask is stored and the backward is dropout itself. */
#include "kernels.h"
#include "ops.h"

typedef struct dropout_attr {
    double p; /* probability of zeroing, in [0, 1) */
    uint64_t seed;
} dropout_attr;

/* SplitMix64: the finaliser, and the stream's element i for a seed. The seed is mixed first, so
 * nearby seeds (seed, seed + k * gamma, ...) give unrelated masks rather than shifted ones. */
#define GAMMA 0x9e3779b97f4a7c15ull
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Element i is kept when its uniform draw on [0, 1) (53 bits) is >= p: probability 1 - p. */
static bool kept(uint64_t base, int64_t i, double p)
{
    uint64_t r = mix64(base + ((uint64_t)i + 1) * GAMMA);
    return (double)(r >> 11) * 0x1.0p-53 >= p;
}

/* y = x * keep(seed, i) / (1 - p);  dx += dropout(g; p, seed) (the same mask) */
static tg_status dropout_check(tg_check *c)
{
    const dropout_attr *at = c->attr;
    tg_status st = tg__check_unary(c);
    if (st)
        return st;
    if (!(at->p >= 0 && at->p < 1))
        return tg_check_fail(c, TG_RANGE, "p = %g is out of range (need 0 <= p < 1)", at->p);
    return TG_OK;
}
/* Dropped elements are x * 0, as PyTorch's x * mask: NaN stays NaN, -x stays -0. */
#define DROPOUT_LOOP(T, name)                                                                      \
    static void name(const T *x, T *y, int64_t n, double p, uint64_t seed)                         \
    {                                                                                              \
        const T scale = (T)(1.0 / (1.0 - p));                                                      \
        const uint64_t base = mix64(seed + GAMMA);                                                 \
        for (int64_t i = 0; i < n; i++)                                                            \
            y[i] = x[i] * (kept(base, i, p) ? scale : (T)0);                                       \
    }
DROPOUT_LOOP(float, dropout_f32)
DROPOUT_LOOP(double, dropout_f64)
static void dropout_forward(const tg_kernel *k)
{
    const dropout_attr *at = k->attr;
    if (k->out->dtype == TG_F32)
        dropout_f32(k->in[0]->data, k->out->data, k->out->numel, at->p, at->seed);
    else
        dropout_f64(k->in[0]->data, k->out->data, k->out->numel, at->p, at->seed);
}
static void dropout_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg__apply1(TG__OP_dropout, io->grad_output, io->attr);
}
static int example_dropout(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const double ps[] = {0.3, 0.5, 0.2};
    if (index < 0 || index > 2)
        return 0;
    dropout_attr *at = attr;
    at->p = ps[index];
    at->seed = 1234 + (uint64_t)index;
    return tg__example_unary(tp, index, in, -2, 2, 0);
}
const tg_op_def tg__op_dropout = {.name = "dropout",
                                  .ninputs = 1,
                                  .attr_size = sizeof(dropout_attr),
                                  .check = dropout_check,
                                  .forward = dropout_forward,
                                  .backward = dropout_backward,
                                  .example = example_dropout};

/* Evaluation mode and p == 0 return x itself, as PyTorch does: no node, no copy, and the
 * gradient reaches x unchanged. p is validated (and x must be a float tensor) in every mode, so
 * an error does not depend on the mode. */
tg_tensor tg_dropout(tg_tensor x, double p, bool training, uint64_t seed)
{
    tg_tape *tp = tg_tensor_tape(x);
    if (!(p >= 0 && p < 1)) {
        tg_tape_fail(tp, TG_RANGE, "dropout: p = %g is out of range (need 0 <= p < 1)", p);
        return tg_error(tp);
    }
    if (training && p > 0) {
        dropout_attr at = {p, seed};
        return tg__apply1(TG__OP_dropout, x, &at);
    }
    /* The identity (evaluation, or p = 0) passes an error on as the op would. */
    if (tg_tensor_check(x, "dropout"))
        return tg_error(tp);
    tg_dtype dt = tg_tensor_dtype(x);
    if (dt != TG_F32 && dt != TG_F64) {
        tg_tape_fail(tp, TG_DTYPE, "dropout: input must be f32 or f64, not %s", tg_dtype_name(dt));
        return tg_error(tp);
    }
    return x;
}
