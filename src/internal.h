/* internal.h — the engine's private types and helpers, for src/ only (never installed). ops/
 * never includes it: an op sees what a user's op sees, plus ops/ops.h, ops/kernels.h and the
 * service headers (src/layout.h, src/vmath.h, src/gemm.h). */
#ifndef TG_INTERNAL_H
#define TG_INTERNAL_H

#include "tapegrad.h"

#include "layout.h"

#include <assert.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>

/* Internal invariants only; user input never reaches one of these. */
#define tg__assert(cond) assert(cond)

#if defined(__GNUC__) || defined(__clang__)
#define TG__LIKELY(x) __builtin_expect(!!(x), 1)
#define TG__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TG__PRINTF(f, a) __attribute__((format(printf, f, a)))
#define TG__NOINLINE __attribute__((noinline))
#define TG__ALWAYS_INLINE __attribute__((always_inline))
#else
#define TG__LIKELY(x) (x)
#define TG__UNLIKELY(x) (x)
#define TG__PRINTF(f, a)
#define TG__NOINLINE
#define TG__ALWAYS_INLINE
#endif

#define TG__ALIGN 64      /* alignment of every tensor buffer */
#define TG__CHUNK_BITS 10 /* nodes are stored in chunks of 1024: stable addresses */
#define TG__CHUNK (1u << TG__CHUNK_BITS)
#define TG__MAX_NODES 0x7fffffffu /* node ids fit in 31 bits (the top bit tags owned grads) */
/* Bytes of a tape's or a context's message buffer. Longer messages are shortened in the middle
 * (tg__vformat_message), so that the op or function name and an errno text at the end survive. */
#define TG__MESSAGE 4096

/* Formats a message into buf[size] (size >= 64). A string argument longer than a quarter of the
 * buffer keeps its beginning and its end around "..." (a long path keeps its root and its file
 * name); a message still too long keeps its beginning and its last bytes around "...". */
void tg__vformat_message(char *buf, size_t size, const char *fmt, va_list ap);

/* ---- allocation through the context's hook ------------------------------------------------ */
void *tg__alloc(tg_ctx *ctx, size_t size);
void *tg__realloc(tg_ctx *ctx, void *ptr, size_t old_size, size_t new_size);
void tg__free(tg_ctx *ctx, void *ptr, size_t size);
char *tg__strdup(tg_ctx *ctx, const char *s, size_t *size_out);

/* ---- arena: chained blocks, bump allocation, O(1) rewind, blocks kept ---------------------- */
typedef struct tg__block {
    struct tg__block *next;
    size_t size; /* usable bytes after the header */
    size_t used;
} tg__block;

typedef struct tg__arena {
    tg__block *first;
    tg__block *cur;
    size_t bytes;     /* bytes handed out since the last rewind */
    size_t next_size; /* size of the next fresh block */
    size_t cap;       /* most bytes handed out before a rewind (SIZE_MAX: no limit) */
    bool refused;     /* a request was refused for the cap since the last rewind */
} tg__arena;

void *tg__arena_grow(tg_ctx *ctx, tg__arena *a, size_t size);

/* Bytes before a block's first usable byte (its header, rounded up to the alignment). */
#define TG__BLOCK_HEADER ((sizeof(tg__block) + TG__ALIGN - 1) & ~(size_t)(TG__ALIGN - 1))

/* Bump allocation in the current block; the rest (next block, a new one, a request over the
 * cap) out of line. NULL on failure. Every pointer returned is TG__ALIGN-aligned. */
static inline void *tg__arena_alloc(tg_ctx *ctx, tg__arena *a, size_t size)
{
    tg__block *b = a->cur;
    if (TG__LIKELY(b != NULL && size > 0)) {
        uintptr_t base = (uintptr_t)b + TG__BLOCK_HEADER;
        uintptr_t p = (base + b->used + TG__ALIGN - 1) & ~(uintptr_t)(TG__ALIGN - 1);
        /* size <= b->size bounds the sum: no overflow. */
        if (TG__LIKELY(size <= b->size && p - base <= b->size - size
                       && a->bytes + size <= a->cap)) {
            b->used = (size_t)(p + size - base);
            a->bytes += size;
            return (void *)p;
        }
    }
    return tg__arena_grow(ctx, a, size);
}
void tg__arena_rewind(tg__arena *a);
void tg__arena_release(tg_ctx *ctx, tg__arena *a);

