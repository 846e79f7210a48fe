/* rnn.c — the recurrence of RNN (tanh, relu), GRU and LSTM layers over a sequence:
 *   rnn_scan     all T steps of one layer in one op: per step one small GEMM (h W_hh^T) and a
 *                few fused vector passes for the gates, writing every h_t (and c_t);
 *   linear_scan  the adjoint recurrence that rnn_scan's backward runs, y_{t-1} = g_{t-1} +
 *                A_t(y_t) with A_t linear; its own backward is linear_scan in the other
 *                direction with the transposed maps, so both are differentiable to any order.
 *
 * Why one op per layer rather than ops per step: a step that reads its slice of the projected
 * input through tg_slice gets, in backward, a gradient the size of the whole sequence (slice's
 * backward scatters into zeros), so T steps cost O(T^2) memory traffic. A scan reads the whole
 * input and its backward returns whole-sequence gradients once. The gate recomputation in the
 * backward is vectorised over all steps; only the linear recurrence is sequential.
 *
 * Layouts (row-major). G gates of H units per step (1 for tanh/relu, 3 for GRU: r z n, 4 for
 * LSTM: i f g o, PyTorch's orders), S state tensors per step (1; LSTM 2: h then c):
 *   gates_x [T, B, G*H], weight_hh [G*H, H], bias_hh [G*H], h0 and c0 [B, H];
 *   rnn_scan's output [T, B, S, H];
 *   linear_scan's coefficients C [T, B, G, S, H] and D [T, B, S, S, H]. */
#include "gemm.h"
#include "kernels.h"
#include "ops.h"
#include "vmath.h"

#include <stdio.h>

static int gates_of(int mode) { return mode == TG_RNN_GRU ? 3 : mode == TG_RNN_LSTM ? 4 : 1; }
static int states_of(int mode) { return mode == TG_RNN_LSTM ? 2 : 1; }

/* The dtype's element loops, written once for both element types. NAME(T, sfx) defines each
 * loop as a static function of explicit parameters for element type T. */
#define SCAN_LOOPS(T, sfx)                                                                         \
    /* y[b, j] += bias[j] over B rows of n */                                                      \
    static void add_bias_##sfx(int64_t B, int64_t n, const T *bias, T *y)                          \
    {                                                                                              \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t j = 0; j < n; j++)                                                        \
                y[b * n + j] += bias[j];                                                           \
    }                                                                                              \
    /* tanh/relu: y = gx + gh (then the activation in place); relu keeps NaN, as PyTorch's */      \
    static void simple_pre_##sfx(int64_t n, const T *gx, const T *gh, T *y)                        \
    {                                                                                              \
        for (int64_t j = 0; j < n; j++)                                                            \
            y[j] = gx[j] + gh[j];                                                                  \
    }                                                                                              \
    static void relu_##sfx(int64_t n, T *y)                                                        \
    {                                                                                              \
        for (int64_t j = 0; j < n; j++)                                                            \
            y[j] = y[j] < 0 ? 0 : y[j];                                                            \
    }                                                                                              \
    /* GRU: rz = the r and z pre-activations [B, 2H]; after their sigmoid, n's pre-activation      \
     * gx_n + r * gh_n [B, H]; after its tanh, h = (1 - z) n + z hp */                             \
    static void gru_rz_##sfx(int64_t B, int64_t H, const T *gx, const T *gh, T *rz)                \
    {                                                                                              \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t j = 0; j < 2 * H; j++)                                                    \
                rz[b * 2 * H + j] = gx[b * 3 * H + j] + gh[b * 3 * H + j];                         \
    }                                                                                              \
    static void gru_n_##sfx(int64_t B, int64_t H, const T *gx, const T *gh, const T *rz, T *n)     \
    {                                                                                              \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t j = 0; j < H; j++)                                                        \
                n[b * H + j] =                                                                     \
                    gx[b * 3 * H + 2 * H + j] + rz[b * 2 * H + j] * gh[b * 3 * H + 2 * H + j];     \
    }                                                                                              \
    static void gru_h_##sfx(int64_t B, int64_t H, const T *rz, const T *n, const T *hp, T *h)      \
    {                                                                                              \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t j = 0; j < H; j++) {                                                      \
                T z = rz[b * 2 * H + H + j];                                                       \
                h[b * H + j] = (1 - z) * n[b * H + j] + z * hp[b * H + j];                         \
            }                                                                                      \
    }                                                                                              \
    /* LSTM: the sigmoid gates i f o gathered into sg [B, 3H] and g into tg [B, H]; then           \
     * c = f cp + i g into cc [B, H]; then y = (o tanh(c), c) */                                   \
    static void lstm_gather_##sfx(int64_t B, int64_t H, const T *gx, const T *gh, T *sg, T *tg)    \
    {                                                                                              \
        for (int64_t b = 0; b < B; b++) {                                                          \
            const T *x = gx + b * 4 * H, *h = gh + b * 4 * H;                                      \
            for (int64_t j = 0; j < 2 * H; j++)                                                    \
                sg[b * 3 * H + j] = x[j] + h[j];                                                   \
            for (int64_t j = 0; j < H; j++)                                                        \
                sg[b * 3 * H + 2 * H + j] = x[3 * H + j] + h[3 * H + j];                           \
            for (int64_t j = 0; j < H; j++)                                                        \
                tg[b * H + j] = x[2 * H + j] + h[2 * H + j];                                       \
        }                                                                                          \
    }                                                                                              \
    static void lstm_c_##sfx(int64_t B, int64_t H, const T *sg, const T *tg, const T *cp,          \
                             int64_t cp_stride, T *cc)                                             \
    {                                                                                              \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t j = 0; j < H; j++)                                                        \
                cc[b * H + j] = sg[b * 3 * H + H + j] * cp[b * cp_stride + j]                      \
                                + sg[b * 3 * H + j] * tg[b * H + j];                               \
    }                                                                                              \
    static void lstm_h_##sfx(int64_t B, int64_t H, const T *sg, const T *cc, const T *tc, T *y)    \
    {                                                                                              \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t j = 0; j < H; j++) {                                                      \
                y[b * 2 * H + j] = sg[b * 3 * H + 2 * H + j] * tc[b * H + j];                      \
                y[b * 2 * H + H + j] = cc[b * H + j];                                              \
            }                                                                                      \
    }
