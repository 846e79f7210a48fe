/* select.c — ops that pick entries rather than compute values: argmax and argmin, topk's
 * indices (tg_topk gathers the values through tg_gather, so they carry a gradient) and
 * categorical sampling (multinomial). Every output here is i64 and carries no gradient. */
#include "kernels.h"
#include "ops.h"
#include "parallel.h"
#include "vmath.h"

/* A 0-d tensor counts as one axis of size 1 (axis 0 or -1), as in PyTorch; -1 if out of range. */
static int span_axis(int axis, int ndim) { return tg__axis(axis, ndim > 0 ? ndim : 1); }

/* The length of the (span) axis and the elements before and after it: [outer, n, inner]. */
static void split_axis(const tg_view *x, int axis, int64_t *outer, int64_t *n, int64_t *inner)
{
    *n = x->ndim > 0 ? x->shape[axis] : 1;
    tg__outer_inner(x, x->ndim > 0 ? axis : 0, outer, inner);
}

/* One row along the axis: entry i is x[i * stride], f32 or f64. */
typedef struct row {
    const void *x;
    tg_dtype dtype;
    int64_t stride;
} row;

static inline double value(const row *r, int64_t i)
{
    return r->dtype == TG_F32 ? ((const float *)r->x)[i * r->stride]
                              : ((const double *)r->x)[i * r->stride];
}

/* Entry i of r comes before entry j in a sort by value, descending when `largest` (ascending
 * otherwise), as torch.sort orders: NaN above every number, NaNs equal, -0 equal to +0; equal
 * entries by the lower index. A strict total order, so every selection below has one
 * deterministic answer. */
static inline bool before(const row *r, bool largest, int64_t i, int64_t j)
{
    double a = value(r, i), b = value(r, j);
    if (a > b)
        return largest;
    if (a < b)
        return !largest;
    int c = (int)isnan(a) - (int)isnan(b); /* equal, or a NaN on one side or both */
    c = largest ? c : -c;
    return c > 0 || (c == 0 && i < j);
}

/* ---- partial selection: the first k entries of a row in that order ------------------------
 * A heap of k entry indices whose root is the one that comes last: each later entry that comes
 * before the root replaces it, so one pass over the row keeps the first k (O(n log k), and
 * about one comparison per entry once the heap holds good entries). Heapsort then lays them out
 * first to last. The heap lives in the caller's slots slot[p * stride], p < k: topk's output
 * row itself, strided when the axis is not the last. */
typedef struct heap {
    const row *r;
    bool largest;
    int64_t *slot;
    int64_t stride;
    int64_t size;
} heap;

#define SLOT(h, p) ((h)->slot[(p) * (h)->stride])

/* Restores the heap below position p (entries that come later rise toward the root). */
static void sift_down(heap *h, int64_t p)
{
    int64_t e = SLOT(h, p);
    for (;;) {
        int64_t c = 2 * p + 1;
        if (c >= h->size)
            break;
        if (c + 1 < h->size && before(h->r, h->largest, SLOT(h, c), SLOT(h, c + 1)))
            c++;
        if (!before(h->r, h->largest, e, SLOT(h, c)))
            break;
        SLOT(h, p) = SLOT(h, c);
        p = c;
    }
    SLOT(h, p) = e;
}

/* slot[p * stride] for p < k: the indices of the first k of r's n entries, first to last. */
static void select_first(const row *r, bool largest, int64_t n, int64_t k, int64_t *slot,
                         int64_t stride)
{
    heap h = {r, largest, slot, stride, k};
    for (int64_t i = 0; i < k; i++)
        SLOT(&h, i) = i;
    for (int64_t p = k / 2 - 1; p >= 0; p--)
        sift_down(&h, p);
    for (int64_t i = k; i < n; i++) {
        if (before(r, largest, i, SLOT(&h, 0))) {
            SLOT(&h, 0) = i;
            sift_down(&h, 0);
        }
    }
    for (int64_t end = k - 1; end > 0; end--) { /* heapsort: the root (the last) to the end */
        int64_t last = SLOT(&h, 0);
        SLOT(&h, 0) = SLOT(&h, end);
        SLOT(&h, end) = last;
        h.size = end;
        sift_down(&h, 0);
    }
}

/* ---- argmax / argmin ----------------------------------------------------------------------- */

