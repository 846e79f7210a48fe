/* test_threads.c — tapes of one context trained in several threads at once (equal to a serial
 * run), contexts in several threads saving and loading checkpoints, per-thread context messages,
 * the allocator count under concurrency (CI runs this program under ThreadSanitizer), and
 * messages too long for their buffer, which must keep their beginning and their errno text. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#define TMPDIR_TEMPLATE "/tmp/tg_threads_XXXXXX"
#include "common.h"
#include "files.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#define WORKERS 4

/* ---- helpers ----------------------------------------------------------------------------- */

/* What a worker reports: cmocka's assertions must run on the main thread. */
typedef struct outcome {
    char error[512]; /* "" when the worker succeeded */
} outcome;

static void report(outcome *o, const char *what, const char *detail)
{
    if (!o->error[0])
        snprintf(o->error, sizeof o->error, "%s: %s", what, detail);
}

/* Runs fn(args[i]) on `n` threads at once and joins them. */
static void run_workers(int n, void *(*fn)(void *), void *args, size_t arg_size)
{
    pthread_t threads[WORKERS];
    assert_true(n <= WORKERS);
    for (int i = 0; i < n; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, fn, (char *)args + (size_t)i * arg_size),
                         0);
    for (int i = 0; i < n; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
}

/* A thread-safe counting allocator (realloc/free underneath). */
static void *atomic_counting_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    (void)old_size;
    atomic_fetch_add_explicit((_Atomic uint64_t *)user, 1, memory_order_relaxed);
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, new_size);
}

/* Whether s ends with tail. */
static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

#define assert_ends_with(s, tail)                                                                  \
    do {                                                                                           \
        if (!ends_with((s), (tail)))                                                               \
            fail_msg("message \"%s\" does not end with \"%s\"", (s), (tail));                      \
    } while (0)

/* ---- several tapes of one context training at once ----------------------------------------- */

#define IN 8
#define HIDDEN 16
#define OUT 4
#define BATCH 16
#define STEPS 25

/* One model: Linear(IN, HIDDEN), tanh, Linear(HIDDEN, OUT), with Adam; its data. */
typedef struct trainer {
    tg_ctx *ctx;
    tg_param *shared; /* [IN] input scale, read by every trainer, never written */
    tg_module *net;
    tg_optim *opt;
    bool set_threads; /* also calls tg_ctx_set_threads every step */
    float x[BATCH][IN], y[BATCH][OUT];
    double loss;
    outcome out;
} trainer;

static void trainer_make(trainer *t, tg_ctx *ctx, tg_param *shared, const char *name, int data)
{
    memset(t, 0, sizeof *t);
    t->ctx = ctx;
    t->shared = shared;
    tg_module *layers[3];
    tg_linear_options l1 = {.seed = 11}, l2 = {.seed = 12};
    char n1[32], n2[32];
    snprintf(n1, sizeof n1, "%s.in", name);
    snprintf(n2, sizeof n2, "%s.out", name);
    assert_status(tg_linear_new(ctx, n1, IN, HIDDEN, &l1, &layers[0]), TG_OK);
    assert_status(tg_activation_new(ctx, TG_ACT_TANH, &layers[1]), TG_OK);
    assert_status(tg_linear_new(ctx, n2, HIDDEN, OUT, &l2, &layers[2]), TG_OK);
    assert_status(tg_sequential_new(ctx, name, 3, layers, &t->net), TG_OK);
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    ao.lr = 0.01;
    assert_status(
        tg_adam_new(ctx, tg_module_param_count(t->net), tg_module_params(t->net), &ao, &t->opt),
        TG_OK);
    for (int b = 0; b < BATCH; b++) {
        for (int i = 0; i < IN; i++)
            t->x[b][i] = (float)sin(0.3 * (b + 1) * (i + 1) + data);
        for (int o = 0; o < OUT; o++)
            t->y[b][o] = (float)cos(0.2 * (b + 1) + 0.7 * o * (data + 1));
    }
}

