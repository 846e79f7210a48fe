/* checkpoint.c — parameters and optimiser state in the safetensors format, on the public API only.
 *
 * Layout: a little-endian u64 N, N bytes of JSON header, then the data section. The header maps
 * each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
 * data section) and may hold "__metadata__", an object of strings. We write the header padded
 * with spaces to a multiple of 8 bytes and the tensors contiguously in the order given
 * (parameters, then the optimiser's buffers), with {"format": "tapegrad", "optim_steps": "<n>"}
 * as metadata ("optim_steps" only with an optimiser).
 *
 * The JSON is built and parsed with jansson, which keeps no global state for a parse: its errors
 * go to a json_error_t on the caller's stack, so loads on several threads at once are safe. It
 * allocates with malloc: its only hooks are process-global (json_set_alloc_funcs), which a
 * library without global state must not set, so the header's parse tree and printed text bypass
 * the context's allocator. Everything else (the header bytes, the name tables, the staging
 * buffer of a load) goes through tg_alloc. Names must be valid UTF-8, as JSON's strings are.
 *
 * Saving is atomic and leaves nothing behind: the file is written as an anonymous file in the
 * target's directory (O_TMPFILE), flushed and fsynced, linked in as "<path>.tmp.<pid>.<random>"
 * only once complete, renamed over `path`, and the directory is fsynced. A save killed before
 * the link leaves no file at all. Where O_TMPFILE is not supported the file is created under
 * that name directly (exclusively, so concurrent saves never share one). Either way a save also
 * removes the temporary files of the same path whose process no longer exists (killed between
 * creating and renaming them). On any failure the temporary file is removed and `path` is
 * untouched.
 *
 * Loading validates the whole header (structure, dtypes, shapes, byte ranges against the file's
 * size) and every requested tensor's dtype and shape, reads the requested data into a staging
 * buffer, and only then writes parameters and optimiser state: a failed load changes nothing.
 * Tensors in the file that nobody asked for are ignored (a PyTorch state_dict with more entries
 * loads), but they are validated too.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* O_TMPFILE */
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <tapegrad.h>

#define MAX_HEADER 100000000u /* the reference implementation's limit on the header's length */
#define MAX_EXACT 9007199254740992.0 /* 2^53: integers above are not exact in JSON doubles */
#define MAX_EXACT_INT ((json_int_t)1 << 53)

/* ---- dtypes ------------------------------------------------------------------------------ */

/* The safetensors dtypes: all are recognised (so a file's other tensors can be validated), three
 * map to tapegrad dtypes. */
static const struct {
    const char *name;
    size_t size;
    tg_dtype dt; /* 0: no tapegrad equivalent */
} dtypes[] = {
    {"F32", 4, TG_F32}, {"F64", 8, TG_F64}, {"I64", 8, TG_I64}, {"BOOL", 1, 0},
    {"U8", 1, 0},       {"I8", 1, 0},       {"F8_E5M2", 1, 0},  {"F8_E4M3", 1, 0},
    {"F8_E8M0", 1, 0},  {"I16", 2, 0},      {"U16", 2, 0},      {"F16", 2, 0},
    {"BF16", 2, 0},     {"I32", 4, 0},      {"U32", 4, 0},      {"U64", 8, 0},
};
#define NDTYPES (sizeof dtypes / sizeof dtypes[0])

static int dtype_index(const char *name)
{
    for (size_t i = 0; i < NDTYPES; i++)
        if (strcmp(dtypes[i].name, name) == 0)
            return (int)i;
    return -1;
}

static const char *st_dtype_name(tg_dtype dt)
{
    for (size_t i = 0; i < NDTYPES; i++)
        if (dtypes[i].dt == dt)
            return dtypes[i].name;
    return NULL;
}

/* ---- byte order -------------------------------------------------------------------------- */

