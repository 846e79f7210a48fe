/* tape.c — the tape: lifecycle, chunked node storage, handle resolution, O(1) reset. */
#include "internal.h"

tg_status tg_tape_new(tg_ctx *ctx, tg_tape **out)
{
    if (!out)
        return TG_INVALID;
    *out = NULL;
    if (!ctx)
        return TG_INVALID;
    tg_tape *tp = tg__alloc(ctx, sizeof *tp);
    if (!tp)
        return tg__ctx_fail(ctx, TG_NOMEM, "tg_tape_new: out of memory");
    memset(tp, 0, sizeof *tp);
    tp->ctx = ctx;
    tp->gen = 1;
    tp->grad_enabled = true;
    tp->nnodes = 1; /* id 0: none */
    tp->scalar_count = 1;
    tp->scalar_adjoints_valid = 1;
    tp->memory_limit = TG_TAPE_MEMORY_LIMIT;
    tg__tape_limit_records(tp);
    tg__ctx_retain(ctx);
    *out = tp;
    return TG_OK;
}

void tg_tape_free(tg_tape *tp)
{
    if (!tp)
        return;
    tg_ctx *ctx = tp->ctx;
    for (uint32_t i = 0; i < tp->nchunks; i++)
        tg__free(ctx, tp->chunks[i], TG__CHUNK * sizeof(tg__node));
    tg__free(ctx, tp->chunks, tp->chunks_cap * sizeof *tp->chunks);
    tg__free(ctx, tp->scalars, tp->scalar_capacity * (sizeof *tp->scalars + sizeof(double) + 1));
    tg__arena_release(ctx, &tp->arena);
    tg__free(ctx, tp, sizeof *tp);
    tg__ctx_release(ctx);
}

void tg_tape_reset(tg_tape *tp)
{
    if (!tp)
        return;
    if (tp->in_backward) { /* from a rule or a hook: the sweep still reads the nodes */
        tg__fail(tp, TG_INVALID, "tg_tape_reset: called during a backward on this tape");
        return;
    }
    tp->gen = tp->gen + 1 ? tp->gen + 1 : 1;
    tp->status = TG_OK;
    tp->scalar_limit = tp->scalar_capacity;
    tp->scalar_released_any = false;
    tp->error[0] = '\0';
    tp->grad_enabled = true; /* a step starts recording, whatever the last one left */
    tp->scalars_dirty = false;
    tp->nnodes = 1;
    tp->scalar_count = 1;
    tp->scalar_adjoints_valid = 1;
    tp->backward_passes = 0;
    tp->scope = NULL;
    tp->scope_depth = 0;
    tp->scope_count = 0;
    tg__arena_rewind(&tp->arena);
}

tg_status tg_tape_status(const tg_tape *tp) { return tp ? tp->status : TG_INVALID; }

const char *tg_tape_error(const tg_tape *tp) { return tp ? tp->error : "NULL tape"; }

bool tg_tape_set_grad(tg_tape *tp, bool enabled)
{
    if (!tp)
        return false;
    bool old = tp->grad_enabled;
    tp->grad_enabled = enabled;
    return old;
}

bool tg_tape_grad_enabled(const tg_tape *tp) { return tp ? tp->grad_enabled : false; }

tg_status tg_tape_set_grad_ready(tg_tape *tp, tg_grad_ready_fn fn, void *user)
{
    if (!tp)
        return TG_INVALID;
    tp->grad_ready = fn;
    tp->grad_ready_user = fn ? user : NULL;
    return TG_OK;
}

tg_ctx *tg_tape_ctx(const tg_tape *tp) { return tp ? tp->ctx : NULL; }

size_t tg_tape_node_count(const tg_tape *tp) { return tp ? tp->nnodes - 1 : 0; }

size_t tg_tape_scalar_count(const tg_tape *tp) { return tp ? tp->scalar_count - 1 : 0; }

size_t tg_tape_bytes(const tg_tape *tp) { return tp ? tp->arena.bytes : 0; }

/* ---- memory limit ------------------------------------------------------------------------- */

static size_t records_bytes(const tg_tape *tp)
{
    return (size_t)tp->nchunks * TG__CHUNK * sizeof(tg__node)
           + (size_t)tp->scalar_capacity * TG__SCALAR_BYTES;
}

size_t tg__tape_memory(const tg_tape *tp) { return tp->arena.bytes + records_bytes(tp); }

void tg__tape_limit_records(tg_tape *tp)
{
    size_t records = records_bytes(tp);
    if (!tp->memory_limit)
        tp->arena.cap = SIZE_MAX;
    else
        tp->arena.cap = tp->memory_limit > records ? tp->memory_limit - records : 0;
}

bool tg__tape_records_fit(tg_tape *tp, size_t more)
{
    size_t used = tg__tape_memory(tp);
    if (!tp->memory_limit || (more <= tp->memory_limit && used <= tp->memory_limit - more))
        return true;
    tp->arena.refused = true;
    return false;
}

tg_status tg_tape_set_memory_limit(tg_tape *tp, size_t bytes)
{
    if (!tp)
        return TG_INVALID;
    tp->memory_limit = bytes;
    tg__tape_limit_records(tp);
    return TG_OK;
}

