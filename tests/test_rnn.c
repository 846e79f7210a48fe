/* test_rnn.c — recurrent layers and cells against PyTorch (tests/reference/rnn_reference.txt,
 * written by tests/reference/generate_rnn.py): outputs, final states and the gradients of every
 * parameter and input agree to 1e-12 relative in f64 and 1e-5 in f32, and the parameters are
 * named and ordered as PyTorch's state_dict; a model state written by PyTorch loads through a
 * checkpoint; buffers carry state from one tape to the next (truncated backprop through time, a
 * cache that grows every step); the layers are twice differentiable; bad input is refused with
 * messages naming the module and the shapes. */
#include "common.h"
#include "reference.h"

#define REF_PATH TG_SOURCE_DIR "/tests/reference/rnn_reference.txt"
#define STATE_PATH TG_SOURCE_DIR "/tests/reference/rnn_state.safetensors"
#define TOL64 1e-12
#define TOL32 1e-5

static int load_refs(void **state)
{
    (void)state;
    return ref_load(REF_PATH, "tests/reference/generate_rnn.py");
}

/* The worst |a - b| / (1 + |b|) against the reference, per dtype, over the whole program. */
static double worst[3];

/* values (n of them) agree with reference graph.name, same element count, to tol. */
static void expect_values(const double *got, int64_t n, const char *graph, const char *name,
                          tg_dtype dt, double tol)
{
    const ref_tensor *r = ref(graph, name);
    assert_int_equal(n, r->numel);
    for (int64_t i = 0; i < n; i++) {
        double err = fabs(got[i] - r->v[i]) / (1 + fabs(r->v[i]));
        if (!(err <= tol))
            fail_msg("%s.%s[%lld] = %.17g, PyTorch %.17g (relative error %.3g > %g, %s)", graph,
                     name, (long long)i, got[i], r->v[i], err, tol, tg_dtype_name(dt));
        worst[dt] = err > worst[dt] ? err : worst[dt];
    }
}

/* A tensor agrees with the reference in shape and values. */
static void expect(tg_tensor t, const char *graph, const char *name, double tol)
{
    const ref_tensor *r = ref(graph, name);
    if (!tg_ok(t))
        fail_msg("%s.%s: no tensor (%s)", graph, name, tg_tape_error(tg_tensor_tape(t)));
    assert_int_equal(tg_ndim(t), r->ndim);
    for (int d = 0; d < r->ndim; d++)
        assert_int_equal(tg_dim(t, d), r->shape[d]);
    double *got = malloc((size_t)(r->numel ? r->numel : 1) * sizeof *got);
    assert_non_null(got);
    assert_status(tg_read(t, TG_F64, got, r->numel), TG_OK);
    expect_values(got, r->numel, graph, name, tg_tensor_dtype(t), tol);
    free(got);
}

/* A reference tensor as a leaf of dtype dt on tp (f32: the f64 values rounded). */
static tg_tensor input(tg_tape *tp, const char *graph, const char *name, tg_dtype dt)
{
    const ref_tensor *r = ref(graph, name);
    tg_tensor t64 = tg_tensor_from(tp, TG_F64, r->ndim, r->shape, r->v);
    if (dt == TG_F64)
        return t64;
    float *buf = malloc((size_t)(r->numel ? r->numel : 1) * sizeof *buf);
    assert_non_null(buf);
    assert_status(tg_read(t64, TG_F32, buf, r->numel), TG_OK);
    tg_tensor t = tg_tensor_from(tp, TG_F32, r->ndim, r->shape, buf);
    free(buf);
    return t;
}

/* Sets a parameter (or buffer) from the reference, converted to its dtype. */
static void set_from(tg_tape *tp, tg_param *p, const char *graph, const char *name)
{
    const ref_tensor *r = ref(graph, name);
    assert_int_equal(tg_param_numel(p), r->numel);
    tg_tensor t = input(tp, graph, name, tg_param_dtype(p) == TG_I64 ? TG_F64 : tg_param_dtype(p));
    if (tg_param_dtype(p) == TG_I64) {
        int64_t v[16];
        assert_true(r->numel <= 16);
        assert_status(tg_read(t, TG_I64, v, r->numel), TG_OK);
        assert_status(tg_param_set(p, v), TG_OK);
        return;
    }
    assert_status(tg_param_set(p, tg_data(t)), TG_OK);
}

/* The module's state names are the graph's "p.<key>" entries, in the file's (state_dict's)
 * order, with `prefix` before each key ("" for a module named ""). */