static void trainer_free(trainer *t)
{
    tg_optim_free(t->opt);
    tg_module_free(t->net);
}

/* One step on tp; false (with the reason in t->out) on failure. */
static bool train_step(trainer *t, tg_tape *tp)
{
    tg_tensor x = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){BATCH, IN}, t->x);
    tg_tensor y = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){BATCH, OUT}, t->y);
    bool was = tg_tape_set_grad(tp, false); /* the shared parameter gets no gradient */
    tg_tensor scaled = tg_mul(x, tg_param_tensor(tp, t->shared));
    tg_tape_set_grad(tp, was);
    tg_tensor loss = tg_mse_loss(tg_forward(t->net, scaled), y, TG_REDUCE_MEAN);
    if (tg_backward(loss) != TG_OK || tg_optim_step(t->opt, tp) != TG_OK) {
        report(&t->out, "step", tg_tape_error(tp));
        return false;
    }
    t->loss = tg_item(loss);
    tg_optim_zero_grad(t->opt);
    tg_tape_reset(tp);
    return true;
}

static void *train(void *arg)
{
    trainer *t = arg;
    tg_tape *tp;
    if (tg_tape_new(t->ctx, &tp) != TG_OK) {
        report(&t->out, "tg_tape_new", tg_ctx_error(t->ctx));
        return NULL;
    }
    for (int s = 0; s < STEPS && train_step(t, tp); s++)
        if (t->set_threads && tg_ctx_set_threads(t->ctx, 1) != TG_OK)
            report(&t->out, "tg_ctx_set_threads", tg_ctx_error(t->ctx));
    tg_tape_free(tp);
    return NULL;
}

/* The parameters of two trainers hold the same bits. */
static void assert_same_params(const trainer *a, const trainer *b)
{
    size_t n = tg_module_param_count(a->net);
    assert_int_equal(n, tg_module_param_count(b->net));
    for (size_t i = 0; i < n; i++) {
        tg_param *p = tg_module_params(a->net)[i], *q = tg_module_params(b->net)[i];
        size_t bytes = (size_t)tg_param_numel(p) * tg_dtype_size(tg_param_dtype(p));
        if (memcmp(tg_param_data(p), tg_param_data(q), bytes) != 0)
            fail_msg("%s differs from %s", tg_param_name(p), tg_param_name(q));
    }
}

/* WORKERS tapes of one context, each training its own model in its own thread (all reading one
 * shared parameter), end with the parameters and losses of the same training run serially; the
 * context's count of allocator calls matches the (thread-safe) hook's. */
static void parallel_training_matches_serial(void **state)
{
    (void)state;
    _Atomic uint64_t calls = 0;
    tg_ctx_options o = {.alloc = atomic_counting_alloc, .alloc_user = (void *)&calls};
    tg_ctx *ctx;
    assert_status(tg_ctx_new(&ctx, &o), TG_OK);
    tg_param *shared;
    assert_status(tg_param_new(ctx, "shared", TG_F32, 1, (int64_t[]){IN}, &shared), TG_OK);
    assert_status(tg_param_uniform(shared, 0.5, 1.5, 7), TG_OK);
    static trainer serial[WORKERS], parallel[WORKERS];
    char name[32];
    for (int i = 0; i < WORKERS; i++) {
        snprintf(name, sizeof name, "serial%d", i);
        trainer_make(&serial[i], ctx, shared, name, i);
        snprintf(name, sizeof name, "parallel%d", i);
        trainer_make(&parallel[i], ctx, shared, name, i);
    }
    parallel[0].set_threads = true;
    for (int i = 0; i < WORKERS; i++)
        train(&serial[i]);
    run_workers(WORKERS, train, parallel, sizeof *parallel);
    for (int i = 0; i < WORKERS; i++) {
        assert_string_equal(serial[i].out.error, "");
        assert_string_equal(parallel[i].out.error, "");
        assert_true(serial[i].loss == parallel[i].loss);
        assert_same_params(&serial[i], &parallel[i]);
    }
    assert_true(serial[0].loss != serial[1].loss); /* the workers really did different work */
    assert_int_equal(tg_ctx_alloc_calls(ctx), atomic_load(&calls));
    for (int i = 0; i < WORKERS; i++) {
        trainer_free(&serial[i]);
        trainer_free(&parallel[i]);
    }
    tg_ctx_free(ctx);
}

