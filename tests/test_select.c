/* test_select.c — argmax, argmin and topk against PyTorch (tests/reference/select_reference.txt,
 * written by tests/reference/generate_select.py): indices and values exactly, in f32 and f64,
 * with ties, NaN, infinities, keepdim and every axis; topk's value gradients, first and second
 * order; multinomial's determinism and its distribution (chi-square against PyTorch's
 * softmax(logits / T) over the top_k, with a fixed seed and a threshold that wrong distributions
 * fail); and the errors of all four. */
#include "common.h"
#include "reference.h"

#include <limits.h>

#define REF_PATH TG_SOURCE_DIR "/tests/reference/select_reference.txt"

static int load_refs(void **state)
{
    (void)state;
    return ref_load(REF_PATH, "tests/reference/generate_select.py");
}

/* A reference tensor as a leaf of dtype dt (every input of the file is exact in f32). */
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

/* t equals reference graph.name exactly, in shape and values (NaN matching NaN). */
static void expect_exact(tg_tensor t, const ref_tensor *r, const char *what)
{
    if (!tg_ok(t))
        fail_msg("%s %s.%s: no tensor (%s)", what, r->graph, r->name,
                 tg_tape_error(tg_tensor_tape(t)));
    assert_int_equal(tg_ndim(t), r->ndim);
    for (int d = 0; d < r->ndim; d++)
        assert_int_equal(tg_dim(t, d), r->shape[d]);
    double *got = malloc((size_t)(r->numel ? r->numel : 1) * sizeof *got);
    assert_non_null(got);
    assert_status(tg_read(t, TG_F64, got, r->numel), TG_OK);
    for (int64_t i = 0; i < r->numel; i++) {
        bool same = got[i] == r->v[i] || (isnan(got[i]) && isnan(r->v[i]));
        if (!same) {
            double g = got[i];
            free(got);
            fail_msg("%s %s.%s[%lld] = %.17g, expected %.17g", what, r->graph, r->name,
                     (long long)i, g, r->v[i]);
        }
    }
    free(got);
}

/* Axis names in the file: "1", "m1" (-1), ... */
static int parse_axis(const char *s) { return s[0] == 'm' ? -atoi(s + 1) : atoi(s); }

static const tg_dtype dtypes[] = {TG_F64, TG_F32};

/* ---- argmax / argmin --------------------------------------------------------------------- */

static void arg_reference(void **state)
{
    fixture *f = *state;
    static const char *const graphs[] = {"arg_ties", "arg_3d", "arg_wide"};
    int checked = 0;
    for (int di = 0; di < 2; di++) {
        for (size_t gi = 0; gi < sizeof graphs / sizeof *graphs; gi++) {
            for (size_t i = 0; i < refs.n; i++) {
                const ref_tensor *r = &refs.t[i];
                char kind[4], axis[4];
                int keepdim;
                if (strcmp(r->graph, graphs[gi])
                    || sscanf(r->name, "%3[a-z]_%3[m0-9]_%d", kind, axis, &keepdim) != 3)
                    continue;
                tg_tape_reset(f->tp);
                tg_tensor x = input(f->tp, graphs[gi], "x", dtypes[di]);
                bool max = !strcmp(kind, "max");
                tg_tensor y = max ? tg_argmax(x, parse_axis(axis), keepdim)
                                  : tg_argmin(x, parse_axis(axis), keepdim);
                assert_int_equal(tg_tensor_dtype(y), TG_I64);
                expect_exact(y, r, tg_dtype_name(dtypes[di]));
                checked++;
            }
        }
    }
    assert_int_equal(checked, 2 * (2 * 2 * 4 + 2 * 2 * 4 + 2 * 2 * 2));
    /* 0-d: its one axis. */
    for (int di = 0; di < 2; di++) {
        tg_tape_reset(f->tp);
        tg_tensor x = input(f->tp, "arg_0d", "x", dtypes[di]);
        expect_exact(tg_argmax(x, 0, false), ref("arg_0d", "max"), "0-d");
        expect_exact(tg_argmin(x, -1, true), ref("arg_0d", "min"), "0-d");
        tg_tensor v, idx;
        assert_status(tg_topk(x, 1, 0, true, &v, &idx), TG_OK);
        expect_exact(v, ref("arg_0d", "topk_v"), "0-d");
        expect_exact(idx, ref("arg_0d", "topk_i"), "0-d");
    }
}