static void expect_state_names(const tg_module *m, const char *graph)
{
    size_t k = 0;
    for (size_t i = 0; i < refs.n; i++) {
        if (strcmp(refs.t[i].graph, graph) || strncmp(refs.t[i].name, "p.", 2))
            continue;
        if (k >= tg_module_state_count(m))
            fail_msg("%s: PyTorch has %s, tapegrad has only %zu tensors", graph, refs.t[i].name,
                     tg_module_state_count(m));
        assert_string_equal(tg_param_name(tg_module_state(m)[k]), refs.t[i].name + 2);
        k++;
    }
    assert_int_equal(k, tg_module_state_count(m));
}

/* ---- layers and cells against PyTorch --------------------------------------------------- */

typedef struct graph_case {
    const char *graph;
    tg_rnn_mode mode;
    bool cell, batch_first, bias, given; /* given: h0 (c0) in the file; else zero states */
} graph_case;

static const graph_case cases[] = {
    {"rnn_tanh", TG_RNN_TANH, false, false, true, true},
    {"rnn_relu", TG_RNN_RELU, false, true, true, true},
    {"gru", TG_RNN_GRU, false, false, true, true},
    {"gru_bf", TG_RNN_GRU, false, true, true, true},
    {"gru_nobias", TG_RNN_GRU, false, false, false, false},
    {"lstm", TG_RNN_LSTM, false, false, true, true},
    {"lstm_bf", TG_RNN_LSTM, false, true, true, true},
    {"cell_tanh", TG_RNN_TANH, true, false, true, true},
    {"cell_relu", TG_RNN_RELU, true, false, true, true},
    {"cell_gru", TG_RNN_GRU, true, false, true, true},
    {"cell_gru_nobias", TG_RNN_GRU, true, false, false, false},
    {"cell_lstm", TG_RNN_LSTM, true, false, true, true},
};

/* sum(t * graph.rname), or 0 when t is none. */
static tg_tensor weighted(tg_tape *tp, tg_tensor t, const char *graph, const char *rname,
                          tg_dtype dt)
{
    if (!tg_tensor_tape(t))
        return tg_constant(tp, dt, 0.0);
    return tg_sum_all(tg_mul(t, input(tp, graph, rname, dt)));
}

static void run_case(fixture *f, const graph_case *c, tg_dtype dt, double tol)
{
    tg_tape *tp = f->tp;
    tg_rnn_options o = {.num_layers = c->cell ? 0 : 2,
                        .no_bias = !c->bias,
                        .batch_first = c->batch_first,
                        .dtype = dt};
    tg_module *m;
    assert_status(c->cell ? tg_rnn_cell_new(f->ctx, "", c->mode, 3, 4, &o, &m)
                          : tg_rnn_new(f->ctx, "", c->mode, 3, 4, &o, &m),
                  TG_OK);
    expect_state_names(m, c->graph);
    tg_tape_reset(tp);
    char key[40];
    for (size_t i = 0; i < tg_module_param_count(m); i++) {
        snprintf(key, sizeof key, "p.%s", tg_param_name(tg_module_params(m)[i]));
        set_from(tp, tg_module_params(m)[i], c->graph, key);
    }
    bool lstm = c->mode == TG_RNN_LSTM;
    tg_tensor none = {0}, h0 = none, c0 = none, out, hn, cn = none;
    tg_tensor x = tg_requires_grad(input(tp, c->graph, "x", dt));
    if (c->given) {
        h0 = tg_requires_grad(input(tp, c->graph, "h0", dt));
        if (lstm)
            c0 = tg_requires_grad(input(tp, c->graph, "c0", dt));
    }
    if (c->cell) {
        assert_status(tg_rnn_cell_step(m, x, h0, c0, &hn, lstm ? &cn : NULL), TG_OK);
        out = hn;
    } else {
        assert_status(tg_rnn_run(m, x, h0, c0, &out, &hn, lstm ? &cn : NULL), TG_OK);
    }
    expect(out, c->graph, "out", tol);
    expect(hn, c->graph, "hn", tol);
    if (lstm)
        expect(cn, c->graph, "cn", tol);
    tg_tensor loss =
        tg_add(weighted(tp, out, c->graph, "r", dt), weighted(tp, hn, c->graph, "rh", dt));
    loss = tg_add(loss, weighted(tp, cn, c->graph, "rc", dt));
    assert_status(tg_backward(loss), TG_OK);
    for (size_t i = 0; i < tg_module_param_count(m); i++) {
        tg_param *p = tg_module_params(m)[i];
        snprintf(key, sizeof key, "g.%s", tg_param_name(p));
        expect(tg_tensor_from(tp, dt, tg_param_ndim(p), tg_param_shape(p), tg_param_grad(p)),
               c->graph, key, tol);
    }
    expect(tg_tensor_grad(x), c->graph, "g.x", tol);
    if (c->given)
        expect(tg_tensor_grad(h0), c->graph, "g.h0", tol);
    if (c->given && lstm)
        expect(tg_tensor_grad(c0), c->graph, "g.c0", tol);
    assert_tape_ok(tp);
    tg_module_free(m);
}