typedef struct arg_attr {
    int axis;
    int keepdim;
} arg_attr;

/* i64 indices along one axis of a float tensor, which must not be empty; the axis is dropped
 * (kept with size 1 under keepdim). */
static tg_status arg_check(tg_check *c)
{
    const arg_attr *at = c->attr;
    const tg_view *x = c->in[0];
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    int ax = span_axis(at->axis, x->ndim);
    if (ax < 0)
        return tg_check_fail(c, TG_RANGE, "axis %d out of range for %d dims", at->axis, x->ndim);
    if (x->ndim > 0 && x->shape[ax] == 0)
        return tg_check_fail(c, TG_SHAPE, "axis %d is empty: there is no entry to pick", ax);
    *c->out = *x;
    c->out->dtype = TG_I64;
    if (x->ndim > 0 && at->keepdim) {
        c->out->shape[ax] = 1;
    } else if (x->ndim > 0) {
        for (int d = ax; d < x->ndim - 1; d++)
            c->out->shape[d] = x->shape[d + 1];
        c->out->ndim = x->ndim - 1;
    }
    return TG_OK;
}

/* What an argmax/argmin kernel works on: x as [outer, n, inner], y as [outer, inner]. */
typedef struct arg_job {
    const tg_view *x;
    int64_t *y;
    int64_t n, inner;
} arg_job;

/* x takes the place of the best so far b: it is above b (argmax, MAX 1) or below it (argmin),
 * or NaN where b is not. NaN wins both ways and the first of equals stays, as in PyTorch. */
#define TAKES(MAX, x, b) (((MAX) ? (x) > (b) : (x) < (b)) || (isnan(x) && !isnan(b)))

/* Outer indices [o0, o1), for element type T and argmax (MAX 1) or argmin (MAX 0). A contiguous
 * row (inner 1) is one scan; otherwise the slab x[o, :, :] is walked in memory order, each
 * output column keeping its best row so far. */
#define ARG_ROWS(T, MAX, name)                                                                     \
    static void name(void *user, int64_t o0, int64_t o1)                                           \
    {                                                                                              \
        const arg_job *j = user;                                                                   \
        const int64_t n = j->n, inner = j->inner;                                                  \
        for (int64_t o = o0; o < o1; o++) {                                                        \
            const T *x = (const T *)j->x->data + o * n * inner;                                    \
            int64_t *y = j->y + o * inner;                                                         \
            if (inner == 1) {                                                                      \
                int64_t best = 0;                                                                  \
                for (int64_t i = 1; i < n; i++)                                                    \
                    if (TAKES(MAX, x[i], x[best]))                                                 \
                        best = i;                                                                  \
                y[0] = best;                                                                       \
                continue;                                                                          \
            }                                                                                      \
            for (int64_t e = 0; e < inner; e++)                                                    \
                y[e] = 0;                                                                          \
            for (int64_t i = 1; i < n; i++)                                                        \
                for (int64_t e = 0; e < inner; e++)                                                \
                    if (TAKES(MAX, x[i * inner + e], x[y[e] * inner + e]))                         \
                        y[e] = i;                                                                  \
        }                                                                                          \
    }
ARG_ROWS(float, 1, argmax_rows_f32)
ARG_ROWS(double, 1, argmax_rows_f64)
ARG_ROWS(float, 0, argmin_rows_f32)
ARG_ROWS(double, 0, argmin_rows_f64)

static void arg_run(const tg_kernel *k, tg__range_fn rows_f32, tg__range_fn rows_f64)
{
    const tg_view *x = k->in[0];
    int64_t outer, n, inner;
    split_axis(x, span_axis(((const arg_attr *)k->attr)->axis, x->ndim), &outer, &n, &inner);
    arg_job j = {x, k->out->data, n, inner};
    tg__parallel_for(k->threads, outer, (double)x->numel, x->dtype == TG_F32 ? rows_f32 : rows_f64,
                     &j);
}

