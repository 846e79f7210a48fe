/* scalar.c — scalars on the tape: 24-byte entries recorded inline and swept by one tight loop,
 * both generated from the instruction table in ops/scalar_ops.h. The same table generates a
 * second, recording sweep for TG_CREATE_GRAPH, kept apart from the first-order one. */
#include "internal.h"

#include <math.h>

#include "../ops/scalar_ops.h"

enum {
    S_NONE,
    S_VAR,         /* leaf with gradient */
    S_CONST,       /* leaf without gradient (also anything recorded in a no-grad scope) */
    S_FROM_TENSOR, /* a = tensor node id */
#define ENUM_B(NAME, VALUE, DA, DB, GA, GB) S_##NAME,
#define ENUM_U(NAME, VALUE, DA, GA) S_##NAME,
    TG__SCALAR_BINARY(ENUM_B) TG__SCALAR_UNARY(ENUM_U)
#undef ENUM_B
#undef ENUM_U
};

static tg_scalar none(tg_tape *tp)
{
    tg_scalar s = {tp, 0, tp ? tp->gen : 0};
    return s;
}

/* Entries, adjoints and released flags share one block: [cap entries][cap adjoints][cap flags].
 * Backward writes only the last two, so the entries' cache lines stay clean. Growing moves the
 * adjoints and flags up behind the larger entry array. */
static bool grow(tg_tape *tp)
{
    uint32_t old = tp->scalar_capacity, cap = old ? old : 512;
    if (cap > UINT32_MAX / 4) {
        tg__fail(tp, TG_NOMEM, "scalar entries: tape full (%u entries)", tp->scalar_count);
        return false;
    }
    cap *= 2;
    size_t per = TG__SCALAR_BYTES;
    if (!tg__tape_records_fit(tp, (size_t)(cap - old) * per)) {
        tg__fail(tp, TG_NOMEM, "scalar entries: no room for %u entries", cap);
        return false;
    }
    unsigned char *block = tg__realloc(tp->ctx, tp->scalars, (size_t)old * per, (size_t)cap * per);
    if (!block) {
        tg__fail(tp, TG_NOMEM, "scalar entries: out of memory growing to %u entries", cap);
        return false;
    }
    double *adj = (double *)(block + (size_t)cap * sizeof(tg__sentry));
    uint8_t *released = (uint8_t *)(adj + cap);
    if (old) {
        /* Flags first: they move furthest, and the adjoints' new place overlaps their old one. */
        memmove(released, block + (size_t)old * (sizeof(tg__sentry) + sizeof(double)), old);
        memmove(adj, block + (size_t)old * sizeof(tg__sentry), (size_t)old * sizeof(double));
    } else {
        memset(block, 0, sizeof(tg__sentry)); /* entry 0: the placeholder */
    }
    tp->scalars = (tg__sentry *)block;
    tp->scalar_adjoints = adj;
    tp->scalar_released = released;
    tp->scalar_capacity = cap;
    tp->scalar_limit = tp->status ? 0 : cap;
    tg__tape_limit_records(tp);
    return true;
}

static bool live(const tg_tape *tp, tg_scalar x)
{
    return x.tape_ == tp && x.gen_ == tp->gen && x.id_ - 1u < tp->scalar_count - 1u;
}

/* The slow path of every record: reports the error, or grows storage; true to retry. */
static bool slow(tg_tape *tp, const char *fn, int n, tg_scalar a, tg_scalar b)
{
    if (!tp || tp->status)
        return false;
    tg_scalar in[2] = {a, b};
    for (int i = 0; i < n; i++) {
        if (live(tp, in[i]))
            continue;
        if (in[i].tape_ != tp)
            tg__fail(tp, in[i].tape_ ? TG_STALE : TG_INVALID, "%s: operand %d %s", fn, i,
                     in[i].tape_ ? "belongs to another tape" : "is none");
        else if (in[i].gen_ != tp->gen || in[i].id_ >= tp->scalar_count)
            tg__fail(tp, TG_STALE, "%s: operand %d is stale (from before a tape reset)", fn, i);
        else
            tg__fail(tp, TG_INVALID, "%s: operand %d is an error handle", fn, i);
        return false;
    }
    return tp->scalar_count < tp->scalar_capacity || grow(tp);
}