SCAN_LOOPS(float, f32)
SCAN_LOOPS(double, f64)

/* Element `i` of an array of `es`-byte elements, as void * (for the typed loops). */
static void *elem(const void *base, int64_t i, size_t es) { return (char *)base + (size_t)i * es; }

/* Calls the loop `fname` of the dtype with the remaining arguments (pointers are void *). */
#define RUN(dt, fname, ...)                                                                        \
    do {                                                                                           \
        if ((dt) == TG_F32)                                                                        \
            fname##_f32(__VA_ARGS__);                                                              \
        else                                                                                       \
            fname##_f64(__VA_ARGS__);                                                              \
    } while (0)

/* ---- rnn_scan ---------------------------------------------------------------------------- */

typedef struct scan_attr {
    int mode;     /* tg_rnn_mode */
    int has_bias; /* bias_hh is an input */
} scan_attr;

/* Scratch elements a step needs beyond its output: the hidden projection [B, G*H], and the gate
 * values the mode computes out of place (GRU: r z [B, 2H] and n [B, H]; LSTM: the sigmoid gates
 * [B, 3H], g, c and tanh(c) [B, H] each). */
static int64_t scan_scratch(int mode, int64_t B, int64_t H)
{
    int64_t extra = mode == TG_RNN_GRU ? 3 : mode == TG_RNN_LSTM ? 6 : 0;
    return B * H * (gates_of(mode) + extra);
}

/* Input i has exactly the shape [d0, d1] (or [d0] when d1 < 0). */
static tg_status check_matrix(tg_check *c, int i, const char *what, int64_t d0, int64_t d1)
{
    const tg_view *v = c->in[i];
    int nd = d1 < 0 ? 1 : 2;
    if (v->ndim != nd || v->shape[0] != d0 || (nd == 2 && v->shape[1] != d1)) {
        char got[96], want[96];
        int64_t shape[2] = {d0, d1};
        tg_format_shape(got, sizeof got, 0, v->ndim, v->shape);
        tg_format_shape(want, sizeof want, 0, nd, shape);
        return tg_check_fail(c, TG_SHAPE, "%s has shape %s, not %s", what, got, want);
    }
    return TG_OK;
}

/* Every input is f32 or f64, all of input 0's dtype. */
static tg_status check_dtypes(tg_check *c, const char *const *names)
{
    for (int i = 0; i < c->ninputs; i++) {
        tg_status st = tg_check_float(c, i);
        if (st)
            return st;
        if (c->in[i]->dtype != c->in[0]->dtype)
            return tg_check_fail(c, TG_DTYPE, "%s is %s, %s is %s", names[i],
                                 tg_dtype_name(c->in[i]->dtype), names[0],
                                 tg_dtype_name(c->in[0]->dtype));
    }
    return TG_OK;
}

/* out [T, B, S, H] = the recurrence over gates_x [T, B, G*H] from h0 (and c0) with weight_hh
 * [G*H, H] and bias_hh (see the header); backward: scan_backward below. */
static tg_status rnn_scan_check(tg_check *c)
{
    const scan_attr *at = c->attr;
    if (at->mode < TG_RNN_TANH || at->mode > TG_RNN_LSTM)
        return tg_check_fail(c, TG_INVALID, "unknown mode %d", at->mode);
    bool lstm = at->mode == TG_RNN_LSTM, bias = at->has_bias != 0;
    int want = 3 + bias + lstm;
    if (c->ninputs != want)
        return tg_check_fail(c, TG_INVALID, "takes %d inputs (gates_x, weight_hh%s, h0%s), got %d",
                             want, bias ? ", bias_hh" : "", lstm ? ", c0" : "", c->ninputs);
    const char *names[5] = {"gates_x", "weight_hh", bias ? "bias_hh" : "h0", bias ? "h0" : "c0",
                            "c0"};
    tg_status st = check_dtypes(c, names);
    if (st)
        return st;
    const tg_view *gx = c->in[0], *w = c->in[1];
    if (gx->ndim != 3 || w->ndim != 2)
        return tg_check_fail(c, TG_SHAPE,
                             "gates_x must be [T, B, G*H] and weight_hh [G*H, H], not %d-d and "
                             "%d-d",
                             gx->ndim, w->ndim);
    int64_t G = gates_of(at->mode), T = gx->shape[0], B = gx->shape[1], H = w->shape[1];
    if (T < 1 || B < 1 || H < 1)
        return tg_check_fail(c, TG_SHAPE, "needs T, B and H >= 1 (T %lld, B %lld, H %lld)",
                             (long long)T, (long long)B, (long long)H);
    if (w->shape[0] != G * H || gx->shape[2] != G * H)
        return tg_check_fail(c, TG_SHAPE,
                             "%lld gates of %lld units need weight_hh [%lld, %lld] and gates_x "
                             "[T, B, %lld]",
                             (long long)G, (long long)H, (long long)(G * H), (long long)H,
                             (long long)(G * H));
    if (bias && (st = check_matrix(c, 2, "bias_hh", G * H, -1)))
        return st;
    if ((st = check_matrix(c, 2 + bias, "h0", B, H)))
        return st;
    if (lstm && (st = check_matrix(c, 3 + bias, "c0", B, H)))
        return st;
    tg_view *y = c->out;
    y->dtype = gx->dtype;
    y->ndim = 4;
    y->shape[0] = T;
    y->shape[1] = B;
    y->shape[2] = states_of(at->mode);
    y->shape[3] = H;
    c->saved_bytes = (size_t)scan_scratch(at->mode, B, H) * tg_dtype_size(gx->dtype);
    return TG_OK;
}

