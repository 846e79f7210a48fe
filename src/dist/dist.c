/* dist.c — the data-parallel handle: its communicator, its buckets, agreement between ranks, and
 * broadcasts from rank 0. Written against the public header and MPI only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist_internal.h"

#define DEFAULT_BUCKET_BYTES ((size_t)25 << 20)

/* ---- MPI errors and agreement --------------------------------------------------------------- */

void tg__dist_mpi_message(int rc, const char *call, char *buf, size_t size)
{
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0, cls = -1;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "unknown MPI error %d", rc);
    if (MPI_Error_class(rc, &cls) != MPI_SUCCESS)
        cls = -1;
    snprintf(buf, size, "%s failed: %s (MPI error class %d)", call, text, cls);
}

tg_status tg__dist_mpi(tg_dist *d, int rc, const char *call)
{
    if (rc == MPI_SUCCESS)
        return TG_OK;
    if (!d->broken) /* the first failure is the one to report */
        tg__dist_mpi_message(rc, call, d->error, sizeof d->error);
    d->broken = true;
    return TG_COMM;
}

tg_status tg__dist_vote(tg_dist *d, tg_status local, tg__dist_ballot *b)
{
    b->mine = local ? d->rank : d->size;
    b->lowest = d->size;
    return tg__dist_mpi(
        d, MPI_Iallreduce(&b->mine, &b->lowest, 1, MPI_INT, MPI_MIN, d->comm, &b->request),
        "MPI_Iallreduce");
}

tg_status tg__dist_count(tg_dist *d, tg__dist_ballot *b, tg_status local, const char *local_message,
                         int *who, char *message)
{
    *who = -1;
    message[0] = '\0';
    if (tg__dist_mpi(d, MPI_Wait(&b->request, MPI_STATUS_IGNORE), "MPI_Wait"))
        return TG_COMM;
    if (b->lowest == d->size)
        return TG_OK;
    /* The lowest failing rank tells the others its status and message. */
    struct {
        int status;
        char text[TG__DIST_MESSAGE];
    } said = {0, ""};
    if (b->lowest == d->rank) {
        said.status = local;
        snprintf(said.text, sizeof said.text, "%s", local_message ? local_message : "");
    }
    if (tg__dist_mpi(d, MPI_Bcast(&said, sizeof said, MPI_BYTE, b->lowest, d->comm), "MPI_Bcast"))
        return TG_COMM;
    *who = b->lowest;
    snprintf(message, TG__DIST_MESSAGE, "%s", said.text);
    return said.status > TG_OK && said.status < TG_STATUS_COUNT ? (tg_status)said.status
                                                                : TG_INVALID;
}

tg_status tg__dist_agree(tg_dist *d, tg_status local, const char *local_message, int *who,
                         char *message)
{
    tg__dist_ballot b;
    *who = -1;
    message[0] = '\0';
    if (tg__dist_vote(d, local, &b))
        return TG_COMM;
    return tg__dist_count(d, &b, local, local_message, who, message);
}

tg_status tg__dist_ctx_verdict(tg_dist *d, const char *fn, tg_status local, tg_status verdict,
                               int who, const char *message)
{
    if (verdict == TG_COMM)
        return tg_ctx_fail(d->ctx, TG_COMM, "%s: %s", fn, d->error);
    if (verdict == TG_OK || local != TG_OK)
        return verdict == TG_OK ? TG_OK : local; /* its own failure is on its context already */
    return tg_ctx_fail(d->ctx, TG_PEER, "%s: rank %d of %d failed (%s): %s", fn, who, d->size,
                       tg_status_name(verdict), message);
}

tg_status tg__dist_same(tg_dist *d, size_t count, uint64_t *values, size_t *first)
{
    /* One MIN over (v, ~v) gives each value's minimum and its maximum (as ~min(~v)). */
    for (size_t i = 0; i < count; i++)
        values[count + i] = ~values[i];
    *first = count;
    for (size_t done = 0; done < 2 * count;) {
        int chunk = tg__dist_chunk(d, (int64_t)(2 * count), (int64_t)done);
        if (tg__dist_mpi(
                d,
                MPI_Allreduce(MPI_IN_PLACE, values + done, chunk, MPI_UINT64_T, MPI_MIN, d->comm),
                "MPI_Allreduce"))
            return TG_COMM;
        done += (size_t)chunk;
    }
    for (size_t i = 0; i < count && *first == count; i++)
        if (values[i] != ~values[count + i])
            *first = i;
    return TG_OK;
}

