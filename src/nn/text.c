/* text.c — a token stream for character-level language models, on the public API only: the
 * bytes of text files as tokens (all 256 byte values, or the sorted set of bytes present), a
 * train/validation split, and batches of random windows whose starts are a counter-based hash
 * of (seed, split, step, window), so a resumed run draws what the uninterrupted one drew.
 *
 * Memory: everything through the context's allocator. Files are read in fixed chunks into one
 * buffer that grows with the bytes actually read, which then holds the token ids in place. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <tapegrad.h>

struct tg_text {
    tg_ctx *ctx;
    unsigned char *tokens; /* token ids: the training split, then the validation split */
    size_t tokens_bytes;   /* the buffer's allocated size */
    int64_t length;        /* tokens in all */
    int64_t train;         /* tokens in the training split */
    int vocab;
    short id[256];           /* byte -> token id, -1 when the byte is not in the vocabulary */
    unsigned char byte[256]; /* token id -> byte */
};

#define READ_CHUNK 65536

static const char fn_load[] = "tg_text_load";

/* ---- reading files ------------------------------------------------------------------------ */

/* The bytes read so far, in one buffer of `cap` bytes. */
typedef struct reader {
    tg_ctx *ctx;
    unsigned char *buf;
    size_t len, cap;
} reader;

/* Makes room for `more` bytes after the `len` read. */
static tg_status reserve(reader *r, size_t more, const char *path)
{
    if (r->cap - r->len >= more)
        return TG_OK;
    if (more > SIZE_MAX / 4 - r->len)
        return tg_ctx_fail(r->ctx, TG_NOMEM, "%s: out of memory: %s makes the text too large",
                           fn_load, path);
    size_t cap = r->cap ? r->cap : READ_CHUNK;
    while (cap - r->len < more)
        cap = cap <= SIZE_MAX / 8 ? cap * 2 : SIZE_MAX / 4;
    unsigned char *grown = tg_realloc(r->ctx, r->buf, r->cap, cap);
    if (!grown)
        return tg_ctx_fail(r->ctx, TG_NOMEM, "%s: out of memory reading %s", fn_load, path);
    r->buf = grown;
    r->cap = cap;
    return TG_OK;
}

/* Appends the bytes of the file at `path`. With skip_binary, a file holding a NUL byte (the
 * binary ones: fortune's .dat indexes, for instance) is read and then dropped. */
static tg_status read_file(reader *r, const char *path, bool skip_binary)
{
    errno = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return tg_ctx_fail(r->ctx, errno == ENOMEM ? TG_NOMEM : TG_IO, "%s: cannot open %s: %s",
                           fn_load, path, strerror(errno));
    size_t start = r->len;
    tg_status st = TG_OK;
    for (;;) {
        st = reserve(r, READ_CHUNK, path);
        if (st)
            break;
        size_t got = fread(r->buf + r->len, 1, READ_CHUNK, fp);
        r->len += got;
        if (got < READ_CHUNK) {
            if (ferror(fp))
                st = tg_ctx_fail(r->ctx, TG_IO, "%s: error reading %s: %s", fn_load, path,
                                 strerror(errno));
            break;
        }
    }
    fclose(fp);
    if (st == TG_OK && skip_binary && memchr(r->buf + start, 0, r->len - start))
        r->len = start;
    return st;
}

/* "dir/name" (one slash), allocated; NULL when out of memory. *size receives its size. */
static char *join(tg_ctx *ctx, const char *dir, const char *name, size_t *size)
{
    size_t nd = strlen(dir), nn = strlen(name);
    bool slash = nd == 0 || dir[nd - 1] != '/';
    *size = nd + slash + nn + 1;
    char *path = tg_alloc(ctx, *size);
    if (path)
        snprintf(path, *size, "%s%s%s", dir, slash ? "/" : "", name);
    return path;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The names in directory `path` (not . and ..), NUL-separated in *names (of *size bytes), and
 * their count. */
static tg_status list_directory(tg_ctx *ctx, const char *path, char **names, size_t *size,
                                size_t *count)
{
    errno = 0;
    DIR *dir = opendir(path);
    if (!dir)
        return tg_ctx_fail(ctx, errno == ENOMEM ? TG_NOMEM : TG_IO,
                           "%s: cannot open directory %s: %s", fn_load, path, strerror(errno));
    reader list = {ctx, NULL, 0, 0};
    tg_status st = TG_OK;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(dir);
        if (!e) {
            if (errno)
                st = tg_ctx_fail(ctx, TG_IO, "%s: error reading directory %s: %s", fn_load, path,
                                 strerror(errno));
            break;
        }
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        size_t n = strlen(e->d_name) + 1;
        st = reserve(&list, n, path);
        if (st)
            break;
        memcpy(list.buf + list.len, e->d_name, n);
        list.len += n;
        ++*count;
    }
    closedir(dir);
    if (st) {
        tg_free(ctx, list.buf, list.cap);
        list.buf = NULL;
        list.cap = 0;
    }
    *names = (char *)list.buf;
    *size = list.cap;
    return st;
}

