/* test_text.c — the token stream: loading files and directories (order, the binary and
 * non-regular files skipped), the vocabularies, the train/validation split, batches (contiguous
 * windows of the split, targets shifted by one, a pure function of seed and step), errors and
 * allocation failures; Debian's fortunes when installed. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, symlink */
#define TMPDIR_TEMPLATE "/tmp/tg_text_XXXXXX"
#include "common.h"
#include "files.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ----------------------------------------------------------------------------- */

/* n pseudo-random bytes from `alphabet` (a windows of ten of them is found at one place only). */
static unsigned char *random_text(size_t n, const char *alphabet, uint64_t seed)
{
    unsigned char *b = malloc(n);
    assert_non_null(b);
    size_t k = strlen(alphabet);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        b[i] = (unsigned char)alphabet[(seed >> 33) % k];
    }
    return b;
}

/* Writes `text` (a C string) to tmp_dir/name and returns the path in `path`. */
static void put(char *path, size_t size, const char *name, const void *data, size_t n)
{
    tmp_path(path, size, name);
    write_all(path, data, n);
}

/* Loads the n paths with options o; the load must succeed. */
static tg_text *load(tg_ctx *ctx, int n, const char *const *paths, const tg_text_options *o)
{
    tg_text *t = NULL;
    tg_status st = tg_text_load(ctx, n, paths, o, &t);
    if (st != TG_OK)
        fail_msg("tg_text_load: %s: %s", tg_status_name(st), tg_ctx_error(ctx));
    assert_non_null(t);
    return t;
}

/* The whole training split of a text loaded without validation, as bytes: one window of
 * context length - 1 (its only possible start is 0), inputs then the last target. */
static size_t whole_text(fixture *f, const tg_text *t, unsigned char *out, size_t cap)
{
    int64_t n = tg_text_length(t, false);
    assert_true(n >= 2 && (size_t)n <= cap);
    tg_tensor x, y;
    assert_status(tg_text_batch(t, f->tp, false, 1, n - 1, 0, 0, &x, &y), TG_OK);
    const int64_t *xs = tg_data(x), *ys = tg_data(y);
    for (int64_t i = 0; i < n - 1; i++)
        out[i] = (unsigned char)tg_text_decode(t, xs[i]);
    out[n - 1] = (unsigned char)tg_text_decode(t, ys[n - 2]);
    tg_tape_reset(f->tp);
    return (size_t)n;
}

static const tg_text_options no_validation = {.validation_fraction = TG_OPTION_ZERO};

/* ---- loading ----------------------------------------------------------------------------- */

static void split_and_vocabularies(void **state)
{
    fixture *f = *state;
    char path[128];
    const size_t n = 1003;
    unsigned char *text = random_text(n, "hello, world\n", 1);
    put(path, sizeof path, "a.txt", text, n);
    const char *paths[] = {path};

    /* Defaults: all 256 bytes, token = byte, the last tenth validates (nanoGPT's split). */
    tg_text *t = load(f->ctx, 1, paths, NULL);
    assert_int_equal(tg_text_vocab_size(t), 256);
    assert_int_equal(tg_text_length(t, false), 902); /* int(0.9 * 1003) */
    assert_int_equal(tg_text_length(t, true), 101);
    for (int b = 0; b < 256; b++) {
        assert_int_equal(tg_text_encode(t, (unsigned char)b), b);
        assert_int_equal(tg_text_decode(t, b), b);
    }
    assert_int_equal(tg_text_decode(t, 256), -1);
    assert_int_equal(tg_text_decode(t, -1), -1);
    tg_text_free(t);

    /* char_vocab: the sorted set of bytes present; other fractions. */
    tg_text_options o = {.validation_fraction = 0.25, .char_vocab = true};
    t = load(f->ctx, 1, paths, &o);
    const char sorted[] = "\n ,dehlorw";
    assert_int_equal(tg_text_vocab_size(t), (int64_t)strlen(sorted));
    for (int i = 0; sorted[i]; i++) {
        assert_int_equal(tg_text_decode(t, i), (unsigned char)sorted[i]);
        assert_int_equal(tg_text_encode(t, (unsigned char)sorted[i]), i);
    }
    assert_int_equal(tg_text_encode(t, 'z'), -1);
    assert_int_equal(tg_text_encode(t, 0), -1);
    assert_int_equal(tg_text_decode(t, 10), -1);
    assert_int_equal(tg_text_length(t, false), 752); /* int(0.75 * 1003) */
    assert_int_equal(tg_text_length(t, true), 251);
    tg_text_free(t);

    /* No validation; and the text comes back byte for byte through the ids. */
    t = load(f->ctx, 1, paths, &(tg_text_options){TG_OPTION_ZERO, true});
    assert_int_equal(tg_text_length(t, false), n);
    assert_int_equal(tg_text_length(t, true), 0);
    unsigned char back[1003];
    assert_int_equal(whole_text(f, t, back, sizeof back), n);
    assert_memory_equal(back, text, n);
    tg_text_free(t);
    free(text);

    tg_text_free(NULL);
    assert_int_equal(tg_text_vocab_size(NULL), -1);
    assert_int_equal(tg_text_length(NULL, false), -1);
    assert_int_equal(tg_text_encode(NULL, 'a'), -1);
    assert_int_equal(tg_text_decode(NULL, 0), -1);
}

