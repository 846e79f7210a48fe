/* apply.c — applying a registered op: validate, check, allocate, run the kernel, record. */
#include "internal.h"

#include "../ops/ops.h"

#include <stdio.h>

#define SMALL_INPUTS 8

static void fail_check(tg_tape *tp, const tg_op *op, tg_status st, const char *msg, int n,
                       const tg_view *const *views)
{
    char shapes[256];
    size_t len = 0;
    shapes[0] = '\0';
    for (int i = 0; i < n && len < sizeof shapes - 1; i++) {
        if (i)
            len += (size_t)snprintf(shapes + len, sizeof shapes - len, ", ");
        if (len < sizeof shapes - 1)
            len += (size_t)tg__format_view(shapes + len, sizeof shapes - len, views[i]);
    }
    tg__fail(tp, st, "%s: %s (inputs %s; node %u)", op->name, msg[0] ? msg : tg_status_string(st),
             shapes, tp->nnodes);
}

/* The body of every op application, once the op is known to be registered with tp's context,
 * n to fit its arity and attr to be present when it has attributes. */
static tg_tensor apply(tg_tape *tp, const tg_op *op, int n, const tg_tensor *inputs,
                       const void *attr)
{
    const tg_op_def *d = &op->def;

    const tg_view *small[SMALL_INPUTS];
    const tg_view **views = small;
    if (n > SMALL_INPUTS) {
        views = tg__arena_alloc(tp->ctx, &tp->arena, (size_t)n * sizeof *views);
        if (!views) {
            tg__fail(tp, TG_NOMEM, "%s: out of memory", op->name);
            return tg__error_handle(tp);
        }
    }
    bool any_grad = false;
    for (int i = 0; i < n; i++) {
        if (TG__UNLIKELY(!tg__live(tp, inputs[i]))) {
            char what[96];
            snprintf(what, sizeof what, "%s: input %d", op->name, i);
            tg__resolve(tp, inputs[i], what);
            return tg__error_handle(tp);
        }
        const tg__node *in = tg__node_at(tp, inputs[i].id_);
        views[i] = &in->v;
        any_grad |= in->requires_grad;
    }

    tg__node *node = tg__node_reserve(tp);
    if (!node)
        return tg__error_handle(tp);
    char msg[256];
    msg[0] = '\0';
    /* Read once: the check sizes per-thread scratch by what the kernel will get. */
    int threads = atomic_load_explicit(&tp->ctx->threads, memory_order_relaxed);
    tg_check c = {n, views, attr, &node->v, 0, -1, msg, sizeof msg, threads};
    tg_status st = d->check(&c);
    if (st != TG_OK) {
        fail_check(tp, op, (unsigned)st < TG_STATUS_COUNT ? st : TG_INVALID, msg, n, views);
        return tg__error_handle(tp);
    }
    int64_t numel;
    size_t es = tg__dtype_size(node->v.dtype);
    if (es == 0 || !tg__shape_ok(node->v.ndim, node->v.shape, &numel) || c.alias < -1
        || c.alias >= n
        || (c.alias >= 0
            && (views[c.alias]->numel != numel || views[c.alias]->dtype != node->v.dtype))
        || (c.alias < 0 && !d->forward)) {
        fail_check(tp, op, TG_INVALID, "the op's check produced an invalid output", n, views);
        return tg__error_handle(tp);
    }
    node->v.numel = numel;

    /* One arena block per op: [data | input ids | attributes | saved scratch], data and scratch
     * 64-byte aligned. */
    bool link = tp->grad_enabled && !(d->flags & TG_OP_NONDIFF);
    size_t data_bytes = 0;
    if (c.alias < 0) {
        if ((uint64_t)numel > (SIZE_MAX / 4) / es) {
            tg__fail(tp, TG_NOMEM, "%s: output of %lld elements is too large", op->name,
                     (long long)numel);
            return tg__error_handle(tp);
        }
        data_bytes = ((size_t)numel * es + TG__ALIGN - 1) & ~(size_t)(TG__ALIGN - 1);
    }
    size_t ids_off = data_bytes;
    size_t attr_off = (ids_off + (link ? (size_t)n * sizeof(uint32_t) : 0) + 15) & ~(size_t)15;
    size_t saved_off = (attr_off + d->attr_size + TG__ALIGN - 1) & ~(size_t)(TG__ALIGN - 1);
    if (c.saved_bytes > SIZE_MAX / 4) {
        tg__fail(tp, TG_NOMEM, "%s: scratch of %zu bytes is too large", op->name, c.saved_bytes);
        return tg__error_handle(tp);
    }
    size_t total = c.saved_bytes ? saved_off + c.saved_bytes : saved_off;
    /* Never NULL, even for an empty output without attributes: kernels may offset it by 0. */
    unsigned char *block = tg__arena_alloc(tp->ctx, &tp->arena, total);
    if (!block) {
        tg__fail(tp, TG_NOMEM, "%s: out of memory allocating %zu bytes", op->name, total);
        return tg__error_handle(tp);
    }
    node->v.data = c.alias >= 0 ? views[c.alias]->data : block;
    if (d->attr_size) {
        node->attr = block + attr_off;
        memcpy(node->attr, attr, d->attr_size);
    }
    node->saved = block + saved_off; /* never NULL, even without scratch (kernels offset it) */
    if (c.alias < 0) {
        tg_kernel k = {n, views, &node->v, node->attr, node->saved, threads, NULL};
        size_t loop_bytes = tg__loop_scratch_bytes(n);
        if (loop_bytes && !(k.loop_scratch_ = tg__arena_alloc(tp->ctx, &tp->arena, loop_bytes))) {
            tg__fail(tp, TG_NOMEM, "%s: out of memory for %d operands", op->name, n);
            return tg__error_handle(tp);
        }
        /* An empty output has nothing to compute; its kernel is not called (a loop over a
         * huge batch of empty matrices would otherwise run for hours). Scratch starts zeroed
         * so a backward rule reading it sees defined values. */
        if (numel > 0)
            d->forward(&k);
        else if (c.saved_bytes)
            memset(node->saved, 0, c.saved_bytes);
    }
    node->kind = TG__OPNODE;
    node->op = op;
    if (link) {
        node->inputs = (uint32_t *)(block + ids_off);
        node->ninputs = (uint32_t)n;
        for (int i = 0; i < n; i++)
            node->inputs[i] = inputs[i].id_;
        node->requires_grad = any_grad;
    }
    return tg__handle(tp, tp->nnodes++);
}