static void layers_and_cells_match_pytorch(void **state)
{
    fixture *f = *state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(f, &cases[i], TG_F64, TOL64);
        run_case(f, &cases[i], TG_F32, TOL32);
    }
    print_message("%zu modules: worst error vs PyTorch %.3g (f64), %.3g (f32)\n",
                  sizeof cases / sizeof cases[0], worst[TG_F64], worst[TG_F32]);
}

/* ---- a state written by PyTorch --------------------------------------------------------- */

static tg_tensor identity(void *user, tg_module *m, tg_tensor x)
{
    (void)user, (void)m;
    return x;
}

/* nn.ModuleDict({"rnn": LSTM(3, 4, 2), "norm": BatchNorm1d(4)}) rebuilt in tapegrad (the batch
 * norm as a module of our own with PyTorch's parameter and buffer names) loads PyTorch's
 * safetensors file whole, I64 num_batches_tracked included, and then computes what PyTorch does. */
static void loads_state_written_by_pytorch(void **state)
{
    fixture *f = *state;
    tg_module *parts[2], *model;
    assert_status(tg_rnn_new(f->ctx, "lstm", TG_RNN_LSTM, 3, 4, &(tg_rnn_options){.num_layers = 2},
                             &parts[0]),
                  TG_OK);
    assert_status(tg_module_custom_new(f->ctx, "bn", identity, NULL, &parts[1]), TG_OK);
    int64_t four = 4;
    assert_status(tg_module_add_param(parts[1], "weight", TG_F32, 1, &four, NULL), TG_OK);
    assert_status(tg_module_add_param(parts[1], "bias", TG_F32, 1, &four, NULL), TG_OK);
    assert_status(tg_module_add_buffer(parts[1], "running_mean", TG_F32, 1, &four, NULL), TG_OK);
    assert_status(tg_module_add_buffer(parts[1], "running_var", TG_F32, 1, &four, NULL), TG_OK);
    tg_param *count;
    assert_status(tg_module_add_buffer(parts[1], "num_batches_tracked", TG_I64, 0, NULL, &count),
                  TG_OK);
    assert_status(tg_module_dict_new(f->ctx, "", 2, (const char *[]){"rnn", "norm"}, parts, &model),
                  TG_OK);
    expect_state_names(model, "sd");
    assert_int_equal(tg_module_buffer_count(model), 3);
    assert_status(tg_checkpoint_load(f->ctx, STATE_PATH, tg_module_state_count(model),
                                     tg_module_state(model), NULL),
                  TG_OK);
    char key[48];
    for (size_t i = 0; i < tg_module_state_count(model); i++) {
        tg_param *p = tg_module_state(model)[i];
        snprintf(key, sizeof key, "p.%s", tg_param_name(p));
        const ref_tensor *r = ref("sd", key);
        tg_tensor v = tg_param_tensor(f->tp, p);
        double got[64];
        assert_true(r->numel <= 64);
        assert_status(tg_read(v, TG_F64, got, r->numel), TG_OK);
        for (int64_t j = 0; j < r->numel; j++)
            assert_true(got[j] == r->v[j]); /* f32 and i64 values, bit for bit */
    }
    assert_int_equal(*(const int64_t *)tg_param_data(count), 3);
    tg_tensor out;
    assert_status(tg_rnn_run(tg_module_find(model, "rnn"), input(f->tp, "sd", "x", TG_F32),
                             (tg_tensor){0}, (tg_tensor){0}, &out, NULL, NULL),
                  TG_OK);
    expect(out, "sd", "out", TOL32);
    tg_module_free(model);
}

/* ---- state across tapes: buffers --------------------------------------------------------- */