/* Files in the order given; a directory's regular files in name order, without the binary
 * ones (a NUL byte), subdirectories and symbolic links. */
static void files_and_directories(void **state)
{
    fixture *f = *state;
    char dir[128], sub[160], a[128], b[160], path[256];
    tmp_path(dir, sizeof dir, "corpus");
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(b, sizeof b, "%s/b", dir);
    write_all(b, "bbb\n", 4);
    snprintf(path, sizeof path, "%s/a", dir);
    write_all(path, "first\n", 6);
    snprintf(path, sizeof path, "%s/Z", dir); /* uppercase sorts first, bytewise */
    write_all(path, "Zed\n", 4);
    snprintf(path, sizeof path, "%s/c.dat", dir);
    write_all(path, "\0\0\0\2index", 9);
    snprintf(path, sizeof path, "%s/empty", dir);
    write_all(path, "", 0);
    snprintf(path, sizeof path, "%s/a.u8", dir);
    assert_int_equal(symlink("a", path), 0);
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(path, sizeof path, "%s/inner", sub);
    write_all(path, "nested\n", 7);
    put(a, sizeof a, "loose", "x\0y", 3); /* named itself: read whole, NUL and all */

    unsigned char got[64];
    const char *one[] = {dir};
    tg_text *t = load(f->ctx, 1, one, &no_validation);
    size_t n = whole_text(f, t, got, sizeof got);
    assert_int_equal(n, 14);
    assert_memory_equal(got, "Zed\nfirst\nbbb\n", 14);
    tg_text_free(t);

    char slashed[140];
    snprintf(slashed, sizeof slashed, "%s/", dir); /* a trailing slash changes nothing */
    const char *three[] = {b, a, slashed};
    t = load(f->ctx, 3, three, &no_validation);
    n = whole_text(f, t, got, sizeof got);
    assert_int_equal(n, 4 + 3 + 14);
    assert_memory_equal(got, "bbb\nx\0yZed\nfirst\nbbb\n", n);
    tg_text_free(t);
}