uint64_t tg__dist_hash(uint64_t h, const void *data, size_t bytes)
{
    /* Eight bytes a step, each mixed in by a multiply and a shift; the tail byte by byte. */
    const unsigned char *p = data;
    const uint64_t k = 0x9e3779b97f4a7c15ull;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * k;
        h ^= h >> 29;
    }
    for (; i < bytes; i++)
        h = (h ^ p[i]) * k;
    h ^= bytes;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 31);
}

/* ---- broadcasts ----------------------------------------------------------------------------- */

/* Rank 0's `bytes` bytes at `src` into `stage` on the others, in chunks. */
static tg_status broadcast_bytes(tg_dist *d, const void *src, void *stage, size_t bytes)
{
    unsigned char *buf = d->rank == 0 ? (unsigned char *)(uintptr_t)src : stage;
    for (size_t done = 0; done < bytes;) {
        int chunk = tg__dist_chunk(d, (int64_t)bytes, (int64_t)done);
        if (tg__dist_mpi(d, MPI_Bcast(buf + done, chunk, MPI_BYTE, 0, d->comm), "MPI_Bcast"))
            return TG_COMM;
        done += (size_t)chunk;
    }
    return TG_OK;
}

static size_t param_bytes(const tg_param *p)
{
    return (size_t)tg_param_numel(p) * tg_dtype_size(tg_param_dtype(p));
}

/* The largest parameter or optimiser state buffer to broadcast, in bytes. */
static size_t largest(size_t n, tg_param *const *params, const tg_optim *opt)
{
    size_t need = 0, nstate = opt ? tg_optim_state_count(opt) : 0;
    for (size_t i = 0; i < n; i++)
        need = param_bytes(params[i]) > need ? param_bytes(params[i]) : need;
    for (size_t i = 0; i < nstate; i++) {
        tg_param *p = NULL;
        tg_optim_state_info(opt, i, NULL, &p, NULL);
        need = param_bytes(p) > need ? param_bytes(p) : need;
    }
    return need;
}

/* Broadcasts each value whole into `stage` and only then writes it. */
static tg_status copy_values(tg_dist *d, size_t n, tg_param *const *params, tg_optim *opt,
                             void *stage)
{
    tg_status st = TG_OK;
    for (size_t i = 0; st == TG_OK && i < n; i++) {
        size_t bytes = param_bytes(params[i]);
        st = broadcast_bytes(d, tg_param_data(params[i]), stage, bytes);
        if (st == TG_OK && d->rank != 0 && bytes)
            memcpy(tg_param_write(params[i]), stage, bytes);
    }
    size_t nstate = opt ? tg_optim_state_count(opt) : 0;
    for (size_t i = 0; st == TG_OK && i < nstate; i++) {
        tg_param *p;
        void *data;
        tg_optim_state_info(opt, i, NULL, &p, &data);
        size_t bytes = param_bytes(p);
        st = broadcast_bytes(d, data, stage, bytes);
        if (st == TG_OK && d->rank != 0 && bytes)
            memcpy(data, stage, bytes);
    }
    if (st == TG_OK && opt) {
        int64_t steps = tg_optim_steps(opt);
        st = tg__dist_mpi(d, MPI_Bcast(&steps, 1, MPI_INT64_T, 0, d->comm), "MPI_Bcast");
        if (st == TG_OK)
            tg_optim_set_steps(opt, steps);
    }
    return st;
}

