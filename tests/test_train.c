/* test_train.c — the helpers around a training loop: a seeded validation split, image
 * augmentation (each augmented sample is one of the crops and flips PyTorch computes for it, in
 * tests/reference/train_reference.txt, and the draws cover them all), early stopping with the
 * best parameters kept, and the CSV training log. */
#define _POSIX_C_SOURCE 200809L /* mkstemp */
#include "reference.h"

#include <unistd.h>

#define REF_PATH TG_SOURCE_DIR "/tests/reference/train_reference.txt"

static int load_refs(void **state)
{
    (void)state;
    return ref_load(REF_PATH, "tests/reference/generate_train.py");
}

/* n samples [2, 4, 5]: sample i is the reference image plus 1000 i (exact in f32), label i % 7. */
static tg_dataset *images(tg_ctx *ctx, int64_t n)
{
    const ref_tensor *img = ref("augment", "image");
    float *x = malloc((size_t)n * 40 * sizeof *x);
    int64_t *y = malloc((size_t)n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (int64_t i = 0; i < n; i++) {
        for (int p = 0; p < 40; p++)
            x[i * 40 + p] = (float)(img->v[p] + 1000.0 * (double)i);
        y[i] = i % 7;
    }
    tg_dataset *d;
    assert_status(tg_dataset_new(ctx, n, 3, (int64_t[]){2, 4, 5}, x, y, &d), TG_OK);
    free(x);
    free(y);
    return d;
}

static void split_holds_out_a_random_subset(void **state)
{
    fixture *f = *state;
    tg_dataset *d = images(f->ctx, 100), *a, *b, *a2, *b2;
    assert_status(tg_dataset_split(d, 30, 7, &a, &b), TG_OK);
    assert_int_equal(tg_dataset_size(a), 70);
    assert_int_equal(tg_dataset_size(b), 30);
    assert_int_equal(tg_dataset_sample_ndim(b), 3);
    assert_int_equal(tg_dataset_sample_shape(b)[2], 5);
    /* Together they hold every sample once, with its label: read them back in order. */
    int seen[100] = {0};
    bool shuffled = false;
    tg_dataset *parts[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        tg_batches *bt;
        assert_status(tg_batches_new(parts[k], 1000, false, 0, false, &bt), TG_OK);
        tg_tensor x, y;
        assert_true(tg_batches_next(bt, f->tp, &x, &y));
        const float *xv = tg_data(x);
        const int64_t *yv = tg_data(y);
        for (int64_t i = 0; i < tg_dim(x, 0); i++) {
            int s = (int)((xv[i * 40] - 1.0f) / 1000.0f);
            assert_true(s >= 0 && s < 100);
            seen[s]++;
            assert_int_equal(yv[i], s % 7);
            shuffled |= k == 0 && s != i;
        }
        tg_batches_free(bt);
        tg_tape_reset(f->tp);
    }
    for (int s = 0; s < 100; s++)
        assert_int_equal(seen[s], 1);
    assert_true(shuffled);
    /* The same seed gives the same split; another seed another one. */
    assert_status(tg_dataset_split(d, 30, 7, &a2, &b2), TG_OK);
    tg_batches *p, *q;
    tg_tensor x1, y1, x2, y2;
    tg_batches_new(b, 30, false, 0, false, &p);
    tg_batches_new(b2, 30, false, 0, false, &q);
    assert_true(tg_batches_next(p, f->tp, &x1, &y1) && tg_batches_next(q, f->tp, &x2, &y2));
    assert_memory_equal(tg_data(x1), tg_data(x2), 30 * 40 * sizeof(float));
    tg_batches_free(p);
    tg_batches_free(q);
    tg_dataset_free(a2);
    tg_dataset_free(b2);
    assert_status(tg_dataset_split(d, 30, 8, &a2, &b2), TG_OK);
    tg_batches_new(b2, 30, false, 0, false, &q);
    assert_true(tg_batches_next(q, f->tp, &x2, &y2));
    assert_true(memcmp(tg_data(x1), tg_data(x2), 30 * 40 * sizeof(float)) != 0);
    tg_batches_free(q);
    /* The edges, and bad sizes. */
    tg_dataset *all, *none;
    assert_status(tg_dataset_split(d, 0, 1, &all, &none), TG_OK);
    assert_int_equal(tg_dataset_size(all), 100);
    assert_int_equal(tg_dataset_size(none), 0);
    tg_dataset_free(all);
    tg_dataset_free(none);
    assert_status(tg_dataset_split(d, 101, 1, &all, &none), TG_RANGE);
    assert_null(all);
    assert_null(none);
    assert_contains(tg_ctx_error(f->ctx), "tg_dataset_split: 101 samples out of 100");
    assert_status(tg_dataset_split(d, -1, 1, &all, &none), TG_RANGE);
    assert_status(tg_dataset_split(d, 1, 1, NULL, &none), TG_INVALID);
    assert_status(tg_dataset_split(NULL, 1, 1, &all, &none), TG_INVALID);
    tg_dataset_free(a);
    tg_dataset_free(b);
    tg_dataset_free(a2);
    tg_dataset_free(b2);
    tg_dataset_free(d);
}

/* Which reference outcome (top * 10 + left) * 2 + flip sample s's augmented copy is; -1 if none. */
static int outcome(const float *got, int64_t s)
{
    for (int top = 0; top <= 4; top++)
        for (int left = 0; left <= 4; left++)
            for (int flip = 0; flip < 2; flip++) {
                char name[32];
                snprintf(name, sizeof name, "out_%d_%d_%d", top, left, flip);
                const ref_tensor *want = ref("augment", name);
                bool same = true;
                for (int p = 0; p < 40 && same; p++) {
                    double v = want->v[p] ? want->v[p] + 1000.0 * (double)s : 0.0;
                    same = got[p] == (float)v;
                }
                if (same)
                    return (top * 10 + left) * 2 + flip;
            }
    return -1;
}

static void augmentation_is_pytorchs_crop_and_flip(void **state)
{
    fixture *f = *state;
    const int64_t n = 1000;
    tg_dataset *d = images(f->ctx, n);
    tg_batches *b;
    assert_status(tg_batches_new(d, 100, true, 3, false, &b), TG_OK);
    tg_augment_options o = {.crop_padding = 2, .horizontal_flip = true, .seed = 5};
    assert_status(tg_batches_set_augment(b, &o), TG_OK);
    int hits[100] = {0}, flips = 0;
    float *epoch0 = malloc((size_t)n * 40 * sizeof *epoch0);
    assert_non_null(epoch0);
    tg_batches_start(b, 0);
    tg_tensor x, y;
    while (tg_batches_next(b, f->tp, &x, &y)) {
        const float *xv = tg_data(x);
        const int64_t *yv = tg_data(y);
        for (int64_t i = 0; i < tg_dim(x, 0); i++) {
            int64_t s = -1; /* the sample: its label and the one pixel no outcome zeroes */
            for (int p = 0; p < 40 && s < 0; p++)
                if (xv[i * 40 + p] != 0)
                    s = (int64_t)(xv[i * 40 + p] / 1000.0f);
            assert_true(s >= 0 && s < n);
            assert_int_equal(yv[i], s % 7);
            int k = outcome(xv + i * 40, s);
            if (k < 0)
                fail_msg("sample %lld is none of PyTorch's crops and flips", (long long)s);
            hits[k]++;
            flips += k % 2;
            memcpy(epoch0 + s * 40, xv + i * 40, 40 * sizeof(float));
        }
        tg_tape_reset(f->tp);
    }
    for (int k = 0; k < 100; k++)
        if ((k / 2) % 10 <= 4 && k / 20 <= 4 && hits[k] == 0)
            fail_msg("outcome top %d left %d flip %d never drawn", k / 20, (k / 2) % 10, k % 2);
    assert_true(flips > 400 && flips < 600);
    /* The draws depend on (seed, epoch, sample) only: a new iterator over the same epoch with
     * another batch size repeats them; the next epoch differs. */
    tg_batches *again;
    assert_status(tg_batches_new(d, 7, false, 0, false, &again), TG_OK);
    assert_status(tg_batches_set_augment(again, &o), TG_OK);
    tg_batches_start(again, 0);
    int64_t at = 0;
    while (tg_batches_next(again, f->tp, &x, &y)) {
        assert_memory_equal(tg_data(x), epoch0 + at * 40, (size_t)tg_numel(x) * sizeof(float));
        at += tg_dim(x, 0);
        tg_tape_reset(f->tp);
    }
    assert_int_equal(at, n);
    tg_batches_start(again, 1);
    assert_true(tg_batches_next(again, f->tp, &x, &y));
    assert_true(memcmp(tg_data(x), epoch0, 7 * 40 * sizeof(float)) != 0);
    tg_tape_reset(f->tp);
    /* Off again: plain copies. */
    assert_status(tg_batches_set_augment(again, NULL), TG_OK);
    tg_batches_start(again, 0);
    assert_true(tg_batches_next(again, f->tp, &x, &y));
    assert_int_equal(outcome(tg_data(x), 0), (2 * 10 + 2) * 2);
    tg_tape_reset(f->tp);
    /* Bad settings change nothing. */
    assert_status(tg_batches_set_augment(again, &(tg_augment_options){.crop_padding = -1}),
                  TG_RANGE);
    assert_status(tg_batches_set_augment(NULL, &o), TG_INVALID);
    tg_dataset *flat;
    assert_status(
        tg_dataset_new(f->ctx, 1, 1, (int64_t[]){3}, (float[]){1, 2, 3}, (int64_t[]){0}, &flat),
        TG_OK);
    tg_batches *fb;
    assert_status(tg_batches_new(flat, 1, false, 0, false, &fb), TG_OK);
    assert_status(tg_batches_set_augment(fb, &o), TG_SHAPE);
    assert_contains(tg_ctx_error(f->ctx), "augmentation needs images");
    tg_batches_free(fb);
    tg_dataset_free(flat);
    free(epoch0);
    tg_batches_free(b);
    tg_batches_free(again);
    tg_dataset_free(d);
}

static void early_stopping_keeps_the_best(void **state)
{
    fixture *f = *state;
    tg_param *w;
    assert_status(tg_param_new(f->ctx, "w", TG_F64, 1, (int64_t[]){2}, &w), TG_OK);
    tg_early_stopping *es;
    tg_early_stopping_options o = {.patience = 2, .min_delta = 0.05};
    assert_status(tg_early_stopping_new(f->ctx, 1, &w, &o, &es), TG_OK);
    assert_true(isnan(tg_early_stopping_best(es)));
    assert_int_equal(tg_early_stopping_best_index(es), -1);
    assert_status(tg_early_stopping_restore(es), TG_NOT_FOUND);
    /* Validation losses; the parameter holds the epoch number when each is recorded. */
    const double losses[] = {1.0, 0.8, 0.78, 0.7, 0.9, 0.72, 0.6};
    const bool stops[] = {false, false, false, false, false, true};
    int epoch;
    bool stop = false;
    for (epoch = 0; !stop; epoch++) {
        tg_param_fill(w, epoch);
        assert_status(tg_early_stopping_update(es, losses[epoch], &stop), TG_OK);
        assert_int_equal(stop, stops[epoch]);
    }
    /* 0.78 is not 0.05 better than 0.8; 0.7 is the best; 0.9 and 0.72 make two in a row. */
    assert_int_equal(epoch, 6);
    assert_close(tg_early_stopping_best(es), 0.7, 0);
    assert_int_equal(tg_early_stopping_best_index(es), 3);
    assert_int_equal(tg_early_stopping_wait(es), 2);
    uint64_t version = tg_param_version(w);
    assert_status(tg_early_stopping_restore(es), TG_OK);
    assert_close(((const double *)tg_param_data(w))[1], 3.0, 0);
    assert_true(tg_param_version(w) > version);
    tg_early_stopping_free(es);

    /* Maximising (an accuracy), the default patience 3, and a NaN that stops at once. */
    assert_status(
        tg_early_stopping_new(f->ctx, 1, &w, &(tg_early_stopping_options){.maximize = true}, &es),
        TG_OK);
    const double acc[] = {0.5, 0.6, 0.6, 0.59, 0.55};
    for (int i = 0; i < 5; i++) {
        assert_status(tg_early_stopping_update(es, acc[i], &stop), TG_OK);
        assert_int_equal(stop, i == 4);
    }
    assert_int_equal(tg_early_stopping_best_index(es), 1);
    tg_early_stopping_free(es);
    assert_status(tg_early_stopping_new(f->ctx, 1, &w, NULL, &es), TG_OK);
    assert_status(tg_early_stopping_update(es, 1.0, &stop), TG_OK);
    assert_false(stop);
    assert_status(tg_early_stopping_update(es, NAN, &stop), TG_OK);
    assert_true(stop);
    assert_close(tg_early_stopping_best(es), 1.0, 0);
    assert_status(tg_early_stopping_update(es, 1.0, NULL), TG_INVALID);
    tg_early_stopping_free(es);
    /* Bad options and parameters. */
    assert_status(
        tg_early_stopping_new(f->ctx, 1, &w, &(tg_early_stopping_options){.patience = -1}, &es),
        TG_RANGE);
    assert_null(es);
    assert_status(
        tg_early_stopping_new(f->ctx, 1, &w, &(tg_early_stopping_options){.min_delta = NAN}, &es),
        TG_RANGE);
    assert_status(tg_early_stopping_new(f->ctx, 0, &w, NULL, &es), TG_INVALID);
    tg_param *none = NULL;
    assert_status(tg_early_stopping_new(f->ctx, 1, &none, NULL, &es), TG_INVALID);
    assert_status(tg_early_stopping_update(NULL, 1.0, &stop), TG_INVALID);
    assert_false(stop);
    tg_early_stopping_free(NULL);
}

static void training_log_rows(void **state)
{
    fixture *f = *state;
    char path[] = "/tmp/tapegrad-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    tg_train_log *log;
    assert_status(tg_train_log_open(f->ctx, path, "tokens", &log), TG_OK);
    tg_log_row mid = {50, 0.5, 1.25, NAN, NAN, NAN, 1234.5, 1e-3};
    tg_log_row end = {100, 1, 0.875, 0.9, 0.75, 0.7125, 2000, 5e-4};
    assert_status(tg_train_log_write(log, &mid), TG_OK);
    assert_status(tg_train_log_write(log, &end), TG_OK);
    assert_status(tg_train_log_write(log, NULL), TG_INVALID);
    assert_status(tg_train_log_close(log), TG_OK);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char text[512] = "";
    size_t len = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[len] = '\0';
    assert_string_equal(text, "step,epoch,train_loss,valid_loss,valid_accuracy,test_accuracy,"
                              "tokens_per_s,lr\n"
                              "50,0.5000,1.25,,,,1234.5,0.001\n"
                              "100,1.0000,0.875,0.9,0.75,0.7125,2000,0.0005\n");
    unlink(path);
    assert_status(tg_train_log_open(f->ctx, "/nonexistent-dir/log.csv", "samples", &log), TG_IO);
    assert_null(log);
    assert_contains(tg_ctx_error(f->ctx), "/nonexistent-dir/log.csv: No such file or directory");
    assert_status(tg_train_log_open(f->ctx, path, "a,b", &log), TG_INVALID);
    assert_status(tg_train_log_open(f->ctx, NULL, "samples", &log), TG_INVALID);
    assert_status(tg_train_log_close(NULL), TG_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(split_holds_out_a_random_subset),
        FIXTURE_TEST(augmentation_is_pytorchs_crop_and_flip),
        FIXTURE_TEST(early_stopping_keeps_the_best),
        FIXTURE_TEST(training_log_rows),
    };
    return cmocka_run_group_tests_name("train", tests, load_refs, ref_free);
}
