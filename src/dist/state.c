/* state.c — what the ranks must hold alike besides gradients: checkpoints (written by rank 0,
 * loaded by all, then compared), the comparison itself, each rank's shard of the data, and
 * means of metrics. */
#include <stdio.h>
#include <string.h>

#include "dist_internal.h"

/* The refusal of a call on a NULL or broken handle (before any collective). */
static tg_status unusable(tg_dist *d, const char *fn)
{
    if (!d)
        return TG_INVALID;
    return tg_ctx_fail(d->ctx, TG_COMM, "%s: an earlier MPI failure: %s", fn, d->error);
}

/* ---- comparing ------------------------------------------------------------------------------ */

static size_t value_bytes(const tg_param *p)
{
    return (size_t)tg_param_numel(p) * tg_dtype_size(tg_param_dtype(p));
}

/* The hashes of the values to compare: each parameter, each optimiser state buffer, the step
 * count. */
static void hash_values(size_t n, tg_param *const *params, const tg_optim *opt, uint64_t *h)
{
    for (size_t i = 0; i < n; i++)
        h[i] = tg__dist_hash(0, tg_param_data(params[i]), value_bytes(params[i]));
    if (!opt)
        return;
    size_t nstate = tg_optim_state_count(opt);
    for (size_t i = 0; i < nstate; i++) {
        tg_param *p;
        void *data;
        tg_optim_state_info(opt, i, NULL, &p, &data);
        h[n + i] = tg__dist_hash(0, data, value_bytes(p));
    }
    h[n + nstate] = (uint64_t)tg_optim_steps(opt);
}

/* What value i of hash_values is, for messages. */
static void describe(size_t i, size_t n, tg_param *const *params, const tg_optim *opt, char *buf,
                     size_t size)
{
    size_t nstate = opt ? tg_optim_state_count(opt) : 0;
    if (i < n) {
        snprintf(buf, size, "parameter '%s'", tg_param_name(params[i]));
    } else if (i < n + nstate) {
        const char *name = "";
        tg_param *p = NULL;
        tg_optim_state_info(opt, i - n, &name, &p, NULL);
        snprintf(buf, size, "optimiser state '%s.%s'", tg_param_name(p), name);
    } else {
        snprintf(buf, size, "the optimiser's step count");
    }
}

tg_status tg_dist_check_identical(tg_dist *d, size_t n, tg_param *const *params,
                                  const tg_optim *opt)
{
    static const char fn[] = "tg_dist_check_identical";
    if (!d || d->broken)
        return unusable(d, fn);
    char mine[TG__DIST_MESSAGE] = "";
    tg_status local = tg__dist_check_list(d, n, params, mine);
    if (local)
        tg_ctx_fail(d->ctx, local, "%s: %s", fn, mine);
    int who;
    char theirs[TG__DIST_MESSAGE];
    tg_status st = tg__dist_agree(d, local, mine, &who, theirs);
    if (st)
        return tg__dist_ctx_verdict(d, fn, local, st, who, theirs);
    if ((st = tg__dist_same_layout(d, fn, n, params, opt)))
        return st;
    size_t count = n + (opt ? tg_optim_state_count(opt) + 1 : 0), first;
    size_t bytes = 2 * count * sizeof(uint64_t) + 1;
    uint64_t *h = tg_alloc(d->ctx, bytes);
    local = h ? TG_OK : tg_ctx_fail(d->ctx, TG_NOMEM, "%s: out of memory", fn);
    st = tg__dist_agree(d, local, tg_ctx_error(d->ctx), &who, theirs);
    if (st == TG_OK) {
        hash_values(n, params, opt, h);
        st = tg__dist_same(d, count, h, &first);
    }
    tg_free(d->ctx, h, bytes);
    if (st)
        return tg__dist_ctx_verdict(d, fn, local, st, who, theirs);
    if (first == count)
        return TG_OK;
    char what[256];
    describe(first, n, params, opt, what, sizeof what);
    return tg_ctx_fail(d->ctx, TG_PEER, "%s: %s differs between the %d ranks", fn, what, d->size);
}

/* ---- checkpoints ---------------------------------------------------------------------------- */

tg_status tg_dist_checkpoint_save(tg_dist *d, const char *path, size_t n, tg_param *const *params,
                                  const tg_optim *opt)
{
    static const char fn[] = "tg_dist_checkpoint_save";
    if (!d || d->broken)
        return unusable(d, fn);
    tg_status local = d->rank == 0 ? tg_checkpoint_save(d->ctx, path, n, params, opt) : TG_OK;
    int who;
    char theirs[TG__DIST_MESSAGE];
    tg_status st = tg__dist_agree(d, local, tg_ctx_error(d->ctx), &who, theirs);
    return tg__dist_ctx_verdict(d, fn, local, st, who, theirs);
}

