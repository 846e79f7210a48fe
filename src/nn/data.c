/* data.c — datasets (IDX files, plain or gzip-compressed, or memory) and a shuffling batch
 * iterator, on the public API only.
 *
 * IDX: a big-endian magic 0x0000TTNN (TT the element type, 0x08 for unsigned bytes; NN the number
 * of dims), NN big-endian u32 dims, then the elements row-major. Images are 0x00000803 [N, H, W],
 * labels 0x00000801 [N]. zlib's gzread reads gzip-compressed and plain files alike.
 *
 * Memory: everything through the context's allocator. A file's payload is read in fixed chunks
 * into an output buffer that grows with the data actually present, so a header claiming an
 * absurd size costs no more memory than the file holds before it is found truncated.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <zlib.h>

#include <tapegrad.h>

struct tg_dataset {
    tg_ctx *ctx;
    int64_t n;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t sample_numel;
    int64_t classes;
    float *x;
    size_t x_bytes;
    int64_t *labels;
    size_t labels_bytes;
};

struct tg_batches {
    const tg_dataset *d;
    tg_ctx *ctx;
    int64_t batch;
    bool shuffle, drop_last;
    uint64_t seed;
    int64_t shard, nshards; /* this iterator serves order[shard], order[shard + nshards], ... */
    int64_t *perm;          /* the epoch's order, n entries (staged only) */
    float *xstage;          /* one batch of samples, gathered (staged, or augmented) */
    int64_t *lstage;
    size_t perm_bytes, xstage_bytes, lstage_bytes;
    int64_t pos; /* next sample of the shard's epoch */
    int64_t end; /* samples the shard serves this epoch */
    int64_t epoch;
    bool started;
    tg_augment_options augment; /* all zero: none */
};

/* Whether batches are gathered through perm (shuffled or sharded) rather than read in place. */
static bool staged(const tg_batches *b) { return b->shuffle || b->nshards > 1; }

/* Largest payload accepted from a file, in elements: far above any real dataset, far below
 * anything whose byte count could overflow. */
#define IDX_MAX_ELEMENTS (INT64_C(1) << 36)
#define IDX_CHUNK 65536

/* ---- datasets ---------------------------------------------------------------------------- */

static void dataset_release(tg_dataset *d)
{
    if (!d)
        return;
    tg_free(d->ctx, d->x, d->x_bytes);
    tg_free(d->ctx, d->labels, d->labels_bytes);
    tg_free(d->ctx, d, sizeof *d);
}

void tg_dataset_free(tg_dataset *d) { dataset_release(d); }

/* A dataset of n samples of the given shape (numel values each), its data uninitialised. */
static tg_status dataset_alloc(tg_ctx *ctx, const char *fn, int64_t n, int ndim,
                               const int64_t *shape, int64_t numel, tg_dataset **out)
{
    tg_dataset *d = tg_alloc(ctx, sizeof *d);
    if (!d)
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    memset(d, 0, sizeof *d);
    d->ctx = ctx;
    d->n = n;
    d->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        d->shape[i] = shape[i];
    d->sample_numel = numel;
    d->x_bytes = (size_t)(n * numel) * sizeof(float);
    d->labels_bytes = (size_t)n * sizeof(int64_t);
    d->x = tg_alloc(ctx, d->x_bytes);
    d->labels = d->x ? tg_alloc(ctx, d->labels_bytes) : NULL;
    if (!d->labels) {
        dataset_release(d);
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory for %lld samples", fn, (long long)n);
    }
    *out = d;
    return TG_OK;
}

/* Classes = max label + 1; labels must be >= 0. Returns -1 at the first negative label. */
static int64_t count_classes(const int64_t *labels, int64_t n, int64_t *bad)
{
    int64_t classes = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0) {
            *bad = i;
            return -1;
        }
        if (labels[i] >= classes)
            classes = labels[i] + 1;
    }
    return classes;
}