tg_tensor tg_op_apply(const tg_op *op, int n, const tg_tensor *inputs, const void *attr)
{
    tg_tape *tp = NULL;
    for (int i = 0; inputs && i < n && !tp; i++)
        tp = inputs[i].tape_;
    if (!tp || tp->status)
        return tg__error_handle(tp);
    if (!op) {
        tg__fail(tp, TG_INVALID, "tg_op_apply: op is NULL");
        return tg__error_handle(tp);
    }
    const tg_op_def *d = &op->def;
    if (op->ctx != tp->ctx) {
        tg__fail(tp, TG_INVALID, "%s: op is registered with another context", op->name);
        return tg__error_handle(tp);
    }
    if (d->ninputs != TG_VARIADIC ? n != d->ninputs : n < 1) {
        tg__fail(tp, TG_INVALID, "%s: takes %d inputs, got %d", op->name, d->ninputs, n);
        return tg__error_handle(tp);
    }
    if (d->attr_size && !attr) {
        tg__fail(tp, TG_INVALID, "%s: attributes are NULL", op->name);
        return tg__error_handle(tp);
    }
    return apply(tp, op, n, inputs, attr);
}

/* Built-in wrappers pass their own arity and attributes: only the tape needs finding (the first
 * input's, or any input's when that one is none). */
tg_tensor tg__apply(int builtin, int n, const tg_tensor *inputs, const void *attr)
{
    tg_tape *tp = n > 0 ? inputs[0].tape_ : NULL;
    for (int i = 1; i < n && !tp; i++)
        tp = inputs[i].tape_;
    if (TG__UNLIKELY(!tp || tp->status))
        return tg__error_handle(tp);
    return apply(tp, tp->ctx->builtin[builtin], n, inputs, attr);
}

