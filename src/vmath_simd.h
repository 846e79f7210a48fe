/* vmath_simd.h — the one implementation of the vector-math kernels, written over a small set of
 * vector macros and instantiated once per (instruction set, element type): vmath_avx512.c and
 * vmath_avx2.c (intrinsics, each compiled with its own -m flags) and vmath_scalar.c (one lane of
 * plain C, the portable fallback). No include guard: the includer defines, for one element type,
 *   T, TS (f32 or f64), VM_F32 (1 or 0), W (lanes), V (vector), M (comparison mask),
 *   TM (tail mask); ACCV (a vector of doubles accumulating sums);
 *   LD(p) ST(p, v); TMASK(r) (the first r < W lanes), LDT(p, m) (masked-off lanes 0),
 *   LDTF(p, m, f) (masked-off lanes from f), STT(p, m, v);
 *   SET(c) ADD SUB MUL DIV, FMA(a, b, c) = a b + c, FNMA(a, b, c) = c - a b (fused),
 *   MAX(a, b) MIN(a, b) (x86 semantics: b when either is NaN), ABS SQRT ROUND (to nearest),
 *   COPYSIGN(mag, sign), CMPLT CMPGT CMPUNORD, SEL(m, f, t) (m ? t : f), MOR, MNONE, MANY(m),
 *   LDEXP(p, k) (p 2^k for integral k in [-160, 130]);
 *   SLEEF(fn) (SLEEF's 1-ulp function fn, such as exp, of this set and element type, or
 *   libm's for one lane);
 *   ACC_ZERO, ACC_PLUS(a, b), ACC_ADD(a0, a1, v) (adds v's lanes into a0 and a1),
 *   ACC_HSUM(a) (to double), ACC_ROW(p, v) (p[0..W) += v in double, p a double array),
 *   ACC_ROW4(p, a, b, c, d) (p[0..W) += (a + b) + (c + d), added in double);
 *   (for an f32 vector set, instead of ACC_ADD, ACC_ROW and ACC_ROW4: F32_LO(v) and F32_HI(v),
 *   its halves widened to double vectors of ACC_N lanes, and ACC_LD/ACC_ST to load and store
 *   them; the three are then defined below);
 * and undefines them all at the end, so the next instantiation starts clean.
 *
 * The elementwise kernels and both tables' entries are generated from the list of ops in
 * vmath_ops.h (TG__VMATH_MAPS: each row's BODY is written in the macros above and the helpers
 * below); the reductions and the row sums are written out here.
 *
 * f32 notes: the fused f32 kernels use their own exp (exp_v: Cody-Waite reduction, degree-7
 * Taylor polynomial, exact scaling; at most 1.3 ulp over the whole range, measured over every
 * float) and tanh (tanh_v: (1 - e) / (1 + e) with e = exp(-2|x|) kept in parts, 2^k and
 * expm1(r), so that one formula is accurate near 0 and near 1; at most 1.95 ulp, measured over
 * every float on each instruction set) and erf (erf_v: two polynomial pieces, at most 1.12 ulp,
 * likewise measured). They are
 * inlined into the loops, about twice as fast as a SLEEF call (erf_v made gelu_erf four to
 * five times as fast at 16M elements as SLEEF's erf, which works in double-float arithmetic),
 * so that sigmoid, tanh, gelu, silu and their backward kernels keep up with memory (gelu_erf
 * and its backward, with two polynomials and an exp per element, reach half to two thirds of the
 * triad's rate at 16M in tg-bench on the 2-core development machine). The
 * plain f32 exp/log/... ops stay on SLEEF's 1-ulp functions; f64 uses SLEEF throughout. */

/* An f32 vector set accumulates in double: each float vector is two double vectors. */
#ifdef F32_LO
#define ACC_ADD(a0, a1, v)                                                                         \
    do {                                                                                           \
        V v_ = (v);                                                                                \
        a0 = ACC_PLUS(a0, F32_LO(v_));                                                             \
        a1 = ACC_PLUS(a1, F32_HI(v_));                                                             \
    } while (0)
