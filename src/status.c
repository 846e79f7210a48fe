/* status.c — status names and messages, generated from the one list in the header. */
#include "internal.h"

#include <stdint.h>
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

size_t tg_dtype_size(tg_dtype dt) { return tg__dtype_size(dt); }

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

/* Formats into buf[size] (size >= 64) with tg__vformat_message's bounds; returns the length. */
static size_t format_bounded(char *buf, size_t size, const char *fmt, ...) TG__PRINTF(3, 4);
static size_t format_bounded(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tg__vformat_message(buf, size, fmt, ap);
    va_end(ap);
    return strlen(buf);
}

/* What a refusal by the memory limit most likely means, after the failing call's own words. A
 * tape that grows across backward passes is a training loop without tg_tape_reset. */
static void explain_limit(tg_tape *tp, char *buf, size_t size)
{
    double used = (double)tg__tape_memory(tp) / 1048576.0;
    double limit = (double)tp->memory_limit / 1048576.0;
    if (tp->backward_passes >= 2)
        format_bounded(buf, size,
                       ": the tape's memory limit is reached (%.1f MiB in use, limit %.0f MiB) "
                       "after %u backward passes without tg_tape_reset: call tg_tape_reset after "
                       "each training step (tg_tape_set_memory_limit changes the limit; 0: none)",
                       used, limit, tp->backward_passes);
    else
        format_bounded(buf, size,
                       ": the tape's memory limit is reached (%.1f MiB in use, limit %.0f MiB): "
                       "is tg_tape_reset missing between steps? A step this large needs a higher "
                       "limit (tg_tape_set_memory_limit; 0: none)",
                       used, limit);
}

