/* test_oom.c — allocation failure: an allocator that fails the N-th request, for every N until a
 * whole training-like scenario succeeds. Each failure must surface as TG_NOMEM with a message,
 * never a crash, and after cleanup every byte must be returned (no leak). */
#include "common.h"

typedef struct counting {
    long calls;   /* allocation requests so far (frees not counted) */
    long fail_at; /* the request index that fails; -1: none */
    long live;    /* blocks outstanding */
    size_t bytes; /* bytes outstanding */
    int failures; /* requests refused */
} counting;

static void *counting_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    counting *c = user;
    if (new_size == 0) {
        if (ptr) {
            c->live--;
            c->bytes -= old_size;
            free(ptr);
        }
        return NULL;
    }
    if (c->calls++ == c->fail_at) {
        c->failures++;
        return NULL;
    }
    void *p = realloc(ptr, new_size);
    if (p) {
        if (!ptr)
            c->live++;
        c->bytes += new_size - (ptr ? old_size : 0);
    }
    return p;
}

/* A gradient-ready hook that counts its calls and leaves every gradient to backward. */
static bool count_ready(void *user, tg_param *p, const void *grad)
{
    (void)p, (void)grad;
    ++*(int *)user;
    return false;
}

/* What a small program does: context, parameters, a token stream, two training steps (the
 * second with a gradient-ready hook), scalars, a functional gradient, Hessians. Returns the first
 * non-OK status seen (or TG_OK); must never crash. */