#define ACC_ROW(p, v)                                                                              \
    do {                                                                                           \
        V v_ = (v);                                                                                \
        ACC_ST(p, ACC_PLUS(ACC_LD(p), F32_LO(v_)));                                                \
        ACC_ST((p) + ACC_N, ACC_PLUS(ACC_LD((p) + ACC_N), F32_HI(v_)));                            \
    } while (0)
#define ACC_ROW4(p, a, b, c, d)                                                                    \
    do {                                                                                           \
        V a_ = (a), b_ = (b), c_ = (c), d_ = (d);                                                  \
        ACCV lo_ = ACC_PLUS(ACC_PLUS(F32_LO(a_), F32_LO(b_)), ACC_PLUS(F32_LO(c_), F32_LO(d_)));   \
        ACCV hi_ = ACC_PLUS(ACC_PLUS(F32_HI(a_), F32_HI(b_)), ACC_PLUS(F32_HI(c_), F32_HI(d_)));   \
        ACC_ST(p, ACC_PLUS(ACC_LD(p), lo_));                                                       \
        ACC_ST((p) + ACC_N, ACC_PLUS(ACC_LD((p) + ACC_N), hi_));                                   \
    } while (0)
#endif

#define VM_CAT3_(a, b, c) a##b##c
#define VM_CAT3(a, b, c) VM_CAT3_(a, b, c)
#define FN(name) VM_CAT3(vm_##name, _, TS)

#define ONE SET((T)1)
#define ZERO SET((T)0)

/* ---- elementwise skeletons: full vectors, then one masked tail (same code, same rounding) -- */

/* The function <kernel>_<TS> computing y = BODY(a; C0, C1): the rows of KIND UNARY and SCALAR. */
#define VM_MAP_UNARY(kernel, BODY)                                                                 \
    static void VM_CAT3(kernel, _, TS)(int64_t n, const T *pa, const T *pb, T *py, T c0, T c1)     \
    {                                                                                              \
        (void)pb;                                                                                  \
        const V C0 = SET(c0), C1 = SET(c1);                                                        \
        (void)C0, (void)C1;                                                                        \
        int64_t i = 0;                                                                             \
        for (; i + W <= n; i += W) {                                                               \
            V a = LD(pa + i);                                                                      \
            ST(py + i, BODY);                                                                      \
        }                                                                                          \
        if (i < n) {                                                                               \
            TM m = TMASK(n - i);                                                                   \
            V a = LDT(pa + i, m);                                                                  \
            STT(py + i, m, BODY);                                                                  \
        }                                                                                          \
    }
#define VM_MAP_SCALAR VM_MAP_UNARY

/* The function <kernel>_<TS> computing y = BODY(a, b): the rows of KIND BINARY. */
#define VM_MAP_BINARY(kernel, BODY)                                                                \
    static void VM_CAT3(kernel, _, TS)(int64_t n, const T *pa, const T *pb, T *py, T c0, T c1)     \
    {                                                                                              \
        (void)c0, (void)c1;                                                                        \
        int64_t i = 0;                                                                             \
        for (; i + W <= n; i += W) {                                                               \
            V a = LD(pa + i), b = LD(pb + i);                                                      \
            ST(py + i, BODY);                                                                      \
        }                                                                                          \
        if (i < n) {                                                                               \
            TM m = TMASK(n - i);                                                                   \
            V a = LDT(pa + i, m), b = LDT(pb + i, m);                                              \
            STT(py + i, m, BODY);                                                                  \
        }                                                                                          \
    }

/* ---- f32's own exp and tanh ------------------------------------------------------------- */

#if VM_F32
/* The shared core of exp_v and expm1_parts_v: z = k ln2 + r with |r| <= ln2 / 2 (ln2 in two
 * parts, fused); sets *k and returns r. */