static void load_errors(void **state)
{
    fixture *f = *state;
    char missing[128], empty[128], good[128], bin[128];
    tmp_path(missing, sizeof missing, "missing.txt");
    put(empty, sizeof empty, "empty.txt", "", 0);
    put(good, sizeof good, "good.txt", "some text", 9);
    tmp_path(bin, sizeof bin, "binaries");
    assert_int_equal(mkdir(bin, 0700), 0);
    char dat[160];
    snprintf(dat, sizeof dat, "%s/x.dat", bin);
    write_all(dat, "a\0b", 3);
    static const struct {
        int which; /* 0: missing, 1: good then missing, 2: empty, 3: binaries only */
        tg_status st;
        const char *needle;
    } cases[] = {
        {0, TG_IO, "No such file or directory"},
        {1, TG_IO, "No such file or directory"},
        {2, TG_INVALID, "no text in"},
        {3, TG_INVALID, "only binary files"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *paths[2] = {cases[i].which == 0   ? missing
                                : cases[i].which == 1 ? good
                                : cases[i].which == 2 ? empty
                                                      : bin,
                                missing};
        tg_text *t = (tg_text *)1;
        assert_status(tg_text_load(f->ctx, cases[i].which == 1 ? 2 : 1, paths, NULL, &t),
                      cases[i].st);
        assert_null(t);
        assert_contains(tg_ctx_error(f->ctx), "tg_text_load: ");
        assert_contains(tg_ctx_error(f->ctx), cases[i].needle);
        if (cases[i].st == TG_IO)
            assert_contains(tg_ctx_error(f->ctx), missing);
    }
    const char *paths[] = {good};
    tg_text *t = (tg_text *)1;
    const double bad[] = {1, 1.5, -0.25, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tg_text_options o = {.validation_fraction = bad[i]};
        assert_status(tg_text_load(f->ctx, 1, paths, &o, &t), TG_RANGE);
        assert_null(t);
        assert_contains(tg_ctx_error(f->ctx), "validation_fraction");
    }
    assert_status(tg_text_load(f->ctx, 0, paths, NULL, &t), TG_INVALID);
    assert_status(tg_text_load(f->ctx, 1, NULL, NULL, &t), TG_INVALID);
    assert_status(tg_text_load(f->ctx, 1, (const char *[]){NULL}, NULL, &t), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "path 0 is NULL");
    assert_status(tg_text_load(f->ctx, 1, paths, NULL, NULL), TG_INVALID);
    assert_status(tg_text_load(NULL, 1, paths, NULL, &t), TG_INVALID);
}

/* ---- batches ----------------------------------------------------------------------------- */

/* Every window of a batch is a contiguous slice of its split's bytes (found at one place only)
 * and its targets are its inputs shifted by one. Returns the start of window b in *starts. */
static void check_windows(const tg_text *t, tg_tensor x, tg_tensor y, const unsigned char *split,
                          int64_t length, int64_t batch, int64_t context, int64_t *starts)
{
    assert_int_equal(tg_tensor_dtype(x), TG_I64);
    assert_int_equal(tg_tensor_dtype(y), TG_I64);
    assert_int_equal(tg_ndim(x), 2);
    assert_int_equal(tg_dim(x, 0), batch);
    assert_int_equal(tg_dim(x, 1), context);
    assert_int_equal(tg_dim(y, 0), batch);
    assert_int_equal(tg_dim(y, 1), context);
    const int64_t *xs = tg_data(x), *ys = tg_data(y);
    unsigned char window[64];
    assert_true(context < 64);
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t c = 0; c < context; c++) {
            window[c] = (unsigned char)tg_text_decode(t, xs[b * context + c]);
            if (c + 1 < context)
                assert_int_equal(ys[b * context + c], xs[b * context + c + 1]);
        }
        window[context] = (unsigned char)tg_text_decode(t, ys[b * context + context - 1]);
        int64_t found = -1;
        for (int64_t s = 0; s + context < length; s++) {
            if (!memcmp(split + s, window, (size_t)context + 1)) {
                assert_int_equal(found, -1); /* one place only */
                found = s;
            }
        }
        if (found < 0)
            fail_msg("window %lld is not a slice of the split", (long long)b);
        starts[b] = found;
    }
}