static tg_scalar push(tg_tape *tp, uint16_t op, double v, uint32_t a)
{
    tg__sentry *e = &tp->scalars[tp->scalar_count];
    e->v = v;
    e->a = a;
    e->op = tp->grad_enabled ? op : S_CONST;
    tg_scalar r = {tp, tp->scalar_count++, tp->gen};
    return r;
}

/* The checks of a record: same tape and generation, live operands, room for one more entry and
 * no error (scalar_limit is 0 on an errored tape). Separate predicted branches are cheaper here
 * than one combined test. */
static inline bool fast_ok(const tg_tape *tp, tg_scalar x, tg_scalar y)
{
    uint32_t ns = tp->scalar_count;
    if (TG__UNLIKELY(y.tape_ != tp))
        return false;
    if (TG__UNLIKELY(x.gen_ != tp->gen || y.gen_ != tp->gen))
        return false;
    if (TG__UNLIKELY(x.id_ - 1u >= ns - 1u || y.id_ - 1u >= ns - 1u))
        return false;
    return TG__LIKELY(ns < tp->scalar_limit);
}

/* Each op: an inline fast path that touches no callee-saved registers, and an out-of-line slow
 * path that reports the error or grows the storage and records again. */
#define RECORD_BINARY(NAME, VALUE, DA, DB, GA, GB)                                                 \
    static tg_scalar slow_##NAME(const char *fn, tg_scalar x, tg_scalar z);                        \
    static inline tg_scalar record_##NAME(const char *fn, tg_scalar x, tg_scalar z)                \
    {                                                                                              \
        tg_tape *tp = x.tape_;                                                                     \
        if (!tp || !fast_ok(tp, x, z))                                                             \
            return slow_##NAME(fn, x, z);                                                          \
        const tg__sentry *s = tp->scalars;                                                         \
        double a = s[x.id_].v, b = s[z.id_].v;                                                     \
        tg_scalar r = push(tp, S_##NAME, VALUE, x.id_);                                            \
        tp->scalars[r.id_].u.b = z.id_;                                                            \
        return r;                                                                                  \
    }                                                                                              \
    static TG__NOINLINE tg_scalar slow_##NAME(const char *fn, tg_scalar x, tg_scalar z)            \
    {                                                                                              \
        tg_tape *tp = x.tape_ ? x.tape_ : z.tape_;                                                 \
        if (!slow(tp, fn, 2, x, z))                                                                \
            return none(tp);                                                                       \
        return record_##NAME(fn, x, z);                                                            \
    }
#define RECORD_UNARY(NAME, VALUE, DA, GA)                                                          \
    static tg_scalar slow_##NAME(const char *fn, tg_scalar x, double c);                           \
    static inline tg_scalar record_##NAME(const char *fn, tg_scalar x, double c)                   \
    {                                                                                              \
        tg_tape *tp = x.tape_;                                                                     \
        if (!tp || !fast_ok(tp, x, x))                                                             \
            return slow_##NAME(fn, x, c);                                                          \
        double a = tp->scalars[x.id_].v;                                                           \
        (void)c;                                                                                   \
        tg_scalar r = push(tp, S_##NAME, VALUE, x.id_);                                            \
        tp->scalars[r.id_].u.c = c;                                                                \
        return r;                                                                                  \
    }                                                                                              \
    static TG__NOINLINE tg_scalar slow_##NAME(const char *fn, tg_scalar x, double c)               \
    {                                                                                              \
        if (!slow(x.tape_, fn, 1, x, x))                                                           \
            return none(x.tape_);                                                                  \
        return record_##NAME(fn, x, c);                                                            \
    }
TG__SCALAR_BINARY(RECORD_BINARY)
TG__SCALAR_UNARY(RECORD_UNARY)
#undef RECORD_BINARY
#undef RECORD_UNARY

tg_scalar tg_s_add(tg_scalar a, tg_scalar b) { return record_ADD("tg_s_add", a, b); }
tg_scalar tg_s_sub(tg_scalar a, tg_scalar b) { return record_SUB("tg_s_sub", a, b); }
tg_scalar tg_s_mul(tg_scalar a, tg_scalar b) { return record_MUL("tg_s_mul", a, b); }
tg_scalar tg_s_div(tg_scalar a, tg_scalar b) { return record_DIV("tg_s_div", a, b); }
tg_scalar tg_s_neg(tg_scalar a) { return record_NEG("tg_s_neg", a, 0); }
tg_scalar tg_s_addc(tg_scalar a, double c) { return record_ADDC("tg_s_addc", a, c); }
tg_scalar tg_s_mulc(tg_scalar a, double c) { return record_MULC("tg_s_mulc", a, c); }
tg_scalar tg_s_pow(tg_scalar a, double exponent) { return record_POW("tg_s_pow", a, exponent); }
tg_scalar tg_s_exp(tg_scalar a) { return record_EXP("tg_s_exp", a, 0); }
tg_scalar tg_s_log(tg_scalar a) { return record_LOG("tg_s_log", a, 0); }
tg_scalar tg_s_sqrt(tg_scalar a) { return record_SQRT("tg_s_sqrt", a, 0); }
tg_scalar tg_s_sin(tg_scalar a) { return record_SIN("tg_s_sin", a, 0); }
tg_scalar tg_s_cos(tg_scalar a) { return record_COS("tg_s_cos", a, 0); }
tg_scalar tg_s_tanh(tg_scalar a) { return record_TANH("tg_s_tanh", a, 0); }
tg_scalar tg_s_sigmoid(tg_scalar a) { return record_SIGMOID("tg_s_sigmoid", a, 0); }
tg_scalar tg_s_relu(tg_scalar a) { return record_RELU("tg_s_relu", a, 0); }
tg_scalar tg_s_abs(tg_scalar a) { return record_ABS("tg_s_abs", a, 0); }

static tg_scalar leaf(tg_tape *tp, uint16_t op, double value)
{
    if (!tp || tp->status || (tp->scalar_count >= tp->scalar_capacity && !grow(tp)))
        return none(tp);
    tg_scalar r = push(tp, op, value, 0);
    tp->scalars[r.id_].u.c = 0;
    return r;
}

tg_scalar tg_s_var(tg_tape *tp, double value) { return leaf(tp, S_VAR, value); }
tg_scalar tg_s_const(tg_tape *tp, double value) { return leaf(tp, S_CONST, value); }

bool tg_s_ok(tg_scalar s) { return s.tape_ && live(s.tape_, s); }

double tg_s_value(tg_scalar s) { return tg_s_ok(s) ? s.tape_->scalars[s.id_].v : NAN; }

double tg_s_grad(tg_scalar s)
{
    if (!tg_s_ok(s))
        return NAN;
    /* Entries no backward has reached yet have no adjoint stored: their gradient is 0. */
    return s.id_ < s.tape_->scalar_adjoints_valid ? s.tape_->scalar_adjoints[s.id_] : 0.0;
}

/* ---- conversions -------------------------------------------------------------------------- */

tg_tensor tg__scalar_tensor(tg_scalar s, tg_dtype dt, int ndim, const int64_t *shape)
{
    tg_tape *tp = s.tape_;
    if (!tp || tp->status)
        return tg__error_handle(tp);
    if (!live(tp, s)) {
        slow(tp, "tg_s_tensor", 1, s, s);
        return tg__error_handle(tp);
    }
    tg__node *n = tg__node_reserve(tp);
    if (!n)
        return tg__error_handle(tp);
    void *data = tg__tape_buffer(tp, "tg_s_tensor", dt, 1);
    if (!data)
        return tg__error_handle(tp);
    if (dt == TG_F32)
        *(float *)data = (float)tp->scalars[s.id_].v;
    else
        *(double *)data = tp->scalars[s.id_].v;
    n->kind = TG__FROM_SCALAR;
    n->v.data = data;
    n->v.numel = 1;
    n->v.dtype = dt;
    n->v.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        n->v.shape[i] = shape[i];
    n->scalar_src = s.id_;
    n->requires_grad = tp->grad_enabled && tp->scalars[s.id_].op != S_CONST;
    if (!tp->grad_enabled)
        n->kind = TG__LEAF;
    return tg__handle(tp, tp->nnodes++);
}

tg_tensor tg_s_tensor(tg_scalar s) { return tg__scalar_tensor(s, TG_F64, 0, NULL); }

tg_scalar tg_s_from(tg_tensor t)
{
    tg_tape *tp = t.tape_;
    if (!tp || tp->status)
        return none(tp);
    tg__node *n = tg__resolve(tp, t, "tg_s_from");
    if (!n)
        return none(tp);
    if (n->v.numel != 1 || n->v.dtype == TG_I64) {
        char buf[64];
        tg__format_view(buf, sizeof buf, &n->v);
        tg__fail(tp, n->v.numel != 1 ? TG_SHAPE : TG_DTYPE,
                 "tg_s_from: needs a one-element float tensor, got %s (node %u)", buf, t.id_);
        return none(tp);
    }
    double v = tg_item(t);
    if (tp->scalar_count >= tp->scalar_capacity && !grow(tp))
        return none(tp);
    return push(tp, S_FROM_TENSOR, v, t.id_);
}

/* ---- the reverse sweep -------------------------------------------------------------------- */

void tg__scalar_prepare(tg_tape *tp, bool clear)
{
    const tg__sentry *s = tp->scalars;
    double *adj = tp->scalar_adjoints;
    /* A previous backward left values: clear all but the leaves', which accumulate. */
    if (clear && tp->scalars_dirty) {
        for (uint32_t i = 1; i < tp->scalar_adjoints_valid; i++)
            if (s[i].op != S_VAR)
                adj[i] = 0;
        tp->scalars_dirty = false;
    }
    /* Entries recorded since then start at zero, unreleased. */
    if (tp->scalar_count > tp->scalar_adjoints_valid) {
        memset(adj + tp->scalar_adjoints_valid, 0,
               (size_t)(tp->scalar_count - tp->scalar_adjoints_valid) * sizeof *adj);
        memset(tp->scalar_released + tp->scalar_adjoints_valid, 0,
               tp->scalar_count - tp->scalar_adjoints_valid);
        tp->scalar_adjoints_valid = tp->scalar_count;
    }
}

/* The sweep, specialised by the caller on constant flags: `check` whether entries may be released
 * already (nothing can be before the first non-retaining backward), `mark` whether to release
 * what it passes. */
static inline TG__ALWAYS_INLINE tg_status sweep(tg_tape *tp, double *adj, uint32_t lo, uint32_t hi,
                                                struct tg__bw *bw, const bool check,
                                                const bool mark)
{
    tg__sentry *s = tp->scalars;
    uint8_t *released = tp->scalar_released;
    /* Most operands are the entry just before: their contribution is carried in a register to
     * the next iteration instead of going through memory, which breaks the store-to-load chain
     * that would otherwise serialise the sweep. */
    double carry = 0;
#define GIVE(to, amount)                                                                           \
    do {                                                                                           \
        uint32_t to_ = (to);                                                                       \
        double amount_ = (amount);                                                                 \
        if (to_ == i - 1)                                                                          \
            carry += amount_;                                                                      \
        else                                                                                       \
            adj[to_] += amount_;                                                                   \
    } while (0)
    for (uint32_t i = hi; i-- > lo;) {
        tg__sentry *e = &s[i];
        double g = adj[i] + carry;
        carry = 0;
        adj[i] = g;
        uint64_t bits;
        memcpy(&bits, &g, sizeof bits);
        if ((bits << 1) == 0) /* +0 or -0: nothing flows from here (a cheaper test than g == 0) */
            continue;
        if (check && TG__UNLIKELY(released[i]))
            return tg__fail(tp, TG_RELEASED,
                            "scalar entry %u: backward through a graph already released by an "
                            "earlier backward (pass TG_RETAIN_GRAPH to the first)",
                            i);
        switch (e->op) {
        case S_NONE:
        case S_VAR:
        case S_CONST:
            continue;
        case S_FROM_TENSOR: {
            tg_status st = tg__bw_deposit(bw, e->a, g);
            if (st)
                return st;
            break;
        }
#define SWEEP_B(NAME, VALUE, DA, DB, GA, GB)                                                       \
    case S_##NAME: {                                                                               \
        double a = s[e->a].v, b = s[e->u.b].v, y = e->v;                                           \
        (void)a, (void)b, (void)y;                                                                 \
        GIVE(e->a, g *(DA));                                                                       \
        GIVE(e->u.b, g *(DB));                                                                     \
        break;                                                                                     \
    }
#define SWEEP_U(NAME, VALUE, DA, GA)                                                               \
    case S_##NAME: {                                                                               \
        double a = s[e->a].v, c = e->u.c, y = e->v;                                                \
        (void)a, (void)c, (void)y;                                                                 \
        GIVE(e->a, g *(DA));                                                                       \
        break;                                                                                     \
    }
            TG__SCALAR_BINARY(SWEEP_B)
            TG__SCALAR_UNARY(SWEEP_U)
#undef SWEEP_B
#undef SWEEP_U
        }
        if (mark)
            released[i] = 1;
    }
#undef GIVE
    if (lo > 0)
        adj[lo - 1] += carry; /* what entry lo gave the entry below the swept range */
    return TG_OK;
}