/* One step t of the layer: gh = hp W^T (+ b) into the scratch, then the mode's gates, writing
 * h_t (and c_t) into y [B, S, H]. hp is h_{t-1}, rows hp_stride apart (cp likewise). */
typedef struct step {
    tg_dtype dt;
    int mode, threads;
    int64_t B, H;
    const void *w, *bias;
} step;

static void scan_step(const step *s, const void *gx, const void *hp, int64_t hp_stride,
                      const void *cp, int64_t cp_stride, void *scratch, void *y)
{
    tg_dtype dt = s->dt;
    int64_t B = s->B, H = s->H, G = gates_of(s->mode);
    size_t es = tg_dtype_size(dt);
    void *gh = scratch;
    tg__gemm(dt, false, true, B, G * H, H, hp, hp_stride, s->w, H, 0.0, gh, G * H, s->threads);
    if (s->bias)
        RUN(dt, add_bias, B, G * H, s->bias, gh);
    switch (s->mode) {
    case TG_RNN_TANH:
    case TG_RNN_RELU:
        RUN(dt, simple_pre, B * H, gx, gh, y);
        if (s->mode == TG_RNN_TANH)
            tg__vm_tanh(s->threads, dt, B * H, y, y);
        else
            RUN(dt, relu, B * H, y);
        break;
    case TG_RNN_GRU: {
        void *rz = elem(gh, B * 3 * H, es), *n = elem(rz, B * 2 * H, es);
        RUN(dt, gru_rz, B, H, gx, gh, rz);
        tg__vm_sigmoid(s->threads, dt, B * 2 * H, rz, rz);
        RUN(dt, gru_n, B, H, gx, gh, rz, n);
        tg__vm_tanh(s->threads, dt, B * H, n, n);
        RUN(dt, gru_h, B, H, rz, n, hp, y);
        break;
    }
    case TG_RNN_LSTM: {
        void *sg = elem(gh, B * 4 * H, es), *tg = elem(sg, B * 3 * H, es),
             *cc = elem(tg, B * H, es);
        void *tc = elem(cc, B * H, es);
        RUN(dt, lstm_gather, B, H, gx, gh, sg, tg);
        tg__vm_sigmoid(s->threads, dt, B * 3 * H, sg, sg);
        tg__vm_tanh(s->threads, dt, B * H, tg, tg);
        RUN(dt, lstm_c, B, H, sg, tg, cp, cp_stride, cc);
        tg__vm_tanh(s->threads, dt, B * H, cc, tc);
        RUN(dt, lstm_h, B, H, sg, cc, tc, y);
        break;
    }
    }
}

static void rnn_scan_forward(const tg_kernel *k)
{
    const scan_attr *at = k->attr;
    const tg_view *gx = k->in[0];
    int bias = at->has_bias != 0;
    int64_t T = gx->shape[0], B = gx->shape[1], H = k->in[1]->shape[1];
    int64_t G = gates_of(at->mode), S = states_of(at->mode);
    size_t es = tg_dtype_size(gx->dtype);
    step s = {gx->dtype, at->mode, k->threads, B, H, k->in[1]->data, bias ? k->in[2]->data : NULL};
    const void *h0 = k->in[2 + bias]->data;
    const void *c0 = at->mode == TG_RNN_LSTM ? k->in[3 + bias]->data : NULL;
    void *y = k->out->data;
    for (int64_t t = 0; t < T; t++) {
        const void *prev = t ? elem(y, (t - 1) * B * S * H, es) : NULL; /* y_{t-1}: h, then c */
        const void *hp = t ? prev : h0, *cp = t ? elem(prev, H, es) : c0;
        scan_step(&s, elem(gx->data, t * B * G * H, es), hp, t ? S * H : H, cp, t ? S * H : H,
                  k->saved, elem(y, t * B * S * H, es));
    }
}

/* ---- rnn_scan's backward ----------------------------------------------------------------- */

/* Shorthands for the shapes below. */
static tg_tensor shape3(tg_tensor x, int64_t a, int64_t b, int64_t c)
{
    return tg_reshape(x, 3, (int64_t[]){a, b, c});
}
static tg_tensor shape4(tg_tensor x, int64_t a, int64_t b, int64_t c, int64_t d)
{
    return tg_reshape(x, 4, (int64_t[]){a, b, c, d});
}
static tg_tensor shape5(tg_tensor x, int64_t a, int64_t b, int64_t c, int64_t d, int64_t e)
{
    return tg_reshape(x, 5, (int64_t[]){a, b, c, d, e});
}
static tg_tensor concat2(tg_tensor a, tg_tensor b, int axis)
{
    return tg_concat(2, (tg_tensor[]){a, b}, axis);
}

