/* rnn.c — recurrent modules: RNNCell, GRUCell, LSTMCell and the multi-layer RNN, GRU and LSTM,
 * with PyTorch's parameter names, layouts and initialisation, on the public API only. A layer
 * projects its whole input with one matrix product and runs its recurrence as one tg_rnn_scan
 * (ops/rnn.c); a cell step is the same with one step. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "module_impl.h"

/* Gates per step: 1 (tanh, relu), 3 (GRU), 4 (LSTM). */
static int64_t gates_of(tg_rnn_mode mode)
{
    return mode == TG_RNN_GRU ? 3 : mode == TG_RNN_LSTM ? 4 : 1;
}

/* PyTorch's class names, for messages. */
static const char *kind_of(tg_rnn_mode mode, bool cell)
{
    static const char *const kinds[2][4] = {{"RNN", "RNN", "GRU", "LSTM"},
                                            {"RNNCell", "RNNCell", "GRUCell", "LSTMCell"}};
    return kinds[cell][mode];
}

/* The parameters of layer l (a cell has one layer): weight_ih, weight_hh, bias_ih, bias_hh
 * (biases NULL without bias). They were created in this order, layer by layer. */
typedef struct layer {
    tg_param *w_ih, *w_hh, *b_ih, *b_hh;
} layer;

static layer layer_of(const tg_module *m, int l)
{
    size_t per = m->u.rnn.bias ? 4 : 2, at = (size_t)l * per;
    layer y = {m->own[at].param, m->own[at + 1].param, NULL, NULL};
    if (m->u.rnn.bias) {
        y.b_ih = m->own[at + 2].param;
        y.b_hh = m->own[at + 3].param;
    }
    return y;
}

/* ---- construction ------------------------------------------------------------------------ */

static tg_tensor cell_forward(tg_module *m, tg_tensor x);
static tg_tensor rnn_forward(tg_module *m, tg_tensor x);

/* Creates layer l's four tensors (suffix "" for a cell, "_l<l>" for a layer) and initialises
 * each U(-1/sqrt(H), 1/sqrt(H)), as PyTorch's RNNBase.reset_parameters does. */
