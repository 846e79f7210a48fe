/* test_vmath.c — the vector-math layer (src/vmath.h) on every instruction set this CPU runs:
 * each elementwise op and reduction against libm / plain C in double, over lengths 0..40 and 1000
 * (every masked tail), with a guard zone after the output; special values (NaN, infinities,
 * signed zeros); in-place calls; and the threaded entry against the single-threaded kernels.
 * Arithmetic ops must match the same expression evaluated in the element type bit for bit. */
#include "common.h"

#include <float.h>

#include "../src/vmath.h"

#define GUARD 32
static const int64_t lengths[] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13,
                                  14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27,
                                  28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 1000};
#define NLENGTHS (sizeof lengths / sizeof *lengths)
static const char *const isa_names[] = {"scalar", "avx2", "avx512f"};

/* A deterministic generator (SplitMix64) for the inputs. */
static uint64_t rng_state;
static double uniform(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}
/* Values in [lo, hi]: half uniform, half with log-uniform magnitude (tiny values too). */
static double sample(double lo, double hi)
{
    if (uniform() < 0.5 || lo > 0 || hi < 0)
        return lo + (hi - lo) * uniform();
    double m = uniform() < 0.5 ? lo : hi;
    return m * pow(10, -7 * uniform());
}

typedef struct op_case {
    tg__vm_op op;
    const char *name;
    int nin;         /* 1 or 2 */
    double lo, hi;   /* input a */
    double blo, bhi; /* input b */
    bool exact;      /* plain arithmetic: bit-exact against the element type */
    double c0, c1;
} op_case;

static const op_case cases[] = {
    {TG__VM_EXP, "exp", 1, -87, 88, 0, 0, false, 0, 0},
    {TG__VM_LOG, "log", 1, 1e-30, 1e4, 0, 0, false, 0, 0},
    {TG__VM_LOG1P, "log1p", 1, -0.99, 10, 0, 0, false, 0, 0},
    {TG__VM_SQRT, "sqrt", 1, 0, 1e6, 0, 0, true, 0, 0},
    {TG__VM_SIN, "sin", 1, -10, 10, 0, 0, false, 0, 0},
    {TG__VM_COS, "cos", 1, -10, 10, 0, 0, false, 0, 0},
    {TG__VM_TANH, "tanh", 1, -10, 10, 0, 0, false, 0, 0},
    {TG__VM_SIGMOID, "sigmoid", 1, -80, 80, 0, 0, false, 0, 0},
    {TG__VM_GELU, "gelu", 1, -9, 9, 0, 0, false, 0, 0},
    {TG__VM_SOFTPLUS, "softplus", 1, -80, 80, 0, 0, false, 0, 0},
    {TG__VM_SILU, "silu", 1, -80, 80, 0, 0, false, 0, 0},
    {TG__VM_GELU_ERF, "gelu_erf", 1, -9, 9, 0, 0, false, 0, 0},
    {TG__VM_ADD, "add", 2, -100, 100, -100, 100, true, 0, 0},
    {TG__VM_SUB, "sub", 2, -100, 100, -100, 100, true, 0, 0},
    {TG__VM_MUL, "mul", 2, -100, 100, -100, 100, true, 0, 0},
    {TG__VM_DIV, "div", 2, -100, 100, 0.5, 2, true, 0, 0},
    {TG__VM_MAX, "max", 2, -3, 3, -3, 3, true, 0, 0},
    {TG__VM_MIN, "min", 2, -3, 3, -3, 3, true, 0, 0},
    {TG__VM_TANH_BACKWARD, "tanh_backward", 2, -2, 2, -1, 1, true, 0, 0},
    {TG__VM_SIGMOID_BACKWARD, "sigmoid_backward", 2, -2, 2, 0, 1, true, 0, 0},
    {TG__VM_RELU_BACKWARD, "relu_backward", 2, -2, 2, -1, 1, true, 0, 0},
    {TG__VM_GELU_BACKWARD, "gelu_backward", 2, -2, 2, -9, 9, false, 0, 0},
    {TG__VM_SILU_BACKWARD, "silu_backward", 2, -2, 2, -40, 40, false, 0, 0},
    {TG__VM_GELU_ERF_BACKWARD, "gelu_erf_backward", 2, -2, 2, -9, 9, false, 0, 0},
    {TG__VM_ADD_SCALAR, "add_scalar", 1, -100, 100, 0, 0, true, 0.1, 0},
    {TG__VM_MUL_SCALAR, "mul_scalar", 1, -100, 100, 0, 0, true, -0.3, 0},
    {TG__VM_SUB2, "sub2", 1, -100, 100, 0, 0, true, 1.7, 2.9},
};
#define NCASES (sizeof cases / sizeof *cases)

