/* slice.c — slicing along one axis (slice, its backward slice_backward), concat and stack. */
#include "kernels.h"
#include "ops.h"

/* The range of a slice: start, stop, step along `axis`; `dim` is the input's size along the axis
 * (slice_backward only: the size of the dim its output scatters into). */
typedef struct slice_attr {
    int axis;
    int64_t start, stop, step;
    int64_t dim;
} slice_attr;

/* Python's slice rules for step >= 1: negative bounds count from the end, then both clamp to
 * [0, dim]. Returns the number of elements picked; *first receives the first position. */
static int64_t slice_range(int64_t start, int64_t stop, int64_t step, int64_t dim, int64_t *first)
{
    if (start < 0)
        start = start + dim < 0 ? 0 : start + dim;
    else if (start > dim)
        start = dim;
    if (stop < 0)
        stop = stop + dim < 0 ? 0 : stop + dim;
    else if (stop > dim)
        stop = dim;
    *first = start;
    /* (stop - start - 1) / step + 1 rather than a rounded-up division: no overflow for any step. */
    return stop > start ? (stop - start - 1) / step + 1 : 0;
}

/* Shared by slice and slice_backward: a valid axis of the input and step >= 1. */
static tg_status slice_attr_check(tg_check *c, int *ax)
{
    const slice_attr *at = c->attr;
    const tg_view *x = c->in[0];
    *ax = tg__axis(at->axis, x->ndim);
    if (tg_dtype_size(x->dtype) == 0)
        return tg_check_fail(c, TG_DTYPE, "unknown dtype %d", (int)x->dtype);
    if (*ax < 0)
        return tg_check_fail(c, TG_RANGE, "axis %d out of range for %d dims", at->axis, x->ndim);
    if (at->step < 1)
        return tg_check_fail(c, TG_INVALID, "step must be >= 1, got %lld", (long long)at->step);
    return TG_OK;
}

/* Copies `len` blocks of `inner` elements from positions first, first+step, ... along the axis
 * of a [outer, big, inner] tensor to/from a [outer, len, inner] one. to_big: scatter direction. */
static void slice_copy(char *big, char *small, size_t es, int64_t outer, int64_t big_dim,
                       int64_t len, int64_t inner, int64_t first, int64_t step, bool to_big)
{
    size_t block = (size_t)inner * es;
    if (len == 0 || block == 0)
        return;
    for (int64_t o = 0; o < outer; o++) {
        char *b = big + ((size_t)(o * big_dim + first) * block);
        char *s = small + (size_t)(o * len) * block;
        if (step == 1) { /* one contiguous run per outer index */
            if (to_big)
                memcpy(b, s, (size_t)len * block);
            else
                memcpy(s, b, (size_t)len * block);
            continue;
        }
        for (int64_t i = 0; i < len; i++) {
            if (to_big)
                memcpy(b + (size_t)(i * step) * block, s + (size_t)i * block, block);
            else
                memcpy(s + (size_t)i * block, b + (size_t)(i * step) * block, block);
        }
    }
}

