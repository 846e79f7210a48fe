/* test_reference.c — composite graphs against PyTorch: values and gradients in f64 agree with
 * tests/reference/reference.txt (written by tests/reference/generate.py, format described
 * there) to 1e-10 relative. Each test builds the same graph as generate.py from the file's
 * inputs; no PyTorch is needed at test time. */
#include "common.h"
#include "reference.h"

#define REF_PATH TG_SOURCE_DIR "/tests/reference/reference.txt"
#define REL_TOL 1e-10

static int load_refs(void **state)
{
    (void)state;
    return ref_load(REF_PATH, "tests/reference/generate.py");
}

/* A reference input as an f64 leaf on tp. */
static tg_tensor input(tg_tape *tp, const char *graph, const char *name)
{
    const ref_tensor *r = ref(graph, name);
    return tg_tensor_from(tp, TG_F64, r->ndim, r->shape, r->v);
}

/* A reference input as an f64 parameter (the test's context owns it). */
static tg_param *param(tg_ctx *ctx, const char *graph, const char *name)
{
    const ref_tensor *r = ref(graph, name);
    tg_param *p = NULL;
    assert_status(tg_param_new(ctx, name, TG_F64, r->ndim, r->shape, &p), TG_OK);
    assert_status(tg_param_set(p, r->v), TG_OK);
    return p;
}

/* Worst relative error over the graph's tensors so far. */
static double worst;

/* Compares `n` values with shape (ndim, shape) against the reference tensor. The error of an
 * element is |got - want| / |want|, or |got| where want is exactly 0 (softmax underflow). Fails
 * naming the worst element if it exceeds REL_TOL, or on any NaN or shape difference. */
static void compare(const char *graph, const char *name, int ndim, const int64_t *shape,
                    const double *got)
{
    const ref_tensor *r = ref(graph, name);
    if (ndim != r->ndim)
        fail_msg("%s.%s: %d dims, expected %d", graph, name, ndim, r->ndim);
    for (int d = 0; d < ndim; d++)
        if (shape[d] != r->shape[d])
            fail_msg("%s.%s: dim %d is %lld, expected %lld", graph, name, d, (long long)shape[d],
                     (long long)r->shape[d]);
    double err = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < r->numel; i++) {
        double want = r->v[i], e = fabs(got[i] - want) / (want != 0 ? fabs(want) : 1.0);
        if (!(e <= err)) {
            err = e;
            at = i;
            if (isnan(e))
                break;
        }
    }
    if (!(err <= REL_TOL))
        fail_msg("%s.%s: element %lld is %.17g, PyTorch gives %.17g (relative error %.3g)", graph,
                 name, (long long)at, got[at], r->v[at], err);
    if (err > worst)
        worst = err;
}

static void check_tensor(const char *graph, const char *name, tg_tensor t)
{
    if (!tg_ok(t))
        fail_msg("%s.%s: invalid tensor: %s", graph, name, tg_tape_error(tg_tensor_tape(t)));
    int64_t n = tg_numel(t);
    double *buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
    assert_non_null(buf);
    assert_status(tg_read(t, TG_F64, buf, n), TG_OK);
    compare(graph, name, tg_ndim(t), tg_shape(t), buf);
    free(buf);
}

static void check_param_grad(const char *graph, const char *name, tg_param *p)
{
    compare(graph, name, tg_param_ndim(p), tg_param_shape(p), tg_param_grad(p));
}

static void report(const char *graph)
{
    print_message("%s: worst relative error %.3g\n", graph, worst);
}