/* Rows [t0, t1) of a [T, B, I] sequence as a new leaf on tp. */
static tg_tensor steps(tg_tape *tp, const double *x, int64_t t0, int64_t t1, int64_t B, int64_t I)
{
    return tg_tensor_from(tp, TG_F64, 3, (int64_t[]){t1 - t0, B, I}, x + t0 * B * I);
}

/* Copies every parameter gradient of m into g (numel of each, in order) and zeroes them. */
static void take_grads(tg_module *m, double *g)
{
    for (size_t i = 0; i < tg_module_param_count(m); i++) {
        tg_param *p = tg_module_params(m)[i];
        memcpy(g, tg_param_grad(p), (size_t)tg_param_numel(p) * sizeof *g);
        g += tg_param_numel(p);
        tg_param_zero_grad(p);
    }
}

static double max_difference(const double *a, const double *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d = fmax(d, fabs(a[i] - b[i]));
    return d;
}

/* Truncated backprop through time: a 2-layer GRU run over 12 steps as 3 chunks of 4, each on a
 * fresh tape that reads the hidden state from a buffer and stores the chunk's final state back
 * (before its backward: the tape read a copy). The outputs equal one run over the whole
 * sequence; the gradients of chunk 1 equal those of a single tape on which chunk 0's final
 * state is detached, and differ from the untruncated ones: nothing crossed the boundary. */
static void truncated_bptt_with_a_state_buffer(void **state)
{
    fixture *f = *state;
    enum { T = 12, CHUNK = 4, B = 2, I = 3, H = 4, L = 2 };
    tg_module *gru;
    assert_status(tg_rnn_new(f->ctx, "gru", TG_RNN_GRU, I, H,
                             &(tg_rnn_options){.num_layers = L, .dtype = TG_F64, .seed = 7}, &gru),
                  TG_OK);
    tg_param *hidden;
    assert_status(tg_buffer_new(f->ctx, "gru_state", TG_F64, 3, (int64_t[]){L, B, H}, &hidden),
                  TG_OK);
    assert_true(tg_param_is_buffer(hidden));
    assert_false(tg_param_is_buffer(tg_module_params(gru)[0]));
    double x[T * B * I], full[T * B * H], r[T * B * H];
    for (int i = 0; i < T * B * I; i++)
        x[i] = sin(0.7 * i);
    for (int i = 0; i < T * B * H; i++)
        r[i] = cos(0.3 * i);
    tg_tensor out;
    assert_status(tg_rnn_run(gru, steps(f->tp, x, 0, T, B, I), (tg_tensor){0}, (tg_tensor){0}, &out,
                             NULL, NULL),
                  TG_OK);
    assert_status(tg_read(out, TG_F64, full, T * B * H), TG_OK);

    size_t nw = 0;
    for (size_t i = 0; i < tg_module_param_count(gru); i++)
        nw += (size_t)tg_param_numel(tg_module_params(gru)[i]);
    double *chunk_grad = calloc(nw, sizeof(double)), *detached = calloc(nw, sizeof(double));
    double *through = calloc(nw, sizeof(double));
    assert_non_null(chunk_grad);
    assert_non_null(detached);
    assert_non_null(through);
    for (int k = 0; k < T / CHUNK; k++) {
        tg_tape_reset(f->tp);
        tg_tensor h0 = tg_param_tensor(f->tp, hidden), hn;
        assert_false(tg_ok(tg_tensor_grad(h0))); /* a leaf that needs no gradient */
        assert_status(tg_rnn_run(gru, steps(f->tp, x, k * CHUNK, (k + 1) * CHUNK, B, I), h0,
                                 (tg_tensor){0}, &out, &hn, NULL),
                      TG_OK);
        assert_status(tg_buffer_store(hidden, hn), TG_OK);
        tg_tensor rk =
            tg_tensor_from(f->tp, TG_F64, 3, (int64_t[]){CHUNK, B, H}, r + k * CHUNK * B * H);
        assert_status(tg_backward(tg_sum_all(tg_mul(out, rk))), TG_OK);
        double got[CHUNK * B * H];
        assert_status(tg_read(out, TG_F64, got, CHUNK * B * H), TG_OK);
        for (int i = 0; i < CHUNK * B * H; i++)
            assert_close(got[i], full[k * CHUNK * B * H + i], 1e-14);
        take_grads(gru, chunk_grad);
        if (k == 1)
            break;
    }
    /* Chunks 0 and 1 on one tape, the boundary state detached, then not. */
    for (int detach = 1; detach >= 0; detach--) {
        tg_tape_reset(f->tp);
        tg_tensor h1, out1;
        assert_status(tg_rnn_run(gru, steps(f->tp, x, 0, CHUNK, B, I), (tg_tensor){0},
                                 (tg_tensor){0}, &out, &h1, NULL),
                      TG_OK);
        assert_status(tg_rnn_run(gru, steps(f->tp, x, CHUNK, 2 * CHUNK, B, I),
                                 detach ? tg_detach(h1) : h1, (tg_tensor){0}, &out1, NULL, NULL),
                      TG_OK);
        tg_tensor rk =
            tg_tensor_from(f->tp, TG_F64, 3, (int64_t[]){CHUNK, B, H}, r + CHUNK * B * H);
        assert_status(tg_backward(tg_sum_all(tg_mul(out1, rk))), TG_OK);
        take_grads(gru, detach ? detached : through);
    }
    assert_true(max_difference(chunk_grad, detached, nw) <= 1e-15);
    assert_true(max_difference(chunk_grad, through, nw) > 1e-3);
    free(chunk_grad);
    free(detached);
    free(through);
    tg_param_free(hidden);
    tg_module_free(gru);
}