/* ---- context -------------------------------------------------------------------------------- */
struct tg_op {
    tg_op_def def; /* copy of the user's descriptor; def.name points at `name` */
    char *name;
    size_t name_size;
    size_t index;
    tg_ctx *ctx;
};

struct tg_param {
    tg_ctx *ctx;
    char *name;
    size_t name_size;
    tg_view value;   /* data owned here */
    void *grad;      /* NULL for a buffer */
    size_t bytes;    /* of the value (and of the gradient) */
    size_t capacity; /* bytes allocated for the value (>= 1; a buffer's may exceed `bytes`) */
    uint64_t version;
    bool buffer; /* a buffer: no gradient; read by copy, written by tg_buffer_store */
};

#include "../ops/builtins.h"

/* One thread's context-level message (tg_ctx_error): written and read by its thread only. */
typedef struct tg__message {
    struct tg__message *next; /* set before the slot is published, never changed after */
    const void *thread;       /* the owning thread's tag (ctx.c) */
    char text[TG__MESSAGE];
} tg__message;

/* Tapes of one context run in different threads at once: what their operations write here is
 * atomic (alloc_calls) or per thread (messages). The registry and the parameter list are written
 * only by calls the header says are not thread-safe with other calls on the context; builtin is
 * fixed at creation. */
struct tg_ctx {
    tg_alloc_fn alloc;
    void *alloc_user;
    /* One reference for tg_ctx_free and one per live tape: whichever release comes last frees
     * the context, so freeing it before its tapes is safe (acq_rel: the last release sees every
     * write made before the others). */
    _Atomic size_t refs;
    _Atomic uint64_t alloc_calls; /* relaxed: a count that orders nothing */
    _Atomic int threads;          /* tg_ctx_set_threads may change it while tapes read it */
    tg_op **ops;
    size_t nops, ops_cap;
    const tg_op *builtin[TG__OP_COUNT];
    tg_param **params;
    size_t nparams, params_cap;
    _Atomic(tg__message *) messages; /* every thread's slot, newest first; freed with the ctx */
    _Atomic uint64_t messages_lost;  /* slots that could not be allocated */
    tg__message first;               /* the creating thread's slot, inside the context */
};

tg_status tg__ctx_fail(tg_ctx *ctx, tg_status st, const char *fmt, ...) TG__PRINTF(3, 4);
/* Takes and drops a reference to the context (a tape's); the last drop frees it. */
void tg__ctx_retain(tg_ctx *ctx);
void tg__ctx_release(tg_ctx *ctx);

/* ---- tape ----------------------------------------------------------------------------------- */
enum tg__kind {
    TG__LEAF,        /* created tensor (or gradient buffer) */
    TG__PARAM,       /* a parameter's value, by reference */
    TG__OPNODE,      /* result of a registered op */
    TG__FROM_SCALAR, /* a scalar entry as a 0-d tensor */
    TG__BARRIER      /* a gradient made by a kernel backward under TG_CREATE_GRAPH */
};

/* A naming scope (tg_tape_push_scope), in the arena: valid until reset. */
typedef struct tg__scope {
    const struct tg__scope *parent;
    uint32_t id;    /* 1, 2, ... in order of opening since the last reset */
    uint32_t depth; /* the tape's scope depth when it was opened */
    char name[];
} tg__scope;