/* The dimensions of one scan. */
typedef struct dims {
    int64_t T, B, G, S, H;
} dims;

/* State s (0: h, 1: c) of every step, [T, B, H], from the output [T, B, S, H]. */
static tg_tensor state_of(tg_tensor y, const dims *d, int s)
{
    tg_tensor part = d->S == 1 ? y : tg_slice(y, 2, s, s + 1, 1);
    return shape3(part, d->T, d->B, d->H);
}

/* The state before each step, [T, B, 1, H]: the initial state, then steps 0..T-2. */
static tg_tensor previous(tg_tensor initial, tg_tensor states, const dims *d)
{
    tg_tensor first = shape3(initial, 1, d->B, d->H);
    tg_tensor prev = d->T == 1 ? first : concat2(first, tg_slice(states, 0, 0, d->T - 1, 1), 0);
    return shape4(prev, d->T, d->B, 1, d->H);
}

/* Every step's hidden projection h_{t-1} W_hh^T + b_hh at once, [T, B, G, H]. */
static tg_tensor hidden_gates(tg_tensor hp, tg_tensor w, tg_tensor b, const dims *d)
{
    tg_tensor gh = tg_matmul_t(tg_reshape(hp, 2, (int64_t[]){d->T * d->B, d->H}), w, false, true);
    if (tg_tensor_tape(b))
        gh = tg_add(gh, b);
    return shape4(gh, d->T, d->B, d->G, d->H);
}

/* The linear map of one step's backward, from the gradient y_t of its output state to that of
 * its input state, A_t(v) = (sum_s v_s C_{k,s})_k W_hh + (sum_s v_s D_{s,r})_r (in row r = 0:
 * h), given as coefficients C [T, B, G, S, H] and D [T, B, S, S, H] (none: zero), with CI the
 * coefficients of the input projection's gradient (C, except for GRU's n gate). */
typedef struct step_map {
    tg_tensor c, d, ci;
} step_map;

/* tanh: dh_{t-1} = (dh_t (1 - h_t^2)) W; relu: the same with the mask h_t > 0. */
static step_map simple_map(int mode, tg_tensor hs, const dims *d)
{
    tg_tensor k;
    if (mode == TG_RNN_TANH) {
        tg_tensor ones = tg_ones(tg_tensor_tape(hs), tg_tensor_dtype(hs), 3, tg_shape(hs));
        k = tg__apply2(TG__OP_tanh_backward, ones, hs, NULL);
    } else {
        k = tg_gt(hs, tg_constant(tg_tensor_tape(hs), tg_tensor_dtype(hs), 0.0));
    }
    tg_tensor c = shape5(k, d->T, d->B, 1, 1, d->H);
    return (step_map){c, {0}, c};
}

/* GRU, with a = pre-activations, r z n the gates, hp = h_{t-1}: for dh = the gradient of h_t,
 *   d a_n = dh (1 - z)(1 - n^2) = dh cn,  d a_z = dh (hp - n) z (1 - z) = dh cz,
 *   d a_r = dh cn gh_n r (1 - r) = dh cr,  d gh_n = dh cn r,  dh_{t-1} = dh z + d gh W */
static step_map gru_map(tg_tensor gx, tg_tensor gh, tg_tensor hp, const dims *d)
{
    tg_tensor gx4 = shape4(gx, d->T, d->B, 3, d->H);
    tg_tensor rz = tg_sigmoid(tg_add(tg_slice(gx4, 2, 0, 2, 1), tg_slice(gh, 2, 0, 2, 1)));
    tg_tensor r = tg_slice(rz, 2, 0, 1, 1), z = tg_slice(rz, 2, 1, 2, 1);
    tg_tensor ghn = tg_slice(gh, 2, 2, 3, 1);
    tg_tensor n = tg_tanh(tg_add(tg_slice(gx4, 2, 2, 3, 1), tg_mul(r, ghn)));
    tg_tensor cn = tg__apply2(TG__OP_tanh_backward, tg_add_scalar(tg_neg(z), 1.0), n, NULL);
    tg_tensor cz = tg__apply2(TG__OP_sigmoid_backward, tg_sub(hp, n), z, NULL);
    tg_tensor cr = tg__apply2(TG__OP_sigmoid_backward, tg_mul(cn, ghn), r, NULL);
    tg_tensor hidden[3] = {cr, cz, tg_mul(cn, r)}, input[3] = {cr, cz, cn};
    step_map m;
    m.c = shape5(tg_concat(3, hidden, 2), d->T, d->B, 3, 1, d->H);
    m.ci = shape5(tg_concat(3, input, 2), d->T, d->B, 3, 1, d->H);
    m.d = shape5(z, d->T, d->B, 1, 1, d->H);
    return m;
}

/* LSTM, with state (h, c), gates i f g o and cp = c_{t-1}: for (dh, dc) the gradients of
 * (h_t, c_t), the gradient of c_t through both is e = dc + dh K1 with K1 = o (1 - tanh(c_t)^2);
 *   d a_o = dh tanh(c_t) o (1 - o),  d a_i = e g i (1 - i),  d a_f = e cp f (1 - f),
 *   d a_g = e i (1 - g^2),  dh_{t-1} = d a W,  dc_{t-1} = e f. */