static void arg_errors(void **state)
{
    fixture *f = *state;
    tg_tensor m = tg_zeros(f->tp, TG_F32, 2, (int64_t[]){2, 3});
    assert_false(tg_ok(tg_argmax(m, 2, false)));
    assert_status(tg_tape_status(f->tp), TG_RANGE);
    assert_contains(tg_tape_error(f->tp), "argmax: axis 2 out of range for 2 dims");
    assert_contains(tg_tape_error(f->tp), "f32[2,3]");
    tg_tape_reset(f->tp);
    m = tg_zeros(f->tp, TG_F64, 2, (int64_t[]){2, 0});
    assert_false(tg_ok(tg_argmin(m, 1, true)));
    assert_status(tg_tape_status(f->tp), TG_SHAPE);
    assert_contains(tg_tape_error(f->tp), "argmin: axis 1 is empty");
    /* Empty elsewhere: an empty result. */
    tg_tape_reset(f->tp);
    m = tg_zeros(f->tp, TG_F64, 2, (int64_t[]){0, 3});
    tg_tensor y = tg_argmax(m, 1, false);
    assert_tape_ok(f->tp);
    assert_int_equal(tg_ndim(y), 1);
    assert_int_equal(tg_numel(y), 0);
    tg_tape_reset(f->tp);
    tg_tensor idx = tg_tensor_from(f->tp, TG_I64, 1, (int64_t[]){2}, (int64_t[]){3, 1});
    assert_false(tg_ok(tg_argmax(idx, 0, false)));
    assert_status(tg_tape_status(f->tp), TG_DTYPE);
    assert_contains(tg_tape_error(f->tp), "must be f32 or f64, not i64");
    tg_tape_reset(f->tp);
    assert_false(tg_ok(tg_argmin(tg_constant(f->tp, TG_F32, 1), INT_MIN, false)));
    assert_status(tg_tape_status(f->tp), TG_RANGE);
    /* The indices carry no gradient; gathering at them sends it to the picked entry only. */
    tg_tape_reset(f->tp);
    tg_tensor x = tg_requires_grad(VEC64(f->tp, 1, 3, 2));
    tg_tensor a = tg_argmax(x, 0, true);
    assert_status(tg_backward(tg_sum_all(tg_gather(x, 0, a))), TG_OK);
    const double *g = tg_data(tg_tensor_grad(x));
    assert_true(g[0] == 0 && g[1] == 1 && g[2] == 0);
}

/* ---- topk -------------------------------------------------------------------------------- */

static void topk_reference(void **state)
{
    fixture *f = *state;
    static const char *const graphs[] = {"topk_ties", "topk_3d", "topk_wide"};
    int checked = 0, tie_choices = 0;
    for (int di = 0; di < 2; di++) {
        for (size_t gi = 0; gi < sizeof graphs / sizeof *graphs; gi++) {
            for (size_t i = 0; i < refs.n; i++) {
                const ref_tensor *rv = &refs.t[i];
                long long k;
                char axis[4];
                int largest;
                if (strcmp(rv->graph, graphs[gi])
                    || sscanf(rv->name, "v_%lld_%3[m0-9]_%d", &k, axis, &largest) != 3)
                    continue;
                char name[32];
                snprintf(name, sizeof name, "s_%lld_%s_%d", k, axis, largest);
                const ref_tensor *rs = ref(graphs[gi], name);
                snprintf(name, sizeof name, "i_%lld_%s_%d", k, axis, largest);
                const ref_tensor *ri = ref(graphs[gi], name);
                tg_tape_reset(f->tp);
                tg_tensor x = input(f->tp, graphs[gi], "x", dtypes[di]), v, idx;
                assert_status(tg_topk(x, k, parse_axis(axis), largest, &v, &idx), TG_OK);
                assert_int_equal(tg_tensor_dtype(v), dtypes[di]);
                assert_int_equal(tg_tensor_dtype(idx), TG_I64);
                expect_exact(v, rv, tg_dtype_name(dtypes[di]));   /* torch.topk's values */
                expect_exact(idx, rs, tg_dtype_name(dtypes[di])); /* the stable order */
                const int64_t *got = tg_data(idx);
                for (int64_t e = 0; e < ri->numel; e++)
                    tie_choices += got[e] != (int64_t)ri->v[e];
                checked++;
            }
        }
    }
    assert_int_equal(checked, 2 * (9 + 6 + 3));
    /* Where torch.topk picked other indices, they were among equal values (the values matched),
     * which the tie cases provoke: the documented order is then the only difference. */
    print_message("topk: %d indices differ from torch.topk's, all among equal values\n",
                  tie_choices);
    assert_true(tie_choices > 0);
}

