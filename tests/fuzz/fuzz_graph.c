/* fuzz_graph.c — libFuzzer target driving the public tensor API: the input is a little program.
 * Byte 0 picks an allocation to fail (mostly none); then each instruction is an opcode byte and
 * its operand bytes (missing bytes read as 0). Instructions create tensors of random dtypes and
 * shapes (zero-size, huge, invalid), apply ops with random and invalid shapes, axes, indices and
 * attributes, backpropagate in every way the API offers, and reset tapes. Operands come from a
 * ring of recent results on two tapes (so handles of the other tape appear), handles made stale
 * by a reset, none, error handles and parameters.
 *
 * Invariants checked after every instruction (__builtin_trap when one fails):
 * - a call that fails gives a status other than TG_OK and a non-empty message on its tape;
 * - a live result lies on a fine tape and has consistent metadata;
 * - a failed backward adds nothing to the parameters' gradients;
 * - a tape works after tg_tape_reset (a tiny op and its backward succeed). */
#include "fuzz_common.h"

#include <limits.h>
#include <math.h>

#define SLOTS 16
#define STALE 4
#define MAX_INSTRUCTIONS 96
#define SMALL 16 /* the most elements a Jacobian or Hessian is asked of */

typedef struct state {
    const uint8_t *p;
    size_t n;
    fuzz_memory memory;
    tg_ctx *ctx;
    tg_tape *tapes[2];
    tg_param *params[2];
    tg_optim *sgd;
    tg_tensor live[SLOTS];
    tg_tensor stale[STALE];
    uint64_t recorded; /* results kept so far */
} state;

static unsigned next(state *s)
{
    if (s->n == 0)
        return 0;
    s->n--;
    return *s->p++;
}

static unsigned pick(state *s, unsigned k) { return next(s) % k; }

static bool flip(state *s) { return next(s) & 1u; }

/* ---- random attributes ------------------------------------------------------------------- */

static tg_dtype read_dtype(state *s)
{
    static const int table[] = {TG_F64, TG_F32, TG_F64, TG_F32, TG_F64, TG_I64, 0, 9};
    return (tg_dtype)table[pick(s, 8)];
}

static int64_t read_dim(state *s)
{
    static const int64_t small[] = {1, 2, 3, 2, 1, 4, 3, 2, 5, 1, 2, 0, 3, 6, 2, 1};
    static const int64_t wild[] = {
        -1,        -2,        7,   0, (int64_t)1 << 31, (int64_t)1 << 40, (int64_t)1 << 62,
        INT64_MAX, INT64_MIN, 4096};
    unsigned b = next(s);
    return b < 240 ? small[b % 16] : wild[b % 10];
}

static int read_shape(state *s, int64_t shape[TG_MAX_DIMS + 1])
{
    static const int ndims[] = {0, 1, 2, 3, 4, 1, 2, 3, 2, 3, 4, 1, 5, 8, 9, -1};
    int ndim = ndims[pick(s, 16)];
    for (int i = 0; i < TG_MAX_DIMS + 1; i++)
        shape[i] = i < ndim ? read_dim(s) : 1;
    return ndim;
}

static int read_axis(state *s)
{
    static const int table[] = {0, 1, -1, 2, -2, 0, 1, 3, -3, 4, 8, -9, INT_MAX, INT_MIN, 1, 0};
    return table[pick(s, 16)];
}

static double read_value(state *s)
{
    static const double table[] = {0.0, 1.0,      -1.0,      0.5, 2.0,  1e-3, 1e30,   -1e30,
                                   NAN, INFINITY, -INFINITY, 3.0, 0.25, -0.5, 1e-300, 0.9};
    return table[pick(s, 16)];
}

static int64_t read_index(state *s)
{
    static const int64_t table[] = {0, 1, -1, 2, 3, -2, 5, INT64_MAX, INT64_MIN, 100};
    return table[pick(s, 10)];
}