tg_status tg__dist_copy_from_root(tg_dist *d, const char *fn, size_t n, tg_param *const *params,
                                  tg_optim *opt)
{
    /* Staging: a bucket's buffer (scratch between steps), or one of our own when too small. */
    size_t need = largest(n, params, opt);
    void *stage = NULL;
    for (size_t b = 0; b < d->nbuckets && !stage; b++)
        if (d->buckets[b].bytes >= need)
            stage = d->buckets[b].data;
    bool own = !stage;
    if (own)
        stage = tg_alloc(d->ctx, need ? need : 1);
    tg_status local =
        stage ? TG_OK
              : tg_ctx_fail(d->ctx, TG_NOMEM, "%s: out of memory for a staging buffer of %zu bytes",
                            fn, need);
    int who;
    char theirs[TG__DIST_MESSAGE];
    tg_status st = tg__dist_agree(d, local, tg_ctx_error(d->ctx), &who, theirs);
    if (st == TG_OK && copy_values(d, n, params, opt, stage))
        st = tg_ctx_fail(d->ctx, TG_COMM, "%s: %s", fn, d->error);
    else if (st)
        st = tg__dist_ctx_verdict(d, fn, local, st, who, theirs);
    if (own)
        tg_free(d->ctx, stage, need ? need : 1);
    return st;
}

tg_status tg__dist_check_list(const tg_dist *d, size_t n, tg_param *const *params, char *message)
{
    if (n && !params) {
        snprintf(message, TG__DIST_MESSAGE, "params is NULL (n = %zu)", n);
        return TG_INVALID;
    }
    for (size_t i = 0; i < n; i++) {
        if (!params[i] || tg_param_ctx(params[i]) != d->ctx) {
            snprintf(message, TG__DIST_MESSAGE, "parameter %zu is %s", i,
                     params[i] ? "of another context" : "NULL");
            return TG_INVALID;
        }
    }
    return TG_OK;
}

/* A parameter's identity across ranks: its name, dtype and shape. */
static uint64_t signature(const tg_param *p)
{
    const char *name = tg_param_name(p);
    uint64_t h = tg__dist_hash(0x7467, name, strlen(name));
    int64_t meta[2] = {tg_param_dtype(p), tg_param_ndim(p)};
    h = tg__dist_hash(h, meta, sizeof meta);
    return tg__dist_hash(h, tg_param_shape(p), (size_t)tg_param_ndim(p) * sizeof(int64_t));
}

/* The signatures to compare: the parameters', then (with an optimiser) its state buffers'. */
static size_t layout_count(size_t n, const tg_optim *opt)
{
    return n + (opt ? 1 + tg_optim_state_count(opt) : 0);
}

static void layout(size_t n, tg_param *const *params, const tg_optim *opt, uint64_t *sig)
{
    for (size_t i = 0; i < n; i++)
        sig[i] = signature(params[i]);
    if (!opt)
        return;
    size_t nstate = tg_optim_state_count(opt);
    sig[n] = nstate;
    for (size_t i = 0; i < nstate; i++) {
        const char *name = "";
        tg_param *p = NULL;
        tg_optim_state_info(opt, i, &name, &p, NULL);
        sig[n + 1 + i] = tg__dist_hash(signature(p), name, strlen(name));
    }
}