/* ---- check helpers ------------------------------------------------------------------------ */

tg_status tg_check_fail(tg_check *c, tg_status status, const char *fmt, ...)
{
    if (c && c->message_ && c->message_size_ && fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->message_, c->message_size_, fmt, ap);
        va_end(ap);
    }
    return status == TG_OK ? TG_INVALID : status;
}

bool tg__broadcast_shape(int n, const tg_view *const *in, int *ndim, int64_t *shape)
{
    int nd = 0;
    for (int i = 0; i < n; i++)
        nd = in[i]->ndim > nd ? in[i]->ndim : nd;
    for (int d = 0; d < nd; d++)
        shape[d] = 1;
    for (int i = 0; i < n; i++) {
        int off = nd - in[i]->ndim;
        for (int d = 0; d < in[i]->ndim; d++) {
            int64_t s = in[i]->shape[d], *o = &shape[off + d];
            if (s == *o || s == 1)
                continue;
            if (*o != 1)
                return false;
            *o = s;
        }
    }
    /* A zero-size dim wins over 1 (NumPy rules), handled above since 0 != 1. */
    *ndim = nd;
    return true;
}

tg_status tg_check_float(tg_check *c, int i)
{
    if (i < 0 || i >= c->ninputs)
        return tg_check_fail(c, TG_INVALID, "no input %d", i);
    tg_dtype dt = c->in[i]->dtype;
    if (dt != TG_F32 && dt != TG_F64)
        return tg_check_fail(c, TG_DTYPE, "input %d must be f32 or f64, not %s", i,
                             tg_dtype_name(dt));
    return TG_OK;
}

tg_status tg_check_elementwise(tg_check *c)
{
    /* The common case first: all operands of one float dtype and one shape. */
    const tg_view *a = c->in[0];
    bool same = a->dtype == TG_F32 || a->dtype == TG_F64;
    for (int i = 1; same && i < c->ninputs; i++)
        same = c->in[i]->dtype == a->dtype && c->in[i]->numel == a->numel
               && tg__same_shape(c->in[i], a);
    if (same) {
        c->out->dtype = a->dtype;
        c->out->ndim = a->ndim;
        memcpy(c->out->shape, a->shape, (size_t)a->ndim * sizeof a->shape[0]);
        return TG_OK;
    }
    for (int i = 0; i < c->ninputs; i++) {
        tg_status st = tg_check_float(c, i);
        if (st)
            return st;
        if (c->in[i]->dtype != c->in[0]->dtype)
            return tg_check_fail(c, TG_DTYPE, "operands have different dtypes");
    }
    if (!tg__broadcast_shape(c->ninputs, c->in, &c->out->ndim, c->out->shape))
        return tg_check_fail(c, TG_SHAPE, "shapes do not broadcast");
    c->out->dtype = c->in[0]->dtype;
    return TG_OK;
}

/* ---- the broadcasting loop ---------------------------------------------------------------- */

/* Operands a loop keeps on the stack; more use the scratch the engine gives the kernel. */
#define LOOP_STACK_OPERANDS 16

/* Per operand: its run pointer and step, its byte strides along the output's dims (0 where
 * broadcast) and the same after merging dims. */
typedef struct loop_operands {
    char **ptrs;
    int64_t *steps;
    int64_t (*stride)[TG_MAX_DIMS];
    int64_t (*merged)[TG_MAX_DIMS];
} loop_operands;

#define LOOP_OPERAND_BYTES (sizeof(char *) + sizeof(int64_t) + 2 * TG_MAX_DIMS * sizeof(int64_t))

size_t tg__loop_scratch_bytes(int ninputs)
{
    size_t nops = (size_t)ninputs + 1;
    return nops > LOOP_STACK_OPERANDS ? nops * LOOP_OPERAND_BYTES : 0;
}

static loop_operands loop_operands_in(void *storage, int nops)
{
    loop_operands o;
    o.stride = storage;
    o.merged = o.stride + nops;
    o.steps = (int64_t *)(o.merged + nops);
    o.ptrs = (char **)(o.steps + nops);
    return o;
}