static bool host_is_little(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Reverses each `size`-byte element in place (big-endian hosts only). */
static void swap_elements(void *data, size_t bytes, size_t size)
{
    unsigned char *p = data;
    for (size_t i = 0; size > 1 && i + size <= bytes; i += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            unsigned char t = p[i + a];
            p[i + a] = p[i + b];
            p[i + b] = t;
        }
}

/* ---- the tensors of a checkpoint --------------------------------------------------------- */

/* One tensor to save or load: a parameter's value or one of the optimiser's buffers. */
typedef struct item {
    const char *name;
    tg_param *param; /* the parameter, or the buffer's parameter (dtype and shape) */
    void *buffer;    /* the optimiser's buffer; NULL for a parameter's value */
    size_t bytes;
} item;

typedef struct item_list {
    tg_ctx *ctx;
    item *items;
    size_t n;
    char *names; /* "<param>.<state>" strings */
    size_t names_size;
} item_list;

static void items_free(item_list *l)
{
    tg_free(l->ctx, l->items, l->n * sizeof *l->items);
    tg_free(l->ctx, l->names, l->names_size);
}

/* The bytes of s are UTF-8: no stray continuation bytes, overlong forms, surrogates or code
 * points past U+10FFFF. */
static bool valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p++, more = c < 0x80                ? 0
                                  : c >= 0xc2 && c < 0xe0 ? 1
                                  : c >= 0xe0 && c < 0xf0 ? 2
                                  : c >= 0xf0 && c < 0xf5 ? 3
                                                          : 4;
        if (more == 4)
            return false;
        uint32_t cp = c & (0x3fu >> more);
        for (unsigned k = 0; k < more; k++, p++) {
            if ((*p & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (*p & 0x3fu);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000)))
            || (more == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
    }
    return true;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Lists the parameters and the optimiser's buffers under their names, refusing NULL or unnamed
 * parameters and names that repeat. */
static tg_status items_make(tg_ctx *ctx, const char *fn, const char *path, size_t n,
                            tg_param *const *params, const tg_optim *opt, item_list *l)
{
    memset(l, 0, sizeof *l);
    l->ctx = ctx;
    if (n && !params)
        return tg_ctx_fail(ctx, TG_INVALID, "%s(%s): params is NULL", fn, path);
    size_t nstate = opt ? tg_optim_state_count(opt) : 0;
    size_t total = n + nstate;
    if (total > SIZE_MAX / sizeof(item))
        return tg_ctx_fail(ctx, TG_INVALID, "%s(%s): too many tensors", fn, path);
    /* Names of the optimiser's buffers: "<param name>.<state name>". */
    size_t names_size = 0;
    for (size_t i = 0; i < nstate; i++) {
        const char *sname = NULL;
        tg_param *p = NULL;
        tg_status st = tg_optim_state_info(opt, i, &sname, &p, NULL);
        if (st != TG_OK || !p || !sname)
            return tg_ctx_fail(ctx, st ? st : TG_INVALID,
                               "%s(%s): the optimiser's buffer %zu cannot be read", fn, path, i);
        names_size += strlen(tg_param_name(p)) + 1 + strlen(sname) + 1;
    }
    l->items = tg_alloc(ctx, total * sizeof *l->items);
    l->n = total;
    l->names = tg_alloc(ctx, names_size);
    l->names_size = names_size;
    const char **sorted = tg_alloc(ctx, total * sizeof *sorted);
    tg_status st = TG_OK;
    if (!l->items || !l->names || !sorted) {
        st = tg_ctx_fail(ctx, TG_NOMEM, "%s(%s): out of memory", fn, path);
        goto done;
    }
    char *w = l->names;
    for (size_t i = 0; i < total; i++) {
        item *it = &l->items[i];
        memset(it, 0, sizeof *it);
        if (i < n) {
            it->param = params[i];
            if (!it->param) {
                st = tg_ctx_fail(ctx, TG_INVALID, "%s(%s): parameter %zu is NULL", fn, path, i);
                goto done;
            }
            it->name = tg_param_name(it->param);
        } else {
            const char *sname = NULL;
            tg_optim_state_info(opt, i - n, &sname, &it->param, &it->buffer);
            int len = sprintf(w, "%s.%s", tg_param_name(it->param), sname);
            it->name = w;
            w += len + 1;
            if (!it->buffer) {
                st = tg_ctx_fail(ctx, TG_INVALID, "%s(%s): the optimiser's buffer %s is NULL", fn,
                                 path, it->name);
                goto done;
            }
        }
        const tg_param *p = it->param;
        if (tg_param_name(p)[0] == '\0') {
            st = tg_ctx_fail(ctx, TG_INVALID,
                             "%s(%s): %s %zu is unnamed (checkpoints store tensors by name)", fn,
                             path, i < n ? "parameter" : "the optimiser's parameter for buffer",
                             i < n ? i : i - n);
            goto done;
        }
        if (!valid_utf8(it->name)) {
            st = tg_ctx_fail(
                ctx, TG_INVALID, "%s(%s): the name of %s %zu is not valid UTF-8 (JSON needs it)",
                fn, path, i < n ? "parameter" : "the optimiser's buffer", i < n ? i : i - n);
            goto done;
        }
        if (strcmp(it->name, "__metadata__") == 0) {
            st = tg_ctx_fail(ctx, TG_INVALID, "%s(%s): \"__metadata__\" is reserved", fn, path);
            goto done;
        }
        if (!st_dtype_name(tg_param_dtype(p))) {
            st = tg_ctx_fail(ctx, TG_DTYPE, "%s(%s): %s has an unknown dtype", fn, path, it->name);
            goto done;
        }
        it->bytes = (size_t)tg_param_numel(p) * tg_dtype_size(tg_param_dtype(p));
        sorted[i] = it->name;
    }
    qsort(sorted, total, sizeof *sorted, cmp_names);
    for (size_t i = 1; i < total; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            st = tg_ctx_fail(ctx, TG_EXISTS, "%s(%s): two tensors are named \"%s\"", fn, path,
                             sorted[i]);
            goto done;
        }
done:
    tg_free(ctx, sorted, total * sizeof *sorted);
    if (st != TG_OK)
        items_free(l);
    return st;
}

/* "[2,3]" into buf. */
static const char *shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
    tg_format_shape(buf, size, 0, ndim, shape);
    return buf;
}

/* ---- saving ------------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A JSON array of n integers (exact: jansson prints its integers in full), NULL when out of
 * memory. */