/* (a) MLP 4-8-3 with tanh; cross-entropy from logits as mean(-log_softmax[i, label_i]). */
static void test_mlp(void **state)
{
    fixture *f = *state;
    tg_tape *tp = f->tp;
    worst = 0;
    tg_param *w1 = param(f->ctx, "mlp", "w1"), *b1 = param(f->ctx, "mlp", "b1");
    tg_param *w2 = param(f->ctx, "mlp", "w2"), *b2 = param(f->ctx, "mlp", "b2");
    tg_tensor x = input(tp, "mlp", "x");
    const ref_tensor *lr = ref("mlp", "labels");
    int64_t labels[16];
    assert_true(lr->numel <= 16);
    for (int64_t i = 0; i < lr->numel; i++)
        labels[i] = (int64_t)lr->v[i];
    tg_tensor lab = tg_tensor_from(tp, TG_I64, 2, (int64_t[]){lr->numel, 1}, labels);

    tg_tensor h = tg_tanh(tg_add(tg_matmul(x, tg_param_tensor(tp, w1)), tg_param_tensor(tp, b1)));
    tg_tensor logits = tg_add(tg_matmul(h, tg_param_tensor(tp, w2)), tg_param_tensor(tp, b2));
    tg_tensor picked = tg_gather(tg_log_softmax(logits, 1), 1, lab);
    tg_tensor loss = tg_neg(tg_mean_all(picked));
    assert_tape_ok(tp);
    check_tensor("mlp", "logits", logits);
    check_tensor("mlp", "loss", loss);

    /* The input's gradient functionally (keeping the graph), then the parameters' through
     * tg_backward. */
    tg_tensor gx;
    assert_status(tg_grad(1, &loss, NULL, 1, &x, &gx, TG_RETAIN_GRAPH), TG_OK);
    check_tensor("mlp", "grad_x", gx);
    assert_status(tg_backward(loss), TG_OK);
    check_param_grad("mlp", "grad_w1", w1);
    check_param_grad("mlp", "grad_b1", b1);
    check_param_grad("mlp", "grad_w2", w2);
    check_param_grad("mlp", "grad_b2", b2);
    report("mlp");
}

/* (b) One tensor used by several branches. */
static void test_fanout(void **state)
{
    fixture *f = *state;
    worst = 0;
    tg_tensor x = input(f->tp, "fanout", "x");
    tg_tensor xx = tg_mul(x, x);
    tg_tensor y = tg_sum_all(
        tg_add(tg_add(xx, tg_mul(tg_exp(x), tg_sin(x))), tg_div(x, tg_add_scalar(xx, 1.0))));
    assert_tape_ok(f->tp);
    check_tensor("fanout", "loss", y);
    tg_tensor gx;
    assert_status(tg_grad(1, &y, NULL, 1, &x, &gx, 0), TG_OK);
    check_tensor("fanout", "grad_x", gx);
    report("fanout");
}

/* (c) Diamonds: a = tanh(x); b = sigmoid(a); c = a * b; d = c + a; loss = sum(d * d). */
static void test_diamond(void **state)
{
    fixture *f = *state;
    worst = 0;
    tg_tensor x = input(f->tp, "diamond", "x");
    tg_tensor a = tg_tanh(x);
    tg_tensor b = tg_sigmoid(a);
    tg_tensor c = tg_mul(a, b);
    tg_tensor d = tg_add(c, a);
    tg_tensor loss = tg_sum_all(tg_mul(d, d));
    assert_tape_ok(f->tp);
    check_tensor("diamond", "loss", loss);
    tg_tensor gx;
    assert_status(tg_grad(1, &loss, NULL, 1, &x, &gx, 0), TG_OK);
    check_tensor("diamond", "grad_x", gx);
    report("diamond");
}

/* (d) 200 steps of y = tanh(0.9 y + 0.1), then a sum. */
static void test_chain(void **state)
{
    fixture *f = *state;
    worst = 0;
    tg_tensor x = input(f->tp, "chain", "x");
    tg_tensor y = x;
    for (int i = 0; i < 200; i++)
        y = tg_tanh(tg_add_scalar(tg_mul_scalar(y, 0.9), 0.1));
    tg_tensor loss = tg_sum_all(y);
    assert_tape_ok(f->tp);
    check_tensor("chain", "y", y);
    check_tensor("chain", "loss", loss);
    tg_tensor gx;
    assert_status(tg_grad(1, &loss, NULL, 1, &x, &gx, 0), TG_OK);
    check_tensor("chain", "grad_x", gx);
    report("chain");
}

/* (e) Batched matmul with broadcast batch dims, logsumexp/softmax/max reductions; and
 * softmax/log_softmax/logsumexp of rows of magnitude 1e4 (finite values and gradients). */