typedef struct tg__node {
    tg_view v;
    const tg__scope *scope; /* innermost scope open when the node was recorded, or NULL */
    const tg_op *op;        /* OPNODE; BARRIER: the op whose kernel backward produced it */
    uint32_t *inputs;       /* linked inputs, NULL when recorded without grad */
    uint32_t ninputs;
    uint32_t scalar_mark; /* number of scalar entries when the node was created */
    uint8_t kind;
    uint8_t requires_grad;
    uint8_t released;
    uint8_t leaf_marked; /* requires_grad leaf: tg_backward accumulates into leaf_grad */
    uint8_t backward;    /* recorded while a backward pass ran (a gradient's computation) */
    uint32_t leaf_grad;
    uint32_t scalar_src; /* FROM_SCALAR: the scalar entry */
    void *attr;
    void *saved;
    tg_param *param;
    uint64_t param_version;
} tg__node;

/* A scalar entry: 24 bytes (its adjoint lives in a parallel array, written only by backward).
 * `b` is an operand for binary ops; `c` a constant for the rest. */
typedef struct tg__sentry {
    double v;
    union {
        double c;
        uint32_t b;
    } u;
    uint32_t a;
    uint32_t op;
} tg__sentry;

struct tg_tape {
    tg_ctx *ctx;
    uint32_t gen;
    tg_status status;
    bool grad_enabled;
    bool scalars_dirty; /* adjoints hold a previous backward's values */
    bool in_backward;
    tg__arena arena;
    tg__node **chunks;
    uint32_t nchunks, chunks_cap;
    uint32_t nnodes; /* node 0 is a placeholder: id 0 means none/error */
    /* The scalar record: entries, then (same block) scalar_capacity adjoints and released
     * flags. Entry 0 is a placeholder too. */
    tg__sentry *scalars;
    double *scalar_adjoints;
    uint8_t *scalar_released; /* set when a backward without TG_RETAIN_GRAPH went through */
    uint32_t scalar_count, scalar_capacity;
    uint32_t scalar_limit;    /* records allowed while count < limit: the capacity, 0 once failed */
    bool scalar_released_any; /* some entry was released since the last reset */
    uint32_t scalar_adjoints_valid; /* adjoints [0, scalar_adjoints_valid) are initialised */
    size_t memory_limit;            /* tg_tape_set_memory_limit; 0: none */
    uint32_t backward_passes;       /* backward calls since the last reset (for the limit's hint) */
    const tg__scope *scope;         /* innermost open scope (NULL: none, or its push failed) */
    uint32_t scope_depth;           /* pushes not yet popped, failed pushes included */
    uint32_t scope_count;           /* scopes opened since the last reset */
    tg_grad_ready_fn grad_ready;    /* tg_tape_set_grad_ready; kept across resets */
    void *grad_ready_user;
    char error[TG__MESSAGE];
};

static inline tg__node *tg__node_at(const tg_tape *tp, uint32_t id)
{
    return &tp->chunks[id >> TG__CHUNK_BITS][id & (TG__CHUNK - 1)];
}

static inline tg_tensor tg__handle(tg_tape *tp, uint32_t id)
{
    tg_tensor t = {tp, id, tp ? tp->gen : 0};
    return t;
}

static inline tg_tensor tg__error_handle(tg_tape *tp) { return tg__handle(tp, 0); }

/* Records the first error on the tape; returns the tape's status. The one place errors pass. */
tg_status tg__fail(tg_tape *tp, tg_status st, const char *fmt, ...) TG__PRINTF(3, 4);
tg_status tg__vfail(tg_tape *tp, tg_status st, const char *fmt, va_list ap);

/* Whether t is a live tensor of tape tp: not none, not an error handle, not from before a reset
 * nor from another tape. The one test (tg__resolve also says why not). */
static inline bool tg__live(const tg_tape *tp, tg_tensor t)
{
    return tp && t.tape_ == tp && t.gen_ == tp->gen && t.id_ != 0 && t.id_ < tp->nnodes;
}

/* Why t is not a live tensor of tp: TG_INVALID (none, an error handle) or TG_STALE (from
 * before a reset, or another tape's), with a phrase for messages; TG_OK when it is live. */
tg_status tg__handle_status(const tg_tape *tp, tg_tensor t, const char **why);
/* Resolves a handle that must belong to `tp` (or to its own tape when tp is NULL); records
 * TG_ERR_STALE / TG_ERR_INVALID with `what` in the message and returns NULL on failure. */