tg_status tg__scalar_sweep(tg_tape *tp, double *adj, uint32_t lo, uint32_t hi, bool retain,
                           struct tg__bw *bw)
{
    if (hi <= lo)
        return TG_OK;
    if (adj == tp->scalar_adjoints)
        tp->scalars_dirty = true;
    if (retain)
        return sweep(tp, adj, lo, hi, bw, tp->scalar_released_any, false);
    bool any = tp->scalar_released_any;
    tp->scalar_released_any = true;
    return any ? sweep(tp, adj, lo, hi, bw, true, true) : sweep(tp, adj, lo, hi, bw, false, true);
}

/* ---- second order: the recording sweep ---------------------------------------------------- */

/* The recording helpers that the GA/GB columns of ops/scalar_ops.h are written with: the public
 * record functions (so the first-order record paths compile exactly as before). */
static inline tg_scalar sadd(tg_scalar x, tg_scalar y) { return tg_s_add(x, y); }
static inline tg_scalar smul(tg_scalar x, tg_scalar y) { return tg_s_mul(x, y); }
static inline tg_scalar sdiv(tg_scalar x, tg_scalar y) { return tg_s_div(x, y); }
static inline tg_scalar sneg(tg_scalar x) { return tg_s_neg(x); }
static inline tg_scalar saddc(tg_scalar x, double c) { return tg_s_addc(x, c); }
static inline tg_scalar smulc(tg_scalar x, double c) { return tg_s_mulc(x, c); }
static inline tg_scalar spow(tg_scalar x, double c) { return tg_s_pow(x, c); }
static inline tg_scalar ssin(tg_scalar x) { return tg_s_sin(x); }
static inline tg_scalar scos(tg_scalar x) { return tg_s_cos(x); }