static void test_batched(void **state)
{
    fixture *f = *state;
    tg_tape *tp = f->tp;
    worst = 0;
    tg_tensor a = input(tp, "batched", "a"), b = input(tp, "batched", "b");
    tg_tensor r = input(tp, "batched", "r");
    tg_tensor c = tg_matmul(a, b);
    tg_tensor lse = tg_logsumexp(c, -1, false);
    tg_tensor sm = tg_softmax(c, 1);
    tg_tensor mx = tg_max(c, 1, (int[]){2}, false);
    tg_tensor lse0 = tg_logsumexp(c, 0, true);
    tg_tensor loss = tg_add(tg_add(tg_sum_all(tg_mul(lse, lse)), tg_sum_all(tg_mul(sm, r))),
                            tg_add(tg_sum_all(mx), tg_sum_all(tg_mul(lse0, r))));

    tg_tensor z = input(tp, "batched", "z"), rz = input(tp, "batched", "rz");
    tg_tensor zs = tg_softmax(z, 1);
    tg_tensor zl = tg_log_softmax(z, 1);
    tg_tensor zt = tg_log_softmax(z, 0);
    tg_tensor ze = tg_logsumexp(z, 1, false);
    tg_tensor loss_big =
        tg_add(tg_add(tg_sum_all(tg_mul(zs, rz)), tg_sum_all(tg_mul(zl, rz))),
               tg_add(tg_sum_all(tg_mul(zt, tg_transpose(rz, 0, 1))), tg_sum_all(ze)));
    assert_tape_ok(tp);
    check_tensor("batched", "lse", lse);
    check_tensor("batched", "softmax", sm);
    check_tensor("batched", "max", mx);
    check_tensor("batched", "lse0", lse0);
    check_tensor("batched", "loss", loss);
    check_tensor("batched", "z_softmax", zs);
    check_tensor("batched", "z_log_softmax", zl);
    check_tensor("batched", "z_log_softmax0", zt);
    check_tensor("batched", "z_logsumexp", ze);
    check_tensor("batched", "loss_big", loss_big);

    /* Both losses at once (their inputs are disjoint), as PyTorch's (loss + loss_big).backward. */
    tg_tensor outs[2] = {loss, loss_big}, ins[3] = {a, b, z}, grads[3];
    assert_status(tg_grad(2, outs, NULL, 3, ins, grads, 0), TG_OK);
    check_tensor("batched", "grad_a", grads[0]);
    check_tensor("batched", "grad_b", grads[1]);
    check_tensor("batched", "grad_z", grads[2]);
    report("batched");
}

/* (f) Broadcasting: bias over a batch, a per-row scale, masks, clamp, gelu, softplus,
 * leaky_relu, and sums back to the operands' shapes. */
static void test_broadcast(void **state)
{
    fixture *f = *state;
    tg_tape *tp = f->tp;
    worst = 0;
    tg_tensor x = input(tp, "broadcast", "x"), b = input(tp, "broadcast", "b");
    tg_tensor c = input(tp, "broadcast", "c");
    tg_tensor h = tg_add(x, b);
    tg_tensor u = tg_mul(h, c);
    tg_tensor m = tg_where(tg_gt(u, tg_constant(tp, TG_F64, 0.0)), u, tg_mul_scalar(h, 0.3));
    tg_tensor v1 = tg_clamp(u, -0.5, 0.8);
    tg_tensor v2 = tg_gelu(h);
    tg_tensor v3 = tg_softplus(u);
    tg_tensor v4 = tg_leaky_relu(tg_add_scalar(h, -0.2), 0.05);
    tg_tensor r =
        tg_sum_to(tg_add(tg_add(tg_mul(m, v1), tg_mul(v2, v3)), v4), 2, (int64_t[]){1, 4});
    tg_tensor r2 = tg_sum_to(tg_mul(v2, b), 2, (int64_t[]){5, 1});
    tg_tensor loss = tg_add(tg_sum_all(tg_mul(r, r)), tg_sum_all(tg_mul(r2, c)));
    assert_tape_ok(tp);
    check_tensor("broadcast", "r", r);
    check_tensor("broadcast", "r2", r2);
    check_tensor("broadcast", "loss", loss);
    tg_tensor ins[3] = {x, b, c}, grads[3];
    assert_status(tg_grad(1, &loss, NULL, 3, ins, grads, 0), TG_OK);
    check_tensor("broadcast", "grad_x", grads[0]);
    check_tensor("broadcast", "grad_b", grads[1]);
    check_tensor("broadcast", "grad_c", grads[2]);
    report("broadcast");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(test_mlp),   FIXTURE_TEST(test_fanout),  FIXTURE_TEST(test_diamond),
        FIXTURE_TEST(test_chain), FIXTURE_TEST(test_batched), FIXTURE_TEST(test_broadcast),
    };
    return cmocka_run_group_tests(tests, load_refs, ref_free);
}