#define K0 0.7978845608028654
#define K1 0.044715

/* The op in double at the (already rounded) inputs. *scale receives the size of the terms whose
 * rounding the result inherits (0 when only the result's own relative error matters). */
static double reference(tg__vm_op op, double a, double b, double *scale)
{
    *scale = 0;
    bool backward =
        op == TG__VM_GELU_BACKWARD || op == TG__VM_SILU_BACKWARD || op == TG__VM_GELU_ERF_BACKWARD;
    double x = backward ? b : a; /* the function's argument */
    double u = K0 * (x + K1 * x * x * x), du = K0 * (1 + 3 * K1 * x * x);
    double s = 1 / (1 + exp(-x)), cdf = 0.5 * erfc(-x / sqrt(2.0));
    double pdf = exp(-0.5 * x * x) * 0.39894228040143267794; /* / sqrt(2 pi) */
    switch (op) {
    case TG__VM_EXP:
        return exp(a);
    case TG__VM_LOG:
        return log(a);
    case TG__VM_LOG1P:
        return log1p(a);
    case TG__VM_SIN:
        return sin(a);
    case TG__VM_COS:
        return cos(a);
    case TG__VM_TANH:
        return tanh(a);
    case TG__VM_SIGMOID:
        return 1 / (1 + exp(-a));
    case TG__VM_GELU:
        /* u is rounded first (relative error |u| eps in the exp); f64's 0.5 x (1 + t) also
         * cancels to about eps |x| for x < 0. */
        *scale = fabs(a) * (1 + 2 * fabs(u));
        return 0.5 * a * (1 + tanh(u));
    case TG__VM_SOFTPLUS:
        return a > 20 ? a : log1p(exp(a));
    case TG__VM_GELU_BACKWARD: {
        double t = tanh(u);
        *scale = fabs(a) * (1 + fabs(b) * du) * (1 + 2 * fabs(u));
        return a * (0.5 * (1 + t) + 0.5 * b * (1 - t * t) * du);
    }
    case TG__VM_SILU:
        return a * s;
    case TG__VM_SILU_BACKWARD:
        /* 1 + x (1 - s) cancels near x = -1.28, to about eps (1 + |x|) of its terms. */
        *scale = fabs(a) * s * (1 + fabs(b));
        return a * s * (1 + b * (1 - s));
    case TG__VM_GELU_ERF:
        /* 1 + erf(x / sqrt 2) cancels for x < 0, to about eps |x| (as in PyTorch's form). */
        *scale = a < 0 ? -a : 0;
        return a * cdf;
    case TG__VM_GELU_ERF_BACKWARD:
        /* Phi + x phi cancels for x < 0 (to 0 near -0.75); exp(-x^2 / 2) inherits x^2's
         * rounding. */
        *scale = fabs(a) * (b < 0 ? 1 + fabs(b) * pdf * (1 + b * b) : b * pdf * b * b);
        return a * (cdf + b * pdf);
    default:
        return NAN;
    }
}

