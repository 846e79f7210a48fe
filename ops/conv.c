/* conv.c — 2-d convolution over NCHW (conv2d) and the two ops its gradient is written with:
 * conv2d_backward_input (the transposed convolution, dx) and conv2d_backward_weight (dw). The
 * three are bilinear and each one's gradient is written with the three, so conv2d is
 * differentiable to any order, whichever kernel computes each of them.
 *
 * The kernels, chosen per shape:
 * - im2col + GEMM, one image at a time: the image's columns (cg*kh*kw rows of oh*ow) go into
 *   scratch, and one GEMM per group writes straight into the image's block of the output (NCHW
 *   keeps an image's channels together), its rows first filled with the bias. dx is the col2im
 *   of W^T g, dw the sum over images of g col^T. A 1x1 kernel with unit stride and no padding
 *   needs no columns: they are the image itself.
 * - direct, for a product at most DIRECT_MAX deep (a first layer on one or three channels) with
 *   unit column stride, forward and weight gradient: such a GEMM is too shallow to run near the
 *   machine's peak, and its columns are DIRECT_MAX times the image. The loops read the image's
 *   zero-padded planes and keep a block of output channels (or taps) of LANES pixels in
 *   registers across the whole depth.
 * Images are shared out among the threads, each with a slice of the node's scratch of its own;
 * the weight gradient's parts are summed at the end, in part order. */
#include "gemm.h"
#include "kernels.h"
#include "ops.h"
#include "parallel.h"
#include "vmath.h"

/* conv2d: x, weight, then bias when has_bias. conv2d_backward_input: (g, weight), `shape` is x's
 * shape. conv2d_backward_weight: (x, g), `shape` is the weight's shape. */
typedef struct conv_attr {
    tg_conv2d_params p; /* as passed: zero stride, dilation or groups mean 1 */
    int has_bias;
    int64_t shape[4];
} conv_attr;

/* The direct forward: products at most DIRECT_MAX deep; a vector of a row's output pixels at a
 * time for OUT_BLOCK output channels, in registers. LANES is the most pixels a vector holds (16
 * floats), for the padded rows' length. */
enum { DIRECT_MAX = 32, LANES = 16, OUT_BLOCK = 4 };

/* Sizes of one convolution, with the defaults applied. */
typedef struct geom {
    int64_t n, c, h, w;    /* x [n, c, h, w] */
    int64_t o, cg, kh, kw; /* weight [o, cg, kh, kw], cg = c / groups */
    int64_t groups, og;    /* og = o / groups */
    int64_t oh, ow;        /* output plane */
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t ckk;    /* rows of the column matrix: cg * kh * kw */
    int cols;       /* how the GEMM path makes an image's columns: COLS_* */
    bool direct;    /* the direct kernels (forward and weight gradient) */
    bool flip;      /* the input gradient as the convolution of g by the flipped weight */
    int64_t hp, wp; /* the zero-padded planes: hp rows of wp */
    int64_t slots;  /* threads with scratch of their own: at most the images, at least 1 */
} geom;

/* An image's columns: the image itself (a 1x1 kernel, unit stride, no padding); its padded
 * planes' rows copied in whole vectors (unit column stride: every row of output pixels reads
 * one run of a padded row); or gathered element by element with the padding's bounds. */
enum { COLS_PLAIN, COLS_EXPAND, COLS_IM2COL };

/* Limit on the elements of one image's columns, padded planes or weight, so that sums and
 * products of a few of them never overflow. */
#define LIMIT (INT64_MAX / 64)

static int64_t or_one(int v) { return v ? v : 1; }

/* The geometry of x shape xs and weight shape ws for `threads` threads; meaningful once
 * conv_validate passed. */
static void geom_fill(const tg_conv2d_params *p, const int64_t *xs, const int64_t *ws, int threads,
                      geom *g)
{
    g->n = xs[0], g->c = xs[1], g->h = xs[2], g->w = xs[3];
    g->o = ws[0], g->cg = ws[1], g->kh = ws[2], g->kw = ws[3];
    g->sh = or_one(p->stride[0]), g->sw = or_one(p->stride[1]);
    g->dh = or_one(p->dilation[0]), g->dw = or_one(p->dilation[1]);
    g->ph = p->padding[0], g->pw = p->padding[1];
    g->groups = or_one(p->groups);
    g->og = g->o / g->groups;
    g->oh = (g->h + 2 * g->ph - g->dh * (g->kh - 1) - 1) / g->sh + 1;
    g->ow = (g->w + 2 * g->pw - g->dw * (g->kw - 1) - 1) / g->sw + 1;
    g->ckk = g->cg * g->kh * g->kw;
    /* Rows of the padded input, and room past the last output for whole vectors of LANES. */
    g->hp = g->h + 2 * g->ph;
    int64_t room = (g->ow + LANES - 1) / LANES * LANES + (g->kw - 1) * g->dw, planes;
    g->wp = g->w + 2 * g->pw > room ? g->w + 2 * g->pw : room;
    bool padded = !__builtin_mul_overflow(g->hp, g->wp, &planes) && planes <= LIMIT / or_one(g->cg);
    bool plain = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
    g->cols = plain ? COLS_PLAIN : padded && g->sw == 1 ? COLS_EXPAND : COLS_IM2COL;
    g->direct = g->ckk <= DIRECT_MAX && g->cols == COLS_EXPAND;
    /* Its columns have og*kh*kw rows against the col2im path's cg*kh*kw, and its GEMM cg rows
     * against og: only where it does less (conv2d_backward_input of the trainer's second layer,
     * 64 by 32 channels, took 12.2 ms by the flipped convolution and 10.2 by col2im). */
    g->flip = g->sh == 1 && g->sw == 1 && g->ph <= g->dh * (g->kh - 1)
              && g->pw <= g->dw * (g->kw - 1) && g->og <= g->cg;
    g->slots = threads < g->n ? threads : g->n;
    g->slots = g->slots > 1 ? g->slots : 1;
}