/* ---- the allocator count and the context's messages under concurrency ---------------------- */

#define ALLOCS 20000
#define MESSAGES 2000

typedef struct worker {
    tg_ctx *ctx;
    int id;
    tg_optim *opt;
    outcome out;
} worker;

static void *allocate_many(void *arg)
{
    worker *w = arg;
    for (int k = 0; k < ALLOCS; k++) {
        size_t size = 16 + (size_t)(k % 64);
        void *p = tg_alloc(w->ctx, size);
        if (!p) {
            report(&w->out, "tg_alloc", "NULL");
            return NULL;
        }
        tg_free(w->ctx, p, size);
        if (k % 1000 == 0) {
            tg_tape *tp;
            if (tg_tape_new(w->ctx, &tp) != TG_OK) {
                report(&w->out, "tg_tape_new", tg_ctx_error(w->ctx));
                return NULL;
            }
            tg_full(tp, TG_F64, 1, (int64_t[]){100000}, 1.0); /* grows the arena */
            tg_tape_free(tp);
        }
    }
    return NULL;
}

/* Every call to the hook is counted, from every thread. */
static void alloc_calls_are_counted_from_every_thread(void **state)
{
    (void)state;
    _Atomic uint64_t calls = 0;
    tg_ctx_options o = {.alloc = atomic_counting_alloc, .alloc_user = (void *)&calls};
    tg_ctx *ctx;
    assert_status(tg_ctx_new(&ctx, &o), TG_OK);
    worker w[WORKERS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < WORKERS; i++)
        w[i].ctx = ctx;
    uint64_t before = tg_ctx_alloc_calls(ctx);
    run_workers(WORKERS, allocate_many, w, sizeof *w);
    for (int i = 0; i < WORKERS; i++)
        assert_string_equal(w[i].out.error, "");
    assert_int_equal(tg_ctx_alloc_calls(ctx), atomic_load(&calls));
    assert_true(tg_ctx_alloc_calls(ctx) - before >= (uint64_t)WORKERS * ALLOCS * 2);
    tg_ctx_free(ctx);
}

static void *fail_many(void *arg)
{
    worker *w = arg;
    char want[64];
    for (int k = 0; k < MESSAGES; k++) {
        snprintf(want, sizeof want, "worker %d, message %d", w->id, k);
        if (tg_ctx_fail(w->ctx, TG_INVALID, "worker %d, message %d", w->id, k) != TG_INVALID)
            report(&w->out, "tg_ctx_fail", "wrong status");
        if (strcmp(tg_ctx_error(w->ctx), want) != 0)
            report(&w->out, want, tg_ctx_error(w->ctx));
        tg_optim_set_lr(w->opt, -1.0); /* a failure of the library's own */
        if (!strstr(tg_ctx_error(w->ctx), "invalid learning rate"))
            report(&w->out, "tg_optim_set_lr", tg_ctx_error(w->ctx));
    }
    return NULL;
}

/* Threads failing context-level calls on one context each read their own message; the main
 * thread's message is untouched by theirs. */
