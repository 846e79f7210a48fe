/* test_data.c — IDX datasets (plain and gzip), their validation, datasets from memory and the
 * shuffling batch iterator; Fashion-MNIST when it is installed. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#define TMPDIR_TEMPLATE "/tmp/tg_data_XXXXXX"
#include "common.h"
#include "files.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ---- helpers ----------------------------------------------------------------------------- */

static void put_be32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* An IDX file's bytes: magic, dims, payload. Returns the length; *out is malloc'd. */
static size_t idx_bytes(uint32_t magic, int ndims, const uint32_t *dims, const unsigned char *data,
                        size_t n, unsigned char **out)
{
    size_t len = 4 + 4 * (size_t)ndims + n;
    unsigned char *b = malloc(len);
    assert_non_null(b);
    put_be32(b, magic);
    for (int i = 0; i < ndims; i++)
        put_be32(b + 4 + 4 * i, dims[i]);
    if (n)
        memcpy(b + 4 + 4 * ndims, data, n);
    *out = b;
    return len;
}

static void write_file(const char *path, const void *data, size_t n, bool gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        if (n)
            assert_int_equal(gzwrite(f, data, (unsigned)n), (int)n);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        write_all(path, data, n);
    }
}

static void write_idx(const char *path, uint32_t magic, int ndims, const uint32_t *dims,
                      const unsigned char *data, size_t n, bool gz)
{
    unsigned char *b;
    size_t len = idx_bytes(magic, ndims, dims, data, n, &b);
    write_file(path, b, len, gz);
    free(b);
}

/* A small image set: N images of H x W, pixel (i, r, c) = (i * 7 + r * W + c) % 256, and
 * labels i % 3. */
enum { N = 5, H = 3, W = 4 };

static void small_set(unsigned char *img, unsigned char *lab)
{
    for (int i = 0; i < N; i++) {
        lab[i] = (unsigned char)(i % 3);
        for (int p = 0; p < H * W; p++)
            img[i * H * W + p] = (unsigned char)((i * 7 + p * 19) % 256);
    }
}

static void write_small_set(const char *img_name, const char *lab_name, bool gz)
{
    unsigned char img[N * H * W], lab[N];
    small_set(img, lab);
    char ip[128], lp[128];
    tmp_path(ip, sizeof ip, img_name);
    tmp_path(lp, sizeof lp, lab_name);
    write_idx(ip, 0x803, 3, (uint32_t[]){N, H, W}, img, sizeof img, gz);
    write_idx(lp, 0x801, 1, (uint32_t[]){N}, lab, sizeof lab, gz);
}

/* Loading must fail with `expected`, a message naming `needle`, and *out NULL. */
static void expect_load_fails(tg_ctx *ctx, const char *ip, const char *lp, tg_status expected,
                              const char *needle)
{
    tg_dataset *d = (tg_dataset *)1;
    assert_status(tg_dataset_load_idx(ctx, ip, lp, &d), expected);
    assert_null(d);
    assert_contains(tg_ctx_error(ctx), needle);
}

/* ---- IDX --------------------------------------------------------------------------------- */

static void check_small_set(fixture *f, tg_dataset *d)
{
    assert_int_equal(tg_dataset_size(d), N);
    assert_int_equal(tg_dataset_sample_ndim(d), 2);
    assert_int_equal(tg_dataset_sample_shape(d)[0], H);
    assert_int_equal(tg_dataset_sample_shape(d)[1], W);
    assert_int_equal(tg_dataset_classes(d), 3);
    unsigned char img[N * H * W], lab[N];
    small_set(img, lab);
    tg_batches *b;
    assert_status(tg_batches_new(d, N, false, 0, false, &b), TG_OK);
    assert_int_equal(tg_batches_start(b, 0), 1);
    tg_tensor x, y;
    assert_true(tg_batches_next(b, f->tp, &x, &y));
    assert_int_equal(tg_ndim(x), 3);
    assert_int_equal(tg_dim(x, 0), N);
    assert_int_equal(tg_dim(x, 1), H);
    assert_int_equal(tg_dim(x, 2), W);
    assert_int_equal(tg_tensor_dtype(x), TG_F32);
    assert_int_equal(tg_tensor_dtype(y), TG_I64);
    const float *xs = tg_data(x);
    const int64_t *ys = tg_data(y);
    for (int i = 0; i < N * H * W; i++)
        assert_true(xs[i] == (float)img[i] / 255.0f);
    for (int i = 0; i < N; i++)
        assert_int_equal(ys[i], lab[i]);
    assert_false(tg_batches_next(b, f->tp, &x, &y));
    tg_batches_free(b);
    tg_tape_reset(f->tp);
}