/* The input gradient of a unit-stride convolution g is the convolution of the gradient (its
 * image, [n, o, oh, ow]) by the weight flipped in both axes with input and output channels
 * exchanged, padded by the dilated kernel's span less g's padding: *f, when it fits. */
static bool flip_geom(const geom *g, int threads, geom *f)
{
    int64_t planes;
    if (!g->flip || __builtin_mul_overflow(g->h, g->w, &planes)
        || planes > LIMIT / or_one(g->og * g->kh * g->kw))
        return false;
    tg_conv2d_params p = {
        .stride = {1, 1},
        .padding = {(int)(g->dh * (g->kh - 1) - g->ph), (int)(g->dw * (g->kw - 1) - g->pw)},
        .dilation = {(int)g->dh, (int)g->dw},
        .groups = (int)g->groups};
    int64_t xs[4] = {g->n, g->o, g->oh, g->ow}, ws[4] = {g->c, g->og, g->kh, g->kw};
    if (g->dh * (g->kh - 1) > INT32_MAX || g->dw * (g->kw - 1) > INT32_MAX)
        return false;
    geom_fill(&p, xs, ws, threads, f);
    return f->oh == g->h && f->ow == g->w;
}

/* Scratch elements per slot: an image's columns and the padded planes they are expanded from,
 * or for the direct forward the padded planes alone; its column gradient (input gradient); for
 * the weight gradient also a partial sum of its own. */
enum { FOR_FORWARD, FOR_INPUT, FOR_WEIGHT };
static int64_t slot_elems(const geom *g, int use)
{
    int64_t cols = g->cols == COLS_PLAIN ? 0 : g->ckk * g->oh * g->ow;
    int64_t planes = g->cg * g->hp * g->wp;
    if (use == FOR_INPUT)
        return cols;
    if (use == FOR_FORWARD && g->direct)
        return planes;
    int64_t work = g->cols == COLS_EXPAND ? cols + LANES + planes : cols;
    return use == FOR_WEIGHT && g->slots > 1 ? work + g->o * g->ckk : work;
}

/* Validates the attributes against x shape xs and weight shape ws (both 4-d), fills *g and asks
 * for the scratch of `use`. */
static tg_status conv_validate(tg_check *c, const int64_t *xs, const int64_t *ws, int use, geom *g)
{
    const tg_conv2d_params *p = &((const conv_attr *)c->attr)->p;
    static const char *const dims[2] = {"height", "width"};
    for (int d = 0; d < 2; d++) {
        if (p->stride[d] < 0)
            return tg_check_fail(c, TG_INVALID, "stride must be >= 1 (0 means 1), got %d along %s",
                                 p->stride[d], dims[d]);
        if (p->dilation[d] < 0)
            return tg_check_fail(c, TG_INVALID,
                                 "dilation must be >= 1 (0 means 1), got %d along %s",
                                 p->dilation[d], dims[d]);
        if (p->padding[d] < 0)
            return tg_check_fail(c, TG_INVALID, "padding must be >= 0, got %d along %s",
                                 p->padding[d], dims[d]);
    }
    if (p->groups < 0)
        return tg_check_fail(c, TG_INVALID, "groups must be >= 1 (0 means 1), got %d", p->groups);
    int64_t numel;
    if (!tg__shape_ok(4, xs, &numel) || !tg__shape_ok(4, ws, &numel))
        return tg_check_fail(c, TG_SHAPE, "invalid input or weight shape (negative or too large)");
    if (ws[2] < 1 || ws[3] < 1)
        return tg_check_fail(c, TG_SHAPE, "kernel must be at least 1x1, the weight's is %lldx%lld",
                             (long long)ws[2], (long long)ws[3]);
    int64_t groups = or_one(p->groups);
    if (xs[1] % groups)
        return tg_check_fail(c, TG_SHAPE, "%lld input channels are not divisible by groups %lld",
                             (long long)xs[1], (long long)groups);
    if (ws[0] % groups)
        return tg_check_fail(c, TG_SHAPE, "%lld output channels are not divisible by groups %lld",
                             (long long)ws[0], (long long)groups);
    if (ws[1] * groups != xs[1])
        return tg_check_fail(c, TG_SHAPE,
                             "weight expects %lld input channels (%lld per group x %lld groups), "
                             "the input has %lld",
                             (long long)(ws[1] * groups), (long long)ws[1], (long long)groups,
                             (long long)xs[1]);
    for (int d = 0; d < 2; d++) {
        int64_t dil = or_one(p->dilation[d]), k = ws[2 + d];
        if (k - 1 > INT64_MAX / 4 / dil)
            return tg_check_fail(c, TG_SHAPE, "dilated kernel size overflows");
        int64_t span = dil * (k - 1) + 1, padded = xs[2 + d] + 2 * (int64_t)p->padding[d];
        if (padded < span)
            return tg_check_fail(c, TG_SHAPE,
                                 "padded input %s %lld is smaller than the dilated kernel's %lld "
                                 "(the output would be empty)",
                                 dims[d], (long long)padded, (long long)span);
    }
    /* The weight, one image's columns and output block (rows: cg*kh*kw + o) and its padded
     * planes for the direct path must be addressable, with room to spare, and so must the
     * scratch of every slot; then nothing below overflows. */
    int64_t lim = LIMIT, rows = ws[1], ohw;
    for (int d = 2; d < 4; d++) {
        if (rows > 0 && ws[d] > lim / rows)
            return tg_check_fail(c, TG_SHAPE, "kernel too large");
        rows *= ws[d];
    }
    if (ws[0] > 0 && rows > lim / ws[0])
        return tg_check_fail(c, TG_SHAPE, "weight too large");
    rows += ws[0];
    geom_fill(p, xs, ws, c->threads, g);
    if (g->ow > lim / g->oh) /* oh, ow >= 1 here */
        return tg_check_fail(c, TG_SHAPE, "output plane %lldx%lld is too large", (long long)g->oh,
                             (long long)g->ow);
    ohw = g->oh * g->ow;
    if (rows > 0 && ohw > lim / rows)
        return tg_check_fail(c, TG_SHAPE, "the column buffer (%lld x %lld) is too large",
                             (long long)rows, (long long)ohw);
    /* The input gradient by the flipped convolution: its weight, then its slots. */
    geom f;
    int64_t shared = 0, per = slot_elems(g, use), slots = g->slots;
    if (use == FOR_INPUT && flip_geom(g, c->threads, &f))
        shared = g->o * g->ckk, per = slot_elems(&f, FOR_FORWARD), slots = f.slots;
    size_t es = tg_dtype_size(c->in[0]->dtype), bytes;
    if (__builtin_mul_overflow((size_t)per, (size_t)slots, &bytes)
        || __builtin_add_overflow(bytes, (size_t)shared, &bytes)
        || __builtin_mul_overflow(bytes, es, &bytes))
        return tg_check_fail(c, TG_SHAPE, "scratch for %lld threads is too large",
                             (long long)slots);
    c->saved_bytes = bytes;
    return TG_OK;
}