/* The values of topk as a graph function, for the gradient check. */
static tg_tensor topk_values(void *user, int n, const tg_tensor *in)
{
    (void)n;
    const int *largest = user;
    tg_tensor v, idx;
    tg_topk(in[0], 4, 1, *largest, &v, &idx);
    return v;
}

static void topk_gradient(void **state)
{
    fixture *f = *state;
    for (int di = 0; di < 2; di++) {
        tg_tape_reset(f->tp);
        tg_tensor x = input(f->tp, "topk_grad", "x", dtypes[di]);
        tg_tensor r = input(f->tp, "topk_grad", "r", dtypes[di]), v, idx;
        assert_status(tg_topk(x, 4, -1, false, &v, &idx), TG_OK);
        expect_exact(v, ref("topk_grad", "v"), "values");
        tg_tensor g;
        tg_tensor loss = tg_sum_all(tg_mul(v, r));
        assert_status(tg_grad(1, &loss, NULL, 1, &x, &g, 0), TG_OK);
        expect_exact(g, ref("topk_grad", "grad_x"), "gradient"); /* r, placed: exact */
    }
    /* First and second order against finite differences, both orders of selection. */
    tg_tape_reset(f->tp);
    tg_tensor x = input(f->tp, "topk_grad", "x", TG_F64);
    for (int largest = 0; largest < 2; largest++) {
        for (int order = 1; order <= 2; order++) {
            tg_gradcheck_options o = {.order = order};
            tg_gradcheck_result res;
            assert_status(tg_gradcheck(f->ctx, topk_values, &largest, 1, &x, &o, &res), TG_OK);
            if (!res.passed)
                fail_msg("order %d: analytic %g, numeric %g", order, res.analytic, res.numeric);
            assert_true(res.checked == 21);
        }
    }
}

static void topk_errors(void **state)
{
    fixture *f = *state;
    tg_tensor m = tg_zeros(f->tp, TG_F64, 2, (int64_t[]){2, 3}), v = m, idx = m;
    assert_status(tg_topk(m, 4, 1, true, &v, &idx), TG_RANGE);
    assert_false(tg_ok(v));
    assert_false(tg_ok(idx));
    assert_contains(tg_tape_error(f->tp), "topk: k = 4 is out of range for axis 1 of size 3");
    assert_contains(tg_tape_error(f->tp), "f64[2,3]");
    tg_tape_reset(f->tp);
    m = tg_zeros(f->tp, TG_F64, 2, (int64_t[]){2, 3});
    assert_status(tg_topk(m, -1, 0, false, &v, &idx), TG_RANGE);
    assert_contains(tg_tape_error(f->tp), "k = -1");
    tg_tape_reset(f->tp);
    m = tg_zeros(f->tp, TG_F64, 2, (int64_t[]){2, 3});
    assert_status(tg_topk(m, 1, -3, true, &v, &idx), TG_RANGE);
    assert_contains(tg_tape_error(f->tp), "axis -3 out of range for 2 dims");
    tg_tape_reset(f->tp);
    tg_tensor ints = tg_tensor_from(f->tp, TG_I64, 1, (int64_t[]){2}, (int64_t[]){3, 1});
    assert_status(tg_topk(ints, 1, 0, true, &v, &idx), TG_DTYPE);
    assert_contains(tg_tape_error(f->tp), "must be f32 or f64, not i64");
    tg_tape_reset(f->tp);
    assert_status(tg_topk(tg_constant(f->tp, TG_F32, 1), 0, 0, true, &v, &idx), TG_RANGE);
    assert_contains(tg_tape_error(f->tp), "0-d");
    tg_tape_reset(f->tp);
    m = tg_zeros(f->tp, TG_F64, 1, (int64_t[]){3});
    assert_status(tg_topk(m, 1, 0, true, NULL, &idx), TG_INVALID);
    assert_false(tg_ok(idx));
    assert_contains(tg_tape_error(f->tp), "values or indices is NULL");
    assert_status(tg_topk((tg_tensor){0}, 1, 0, true, &v, &idx), TG_INVALID);
    /* k = 0 and empty rows: empty results. */
    tg_tape_reset(f->tp);
    m = tg_requires_grad(tg_ones(f->tp, TG_F32, 2, (int64_t[]){0, 3}));
    assert_status(tg_topk(m, 2, 1, true, &v, &idx), TG_OK);
    assert_int_equal(tg_numel(v), 0);
    assert_int_equal(tg_dim(v, 1), 2);
    m = tg_requires_grad(tg_ones(f->tp, TG_F32, 2, (int64_t[]){2, 3}));
    assert_status(tg_topk(m, 0, 1, true, &v, &idx), TG_OK);
    assert_int_equal(tg_numel(idx), 0);
    assert_status(tg_backward(tg_sum_all(v)), TG_OK);
    assert_close(tg_item(tg_sum_all(tg_tensor_grad(m))), 0, 0);
}

