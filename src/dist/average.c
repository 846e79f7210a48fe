/* average.c — gradient averaging in buckets: each bucket's allreduce started from the
 * gradient-ready hook as soon as its gradients (and every earlier bucket) are complete, all of
 * them waited for after backward, and the averages written only once every rank has said that
 * its step succeeded. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist_internal.h"

/* The entry of parameter p, or NULL when p is not the handle's (or a buffer). */
static tg__dist_entry *entry_of(tg_dist *d, const tg_param *p)
{
    size_t lo = 0, hi = d->nkeys;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)d->keys[mid].param < (uintptr_t)p)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == d->nkeys || d->keys[lo].param != p || d->keys[lo].entry == SIZE_MAX)
        return NULL;
    return &d->entries[d->keys[lo].entry];
}

/* The entry's slice of its bucket = its gradient + this backward's (when given): the gradient
 * tg_backward would have left, summed over the ranks next. One pass. */
#define FILL(T, name)                                                                              \
    static void name(T *out, const T *grad, const T *more, int64_t n)                              \
    {                                                                                              \
        if (more)                                                                                  \
            for (int64_t i = 0; i < n; i++)                                                        \
                out[i] = grad[i] + more[i];                                                        \
        else                                                                                       \
            memcpy(out, grad, (size_t)n * sizeof *out);                                            \
    }
FILL(float, fill_f32)
FILL(double, fill_f64)

static void fill(tg_dist *d, tg__dist_entry *e, const void *more)
{
    tg__dist_bucket *b = &d->buckets[e->bucket];
    const void *grad = tg_param_grad(e->param);
    if (b->dtype == TG_F64)
        fill_f64((double *)b->data + e->offset, grad, more, e->numel);
    else
        fill_f32((float *)b->data + e->offset, grad, more, e->numel);
    e->ready = true;
}

/* Starts bucket i's allreduce: one MPI_Iallreduce per chunk of max_count elements. */
static tg_status start(tg_dist *d, size_t i)
{
    tg__dist_bucket *b = &d->buckets[i];
    size_t es = tg_dtype_size(b->dtype);
    int64_t offset = 0;
    for (size_t r = 0; r < b->nreq; r++) {
        int count = tg__dist_chunk(d, b->numel, offset);
        size_t at = (size_t)offset * es;
        const void *send = b->source ? (const char *)b->source + at : MPI_IN_PLACE;
        int rc = MPI_Iallreduce(send, (char *)b->data + at, count, tg__dist_type(b->dtype), MPI_SUM,
                                d->comm, &d->requests[b->req_first + r]);
        if (tg__dist_mpi(d, rc, "MPI_Iallreduce"))
            return TG_COMM;
        offset += count;
    }
    d->started = b->req_first + b->nreq;
    return TG_OK;
}

/* Bucket i's allreduce, blocking (tg_dist_sync_grads: nothing to overlap with, and MPI's
 * blocking allreduce may choose a faster algorithm than its non-blocking one). */
static tg_status reduce(tg_dist *d, size_t i)
{
    tg__dist_bucket *b = &d->buckets[i];
    size_t es = tg_dtype_size(b->dtype);
    for (int64_t offset = 0; offset < b->numel || (offset == 0 && b->numel == 0);) {
        int count = tg__dist_chunk(d, b->numel, offset);
        size_t at = (size_t)offset * es;
        const void *send = b->source ? (const char *)b->source + at : MPI_IN_PLACE;
        int rc = MPI_Allreduce(send, (char *)b->data + at, count, tg__dist_type(b->dtype), MPI_SUM,
                               d->comm);
        if (tg__dist_mpi(d, rc, "MPI_Allreduce"))
            return TG_COMM;
        offset += count ? count : 1;
    }
    return TG_OK;
}

/* Starts the complete buckets at the front, in order: every rank starts them in one order. */
static void start_ready(tg_dist *d)
{
    while (!d->broken && d->next < d->nbuckets && d->buckets[d->next].pending == 0)
        if (start(d, d->next++) == TG_OK && d->in_backward)
            d->stats.started_in_backward++;
}

