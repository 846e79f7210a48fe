/* test_conv.c — conv2d and max_pool2d against PyTorch, through every kernel ops/conv.c and
 * ops/pool.c choose between: values and gradients (through the ops' backward rules, so
 * conv2d_backward_input, conv2d_backward_weight and max_pool2d_backward too) agree with
 * tests/reference/conv_reference.txt (written by tests/reference/generate_conv.py) to 1e-12
 * relative in f64 and 5e-6 in f32, on one thread and on three (the weight gradient then sums
 * partial sums of its own per thread). The pooling cases hold ties, NaN and infinities, where
 * the window's argmax shows.
 *
 * The kernels are compiled per instruction set; this program runs the best one this CPU has,
 * and tests/meson.build builds it again as test_conv_avx2 and test_conv_base with the ops'
 * sources and TG__ISA_FORCE, so each set's kernels meet the same references. */
#include "common.h"
#include "reference.h"

#define REF_PATH TG_SOURCE_DIR "/tests/reference/conv_reference.txt"
#define TOL64 1e-12
#define TOL32 5e-6

#ifdef TG__ISA_FORCE
#define ISA_NOTE "the ops' kernels of instruction set level " TG__ISA_STRING(TG__ISA_FORCE)
#define TG__ISA_STRING(x) TG__ISA_STRING2(x)
#define TG__ISA_STRING2(x) #x
#else
#define ISA_NOTE "the ops' kernels of this CPU's best instruction set"
#endif

static int load_refs(void **state)
{
    (void)state;
    return ref_load(REF_PATH, "tests/reference/generate_conv.py");
}

/* The cases of generate_conv.py, with their parameters. Which kernels each runs (on a CPU with
 * AVX-512 or AVX2; ops/conv.c chooses): direct: the direct forward and weight gradient, the input
 * gradient by the GEMM and col2im; expand: columns copied from padded planes; flip: the input
 * gradient as a convolution by the flipped weight; im2col: columns gathered element by element
 * (column stride 2); plain: a 1x1 kernel (the image is its own columns); the _threads cases have
 * enough work (2 n o cg kh kw oh ow >= 100000, TG__PARALLEL_MIN) to be shared among threads. */
static const struct conv_case {
    const char *name;
    tg_conv2d_params p;
    bool bias;
} conv_cases[] = {
    {"direct", {{1, 1}, {1, 1}, {1, 1}, 1}, true},
    {"direct_small", {{1, 1}, {0, 0}, {1, 1}, 1}, true},
    {"direct_strided", {{2, 1}, {1, 2}, {1, 2}, 1}, false},
    {"direct_threads", {{1, 1}, {1, 1}, {1, 1}, 1}, true},
    {"expand", {{1, 1}, {1, 1}, {1, 1}, 1}, true},
    {"expand_threads", {{1, 1}, {0, 1}, {1, 1}, 1}, false},
    {"flip", {{1, 1}, {1, 0}, {1, 1}, 1}, true},
    {"flip_threads", {{1, 1}, {1, 1}, {1, 1}, 1}, false},
    {"im2col", {{2, 2}, {1, 1}, {1, 1}, 2}, true},
    {"plain", {{1, 1}, {0, 0}, {1, 1}, 1}, true},
    {"depthwise_dilated", {{1, 1}, {2, 2}, {2, 2}, 4}, false},
    {"wide_rows", {{1, 1}, {0, 2}, {1, 1}, 1}, true},
};

static const struct pool_case {
    const char *name;
    tg_pool2d_params p;
} pool_cases[] = {
    {"pool_2x2", {{2, 2}, {2, 2}, {0, 0}}},
    {"pool_2x2_wide", {{2, 2}, {2, 2}, {0, 0}}},
    {"pool_2x2_narrow", {{2, 2}, {2, 2}, {0, 0}}},
    {"pool_3x3", {{3, 3}, {2, 2}, {1, 1}}},
};

/* A reference tensor on tp as dtype dt (the inputs are exact in f32). */
static tg_tensor input(tg_tape *tp, const char *graph, const char *name, tg_dtype dt)
{
    const ref_tensor *r = ref(graph, name);
    tg_tensor t64 = tg_tensor_from(tp, TG_F64, r->ndim, r->shape, r->v);
    if (dt == TG_F64)
        return t64;
    void *buf = malloc((size_t)(r->numel ? r->numel : 1) * tg_dtype_size(dt));
    assert_non_null(buf);
    assert_status(tg_read(t64, dt, buf, r->numel), TG_OK);
    tg_tensor t = tg_tensor_from(tp, dt, r->ndim, r->shape, buf);
    free(buf);
    return t;
}