/* g (input gi) has the convolution's output shape [n, o, oh, ow]. */
static tg_status check_grad_shape(tg_check *c, int gi, const geom *g)
{
    const int64_t *s = c->in[gi]->shape;
    if (s[0] != g->n || s[1] != g->o || s[2] != g->oh || s[3] != g->ow)
        return tg_check_fail(c, TG_SHAPE,
                             "gradient is [%lld,%lld,%lld,%lld], the convolution's output is "
                             "[%lld,%lld,%lld,%lld]",
                             (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3],
                             (long long)g->n, (long long)g->o, (long long)g->oh, (long long)g->ow);
    return TG_OK;
}

static void set_out(tg_check *c, int64_t a, int64_t b, int64_t h, int64_t w)
{
    c->out->dtype = c->in[0]->dtype;
    c->out->ndim = 4;
    c->out->shape[0] = a, c->out->shape[1] = b, c->out->shape[2] = h, c->out->shape[3] = w;
}

/* ---- the kernels, once per element type ---------------------------------------------------- */

/* im2col: col[(ci*kh + i)*kw + j][oy*ow + ox] = x[ci][oy*sh - ph + i*dh][ox*sw - pw + j*dw] (0
 * outside) for one group of one image (x: its cg planes). col2im adds the columns back into x.
 * Rows of output pixels are short (14 on the trainer's second layer), so the copies are loops
 * the compiler vectorises, not calls. */
