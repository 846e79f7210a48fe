/* train.c — helpers around a training loop, on the public API only: early stopping with the best
 * parameters kept, and a CSV log of the run. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <tapegrad.h>

/* ---- early stopping ------------------------------------------------------------------------ */

struct tg_early_stopping {
    tg_ctx *ctx;
    tg_early_stopping_options o;
    size_t n;
    tg_param **params;
    void **best; /* a copy of each parameter's value at the best evaluation */
    size_t *bytes;
    double best_value;
    int64_t evaluations, best_index, wait;
};

void tg_early_stopping_free(tg_early_stopping *es)
{
    if (!es)
        return;
    tg_ctx *ctx = es->ctx;
    for (size_t i = 0; es->best && es->bytes && i < es->n; i++)
        tg_free(ctx, es->best[i], es->bytes[i]); /* NULL past an allocation that failed */
    tg_free(ctx, es->best, es->n * sizeof *es->best);
    tg_free(ctx, es->bytes, es->n * sizeof *es->bytes);
    tg_free(ctx, es->params, es->n * sizeof *es->params);
    tg_free(ctx, es, sizeof *es);
}

static tg_status check_params(tg_ctx *ctx, const char *fn, size_t n, tg_param *const *params)
{
    if (n == 0 || !params)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: no parameters", fn);
    for (size_t i = 0; i < n; i++)
        if (!params[i] || tg_param_ctx(params[i]) != ctx)
            return tg_ctx_fail(ctx, TG_INVALID, "%s: parameter %zu is %s", fn, i,
                               params[i] ? "of another context" : "NULL");
    return TG_OK;
}

tg_status tg_early_stopping_new(tg_ctx *ctx, size_t n, tg_param *const *params,
                                const tg_early_stopping_options *o, tg_early_stopping **out)
{
    static const char fn[] = "tg_early_stopping_new";
    if (!ctx)
        return TG_INVALID;
    if (!out)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    tg_early_stopping_options opts = {0};
    if (o)
        opts = *o;
    if (opts.patience < 0 || !(opts.min_delta >= 0) || !isfinite(opts.min_delta))
        return tg_ctx_fail(ctx, TG_RANGE, "%s: patience %d and min_delta %g (need >= 0)", fn,
                           opts.patience, opts.min_delta);
    if (opts.patience == 0)
        opts.patience = 3;
    tg_status st = check_params(ctx, fn, n, params);
    if (st)
        return st;
    tg_early_stopping *es = tg_alloc(ctx, sizeof *es);
    if (!es)
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    memset(es, 0, sizeof *es);
    es->ctx = ctx;
    es->o = opts;
    es->best_value = opts.maximize ? -INFINITY : INFINITY;
    es->best_index = -1;
    es->n = n;
    es->params = tg_alloc(ctx, n * sizeof *es->params);
    es->bytes = tg_alloc(ctx, n * sizeof *es->bytes);
    es->best = tg_alloc(ctx, n * sizeof *es->best);
    bool ok = es->params && es->bytes && es->best;
    if (es->best)
        memset(es->best, 0, n * sizeof *es->best); /* what _free may see before it is filled */
    for (size_t i = 0; ok && i < n; i++) {
        es->params[i] = params[i];
        es->bytes[i] = (size_t)tg_param_numel(params[i]) * tg_dtype_size(tg_param_dtype(params[i]));
        ok = (es->best[i] = tg_alloc(ctx, es->bytes[i])) != NULL;
    }
    if (!ok) {
        tg_early_stopping_free(es);
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory for the best parameters", fn);
    }
    *out = es;
    return TG_OK;
}

tg_status tg_early_stopping_update(tg_early_stopping *es, double value, bool *stop)
{
    if (stop)
        *stop = false;
    if (!es)
        return TG_INVALID;
    if (!stop)
        return tg_ctx_fail(es->ctx, TG_INVALID, "tg_early_stopping_update: stop is NULL");
    es->evaluations++;
    if (!isfinite(value)) { /* as Lightning's check_finite: a diverged run stops at once */
        es->wait++;
        *stop = true;
        return TG_OK;
    }
    bool better = es->o.maximize ? value > es->best_value + es->o.min_delta
                                 : value < es->best_value - es->o.min_delta;
    if (!better) {
        es->wait++;
        *stop = es->wait >= es->o.patience;
        return TG_OK;
    }
    for (size_t i = 0; i < es->n; i++)
        memcpy(es->best[i], tg_param_data(es->params[i]), es->bytes[i]);
    es->best_value = value;
    es->best_index = es->evaluations - 1;
    es->wait = 0;
    return TG_OK;
}