static step_map lstm_map(tg_tensor gx, tg_tensor gh, tg_tensor cs, tg_tensor cp, const dims *d)
{
    tg_tensor a = tg_add(shape4(gx, d->T, d->B, 4, d->H), gh);
    tg_tensor sif = tg_sigmoid(tg_slice(a, 2, 0, 2, 1));
    tg_tensor i = tg_slice(sif, 2, 0, 1, 1), f = tg_slice(sif, 2, 1, 2, 1);
    tg_tensor g = tg_tanh(tg_slice(a, 2, 2, 3, 1)), o = tg_sigmoid(tg_slice(a, 2, 3, 4, 1));
    tg_tensor tc = tg_tanh(shape4(cs, d->T, d->B, 1, d->H));
    tg_tensor k1 = tg__apply2(TG__OP_tanh_backward, o, tc, NULL);
    tg_tensor kifg[3] = {tg__apply2(TG__OP_sigmoid_backward, g, i, NULL),
                         tg__apply2(TG__OP_sigmoid_backward, cp, f, NULL),
                         tg__apply2(TG__OP_tanh_backward, i, g, NULL)};
    tg_tensor ko = tg__apply2(TG__OP_sigmoid_backward, tc, o, NULL);
    tg_tensor ifg = tg_concat(3, kifg, 2);
    tg_tensor zero =
        tg_zeros(tg_tensor_tape(gx), tg_tensor_dtype(gx), 4, (int64_t[]){d->T, d->B, 1, d->H});
    tg_tensor from_h = concat2(tg_mul(k1, ifg), ko, 2), from_c = concat2(ifg, zero, 2);
    tg_tensor rows_h = concat2(zero, tg_mul(k1, f), 2), rows_c = concat2(zero, f, 2);
    step_map m;
    m.c = tg_stack(2, (tg_tensor[]){from_h, from_c}, 3); /* [T, B, 4, 2, H] */
    m.d = tg_stack(2, (tg_tensor[]){rows_h, rows_c}, 2); /* [T, B, 2 (from), 2 (to), H] */
    m.ci = m.c;
    return m;
}

typedef struct linear_attr {
    int transposed; /* 0: y_{t-1} = g_{t-1} + A_t(y_t), backward in time; 1: its transpose */
    int has_diag;   /* D is an input */
} linear_attr;

static tg_tensor linear_scan(tg_tensor g, tg_tensor c, tg_tensor w, tg_tensor d, int transposed)
{
    linear_attr at = {transposed, tg_tensor_tape(d) != NULL};
    tg_tensor in[4] = {g, c, w, d};
    return tg__apply(TG__OP_linear_scan, 3 + at.has_diag, in, &at);
}

/* sum_s v_s C_{k,s}: the gate gradients [T, B, G, H] from state gradients v [T, B, S, H]. */
static tg_tensor mix(tg_tensor v, tg_tensor c, const dims *d)
{
    tg_tensor p = tg_mul(shape5(v, d->T, d->B, 1, d->S, d->H), c);
    return d->S == 1 ? shape4(p, d->T, d->B, d->G, d->H) : tg_sum(p, 1, (int[]){3}, false);
}

static void rnn_scan_backward(const tg_backward_io *io)
{
    const scan_attr *at = io->attr;
    int bias = at->has_bias != 0, lstm = at->mode == TG_RNN_LSTM;
    tg_tensor none = {0}, gx = io->inputs[0], w = io->inputs[1];
    tg_tensor b = bias ? io->inputs[2] : none, h0 = io->inputs[2 + bias];
    dims d = {tg_dim(gx, 0), tg_dim(gx, 1), gates_of(at->mode), states_of(at->mode), tg_dim(w, 1)};
    tg_tensor hs = state_of(io->output, &d, 0), hp = previous(h0, hs, &d);
    step_map m;
    if (at->mode == TG_RNN_GRU) {
        m = gru_map(gx, hidden_gates(hp, w, b, &d), hp, &d);
    } else if (lstm) {
        tg_tensor cs = state_of(io->output, &d, 1);
        m = lstm_map(gx, hidden_gates(hp, w, b, &d), cs, previous(io->inputs[3 + bias], cs, &d),
                     &d);
    } else {
        m = simple_map(at->mode, hs, &d);
    }
    /* ys[0] is the gradient of the initial state, ys[t + 1] that of step t's output state. */
    tg_tensor ys = linear_scan(io->grad_output, m.c, w, m.d, 0);
    tg_tensor states = tg_slice(ys, 0, 1, d.T + 1, 1), initial = tg_slice(ys, 0, 0, 1, 1);
    tg_tensor da = mix(states, m.c, &d);
    if (io->needs_grad[0])
        io->grad_inputs[0] = shape3(mix(states, m.ci, &d), d.T, d.B, d.G * d.H);
    tg_tensor rows = tg_reshape(da, 2, (int64_t[]){d.T * d.B, d.G * d.H});
    if (io->needs_grad[1])
        io->grad_inputs[1] =
            tg_matmul_t(rows, tg_reshape(hp, 2, (int64_t[]){d.T * d.B, d.H}), true, false);
    if (bias && io->needs_grad[2])
        io->grad_inputs[2] = tg_sum(rows, 1, (int[]){0}, false);
    for (int s = 0; s < d.S; s++)
        if (io->needs_grad[2 + bias + s])
            io->grad_inputs[2 + bias + s] =
                tg_reshape(tg_slice(initial, 2, s, s + 1, 1), 2, (int64_t[]){d.B, d.H});
}

/* Example cases: each mode with and without bias_hh, over T = 3 steps (1 for one GRU case) of
 * B = 2 rows of H = 2 units. relu's case keeps every pre-activation away from its kink. */
