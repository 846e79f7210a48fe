/* ctx.c — the context: allocator hook, op registry, settings. */
#include "internal.h"
#include "gemm.h"

#include <stdio.h>
#include <stdlib.h>

#include "../ops/ops.h"
#include "vmath.h"

/* ---- per-thread messages ------------------------------------------------------------------
 * Each thread that records a context-level failure gets a slot of its own, found by the address
 * of a thread-local byte (unique among running threads; a thread that starts after another ended
 * may get its address, and then its slot). Slots are pushed onto a lock-free list and never
 * removed before tg_ctx_free; only the owning thread writes or reads a slot's text. */

static _Thread_local char thread_tag;

static const void *this_thread(void) { return &thread_tag; }

static tg__message *find_message(const tg_ctx *ctx)
{
    /* The load is acquire: a slot's fields were written before the release that published it. */
    tg__message *m = atomic_load_explicit(&((tg_ctx *)ctx)->messages, memory_order_acquire);
    const void *self = this_thread();
    for (; m; m = m->next)
        if (m->thread == self)
            return m;
    return NULL;
}

/* The calling thread's slot, made on its first failure (NULL, counted, if memory runs out). */
static tg__message *own_message(tg_ctx *ctx)
{
    tg__message *m = find_message(ctx);
    if (m)
        return m;
    m = tg__alloc(ctx, sizeof *m);
    if (!m) {
        atomic_fetch_add_explicit(&ctx->messages_lost, 1, memory_order_relaxed);
        return NULL;
    }
    m->thread = this_thread();
    m->text[0] = '\0';
    m->next = atomic_load_explicit(&ctx->messages, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&ctx->messages, &m->next, m, memory_order_release,
                                                  memory_order_relaxed))
        continue;
    return m;
}

/* tg_ctx_free only: no other thread uses the context any more. */
static void free_messages(tg_ctx *ctx)
{
    tg__message *m = atomic_load_explicit(&ctx->messages, memory_order_acquire);
    while (m) {
        tg__message *next = m->next;
        if (m != &ctx->first)
            tg__free(ctx, m, sizeof *m);
        m = next;
    }
}

static void *default_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    (void)user;
    (void)old_size;
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, new_size);
}

tg_status tg_ctx_new(tg_ctx **out, const tg_ctx_options *opts)
{
    if (!out)
        return TG_INVALID;
    *out = NULL;
    tg_ctx_options o = {0};
    if (opts)
        o = *opts;
    if (o.threads < 0)
        return TG_INVALID;
    tg_alloc_fn alloc = o.alloc ? o.alloc : default_alloc;
    tg_ctx *ctx = alloc(o.alloc_user, NULL, 0, sizeof *ctx);
    if (!ctx)
        return TG_NOMEM;
    memset(ctx, 0, sizeof *ctx);
    ctx->alloc = alloc;
    ctx->alloc_user = o.alloc_user;
    atomic_init(&ctx->alloc_calls, 1);
    atomic_init(&ctx->refs, 1);
    atomic_init(&ctx->threads, o.threads > 0 ? o.threads : 1);
    ctx->first.thread = this_thread();
    atomic_init(&ctx->messages, &ctx->first);
    atomic_init(&ctx->messages_lost, 0);
    for (int i = 0; i < TG__OP_COUNT; i++) {
        tg_status st = tg_op_register(ctx, tg__builtin_defs[i], &ctx->builtin[i]);
        if (st != TG_OK) {
            tg_ctx_free(ctx);
            return st;
        }
    }
    *out = ctx;
    return TG_OK;
}

static void destroy(tg_ctx *ctx)
{
    while (ctx->nparams)
        tg_param_free(ctx->params[ctx->nparams - 1]);
    tg__free(ctx, ctx->params, ctx->params_cap * sizeof *ctx->params);
    for (size_t i = 0; i < ctx->nops; i++)
        tg__free(ctx, ctx->ops[i], sizeof(tg_op) + ctx->ops[i]->name_size);
    tg__free(ctx, ctx->ops, ctx->ops_cap * sizeof *ctx->ops);
    free_messages(ctx);
    ctx->alloc(ctx->alloc_user, ctx, sizeof *ctx, 0);
}