tg_status tg__bw_give(struct tg__bw *bw, uint32_t to, tg_scalar c)
{
    tg_tape *tp = bw->tp;
    if (!c.id_) /* no contribution, or a failed record (the tape holds its error) */
        return tp->status;
    uint32_t *h = &bw->adjoint_entries[to];
    if (!*h) {
        *h = c.id_;
        return TG_OK;
    }
    tg_scalar sum = sadd((tg_scalar){tp, *h, tp->gen}, c);
    *h = sum.id_;
    return tp->status;
}

/* Whether operand `x` of a swept entry should receive a contribution: every operand in
 * tg_backward (as in the first-order sweep), only those on a path from an input in a
 * functional gradient. */
static inline bool wants(const struct tg__bw *bw, uint32_t x)
{
    return !bw->scalar_needed || (x >= bw->scalar_low && bw->scalar_needed[x]);
}

void tg__scalar_need(tg_tape *tp, struct tg__bw *bw, uint32_t lo, uint32_t hi)
{
    const tg__sentry *s = tp->scalars;
    uint8_t *need = bw->scalar_needed;
    uint32_t slo = bw->scalar_low, low = bw->scalar_floor;
    for (uint32_t i = lo; i < hi; i++) {
        const tg__sentry *e = &s[i];
        uint8_t nd = need[i]; /* set already for an input */
        switch (e->op) {
        case S_NONE:
        case S_VAR:
        case S_CONST:
            break;
        case S_FROM_TENSOR:
            nd |= tg__bw_needs(bw, e->a);
            break;
#define NEED_B(NAME, VALUE, DA, DB, GA, GB)                                                        \
    case S_##NAME:                                                                                 \
        nd |= (e->a >= slo && need[e->a]) || (e->u.b >= slo && need[e->u.b]);                      \
        low = e->a < low ? e->a : low;                                                             \
        low = e->u.b < low ? e->u.b : low;                                                         \
        break;
#define NEED_U(NAME, VALUE, DA, GA)                                                                \
    case S_##NAME:                                                                                 \
        nd |= e->a >= slo && need[e->a];                                                           \
        low = e->a < low ? e->a : low;                                                             \
        break;
            TG__SCALAR_BINARY(NEED_B)
            TG__SCALAR_UNARY(NEED_U)
#undef NEED_B
#undef NEED_U
        }
        need[i] = nd;
    }
    bw->scalar_floor = low;
}

