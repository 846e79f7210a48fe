/* pool.c — 2-d pooling over NCHW windows with PyTorch's semantics: max_pool2d (padding counts
 * as -inf), avg_pool2d (padding zeros count in the average: count_include_pad, floor mode), and
 * the ops their gradients are written with. Max pooling's gradient routes through the argmax of
 * each window, recomputed from x: max_pool2d_backward(g, x) scatters g there and
 * max_pool2d_select(v, x) gathers v from there; each is the other's gradient, so max_pool2d is
 * differentiable to any order. avg_pool2d and avg_pool2d_backward are each other's transpose. */
#include "kernels.h"
#include "ops.h"
#include "parallel.h"
#include "vmath.h"

/* avg_pool2d_backward: `shape` is x's shape (the other ops take it from their inputs). */
typedef struct pool_attr {
    tg_pool2d_params p; /* stride 0: the kernel size */
    int64_t shape[4];
} pool_attr;

/* Sizes of one pooling. */
typedef struct pgeom {
    int64_t planes, h, w; /* planes = n * c */
    int64_t kh, kw, sh, sw, ph, pw;
    int64_t oh, ow;
} pgeom;

/* Floor division for a positive divisor. */
static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

static void pgeom_fill(const tg_pool2d_params *p, const int64_t *xs, pgeom *g)
{
    g->planes = xs[0] * xs[1], g->h = xs[2], g->w = xs[3];
    g->kh = p->kernel[0], g->kw = p->kernel[1];
    g->sh = p->stride[0] ? p->stride[0] : p->kernel[0];
    g->sw = p->stride[1] ? p->stride[1] : p->kernel[1];
    g->ph = p->padding[0], g->pw = p->padding[1];
    g->oh = floor_div(g->h + 2 * g->ph - g->kh, g->sh) + 1;
    g->ow = floor_div(g->w + 2 * g->pw - g->kw, g->sw) + 1;
}

/* Validates the attributes against the 4-d x shape xs (PyTorch's rules) and fills *g. */
static tg_status pool_validate(tg_check *c, const int64_t *xs, pgeom *g)
{
    const tg_pool2d_params *p = &((const pool_attr *)c->attr)->p;
    static const char *const dims[2] = {"height", "width"};
    int64_t numel;
    if (!tg__shape_ok(4, xs, &numel))
        return tg_check_fail(c, TG_SHAPE, "invalid input shape (negative or too large)");
    for (int d = 0; d < 2; d++) {
        if (p->kernel[d] < 1)
            return tg_check_fail(c, TG_INVALID, "kernel size must be >= 1, got %d along %s",
                                 p->kernel[d], dims[d]);
        if (p->stride[d] < 0)
            return tg_check_fail(c, TG_INVALID,
                                 "stride must be >= 1 (0 means the kernel size), got %d along %s",
                                 p->stride[d], dims[d]);
        if (p->padding[d] < 0 || p->padding[d] > p->kernel[d] / 2)
            return tg_check_fail(c, TG_INVALID,
                                 "padding must be between 0 and half the kernel size (%d), got "
                                 "%d along %s",
                                 p->kernel[d] / 2, p->padding[d], dims[d]);
    }
    pgeom_fill(p, xs, g);
    if (g->oh < 1 || g->ow < 1)
        return tg_check_fail(c, TG_SHAPE,
                             "output size %lldx%lld is too small (input %lldx%lld, kernel %dx%d, "
                             "padding %dx%d)",
                             (long long)g->oh, (long long)g->ow, (long long)g->h, (long long)g->w,
                             p->kernel[0], p->kernel[1], p->padding[0], p->padding[1]);
    return TG_OK;
}

/* Input i has the pooled shape [n, c, oh, ow] of x shape xs. */
static tg_status check_pooled(tg_check *c, int i, const int64_t *xs, const pgeom *g)
{
    const int64_t *s = c->in[i]->shape;
    if (s[0] != xs[0] || s[1] != xs[1] || s[2] != g->oh || s[3] != g->ow)
        return tg_check_fail(c, TG_SHAPE,
                             "gradient is [%lld,%lld,%lld,%lld], the pooled output is "
                             "[%lld,%lld,%lld,%lld]",
                             (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3],
                             (long long)xs[0], (long long)xs[1], (long long)g->oh,
                             (long long)g->ow);
    return TG_OK;
}

/* Output: the pooled shape of xs, or xs itself (the backward ops). */
static void set_out(tg_check *c, const int64_t *xs, const pgeom *g, bool pooled)
{
    c->out->dtype = c->in[0]->dtype;
    c->out->ndim = 4;
    memcpy(c->out->shape, xs, 4 * sizeof *xs);
    if (pooled)
        c->out->shape[2] = g->oh, c->out->shape[3] = g->ow;
}

