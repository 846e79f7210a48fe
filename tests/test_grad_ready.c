/* test_grad_ready.c — the gradient-ready hook (tg_tape_set_grad_ready): one call per parameter,
 * as soon as its gradient is final and before the earlier nodes' rules run, with the gradient
 * backward would add; a taken gradient is not added; a failed backward changes no gradient. */
#include "common.h"

enum { MAX_CALLS = 16 };

/* What a hook saw: the parameters in call order, each gradient's first values, and the probe
 * count at the time of the call. */
typedef struct record {
    int calls;
    tg_param *params[MAX_CALLS];
    double first[MAX_CALLS][8];
    int probes_at[MAX_CALLS];
    const int *probes;   /* the probe op's counter */
    tg_param *take;      /* the hook takes this parameter's gradient */
    tg_tape *reset_tape; /* the hook (wrongly) resets this tape */
} record;

static bool recording_hook(void *user, tg_param *p, const void *grad)
{
    record *r = user;
    if (r->calls < MAX_CALLS) {
        r->params[r->calls] = p;
        for (int64_t i = 0; i < tg_param_numel(p) && i < 8; i++)
            r->first[r->calls][i] =
                tg_param_dtype(p) == TG_F64 ? ((const double *)grad)[i] : ((const float *)grad)[i];
        r->probes_at[r->calls] = r->probes ? *r->probes : -1;
    }
    r->calls++;
    if (r->reset_tape)
        tg_tape_reset(r->reset_tape);
    return p == r->take;
}

/* probe: the identity, whose backward counts its runs (through a pointer in its attributes). */
static tg_status probe_check(tg_check *c)
{
    *c->out = *c->in[0];
    c->alias = 0;
    return TG_OK;
}
static void probe_backward(const tg_backward_io *io)
{
    int *count = *(int *const *)io->attr;
    (*count)++;
    io->grad_inputs[0] = io->grad_output;
}
static const tg_op_def probe_def = {.name = "probe",
                                    .ninputs = 1,
                                    .attr_size = sizeof(int *),
                                    .check = probe_check,
                                    .backward = probe_backward};

/* An op without a backward rule: a gradient through it fails. */
static tg_status opaque_check(tg_check *c)
{
    *c->out = *c->in[0];
    c->alias = 0;
    return TG_OK;
}
static const tg_op_def opaque_def = {.name = "opaque", .ninputs = 1, .check = opaque_check};

/* Two layers, w1 b1 then w2 b2, f64: loss = sum(tanh(mid(tanh(x w1 + b1)) w2 + b2)), where mid
 * is the probe (or the opaque op) when given. */
typedef struct net {
    tg_param *w1, *b1, *w2, *b2;
} net;

static void net_new(tg_ctx *ctx, net *n)
{
    assert_status(tg_param_new(ctx, "w1", TG_F64, 2, (int64_t[]){3, 4}, &n->w1), TG_OK);
    assert_status(tg_param_new(ctx, "b1", TG_F64, 1, (int64_t[]){4}, &n->b1), TG_OK);
    assert_status(tg_param_new(ctx, "w2", TG_F64, 2, (int64_t[]){4, 2}, &n->w2), TG_OK);
    assert_status(tg_param_new(ctx, "b2", TG_F64, 1, (int64_t[]){2}, &n->b2), TG_OK);
    tg_param_uniform(n->w1, -1, 1, 1);
    tg_param_uniform(n->b1, -1, 1, 2);
    tg_param_uniform(n->w2, -1, 1, 3);
    tg_param_uniform(n->b2, -1, 1, 4);
}

static tg_tensor net_loss(tg_tape *tp, const net *n, const tg_op *mid, int *probes)
{
    /* One statement per node, so that the nodes' order (the sweep's) is the one written. */
    tg_tensor x = tg_uniform(tp, TG_F64, 2, (int64_t[]){5, 3}, -1, 1, 9);
    tg_tensor w1 = tg_param_tensor(tp, n->w1), b1 = tg_param_tensor(tp, n->b1);
    tg_tensor h = tg_tanh(tg_add(tg_matmul(x, w1), b1));
    if (mid)
        h = tg_op_apply(mid, 1, &h, &probes);
    tg_tensor w2 = tg_param_tensor(tp, n->w2), b2 = tg_param_tensor(tp, n->b2);
    return tg_sum_all(tg_tanh(tg_add(tg_matmul(h, w2), b2)));
}

static void copy_grads(const net *n, double *out[4])
{
    tg_param *ps[4] = {n->w1, n->b1, n->w2, n->b2};
    for (int i = 0; i < 4; i++)
        memcpy(out[i], tg_param_grad(ps[i]), (size_t)tg_param_numel(ps[i]) * sizeof(double));
}