static void context_messages_are_per_thread(void **state)
{
    (void)state;
    tg_ctx *ctx;
    assert_status(tg_ctx_new(&ctx, NULL), TG_OK);
    worker w[WORKERS];
    memset(w, 0, sizeof w);
    tg_param *p[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", i);
        assert_status(tg_param_new(ctx, name, TG_F32, 1, (int64_t[]){4}, &p[i]), TG_OK);
        assert_status(tg_sgd_new(ctx, 1, &p[i], NULL, &w[i].opt), TG_OK);
        w[i].ctx = ctx;
        w[i].id = i;
    }
    assert_string_equal(tg_ctx_error(ctx), "");
    tg_ctx_fail(ctx, TG_IO, "the main thread's message");
    run_workers(WORKERS, fail_many, w, sizeof *w);
    for (int i = 0; i < WORKERS; i++) {
        assert_string_equal(w[i].out.error, "");
        tg_optim_free(w[i].opt);
    }
    assert_string_equal(tg_ctx_error(ctx), "the main thread's message");
    tg_ctx_free(ctx);
}

/* A hook that refuses every allocation while *user (an atomic flag) is set. */
static void *refusing_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    (void)old_size;
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    return atomic_load((_Atomic bool *)user) ? NULL : realloc(ptr, new_size);
}

static void *fail_without_memory(void *arg)
{
    worker *w = arg;
    if (tg_ctx_fail(w->ctx, TG_IO, "lost for want of memory") != TG_IO)
        report(&w->out, "tg_ctx_fail", "wrong status");
    if (!strstr(tg_ctx_error(w->ctx), "out of memory for a thread's message"))
        report(&w->out, "tg_ctx_error", tg_ctx_error(w->ctx));
    return NULL;
}

/* A thread whose message slot cannot be allocated still gets its status, and tg_ctx_error says
 * that the message was lost (never another thread's text). */
static void message_without_memory_says_so(void **state)
{
    (void)state;
    _Atomic bool refuse = false;
    tg_ctx_options o = {.alloc = refusing_alloc, .alloc_user = (void *)&refuse};
    tg_ctx *ctx;
    assert_status(tg_ctx_new(&ctx, &o), TG_OK);
    tg_ctx_fail(ctx, TG_IO, "the main thread's message");
    atomic_store(&refuse, true);
    worker w = {.ctx = ctx};
    run_workers(1, fail_without_memory, &w, sizeof w);
    atomic_store(&refuse, false);
    assert_string_equal(w.out.error, "");
    assert_string_equal(tg_ctx_error(ctx), "the main thread's message");
    tg_ctx_free(ctx);
}

/* ---- one context per thread: checkpoint round trips ---------------------------------------- */

#define CYCLES 8

typedef struct saver {
    int id;
    outcome out;
} saver;

/* Bytes of buffer i of the snapshot: the parameters' values, then the optimiser's state. */
static const void *snapshot_part(tg_module *net, tg_optim *opt, size_t i, size_t *bytes)
{
    size_t n = tg_module_param_count(net);
    tg_param *p = NULL;
    void *state = NULL;
    if (i < n)
        p = tg_module_params(net)[i];
    else
        tg_optim_state_info(opt, i - n, NULL, &p, &state);
    *bytes = (size_t)tg_param_numel(p) * tg_dtype_size(tg_param_dtype(p));
    return i < n ? tg_param_data(p) : state;
}

/* The parameters' values, the optimiser's state and its step count as bytes (malloc'd). */
static unsigned char *snapshot(tg_module *net, tg_optim *opt, size_t *size)
{
    size_t parts = tg_module_param_count(net) + tg_optim_state_count(opt), total = 0, bytes;
    for (size_t i = 0; i < parts; i++) {
        snapshot_part(net, opt, i, &bytes);
        total += bytes;
    }
    int64_t steps = tg_optim_steps(opt);
    unsigned char *b = malloc(total + sizeof steps), *at = b;
    for (size_t i = 0; b && i < parts; i++) {
        const void *data = snapshot_part(net, opt, i, &bytes);
        memcpy(at, data, bytes);
        at += bytes;
    }
    if (b)
        memcpy(at, &steps, sizeof steps);
    *size = total + sizeof steps;
    return b;
}

