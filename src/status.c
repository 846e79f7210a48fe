/* status.c — status names and messages, generated from the one list in the header. */
#include "internal.h"

#include <stdio.h>

static const char *const names[] = {
#define NAME(name, msg) "TG_" #name,
    TG_STATUS_LIST(NAME)
#undef NAME
};

static const char *const strings[] = {
#define STRING(name, msg) msg,
    TG_STATUS_LIST(STRING)
#undef STRING
};

const char *tg_status_name(tg_status s)
{
    return (unsigned)s < TG_STATUS_COUNT ? names[s] : "TG_UNKNOWN";
}

const char *tg_status_string(tg_status s)
{
    return (unsigned)s < TG_STATUS_COUNT ? strings[s] : "unknown status";
}

size_t tg_dtype_size(tg_dtype dt)
{
    switch (dt) {
    case TG_F32:
        return 4;
    case TG_F64:
    case TG_I64:
        return 8;
    }
    return 0;
}

const char *tg_dtype_name(tg_dtype dt)
{
    switch (dt) {
    case TG_F32:
        return "f32";
    case TG_F64:
        return "f64";
    case TG_I64:
        return "i64";
    }
    return "?";
}

tg_status tg__vfail(tg_tape *tp, tg_status st, const char *fmt, va_list ap)
{
    if (!tp)
        return TG_INVALID;
    if (tp->status == TG_OK && st != TG_OK) {
        tp->status = st;
        tp->slimit = 0; /* scalar records take their slow path, which reports the error */
        vsnprintf(tp->error, sizeof tp->error, fmt, ap);
    }
    return tp->status;
}

tg_status tg__fail(tg_tape *tp, tg_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tg_status r = tg__vfail(tp, st, fmt, ap);
    va_end(ap);
    return r;
}

tg_status tg_tape_fail(tg_tape *tp, tg_status status, const char *fmt, ...)
{
    if (!tp)
        return TG_INVALID;
    if ((unsigned)status >= TG_STATUS_COUNT)
        status = TG_INVALID;
    if (!fmt)
        fmt = tg_status_string(status);
    va_list ap;
    va_start(ap, fmt);
    tg_status r = tg__vfail(tp, status, fmt, ap);
    va_end(ap);
    return r;
}

int tg__format_view(char *buf, size_t size, const tg_view *v)
{
    int n = snprintf(buf, size, "%s[", tg_dtype_name(v->dtype));
    for (int i = 0; i < v->ndim && n >= 0 && (size_t)n < size; i++)
        n += snprintf(buf + n, size - (size_t)n, i ? ",%lld" : "%lld", (long long)v->shape[i]);
    if (n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, "]");
    return n;
}

tg_tensor tg_error(tg_tape *tp) { return tg__error_handle(tp); }