/* The worst |a - b| / (1 + |b|) against the reference, per dtype, over the whole program. */
static double worst[2];

/* t agrees with reference graph.name in shape and in every value to tol (relative to 1 + |b|;
 * NaN where the reference has NaN, an equal infinity where it has one). */
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
    double *w = &worst[tg_tensor_dtype(t) == TG_F32];
    for (int64_t i = 0; i < r->numel; i++) {
        double want = r->v[i], g = got[i];
        bool same = isnan(want) ? isnan(g) : isinf(want) ? g == want : true;
        double err = isnan(want) || isinf(want) ? 0 : fabs(g - want) / (1 + fabs(want));
        if (!same || !(err <= tol)) {
            free(got);
            fail_msg("%s.%s[%lld] = %.17g, PyTorch %.17g (relative error %.3g > %g)", graph, name,
                     (long long)i, g, want, err, tol);
        }
        *w = err > *w ? err : *w;
    }
    free(got);
}

/* A context of `threads` threads and a tape on it. */
static void open_tape(int threads, tg_ctx **ctx, tg_tape **tp)
{
    tg_ctx_options o = {.threads = threads};
    assert_status(tg_ctx_new(ctx, &o), TG_OK);
    assert_status(tg_tape_new(*ctx, tp), TG_OK);
}

static void conv_case(const struct conv_case *cs, tg_dtype dt, int threads)
{
    tg_ctx *ctx;
    tg_tape *tp;
    open_tape(threads, &ctx, &tp);
    double tol = dt == TG_F64 ? TOL64 : TOL32;
    tg_tensor in[3] = {input(tp, cs->name, "x", dt), input(tp, cs->name, "weight", dt), {0}};
    if (cs->bias)
        in[2] = input(tp, cs->name, "bias", dt);
    int n = cs->bias ? 3 : 2;
    for (int i = 0; i < n; i++)
        in[i] = tg_requires_grad(in[i]);
    tg_tensor y = tg_conv2d(in[0], in[1], in[2], &cs->p);
    tg_tensor loss = tg_sum_all(tg_mul(y, input(tp, cs->name, "r", dt)));
    tg_tensor grads[3];
    assert_status(tg_grad(1, &loss, NULL, n, in, grads, 0), TG_OK);
    expect(y, cs->name, "y", tol);
    static const char *const names[] = {"grad_x", "grad_weight", "grad_bias"};
    for (int i = 0; i < n; i++)
        expect(grads[i], cs->name, names[i], tol);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
}

static void conv_against_pytorch(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof conv_cases / sizeof conv_cases[0]; c++)
        for (int threads = 1; threads <= 3; threads += 2) {
            conv_case(&conv_cases[c], TG_F64, threads);
            conv_case(&conv_cases[c], TG_F32, threads);
        }
}

static void pool_case(const struct pool_case *pc, tg_dtype dt)
{
    tg_ctx *ctx;
    tg_tape *tp;
    open_tape(1, &ctx, &tp);
    double tol = dt == TG_F64 ? TOL64 : TOL32;
    tg_tensor x = tg_requires_grad(input(tp, pc->name, "x", dt));
    tg_tensor y = tg_max_pool2d(x, &pc->p);
    tg_tensor loss = tg_sum_all(tg_mul(y, input(tp, pc->name, "r", dt))), dx;
    assert_status(tg_grad(1, &loss, NULL, 1, &x, &dx, 0), TG_OK);
    expect(y, pc->name, "y", tol);
    expect(dx, pc->name, "grad_x", tol);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
}

static void pool_against_pytorch(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof pool_cases / sizeof pool_cases[0]; c++) {
        pool_case(&pool_cases[c], TG_F64);
        pool_case(&pool_cases[c], TG_F32);
    }
}

/* The same convolution on one and on three threads: the forward and the input gradient split
 * images (each written by one thread), so they agree bit for bit; the weight gradient sums
 * per-thread parts, so only to rounding. */