tg_status tg_dataset_new(tg_ctx *ctx, int64_t n, int ndim, const int64_t *sample_shape,
                         const float *x, const int64_t *labels, tg_dataset **out)
{
    static const char fn[] = "tg_dataset_new";
    if (!ctx)
        return TG_INVALID;
    if (!out)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    if (n < 0)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: %lld samples", fn, (long long)n);
    /* A batch adds one dim in front of the sample's. */
    if (ndim < 0 || ndim > TG_MAX_DIMS - 1)
        return tg_ctx_fail(ctx, TG_SHAPE, "%s: samples of %d dims (0 to %d allowed)", fn, ndim,
                           TG_MAX_DIMS - 1);
    if (ndim > 0 && !sample_shape)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: sample_shape is NULL", fn);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (sample_shape[i] < 0)
            return tg_ctx_fail(ctx, TG_SHAPE, "%s: dim %d of the sample shape is %lld", fn, i,
                               (long long)sample_shape[i]);
        if (sample_shape[i] > 0 && numel > IDX_MAX_ELEMENTS / sample_shape[i])
            return tg_ctx_fail(ctx, TG_RANGE, "%s: samples too large", fn);
        numel *= sample_shape[i];
    }
    if (numel > 0 && n > IDX_MAX_ELEMENTS / numel)
        return tg_ctx_fail(ctx, TG_RANGE, "%s: %lld samples of %lld values are too many", fn,
                           (long long)n, (long long)numel);
    if (n > 0 && ((numel > 0 && !x) || !labels))
        return tg_ctx_fail(ctx, TG_INVALID, "%s: %s is NULL", fn, labels ? "x" : "labels");
    int64_t bad = 0;
    int64_t classes = n > 0 ? count_classes(labels, n, &bad) : 0;
    if (classes < 0)
        return tg_ctx_fail(ctx, TG_RANGE, "%s: label %lld is %lld (labels must be >= 0)", fn,
                           (long long)bad, (long long)labels[bad]);

    tg_dataset *d;
    tg_status st = dataset_alloc(ctx, fn, n, ndim, sample_shape, numel, &d);
    if (st)
        return st;
    d->classes = classes;
    if (d->x_bytes)
        memcpy(d->x, x, d->x_bytes);
    if (d->labels_bytes)
        memcpy(d->labels, labels, d->labels_bytes);
    *out = d;
    return TG_OK;
}

int64_t tg_dataset_size(const tg_dataset *d) { return d ? d->n : -1; }
int tg_dataset_sample_ndim(const tg_dataset *d) { return d ? d->ndim : -1; }
const int64_t *tg_dataset_sample_shape(const tg_dataset *d) { return d ? d->shape : NULL; }
int64_t tg_dataset_classes(const tg_dataset *d) { return d ? d->classes : -1; }

static void permute(int64_t *perm, int64_t n, uint64_t seed, uint64_t epoch);

/* A dataset of the samples perm[0..n) of d, in that order. */
static tg_status gather(const tg_dataset *d, const char *fn, const int64_t *perm, int64_t n,
                        tg_dataset **out)
{
    tg_status st = dataset_alloc(d->ctx, fn, n, d->ndim, d->shape, d->sample_numel, out);
    if (st)
        return st;
    size_t row = (size_t)d->sample_numel * sizeof(float);
    for (int64_t i = 0; i < n; i++) {
        if (row)
            memcpy((*out)->x + i * d->sample_numel, d->x + perm[i] * d->sample_numel, row);
        (*out)->labels[i] = d->labels[perm[i]];
    }
    int64_t bad;
    (*out)->classes = count_classes((*out)->labels, n, &bad); /* d's labels: never negative */
    return TG_OK;
}

tg_status tg_dataset_split(const tg_dataset *d, int64_t second_size, uint64_t seed,
                           tg_dataset **first, tg_dataset **second)
{
    static const char fn[] = "tg_dataset_split";
    if (!d)
        return TG_INVALID;
    tg_ctx *ctx = d->ctx;
    if (!first || !second)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: first or second is NULL", fn);
    *first = *second = NULL;
    if (second_size < 0 || second_size > d->n)
        return tg_ctx_fail(ctx, TG_RANGE, "%s: %lld samples out of %lld", fn,
                           (long long)second_size, (long long)d->n);
    size_t perm_bytes = (size_t)(d->n ? d->n : 1) * sizeof(int64_t);
    int64_t *perm = tg_alloc(ctx, perm_bytes);
    if (!perm)
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    permute(perm, d->n, seed, 0);
    int64_t n1 = d->n - second_size;
    tg_status st = gather(d, fn, perm, n1, first);
    if (!st)
        st = gather(d, fn, perm + n1, second_size, second);
    tg_free(ctx, perm, perm_bytes);
    if (st) {
        tg_dataset_free(*first);
        *first = NULL;
    }
    return st;
}