static void idx_plain_and_gzip(void **state)
{
    fixture *f = *state;
    char ip[128], lp[128];
    for (int gz = 0; gz < 2; gz++) {
        write_small_set("img", "lab", gz);
        tmp_path(ip, sizeof ip, "img");
        tmp_path(lp, sizeof lp, "lab");
        tg_dataset *d;
        assert_status(tg_dataset_load_idx(f->ctx, ip, lp, &d), TG_OK);
        check_small_set(f, d);
        tg_dataset_free(d);
    }
    /* Zero images is a valid (empty) dataset. */
    write_idx(ip, 0x803, 3, (uint32_t[]){0, 2, 2}, NULL, 0, false);
    write_idx(lp, 0x801, 1, (uint32_t[]){0}, NULL, 0, true);
    tg_dataset *d;
    assert_status(tg_dataset_load_idx(f->ctx, ip, lp, &d), TG_OK);
    assert_int_equal(tg_dataset_size(d), 0);
    assert_int_equal(tg_dataset_classes(d), 0);
    tg_dataset_free(d);
    tg_dataset_free(NULL);
}

static void idx_rejects_corrupt_files(void **state)
{
    fixture *f = *state;
    char ip[128], lp[128], bad[128];
    write_small_set("img", "lab", false);
    tmp_path(ip, sizeof ip, "img");
    tmp_path(lp, sizeof lp, "lab");
    tmp_path(bad, sizeof bad, "bad");
    unsigned char img[N * H * W], lab[N];
    small_set(img, lab);

    /* Missing files and directories: TG_IO naming the file. */
    expect_load_fails(f->ctx, bad, lp, TG_IO, bad);
    expect_load_fails(f->ctx, ip, bad, TG_IO, bad);
    expect_load_fails(f->ctx, ip, tmp_dir, TG_IO, tmp_dir);
    /* Swapped files: each has the other's magic. */
    expect_load_fails(f->ctx, lp, ip, TG_FORMAT, "magic 0x00000801, expected 0x00000803");
    /* Another element type (0x0D: f32) and a wrong dim count. */
    write_idx(bad, 0xD03, 3, (uint32_t[]){N, H, W}, img, sizeof img, false);
    expect_load_fails(f->ctx, bad, lp, TG_FORMAT, "element type 0x0d");
    write_idx(bad, 0x804, 4, (uint32_t[]){N, 1, H, W}, img, sizeof img, false);
    expect_load_fails(f->ctx, bad, lp, TG_FORMAT, "magic 0x00000804");
    /* Label count != image count. */
    write_idx(bad, 0x801, 1, (uint32_t[]){N - 1}, lab, N - 1, false);
    expect_load_fails(f->ctx, ip, bad, TG_FORMAT, "4 labels but");
    /* More data than the dims say. */
    unsigned char more[N * H * W + 1];
    memcpy(more, img, sizeof img);
    more[sizeof img] = 1;
    write_idx(bad, 0x803, 3, (uint32_t[]){N, H, W}, more, sizeof more, false);
    expect_load_fails(f->ctx, bad, lp, TG_FORMAT, "more data");
    /* Empty images, and dims whose product is absurd. */
    write_idx(bad, 0x803, 3, (uint32_t[]){N, 0, W}, NULL, 0, false);
    expect_load_fails(f->ctx, bad, lp, TG_FORMAT, "empty images");
    write_idx(bad, 0x803, 3, (uint32_t[]){0xffffffffu, 0xffffffffu, 0xffffffffu}, img, 4, false);
    expect_load_fails(f->ctx, bad, lp, TG_FORMAT, "absurd");
    /* No images, but each of 2^64 - 2^33 + 1 pixels (its size overflowed int64 and the empty
     * file loaded with samples of 4294967295 x 4294967295). */
    char empty_labels[128];
    tmp_path(empty_labels, sizeof empty_labels, "empty_labels");
    write_idx(empty_labels, 0x801, 1, (uint32_t[]){0}, NULL, 0, false);
    write_idx(bad, 0x803, 3, (uint32_t[]){0, 0xffffffffu, 0xffffffffu}, NULL, 0, false);
    expect_load_fails(f->ctx, bad, empty_labels, TG_FORMAT, "absurd size (samples of");
    /* Still too large when the sample product fits int64 (2^40 pixels). */
    write_idx(bad, 0x803, 3, (uint32_t[]){0, 1u << 20, 1u << 20}, NULL, 0, false);
    expect_load_fails(f->ctx, bad, empty_labels, TG_FORMAT, "absurd size (samples of");
    /* A sample size that is fine, times a count that is not. */
    write_idx(bad, 0x803, 3, (uint32_t[]){0xffffffffu, 1u << 10, 1u << 10}, img, 4, false);
    expect_load_fails(f->ctx, bad, lp, TG_FORMAT, "4294967295 samples of 1048576 elements");
    /* A header promising a lot of data that is not there: truncated, without allocating it. */
    char bad2[128];
    tmp_path(bad2, sizeof bad2, "bad2");
    write_idx(bad, 0x803, 3, (uint32_t[]){50000000u, 28, 28}, img, sizeof img, false);
    write_idx(bad2, 0x801, 1, (uint32_t[]){50000000u}, lab, N, false);
    expect_load_fails(f->ctx, bad, bad2, TG_FORMAT, "truncated");

    /* Every truncation of both files, plain and gzip-compressed. */
    for (int which = 0; which < 2; which++) {
        unsigned char *full;
        size_t len = which == 0 ? idx_bytes(0x803, 3, (uint32_t[]){N, H, W}, img, sizeof img, &full)
                                : idx_bytes(0x801, 1, (uint32_t[]){N}, lab, N, &full);
        for (int gz = 0; gz < 2; gz++)
            for (size_t cut = 0; cut < len; cut++) {
                write_file(bad, full, cut, gz);
                tg_dataset *d = (tg_dataset *)1;
                tg_status st = which == 0 ? tg_dataset_load_idx(f->ctx, bad, lp, &d)
                                          : tg_dataset_load_idx(f->ctx, ip, bad, &d);
                if (st != TG_FORMAT)
                    fail_msg("cut at %zu (gz %d, file %d): %s", cut, gz, which, tg_status_name(st));
                assert_null(d);
                assert_contains(tg_ctx_error(f->ctx), bad);
            }
        free(full);
    }

    /* A gzip file cut short, or with a damaged byte in its stream. */
    write_idx(bad, 0x803, 3, (uint32_t[]){N, H, W}, img, sizeof img, true);
    size_t gzlen;
    unsigned char *gzb = read_all(bad, &gzlen);
    for (size_t cut = 10; cut < gzlen; cut++) {
        write_file(bad, gzb, cut, false);
        expect_load_fails(f->ctx, bad, lp, TG_FORMAT, bad);
    }
    gzb[gzlen / 2] ^= 0x55;
    gzb[gzlen / 2 + 1] ^= 0x55;
    write_file(bad, gzb, gzlen, false);
    tg_dataset *d = NULL;
    assert_int_not_equal(tg_dataset_load_idx(f->ctx, bad, lp, &d), TG_OK);
    assert_null(d);
    free(gzb);

    /* Arguments. */
    assert_status(tg_dataset_load_idx(NULL, ip, lp, &d), TG_INVALID);
    assert_status(tg_dataset_load_idx(f->ctx, NULL, lp, &d), TG_INVALID);
    assert_status(tg_dataset_load_idx(f->ctx, ip, lp, NULL), TG_INVALID);
}