size_t tg_tape_memory_limit(const tg_tape *tp) { return tp ? tp->memory_limit : 0; }

/* ---- naming scopes -------------------------------------------------------------------------- */

tg_status tg_tape_push_scope(tg_tape *tp, const char *name)
{
    if (!tp)
        return TG_INVALID;
    if (tp->scope_depth == UINT32_MAX)
        return tg__fail(tp, TG_RANGE, "tg_tape_push_scope: %u scopes are open", tp->scope_depth);
    /* Counted even when nothing is recorded, so that the matching pop stays balanced. */
    tp->scope_depth++;
    if (tp->status)
        return tp->status;
    if (!name)
        return tg__fail(tp, TG_INVALID, "tg_tape_push_scope: name is NULL");
    size_t len = strlen(name);
    tg__scope *s = tg__arena_alloc(tp->ctx, &tp->arena, sizeof *s + len + 1);
    if (!s)
        return tg__fail(tp, TG_NOMEM, "tg_tape_push_scope(%s): out of memory", name);
    s->parent = tp->scope;
    s->id = ++tp->scope_count;
    s->depth = tp->scope_depth;
    memcpy(s->name, name, len + 1);
    tp->scope = s;
    return TG_OK;
}

tg_status tg_tape_pop_scope(tg_tape *tp)
{
    if (!tp)
        return TG_INVALID;
    if (tp->scope_depth == 0)
        return tg__fail(tp, TG_INVALID, "tg_tape_pop_scope: no scope is open");
    if (tp->scope && tp->scope->depth == tp->scope_depth)
        tp->scope = tp->scope->parent;
    tp->scope_depth--;
    return tp->status;
}

const char *tg_tape_scope(const tg_tape *tp) { return tp && tp->scope ? tp->scope->name : ""; }

tg__node *tg__node_reserve_slow(tg_tape *tp)
{
    uint32_t id = tp->nnodes;
    if (TG__UNLIKELY(id >= TG__MAX_NODES)) {
        tg__fail(tp, TG_NOMEM, "tape full: %u nodes", id);
        return NULL;
    }
    uint32_t chunk = id >> TG__CHUNK_BITS;
    if (TG__UNLIKELY(chunk >= tp->nchunks)) {
        if (!tg__tape_records_fit(tp, TG__CHUNK * sizeof(tg__node))) {
            tg__fail(tp, TG_NOMEM, "no room for node %u", id);
            return NULL;
        }
        if (chunk >= tp->chunks_cap) {
            uint32_t cap = tp->chunks_cap ? tp->chunks_cap * 2 : 16;
            tg__node **c =
                tg__realloc(tp->ctx, tp->chunks, tp->chunks_cap * sizeof *c, cap * sizeof *c);
            if (!c) {
                tg__fail(tp, TG_NOMEM, "out of memory growing the node table (%u nodes)", id);
                return NULL;
            }
            tp->chunks = c;
            tp->chunks_cap = cap;
        }
        tg__node *nodes = tg__alloc(tp->ctx, TG__CHUNK * sizeof *nodes);
        if (!nodes) {
            tg__fail(tp, TG_NOMEM, "out of memory growing the node table (%u nodes)", id);
            return NULL;
        }
        tp->chunks[tp->nchunks++] = nodes;
        tg__tape_limit_records(tp);
    }
    tg__node *n = tg__node_at(tp, id);
    tg__node_clear(n, tp);
    return n;
}

void *tg__tape_buffer(tg_tape *tp, const char *who, tg_dtype dt, int64_t numel)
{
    size_t es = tg_dtype_size(dt);
    if (numel < 0 || (uint64_t)numel > SIZE_MAX / 2 / (es ? es : 1)) {
        tg__fail(tp, TG_NOMEM, "%s: tensor of %lld elements is too large", who, (long long)numel);
        return NULL;
    }
    void *p = tg__arena_alloc(tp->ctx, &tp->arena, (size_t)numel * es);
    if (!p)
        tg__fail(tp, TG_NOMEM, "%s: out of memory allocating %lld x %s", who, (long long)numel,
                 tg_dtype_name(dt));
    return p;
}

tg_status tg__handle_status(const tg_tape *tp, tg_tensor t, const char **why)
{
    const char *reason = NULL;
    tg_status st = TG_OK;
    if (!t.tape_)
        st = TG_INVALID, reason = "tensor is none";
    else if (t.tape_ != tp)
        st = TG_STALE, reason = "tensor belongs to another tape";
    else if (t.gen_ != tp->gen || t.id_ >= tp->nnodes)
        st = TG_STALE, reason = "stale tensor handle (from before a tape reset)";
    else if (t.id_ == 0)
        st = TG_INVALID, reason = "tensor is an error handle";
    if (why)
        *why = reason;
    return st;
}

tg__node *tg__resolve(tg_tape *tp, tg_tensor t, const char *what)
{
    if (!tp)
        tp = t.tape_;
    if (!tp)
        return NULL;
    const char *why;
    tg_status st = tg__handle_status(tp, t, &why);
    if (TG__UNLIKELY(st != TG_OK)) {
        tg__fail(tp, st, "%s: %s", what, why);
        return NULL;
    }
    return tg__node_at(tp, t.id_);
}
