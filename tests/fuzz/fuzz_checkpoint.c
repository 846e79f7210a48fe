/* fuzz_checkpoint.c — libFuzzer target for tg_checkpoint_load: the input is the file. It is
 * loaded into a fixed model three ways (parameters only; parameters and Adam state; the same with
 * one allocation failing). A load that fails must return a status and a message and leave every
 * parameter value, gradient, version and optimiser buffer, step count and lr as they were. */
#include "fuzz_common.h"

/* Everything a load may change, copied. */
typedef struct snapshot {
    unsigned char values[FUZZ_MODEL_PARAMS][64];
    unsigned char grads[FUZZ_MODEL_PARAMS][64];
    uint64_t versions[FUZZ_MODEL_PARAMS];
    unsigned char state[16][64];
    size_t state_count;
    int64_t steps;
    double lr;
} snapshot;

static size_t param_bytes(const tg_param *p)
{
    return (size_t)tg_param_numel(p) * tg_dtype_size(tg_param_dtype(p));
}

static void take(const fuzz_model *m, snapshot *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < FUZZ_MODEL_PARAMS; i++) {
        tg_param *p = m->params[i];
        FUZZ_CHECK(param_bytes(p) <= sizeof s->values[i]);
        memcpy(s->values[i], tg_param_data(p), param_bytes(p));
        memcpy(s->grads[i], tg_param_grad(p), param_bytes(p));
        s->versions[i] = tg_param_version(p);
    }
    s->state_count = tg_optim_state_count(m->adam);
    FUZZ_CHECK(s->state_count <= 16);
    for (size_t i = 0; i < s->state_count; i++) {
        tg_param *p = NULL;
        void *data = NULL;
        FUZZ_CHECK(tg_optim_state_info(m->adam, i, NULL, &p, &data) == TG_OK);
        memcpy(s->state[i], data, param_bytes(p));
    }
    s->steps = tg_optim_steps(m->adam);
    s->lr = tg_optim_lr(m->adam);
}

static bool same(const snapshot *a, const snapshot *b) { return memcmp(a, b, sizeof *a) == 0; }

/* One load; on failure checks the error model and that nothing moved. */
static void load_once(tg_ctx *ctx, fuzz_model *m, const char *path, bool with_optimiser)
{
    snapshot before, after;
    take(m, &before);
    tg_status st = tg_checkpoint_load(ctx, path, FUZZ_MODEL_PARAMS, m->params,
                                      with_optimiser ? m->adam : NULL);
    if (st == TG_OK) {
        FUZZ_CHECK(tg_optim_steps(m->adam) >= 0 && tg_optim_steps(m->adam) <= TG_OPTIM_MAX_STEPS);
        return;
    }
    fuzz_check_failure(st, tg_ctx_error(ctx));
    take(m, &after);
    FUZZ_CHECK(same(&before, &after));
}

static uint64_t hash_bytes(const uint8_t *data, size_t size)
{
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211u;
    return h;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    atexit(fuzz_scratch_remove);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_scratch_write(0, data, size);
    for (int round = 0; round < 3; round++) {
        fuzz_memory memory;
        uint64_t fail_at = round == 2 ? 1 + hash_bytes(data, size) % 24 : 0;
        tg_ctx *ctx = fuzz_ctx_new(&memory, 0);
        fuzz_model model;
        fuzz_model_new(ctx, &model);
        memory.fail_at = fail_at ? memory.calls + fail_at : 0;
        load_once(ctx, &model, path, round > 0);
        tg_optim_free(model.adam);
        tg_ctx_free(ctx);
        FUZZ_CHECK(memory.in_use == 0);
    }
    return 0;
}