/* Every allocation failure of a load or a batch iterator reports TG_NOMEM and leaks nothing. */
static void allocation_failures(void **state)
{
    (void)state;
    write_small_set("img.gz", "lab.gz", true);
    char ip[128], lp[128];
    tmp_path(ip, sizeof ip, "img.gz");
    tmp_path(lp, sizeof lp, "lab.gz");
    bool succeeded = false;
    for (long k = 1; !succeeded && k < 1000; k++) {
        counter c = {0, 0, 0};
        tg_ctx *ctx;
        assert_status(
            tg_ctx_new(&ctx, &(tg_ctx_options){.alloc = counting_alloc, .alloc_user = &c}), TG_OK);
        long long base = c.live;
        c.fail_at = c.calls + k;
        tg_dataset *d = NULL;
        tg_batches *b = NULL;
        tg_status st = tg_dataset_load_idx(ctx, ip, lp, &d);
        if (st == TG_OK)
            st = tg_batches_new(d, 2, true, 1, false, &b);
        if (st == TG_OK) {
            succeeded = true;
        } else {
            assert_int_equal(st, TG_NOMEM);
            assert_contains(tg_ctx_error(ctx), "out of memory");
        }
        tg_batches_free(b);
        tg_dataset_free(d);
        assert_int_equal(c.live, base);
        tg_ctx_free(ctx);
        assert_int_equal(c.live, 0);
    }
    assert_true(succeeded);
}

