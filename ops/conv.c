/* conv.c — 2-d convolution over NCHW (conv2d) and the two ops its gradient is written with:
 * conv2d_backward_input (the transposed convolution, dx) and conv2d_backward_weight (dw). The
 * three are bilinear and each one's gradient is written with the three, so conv2d is
 * differentiable to any order. All lower to im2col (col2im for the transpose) into the node's
 * scratch and one GEMM per (chunk of images, group): the columns of several images side by side
 * make one larger GEMM, which matters for small images (fewer calls, each worth threading). */
#include "gemm.h"
#include "kernels.h"
#include "ops.h"

/* conv2d: x, weight, then bias when has_bias. conv2d_backward_input: (g, weight), `shape` is x's
 * shape. conv2d_backward_weight: (x, g), `shape` is the weight's shape. */
typedef struct conv_attr {
    tg_conv2d_params p; /* as passed: zero stride, dilation or groups mean 1 */
    int has_bias;
    int64_t shape[4];
} conv_attr;

/* Images are batched into one GEMM per (chunk, group) until the GEMM has CHUNK_COLS output
 * columns, within CHUNK_BYTES of scratch (columns plus a gathered gradient or output block).
 * Measured on the trainer's CNN (batch 128, 28x28 and 14x14 planes, OpenBLAS on 2 threads): one
 * GEMM per image spends its time starting threads for small products; whole-batch GEMMs pay
 * for copying large blocks; about 2048 columns was fastest for both layers. */
#define CHUNK_COLS 2048
#define CHUNK_BYTES ((int64_t)8 << 20)

/* Sizes of one convolution, with the defaults applied. */
typedef struct geom {
    int64_t n, c, h, w;    /* x [n, c, h, w] */
    int64_t o, cg, kh, kw; /* weight [o, cg, kh, kw], cg = c / groups */
    int64_t groups, og;    /* og = o / groups */
    int64_t oh, ow;        /* output plane */
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t ckk;   /* rows of the column matrix: cg * kh * kw */
    int64_t chunk; /* images per GEMM (>= 1) */
} geom;

static int64_t or_one(int v) { return v ? v : 1; }

/* The geometry of x shape xs and weight shape ws (sizes only; chunk 1); meaningful once
 * conv_validate passed. */
static void geom_sizes(const tg_conv2d_params *p, const int64_t *xs, const int64_t *ws, geom *g)
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
    g->chunk = 1;
}

/* Images per GEMM for elements of es bytes: enough for CHUNK_COLS output columns, within
 * CHUNK_BYTES of scratch, at least 1. */
static void set_chunk(geom *g, size_t es)
{
    int64_t ohw = g->oh * g->ow, per = (g->ckk + g->og) * ohw * (int64_t)es;
    int64_t want = ohw > 0 ? (CHUNK_COLS + ohw - 1) / ohw : 1;
    int64_t room = per > 0 ? CHUNK_BYTES / per : want;
    g->chunk = want < room ? want : room;
    g->chunk = g->chunk < g->n ? g->chunk : g->n;
    g->chunk = g->chunk > 1 ? g->chunk : 1;
}

static void geom_fill(const tg_conv2d_params *p, const int64_t *xs, const int64_t *ws, size_t es,
                      geom *g)
{
    geom_sizes(p, xs, ws, g);
    set_chunk(g, es);
}

/* Scratch for one chunk: columns [ckk, chunk*oh*ow], then (chunk > 1) a block [og, chunk*oh*ow]
 * for the output or the gathered gradient. */
static int64_t scratch_elems(const geom *g)
{
    int64_t cols = g->chunk * g->oh * g->ow;
    return g->ckk * cols + (g->chunk > 1 ? g->og * cols : 0);
}

/* Validates the attributes against x shape xs and weight shape ws (both 4-d), fills *g and asks
 * for the scratch. */