static json_t *integers_json(int n, const int64_t *v)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer((json_int_t)v[i])) != 0) {
            json_decref(a);
            a = NULL;
        }
    return a;
}

/* One tensor's entry, {"shape": [...], "data_offsets": [begin, end], "dtype": "F32"}, or NULL
 * when out of memory. json_object_set_new takes its value's reference even when it fails (a
 * NULL object included), so nothing leaks. */
static json_t *entry_json(const item *it, uint64_t begin)
{
    /* Offsets fit int64: they count bytes held in memory. */
    int64_t range[2] = {(int64_t)begin, (int64_t)(begin + it->bytes)};
    json_t *t = json_object();
    int bad = json_object_set_new(
        t, "shape", integers_json(tg_param_ndim(it->param), tg_param_shape(it->param)));
    bad |= json_object_set_new(t, "data_offsets", integers_json(2, range));
    bad |= json_object_set_new(t, "dtype", json_string(st_dtype_name(tg_param_dtype(it->param))));
    if (bad) {
        json_decref(t);
        return NULL;
    }
    return t;
}

/* Builds the header text (malloc'd by jansson; free with free), NULL when out of memory. Keys
 * keep their insertion order: metadata first, then the tensors in the order given. */
static char *header_json(const item_list *l, const tg_optim *opt)
{
    json_t *meta = json_object();
    int bad = json_object_set_new(meta, "format", json_string("tapegrad"));
    if (opt) {
        char steps[24];
        snprintf(steps, sizeof steps, "%lld", (long long)tg_optim_steps(opt));
        bad |= json_object_set_new(meta, "optim_steps", json_string(steps));
    }
    json_t *root = json_object();
    bad |= json_object_set_new(root, "__metadata__", meta);
    uint64_t offset = 0;
    for (size_t i = 0; !bad && i < l->n; i++) {
        bad |= json_object_set_new(root, l->items[i].name, entry_json(&l->items[i], offset));
        offset += l->items[i].bytes;
    }
    char *text = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

/* Writes `bytes` of little-endian elements of `esize` bytes; false on a write error. */
static bool write_data(FILE *f, const void *data, size_t bytes, size_t esize, unsigned char *swap,
                       size_t swap_size)
{
    if (bytes == 0)
        return true;
    if (host_is_little() || esize < 2)
        return fwrite(data, 1, bytes, f) == bytes;
    const unsigned char *p = data;
    size_t step = swap_size / esize * esize;
    for (size_t done = 0; done < bytes; done += step) {
        size_t k = bytes - done < step ? bytes - done : step;
        memcpy(swap, p + done, k);
        swap_elements(swap, k, esize);
        if (fwrite(swap, 1, k, f) != k)
            return false;
    }
    return true;
}

/* The directory holding `path` into dir (of at least strlen(path) + 2 bytes): "." for a bare
 * name, "/" for a name in the root. */
static void dir_of(const char *path, char *dir)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
        return;
    }
    size_t len = slash == path ? 1 : (size_t)(slash - path);
    memcpy(dir, path, len);
    dir[len] = '\0';
}

/* fsyncs a directory so that a rename in it is durable. Returns 0 or an errno value; file
 * systems that cannot sync directories (EINVAL) count as success. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int err = 0;
    if (fsync(fd) != 0 && errno != EINVAL)
        err = errno;
    close(fd);
    return err;
}

/* A save's temporary file: anonymous (O_TMPFILE in the target's directory, so a save killed
 * midway leaves nothing) where the file system allows it, else created under the name `tmp`.
 * `named`: `tmp` exists and is ours to remove. */
typedef struct temp_file {
    char *tmp, *dir;
    size_t size;
    int fd;
    bool anonymous, named;
} temp_file;

#define TEMP_INFIX ".tmp."

/* "<path>.tmp.<pid>.<8 hex digits>" into t->tmp, the hex part from the salt and attempt. */
static void temp_name(temp_file *t, const char *path, uint64_t salt, int attempt)
{
    snprintf(t->tmp, t->size, "%s" TEMP_INFIX "%ld.%08x", path, (long)getpid(),
             (unsigned)(mix64(salt + (uint64_t)attempt) & 0xffffffffu));
}