/* Random rows along each axis; exact ties (the first wins); NaN (it wins); a 0-d input. */
static int example_arg(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int64_t s34[] = {3, 4}, s234[] = {2, 3, 4}, s25[] = {2, 5};
    static const double ties[] = {1, 3, 3, 0, -2, -2, 5, -2, 4, 4, 4, 4};
    static const double nans[] = {1, NAN, 7, NAN, 0, -1, 2, 2, NAN, -INFINITY};
    static const int axes[] = {1, 0, -1, 1, 0, 1, -1};
    arg_attr *at = attr;
    if (index < 0 || index >= 7)
        return 0;
    at->axis = axes[index];
    at->keepdim = index % 2;
    if (index == 0 || index == 1)
        in[0] = tg__example(tp, 2, s34, -1, 1, 0, 401 + (uint64_t)index);
    else if (index == 2)
        in[0] = tg__example(tp, 3, s234, -1, 1, 0, 403);
    else if (index == 3 || index == 4)
        in[0] = tg_tensor_from(tp, TG_F64, 2, s34, ties);
    else if (index == 5)
        in[0] = tg_tensor_from(tp, TG_F64, 2, s25, nans);
    else
        in[0] = tg_constant(tp, TG_F64, 2.5);
    return 1;
}

/* y = index of the largest entry along axis (no gradient) */
static void argmax_forward(const tg_kernel *k) { arg_run(k, argmax_rows_f32, argmax_rows_f64); }
const tg_op_def tg__op_argmax = {.name = "argmax",
                                 .ninputs = 1,
                                 .attr_size = sizeof(arg_attr),
                                 .flags = TG_OP_NONDIFF,
                                 .check = arg_check,
                                 .forward = argmax_forward,
                                 .example = example_arg};
tg_tensor tg_argmax(tg_tensor a, int axis, bool keepdim)
{
    arg_attr at = {axis, keepdim};
    return tg__apply1(TG__OP_argmax, a, &at);
}

/* y = index of the smallest entry along axis (no gradient) */
static void argmin_forward(const tg_kernel *k) { arg_run(k, argmin_rows_f32, argmin_rows_f64); }
const tg_op_def tg__op_argmin = {.name = "argmin",
                                 .ninputs = 1,
                                 .attr_size = sizeof(arg_attr),
                                 .flags = TG_OP_NONDIFF,
                                 .check = arg_check,
                                 .forward = argmin_forward,
                                 .example = example_arg};
tg_tensor tg_argmin(tg_tensor a, int axis, bool keepdim)
{
    arg_attr at = {axis, keepdim};
    return tg__apply1(TG__OP_argmin, a, &at);
}

/* ---- topk ---------------------------------------------------------------------------------- */

typedef struct topk_attr {
    int64_t k;
    int axis;
    int largest;
} topk_attr;

/* y = indices of the first k entries along axis in the sort order above (no gradient; tg_topk
 * gathers the values) */
static tg_status topk_check(tg_check *c)
{
    const topk_attr *at = c->attr;
    const tg_view *x = c->in[0];
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    int ax = span_axis(at->axis, x->ndim);
    if (ax < 0)
        return tg_check_fail(c, TG_RANGE, "axis %d out of range for %d dims", at->axis, x->ndim);
    int64_t n = x->ndim > 0 ? x->shape[ax] : 1;
    if (at->k < 0 || at->k > n)
        return tg_check_fail(c, TG_RANGE, "k = %lld is out of range for axis %d of size %lld",
                             (long long)at->k, ax, (long long)n);
    if (x->ndim == 0 && at->k != 1)
        return tg_check_fail(c, TG_RANGE, "k = %lld on a 0-d tensor (its result is 0-d: k = 1)",
                             (long long)at->k);
    *c->out = *x;
    c->out->dtype = TG_I64;
    if (x->ndim > 0)
        c->out->shape[ax] = at->k;
    return TG_OK;
}

typedef struct topk_job {
    const tg_view *x;
    int64_t *y;
    int64_t n, inner, k;
    bool largest;
} topk_job;

/* Rows u in [u0, u1), u = o * inner + e: the row x[o, :, e] selects into y[o, :, e]. */
static void topk_rows(void *user, int64_t u0, int64_t u1)
{
    const topk_job *j = user;
    size_t es = tg_dtype_size(j->x->dtype);
    for (int64_t u = u0; u < u1; u++) {
        int64_t o = u / j->inner, e = u % j->inner;
        row r = {(const char *)j->x->data + (size_t)(o * j->n * j->inner + e) * es, j->x->dtype,
                 j->inner};
        select_first(&r, j->largest, j->n, j->k, j->y + o * j->k * j->inner + e, j->inner);
    }
}