static tg_reduction read_reduction(state *s)
{
    static const int table[] = {TG_REDUCE_MEAN, TG_REDUCE_SUM, TG_REDUCE_NONE, 7};
    return (tg_reduction)table[pick(s, 4)];
}

static unsigned read_flags(state *s)
{
    static const unsigned table[] = {
        0, TG_RETAIN_GRAPH, TG_CREATE_GRAPH, TG_RETAIN_GRAPH | TG_CREATE_GRAPH, 0, 8};
    return table[pick(s, 6)];
}

static tg_tape *read_tape(state *s) { return s->tapes[next(s) & 1u]; }

/* ---- operands and results ---------------------------------------------------------------- */

static tg_tensor read_tensor(state *s)
{
    unsigned c = next(s);
    if (c < 208)
        return s->live[c % SLOTS];
    if (c < 224)
        return s->stale[c % STALE];
    if (c < 232)
        return (tg_tensor){0};
    if (c < 240)
        return tg_error(s->tapes[c & 1u]);
    if (c < 248)
        return tg_param_tensor(s->tapes[c & 1u], s->params[(c >> 1) & 1u]);
    return tg_param_grad_tensor(s->tapes[c & 1u], s->params[(c >> 1) & 1u]);
}

static int64_t product(int ndim, const int64_t *shape, bool *valid)
{
    int64_t n = 1;
    *valid = true;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && n > INT64_MAX / shape[i])) {
            *valid = false;
            return -1;
        }
        n *= shape[i];
    }
    return n;
}

static void check_metadata(tg_tensor t)
{
    int ndim = tg_ndim(t);
    FUZZ_CHECK(ndim >= 0 && ndim <= TG_MAX_DIMS);
    tg_dtype dt = tg_tensor_dtype(t);
    FUZZ_CHECK(dt == TG_F32 || dt == TG_F64 || dt == TG_I64);
    const int64_t *shape = tg_shape(t);
    FUZZ_CHECK(ndim == 0 || shape != NULL);
    bool valid;
    int64_t numel = product(ndim, shape, &valid);
    FUZZ_CHECK(valid && numel == tg_numel(t));
    FUZZ_CHECK(numel == 0 || tg_data(t) != NULL);
    if (numel > 0 && numel <= 64) {
        double values[64];
        FUZZ_CHECK(tg_read(t, TG_F64, values, 64) == TG_OK);
    }
}

/* The error model on the result of one call. */
static void result(state *s, tg_tensor r)
{
    tg_tape *tp = tg_tensor_tape(r);
    if (tg_ok(r)) {
        FUZZ_CHECK(tp == s->tapes[0] || tp == s->tapes[1]);
        FUZZ_CHECK(tg_tape_status(tp) == TG_OK);
        check_metadata(r);
        s->live[s->recorded++ % SLOTS] = r;
        return;
    }
    if (tp)
        fuzz_check_failure(tg_tape_status(tp), tg_tape_error(tp));
}

static void status(tg_tape *tp, tg_status st)
{
    if (st != TG_OK && tp)
        fuzz_check_failure(st, tg_tape_error(tp));
}

/* ---- tapes ------------------------------------------------------------------------------- */

/* After a reset the tape is fine, and a tiny op with its backward works (no failure injected). */
static void check_works(state *s, tg_tape *tp)
{
    FUZZ_CHECK(tg_tape_status(tp) == TG_OK && tg_tape_error(tp)[0] == '\0');
    uint64_t fail_at = s->memory.fail_at;
    s->memory.fail_at = 0;
    bool grad = tg_tape_set_grad(tp, true);
    tg_tensor x = tg_requires_grad(tg_full(tp, TG_F64, 1, (int64_t[]){2}, 0.5));
    FUZZ_CHECK(tg_backward(tg_sum_all(tg_mul(x, x))) == TG_OK);
    FUZZ_CHECK(tg_item(tg_sum_all(tg_tensor_grad(x))) == 2.0);
    tg_tape_reset(tp);
    tg_tape_set_grad(tp, grad);
    s->memory.fail_at = fail_at;
}