static tg_status conv_validate(tg_check *c, const int64_t *xs, const int64_t *ws, geom *g)
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
    /* One image's columns and output block must be addressable; the chunk is then bounded. */
    int64_t lim = INT64_MAX / 64, rows = ws[1], ohw;
    for (int d = 2; d < 4; d++) {
        if (rows > 0 && ws[d] > lim / rows)
            return tg_check_fail(c, TG_SHAPE, "kernel too large");
        rows *= ws[d];
    }
    rows += ws[0];
    geom_sizes(p, xs, ws, g);
    if (g->ow > lim / g->oh) /* oh, ow >= 1 here */
        return tg_check_fail(c, TG_SHAPE, "output plane %lldx%lld is too large", (long long)g->oh,
                             (long long)g->ow);
    ohw = g->oh * g->ow;
    if (rows > 0 && ohw > lim / rows)
        return tg_check_fail(c, TG_SHAPE, "the column buffer (%lld x %lld) is too large",
                             (long long)rows, (long long)ohw);
    size_t es = tg_dtype_size(c->in[0]->dtype);
    set_chunk(g, es);
    c->saved_bytes = (size_t)scratch_elems(g) * es;
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

/* im2col: col[(ci*kh + i)*kw + j][oy*ow + ox] = x[ci][oy*sh - ph + i*dh][ox*sw - pw + j*dw] (0
 * outside) for one group of one image (x: its cg planes); col rows are ld elements apart, so
 * the images of a chunk sit side by side. col2im adds the columns back into x. */