/* ---- datasets from memory ---------------------------------------------------------------- */

static void dataset_from_memory(void **state)
{
    fixture *f = *state;
    float x[6] = {1, 2, 3, 4, 5, 6};
    int64_t y[3] = {4, 0, 2};
    tg_dataset *d;
    assert_status(tg_dataset_new(f->ctx, 3, 1, (int64_t[]){2}, x, y, &d), TG_OK);
    x[0] = 99; /* copied */
    assert_int_equal(tg_dataset_size(d), 3);
    assert_int_equal(tg_dataset_classes(d), 5);
    tg_batches *b;
    assert_status(tg_batches_new(d, 3, false, 0, false, &b), TG_OK);
    tg_tensor tx, ty;
    assert_true(tg_batches_next(b, f->tp, &tx, &ty)); /* starts epoch 0 by itself */
    assert_close(((const float *)tg_data(tx))[0], 1.0, 0);
    tg_batches_free(b);
    tg_dataset_free(d);

    /* 0-d samples: batches are [B]. */
    assert_status(tg_dataset_new(f->ctx, 3, 0, NULL, x, y, &d), TG_OK);
    assert_status(tg_batches_new(d, 2, false, 0, false, &b), TG_OK);
    assert_true(tg_batches_next(b, f->tp, &tx, &ty));
    assert_int_equal(tg_ndim(tx), 1);
    assert_int_equal(tg_dim(tx, 0), 2);
    tg_batches_free(b);
    tg_dataset_free(d);

    assert_status(tg_dataset_new(f->ctx, 3, 1, (int64_t[]){2}, x, (int64_t[]){0, -1, 2}, &d),
                  TG_RANGE);
    assert_null(d);
    assert_contains(tg_ctx_error(f->ctx), "label 1 is -1");
    assert_status(tg_dataset_new(f->ctx, -1, 1, (int64_t[]){2}, x, y, &d), TG_INVALID);
    assert_status(tg_dataset_new(f->ctx, 3, 1, (int64_t[]){-2}, x, y, &d), TG_SHAPE);
    assert_status(tg_dataset_new(f->ctx, 3, TG_MAX_DIMS, (int64_t[TG_MAX_DIMS]){1}, x, y, &d),
                  TG_SHAPE);
    assert_status(tg_dataset_new(f->ctx, 3, 1, (int64_t[]){2}, NULL, y, &d), TG_INVALID);
    assert_status(tg_dataset_new(f->ctx, 3, 1, (int64_t[]){2}, x, NULL, &d), TG_INVALID);
    assert_status(tg_dataset_new(f->ctx, 3, 1, (int64_t[]){INT64_MAX / 2}, x, y, &d), TG_RANGE);
    assert_status(tg_dataset_new(NULL, 3, 1, (int64_t[]){2}, x, y, &d), TG_INVALID);
    assert_int_equal(tg_dataset_size(NULL), -1);
    assert_null(tg_dataset_sample_shape(NULL));
}