static void reset(state *s, int which)
{
    tg_tape *tp = s->tapes[which];
    for (int i = 0; i < SLOTS; i++)
        if (tg_tensor_tape(s->live[i]) == tp) {
            s->stale[i % STALE] = s->live[i];
            s->live[i] = (tg_tensor){0};
        }
    tg_tape_reset(tp);
    check_works(s, tp);
}

/* A tape in error stays in error (every op returns an error handle at once); then it is reset
 * so that the program goes on exploring. */
static void settle(state *s)
{
    for (int which = 0; which < 2; which++) {
        tg_tape *tp = s->tapes[which];
        if (tg_tape_status(tp) == TG_OK)
            continue;
        FUZZ_CHECK(!tg_ok(tg_zeros(tp, TG_F64, 0, NULL)));
        fuzz_check_failure(tg_tape_status(tp), tg_tape_error(tp));
        reset(s, which);
    }
}

/* ---- instructions: creation -------------------------------------------------------------- */

/* Data for tg_tensor_from: small values, and i64 indices around the valid range. */
static const void *fill(state *s, tg_dtype dt, int64_t numel)
{
    static union {
        double f64[512];
        float f32[1024];
        int64_t i64[512];
    } buffer;
    unsigned seed = next(s);
    for (int64_t i = 0; i < 512; i++) {
        int64_t v = (int64_t)((seed + 7u * (uint64_t)i) % 9u) - 2;
        if (dt == TG_F32) {
            buffer.f32[2 * i] = (float)v * 0.5f;
            buffer.f32[2 * i + 1] = (float)v * 0.25f;
        } else if (dt == TG_I64) {
            buffer.i64[i] = v;
        } else {
            buffer.f64[i] = (double)v * 0.5;
        }
    }
    (void)numel;
    return &buffer;
}

static void op_create(state *s)
{
    tg_tape *tp = read_tape(s);
    tg_dtype dt = read_dtype(s);
    int64_t shape[TG_MAX_DIMS + 1];
    int ndim = read_shape(s, shape);
    bool valid;
    int64_t numel = product(ndim < 0 ? 0 : ndim, shape, &valid);
    size_t esize = tg_dtype_size(dt) ? tg_dtype_size(dt) : 8;
    tg_tensor r;
    switch (pick(s, 9)) {
    case 0:
        r = tg_zeros(tp, dt, ndim, shape);
        break;
    case 1:
        r = tg_ones(tp, dt, ndim, shape);
        break;
    case 2:
        r = tg_full(tp, dt, ndim, shape, read_value(s));
        break;
    case 3:
        r = tg_uniform(tp, dt, ndim, shape, read_value(s), read_value(s), next(s));
        break;
    case 4:
        r = tg_normal(tp, dt, ndim, shape, read_value(s), read_value(s), next(s));
        break;
    case 5:
        r = tg_arange(tp, dt, read_index(s));
        break;
    case 6:
        r = tg_constant(tp, dt, read_value(s));
        break;
    default: /* only where the buffer holds numel elements, or the shape is invalid */
        if (valid && ndim >= 0 && numel > 0 && (uint64_t)numel > 4096 / esize)
            r = tg_zeros(tp, dt, ndim, shape);
        else
            r = tg_tensor_from(tp, dt, ndim, shape, fill(s, dt, numel));
        break;
    }
    if (flip(s))
        r = tg_requires_grad(r);
    result(s, r);
}

static void op_param(state *s)
{
    tg_tape *tp = read_tape(s);
    tg_param *p = s->params[next(s) & 1u];
    result(s, flip(s) ? tg_param_tensor(tp, p) : tg_param_grad_tensor(tp, p));
}

/* ---- instructions: elementwise ------------------------------------------------------------ */

typedef tg_tensor (*unary_fn)(tg_tensor);
typedef tg_tensor (*binary_fn)(tg_tensor, tg_tensor);