static int example_rnn_scan(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const struct {
        int mode, bias, T;
    } cases[] = {{TG_RNN_TANH, 1, 3}, {TG_RNN_RELU, 0, 3}, {TG_RNN_GRU, 1, 3},
                 {TG_RNN_GRU, 0, 1},  {TG_RNN_LSTM, 1, 3}, {TG_RNN_LSTM, 0, 2}};
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    scan_attr *at = attr;
    at->mode = cases[index].mode;
    at->has_bias = cases[index].bias;
    int64_t T = cases[index].T, B = 2, H = 2, GH = gates_of(at->mode) * H;
    bool relu = at->mode == TG_RNN_RELU;
    uint64_t seed = 301 + 10 * (uint64_t)index;
    int n = 0;
    in[n++] = tg__example(tp, 3, (int64_t[]){T, B, GH}, -1, 1, relu ? 0.3 : 0, seed);
    double wr = relu ? 0.05 : 0.5;
    in[n++] = tg__example(tp, 2, (int64_t[]){GH, H}, -wr, wr, 0, seed + 1);
    if (at->has_bias)
        in[n++] = tg__example(tp, 1, &GH, -0.5, 0.5, 0, seed + 2);
    in[n++] =
        tg__example(tp, 2, (int64_t[]){B, H}, relu ? -0.1 : -0.5, relu ? 0.1 : 0.5, 0, seed + 3);
    if (at->mode == TG_RNN_LSTM)
        in[n++] = tg__example(tp, 2, (int64_t[]){B, H}, -1, 1, 0, seed + 4);
    return n;
}

const tg_op_def tg__op_rnn_scan = {.name = "rnn_scan",
                                   .ninputs = TG_VARIADIC,
                                   .attr_size = sizeof(scan_attr),
                                   .check = rnn_scan_check,
                                   .forward = rnn_scan_forward,
                                   .backward = rnn_scan_backward,
                                   .example = example_rnn_scan};

tg_tensor tg_rnn_scan(tg_rnn_mode mode, tg_tensor gates_x, tg_tensor weight_hh, tg_tensor bias_hh,
                      tg_tensor h0, tg_tensor c0)
{
    scan_attr at = {(int)mode, tg_tensor_tape(bias_hh) != NULL};
    tg_tensor in[5];
    int n = 0;
    in[n++] = gates_x;
    in[n++] = weight_hh;
    if (at.has_bias)
        in[n++] = bias_hh;
    in[n++] = h0;
    if (tg_tensor_tape(c0)) /* a zero-initialised handle (no tape) means none */
        in[n++] = c0;
    return tg__apply(TG__OP_rnn_scan, n, in, &at);
}

/* ---- linear_scan ------------------------------------------------------------------------- */

/* The element loops of the step maps: gate_mix a[b,k,h] = sum_s v[b,s,h] C[b,k,s,h];
 * gate_unmix y[b,s,h] = sum_k m[b,k,h] C[b,k,s,h]; diag_mix y[b,r,h] = sum_s v[b,s,h]
 * D[b,s,r,h]; diag_unmix y[b,s,h] += sum_r D[b,s,r,h] w[b,r,h]; add y += x. */
#define LINEAR_LOOPS(T, sfx)                                                                       \
    static void gate_mix_##sfx(int64_t B, int64_t G, int64_t S, int64_t H, const T *v, const T *c, \
                               T *a)                                                               \
    {                                                                                              \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t k = 0; k < G; k++) {                                                      \
                T *ar = a + (b * G + k) * H;                                                       \
                const T *cr = c + (b * G + k) * S * H, *vr = v + b * S * H;                        \
                for (int64_t h = 0; h < H; h++)                                                    \
                    ar[h] = vr[h] * cr[h];                                                         \
                for (int64_t s = 1; s < S; s++)                                                    \
                    for (int64_t h = 0; h < H; h++)                                                \
                        ar[h] += vr[s * H + h] * cr[s * H + h];                                    \
            }                                                                                      \
    }                                                                                              \
    static void gate_unmix_##sfx(int64_t B, int64_t G, int64_t S, int64_t H, const T *m,           \
                                 const T *c, T *y)                                                 \
    {                                                                                              \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t s = 0; s < S; s++) {                                                      \
                T *yr = y + (b * S + s) * H;                                                       \
                for (int64_t h = 0; h < H; h++)                                                    \
                    yr[h] = m[b * G * H + h] * c[(b * G * S + s) * H + h];                         \
                for (int64_t k = 1; k < G; k++)                                                    \
                    for (int64_t h = 0; h < H; h++)                                                \
                        yr[h] += m[(b * G + k) * H + h] * c[((b * G + k) * S + s) * H + h];        \
            }                                                                                      \
    }                                                                                              \
    static void diag_mix_##sfx(int64_t B, int64_t S, int64_t H, const T *v, const T *d, T *y)      \
    {                                                                                              \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t r = 0; r < S; r++) {                                                      \
                T *yr = y + (b * S + r) * H;                                                       \
                for (int64_t h = 0; h < H; h++)                                                    \
                    yr[h] = v[b * S * H + h] * d[(b * S * S + r) * H + h];                         \
                for (int64_t s = 1; s < S; s++)                                                    \
                    for (int64_t h = 0; h < H; h++)                                                \
                        yr[h] += v[(b * S + s) * H + h] * d[((b * S + s) * S + r) * H + h];        \
            }                                                                                      \
    }                                                                                              \
    static void diag_unmix_##sfx(int64_t B, int64_t S, int64_t H, const T *w, const T *d, T *y)    \
    {                                                                                              \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t s = 0; s < S; s++)                                                        \
                for (int64_t r = 0; r < S; r++)                                                    \
                    for (int64_t h = 0; h < H; h++)                                                \
                        y[(b * S + s) * H + h] +=                                                  \
                            d[((b * S + s) * S + r) * H + h] * w[(b * S + r) * H + h];             \
    }                                                                                              \
    static void add_##sfx(int64_t n, const T *x, T *y)                                             \
    {                                                                                              \
        for (int64_t i = 0; i < n; i++)                                                            \
            y[i] += x[i];                                                                          \
    }
