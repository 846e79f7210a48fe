/* tapegrad.h — reverse-mode automatic differentiation on a dynamic tape, in C11.
 *
 * The one header a user includes. A tape records tensor and scalar ops while ordinary C code
 * runs the forward pass; tg_backward replays them in reverse through the chain rule.
 *
 *     #include <tapegrad.h>
 *
 *     tg_ctx *ctx;  tg_tape *tp;  tg_param *w;
 *     tg_ctx_new(&ctx, NULL);
 *     tg_tape_new(ctx, &tp);
 *     tg_param_new(ctx, "w", TG_F32, 1, (int64_t[]){3}, &w);
 *     tg_param_fill(w, 0.5);
 *
 *     tg_tensor x = tg_tensor_from(tp, TG_F32, 1, (int64_t[]){3}, (float[]){1, 2, 3});
 *     tg_tensor y = tg_sum_all(tg_tanh(tg_mul(x, tg_param_tensor(tp, w))));
 *     if (tg_backward(y) != TG_OK)            // one status check per step
 *         fprintf(stderr, "%s\n", tg_tape_error(tp));
 *     const float *dw = tg_param_grad(w);     // dy/dw, accumulated into the parameter
 *     tg_tape_reset(tp);                      // O(1); memory kept for the next step
 *
 *     tg_tape_free(tp);  tg_ctx_free(ctx);
 *
 * Conventions, true of every function below unless it says otherwise:
 * - No global state: everything lives in a context (tg_ctx) and its tapes (tg_tape).
 *   A tape is used by one thread at a time; different tapes may run in different threads, also
 *   tapes of one context: see "Threads" under Context for what they share.
 * - Nothing aborts on bad input. Calls that act on a tape record the first error on the tape
 *   (sticky status, message naming the op, shapes and node) and return an error handle, never
 *   NULL; every later op on that tape returns an error handle at once. Check tg_tape_status()
 *   once per step, or the status tg_backward returns. tg_tape_reset clears the error.
 * - Calls without a tape (context, parameters, registration, files) return a tg_status.
 * - Tensor and scalar handles are small values valid until their tape is reset or freed; a
 *   handle from before a reset is detected as stale (TG_STALE), never silently read.
 * - Pointers returned by the library say who owns them and how long they stay valid.
 * - Every `_free(NULL)` is a no-op.
 */
#ifndef TAPEGRAD_H
#define TAPEGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; everything declared here is its API. */
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility push(default)
#endif

#define TG_VERSION_MAJOR 0
#define TG_VERSION_MINOR 1
#define TG_VERSION_PATCH 0

/* Most dimensions a tensor may have. */
#define TG_MAX_DIMS 8

/* ---------------------------------------------------------------------------------------------
 * Status codes. One list generates the enum, the names and the default messages.
 */
#define TG_STATUS_LIST(X)                                                                          \
    X(OK, "success")                                                                               \
    X(INVALID, "invalid argument")                                                                 \
    X(SHAPE, "shape mismatch")                                                                     \
    X(DTYPE, "dtype mismatch")                                                                     \
    X(RANGE, "value out of range")                                                                 \
    X(NOMEM, "out of memory")                                                                      \
    X(STALE, "stale or foreign handle")                                                            \
    X(NO_BACKWARD, "op has no backward rule")                                                      \
    X(FIRST_ORDER, "op has a first-order backward only")                                           \
    X(RELEASED, "graph already released by an earlier backward")                                   \
    X(NOT_SCALAR, "output is not a scalar and no seed was given")                                  \
    X(MODIFIED, "parameter modified after it was used on the tape")                                \
    X(EXISTS, "name already registered")                                                           \
    X(NOT_FOUND, "not found")                                                                      \
    X(IO, "input/output error")                                                                    \
    X(FORMAT, "malformed data")                                                                    \
    X(COMM, "communication between processes failed")                                              \
    X(PEER, "another process failed this step or holds different state")

typedef enum tg_status {
#define TG__STATUS_ENUM(name, msg) TG_##name,
    TG_STATUS_LIST(TG__STATUS_ENUM)
#undef TG__STATUS_ENUM
        TG_STATUS_COUNT
} tg_status;

/* "TG_SHAPE", ... ; a static string. Unknown codes give "TG_UNKNOWN". */
const char *tg_status_name(tg_status s);
/* A one-line default description of a status code; a static string. */
const char *tg_status_string(tg_status s);

/* ---------------------------------------------------------------------------------------------
 * Types.
 */
typedef enum tg_dtype {
    TG_F32 = 1, /* float */
    TG_F64 = 2, /* double */
    TG_I64 = 3  /* int64_t: data only (indices, labels); never differentiated */
} tg_dtype;

/* Size in bytes of one element; 0 for an unknown dtype. */
size_t tg_dtype_size(tg_dtype dt);
/* "f32", "f64", "i64"; "?" for an unknown dtype. */
const char *tg_dtype_name(tg_dtype dt);

typedef struct tg_ctx tg_ctx;     /* registry, allocator, parameters; opaque */
typedef struct tg_tape tg_tape;   /* the record of one forward pass and its arena; opaque */
typedef struct tg_param tg_param; /* a persistent tensor with a gradient, owned by a context */
typedef struct tg_op tg_op;       /* a registered op, owned by a context */

/* A tensor on a tape. An opaque value: copy it freely, never look inside. A zero-initialised
 * tg_tensor means "none". Valid until its tape is reset or freed. */
typedef struct tg_tensor {
    tg_tape *tape_;
    uint32_t id_;
    uint32_t gen_;
} tg_tensor;

/* A scalar (one double) on a tape, recorded cheaply without tensor machinery. Same rules. */
typedef struct tg_scalar {
    tg_tape *tape_;
    uint32_t id_;
    uint32_t gen_;
} tg_scalar;

/* ---------------------------------------------------------------------------------------------
 * Context.
 */

/* Threads. Tapes of one context may run in different threads at once (each tape in one thread
 * at a time). What they share is safe to share: the allocator hook is called from all of them
 * (see tg_alloc_fn), tg_ctx_alloc_calls counts every call, each thread has its own
 * tg_ctx_error, and the context's settings and registry are only read by tape operations.
 * Calls that change the context itself (tg_op_register, tg_param_new, tg_buffer_new,
 * tg_param_free, tg_ctx_free, the nn layer's constructors) are not thread-safe with any other call
 * on it that reads the registry or the parameter list (tg_op_find, tg_op_at, tg_param_find,
 * tg_zero_grad,
 * ...). tg_ctx_set_threads may run at any time; tapes see the new setting in later ops.
 * Parameters are shared data: tapes in several threads may read one at once (forward passes),
 * but a call that writes a parameter's value or gradient (tg_backward reaching it, tg_param_set
 * and its siblings, tg_buffer_store, tg_param_zero_grad, an optimiser's step) must not overlap
 * any other use of that parameter; give each thread its own parameters (or serialise the writes
 * yourself).
 *
 * Threads tapegrad runs: a context's kernels (GEMMs included; tapegrad does not use OpenBLAS, so
 * OPENBLAS_NUM_THREADS and friends do not touch it) share large work among tg_ctx_threads
 * threads of one pool, OpenMP's (libgomp's), the calling thread among them; 1, the default, runs
 * everything on the calling thread. A program that runs tapes in threads of its own should give
 * each context 1 thread, or split the cores among its contexts (threads x contexts <= cores):
 * pools started from different threads do not share the cores. Within the program's own OpenMP
 * parallel region tapegrad's loops run on the calling thread alone (libgomp's default of one
 * active level). libgomp's idle workers spin a while before they sleep: where other work needs
 * the cores between tapegrad's steps, set OMP_WAIT_POLICY=passive in the environment. */