/* A cache that grows by one row per step, as a KV cache during generation: each step reads it,
 * appends a row computed from a parameter, uses the whole, backpropagates and stores the grown
 * cache. The buffer reallocates only when it outgrows its capacity (by half at least each time),
 * and a tensor read before a store keeps the value it had. */
static void growing_cache_buffer(void **state)
{
    fixture *f = *state;
    enum { STEPS = 50, D = 4 };
    tg_param *w, *cache;
    assert_status(tg_param_new(f->ctx, "w", TG_F32, 2, (int64_t[]){1, D}, &w), TG_OK);
    assert_status(tg_param_uniform(w, -1, 1, 3), TG_OK);
    assert_status(tg_buffer_new(f->ctx, "cache", TG_F32, 2, (int64_t[]){0, D}, &cache), TG_OK);
    int grown = 0;
    for (int t = 0; t < STEPS; t++) {
        tg_tape_reset(f->tp);
        tg_tensor old = tg_param_tensor(f->tp, cache);
        assert_int_equal(tg_dim(old, 0), t);
        tg_tensor row = tg_mul_scalar(tg_param_tensor(f->tp, w), (double)(t + 1));
        tg_tensor all = tg_concat(2, (tg_tensor[]){old, row}, 0);
        tg_tensor loss = tg_sum_all(tg_softmax(tg_sum(all, 1, (int[]){1}, false), 0));
        uint64_t before = tg_ctx_alloc_calls(f->ctx);
        assert_status(tg_buffer_store(cache, all), TG_OK);
        grown += tg_ctx_alloc_calls(f->ctx) != before;
        assert_status(tg_backward(tg_mul(loss, loss)),
                      TG_OK); /* after the store: a copy was read */
        assert_int_equal(tg_dim(old, 0), t);
    }
    assert_int_equal(tg_param_ndim(cache), 2);
    assert_int_equal(tg_param_shape(cache)[0], STEPS);
    assert_int_equal(tg_param_shape(cache)[1], D);
    const float *rows = tg_param_data(cache), *wd = tg_param_data(w);
    for (int t = 0; t < STEPS; t++)
        for (int j = 0; j < D; j++)
            assert_true(rows[t * D + j] == wd[j] * (float)(t + 1));
    print_message("a cache grown over %d steps reallocated %d times\n", STEPS, grown);
    assert_true(grown >= 2 && grown <= 12);
    /* Shrinking keeps the block. */
    tg_tape_reset(f->tp);
    tg_tensor small = tg_zeros(f->tp, TG_F32, 1, (int64_t[]){3});
    uint64_t before = tg_ctx_alloc_calls(f->ctx);
    assert_status(tg_buffer_store(cache, small), TG_OK);
    assert_int_equal(tg_ctx_alloc_calls(f->ctx), before);
    assert_int_equal(tg_param_ndim(cache), 1);
    assert_int_equal(tg_param_numel(cache), 3);
    tg_param_free(cache);
    tg_param_free(w);
}

/* ---- higher order, the module API, bad input -------------------------------------------- */

typedef struct run_user {
    tg_module *m;
    bool lstm;
} run_user;