/* The arithmetic ops in the element type T, in vmath's order of operations. */
#define EXACT(T, op, a, b, c0, c1)                                                                 \
    ((op) == TG__VM_SQRT               ? (T)sqrt(a)                                                \
     : (op) == TG__VM_ADD              ? (T)((a) + (b))                                            \
     : (op) == TG__VM_SUB              ? (T)((a) - (b))                                            \
     : (op) == TG__VM_MUL              ? (T)((a) * (b))                                            \
     : (op) == TG__VM_DIV              ? (T)((a) / (b))                                            \
     : (op) == TG__VM_MAX              ? ((a) > (b) || isnan(a) ? (a) : (b))                       \
     : (op) == TG__VM_MIN              ? ((a) < (b) || isnan(a) ? (a) : (b))                       \
     : (op) == TG__VM_TANH_BACKWARD    ? (T)((a) * (T)(1 - (T)((b) * (b))))                        \
     : (op) == TG__VM_SIGMOID_BACKWARD ? (T)((T)((a) * (b)) * (T)(1 - (b)))                        \
     : (op) == TG__VM_RELU_BACKWARD    ? ((b) > 0 ? (a) : (T)0)                                    \
     : (op) == TG__VM_ADD_SCALAR       ? (T)((a) + (c0))                                           \
     : (op) == TG__VM_MUL_SCALAR       ? (T)((a) * (c0))                                           \
                                       : (T)((T)((a) - (c0)) - (c1)))

static float exact_f32(tg__vm_op op, float a, float b, float c0, float c1)
{
    return op == TG__VM_SQRT ? sqrtf(a) : EXACT(float, op, a, b, c0, c1);
}
static double exact_f64(tg__vm_op op, double a, double b, double c0, double c1)
{
    return EXACT(double, op, a, b, c0, c1);
}

static bool same_bits(double x, double y) { return memcmp(&x, &y, sizeof x) == 0; }

/* Checks one result against the reference: NaN with NaN, infinities exactly, else within
 * ulps * eps * (|ref| + scale). */
static void check_close(const char *what, int isa, tg_dtype dt, int64_t n, int64_t i, double in,
                        double got, double want, double scale, double ulps)
{
    double eps = dt == TG_F32 ? 0x1p-24 : 0x1p-53;
    bool ok;
    if (isnan(want))
        ok = isnan(got);
    else if (isinf(want))
        ok = got == want;
    else /* below the smallest normal number only an absolute bound holds */
        ok = fabs(got - want) <= ulps * eps * (fabs(want) + scale)
             || fabs(got - want) <= (dt == TG_F32 ? FLT_MIN : DBL_MIN);
    if (!ok)
        fail_msg("%s %s %s n=%lld [%lld]: f(%.9g) = %.17g, reference %.17g (scale %g)", what,
                 isa_names[isa], tg_dtype_name(dt), (long long)n, (long long)i, in, got, want,
                 scale);
}