static void batches_are_windows_of_the_split(void **state)
{
    fixture *f = *state;
    char path[128];
    const size_t n = 3000;
    unsigned char *text = random_text(n, "abcdefghijklmnopqrstuvwxyz", 2);
    put(path, sizeof path, "t", text, n);
    tg_text *t = load(f->ctx, 1, (const char *[]){path}, &(tg_text_options){0.2, true});
    int64_t train = tg_text_length(t, false), val = tg_text_length(t, true), starts[16];
    assert_int_equal(train, 2400);
    assert_int_equal(val, 600);
    for (int split = 0; split < 2; split++) {
        for (int64_t step = 0; step < 40; step++) {
            tg_tensor x, y;
            assert_status(tg_text_batch(t, f->tp, split, 16, 12, 7, step, &x, &y), TG_OK);
            check_windows(t, x, y, text + (split ? train : 0), split ? val : train, 16, 12, starts);
            tg_tape_reset(f->tp);
        }
    }
    tg_text_free(t);

    /* A split of 5 tokens and windows of 3 + 1: two starts, both drawn about equally (the last
     * token is a target too). */
    t = load(f->ctx, 1, (const char *[]){path}, &(tg_text_options){0.9982, false});
    assert_int_equal(tg_text_length(t, false), 5); /* int((1 - 0.9982) * 3000) */
    tg_tensor x, y;
    assert_status(tg_text_batch(t, f->tp, false, 4000, 3, 3, 0, &x, &y), TG_OK);
    int64_t count[2] = {0, 0}, first[4000];
    check_windows(t, x, y, text, 5, 4000, 3, first);
    for (int b = 0; b < 4000; b++)
        count[first[b]]++;
    print_message("two starts drawn %lld and %lld times of 4000\n", (long long)count[0],
                  (long long)count[1]);
    assert_true(count[0] > 1800 && count[1] > 1800);
    tg_text_free(t);
    free(text);
}

static void batches_are_reproducible(void **state)
{
    fixture *f = *state;
    char path[128];
    const size_t n = 5000;
    unsigned char *text = random_text(n, "0123456789", 3);
    put(path, sizeof path, "t", text, n);
    free(text);
    tg_text *t = load(f->ctx, 1, (const char *[]){path}, NULL);
    enum { B = 8, C = 16, STEPS = 10 };
    int64_t run[STEPS][2][B * C];
    for (int64_t step = 0; step < STEPS; step++) {
        tg_tensor x, y;
        assert_status(tg_text_batch(t, f->tp, false, B, C, 42, step, &x, &y), TG_OK);
        memcpy(run[step][0], tg_data(x), sizeof run[step][0]);
        memcpy(run[step][1], tg_data(y), sizeof run[step][1]);
        tg_tape_reset(f->tp);
    }
    /* Resumed at step 6 (on another tape, after other draws): the same batches. */
    tg_tape *other;
    assert_status(tg_tape_new(f->ctx, &other), TG_OK);
    tg_tensor x, y;
    assert_status(tg_text_batch(t, other, true, B, C, 42, 0, &x, &y), TG_OK);
    for (int64_t step = 6; step < STEPS; step++) {
        assert_status(tg_text_batch(t, other, false, B, C, 42, step, &x, &y), TG_OK);
        assert_memory_equal(tg_data(x), run[step][0], sizeof run[step][0]);
        assert_memory_equal(tg_data(y), run[step][1], sizeof run[step][1]);
    }
    tg_tape_free(other);
    /* Another step, another seed, the other split: other windows. A smaller batch is a prefix
     * (window b depends on b, not on the batch size). */
    assert_memory_not_equal(run[0][0], run[1][0], sizeof run[0][0]);
    assert_status(tg_text_batch(t, f->tp, false, B, C, 43, 0, &x, &y), TG_OK);
    assert_memory_not_equal(tg_data(x), run[0][0], sizeof run[0][0]);
    assert_status(tg_text_batch(t, f->tp, true, B, C, 42, 0, &x, &y), TG_OK);
    assert_memory_not_equal(tg_data(x), run[0][0], sizeof run[0][0]);
    assert_status(tg_text_batch(t, f->tp, false, 3, C, 42, 4, &x, &y), TG_OK);
    assert_memory_equal(tg_data(x), run[4][0], 3 * C * sizeof(int64_t));

    /* Steady state: once the tape's arena has grown, a batch makes no allocator call. */
    tg_tape_reset(f->tp);
    assert_status(tg_text_batch(t, f->tp, false, B, C, 42, 0, &x, &y), TG_OK);
    uint64_t calls = tg_ctx_alloc_calls(f->ctx);
    for (int64_t step = 1; step < 50; step++) {
        tg_tape_reset(f->tp);
        assert_status(tg_text_batch(t, f->tp, false, B, C, 42, step, &x, &y), TG_OK);
    }
    assert_int_equal(tg_ctx_alloc_calls(f->ctx), calls);
    tg_text_free(t);
}