/* The window of output (oy, ox) clipped to the input: rows [*y0, *y1), columns [*x0, *x1). */
static void window(const pgeom *g, int64_t oy, int64_t ox, int64_t *y0, int64_t *y1, int64_t *x0,
                   int64_t *x1)
{
    int64_t ys = oy * g->sh - g->ph, xs = ox * g->sw - g->pw;
    int64_t ye = ys + g->kh < g->h ? ys + g->kh : g->h, xe = xs + g->kw < g->w ? xs + g->kw : g->w;
    *y0 = ys > 0 ? ys : 0, *y1 = ye;
    *x0 = xs > 0 ? xs : 0, *x1 = xe;
}

/* Output columns handled together: the argmax search runs across them, one window element at a
 * time, so its selects are independent (no data-dependent branch, which random data would
 * mispredict) and the loop vectorises (f32 with 32-bit positions). */
#define BLOCK 64

/* name(xp, g, oy, ox0, n, out): out[q] = the flat index into x's plane xp of the max of window
 * (oy, ox0 + q), q < n <= BLOCK, as PyTorch picks it: the first maximum in row-major window
 * order, or the last NaN if any. Padding (-inf) never wins: with padding <= kernel/2 every window
 * holds an input element, and the search starts at the window's first one. Positions are of
 * type I (int32_t needs planes of fewer than 2^31 elements). */
#define ARGMAX(T, I, name)                                                                         \
    static void name##_step(const T *restrict row, int64_t sw, int64_t c0, int64_t lo, int64_t hi, \
                            I base, T *restrict m, I *restrict at, I *restrict nan_at)             \
    {                                                                                              \
        for (int64_t q = lo; q < hi; q++) {                                                        \
            T val = row[c0 + q * sw];                                                              \
            I pos = base + (I)(q * sw);                                                            \
            I gt = -(I)(val > m[q]), nan = -(I)(val != val); /* masks, not branches */             \
            at[q] = (pos & gt) | (at[q] & ~gt);                                                    \
            nan_at[q] = (pos & nan) | (nan_at[q] & ~nan);                                          \
            m[q] = val > m[q] ? val : m[q];                                                        \
        }                                                                                          \
    }                                                                                              \
    static void name(const T *xp, const pgeom *g, int64_t oy, int64_t ox0, int64_t n,              \
                     int64_t *out)                                                                 \
    {                                                                                              \
        T m[BLOCK];                                                                                \
        I at[BLOCK], nan_at[BLOCK];                                                                \
        const int64_t w = g->w, sw = g->sw, ys = oy * g->sh - g->ph;                               \
        const int64_t y0 = ys > 0 ? ys : 0, y1 = ys + g->kh < g->h ? ys + g->kh : g->h;            \
        for (int64_t q = 0; q < n; q++) {                                                          \
            int64_t xs = (ox0 + q) * sw - g->pw;                                                   \
            m[q] = -(T)INFINITY;                                                                   \
            nan_at[q] = -1;                                                                        \
            at[q] = (I)(y0 * w + (xs > 0 ? xs : 0));                                               \
        }                                                                                          \
        for (int64_t iy = y0; iy < y1; iy++)                                                       \
            for (int64_t j = 0; j < g->kw; j++) {                                                  \
                int64_t lo, hi, off = j - g->pw, c0 = ox0 * sw + off;                              \
                tg__valid_range(off, sw, w, g->ow, &lo, &hi);                                      \
                lo = lo > ox0 ? lo - ox0 : 0;                                                      \
                hi = hi < ox0 + n ? hi - ox0 : n;                                                  \
                name##_step(xp + iy * w, sw, c0, lo, hi, (I)(iy * w + c0), m, at, nan_at);         \
            }                                                                                      \
        for (int64_t q = 0; q < n; q++)                                                            \
            out[q] = nan_at[q] >= 0 ? nan_at[q] : at[q];                                           \
    }
ARGMAX(float, int32_t, argmax32_f32)
ARGMAX(float, int64_t, argmax64_f32)
ARGMAX(double, int64_t, argmax_f64)

static void argmax_f32(const float *xp, const pgeom *g, int64_t oy, int64_t ox0, int64_t n,
                       int64_t *out)
{
    if (g->h * g->w <= INT32_MAX)
        argmax32_f32(xp, g, oy, ox0, n, out);
    else
        argmax64_f32(xp, g, oy, ox0, n, out);
}

/* y = v at each window's argmax of x (select), or dx = zeros with g added there (scatter;
 * overlapping windows accumulate). */