/* One op on one instruction set and dtype, every length: values, tail guard, in place. */
static void run_case(const op_case *c, int isa, tg_dtype dt)
{
    size_t es = tg_dtype_size(dt);
    for (size_t li = 0; li < NLENGTHS; li++) {
        int64_t n = lengths[li];
        double *a = malloc((size_t)(n + GUARD) * sizeof *a), *b = malloc((size_t)(n + GUARD) * 8);
        char *xa = malloc((size_t)(n + GUARD) * es), *xb = malloc((size_t)(n + GUARD) * es);
        char *y = malloc((size_t)(n + GUARD) * es), *yi = malloc((size_t)(n + GUARD) * es);
        assert_true(a && b && xa && xb && y && yi);
        for (int64_t i = 0; i < n + GUARD; i++) {
            a[i] = sample(c->lo, c->hi);
            b[i] = c->nin == 2 ? sample(c->blo, c->bhi) : 0;
            if (dt == TG_F32) {
                ((float *)xa)[i] = (float)a[i], ((float *)xb)[i] = (float)b[i];
                a[i] = ((float *)xa)[i], b[i] = ((float *)xb)[i];
                ((float *)y)[i] = 12345.0f;
            } else {
                ((double *)xa)[i] = a[i], ((double *)xb)[i] = b[i];
                ((double *)y)[i] = 12345.0;
            }
        }
        const void *pb = c->nin == 2 ? xb : NULL;
        assert_true(tg__vm_map_isa(isa, c->op, dt, n, xa, pb, c->c0, c->c1, y));
        for (int64_t i = 0; i < n + GUARD; i++) {
            double got = dt == TG_F32 ? ((float *)y)[i] : ((double *)y)[i];
            if (i >= n) {
                if (got != 12345.0)
                    fail_msg("%s %s n=%lld: wrote past the end at %lld", c->name, isa_names[isa],
                             (long long)n, (long long)i);
                continue;
            }
            if (c->exact) {
                double want = dt == TG_F32 ? exact_f32(c->op, (float)a[i], (float)b[i],
                                                       (float)c->c0, (float)c->c1)
                                           : exact_f64(c->op, a[i], b[i], c->c0, c->c1);
                if (!same_bits(got, want))
                    fail_msg("%s %s %s n=%lld [%lld]: f(%.9g, %.9g) = %.17g, expected %.17g",
                             c->name, isa_names[isa], tg_dtype_name(dt), (long long)n, (long long)i,
                             a[i], b[i], got, want);
                continue;
            }
            double scale, want = reference(c->op, a[i], b[i], &scale);
            check_close(c->name, isa, dt, n, i, a[i], got, want, scale, 4);
        }
        /* In place over the first input gives the same bits. */
        memcpy(yi, xa, (size_t)n * es);
        assert_true(tg__vm_map_isa(isa, c->op, dt, n, yi, pb, c->c0, c->c1, yi));
        if (n && memcmp(yi, y, (size_t)n * es) != 0)
            fail_msg("%s %s n=%lld: in place differs", c->name, isa_names[isa], (long long)n);
        free(a), free(b), free(xa), free(xb), free(y), free(yi);
    }
}

static int isa_count(void) { return tg__vm_isa_level() + 1; }

static void map_ops(void **state)
{
    (void)state;
    rng_state = 1;
    for (int isa = 0; isa < isa_count(); isa++)
        for (size_t c = 0; c < NCASES; c++) {
            run_case(&cases[c], isa, TG_F32);
            run_case(&cases[c], isa, TG_F64);
        }
    /* Every op of the enum has a case here. */
    assert_int_equal(NCASES, TG__VM_NOPS);
}

