/* fuzz_common.h — what the libFuzzer targets share: the invariant check, a bounded allocator with
 * failure injection for the context, and a scratch file to hand fuzz bytes to the file loaders. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <tapegrad.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An invariant of the error model: on failure, stop here (libFuzzer saves the input). */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);     \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

/* A failing call must say so twice: a status other than TG_OK and a non-empty message. */
static inline void fuzz_check_failure(tg_status status, const char *message)
{
    FUZZ_CHECK(status != TG_OK);
    FUZZ_CHECK(message != NULL && message[0] != '\0');
}

/* The context's allocator: refuses single blocks over `block_limit` and totals over
 * `total_limit` (so huge but valid shapes give TG_NOMEM instead of exhausting the machine), and
 * fails call number `fail_at` (0: never) to drive the error paths. */
typedef struct fuzz_memory {
    size_t in_use;
    size_t block_limit;
    size_t total_limit;
    uint64_t calls;
    uint64_t fail_at;
} fuzz_memory;

static inline void *fuzz_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    fuzz_memory *m = user;
    if (new_size == 0) {
        free(ptr);
        m->in_use -= ptr ? old_size : 0;
        return NULL;
    }
    m->calls++;
    size_t old_bytes = ptr ? old_size : 0;
    size_t after = m->in_use - old_bytes + new_size;
    if (new_size > m->block_limit || after > m->total_limit || m->calls == m->fail_at)
        return NULL;
    void *p = realloc(ptr, new_size);
    if (p)
        m->in_use = after;
    return p;
}

static inline tg_ctx *fuzz_ctx_new(fuzz_memory *m, uint64_t fail_at)
{
    *m = (fuzz_memory){.block_limit = (size_t)64 << 20, .total_limit = (size_t)256 << 20};
    tg_ctx_options opts = {.alloc = fuzz_alloc, .alloc_user = m, .threads = 1};
    tg_ctx *ctx = NULL;
    FUZZ_CHECK(tg_ctx_new(&ctx, &opts) == TG_OK && ctx != NULL);
    m->fail_at = fail_at;
    return ctx;
}

/* Scratch files of this process (which: 0 or 1), rewritten with each input. */
static inline const char *fuzz_scratch_path(int which)
{
    static char paths[2][64];
    char *path = paths[which & 1];
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof paths[0], "%s/tg-fuzz-%ld-%d", dir, (long)getpid(), which & 1);
    }
    return path;
}

static inline const char *fuzz_scratch_write(int which, const void *data, size_t size)
{
    const char *path = fuzz_scratch_path(which);
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    FUZZ_CHECK(fclose(f) == 0);
    return path;
}

static inline void fuzz_scratch_remove(void)
{
    unlink(fuzz_scratch_path(0));
    unlink(fuzz_scratch_path(1));
}

/* The model the checkpoint target loads into (and tests/fuzz/fuzz_seeds.c saves): three
 * parameters of two dtypes, one of them 0-d, and an Adam optimiser over them. */
#define FUZZ_MODEL_PARAMS 3

typedef struct fuzz_model {
    tg_param *params[FUZZ_MODEL_PARAMS];
    tg_optim *adam;
} fuzz_model;

static inline void fuzz_model_new(tg_ctx *ctx, fuzz_model *m)
{
    FUZZ_CHECK(tg_param_new(ctx, "fc.weight", TG_F32, 2, (int64_t[]){2, 3}, &m->params[0])
               == TG_OK);
    FUZZ_CHECK(tg_param_new(ctx, "fc.bias", TG_F64, 1, (int64_t[]){3}, &m->params[1]) == TG_OK);
    FUZZ_CHECK(tg_param_new(ctx, "scale", TG_F64, 0, NULL, &m->params[2]) == TG_OK);
    for (int i = 0; i < FUZZ_MODEL_PARAMS; i++)
        FUZZ_CHECK(tg_param_uniform(m->params[i], -1.0, 1.0, 7u + (uint64_t)i) == TG_OK);
    tg_adam_options options = TG_ADAM_DEFAULTS;
    FUZZ_CHECK(tg_adam_new(ctx, FUZZ_MODEL_PARAMS, m->params, &options, &m->adam) == TG_OK);
    size_t count = tg_optim_state_count(m->adam);
    for (size_t i = 0; i < count; i++) {
        tg_param *p = NULL;
        void *data = NULL;
        FUZZ_CHECK(tg_optim_state_info(m->adam, i, NULL, &p, &data) == TG_OK);
        size_t bytes = (size_t)tg_param_numel(p) * tg_dtype_size(tg_param_dtype(p));
        memset(data, (int)(0x11 * (i + 1)), bytes);
    }
    tg_optim_set_steps(m->adam, 5);
}

#endif /* FUZZ_COMMON_H */