/* ---- IDX files --------------------------------------------------------------------------- */

/* An open IDX file with its header read. */
typedef struct idx_file {
    const char *path;
    gzFile gz;
    int ndim;
    int64_t dims[3];
    int64_t numel;        /* elements after the header */
    int64_t sample_numel; /* elements per sample: the product of the dims after the first */
} idx_file;

/* Reads up to n bytes (n <= IDX_CHUNK); returns the count read (< n only at the end of the
 * data), or -1 with *st and the context's error set. */
static int64_t idx_read(tg_ctx *ctx, idx_file *f, void *buf, size_t n, tg_status *st)
{
    static const char fn[] = "tg_dataset_load_idx";
    errno = 0;
    int r = gzread(f->gz, buf, (unsigned)n);
    if (r >= 0 && (size_t)r == n)
        return r;
    /* An error, the end of the data, or a gzip stream cut short (reported only by gzerror). */
    int code = 0;
    const char *msg = gzerror(f->gz, &code);
    if (code == Z_ERRNO) {
        *st = tg_ctx_fail(ctx, TG_IO, "%s: error reading %s: %s", fn, f->path,
                          errno ? strerror(errno) : "unknown error");
        return -1;
    }
    if (code == Z_MEM_ERROR) {
        *st = tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory reading %s", fn, f->path);
        return -1;
    }
    if (r < 0 || (code != Z_OK && code != Z_STREAM_END)) {
        *st = tg_ctx_fail(ctx, TG_FORMAT, "%s: %s is truncated or corrupt gzip data (%s)", fn,
                          f->path, msg ? msg : "?");
        return -1;
    }
    return r;
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* a * b for a, b >= 0 into *out when it is at most IDX_MAX_ELEMENTS; false (and *out untouched)
 * otherwise, without ever forming a product that overflows. */
static bool idx_product(int64_t a, int64_t b, int64_t *out)
{
    if (b != 0 && a > IDX_MAX_ELEMENTS / b)
        return false;
    *out = a * b;
    return true;
}

/* The sizes from the dims: elements per sample (all dims after the first) and in all, each at
 * most IDX_MAX_ELEMENTS, whatever the first dim (an empty file's images must have a sane size
 * too). */
static tg_status idx_sizes(tg_ctx *ctx, idx_file *f, const char *what)
{
    int64_t sample = 1;
    for (int i = 1; i < f->ndim; i++)
        if (!idx_product(sample, f->dims[i], &sample))
            return tg_ctx_fail(ctx, TG_FORMAT,
                               "tg_dataset_load_idx: %s file %s claims an absurd size (samples of "
                               "more than 2^36 elements)",
                               what, f->path);
    if (!idx_product(f->dims[0], sample, &f->numel))
        return tg_ctx_fail(ctx, TG_FORMAT,
                           "tg_dataset_load_idx: %s file %s claims an absurd size (%lld samples "
                           "of %lld elements, more than 2^36 in all)",
                           what, f->path, (long long)f->dims[0], (long long)sample);
    f->sample_numel = sample;
    return TG_OK;
}

/* Opens `path` and reads its header, which must be unsigned bytes of `ndim` dims. */
static tg_status idx_open(tg_ctx *ctx, const char *path, int ndim, const char *what, idx_file *f)
{
    static const char fn[] = "tg_dataset_load_idx";
    f->path = path;
    f->ndim = ndim;
    errno = 0;
    f->gz = gzopen(path, "rb");
    if (!f->gz)
        return tg_ctx_fail(ctx, errno == 0 ? TG_NOMEM : TG_IO, "%s: cannot open %s file %s: %s", fn,
                           what, path, errno == 0 ? "out of memory" : strerror(errno));
    gzbuffer(f->gz, 1u << 17);
    unsigned char head[4 + 4 * 3];
    size_t want = 4 + 4 * (size_t)ndim;
    tg_status st = TG_OK;
    int64_t got = idx_read(ctx, f, head, 4, &st);
    if (got < 0)
        return st;
    uint32_t expected = 0x00000800u | (uint32_t)ndim;
    if (got < 4)
        return tg_ctx_fail(ctx, TG_FORMAT,
                           "%s: %s file %s is too short for an IDX header (%lld bytes)", fn, what,
                           path, (long long)got);
    uint32_t magic = be32(head);
    if (magic != expected) {
        if ((magic & 0xffff0000u) == 0 && head[2] != 0x08)
            return tg_ctx_fail(ctx, TG_FORMAT,
                               "%s: %s file %s has IDX element type 0x%02x (only unsigned bytes, "
                               "0x08, are supported)",
                               fn, what, path, head[2]);
        return tg_ctx_fail(ctx, TG_FORMAT,
                           "%s: %s file %s has magic 0x%08x, expected 0x%08x (IDX unsigned "
                           "bytes, %d dims)",
                           fn, what, path, (unsigned)magic, (unsigned)expected, ndim);
    }
    got = idx_read(ctx, f, head + 4, want - 4, &st);
    if (got < 0)
        return st;
    if ((size_t)got < want - 4)
        return tg_ctx_fail(ctx, TG_FORMAT, "%s: %s file %s is truncated in its header", fn, what,
                           path);
    for (int i = 0; i < ndim; i++)
        f->dims[i] = be32(head + 4 + 4 * i);
    if (ndim == 3 && (f->dims[1] == 0 || f->dims[2] == 0))
        return tg_ctx_fail(ctx, TG_FORMAT, "%s: %s file %s has empty images (%lld x %lld)", fn,
                           what, path, (long long)f->dims[1], (long long)f->dims[2]);
    return idx_sizes(ctx, f, what);
}

/* Reads the f->numel bytes of payload, converting each with `convert` into *out (allocated here,
 * of *out_bytes), and checks that nothing follows them. */
typedef void (*convert_fn)(const unsigned char *src, size_t n, void *dst);

static void to_f32(const unsigned char *src, size_t n, void *dst)
{
    float *o = dst;
    for (size_t i = 0; i < n; i++)
        o[i] = (float)src[i] / 255.0f;
}

static void to_i64(const unsigned char *src, size_t n, void *dst)
{
    int64_t *o = dst;
    for (size_t i = 0; i < n; i++)
        o[i] = src[i];
}

static tg_status idx_payload(tg_ctx *ctx, idx_file *f, const char *what, unsigned char *chunk,
                             size_t elem, convert_fn convert, void **out, size_t *out_bytes)
{
    static const char fn[] = "tg_dataset_load_idx";
    size_t total = (size_t)f->numel, done = 0;
    /* Start small and grow with the data present: a lying header cannot make us allocate. */
    size_t cap = total < (size_t)1 << 20 ? total : (size_t)1 << 20;
    char *buf = tg_alloc(ctx, cap * elem);
    if (!buf)
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory reading %s", fn, f->path);
    tg_status st = TG_OK;
    while (done < total) {
        size_t want = total - done < IDX_CHUNK ? total - done : IDX_CHUNK;
        int64_t got = idx_read(ctx, f, chunk, want, &st);
        if (got < 0) {
            tg_free(ctx, buf, cap * elem);
            return st;
        }
        if (got == 0)
            break;
        if (done + (size_t)got > cap) {
            size_t ncap = cap * 2 > total ? total : cap * 2;
            if (ncap < done + (size_t)got)
                ncap = done + (size_t)got;
            char *nbuf = tg_realloc(ctx, buf, cap * elem, ncap * elem);
            if (!nbuf) {
                tg_free(ctx, buf, cap * elem);
                return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory reading %s", fn, f->path);
            }
            buf = nbuf;
            cap = ncap;
        }
        convert(chunk, (size_t)got, buf + done * elem);
        done += (size_t)got;
    }
    if (done < total) {
        st = tg_ctx_fail(ctx, TG_FORMAT,
                         "%s: %s file %s is truncated: its header promises %lld bytes of data, "
                         "it holds %lld",
                         fn, what, f->path, (long long)total, (long long)done);
    } else {
        int64_t extra = idx_read(ctx, f, chunk, 1, &st);
        if (extra > 0)
            st = tg_ctx_fail(ctx, TG_FORMAT,
                             "%s: %s file %s holds more data than its header's dims (%lld bytes)",
                             fn, what, f->path, (long long)total);
    }
    if (st != TG_OK) {
        tg_free(ctx, buf, cap * elem);
        return st;
    }
    *out = buf;
    *out_bytes = cap * elem;
    return TG_OK;
}

tg_status tg_dataset_load_idx(tg_ctx *ctx, const char *images_path, const char *labels_path,
                              tg_dataset **out)
{
    static const char fn[] = "tg_dataset_load_idx";
    if (!ctx)
        return TG_INVALID;
    if (!out)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    if (!images_path || !labels_path)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: a path is NULL", fn);

    idx_file img = {0}, lab = {0};
    tg_dataset *d = NULL;
    unsigned char *chunk = NULL;
    void *xs = NULL, *ls = NULL;
    size_t xs_bytes = 0, ls_bytes = 0;
    tg_status st = idx_open(ctx, images_path, 3, "images", &img);
    if (st == TG_OK)
        st = idx_open(ctx, labels_path, 1, "labels", &lab);
    if (st == TG_OK && img.dims[0] != lab.dims[0])
        st = tg_ctx_fail(ctx, TG_FORMAT, "%s: %s holds %lld labels but %s holds %lld images", fn,
                         labels_path, (long long)lab.dims[0], images_path, (long long)img.dims[0]);
    if (st == TG_OK && !(chunk = tg_alloc(ctx, IDX_CHUNK)))
        st = tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    if (st == TG_OK)
        st = idx_payload(ctx, &img, "images", chunk, sizeof(float), to_f32, &xs, &xs_bytes);
    if (st == TG_OK)
        st = idx_payload(ctx, &lab, "labels", chunk, sizeof(int64_t), to_i64, &ls, &ls_bytes);
    if (st == TG_OK && !(d = tg_alloc(ctx, sizeof *d)))
        st = tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    if (st == TG_OK) {
        memset(d, 0, sizeof *d);
        d->ctx = ctx;
        d->n = img.dims[0];
        d->ndim = 2;
        d->shape[0] = img.dims[1];
        d->shape[1] = img.dims[2];
        d->sample_numel = img.sample_numel;
        d->x = xs;
        d->x_bytes = xs_bytes;
        d->labels = ls;
        d->labels_bytes = ls_bytes;
        int64_t bad = 0;
        d->classes = count_classes(d->labels, d->n, &bad); /* u8 labels: never negative */
        xs = ls = NULL;
        *out = d;
    }
    tg_free(ctx, xs, xs_bytes);
    tg_free(ctx, ls, ls_bytes);
    tg_free(ctx, chunk, IDX_CHUNK);
    if (img.gz)
        gzclose(img.gz);
    if (lab.gz)
        gzclose(lab.gz);
    return st;
}

/* ---- batches ----------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A counter-based draw: a pure function of (seed, epoch, i, k). */
static uint64_t draw(uint64_t seed, uint64_t epoch, uint64_t i, uint64_t k)
{
    return mix64(mix64(mix64(mix64(seed) ^ epoch) ^ i) ^ k);
}

/* perm = a permutation of 0..n-1: Fisher-Yates, each swap index an unbiased draw from a hash of
 * (seed, epoch, i). */
static void permute(int64_t *perm, int64_t n, uint64_t seed, uint64_t epoch)
{
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        uint64_t range = (uint64_t)i + 1;
        uint64_t reject = (0 - range) % range; /* 2^64 mod range: values below are biased */
        uint64_t r, k = 0;
        do
            r = draw(seed, epoch, (uint64_t)i, k++);
        while (r < reject);
        int64_t j = (int64_t)(r % range);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

tg_status tg_batches_new(const tg_dataset *d, int64_t batch_size, bool shuffle, uint64_t seed,
                         bool drop_last, tg_batches **out)
{
    return tg_batches_new_shard(d, batch_size, shuffle, seed, drop_last, 0, 1, out);
}

tg_status tg_batches_new_shard(const tg_dataset *d, int64_t batch_size, bool shuffle, uint64_t seed,
                               bool drop_last, int64_t shard, int64_t nshards, tg_batches **out)
{
    static const char fn[] = "tg_batches_new_shard";
    if (!d)
        return TG_INVALID;
    tg_ctx *ctx = d->ctx;
    if (!out)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    if (batch_size < 1)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: batch size %lld (need >= 1)", fn,
                           (long long)batch_size);
    if (nshards < 1 || shard < 0 || shard >= nshards)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: shard %lld of %lld (need 0 <= shard < nshards)",
                           fn, (long long)shard, (long long)nshards);
    tg_batches *b = tg_alloc(ctx, sizeof *b);
    if (!b)
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    memset(b, 0, sizeof *b);
    b->d = d;
    b->ctx = ctx;
    b->batch = batch_size;
    b->shuffle = shuffle;
    b->seed = seed;
    b->drop_last = drop_last;
    b->shard = shard;
    b->nshards = nshards;
    if (staged(b)) {
        /* Allocated once: no allocator call while iterating. */
        int64_t count = d->n / nshards, rows = batch_size < count ? batch_size : count;
        rows = rows > 0 ? rows : 1;
        b->perm_bytes = (size_t)d->n * sizeof *b->perm;
        b->xstage_bytes = (size_t)(rows * d->sample_numel) * sizeof *b->xstage;
        b->lstage_bytes = (size_t)rows * sizeof *b->lstage;
        b->perm = tg_alloc(ctx, b->perm_bytes);
        b->xstage = b->perm ? tg_alloc(ctx, b->xstage_bytes) : NULL;
        b->lstage = b->xstage ? tg_alloc(ctx, b->lstage_bytes) : NULL;
        if (!b->lstage) {
            tg_batches_free(b);
            return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
        }
    }
    *out = b;
    return TG_OK;
}