#define MAX_POOL(T, argmax, select, scatter)                                                       \
    static void select(const T *v, const T *x, T *y, const pgeom *g)                               \
    {                                                                                              \
        int64_t hw = g->h * g->w, ohw = g->oh * g->ow, at[BLOCK];                                  \
        for (int64_t p = 0; p < g->planes; p++)                                                    \
            for (int64_t oy = 0; oy < g->oh; oy++)                                                 \
                for (int64_t ox0 = 0; ox0 < g->ow; ox0 += BLOCK) {                                 \
                    int64_t n = g->ow - ox0 < BLOCK ? g->ow - ox0 : BLOCK;                         \
                    const T *vp = v + p * hw;                                                      \
                    T *yr = y + p * ohw + oy * g->ow + ox0;                                        \
                    argmax(x + p * hw, g, oy, ox0, n, at);                                         \
                    for (int64_t q = 0; q < n; q++)                                                \
                        yr[q] = vp[at[q]];                                                         \
                }                                                                                  \
    }                                                                                              \
    static void scatter(const T *gr, const T *x, T *dx, const pgeom *g)                            \
    {                                                                                              \
        int64_t hw = g->h * g->w, ohw = g->oh * g->ow, at[BLOCK];                                  \
        memset(dx, 0, (size_t)(g->planes * hw) * sizeof(T));                                       \
        for (int64_t p = 0; p < g->planes; p++)                                                    \
            for (int64_t oy = 0; oy < g->oh; oy++)                                                 \
                for (int64_t ox0 = 0; ox0 < g->ow; ox0 += BLOCK) {                                 \
                    int64_t n = g->ow - ox0 < BLOCK ? g->ow - ox0 : BLOCK;                         \
                    const T *gr_ = gr + p * ohw + oy * g->ow + ox0;                                \
                    T *dp = dx + p * hw;                                                           \
                    argmax(x + p * hw, g, oy, ox0, n, at);                                         \
                    for (int64_t q = 0; q < n; q++)                                                \
                        dp[at[q]] += gr_[q];                                                       \
                }                                                                                  \
    }
MAX_POOL(float, argmax_f32, select_f32, scatter_f32)
MAX_POOL(double, argmax_f64, select_f64, scatter_f64)

/* The usual window, 2x2 with stride 2 and no padding, has loops of its own. A row of windows
 * is one vector of them (two of the input rows' 2*L elements each, their even and odd
 * elements pulled apart by shuffles), the argmax found by a tournament of masked selects; and
 * the scatter writes every element of dx once instead of zeroing dx and adding (the windows
 * tile the input; an odd last row or column belongs to none). Rows of the trainer's layers
 * have 14 and 7 windows, fewer than a vector's 16: each row is one vector whose spare lanes
 * read the rows after it and write over outputs that the next row then writes again, so rows
 * go in order, and the last ones, where a whole vector would pass the end of the tensor, take
 * the element-by-element loop. On the trainer's first pooling (f32 [128,32,28,28], one thread)
 * the generic loops above took 4.3 ms forward and 5.4 ms backward, and a loop over windows
 * with the comparisons below in scalar code about 10 ms each (the compiler branched on them,
 * and random data mispredicts).
 *
 * Which element of a window (0: top left, 1: top right, 2 and 3: the row below) PyTorch's
 * argmax picks: the last NaN if any, else the first maximum, as a sequential scan in which a
 * later element wins when it is greater or NaN. The tournament gives the same answer: each
 * pair's winner by that rule, then the second pair's winner over the first's by it (a tie
 * keeps the earlier element; a NaN in the second pair beats the first's). */
static bool is_2x2(const pgeom *g)
{
    return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0;
}

#if defined(__clang__)
#define SHUFFLE(a, b, I, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, I, ...) __builtin_shuffle(a, b, (I){__VA_ARGS__})
#endif
/* The even and odd elements of two vectors of L lanes, and the two halves of their interleaving
 * (a0 b0 a1 b1 ...). */