tg__node *tg__resolve(tg_tape *tp, tg_tensor t, const char *what);

/* Every field of a fresh node but its view's shape and data (set by whoever fills it). Field
 * by field: a memset of the whole record costs a string instruction's start-up on every op. */
static inline void tg__node_clear(tg__node *n, const tg_tape *tp)
{
    n->scope = tp->scope;
    n->backward = tp->in_backward;
    n->v.data = NULL;
    n->v.numel = 0;
    n->v.dtype = (tg_dtype)0;
    n->v.ndim = 0;
    n->op = NULL;
    n->inputs = NULL;
    n->ninputs = 0;
    n->scalar_mark = tp->scalar_count;
    n->kind = TG__LEAF;
    n->requires_grad = 0;
    n->released = 0;
    n->leaf_marked = 0;
    n->leaf_grad = 0;
    n->scalar_src = 0;
    n->attr = NULL;
    n->saved = NULL;
    n->param = NULL;
    n->param_version = 0;
}

/* Reserves a node slot (not yet counted), cleared; NULL (and TG_NOMEM recorded) on failure. */
tg__node *tg__node_reserve_slow(tg_tape *tp);
static inline tg__node *tg__node_reserve(tg_tape *tp)
{
    uint32_t id = tp->nnodes;
    if (TG__UNLIKELY((id >> TG__CHUNK_BITS) >= tp->nchunks || id >= TG__MAX_NODES))
        return tg__node_reserve_slow(tp);
    tg__node *n = tg__node_at(tp, id);
    tg__node_clear(n, tp);
    return n;
}
/* Memory limit (tg_tape_set_memory_limit): the tape's memory is its arena bytes plus its node
 * and scalar tables. tg__tape_limit_records tells the arena its cap after the tables change;
 * tg__tape_records_fit says whether the tables may grow by `more` bytes (marking a refusal). */
size_t tg__tape_memory(const tg_tape *tp);
void tg__tape_limit_records(tg_tape *tp);
bool tg__tape_records_fit(tg_tape *tp, size_t more);
/* Bytes per scalar entry: the entry, its adjoint and its released flag. */
#define TG__SCALAR_BYTES (sizeof(tg__sentry) + sizeof(double) + 1)
/* Allocates `numel` elements of `dt`, aligned; records TG_NOMEM (naming `who`) on failure. */
void *tg__tape_buffer(tg_tape *tp, const char *who, tg_dtype dt, int64_t numel);
/* What a node is, in words: its op's name, or "leaf", "parameter", "scalar", "kernel gradient"
 * (tg_tensor_op_name). */
const char *tg__node_kind_name(const tg__node *n);
/* Creates a leaf tensor with uninitialised data (error handle on failure). */
tg_tensor tg__leaf(tg_tape *tp, const char *who, tg_dtype dt, int ndim, const int64_t *shape,
                   tg__node **out);

/* Shape helpers. */
/* Whether a double converts to i64 without undefined behaviour (finite, in [-2^63, 2^63)); the
 * conversion truncates toward zero, as C's does. */
static inline bool tg__fits_i64(double v) { return v >= -0x1p63 && v < 0x1p63; }
static inline bool tg__same_shape(const tg_view *a, const tg_view *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}
/* A view's dtype and shape as "f32[3,4]" (tg_format_shape). */
static inline int tg__format_view(char *buf, size_t size, const tg_view *v)
{
    return tg_format_shape(buf, size, v->dtype, v->ndim, v->shape);
}
bool tg__broadcast_shape(int n, const tg_view *const *in, int *ndim, int64_t *shape);
/* Bytes of tg_kernel.loop_scratch_ an op of `ninputs` inputs needs (0: the loop's stack will
 * do). Whoever builds a tg_kernel for a kernel sets it aside first. */
size_t tg__loop_scratch_bytes(int ninputs);