/* ---- multinomial ------------------------------------------------------------------------- */

/* Draws `samples` per row from the reference logits and checks each row's counts against the
 * probabilities p (chi-square below the 1e-6 tail: the seed is fixed, so this never flakes).
 * Returns the worst chi-square over the rows divided by its threshold (< 1 passes). */
static double chi_square(const int64_t *draws, int64_t rows, int64_t samples, const ref_tensor *p,
                         bool *zero_hit)
{
    int64_t classes = p->shape[p->ndim - 1];
    double worst = 0;
    *zero_hit = false;
    for (int64_t o = 0; o < rows; o++) {
        int64_t counts[16] = {0};
        assert_true(classes <= 16);
        for (int64_t s = 0; s < samples; s++) {
            int64_t c = draws[o * samples + s];
            assert_true(c >= 0 && c < classes);
            counts[c]++;
        }
        double chi2 = 0;
        int positive = 0;
        for (int64_t c = 0; c < classes; c++) {
            double pc = p->v[o * classes + c];
            if (pc == 0) {
                *zero_hit |= counts[c] > 0;
                continue;
            }
            double expected = pc * (double)samples;
            chi2 += (counts[c] - expected) * (counts[c] - expected) / expected;
            positive++;
        }
        if (positive == 1)
            continue; /* one class: the zero_hit check is the whole test */
        char name[16];
        snprintf(name, sizeof name, "crit_%d", positive - 1);
        double ratio = chi2 / ref("chi2", name)->v[0];
        worst = ratio > worst ? ratio : worst;
    }
    return worst;
}

/* Samples of tg_multinomial as a malloc'd array; the call must succeed. */
static int64_t *sample(tg_tape *tp, tg_tensor logits, int64_t n, double t, int64_t top_k,
                       uint64_t seed)
{
    tg_tensor y = tg_multinomial(logits, n, t, top_k, seed);
    assert_tape_ok(tp);
    assert_int_equal(tg_tensor_dtype(y), TG_I64);
    assert_int_equal(tg_dim(y, -1), n);
    int64_t *out = malloc((size_t)tg_numel(y) * sizeof *out);
    assert_non_null(out);
    assert_status(tg_read(y, TG_I64, out, tg_numel(y)), TG_OK);
    return out;
}

#define SAMPLES 200000