static void topk_forward(const tg_kernel *k)
{
    const topk_attr *at = k->attr;
    const tg_view *x = k->in[0];
    int64_t outer, n, inner;
    split_axis(x, span_axis(at->axis, x->ndim), &outer, &n, &inner);
    topk_job j = {x, k->out->data, n, inner, at->k, at->largest};
    double cost = (double)x->numel * (1.0 + log2(1.0 + (double)at->k));
    tg__parallel_for(k->threads, outer * inner, cost, topk_rows, &j);
}

/* Random rows along each axis, both orders; ties cut by k (the lower indices win); NaN. */
static int example_topk(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int64_t s36[] = {3, 6}, s243[] = {2, 4, 3}, s26[] = {2, 6};
    static const double ties[] = {1, 3, 3, 0, 3, -2, -2, 5, -2, 4, 4, -2,
                                  0, 0, 0, 0, 0, 0,  2,  1, 2,  1, 2, 1};
    static const double nans[] = {1, NAN, 7, NAN, 0, -1, 2, INFINITY, NAN, -INFINITY, 2, 0};
    static const struct {
        int64_t k;
        int axis, largest;
    } cases[] = {{2, 1, 1}, {3, -1, 0}, {2, 1, 1}, {4, -2, 0}, {3, -1, 1},
                 {4, 2, 0}, {6, -1, 1}, {5, 1, 0}, {1, 0, 1}};
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    topk_attr *at = attr;
    at->k = cases[index].k;
    at->axis = cases[index].axis;
    at->largest = cases[index].largest;
    if (index < 2)
        in[0] = tg__example(tp, 2, s36, -1, 1, 0, 411 + (uint64_t)index);
    else if (index < 4)
        in[0] = tg__example(tp, 3, s243, -1, 1, 0, 411 + (uint64_t)index);
    else if (index < 6)
        in[0] = tg_reshape(tg_tensor_from(tp, TG_F64, 1, (int64_t[]){24}, ties), 3,
                           (int64_t[]){2, 2, 6});
    else if (index < 8)
        in[0] = tg_tensor_from(tp, TG_F64, 2, s26, nans);
    else
        in[0] = tg_constant(tp, TG_F64, -1.5);
    return 1;
}
const tg_op_def tg__op_topk = {.name = "topk",
                               .ninputs = 1,
                               .attr_size = sizeof(topk_attr),
                               .flags = TG_OP_NONDIFF,
                               .check = topk_check,
                               .forward = topk_forward,
                               .example = example_topk};

/* The values are a gather of the input at the indices, so their gradient goes back to the
 * picked entries through gather's rule (and is differentiable again). */
tg_status tg_topk(tg_tensor a, int64_t k, int axis, bool largest, tg_tensor *values,
                  tg_tensor *indices)
{
    tg_tape *tp = tg_tensor_tape(a);
    if (values)
        *values = tg_error(tp);
    if (indices)
        *indices = tg_error(tp);
    if (!tp)
        return TG_INVALID;
    if (!values || !indices)
        return tg_tape_fail(tp, TG_INVALID, "topk: values or indices is NULL");
    topk_attr at = {k, axis, largest};
    tg_tensor idx = tg__apply1(TG__OP_topk, a, &at);
    /* A 0-d input is its own top entry (gather needs an axis). */
    tg_tensor v = tg_ndim(a) == 0 ? tg_reshape(a, 0, NULL) : tg_gather(a, axis, idx);
    if (!tg_ok(idx) || !tg_ok(v))
        return tg_tape_status(tp);
    *values = v;
    *indices = idx;
    return TG_OK;
}

/* ---- multinomial --------------------------------------------------------------------------- */

typedef struct multinomial_attr {
    int64_t num_samples;
    double temperature;
    int64_t top_k; /* 0: every class */
    uint64_t seed;
} multinomial_attr;

/* The classes a row draws from: all C, or the top_k when 0 < top_k < C. */
static int64_t drawn_classes(const multinomial_attr *at, int64_t classes)
{
    return at->top_k > 0 && at->top_k < classes ? at->top_k : classes;
}

/* Every row has a largest logit that is finite, and no NaN: softmax is defined. The first bad
 * entry is named by its row and class. */