LINEAR_LOOPS(float, f32)
LINEAR_LOOPS(double, f64)

/* out = M g, with y_{T-1} = g_{T-1}, y_{t-1} = g_{t-1} + A_t(y_t) for t = T-1..1, and out =
 * [A_0(y_0), y_0, ..., y_{T-1}] ([T+1, B, S, H] from g [T, B, S, H]): the gradients of the
 * states before and after every step, from the gradients g of the step outputs (A_t as in
 * step_map, from C [T, B, G, S, H], W [G*H, H] and optionally D [T, B, S, S, H]).
 * transposed: out = M^T g, u_{-1} = g_0, u_s = g_{s+1} + A_s^T(u_{s-1}) ([T, B, S, H] from
 * [T+1, B, S, H]), where A_s^T(w) = (sum_k (w_0 W^T)_k C_{k,s})_s + (sum_r D_{s,r} w_r)_s.
 * Backward: dg = the other direction on gg; for C, W, D the bilinear terms <w_t, A_t(v_t)>
 * (see map_grads). */
static tg_status linear_scan_check(tg_check *c)
{
    const linear_attr *at = c->attr;
    int want = 3 + (at->has_diag != 0);
    if (c->ninputs != want)
        return tg_check_fail(c, TG_INVALID, "takes %d inputs (g, C, W%s), got %d", want,
                             at->has_diag ? ", D" : "", c->ninputs);
    static const char *const names[] = {"g", "C", "W", "D"};
    tg_status st = check_dtypes(c, names);
    if (st)
        return st;
    const tg_view *g = c->in[0], *cf = c->in[1], *w = c->in[2];
    if (cf->ndim != 5 || g->ndim != 4 || w->ndim != 2)
        return tg_check_fail(c, TG_SHAPE, "needs g 4-d, C 5-d and W 2-d");
    int64_t T = cf->shape[0], B = cf->shape[1], G = cf->shape[2], S = cf->shape[3];
    int64_t H = cf->shape[4], rows = T + (at->transposed ? 1 : 0);
    if (T < 1 || B < 1 || G < 1 || S < 1 || H < 1)
        return tg_check_fail(c, TG_SHAPE, "C must be [T, B, G, S, H] with every size >= 1");
    if (g->shape[0] != rows || g->shape[1] != B || g->shape[2] != S || g->shape[3] != H)
        return tg_check_fail(c, TG_SHAPE, "g must be [%lld, %lld, %lld, %lld]", (long long)rows,
                             (long long)B, (long long)S, (long long)H);
    if (w->shape[0] != G * H || w->shape[1] != H)
        return tg_check_fail(c, TG_SHAPE, "W must be [%lld, %lld]", (long long)(G * H),
                             (long long)H);
    if (at->has_diag) {
        const tg_view *d = c->in[3];
        int64_t want_d[5] = {T, B, S, S, H};
        bool same = d->ndim == 5;
        for (int i = 0; same && i < 5; i++)
            same = d->shape[i] == want_d[i];
        if (!same)
            return tg_check_fail(c, TG_SHAPE, "D must be [T, B, S, S, H] as C gives them");
    }
    *c->out = *g;
    c->out->shape[0] = at->transposed ? T : T + 1;
    c->saved_bytes = (size_t)(B * G * H) * tg_dtype_size(g->dtype);
    return TG_OK;
}

static void linear_scan_forward(const tg_kernel *k)
{
    const linear_attr *at = k->attr;
    const tg_view *cf = k->in[1];
    tg_dtype dt = cf->dtype;
    int64_t T = cf->shape[0], B = cf->shape[1], G = cf->shape[2], S = cf->shape[3];
    int64_t H = cf->shape[4];
    size_t es = tg_dtype_size(dt);
    int64_t state = B * S * H, cstep = B * G * S * H, dstep = B * S * S * H; /* per step */
    const void *g = k->in[0]->data, *c = cf->data, *w = k->in[2]->data;
    const void *d = at->has_diag ? k->in[3]->data : NULL;
    void *y = k->out->data, *m = k->saved;
    if (!at->transposed) {
        memcpy(elem(y, T * state, es), elem(g, (T - 1) * state, es), (size_t)state * es);
        for (int64_t t = T - 1; t >= 0; t--) {
            const void *v = elem(y, (t + 1) * state, es);
            void *dest = elem(y, t * state, es);
            RUN(dt, gate_mix, B, G, S, H, v, elem(c, t * cstep, es), m);
            if (d)
                RUN(dt, diag_mix, B, S, H, v, elem(d, t * dstep, es), dest);
            else
                memset(dest, 0, (size_t)state * es);
            tg__gemm(dt, false, false, B, H, G * H, m, G * H, w, H, 1.0, dest, S * H, k->threads);
            if (t > 0)
                RUN(dt, add, state, elem(g, (t - 1) * state, es), dest);
        }
        return;
    }
    for (int64_t s = 0; s < T; s++) {
        const void *u = s ? elem(y, (s - 1) * state, es) : g;
        void *dest = elem(y, s * state, es);
        tg__gemm(dt, false, true, B, G * H, H, u, S * H, w, H, 0.0, m, G * H, k->threads);
        RUN(dt, gate_unmix, B, G, S, H, m, elem(c, s * cstep, es), dest);
        if (d)
            RUN(dt, diag_unmix, B, S, H, u, elem(d, s * dstep, es), dest);
        RUN(dt, add, state, elem(g, (s + 1) * state, es), dest);
    }
}