tg_status tg__dist_same_layout(tg_dist *d, const char *fn, size_t n, tg_param *const *params,
                               const tg_optim *opt)
{
    size_t count = layout_count(n, opt), first;
    uint64_t counts[2] = {count};
    if (tg__dist_same(d, 1, counts, &first))
        return tg_ctx_fail(d->ctx, TG_COMM, "%s: %s", fn, d->error);
    if (first == 0)
        return tg_ctx_fail(d->ctx, TG_SHAPE,
                           "%s: the ranks passed different numbers of parameters%s (%zu on rank "
                           "%d)",
                           fn, opt ? " and optimiser states" : "", count, d->rank);
    size_t bytes = 2 * count * sizeof(uint64_t) + 1;
    uint64_t *sig = tg_alloc(d->ctx, bytes);
    tg_status local =
        sig ? TG_OK : tg_ctx_fail(d->ctx, TG_NOMEM, "%s: out of memory comparing lists", fn);
    int who;
    char theirs[TG__DIST_MESSAGE];
    tg_status st = tg__dist_agree(d, local, tg_ctx_error(d->ctx), &who, theirs);
    if (st == TG_OK) {
        layout(n, params, opt, sig);
        st = tg__dist_same(d, count, sig, &first);
    }
    tg_free(d->ctx, sig, bytes);
    if (st)
        return tg__dist_ctx_verdict(d, fn, local, st, who, theirs);
    if (first >= n && first < count)
        return tg_ctx_fail(d->ctx, TG_SHAPE, "%s: the optimiser's state differs between ranks", fn);
    if (first < n) {
        char shape[96];
        const tg_param *p = params[first];
        tg_format_shape(shape, sizeof shape, tg_param_dtype(p), tg_param_ndim(p),
                        tg_param_shape(p));
        return tg_ctx_fail(d->ctx, TG_SHAPE,
                           "%s: parameter %zu differs between ranks: '%s' %s on rank %d (names, "
                           "dtypes and shapes must match)",
                           fn, first, tg_param_name(p), shape, d->rank);
    }
    return TG_OK;
}

tg_status tg_dist_broadcast(tg_dist *d, size_t n, tg_param *const *params)
{
    static const char fn[] = "tg_dist_broadcast";
    if (!d)
        return TG_INVALID;
    if (d->broken)
        return tg_ctx_fail(d->ctx, TG_COMM, "%s: an earlier MPI failure: %s", fn, d->error);
    char mine[TG__DIST_MESSAGE] = "", theirs[TG__DIST_MESSAGE];
    int who;
    tg_status local = tg__dist_check_list(d, n, params, mine);
    if (local)
        tg_ctx_fail(d->ctx, local, "%s: %s", fn, mine);
    tg_status st = tg__dist_agree(d, local, mine, &who, theirs);
    if (st)
        return tg__dist_ctx_verdict(d, fn, local, st, who, theirs);
    if ((st = tg__dist_same_layout(d, fn, n, params, NULL)))
        return st;
    return tg__dist_copy_from_root(d, fn, n, params, NULL);
}

/* ---- the handle ----------------------------------------------------------------------------- */

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const tg__dist_key *)a)->param;
    uintptr_t y = (uintptr_t)((const tg__dist_key *)b)->param;
    return (x > y) - (x < y);
}

/* The entries (the parameters in reverse; buffers have no gradient and get none), the lookup
 * keys (buffers too, to refuse repeats), and the buckets: consecutive entries of one dtype up to
 * `cap` bytes. */
static tg_status lay_out(tg_dist *d, size_t n, tg_param *const *params, size_t cap, char *message)
{
    tg_ctx *ctx = d->ctx;
    d->capacity = n; /* the arrays' size, also when an allocation fails */
    d->entries = tg_alloc(ctx, (n ? n : 1) * sizeof *d->entries);
    d->keys = tg_alloc(ctx, (n ? n : 1) * sizeof *d->keys);
    d->buckets = tg_alloc(ctx, (n ? n : 1) * sizeof *d->buckets);
    if (!d->entries || !d->keys || !d->buckets) {
        snprintf(message, TG__DIST_MESSAGE, "out of memory");
        return TG_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        tg_param *p = params[n - 1 - i];
        bool buffer = tg_param_is_buffer(p);
        d->keys[i] = (tg__dist_key){p, buffer ? SIZE_MAX : d->nentries};
        if (!buffer)
            d->entries[d->nentries++] = (tg__dist_entry){p, 0, 0, tg_param_numel(p), false};
    }
    d->nkeys = n;
    qsort(d->keys, n, sizeof *d->keys, by_address);
    for (size_t i = 1; i < n; i++)
        if (d->keys[i].param == d->keys[i - 1].param) {
            snprintf(message, TG__DIST_MESSAGE, "parameter '%s' is in the list twice",
                     tg_param_name(d->keys[i].param));
            return TG_INVALID;
        }
    for (size_t i = 0; i < d->nentries; i++) {
        tg__dist_entry *e = &d->entries[i];
        tg_dtype dt = tg_param_dtype(e->param);
        size_t bytes = (size_t)e->numel * tg_dtype_size(dt);
        tg__dist_bucket *b = d->nbuckets ? &d->buckets[d->nbuckets - 1] : NULL;
        if (!b || b->dtype != dt || (b->count && b->bytes + bytes > cap)) {
            b = &d->buckets[d->nbuckets++];
            *b = (tg__dist_bucket){.dtype = dt, .first = i};
        }
        e->bucket = (size_t)(b - d->buckets);
        e->offset = b->numel;
        b->count++;
        b->numel += e->numel;
        b->bytes += bytes;
    }
    return TG_OK;
}