static void threads_agree(void **state)
{
    (void)state;
    const struct conv_case *cs = &conv_cases[5]; /* expand_threads */
    float *vals[2][3];
    int64_t count[3] = {0};
    for (int run = 0; run < 2; run++) {
        tg_ctx *ctx;
        tg_tape *tp;
        open_tape(run ? 3 : 1, &ctx, &tp);
        tg_tensor in[2] = {tg_requires_grad(input(tp, cs->name, "x", TG_F32)),
                           tg_requires_grad(input(tp, cs->name, "weight", TG_F32))};
        tg_tensor y = tg_conv2d(in[0], in[1], (tg_tensor){0}, &cs->p), g[2];
        tg_tensor loss = tg_sum_all(tg_mul(y, input(tp, cs->name, "r", TG_F32)));
        assert_status(tg_grad(1, &loss, NULL, 2, in, g, 0), TG_OK);
        tg_tensor out[3] = {y, g[0], g[1]};
        for (int i = 0; i < 3; i++) {
            count[i] = tg_numel(out[i]);
            vals[run][i] = malloc((size_t)count[i] * sizeof(float));
            assert_non_null(vals[run][i]);
            assert_status(tg_read(out[i], TG_F32, vals[run][i], count[i]), TG_OK);
        }
        tg_tape_free(tp);
        tg_ctx_free(ctx);
    }
    for (int i = 0; i < 2; i++)
        assert_memory_equal(vals[0][i], vals[1][i], (size_t)count[i] * sizeof(float));
    for (int64_t k = 0; k < count[2]; k++)
        assert_close(vals[1][2][k], vals[0][2][k], 1e-6);
    for (int run = 0; run < 2; run++)
        for (int i = 0; i < 3; i++)
            free(vals[run][i]);
}

/* 2x2 max pooling shares planes among threads (above TG__PARALLEL_MIN elements): the same
 * values and gradient on one and on three threads, bit for bit (each element written by one). */
static void pool_threads_agree(void **state)
{
    (void)state;
    const int64_t shape[4] = {4, 8, 56, 58}, n = 4 * 8 * 56 * 58; /* 103,936 elements */
    float *x0 = malloc((size_t)n * sizeof(float)), *out[2][2];
    assert_non_null(x0);
    for (int64_t i = 0; i < n; i++) /* steps of 1/4 in [-1, 1]: ties inside windows */
        x0[i] = (float)((i * 2654435761u >> 7) % 9) / 4.0f - 1.0f;
    tg_pool2d_params p = {.kernel = {2, 2}};
    int64_t count[2] = {n / 4, n};
    for (int run = 0; run < 2; run++) {
        tg_ctx *ctx;
        tg_tape *tp;
        open_tape(run ? 3 : 1, &ctx, &tp);
        tg_tensor x = tg_requires_grad(tg_tensor_from(tp, TG_F32, 4, shape, x0)), dx;
        tg_tensor y = tg_max_pool2d(x, &p);
        tg_tensor r = tg_uniform(tp, TG_F32, 4, tg_shape(y), -1, 1, 5);
        tg_tensor loss = tg_sum_all(tg_mul(y, r));
        assert_status(tg_grad(1, &loss, NULL, 1, &x, &dx, 0), TG_OK);
        tg_tensor t[2] = {y, dx};
        for (int i = 0; i < 2; i++) {
            out[run][i] = malloc((size_t)count[i] * sizeof(float));
            assert_non_null(out[run][i]);
            assert_status(tg_read(t[i], TG_F32, out[run][i], count[i]), TG_OK);
        }
        tg_tape_free(tp);
        tg_ctx_free(ctx);
    }
    for (int i = 0; i < 2; i++)
        assert_memory_equal(out[0][i], out[1][i], (size_t)count[i] * sizeof(float));
    for (int run = 0; run < 2; run++)
        for (int i = 0; i < 2; i++)
            free(out[run][i]);
    free(x0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conv_against_pytorch),
        cmocka_unit_test(pool_against_pytorch),
        cmocka_unit_test(threads_agree),
        cmocka_unit_test(pool_threads_agree),
    };
    printf("conv: %s\n", ISA_NOTE);
    int failed = cmocka_run_group_tests(tests, load_refs, ref_free);
    printf("conv: worst relative error against PyTorch: f64 %.3g, f32 %.3g\n", worst[0], worst[1]);
    return failed;
}