static uint64_t temp_salt(void)
{
    struct timespec ts = {0, 0};
    clock_gettime(CLOCK_REALTIME, &ts);
    return mix64((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec)
           ^ mix64((uint64_t)(uintptr_t)&ts);
}

/* Opens the temporary file (mode 0666 less the umask, as fopen would): anonymous if it can be,
 * else named and created exclusively, so concurrent saves never share one. 0 or an errno. */
static int temp_open(temp_file *t, const char *path)
{
#ifdef O_TMPFILE
    /* An anonymous file is linked in through /proc/self/fd: without /proc, a named one. */
    if (access("/proc/self/fd", X_OK) == 0) {
        t->fd = open(t->dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
        t->anonymous = t->fd >= 0;
        if (t->anonymous)
            return 0;
    }
#endif
    uint64_t salt = temp_salt();
    for (int attempt = 0; attempt < 100 && t->fd < 0; attempt++) {
        temp_name(t, path, salt, attempt);
        t->fd = open(t->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (t->fd < 0 && errno != EEXIST)
            break;
    }
    t->named = t->fd >= 0;
    return t->named ? 0 : errno;
}

/* Gives an anonymous file its temporary name (linkat through /proc/self/fd), ready to be
 * renamed. 0 or an errno. */
static int temp_link(temp_file *t, const char *path)
{
    if (!t->anonymous)
        return 0;
    char proc[40];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", t->fd);
    uint64_t salt = temp_salt();
    for (int attempt = 0; attempt < 100; attempt++) {
        temp_name(t, path, salt, attempt);
        if (linkat(AT_FDCWD, proc, AT_FDCWD, t->tmp, AT_SYMLINK_FOLLOW) == 0) {
            t->named = true;
            return 0;
        }
        if (errno != EEXIST)
            return errno;
    }
    return EEXIST;
}

/* The pid of a temporary file of `base` named "<base>.tmp.<pid>.<8 hex digits>", or 0. */
static long temp_pid(const char *name, const char *base)
{
    size_t blen = strlen(base), ilen = strlen(TEMP_INFIX);
    if (strncmp(name, base, blen) != 0 || strncmp(name + blen, TEMP_INFIX, ilen) != 0)
        return 0;
    const char *p = name + blen + ilen;
    char *stop = NULL;
    errno = 0;
    long pid = strtol(p, &stop, 10);
    if (errno || stop == p || *p < '1' || *p > '9' || *stop != '.' || strlen(stop + 1) != 8)
        return 0;
    for (const char *h = stop + 1; *h; h++)
        if (!((*h >= '0' && *h <= '9') || (*h >= 'a' && *h <= 'f')))
            return 0;
    return pid;
}

/* Removes the temporary files of `path` left by saves whose process is gone (killed between
 * creating and renaming them): those whose pid no longer exists (kill(pid, 0) gives ESRCH).
 * Best effort: a directory that cannot be read is skipped. */
static void remove_stale_temps(const char *path, const char *dir)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        long pid = temp_pid(e->d_name, base);
        if (pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH)
            unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

/* Writes the length, the padded header and the data to f, flushes and fsyncs it. */
static bool write_checkpoint(FILE *f, const char *header, const item_list *l, unsigned char *swap,
                             size_t swap_size)
{
    size_t len = strlen(header);
    size_t padded = (len + 7) / 8 * 8;
    unsigned char len8[8];
    for (int b = 0; b < 8; b++)
        len8[b] = (unsigned char)((uint64_t)padded >> (8 * b));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(header, 1, len, f) == len;
    for (size_t k = len; ok && k < padded; k++)
        ok = fputc(' ', f) != EOF;
    for (size_t i = 0; ok && i < l->n; i++) {
        const item *it = &l->items[i];
        const void *data = it->buffer ? it->buffer : tg_param_data(it->param);
        ok = write_data(f, data, it->bytes, tg_dtype_size(tg_param_dtype(it->param)), swap,
                        swap_size);
    }
    return ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
}

/* Writes the checkpoint into the temporary file and renames it over `path`, then syncs the
 * directory. On failure the caller removes t->tmp when t->named. */
static tg_status save_file(tg_ctx *ctx, const char *path, temp_file *t, const char *header,
                           const item_list *l, unsigned char *swap, size_t swap_size)
{
    static const char fn[] = "tg_checkpoint_save";
    int err = temp_open(t, path);
    if (err)
        return tg_ctx_fail(ctx, TG_IO, "%s(%s): cannot create the temporary file %s: %s", fn, path,
                           t->tmp, strerror(err));
    const char *what = t->anonymous ? "the temporary file" : t->tmp;
    FILE *f = fdopen(t->fd, "wb");
    if (!f) {
        err = errno;
        close(t->fd);
        return tg_ctx_fail(ctx, TG_IO, "%s(%s): cannot open a stream on %s: %s", fn, path, what,
                           strerror(err));
    }
    bool ok = write_checkpoint(f, header, l, swap, swap_size);
    err = errno;
    if (!ok) {
        fclose(f);
        return tg_ctx_fail(ctx, TG_IO, "%s(%s): writing %s failed: %s", fn, path, what,
                           strerror(err));
    }
    /* Linked while still open: /proc/self/fd names the descriptor. */
    err = temp_link(t, path);
    int rc = fclose(f);
    if (err)
        return tg_ctx_fail(ctx, TG_IO, "%s(%s): cannot link the temporary file as %s: %s", fn, path,
                           t->tmp, strerror(err));
    if (rc != 0)
        return tg_ctx_fail(ctx, TG_IO, "%s(%s): closing %s failed: %s", fn, path, t->tmp,
                           strerror(errno));
    if (rename(t->tmp, path) != 0)
        return tg_ctx_fail(ctx, TG_IO, "%s(%s): cannot rename %s over it: %s", fn, path, t->tmp,
                           strerror(errno));
    t->named = false;
    err = sync_dir(t->dir);
    if (err)
        return tg_ctx_fail(
            ctx, TG_IO, "%s(%s): the file was replaced but its directory could not be synced: %s",
            fn, path, strerror(err));
    return TG_OK;
}

tg_status tg_checkpoint_save(tg_ctx *ctx, const char *path, size_t n, tg_param *const *params,
                             const tg_optim *opt)
{
    static const char fn[] = "tg_checkpoint_save";
    if (!ctx)
        return TG_INVALID;
    if (!path || !path[0])
        return tg_ctx_fail(ctx, TG_INVALID, "%s: no path", fn);
    item_list l;
    tg_status st = items_make(ctx, fn, path, n, params, opt, &l);
    if (st != TG_OK)
        return st;

    char *header = header_json(&l, opt);
    /* Everything is allocated before the temporary file exists: nothing after the rename can
     * fail for want of memory. */
    temp_file t = {NULL, NULL, strlen(path) + 64, -1, false, false};
    t.tmp = tg_alloc(ctx, t.size);
    t.dir = tg_alloc(ctx, t.size);
    size_t swap_size = host_is_little() ? 0 : 65536;
    unsigned char *swap = swap_size ? tg_alloc(ctx, swap_size) : NULL;
    if (!header || !t.tmp || !t.dir || (swap_size && !swap)) {
        st = tg_ctx_fail(ctx, TG_NOMEM, "%s(%s): out of memory", fn, path);
    } else {
        t.tmp[0] = '\0';
        dir_of(path, t.dir);
        remove_stale_temps(path, t.dir);
        st = save_file(ctx, path, &t, header, &l, swap, swap_size);
        if (t.named)
            unlink(t.tmp);
    }
    tg_free(ctx, t.tmp, t.size);
    tg_free(ctx, t.dir, t.size);
    tg_free(ctx, swap, swap_size);
    free(header);
    items_free(&l);
    return st;
}

/* ---- loading ----------------------------------------------------------------------------- */

/* A tensor of the file's header, validated. */
typedef struct entry {
    const char *name;
    int dtype; /* index into dtypes */
    int ndim;
    int64_t shape[TG_MAX_DIMS]; /* the first TG_MAX_DIMS dims */
    uint64_t begin, end;
} entry;

static int cmp_entries(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

/* A JSON number that is an exact integer in [0, 2^53] (written as an integer, or as a real
 * such as 24.0). */
static bool json_uint(const json_t *v, uint64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > MAX_EXACT_INT)
            return false;
        *out = (uint64_t)i;
        return true;
    }
    if (!json_is_real(v))
        return false;
    double d = json_real_value(v);
    if (!(d >= 0 && d <= MAX_EXACT) || d != (double)(uint64_t)d)
        return false;
    *out = (uint64_t)d;
    return true;
}

/* The state of one tg_checkpoint_load, phase by phase (read the file, parse the header,
 * validate its entries, check them against the requested tensors, stage the data, commit). */
typedef struct loader {
    tg_ctx *ctx;
    const char *path;
    const item_list *l; /* the requested tensors */
    tg_optim *opt;
    FILE *f;
    uint64_t hlen;      /* the header's length */
    uint64_t data_size; /* bytes after the header */
    char *header;       /* hlen + 1 bytes */
    size_t header_size;
    json_t *root;
    const json_t *meta; /* __metadata__, or NULL */
    entry *entries;     /* the header's tensors, sorted by name */
    size_t nentries, entries_size;
    const entry **found; /* found[i]: the entry of item i */
    size_t found_size;
    unsigned char *stage; /* the requested data, read before anything is written */
    size_t stage_size;
    int64_t steps;
} loader;

#define LOAD_FAIL(L, status, ...) tg_ctx_fail((L)->ctx, (status), __VA_ARGS__)

/* Validates one header entry into *e. */
/* The entry's "shape": its dims into e (the first TG_MAX_DIMS) and its element count. */
static tg_status parse_shape(const loader *L, const json_t *shape, entry *e, uint64_t *numel)
{
    static const char fn[] = "tg_checkpoint_load";
    if (!json_is_array(shape))
        return LOAD_FAIL(L, TG_FORMAT, "%s(%s): tensor \"%s\": shape is not an array", fn, L->path,
                         e->name);
    bool overflow = false;
    *numel = 1;
    for (size_t k = 0; k < json_array_size(shape); k++) {
        uint64_t d;
        if (!json_uint(json_array_get(shape, k), &d))
            return LOAD_FAIL(L, TG_FORMAT,
                             "%s(%s): tensor \"%s\": shape entry %d is not an integer in [0, "
                             "2^53]",
                             fn, L->path, e->name, e->ndim);
        if (e->ndim < TG_MAX_DIMS)
            e->shape[e->ndim] = (int64_t)d;
        if (e->ndim == INT_MAX)
            return LOAD_FAIL(L, TG_FORMAT, "%s(%s): tensor \"%s\": too many dims", fn, L->path,
                             e->name);
        e->ndim++;
        if (d != 0 && *numel > UINT64_MAX / d)
            overflow = true;
        else
            *numel *= d;
    }
    if (*numel == 0)
        overflow = false; /* a zero dim makes any product empty */
    if (overflow || *numel > UINT64_MAX / dtypes[e->dtype].size)
        return LOAD_FAIL(L, TG_FORMAT, "%s(%s): tensor \"%s\": the shape's size overflows", fn,
                         L->path, e->name);
    return TG_OK;
}

/* The entry's "data_offsets": a pair inside the data section spanning exactly numel elements. */
static tg_status parse_offsets(const loader *L, const json_t *range, uint64_t numel, entry *e)
{
    static const char fn[] = "tg_checkpoint_load";
    size_t esize = dtypes[e->dtype].size;
    if (!json_is_array(range) || json_array_size(range) != 2
        || !json_uint(json_array_get(range, 0), &e->begin)
        || !json_uint(json_array_get(range, 1), &e->end))
        return LOAD_FAIL(L, TG_FORMAT,
                         "%s(%s): tensor \"%s\": data_offsets is not a pair of integers [begin, "
                         "end]",
                         fn, L->path, e->name);
    if (e->begin > e->end || e->end > L->data_size)
        return LOAD_FAIL(L, TG_FORMAT,
                         "%s(%s): tensor \"%s\": data_offsets [%llu, %llu] lie outside the %llu "
                         "bytes of data",
                         fn, L->path, e->name, (unsigned long long)e->begin,
                         (unsigned long long)e->end, (unsigned long long)L->data_size);
    if (e->end - e->begin != numel * esize)
        return LOAD_FAIL(L, TG_FORMAT,
                         "%s(%s): tensor \"%s\": data_offsets span %llu bytes, but %llu elements "
                         "of %s need %llu",
                         fn, L->path, e->name, (unsigned long long)(e->end - e->begin),
                         (unsigned long long)numel, dtypes[e->dtype].name,
                         (unsigned long long)(numel * esize));
    return TG_OK;
}

static tg_status parse_entry(const loader *L, const char *name, const json_t *t, entry *e)
{
    static const char fn[] = "tg_checkpoint_load";
    memset(e, 0, sizeof *e);
    e->name = name;
    if (!json_is_object(t))
        return LOAD_FAIL(L, TG_FORMAT, "%s(%s): tensor \"%s\" is not a JSON object", fn, L->path,
                         name);
    const json_t *dt = json_object_get(t, "dtype");
    const json_t *shape = json_object_get(t, "shape");
    const json_t *range = json_object_get(t, "data_offsets");
    if (!dt || !shape || !range)
        return LOAD_FAIL(L, TG_FORMAT, "%s(%s): tensor \"%s\" has no \"%s\"", fn, L->path, name,
                         !dt      ? "dtype"
                         : !shape ? "shape"
                                  : "data_offsets");
    const char *dname = json_string_value(dt); /* NULL when not a string */
    if (!dname || (e->dtype = dtype_index(dname)) < 0)
        return LOAD_FAIL(L, TG_FORMAT, "%s(%s): tensor \"%s\" has an unknown dtype %s%s%s", fn,
                         L->path, name, dname ? "\"" : "", dname ? dname : "(not a string)",
                         dname ? "\"" : "");
    uint64_t numel = 0;
    tg_status st = parse_shape(L, shape, e, &numel);
    return st ? st : parse_offsets(L, range, numel, e);
}

/* Reads `bytes` at `offset` of f; 0 or an errno value (EIO-like -1 for a short read). */
static int read_at(FILE *f, uint64_t offset, void *dst, size_t bytes)
{
    if (bytes == 0)
        return 0;
    if (offset > (uint64_t)LLONG_MAX || fseeko(f, (off_t)offset, SEEK_SET) != 0)
        return errno ? errno : EINVAL;
    errno = 0;
    if (fread(dst, 1, bytes, f) != bytes)
        return ferror(f) && errno ? errno : -1;
    return 0;
}

#define LOAD_FN "tg_checkpoint_load"

/* Opens the file and reads the header's length and text into L->header. */
static tg_status load_read_file(loader *L)
{
    L->f = fopen(L->path, "rb");
    if (!L->f)
        return LOAD_FAIL(L, TG_IO, LOAD_FN "(%s): cannot open: %s", L->path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(L->f), &sb) != 0)
        return LOAD_FAIL(L, TG_IO, LOAD_FN "(%s): cannot stat: %s", L->path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return LOAD_FAIL(L, TG_IO, LOAD_FN "(%s): not a regular file", L->path);
    uint64_t file_size = (uint64_t)sb.st_size;
    unsigned char len8[8];
    if (file_size < 8)
        return LOAD_FAIL(L, TG_FORMAT,
                         LOAD_FN "(%s): the file is %llu bytes, too short for a safetensors header",
                         L->path, (unsigned long long)file_size);
    int err = read_at(L->f, 0, len8, 8);
    if (err)
        return LOAD_FAIL(L, TG_IO, LOAD_FN "(%s): cannot read the header length: %s", L->path,
                         err > 0 ? strerror(err) : "short read");
    uint64_t hlen = 0;
    for (int b = 0; b < 8; b++)
        hlen |= (uint64_t)len8[b] << (8 * b);
    if (hlen > MAX_HEADER || hlen > file_size - 8)
        return LOAD_FAIL(L, TG_FORMAT,
                         LOAD_FN "(%s): the header length %llu is %s (the file is %llu bytes; at "
                                 "most %u allowed)",
                         L->path, (unsigned long long)hlen,
                         hlen > MAX_HEADER ? "too large" : "past the end of the file",
                         (unsigned long long)file_size, MAX_HEADER);
    L->hlen = hlen;
    L->data_size = file_size - 8 - hlen;
    L->header_size = (size_t)hlen + 1;
    L->header = tg_alloc(L->ctx, L->header_size);
    if (!L->header)
        return LOAD_FAIL(L, TG_NOMEM, LOAD_FN "(%s): out of memory for a %llu-byte header", L->path,
                         (unsigned long long)hlen);
    err = read_at(L->f, 8, L->header, (size_t)hlen);
    if (err)
        return LOAD_FAIL(L, TG_IO, LOAD_FN "(%s): cannot read the header: %s", L->path,
                         err > 0 ? strerror(err) : "short read");
    L->header[hlen] = '\0';
    return TG_OK;
}

/* Parses the header into L->root: one JSON object, no key twice, only padding after it. */
static tg_status load_parse_header(loader *L)
{
    /* Any value (an object is checked below), no key twice; the value may end before the
     * padding, whose bytes are checked here. The error is ours, on the stack. */
    json_error_t jerr;
    L->root = json_loadb(L->header, (size_t)L->hlen,
                         JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_DISABLE_EOF_CHECK, &jerr);
    if (!L->root) {
        bool twice = json_error_code(&jerr) == json_error_duplicate_key;
        return LOAD_FAIL(L, TG_FORMAT, LOAD_FN "(%s): %s (%s, at byte %d)", L->path,
                         twice ? "a tensor or key appears twice in the header"
                               : "the header is not valid JSON",
                         jerr.text, jerr.position);
    }
    /* Only padding may follow the JSON value (jerr.position: the bytes it took). */
    for (const char *c = L->header + jerr.position; c < L->header + L->hlen; c++)
        if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r')
            return LOAD_FAIL(L, TG_FORMAT,
                             LOAD_FN "(%s): the header has bytes after its JSON (at %lld)", L->path,
                             (long long)(c - L->header));
    if (!json_is_object(L->root))
        return LOAD_FAIL(L, TG_FORMAT, LOAD_FN "(%s): the header is not a JSON object", L->path);
    return TG_OK;
}

/* __metadata__: an object of strings. */
static tg_status load_check_metadata(loader *L, const json_t *t)
{
    if (!json_is_object(t))
        return LOAD_FAIL(L, TG_FORMAT, LOAD_FN "(%s): __metadata__ is not an object", L->path);
    const char *mkey;
    json_t *m;
    json_object_foreach((json_t *)t, mkey, m)
    {
        if (!json_is_string(m))
            return LOAD_FAIL(L, TG_FORMAT,
                             LOAD_FN "(%s): __metadata__ entry \"%s\" is not a string", L->path,
                             mkey);
    }
    L->meta = t;
    return TG_OK;
}

/* Validates every entry of the header (the metadata apart) into L->entries, sorted by name. */
static tg_status load_validate_entries(loader *L)
{
    size_t count = json_object_size(L->root);
    L->entries_size = (count ? count : 1) * sizeof *L->entries;
    L->entries = tg_alloc(L->ctx, L->entries_size);
    if (!L->entries)
        return LOAD_FAIL(L, TG_NOMEM, LOAD_FN "(%s): out of memory", L->path);
    const char *key;
    json_t *t;
    json_object_foreach(L->root, key, t)
    {
        tg_status st = strcmp(key, "__metadata__") == 0
                           ? load_check_metadata(L, t)
                           : parse_entry(L, key, t, &L->entries[L->nentries++]);
        if (st != TG_OK)
            return st;
    }
    qsort(L->entries, L->nentries, sizeof *L->entries, cmp_entries);
    for (size_t i = 1; i < L->nentries; i++)
        if (strcmp(L->entries[i - 1].name, L->entries[i].name) == 0)
            return LOAD_FAIL(L, TG_FORMAT, LOAD_FN "(%s): tensor \"%s\" appears twice", L->path,
                             L->entries[i].name);
    return TG_OK;
}

/* Item `it`'s entry: present, of its dtype and shape. */
static tg_status load_match(loader *L, const item *it, const entry **out)
{
    entry key;
    key.name = it->name;
    const entry *e = L->nentries
                         ? bsearch(&key, L->entries, L->nentries, sizeof *L->entries, cmp_entries)
                         : NULL;
    const char *what = it->buffer ? "optimiser state" : "parameter";
    if (!e)
        return LOAD_FAIL(L, TG_NOT_FOUND, LOAD_FN "(%s): no tensor \"%s\" for the %s", L->path,
                         it->name, what);
    tg_dtype pdt = tg_param_dtype(it->param);
    if (dtypes[e->dtype].dt != pdt)
        return LOAD_FAIL(L, TG_DTYPE, LOAD_FN "(%s): tensor \"%s\" is %s, the %s is %s (%s)",
                         L->path, it->name, dtypes[e->dtype].name, what, tg_dtype_name(pdt),
                         st_dtype_name(pdt));
    int nd = tg_param_ndim(it->param);
    const int64_t *ps = tg_param_shape(it->param);
    bool same = e->ndim == nd;
    for (int d = 0; same && d < nd; d++)
        same = e->shape[d] == ps[d];
    if (!same) {
        char a[160], b[160];
        if (e->ndim > TG_MAX_DIMS)
            snprintf(a, sizeof a, "%d dims", e->ndim);
        else
            shape_str(a, sizeof a, e->ndim, e->shape);
        return LOAD_FAIL(L, TG_SHAPE, LOAD_FN "(%s): tensor \"%s\" has shape %s, the %s %s",
                         L->path, it->name, a, what, shape_str(b, sizeof b, nd, ps));
    }
    *out = e;
    return TG_OK;
}

/* The optimiser's step count from the metadata, in [0, TG_OPTIM_MAX_STEPS]. */
static tg_status load_steps(loader *L)
{
    const char *s = L->meta ? json_string_value(json_object_get(L->meta, "optim_steps")) : NULL;
    if (!s)
        return LOAD_FAIL(L, TG_NOT_FOUND,
                         LOAD_FN "(%s): no optimiser step count (__metadata__ \"optim_steps\")",
                         L->path);
    char *stop = NULL;
    errno = 0;
    long long v = strtoll(s, &stop, 10);
    if (errno || stop == s || *stop || v < 0 || v > TG_OPTIM_MAX_STEPS)
        return LOAD_FAIL(L, TG_FORMAT,
                         LOAD_FN "(%s): the optimiser step count \"%s\" is not an integer in [0, "
                                 "2^53 - 1]",
                         L->path, s);
    L->steps = v;
    return TG_OK;
}

/* Every requested tensor has its entry (L->found), and the optimiser its step count. */
static tg_status load_check_params(loader *L)
{
    L->found_size = (L->l->n ? L->l->n : 1) * sizeof *L->found;
    L->found = tg_alloc(L->ctx, L->found_size);
    if (!L->found)
        return LOAD_FAIL(L, TG_NOMEM, LOAD_FN "(%s): out of memory", L->path);
    for (size_t i = 0; i < L->l->n; i++) {
        tg_status st = load_match(L, &L->l->items[i], &L->found[i]);
        if (st != TG_OK)
            return st;
    }
    return L->opt ? load_steps(L) : TG_OK;
}

/* Reads everything requested into the staging buffer; nothing is written before the last byte
 * arrived. */
static tg_status load_stage(loader *L)
{
    const item_list *l = L->l;
    for (size_t i = 0; i < l->n; i++)
        L->stage_size += l->items[i].bytes;
    L->stage = tg_alloc(L->ctx, L->stage_size);
    if (!L->stage)
        return LOAD_FAIL(L, TG_NOMEM, LOAD_FN "(%s): out of memory for %zu bytes of data", L->path,
                         L->stage_size);
    size_t at = 0;
    for (size_t i = 0; i < l->n; i++) {
        int err = read_at(L->f, 8 + L->hlen + L->found[i]->begin, L->stage + at, l->items[i].bytes);
        if (err)
            return LOAD_FAIL(L, TG_IO, LOAD_FN "(%s): cannot read tensor \"%s\": %s", L->path,
                             l->items[i].name, err > 0 ? strerror(err) : "short read");
        if (!host_is_little())
            swap_elements(L->stage + at, l->items[i].bytes,
                          tg_dtype_size(tg_param_dtype(l->items[i].param)));
        at += l->items[i].bytes;
    }
    return TG_OK;
}

/* Writes the staged data into the parameters and the optimiser; cannot fail. */
static void load_commit(const loader *L)
{
    size_t at = 0;
    for (size_t i = 0; i < L->l->n; i++) {
        const item *it = &L->l->items[i];
        if (it->buffer) {
            if (it->bytes)
                memcpy(it->buffer, L->stage + at, it->bytes);
        } else {
            tg_param_set(it->param, L->stage + at);
        }
        at += it->bytes;
    }
    if (L->opt)
        tg_optim_set_steps(L->opt, L->steps);
}

static void loader_free(loader *L)
{
    tg_free(L->ctx, L->stage, L->stage_size);
    tg_free(L->ctx, L->found, L->found_size);
    tg_free(L->ctx, L->entries, L->entries_size);
    json_decref(L->root);
    tg_free(L->ctx, L->header, L->header_size);
    if (L->f)
        fclose(L->f);
}

tg_status tg_checkpoint_load(tg_ctx *ctx, const char *path, size_t n, tg_param *const *params,
                             tg_optim *opt)
{
    if (!ctx)
        return TG_INVALID;
    if (!path || !path[0])
        return tg_ctx_fail(ctx, TG_INVALID, LOAD_FN ": no path");
    item_list l;
    tg_status st = items_make(ctx, LOAD_FN, path, n, params, opt, &l);
    if (st != TG_OK)
        return st;
    loader L;
    memset(&L, 0, sizeof L);
    L.ctx = ctx;
    L.path = path;
    L.l = &l;
    L.opt = opt;
    st = load_read_file(&L);
    if (st == TG_OK)
        st = load_parse_header(&L);
    if (st == TG_OK)
        st = load_validate_entries(&L);
    if (st == TG_OK)
        st = load_check_params(&L);
    if (st == TG_OK)
        st = load_stage(&L);
    if (st == TG_OK)
        load_commit(&L);
    loader_free(&L);
    items_free(&l);
    return st;
}