/* Each bucket's buffer and its requests (one per chunk of max_count elements). */
static tg_status allocate_buckets(tg_dist *d, char *message)
{
    for (size_t i = 0; i < d->nbuckets; i++) {
        tg__dist_bucket *b = &d->buckets[i];
        b->req_first = d->nrequests;
        b->nreq = b->numel ? (size_t)((b->numel + d->max_count - 1) / d->max_count) : 1;
        d->nrequests += b->nreq;
        b->data = tg_alloc(d->ctx, b->bytes ? b->bytes : 1);
        if (!b->data) {
            snprintf(message, TG__DIST_MESSAGE, "out of memory for a bucket of %zu bytes",
                     b->bytes);
            return TG_NOMEM;
        }
        d->stats.bytes += b->bytes;
    }
    d->requests = tg_alloc(d->ctx, (d->nrequests ? d->nrequests : 1) * sizeof *d->requests);
    if (!d->requests) {
        snprintf(message, TG__DIST_MESSAGE, "out of memory");
        return TG_NOMEM;
    }
    for (size_t i = 0; i < d->nrequests; i++)
        d->requests[i] = MPI_REQUEST_NULL;
    d->stats.buckets = d->nbuckets;
    return TG_OK;
}

static void release(tg_dist *d)
{
    tg_ctx *ctx = d->ctx;
    size_t n = d->capacity ? d->capacity : 1;
    for (size_t i = 0; d->buckets && i < d->nbuckets; i++)
        tg_free(ctx, d->buckets[i].data, d->buckets[i].bytes ? d->buckets[i].bytes : 1);
    tg_free(ctx, d->requests, (d->nrequests ? d->nrequests : 1) * sizeof *d->requests);
    tg_free(ctx, d->buckets, n * sizeof *d->buckets);
    tg_free(ctx, d->keys, n * sizeof *d->keys);
    tg_free(ctx, d->entries, n * sizeof *d->entries);
    tg_free(ctx, d, sizeof *d);
}

/* This rank's handle, built from `proto` (communicator, rank, size): what can fail here alone. A
 * handle that exists is in *made, also on failure. */
static tg_status build(const tg_dist *proto, size_t n, tg_param *const *params,
                       const tg_dist_options *opts, tg_dist **out, tg_dist **made, char *message)
{
    if (!proto->ctx || !out) {
        snprintf(message, TG__DIST_MESSAGE, "%s is NULL", proto->ctx ? "out" : "ctx");
        return TG_INVALID;
    }
    tg_dist *d = tg_alloc(proto->ctx, sizeof *d);
    if (!d) {
        snprintf(message, TG__DIST_MESSAGE, "out of memory");
        return TG_NOMEM;
    }
    *d = *proto;
    *made = d;
    d->after_backward = opts && opts->after_backward;
    size_t cap = opts && opts->bucket_bytes ? opts->bucket_bytes : DEFAULT_BUCKET_BYTES;
    tg_status st = tg__dist_check_list(d, n, params, message);
    if (!st)
        st = lay_out(d, n, params, cap, message);
    if (!st)
        st = allocate_buckets(d, message);
    return st;
}

/* The caller's communicator duplicated with errors returned, also by the duplication itself:
 * its error handler is switched to MPI_ERRORS_RETURN for the call and put back. */