void tg_batches_free(tg_batches *b)
{
    if (!b)
        return;
    tg_ctx *ctx = b->ctx;
    tg_free(ctx, b->perm, b->perm_bytes);
    tg_free(ctx, b->xstage, b->xstage_bytes);
    tg_free(ctx, b->lstage, b->lstage_bytes);
    tg_free(ctx, b, sizeof *b);
}

int64_t tg_batches_start(tg_batches *b, int64_t epoch)
{
    if (!b)
        return -1;
    int64_t n = b->d->n;
    if (b->shuffle)
        permute(b->perm, n, b->seed, (uint64_t)epoch);
    else if (staged(b))
        for (int64_t i = 0; i < n; i++)
            b->perm[i] = i;
    b->epoch = epoch;
    int64_t count = n / b->nshards; /* the order cut to a multiple of nshards, per shard */
    b->pos = 0;
    b->end = b->drop_last ? count / b->batch * b->batch : count;
    b->started = true;
    return b->drop_last ? count / b->batch : (count + b->batch - 1) / b->batch;
}

/* ---- augmentation ------------------------------------------------------------------------ */

static bool augmenting(const tg_batches *b)
{
    return b->augment.crop_padding > 0 || b->augment.horizontal_flip;
}

/* Sample s of the dataset into out, cropped and flipped by draws from (seed, epoch, s), as
 * torchvision's RandomCrop(size, padding) then RandomHorizontalFlip() would: the crop's corner
 * is uniform in [0, 2 pad]^2 over the zero-padded image, the flip has probability 1/2. Every
 * plane (the dims before the last two) moves alike. */