static char *operand_data(const tg_kernel *k, int j)
{
    return j < k->ninputs ? k->in[j]->data : k->out->data;
}

/* Byte strides of every operand along the output's dims. */
static void operand_strides(const tg_kernel *k, int nops, loop_operands *o)
{
    int nd = k->out->ndim;
    for (int j = 0; j < nops; j++) {
        const tg_view *v = j < k->ninputs ? k->in[j] : k->out;
        int64_t run = (int64_t)tg_dtype_size(v->dtype);
        int off = nd - v->ndim;
        for (int d = nd - 1; d >= 0; d--) {
            int vd = d - off;
            o->stride[j][d] = vd >= 0 && v->shape[vd] != 1 ? run : 0;
            run *= vd >= 0 && v->shape[vd] != 1 ? v->shape[vd] : 1;
        }
    }
}

/* Drops size-1 dims and merges dims contiguous for every operand into `dims`; returns how many
 * are left. */
static int merge_dims(const tg_view *out, int nops, loop_operands *o, int64_t *dims)
{
    int m = 0;
    for (int d = 0; d < out->ndim; d++) {
        if (out->shape[d] == 1)
            continue;
        bool merge = m > 0;
        for (int j = 0; merge && j < nops; j++)
            merge = o->merged[j][m - 1] == o->stride[j][d] * out->shape[d];
        if (merge) {
            dims[m - 1] *= out->shape[d];
        } else {
            dims[m] = out->shape[d];
            m++;
        }
        for (int j = 0; j < nops; j++)
            o->merged[j][m - 1] = o->stride[j][d];
    }
    return m;
}

/* Calls fn once per run of the innermost merged dim, walking the outer ones like an odometer. */
static void walk_runs(const tg_kernel *k, int nops, loop_operands *o, int m, const int64_t *dims,
                      tg_loop_fn fn, void *user)
{
    if (m == 0) { /* a single element */
        for (int j = 0; j < nops; j++) {
            o->ptrs[j] = operand_data(k, j);
            o->steps[j] = 0;
        }
        fn(1, o->ptrs, o->steps, user);
        return;
    }
    int64_t inner = dims[m - 1];
    for (int j = 0; j < nops; j++)
        o->steps[j] = o->merged[j][m - 1];
    int64_t idx[TG_MAX_DIMS] = {0};
    int64_t outer = k->out->numel / inner;
    for (int64_t r = 0; r < outer; r++) {
        for (int j = 0; j < nops; j++) {
            int64_t off = 0;
            for (int d = 0; d < m - 1; d++)
                off += idx[d] * o->merged[j][d];
            o->ptrs[j] = operand_data(k, j) + off;
        }
        fn(inner, o->ptrs, o->steps, user);
        for (int d = m - 2; d >= 0; d--) {
            if (++idx[d] < dims[d])
                break;
            idx[d] = 0;
        }
    }
}

void tg_kernel_loop(const tg_kernel *k, tg_loop_fn fn, void *user)
{
    const tg_view *out = k->out;
    int nops = k->ninputs + 1;
    if (out->numel == 0)
        return;
    _Alignas(int64_t) unsigned char stack[LOOP_STACK_OPERANDS * LOOP_OPERAND_BYTES];
    void *storage = nops <= LOOP_STACK_OPERANDS ? stack : k->loop_scratch_;
    if (!storage)
        return; /* not reached through the engine, which always gives the scratch */
    loop_operands o = loop_operands_in(storage, nops);
    bool flat = true;
    for (int j = 0; j < k->ninputs; j++)
        flat &= k->in[j]->numel == out->numel;
    if (flat) { /* every operand has the output's shape: one contiguous run */
        for (int j = 0; j < nops; j++) {
            o.ptrs[j] = operand_data(k, j);
            o.steps[j] = (int64_t)tg_dtype_size(j < k->ninputs ? k->in[j]->dtype : out->dtype);
        }
        fn(out->numel, o.ptrs, o.steps, user);
        return;
    }
    int64_t dims[TG_MAX_DIMS];
    operand_strides(k, nops, &o);
    int m = merge_dims(out, nops, &o, dims);
    walk_runs(k, nops, &o, m, dims, fn, user);
}