static inline V FN(exp_reduce_v)(V z, V *k)
{
    *k = ROUND(MUL(z, SET(1.44269504088896341f)));
    V r = FNMA(*k, SET(0.693145751953125f), z);
    return FNMA(*k, SET(1.42860682030941723212e-6f), r);
}

/* P(r) = 1/2 + r/6 + ... + r^5/5040, so that exp(r) = 1 + r + r^2 P(r) to the Taylor term in r^7
 * (truncation below 2^-27 for |r| <= ln2 / 2). */
static inline V FN(exp_poly_v)(V r)
{
    V p = SET(1.0f / 5040);
    p = FMA(p, r, SET(1.0f / 720));
    p = FMA(p, r, SET(1.0f / 120));
    p = FMA(p, r, SET(1.0f / 24));
    p = FMA(p, r, SET(1.0f / 6));
    return FMA(p, r, SET(0.5f));
}

/* exp(z) = 2^k exp(r), exp(r) = (1 + r) + r^2 P(r), then the exact scaling by 2^k. z is first
 * clamped to [-110, 89], where the result is already 0 or inf; NaN passes the clamp (MAX/MIN
 * return their second operand then). */
static inline V FN(exp_v)(V z)
{
    V k, r = FN(exp_reduce_v)(MIN(SET(89.0f), MAX(SET(-110.0f), z)), &k);
    return LDEXP(FMA(FN(exp_poly_v)(r), MUL(r, r), ADD(r, ONE)), k);
}

/* exp(z) = 2^k (1 + expm1(r)) for z <= 0, in parts: returns expm1(r) = r + r^2 P(r) (truncation
 * below 2^-26 relative) and sets *s = 2^k. z is clamped at -40, where exp(z) < 2^-57 is
 * negligible beside 1 in f32 and 2^k stays normal; NaN passes the clamp. */
static inline V FN(expm1_parts_v)(V z, V *s)
{
    V k, r = FN(exp_reduce_v)(MAX(SET(-40.0f), z), &k);
    *s = LDEXP(ONE, k);
    return FMA(FN(exp_poly_v)(r), MUL(r, r), r);
}

/* tanh(x) = sign(x) tanh(|x|), tanh(a) = (1 - e) / (1 + e) with e = exp(-2a) = s (1 + m): the
 * numerator as s m + (s - 1) and the denominator as s m + (s + 1), each one fused rounding of
 * nearly exact terms (s - 1 and s + 1 are exact while e matters), so there is no cancellation
 * near 0 (the numerator is m itself when k = 0) and no loss near 1. One branch-free formula over
 * the whole range; NaN stays NaN, the sign of zero is kept. */
static inline V FN(tanh_v)(V x)
{
    V s, m = FN(expm1_parts_v)(MUL(ABS(x), SET(-2.0f)), &s);
    V q = DIV(FMA(s, m, SUB(s, ONE)), FMA(s, m, ADD(s, ONE))); /* -tanh(|x|) */
    return COPYSIGN(q, x);
}
/* erf(x) in two pieces, both computed and one selected: for |x| < 0.921875, x + x P(x^2) (the
 * leading x exact, P in fused multiply-adds); above, 1 - exp(-R(|x|)) with R a polynomial for
 * -log(erfc) (erfc <= 0.19 there, so exp's error is small beside 1), |x| clamped at 3.9375,
 * past which erf rounds to 1, and the sign restored. Coefficients: least-squares fits in double
 * (P relative to erf(x) / x - 1; R weighted by erfc, so that its error counts as absolute error
 * in erf), iteratively reweighted towards minimax, rounded to f32. At most 1.12 ulp, measured
 * over every float on each instruction set. NaN passes the clamp (MIN's second operand). */