/* Special values through the unary ops, against libm (f32 and f64, every set). */
static void special_values(void **state)
{
    (void)state;
    const double sv[] = {NAN,    INFINITY, -INFINITY, 0.0,  -0.0, 1e-30, -1e-30,
                         1e-310, 88.7,     -88.7,     100,  -100, 1e30,  -1e30,
                         0.625,  -0.625,   20,        20.5, 1,    -1};
    enum { NS = sizeof sv / sizeof *sv };
    for (int isa = 0; isa < isa_count(); isa++)
        for (int d = 0; d < 2; d++) {
            tg_dtype dt = d ? TG_F64 : TG_F32;
            float xf[NS], yf[NS];
            double xd[NS], yd[NS];
            for (int i = 0; i < NS; i++)
                xf[i] = (float)sv[i], xd[i] = sv[i];
            const void *x = d ? (const void *)xd : xf;
            void *y = d ? (void *)yd : yf;
#define GOT(i) (d ? yd[i] : (double)yf[i])
#define IN(i) (d ? xd[i] : (double)xf[i])
            /* exp, tanh, sigmoid, softplus: NaN stays NaN, infinities and zeros exactly. */
            assert_true(tg__vm_map_isa(isa, TG__VM_EXP, dt, NS, x, NULL, 0, 0, y));
            for (int i = 0; i < NS; i++)
                if (fabs(IN(i)) < 80 || isinf(IN(i)) || isnan(IN(i)))
                    check_close("exp special", isa, dt, NS, i, IN(i), GOT(i), exp(IN(i)), 0, 4);
            assert_true(tg__vm_map_isa(isa, TG__VM_TANH, dt, NS, x, NULL, 0, 0, y));
            for (int i = 0; i < NS; i++) {
                check_close("tanh special", isa, dt, NS, i, IN(i), GOT(i), tanh(IN(i)), 0, 4);
                if (IN(i) == 0 && signbit(GOT(i)) != signbit(IN(i)))
                    fail_msg("tanh(%g) lost the sign of zero on %s", IN(i), isa_names[isa]);
            }
            assert_true(tg__vm_map_isa(isa, TG__VM_SIGMOID, dt, NS, x, NULL, 0, 0, y));
            for (int i = 0; i < NS; i++)
                check_close("sigmoid special", isa, dt, NS, i, IN(i), GOT(i), 1 / (1 + exp(-IN(i))),
                            0, 4);
            assert_true(tg__vm_map_isa(isa, TG__VM_SOFTPLUS, dt, NS, x, NULL, 0, 0, y));
            for (int i = 0; i < NS; i++) {
                double v = IN(i), want = v > 20 ? v : log1p(exp(v));
                check_close("softplus special", isa, dt, NS, i, v, GOT(i), want, 0, 4);
            }
            /* gelu: NaN in, NaN out; +inf stays; finite inputs give finite results. */
            assert_true(tg__vm_map_isa(isa, TG__VM_GELU, dt, NS, x, NULL, 0, 0, y));
            for (int i = 0; i < NS; i++) {
                double v = IN(i), g = GOT(i);
                if (isnan(v) ? !isnan(g) : isfinite(v) ? !isfinite(g) : v > 0 && g != v)
                    fail_msg("gelu(%g) = %g on %s %s", v, g, isa_names[isa], tg_dtype_name(dt));
            }
            /* silu and exact gelu: NaN stays NaN, +inf stays +inf, finite stays finite, and -inf
             * gives NaN as in PyTorch (-inf times a zero factor). */
            const tg__vm_op exact_ops[] = {TG__VM_SILU, TG__VM_GELU_ERF};
            for (int o = 0; o < 2; o++) {
                assert_true(tg__vm_map_isa(isa, exact_ops[o], dt, NS, x, NULL, 0, 0, y));
                for (int i = 0; i < NS; i++) {
                    double v = IN(i), g = GOT(i);
                    bool ok = isnan(v) || v == -INFINITY ? isnan(g)
                              : v == INFINITY            ? g == v
                                                         : isfinite(g);
                    if (!ok)
                        fail_msg("%s(%g) = %g on %s %s", o ? "gelu_erf" : "silu", v, g,
                                 isa_names[isa], tg_dtype_name(dt));
                }
            }
            /* max/min propagate NaN from either side. */
            double nanv = NAN, one = 1;
            for (int side = 0; side < 2; side++) {
                double r[2];
                float rf[2], af = side ? 1.0f : NAN, bf = side ? NAN : 1.0f;
                const void *pa = d ? (const void *)(side ? &one : &nanv) : &af;
                const void *pb = d ? (const void *)(side ? &nanv : &one) : &bf;
                assert_true(tg__vm_map_isa(isa, TG__VM_MAX, dt, 1, pa, pb, 0, 0,
                                           d ? (void *)&r[0] : (void *)&rf[0]));
                assert_true(tg__vm_map_isa(isa, TG__VM_MIN, dt, 1, pa, pb, 0, 0,
                                           d ? (void *)&r[1] : (void *)&rf[1]));
                assert_true(isnan(d ? r[0] : rf[0]) && isnan(d ? r[1] : rf[1]));
            }
#undef GOT
#undef IN
        }
}