static void augment_sample(const tg_batches *b, int64_t s, float *out)
{
    const tg_dataset *d = b->d;
    int64_t h = d->shape[d->ndim - 2], w = d->shape[d->ndim - 1];
    int64_t pad = b->augment.crop_padding, plane = h * w;
    int64_t planes = plane > 0 ? d->sample_numel / plane : 0;
    uint64_t seed = b->augment.seed, epoch = (uint64_t)b->epoch;
    int64_t dy = pad ? (int64_t)(draw(seed, epoch, (uint64_t)s, 0) % (uint64_t)(2 * pad + 1)) : 0;
    int64_t dx = pad ? (int64_t)(draw(seed, epoch, (uint64_t)s, 1) % (uint64_t)(2 * pad + 1)) : 0;
    bool flip = b->augment.horizontal_flip && (draw(seed, epoch, (uint64_t)s, 2) & 1);
    const float *src = d->x + s * d->sample_numel;
    for (int64_t p = 0; p < planes; p++, src += plane, out += plane)
        for (int64_t i = 0; i < h; i++) {
            int64_t row = i + dy - pad; /* the source row of output row i */
            for (int64_t j = 0; j < w; j++) {
                int64_t col = (flip ? w - 1 - j : j) + dx - pad;
                bool inside = row >= 0 && row < h && col >= 0 && col < w;
                out[i * w + j] = inside ? src[row * w + col] : 0.0f;
            }
        }
}