static tg_status add_layer(tg_module *m, const char *fn, int l, int64_t in, uint64_t seed)
{
    const tg__rnn_config *r = &m->u.rnn;
    static const char *const names[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    int64_t gh = gates_of(r->mode) * r->hidden_size;
    int64_t shapes[4][2] = {{gh, in}, {gh, r->hidden_size}, {gh, 0}, {gh, 0}};
    double bound = 1.0 / sqrt((double)r->hidden_size);
    tg_status st = TG_OK;
    for (int i = 0; st == TG_OK && i < (r->bias ? 4 : 2); i++) {
        char local[48];
        if (r->layers)
            snprintf(local, sizeof local, "%s_l%d", names[i], l);
        else
            snprintf(local, sizeof local, "%s", names[i]);
        tg_param *p;
        st = tg__module_entry(m, fn, local, r->dtype, i < 2 ? 2 : 1, shapes[i], false, &p);
        if (st == TG_OK)
            st = tg_param_uniform(p, -bound, bound,
                                  seed + 0x9e3779b97f4a7c15ull * (uint64_t)(4 * l + i + 1));
    }
    return st;
}

static tg_status rnn_make(tg_ctx *ctx, const char *fn, const char *name, tg_rnn_mode mode,
                          int64_t input_size, int64_t hidden_size, const tg_rnn_options *opts,
                          bool cell, tg_module **out)
{
    tg_rnn_options o = {0};
    if (opts)
        o = *opts;
    bool mode_ok = (unsigned)mode <= TG_RNN_LSTM;
    tg_status st = tg__module_new(ctx, fn, mode_ok ? kind_of(mode, cell) : "RNN", name,
                                  cell ? cell_forward : rnn_forward, out);
    if (st)
        return st;
    tg_module *m = *out;
    tg_dtype dt = o.dtype ? o.dtype : TG_F32;
    if (!mode_ok)
        st = tg_ctx_fail(ctx, TG_INVALID, "%s(%s): unknown mode %d", fn, m->name, (int)mode);
    else if (dt != TG_F32 && dt != TG_F64)
        st = tg_ctx_fail(ctx, TG_DTYPE, "%s(%s): parameters must be f32 or f64", fn, m->name);
    else if (input_size < 1 || hidden_size < 1)
        st = tg_ctx_fail(ctx, TG_SHAPE, "%s(%s): input size %lld, hidden size %lld (need >= 1)", fn,
                         m->name, (long long)input_size, (long long)hidden_size);
    else if (o.num_layers < 0 || (cell && o.num_layers > 1))
        st = tg_ctx_fail(ctx, TG_INVALID, "%s(%s): %d layers (%s)", fn, m->name, o.num_layers,
                         cell ? "a cell has one" : "need >= 1, or 0 for 1");
    else if (cell && o.batch_first)
        st = tg_ctx_fail(ctx, TG_INVALID, "%s(%s): a cell has no time axis (batch_first)", fn,
                         m->name);
    if (st)
        return tg__module_finish(out, st);
    m->u.rnn = (tg__rnn_config){mode,       cell ? 0 : o.num_layers ? o.num_layers : 1,
                                input_size, hidden_size,
                                !o.no_bias, o.batch_first,
                                dt};
    uint64_t seed = o.seed ? o.seed : tg__name_seed(m->name);
    for (int l = 0; st == TG_OK && l < (cell ? 1 : m->u.rnn.layers); l++)
        st = add_layer(m, fn, l, l ? hidden_size : input_size, seed);
    return tg__module_finish(out, st);
}

tg_status tg_rnn_cell_new(tg_ctx *ctx, const char *name, tg_rnn_mode mode, int64_t input_size,
                          int64_t hidden_size, const tg_rnn_options *opts, tg_module **out)
{
    return rnn_make(ctx, "tg_rnn_cell_new", name, mode, input_size, hidden_size, opts, true, out);
}

tg_status tg_rnn_new(tg_ctx *ctx, const char *name, tg_rnn_mode mode, int64_t input_size,
                     int64_t hidden_size, const tg_rnn_options *opts, tg_module **out)
{
    return rnn_make(ctx, "tg_rnn_new", name, mode, input_size, hidden_size, opts, false, out);
}

/* ---- checking the call ------------------------------------------------------------------- */

/* Records why `t` does not have dtype dt and shape `want` (ndim dims; -1 where any size goes,
 * named in the message by the next letter of `free`: "TB" gives [T,B,5]) on its tape, naming
 * the function, the module and the tensor; TG_OK if it has. */
static tg_status expect(const char *fn, const tg_module *m, const char *what, tg_tensor t,
                        tg_dtype dt, int ndim, const int64_t *want, const char *free)
{
    bool same = tg_tensor_dtype(t) == dt && tg_ndim(t) == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = want[d] < 0 || tg_dim(t, d) == want[d];
    if (same)
        return TG_OK;
    char got[96], need[96];
    size_t len = 0;
    tg_format_shape(got, sizeof got, tg_tensor_dtype(t), tg_ndim(t), tg_shape(t));
    for (int d = 0; d < ndim && len < sizeof need; d++) {
        if (want[d] < 0)
            len += (size_t)snprintf(need + len, sizeof need - len, "%s%c", d ? "," : "[", *free++);
        else
            len += (size_t)snprintf(need + len, sizeof need - len, "%s%lld", d ? "," : "[",
                                    (long long)want[d]);
    }
    return tg_tape_fail(tg_tensor_tape(t), tg_tensor_dtype(t) == dt ? TG_SHAPE : TG_DTYPE,
                        "%s(%s): %s is %s, the %s needs %s%s]", fn, m->name, what, got, m->kind,
                        tg_dtype_name(dt), need);
}

/* The module is live, of x's context and of the right kind (cell or not); x is a live tensor
 * of a tape without error. Records the reason on x's tape otherwise. */
static tg_status check_module(const char *fn, const tg_module *m, tg_tensor x, bool cell)
{
    tg_status st = tg_tensor_check(x, fn);
    if (st)
        return st;
    tg_tape *tp = tg_tensor_tape(x);
    if (!m)
        return tg_tape_fail(tp, TG_INVALID, "%s: module is NULL", fn);
    if (m->ctx != tg_tape_ctx(tp))
        return tg_tape_fail(tp, TG_INVALID, "%s(%s): module of another context", fn, m->name);
    bool is_rnn = m->forward == cell_forward || m->forward == rnn_forward;
    if (!is_rnn || (m->forward == cell_forward) != cell)
        return tg_tape_fail(tp, TG_INVALID, "%s(%s): a %s, not a recurrent %s", fn, m->name,
                            m->kind, cell ? "cell (tg_rnn_cell_new)" : "layer (tg_rnn_new)");
    return TG_OK;
}

/* An optional state: none, or a live tensor of shape `want` and dtype dt. c states are allowed
 * for LSTM only. */
static tg_status check_state(const char *fn, const tg_module *m, const char *what, tg_tensor s,
                             bool allowed, int ndim, const int64_t *want)
{
    if (!tg_tensor_tape(s))
        return TG_OK;
    tg_tape *tp = tg_tensor_tape(s);
    if (!allowed)
        return tg_tape_fail(tp, TG_INVALID, "%s(%s): a %s has no %s (give none)", fn, m->name,
                            m->kind, what);
    tg_status st = tg_tensor_check(s, fn);
    return st ? st : expect(fn, m, what, s, m->u.rnn.dtype, ndim, want, "");
}

/* ---- running ----------------------------------------------------------------------------- */

/* x [N, in] W_ih^T + b_ih, reshaped to [T, B, G*H]: the input projections of every step. */
static tg_tensor project(tg_tape *tp, tg_tensor x, const layer *p, int64_t T, int64_t B)
{
    tg_tensor g = tg_matmul_t(x, tg_param_tensor(tp, p->w_ih), false, true);
    if (p->b_ih)
        g = tg_add(g, tg_param_tensor(tp, p->b_ih));
    return tg_reshape(g, 3, (int64_t[]){T, B, -1});
}

/* One layer's recurrence over gx [T, B, G*H] from h0 and c0 [B, H]: [T, B, S, H]. */
static tg_tensor recur(const tg_module *m, tg_tape *tp, tg_tensor gx, const layer *p, tg_tensor h0,
                       tg_tensor c0)
{
    tg_tensor none = {0};
    tg_tensor b_hh = p->b_hh ? tg_param_tensor(tp, p->b_hh) : none;
    return tg_rnn_scan(m->u.rnn.mode, gx, tg_param_tensor(tp, p->w_hh), b_hh, h0,
                       m->u.rnn.mode == TG_RNN_LSTM ? c0 : none);
}

/* State s (0: h, 1: c) of every step of a scan's output [T, B, S, H], as [T, B, H]. */
static tg_tensor state_of(const tg_module *m, tg_tensor y, int s)
{
    tg_tensor part = m->u.rnn.mode == TG_RNN_LSTM ? tg_slice(y, 2, s, s + 1, 1) : y;
    return tg_reshape(part, 3, (int64_t[]){tg_dim(y, 0), tg_dim(y, 1), tg_dim(y, 3)});
}

/* Sets every non-NULL output to the tape's error handle and returns the tape's status. */
static tg_status fail_outputs(tg_tape *tp, tg_tensor *a, tg_tensor *b, tg_tensor *c)
{
    tg_tensor *outs[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (outs[i])
            *outs[i] = tg_error(tp);
    return tp ? tg_tape_status(tp) : TG_INVALID;
}

tg_status tg_rnn_cell_step(tg_module *cell, tg_tensor x, tg_tensor h, tg_tensor c, tg_tensor *h_out,
                           tg_tensor *c_out)
{
    static const char fn[] = "tg_rnn_cell_step";
    tg_tape *tp = tg_tensor_tape(x);
    if (check_module(fn, cell, x, true))
        return fail_outputs(tp, h_out, c_out, NULL);
    const tg__rnn_config *r = &cell->u.rnn;
    int64_t B = tg_dim(x, 0), H = r->hidden_size;
    bool lstm = r->mode == TG_RNN_LSTM;
    if (expect(fn, cell, "x", x, r->dtype, 2, (int64_t[]){-1, r->input_size}, "B")
        || check_state(fn, cell, "h", h, true, 2, (int64_t[]){B, H})
        || check_state(fn, cell, "c", c, lstm, 2, (int64_t[]){B, H}))
        return fail_outputs(tp, h_out, c_out, NULL);
    layer p = layer_of(cell, 0);
    tg_tensor zero = tg_zeros(tp, r->dtype, 2, (int64_t[]){B, H});
    tg_tensor y = recur(cell, tp, project(tp, x, &p, 1, B), &p, tg_tensor_tape(h) ? h : zero,
                        tg_tensor_tape(c) ? c : zero);
    if (h_out)
        *h_out = tg_reshape(state_of(cell, y, 0), 2, (int64_t[]){B, H});
    if (c_out)
        *c_out = lstm ? tg_reshape(state_of(cell, y, 1), 2, (int64_t[]){B, H}) : (tg_tensor){0};
    if (tg_tape_status(tp))
        return fail_outputs(tp, h_out, c_out, NULL);
    return TG_OK;
}

static tg_tensor cell_forward(tg_module *m, tg_tensor x)
{
    tg_tensor h;
    tg_rnn_cell_step(m, x, (tg_tensor){0}, (tg_tensor){0}, &h, NULL);
    return h;
}

/* Layer l's slice [B, H] of a state given as [L, B, H] (or zeros when none). */
static tg_tensor initial(tg_tensor s, int l, tg_tensor zero)
{
    if (!tg_tensor_tape(s))
        return zero;
    return tg_reshape(tg_slice(s, 0, l, l + 1, 1), 2, (int64_t[]){tg_dim(s, 1), tg_dim(s, 2)});
}

/* Appends a layer's final state [1, B, H] to the states of the layers before it. */
static tg_tensor append(tg_tensor states, tg_tensor last)
{
    return tg_tensor_tape(states) ? tg_concat(2, (tg_tensor[]){states, last}, 0) : last;
}

tg_status tg_rnn_run(tg_module *rnn, tg_tensor x, tg_tensor h0, tg_tensor c0, tg_tensor *output,
                     tg_tensor *h_n, tg_tensor *c_n)
{
    static const char fn[] = "tg_rnn_run";
    tg_tape *tp = tg_tensor_tape(x);
    if (check_module(fn, rnn, x, false))
        return fail_outputs(tp, output, h_n, c_n);
    const tg__rnn_config *r = &rnn->u.rnn;
    bool lstm = r->mode == TG_RNN_LSTM;
    if (expect(fn, rnn, "x", x, r->dtype, 3, (int64_t[]){-1, -1, r->input_size},
               r->batch_first ? "BT" : "TB"))
        return fail_outputs(tp, output, h_n, c_n);
    if (r->batch_first)
        x = tg_transpose(x, 0, 1);
    int64_t T = tg_dim(x, 0), B = tg_dim(x, 1), H = r->hidden_size, L = r->layers;
    if ((T < 1 || B < 1)
        && tg_tape_fail(tp, TG_SHAPE, "%s(%s): x has %lld steps of batch %lld (need >= 1)", fn,
                        rnn->name, (long long)T, (long long)B))
        return fail_outputs(tp, output, h_n, c_n);
    if (check_state(fn, rnn, "h0", h0, true, 3, (int64_t[]){L, B, H})
        || check_state(fn, rnn, "c0", c0, lstm, 3, (int64_t[]){L, B, H}))
        return fail_outputs(tp, output, h_n, c_n);
    tg_tensor zero = tg_zeros(tp, r->dtype, 2, (int64_t[]){B, H}), hs = x, hn = {0}, cn = {0};
    for (int l = 0; l < L; l++) {
        layer p = layer_of(rnn, l);
        tg_tensor flat = tg_reshape(hs, 2, (int64_t[]){T * B, -1});
        tg_tensor y = recur(rnn, tp, project(tp, flat, &p, T, B), &p, initial(h0, l, zero),
                            initial(c0, l, zero));
        hs = state_of(rnn, y, 0);
        if (h_n)
            hn = append(hn, tg_slice(hs, 0, T - 1, T, 1));
        if (c_n && lstm)
            cn = append(cn, tg_slice(state_of(rnn, y, 1), 0, T - 1, T, 1));
    }
    if (tg_tape_status(tp))
        return fail_outputs(tp, output, h_n, c_n);
    if (output)
        *output = r->batch_first ? tg_transpose(hs, 0, 1) : hs;
    if (h_n)
        *h_n = hn;
    if (c_n)
        *c_n = cn;
    return TG_OK;
}

static tg_tensor rnn_forward(tg_module *m, tg_tensor x)
{
    tg_tensor y;
    tg_rnn_run(m, x, (tg_tensor){0}, (tg_tensor){0}, &y, NULL, NULL);
    return y;
}