/* Saves, scrambles, loads and compares, CYCLES times, training a step in between. */
static void save_load_cycles(saver *s, tg_ctx *ctx, tg_tape *tp, tg_module *net, tg_optim *opt)
{
    char path[128];
    snprintf(path, sizeof path, "%s/worker%d.safetensors", tmp_dir, s->id);
    size_t n = tg_module_param_count(net);
    tg_param *const *params = tg_module_params(net);
    float x[4][IN] = {{0}}, y[4][OUT] = {{0}};
    for (int c = 0; c < CYCLES && !s->out.error[0]; c++) {
        x[c % 4][c % IN] = (float)(s->id + c);
        tg_tensor loss =
            tg_mse_loss(tg_forward(net, tg_tensor_from(tp, TG_F32, 2, (int64_t[]){4, IN}, x)),
                        tg_tensor_from(tp, TG_F32, 2, (int64_t[]){4, OUT}, y), TG_REDUCE_SUM);
        if (tg_backward(loss) != TG_OK || tg_optim_step(opt, tp) != TG_OK)
            report(&s->out, "step", tg_tape_error(tp));
        tg_optim_zero_grad(opt);
        tg_tape_reset(tp);
        size_t size_saved, size_loaded;
        unsigned char *saved = snapshot(net, opt, &size_saved);
        if (tg_checkpoint_save(ctx, path, n, params, opt) != TG_OK)
            report(&s->out, "tg_checkpoint_save", tg_ctx_error(ctx));
        for (size_t i = 0; i < n; i++)
            tg_param_fill(params[i], -1.0);
        tg_optim_set_steps(opt, 1000);
        if (tg_checkpoint_load(ctx, path, n, params, opt) != TG_OK)
            report(&s->out, "tg_checkpoint_load", tg_ctx_error(ctx));
        unsigned char *loaded = snapshot(net, opt, &size_loaded);
        if (!saved || !loaded || size_saved != size_loaded
            || memcmp(saved, loaded, size_saved) != 0)
            report(&s->out, path, "the loaded state differs from the saved one");
        free(saved);
        free(loaded);
    }
}

static void *checkpoint_worker(void *arg)
{
    saver *s = arg;
    tg_ctx *ctx = NULL;
    tg_tape *tp = NULL;
    tg_module *net = NULL;
    tg_optim *opt = NULL;
    tg_linear_options lo = {.seed = (uint64_t)s->id + 1};
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    if (tg_ctx_new(&ctx, NULL) != TG_OK || tg_tape_new(ctx, &tp) != TG_OK
        || tg_linear_new(ctx, "fc", IN, OUT, &lo, &net) != TG_OK
        || tg_adam_new(ctx, tg_module_param_count(net), tg_module_params(net), &ao, &opt) != TG_OK)
        report(&s->out, "setup", ctx ? tg_ctx_error(ctx) : "tg_ctx_new");
    else
        save_load_cycles(s, ctx, tp, net, opt);
    tg_optim_free(opt);
    tg_module_free(net);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return NULL;
}

/* One context per thread, each saving and loading its own checkpoint file. */
static void checkpoints_in_parallel_contexts(void **state)
{
    (void)state;
    saver s[WORKERS];
    memset(s, 0, sizeof s);
    for (int i = 0; i < WORKERS; i++)
        s[i].id = i;
    run_workers(WORKERS, checkpoint_worker, s, sizeof *s);
    for (int i = 0; i < WORKERS; i++)
        assert_string_equal(s[i].out.error, "");
}

/* ---- messages longer than their buffer ---------------------------------------------------- */

/* tmp_dir/d000_.../d0NN_.../missing.safetensors, `length` bytes or a little more, none of it
 * existing (malloc'd). */
static char *long_path(size_t length)
{
    char *p = malloc(length + 128);
    assert_non_null(p);
    size_t at = (size_t)snprintf(p, length + 128, "%s", tmp_dir);
    for (int i = 0; at < length; i++)
        at += (size_t)snprintf(p + at, length + 128 - at, "/d%03d_%s", i,
                               "a-directory-that-is-not-there");
    snprintf(p + at, length + 128 - at, "/missing.safetensors");
    return p;
}