/* Sums, extremes and exp-sums of every length against double / long double. */
static void reductions(void **state)
{
    (void)state;
    rng_state = 2;
    for (int isa = 0; isa < isa_count(); isa++)
        for (int d = 0; d < 2; d++) {
            tg_dtype dt = d ? TG_F64 : TG_F32;
            size_t es = tg_dtype_size(dt);
            for (size_t li = 0; li < NLENGTHS; li++) {
                int64_t n = lengths[li];
                char *x = malloc((size_t)(n + 1) * es), *y = malloc((size_t)(n + GUARD) * es);
                assert_true(x && y);
                long double sum = 0, sabs = 0;
                double mx = -INFINITY, mn = INFINITY;
                for (int64_t i = 0; i < n; i++) {
                    double v = sample(-50, 50);
                    if (d)
                        ((double *)x)[i] = v;
                    else
                        v = ((float *)x)[i] = (float)v;
                    sum += v, sabs += fabsl(v);
                    mx = v > mx ? v : mx, mn = v < mn ? v : mn;
                }
                double r;
                assert_true(tg__vm_reduce_isa(isa, TG__VM_SUM, dt, n, x, 0, NULL, &r));
                if (!(fabsl(r - sum) <= 1e-15L * sabs))
                    fail_msg("sum %s %s n=%lld: %.17g, expected %.17Lg", isa_names[isa],
                             tg_dtype_name(dt), (long long)n, r, sum);
                assert_true(tg__vm_reduce_isa(isa, TG__VM_MAXALL, dt, n, x, 0, NULL, &r));
                assert_true(r == mx);
                assert_true(tg__vm_reduce_isa(isa, TG__VM_MINALL, dt, n, x, 0, NULL, &r));
                assert_true(r == mn);
                /* exp_sum: y = exp(x - shift) as exp does, and its sum; the same without y. */
                double shift = n ? mx : 0, r2;
                for (int64_t i = 0; i < n + GUARD; i++)
                    d ? (void)(((double *)y)[i] = 7) : (void)(((float *)y)[i] = 7);
                assert_true(tg__vm_reduce_isa(isa, TG__VM_EXP_SUM, dt, n, x, shift, y, &r));
                assert_true(tg__vm_reduce_isa(isa, TG__VM_EXP_SUM, dt, n, x, shift, NULL, &r2));
                assert_true(same_bits(r, r2));
                long double ysum = 0;
                for (int64_t i = 0; i < n + GUARD; i++) {
                    double v = d ? ((double *)y)[i] : ((float *)y)[i];
                    if (i >= n) {
                        assert_true(v == 7);
                        continue;
                    }
                    double xi = d ? ((double *)x)[i] : ((float *)x)[i];
                    double arg = d ? xi - shift : (double)(float)(xi - shift);
                    check_close("exp_sum", isa, dt, n, i, xi, v, exp(arg), 0, 4);
                    ysum += v;
                }
                if (!(fabsl(r - ysum) <= 1e-15L * ysum))
                    fail_msg("exp_sum %s n=%lld: %.17g, expected %.17Lg", isa_names[isa],
                             (long long)n, r, ysum);
                /* One NaN anywhere makes max and min NaN; -inf adds nothing to exp_sum. */
                for (int64_t at = 0; at < n && n <= 40; at++) {
                    char save[8];
                    memcpy(save, x + (size_t)at * es, es);
                    d ? (void)(((double *)x)[at] = NAN) : (void)(((float *)x)[at] = NAN);
                    assert_true(tg__vm_reduce_isa(isa, TG__VM_MAXALL, dt, n, x, 0, NULL, &r));
                    assert_true(isnan(r));
                    assert_true(tg__vm_reduce_isa(isa, TG__VM_MINALL, dt, n, x, 0, NULL, &r));
                    assert_true(isnan(r));
                    d ? (void)(((double *)x)[at] = -INFINITY)
                      : (void)(((float *)x)[at] = -INFINITY);
                    assert_true(tg__vm_reduce_isa(isa, TG__VM_EXP_SUM, dt, n, x, shift, NULL, &r));
                    assert_true(isfinite(r));
                    memcpy(x + (size_t)at * es, save, es);
                }
                free(x), free(y);
            }
        }
}