static void multinomial_distribution(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *graph, *p;
        double t;
        int64_t top_k;
    } cases[] = {
        {"mn", "p_1p0_0", 1.0, 0},      {"mn", "p_0p5_0", 0.5, 0},      {"mn", "p_2p0_0", 2.0, 0},
        {"mn", "p_0p5_4", 0.5, 4},      {"mn", "p_1p0_1", 1.0, 1},      {"mn", "p_1p3_9", 1.3, 9},
        {"mn", "p_1p0_0", 1.0, 10},     {"mn", "p_1p0_0", 1.0, 1000}, /* top_k >= C: all */
        {"mn_rows", "p_0p8_0", 0.8, 0}, {"mn_rows", "p_0p8_3", 0.8, 3},
    };
    for (int di = 0; di < 2; di++) {
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            tg_tape_reset(f->tp);
            tg_tensor logits = input(f->tp, cases[i].graph, "logits", dtypes[di]);
            int64_t rows = tg_numel(logits) / tg_dim(logits, -1);
            int64_t *draws = sample(f->tp, logits, SAMPLES, cases[i].t, cases[i].top_k, 99 + i);
            bool zero_hit;
            double ratio =
                chi_square(draws, rows, SAMPLES, ref(cases[i].graph, cases[i].p), &zero_hit);
            free(draws);
            print_message("%s %s.%s (T %g, top_k %lld): chi-square %.3f of the threshold\n",
                          tg_dtype_name(dtypes[di]), cases[i].graph, cases[i].p, cases[i].t,
                          (long long)cases[i].top_k, ratio);
            assert_false(zero_hit);
            assert_true(ratio < 1);
        }
    }
    /* The test has the power to see wrong distributions: the temperature ignored, another
     * temperature, top_k ignored. */
    tg_tape_reset(f->tp);
    tg_tensor logits = input(f->tp, "mn", "logits", TG_F64);
    bool zero_hit;
    int64_t *draws = sample(f->tp, logits, SAMPLES, 1.0, 0, 5);
    double ratio = chi_square(draws, 1, SAMPLES, ref("mn", "p_0p5_0"), &zero_hit);
    free(draws);
    print_message("temperature ignored: %.1f times the threshold\n", ratio);
    assert_true(ratio > 10);
    draws = sample(f->tp, logits, SAMPLES, 0.6, 0, 5);
    ratio = chi_square(draws, 1, SAMPLES, ref("mn", "p_0p5_0"), &zero_hit);
    free(draws);
    print_message("temperature 0.6 for 0.5: %.1f times the threshold\n", ratio);
    assert_true(ratio > 1);
    draws = sample(f->tp, logits, SAMPLES, 0.5, 0, 5);
    chi_square(draws, 1, SAMPLES, ref("mn", "p_0p5_4"), &zero_hit);
    free(draws);
    assert_true(zero_hit); /* top_k ignored: classes outside the top 4 drawn */
}

static void multinomial_determinism(void **state)
{
    fixture *f = *state;
    tg_tensor logits = input(f->tp, "mn_rows", "logits", TG_F64);
    tg_tensor logits32 = input(f->tp, "mn_rows", "logits", TG_F32);
    int64_t *a = sample(f->tp, logits, 64, 0.8, 0, 1234);
    int64_t *same = sample(f->tp, logits, 64, 0.8, 0, 1234);
    int64_t *other = sample(f->tp, logits, 64, 0.8, 0, 1235);
    int64_t *f32 = sample(f->tp, logits32, 64, 0.8, 0, 1234);
    assert_memory_equal(a, same, 3 * 64 * sizeof *a);
    assert_memory_not_equal(a, other, 3 * 64 * sizeof *a);
    assert_memory_equal(a, f32, 3 * 64 * sizeof *a); /* the same logits, computed in double */
    /* The exact draws of a seed, from an independent implementation of the documented
     * algorithm (generate_select.py): the stream is pinned, whatever the machine. */
    for (int top_k = 0; top_k <= 3; top_k += 3) {
        tg_tensor y = tg_multinomial(logits, 32, 0.8, top_k, 2024);
        expect_exact(y, ref("mn_rows", top_k ? "draws_3" : "draws_0"), "draws");
    }
    /* A draw depends on (seed, row, sample) only: row 0 alone, and fewer samples, give a prefix. */
    tg_tensor row0 = tg_slice(logits, 0, 0, 1, 1);
    int64_t *alone = sample(f->tp, row0, 10, 0.8, 0, 1234);
    assert_memory_equal(a, alone, 10 * sizeof *a);
    /* Shape [..., num_samples] for a 3-d batch; 1-d logits give [num_samples]. */
    tg_tensor y = tg_multinomial(tg_reshape(logits, 3, (int64_t[]){3, 1, 6}), 7, 1, 0, 1);
    assert_tape_ok(f->tp);
    assert_int_equal(tg_ndim(y), 3);
    assert_int_equal(tg_dim(y, 0), 3);
    assert_int_equal(tg_dim(y, 1), 1);
    assert_int_equal(tg_dim(y, 2), 7);
    y = tg_multinomial(tg_slice(tg_reshape(logits, 1, (int64_t[]){18}), 0, 0, 6, 1), 7, 1, 0, 1);
    assert_int_equal(tg_ndim(y), 1);
    assert_int_equal(tg_dim(y, 0), 7);
    free(a);
    free(same);
    free(other);
    free(f32);
    free(alone);
}