tg_status tg_batches_set_augment(tg_batches *b, const tg_augment_options *o)
{
    static const char fn[] = "tg_batches_set_augment";
    if (!b)
        return TG_INVALID;
    tg_augment_options none = {0}, want = o ? *o : none;
    const tg_dataset *d = b->d;
    bool on = want.crop_padding > 0 || want.horizontal_flip;
    if (want.crop_padding < 0)
        return tg_ctx_fail(b->ctx, TG_RANGE, "%s: crop padding %d (need >= 0)", fn,
                           want.crop_padding);
    if (on && d->ndim < 2)
        return tg_ctx_fail(b->ctx, TG_SHAPE,
                           "%s: samples of %d dims; augmentation needs images [..., H, W]", fn,
                           d->ndim);
    if (on && !b->xstage) { /* in-order batches: the staging buffer, allocated once */
        int64_t rows = b->batch < d->n ? b->batch : d->n;
        size_t xbytes = (size_t)(rows * d->sample_numel) * sizeof *b->xstage;
        size_t lbytes = (size_t)rows * sizeof *b->lstage;
        float *x = tg_alloc(b->ctx, xbytes);
        int64_t *l = x ? tg_alloc(b->ctx, lbytes) : NULL;
        if (!l) {
            tg_free(b->ctx, x, xbytes);
            return tg_ctx_fail(b->ctx, TG_NOMEM, "%s: out of memory", fn);
        }
        b->xstage = x, b->xstage_bytes = xbytes;
        b->lstage = l, b->lstage_bytes = lbytes;
    }
    b->augment = want;
    return TG_OK;
}