static void op_unary(state *s)
{
    static const unary_fn table[] = {
        tg_neg,    tg_square,  tg_exp,      tg_log,     tg_sqrt,    tg_abs,          tg_sign,
        tg_sin,    tg_cos,     tg_tanh,     tg_sigmoid, tg_relu,    tg_gelu,         tg_softplus,
        tg_detach, tg_sum_all, tg_mean_all, tg_max_all, tg_min_all, tg_requires_grad};
    unary_fn fn = table[pick(s, sizeof table / sizeof table[0])];
    result(s, fn(read_tensor(s)));
}

static void op_unary_value(state *s)
{
    tg_tensor a = read_tensor(s);
    double v = read_value(s);
    switch (pick(s, 5)) {
    case 0:
        result(s, tg_add_scalar(a, v));
        break;
    case 1:
        result(s, tg_mul_scalar(a, v));
        break;
    case 2:
        result(s, tg_pow(a, v));
        break;
    case 3:
        result(s, tg_leaky_relu(a, v));
        break;
    default:
        result(s, tg_clamp(a, v, read_value(s)));
        break;
    }
}

static void op_binary(state *s)
{
    static const binary_fn table[] = {tg_add, tg_sub,    tg_mul, tg_div, tg_gt,        tg_lt,
                                      tg_eq,  tg_matmul, tg_add, tg_mul, tg_embedding, tg_matmul};
    binary_fn fn = table[pick(s, sizeof table / sizeof table[0])];
    tg_tensor a = read_tensor(s);
    result(s, fn(a, read_tensor(s)));
}

static void op_where(state *s)
{
    tg_tensor mask = read_tensor(s);
    tg_tensor a = read_tensor(s);
    result(s, tg_where(mask, a, read_tensor(s)));
}

static void op_matmul_t(state *s)
{
    tg_tensor a = read_tensor(s);
    tg_tensor b = read_tensor(s);
    result(s, tg_matmul_t(a, b, flip(s), flip(s)));
}

static void op_dropout(state *s)
{
    static const double ps[] = {0.5, 0.0, 0.25, 0.999, 1.0, -0.1, NAN, 0.1};
    tg_tensor a = read_tensor(s);
    double p = ps[pick(s, 8)];
    bool training = next(s) < 200;
    result(s, tg_dropout(a, p, training, next(s)));
}

/* ---- instructions: reductions and shapes -------------------------------------------------- */

static void op_reduce(state *s)
{
    tg_tensor a = read_tensor(s);
    int axes[TG_MAX_DIMS + 2];
    int naxes = (int)pick(s, 6) - 1; /* -1 .. 4 */
    if (next(s) > 250)
        naxes = TG_MAX_DIMS + 2;
    for (int i = 0; i < TG_MAX_DIMS + 2; i++)
        axes[i] = read_axis(s);
    bool keepdim = flip(s);
    const int *ax = next(s) > 245 ? NULL : axes;
    switch (pick(s, 4)) {
    case 0:
        result(s, tg_sum(a, naxes, ax, keepdim));
        break;
    case 1:
        result(s, tg_mean(a, naxes, ax, keepdim));
        break;
    case 2:
        result(s, tg_max(a, naxes, ax, keepdim));
        break;
    default:
        result(s, tg_min(a, naxes, ax, keepdim));
        break;
    }
}

static void op_softmax(state *s)
{
    tg_tensor a = read_tensor(s);
    int axis = read_axis(s);
    switch (pick(s, 3)) {
    case 0:
        result(s, tg_softmax(a, axis));
        break;
    case 1:
        result(s, tg_log_softmax(a, axis));
        break;
    default:
        result(s, tg_logsumexp(a, axis, flip(s)));
        break;
    }
}