/* The gradients of sum_t <w_t, A_t(v_t)> for v, w [T, B, S, H]:
 *   dC = (w_0 W^T)_k v_s,  dW = sum_t a_t^T w_0 with a = sum_s v_s C_{k,s},  dD = v_s w_r. */
static void map_grads(const tg_backward_io *io, tg_tensor v, tg_tensor w, const dims *d)
{
    tg_tensor c = io->inputs[1], weight = io->inputs[2];
    tg_tensor w0 =
        tg_reshape(d->S == 1 ? w : tg_slice(w, 2, 0, 1, 1), 2, (int64_t[]){d->T * d->B, d->H});
    if (io->needs_grad[1]) {
        tg_tensor da = tg_matmul_t(w0, weight, false, true); /* [T*B, G*H] */
        io->grad_inputs[1] =
            tg_mul(shape5(da, d->T, d->B, d->G, 1, d->H), shape5(v, d->T, d->B, 1, d->S, d->H));
    }
    if (io->needs_grad[2]) {
        tg_tensor a = tg_reshape(mix(v, c, d), 2, (int64_t[]){d->T * d->B, d->G * d->H});
        io->grad_inputs[2] = tg_matmul_t(a, w0, true, false);
    }
    if (io->ninputs > 3 && io->needs_grad[3])
        io->grad_inputs[3] =
            tg_mul(shape5(v, d->T, d->B, d->S, 1, d->H), shape5(w, d->T, d->B, 1, d->S, d->H));
}

static void linear_scan_backward(const tg_backward_io *io)
{
    const linear_attr *at = io->attr;
    tg_tensor none = {0}, g = io->inputs[0], c = io->inputs[1], y = io->output;
    tg_tensor gg = io->grad_output, diag = at->has_diag ? io->inputs[3] : none;
    dims d = {tg_dim(c, 0), tg_dim(c, 1), tg_dim(c, 2), tg_dim(c, 3), tg_dim(c, 4)};
    tg_tensor dg = linear_scan(gg, c, io->inputs[2], diag, !at->transposed);
    if (io->needs_grad[0])
        io->grad_inputs[0] = dg;
    /* v_t: what A_t (A_t^T) was applied to, w_t: the gradient of what it produced. */
    tg_tensor v, w;
    if (!at->transposed) {
        v = tg_slice(y, 0, 1, d.T + 1, 1);
        w = d.T == 1 ? tg_slice(gg, 0, 0, 1, 1)
                     : concat2(tg_slice(gg, 0, 0, 1, 1), tg_slice(dg, 0, 0, d.T - 1, 1), 0);
    } else { /* <dg_{s+1}, A_s^T(u_{s-1})> = <A_s(dg_{s+1}), u_{s-1}> */
        v = tg_slice(dg, 0, 1, d.T + 1, 1);
        w = d.T == 1 ? tg_slice(g, 0, 0, 1, 1)
                     : concat2(tg_slice(g, 0, 0, 1, 1), tg_slice(y, 0, 0, d.T - 1, 1), 0);
    }
    map_grads(io, v, w, &d);
}

/* Cases: both directions, with and without D, over T = 3 steps of B = 2, G = 2, S = 2, H = 2;
 * and one step of one state with G = 3 (GRU-like). */
static int example_linear_scan(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const struct {
        int transposed, diag;
        int64_t T, G, S;
    } cases[] = {{0, 1, 3, 2, 2}, {1, 1, 3, 2, 2}, {0, 0, 3, 2, 2},
                 {1, 0, 3, 2, 2}, {0, 1, 1, 3, 1}, {1, 1, 1, 3, 1}};
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    linear_attr *at = attr;
    at->transposed = cases[index].transposed;
    at->has_diag = cases[index].diag;
    int64_t T = cases[index].T, B = 2, G = cases[index].G, S = cases[index].S, H = 2;
    uint64_t seed = 401 + 10 * (uint64_t)index;
    in[0] = tg__example(tp, 4, (int64_t[]){T + at->transposed, B, S, H}, -1, 1, 0, seed);
    in[1] = tg__example(tp, 5, (int64_t[]){T, B, G, S, H}, -1, 1, 0, seed + 1);
    in[2] = tg__example(tp, 2, (int64_t[]){G * H, H}, -1, 1, 0, seed + 2);
    if (at->has_diag)
        in[3] = tg__example(tp, 5, (int64_t[]){T, B, S, S, H}, -1, 1, 0, seed + 3);
    return 3 + at->has_diag;
}

const tg_op_def tg__op_linear_scan = {.name = "linear_scan",
                                      .ninputs = TG_VARIADIC,
                                      .attr_size = sizeof(linear_attr),
                                      .check = linear_scan_check,
                                      .forward = linear_scan_forward,
                                      .backward = linear_scan_backward,
                                      .example = example_linear_scan};