/* sum(tanh(output)) + sum(h_n^2) (+ sum(c_n^2)) of a layer from x, h0 (and c0). */
static tg_tensor run_sum(void *user, int n, const tg_tensor *in)
{
    (void)n;
    run_user *u = user;
    bool lstm = u->lstm;
    tg_tensor out, hn, cn;
    tg_rnn_run(u->m, in[0], in[1], lstm ? in[2] : (tg_tensor){0}, &out, &hn, lstm ? &cn : NULL);
    tg_tensor y = tg_add(tg_sum_all(tg_tanh(out)), tg_sum_all(tg_square(hn)));
    return lstm ? tg_add(y, tg_sum_all(tg_square(cn))) : y;
}

/* Second derivatives through whole layers (x, h0 and c0 as inputs), against finite differences
 * of the first: the backward's ops are differentiable again. */
static void layers_are_twice_differentiable(void **state)
{
    fixture *f = *state;
    static const tg_rnn_mode modes[] = {TG_RNN_GRU, TG_RNN_LSTM, TG_RNN_TANH};
    static const char *const names[] = {"gru", "lstm", "tanh"};
    for (int k = 0; k < 3; k++) {
        tg_module *m;
        assert_status(tg_rnn_new(f->ctx, names[k], modes[k], 2, 3,
                                 &(tg_rnn_options){.num_layers = 2, .dtype = TG_F64}, &m),
                      TG_OK);
        tg_tape_reset(f->tp);
        tg_tensor in[3] = {tg_uniform(f->tp, TG_F64, 3, (int64_t[]){3, 2, 2}, -1, 1, 1),
                           tg_uniform(f->tp, TG_F64, 3, (int64_t[]){2, 2, 3}, -1, 1, 2),
                           tg_uniform(f->tp, TG_F64, 3, (int64_t[]){2, 2, 3}, -1, 1, 3)};
        run_user u = {m, modes[k] == TG_RNN_LSTM};
        for (int order = 1; order <= 2; order++) {
            tg_gradcheck_result r;
            tg_gradcheck_options o = {.order = order, .seed = 5};
            assert_status(
                tg_gradcheck(f->ctx, run_sum, &u, modes[k] == TG_RNN_LSTM ? 3 : 2, in, &o, &r),
                TG_OK);
            if (!r.passed)
                fail_msg("%s order %d: input %d [%lld]: analytic %.10g, numeric %.10g", names[k],
                         order, r.input, (long long)r.index, r.analytic, r.numeric);
        }
        tg_module_free(m);
    }
}

static void initialisation_and_forward(void **state)
{
    fixture *f = *state;
    tg_module *lstm, *cell;
    assert_status(tg_rnn_new(f->ctx, "big", TG_RNN_LSTM, 50, 100, NULL, &lstm), TG_OK);
    assert_int_equal(tg_param_dtype(tg_module_params(lstm)[0]), TG_F32);
    double bound = 1.0 / sqrt(100.0);
    for (size_t i = 0; i < tg_module_param_count(lstm); i++) {
        tg_tensor w = tg_param_tensor(f->tp, tg_module_params(lstm)[i]);
        assert_true(tg_item(tg_max_all(tg_abs(w))) <= bound);
        assert_close(tg_item(tg_max_all(tg_abs(w))), bound, 0.02);
        assert_close(tg_item(tg_mean_all(tg_square(w))), bound * bound / 3, 0.1);
    }
    /* Distinct tensors get distinct values. */
    assert_true(memcmp(tg_param_data(tg_module_params(lstm)[2]),
                       tg_param_data(tg_module_params(lstm)[3]), 400 * sizeof(float)));
    /* tg_forward: the output with zero initial states; for a cell, the next h. */
    tg_tensor x = tg_uniform(f->tp, TG_F32, 3, (int64_t[]){4, 2, 50}, -1, 1, 9), out;
    assert_status(tg_rnn_run(lstm, x, (tg_tensor){0}, (tg_tensor){0}, &out, NULL, NULL), TG_OK);
    tg_tensor y = tg_forward(lstm, x);
    assert_tape_ok(f->tp);
    assert_int_equal(tg_dim(y, 0), 4);
    assert_int_equal(tg_dim(y, 2), 100);
    assert_memory_equal(tg_data(y), tg_data(out), 4 * 2 * 100 * sizeof(float));
    assert_status(tg_rnn_cell_new(f->ctx, "c", TG_RNN_GRU, 5, 6, NULL, &cell), TG_OK);
    tg_tensor xc = tg_uniform(f->tp, TG_F32, 2, (int64_t[]){3, 5}, -1, 1, 4), h, c;
    assert_status(tg_rnn_cell_step(cell, xc, (tg_tensor){0}, (tg_tensor){0}, &h, &c), TG_OK);
    assert_false(tg_tensor_tape(c)); /* a GRU has no c state: none */
    assert_memory_equal(tg_data(tg_forward(cell, xc)), tg_data(h), 3 * 6 * sizeof(float));
    tg_module_free(cell);
    tg_module_free(lstm);
}

