/* fuzz_seeds.c — writes the seed corpora of the checkpoint and IDX targets into
 * tests/fuzz/corpus/ (run from the source root: build-fuzz/tests/fuzz/fuzz_seeds). */
#include "fuzz_common.h"

#include <zlib.h>

static void save(tg_ctx *ctx, fuzz_model *m, const char *name, size_t n, bool with_optimiser)
{
    char path[128];
    snprintf(path, sizeof path, "tests/fuzz/corpus/checkpoint/%s.safetensors", name);
    FUZZ_CHECK(tg_checkpoint_save(ctx, path, n, m->params, with_optimiser ? m->adam : NULL)
               == TG_OK);
}

static void checkpoints(void)
{
    tg_ctx *ctx = NULL;
    FUZZ_CHECK(tg_ctx_new(&ctx, NULL) == TG_OK);
    fuzz_model m;
    fuzz_model_new(ctx, &m);
    save(ctx, &m, "params", FUZZ_MODEL_PARAMS, false);
    save(ctx, &m, "adam", FUZZ_MODEL_PARAMS, true);
    save(ctx, &m, "first_two", 2, false);
    save(ctx, &m, "one", 1, false);
    tg_optim_free(m.adam);
    tg_ctx_free(ctx);
}

/* An IDX u8 file: magic 0x0000080<ndim>, big-endian dims, then the bytes. */
static size_t idx_file(uint8_t *out, int ndim, const uint32_t *dims, uint8_t fill)
{
    size_t n = 4, numel = 1;
    out[0] = out[1] = 0;
    out[2] = 8;
    out[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        for (int b = 0; b < 4; b++)
            out[n++] = (uint8_t)(dims[i] >> (24 - 8 * b));
        numel *= dims[i];
    }
    for (size_t i = 0; i < numel; i++)
        out[n++] = (uint8_t)(fill + i * 37);
    return n;
}

/* A fuzz_idx input: flags, images length, images, labels. */
static void idx_seed(const char *name, unsigned flags, uint32_t n, uint32_t h, uint32_t w)
{
    static uint8_t images[4096], labels[512], input[8192];
    size_t ni = idx_file(images, 3, (uint32_t[]){n, h, w}, 1);
    size_t nl = idx_file(labels, 1, (uint32_t[]){n}, 0);
    for (size_t i = 8; i < nl; i++)
        labels[i] %= 10;
    input[0] = (uint8_t)flags;
    for (int b = 0; b < 4; b++)
        input[1 + b] = (uint8_t)(ni >> (8 * b));
    memcpy(input + 5, images, ni);
    memcpy(input + 5 + ni, labels, nl);
    char path[128];
    snprintf(path, sizeof path, "tests/fuzz/corpus/idx/%s", name);
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f && fwrite(input, 1, 5 + ni + nl, f) == 5 + ni + nl && fclose(f) == 0);
}

int main(void)
{
    checkpoints();
    idx_seed("small", 0, 4, 3, 2);
    idx_seed("gzip", 3, 5, 2, 4);
    idx_seed("gzip_images", 1, 2, 7, 7);
    idx_seed("one", 0, 1, 1, 1);
    idx_seed("empty", 0, 0, 2, 2);
    return 0;
}