#define EVEN_16(a, b, I) SHUFFLE(a, b, I, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#define ODD_16(a, b, I) SHUFFLE(a, b, I, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
#define LOW_16(a, b, I) SHUFFLE(a, b, I, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define HIGH_16(a, b, I)                                                                           \
    SHUFFLE(a, b, I, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
#define EVEN_8(a, b, I) SHUFFLE(a, b, I, 0, 2, 4, 6, 8, 10, 12, 14)
#define ODD_8(a, b, I) SHUFFLE(a, b, I, 1, 3, 5, 7, 9, 11, 13, 15)
#define LOW_8(a, b, I) SHUFFLE(a, b, I, 0, 8, 1, 9, 2, 10, 3, 11)
#define HIGH_8(a, b, I) SHUFFLE(a, b, I, 4, 12, 5, 13, 6, 14, 7, 15)
#define EVEN_4(a, b, I) SHUFFLE(a, b, I, 0, 2, 4, 6)
#define ODD_4(a, b, I) SHUFFLE(a, b, I, 1, 3, 5, 7)
#define LOW_4(a, b, I) SHUFFLE(a, b, I, 0, 4, 1, 5)
#define HIGH_4(a, b, I) SHUFFLE(a, b, I, 2, 6, 3, 7)
#define EVEN_2(a, b, I) SHUFFLE(a, b, I, 0, 2)
#define ODD_2(a, b, I) SHUFFLE(a, b, I, 1, 3)
#define LOW_2(a, b, I) SHUFFLE(a, b, I, 0, 2)
#define HIGH_2(a, b, I) SHUFFLE(a, b, I, 1, 3)

/* mask ? a : b lane by lane (mask lanes all ones or zero), on the bits. */
#define BLEND(V, I, mask, a, b) ((V)(((I)(a) & (mask)) | ((I)(b) & ~(mask))))
/* A later element wins over the best so far when it is greater, or NaN. */
#define WINS(later, best) (((later) > (best)) | ((later) != (later)))

#define PICK(T, pick)                                                                              \
    static inline int pick(T a, T b, T c, T d)                                                     \
    {                                                                                              \
        int t1 = WINS(b, a), t2 = WINS(d, c);                                                      \
        return WINS(t2 ? d : c, t1 ? b : a) ? 2 + t2 : t1;                                         \
    }
PICK(float, pick_f32)
PICK(double, pick_f64)

/* One element type T (I: the integer of its width, `pick` its scalar argmax) in vectors of L
 * lanes, for one instruction set: select2_SFX and scatter2_SFX. */
#define POOL_2X2(T, I, pick, L, SFX, TARGET)                                                       \
    typedef T vec_##SFX __attribute__((vector_size(L * sizeof(T))));                               \
    typedef I mask_##SFX __attribute__((vector_size(L * sizeof(T))));                              \
    static TARGET void select2_##SFX(const T *v, const T *x, T *y, const pgeom *g, int64_t p0,     \
                                     int64_t p1)                                                   \
    {                                                                                              \
        typedef vec_##SFX V;                                                                       \
        typedef mask_##SFX J;                                                                      \
        const int64_t w = g->w, ow = g->ow, rows = p1 * g->oh, end = p1 * g->h * w;                \
        for (int64_t r = p0 * g->oh; r < rows; r++) { /* a row of windows */                       \
            int64_t top = (r / g->oh * g->h + 2 * (r % g->oh)) * w, q = 0;                         \
            const T *x0 = x + top, *x1 = x0 + w, *v0 = v + top, *v1 = v0 + w;                      \
            T *yr = y + r * ow;                                                                    \
            for (; q < ow && top + w + 2 * (q + L) <= end && (r + 1) * ow + L <= rows * ow;        \
                 q += L) {                                                                         \
                V p[2], s[2], a, b, c, d, va, vb, vc, vd;                                          \
                memcpy(p, x0 + 2 * q, sizeof p), a = EVEN_##L(p[0], p[1], J);                      \
                b = ODD_##L(p[0], p[1], J);                                                        \
                memcpy(p, x1 + 2 * q, sizeof p), c = EVEN_##L(p[0], p[1], J);                      \
                d = ODD_##L(p[0], p[1], J);                                                        \
                memcpy(s, v0 + 2 * q, sizeof s), va = EVEN_##L(s[0], s[1], J);                     \
                vb = ODD_##L(s[0], s[1], J);                                                       \
                memcpy(s, v1 + 2 * q, sizeof s), vc = EVEN_##L(s[0], s[1], J);                     \
                vd = ODD_##L(s[0], s[1], J);                                                       \
                J t1 = WINS(b, a), t2 = WINS(d, c);                                                \
                V w1 = BLEND(V, J, t1, b, a), w2 = BLEND(V, J, t2, d, c);                          \
                J t3 = WINS(w2, w1);                                                               \
                V out = BLEND(V, J, t3, BLEND(V, J, t2, vd, vc), BLEND(V, J, t1, vb, va));         \
                memcpy(yr + q, &out, sizeof out);                                                  \
            }                                                                                      \
            for (; q < ow; q++) {                                                                  \
                int at = pick(x0[2 * q], x0[2 * q + 1], x1[2 * q], x1[2 * q + 1]);                 \
                yr[q] = (at & 2 ? v1 : v0)[2 * q + (at & 1)];                                      \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    static TARGET void scatter2_##SFX(const T *gr, const T *x, T *dx, const pgeom *g, int64_t p0,  \
                                      int64_t p1)                                                  \
    {                                                                                              \
        typedef vec_##SFX V;                                                                       \
        typedef mask_##SFX J;                                                                      \
        const int64_t w = g->w, ow = g->ow, rows = p1 * g->oh, end = p1 * g->h * w;                \
        for (int64_t r = p0 * g->oh; r < rows; r++) {                                              \
            int64_t oy = r % g->oh, top = (r / g->oh * g->h + 2 * oy) * w, q = 0;                  \
            const T *x0 = x + top, *x1 = x0 + w, *gr_ = gr + r * ow;                               \
            T *d0 = dx + top, *d1 = d0 + w;                                                        \
            /* The top row first, then the bottom one: the top row's last vector writes over       \
             * the start of the bottom row. */                                                     \
            int64_t whole = 0;                                                                     \
            while (whole < ow && top + w + 2 * (whole + L) <= end                                  \
                   && (r + 1) * ow + L <= rows * ow)                                               \
                whole += L;                                                                        \
            for (int bottom = 0; bottom < 2; bottom++)                                             \
                for (q = 0; q < whole; q += L) {                                                   \
                    V p[2], a, b, c, d, gv, e, o, out[2];                                          \
                    memcpy(p, x0 + 2 * q, sizeof p), a = EVEN_##L(p[0], p[1], J);                  \
                    b = ODD_##L(p[0], p[1], J);                                                    \
                    memcpy(p, x1 + 2 * q, sizeof p), c = EVEN_##L(p[0], p[1], J);                  \
                    d = ODD_##L(p[0], p[1], J);                                                    \
                    memcpy(&gv, gr_ + q, sizeof gv);                                               \
                    J t1 = WINS(b, a), t2 = WINS(d, c);                                            \
                    J t3 = WINS(BLEND(V, J, t2, d, c), BLEND(V, J, t1, b, a));                     \
                    J pair = bottom ? t3 : ~t3, second = bottom ? t2 : t1;                         \
                    e = (V)((J)gv & pair & ~second), o = (V)((J)gv & pair & second);               \
                    out[0] = LOW_##L(e, o, J), out[1] = HIGH_##L(e, o, J);                         \
                    memcpy((bottom ? d1 : d0) + 2 * q, out, sizeof out);                           \
                }                                                                                  \
            q = whole;                                                                             \
            for (; q < ow; q++) {                                                                  \
                int at = pick(x0[2 * q], x0[2 * q + 1], x1[2 * q], x1[2 * q + 1]);                 \
                d0[2 * q] = d0[2 * q + 1] = d1[2 * q] = d1[2 * q + 1] = 0;                         \
                (at & 2 ? d1 : d0)[2 * q + (at & 1)] = gr_[q];                                     \
            }                                                                                      \
            for (q = 2 * ow; q < w; q++)                                                           \
                d0[q] = d1[q] = 0;                                                                 \
            if (oy == g->oh - 1 && 2 * g->oh < g->h) /* an odd last row */                         \
                memset(d1 + w, 0, (size_t)w * sizeof(T));                                          \
        }                                                                                          \
    }
POOL_2X2(float, int32_t, pick_f32, 16, f32_avx512, TG__TARGET_AVX512)
POOL_2X2(float, int32_t, pick_f32, 8, f32_avx2, TG__TARGET_AVX2)
POOL_2X2(float, int32_t, pick_f32, 4, f32_base, )
POOL_2X2(double, int64_t, pick_f64, 8, f64_avx512, TG__TARGET_AVX512)
POOL_2X2(double, int64_t, pick_f64, 4, f64_avx2, TG__TARGET_AVX2)
POOL_2X2(double, int64_t, pick_f64, 2, f64_base, )

/* The 2x2 loops on planes [lo, hi) of the job, on the threads the kernel has: each part's rows
 * are its own, and its vectors keep within them (rows and end above are the part's). */
typedef struct pool_job {
    tg_dtype dt;
    const void *a, *x; /* select: v and x; scatter: g and x */
    void *out;
    const pgeom *g;
} pool_job;

static void select2_planes(void *user, int64_t lo, int64_t hi)
{
    const pool_job *j = user;
    if (j->dt == TG_F32)
        TG__ISA_CALL(select2_f32, j->a, j->x, j->out, j->g, lo, hi);
    else
        TG__ISA_CALL(select2_f64, j->a, j->x, j->out, j->g, lo, hi);
}

static void scatter2_planes(void *user, int64_t lo, int64_t hi)
{
    const pool_job *j = user;
    if (j->dt == TG_F32)
        TG__ISA_CALL(scatter2_f32, j->a, j->x, j->out, j->g, lo, hi);
    else
        TG__ISA_CALL(scatter2_f64, j->a, j->x, j->out, j->g, lo, hi);
}

/* y = v at the argmax of x per window (v and x of one shape). */
static void run_select(const tg_view *v, const tg_view *x, const tg_view *y, const pgeom *g,
                       int threads)
{
    bool f32 = y->dtype == TG_F32;
    pool_job j = {y->dtype, v->data, x->data, y->data, g};
    if (is_2x2(g))
        tg__parallel_for(threads, g->planes, (double)x->numel, select2_planes, &j);
    else
        f32 ? select_f32(v->data, x->data, y->data, g) : select_f64(v->data, x->data, y->data, g);
}

/* The check of max_pool2d and avg_pool2d: x is 4-d, the parameters fit it; y is pooled. */
static tg_status pool_check(tg_check *c)
{
    static const char *const x_name[] = {"x"};
    tg_status st = tg__check_images(c, x_name, c->ninputs);
    pgeom g;
    if (!st)
        st = pool_validate(c, c->in[0]->shape, &g);
    if (st)
        return st;
    set_out(c, c->in[0]->shape, &g, true);
    return TG_OK;
}

/* ---- max_pool2d -------------------------------------------------------------------------- */

/* y = max of x over each window (padding is -inf);  dx += max_pool2d_backward(g, x) */
static void max_pool2d_forward(const tg_kernel *k)
{
    const pool_attr *at = k->attr;
    pgeom g;
    pgeom_fill(&at->p, k->in[0]->shape, &g);
    run_select(k->in[0], k->in[0], k->out, &g, k->threads);
}
static void max_pool2d_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] =
        tg__apply2(TG__OP_max_pool2d_backward, io->grad_output, io->inputs[0], io->attr);
}