static inline V FN(erf_v)(V x)
{
    V s = MUL(x, x), t = ABS(x);
    V p = SET(-0x1.3a17f4p-11f);
    p = FMA(p, s, SET(0x1.473b98p-8f));
    p = FMA(p, s, SET(-0x1.b68b4ap-6f));
    p = FMA(p, s, SET(0x1.ce1a6ap-4f));
    p = FMA(p, s, SET(-0x1.8126e6p-2f));
    p = FMA(p, s, SET(0x1.06eba6p-3f));
    V near = FMA(x, p, x);
    V tc = MIN(SET(3.9375f), t);
    V r = SET(-0x1.986518p-13f);
    r = FMA(r, tc, SET(0x1.8d5cc6p-9f));
    r = FMA(r, tc, SET(-0x1.6b6c1ap-6f));
    r = FMA(r, tc, SET(0x1.a9534ap-4f));
    r = FMA(r, tc, SET(0x1.464a46p-1f));
    r = FMA(r, tc, SET(0x1.20ab6cp+0f));
    r = FMA(r, tc, SET(0x1.b81d0cp-13f));
    V far = COPYSIGN(SUB(ONE, FN(exp_v)(SUB(ZERO, r))), x);
    return SEL(CMPLT(t, SET(0.921875f)), far, near);
}
#define FAST_EXP(v) FN(exp_v)(v)
#define TANH(v) FN(tanh_v)(v)
#define ERF(v) FN(erf_v)(v)
#else
#define FAST_EXP(v) SLEEF(exp)(v)
#define TANH(v) SLEEF(tanh)(v)
#define ERF(v) SLEEF(erf)(v)
#endif

/* ---- gelu (tanh approximation): u = K0 (x + K1 x^3) --------------------------------------- */

#define GELU_U(x, x2) MUL(SET((T)0.7978845608028654), ADD(x, MUL(SET((T)0.044715), MUL(x2, x))))

#if VM_F32
/* f32: gelu(x) = 0.5 x (1 + tanh(u)) = x sigmoid(2u) = x / (1 + exp(-2u)): the same function
 * with one exp and one division, and no cancellation in 1 + tanh(u) for x < 0. -2u is taken as
 * x (-2 K0 - 2 K0 K1 x^2) with one fused multiply-add.
 * gelu'(x) = s + 2 x s (1 - s) u' = s (1 + x (1 - s) 2u'),  s = sigmoid(2u),
 * 2u' = 2 K0 + 6 K0 K1 x^2. */
#define GELU_M2U(x, x2)                                                                            \
    MUL(x, FMA(x2, SET((float)(-2 * 0.7978845608028654 * 0.044715)),                               \
               SET((float)(-2 * 0.7978845608028654))))
static inline V FN(gelu_v)(V x) { return DIV(x, ADD(ONE, FAST_EXP(GELU_M2U(x, MUL(x, x))))); }
static inline V FN(gelu_backward_v)(V g, V x)
{
    V x2 = MUL(x, x);
    V s = DIV(ONE, ADD(ONE, FAST_EXP(GELU_M2U(x, x2))));
    V du2 = FMA(x2, SET((float)(6 * 0.7978845608028654 * 0.044715)),
                SET((float)(2 * 0.7978845608028654)));
    return MUL(MUL(g, s), FMA(MUL(x, du2), SUB(ONE, s), ONE));
}
#else
/* f64: PyTorch's order of operations, y = 0.5 x (1 + tanh(u)) and
 * gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) u',  t = tanh(u). */
static inline V FN(gelu_v)(V x)
{
    V t = SLEEF(tanh)(GELU_U(x, MUL(x, x)));
    return MUL(MUL(SET(0.5), x), ADD(ONE, t));
}
static inline V FN(gelu_backward_v)(V g, V x)
{
    V x2 = MUL(x, x);
    V t = SLEEF(tanh)(GELU_U(x, x2));
    V du = MUL(SET(0.7978845608028654), ADD(ONE, MUL(SET(3 * 0.044715), x2)));
    V left = MUL(SET(0.5), ADD(ONE, t));
    V right = MUL(MUL(MUL(SET(0.5), x), SUB(ONE, MUL(t, t))), du);
    return MUL(g, ADD(left, right));
}
#endif