tg_status tg_early_stopping_restore(tg_early_stopping *es)
{
    if (!es)
        return TG_INVALID;
    if (es->best_index < 0)
        return tg_ctx_fail(es->ctx, TG_NOT_FOUND,
                           "tg_early_stopping_restore: no evaluation has been recorded");
    for (size_t i = 0; i < es->n; i++) {
        tg_status st = tg_param_set(es->params[i], es->best[i]);
        if (st)
            return st;
    }
    return TG_OK;
}

double tg_early_stopping_best(const tg_early_stopping *es)
{
    return es && es->best_index >= 0 ? es->best_value : NAN;
}

int64_t tg_early_stopping_best_index(const tg_early_stopping *es)
{
    return es ? es->best_index : -1;
}

int64_t tg_early_stopping_wait(const tg_early_stopping *es) { return es ? es->wait : -1; }

/* ---- the training log ------------------------------------------------------------------------ */

struct tg_train_log {
    tg_ctx *ctx;
    FILE *f;
    char *path;
    size_t path_size;
};

/* A field: the number, or nothing when it was not measured (NaN). */
static void field(FILE *f, const char *format, double v, bool last)
{
    if (!isnan(v))
        fprintf(f, format, v);
    fputc(last ? '\n' : ',', f);
}

tg_status tg_train_log_open(tg_ctx *ctx, const char *path, const char *unit, tg_train_log **out)
{
    static const char fn[] = "tg_train_log_open";
    if (!ctx)
        return TG_INVALID;
    if (!out)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    if (!path || !unit || !unit[0] || strpbrk(unit, ",\"\n\r"))
        return tg_ctx_fail(ctx, TG_INVALID, "%s: %s", fn,
                           !path ? "path is NULL" : "unit must be a plain word");
    tg_train_log *log = tg_alloc(ctx, sizeof *log);
    if (!log)
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    log->ctx = ctx;
    log->path_size = strlen(path) + 1;
    log->path = tg_alloc(ctx, log->path_size);
    if (!log->path) {
        tg_free(ctx, log, sizeof *log);
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    }
    memcpy(log->path, path, log->path_size);
    log->f = fopen(path, "w");
    if (!log->f) {
        int e = errno;
        tg_free(ctx, log->path, log->path_size);
        tg_free(ctx, log, sizeof *log);
        return tg_ctx_fail(ctx, TG_IO, "%s: %s: %s", fn, path, strerror(e));
    }
    fprintf(log->f, "step,epoch,train_loss,valid_loss,valid_accuracy,test_accuracy,%s_per_s,lr\n",
            unit);
    *out = log;
    return TG_OK;
}

tg_status tg_train_log_write(tg_train_log *log, const tg_log_row *row)
{
    if (!log)
        return TG_INVALID;
    if (!row)
        return tg_ctx_fail(log->ctx, TG_INVALID, "tg_train_log_write: row is NULL");
    fprintf(log->f, "%lld,", (long long)row->step);
    field(log->f, "%.4f", row->epoch, false);
    field(log->f, "%.6g", row->train_loss, false);
    field(log->f, "%.6g", row->valid_loss, false);
    field(log->f, "%.6g", row->valid_accuracy, false);
    field(log->f, "%.6g", row->test_accuracy, false);
    field(log->f, "%.6g", row->throughput, false);
    field(log->f, "%.6g", row->lr, true);
    /* Flushed row by row: a run that is killed leaves every finished row to plot. */
    if (fflush(log->f) != 0 || ferror(log->f))
        return tg_ctx_fail(log->ctx, TG_IO, "tg_train_log_write: %s: %s", log->path,
                           strerror(errno));
    return TG_OK;
}

tg_status tg_train_log_close(tg_train_log *log)
{
    if (!log)
        return TG_OK;
    tg_ctx *ctx = log->ctx;
    bool failed = ferror(log->f) != 0;
    int e = errno;
    if (fclose(log->f) != 0 && !failed)
        failed = true, e = errno;
    tg_status st =
        failed ? tg_ctx_fail(ctx, TG_IO, "tg_train_log_close: %s: %s", log->path, strerror(e))
               : TG_OK;
    tg_free(ctx, log->path, log->path_size);
    tg_free(ctx, log, sizeof *log);
    return st;
}