/* Entries [lo, hi) in reverse, like sweep(), but each adjoint is an entry and each rule is
 * recorded (the table's GA/GB columns), so the gradient is a scalar expression on the tape. It
 * appends entries while it runs, so it reads the (possibly moved) entry array afresh. */
tg_status tg__scalar_sweep_graph(tg_tape *tp, uint32_t lo, uint32_t hi, struct tg__bw *bw)
{
    const uint32_t gen = tp->gen;
#define NONE none(tp)
#define H(id) ((tg_scalar){tp, (id), gen})
    for (uint32_t i = hi; i-- > lo;) {
        uint32_t h = bw->adjoint_entries[i];
        if (!h || (bw->scalar_needed && !bw->scalar_needed[i]))
            continue;
        if (tp->scalar_released_any && tp->scalar_released[i])
            return tg__fail(tp, TG_RELEASED,
                            "scalar entry %u: backward through a graph already released by an "
                            "earlier backward (pass TG_RETAIN_GRAPH to the first)",
                            i);
        const tg__sentry e = tp->scalars[i];
        tg_scalar g = H(h), A = H(e.a), Y = H(i);
        tg_status st = TG_OK;
        (void)A, (void)Y;
        switch (e.op) {
        case S_NONE:
        case S_VAR:
        case S_CONST:
            continue;
        case S_FROM_TENSOR:
            st = tg__bw_deposit_graph(bw, e.a, g);
            break;
#define GRAPH_B(NAME, VALUE, DA, DB, GA, GB)                                                       \
    case S_##NAME: {                                                                               \
        double a = tp->scalars[e.a].v, b = tp->scalars[e.u.b].v, y = e.v;                          \
        tg_scalar B = H(e.u.b);                                                                    \
        (void)a, (void)b, (void)y, (void)B;                                                        \
        if (wants(bw, e.a))                                                                        \
            st = tg__bw_give(bw, e.a, GA);                                                         \
        if (!st && wants(bw, e.u.b))                                                               \
            st = tg__bw_give(bw, e.u.b, GB);                                                       \
        break;                                                                                     \
    }
#define GRAPH_U(NAME, VALUE, DA, GA)                                                               \
    case S_##NAME: {                                                                               \
        double a = tp->scalars[e.a].v, c = e.u.c, y = e.v;                                         \
        (void)a, (void)c, (void)y;                                                                 \
        if (wants(bw, e.a))                                                                        \
            st = tg__bw_give(bw, e.a, GA);                                                         \
        break;                                                                                     \
    }
            TG__SCALAR_BINARY(GRAPH_B)
            TG__SCALAR_UNARY(GRAPH_U)
#undef GRAPH_B
#undef GRAPH_U
        }
        if (st)
            return st;
    }
#undef NONE
#undef H
    return TG_OK;
}