static tg_status scenario(counting *c, char *message, size_t size)
{
    tg_ctx *ctx = NULL;
    tg_tape *tp = NULL;
    tg_param *w = NULL, *b = NULL, *running_mean = NULL, *running_var = NULL;
    tg_ctx_options opts = {.alloc = counting_alloc, .alloc_user = c};
    tg_status st = tg_ctx_new(&ctx, &opts);
    if (st) { /* no context: the status is the whole report */
        snprintf(message, size, "tg_ctx_new failed");
        return st;
    }
    st = tg_param_new(ctx, "w", TG_F32, 2, (int64_t[]){8, 4}, &w);
    if (!st)
        st = tg_param_new(ctx, "b", TG_F32, 1, (int64_t[]){4}, &b);
    if (!st)
        st = tg_param_uniform(w, -0.5, 0.5, 1);
    if (!st)
        st = tg_param_new(ctx, "running_mean", TG_F32, 1, (int64_t[]){4}, &running_mean);
    if (!st)
        st = tg_param_new(ctx, "running_var", TG_F32, 1, (int64_t[]){4}, &running_var);
    if (!st)
        st = tg_tape_new(ctx, &tp);
    /* The nn layer on the same allocator: a small Sequential and its Adam optimiser. */
    tg_module *layers[3] = {NULL, NULL, NULL}, *net = NULL;
    tg_optim *opt = NULL;
    if (!st)
        st = tg_linear_new(ctx, "a", 8, 16, NULL, &layers[0]);
    if (!st)
        st = tg_activation_new(ctx, TG_ACT_RELU, &layers[1]);
    if (!st)
        st = tg_linear_new(ctx, "b", 16, 3, NULL, &layers[2]);
    if (!st) {
        st = tg_sequential_new(ctx, "net", 3, layers, &net);
        layers[0] = layers[1] = layers[2] = NULL; /* owned by net, even on failure */
    }
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    if (!st)
        st = tg_adam_new(ctx, tg_module_param_count(net), tg_module_params(net), &ao, &opt);
    /* A token stream from a directory of the source tree (listing, sorting, reading). */
    tg_text *text = NULL;
    if (!st)
        st = tg_text_load(ctx, 1, (const char *[]){TG_SOURCE_DIR "/docs"},
                          &(tg_text_options){.char_vocab = true}, &text);
    /* A module tree of recurrent layers: a dict of a 2-layer GRU and a list holding an LSTM
     * cell, with buffers for the GRU's state and for a cache that grows every step. */
    tg_module *parts[2] = {NULL, NULL}, *rnn = NULL, *cell_list = NULL;
    tg_param *hidden = NULL, *cache = NULL;
    if (!st)
        st =
            tg_rnn_new(ctx, "gru", TG_RNN_GRU, 3, 4, &(tg_rnn_options){.num_layers = 2}, &parts[0]);
    if (!st)
        st = tg_rnn_cell_new(ctx, "cell", TG_RNN_LSTM, 4, 4, NULL, &cell_list);
    if (!st) {
        st = tg_module_list_new(ctx, "", 1, &cell_list, &parts[1]);
        cell_list = NULL; /* owned by the list, even on failure */
    }
    if (!st) {
        st = tg_module_dict_new(ctx, "seq", 2, (const char *[]){"enc", "dec"}, parts, &rnn);
        parts[0] = parts[1] = NULL;
    }
    if (!st)
        st = tg_module_add_buffer(rnn, "hidden", TG_F32, 3, (int64_t[]){2, 2, 4}, &hidden);
    if (!st)
        st = tg_module_add_buffer(rnn, "cache", TG_F32, 2, (int64_t[]){0, 4}, &cache);
    if (st)
        snprintf(message, size, "%s", tg_ctx_error(ctx));
    for (int step = 0; step < 2 && !st; step++) {
        tg_tensor x = tg_uniform(tp, TG_F32, 2, (int64_t[]){16, 8}, -1, 1, (uint64_t)step);
        tg_tensor h = tg_add(tg_matmul(x, tg_param_tensor(tp, w)), tg_param_tensor(tp, b));
        tg_tensor loss = tg_mean_all(tg_square(tg_tanh(h)));
        st = tg_backward(loss);
        if (!st) {
            tg_scalar s = tg_s_var(tp, 0.5);
            for (int i = 0; i < 3000; i++) /* enough entries to grow the scalar store */
                s = tg_s_tanh(tg_s_addc(s, 0.001));
            st = tg_s_backward(s, 0);
        }
        if (!st) {
            tg_tensor x = tg_uniform(tp, TG_F32, 2, (int64_t[]){4, 8}, -1, 1, 5);
            tg_tensor y = tg_tensor_from(tp, TG_I64, 1, (int64_t[]){4}, (int64_t[]){0, 1, 2, 1});
            int ready = 0;
            tg_tape_set_grad_ready(tp, step ? count_ready : NULL, &ready);
            st = tg_backward(tg_cross_entropy(tg_forward(net, x), y, TG_REDUCE_MEAN, 0.0));
            if (!st && step && ready != 4)
                st = tg_tape_fail(tp, TG_INVALID, "the hook heard of %d parameters, not 4", ready);
            tg_tape_set_grad_ready(tp, NULL, NULL);
            if (!st)
                st = tg_optim_step(opt, tp);
            tg_tensor tokens, next;
            if (!st)
                st = tg_text_batch(text, tp, step, 8, 64, 3, step, &tokens, &next);
        }
        if (!st) { /* attention (P kept, then row statistics for 100 keys) to second order */
            for (int64_t t = 8; t <= 100 && !st; t += 92) {
                int64_t shape[3] = {2, t, 4};
                tg_tensor qkv[2] = {tg_uniform(tp, TG_F32, 3, shape, -1, 1, 6),
                                    tg_uniform(tp, TG_F32, 3, shape, -1, 1, 7)};
                tg_tensor mask = tg_tril(tg_ones(tp, TG_I64, 2, (int64_t[]){t, t}), 0);
                tg_tensor y = tg_sum_all(
                    tg_scaled_dot_product_attention(qkv[0], qkv[1], qkv[1], mask, true, 0));
                tg_tensor g[2];
                st = tg_grad(1, &y, NULL, 2, qkv, g, TG_CREATE_GRAPH);
                if (!st)
                    st = tg_grad(1, (tg_tensor[]){tg_sum_all(tg_mul(g[0], g[1]))}, NULL, 2, qkv, g,
                                 0);
            }
        }
        if (!st) { /* batch_norm updating running statistics, and its backward */
            tg_tensor x = tg_uniform(tp, TG_F32, 4, (int64_t[]){4, 4, 3, 3}, -1, 1, 6);
            tg_tensor y = tg_batch_norm(tg_requires_grad(x), running_mean, running_var,
                                        tg_param_tensor(tp, b), (tg_tensor){0}, true, 0.1, 1e-5);
            st = tg_backward(tg_sum_all(tg_square(y)));
        }
        if (!st) { /* a chunk of truncated BPTT and a cell step, the state kept in buffers */
            tg_tensor x = tg_uniform(tp, TG_F32, 3, (int64_t[]){5, 2, 3}, -1, 1, 6), out, hn, h, c;
            st = tg_rnn_run(tg_module_find(rnn, "enc"), x, tg_param_tensor(tp, hidden),
                            (tg_tensor){0}, &out, &hn, NULL);
            if (!st)
                st = tg_rnn_cell_step(tg_module_find(rnn, "dec.0"),
                                      tg_reshape(hn, 2, (int64_t[]){4, 4}), (tg_tensor){0},
                                      (tg_tensor){0}, &h, &c);
            if (!st)
                st = tg_buffer_store(hidden, hn);
            tg_tensor grown = tg_concat(2, (tg_tensor[]){tg_param_tensor(tp, cache), h}, 0);
            if (!st)
                st = tg_buffer_store(cache, grown);
            if (!st)
                st = tg_backward(tg_add(tg_sum_all(out), tg_sum_all(tg_mul(h, c))));
        }
        if (!st) { /* a validation split, augmented batches, early stopping */
            float px[4 * 9];
            int64_t labels[4] = {0, 1, 0, 1};
            for (int i = 0; i < 36; i++)
                px[i] = (float)i;
            tg_dataset *all = NULL, *fit = NULL, *held = NULL;
            tg_batches *bt = NULL;
            tg_early_stopping *es = NULL;
            tg_augment_options ao = {.crop_padding = 1, .horizontal_flip = true};
            bool stop;
            tg_tensor bx, by;
            st = tg_dataset_new(ctx, 4, 2, (int64_t[]){3, 3}, px, labels, &all);
            if (!st)
                st = tg_dataset_split(all, 1, 2, &fit, &held);
            if (!st)
                st = tg_batches_new(fit, 2, false, 0, false, &bt);
            if (!st)
                st = tg_batches_set_augment(bt, &ao);
            if (!st && !tg_batches_next(bt, tp, &bx, &by))
                st = tg_tape_status(tp);
            if (!st)
                st = tg_early_stopping_new(ctx, tg_module_param_count(net), tg_module_params(net),
                                           NULL, &es);
            if (!st)
                st = tg_early_stopping_update(es, 1.0, &stop);
            if (!st)
                st = tg_early_stopping_restore(es);
            tg_early_stopping_free(es);
            tg_batches_free(bt);
            tg_dataset_free(all);
            tg_dataset_free(fit);
            tg_dataset_free(held);
            if (st) {
                snprintf(message, size, "%s",
                         tg_tape_status(tp) ? tg_tape_error(tp) : tg_ctx_error(ctx));
                break;
            }
        }
        if (!st) { /* the graph as DOT: its scratch comes through the hook */
            FILE *dot = tmpfile();
            st = dot ? tg_tape_write_dot(tp, dot, NULL) : TG_IO;
            if (dot)
                fclose(dot);
            if (st) {
                snprintf(message, size, "%s", tg_ctx_error(ctx));
                break;
            }
        }
        if (!st) {
            tg_tensor v = tg_uniform(tp, TG_F64, 1, (int64_t[]){2000}, -1, 1, 3), g;
            tg_tensor y = tg_sum_all(tg_exp(tg_mul(v, v)));
            st = tg_grad(1, &y, NULL, 1, &v, &g, TG_CREATE_GRAPH);
        }
        if (!st) { /* higher order: a Hessian of 20 rows (scratch through the hook), scalars */
            tg_tensor v = tg_uniform(tp, TG_F64, 1, (int64_t[]){20}, -1, 1, 4), hess;
            st = tg_hessian(tg_sum_all(tg_pow(v, 3)), v, &hess, 0);
            tg_scalar xs[2] = {tg_s_var(tp, 0.3), tg_s_var(tp, -0.2)};
            tg_scalar s = tg_s_mul(xs[0], xs[1]);
            for (int i = 0; i < 1000 && !st; i++)
                s = tg_s_sin(tg_s_add(s, xs[i % 2]));
            double h[4];
            if (!st)
                st = tg_s_hessian(s, 2, xs, h);
        }
        if (st) {
            snprintf(message, size, "%s", tg_tape_error(tp));
            break;
        }
        tg_tape_reset(tp);
    }
    if (st && !message[0] && ctx)
        snprintf(message, size, "%s", tg_ctx_error(ctx));
    for (int i = 0; i < 3; i++)
        tg_module_free(layers[i]);
    tg_module_free(parts[0]);
    tg_module_free(parts[1]);
    tg_module_free(cell_list);
    tg_module_free(rnn);
    tg_optim_free(opt);
    tg_text_free(text);
    tg_module_free(net);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return st;
}

static void every_allocation_can_fail(void **state)
{
    (void)state;
    long n;
    int nomem = 0;
    for (n = 0;; n++) {
        counting c = {0, n, 0, 0, 0};
        char message[512] = "";
        tg_status st = scenario(&c, message, sizeof message);
        if (c.live != 0 || c.bytes != 0)
            fail_msg("failing request %ld: %ld blocks (%zu bytes) leaked", n, c.live, c.bytes);
        if (c.failures == 0) { /* the scenario finished without reaching request n */
            assert_status(st, TG_OK);
            break;
        }
        if (st != TG_NOMEM)
            fail_msg("failing request %ld gave %s (%s), expected TG_NOMEM", n, tg_status_name(st),
                     message);
        if (strcmp(message, "tg_ctx_new failed") && !strstr(message, "memory"))
            fail_msg("failing request %ld: message \"%s\" does not mention memory", n, message);
        nomem++;
    }
    printf("scenario needs %ld allocations; each failure reported cleanly\n", n);
    assert_true(nomem > 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_allocation_can_fail),
    };
    return cmocka_run_group_tests_name("oom", tests, NULL, NULL);
}