#define COLS(T, im2col, col2im)                                                                    \
    static void im2col(const T *x, T *col, int64_t ld, const geom *g)                              \
    {                                                                                              \
        for (int64_t ci = 0; ci < g->cg; ci++)                                                     \
            for (int64_t i = 0; i < g->kh; i++) {                                                  \
                int64_t ylo, yhi, yoff = i * g->dh - g->ph;                                        \
                tg__valid_range(yoff, g->sh, g->h, g->oh, &ylo, &yhi);                             \
                for (int64_t j = 0; j < g->kw; j++) {                                              \
                    T *row = col + ((ci * g->kh + i) * g->kw + j) * ld;                            \
                    int64_t lo, hi, off = j * g->dw - g->pw;                                       \
                    tg__valid_range(off, g->sw, g->w, g->ow, &lo, &hi);                            \
                    memset(row, 0, (size_t)(ylo * g->ow) * sizeof(T));                             \
                    for (int64_t oy = ylo; oy < yhi; oy++) {                                       \
                        T *d = row + oy * g->ow;                                                   \
                        const T *s = x + (ci * g->h + oy * g->sh + yoff) * g->w;                   \
                        for (int64_t q = 0; q < lo; q++)                                           \
                            d[q] = 0;                                                              \
                        if (g->sw == 1 && hi > lo)                                                 \
                            memcpy(d + lo, s + lo + off, (size_t)(hi - lo) * sizeof(T));           \
                        else if (g->sw != 1)                                                       \
                            for (int64_t q = lo; q < hi; q++)                                      \
                                d[q] = s[q * g->sw + off];                                         \
                        for (int64_t q = hi; q < g->ow; q++)                                       \
                            d[q] = 0;                                                              \
                    }                                                                              \
                    memset(row + yhi * g->ow, 0, (size_t)((g->oh - yhi) * g->ow) * sizeof(T));     \
                }                                                                                  \
            }                                                                                      \
    }                                                                                              \
    static void col2im(const T *col, int64_t ld, T *x, const geom *g)                              \
    {                                                                                              \
        for (int64_t ci = 0; ci < g->cg; ci++)                                                     \
            for (int64_t i = 0; i < g->kh; i++) {                                                  \
                int64_t ylo, yhi, yoff = i * g->dh - g->ph;                                        \
                tg__valid_range(yoff, g->sh, g->h, g->oh, &ylo, &yhi);                             \
                for (int64_t j = 0; j < g->kw; j++) {                                              \
                    const T *row = col + ((ci * g->kh + i) * g->kw + j) * ld;                      \
                    int64_t lo, hi, off = j * g->dw - g->pw;                                       \
                    tg__valid_range(off, g->sw, g->w, g->ow, &lo, &hi);                            \
                    for (int64_t oy = ylo; oy < yhi; oy++) {                                       \
                        const T *d = row + oy * g->ow;                                             \
                        T *s = x + (ci * g->h + oy * g->sh + yoff) * g->w;                         \
                        if (g->sw == 1)                                                            \
                            for (int64_t q = lo; q < hi; q++)                                      \
                                s[q + off] += d[q];                                                \
                        else                                                                       \
                            for (int64_t q = lo; q < hi; q++)                                      \
                                s[q * g->sw + off] += d[q];                                        \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
    }
COLS(float, im2col_f32, col2im_f32)
COLS(double, im2col_f64, col2im_f64)

static void im2col(tg_dtype dt, const void *x, void *col, int64_t ld, const geom *g)
{
    if (dt == TG_F32)
        im2col_f32(x, col, ld, g);
    else
        im2col_f64(x, col, ld, g);
}

static void col2im(tg_dtype dt, const void *col, int64_t ld, void *x, const geom *g)
{
    if (dt == TG_F32)
        col2im_f32(col, ld, x, g);
    else
        col2im_f64(col, ld, x, g);
}

/* dst row r (n elements, rows dld apart) = src row r (sld apart) + b[r] (b may be NULL). */
static void put_rows(tg_dtype dt, void *dst, int64_t dld, const void *src, int64_t sld,
                     const void *b, int64_t rows, int64_t n)
{
    for (int64_t r = 0; r < rows; r++) {
        if (dt == TG_F32) {
            float *d = (float *)dst + r * dld, v = b ? ((const float *)b)[r] : 0;
            const float *s = (const float *)src + r * sld;
            for (int64_t q = 0; q < n; q++)
                d[q] = s[q] + v;
        } else {
            double *d = (double *)dst + r * dld, v = b ? ((const double *)b)[r] : 0;
            const double *s = (const double *)src + r * sld;
            for (int64_t q = 0; q < n; q++)
                d[q] = s[q] + v;
        }
    }
}

/* Byte address of element `i` of an array of dtype size es. */
#define AT(p, i, es) ((char *)(p) + (size_t)(i) * (es))
#define CAT(p, i, es) ((const char *)(p) + (size_t)(i) * (es))

/* The chunks of images: for (n0 = 0; n0 < g.n; n0 += g.chunk) with nb images in this one. */
#define CHUNK_SIZE(g, n0) ((g).n - (n0) < (g).chunk ? (g).n - (n0) : (g).chunk)

/* The gradient block [og, nb*ohw] of group gi for images n0.. of g [n, o, oh, ow]: the block
 * itself when nb == 1 (*ld = ohw), else gathered into `tmp`. */
static const void *gather_grad(const geom *g, const void *gv, void *tmp, size_t es, int64_t n0,
                               int64_t nb, int64_t gi, int64_t *ld)
{
    int64_t ohw = g->oh * g->ow;
    const void *first = CAT(gv, (n0 * g->o + gi * g->og) * ohw, es);
    *ld = nb * ohw;
    if (nb == 1)
        return first;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t o = 0; o < g->og; o++)
            memcpy(AT(tmp, o * *ld + b * ohw, es),
                   CAT(gv, ((n0 + b) * g->o + gi * g->og + o) * ohw, es), (size_t)ohw * es);
    return tmp;
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
    st = conv_validate(c, c->in[0]->shape, c->in[1]->shape, &g);
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
    const tg_view *x = k->in[0], *w = k->in[1], *y = k->out;
    const void *b = at->has_bias ? k->in[2]->data : NULL;
    tg_dtype dt = y->dtype;
    size_t es = tg_dtype_size(dt);
    geom g;
    geom_fill(&at->p, x->shape, w->shape, es, &g);
    int64_t ohw = g.oh * g.ow, hw = g.h * g.w;
    void *cols = k->saved, *tmp = AT(k->saved, g.ckk * g.chunk * ohw, es);
    for (int64_t n0 = 0; n0 < g.n; n0 += g.chunk) {
        int64_t nb = CHUNK_SIZE(g, n0), ld = nb * ohw;
        for (int64_t gi = 0; gi < g.groups; gi++) {
            for (int64_t i = 0; i < nb; i++)
                im2col(dt, CAT(x->data, ((n0 + i) * g.c + gi * g.cg) * hw, es),
                       AT(cols, i * ohw, es), ld, &g);
            const void *wg = CAT(w->data, gi * g.og * g.ckk, es);
            const void *bg = b ? CAT(b, gi * g.og, es) : NULL;
            void *yb = AT(y->data, (n0 * g.o + gi * g.og) * ohw, es);
            if (nb == 1) { /* straight into y, then the bias added in place */
                tg__gemm(dt, false, false, g.og, ohw, g.ckk, wg, g.ckk, cols, ohw, 0.0, yb, ohw,
                         k->threads);
                if (bg)
                    put_rows(dt, yb, ohw, yb, ohw, bg, g.og, ohw);
                continue;
            }
            tg__gemm(dt, false, false, g.og, ld, g.ckk, wg, g.ckk, cols, ld, 0.0, tmp, ld,
                     k->threads);
            for (int64_t i = 0; i < nb; i++)
                put_rows(dt, AT(yb, i * g.o * ohw, es), ohw, CAT(tmp, i * ohw, es), ld, bg, g.og,
                         ohw);
        }
    }
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
    geom_fill(&cs->p, cs->x, cs->w, 8, &g);
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
    st = conv_validate(c, at->shape, c->in[1]->shape, &g);
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
    const tg_view *gv = k->in[0], *w = k->in[1], *dx = k->out;
    tg_dtype dt = dx->dtype;
    size_t es = tg_dtype_size(dt);
    geom g;
    geom_fill(&at->p, at->shape, w->shape, es, &g);
    int64_t ohw = g.oh * g.ow, hw = g.h * g.w;
    void *cols = k->saved, *tmp = AT(k->saved, g.ckk * g.chunk * ohw, es);
    memset(dx->data, 0, (size_t)dx->numel * es);
    for (int64_t n0 = 0; n0 < g.n; n0 += g.chunk) {
        int64_t nb = CHUNK_SIZE(g, n0), ld;
        for (int64_t gi = 0; gi < g.groups; gi++) {
            const void *gb = gather_grad(&g, gv->data, tmp, es, n0, nb, gi, &ld);
            tg__gemm(dt, true, false, g.ckk, ld, g.og, CAT(w->data, gi * g.og * g.ckk, es), g.ckk,
                     gb, ld, 0.0, cols, ld, k->threads);
            for (int64_t i = 0; i < nb; i++)
                col2im(dt, CAT(cols, i * ohw, es), ld,
                       AT(dx->data, ((n0 + i) * g.c + gi * g.cg) * hw, es), &g);
        }
    }
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
    st = conv_validate(c, c->in[0]->shape, at->shape, &g);
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
    const tg_view *x = k->in[0], *gv = k->in[1], *dw = k->out;
    tg_dtype dt = dw->dtype;
    size_t es = tg_dtype_size(dt);
    geom g;
    geom_fill(&at->p, x->shape, at->shape, es, &g);
    int64_t ohw = g.oh * g.ow, hw = g.h * g.w;
    void *cols = k->saved, *tmp = AT(k->saved, g.ckk * g.chunk * ohw, es);
    memset(dw->data, 0, (size_t)dw->numel * es);
    for (int64_t n0 = 0; n0 < g.n; n0 += g.chunk) {
        int64_t nb = CHUNK_SIZE(g, n0), ld;
        for (int64_t gi = 0; gi < g.groups; gi++) {
            const void *gb = gather_grad(&g, gv->data, tmp, es, n0, nb, gi, &ld);
            for (int64_t i = 0; i < nb; i++)
                im2col(dt, CAT(x->data, ((n0 + i) * g.c + gi * g.cg) * hw, es),
                       AT(cols, i * ohw, es), ld, &g);
            tg__gemm(dt, false, true, g.og, g.ckk, ld, gb, ld, cols, ld, 1.0,
                     AT(dw->data, gi * g.og * g.ckk, es), g.ckk, k->threads);
        }
    }
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