static void hook_hears_each_parameter_once_before_earlier_rules(void **state)
{
    fixture *f = *state;
    net n;
    net_new(f->ctx, &n);
    const tg_op *probe;
    assert_status(tg_op_register(f->ctx, &probe_def, &probe), TG_OK);
    int probes = 0;
    record r = {.probes = &probes};
    assert_status(tg_tape_set_grad_ready(f->tp, recording_hook, &r), TG_OK);
    assert_status(tg_backward(net_loss(f->tp, &n, probe, &probes)), TG_OK);
    assert_int_equal(probes, 1);
    /* Last used, first final: b2 and w2 before the probe's rule ran, b1 and w1 after it. */
    assert_int_equal(r.calls, 4);
    tg_param *order[4] = {n.b2, n.w2, n.b1, n.w1};
    int probes_then[4] = {0, 0, 1, 1};
    for (int i = 0; i < 4; i++) {
        assert_ptr_equal(r.params[i], order[i]);
        assert_int_equal(r.probes_at[i], probes_then[i]);
    }
    /* The gradients the hook saw are the ones backward added (into zeros: bit for bit). */
    for (int i = 0; i < 4; i++) {
        const double *g = tg_param_grad(r.params[i]);
        for (int64_t k = 0; k < tg_param_numel(r.params[i]) && k < 8; k++)
            assert_memory_equal(&g[k], &r.first[i][k], sizeof g[k]);
        assert_true(g[0] != 0);
    }
}

/* A parameter used three times gets one call, with the sum of the three gradients. */
static void shared_parameter_gets_one_call_with_the_sum(void **state)
{
    fixture *f = *state;
    tg_param *w;
    assert_status(tg_param_new(f->ctx, "w", TG_F64, 1, (int64_t[]){3}, &w), TG_OK);
    const double wv[3] = {0.5, -1.25, 2}, xv[3] = {3, -1, 0.25};
    tg_param_set(w, wv);
    record r = {0};
    tg_tape_set_grad_ready(f->tp, recording_hook, &r);
    tg_tensor x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){3}, xv);
    tg_tensor a = tg_sum_all(tg_mul(tg_param_tensor(f->tp, w), x));
    tg_tensor b = tg_sum_all(tg_tanh(tg_param_tensor(f->tp, w)));
    tg_tensor w3 = tg_param_tensor(f->tp, w);
    assert_status(tg_backward(tg_add(tg_add(a, b), tg_sum_all(tg_mul(w3, w3)))), TG_OK);
    assert_int_equal(r.calls, 1);
    assert_ptr_equal(r.params[0], w);
    const double *g = tg_param_grad(w);
    for (int i = 0; i < 3; i++) {
        double t = tanh(wv[i]), expected = xv[i] + (1 - t * t) + 2 * wv[i];
        assert_close(r.first[0][i], expected, 1e-15);
        assert_memory_equal(&g[i], &r.first[0][i], sizeof g[i]);
    }
}

/* A taken gradient stays out of the parameter; the others are added as usual. */
static void taken_gradient_is_not_added(void **state)
{
    fixture *f = *state;
    net n;
    net_new(f->ctx, &n);
    tg_param_zero_grad(n.w2);
    ((double *)tg_param_grad(n.w2))[0] = 7; /* what was there before this backward */
    record r = {.take = n.w2};
    tg_tape_set_grad_ready(f->tp, recording_hook, &r);
    assert_status(tg_backward(net_loss(f->tp, &n, NULL, NULL)), TG_OK);
    assert_int_equal(r.calls, 4);
    const double *g2 = tg_param_grad(n.w2);
    assert_true(g2[0] == 7);
    for (int64_t k = 1; k < tg_param_numel(n.w2); k++)
        assert_true(g2[k] == 0);
    /* The same backward without the hook: w1's gradient is what the hooked one added. */
    double w1_hooked[12];
    memcpy(w1_hooked, tg_param_grad(n.w1), sizeof w1_hooked);
    tg_zero_grad(f->ctx);
    tg_tape_reset(f->tp);
    assert_status(tg_tape_set_grad_ready(f->tp, NULL, NULL), TG_OK);
    r.calls = 0;
    assert_status(tg_backward(net_loss(f->tp, &n, NULL, NULL)), TG_OK);
    assert_int_equal(r.calls, 0);
    assert_memory_equal(tg_param_grad(n.w1), w1_hooked, sizeof w1_hooked);
    assert_true(((const double *)tg_param_grad(n.w2))[0] != 0);
}