/* Runs `call` on a fresh tape state and checks it failed with `st` and a message containing
 * each of the NULL-terminated needles. */
#define EXPECT_FAIL(f, st, call, ...)                                                              \
    do {                                                                                           \
        tg_tape_reset((f)->tp);                                                                    \
        assert_status((call), (st));                                                               \
        const char *needles_[] = {__VA_ARGS__, NULL};                                              \
        for (int i_ = 0; needles_[i_]; i_++)                                                       \
            assert_contains(tg_tape_error((f)->tp), needles_[i_]);                                 \
    } while (0)

static void bad_input_is_refused(void **state)
{
    fixture *f = *state;
    tg_tape *tp = f->tp;
    tg_module *gru, *lstm, *cell, *lin;
    assert_status(
        tg_rnn_new(f->ctx, "enc", TG_RNN_GRU, 3, 4, &(tg_rnn_options){.num_layers = 2}, &gru),
        TG_OK);
    assert_status(tg_rnn_new(f->ctx, "mem", TG_RNN_LSTM, 3, 4, NULL, &lstm), TG_OK);
    assert_status(tg_rnn_cell_new(f->ctx, "cell", TG_RNN_LSTM, 3, 4, NULL, &cell), TG_OK);
    assert_status(tg_linear_new(f->ctx, "lin", 3, 4, NULL, &lin), TG_OK);
    tg_tensor none = {0}, out = none, hn = none;
#define SEQ(t, b, i) tg_zeros(tp, TG_F32, 3, (int64_t[]){t, b, i})
    EXPECT_FAIL(f, TG_SHAPE, tg_rnn_run(gru, SEQ(5, 2, 7), none, none, &out, &hn, NULL),
                "tg_rnn_run(enc)", "x is f32[5,2,7]", "needs f32[T,B,3]");
    assert_false(tg_ok(out));
    assert_false(tg_ok(hn));
    EXPECT_FAIL(
        f, TG_SHAPE,
        tg_rnn_run(gru, tg_zeros(tp, TG_F32, 2, (int64_t[]){5, 3}), none, none, &out, NULL, NULL),
        "x is f32[5,3]");
    EXPECT_FAIL(f, TG_DTYPE,
                tg_rnn_run(gru, tg_zeros(tp, TG_F64, 3, (int64_t[]){5, 2, 3}), none, none, &out,
                           NULL, NULL),
                "x is f64[5,2,3]", "needs f32");
    EXPECT_FAIL(f, TG_SHAPE,
                tg_rnn_run(gru, SEQ(5, 2, 3), tg_zeros(tp, TG_F32, 3, (int64_t[]){2, 2, 5}), none,
                           &out, NULL, NULL),
                "h0 is f32[2,2,5]", "needs f32[2,2,4]");
    EXPECT_FAIL(f, TG_SHAPE,
                tg_rnn_run(gru, SEQ(5, 2, 3), tg_zeros(tp, TG_F32, 3, (int64_t[]){2, 3, 4}), none,
                           &out, NULL, NULL),
                "h0 is f32[2,3,4]"); /* batch mismatch */
    EXPECT_FAIL(f, TG_SHAPE,
                tg_rnn_run(gru, SEQ(5, 2, 3), tg_zeros(tp, TG_F32, 3, (int64_t[]){1, 2, 4}), none,
                           &out, NULL, NULL),
                "needs f32[2,2,4]"); /* one layer's state for two layers */
    EXPECT_FAIL(f, TG_INVALID,
                tg_rnn_run(gru, SEQ(5, 2, 3), none, tg_zeros(tp, TG_F32, 3, (int64_t[]){2, 2, 4}),
                           &out, NULL, NULL),
                "a GRU has no c0");
    EXPECT_FAIL(f, TG_SHAPE,
                tg_rnn_run(lstm, SEQ(5, 2, 3), none, tg_zeros(tp, TG_F32, 3, (int64_t[]){1, 4, 4}),
                           &out, NULL, NULL),
                "tg_rnn_run(mem)", "c0 is f32[1,4,4]");
    EXPECT_FAIL(f, TG_SHAPE, tg_rnn_run(gru, SEQ(0, 2, 3), none, none, &out, NULL, NULL),
                "0 steps");
    EXPECT_FAIL(f, TG_INVALID, tg_rnn_run(cell, SEQ(5, 2, 3), none, none, &out, NULL, NULL),
                "tg_rnn_run(cell): a LSTMCell, not a recurrent layer");
    EXPECT_FAIL(f, TG_INVALID, tg_rnn_run(lin, SEQ(5, 2, 3), none, none, &out, NULL, NULL),
                "a Linear");
    EXPECT_FAIL(f, TG_INVALID, tg_rnn_run(NULL, SEQ(5, 2, 3), none, none, &out, NULL, NULL),
                "module is NULL");
    EXPECT_FAIL(
        f, TG_SHAPE,
        tg_rnn_cell_step(cell, tg_zeros(tp, TG_F32, 2, (int64_t[]){2, 5}), none, none, &out, NULL),
        "tg_rnn_cell_step(cell)", "x is f32[2,5]", "needs f32[B,3]");
    EXPECT_FAIL(f, TG_SHAPE,
                tg_rnn_cell_step(cell, tg_zeros(tp, TG_F32, 2, (int64_t[]){2, 3}),
                                 tg_zeros(tp, TG_F32, 2, (int64_t[]){3, 4}), none, &out, NULL),
                "h is f32[3,4]", "needs f32[2,4]");
    EXPECT_FAIL(
        f, TG_INVALID,
        tg_rnn_cell_step(gru, tg_zeros(tp, TG_F32, 2, (int64_t[]){2, 3}), none, none, &out, NULL),
        "a GRU, not a recurrent cell");
    /* An errored tape: the status, outputs are error handles, nothing else recorded. */
    tg_tape_reset(tp);
    tg_tensor x = SEQ(5, 2, 3);
    tg_tape_fail(tp, TG_RANGE, "earlier");
    out = x;
    assert_status(tg_rnn_run(gru, x, none, none, &out, NULL, NULL), TG_RANGE);
    assert_false(tg_ok(out));
    assert_string_equal(tg_tape_error(tp), "earlier");
    /* Constructors. */
    tg_module *m = (tg_module *)1;
    assert_status(tg_rnn_new(f->ctx, "r", (tg_rnn_mode)9, 3, 4, NULL, &m), TG_INVALID);
    assert_null(m);
    assert_contains(tg_ctx_error(f->ctx), "tg_rnn_new(r): unknown mode 9");
    assert_status(tg_rnn_new(f->ctx, "r", TG_RNN_GRU, 0, 4, NULL, &m), TG_SHAPE);
    assert_status(tg_rnn_new(f->ctx, "r", TG_RNN_GRU, 3, -1, NULL, &m), TG_SHAPE);
    assert_status(
        tg_rnn_new(f->ctx, "r", TG_RNN_GRU, 3, 4, &(tg_rnn_options){.num_layers = -2}, &m),
        TG_INVALID);
    assert_status(tg_rnn_new(f->ctx, "r", TG_RNN_GRU, 3, 4, &(tg_rnn_options){.dtype = TG_I64}, &m),
                  TG_DTYPE);
    assert_status(
        tg_rnn_cell_new(f->ctx, "r", TG_RNN_GRU, 3, 4, &(tg_rnn_options){.num_layers = 2}, &m),
        TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "a cell has one");
    assert_status(
        tg_rnn_cell_new(f->ctx, "r", TG_RNN_GRU, 3, 4, &(tg_rnn_options){.batch_first = true}, &m),
        TG_INVALID);
    assert_null(m);
    tg_module_free(lin);
    tg_module_free(cell);
    tg_module_free(lstm);
    tg_module_free(gru);
    assert_int_equal(tg_param_count(f->ctx), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(layers_and_cells_match_pytorch),
        FIXTURE_TEST(loads_state_written_by_pytorch),
        FIXTURE_TEST(truncated_bptt_with_a_state_buffer),
        FIXTURE_TEST(growing_cache_buffer),
        FIXTURE_TEST(layers_are_twice_differentiable),
        FIXTURE_TEST(initialisation_and_forward),
        FIXTURE_TEST(bad_input_is_refused),
    };
    return cmocka_run_group_tests_name("rnn", tests, load_refs, ref_free);
}