static tg_status check_logits(tg_check *c, int64_t rows, int64_t classes)
{
    const tg_view *x = c->in[0];
    for (int64_t o = 0; o < rows; o++) {
        row r = {(const char *)x->data + (size_t)(o * classes) * tg_dtype_size(x->dtype), x->dtype,
                 1};
        double m = -INFINITY;
        for (int64_t i = 0; i < classes; i++) {
            double v = value(&r, i);
            if (isnan(v) || v == INFINITY)
                return tg_check_fail(c, TG_RANGE, "logit %g in row %lld, class %lld", v,
                                     (long long)o, (long long)i);
            m = v > m ? v : m;
        }
        if (m == -INFINITY)
            return tg_check_fail(c, TG_RANGE, "row %lld is all -inf: no class can be drawn",
                                 (long long)o);
    }
    return TG_OK;
}

/* y[..., s] = a class drawn from softmax(x[..., :] / T) restricted to its top_k (no gradient) */
static tg_status multinomial_check(tg_check *c)
{
    const multinomial_attr *at = c->attr;
    const tg_view *x = c->in[0];
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    if (x->ndim == 0 || x->shape[x->ndim - 1] == 0)
        return tg_check_fail(c, TG_SHAPE, "logits need a non-empty class axis (the last)");
    if (at->num_samples < 1)
        return tg_check_fail(c, TG_RANGE, "num_samples = %lld (need >= 1)",
                             (long long)at->num_samples);
    if (!(at->temperature > 0 && at->temperature < INFINITY))
        return tg_check_fail(c, TG_RANGE, "temperature %g (need a finite value > 0)",
                             at->temperature);
    if (at->top_k < 0)
        return tg_check_fail(c, TG_RANGE, "top_k = %lld (need >= 0; 0 means every class)",
                             (long long)at->top_k);
    *c->out = *x;
    c->out->dtype = TG_I64;
    c->out->shape[x->ndim - 1] = at->num_samples;
    int64_t numel;
    if (!tg__shape_ok(c->out->ndim, c->out->shape, &numel))
        return tg_check_fail(c, TG_SHAPE, "%lld samples per row are too many",
                             (long long)at->num_samples);
    int64_t classes = x->shape[x->ndim - 1];
    st = check_logits(c, x->numel / classes, classes);
    /* Scratch: the weights (then their running sum), and the top_k's class indices. */
    int64_t drawn = drawn_classes(at, classes);
    c->saved_bytes = (size_t)drawn * (sizeof(double) + (drawn < classes ? sizeof(int64_t) : 0));
    return st;
}

/* SplitMix64's finaliser. Draw i of a seed is mix64(base + (i + 1) * GAMMA), base a mix of the
 * seed and this op's own constant, so the stream is unrelated to dropout's for the same seed. */
#define GAMMA 0x9e3779b97f4a7c15ull
#define MULTINOMIAL_STREAM 0x6d756c74696e6f6dull /* "multinom" */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform on [0, 1) with 53 random bits: a pure function of (base, i). */
static double uniform(uint64_t base, uint64_t i)
{
    return (double)(mix64(base + (i + 1) * GAMMA) >> 11) * 0x1.0p-53;
}

/* Restores a min-heap of k values below position p. */
static void sift_down_values(double *v, int64_t k, int64_t p)
{
    double e = v[p];
    for (;;) {
        int64_t c = 2 * p + 1;
        if (c >= k)
            break;
        if (c + 1 < k && v[c + 1] < v[c])
            c++;
        if (!(v[c] < e))
            break;
        v[p] = v[c];
        p = c;
    }
    v[p] = e;
}

/* top[0..k): the indices of the k largest of the n logits of r (no NaN, checked), ties by the
 * lower index as tg_topk picks them, in index order. A min-heap of k values (in `heap`) finds
 * the k-th largest value; one pass counts the entries above it, the next takes those and, in
 * index order, as many equal to it as fit. topk's heap of indices would do, but its comparisons
 * (an index indirection, NaN, the tie rule) took about three times the instructions for 40 of
 * 256 classes (callgrind). */