tg_status tg__vfail(tg_tape *tp, tg_status st, const char *fmt, va_list ap)
{
    if (!tp)
        return TG_INVALID;
    if (tp->status == TG_OK && st != TG_OK) {
        tp->status = st;
        tp->scalar_limit = 0; /* scalar records take their slow path, which reports the error */
        /* "<scope>: <message>[: <the limit's hint>]", each part bounded so the others fit. */
        bool limit = st == TG_NOMEM && tp->arena.refused;
        size_t len = 0, hint = limit ? sizeof tp->error / 4 : 0;
        if (tp->scope && tp->scope->name[0])
            len = format_bounded(tp->error, sizeof tp->error / 4, "%s: ", tp->scope->name);
        tg__vformat_message(tp->error + len, sizeof tp->error - len - hint, fmt, ap);
        len += strlen(tp->error + len);
        if (limit)
            explain_limit(tp, tp->error + len, sizeof tp->error - len);
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

tg_tensor tg_error(tg_tape *tp) { return tg__error_handle(tp); }

/* ---- bounded messages -----------------------------------------------------------------------
 * tg__vformat_message formats conversion by conversion (the format's directives are the C11
 * ones, without %n, wide characters or positional arguments; anything else takes a plain
 * vsnprintf), so that a long string argument can be shortened in the middle, and it streams the
 * text into the buffer while keeping the last bytes aside, so that a message that is still too
 * long keeps its end. */

#define TAIL_KEPT 256   /* most bytes of a too-long message's end that are kept */
#define PIECE_SIZE 1152 /* one conversion's text (a shortened string fits) */
#define ELLIPSIS "..."

typedef struct writer {
    char *buf;
    size_t size;
    size_t len; /* bytes of the whole message so far (may exceed size) */
    char tail[TAIL_KEPT];
} writer;

typedef struct conversion {
    char text[32]; /* the directive as snprintf is given it */
    int stars;     /* '*' width and precision: int arguments before the value */
    bool plain;    /* exactly "%s": no flags, width or precision */
    char length;   /* 0, 'H' (hh), 'h', 'l', 'q' (ll), 'j', 'z', 't' or 'L' */
    char kind;     /* the conversion specifier */
    size_t skip;   /* bytes of the format the directive takes */
} conversion;

static bool utf8_continuation(char c) { return ((unsigned char)c & 0xC0) == 0x80; }

static void put(writer *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, w->len++) {
        if (w->len + 1 < w->size)
            w->buf[w->len] = s[i];
        w->tail[w->len % TAIL_KEPT] = s[i];
    }
}

/* Terminates the buffer; a message that did not fit becomes its head, "..." and its tail, cut
 * on UTF-8 character boundaries. */
static void finish(writer *w)
{
    if (w->len < w->size) {
        w->buf[w->len] = '\0';
        return;
    }
    size_t keep = w->size / 4 < TAIL_KEPT ? w->size / 4 : TAIL_KEPT;
    size_t head = w->size - 1 - keep - strlen(ELLIPSIS);
    while (head > 0 && utf8_continuation(w->buf[head]))
        head--;
    memcpy(w->buf + head, ELLIPSIS, strlen(ELLIPSIS));
    char *out = w->buf + head + strlen(ELLIPSIS);
    size_t from = w->len - keep;
    while (from < w->len && utf8_continuation(w->tail[from % TAIL_KEPT]))
        from++;
    for (; from < w->len; from++)
        *out++ = w->tail[from % TAIL_KEPT];
    *out = '\0';
}

/* The string into dst[size] (size > 8), its middle replaced by "..." when it is longer. */
static size_t shorten(char *dst, size_t size, const char *s)
{
    size_t n = strlen(s);
    if (n < size) {
        memcpy(dst, s, n + 1);
        return n;
    }
    size_t room = size - 1 - strlen(ELLIPSIS), head = room / 2, from = n - (room - head);
    while (head > 0 && utf8_continuation(s[head]))
        head--;
    while (from < n && utf8_continuation(s[from]))
        from++;
    memcpy(dst, s, head);
    memcpy(dst + head, ELLIPSIS, strlen(ELLIPSIS));
    memcpy(dst + head + strlen(ELLIPSIS), s + from, n - from + 1);
    return head + strlen(ELLIPSIS) + (n - from);
}

static const char *parse_length(const char *f, char *length)
{
    *length = 0;
    if (f[0] == 'h' || f[0] == 'l') {
        bool twice = f[1] == f[0];
        *length = twice ? (f[0] == 'h' ? 'H' : 'q') : f[0];
        return f + (twice ? 2 : 1);
    }
    if (f[0] == 'j' || f[0] == 'z' || f[0] == 't' || f[0] == 'L') {
        *length = f[0];
        return f + 1;
    }
    return f;
}

/* Whether the length modifier goes with the specifier (and is one this formatter handles). */
static bool length_fits(char length, char kind)
{
    if (strchr("diouxX", kind))
        return length != 'L';
    if (strchr("fFeEgGaA", kind))
        return length == 0 || length == 'l' || length == 'L';
    return length == 0; /* c, s, p, %: no wide characters */
}

/* Parses the directive at f (f[0] == '%'); false for what this formatter does not handle. */
static bool parse_conversion(const char *f, conversion *c)
{
    const char *p = f + 1;
    c->stars = 0;
    p += strspn(p, "-+ #0");
    if (*p == '*')
        c->stars++, p++;
    else
        p += strspn(p, "0123456789");
    if (*p == '.') {
        p++;
        if (*p == '*')
            c->stars++, p++;
        else
            p += strspn(p, "0123456789");
    }
    size_t prefix = (size_t)(p - f); /* '%', flags, width, precision */
    p = parse_length(p, &c->length);
    c->kind = *p;
    c->skip = (size_t)(p + 1 - f);
    if (!c->kind || !strchr("diouxXfFeEgGaAcsp%", c->kind) || !length_fits(c->length, c->kind)
        || prefix + 3 > sizeof c->text || (c->kind == '%' && c->skip != 2))
        return false;
    c->plain = c->kind == 's' && c->skip == 2;
    /* Integers are printed as intmax_t or uintmax_t, whatever their length. */
    bool integer = strchr("diouxX", c->kind) != NULL;
    memcpy(c->text, f, prefix);
    size_t at = prefix;
    if (integer)
        c->text[at++] = 'j';
    else if (c->length == 'L')
        c->text[at++] = 'L';
    c->text[at++] = c->kind;
    c->text[at] = '\0';
    return true;
}

static bool format_supported(const char *fmt)
{
    conversion c;
    for (const char *p = strchr(fmt, '%'); p; p = strchr(p + c.skip, '%'))
        if (!parse_conversion(p, &c))
            return false;
    return true;
}

static intmax_t signed_argument(char length, va_list *ap)
{
    switch (length) {
    case 'l':
        return va_arg(*ap, long);
    case 'q':
        return va_arg(*ap, long long);
    case 'j':
        return va_arg(*ap, intmax_t);
    case 'z':
    case 't':
        return va_arg(*ap, ptrdiff_t); /* the signed type of size_t's width */
    default:
        return va_arg(*ap, int); /* char and short arrive promoted */
    }
}

static uintmax_t unsigned_argument(char length, va_list *ap)
{
    switch (length) {
    case 'l':
        return va_arg(*ap, unsigned long);
    case 'q':
        return va_arg(*ap, unsigned long long);
    case 'j':
        return va_arg(*ap, uintmax_t);
    case 'z':
        return va_arg(*ap, size_t);
    case 't':
        return (uintmax_t)va_arg(*ap, ptrdiff_t);
    default:
        return va_arg(*ap, unsigned);
    }
}

/* snprintf of one directive with its '*' arguments star[0..stars) and the value. */
#define PRINT_ONE(piece, c, star, value)                                                           \
    ((c)->stars == 0   ? snprintf(piece, PIECE_SIZE, (c)->text, value)                             \
     : (c)->stars == 1 ? snprintf(piece, PIECE_SIZE, (c)->text, (star)[0], value)                  \
                       : snprintf(piece, PIECE_SIZE, (c)->text, (star)[0], (star)[1], value))

static int print_conversion(char *piece, const conversion *c, size_t limit, va_list *ap)
{
    int star[2] = {0, 0};
    for (int i = 0; i < c->stars; i++)
        star[i] = va_arg(*ap, int);
    if (strchr("di", c->kind))
        return PRINT_ONE(piece, c, star, signed_argument(c->length, ap));
    if (strchr("ouxX", c->kind))
        return PRINT_ONE(piece, c, star, unsigned_argument(c->length, ap));
    if (c->kind == 'c')
        return PRINT_ONE(piece, c, star, va_arg(*ap, int));
    if (c->kind == 'p')
        return PRINT_ONE(piece, c, star, va_arg(*ap, void *));
    if (c->length == 'L')
        return PRINT_ONE(piece, c, star, va_arg(*ap, long double));
    if (c->kind != 's')
        return PRINT_ONE(piece, c, star, va_arg(*ap, double));
    const char *s = va_arg(*ap, const char *);
    char short_copy[PIECE_SIZE];
    shorten(short_copy, limit + 1, s ? s : "(null)");
    return PRINT_ONE(piece, c, star, short_copy);
}

static void put_conversion(writer *w, const conversion *c, va_list *ap)
{
    size_t limit = w->size / 4 < PIECE_SIZE - 1 ? w->size / 4 : PIECE_SIZE - 1;
    char piece[PIECE_SIZE];
    if (c->kind == '%') {
        put(w, "%", 1);
        return;
    }
    if (c->plain) { /* the usual case: no copy but the shortened one */
        const char *s = va_arg(*ap, const char *);
        size_t n = shorten(piece, limit + 1, s ? s : "(null)");
        put(w, piece, n);
        return;
    }
    int n = print_conversion(piece, c, limit, ap);
    if (n > 0)
        put(w, piece, (size_t)n < PIECE_SIZE ? (size_t)n : PIECE_SIZE - 1);
}

void tg__vformat_message(char *buf, size_t size, const char *fmt, va_list ap)
{
    tg__assert(size >= 64);
    va_list args;
    va_copy(args, ap); /* a va_list parameter may be an array: take the address of a copy */
    writer w = {.buf = buf, .size = size};
    if (!format_supported(fmt)) {
        int n = vsnprintf(buf, size, fmt, args);
        w.len = n < 0 ? 0 : (size_t)n;
        va_end(args);
        if (w.len >= size)
            memcpy(buf + size - 1 - strlen(ELLIPSIS), ELLIPSIS, strlen(ELLIPSIS));
        return;
    }
    for (const char *p = fmt; *p;) {
        size_t literal = strcspn(p, "%");
        put(&w, p, literal);
        p += literal;
        if (*p) {
            conversion c;
            parse_conversion(p, &c);
            put_conversion(&w, &c, &args);
            p += c.skip;
        }
    }
    va_end(args);
    finish(&w);
}