/* softplus(x) = max(x, 0) + (x > 20 ? 0 : log1p(exp(-|x|))); NaN: 0 + NaN. */
static inline V FN(softplus_v)(V x)
{
    V l = SLEEF(log1p)(FAST_EXP(SUB(ZERO, ABS(x))));
    return ADD(SEL(CMPGT(x, ZERO), ZERO, x), SEL(CMPGT(x, SET((T)20)), l, ZERO));
}

/* ---- silu and exact gelu, in PyTorch's order of operations -------------------------------- */

/* silu'(x) g = g s (1 + x (1 - s)),  s = sigmoid(x) = 1 / (1 + exp(-x)). */
static inline V FN(silu_backward_v)(V g, V x)
{
    V s = DIV(ONE, ADD(ONE, FAST_EXP(SUB(ZERO, x))));
    return MUL(MUL(g, s), ADD(ONE, MUL(x, SUB(ONE, s))));
}

/* Phi(x) = 0.5 (1 + erf(x / sqrt 2)), PyTorch's formula, with f32's own erf (SLEEF's 1-ulp erf
 * for f64). 1 + erf cancels for x << 0, as in PyTorch: the error is then about an ulp of 1. */
#define GELU_CDF(x) MUL(SET((T)0.5), ADD(ONE, ERF(MUL(x, SET((T)0.70710678118654752440)))))

/* gelu_erf(x) = x Phi(x): the bits of PyTorch's (x 0.5) (1 + erf), halving being exact (but
 * for subnormal x). */
static inline V FN(gelu_erf_v)(V x) { return MUL(x, GELU_CDF(x)); }

/* gelu_erf'(x) g = g (Phi(x) + x phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi). */
static inline V FN(gelu_erf_backward_v)(V g, V x)
{
    V pdf = MUL(SET((T)0.39894228040143267794), FAST_EXP(MUL(MUL(x, x), SET((T)-0.5))));
    return MUL(g, ADD(GELU_CDF(x), MUL(x, pdf)));
}

/* ---- the elementwise kernels ------------------------------------------------------------- */

/* One kernel per row of TG__VMATH_MAPS (vmath_ops.h): vm_<name>_<TS> computes the row's BODY
 * with the skeleton of its KIND. */
#define VM_MAP_KERNEL(name, NAME, KIND, COST, BODY) VM_MAP_##KIND(vm_##name, BODY)
TG__VMATH_MAPS(VM_MAP_KERNEL)
#undef VM_MAP_KERNEL

/* ---- reductions -------------------------------------------------------------------------- */

/* Four independent double accumulators (two per vector for f32, whose lanes widen to two
 * double vectors), so the sum runs at load speed rather than at one add latency per element. */
static double FN(sum)(int64_t n, const T *x, T shift, T *y)
{
    (void)shift, (void)y;
    ACCV s0 = ACC_ZERO, s1 = ACC_ZERO, s2 = ACC_ZERO, s3 = ACC_ZERO;
    int64_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
        ACC_ADD(s0, s1, LD(x + i));
        ACC_ADD(s2, s3, LD(x + i + W));
    }
    for (; i + W <= n; i += W)
        ACC_ADD(s0, s1, LD(x + i));
    if (i < n)
        ACC_ADD(s2, s3, LDT(x + i, TMASK(n - i)));
    return ACC_HSUM(ACC_PLUS(ACC_PLUS(s0, s2), ACC_PLUS(s1, s3)));
}

/* The lanes' maximum of v (MAX: a lane's NaN was already noted by the caller). */
static inline double FN(hmax)(V v, int sign)
{
    T buf[W];
    ST(buf, v);
    T m = buf[0];
    for (int l = 1; l < W; l++)
        m = sign > 0 ? (buf[l] > m ? buf[l] : m) : (buf[l] < m ? buf[l] : m);
    return (double)m;
}