static void batch_errors(void **state)
{
    fixture *f = *state;
    char path[128];
    put(path, sizeof path, "t", "0123456789", 10);
    tg_text *t = load(f->ctx, 1, (const char *[]){path}, NULL); /* 9 train, 1 validation */
    tg_tensor x = {0}, y = {0};
    assert_status(tg_text_batch(t, f->tp, false, 2, 8, 1, 0, &x, &y), TG_OK);
    tg_tape_reset(f->tp);
    static const struct {
        bool validation;
        int64_t batch, context, step;
        tg_status st;
        const char *needle;
    } cases[] = {
        {false, 2, 9, 0, TG_RANGE,
         "the training split holds 9 tokens, not more than the "
         "context 9 (a window is context + 1 tokens)"},
        {true, 1, 1, 0, TG_RANGE, "the validation split holds 1 tokens"},
        {false, 0, 4, 0, TG_RANGE, "batch 0"},
        {false, 2, 0, 0, TG_RANGE, "context 0"},
        {false, 2, 4, -1, TG_RANGE, "step -1"},
        {false, 2, INT64_MAX, 0, TG_RANGE, "the context 9223372036854775807"},
        {false, INT64_MAX, 4, 0, TG_RANGE, "are too many"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tg_tape_reset(f->tp);
        x = y = tg_zeros(f->tp, TG_F32, 0, NULL);
        assert_status(tg_text_batch(t, f->tp, cases[i].validation, cases[i].batch, cases[i].context,
                                    1, cases[i].step, &x, &y),
                      cases[i].st);
        assert_false(tg_ok(x));
        assert_false(tg_ok(y));
        assert_status(tg_tape_status(f->tp), cases[i].st);
        assert_contains(tg_tape_error(f->tp), "tg_text_batch: ");
        assert_contains(tg_tape_error(f->tp), cases[i].needle);
    }
    tg_tape_reset(f->tp);
    assert_status(tg_text_batch(NULL, f->tp, false, 1, 1, 1, 0, &x, &y), TG_INVALID);
    assert_contains(tg_tape_error(f->tp), "the text is NULL");
    tg_tape_reset(f->tp);
    assert_status(tg_text_batch(t, f->tp, false, 1, 1, 1, 0, NULL, &y), TG_INVALID);
    assert_false(tg_ok(y));
    assert_status(tg_text_batch(t, NULL, false, 1, 1, 1, 0, &x, &y), TG_INVALID);
    assert_false(tg_ok(x));
    /* A tape in error: its status, error handles, nothing recorded. */
    tg_tape_reset(f->tp);
    tg_tape_fail(f->tp, TG_SHAPE, "earlier");
    size_t nodes = tg_tape_node_count(f->tp);
    assert_status(tg_text_batch(t, f->tp, false, 1, 1, 1, 0, &x, &y), TG_SHAPE);
    assert_false(tg_ok(x));
    assert_int_equal(tg_tape_node_count(f->tp), nodes);
    assert_string_equal(tg_tape_error(f->tp), "earlier");
    tg_text_free(t);
}

/* Every allocation failure of a load (a directory) and of a batch is TG_NOMEM with a message,
 * and leaks nothing. */
static void allocation_failures(void **state)
{
    (void)state;
    char dir[128], path[160];
    tmp_path(dir, sizeof dir, "d");
    assert_int_equal(mkdir(dir, 0700), 0);
    unsigned char *text = random_text(100000, "abc\n", 4); /* more than one read chunk */
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/f%d", dir, i);
        write_all(path, text, 100000 - (size_t)i * 40000);
    }
    free(text);
    bool succeeded = false;
    int nomem = 0;
    for (long k = 1; !succeeded && k < 1000; k++) {
        counter c = {0, 0, 0};
        tg_ctx *ctx;
        assert_status(
            tg_ctx_new(&ctx, &(tg_ctx_options){.alloc = counting_alloc, .alloc_user = &c}), TG_OK);
        long long base = c.live;
        tg_tape *tp = NULL;
        tg_text *t = NULL;
        c.fail_at = c.calls + k;
        tg_status st = tg_text_load(ctx, 1, (const char *[]){dir}, NULL, &t);
        const char *msg = tg_ctx_error(ctx);
        if (st == TG_OK)
            st = tg_tape_new(ctx, &tp);
        if (st == TG_OK) {
            tg_tensor x, y;
            st = tg_text_batch(t, tp, false, 64, 32, 1, 0, &x, &y);
            msg = tg_tape_error(tp);
        }
        if (st == TG_OK) {
            succeeded = true;
        } else {
            assert_int_equal(st, TG_NOMEM);
            assert_contains(msg, "memory");
            nomem++;
            if (!t)
                assert_null(tp);
        }
        tg_tape_free(tp);
        tg_text_free(t);
        assert_int_equal(c.live, base);
        tg_ctx_free(ctx);
        assert_int_equal(c.live, 0);
    }
    assert_true(succeeded);
    assert_true(nomem >= 5);
}