/* y = a[..., start:stop:step, ...] along axis;  da += slice_backward(g) */
static tg_status slice_check(tg_check *c)
{
    const slice_attr *at = c->attr;
    const tg_view *x = c->in[0];
    int ax;
    tg_status st = slice_attr_check(c, &ax);
    if (st)
        return st;
    int64_t first;
    *c->out = *x;
    c->out->shape[ax] = slice_range(at->start, at->stop, at->step, x->shape[ax], &first);
    return TG_OK;
}
static void slice_forward(const tg_kernel *k)
{
    const slice_attr *at = k->attr;
    const tg_view *x = k->in[0], *y = k->out;
    if (y->numel == 0)
        return;
    int ax = tg__axis(at->axis, x->ndim);
    int64_t outer, inner, first;
    int64_t len = slice_range(at->start, at->stop, at->step, x->shape[ax], &first);
    tg__outer_inner(x, ax, &outer, &inner);
    slice_copy(x->data, y->data, tg_dtype_size(x->dtype), outer, x->shape[ax], len, inner, first,
               at->step, false);
}
static void slice_backward(const tg_backward_io *io)
{
    const slice_attr *at = io->attr;
    tg_tensor x = io->inputs[0];
    slice_attr bt = *at;
    int ax = tg__axis(at->axis, tg_ndim(x));
    bt.dim = tg_dim(x, ax);
    /* Pass the clamped bounds on, so the backward's own backward slices the same positions. */
    int64_t len = slice_range(at->start, at->stop, at->step, bt.dim, &bt.start);
    bt.stop = len ? bt.start + (len - 1) * at->step + 1 : bt.start;
    io->grad_inputs[0] = tg__apply1(TG__OP_slice_backward, io->grad_output, &bt);
}
static int example_slice(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int64_t s45[] = {4, 5}, s253[] = {2, 5, 3};
    static const slice_attr cases[] = {
        {1, 1, 4, 1, 0},    /* a plain range of columns */
        {0, -3, 100, 2, 0}, /* negative start, stop past the end, step 2 */
        {-2, -4, -1, 2, 0}, /* 3-d, negative axis and bounds */
        {-1, 0, 3, 2, 0},   /* last axis of a 3-d tensor */
        {1, 3, 1, 1, 0},    /* empty result */
        {0, -100, 2, 1, 0}, /* start before the beginning clamps to 0 */
    };
    if (index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    *(slice_attr *)attr = cases[index];
    bool three = index == 2 || index == 3;
    in[0] = tg__example(tp, three ? 3 : 2, three ? s253 : s45, -1, 1, 0, 71 + (uint64_t)index);
    return 1;
}
const tg_op_def tg__op_slice = {.name = "slice",
                                .ninputs = 1,
                                .attr_size = sizeof(slice_attr),
                                .check = slice_check,
                                .forward = slice_forward,
                                .backward = slice_backward,
                                .example = example_slice};

tg_tensor tg_slice(tg_tensor a, int axis, int64_t start, int64_t stop, int64_t step)
{
    slice_attr at = {axis, start, stop, step, 0};
    return tg__apply1(TG__OP_slice, a, &at);
}

/* y = zeros(x.shape) with g at positions start:stop:step along axis;  dg += slice(gg) */
static tg_status slice_backward_check(tg_check *c)
{
    const slice_attr *at = c->attr;
    const tg_view *g = c->in[0];
    int ax;
    tg_status st = slice_attr_check(c, &ax);
    if (st)
        return st;
    if (at->dim < 0)
        return tg_check_fail(c, TG_SHAPE, "target dim size %lld is negative", (long long)at->dim);
    int64_t first, len = slice_range(at->start, at->stop, at->step, at->dim, &first);
    if (len != g->shape[ax])
        return tg_check_fail(c, TG_SHAPE,
                             "slice %lld:%lld:%lld of a dim of %lld has %lld entries, "
                             "the gradient has %lld along axis %d",
                             (long long)at->start, (long long)at->stop, (long long)at->step,
                             (long long)at->dim, (long long)len, (long long)g->shape[ax], at->axis);
    *c->out = *g;
    c->out->shape[ax] = at->dim;
    return TG_OK;
}
static void slice_backward_forward(const tg_kernel *k)
{
    const slice_attr *at = k->attr;
    const tg_view *g = k->in[0], *y = k->out;
    if (y->numel == 0)
        return;
    size_t es = tg_dtype_size(y->dtype);
    memset(y->data, 0, (size_t)y->numel * es); /* all-zero bytes are 0.0 in IEEE 754 */
    int ax = tg__axis(at->axis, g->ndim);
    int64_t outer, inner, first;
    int64_t len = slice_range(at->start, at->stop, at->step, at->dim, &first);
    tg__outer_inner(g, ax, &outer, &inner);
    slice_copy(y->data, g->data, es, outer, at->dim, len, inner, first, at->step, true);
}
static void slice_backward_backward(const tg_backward_io *io)
{
    const slice_attr *at = io->attr;
    io->grad_inputs[0] = tg_slice(io->grad_output, at->axis, at->start, at->stop, at->step);
}
static int example_slice_backward(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const slice_attr cases[] = {
        {1, 1, 4, 2, 5},    /* 2 of 5 columns */
        {0, -3, 100, 1, 4}, /* unclamped bounds, as a user may pass them */
        {-2, 0, 5, 3, 5},   /* 3-d, negative axis */
    };
    static const int64_t base2[] = {4, 5}, base3[] = {2, 5, 3};
    if (index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    slice_attr *at = attr;
    *at = cases[index];
    int nd = index == 2 ? 3 : 2;
    int64_t shape[3], first;
    memcpy(shape, nd == 3 ? base3 : base2, (size_t)nd * sizeof *shape);
    int ax = tg__axis(at->axis, nd);
    shape[ax] = slice_range(at->start, at->stop, at->step, at->dim, &first);
    in[0] = tg__example(tp, nd, shape, -1, 1, 0, 81 + (uint64_t)index);
    return 1;
}
const tg_op_def tg__op_slice_backward = {.name = "slice_backward",
                                         .ninputs = 1,
                                         .attr_size = sizeof(slice_attr),
                                         .check = slice_backward_check,
                                         .forward = slice_backward_forward,
                                         .backward = slice_backward_backward,
                                         .example = example_slice_backward};

/* y = [a0, a1, ...] joined along axis;  dai += slice(g, axis, offset_i, offset_i + len_i) */
typedef struct concat_attr {
    int axis;
} concat_attr;

static tg_status concat_check(tg_check *c)
{
    const concat_attr *at = c->attr;
    const tg_view *x0 = c->in[0];
    if (tg_dtype_size(x0->dtype) == 0)
        return tg_check_fail(c, TG_DTYPE, "unknown dtype %d", (int)x0->dtype);
    int ax = tg__axis(at->axis, x0->ndim);
    if (ax < 0)
        return tg_check_fail(c, TG_RANGE, "axis %d out of range for %d dims", at->axis, x0->ndim);
    int64_t total = 0;
    for (int i = 0; i < c->ninputs; i++) {
        const tg_view *x = c->in[i];
        if (x->dtype != x0->dtype)
            return tg_check_fail(c, TG_DTYPE, "input %d is %s, input 0 is %s", i,
                                 tg_dtype_name(x->dtype), tg_dtype_name(x0->dtype));
        if (x->ndim != x0->ndim)
            return tg_check_fail(c, TG_SHAPE, "input %d has %d dims, input 0 has %d", i, x->ndim,
                                 x0->ndim);
        for (int d = 0; d < x0->ndim; d++)
            if (d != ax && x->shape[d] != x0->shape[d])
                return tg_check_fail(c, TG_SHAPE,
                                     "input %d has %lld along dim %d, input 0 has "
                                     "%lld (only dim %d may differ)",
                                     i, (long long)x->shape[d], d, (long long)x0->shape[d], ax);
        /* The engine validates the output shape, but the sum itself must not overflow first. */
        if (x->shape[ax] > INT64_MAX / 16 - total)
            return tg_check_fail(c, TG_SHAPE, "concatenated dim overflows");
        total += x->shape[ax];
    }
    *c->out = *x0;
    c->out->shape[ax] = total;
    return TG_OK;
}
static void concat_forward(const tg_kernel *k)
{
    const concat_attr *at = k->attr;
    const tg_view *y = k->out;
    if (y->numel == 0)
        return;
    int ax = tg__axis(at->axis, y->ndim);
    size_t es = tg_dtype_size(y->dtype);
    int64_t outer, inner;
    tg__outer_inner(y, ax, &outer, &inner);
    /* Each output row (one outer index) is the inputs' rows one after another. */
    char *dst = y->data;
    for (int64_t o = 0; o < outer; o++) {
        for (int i = 0; i < k->ninputs; i++) {
            size_t run = (size_t)(k->in[i]->shape[ax] * inner) * es;
            if (run == 0)
                continue;
            memcpy(dst, (const char *)k->in[i]->data + (size_t)o * run, run);
            dst += run;
        }
    }
}
static void concat_backward(const tg_backward_io *io)
{
    const concat_attr *at = io->attr;
    int ax = tg__axis(at->axis, tg_ndim(io->grad_output));
    int64_t off = 0;
    for (int i = 0; i < io->ninputs; i++) {
        int64_t len = tg_dim(io->inputs[i], ax);
        if (io->needs_grad[i])
            io->grad_inputs[i] = tg_slice(io->grad_output, ax, off, off + len, 1);
        off += len;
    }
}
static int example_concat(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    concat_attr *at = attr;
    switch (index) {
    case 0: /* three inputs along the first axis */
        at->axis = 0;
        in[0] = tg__example(tp, 2, (int64_t[]){2, 3}, -1, 1, 0, 91);
        in[1] = tg__example(tp, 2, (int64_t[]){1, 3}, -1, 1, 0, 92);
        in[2] = tg__example(tp, 2, (int64_t[]){3, 3}, -1, 1, 0, 93);
        return 3;
    case 1: /* last axis of 3-d inputs, negative */
        at->axis = -1;
        in[0] = tg__example(tp, 3, (int64_t[]){2, 3, 1}, -1, 1, 0, 94);
        in[1] = tg__example(tp, 3, (int64_t[]){2, 3, 2}, -1, 1, 0, 95);
        return 2;
    case 2: /* middle axis, with an empty input in between */
        at->axis = 1;
        in[0] = tg__example(tp, 3, (int64_t[]){2, 2, 2}, -1, 1, 0, 96);
        in[1] = tg__example(tp, 3, (int64_t[]){2, 0, 2}, -1, 1, 0, 97);
        in[2] = tg__example(tp, 3, (int64_t[]){2, 1, 2}, -1, 1, 0, 98);
        return 3;
    case 3: /* a single input */
        at->axis = -2;
        in[0] = tg__example(tp, 2, (int64_t[]){3, 2}, -1, 1, 0, 99);
        return 1;
    }
    return 0;
}
const tg_op_def tg__op_concat = {.name = "concat",
                                 .ninputs = TG_VARIADIC,
                                 .attr_size = sizeof(concat_attr),
                                 .check = concat_check,
                                 .forward = concat_forward,
                                 .backward = concat_backward,
                                 .example = example_concat};

tg_tensor tg_concat(int n, const tg_tensor *ts, int axis)
{
    /* Without inputs there is no tape to record the error on: "none", as the header says of
     * calls with nothing to act on. Bad entries are reported on the tape by the engine. */
    if (n < 1 || !ts)
        return (tg_tensor){0};
    concat_attr at = {axis};
    return tg__apply(TG__OP_concat, n, ts, &at);
}

/* y = the inputs stacked along a new axis;  dai += reshape(slice(g, axis, i, i + 1), ai.shape) */
static tg_status stack_check(tg_check *c)
{
    const concat_attr *at = c->attr;
    const tg_view *x0 = c->in[0];
    if (tg_dtype_size(x0->dtype) == 0)
        return tg_check_fail(c, TG_DTYPE, "unknown dtype %d", (int)x0->dtype);
    if (x0->ndim + 1 > TG_MAX_DIMS)
        return tg_check_fail(c, TG_SHAPE, "inputs have %d dims; stacking needs at most %d",
                             x0->ndim, TG_MAX_DIMS - 1);
    int ax = tg__axis(at->axis, x0->ndim + 1);
    if (ax < 0)
        return tg_check_fail(c, TG_RANGE, "axis %d out of range for stacking %d-dim inputs",
                             at->axis, x0->ndim);
    for (int i = 1; i < c->ninputs; i++) {
        const tg_view *x = c->in[i];
        bool same = x->dtype == x0->dtype && x->ndim == x0->ndim;
        for (int d = 0; same && d < x0->ndim; d++)
            same = x->shape[d] == x0->shape[d];
        if (!same)
            return tg_check_fail(c, x->dtype != x0->dtype ? TG_DTYPE : TG_SHAPE,
                                 "input %d differs from input 0 (all inputs must have the same "
                                 "dtype and shape)",
                                 i);
    }
    c->out->dtype = x0->dtype;
    c->out->ndim = x0->ndim + 1;
    for (int d = 0, s = 0; d <= x0->ndim; d++)
        c->out->shape[d] = d == ax ? c->ninputs : x0->shape[s++];
    return TG_OK;
}
static void stack_forward(const tg_kernel *k)
{
    const concat_attr *at = k->attr;
    const tg_view *y = k->out, *x0 = k->in[0];
    if (y->numel == 0)
        return;
    int ax = tg__axis(at->axis, y->ndim);
    size_t es = tg_dtype_size(y->dtype);
    int64_t outer = 1;
    for (int d = 0; d < ax; d++)
        outer *= x0->shape[d];
    /* Each outer index takes one contiguous run from every input in turn. */
    size_t run = (size_t)(x0->numel / (outer ? outer : 1)) * es;
    char *dst = y->data;
    for (int64_t o = 0; o < outer; o++) {
        for (int i = 0; i < k->ninputs; i++) {
            memcpy(dst, (const char *)k->in[i]->data + (size_t)o * run, run);
            dst += run;
        }
    }
}
static void stack_backward(const tg_backward_io *io)
{
    const concat_attr *at = io->attr;
    int ax = tg__axis(at->axis, tg_ndim(io->grad_output));
    for (int i = 0; i < io->ninputs; i++) {
        if (!io->needs_grad[i])
            continue;
        tg_tensor part = tg_slice(io->grad_output, ax, i, i + 1, 1);
        io->grad_inputs[i] = tg_reshape(part, tg_ndim(io->inputs[i]), tg_shape(io->inputs[i]));
    }
}
static int example_stack(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const int axes[] = {0, 1, -1, 0};
    concat_attr *at = attr;
    if (index >= 4)
        return 0;
    at->axis = axes[index];
    int n = index == 3 ? 1 : 3;
    for (int i = 0; i < n; i++)
        in[i] = index == 3 ? tg__example(tp, 0, NULL, -1, 1, 0, 110)
                           : tg__example(tp, 2, (int64_t[]){2, 3}, -1, 1, 0,
                                         100 + (uint64_t)(10 * index + i));
    return n;
}
const tg_op_def tg__op_stack = {.name = "stack",
                                .ninputs = TG_VARIADIC,
                                .attr_size = sizeof(concat_attr),
                                .check = stack_check,
                                .forward = stack_forward,
                                .backward = stack_backward,
                                .example = example_stack};

tg_tensor tg_stack(int n, const tg_tensor *ts, int axis)
{
    if (n < 1 || !ts)
        return (tg_tensor){0};
    concat_attr at = {axis};
    return tg__apply(TG__OP_stack, n, ts, &at);
}