void tg__ctx_retain(tg_ctx *ctx) { atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed); }

void tg__ctx_release(tg_ctx *ctx)
{
    if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) == 1)
        destroy(ctx);
}

void tg_ctx_free(tg_ctx *ctx)
{
    if (ctx)
        tg__ctx_release(ctx);
}

const char *tg_ctx_error(const tg_ctx *ctx)
{
    if (!ctx)
        return "NULL context";
    const tg__message *m = find_message(ctx);
    if (m)
        return m->text;
    if (atomic_load_explicit(&ctx->messages_lost, memory_order_relaxed))
        return "(no message: out of memory for a thread's message buffer)";
    return "";
}

/* Formats the message into the calling thread's slot; the status is returned as it is. */
static tg_status ctx_vfail(tg_ctx *ctx, tg_status st, const char *fmt, va_list ap)
{
    tg__message *m = ctx ? own_message(ctx) : NULL;
    if (m)
        tg__vformat_message(m->text, sizeof m->text, fmt, ap);
    return st;
}

tg_status tg__ctx_fail(tg_ctx *ctx, tg_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ctx_vfail(ctx, st, fmt, ap);
    va_end(ap);
    return st;
}

tg_status tg_ctx_fail(tg_ctx *ctx, tg_status status, const char *fmt, ...)
{
    if ((unsigned)status >= TG_STATUS_COUNT)
        status = TG_INVALID;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        ctx_vfail(ctx, status, fmt, ap);
        va_end(ap);
    }
    return status;
}

void *tg_alloc(tg_ctx *ctx, size_t size) { return ctx ? tg__alloc(ctx, size ? size : 1) : NULL; }

void *tg_realloc(tg_ctx *ctx, void *ptr, size_t old_size, size_t new_size)
{
    if (!ctx)
        return NULL;
    if (!ptr)
        return tg__alloc(ctx, new_size ? new_size : 1);
    return tg__realloc(ctx, ptr, old_size, new_size ? new_size : 1);
}

void tg_free(tg_ctx *ctx, void *ptr, size_t size)
{
    if (ctx && ptr)
        tg__free(ctx, ptr, size ? size : 1);
}

tg_status tg_ctx_set_threads(tg_ctx *ctx, int threads)
{
    if (!ctx)
        return TG_INVALID;
    if (threads < 1)
        return tg__ctx_fail(ctx, TG_INVALID, "tg_ctx_set_threads: %d threads (need >= 1)", threads);
    atomic_store_explicit(&ctx->threads, threads, memory_order_relaxed);
    return TG_OK;
}

int tg_ctx_threads(const tg_ctx *ctx)
{
    return ctx ? atomic_load_explicit(&((tg_ctx *)ctx)->threads, memory_order_relaxed) : 0;
}

uint64_t tg_ctx_alloc_calls(const tg_ctx *ctx)
{
    return ctx ? atomic_load_explicit(&((tg_ctx *)ctx)->alloc_calls, memory_order_relaxed) : 0;
}

/* ---- build information --------------------------------------------------------------------- */

#ifdef _OPENMP
#define BUILD_OPENMP "yes"
#else
#define BUILD_OPENMP "no"
#endif
#ifdef TG_HAVE_MPI
#define BUILD_MPI "yes"
#else
#define BUILD_MPI "no"
#endif
#define BUILD_INFO(vm, gemm) "vmath=" vm " gemm=" gemm " openmp=" BUILD_OPENMP " mpi=" BUILD_MPI
/* The literal for vector-math set vm and GEMM level g (2: AVX-512F, 1: AVX2, 0: scalar). */
#define BY_GEMM(vm, g)                                                                             \
    ((g) == 2   ? BUILD_INFO(vm, "avx512f")                                                        \
     : (g) == 1 ? BUILD_INFO(vm, "avx2")                                                           \
                : BUILD_INFO(vm, "scalar"))