/* The gradient-ready hook: p's gradient from this backward goes into its bucket, and the
 * parameter's own gradient stays untouched until every rank has agreed on the step. */
static bool ready(void *user, tg_param *p, const void *grad)
{
    tg_dist *d = user;
    tg__dist_entry *e = entry_of(d, p);
    if (!e || e->ready)
        return false; /* not ours: backward adds it as usual */
    fill(d, e, grad);
    tg__dist_bucket *b = &d->buckets[e->bucket];
    double t0 = MPI_Wtime();
    if (--b->pending == 0 && !d->after_backward)
        start_ready(d);
    /* MPI moves data only inside its calls: a test lets the started buckets advance. */
    int done;
    if (!d->broken && d->started)
        tg__dist_mpi(d, MPI_Testall((int)d->started, d->requests, &done, MPI_STATUSES_IGNORE),
                     "MPI_Testall");
    d->stats.exposed_seconds += MPI_Wtime() - t0; /* communication, though during backward */
    return true;
}

/* A new step: every entry waits for its gradient, no bucket is started. */
static void begin(tg_dist *d)
{
    for (size_t i = 0; i < d->nentries; i++)
        d->entries[i].ready = false;
    for (size_t i = 0; i < d->nbuckets; i++) {
        d->buckets[i].pending = d->buckets[i].count;
        d->buckets[i].source = NULL;
    }
    d->next = d->started = 0;
    d->stats.started_in_backward = 0;
}

/* The sums divided by the number of ranks, into the parameters' gradients: one pass. */
#define AVERAGE(T, name)                                                                           \
    static void name(T *grad, const T *sum, int64_t n, T size)                                     \
    {                                                                                              \
        for (int64_t i = 0; i < n; i++)                                                            \
            grad[i] = sum[i] / size;                                                               \
    }
AVERAGE(float, average_f32)
AVERAGE(double, average_f64)

static void deliver(tg_dist *d)
{
    for (size_t i = 0; i < d->nentries; i++) {
        const tg__dist_entry *e = &d->entries[i];
        const tg__dist_bucket *b = &d->buckets[e->bucket];
        void *grad = tg_param_grad(e->param);
        if (b->dtype == TG_F64)
            average_f64(grad, (const double *)b->data + e->offset, e->numel, (double)d->size);
        else
            average_f32(grad, (const float *)b->data + e->offset, e->numel, (float)d->size);
    }
}

/* The end of a step on this rank, whose own status is `local`: the entries backward did not
 * reach carry their current gradients, every bucket not started yet starts, the ranks agree,
 * the allreduces finish, and the averages are written only if every rank succeeded. Failures
 * are recorded on tp (when there is one) or the context. Returns this rank's verdict. */
static tg_status finish(tg_dist *d, tg_tape *tp, tg_status local, const char *fn, bool blocking)
{
    double t0 = MPI_Wtime();
    for (size_t i = 0; !local && i < d->nentries; i++)
        if (!d->entries[i].ready)
            fill(d, &d->entries[i], NULL);
    /* The vote travels with the buckets, so that its latency hides in theirs: behind the
     * started ones, or ahead of blocking ones. */
    tg__dist_ballot ballot;
    tg_status verdict = TG_COMM;
    if (blocking) {
        if (!d->broken)
            verdict = tg__dist_vote(d, local, &ballot);
        for (; !d->broken && d->next < d->nbuckets; d->next++)
            reduce(d, d->next);
    } else {
        for (; !d->broken && d->next < d->nbuckets; d->next++)
            start(d, d->next);
        if (!d->broken)
            verdict = tg__dist_vote(d, local, &ballot);
    }
    if (!d->broken && d->started)
        tg__dist_mpi(d, MPI_Waitall((int)d->started, d->requests, MPI_STATUSES_IGNORE),
                     "MPI_Waitall");
    int who = -1;
    char theirs[TG__DIST_MESSAGE];
    const char *mine = tp ? tg_tape_error(tp) : tg_ctx_error(d->ctx);
    if (!d->broken)
        verdict = tg__dist_count(d, &ballot, local, mine, &who, theirs);
    if (d->broken)
        verdict = TG_COMM;
    if (verdict == TG_OK)
        deliver(d);
    d->stats.exposed_seconds += MPI_Wtime() - t0;
    d->stats.steps += verdict != TG_COMM;
    d->stats.skipped += verdict != TG_COMM && verdict != TG_OK;
    if (verdict == TG_OK || (verdict != TG_COMM && local != TG_OK))
        return verdict == TG_OK ? TG_OK : local; /* its own failure is recorded already */
    char text[TG__DIST_MESSAGE + 160];
    if (verdict == TG_COMM)
        snprintf(text, sizeof text, "%s: %s", fn, d->error);
    else
        snprintf(text, sizeof text,
                 "%s: rank %d of %d failed this step, so no rank updates (%s): %s", fn, who,
                 d->size, tg_status_name(verdict), theirs);
    tg_status st = verdict == TG_COMM ? TG_COMM : TG_PEER;
    return tp ? tg_tape_fail(tp, st, "%s", text) : tg_ctx_fail(d->ctx, st, "%s", text);
}