/* top_k = 1 always draws the argmax, the first of equal maxima; ties at a cut go by index. */
static void multinomial_top_k_ties(void **state)
{
    fixture *f = *state;
    tg_tensor x = tg_uniform(f->tp, TG_F64, 2, (int64_t[]){8, 50}, -3, 3, 17);
    double *d = (double *)tg_data(x); /* a fresh leaf's own buffer: make ties at the maximum */
    for (int r = 0; r < 4; r++)
        d[r * 50 + 10 + r] = d[r * 50 + 40 - r] = 3.5;
    d[5 * 50 + 7] = -INFINITY;
    tg_tensor am = tg_argmax(x, 1, false);
    int64_t *draws = sample(f->tp, x, 25, 0.3, 1, 8);
    const int64_t *best = tg_data(am);
    for (int r = 0; r < 8; r++)
        for (int s = 0; s < 25; s++)
            assert_int_equal(draws[r * 25 + s], best[r]);
    assert_int_equal(best[2], 12); /* the first of the tie */
    free(draws);
    /* top_k cutting through equal logits takes the lower indices, as tg_topk does. */
    tg_tensor tied = VEC64(f->tp, 1, 3, -INFINITY, 3, 3, 0, 3);
    draws = sample(f->tp, tied, 1000, 1.0, 3, 9);
    int64_t counts[7] = {0};
    for (int s = 0; s < 1000; s++)
        counts[draws[s]]++;
    assert_true(counts[1] > 250 && counts[3] > 250 && counts[4] > 250);
    assert_int_equal(counts[1] + counts[3] + counts[4], 1000);
    free(draws);
}