/* One literal per pair of instruction sets: nothing is formatted, so nothing needs writable
 * storage. The vector math's set depends on the build too (none but the portable one without
 * SLEEF); the GEMM's only on the CPU. */
const char *tg_build_info(void)
{
    const char *vm = tg__vm_isa();
    int g = tg__gemm_isa_ok(TG__GEMM_AVX512) ? 2 : tg__gemm_isa_ok(TG__GEMM_AVX2) ? 1 : 0;
    if (!strcmp(vm, "avx512f"))
        return BY_GEMM("avx512f", g);
    if (!strcmp(vm, "avx2"))
        return BY_GEMM("avx2", g);
    if (!strcmp(vm, "scalar"))
        return BY_GEMM("scalar", g);
    return BY_GEMM("?", g);
}

/* ---- registry ------------------------------------------------------------------------------ */

tg_status tg_op_register(tg_ctx *ctx, const tg_op_def *def, const tg_op **out)
{
    if (out)
        *out = NULL;
    if (!ctx)
        return TG_INVALID;
    if (!def || !def->name || !def->name[0])
        return tg__ctx_fail(ctx, TG_INVALID, "tg_op_register: missing descriptor or name");
    if (!def->check)
        return tg__ctx_fail(ctx, TG_INVALID, "tg_op_register: op '%s' has no check callback",
                            def->name);
    if (def->ninputs != TG_VARIADIC && (def->ninputs < 1 || def->ninputs > 64))
        return tg__ctx_fail(ctx, TG_INVALID, "tg_op_register: op '%s' takes %d inputs (1..64)",
                            def->name, def->ninputs);
    if (def->flags & ~(unsigned)(TG_OP_BROADCAST | TG_OP_NONDIFF))
        return tg__ctx_fail(ctx, TG_INVALID, "tg_op_register: op '%s' has unknown flags 0x%x",
                            def->name, def->flags);
    if (tg_op_find(ctx, def->name))
        return tg__ctx_fail(ctx, TG_EXISTS, "tg_op_register: an op named '%s' exists", def->name);
    if (ctx->nops == ctx->ops_cap) {
        size_t cap = ctx->ops_cap ? ctx->ops_cap * 2 : 64;
        tg_op **ops = tg__realloc(ctx, ctx->ops, ctx->ops_cap * sizeof *ops, cap * sizeof *ops);
        if (!ops)
            return tg__ctx_fail(ctx, TG_NOMEM, "tg_op_register: out of memory");
        ctx->ops = ops;
        ctx->ops_cap = cap;
    }
    size_t name_size = strlen(def->name) + 1;
    tg_op *op = tg__alloc(ctx, sizeof *op + name_size); /* the name is stored after the op */
    if (!op)
        return tg__ctx_fail(ctx, TG_NOMEM, "tg_op_register: out of memory");
    op->name = (char *)(op + 1);
    memcpy(op->name, def->name, name_size);
    op->name_size = name_size;
    op->def = *def;
    op->def.name = op->name;
    op->ctx = ctx;
    op->index = ctx->nops;
    ctx->ops[ctx->nops++] = op;
    if (out)
        *out = op;
    return TG_OK;
}

const tg_op *tg_op_find(const tg_ctx *ctx, const char *name)
{
    if (!ctx || !name)
        return NULL;
    for (size_t i = 0; i < ctx->nops; i++)
        if (strcmp(ctx->ops[i]->name, name) == 0)
            return ctx->ops[i];
    return NULL;
}

size_t tg_op_count(const tg_ctx *ctx) { return ctx ? ctx->nops : 0; }

const tg_op *tg_op_at(const tg_ctx *ctx, size_t index)
{
    return ctx && index < ctx->nops ? ctx->ops[index] : NULL;
}

const tg_op_def *tg_op_def_of(const tg_op *op) { return op ? &op->def : NULL; }