/* The errno text fopen gives for path. */
static const char *open_error(const char *path)
{
    errno = 0;
    FILE *f = fopen(path, "rb");
    assert_null(f);
    return strerror(errno);
}

/* A checkpoint load of a path of about `length` bytes that does not exist: the message names
 * the function and the path's beginning and file name, and ends with the errno text. */
static void check_load_message(size_t length)
{
    tg_ctx *ctx;
    tg_param *p;
    assert_status(tg_ctx_new(&ctx, NULL), TG_OK);
    assert_status(tg_param_new(ctx, "w", TG_F32, 1, (int64_t[]){2}, &p), TG_OK);
    char *path = long_path(length);
    char errno_text[256];
    snprintf(errno_text, sizeof errno_text, ": %s", open_error(path));
    assert_status(tg_checkpoint_load(ctx, path, 1, &p, NULL), TG_IO);
    const char *msg = tg_ctx_error(ctx);
    assert_ends_with(msg, errno_text);
    assert_contains(msg, "missing.safetensors");
    char head[128];
    snprintf(head, sizeof head, "tg_checkpoint_load(%s/d000_", tmp_dir);
    assert_true(strncmp(msg, head, strlen(head)) == 0);
    assert_true(strlen(msg) < 4096);
    free(path);
    tg_ctx_free(ctx);
}

/* 600 bytes: more than the old 512-byte buffer (ENOENT). */
static void load_message_keeps_errno_text(void **state)
{
    (void)state;
    check_load_message(600);
}

/* 10000 bytes: more than any message buffer (ENAMETOOLONG, past PATH_MAX). */
static void load_message_of_huge_path_keeps_errno_text(void **state)
{
    (void)state;
    check_load_message(10000);
}

/* A save into a long missing directory: the action ("cannot create the temporary file") and the
 * errno text both survive, however long the path. */
static void save_message_keeps_action_and_errno_text(void **state)
{
    (void)state;
    size_t lengths[] = {600, 3000, 10000};
    for (size_t k = 0; k < sizeof lengths / sizeof *lengths; k++) {
        tg_ctx *ctx;
        tg_param *p;
        assert_status(tg_ctx_new(&ctx, NULL), TG_OK);
        assert_status(tg_param_new(ctx, "w", TG_F32, 1, (int64_t[]){2}, &p), TG_OK);
        char *path = long_path(lengths[k]);
        char errno_text[256];
        snprintf(errno_text, sizeof errno_text, ": %s", open_error(path));
        assert_status(tg_checkpoint_save(ctx, path, 1, &p, NULL), TG_IO);
        const char *msg = tg_ctx_error(ctx);
        assert_ends_with(msg, errno_text);
        assert_contains(msg, "tg_checkpoint_save(");
        assert_contains(msg, "): cannot create the temporary file ");
        free(path);
        tg_ctx_free(ctx);
    }
}

/* Whether s is well-formed UTF-8 (no sequence cut in two). */
static bool valid_utf8(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int extra = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : -1;
        if (extra < 0)
            return false;
        p++;
        for (int i = 0; i < extra; i++, p++)
            if ((*p & 0xC0) != 0x80)
                return false;
    }
    return true;
}

/* Messages over the buffer on a tape and on a context: one long argument is shortened in the
 * middle; many arguments together keep the beginning and the end; UTF-8 is never cut. */