/* Pooling cases: x shape and parameters. */
static const struct pool_case {
    int64_t x[4];
    tg_pool2d_params p;
} pool_cases[] = {
    {{2, 2, 4, 4}, {{2, 2}, {0, 0}, {0, 0}}}, /* the usual 2x2, stride = kernel, batch 2 */
    {{1, 2, 7, 6}, {{3, 3}, {2, 2}, {0, 0}}}, /* overlapping windows, an unused last column */
    {{1, 2, 5, 6}, {{3, 2}, {2, 1}, {1, 1}}}, /* padding, non-square kernel and stride */
    {{2, 1, 5, 5}, {{3, 3}, {1, 2}, {1, 0}}}, /* stride 1 rows: heavy overlap */
};
#define POOL_CASES ((int)(sizeof pool_cases / sizeof pool_cases[0]))

static int64_t gcd(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Values for max pooling without ties: a scrambled permutation of 0..n-1 scaled into [-1, 1)
 * plus a little noise, so every window has one clear maximum (gaps of about 2/n, far above the
 * gradient check's step). */
static tg_tensor distinct_values(tg_tape *tp, const int64_t *shape, uint64_t seed)
{
    tg_tensor t = tg__example(tp, 4, shape, -1, 1, 0, seed);
    if (!tg_ok(t))
        return t;
    double *d = (double *)tg_data(t);
    int64_t n = tg_numel(t);
    int64_t step = 7; /* coprime with n, so i -> i * step mod n is a permutation */
    while (n > 1 && gcd(step, n) != 1)
        step += 2;
    for (int64_t i = 0; i < n; i++)
        d[i] = (2.0 * (double)((i * step + 3) % n) + 0.5 + 0.2 * d[i]) / (double)n - 1.0;
    return t;
}

static int example_max_pool2d(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (index < 0 || index >= POOL_CASES)
        return 0;
    ((pool_attr *)attr)->p = pool_cases[index].p;
    in[0] = distinct_values(tp, pool_cases[index].x, 401 + (uint64_t)index);
    return 1;
}
const tg_op_def tg__op_max_pool2d = {.name = "max_pool2d",
                                     .ninputs = 1,
                                     .attr_size = sizeof(pool_attr),
                                     .check = pool_check,
                                     .forward = max_pool2d_forward,
                                     .backward = max_pool2d_backward,
                                     .example = example_max_pool2d};

tg_tensor tg_max_pool2d(tg_tensor x, const tg_pool2d_params *p)
{
    pool_attr at;
    memset(&at, 0, sizeof at);
    if (p)
        at.p = *p;
    return tg__apply1(TG__OP_max_pool2d, x, &at);
}

/* ---- max_pool2d_select ------------------------------------------------------------------- */

/* y = v at the argmax of x in each window;  dv += max_pool2d_backward(g, x),  dx: none (the
 * argmax is piecewise constant) */
static const char *const select_names[] = {"v", "x"};
static tg_status select_check(tg_check *c)
{
    tg_status st = tg__check_images(c, select_names, c->ninputs);
    pgeom g;
    if (!st)
        st = pool_validate(c, c->in[1]->shape, &g);
    if (st)
        return st;
    if (memcmp(c->in[0]->shape, c->in[1]->shape, 4 * sizeof(int64_t)))
        return tg_check_fail(c, TG_SHAPE, "v and x must have the same shape");
    set_out(c, c->in[1]->shape, &g, true);
    return TG_OK;
}
static void select_forward(const tg_kernel *k)
{
    const pool_attr *at = k->attr;
    pgeom g;
    pgeom_fill(&at->p, k->in[1]->shape, &g);
    run_select(k->in[0], k->in[1], k->out, &g, k->threads);
}
static void select_backward(const tg_backward_io *io)
{
    if (io->needs_grad[0])
        io->grad_inputs[0] =
            tg__apply2(TG__OP_max_pool2d_backward, io->grad_output, io->inputs[1], io->attr);
}
static int example_select(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (index < 0 || index >= POOL_CASES)
        return 0;
    ((pool_attr *)attr)->p = pool_cases[index].p;
    in[0] = tg__example(tp, 4, pool_cases[index].x, -1, 1, 0, 411 + (uint64_t)index);
    in[1] = distinct_values(tp, pool_cases[index].x, 421 + (uint64_t)index);
    return 2;
}
const tg_op_def tg__op_max_pool2d_select = {.name = "max_pool2d_select",
                                            .ninputs = 2,
                                            .attr_size = sizeof(pool_attr),
                                            .check = select_check,
                                            .forward = select_forward,
                                            .backward = select_backward,
                                            .example = example_select};

/* ---- max_pool2d_backward ----------------------------------------------------------------- */

/* dx = zeros(x.shape) with g added at the argmax of x in each window (overlaps accumulate);
 * dg += max_pool2d_select(gg, x),  dx: none */
static const char *const mpb_names[] = {"gradient", "x"};
static tg_status max_pool2d_bw_check(tg_check *c)
{
    tg_status st = tg__check_images(c, mpb_names, c->ninputs);
    pgeom g;
    if (!st)
        st = pool_validate(c, c->in[1]->shape, &g);
    if (!st)
        st = check_pooled(c, 0, c->in[1]->shape, &g);
    if (st)
        return st;
    set_out(c, c->in[1]->shape, &g, false);
    return TG_OK;
}
static void max_pool2d_bw_forward(const tg_kernel *k)
{
    const pool_attr *at = k->attr;
    const tg_view *gr = k->in[0], *x = k->in[1], *dx = k->out;
    pgeom g;
    pgeom_fill(&at->p, x->shape, &g);
    bool f32 = dx->dtype == TG_F32;
    pool_job j = {dx->dtype, gr->data, x->data, dx->data, &g};
    if (is_2x2(&g))
        tg__parallel_for(k->threads, g.planes, 2.0 * (double)x->numel, scatter2_planes, &j);
    else
        f32 ? scatter_f32(gr->data, x->data, dx->data, &g)
            : scatter_f64(gr->data, x->data, dx->data, &g);
}
static void max_pool2d_bw_backward(const tg_backward_io *io)
{
    if (io->needs_grad[0])
        io->grad_inputs[0] =
            tg__apply2(TG__OP_max_pool2d_select, io->grad_output, io->inputs[1], io->attr);
}
static int example_max_pool2d_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (index < 0 || index >= POOL_CASES)
        return 0;
    const struct pool_case *pc = &pool_cases[index];
    ((pool_attr *)attr)->p = pc->p;
    pgeom g;
    pgeom_fill(&pc->p, pc->x, &g);
    int64_t gs[4] = {pc->x[0], pc->x[1], g.oh, g.ow};
    in[0] = tg__example(tp, 4, gs, -1, 1, 0, 431 + (uint64_t)index);
    in[1] = distinct_values(tp, pc->x, 441 + (uint64_t)index);
    return 2;
}
const tg_op_def tg__op_max_pool2d_backward = {.name = "max_pool2d_backward",
                                              .ninputs = 2,
                                              .attr_size = sizeof(pool_attr),
                                              .check = max_pool2d_bw_check,
                                              .forward = max_pool2d_bw_forward,
                                              .backward = max_pool2d_bw_backward,
                                              .example = example_max_pool2d_bw};

/* ---- avg_pool2d -------------------------------------------------------------------------- */

/* Sum of each clipped window over kh*kw (padding zeros count), and its transpose: g / (kh*kw)
 * added to every input element of the window. */
#define AVG_POOL(T, avg, spread)                                                                   \
    static void avg(const T *x, T *y, const pgeom *g)                                              \
    {                                                                                              \
        int64_t hw = g->h * g->w, ohw = g->oh * g->ow;                                             \
        T count = (T)(g->kh * g->kw);                                                              \
        for (int64_t p = 0; p < g->planes; p++)                                                    \
            for (int64_t oy = 0; oy < g->oh; oy++)                                                 \
                for (int64_t ox = 0; ox < g->ow; ox++) {                                           \
                    int64_t y0, y1, x0, x1;                                                        \
                    window(g, oy, ox, &y0, &y1, &x0, &x1);                                         \
                    const T *xp = x + p * hw;                                                      \
                    T s = 0;                                                                       \
                    for (int64_t iy = y0; iy < y1; iy++)                                           \
                        for (int64_t ix = x0; ix < x1; ix++)                                       \
                            s += xp[iy * g->w + ix];                                               \
                    y[p * ohw + oy * g->ow + ox] = s / count;                                      \
                }                                                                                  \
    }                                                                                              \
    static void spread(const T *gr, T *dx, const pgeom *g)                                         \
    {                                                                                              \
        int64_t hw = g->h * g->w, ohw = g->oh * g->ow;                                             \
        T count = (T)(g->kh * g->kw);                                                              \
        memset(dx, 0, (size_t)(g->planes * hw) * sizeof(T));                                       \
        for (int64_t p = 0; p < g->planes; p++)                                                    \
            for (int64_t oy = 0; oy < g->oh; oy++)                                                 \
                for (int64_t ox = 0; ox < g->ow; ox++) {                                           \
                    int64_t y0, y1, x0, x1;                                                        \
                    window(g, oy, ox, &y0, &y1, &x0, &x1);                                         \
                    T *dp = dx + p * hw, d = gr[p * ohw + oy * g->ow + ox] / count;                \
                    for (int64_t iy = y0; iy < y1; iy++)                                           \
                        for (int64_t ix = x0; ix < x1; ix++)                                       \
                            dp[iy * g->w + ix] += d;                                               \
                }                                                                                  \
    }
AVG_POOL(float, avg_f32, spread_f32)
AVG_POOL(double, avg_f64, spread_f64)

/* y = sum of x over each window / (kh*kw);  dx += avg_pool2d_backward(g) */
static void avg_pool2d_forward(const tg_kernel *k)
{
    const pool_attr *at = k->attr;
    pgeom g;
    pgeom_fill(&at->p, k->in[0]->shape, &g);
    if (k->out->dtype == TG_F32)
        avg_f32(k->in[0]->data, k->out->data, &g);
    else
        avg_f64(k->in[0]->data, k->out->data, &g);
}
static void avg_pool2d_backward(const tg_backward_io *io)
{
    pool_attr bt = *(const pool_attr *)io->attr;
    memcpy(bt.shape, tg_shape(io->inputs[0]), sizeof bt.shape);
    io->grad_inputs[0] = tg__apply1(TG__OP_avg_pool2d_backward, io->grad_output, &bt);
}
static int example_avg_pool2d(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (index < 0 || index >= POOL_CASES)
        return 0;
    ((pool_attr *)attr)->p = pool_cases[index].p;
    in[0] = tg__example(tp, 4, pool_cases[index].x, -1, 1, 0, 451 + (uint64_t)index);
    return 1;
}
const tg_op_def tg__op_avg_pool2d = {.name = "avg_pool2d",
                                     .ninputs = 1,
                                     .attr_size = sizeof(pool_attr),
                                     .check = pool_check,
                                     .forward = avg_pool2d_forward,
                                     .backward = avg_pool2d_backward,
                                     .example = example_avg_pool2d};

tg_tensor tg_avg_pool2d(tg_tensor x, const tg_pool2d_params *p)
{
    pool_attr at;
    memset(&at, 0, sizeof at);
    if (p)
        at.p = *p;
    return tg__apply1(TG__OP_avg_pool2d, x, &at);
}

/* ---- avg_pool2d_backward ----------------------------------------------------------------- */

/* dx = avg_pool2d_backward(g): g / (kh*kw) spread over each window (x's shape from attr);
 * dg += avg_pool2d(gg) */
static const char *const apb_names[] = {"gradient"};
static tg_status avg_pool2d_bw_check(tg_check *c)
{
    const pool_attr *at = c->attr;
    tg_status st = tg__check_images(c, apb_names, c->ninputs);
    pgeom g;
    if (!st)
        st = pool_validate(c, at->shape, &g);
    if (!st)
        st = check_pooled(c, 0, at->shape, &g);
    if (st)
        return st;
    set_out(c, at->shape, &g, false);
    return TG_OK;
}
static void avg_pool2d_bw_forward(const tg_kernel *k)
{
    const pool_attr *at = k->attr;
    pgeom g;
    pgeom_fill(&at->p, at->shape, &g);
    if (k->out->dtype == TG_F32)
        spread_f32(k->in[0]->data, k->out->data, &g);
    else
        spread_f64(k->in[0]->data, k->out->data, &g);
}
static void avg_pool2d_bw_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg__apply1(TG__OP_avg_pool2d, io->grad_output, io->attr);
}
static int example_avg_pool2d_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (index < 0 || index >= POOL_CASES)
        return 0;
    const struct pool_case *pc = &pool_cases[index];
    pool_attr *at = attr;
    at->p = pc->p;
    memcpy(at->shape, pc->x, sizeof at->shape);
    pgeom g;
    pgeom_fill(&pc->p, pc->x, &g);
    int64_t gs[4] = {pc->x[0], pc->x[1], g.oh, g.ow};
    in[0] = tg__example(tp, 4, gs, -1, 1, 0, 461 + (uint64_t)index);
    return 1;
}
const tg_op_def tg__op_avg_pool2d_backward = {.name = "avg_pool2d_backward",
                                              .ninputs = 1,
                                              .attr_size = sizeof(pool_attr),
                                              .check = avg_pool2d_bw_check,
                                              .forward = avg_pool2d_bw_forward,
                                              .backward = avg_pool2d_bw_backward,
                                              .example = example_avg_pool2d_bw};