tg_status tg_dist_backward(tg_dist *d, tg_tensor loss)
{
    static const char fn[] = "tg_dist_backward";
    tg_tape *tp = tg_tensor_tape(loss);
    if (!d)
        return tp ? tg_tape_fail(tp, TG_INVALID, "%s: the handle is NULL", fn) : TG_INVALID;
    if (d->broken)
        return tp ? tg_tape_fail(tp, TG_COMM, "%s: an earlier MPI failure: %s", fn, d->error)
                  : tg_ctx_fail(d->ctx, TG_COMM, "%s: an earlier MPI failure: %s", fn, d->error);
    begin(d);
    tg_status local = TG_INVALID;
    if (!tp)
        tg_ctx_fail(d->ctx, TG_INVALID, "%s: the loss is none (no tape)", fn);
    else if ((local = tg_tensor_check(loss, fn)) == TG_OK && tg_numel(loss) == 1
             && !isfinite(tg_item(loss)))
        local = tg_tape_fail(tp, TG_RANGE, "%s: the loss is %g on rank %d of %d", fn, tg_item(loss),
                             d->rank, d->size);
    if (local == TG_OK) {
        tg_tape_set_grad_ready(tp, ready, d);
        d->in_backward = true;
        local = tg_backward(loss);
        d->in_backward = false;
        tg_tape_set_grad_ready(tp, NULL, NULL);
    }
    tg_status verdict = finish(d, tp, local, fn, false);
    return tp ? tg_tape_status(tp) : verdict;
}

tg_status tg_dist_sync_grads(tg_dist *d, tg_tape *tp)
{
    static const char fn[] = "tg_dist_sync_grads";
    if (!d)
        return tp ? tg_tape_fail(tp, TG_INVALID, "%s: the handle is NULL", fn) : TG_INVALID;
    if (d->broken)
        return tp ? tg_tape_fail(tp, TG_COMM, "%s: an earlier MPI failure: %s", fn, d->error)
                  : tg_ctx_fail(d->ctx, TG_COMM, "%s: an earlier MPI failure: %s", fn, d->error);
    begin(d);
    /* No backward to fuse with: a bucket of one parameter is reduced straight from its
     * gradient into the bucket (every rank does the same), the others are filled. */
    for (size_t i = 0; i < d->nbuckets; i++) {
        tg__dist_bucket *b = &d->buckets[i];
        if (b->count == 1) {
            b->source = tg_param_grad(d->entries[b->first].param);
            d->entries[b->first].ready = true;
        }
    }
    tg_status local =
        tp ? tg_tape_status(tp) : tg_ctx_fail(d->ctx, TG_INVALID, "%s: the tape is NULL", fn);
    tg_status verdict = finish(d, tp, local, fn, true);
    return tp ? tg_tape_status(tp) : verdict;
}