tg_status tg_dist_checkpoint_load(tg_dist *d, const char *path, size_t n, tg_param *const *params,
                                  tg_optim *opt)
{
    static const char fn[] = "tg_dist_checkpoint_load";
    if (!d || d->broken)
        return unusable(d, fn);
    /* The lists first: rank 0's state can be handed out only over lists that agree. */
    char mine[TG__DIST_MESSAGE] = "", theirs[TG__DIST_MESSAGE];
    int who;
    tg_status local = tg__dist_check_list(d, n, params, mine);
    if (local)
        tg_ctx_fail(d->ctx, local, "%s: %s", fn, mine);
    tg_status st = tg__dist_agree(d, local, mine, &who, theirs);
    if (st)
        return tg__dist_ctx_verdict(d, fn, local, st, who, theirs);
    if ((st = tg__dist_same_layout(d, fn, n, params, opt)))
        return st;
    local = tg_checkpoint_load(d->ctx, path, n, params, opt);
    st = tg__dist_agree(d, local, tg_ctx_error(d->ctx), &who, theirs);
    if (st == TG_COMM)
        return tg_ctx_fail(d->ctx, TG_COMM, "%s: %s", fn, d->error);
    char failure[TG__DIST_MESSAGE + 160] = "";
    tg_status reported = st;
    if (st == TG_OK) {
        if ((st = tg_dist_check_identical(d, n, params, opt)) == TG_OK || st == TG_COMM)
            return st;
        snprintf(failure, sizeof failure, "%s: comparing the loaded values: %s", fn,
                 tg_ctx_error(d->ctx));
        reported = st; /* TG_PEER when they differ or another rank failed the comparison */
    } else if (local != TG_OK) {
        snprintf(failure, sizeof failure, "%s", tg_ctx_error(d->ctx));
        reported = local;
    } else {
        snprintf(failure, sizeof failure, "%s: rank %d of %d failed (%s): %s", fn, who, d->size,
                 tg_status_name(st), theirs);
        reported = TG_PEER;
    }
    /* Some rank holds other values now: every rank takes rank 0's, so that they still agree. */
    tg_status copied = tg__dist_copy_from_root(d, fn, n, params, opt);
    if (copied)
        return copied;
    return tg_ctx_fail(d->ctx, reported, "%s; every rank holds rank 0's values now", failure);
}

/* ---- data ----------------------------------------------------------------------------------- */

tg_status tg_dist_batches_new(tg_dist *d, const tg_dataset *data, int64_t batch_size, bool shuffle,
                              uint64_t seed, bool drop_last, tg_batches **out)
{
    static const char fn[] = "tg_dist_batches_new";
    if (out)
        *out = NULL;
    if (!d || d->broken)
        return unusable(d, fn);
    tg_batches *b = NULL;
    tg_status local = TG_OK;
    if (!data || !out || batch_size < 1)
        local = tg_ctx_fail(d->ctx, TG_INVALID, "%s: %s", fn,
                            !data  ? "data is NULL"
                            : !out ? "out is NULL"
                                   : "the batch size must be at least 1");
    else if ((local = tg_batches_new_shard(data, batch_size, shuffle, seed, drop_last, d->rank,
                                           d->size, &b)))
        local = tg_ctx_fail(d->ctx, local, "%s: out of memory", fn);
    int who;
    char theirs[TG__DIST_MESSAGE];
    tg_status st = tg__dist_agree(d, local, tg_ctx_error(d->ctx), &who, theirs);
    static const char *const what[] = {"seeds", "dataset sizes", "batch sizes", "shuffle flags",
                                       "drop_last flags"};
    uint64_t mine[5] = {seed, (uint64_t)(data ? tg_dataset_size(data) : 0), (uint64_t)batch_size,
                        shuffle, drop_last};
    uint64_t values[10];
    memcpy(values, mine, sizeof mine);
    size_t first = 5;
    if (st == TG_OK && tg__dist_same(d, 5, values, &first))
        st = TG_COMM;
    if (st == TG_OK && first < 5)
        st = tg_ctx_fail(d->ctx, TG_INVALID, "%s: the ranks passed different %s (%llu on rank %d)",
                         fn, what[first], (unsigned long long)mine[first], d->rank);
    else if (st)
        st = tg__dist_ctx_verdict(d, fn, local, st, who, theirs);
    if (st) {
        tg_batches_free(b);
        return st;
    }
    *out = b;
    return TG_OK;
}

/* ---- metrics -------------------------------------------------------------------------------- */

tg_status tg_dist_mean(tg_dist *d, size_t n, double *values)
{
    static const char fn[] = "tg_dist_mean";
    if (!d || d->broken)
        return unusable(d, fn);
    tg_status local =
        n && !values ? tg_ctx_fail(d->ctx, TG_INVALID, "%s: values is NULL", fn) : TG_OK;
    int who;
    char theirs[TG__DIST_MESSAGE];
    tg_status st = tg__dist_agree(d, local, tg_ctx_error(d->ctx), &who, theirs);
    uint64_t count[2] = {n};
    size_t first = 1;
    if (st == TG_OK && tg__dist_same(d, 1, count, &first))
        st = TG_COMM;
    if (st == TG_OK && first == 0)
        return tg_ctx_fail(d->ctx, TG_INVALID, "%s: the ranks passed different counts (%zu here)",
                           fn, n);
    for (size_t done = 0; st == TG_OK && done < n;) {
        int chunk = tg__dist_chunk(d, (int64_t)n, (int64_t)done);
        if (tg__dist_mpi(
                d, MPI_Allreduce(MPI_IN_PLACE, values + done, chunk, MPI_DOUBLE, MPI_SUM, d->comm),
                "MPI_Allreduce"))
            st = TG_COMM;
        done += (size_t)chunk;
    }
    if (st)
        return tg__dist_ctx_verdict(d, fn, local, st, who, theirs);
    for (size_t i = 0; i < n; i++)
        values[i] /= d->size;
    return TG_OK;
}
