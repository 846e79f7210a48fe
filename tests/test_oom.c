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

/* What a small program does: context, parameters, two training steps (the second with a
 * gradient-ready hook), scalars, a functional gradient, Hessians. Returns the first non-OK
 * status seen (or TG_OK); must never crash. */
static tg_status scenario(counting *c, char *message, size_t size)
{
    tg_ctx *ctx = NULL;
    tg_tape *tp = NULL;
    tg_param *w = NULL, *b = NULL;
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
    tg_optim_free(opt);
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