static void multinomial_errors(void **state)
{
    fixture *f = *state;
    static const struct {
        double v[3];
        int64_t n, top_k;
        double t;
        tg_status st;
        const char *needle;
    } cases[] = {
        {{0, NAN, 1}, 1, 0, 1, TG_RANGE, "logit nan in row 0, class 1"},
        {{0, 1, INFINITY}, 1, 0, 1, TG_RANGE, "logit inf in row 0, class 2"},
        {{-INFINITY, -INFINITY, -INFINITY}, 1, 0, 1, TG_RANGE, "row 0 is all -inf"},
        {{0, 1, 2}, 1, 0, 0, TG_RANGE, "temperature 0 (need a finite value > 0)"},
        {{0, 1, 2}, 1, 0, -1, TG_RANGE, "temperature -1"},
        {{0, 1, 2}, 1, 0, NAN, TG_RANGE, "temperature nan"},
        {{0, 1, 2}, 1, 0, INFINITY, TG_RANGE, "temperature inf"},
        {{0, 1, 2}, 0, 0, 1, TG_RANGE, "num_samples = 0 (need >= 1)"},
        {{0, 1, 2}, -5, 0, 1, TG_RANGE, "num_samples = -5"},
        {{0, 1, 2}, 1, -1, 1, TG_RANGE, "top_k = -1"},
        {{0, 1, 2}, INT64_MAX, 0, 1, TG_SHAPE, "samples per row are too many"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tg_tape_reset(f->tp);
        tg_tensor x = tg_tensor_from(f->tp, TG_F64, 2, (int64_t[]){1, 3}, cases[i].v);
        tg_tensor y = tg_multinomial(x, cases[i].n, cases[i].t, cases[i].top_k, 1);
        assert_false(tg_ok(y));
        assert_status(tg_tape_status(f->tp), cases[i].st);
        assert_contains(tg_tape_error(f->tp), "multinomial: ");
        assert_contains(tg_tape_error(f->tp), cases[i].needle);
    }
    /* The second row is the bad one. */
    tg_tape_reset(f->tp);
    tg_tensor x =
        tg_tensor_from(f->tp, TG_F32, 2, (int64_t[]){2, 2}, (float[]){0, 1, -INFINITY, -INFINITY});
    assert_false(tg_ok(tg_multinomial(x, 1, 1, 1, 1)));
    assert_contains(tg_tape_error(f->tp), "row 1 is all -inf");
    tg_tape_reset(f->tp);
    tg_tensor ints = tg_tensor_from(f->tp, TG_I64, 1, (int64_t[]){2}, (int64_t[]){3, 1});
    assert_false(tg_ok(tg_multinomial(ints, 1, 1, 0, 1)));
    assert_status(tg_tape_status(f->tp), TG_DTYPE);
    tg_tape_reset(f->tp);
    assert_false(tg_ok(tg_multinomial(tg_constant(f->tp, TG_F64, 1), 1, 1, 0, 1)));
    assert_status(tg_tape_status(f->tp), TG_SHAPE);
    assert_contains(tg_tape_error(f->tp), "class axis");
    tg_tape_reset(f->tp);
    assert_false(tg_ok(tg_multinomial(tg_zeros(f->tp, TG_F64, 2, (int64_t[]){2, 0}), 1, 1, 0, 1)));
    assert_status(tg_tape_status(f->tp), TG_SHAPE);
    /* No rows: no samples, no error. */
    tg_tape_reset(f->tp);
    tg_tensor y = tg_multinomial(tg_zeros(f->tp, TG_F64, 2, (int64_t[]){0, 4}), 3, 1, 0, 1);
    assert_tape_ok(f->tp);
    assert_int_equal(tg_dim(y, 1), 3);
    assert_int_equal(tg_numel(y), 0);
}

/* Extreme arguments: a clear status or a correct result, never undefined behaviour. */
static void extreme_arguments(void **state)
{
    fixture *f = *state;
    static const int axes[] = {INT_MIN, INT_MAX, 2, -3};
    static const int64_t ks[] = {INT64_MIN, -1, 4, INT64_MAX};
    for (int i = 0; i < 4; i++) {
        tg_tape_reset(f->tp);
        tg_tensor m = tg_zeros(f->tp, TG_F32, 2, (int64_t[]){2, 3}), v, idx;
        assert_false(tg_ok(tg_argmax(m, axes[i], true)));
        assert_status(tg_tape_status(f->tp), TG_RANGE);
        tg_tape_reset(f->tp);
        m = tg_zeros(f->tp, TG_F32, 2, (int64_t[]){2, 3});
        assert_status(tg_topk(m, 1, axes[i], false, &v, &idx), TG_RANGE);
        tg_tape_reset(f->tp);
        m = tg_zeros(f->tp, TG_F32, 2, (int64_t[]){2, 3});
        assert_status(tg_topk(m, ks[i], 1, true, &v, &idx), TG_RANGE);
        tg_tape_reset(f->tp);
        m = tg_zeros(f->tp, TG_F32, 2, (int64_t[]){2, 3});
        assert_false(tg_ok(tg_multinomial(m, ks[i] < 0 ? ks[i] : 0, 1, 0, 1)));
        assert_status(tg_tape_status(f->tp), TG_RANGE);
    }
    /* Logits at the ends of the double range, tiny and huge temperatures, huge top_k. */
    tg_tape_reset(f->tp);
    tg_tensor x = VEC64(f->tp, -1e308, 1e308, 1e308 * 0.5, -INFINITY, 1e308);
    int64_t *d = sample(f->tp, x, 200, 5e-324, INT64_MAX, 3);
    for (int s = 0; s < 200; s++)
        assert_true(d[s] == 1 || d[s] == 4); /* the two maxima, nothing else */
    free(d);
    tg_tensor even = VEC64(f->tp, 1, 2, 3, 4);
    d = sample(f->tp, even, 4000, 1e300, 0, 4);
    int64_t counts[4] = {0};
    for (int s = 0; s < 4000; s++)
        counts[d[s]]++;
    for (int c = 0; c < 4; c++)
        assert_true(counts[c] > 850 && counts[c] < 1150); /* about uniform: 1000 expected */
    free(d);
    d = sample(f->tp, even, 100, 1e-300, 2, 5);
    for (int s = 0; s < 100; s++)
        assert_int_equal(d[s], 3);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(arg_reference),
        FIXTURE_TEST(arg_errors),
        FIXTURE_TEST(topk_reference),
        FIXTURE_TEST(topk_gradient),
        FIXTURE_TEST(topk_errors),
        FIXTURE_TEST(multinomial_distribution),
        FIXTURE_TEST(multinomial_determinism),
        FIXTURE_TEST(multinomial_top_k_ties),
        FIXTURE_TEST(multinomial_errors),
        FIXTURE_TEST(extreme_arguments),
    };
    return cmocka_run_group_tests(tests, load_refs, ref_free);
}