/* A shape like a's with one dim changed (or a random one), for reshape and broadcasts. */
static int target_shape(state *s, tg_tensor a, int64_t shape[TG_MAX_DIMS + 1])
{
    int ndim = tg_ndim(a);
    if (ndim < 0 || next(s) < 64)
        return read_shape(s, shape);
    for (int i = 0; i < TG_MAX_DIMS + 1; i++)
        shape[i] = i < ndim ? tg_dim(a, i) : 1;
    unsigned how = pick(s, 4);
    if (how == 0 && ndim > 0)
        shape[pick(s, (unsigned)ndim)] = read_dim(s);
    if (how == 1 && ndim < TG_MAX_DIMS) { /* a leading dim */
        memmove(shape + 1, shape, sizeof(int64_t) * (size_t)ndim);
        shape[0] = read_dim(s);
        ndim++;
    }
    if (how == 2 && ndim > 0)
        shape[pick(s, (unsigned)ndim)] = -1;
    return ndim;
}

static void op_shape(state *s)
{
    tg_tensor a = read_tensor(s);
    int64_t shape[TG_MAX_DIMS + 1];
    int ndim = target_shape(s, a, shape);
    switch (pick(s, 3)) {
    case 0:
        result(s, tg_reshape(a, ndim, shape));
        break;
    case 1:
        result(s, tg_broadcast_to(a, ndim, shape));
        break;
    default:
        result(s, tg_sum_to(a, ndim, shape));
        break;
    }
}

static void op_transpose(state *s)
{
    tg_tensor a = read_tensor(s);
    int axis0 = read_axis(s);
    int axis1 = read_axis(s);
    result(s, tg_transpose(a, axis0, axis1));
}