/* ---- Debian's fortunes ------------------------------------------------------------------- */

#define FORTUNES "/usr/share/games/fortunes"

/* The bytes of the directory's regular files not named *.dat, by another rule than the
 * loader's (names, not contents). */
static int64_t text_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int64_t total = 0;
    for (struct dirent *e; (e = readdir(d));) {
        char path[512];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len = strlen(e->d_name);
        if (lstat(path, &sb) == 0 && S_ISREG(sb.st_mode)
            && !(len > 4 && !strcmp(e->d_name + len - 4, ".dat")))
            total += sb.st_size;
    }
    closedir(d);
    return total;
}

static void fortunes(void **state)
{
    fixture *f = *state;
    struct stat sb;
    if (stat(FORTUNES "/fortunes", &sb) != 0) {
        skip();
        return;
    }
    tg_text_options o = {.char_vocab = true};
    tg_text *t = load(f->ctx, 1, (const char *[]){FORTUNES}, &o);
    int64_t length = tg_text_length(t, false) + tg_text_length(t, true);
    int64_t expected = text_bytes(FORTUNES);
    print_message("fortunes: %lld bytes, vocabulary %lld\n", (long long)length,
                  (long long)tg_text_vocab_size(t));
    assert_int_equal(length, expected); /* the .dat indexes and .u8 links left out */
    assert_int_equal(tg_text_encode(t, 0), -1);
    assert_true(tg_text_encode(t, 'e') >= 0 && tg_text_encode(t, '\n') >= 0);
    assert_true(tg_text_vocab_size(t) > 60 && tg_text_vocab_size(t) < 256);
    assert_int_equal(tg_text_length(t, true), length - (int64_t)(0.9 * (double)length));
    tg_tensor x, y;
    assert_status(tg_text_batch(t, f->tp, true, 32, 128, 5, 0, &x, &y), TG_OK);
    tg_text_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TMPDIR_FIXTURE_TEST(split_and_vocabularies),
        TMPDIR_FIXTURE_TEST(files_and_directories),
        TMPDIR_FIXTURE_TEST(load_errors),
        TMPDIR_FIXTURE_TEST(batches_are_windows_of_the_split),
        TMPDIR_FIXTURE_TEST(batches_are_reproducible),
        TMPDIR_FIXTURE_TEST(batch_errors),
        TMPDIR_TEST(allocation_failures),
        FIXTURE_TEST(fortunes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