static void long_messages_keep_both_ends(void **state)
{
    fixture *f = *state;
    size_t big = 9000;
    char *a = malloc(big + 1), *e = malloc(2 * big + 1);
    assert_non_null(a);
    assert_non_null(e);
    memset(a, 'a', big);
    a[0] = '<';
    a[big - 1] = '>';
    a[big] = '\0';
    for (size_t i = 0; i < big; i++)
        memcpy(e + 2 * i, "\xc3\xa9", 2); /* U+00E9, two bytes */
    e[2 * big] = '\0';

    tg_tape_fail(f->tp, TG_IO, "op(%s): %s", a, strerror(ENOENT));
    const char *msg = tg_tape_error(f->tp);
    assert_true(strncmp(msg, "op(<aaa", 7) == 0);
    assert_contains(msg, "aaa...aaa");
    assert_contains(msg, "aaa>): ");
    assert_ends_with(msg, strerror(ENOENT));

    tg_ctx_fail(f->ctx, TG_IO, "first %s %s %s %s %s %s last", "x", e, a, e, a, e);
    msg = tg_ctx_error(f->ctx);
    assert_true(strncmp(msg, "first x \xc3\xa9", 10) == 0);
    assert_ends_with(msg, "\xc3\xa9 last");
    assert_true(strlen(msg) < 4096);
    assert_true(valid_utf8(msg));

    tg_ctx_fail(f->ctx, TG_IO, "%.5s|%-3s|%*s|%s", a, "b", 4, "c", e + 1); /* e + 1: cut UTF-8 */
    msg = tg_ctx_error(f->ctx);
    assert_true(strncmp(msg, "<aaaa|b  |   c|", 15) == 0);
    free(a);
    free(e);
}

/* Short messages come out exactly as snprintf formats them, for every kind of directive. */
#define CHECK_FORMAT(...)                                                                          \
    do {                                                                                           \
        char want_[512];                                                                           \
        snprintf(want_, sizeof want_, __VA_ARGS__);                                                \
        tg_tape_reset(f->tp);                                                                      \
        tg_tape_fail(f->tp, TG_INVALID, __VA_ARGS__);                                              \
        assert_string_equal(tg_tape_error(f->tp), want_);                                          \
        tg_ctx_fail(f->ctx, TG_INVALID, __VA_ARGS__);                                              \
        assert_string_equal(tg_ctx_error(f->ctx), want_);                                          \
    } while (0)

static void messages_format_as_snprintf(void **state)
{
    fixture *f = *state;
    int x = 42;
    CHECK_FORMAT("plain text, no directive");
    CHECK_FORMAT("%d %5d %-5d| %+d % d %05d %i", -7, 3, 4, 5, 6, -8, 9);
    CHECK_FORMAT("%lld %llu %ld %lu %hd %hhu %jd %zu %zx %td", -1234567890123LL,
                 18446744073709551615ULL, -5L, 6UL, (short)-3, (unsigned char)250, (intmax_t)-9,
                 (size_t)77, (size_t)255, (ptrdiff_t)-4);
    CHECK_FORMAT("%u %x %X %08x %#x %o %#o", 1u, 0xbeefu, 0xbeefu, 0x12u, 0x12u, 8u, 8u);
    CHECK_FORMAT("%g %e %f %.3f %10.4f %-10.2e| %G %a %Lg", 1.5, 1e-300, 3.25, 2.0 / 3, 3.14159,
                 12345.678, 1e20, 0.5, (long double)2.5);
    CHECK_FORMAT("%c%c %% %s %-6s| %6s %.2s %*d %-*d| %.*f %*.*f", 'o', 'k', "str", "ab", "cd",
                 "xyz", 5, 1, 3, 2, 2, 1.0 / 3, 8, 3, 2.5);
    CHECK_FORMAT("%s %s", "", (const char *)"tail");
    CHECK_FORMAT("%p", (void *)&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parallel_training_matches_serial),
        cmocka_unit_test(alloc_calls_are_counted_from_every_thread),
        cmocka_unit_test(context_messages_are_per_thread),
        cmocka_unit_test(message_without_memory_says_so),
        TMPDIR_TEST(checkpoints_in_parallel_contexts),
        TMPDIR_TEST(load_message_keeps_errno_text),
        TMPDIR_TEST(load_message_of_huge_path_keeps_errno_text),
        TMPDIR_TEST(save_message_keeps_action_and_errno_text),
        cmocka_unit_test_setup_teardown(long_messages_keep_both_ends, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(messages_format_as_snprintf, fixture_setup,
                                        fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