/* The sweep fails after the hook heard of w2 and b2: no gradient changes, taken or not. */
static void failed_backward_changes_no_gradient(void **state)
{
    fixture *f = *state;
    net n;
    net_new(f->ctx, &n);
    const tg_op *opaque;
    assert_status(tg_op_register(f->ctx, &opaque_def, &opaque), TG_OK);
    tg_param *ps[4] = {n.w1, n.b1, n.w2, n.b2};
    for (int i = 0; i < 4; i++) {
        tg_param_fill(ps[i], 0.25 * (i + 1));
        ((double *)tg_param_grad(ps[i]))[0] = i + 1;
    }
    double before[4][12] = {{0}}, after[4][12] = {{0}};
    double *b[4] = {before[0], before[1], before[2], before[3]};
    double *a[4] = {after[0], after[1], after[2], after[3]};
    copy_grads(&n, b);
    record r = {.take = n.b2};
    tg_tape_set_grad_ready(f->tp, recording_hook, &r);
    assert_status(tg_backward(net_loss(f->tp, &n, opaque, NULL)), TG_NO_BACKWARD);
    assert_int_equal(r.calls, 2); /* b2 and w2, then the opaque op stopped the sweep */
    copy_grads(&n, a);
    assert_memory_equal(before, after, sizeof before);
}

/* A hook that resets the tape fails the backward (nothing is reset, nothing added). */
static void hook_misusing_the_tape_fails_the_backward(void **state)
{
    fixture *f = *state;
    net n;
    net_new(f->ctx, &n);
    record r = {.reset_tape = f->tp};
    tg_tape_set_grad_ready(f->tp, recording_hook, &r);
    tg_tensor loss = net_loss(f->tp, &n, NULL, NULL);
    assert_status(tg_backward(loss), TG_INVALID);
    assert_contains(tg_tape_error(f->tp), "tg_tape_reset: called during a backward");
    assert_int_equal(r.calls, 1);
    assert_true(tg_ok(loss)); /* not reset */
    const double *g = tg_param_grad(n.b2);
    assert_true(g[0] == 0 && g[1] == 0);
}

/* tg_grad never calls the hook; tg_s_backward and TG_CREATE_GRAPH backwards do; a parameter no
 * gradient reaches gets no call; the hook survives a reset; a NULL tape is refused. */
static void which_backwards_call_it(void **state)
{
    fixture *f = *state;
    net n;
    net_new(f->ctx, &n);
    record r = {0};
    assert_status(tg_tape_set_grad_ready(NULL, recording_hook, &r), TG_INVALID);
    tg_tape_set_grad_ready(f->tp, recording_hook, &r);
    tg_tensor w1 = tg_param_tensor(f->tp, n.w1), g;
    assert_status(tg_grad(1, (tg_tensor[]){tg_sum_all(w1)}, NULL, 1, &w1, &g, 0), TG_OK);
    assert_int_equal(r.calls, 0);

    tg_tape_reset(f->tp);
    tg_tensor unused = tg_param_tensor(f->tp, n.b1);
    (void)unused;
    tg_scalar s = tg_s_mulc(tg_s_from(tg_sum_all(tg_param_tensor(f->tp, n.b2))), 3);
    assert_status(tg_s_backward(s, 0), TG_OK);
    assert_int_equal(r.calls, 1);
    assert_ptr_equal(r.params[0], n.b2);
    assert_close(r.first[0][0], 3, 0);

    tg_tape_reset(f->tp);
    r.calls = 0;
    tg_zero_grad(f->ctx);
    tg_tensor loss = net_loss(f->tp, &n, NULL, NULL);
    assert_status(tg_backward_ex(loss, (tg_tensor){0}, TG_CREATE_GRAPH), TG_OK);
    assert_int_equal(r.calls, 4);
    double created[4][12] = {{0}}, plain[4][12] = {{0}};
    double *c[4] = {created[0], created[1], created[2], created[3]};
    double *p[4] = {plain[0], plain[1], plain[2], plain[3]};
    copy_grads(&n, c);
    tg_zero_grad(f->ctx);
    tg_tape_reset(f->tp);
    assert_status(tg_backward(net_loss(f->tp, &n, NULL, NULL)), TG_OK);
    copy_grads(&n, p);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 12; k++)
            assert_close(created[i][k], plain[i][k], 1e-15);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(hook_hears_each_parameter_once_before_earlier_rules),
        FIXTURE_TEST(shared_parameter_gets_one_call_with_the_sum),
        FIXTURE_TEST(taken_gradient_is_not_added),
        FIXTURE_TEST(failed_backward_changes_no_gradient),
        FIXTURE_TEST(hook_misusing_the_tape_fails_the_backward),
        FIXTURE_TEST(which_backwards_call_it),
    };
    return cmocka_run_group_tests_name("grad_ready", tests, NULL, NULL);
}