/* Appends the regular files of directory `path` in name order (bytewise, as strcmp orders),
 * skipping the binary ones. Not recursive; symbolic links are skipped too (Debian's fortunes
 * directory links each text file again under a ".u8" name). */
static tg_status read_directory(reader *r, const char *path)
{
    char *names = NULL;
    size_t names_size = 0, count = 0;
    tg_status st = list_directory(r->ctx, path, &names, &names_size, &count);
    if (st)
        return st;
    const char **sorted = count ? tg_alloc(r->ctx, count * sizeof *sorted) : NULL;
    if (count && !sorted)
        st = tg_ctx_fail(r->ctx, TG_NOMEM, "%s: out of memory listing %s", fn_load, path);
    const char *name = names;
    for (size_t i = 0; !st && i < count; i++, name += strlen(name) + 1)
        sorted[i] = name;
    if (!st && count)
        qsort(sorted, count, sizeof *sorted, compare_names);
    for (size_t i = 0; !st && i < count; i++) {
        size_t size;
        char *file = join(r->ctx, path, sorted[i], &size);
        struct stat sb;
        if (!file)
            st = tg_ctx_fail(r->ctx, TG_NOMEM, "%s: out of memory listing %s", fn_load, path);
        else if (lstat(file, &sb) != 0)
            st = tg_ctx_fail(r->ctx, TG_IO, "%s: cannot open %s: %s", fn_load, file,
                             strerror(errno));
        else if (S_ISREG(sb.st_mode))
            st = read_file(r, file, true);
        tg_free(r->ctx, file, size);
    }
    tg_free(r->ctx, sorted, count * sizeof *sorted);
    tg_free(r->ctx, names, names_size);
    return st;
}

/* ---- the token stream --------------------------------------------------------------------- */

/* The vocabulary: every byte value, or (char_vocab) the bytes present in sorted order; then the
 * bytes become token ids in place. */
static void make_vocabulary(tg_text *t, bool char_vocab)
{
    bool present[256] = {false};
    if (char_vocab)
        for (int64_t i = 0; i < t->length; i++)
            present[t->tokens[i]] = true;
    t->vocab = 0;
    for (int b = 0; b < 256; b++) {
        t->id[b] = -1;
        if (char_vocab && !present[b])
            continue;
        t->id[b] = (short)t->vocab;
        t->byte[t->vocab++] = (unsigned char)b;
    }
    if (char_vocab)
        for (int64_t i = 0; i < t->length; i++)
            t->tokens[i] = (unsigned char)t->id[t->tokens[i]];
}

/* The validation fraction the options ask for (0: the default 0.1; TG_OPTION_ZERO: none). */
static double validation_fraction(const tg_text_options *o)
{
    double f = o ? o->validation_fraction : 0;
    return f == 0 ? 0.1 : f == TG_OPTION_ZERO ? 0 : f;
}

tg_status tg_text_load(tg_ctx *ctx, int n, const char *const *paths, const tg_text_options *o,
                       tg_text **out)
{
    if (!ctx)
        return TG_INVALID;
    if (!out)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: out is NULL", fn_load);
    *out = NULL;
    if (n < 1 || !paths)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: no paths (n = %d)", fn_load, n);
    for (int i = 0; i < n; i++)
        if (!paths[i])
            return tg_ctx_fail(ctx, TG_INVALID, "%s: path %d is NULL", fn_load, i);
    double f = validation_fraction(o);
    if (!(f >= 0 && f < 1))
        return tg_ctx_fail(ctx, TG_RANGE, "%s: validation_fraction %g (need 0 <= f < 1)", fn_load,
                           f);

    reader r = {ctx, NULL, 0, 0};
    tg_status st = TG_OK;
    for (int i = 0; !st && i < n; i++) {
        struct stat sb;
        if (stat(paths[i], &sb) != 0)
            st = tg_ctx_fail(ctx, TG_IO, "%s: cannot open %s: %s", fn_load, paths[i],
                             strerror(errno));
        else
            st =
                S_ISDIR(sb.st_mode) ? read_directory(&r, paths[i]) : read_file(&r, paths[i], false);
    }
    if (!st && r.len == 0)
        st = tg_ctx_fail(ctx, TG_INVALID, "%s: no text in %s%s (no bytes, or only binary files)",
                         fn_load, paths[0], n > 1 ? " and the other paths" : "");
    tg_text *t = st ? NULL : tg_alloc(ctx, sizeof *t);
    if (!st && !t)
        st = tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn_load);
    if (st) {
        tg_free(ctx, r.buf, r.cap);
        return st;
    }
    memset(t, 0, sizeof *t);
    t->ctx = ctx;
    t->tokens = r.buf;
    t->tokens_bytes = r.cap;
    t->length = (int64_t)r.len;
    t->train = (int64_t)((1 - f) * (double)t->length); /* as nanoGPT: int(0.9 * len(data)) */
    make_vocabulary(t, o && o->char_vocab);
    *out = t;
    return TG_OK;
}