/* ---- batches ----------------------------------------------------------------------------- */

/* n samples of 2 values (i, -i), label i. */
static tg_dataset *index_set(tg_ctx *ctx, int64_t n)
{
    float *x = malloc((size_t)n * 2 * sizeof *x);
    int64_t *y = malloc((size_t)n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (int64_t i = 0; i < n; i++) {
        x[2 * i] = (float)i;
        x[2 * i + 1] = (float)-i;
        y[i] = i;
    }
    tg_dataset *d;
    assert_status(tg_dataset_new(ctx, n, 1, (int64_t[]){2}, x, y, &d), TG_OK);
    free(x);
    free(y);
    return d;
}

/* One epoch's labels in order into order[] (n entries at most); returns the count. Checks each
 * batch's shape and that x rows belong to their labels. */
static int64_t run_epoch(fixture *f, tg_batches *b, int64_t epoch, int64_t bs, int64_t *order,
                         int64_t *nbatches, int64_t *last_rows)
{
    *nbatches = tg_batches_start(b, epoch);
    int64_t count = 0, seen = 0;
    tg_tensor x, y;
    while (tg_batches_next(b, f->tp, &x, &y)) {
        int64_t rows = tg_dim(y, 0);
        assert_true(rows >= 1 && rows <= bs);
        assert_int_equal(tg_dim(x, 0), rows);
        assert_int_equal(tg_dim(x, 1), 2);
        const float *xs = tg_data(x);
        const int64_t *ys = tg_data(y);
        for (int64_t r = 0; r < rows; r++) {
            assert_true(xs[2 * r] == (float)ys[r]);
            assert_true(xs[2 * r + 1] == (float)-ys[r]);
            order[count++] = ys[r];
        }
        *last_rows = rows;
        seen++;
        tg_tape_reset(f->tp);
    }
    assert_tape_ok(f->tp);
    assert_int_equal(seen, *nbatches);
    return count;
}

static void batches_cover_every_sample(void **state)
{
    fixture *f = *state;
    const int64_t n = 103, bs = 10;
    tg_dataset *d = index_set(f->ctx, n);
    int64_t a[103], b2[103], c[103], seen[103], nb, last;

    for (int drop = 0; drop < 2; drop++) {
        tg_batches *b, *same, *other;
        assert_status(tg_batches_new(d, bs, true, 42, drop, &b), TG_OK);
        assert_status(tg_batches_new(d, bs, true, 42, drop, &same), TG_OK);
        assert_status(tg_batches_new(d, bs, true, 43, drop, &other), TG_OK);
        for (int64_t epoch = 0; epoch < 3; epoch++) {
            int64_t got = run_epoch(f, b, epoch, bs, a, &nb, &last);
            if (drop) {
                assert_int_equal(nb, 10);
                assert_int_equal(got, 100);
                assert_int_equal(last, 10);
            } else {
                assert_int_equal(nb, 11);
                assert_int_equal(got, n);
                assert_int_equal(last, 3);
            }
            /* Each sample at most once (exactly once without drop_last). */
            memset(seen, 0, sizeof seen);
            for (int64_t i = 0; i < got; i++)
                seen[a[i]]++;
            for (int64_t i = 0; i < n; i++)
                assert_true(drop ? seen[i] <= 1 : seen[i] == 1);
            /* The same seed gives the same order; another seed another order. */
            assert_int_equal(run_epoch(f, same, epoch, bs, b2, &nb, &last), got);
            assert_memory_equal(a, b2, (size_t)got * sizeof *a);
            run_epoch(f, other, epoch, bs, c, &nb, &last);
            assert_memory_not_equal(a, c, (size_t)got * sizeof *a);
            /* Another epoch, another order; repeating an epoch repeats it. */
            run_epoch(f, b, epoch + 1, bs, b2, &nb, &last);
            assert_memory_not_equal(a, b2, (size_t)got * sizeof *a);
            run_epoch(f, b, epoch, bs, b2, &nb, &last);
            assert_memory_equal(a, b2, (size_t)got * sizeof *a);
            /* Shuffled: not the identity. */
            int64_t fixed = 0;
            for (int64_t i = 0; i < got; i++)
                fixed += a[i] == i;
            assert_true(fixed < 20);
        }
        tg_batches_free(b);
        tg_batches_free(same);
        tg_batches_free(other);
    }

    /* Unshuffled: in order, with the partial batch last. */
    tg_batches *b;
    assert_status(tg_batches_new(d, bs, false, 0, false, &b), TG_OK);
    assert_int_equal(run_epoch(f, b, 5, bs, a, &nb, &last), n);
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(a[i], i);
    assert_int_equal(last, 3);
    tg_batches_free(b);
    /* A batch larger than the dataset: one batch, or none with drop_last. */
    assert_status(tg_batches_new(d, 1000, true, 1, false, &b), TG_OK);
    assert_int_equal(run_epoch(f, b, 0, 1000, a, &nb, &last), n);
    assert_int_equal(nb, 1);
    tg_batches_free(b);
    assert_status(tg_batches_new(d, 1000, true, 1, true, &b), TG_OK);
    assert_int_equal(run_epoch(f, b, 0, 1000, a, &nb, &last), 0);
    assert_int_equal(nb, 0);
    tg_batches_free(b);
    tg_dataset_free(d);
}

/* Shards (tg_batches_new_shard): disjoint slices of the same order, interleaved, so that batch k
 * of every shard together is batch k of one iterator of nshards times the batch size. */
static void shards_split_each_epoch(void **state)
{
    fixture *f = *state;
    enum { N = 103, SHARDS = 3, BS = 5 };
    tg_dataset *d = index_set(f->ctx, N);
    int64_t whole[N], part[SHARDS][N], nb, last, count[SHARDS];
    for (int shuffle = 0; shuffle < 2; shuffle++) {
        for (int drop = 0; drop < 2; drop++) {
            tg_batches *one, *shards[SHARDS];
            assert_status(tg_batches_new(d, N, shuffle, 5, false, &one), TG_OK);
            assert_int_equal(run_epoch(f, one, 2, N, whole, &nb, &last), N);
            tg_batches_free(one);
            for (int r = 0; r < SHARDS; r++) {
                assert_status(tg_batches_new_shard(d, BS, shuffle, 5, drop, r, SHARDS, &shards[r]),
                              TG_OK);
                count[r] = run_epoch(f, shards[r], 2, BS, part[r], &nb, &last);
                /* 103 / 3 = 34 samples each, one left out; in batches of 5: 6 full, 1 of 4. */
                assert_int_equal(count[r], drop ? 30 : 34);
                assert_int_equal(nb, drop ? 6 : 7);
                assert_int_equal(last, drop ? 5 : 4);
                for (int64_t i = 0; i < count[r]; i++)
                    assert_int_equal(part[r][i], whole[i * SHARDS + r]);
                tg_batches_free(shards[r]);
            }
            /* Disjoint, and batch k of the three is batch k of one iterator of 15. */
            tg_batches *wide;
            assert_status(tg_batches_new(d, BS * SHARDS, shuffle, 5, false, &wide), TG_OK);
            tg_batches_start(wide, 2);
            int64_t seen[N] = {0};
            tg_tensor x, y;
            for (int64_t k = 0; k * BS < count[0]; k++) {
                assert_true(tg_batches_next(wide, f->tp, &x, &y));
                const int64_t *labels = tg_data(y);
                int64_t rows = tg_dim(y, 0), in_wide[N] = {0};
                for (int64_t i = 0; i < rows; i++)
                    in_wide[labels[i]] = 1;
                for (int r = 0; r < SHARDS; r++)
                    for (int64_t i = k * BS; i < (k + 1) * BS && i < count[r]; i++) {
                        assert_true(in_wide[part[r][i]]);
                        assert_int_equal(seen[part[r][i]]++, 0);
                    }
                tg_tape_reset(f->tp);
            }
            tg_batches_free(wide);
        }
    }
    /* One shard is tg_batches_new; a shard out of range is refused. */
    tg_batches *b;
    assert_status(tg_batches_new_shard(d, BS, true, 9, false, 0, 1, &b), TG_OK);
    assert_int_equal(run_epoch(f, b, 1, BS, part[0], &nb, &last), N);
    tg_batches_free(b);
    assert_status(tg_batches_new(d, BS, true, 9, false, &b), TG_OK);
    run_epoch(f, b, 1, BS, whole, &nb, &last);
    assert_memory_equal(part[0], whole, sizeof whole);
    tg_batches_free(b);
    const int64_t bad[][2] = {{3, 3}, {-1, 3}, {0, 0}};
    for (int i = 0; i < 3; i++) {
        b = (tg_batches *)1;
        assert_status(tg_batches_new_shard(d, BS, true, 9, false, bad[i][0], bad[i][1], &b),
                      TG_INVALID);
        assert_null(b);
        assert_contains(tg_ctx_error(f->ctx), "tg_batches_new_shard: shard");
    }
    /* More shards than samples: every shard is empty. */
    assert_status(tg_batches_new_shard(d, BS, true, 9, false, 7, 200, &b), TG_OK);
    assert_int_equal(run_epoch(f, b, 0, BS, part[0], &nb, &last), 0);
    assert_int_equal(nb, 0);
    tg_batches_free(b);
    tg_dataset_free(d);
}

/* Shuffle quality, roughly: over many epochs each sample lands in each position about equally. */
static void shuffle_is_uniform(void **state)
{
    fixture *f = *state;
    const int64_t n = 8, epochs = 8000;
    tg_dataset *d = index_set(f->ctx, n);
    tg_batches *b;
    assert_status(tg_batches_new(d, n, true, 7, false, &b), TG_OK);
    int64_t counts[8][8] = {{0}}, order[8], nb, last;
    for (int64_t e = 0; e < epochs; e++) {
        run_epoch(f, b, e, n, order, &nb, &last);
        for (int64_t i = 0; i < n; i++)
            counts[order[i]][i]++;
    }
    for (int s = 0; s < n; s++)
        for (int p = 0; p < n; p++)
            assert_true(counts[s][p] > 850 && counts[s][p] < 1150); /* expected 1000 */
    tg_batches_free(b);
    tg_dataset_free(d);
}

static void batches_steady_state_and_errors(void **state)
{
    fixture *f = *state;
    tg_dataset *d = index_set(f->ctx, 50);
    tg_batches *b;
    assert_status(tg_batches_new(d, 8, true, 3, false, &b), TG_OK);
    int64_t order[50], nb, last;
    run_epoch(f, b, 0, 8, order, &nb, &last); /* warm the tape's arena */
    uint64_t calls = tg_ctx_alloc_calls(f->ctx);
    for (int64_t e = 1; e < 4; e++)
        run_epoch(f, b, e, 8, order, &nb, &last);
    assert_int_equal(tg_ctx_alloc_calls(f->ctx), calls);

    /* At the end of the epoch: false, outputs untouched. */
    tg_tensor x = {0}, y = {0};
    assert_false(tg_batches_next(b, f->tp, &x, &y));
    assert_null(tg_tensor_tape(x));
    /* A tape in error: false, and the batch is not consumed. */
    tg_batches_start(b, 9);
    tg_tape_fail(f->tp, TG_INVALID, "earlier failure");
    assert_false(tg_batches_next(b, f->tp, &x, &y));
    tg_tape_reset(f->tp);
    assert_true(tg_batches_next(b, f->tp, &x, &y));
    int64_t first = ((const int64_t *)tg_data(y))[0];
    tg_batches_start(b, 9);
    tg_tape_reset(f->tp);
    assert_true(tg_batches_next(b, f->tp, &x, &y));
    assert_int_equal(((const int64_t *)tg_data(y))[0], first);
    tg_tape_reset(f->tp);
    assert_false(tg_batches_next(b, f->tp, NULL, &y));
    assert_status(tg_tape_status(f->tp), TG_INVALID);
    tg_tape_reset(f->tp);
    assert_false(tg_batches_next(b, NULL, &x, &y));
    assert_false(tg_batches_next(NULL, f->tp, &x, &y));
    assert_int_equal(tg_batches_start(NULL, 0), -1);
    tg_batches_free(b);
    tg_batches_free(NULL);

    assert_status(tg_batches_new(d, 0, true, 3, false, &b), TG_INVALID);
    assert_null(b);
    assert_contains(tg_ctx_error(f->ctx), "batch size 0");
    assert_status(tg_batches_new(NULL, 4, true, 3, false, &b), TG_INVALID);
    tg_dataset_free(d);
}

/* ---- Fashion-MNIST ----------------------------------------------------------------------- */

#define FASHION "/usr/share/datasets/fashion-mnist/"

static void fashion_mnist(void **state)
{
    fixture *f = *state;
    struct stat sb;
    if (stat(FASHION "train-images-idx3-ubyte.gz", &sb) != 0) {
        skip();
        return;
    }
    tg_dataset *train, *test;
    assert_status(tg_dataset_load_idx(f->ctx, FASHION "train-images-idx3-ubyte.gz",
                                      FASHION "train-labels-idx1-ubyte.gz", &train),
                  TG_OK);
    assert_status(tg_dataset_load_idx(f->ctx, FASHION "t10k-images-idx3-ubyte.gz",
                                      FASHION "t10k-labels-idx1-ubyte.gz", &test),
                  TG_OK);
    assert_int_equal(tg_dataset_size(train), 60000);
    assert_int_equal(tg_dataset_size(test), 10000);
    for (int i = 0; i < 2; i++) {
        tg_dataset *d = i ? test : train;
        assert_int_equal(tg_dataset_sample_ndim(d), 2);
        assert_int_equal(tg_dataset_sample_shape(d)[0], 28);
        assert_int_equal(tg_dataset_sample_shape(d)[1], 28);
        assert_int_equal(tg_dataset_classes(d), 10);
    }
    /* 6000 of each class in train; pixels in [0, 1]. */
    tg_batches *b;
    assert_status(tg_batches_new(train, 1000, true, 1, false, &b), TG_OK);
    assert_int_equal(tg_batches_start(b, 0), 60);
    int64_t per_class[10] = {0};
    tg_tensor x, y;
    double lo = 1, hi = 0;
    while (tg_batches_next(b, f->tp, &x, &y)) {
        const int64_t *ys = tg_data(y);
        for (int64_t r = 0; r < tg_numel(y); r++)
            per_class[ys[r]]++;
        lo = fmin(lo, tg_item(tg_min_all(x)));
        hi = fmax(hi, tg_item(tg_max_all(x)));
        tg_tape_reset(f->tp);
    }
    assert_tape_ok(f->tp);
    for (int c = 0; c < 10; c++)
        assert_int_equal(per_class[c], 6000);
    assert_close(lo, 0.0, 0);
    assert_close(hi, 1.0, 0);
    tg_batches_free(b);
    tg_dataset_free(train);
    tg_dataset_free(test);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TMPDIR_FIXTURE_TEST(idx_plain_and_gzip),
        TMPDIR_FIXTURE_TEST(idx_rejects_corrupt_files),
        TMPDIR_TEST(allocation_failures),
        FIXTURE_TEST(dataset_from_memory),
        FIXTURE_TEST(batches_cover_every_sample),
        FIXTURE_TEST(shards_split_each_epoch),
        FIXTURE_TEST(shuffle_is_uniform),
        FIXTURE_TEST(batches_steady_state_and_errors),
        FIXTURE_TEST(fashion_mnist),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