/* Max (sign 1) or min (sign -1), NaN if any element is NaN: two running extremes and an
 * "any NaN" mask, no dependency on a comparison per element. */
#define VM_EXTREME(name, OP, sign)                                                                 \
    static double FN(name)(int64_t n, const T *x, T shift, T *y)                                   \
    {                                                                                              \
        (void)shift, (void)y;                                                                      \
        const V init = SET((T)(-sign * INFINITY)); /* the identity: -inf for max */                \
        V m0 = init, m1 = init;                                                                    \
        M nan = MNONE;                                                                             \
        int64_t i = 0;                                                                             \
        for (; i + 2 * W <= n; i += 2 * W) {                                                       \
            V a = LD(x + i), b = LD(x + i + W);                                                    \
            nan = MOR(nan, MOR(CMPUNORD(a, a), CMPUNORD(b, b)));                                   \
            m0 = OP(m0, a);                                                                        \
            m1 = OP(m1, b);                                                                        \
        }                                                                                          \
        for (; i + W <= n; i += W) {                                                               \
            V a = LD(x + i);                                                                       \
            nan = MOR(nan, CMPUNORD(a, a));                                                        \
            m0 = OP(m0, a);                                                                        \
        }                                                                                          \
        if (i < n) {                                                                               \
            V a = LDTF(x + i, TMASK(n - i), init);                                                 \
            nan = MOR(nan, CMPUNORD(a, a));                                                        \
            m1 = OP(m1, a);                                                                        \
        }                                                                                          \
        return MANY(nan) ? (double)NAN : FN(hmax)(OP(m0, m1), sign);                               \
    }
VM_EXTREME(maxall, MAX, 1)
VM_EXTREME(minall, MIN, -1)

/* y = exp(x - shift) (stored unless y is NULL) and its sum in double. Tail lanes are -inf,
 * whose exp is 0. */
static double FN(exp_sum)(int64_t n, const T *x, T shift, T *y)
{
    const V S = SET(shift);
    ACCV s0 = ACC_ZERO, s1 = ACC_ZERO, s2 = ACC_ZERO, s3 = ACC_ZERO;
    int64_t i = 0;
    for (; i + W <= n; i += W) {
        V e = FAST_EXP(SUB(LD(x + i), S));
        if (y)
            ST(y + i, e);
        ACC_ADD(s0, s1, e);
    }
    if (i < n) {
        TM m = TMASK(n - i);
        V e = FAST_EXP(SUB(LDTF(x + i, m, SET((T)-INFINITY)), S));
        if (y)
            STT(y + i, m, e);
        ACC_ADD(s2, s3, e);
    }
    return ACC_HSUM(ACC_PLUS(ACC_PLUS(s0, s2), ACC_PLUS(s1, s3)));
}

/* acc[j] += x[r stride + j] over the rows in groups of four (added in double as
 * (x0 + x1) + (x2 + x3), then into acc), then the last rows one by one: the grouping depends on
 * the row count alone. Two groups go per pass, so acc is loaded and stored once per eight rows
 * and eight rows stream in together (memory-level parallelism for long strided columns). */
#define ROWS_GROUP(acc, x0, x1, x2, x3, j)                                                         \
    ((acc)[j] += ((double)(x0)[j] + (double)(x1)[j]) + ((double)(x2)[j] + (double)(x3)[j]))