static void top_in_order(const row *r, int64_t n, int64_t k, double *heap, int64_t *top)
{
    for (int64_t i = 0; i < k; i++)
        heap[i] = value(r, i);
    for (int64_t p = k / 2 - 1; p >= 0; p--)
        sift_down_values(heap, k, p);
    for (int64_t i = k; i < n; i++) {
        double v = value(r, i);
        if (v > heap[0]) {
            heap[0] = v;
            sift_down_values(heap, k, 0);
        }
    }
    double kth = heap[0];
    int64_t ties = k, count = 0;
    for (int64_t i = 0; i < n; i++)
        ties -= value(r, i) > kth;
    for (int64_t i = 0; i < n; i++) {
        double v = value(r, i);
        if (v > kth || (v == kth && ties-- > 0))
            top[count++] = i;
    }
}

/* Row by row: the drawn classes' logits in double (the top_k or all, in class order), their
 * weights exp((x - max) / T) through the vector-math exp, and the running sum of the weights in
 * place; then per sample one uniform u and a binary search for the first class whose running
 * sum exceeds u * total. The total is at least 1 (the largest logit's weight) and
 * u * total < total for u < 1, so the search always ends on a class of positive weight. */
static void multinomial_forward(const tg_kernel *k)
{
    const multinomial_attr *at = k->attr;
    const tg_view *x = k->in[0];
    int64_t classes = x->shape[x->ndim - 1], rows = x->numel / classes;
    int64_t drawn = drawn_classes(at, classes), samples = at->num_samples;
    double *w = k->saved;
    int64_t *top = drawn < classes ? (int64_t *)(w + drawn) : NULL;
    int64_t *y = k->out->data;
    uint64_t base = mix64(mix64(at->seed) ^ MULTINOMIAL_STREAM);
    for (int64_t o = 0; o < rows; o++) {
        row r = {(const char *)x->data + (size_t)(o * classes) * tg_dtype_size(x->dtype), x->dtype,
                 1};
        if (top)
            top_in_order(&r, classes, drawn, w, top);
        double m = -INFINITY;
        for (int64_t i = 0; i < drawn; i++) {
            w[i] = value(&r, top ? top[i] : i);
            m = w[i] > m ? w[i] : m;
        }
        for (int64_t i = 0; i < drawn; i++)
            w[i] = (w[i] - m) / at->temperature;
        tg__vm_exp(1, TG_F64, drawn, w, w);
        for (int64_t i = 1; i < drawn; i++)
            w[i] += w[i - 1];
        double total = w[drawn - 1];
        for (int64_t s = 0; s < samples; s++) {
            double target = uniform(base, (uint64_t)(o * samples + s)) * total;
            int64_t lo = 0, hi = drawn - 1;
            while (lo < hi) {
                int64_t mid = lo + (hi - lo) / 2;
                if (w[mid] > target)
                    hi = mid;
                else
                    lo = mid + 1;
            }
            y[o * samples + s] = top ? top[lo] : lo;
        }
    }
}

/* Rows of moderate logits with every option; -inf logits (never drawn); one class. */
static int example_multinomial(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int64_t s35[] = {3, 5}, s237[] = {2, 3, 7}, s6[] = {6}, s41[] = {4, 1};
    static const double masked[] = {0.5, -INFINITY, 1, 2, -INFINITY, -1};
    static const multinomial_attr cases[] = {
        {4, 1.0, 0, 7}, {5, 0.7, 3, 8}, {3, 2.0, 1, 9}, {6, 1.3, 0, 10}, {2, 0.5, 0, 11}};
    if (index < 0 || index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    *(multinomial_attr *)attr = cases[index];
    if (index == 0)
        in[0] = tg__example(tp, 2, s35, -2, 2, 0, 421);
    else if (index == 1 || index == 2)
        in[0] = tg__example(tp, 3, s237, -2, 2, 0, 421 + (uint64_t)index);
    else if (index == 3)
        in[0] = tg_tensor_from(tp, TG_F64, 1, s6, masked);
    else
        in[0] = tg__example(tp, 2, s41, -2, 2, 0, 424);
    return 1;
}
const tg_op_def tg__op_multinomial = {.name = "multinomial",
                                      .ninputs = 1,
                                      .attr_size = sizeof(multinomial_attr),
                                      .flags = TG_OP_NONDIFF,
                                      .check = multinomial_check,
                                      .forward = multinomial_forward,
                                      .example = example_multinomial};
tg_tensor tg_multinomial(tg_tensor logits, int64_t num_samples, double temperature, int64_t top_k,
                         uint64_t seed)
{
    multinomial_attr at = {num_samples, temperature, top_k, seed};
    return tg__apply1(TG__OP_multinomial, logits, &at);
}