bool tg_batches_next(tg_batches *b, tg_tape *tp, tg_tensor *x, tg_tensor *labels)
{
    if (!b || !tp)
        return false;
    if (!x || !labels) {
        tg_tape_fail(tp, TG_INVALID, "tg_batches_next: x or labels is NULL");
        return false;
    }
    if (!b->started)
        tg_batches_start(b, 0);
    if (b->pos >= b->end)
        return false;
    if (tg_tape_status(tp) != TG_OK)
        return false;
    const tg_dataset *d = b->d;
    int64_t rows = b->end - b->pos < b->batch ? b->end - b->pos : b->batch;
    int64_t sn = d->sample_numel;
    const float *xs = d->x + b->pos * sn;
    const int64_t *ls = d->labels + b->pos;
    if (staged(b) || augmenting(b)) {
        for (int64_t r = 0; r < rows; r++) {
            int64_t s = staged(b) ? b->perm[(b->pos + r) * b->nshards + b->shard] : b->pos + r;
            if (augmenting(b))
                augment_sample(b, s, b->xstage + r * sn);
            else if (sn > 0)
                memcpy(b->xstage + r * sn, d->x + s * sn, (size_t)sn * sizeof(float));
            b->lstage[r] = d->labels[s];
        }
        xs = b->xstage;
        ls = b->lstage;
    }
    int64_t shape[TG_MAX_DIMS];
    shape[0] = rows;
    for (int i = 0; i < d->ndim; i++)
        shape[i + 1] = d->shape[i];
    tg_tensor tx = tg_tensor_from(tp, TG_F32, d->ndim + 1, shape, xs);
    tg_tensor tl = tg_tensor_from(tp, TG_I64, 1, shape, ls);
    if (!tg_ok(tx) || !tg_ok(tl))
        return false; /* the tape holds the error; the position stays, so a retry repeats it */
    b->pos += rows;
    *x = tx;
    *labels = tl;
    return true;
}