static int duplicate(MPI_Comm user, MPI_Comm *out)
{
    MPI_Errhandler old;
    int rc = MPI_Comm_get_errhandler(user, &old);
    if (rc != MPI_SUCCESS)
        return rc;
    rc = MPI_Comm_set_errhandler(user, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) {
        rc = MPI_Comm_dup(user, out);
        MPI_Comm_set_errhandler(user, old);
    }
    MPI_Errhandler_free(&old);
    if (rc == MPI_SUCCESS && (rc = MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN)) != MPI_SUCCESS)
        MPI_Comm_free(out);
    return rc;
}

/* MPI is up, and the communicator is an intracommunicator: what every rank can tell alone. */
static tg_status check_mpi(tg_ctx *ctx, MPI_Comm comm, const char *fn)
{
    int up = 0, down = 0, inter = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    const char *why = !up    ? "MPI is not initialised (call MPI_Init first)"
                      : down ? "MPI is finalised already"
                             : NULL;
    if (!why && MPI_Comm_test_inter(comm, &inter) != MPI_SUCCESS)
        why = "the communicator is not valid";
    else if (!why && inter)
        why = "an intercommunicator cannot average gradients (give an intracommunicator)";
    return why ? tg_ctx_fail(ctx, TG_INVALID, "%s: %s", fn, why) : TG_OK;
}

tg_status tg_dist_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_dist_options *opts,
                      tg_dist **out)
{
    return tg__dist_new(ctx, n, params, opts, TG__DIST_MAX_COUNT, out);
}

tg_status tg__dist_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_dist_options *opts,
                       int64_t max_count, tg_dist **out)
{
    static const char fn[] = "tg_dist_new";
    if (out)
        *out = NULL;
    MPI_Comm user = opts && opts->comm != MPI_COMM_NULL && opts->comm != (MPI_Comm)0
                        ? opts->comm
                        : MPI_COMM_WORLD;
    tg_status st = check_mpi(ctx, user, fn);
    if (st)
        return st;
    MPI_Comm comm;
    int rc = duplicate(user, &comm);
    if (rc != MPI_SUCCESS) {
        char text[TG__DIST_MESSAGE];
        tg__dist_mpi_message(rc, "MPI_Comm_dup", text, sizeof text);
        return tg_ctx_fail(ctx, TG_COMM, "%s: %s", fn, text);
    }
    /* From here on every rank takes part in the same collectives, whatever its arguments. */
    tg_dist proto = {.ctx = ctx, .comm = comm, .max_count = max_count};
    MPI_Comm_rank(comm, &proto.rank);
    MPI_Comm_size(comm, &proto.size);
    char mine[TG__DIST_MESSAGE] = "", theirs[TG__DIST_MESSAGE];
    tg_dist *d = NULL;
    tg_status local = build(&proto, n, params, opts, out, &d, mine);
    if (local)
        tg_ctx_fail(ctx, local, "%s: %s", fn, mine);
    tg_dist *view = d ? d : &proto;
    int who;
    st = tg__dist_agree(view, local, mine, &who, theirs);
    if (st)
        st = tg__dist_ctx_verdict(view, fn, local, st, who, theirs);
    if (!st)
        st = tg__dist_same_layout(d, fn, n, params, NULL);
    if (!st)
        st = tg__dist_copy_from_root(d, fn, n, params, NULL);
    if (st) {
        bool broken = view->broken;
        if (d)
            release(d);
        if (!broken)
            MPI_Comm_free(&comm);
        return st;
    }
    *out = d;
    return TG_OK;
}

void tg_dist_free(tg_dist *d)
{
    if (!d)
        return;
    int down = 0;
    MPI_Finalized(&down);
    if (!down && !d->broken)
        MPI_Comm_free(&d->comm);
    release(d);
}

int tg_dist_rank(const tg_dist *d) { return d ? d->rank : -1; }

int tg_dist_size(const tg_dist *d) { return d ? d->size : 0; }

MPI_Comm tg_dist_comm(const tg_dist *d) { return d ? d->comm : MPI_COMM_NULL; }

tg_dist_stats tg_dist_get_stats(const tg_dist *d)
{
    tg_dist_stats none = {0};
    return d ? d->stats : none;
}

bool tg_dist_launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return true;
    return false;
}