void tg_text_free(tg_text *t)
{
    if (!t)
        return;
    tg_free(t->ctx, t->tokens, t->tokens_bytes);
    tg_free(t->ctx, t, sizeof *t);
}

int64_t tg_text_vocab_size(const tg_text *t) { return t ? t->vocab : -1; }

int64_t tg_text_length(const tg_text *t, bool validation)
{
    if (!t)
        return -1;
    return validation ? t->length - t->train : t->train;
}

int64_t tg_text_encode(const tg_text *t, unsigned char byte) { return t ? t->id[byte] : -1; }

int tg_text_decode(const tg_text *t, int64_t token)
{
    return t && token >= 0 && token < t->vocab ? t->byte[token] : -1;
}

/* ---- batches ------------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Window `window`'s start in [0, range), unbiased (draws below 2^64 mod range are redrawn), a
 * pure function of (seed, split, step, window). */
static int64_t window_start(uint64_t seed, bool validation, int64_t step, int64_t window,
                            uint64_t range)
{
    uint64_t key = mix64(mix64(mix64(seed) ^ (validation ? 2u : 1u)) ^ (uint64_t)step);
    key = mix64(key ^ (uint64_t)window);
    uint64_t reject = (0 - range) % range, r, attempt = 0;
    do
        r = mix64(key ^ attempt++);
    while (r < reject);
    return (int64_t)(r % range);
}

tg_status tg_text_batch(const tg_text *t, tg_tape *tp, bool validation, int64_t batch,
                        int64_t context, uint64_t seed, int64_t step, tg_tensor *inputs,
                        tg_tensor *targets)
{
    static const char fn[] = "tg_text_batch";
    if (inputs)
        *inputs = tg_error(tp);
    if (targets)
        *targets = tg_error(tp);
    if (!tp)
        return TG_INVALID;
    if (tg_tape_status(tp))
        return tg_tape_status(tp);
    const char *missing = !t ? "the text" : !inputs ? "inputs" : !targets ? "targets" : NULL;
    if (missing)
        return tg_tape_fail(tp, TG_INVALID, "%s: %s is NULL", fn, missing);
    if (batch < 1 || context < 1 || step < 0)
        return tg_tape_fail(tp, TG_RANGE,
                            "%s: batch %lld, context %lld, step %lld (need batch and context >= 1, "
                            "step >= 0)",
                            fn, (long long)batch, (long long)context, (long long)step);
    int64_t length = tg_text_length(t, validation);
    if (length <= context)
        return tg_tape_fail(tp, TG_RANGE,
                            "%s: the %s split holds %lld tokens, not more than the context %lld "
                            "(a window is context + 1 tokens)",
                            fn, validation ? "validation" : "training", (long long)length,
                            (long long)context);
    if (batch > INT64_MAX / 16 / context)
        return tg_tape_fail(tp, TG_RANGE, "%s: %lld windows of %lld tokens are too many", fn,
                            (long long)batch, (long long)context);
    int64_t shape[2] = {batch, context};
    tg_tensor x = tg_zeros(tp, TG_I64, 2, shape), y = tg_zeros(tp, TG_I64, 2, shape);
    if (!tg_ok(x) || !tg_ok(y))
        return tg_tape_status(tp);
    /* Fresh leaves: their buffers are theirs alone, filled here in place of a staging copy. */
    int64_t *xs = (int64_t *)tg_data(x), *ys = (int64_t *)tg_data(y);
    const unsigned char *split = t->tokens + (validation ? t->train : 0);
    for (int64_t b = 0; b < batch; b++) {
        const unsigned char *w =
            split + window_start(seed, validation, step, b, (uint64_t)(length - context));
        for (int64_t c = 0; c < context; c++) {
            xs[b * context + c] = w[c];
            ys[b * context + c] = w[c + 1];
        }
    }
    *inputs = x;
    *targets = y;
    return TG_OK;
}