/* ---- the backward driver (backward.c) and its scalar side (scalar.c) ------------------------ */
/* A parameter node in a backward with a gradient-ready hook, and the lowest node of the same
 * parameter in the swept range, where the parameter's gradients gather. */
typedef struct tg__param_node {
    uint32_t id, first;
    tg_param *param;
} tg__param_node;

struct tg__bw {
    tg_tape *tp;
    uint32_t low, high; /* node range swept: [low, high] */
    uint32_t *slots;    /* gradient node of each node in [low, high] (| OWNED), 0 = none */
    uint8_t *needed;    /* functional (tg_grad): nodes on a path from an input; NULL otherwise */
    uint32_t scalar_low, scalar_high; /* scalar entries swept: [scalar_low, scalar_high) */
    uint8_t *scalar_needed;           /* functional: entries on a path from an input, by entry id */
    uint32_t scalar_floor;            /* functional: lowest entry a first-order sweep writes */
    double *scalar_adjoints;   /* numeric adjoints by entry id; NULL: the tape's (tg_s_grad's) */
    uint32_t *adjoint_entries; /* TG_CREATE_GRAPH: each entry's adjoint as an entry id, 0 = none */
    tg__param_node *param_nodes; /* with a gradient-ready hook: parameter nodes by id, else NULL */
    uint32_t nparam_nodes;
    bool create, retain, accumulate;
};

/* Whether node `id` gets a gradient in this backward. */
static inline bool tg__bw_needs(const struct tg__bw *bw, uint32_t id)
{
    if (id < bw->low || id > bw->high)
        return false;
    if (bw->needed)
        return bw->needed[id - bw->low];
    return tg__node_at(bw->tp, id)->requires_grad;
}

/* The first-order scalar sweep: entries [lo, hi) in reverse, adjoints in `adj` (by entry id). */
tg_status tg__scalar_sweep(tg_tape *tp, double *adj, uint32_t lo, uint32_t hi, bool retain,
                           struct tg__bw *bw);
/* The recording sweep (TG_CREATE_GRAPH): adjoints are entries (bw->adjoint_entries), each rule
 * recorded. */
tg_status tg__scalar_sweep_graph(tg_tape *tp, uint32_t lo, uint32_t hi, struct tg__bw *bw);
/* Functional backward: marks bw->scalar_needed for entries [lo, hi) from their operands, and lowers
 * bw->scalar_floor to the lowest operand among them. */
void tg__scalar_need(tg_tape *tp, struct tg__bw *bw, uint32_t lo, uint32_t hi);
/* Before a sweep: initialises adjoints and release flags of new entries; with `clear`, also
 * clears what a previous backward left in the tape's adjoints (but the leaves', which
 * accumulate). */
void tg__scalar_prepare(tg_tape *tp, bool clear);
/* Adds contribution `c` (an entry) into entry `to`'s adjoint handle (TG_CREATE_GRAPH). */
tg_status tg__bw_give(struct tg__bw *bw, uint32_t to, tg_scalar c);
/* Adds `value` into the gradient slot of tensor node `id` during a backward (from scalars). */
tg_status tg__bw_deposit(struct tg__bw *bw, uint32_t id, double value);
/* The same under TG_CREATE_GRAPH: the contribution is the entry `h`, converted to the node's
 * dtype and shape. */
tg_status tg__bw_deposit_graph(struct tg__bw *bw, uint32_t id, tg_scalar h);
/* Scalar `s` as a one-element tensor of dtype `dt` and the given shape (tg_s_tensor's node, of
 * any float dtype); gradients flow back into the entry. */
tg_tensor tg__scalar_tensor(tg_scalar s, tg_dtype dt, int ndim, const int64_t *shape);

/* Random numbers: counter-based, stateless. */
uint64_t tg__mix64(uint64_t x);
void tg__fill_uniform(tg_dtype dt, void *data, int64_t n, double low, double high, uint64_t seed);
void tg__fill_normal(tg_dtype dt, void *data, int64_t n, double mean, double std, uint64_t seed);
void tg__fill_value(tg_dtype dt, void *data, int64_t n, double value);

#endif