static void FN(add_rows)(int64_t rows, int64_t cols, int64_t stride, const T *x, double *acc)
{
    int64_t r = 0;
    for (; r + 8 <= rows; r += 8) {
        const T *x0 = x + r * stride, *x1 = x0 + stride, *x2 = x1 + stride, *x3 = x2 + stride;
        const T *x4 = x3 + stride, *x5 = x4 + stride, *x6 = x5 + stride, *x7 = x6 + stride;
        int64_t j = 0;
        for (; j + W <= cols; j += W) {
            ACC_ROW4(acc + j, LD(x0 + j), LD(x1 + j), LD(x2 + j), LD(x3 + j));
            ACC_ROW4(acc + j, LD(x4 + j), LD(x5 + j), LD(x6 + j), LD(x7 + j));
        }
        for (; j < cols; j++) {
            ROWS_GROUP(acc, x0, x1, x2, x3, j);
            ROWS_GROUP(acc, x4, x5, x6, x7, j);
        }
    }
    for (; r + 4 <= rows; r += 4) {
        const T *x0 = x + r * stride, *x1 = x0 + stride, *x2 = x1 + stride, *x3 = x2 + stride;
        int64_t j = 0;
        for (; j + W <= cols; j += W)
            ACC_ROW4(acc + j, LD(x0 + j), LD(x1 + j), LD(x2 + j), LD(x3 + j));
        for (; j < cols; j++)
            ROWS_GROUP(acc, x0, x1, x2, x3, j);
    }
    for (; r < rows; r++) {
        const T *xr = x + r * stride;
        int64_t j = 0;
        for (; j + W <= cols; j += W)
            ACC_ROW(acc + j, LD(xr + j));
        for (; j < cols; j++)
            acc[j] += (double)xr[j];
    }
}
#undef ROWS_GROUP

#undef ONE
#undef ZERO
#undef FAST_EXP
#undef TANH
#undef ERF
#undef GELU_U
#undef GELU_M2U
#undef GELU_CDF
#undef VM_MAP_UNARY
#undef VM_MAP_SCALAR
#undef VM_MAP_BINARY
#undef VM_EXTREME
#undef FN

/* The table entries of one element type, for the includer's table: vm_<name>_<f32|f64> at
 * TG__VM_<NAME> for each row of TG__VMATH_MAPS and of TG__VMATH_REDUCTIONS (vmath_ops.h). */
#ifndef VM_TABLE_MAP
#define VM_MAP_ENTRY_f32(name, NAME, KIND, COST, BODY) [TG__VM_##NAME] = vm_##name##_f32,
#define VM_MAP_ENTRY_f64(name, NAME, KIND, COST, BODY) [TG__VM_##NAME] = vm_##name##_f64,
#define VM_REDUCTION_ENTRY_f32(name, NAME) [TG__VM_##NAME] = vm_##name##_f32,
#define VM_REDUCTION_ENTRY_f64(name, NAME) [TG__VM_##NAME] = vm_##name##_f64,
#define VM_TABLE_MAP(TSX)                                                                          \
    {                                                                                              \
        TG__VMATH_MAPS(VM_MAP_ENTRY_##TSX)                                                         \
    }
#define VM_TABLE_RED(TSX)                                                                          \
    {                                                                                              \
        TG__VMATH_REDUCTIONS(VM_REDUCTION_ENTRY_##TSX)                                             \
    }
#endif

/* What the includer defined for this element type. */
#undef T
#undef TS
#undef VM_F32
#undef W
#undef V
#undef M
#undef TM
#undef ACCV
#undef LD
#undef ST
#undef TMASK
#undef LDT
#undef LDTF
#undef STT
#undef SET
#undef ADD
#undef SUB
#undef MUL
#undef DIV
#undef FMA
#undef FNMA
#undef MAX
#undef MIN
#undef ABS
#undef SQRT
#undef ROUND
#undef COPYSIGN
#undef CMPLT
#undef CMPGT
#undef CMPUNORD
#undef SEL
#undef MOR
#undef MNONE
#undef MANY
#undef LDEXP
#undef SLEEF
#undef ACC_ZERO
#undef ACC_PLUS
#undef ACC_ADD
#undef ACC_HSUM
#undef ACC_ROW
#undef ACC_ROW4
#undef F32_LO
#undef F32_HI
#undef ACC_LD
#undef ACC_ST
#undef ACC_N
