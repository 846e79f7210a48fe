/* reference.h — the reader of the reference files written by tests/reference/generate*.py, one
 * tensor a line: `<graph> <name> <ndim> <dims...> : <values...>` (format described in
 * generate.py). A test program reads one file: ref_load() from its group setup, ref_free() as its
 * group teardown, then ref(graph, name) in its tests, which fails the test if the file could not
 * be read or lacks the tensor. */
#ifndef TG_TEST_REFERENCE_H
#define TG_TEST_REFERENCE_H

#include "common.h"

/* One tensor of the reference file. */
typedef struct ref_tensor {
    char graph[32];
    char name[32];
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t numel;
    double *v;
} ref_tensor;

/* The program's reference file: its tensors, or why it could not be read. */
static struct ref_file {
    const char *path;   /* the file */
    const char *script; /* what writes it, for "regenerate with" */
    ref_tensor *t;
    size_t n;
    char error[256];
} refs;

/* Parses one data line; false (with refs.error set) if it is malformed. */
static inline bool ref_parse_line(char *line, int lineno, ref_tensor *r)
{
    int used = 0;
    memset(r, 0, sizeof *r);
    if (sscanf(line, "%31s %31s %d%n", r->graph, r->name, &r->ndim, &used) != 3 || r->ndim < 0
        || r->ndim > TG_MAX_DIMS)
        goto bad;
    char *p = line + used, *end;
    r->numel = 1;
    for (int d = 0; d < r->ndim; d++) {
        r->shape[d] = strtoll(p, &end, 10);
        if (end == p || r->shape[d] < 0)
            goto bad;
        r->numel *= r->shape[d];
        p = end;
    }
    while (*p == ' ')
        p++;
    if (*p++ != ':')
        goto bad;
    r->v = malloc((size_t)(r->numel ? r->numel : 1) * sizeof *r->v);
    if (!r->v)
        goto bad;
    for (int64_t i = 0; i < r->numel; i++) {
        r->v[i] = strtod(p, &end);
        if (end == p) {
            free(r->v);
            goto bad;
        }
        p = end;
    }
    while (*p == ' ' || *p == '\r')
        p++;
    if (*p == '\0')
        return true;
    free(r->v);
bad:
    snprintf(refs.error, sizeof refs.error, "%s:%d: malformed line", refs.path, lineno);
    return false;
}

/* Reads `path` (written by `script`, named in failure messages). Returns 0 (for a group setup)
 * even when the file cannot be read: each test that needs it reports that. */
static inline int ref_load(const char *path, const char *script)
{
    refs.path = path;
    refs.script = script;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(refs.error, sizeof refs.error, "cannot open %s", path);
        return 0;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
        snprintf(refs.error, sizeof refs.error, "cannot read %s", path);
        free(text);
        fclose(f);
        return 0;
    }
    fclose(f);
    text[size] = '\0';
    size_t cap = 0;
    int lineno = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        if (line[0] == '#' || line[strspn(line, " \r\t")] == '\0')
            continue;
        if (refs.n == cap) {
            cap = cap ? 2 * cap : 64;
            ref_tensor *grown = realloc(refs.t, cap * sizeof *refs.t);
            if (!grown)
                break;
            refs.t = grown;
        }
        if (!ref_parse_line(line, lineno, &refs.t[refs.n]))
            break;
        refs.n++;
    }
    free(text);
    return 0;
}

/* A group teardown freeing what ref_load() read. */
static inline int ref_free(void **state)
{
    (void)state;
    for (size_t i = 0; i < refs.n; i++)
        free(refs.t[i].v);
    free(refs.t);
    refs.t = NULL;
    refs.n = 0;
    return 0;
}

/* The reference tensor graph.name; fails the test if there is none. */
static inline const ref_tensor *ref(const char *graph, const char *name)
{
    if (refs.error[0])
        fail_msg("%s", refs.error);
    for (size_t i = 0; i < refs.n; i++)
        if (!strcmp(refs.t[i].graph, graph) && !strcmp(refs.t[i].name, name))
            return &refs.t[i];
    fail_msg("%s: no tensor %s.%s (regenerate with %s)", refs.path, graph, name, refs.script);
    return NULL;
}

#endif
