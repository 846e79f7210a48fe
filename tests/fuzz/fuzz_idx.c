/* fuzz_idx.c — libFuzzer target for tg_dataset_load_idx. Input layout:
 *   byte 0        flags: bit 0 gzip the images file, bit 1 gzip the labels file,
 *                 bits 4-7 which allocation to fail (0: none)
 *   bytes 1-4     length L of the images file, little-endian (clamped to what follows)
 *   L bytes       the images file (IDX u8 [N, H, W]), then the rest: the labels file.
 * A failed load must give a status, a message and no dataset; a loaded one must be consistent
 * (shape, classes, labels in range) and iterate in batches onto a tape. */
#include "fuzz_common.h"

#include <stdint.h>
#include <zlib.h>

static void write_file(int which, const uint8_t *data, size_t size, bool gzip)
{
    const char *path = fuzz_scratch_write(which, data, size);
    if (!gzip)
        return;
    gzFile gz = gzopen(path, "wb");
    FUZZ_CHECK(gz != NULL);
    FUZZ_CHECK(size == 0 || gzwrite(gz, data, (unsigned)size) == (int)size);
    FUZZ_CHECK(gzclose(gz) == Z_OK);
}

/* Reads every batch of the dataset once and checks what comes out. */
static void iterate(tg_ctx *ctx, const tg_dataset *d, int64_t batch, bool shuffle)
{
    tg_tape *tp = NULL;
    FUZZ_CHECK(tg_tape_new(ctx, &tp) == TG_OK);
    tg_batches *b = NULL;
    tg_status st = tg_batches_new(d, batch, shuffle, 3, batch > 2, &b);
    if (st != TG_OK) {
        fuzz_check_failure(st, tg_ctx_error(ctx));
        tg_tape_free(tp);
        return;
    }
    int64_t count = tg_batches_start(b, 1);
    FUZZ_CHECK(count >= 0);
    tg_tensor x, labels;
    int64_t seen = 0;
    while (seen < 64 && tg_batches_next(b, tp, &x, &labels)) {
        FUZZ_CHECK(tg_ok(x) && tg_ok(labels));
        FUZZ_CHECK(tg_tensor_dtype(labels) == TG_I64 && tg_ndim(labels) == 1);
        FUZZ_CHECK(tg_dim(x, 0) == tg_dim(labels, 0));
        const int64_t *l = tg_data(labels);
        for (int64_t i = 0; i < tg_numel(labels); i++)
            FUZZ_CHECK(l[i] >= 0 && l[i] < tg_dataset_classes(d));
        seen++;
        tg_tape_reset(tp);
    }
    FUZZ_CHECK(seen == 64 || seen == count || tg_tape_status(tp) != TG_OK);
    tg_batches_free(b);
    tg_tape_free(tp);
}

static void check_dataset(tg_ctx *ctx, const tg_dataset *d)
{
    FUZZ_CHECK(tg_dataset_size(d) >= 0);
    FUZZ_CHECK(tg_dataset_sample_ndim(d) == 2);
    const int64_t *shape = tg_dataset_sample_shape(d);
    FUZZ_CHECK(shape != NULL && shape[0] > 0 && shape[1] > 0);
    FUZZ_CHECK(tg_dataset_classes(d) >= 0 && tg_dataset_classes(d) <= 256);
    iterate(ctx, d, 1, false);
    iterate(ctx, d, 3, true);
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
    if (size < 5)
        return 0;
    unsigned flags = data[0];
    size_t images =
        (size_t)data[1] | (size_t)data[2] << 8 | (size_t)data[3] << 16 | (size_t)data[4] << 24;
    data += 5;
    size -= 5;
    if (images > size)
        images = size;
    write_file(0, data, images, flags & 1u);
    write_file(1, data + images, size - images, flags & 2u);

    fuzz_memory memory;
    tg_ctx *ctx = fuzz_ctx_new(&memory, 0);
    memory.fail_at = flags >> 4 ? memory.calls + (flags >> 4) : 0;
    tg_dataset *d = (tg_dataset *)&memory; /* must be replaced: NULL on failure */
    tg_status st = tg_dataset_load_idx(ctx, fuzz_scratch_path(0), fuzz_scratch_path(1), &d);
    memory.fail_at = 0;
    if (st == TG_OK) {
        FUZZ_CHECK(d != NULL);
        check_dataset(ctx, d);
        tg_dataset_free(d);
    } else {
        fuzz_check_failure(st, tg_ctx_error(ctx));
        FUZZ_CHECK(d == NULL);
    }
    tg_ctx_free(ctx);
    FUZZ_CHECK(memory.in_use == 0);
    return 0;
}