#define COLS(T, SFX, TARGET)                                                                       \
    static TARGET void im2col_##SFX(const T *x, T *col, const geom *g)                             \
    {                                                                                              \
        const int64_t ow = g->ow, ohw = g->oh * ow, sw = g->sw;                                    \
        for (int64_t ci = 0; ci < g->cg; ci++)                                                     \
            for (int64_t i = 0; i < g->kh; i++) {                                                  \
                int64_t ylo, yhi, yoff = i * g->dh - g->ph;                                        \
                tg__valid_range(yoff, g->sh, g->h, g->oh, &ylo, &yhi);                             \
                for (int64_t j = 0; j < g->kw; j++) {                                              \
                    T *row = col + ((ci * g->kh + i) * g->kw + j) * ohw;                           \
                    int64_t lo, hi, off = j * g->dw - g->pw;                                       \
                    tg__valid_range(off, sw, g->w, ow, &lo, &hi);                                  \
                    for (int64_t q = 0; q < ylo * ow; q++)                                         \
                        row[q] = 0;                                                                \
                    for (int64_t oy = ylo; oy < yhi; oy++) {                                       \
                        T *d = row + oy * ow;                                                      \
                        const T *s = x + (ci * g->h + oy * g->sh + yoff) * g->w;                   \
                        for (int64_t q = 0; q < lo; q++)                                           \
                            d[q] = 0;                                                              \
                        if (sw == 1)                                                               \
                            for (int64_t q = lo; q < hi; q++)                                      \
                                d[q] = s[q + off];                                                 \
                        else                                                                       \
                            for (int64_t q = lo; q < hi; q++)                                      \
                                d[q] = s[q * sw + off];                                            \
                        for (int64_t q = hi; q < ow; q++)                                          \
                            d[q] = 0;                                                              \
                    }                                                                              \
                    for (int64_t q = yhi * ow; q < ohw; q++)                                       \
                        row[q] = 0;                                                                \
                }                                                                                  \
            }                                                                                      \
    }                                                                                              \
    static TARGET void col2im_##SFX(const T *col, T *x, const geom *g)                             \
    {                                                                                              \
        const int64_t ow = g->ow, ohw = g->oh * ow, sw = g->sw;                                    \
        for (int64_t ci = 0; ci < g->cg; ci++)                                                     \
            for (int64_t i = 0; i < g->kh; i++) {                                                  \
                int64_t ylo, yhi, yoff = i * g->dh - g->ph;                                        \
                tg__valid_range(yoff, g->sh, g->h, g->oh, &ylo, &yhi);                             \
                for (int64_t j = 0; j < g->kw; j++) {                                              \
                    const T *row = col + ((ci * g->kh + i) * g->kw + j) * ohw;                     \
                    int64_t lo, hi, off = j * g->dw - g->pw;                                       \
                    tg__valid_range(off, sw, g->w, ow, &lo, &hi);                                  \
                    for (int64_t oy = ylo; oy < yhi; oy++) {                                       \
                        const T *d = row + oy * ow;                                                \
                        T *s = x + (ci * g->h + oy * g->sh + yoff) * g->w;                         \
                        if (sw == 1)                                                               \
                            for (int64_t q = lo; q < hi; q++)                                      \
                                s[q + off] += d[q];                                                \
                        else                                                                       \
                            for (int64_t q = lo; q < hi; q++)                                      \
                                s[q * sw + off] += d[q];                                           \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
    }

/* expand: col[t][oy*ow + ox] = xp[c][oy*sh + i*dh][ox + j*dw] for each tap t = (c, i, j) from
 * the padded planes (unit column stride): each row of ow pixels is copied in whole vectors of
 * VB bytes, whose spare lanes land on the next row's place, written next (after the last row,
 * on LANES elements of slack). */
#define EXPAND(T, SFX, TARGET, VB)                                                                 \
    static TARGET void expand_##SFX(const T *xp, T *col, const geom *g)                            \
    {                                                                                              \
        typedef T V __attribute__((vector_size(VB)));                                              \
        const int64_t wp = g->wp, plane = g->hp * wp, ow = g->ow, L = VB / sizeof(T);              \
        T *d = col;                                                                                \
        for (int64_t c = 0; c < g->cg; c++)                                                        \
            for (int64_t i = 0; i < g->kh; i++)                                                    \
                for (int64_t j = 0; j < g->kw; j++)                                                \
                    for (int64_t oy = 0; oy < g->oh; oy++, d += ow) {                              \
                        const T *s = xp + c * plane + (oy * g->sh + i * g->dh) * wp + j * g->dw;   \
                        for (int64_t q = 0; q < ow; q += L) {                                      \
                            V v;                                                                   \
                            memcpy(&v, s + q, sizeof v);                                           \
                            memcpy(d + q, &v, sizeof v);                                           \
                        }                                                                          \
                    }                                                                              \
    }

/* a * b + c on whole vectors of the instruction set SFX, fused: the library is compiled without
 * contracting a * b + c, and separate multiplies and adds ran the direct weight gradient of a
 * 3-channel 3x3 convolution (f32 [128,3,32,32]) at 47 GFLOP/s against the GEMM path's 62. */
#ifdef TG_VMATH_X86
#include <immintrin.h>
#define FMA_f32_avx512(a, b, c) _mm512_fmadd_ps(a, b, c)
#define FMA_f64_avx512(a, b, c) _mm512_fmadd_pd(a, b, c)
#define FMA_f32_avx2(a, b, c) _mm256_fmadd_ps(a, b, c)
#define FMA_f64_avx2(a, b, c) _mm256_fmadd_pd(a, b, c)
#else
#define FMA_f32_avx512(a, b, c) ((a) * (b) + (c))
#define FMA_f64_avx512(a, b, c) ((a) * (b) + (c))
#define FMA_f32_avx2(a, b, c) ((a) * (b) + (c))
#define FMA_f64_avx2(a, b, c) ((a) * (b) + (c))
#endif
#define FMA_f32_base(a, b, c) ((a) * (b) + (c))
#define FMA_f64_base(a, b, c) ((a) * (b) + (c))

/* The direct kernels. pad: xp[c][r][q] = x[c][r - ph][q - pw] (0 outside), the cg planes of one
 * image and group, hp rows of wp. forward: y[o][oy][ox] = b[o] + sum over taps (c, i, j) of
 * w[o][c][i][j] xp[c][oy*sh + i*dh][ox + j*dw]. weight: dw[o][c][i][j] += sum over pixels of
 * g[o][oy][ox] xp[c][oy*sh + i*dh][ox + j*dw]. A vector V holds VB bytes of a row's pixels (16
 * floats with AVX-512); the accumulators are arrays of V that the compiler keeps in registers
 * (plain arrays of elements it kept in memory: 13 GFLOP/s for the trainer's first layer). Past
 * a row's last pixel the loops compute on the padding and store nothing (forward), or multiply
 * by a zero gradient (weight). */
#define PADS(T, pad)                                                                               \
    static void pad(const T *x, T *xp, const geom *g)                                              \
    {                                                                                              \
        const int64_t wp = g->wp, w = g->w;                                                        \
        for (int64_t c = 0; c < g->cg; c++)                                                        \
            for (int64_t r = 0; r < g->hp; r++) {                                                  \
                T *d = xp + (c * g->hp + r) * wp;                                                  \
                int64_t y = r - g->ph;                                                             \
                if (y < 0 || y >= g->h) {                                                          \
                    memset(d, 0, (size_t)wp * sizeof(T));                                          \
                    continue;                                                                      \
                }                                                                                  \
                memset(d, 0, (size_t)g->pw * sizeof(T));                                           \
                memcpy(d + g->pw, x + (c * g->h + y) * w, (size_t)w * sizeof(T));                  \
                memset(d + g->pw + w, 0, (size_t)(wp - g->pw - w) * sizeof(T));                    \
            }                                                                                      \
    }

#define DIRECT(T, SFX, TARGET, VB)                                                                 \
    typedef T vec_##SFX __attribute__((vector_size(VB)));                                          \
    static TARGET void forward_##SFX(const T *xp, const T *w, const T *b, T *y, const geom *g)     \
    {                                                                                              \
        typedef vec_##SFX V;                                                                       \
        enum { L = VB / sizeof(T) };                                                               \
        const int64_t wp = g->wp, plane = g->hp * wp, ow = g->ow, ohw = g->oh * ow;                \
        for (int64_t o0 = 0; o0 < g->og; o0 += OUT_BLOCK) {                                        \
            int64_t nb = g->og - o0 < OUT_BLOCK ? g->og - o0 : OUT_BLOCK;                          \
            T wt[DIRECT_MAX][OUT_BLOCK], bias[OUT_BLOCK];                                          \
            for (int q = 0; q < OUT_BLOCK; q++) {                                                  \
                for (int64_t t = 0; t < g->ckk; t++)                                               \
                    wt[t][q] = q < nb ? w[(o0 + q) * g->ckk + t] : 0;                              \
                bias[q] = q < nb && b ? b[o0 + q] : 0;                                             \
            }                                                                                      \
            for (int64_t oy = 0; oy < g->oh; oy++)                                                 \
                for (int64_t ox0 = 0; ox0 < ow; ox0 += L) {                                        \
                    V acc[OUT_BLOCK], xv;                                                          \
                    for (int q = 0; q < OUT_BLOCK; q++)                                            \
                        acc[q] = (V){0} + bias[q];                                                 \
                    const T *base = xp + oy * g->sh * wp + ox0;                                    \
                    int64_t t = 0;                                                                 \
                    for (int64_t c = 0; c < g->cg; c++)                                            \
                        for (int64_t i = 0; i < g->kh; i++)                                        \
                            for (int64_t j = 0; j < g->kw; j++, t++) {                             \
                                memcpy(&xv, base + c * plane + i * g->dh * wp + j * g->dw,         \
                                       sizeof xv);                                                 \
                                for (int q = 0; q < OUT_BLOCK; q++)                                \
                                    acc[q] = FMA_##SFX(xv, wt[t][q] - (V){0}, acc[q]);             \
                            }                                                                      \
                    /* A whole vector, unless it would pass the plane's end: the spare lanes fall  \
                     * on the rows after this one, which later oy write. */                        \
                    int64_t n = ow - ox0 < L ? ow - ox0 : L;                                       \
                    for (int64_t q = 0; q < nb; q++) {                                             \
                        T *yr = y + (o0 + q) * ohw + oy * ow + ox0;                                \
                        if (oy * ow + ox0 + L <= ohw)                                              \
                            memcpy(yr, &acc[q], sizeof acc[q]);                                    \
                        else                                                                       \
                            for (int64_t l = 0; l < n; l++)                                        \
                                yr[l] = acc[q][l];                                                 \
                    }                                                                              \
                }                                                                                  \
        }                                                                                          \
    }

/* rows x n of y = b[row]; y += p (n elements); flip: the weight of the flipped convolution,
 * wf[gi*cg + ci][o][kh-1-i][kw-1-j] = w[gi*og + o][ci][i][j]. */
#define FILLS(T, fill_rows, add_into, flip)                                                        \
    static void flip(const T *w, T *wf, const geom *g)                                             \
    {                                                                                              \
        const int64_t kk = g->kh * g->kw;                                                          \
        for (int64_t gi = 0; gi < g->groups; gi++)                                                 \
            for (int64_t o = 0; o < g->og; o++)                                                    \
                for (int64_t ci = 0; ci < g->cg; ci++)                                             \
                    for (int64_t t = 0; t < kk; t++)                                               \
                        wf[((gi * g->cg + ci) * g->og + o) * kk + kk - 1 - t] =                    \
                            w[((gi * g->og + o) * g->cg + ci) * kk + t];                           \
    }                                                                                              \
    static void fill_rows(T *y, const T *b, int64_t rows, int64_t n)                               \
    {                                                                                              \
        for (int64_t r = 0; r < rows; r++)                                                         \
            for (int64_t q = 0; q < n; q++)                                                        \
                y[r * n + q] = b[r];                                                               \
    }                                                                                              \
    static void add_into(T *y, const T *p, int64_t n)                                              \
    {                                                                                              \
        for (int64_t i = 0; i < n; i++)                                                            \
            y[i] += p[i];                                                                          \
    }

#define KERNELS_OF_ISA(SFX, TARGET, VB)                                                            \
    COLS(float, f32_##SFX, TARGET)                                                                 \
    COLS(double, f64_##SFX, TARGET)                                                                \
    EXPAND(float, f32_##SFX, TARGET, VB)                                                           \
    EXPAND(double, f64_##SFX, TARGET, VB)                                                          \
    DIRECT(float, f32_##SFX, TARGET, VB)                                                           \
    DIRECT(double, f64_##SFX, TARGET, VB)
TG__FOR_EACH_ISA(KERNELS_OF_ISA)
PADS(float, pad_f32)
PADS(double, pad_f64)
FILLS(float, fill_rows_f32, add_into_f32, flip_f32)
FILLS(double, fill_rows_f64, add_into_f64, flip_f64)

/* ---- the work of each op, one image at a time ---------------------------------------------- */

/* Byte address of element `i` of an array of dtype size es. */
#define AT(p, i, es) ((char *)(p) + (size_t)(i) * (es))
#define CAT(p, i, es) ((const char *)(p) + (size_t)(i) * (es))

/* What the parts of one op's kernel share. */
typedef struct job {
    geom g;
    tg_dtype dt;
    size_t es;
    const void *x, *w, *b, *gr; /* those the op reads */
    void *out;
    void *scratch;
    int64_t slot; /* scratch elements per part */
    int parts;    /* g.slots, or 1 for a product not worth threads */
    int threads;  /* for each GEMM: the kernel's when one part runs, else 1 */
} job;

/* Shares the images among g.slots parts, each with its slot of `scratch`, when the product is
 * worth threads. */
static void run_parts(job *j, const tg_kernel *k, void *scratch, int use, tg__part_fn fn)
{
    const geom *g = &j->g;
    j->dt = k->out->dtype;
    j->es = tg_dtype_size(j->dt);
    j->scratch = scratch;
    j->slot = slot_elems(g, use);
    double work = 2.0 * (double)g->n * (double)g->o * (double)g->ckk * (double)(g->oh * g->ow);
    j->parts = work >= TG__PARALLEL_MIN ? (int)g->slots : 1;
    j->threads = j->parts == 1 ? k->threads : 1;
    tg__parallel_parts(j->parts, fn, j);
}

/* Images [*lo, *hi) of part `part` of `parts`, and its slot of scratch. */
static void *part_of(const job *j, int part, int parts, int64_t *lo, int64_t *hi)
{
    *lo = j->g.n * part / parts, *hi = j->g.n * (part + 1) / parts;
    return AT(j->scratch, part * j->slot, j->es);
}

/* One image's columns (or, for the direct path, its padded planes) for group gi in `slot`; the
 * columns' address. The expanded columns come first in the slot (with LANES of slack for the
 * last row's whole vectors), the padded planes they are copied from after them. */
static const void *columns(const job *j, int64_t i, int64_t gi, void *slot, bool direct)
{
    const geom *g = &j->g;
    const void *xg = CAT(j->x, (i * g->c + gi * g->cg) * g->h * g->w, j->es);
    bool f32 = j->dt == TG_F32;
    if (g->cols == COLS_PLAIN)
        return xg;
    if (direct) {
        f32 ? pad_f32(xg, slot, g) : pad_f64(xg, slot, g);
    } else if (g->cols == COLS_EXPAND) {
        void *planes = AT(slot, g->ckk * g->oh * g->ow + LANES, j->es);
        if (f32) {
            pad_f32(xg, planes, g);
            TG__ISA_CALL(expand_f32, planes, slot, g);
        } else {
            pad_f64(xg, planes, g);
            TG__ISA_CALL(expand_f64, planes, slot, g);
        }
    } else if (f32) {
        TG__ISA_CALL(im2col_f32, xg, slot, g);
    } else {
        TG__ISA_CALL(im2col_f64, xg, slot, g);
    }
    return slot;
}

static void forward_part(void *user, int part, int parts)
{
    const job *j = user;
    const geom *g = &j->g;
    int64_t lo, hi, ohw = g->oh * g->ow;
    void *slot = part_of(j, part, parts, &lo, &hi);
    bool f32 = j->dt == TG_F32;
    for (int64_t i = lo; i < hi; i++)
        for (int64_t gi = 0; gi < g->groups; gi++) {
            const void *cols = columns(j, i, gi, slot, g->direct);
            const void *wg = CAT(j->w, gi * g->og * g->ckk, j->es);
            const void *bg = j->b ? CAT(j->b, gi * g->og, j->es) : NULL;
            void *yg = AT(j->out, (i * g->o + gi * g->og) * ohw, j->es);
            if (g->direct && f32) {
                TG__ISA_CALL(forward_f32, cols, wg, bg, yg, g);
                continue;
            }
            if (g->direct) {
                TG__ISA_CALL(forward_f64, cols, wg, bg, yg, g);
                continue;
            }
            if (bg)
                f32 ? fill_rows_f32(yg, bg, g->og, ohw) : fill_rows_f64(yg, bg, g->og, ohw);
            tg__gemm(j->dt, false, false, g->og, ohw, g->ckk, wg, g->ckk, cols, ohw, bg ? 1.0 : 0.0,
                     yg, ohw, j->threads);
        }
}

static void input_part(void *user, int part, int parts)
{
    const job *j = user;
    const geom *g = &j->g;
    int64_t lo, hi, ohw = g->oh * g->ow, hw = g->h * g->w;
    void *cols = part_of(j, part, parts, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        bool plain = g->cols == COLS_PLAIN;
        if (!plain)
            memset(AT(j->out, i * g->c * hw, j->es), 0, (size_t)(g->c * hw) * j->es);
        for (int64_t gi = 0; gi < g->groups; gi++) {
            const void *wg = CAT(j->w, gi * g->og * g->ckk, j->es);
            const void *gg = CAT(j->gr, (i * g->o + gi * g->og) * ohw, j->es);
            void *dxg = AT(j->out, (i * g->c + gi * g->cg) * hw, j->es);
            tg__gemm(j->dt, true, false, g->ckk, ohw, g->og, wg, g->ckk, gg, ohw, 0.0,
                     plain ? dxg : cols, ohw, j->threads);
            if (!plain && j->dt == TG_F32)
                TG__ISA_CALL(col2im_f32, cols, dxg, g);
            else if (!plain)
                TG__ISA_CALL(col2im_f64, cols, dxg, g);
        }
    }
}

/* Part 0 adds into the output, the others into partial sums of their own at the start of their
 * slots (summed into the output afterwards). */
static void weight_part(void *user, int part, int parts)
{
    const job *j = user;
    const geom *g = &j->g;
    int64_t lo, hi, ohw = g->oh * g->ow, numel = g->o * g->ckk;
    void *slot = part_of(j, part, parts, &lo, &hi), *work = slot, *acc = j->out;
    if (g->slots > 1) {
        work = AT(slot, numel, j->es);
        if (part > 0)
            acc = slot;
    }
    memset(acc, 0, (size_t)numel * j->es);
    for (int64_t i = lo; i < hi; i++)
        for (int64_t gi = 0; gi < g->groups; gi++) {
            const void *cols = columns(j, i, gi, work, false);
            const void *gg = CAT(j->gr, (i * g->o + gi * g->og) * ohw, j->es);
            void *dwg = AT(acc, gi * g->og * g->ckk, j->es);
            tg__gemm(j->dt, false, true, g->og, g->ckk, ohw, gg, ohw, cols, ohw, 1.0, dwg, g->ckk,
                     j->threads);
        }
}

static const char *const conv2d_names[] = {"x", "weight", "bias"};

/* ---- conv2d ------------------------------------------------------------------------------ */

/* y[n,o] = sum_{c in group(o), i, j} w[o,c,i,j] x[n,c, y*s - p + i*d, x*s - p + j*d] + b[o];
 * dx += conv2d_backward_input(g, w),  dw += conv2d_backward_weight(x, g),  db += sum_{n,h,w} g */
static tg_status conv2d_check(tg_check *c)
{
    const conv_attr *at = c->attr;
    int want = at->has_bias ? 3 : 2;
    if (c->ninputs != want)
        return tg_check_fail(c, TG_INVALID, "takes %d inputs (x, weight%s), got %d", want,
                             at->has_bias ? ", bias" : "", c->ninputs);
    tg_status st = tg__check_images(c, conv2d_names, 2);
    if (st)
        return st;
    geom g;
    st = conv_validate(c, c->in[0]->shape, c->in[1]->shape, FOR_FORWARD, &g);
    if (st)
        return st;
    if (at->has_bias && (c->in[2]->ndim != 1 || c->in[2]->shape[0] != g.o))
        return tg_check_fail(c, TG_SHAPE, "bias must be 1-d with %lld entries (one per channel)",
                             (long long)g.o);
    set_out(c, g.n, g.o, g.oh, g.ow);
    return TG_OK;
}
static void conv2d_forward(const tg_kernel *k)
{
    const conv_attr *at = k->attr;
    job j = {.x = k->in[0]->data, .w = k->in[1]->data, .out = k->out->data};
    j.b = at->has_bias ? k->in[2]->data : NULL;
    geom_fill(&at->p, k->in[0]->shape, k->in[1]->shape, k->threads, &j.g);
    run_parts(&j, k, k->saved, FOR_FORWARD, forward_part);
}
static void conv2d_backward(const tg_backward_io *io)
{
    const conv_attr *at = io->attr;
    tg_tensor x = io->inputs[0], w = io->inputs[1], g = io->grad_output;
    conv_attr bt = *at;
    bt.has_bias = 0;
    if (io->needs_grad[0]) {
        memcpy(bt.shape, tg_shape(x), sizeof bt.shape);
        io->grad_inputs[0] = tg__apply2(TG__OP_conv2d_backward_input, g, w, &bt);
    }
    if (io->needs_grad[1]) {
        memcpy(bt.shape, tg_shape(w), sizeof bt.shape);
        io->grad_inputs[1] = tg__apply2(TG__OP_conv2d_backward_weight, x, g, &bt);
    }
    if (at->has_bias && io->needs_grad[2])
        /* Over the batch first (a vectorised running sum), then over each smaller plane. */
        io->grad_inputs[2] =
            tg_sum(tg_sum(g, 1, (const int[]){0}, false), 2, (const int[]){1, 2}, false);
}

/* Gradient-check cases shared by the three ops: x and weight shapes, parameters, bias. */
static const struct conv_case {
    int64_t x[4], w[4];
    tg_conv2d_params p;
    int bias;
} conv_cases[] = {
    {{2, 3, 5, 5}, {4, 3, 3, 3}, {{0, 0}, {0, 0}, {0, 0}, 0}, 1}, /* defaults, batch 2 */
    {{1, 2, 6, 5}, {3, 2, 3, 2}, {{2, 1}, {1, 1}, {1, 1}, 1}, 0}, /* stride 2, padding 1 */
    {{1, 2, 7, 6}, {2, 2, 3, 2}, {{1, 1}, {2, 1}, {2, 2}, 0}, 1}, /* dilation 2 */
    {{2, 4, 5, 4}, {4, 2, 3, 3}, {{1, 2}, {1, 1}, {0, 0}, 2}, 1}, /* groups 2 */
    {{1, 4, 5, 5}, {8, 1, 2, 2}, {{2, 2}, {1, 0}, {1, 1}, 4}, 0}, /* depthwise, x2 channels */
    {{2, 3, 3, 4}, {2, 3, 1, 1}, {{1, 1}, {0, 0}, {1, 1}, 1}, 1}, /* 1x1 kernel */
    {{1, 2, 6, 6}, {3, 2, 3, 3}, {{2, 2}, {0, 0}, {1, 1}, 1}, 0}, /* last row/column unused */
    {{0, 2, 4, 4}, {3, 2, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, 1}, 1}, /* empty batch (last) */
};
#define CONV_CASES ((int)(sizeof conv_cases / sizeof conv_cases[0]))

/* The case's output shape [n, o, oh, ow]. */
static void case_out_shape(const struct conv_case *cs, int64_t *out)
{
    geom g;
    geom_fill(&cs->p, cs->x, cs->w, 1, &g);
    out[0] = g.n, out[1] = g.o, out[2] = g.oh, out[3] = g.ow;
}

static int example_conv2d(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (index < 0 || index >= CONV_CASES)
        return 0;
    const struct conv_case *cs = &conv_cases[index];
    conv_attr *at = attr;
    at->p = cs->p;
    at->has_bias = cs->bias;
    uint64_t seed = 301 + 3 * (uint64_t)index;
    in[0] = tg__example(tp, 4, cs->x, -1, 1, 0, seed);
    in[1] = tg__example(tp, 4, cs->w, -1, 1, 0, seed + 1);
    if (!cs->bias)
        return 2;
    in[2] = tg__example(tp, 1, cs->w, -1, 1, 0, seed + 2);
    return 3;
}
const tg_op_def tg__op_conv2d = {.name = "conv2d",
                                 .ninputs = TG_VARIADIC,
                                 .attr_size = sizeof(conv_attr),
                                 .check = conv2d_check,
                                 .forward = conv2d_forward,
                                 .backward = conv2d_backward,
                                 .example = example_conv2d};

tg_tensor tg_conv2d(tg_tensor x, tg_tensor weight, tg_tensor bias, const tg_conv2d_params *p)
{
    conv_attr at;
    memset(&at, 0, sizeof at);
    if (p)
        at.p = *p;
    at.has_bias = tg_tensor_tape(bias) != NULL; /* a zero-initialised handle means none */
    tg_tensor in[3] = {x, weight, bias};
    return tg__apply(TG__OP_conv2d, at.has_bias ? 3 : 2, in, &at);
}

/* ---- conv2d_backward_input --------------------------------------------------------------- */

/* dx = conv2d_backward_input(g, w) = the transposed convolution of g (x's shape from attr);
 * dg += conv2d(u, w),  dw += conv2d_backward_weight(u, g) */
static const char *const bwi_names[] = {"gradient", "weight"};
static tg_status conv2d_bwi_check(tg_check *c)
{
    const conv_attr *at = c->attr;
    tg_status st = tg__check_images(c, bwi_names, 2);
    if (st)
        return st;
    geom g;
    st = conv_validate(c, at->shape, c->in[1]->shape, FOR_INPUT, &g);
    if (!st)
        st = check_grad_shape(c, 0, &g);
    if (st)
        return st;
    set_out(c, g.n, g.c, g.h, g.w);
    return TG_OK;
}
static void conv2d_bwi_forward(const tg_kernel *k)
{
    const conv_attr *at = k->attr;
    const tg_view *w = k->in[1];
    job j = {.gr = k->in[0]->data, .w = w->data, .out = k->out->data};
    geom_fill(&at->p, at->shape, w->shape, k->threads, &j.g);
    geom f;
    if (!flip_geom(&j.g, k->threads, &f)) {
        run_parts(&j, k, k->saved, FOR_INPUT, input_part);
        return;
    }
    /* The convolution of g by the flipped weight, which goes first in the scratch. */
    if (w->dtype == TG_F32)
        flip_f32(w->data, k->saved, &j.g);
    else
        flip_f64(w->data, k->saved, &j.g);
    job fj = {.g = f, .x = k->in[0]->data, .w = k->saved, .out = k->out->data};
    run_parts(&fj, k, AT(k->saved, w->numel, tg_dtype_size(w->dtype)), FOR_FORWARD, forward_part);
}
static void conv2d_bwi_backward(const tg_backward_io *io)
{
    const conv_attr *at = io->attr;
    tg_tensor g = io->inputs[0], w = io->inputs[1], u = io->grad_output;
    conv_attr bt = *at;
    bt.has_bias = 0;
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg__apply2(TG__OP_conv2d, u, w, &bt);
    if (io->needs_grad[1]) {
        memcpy(bt.shape, tg_shape(w), sizeof bt.shape);
        io->grad_inputs[1] = tg__apply2(TG__OP_conv2d_backward_weight, u, g, &bt);
    }
}
static int example_conv2d_bwi(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (index < 0 || index >= CONV_CASES)
        return 0;
    const struct conv_case *cs = &conv_cases[index];
    conv_attr *at = attr;
    at->p = cs->p;
    memcpy(at->shape, cs->x, sizeof at->shape);
    int64_t gs[4];
    case_out_shape(cs, gs);
    uint64_t seed = 331 + 2 * (uint64_t)index;
    in[0] = tg__example(tp, 4, gs, -1, 1, 0, seed);
    in[1] = tg__example(tp, 4, cs->w, -1, 1, 0, seed + 1);
    return 2;
}
const tg_op_def tg__op_conv2d_backward_input = {.name = "conv2d_backward_input",
                                                .ninputs = 2,
                                                .attr_size = sizeof(conv_attr),
                                                .check = conv2d_bwi_check,
                                                .forward = conv2d_bwi_forward,
                                                .backward = conv2d_bwi_backward,
                                                .example = example_conv2d_bwi};

/* ---- conv2d_backward_weight -------------------------------------------------------------- */

/* dw = conv2d_backward_weight(x, g) = sum_n g_n im2col(x_n)^T per group (w's shape from attr);
 * dx += conv2d_backward_input(g, U),  dg += conv2d(x, U) */
static const char *const bww_names[] = {"x", "gradient"};
static tg_status conv2d_bww_check(tg_check *c)
{
    const conv_attr *at = c->attr;
    tg_status st = tg__check_images(c, bww_names, 2);
    if (st)
        return st;
    geom g;
    st = conv_validate(c, c->in[0]->shape, at->shape, FOR_WEIGHT, &g);
    if (!st)
        st = check_grad_shape(c, 1, &g);
    if (st)
        return st;
    set_out(c, g.o, g.cg, g.kh, g.kw);
    return TG_OK;
}
static void conv2d_bww_forward(const tg_kernel *k)
{
    const conv_attr *at = k->attr;
    job j = {.x = k->in[0]->data, .gr = k->in[1]->data, .out = k->out->data};
    geom_fill(&at->p, k->in[0]->shape, at->shape, k->threads, &j.g);
    run_parts(&j, k, k->saved, FOR_WEIGHT, weight_part);
    for (int p = 1; p < j.parts; p++) /* the other parts' sums, in part order */
        j.dt == TG_F32 ? add_into_f32(j.out, (const float *)j.scratch + p * j.slot, k->out->numel)
                       : add_into_f64(j.out, (const double *)j.scratch + p * j.slot, k->out->numel);
}
static void conv2d_bww_backward(const tg_backward_io *io)
{
    const conv_attr *at = io->attr;
    tg_tensor x = io->inputs[0], g = io->inputs[1], u = io->grad_output;
    conv_attr bt = *at;
    bt.has_bias = 0;
    if (io->needs_grad[0]) {
        memcpy(bt.shape, tg_shape(x), sizeof bt.shape);
        io->grad_inputs[0] = tg__apply2(TG__OP_conv2d_backward_input, g, u, &bt);
    }
    if (io->needs_grad[1])
        io->grad_inputs[1] = tg__apply2(TG__OP_conv2d, x, u, &bt);
}
static int example_conv2d_bww(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    /* Not the empty batch (the last case): both inputs would be empty, nothing to check. */
    if (index < 0 || index >= CONV_CASES - 1)
        return 0;
    const struct conv_case *cs = &conv_cases[index];
    conv_attr *at = attr;
    at->p = cs->p;
    memcpy(at->shape, cs->w, sizeof at->shape);
    int64_t gs[4];
    case_out_shape(cs, gs);
    uint64_t seed = 361 + 2 * (uint64_t)index;
    in[0] = tg__example(tp, 4, cs->x, -1, 1, 0, seed);
    in[1] = tg__example(tp, 4, gs, -1, 1, 0, seed + 1);
    return 2;
}
const tg_op_def tg__op_conv2d_backward_weight = {.name = "conv2d_backward_weight",
                                                 .ninputs = 2,
                                                 .attr_size = sizeof(conv_attr),
                                                 .check = conv2d_bww_check,
                                                 .forward = conv2d_bww_forward,
                                                 .backward = conv2d_bww_backward,
                                                 .example = example_conv2d_bww};