static void op_permute(state *s)
{
    tg_tensor a = read_tensor(s);
    int perm[TG_MAX_DIMS + 1];
    int ndim = tg_ndim(a);
    if (ndim < 0 || next(s) < 32)
        ndim = (int)pick(s, TG_MAX_DIMS + 2) - 1;
    for (int i = 0; i < TG_MAX_DIMS + 1; i++)
        perm[i] = i;
    for (int i = ndim - 1; i > 0; i--) { /* a shuffle, sometimes broken */
        int j = (int)pick(s, (unsigned)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    if (ndim > 0 && next(s) > 240)
        perm[pick(s, (unsigned)ndim)] = read_axis(s);
    result(s, tg_permute(a, ndim, perm));
}

static void op_slice(state *s)
{
    static const int64_t steps[] = {1, 2, 1, 3, 0, -1, INT64_MAX, 1};
    tg_tensor a = read_tensor(s);
    int axis = read_axis(s);
    int64_t start = read_index(s);
    int64_t stop = read_index(s);
    result(s, tg_slice(a, axis, start, stop, steps[pick(s, 8)]));
}

static void op_variadic(state *s)
{
    tg_tensor ts[6];
    int n = (int)pick(s, 7) - 1; /* -1 .. 5 */
    for (int i = 0; i < 6; i++)
        ts[i] = i < n ? read_tensor(s) : (tg_tensor){0};
    const tg_tensor *list = next(s) > 250 ? NULL : ts;
    int axis = read_axis(s);
    switch (pick(s, 4)) {
    case 0:
        result(s, tg_concat(n, list, axis));
        break;
    case 1:
        result(s, tg_stack(n, list, axis));
        break;
    case 2:
        result(s, tg_l1_penalty(n, list));
        break;
    default:
        result(s, tg_l2_penalty(n, list));
        break;
    }
}

static void op_index(state *s)
{
    tg_tensor a = read_tensor(s);
    int axis = read_axis(s);
    tg_tensor index = read_tensor(s);
    result(s, flip(s) ? tg_index_select(a, axis, index) : tg_gather(a, axis, index));
}

/* ---- instructions: layers and losses ------------------------------------------------------ */

static int read_small(state *s)
{
    static const int table[] = {0, 1, 2, 1, 3, 0, -1, 1, 2, 4, INT_MAX, INT_MIN, 1, 2, 1, 0};
    return table[pick(s, 16)];
}

static int read_kernel(state *s)
{
    static const int table[] = {2, 1, 3, 2, 0, -1, INT_MAX, 2};
    return table[pick(s, 8)];
}

static void op_conv(state *s)
{
    tg_tensor x = read_tensor(s);
    tg_tensor w = read_tensor(s);
    tg_tensor b = read_tensor(s);
    tg_conv2d_params p = {{read_small(s), read_small(s)},
                          {read_small(s), read_small(s)},
                          {read_small(s), read_small(s)},
                          read_small(s)};
    result(s, tg_conv2d(x, w, b, next(s) > 250 ? NULL : &p));
}

static void op_pool(state *s)
{
    tg_tensor x = read_tensor(s);
    tg_pool2d_params p = {{read_kernel(s), read_kernel(s)},
                          {read_small(s), read_small(s)},
                          {read_small(s), read_small(s)}};
    const tg_pool2d_params *pp = next(s) > 250 ? NULL : &p;
    result(s, flip(s) ? tg_max_pool2d(x, pp) : tg_avg_pool2d(x, pp));
}

static void op_layer_norm(state *s)
{
    tg_tensor x = read_tensor(s);
    int naxes = read_small(s);
    tg_tensor w = read_tensor(s);
    tg_tensor b = read_tensor(s);
    result(s, tg_layer_norm(x, naxes, w, b, read_value(s)));
}

static void op_loss(state *s)
{
    tg_tensor a = read_tensor(s);
    tg_tensor b = read_tensor(s);
    tg_reduction r = read_reduction(s);
    switch (pick(s, 4)) {
    case 0:
        result(s, tg_mse_loss(a, b, r));
        break;
    case 1:
        result(s, tg_cross_entropy(a, b, r, read_value(s)));
        break;
    case 2:
        result(s, tg_nll_loss(a, b, r));
        break;
    default:
        result(s, tg_bce_with_logits(a, b, r));
        break;
    }
}

static void op_scalar(state *s)
{
    tg_scalar x = tg_s_from(read_tensor(s));
    tg_scalar y = flip(s) ? tg_s_var(read_tape(s), read_value(s)) : tg_s_const(read_tape(s), 2.0);
    switch (pick(s, 4)) {
    case 0:
        x = tg_s_mul(tg_s_tanh(x), y);
        break;
    case 1:
        x = tg_s_div(tg_s_exp(x), tg_s_add(y, x));
        break;
    case 2:
        x = tg_s_pow(tg_s_sigmoid(x), read_value(s));
        break;
    default:
        x = tg_s_log(tg_s_abs(tg_s_sub(x, y)));
        break;
    }
    if (flip(s) && x.tape_) { /* the scalar API has no accessor for a handle's tape */
        tg_status st = tg_s_backward(x, read_flags(s) & TG_RETAIN_GRAPH);
        status(x.tape_, st);
    }
    result(s, tg_s_tensor(x));
}

/* ---- instructions: backward --------------------------------------------------------------- */

/* The parameters' gradients, to check that a failed backward adds nothing. */
typedef struct grads_copy {
    unsigned char bytes[2][8 * 8];
} grads_copy;

static void copy_grads(state *s, grads_copy *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < 2; i++)
        memcpy(c->bytes[i], tg_param_grad(s->params[i]),
               (size_t)tg_param_numel(s->params[i]) * tg_dtype_size(tg_param_dtype(s->params[i])));
}

static void backward_status(state *s, tg_tape *tp, tg_status st, const grads_copy *before)
{
    if (st == TG_OK)
        return;
    status(tp, st);
    if (getenv("FUZZ_GRAPH_TRACE"))
        fprintf(stderr, "backward failed: %s: %s\n", tg_status_name(st), tg_tape_error(tp));
    grads_copy after;
    copy_grads(s, &after);
    FUZZ_CHECK(memcmp(before, &after, sizeof after) == 0);
}

/* A seed of out's shape (ones), or none when out is not a live tensor. */
static tg_tensor ones_like(tg_tensor out)
{
    if (!tg_ok(out))
        return (tg_tensor){0};
    return tg_ones(tg_tensor_tape(out), tg_tensor_dtype(out), tg_ndim(out), tg_shape(out));
}

static void op_backward(state *s)
{
    tg_tensor out = read_tensor(s);
    grads_copy before;
    copy_grads(s, &before);
    tg_status st;
    if (flip(s)) {
        st = tg_backward(out);
    } else {
        tg_tensor seed = flip(s) ? read_tensor(s) : ones_like(out);
        unsigned flags = read_flags(s);
        st = tg_backward_ex(out, seed, flags);
    }
    backward_status(s, tg_tensor_tape(out), st, &before);
}

/* tg_grad over up to three outputs and inputs; its gradients join the ring, and with
 * TG_CREATE_GRAPH one of them is sometimes backpropagated again (double backward). */
static void op_grad(state *s)
{
    tg_tensor out_t[3], seeds[3], in_t[3], grads[3];
    int nout = (int)pick(s, 4), nin = (int)pick(s, 4);
    for (int j = 0; j < 3; j++) {
        out_t[j] = read_tensor(s);
        seeds[j] = flip(s) ? ones_like(out_t[j]) : read_tensor(s);
        in_t[j] = read_tensor(s);
    }
    unsigned flags = read_flags(s);
    tg_tape *tp = nout > 0 ? tg_tensor_tape(out_t[0]) : NULL;
    tg_status st = tg_grad(nout, out_t, flip(s) ? NULL : seeds, nin, in_t, grads, flags);
    status(tp, st);
    if (st != TG_OK)
        return;
    for (int i = 0; i < nin; i++)
        result(s, grads[i]);
    if ((flags & TG_CREATE_GRAPH) && nin > 0 && flip(s)) {
        grads_copy before;
        copy_grads(s, &before);
        tg_tensor g = tg_sum_all(tg_square(grads[pick(s, (unsigned)nin)]));
        result(s, g);
        backward_status(s, tg_tensor_tape(g), tg_backward_ex(g, (tg_tensor){0}, read_flags(s)),
                        &before);
    }
}

/* The helpers built on tg_grad, on small inputs only (a Jacobian takes one pass per element). */
static void op_higher(state *s)
{
    tg_tensor f = read_tensor(s);
    tg_tensor x[2] = {read_tensor(s), read_tensor(s)};
    tg_tensor v[2] = {ones_like(x[0]), flip(s) ? ones_like(x[1]) : read_tensor(s)};
    tg_tensor r[2] = {{0}, {0}};
    int n = (int)pick(s, 3);
    unsigned flags = read_flags(s);
    if (tg_numel(f) > SMALL || tg_numel(x[0]) > SMALL)
        return;
    tg_status st;
    switch (pick(s, 4)) {
    case 0:
        st = tg_hvp(f, n, x, v, r, flags);
        break;
    case 1:
        st = tg_jvp(f, n, x, v, r, flags);
        break;
    case 2:
        st = tg_jacobian(f, x[0], r, flags);
        n = 1;
        break;
    default:
        st = tg_hessian(f, x[0], r, flags);
        n = 1;
        break;
    }
    status(tg_tensor_tape(f), st);
    for (int i = 0; st == TG_OK && i < n; i++)
        result(s, r[i]);
}

/* ---- instructions: tapes, parameters, optimiser ------------------------------------------- */

static void op_reset(state *s) { reset(s, (int)(next(s) & 1u)); }

static void op_grad_mode(state *s)
{
    tg_tape *tp = read_tape(s);
    tg_tape_set_grad(tp, flip(s));
}

static void op_optim(state *s)
{
    tg_tape *tp = read_tape(s);
    switch (pick(s, 4)) {
    case 0: {
        int64_t steps = tg_optim_steps(s->sgd);
        tg_status st = tg_optim_step(s->sgd, tp);
        if (st == TG_OK)
            FUZZ_CHECK(tg_optim_steps(s->sgd) == steps + 1);
        else
            FUZZ_CHECK(tg_optim_steps(s->sgd) == steps);
        status(tp, st);
        break;
    }
    case 1:
        tg_optim_zero_grad(s->sgd);
        break;
    case 2:
        tg_optim_set_lr(s->sgd, read_value(s));
        FUZZ_CHECK(tg_optim_lr(s->sgd) >= 0 && isfinite(tg_optim_lr(s->sgd)));
        break;
    default: {
        int64_t steps = tg_optim_steps(s->sgd), want = read_index(s);
        tg_optim_set_steps(s->sgd, want);
        bool refused = want < 0 || want > TG_OPTIM_MAX_STEPS;
        FUZZ_CHECK(tg_optim_steps(s->sgd) == (refused ? steps : want));
        if (refused)
            FUZZ_CHECK(tg_ctx_error(s->ctx)[0] != '\0');
        break;
    }
    }
}

/* ---- the program ---------------------------------------------------------------------------- */

typedef void (*instruction_fn)(state *s);

static const instruction_fn instructions[] = {
    op_create,    op_create,      op_create,   op_create,  op_param,  op_unary,      op_unary,
    op_unary,     op_unary_value, op_binary,   op_binary,  op_binary, op_where,      op_matmul_t,
    op_dropout,   op_reduce,      op_reduce,   op_softmax, op_shape,  op_transpose,  op_permute,
    op_slice,     op_variadic,    op_index,    op_conv,    op_pool,   op_layer_norm, op_loss,
    op_scalar,    op_backward,    op_backward, op_grad,    op_grad,   op_higher,     op_reset,
    op_grad_mode, op_optim};

static void setup(state *s, const uint8_t *data, size_t size)
{
    memset(s, 0, sizeof *s);
    s->p = data;
    s->n = size;
    s->ctx = fuzz_ctx_new(&s->memory, 0);
    s->memory.block_limit = (size_t)8 << 20;
    s->memory.total_limit = (size_t)128 << 20;
    for (int i = 0; i < 2; i++)
        FUZZ_CHECK(tg_tape_new(s->ctx, &s->tapes[i]) == TG_OK);
    FUZZ_CHECK(tg_param_new(s->ctx, "w", TG_F64, 2, (int64_t[]){2, 3}, &s->params[0]) == TG_OK);
    FUZZ_CHECK(tg_param_new(s->ctx, "v", TG_F32, 1, (int64_t[]){3}, &s->params[1]) == TG_OK);
    FUZZ_CHECK(tg_param_fill(s->params[0], 0.5) == TG_OK);
    FUZZ_CHECK(tg_param_fill(s->params[1], -0.25) == TG_OK);
    tg_sgd_options sgd = TG_SGD_DEFAULTS;
    sgd.momentum = 0.9;
    FUZZ_CHECK(tg_sgd_new(s->ctx, 2, s->params, &sgd, &s->sgd) == TG_OK);
    unsigned fail = next(s); /* mostly no failure; else one allocation after the setup */
    s->memory.fail_at = fail >= 224 ? s->memory.calls + 1 + (fail - 224) * 5 : 0;
}

static void teardown(state *s)
{
    s->memory.fail_at = 0;
    for (int i = 0; i < 2; i++) {
        reset(s, i);
        tg_tape_free(s->tapes[i]);
    }
    tg_optim_free(s->sgd);
    tg_ctx_free(s->ctx);
    FUZZ_CHECK(s->memory.in_use == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    state s;
    setup(&s, data, size);
    static int trace = -1; /* FUZZ_GRAPH_TRACE=1: each instruction and the tapes' errors */
    if (trace < 0)
        trace = getenv("FUZZ_GRAPH_TRACE") != NULL;
    for (int i = 0; i < MAX_INSTRUCTIONS && s.n > 0; i++) {
        unsigned op = pick(&s, sizeof instructions / sizeof instructions[0]);
        instructions[op](&s);
        if (trace)
            fprintf(stderr, "instruction %d: opcode %u; tapes: \"%s\" \"%s\"\n", i, op,
                    tg_tape_error(s.tapes[0]), tg_tape_error(s.tapes[1]));
        settle(&s);
    }
    teardown(&s);
    return 0;
}