/* Column sums over 0..9 rows (every grouping of rows), every column count, with a stride. */
static void add_rows(void **state)
{
    (void)state;
    rng_state = 3;
    for (int isa = 0; isa < isa_count(); isa++)
        for (int d = 0; d < 2; d++) {
            tg_dtype dt = d ? TG_F64 : TG_F32;
            size_t es = tg_dtype_size(dt);
            for (int64_t rows = 0; rows <= 9; rows++)
                for (size_t li = 0; li < NLENGTHS; li++) {
                    int64_t cols = lengths[li], stride = cols + 3;
                    char *x = malloc((size_t)(rows * stride + 1) * es);
                    double *acc = malloc((size_t)(cols + GUARD) * sizeof *acc);
                    assert_true(x && acc);
                    for (int64_t i = 0; i < rows * stride; i++)
                        d ? (void)(((double *)x)[i] = sample(-9, 9))
                          : (void)(((float *)x)[i] = (float)sample(-9, 9));
                    for (int64_t j = 0; j < cols + GUARD; j++)
                        acc[j] = j < cols ? 0.5 : -1;
                    assert_true(tg__vm_add_rows_isa(isa, dt, rows, cols, stride, x, acc));
                    for (int64_t j = 0; j < cols + GUARD; j++) {
                        if (j >= cols) {
                            assert_true(acc[j] == -1);
                            continue;
                        }
                        long double s = 0.5L, sabs = 0.5L;
                        for (int64_t r = 0; r < rows; r++) {
                            double v =
                                d ? ((double *)x)[r * stride + j] : ((float *)x)[r * stride + j];
                            s += v, sabs += fabsl(v);
                        }
                        if (!(fabsl(acc[j] - s) <= 1e-15L * sabs))
                            fail_msg("add_rows %s %s %lldx%lld [%lld]: %.17g, expected %.17Lg",
                                     isa_names[isa], tg_dtype_name(dt), (long long)rows,
                                     (long long)cols, (long long)j, acc[j], s);
                    }
                    free(x), free(acc);
                }
        }
}

/* The threaded entry splits large arrays over threads with the same per-element results as one
 * thread of the best instruction set. */
static void threaded_map(void **state)
{
    (void)state;
    rng_state = 4;
    const int64_t n = 300007;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    float *y1 = malloc(n * sizeof *y1), *y2 = malloc(n * sizeof *y2);
    assert_true(a && b && y1 && y2);
    for (int64_t i = 0; i < n; i++)
        a[i] = (float)sample(-5, 5), b[i] = (float)sample(-1, 1);
    const tg__vm_op ops[] = {TG__VM_TANH, TG__VM_GELU, TG__VM_ADD, TG__VM_GELU_BACKWARD};
    for (size_t o = 0; o < sizeof ops / sizeof *ops; o++) {
        assert_true(tg__vm_map_isa(tg__vm_isa_level(), ops[o], TG_F32, n, a, b, 0, 0, y1));
        tg__vm_map(ops[o], 2, TG_F32, n, a, b, 0, 0, y2);
        assert_memory_equal(y1, y2, n * sizeof *y1);
        tg__vm_map(ops[o], 7, TG_F32, n, a, b, 0, 0, y2);
        assert_memory_equal(y1, y2, n * sizeof *y1);
    }
    free(a), free(b), free(y1), free(y2);
}

/* An instruction set this CPU lacks is refused, not run. */
static void unsupported_isa(void **state)
{
    (void)state;
    float x = 1, y = 0;
    double r;
    assert_false(tg__vm_map_isa(TG__VM_NISAS, TG__VM_EXP, TG_F32, 1, &x, NULL, 0, 0, &y));
    assert_false(tg__vm_reduce_isa(-1, TG__VM_SUM, TG_F32, 1, &x, 0, NULL, &r));
    assert_true(y == 0);
    print_message("vmath: this CPU runs %s\n", tg__vm_isa());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(map_ops),      cmocka_unit_test(special_values),
        cmocka_unit_test(reductions),   cmocka_unit_test(add_rows),
        cmocka_unit_test(threaded_map), cmocka_unit_test(unsupported_isa),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