/* One allocator function, Lua-style: new_size == 0 frees `ptr` (returning NULL); otherwise it
 * returns a block of new_size bytes holding the first min(old,new) bytes of `ptr` (which may be
 * NULL), or NULL on failure, leaving `ptr` untouched. Blocks must be 16-byte aligned.
 * The library does not serialise calls: the hook is called concurrently from every thread that
 * uses a tape of its context (or calls tg_alloc and friends) at the same time, with `user` as
 * given, so it must be thread-safe then; a block may be freed or resized in another thread than
 * the one that allocated it. The default (realloc/free) is thread-safe. */
typedef void *(*tg_alloc_fn)(void *user, void *ptr, size_t old_size, size_t new_size);

/* Options for tg_ctx_new. Zero means default: fill with designated initialisers. */
typedef struct tg_ctx_options {
    tg_alloc_fn alloc; /* default: realloc/free */
    void *alloc_user;  /* passed to alloc */
    int threads;       /* threads for large kernels, GEMMs included (see Threads); 0: one */
} tg_ctx_options;

/* Creates a context with every built-in op registered. `opts` may be NULL. On success *out owns
 * the context (free with tg_ctx_free); on failure *out is NULL and nothing leaks. */
tg_status tg_ctx_new(tg_ctx **out, const tg_ctx_options *opts);
/* Frees the context, its registry and its parameters. Either order is safe: while tapes of the
 * context are alive, the context stays allocated for them (they keep working) and is freed with
 * the last of them (tg_tape_free). Nothing else may use the context after this call. */
void tg_ctx_free(tg_ctx *ctx);
/* The message of the last context-level call (registration, parameters, files, optimisers)
 * that failed on this context in the calling thread; "" if none. Each thread has its own
 * message, so threads sharing a context never see or overwrite each other's (a thread that has
 * recorded none may see one left by a thread that has ended). Owned by the context, valid until
 * the calling thread's next failing call on it or tg_ctx_free; to report a failure from another
 * thread, copy the text in the thread that failed. Messages are bounded: an over-long one (a
 * long path) is shortened in the middle, keeping its beginning and its end (the errno text). */
const char *tg_ctx_error(const tg_ctx *ctx);
/* Records a context-level failure message (as the library's own calls do) and returns
 * `status`; lets code built on tapegrad report through tg_ctx_error. */
tg_status tg_ctx_fail(tg_ctx *ctx, tg_status status, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Memory through the context's allocator hook, for code built on tapegrad (so it shares the
 * hook's accounting and failure injection). tg_alloc returns NULL on failure; tg_free needs the
 * size that was allocated; tg_free(ctx, NULL, n) is a no-op. */
void *tg_alloc(tg_ctx *ctx, size_t size);
void *tg_realloc(tg_ctx *ctx, void *ptr, size_t old_size, size_t new_size);
void tg_free(tg_ctx *ctx, void *ptr, size_t size);
/* Worker threads kernels may use on this context's tapes (>= 1); may be called while tapes run. */
tg_status tg_ctx_set_threads(tg_ctx *ctx, int threads);
int tg_ctx_threads(const tg_ctx *ctx);
/* Number of calls the context made to its allocator so far (allocations, frees, resizes), from
 * every thread; exact once the threads that used the context have been joined. */
uint64_t tg_ctx_alloc_calls(const tg_ctx *ctx);
/* How this build of the library computes, for benchmark reports: a static string such as
 * "vmath=avx512f gemm=avx512f openmp=yes mpi=yes" (the instruction sets of the vector-math and
 * GEMM kernels chosen on this CPU, whether kernels can use threads, and whether tapegrad/dist.h
 * is in). */
const char *tg_build_info(void);

/* ---------------------------------------------------------------------------------------------
 * Tape.
 */

/* Creates an empty tape recording into `ctx`, with the memory limit TG_TAPE_MEMORY_LIMIT. Free
 * with tg_tape_free. */
tg_status tg_tape_new(tg_ctx *ctx, tg_tape **out);
void tg_tape_free(tg_tape *tp);
/* Forgets every tensor and scalar recorded since the last reset and clears the error state and
 * the naming scopes, in O(1). The memory is kept: a step of the same shape as the last one calls
 * no allocator. Every older handle becomes stale. Parameters (and their gradients) are
 * untouched. It switches gradient recording back on (tg_tape_set_grad(tp, true)), whatever the
 * last step left: each step starts as a fresh tape does, so a step that failed inside a no-grad
 * section cannot leave the next one silently unrecorded. An evaluation loop turns recording off
 * again after each reset. Called during a backward on the tape (from a rule or a hook), it
 * resets nothing and records TG_INVALID. */
void tg_tape_reset(tg_tape *tp);
/* The memory a tape may use between two resets (its arena, tg_tape_bytes, plus its node and
 * scalar tables). It exists to catch a training loop that forgets tg_tape_reset: the tape then
 * grows with every step. An allocation that would pass the limit fails with TG_NOMEM, and the
 * message says so, with the likely cause. 4 GiB by default (64-bit platforms): one step of
 * tg-train's CNN takes 95 MiB at batch 128 and 345 MiB at batch 512. */
#define TG_TAPE_MEMORY_LIMIT ((size_t)4 << 30)
/* Sets the tape's limit in bytes (0: no limit); it applies to later allocations. */
tg_status tg_tape_set_memory_limit(tg_tape *tp, size_t bytes);
size_t tg_tape_memory_limit(const tg_tape *tp);
/* TG_OK, or the first error recorded on the tape since the last reset. NULL tape: TG_INVALID. */
tg_status tg_tape_status(const tg_tape *tp);
/* The first error's message, e.g. "matmul: shapes f32[3,4] and f32[5,2] do not match (node 17)";
 * "" when the tape is fine. Owned by the tape, valid until the next reset. Shortened in the
 * middle as tg_ctx_error's messages are. */
const char *tg_tape_error(const tg_tape *tp);
/* Records `status` with a message on the tape (first error wins), as the library does; lets
 * user code join the tape's error model. Returns the tape's status afterwards. */
tg_status tg_tape_fail(tg_tape *tp, tg_status status, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* The error handle of `tp`, as failing ops return it (call after tg_tape_fail). */
tg_tensor tg_error(tg_tape *tp);
/* Turns gradient recording on or off (a no-grad scope) and returns the previous setting.
 * With it off, ops still compute values but link nothing for backward. tg_tape_reset turns it
 * back on. (torch.no_grad / torch.set_grad_enabled.) */
bool tg_tape_set_grad(tg_tape *tp, bool enabled);
bool tg_tape_grad_enabled(const tg_tape *tp);
tg_ctx *tg_tape_ctx(const tg_tape *tp);
/* Tensor nodes and scalar entries recorded since the last reset, and arena bytes in use. */
size_t tg_tape_node_count(const tg_tape *tp);
size_t tg_tape_scalar_count(const tg_tape *tp);
size_t tg_tape_bytes(const tg_tape *tp);
/* Naming scopes, for messages and graphs: while a scope is open, every error recorded on the tape
 * starts with its name ("net.2: matmul: shapes do not match ... (node 317)"), and every node
 * recorded belongs to it (tg_tensor_scope, tg_tape_write_dot's clusters); a backward rule runs
 * in the scope of the node it differentiates. Scopes nest; the innermost one names a message,
 * so push a full name (tg_forward pushes each module's hierarchical name, as PyTorch's
 * named_modules spells it). The name is copied onto the tape. Every push needs its pop, also on
 * an errored tape (a push there records nothing but is counted); a pop with no scope open is
 * TG_INVALID. tg_tape_reset closes every scope. Both return the tape's status. */
tg_status tg_tape_push_scope(tg_tape *tp, const char *name);
tg_status tg_tape_pop_scope(tg_tape *tp);
/* The innermost open scope's name; "" when none. Owned by the tape, valid until reset. */
const char *tg_tape_scope(const tg_tape *tp);

/* ---------------------------------------------------------------------------------------------
 * Tensors: creation and reading. Row-major, contiguous, up to TG_MAX_DIMS dims. ndim 0 is a
 * scalar tensor with one element. Created tensors are leaves that do not require a gradient.
 */
tg_tensor tg_tensor_from(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape,
                         const void *data); /* copies numel elements of dtype `dt` */
tg_tensor tg_zeros(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape);
tg_tensor tg_ones(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape);
/* For i64, `value` is truncated toward zero; NaN, infinities and values outside [-2^63, 2^63)
 * are TG_RANGE (tg_constant likewise). */
tg_tensor tg_full(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape, double value);
/* 0-d tensor holding `value`. */
tg_tensor tg_constant(tg_tape *tp, tg_dtype dt, double value);
/* 0, 1, ..., n-1 as a 1-d tensor. */
tg_tensor tg_arange(tg_tape *tp, tg_dtype dt, int64_t n);
/* Seeded random tensors: the same (seed, shape) always gives the same values, on any machine.
 * Uniform on [low, high); normal with the given mean and standard deviation. */
tg_tensor tg_uniform(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape, double low,
                     double high, uint64_t seed);
tg_tensor tg_normal(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape, double mean,
                    double std, uint64_t seed);
/* Same values, same tape, cut from the graph: gradients do not flow through it. */
tg_tensor tg_detach(tg_tensor t);
/* Marks a leaf tensor as requiring a gradient (tg_backward then accumulates into it; read it with
 * tg_tensor_grad) and returns it. Only leaves (created tensors) may be marked. */
tg_tensor tg_requires_grad(tg_tensor t);

/* True if `t` is a live tensor of its tape (not none, not an error handle, not stale). */
bool tg_ok(tg_tensor t);
/* TG_OK if `t` is live and its tape has no error; otherwise records TG_STALE or TG_INVALID on
 * the tape (naming `who`, when the tape has no error yet) and returns the tape's status (or
 * TG_INVALID for none). For wrappers that return an input as it is (an identity in some mode),
 * so they pass on an error exactly as an op would. */
tg_status tg_tensor_check(tg_tensor t, const char *who);
/* The tape a handle belongs to (NULL for none). */
tg_tape *tg_tensor_tape(tg_tensor t);
/* Metadata. On an invalid handle: dtype 0, ndim -1, numel -1, dim -1, shape NULL. */
tg_dtype tg_tensor_dtype(tg_tensor t);
int tg_ndim(tg_tensor t);
int64_t tg_numel(tg_tensor t);
int64_t tg_dim(tg_tensor t, int axis); /* negative axes count from the end */
/* The shape array (ndim entries), owned by the tape, valid until reset. */
const int64_t *tg_shape(tg_tensor t);
/* The values, row-major, owned by the tape, valid until reset. NULL on an invalid handle: none,
 * stale, or the error handle an op returns when it (or an earlier op) failed; so check
 * tg_ok(t) or the tape's status before reading. Treat as read-only: other nodes may share the
 * buffer. */
const void *tg_data(tg_tensor t);
/* Writes a shape as "[3,4]", or after a dtype's name as "f32[3,4]" (dtype 0: none), like
 * snprintf: always NUL-terminated when size > 0 (cut short if it does not fit), and returns the
 * length the whole text needs. For messages of code built on tapegrad. */
int tg_format_shape(char *buf, size_t size, tg_dtype dtype, int ndim, const int64_t *shape);
/* Copies numel values into `dst` converted to `dt`; `count` is dst's capacity in elements.
 * Floats convert to i64 truncated toward zero; TG_RANGE (nothing written) when one is NaN,
 * infinite or outside [-2^63, 2^63), or when count < numel. */
tg_status tg_read(tg_tensor t, tg_dtype dt, void *dst, int64_t count);
/* The value of a one-element tensor as a double; NaN on an invalid handle or numel != 1. */
double tg_item(tg_tensor t);
/* The gradient accumulated into a leaf by tg_backward (requires_grad leaves only), or none. */
tg_tensor tg_tensor_grad(tg_tensor t);

/* ---------------------------------------------------------------------------------------------
 * Parameters: persistent tensors owned by the context, with a gradient of the same shape
 * (zero-initialised). They survive tape resets. tg_backward adds into their gradients.
 *
 * Buffers are the context's other persistent tensors: state that never receives a gradient (an
 * RNN's hidden state carried from one step to the next, a KV cache, batch-norm running
 * statistics; PyTorch's register_buffer). A buffer is a tg_param for which tg_param_is_buffer
 * is true: listed, found, renamed, freed and saved in checkpoints like a parameter, written by
 * tg_param_set/fill/assign/write like one, but with no gradient (tg_param_grad is NULL,
 * tg_param_grad_tensor an error, zeroing does nothing), refused by optimisers, and read by copy.
 */
/* Creates a zero-filled parameter. `name` is copied (may be NULL: unnamed). Owned by ctx until
 * tg_param_free or tg_ctx_free. Not thread-safe with other calls on the same context. */
tg_status tg_param_new(tg_ctx *ctx, const char *name, tg_dtype dt, int ndim, const int64_t *shape,
                       tg_param **out);
/* Creates a zero-filled buffer (f32, f64 or i64; see above). `name` is copied. Owned by ctx
 * until tg_param_free or tg_ctx_free. Same rules and failures as tg_param_new. */
tg_status tg_buffer_new(tg_ctx *ctx, const char *name, tg_dtype dt, int ndim, const int64_t *shape,
                        tg_param **out);
bool tg_param_is_buffer(const tg_param *p); /* false for NULL */
/* Stores a tape tensor's value in a buffer, detached from its graph: the way to carry state from
 * one step's tape to the next (the hidden state of truncated backprop through time, a KV cache
 * that grows every step) without copying it through a C array. The buffer takes the value's
 * shape (dtype must match), reallocating through the context's allocator only when it grows
 * past its capacity (which grows by at least half each time). Bumps the version. Fails, with
 * the buffer unchanged and the reason in tg_ctx_error, when `buffer` is a parameter (TG_INVALID:
 * use tg_param_assign), the value is stale, none or of another context, its tape holds an error
 * (that status: a failed step stores nothing), the dtype differs (TG_DTYPE) or memory runs out. */
tg_status tg_buffer_store(tg_param *buffer, tg_tensor value);
/* Renames the parameter (the name is copied; NULL or "" makes it unnamed). */
tg_status tg_param_rename(tg_param *p, const char *name);
/* Removes the parameter from its context and frees it. No tape may still use it. */
void tg_param_free(tg_param *p);
/* The parameter as a tensor on `tp` (no copy). Gradients reaching it are added into the
 * parameter's gradient by tg_backward. Error handle if p is NULL or of another context.
 * For a buffer: a copy of its current value, a leaf that needs no gradient (so storing into the
 * buffer later, even before this tape's backward, cannot change what the tape recorded). */
tg_tensor tg_param_tensor(tg_tape *tp, tg_param *p);
/* The parameter's current gradient as a tensor on `tp` (a copy, taken now; no gradient flows
 * through it). With tg_param_tensor, lets an update be written in tapegrad ops. A buffer has no
 * gradient: TG_INVALID on the tape. */
tg_tensor tg_param_grad_tensor(tg_tape *tp, tg_param *p);
/* Value and gradient buffers, row-major, owned by the parameter, valid until it is freed (a
 * buffer's value also moves when tg_buffer_store grows it). Write values through
 * tg_param_set/fill/assign/write so that tapes can detect the change. tg_param_grad is NULL for a
 * buffer. */
const void *tg_param_data(const tg_param *p);
void *tg_param_grad(tg_param *p);
/* The value buffer for writing in place (an optimiser's update, for instance). Counts as a write
 * now: the version is bumped, so tapes that used the old value refuse to backpropagate. Call it
 * again before each later write. NULL if p is NULL. */
void *tg_param_write(tg_param *p);
const char *tg_param_name(const tg_param *p); /* "" if unnamed */
tg_ctx *tg_param_ctx(const tg_param *p);
tg_dtype tg_param_dtype(const tg_param *p);
int tg_param_ndim(const tg_param *p);
const int64_t *tg_param_shape(const tg_param *p);
int64_t tg_param_numel(const tg_param *p);
/* Overwrites the value from `data` (numel elements of the parameter's dtype). */
tg_status tg_param_set(tg_param *p, const void *data);
/* i64 buffers: fill takes values representable as i64 (else TG_RANGE); uniform and normal are
 * TG_DTYPE. */
tg_status tg_param_fill(tg_param *p, double value);
tg_status tg_param_uniform(tg_param *p, double low, double high, uint64_t seed);
tg_status tg_param_normal(tg_param *p, double mean, double std, uint64_t seed);
/* Copies a tape tensor of the same dtype and shape into the value. */
tg_status tg_param_assign(tg_param *p, tg_tensor value);
/* Bumped by every write above (tg_param_write included); a tape that used an older version
 * refuses to backpropagate. */
uint64_t tg_param_version(const tg_param *p);
void tg_param_zero_grad(tg_param *p);
/* Zeroes the gradient of every parameter of the context (buffers have none). */
void tg_zero_grad(tg_ctx *ctx);
/* Parameters and buffers in creation order; tg_param_at returns NULL past the end. */
size_t tg_param_count(const tg_ctx *ctx);
tg_param *tg_param_at(const tg_ctx *ctx, size_t index);
tg_param *tg_param_find(const tg_ctx *ctx, const char *name);

/* ---------------------------------------------------------------------------------------------
 * Backward.
 */
#define TG_RETAIN_GRAPH 1u /* keep the graph so it can be backpropagated again */
#define TG_CREATE_GRAPH                                                                            \
    2u /* record the backward itself: gradients become differentiable                              \
          (implies TG_RETAIN_GRAPH) */

/* Backpropagates from a one-element output with seed 1, adding into the gradients of every
 * parameter and requires_grad leaf it depends on. Releases the graph (a second backward through
 * it fails with TG_RELEASED). On failure nothing is added anywhere. */
tg_status tg_backward(tg_tensor loss);
/* Same with an explicit seed (same shape as `out`; none allowed only for one element) and
 * flags (TG_RETAIN_GRAPH, TG_CREATE_GRAPH). */
tg_status tg_backward_ex(tg_tensor out, tg_tensor seed, unsigned flags);

/* Gradient-ready hook, for code that acts on gradients while backward still runs (tapegrad/dist.h
 * starts averaging them over processes). In every backward on `tp` that adds into parameter
 * gradients (tg_backward, tg_backward_ex, tg_s_backward; never tg_grad), fn(user, p, grad) is
 * called once per parameter p that receives a gradient, as soon as that gradient is final: when
 * the reverse sweep has passed every use of p on the tape (a parameter used several times gets
 * one call, with the sum), while the nodes recorded before them still wait. `grad` is what this
 * backward adds into p (tg_param_numel(p) elements of its dtype, not yet added), read-only,
 * owned by the tape until its next reset. Returning true takes the gradient over: backward will
 * not add it into tg_param_grad(p) (the hook's owner does, e.g. once averaged); false leaves it
 * to backward, which adds it at its end as without a hook. Either way a backward that fails
 * after calling fn changes no parameter gradient. fn must not record on, reset, free or
 * backpropagate this tape. The hook stays set across resets; fn NULL removes it. NULL tp:
 * TG_INVALID. Mirrors torch.Tensor.register_post_accumulate_grad_hook (before accumulation). */
typedef bool (*tg_grad_ready_fn)(void *user, tg_param *p, const void *grad);
tg_status tg_tape_set_grad_ready(tg_tape *tp, tg_grad_ready_fn fn, void *user);
/* Functional gradient: grads[i] = d(sum_j <seeds[j], outputs[j]>)/d inputs[i], as new tensors on
 * the tape (zeros where an input does not affect the outputs). Touches no parameter or leaf
 * gradient. `seeds` may be NULL (every output must then have one element). Any tensor may be an
 * input, including intermediates. With TG_CREATE_GRAPH the gradients are differentiable. */
tg_status tg_grad(int noutputs, const tg_tensor *outputs, const tg_tensor *seeds, int ninputs,
                  const tg_tensor *inputs, tg_tensor *grads, unsigned flags);

/* ---------------------------------------------------------------------------------------------
 * Higher order: helpers built on tg_grad with TG_CREATE_GRAPH. Each returns new tensors on the
 * tape; with TG_CREATE_GRAPH in `flags` the results are differentiable again (nesting), else
 * they are plain values. The last reverse pass releases the graph it goes through unless flags
 * has TG_RETAIN_GRAPH (or TG_CREATE_GRAPH), as tg_grad does. They touch no parameter gradient.
 * An op on the path whose backward is first-order only makes them fail with TG_FIRST_ORDER. On
 * failure the results are error handles and the tape holds the error.
 */
/* Hessian-vector products of a one-element output f: hv[i] = d/d inputs[i] <grad f, v>, where
 * v[i] has inputs[i]'s shape. Two reverse passes. */
tg_status tg_hvp(tg_tensor f, int n, const tg_tensor *inputs, const tg_tensor *v, tg_tensor *hv,
                 unsigned flags);
/* Jacobian-vector product (forward-mode derivative) of `out` in the direction v (v[i] shaped
 * like inputs[i]): the result has out's shape. Computed by the double-reverse trick. */
tg_status tg_jvp(tg_tensor out, int n, const tg_tensor *inputs, const tg_tensor *v, tg_tensor *jv,
                 unsigned flags);
/* The full Jacobian of `out` (m elements) with respect to `input` (k elements), shaped [m, k],
 * by m reverse passes: for small functions. */
tg_status tg_jacobian(tg_tensor out, tg_tensor input, tg_tensor *jacobian, unsigned flags);
/* The full Hessian of a one-element output f with respect to `input` (k elements), [k, k], by k
 * reverse passes over the gradient: for small functions. */
tg_status tg_hessian(tg_tensor f, tg_tensor input, tg_tensor *hessian, unsigned flags);

/* ---------------------------------------------------------------------------------------------
 * Scalars: a compact record (value, adjoint, op, operands) on the same tape, for programs made of
 * many scalar operations. No tensor allocation, shape inference or registry dispatch per op.
 */
tg_scalar tg_s_var(tg_tape *tp, double value);   /* a leaf that receives a gradient */
tg_scalar tg_s_const(tg_tape *tp, double value); /* a leaf without gradient */
tg_scalar tg_s_add(tg_scalar a, tg_scalar b);
tg_scalar tg_s_sub(tg_scalar a, tg_scalar b);
tg_scalar tg_s_mul(tg_scalar a, tg_scalar b);
tg_scalar tg_s_div(tg_scalar a, tg_scalar b);
tg_scalar tg_s_neg(tg_scalar a);
tg_scalar tg_s_pow(tg_scalar a, double exponent);
tg_scalar tg_s_exp(tg_scalar a);
tg_scalar tg_s_log(tg_scalar a);
tg_scalar tg_s_sqrt(tg_scalar a);
tg_scalar tg_s_sin(tg_scalar a);
tg_scalar tg_s_cos(tg_scalar a);
tg_scalar tg_s_tanh(tg_scalar a);
tg_scalar tg_s_sigmoid(tg_scalar a);
tg_scalar tg_s_relu(tg_scalar a);
tg_scalar tg_s_abs(tg_scalar a);
/* a + c and a * c for a constant c (one entry, no constant entry needed). */
tg_scalar tg_s_addc(tg_scalar a, double c);
tg_scalar tg_s_mulc(tg_scalar a, double c);
bool tg_s_ok(tg_scalar s);
/* Value; NaN on an invalid handle. */
double tg_s_value(tg_scalar s);
/* d(output)/d(s) after the last tg_s_backward (accumulated across calls for tg_s_var leaves);
 * NaN on an invalid handle. */
double tg_s_grad(tg_scalar s);
/* Backpropagates from `out` with seed 1, adding into the adjoints tg_s_grad reads. Flags:
 * TG_RETAIN_GRAPH (TG_CREATE_GRAPH: use tg_s_gradient). */
tg_status tg_s_backward(tg_scalar out, unsigned flags);
/* Functional gradient on scalars: grads[i] = d(out)/d(inputs[i]) as scalars on the tape,
 * touching no adjoint that tg_s_grad reads (the path may go through tensor ops). With
 * TG_CREATE_GRAPH the gradients are recorded scalar expressions, so they can be differentiated
 * again; otherwise they are constants, and the graph is released unless TG_RETAIN_GRAPH. */
tg_status tg_s_gradient(tg_scalar out, int n, const tg_scalar *inputs, tg_scalar *grads,
                        unsigned flags);
/* The Hessian of `out` with respect to n scalars, row-major into hessian[n * n], by one
 * recorded reverse pass and n reverse passes over it (the graph is kept). On failure hessian is
 * filled with NaN. */
tg_status tg_s_hessian(tg_scalar out, int n, const tg_scalar *inputs, double *hessian);
/* Conversions: a scalar as a 0-d f64 tensor, and a one-element tensor as a scalar. Gradients
 * flow through both. */
tg_tensor tg_s_tensor(tg_scalar s);
tg_scalar tg_s_from(tg_tensor t);

/* ---------------------------------------------------------------------------------------------
 * Built-in ops. Each records one node (or returns an error handle) and is differentiable.
 * Elementwise binary ops broadcast by NumPy rules; both operands must have the same dtype.
 */
tg_tensor tg_add(tg_tensor a, tg_tensor b);
tg_tensor tg_sub(tg_tensor a, tg_tensor b);
tg_tensor tg_mul(tg_tensor a, tg_tensor b);
tg_tensor tg_div(tg_tensor a, tg_tensor b);
tg_tensor tg_neg(tg_tensor a);
tg_tensor tg_add_scalar(tg_tensor a, double c); /* a + c */
tg_tensor tg_mul_scalar(tg_tensor a, double c); /* a * c */
tg_tensor tg_pow(tg_tensor a, double exponent);
tg_tensor tg_square(tg_tensor a);
tg_tensor tg_exp(tg_tensor a);
tg_tensor tg_log(tg_tensor a);
tg_tensor tg_sqrt(tg_tensor a);
tg_tensor tg_abs(tg_tensor a);
tg_tensor tg_sign(tg_tensor a); /* -1, 0 or +1 (0 at 0 and at NaN); carries no gradient */
tg_tensor tg_sin(tg_tensor a);
tg_tensor tg_cos(tg_tensor a);
tg_tensor tg_tanh(tg_tensor a);
tg_tensor tg_sigmoid(tg_tensor a);
tg_tensor tg_relu(tg_tensor a);
tg_tensor tg_leaky_relu(tg_tensor a, double negative_slope);
tg_tensor tg_gelu(tg_tensor a); /* tanh approximation */
/* x sigmoid(x), computed as x / (1 + exp(-x)): torch.nn.functional.silu (NaN at -inf, as in
 * PyTorch). */
tg_tensor tg_silu(tg_tensor a);
/* The exact gelu, x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) with Phi the standard normal
 * distribution function: torch.nn.functional.gelu(approximate='none'). */
tg_tensor tg_gelu_erf(tg_tensor a);
tg_tensor tg_softplus(tg_tensor a);
tg_tensor tg_clamp(tg_tensor a, double low, double high);

/* Comparisons give masks (1 where true, 0 elsewhere) of the operands' dtype that carry no
 * gradient; tg_where picks a where mask != 0, else b (all three broadcast). */
tg_tensor tg_gt(tg_tensor a, tg_tensor b);
tg_tensor tg_lt(tg_tensor a, tg_tensor b);
tg_tensor tg_eq(tg_tensor a, tg_tensor b);
tg_tensor tg_where(tg_tensor mask, tg_tensor a, tg_tensor b);

/* Reductions over `naxes` axes (negative axes count from the end; repeated axes are an error);
 * keepdim keeps reduced axes with size 1. The _all forms reduce everything to a 0-d tensor.
 * max/min send the gradient to the extreme elements, shared evenly between ties. */
tg_tensor tg_sum(tg_tensor a, int naxes, const int *axes, bool keepdim);
tg_tensor tg_mean(tg_tensor a, int naxes, const int *axes, bool keepdim);
tg_tensor tg_max(tg_tensor a, int naxes, const int *axes, bool keepdim);
tg_tensor tg_min(tg_tensor a, int naxes, const int *axes, bool keepdim);
tg_tensor tg_sum_all(tg_tensor a);
tg_tensor tg_mean_all(tg_tensor a);
tg_tensor tg_max_all(tg_tensor a);
tg_tensor tg_min_all(tg_tensor a);
/* Sums a broadcast tensor back to `shape` (the reverse of tg_broadcast_to). */
tg_tensor tg_sum_to(tg_tensor a, int ndim, const int64_t *shape);

/* Matrix product of the last two dims; leading (batch) dims broadcast. Both inputs >= 2-d.
 * tg_matmul_t multiplies by transposed operands without materialising them. */
tg_tensor tg_matmul(tg_tensor a, tg_tensor b);
tg_tensor tg_matmul_t(tg_tensor a, tg_tensor b, bool transpose_a, bool transpose_b);

/* Shape ops. Results are new contiguous tensors; reshape and detach share the buffer. */
tg_tensor tg_reshape(tg_tensor a, int ndim, const int64_t *shape); /* one dim may be -1 */
tg_tensor tg_transpose(tg_tensor a, int axis0, int axis1);
tg_tensor tg_permute(tg_tensor a, int ndim, const int *perm);
tg_tensor tg_broadcast_to(tg_tensor a, int ndim, const int64_t *shape);
/* Elements start, start+step, ... < stop along `axis` (Python rules for negative start/stop;
 * step >= 1). */
tg_tensor tg_slice(tg_tensor a, int axis, int64_t start, int64_t stop, int64_t step);
tg_tensor tg_concat(int n, const tg_tensor *ts, int axis);
tg_tensor tg_stack(int n, const tg_tensor *ts, int axis);
/* Picks entries `index` (1-d i64) along `axis`. */
tg_tensor tg_index_select(tg_tensor a, int axis, tg_tensor index);
/* out[i][j][k] = a[index[i][j][k]][j][k] for axis 0 (and so on): index is i64, same ndim as a. */
tg_tensor tg_gather(tg_tensor a, int axis, tg_tensor index);

/* Running sums along one axis (negative counts from the end; a 0-d tensor has axis 0 or -1),
 * accumulated in double for both float dtypes: y_i = a_0 + ... + a_i, torch.cumsum. An axis out
 * of range is TG_RANGE; an i64 input is TG_DTYPE (i64 is data only). */
tg_tensor tg_cumsum(tg_tensor a, int axis);

/* a converted to `dtype`, Tensor.to(dtype): between f32 and f64 rounding to nearest,
 * differentiable (the gradient is cast back to a's dtype); to i64 truncated toward zero like
 * .long(), carrying no gradient (NaN, infinities and values outside [-2^63, 2^63) are TG_RANGE,
 * as tg_read does); from i64 to a float dtype rounding to nearest. The same dtype returns a
 * itself (no node), as Tensor.to returns self. An unknown dtype is TG_DTYPE. */
tg_tensor tg_cast(tg_tensor a, tg_dtype dtype);

/* Along one axis, stable for inputs of any magnitude. */
tg_tensor tg_softmax(tg_tensor a, int axis);
tg_tensor tg_log_softmax(tg_tensor a, int axis);
tg_tensor tg_logsumexp(tg_tensor a, int axis, bool keepdim);

/* Selection and sampling: indices (i64, no gradient) of f32/f64 inputs. A 0-d input has one
 * axis of size 1 (axis 0 or -1). An i64 input or an axis out of range is an error. Equal entries
 * (-0 and +0 too, and NaNs) go by the lower index. */
/* torch.argmax / torch.argmin along `axis`: the index of the largest (smallest) entry, the first
 * of ties; NaN wins for both, as in PyTorch. keepdim keeps the axis with size 1. An empty axis
 * is TG_SHAPE. */
tg_tensor tg_argmax(tg_tensor a, int axis, bool keepdim);
tg_tensor tg_argmin(tg_tensor a, int axis, bool keepdim);
/* torch.topk, sorted: the k largest (largest) or smallest entries along `axis`, first to last,
 * ranked as torch.sort ranks them (NaN above every number: first for largest, last otherwise),
 * into *values (a's dtype, differentiable: the gradient goes back to the picked entries) and
 * *indices (i64, the axis of size k). Equal entries come lower index first, also where k cuts
 * through them (PyTorch leaves that choice unspecified; the values are the same). k < 0 or
 * k > the axis length is TG_RANGE (a 0-d input takes k = 1 only). Returns the tape's status; on
 * failure both are error handles. */
tg_status tg_topk(tg_tensor a, int64_t k, int axis, bool largest, tg_tensor *values,
                  tg_tensor *indices);
/* Categorical sampling from logits over the last axis, i64 [..., num_samples]: as
 *   torch.multinomial(softmax(logits / temperature restricted to its top_k), num_samples,
 *                     replacement=True),
 * computed in double. The top_k are tg_topk's (ties lower index first); top_k 0, or not below
 * the class count, means every class. -inf logits are never drawn. The uniforms are a pure
 * function of (seed, row, sample): the same (seed, logits) gives the same samples on any machine
 * (but for a draw within double rounding error of a class boundary). TG_RANGE for NaN or +inf
 * logits, a row all -inf, num_samples < 1, top_k < 0, or a temperature not finite and > 0. */
tg_tensor tg_multinomial(tg_tensor logits, int64_t num_samples, double temperature, int64_t top_k,
                         uint64_t seed);

/* ---------------------------------------------------------------------------------------------
 * Attention and masks. tapegrad has no bool dtype: a boolean mask is an i64 tensor (nonzero is
 * true) or, where a function says so, a float tensor (nonzero is true, as comparisons give 0/1).
 */

/* torch.nn.functional.scaled_dot_product_attention (PyTorch >= 2.0, dropout_p 0): a new tensor
 * softmax(q k^T * scale + mask) v over the keys, for q [..., Tq, d], k [..., Tk, d] and
 * v [..., Tk, dv] of one float dtype whose leading (batch, head) dims broadcast together; the
 * output is [..., Tq, dv]. mask: none (a zero-initialised tg_tensor) or a tensor broadcasting to
 * [..., Tq, Tk]; of q's dtype it is ADDED to the scaled scores (-INFINITY allowed; it gets a
 * gradient), of i64 it is BOOLEAN as PyTorch's bool attn_mask (nonzero: may attend; 0: masked).
 * causal: PyTorch's is_causal, top-left aligned (query i sees keys j <= i); unlike PyTorch it may
 * be combined with a mask. scale: 0 means 1/sqrt(d) (PyTorch's default; with d = 0 the scores are
 * the mask alone), any other finite value is used as given. Unlike PyTorch (NaN), a query row
 * that may attend to no key gets output 0 and zero gradients. Fused, stable for scores of any
 * magnitude, differentiable to any order; it keeps for the backward the probabilities when no
 * larger than q, k and v together, else two doubles per query row. TG_SHAPE, TG_DTYPE or TG_RANGE
 * (the message names the shapes) for fewer than 2 dims, d or Tk that differ, batch dims or a mask
 * that do not broadcast, wrong dtypes, a non-finite scale. */
tg_tensor tg_scaled_dot_product_attention(tg_tensor q, tg_tensor k, tg_tensor v, tg_tensor mask,
                                          bool causal, double scale);
/* torch.tril / torch.triu over the last two dims (any leading dims): a new tensor keeping the
 * elements with j - i <= diagonal (tril) or j - i >= diagonal (triu), zeros elsewhere; any
 * diagonal, as PyTorch. f32, f64 or i64 (a data move: builds i64 boolean masks; no gradient);
 * the gradient is the same triangle of the output's gradient. Fewer than 2 dims: TG_SHAPE. */
tg_tensor tg_tril(tg_tensor a, int64_t diagonal);
tg_tensor tg_triu(tg_tensor a, int64_t diagonal);
/* torch.masked_fill (out of place): a new tensor, `value` (rounded to a's dtype; may be
 * -INFINITY) where mask != 0 and `a` elsewhere; a and mask broadcast together. a is f32 or f64;
 * the mask is of a's dtype (nonzero, NaN included, fills; PyTorch takes bool only) or i64. The
 * gradient of a is the output's gradient where the mask is 0; the mask gets none. */
tg_tensor tg_masked_fill(tg_tensor a, tg_tensor mask, double value);

/* ---------------------------------------------------------------------------------------------
 * Defining ops. Built-in ops are registered through exactly this API.
 *
 * An op is a descriptor: a shape/attribute check (the only step that may fail), a forward kernel
 * (no failure, no allocation) and a backward rule, either
 *   - composite: written with tapegrad ops, so the gradient is differentiable again; or
 *   - kernel: a C function adding into the input gradients; first order only (differentiating
 *     through it fails with TG_FIRST_ORDER, never a wrong number).
 * An op with neither rule may be registered; a gradient through it fails with TG_NO_BACKWARD.
 */

/* A tensor as kernels see it: contiguous row-major data plus its metadata. Filled by the engine;
 * read-only for ops except `data` of an output, which the forward kernel fills. */
typedef struct tg_view {
    void *data;
    int64_t numel;
    tg_dtype dtype;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
} tg_view;

/* What a check callback sees. It validates inputs and attributes and sets out->dtype, out->ndim
 * and out->shape (numel and data are the engine's). It may ask for scratch kept for backward
 * (saved_bytes), or make the output share input `alias`'s buffer (for views such as reshape).
 * `threads` is what the forward kernel will get as tg_kernel.threads, for scratch per thread. */
typedef struct tg_check {
    int ninputs;
    const tg_view *const *in;
    const void *attr;
    tg_view *out;
    size_t saved_bytes; /* 0 by default */
    int alias;          /* -1 by default */
    char *message_;     /* engine-owned; write through tg_check_fail */
    size_t message_size_;
    int threads; /* >= 1 */
} tg_check;

/* Records why a check failed and returns `status` (return it from the check). The engine adds
 * the op name, the input shapes and the node number to the message. */
tg_status tg_check_fail(tg_check *c, tg_status status, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Helper for elementwise ops: all inputs share one dtype (f32 or f64) and broadcast together;
 * sets the output to that dtype and the broadcast shape. */
tg_status tg_check_elementwise(tg_check *c);
/* Helper: input i has a floating dtype (f32/f64). */
tg_status tg_check_float(tg_check *c, int i);

/* What a forward kernel (and a kernel backward) sees. */
typedef struct tg_kernel {
    int ninputs;
    const tg_view *const *in;
    const tg_view *out;
    const void *attr;
    void *saved;         /* saved_bytes of scratch from the check, kept until reset */
    int threads;         /* threads the kernel may use */
    void *loop_scratch_; /* engine-owned: tg_kernel_loop's storage for ops of many inputs */
} tg_kernel;

/* Broadcasting loop helper, NumPy ufunc style: walks the output of a kernel whose inputs
 * broadcast to it, calling `fn` once per contiguous run of n output elements. ptrs[i] is input
 * i's first element of the run (ptrs[ninputs] the output's); steps[i] is the byte step between
 * consecutive elements (0 for a broadcast input). Any number of inputs: for ops of more than 15
 * the engine sets aside the loop's storage when it records the op, so `k` must be the kernel
 * the engine passed (a tg_kernel built by hand works up to 15 inputs; beyond, nothing is
 * written). */
typedef void (*tg_loop_fn)(int64_t n, char *const *ptrs, const int64_t *steps, void *user);
void tg_kernel_loop(const tg_kernel *k, tg_loop_fn fn, void *user);

/* What a composite backward rule sees. It sets grad_inputs[i] (preset to none) for each input i
 * with needs_grad[i], using tapegrad ops on the same tape; a gradient may have the output's
 * broadcast shape: the engine sums it back to the input's shape. */
typedef struct tg_backward_io {
    int ninputs;
    const tg_tensor *inputs;
    tg_tensor output;
    tg_tensor grad_output;
    const void *attr;
    const void *saved;
    const bool *needs_grad;
    tg_tensor *grad_inputs;
} tg_backward_io;

/* A kernel backward adds d(loss)/d(input i) into grad_inputs[i]->data (NULL when input i needs
 * no gradient). grad_inputs[i] has input i's shape, or the output's shape for TG_OP_BROADCAST
 * ops whose input was broadcast. */
typedef void (*tg_backward_kernel_fn)(const tg_kernel *k, const tg_view *grad_output,
                                      tg_view *const *grad_inputs);

/* Op flags. */
#define TG_OP_BROADCAST                                                                            \
    1u                   /* inputs broadcast to the output (kernel backward gets out-shaped        \
                            gradient buffers for broadcast inputs) */
#define TG_OP_NONDIFF 2u /* the output never carries a gradient (comparisons, masks) */

#define TG_VARIADIC (-1) /* ninputs of an op taking one or more inputs */

typedef struct tg_op_def {
    const char *name; /* unique within a context; shown in error messages */
    int ninputs;      /* fixed count >= 1, or TG_VARIADIC */
    size_t attr_size; /* bytes of plain-data attributes copied onto the tape per call */
    unsigned flags;   /* TG_OP_* */
    tg_status (*check)(tg_check *c);
    /* Fills the output; NULL only for alias (view) ops. Not called when the output is empty
     * (its scratch is then zeroed), nor is backward_kernel for such a node. */
    void (*forward)(const tg_kernel *k);
    void (*backward)(const tg_backward_io *io); /* composite rule, or NULL */
    tg_backward_kernel_fn backward_kernel;      /* used when backward is NULL */
    /* Gradient-check cases: fills inputs (f64 tensors on tp; i64 for index inputs) and *attr
     * for case `index` and returns the number of inputs, or 0 past the last case. The
     * registry-wide gradcheck requires it of every differentiable op. */
    int (*example)(tg_tape *tp, int index, tg_tensor *inputs, void *attr);
} tg_op_def;

/* Registers a copy of `def` (the name is copied too). *out, if not NULL, receives the op, owned
 * by ctx until tg_ctx_free. Fails with TG_EXISTS on a duplicate name. */
tg_status tg_op_register(tg_ctx *ctx, const tg_op_def *def, const tg_op **out);
/* Applies a registered op to n inputs on their (common) tape; `attr` points at def->attr_size
 * bytes (may be NULL when attr_size is 0). */
tg_tensor tg_op_apply(const tg_op *op, int n, const tg_tensor *inputs, const void *attr);
/* Registry lookup and iteration (built-ins first, in registration order). */
const tg_op *tg_op_find(const tg_ctx *ctx, const char *name);
size_t tg_op_count(const tg_ctx *ctx);
const tg_op *tg_op_at(const tg_ctx *ctx, size_t index);
const tg_op_def *tg_op_def_of(const tg_op *op);
/* The op that produced t (NULL for leaves, parameters and conversions). */
const tg_op *tg_tensor_op(tg_tensor t);

/* ---------------------------------------------------------------------------------------------
 * Looking at a tape, for debugging. These read; they work on a tape in error too.
 */
/* The node number of t, as messages print it ("node 17"); 0 for none, error and stale handles. */
size_t tg_tensor_node(tg_tensor t);
/* The tensor recorded as node `node` since the last reset, or none when there is no such node
 * (node 0, past the end, NULL tape). */
tg_tensor tg_tape_tensor(tg_tape *tp, size_t node);
/* What made t (as a PyTorch tensor's grad_fn names it): its op's name ("matmul"), or "leaf"
 * (created tensors, gradient buffers), "parameter", "scalar" (tg_s_tensor) or "kernel gradient" (a
 * kernel backward's result under TG_CREATE_GRAPH); "" for an invalid handle. Owned by the context
 * or static. */
const char *tg_tensor_op_name(tg_tensor t);
/* The innermost naming scope open when t was recorded ("" when none). Valid until reset. */
const char *tg_tensor_scope(tg_tensor t);
/* The inputs t's node links to for backward: their number (0 for leaves, parameters and results
 * recorded with gradient recording off) and input i (none when out of range). */
int tg_tensor_input_count(tg_tensor t);
tg_tensor tg_tensor_input(tg_tensor t, int i);
/* The parameter t reads (tg_param_tensor), or NULL. */
tg_param *tg_tensor_param(tg_tensor t);

/* Options for tg_tape_write_dot. Zero means default. */
typedef struct tg_dot_options {
    const char *title; /* a label over the graph; NULL: none (a tape in error shows its message) */
    bool all_nodes;    /* also results recorded with gradient recording off: no edges lead in */
    bool no_scopes;    /* no clusters for naming scopes */
    bool no_backward;  /* leave out the nodes backward passes recorded (gradients) */
} tg_dot_options;
/* Writes the tensor graph recorded since the last reset to `out` as a Graphviz DOT digraph
 * (render it with `dot -Tpng`; PyTorch has no such call, torchviz's make_dot is the like): one node
 * per tensor with its op's name (from the registry, so any op), dtype and shape and node number;
 * parameters with their names; an edge from each input to the node it feeds; a cluster per naming
 * scope, nested as the scopes were; the nodes recorded by a backward pass shaded (their edges
 * appear when it ran under TG_CREATE_GRAPH). By default only nodes linked for backward and their
 * inputs are drawn. Scalar entries are not drawn. `opts` may be NULL. TG_INVALID for a NULL tape or
 * file, TG_IO when writing fails, TG_NOMEM; the message goes to tg_ctx_error (the tape's own status
 * is untouched). */
tg_status tg_tape_write_dot(tg_tape *tp, FILE *out, const tg_dot_options *opts);

/* ---------------------------------------------------------------------------------------------
 * Vector math for op kernels: the kernels the built-in ops run, over contiguous arrays of f32 or
 * f64 (the best instruction set this CPU has, chosen at run time; SLEEF's 1-ulp functions where
 * the built-ins use them). Results are bitwise those of the corresponding ops (tg_exp, ...).
 * `threads`: how many threads may share a large array (pass tg_kernel.threads; < 1 means 1).
 * An output may be the same array as an input (in place); no other overlap. A bad op or dtype,
 * n < 0 or a NULL array (when n > 0) is TG_INVALID and nothing is written.
 */
typedef enum tg_vec_op {
    /* y = f(a); b is not read */
    TG_VEC_EXP,
    TG_VEC_LOG,
    TG_VEC_LOG1P,
    TG_VEC_SQRT,
    TG_VEC_SIN,
    TG_VEC_COS,
    TG_VEC_TANH,
    TG_VEC_SIGMOID,  /* 1 / (1 + exp(-a)) */
    TG_VEC_GELU,     /* tanh approximation, as tg_gelu */
    TG_VEC_SOFTPLUS, /* log(1 + exp(a)), stable (a itself above 20), as tg_softplus */
    /* y = f(a, b) */
    TG_VEC_ADD,
    TG_VEC_SUB,
    TG_VEC_MUL,
    TG_VEC_DIV,
    TG_VEC_MAX, /* NaN if either is NaN */
    TG_VEC_MIN,
    /* the fused backward maps: a = the output's gradient g, b as said */
    TG_VEC_TANH_BACKWARD,    /* b = tanh(x):    g (1 - b^2) */
    TG_VEC_SIGMOID_BACKWARD, /* b = sigmoid(x): g b (1 - b) */
    TG_VEC_RELU_BACKWARD,    /* b = relu(x):    b > 0 ? g : 0 */
    TG_VEC_GELU_BACKWARD,    /* b = x:          g gelu'(x) */
    /* y = f(a; c) with c rounded to the element type; b is not read */
    TG_VEC_ADD_SCALAR, /* a + c */
    TG_VEC_MUL_SCALAR  /* a * c */
} tg_vec_op;
tg_status tg_vec_map(tg_vec_op op, int threads, tg_dtype dt, int64_t n, const void *a,
                     const void *b, double c, void *y);
/* Reductions of n elements on the calling thread, accumulated in double. */
typedef enum tg_vec_reduction {
    TG_VEC_SUM,    /* sum of x */
    TG_VEC_MAXALL, /* max of x; NaN if any is NaN; -inf for n = 0 */
    TG_VEC_MINALL, /* min of x; NaN if any is NaN; +inf for n = 0 */
    TG_VEC_EXP_SUM /* y = exp(x - shift) (y may be NULL: not stored); the sum of y (softmax) */
} tg_vec_reduction;
/* The reduction's value in *result (NaN on bad arguments, which give TG_INVALID). */
tg_status tg_vec_reduce(tg_vec_reduction r, tg_dtype dt, int64_t n, const void *x, double shift,
                        void *y, double *result);

/* ---------------------------------------------------------------------------------------------
 * Gradient check: analytic gradients against central finite differences in f64.
 */

/* Builds a graph from `inputs` (fresh f64 leaves on a scratch tape) and returns its output. */
typedef tg_tensor (*tg_graph_fn)(void *user, int n, const tg_tensor *inputs);

typedef struct tg_gradcheck_options {
    double eps;    /* finite-difference step; 0: 1e-6 */
    double atol;   /* 0: 1e-5 */
    double rtol;   /* 0: 1e-4 */
    uint64_t seed; /* for the random output projection */
    int order;     /* 0 or 1: first derivatives; 2: second derivatives (see tg_gradcheck) */
} tg_gradcheck_options;

typedef struct tg_gradcheck_result {
    bool passed;
    int input;       /* which input holds the worst element (-1 if none checked) */
    int64_t index;   /* its flat index */
    double analytic; /* both values there */
    double numeric;
    double error;    /* |analytic - numeric| / (atol + rtol * |numeric|): <= 1 passes */
    int64_t checked; /* elements compared */
} tg_gradcheck_result;

/* Checks d<r, f(x)>/dx for a fixed random projection r: for every element of every f64 input,
 * the analytic gradient against the central difference. With order 2 the checked function is
 * sum_i <s_i, d<r, f>/dx_i> for fixed random s_i, its gradient taken through the recorded
 * backward (TG_CREATE_GRAPH): second derivatives against differences of first derivatives. `inputs`
 * (on any tape of ctx) give the point; i64 inputs are passed through unchecked. Returns TG_OK when
 * the comparison ran (see result->passed), or the error that stopped it (the scratch tape's message
 * goes to tg_ctx_error). */
tg_status tg_gradcheck(tg_ctx *ctx, tg_graph_fn fn, void *user, int n, const tg_tensor *inputs,
                       const tg_gradcheck_options *opts, tg_gradcheck_result *result);

/* Layers, losses, optimisers, checkpoints and data. */
#include "tapegrad/nn.h"

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_H */
