/* attention.c — scaled dot-product attention: a fused forward (blocks of query rows against
 * blocks of keys with an online softmax; no score matrix beyond one block) and one fused backward
 * op giving dq, dk, dv and an additive mask's gradient, each with a composite backward rule, so
 * attention is differentiable to any order. */
#include "gemm.h"
#include "kernels.h"
#include "ops.h"
#include "parallel.h"
#include "vmath.h"

/* Query rows and keys per block: a kernel keeps one block of scores (two in the backward) on its
 * stack, at most 64 KiB in f64. Causal attention takes blocks of CAUSAL_ROWS rows, so that each
 * block multiplies by the keys its rows see and no further; without causal, full blocks make
 * fewer and larger GEMMs. (Chosen by measurement, see docs/architecture.md.) */
#define BLOCK_Q 64
#define BLOCK_K 64
#define CAUSAL_ROWS 32
_Static_assert(CAUSAL_ROWS <= BLOCK_Q, "a block of rows fits the kernels' buffers");

typedef struct attention_attr {
    double scale; /* 0: 1/sqrt(d) */
    int causal;   /* query i sees keys j <= i */
    int masked;   /* the input after v is a mask */
} attention_attr;

/* The gradients the backward op computes; its output packs them in this order. */
enum { GRAD_Q = 1, GRAD_K = 2, GRAD_V = 4, GRAD_MASK = 8 };

typedef struct attention_bw_attr {
    attention_attr forward;
    int grads;  /* GRAD_* bits, at least one */
    int cached; /* the last two inputs are the forward's output and what it saved (P or the row
                 * statistics, as the geometry says) */
} attention_bw_attr;

enum { MASK_NONE, MASK_ADD, MASK_KEEP };

/* How q, k, v and the mask are laid out around the batch dims they broadcast over. */
typedef struct geometry {
    int nb;                     /* batch dims: the output's leading dims */
    int64_t batch[TG_MAX_DIMS]; /* their sizes */
    int64_t nbatch;             /* their product */
    int64_t tq, tk, d, dv;
    /* Element strides along each batch dim (0 where the input is broadcast). */
    int64_t q_step[TG_MAX_DIMS], k_step[TG_MAX_DIMS], v_step[TG_MAX_DIMS], m_step[TG_MAX_DIMS];
    int64_t m_row, m_col; /* the mask's strides along queries and keys (0 where broadcast) */
    int mask;             /* MASK_* */
    bool causal;
    bool keeps_probabilities; /* the forward saves P itself, not its row statistics */
    int64_t block;            /* query rows per block */
    double scale;             /* the scale in use */
} geometry;

/* The scale in use: 0 asks for 1/sqrt(d); with d = 0 every dot product is 0 and 1 is used. */
static double scale_for(double scale, int64_t d)
{
    return scale != 0 ? scale : d > 0 ? 1.0 / sqrt((double)d) : 1.0;
}

/* Element strides of a tensor's matrices along the nb batch dims it broadcasts over. */
static void batch_steps(const tg_view *x, int core, int nb, int64_t *step)
{
    int own = x->ndim - core < 0 ? 0 : x->ndim - core;
    int64_t stride = 1;
    for (int d = own; d < x->ndim; d++)
        stride *= x->shape[d];
    for (int d = nb - 1; d >= 0; d--) {
        int xd = d - (nb - own);
        int64_t size = xd >= 0 ? x->shape[xd] : 1;
        step[d] = size == 1 ? 0 : stride;
        stride *= size;
    }
}

/* The geometry of inputs that passed check_inputs: in[0..2] are q, k, v, in[3] the mask (or
 * NULL). */
static void layout(const tg_view *const *in, const tg_view *mask, const attention_attr *at,
                   geometry *g)
{
    const tg_view *q = in[0], *k = in[1], *v = in[2];
    memset(g, 0, sizeof *g);
    for (int i = 0; i < 3; i++)
        tg__broadcast_into(&g->nb, g->batch, in[i]->ndim - 2, in[i]->shape);
    g->nbatch = 1;
    for (int d = 0; d < g->nb; d++)
        g->nbatch *= g->batch[d];
    g->tq = q->shape[q->ndim - 2];
    g->d = q->shape[q->ndim - 1];
    g->tk = k->shape[k->ndim - 2];
    g->dv = v->shape[v->ndim - 1];
    batch_steps(q, 2, g->nb, g->q_step);
    batch_steps(k, 2, g->nb, g->k_step);
    batch_steps(v, 2, g->nb, g->v_step);
    if (mask) {
        int64_t mq = mask->ndim >= 2 ? mask->shape[mask->ndim - 2] : 1;
        int64_t mk = mask->ndim >= 1 ? mask->shape[mask->ndim - 1] : 1;
        batch_steps(mask, 2, g->nb, g->m_step);
        g->m_row = mq == 1 ? 0 : mk;
        g->m_col = mk == 1 ? 0 : 1;
        g->mask = mask->dtype == TG_I64 ? MASK_KEEP : MASK_ADD;
    }
    g->causal = at->causal != 0;
    g->scale = scale_for(at->scale, g->d);
    /* P [tq, tk] per batch entry is kept when it is no larger than q, k and v together, so the
     * memory of an attention stays linear in its inputs (d = 32: up to tq = tk = 96). */
    g->keeps_probabilities = g->tq * g->tk <= g->tq * g->d + g->tk * (g->d + g->dv);
    g->block = g->causal ? CAUSAL_ROWS : BLOCK_Q;
}

/* Checks q, k, v (inputs first..first+2) and the mask (first+3 when at->masked) and fills *g. */
static tg_status check_inputs(tg_check *c, int first, const attention_attr *at, geometry *g)
{
    static const char *const names[] = {"q", "k", "v"};
    const tg_view *const *in = c->in + first;
    const tg_view *mask = at->masked ? in[3] : NULL;
    tg_status st = tg_check_float(c, first);
    if (st)
        return st;
    for (int i = 0; i < 3; i++) {
        if (in[i]->dtype != in[0]->dtype)
            return tg_check_fail(c, TG_DTYPE, "q, k and v must have one dtype: q is %s, %s is %s",
                                 tg_dtype_name(in[0]->dtype), names[i],
                                 tg_dtype_name(in[i]->dtype));
        if (in[i]->ndim < 2)
            return tg_check_fail(c, TG_SHAPE, "%s needs at least 2 dims ([..., T, d]), got %d",
                                 names[i], in[i]->ndim);
    }
    const tg_view *q = in[0], *k = in[1], *v = in[2];
    if (q->shape[q->ndim - 1] != k->shape[k->ndim - 1])
        return tg_check_fail(c, TG_SHAPE, "q and k have different d (last dim): %lld and %lld",
                             (long long)q->shape[q->ndim - 1], (long long)k->shape[k->ndim - 1]);
    if (k->shape[k->ndim - 2] != v->shape[v->ndim - 2])
        return tg_check_fail(c, TG_SHAPE, "k and v have different numbers of keys: %lld and %lld",
                             (long long)k->shape[k->ndim - 2], (long long)v->shape[v->ndim - 2]);
    int nb = 0;
    int64_t batch[TG_MAX_DIMS];
    for (int i = 0; i < 3; i++)
        if (!tg__broadcast_into(&nb, batch, in[i]->ndim - 2, in[i]->shape))
            return tg_check_fail(c, TG_SHAPE, "the batch dims of q, k and v do not broadcast");
    if (!isfinite(at->scale))
        return tg_check_fail(c, TG_RANGE, "scale must be finite, got %g", at->scale);
    /* Every buffer of the op and its backward is [batch..., rows, cols] for rows and cols among
     * tq, tk, d, dv and 2 (the row statistics): each must be a valid shape. */
    int64_t tq = q->shape[q->ndim - 2], tk = k->shape[k->ndim - 2], d = q->shape[q->ndim - 1];
    int64_t dv = v->shape[v->ndim - 1], scores[TG_MAX_DIMS], numel;
    const int64_t sizes[][2] = {{tq, tk}, {tq, dv}, {tq, 2}, {tq, d}, {tk, d}, {tk, dv}};
    memcpy(scores, batch, (size_t)nb * sizeof *batch);
    for (int i = 5; i >= 0; i--) { /* the scores' shape stays in `scores` for the mask */
        scores[nb] = sizes[i][0];
        scores[nb + 1] = sizes[i][1];
        if (!tg__shape_ok(nb + 2, scores, &numel))
            return tg_check_fail(c, TG_SHAPE, "the batch dims with [%lld, %lld] overflow a shape",
                                 (long long)sizes[i][0], (long long)sizes[i][1]);
    }
    if (mask) {
        if (mask->dtype != q->dtype && mask->dtype != TG_I64)
            return tg_check_fail(c, TG_DTYPE,
                                 "mask must be %s (added to the scores) or i64 (boolean), not %s",
                                 tg_dtype_name(q->dtype), tg_dtype_name(mask->dtype));
        bool fits = mask->ndim <= nb + 2;
        for (int d = 0; fits && d < mask->ndim; d++) {
            int64_t m = mask->shape[d], s = scores[nb + 2 - mask->ndim + d];
            fits = m == s || m == 1;
        }
        if (!fits) {
            char shape[96];
            tg_format_shape(shape, sizeof shape, 0, nb + 2, scores);
            return tg_check_fail(c, TG_SHAPE, "mask does not broadcast to the scores' shape %s",
                                 shape);
        }
    }
    layout(in, mask, at, g);
    return TG_OK;
}

/* Where batch entry b's matrices start in each input (elements). */
typedef struct offsets {
    int64_t q, k, v, mask;
} offsets;
static offsets offsets_of(const geometry *g, int64_t b)
{
    offsets o = {0, 0, 0, 0};
    for (int d = g->nb - 1; d >= 0; d--) {
        int64_t i = b % g->batch[d];
        b /= g->batch[d];
        o.q += i * g->q_step[d];
        o.k += i * g->k_step[d];
        o.v += i * g->v_step[d];
        o.mask += i * g->m_step[d];
    }
    return o;
}

/* Keys that some query row below `end` may see. */
static int64_t visible_keys(const geometry *g, int64_t end)
{
    return g->causal && end < g->tk ? end : g->tk;
}

/* What the kernels share: the inputs, and the outputs of the pass that runs. */
typedef struct attention_job {
    geometry g;
    tg_dtype dt;
    const void *q, *k, *v, *mask;
    void *out;     /* the output [batch..., tq, dv] */
    void *probs;   /* P [batch..., tq, tk] when the geometry keeps it, else NULL */
    double *stats; /* else per query row: the max of its scores, the sum of exp(score - max) */
    const void *grad;
    void *dq, *dk, *dv, *dmask; /* backward: the gradients wanted, else NULL */
    int64_t blocks;             /* forward: blocks of query rows per batch entry */
} attention_job;

/* Scores of row `row` (a query index) against keys c0.. c0 + w, in place: s = scale * s + mask,
 * -inf where a boolean mask is 0. Returns how many leading entries are scores: the keys past the
 * causal limit (all of them when a one-value boolean mask hides the row) are left as they are,
 * for the caller to treat as probability 0. `m` is the mask at (row, c0). */
#define ROW_SCORES(T, name, DT)                                                                    \
    static int64_t name(const geometry *g, T *s, int64_t w, int64_t row, int64_t c0,               \
                        const void *m)                                                             \
    {                                                                                              \
        int64_t n = w;                                                                             \
        if (g->causal)                                                                             \
            n = row + 1 - c0 < 0 ? 0 : row + 1 - c0 < w ? row + 1 - c0 : w;                        \
        if (g->mask == MASK_KEEP && !g->m_col && !*(const int64_t *)m)                             \
            return 0;                                                                              \
        tg__vm_mul_scalar(1, DT, n, s, g->scale, 0, s);                                            \
        if (g->mask == MASK_ADD && g->m_col)                                                       \
            tg__vm_add(1, DT, n, s, m, s);                                                         \
        else if (g->mask == MASK_ADD)                                                              \
            tg__vm_add_scalar(1, DT, n, s, *(const T *)m, 0, s);                                   \
        if (g->mask == MASK_KEEP && g->m_col) {                                                    \
            const int64_t *keep = m;                                                               \
            for (int64_t j = 0; j < n; j++)                                                        \
                s[j] = keep[j] ? s[j] : (T)-INFINITY;                                              \
        }                                                                                          \
        return n;                                                                                  \
    }
ROW_SCORES(float, row_scores_f32, TG_F32)
ROW_SCORES(double, row_scores_f64, TG_F64)

/* The mask at (row, key) of batch entry o, or NULL without a mask. */
static const void *mask_at(const attention_job *j, const offsets *o, int64_t row, int64_t key)
{
    if (!j->mask)
        return NULL;
    size_t es = tg_dtype_size(j->g.mask == MASK_KEEP ? TG_I64 : j->dt);
    int64_t at = o->mask + row * j->g.m_row + key * j->g.m_col;
    return (const char *)j->mask + (size_t)at * es;
}

/* ---- scaled_dot_product_attention ------------------------------------------------------- */

/* Query rows [r0, r1) of batch entry b: for each block of keys, S = q k^T (GEMM), the row
 * scores, a running max m and sum l of exp(S - m) per row (earlier blocks' output rescaled when m
 * grows), out += exp(S - m) v (GEMM); finally out /= l, and (m, l) saved for the backward. A row
 * that sees no key (l = 0) gets 0. */
#define FORWARD_ROWS(T, name, DT, scores)                                                          \
    static void name(const attention_job *j, int64_t b, int64_t r0, int64_t r1)                    \
    {                                                                                              \
        const geometry *g = &j->g;                                                                 \
        const int64_t rows = r1 - r0, d = g->d, dv = g->dv, keys = visible_keys(g, r1);            \
        const offsets o = offsets_of(g, b);                                                        \
        const T *q = (const T *)j->q + o.q + r0 * d;                                               \
        const T *k = (const T *)j->k + o.k, *v = (const T *)j->v + o.v;                            \
        T *out = (T *)j->out + (b * g->tq + r0) * dv, s[BLOCK_Q * BLOCK_K];                        \
        double *stats = j->stats + 2 * (b * g->tq + r0);                                           \
        for (int64_t i = 0; i < rows; i++) {                                                       \
            stats[2 * i] = -INFINITY;                                                              \
            stats[2 * i + 1] = 0;                                                                  \
        }                                                                                          \
        if (keys == 0)                                                                             \
            memset(out, 0, (size_t)(rows * dv) * sizeof(T));                                       \
        for (int64_t c0 = 0; c0 < keys; c0 += BLOCK_K) {                                           \
            const int64_t w = keys - c0 < BLOCK_K ? keys - c0 : BLOCK_K;                           \
            tg__gemm(DT, false, true, rows, w, d, q, d, k + c0 * d, d, 0.0, s, w, 1);              \
            int64_t count[BLOCK_Q];                                                                \
            for (int64_t i = 0; i < rows; i++) /* then the rows one step at a time, as below */    \
                count[i] = scores(g, s + i * w, w, r0 + i, c0, mask_at(j, &o, r0 + i, c0));        \
            for (int64_t i = 0; i < rows; i++) {                                                   \
                T *sr = s + i * w;                                                                 \
                double *st = stats + 2 * i;                                                        \
                int64_t n = count[i];                                                              \
                double top = tg__vm_reduce(TG__VM_MAXALL, DT, n, sr, 0, NULL);                     \
                double m = top > st[0] || isnan(top) ? top : st[0];                                \
                double sum = tg__vm_reduce(TG__VM_EXP_SUM, DT, n, sr, m == -INFINITY ? 0 : m, sr); \
                memset(sr + n, 0, (size_t)(w - n) * sizeof(T));                                    \
                if (c0 > 0 && m != st[0]) { /* the earlier blocks' terms shrink by exp(m0 - m) */  \
                    double shrink = exp(st[0] - m);                                                \
                    tg__vm_mul_scalar(1, DT, dv, out + i * dv, shrink, 0, out + i * dv);           \
                    st[1] *= shrink;                                                               \
                }                                                                                  \
                st[0] = m;                                                                         \
                st[1] += sum;                                                                      \
            }                                                                                      \
            tg__gemm(DT, false, false, rows, dv, w, s, w, v + c0 * dv, dv, c0 ? 1.0 : 0.0, out,    \
                     dv, 1);                                                                       \
        }                                                                                          \
        for (int64_t i = 0; i < rows; i++) {                                                       \
            double l = stats[2 * i + 1];                                                           \
            if (l == 0)                                                                            \
                memset(out + i * dv, 0, (size_t)dv * sizeof(T));                                   \
            else                                                                                   \
                tg__vm_mul_scalar(1, DT, dv, out + i * dv, 1 / l, 0, out + i * dv);                \
        }                                                                                          \
    }
FORWARD_ROWS(float, forward_rows_f32, TG_F32, row_scores_f32)
FORWARD_ROWS(double, forward_rows_f64, TG_F64, row_scores_f64)

/* Query rows [r0, r1) of batch entry b when P is kept: S = q k^T (GEMM) straight into P's rows,
 * the row scores, P = exp(S - max) / sum in place, out = P v (GEMM). A row that sees no key has
 * P = 0 and gets 0. */
#define FORWARD_WHOLE_ROWS(T, name, DT, scores)                                                    \
    static void name(const attention_job *j, int64_t b, int64_t r0, int64_t r1)                    \
    {                                                                                              \
        const geometry *g = &j->g;                                                                 \
        const int64_t rows = r1 - r0, d = g->d, dv = g->dv, tk = g->tk;                            \
        const int64_t keys = visible_keys(g, r1);                                                  \
        const offsets o = offsets_of(g, b);                                                        \
        const T *q = (const T *)j->q + o.q + r0 * d;                                               \
        const T *k = (const T *)j->k + o.k, *v = (const T *)j->v + o.v;                            \
        T *out = (T *)j->out + (b * g->tq + r0) * dv, *p = (T *)j->probs + (b * g->tq + r0) * tk;  \
        int64_t n[BLOCK_Q];                                                                        \
        double sum[BLOCK_Q];                                                                       \
        tg__gemm(DT, false, true, rows, keys, d, q, d, k, d, 0.0, p, tk, 1);                       \
        /* Row by row, one step at a time over the block: a row is not read back right after a     \
         * vector-math call wrote it (a masked store followed by a load of it stalls). */          \
        for (int64_t i = 0; i < rows; i++)                                                         \
            n[i] = scores(g, p + i * tk, keys, r0 + i, 0, mask_at(j, &o, r0 + i, 0));              \
        for (int64_t i = 0; i < rows; i++) {                                                       \
            T *pr = p + i * tk;                                                                    \
            double m = tg__vm_reduce(TG__VM_MAXALL, DT, n[i], pr, 0, NULL);                        \
            sum[i] = tg__vm_reduce(TG__VM_EXP_SUM, DT, n[i], pr, m == -INFINITY ? 0 : m, pr);      \
        }                                                                                          \
        for (int64_t i = 0; i < rows; i++) {                                                       \
            T *pr = p + i * tk;                                                                    \
            memset(pr + n[i], 0, (size_t)(tk - n[i]) * sizeof(T));                                 \
            if (sum[i] != 0)                                                                       \
                tg__vm_mul_scalar(1, DT, n[i], pr, 1 / sum[i], 0, pr);                             \
        }                                                                                          \
        tg__gemm(DT, false, false, rows, dv, keys, p, tk, v, dv, 0.0, out, dv, 1);                 \
        for (int64_t i = 0; i < rows; i++)                                                         \
            if (sum[i] == 0)                                                                       \
                memset(out + i * dv, 0, (size_t)dv * sizeof(T));                                   \
    }
FORWARD_WHOLE_ROWS(float, forward_whole_rows_f32, TG_F32, row_scores_f32)
FORWARD_WHOLE_ROWS(double, forward_whole_rows_f64, TG_F64, row_scores_f64)

/* Work items: blocks of query rows of each batch entry, independent of each other. */
static void forward_items(void *user, int64_t i0, int64_t i1)
{
    const attention_job *j = user;
    for (int64_t i = i0; i < i1; i++) {
        int64_t b = i / j->blocks, r0 = i % j->blocks * j->g.block;
        int64_t r1 = j->g.tq - r0 < j->g.block ? j->g.tq : r0 + j->g.block;
        if (j->probs && j->dt == TG_F32)
            forward_whole_rows_f32(j, b, r0, r1);
        else if (j->probs)
            forward_whole_rows_f64(j, b, r0, r1);
        else if (j->dt == TG_F32)
            forward_rows_f32(j, b, r0, r1);
        else
            forward_rows_f64(j, b, r0, r1);
    }
}

/* The forward pass over every row: out, and probs or stats, of the job. */
static void run_forward(attention_job *j, int threads)
{
    j->blocks = (j->g.tq + j->g.block - 1) / j->g.block;
    double cost =
        (double)j->g.nbatch * (double)j->g.tq * (double)j->g.tk * (double)(j->g.d + j->g.dv + 4);
    tg__parallel_for(threads, j->g.nbatch * j->blocks, cost, forward_items, j);
}

static attention_job job_of(const tg_view *const *in, const geometry *g)
{
    attention_job j;
    memset(&j, 0, sizeof j);
    j.g = *g;
    j.dt = in[0]->dtype;
    j.q = in[0]->data;
    j.k = in[1]->data;
    j.v = in[2]->data;
    j.mask = g->mask != MASK_NONE ? in[3]->data : NULL;
    return j;
}

/* What the forward saves for the backward: P, or two doubles (m, l) per query row. */
static size_t saved_bytes(const geometry *g, tg_dtype dt)
{
    return g->keeps_probabilities ? (size_t)(g->nbatch * g->tq * g->tk) * tg_dtype_size(dt)
                                  : (size_t)(g->nbatch * g->tq) * 16;
}
/* Points the job's probs or stats at `saved`. */
static void use_saved(attention_job *j, void *saved)
{
    if (j->g.keeps_probabilities)
        j->probs = saved;
    else
        j->stats = saved;
}

/* out [batch..., tq, dv]; saved: P or the row statistics, which the backward reads. */
static tg_status attention_check(tg_check *c)
{
    const attention_attr *at = c->attr;
    if (c->ninputs != 3 + (at->masked != 0))
        return tg_check_fail(c, TG_INVALID, "takes %d inputs (q, k, v%s), got %d",
                             3 + (at->masked != 0), at->masked ? ", mask" : "", c->ninputs);
    geometry g;
    tg_status st = check_inputs(c, 0, at, &g);
    if (st)
        return st;
    tg_view *out = c->out;
    out->dtype = c->in[0]->dtype;
    out->ndim = g.nb + 2;
    memcpy(out->shape, g.batch, (size_t)g.nb * sizeof *g.batch);
    out->shape[g.nb] = g.tq;
    out->shape[g.nb + 1] = g.dv;
    c->saved_bytes = saved_bytes(&g, out->dtype);
    return TG_OK;
}
static void attention_forward(const tg_kernel *k)
{
    const attention_attr *at = k->attr;
    geometry g;
    layout(k->in, at->masked ? k->in[3] : NULL, at, &g);
    attention_job j = job_of(k->in, &g);
    j.out = k->out->data;
    use_saved(&j, k->saved);
    run_forward(&j, k->threads);
}

/* The shapes of the gradients of q, k, v and the mask at the full batch shape, from the shape of
 * the output (or of its gradient) and q and k. */
typedef struct grad_shapes {
    int ndim;
    int64_t shape[4][TG_MAX_DIMS];
} grad_shapes;
static grad_shapes shapes_of(tg_tensor out, tg_tensor q, tg_tensor k)
{
    grad_shapes s;
    s.ndim = tg_ndim(out);
    int nb = s.ndim - 2;
    int64_t tq = tg_dim(out, -2), dv = tg_dim(out, -1), d = tg_dim(q, -1), tk = tg_dim(k, -2);
    const int64_t last[4][2] = {{tq, d}, {tk, d}, {tk, dv}, {tq, tk}};
    for (int i = 0; i < 4; i++) {
        memcpy(s.shape[i], tg_shape(out), (size_t)nb * sizeof(int64_t));
        s.shape[i][nb] = last[i][0];
        s.shape[i][nb + 1] = last[i][1];
    }
    return s;
}

/* Splits the backward op's output (one gradient, or several packed in GRAD_* order) into
 * parts[0..3] (q, k, v, mask), none where not in `grads`. */
static void unpack(tg_tensor packed, int grads, const grad_shapes *s, tg_tensor *parts)
{
    bool single = !(grads & (grads - 1));
    int64_t start = 0;
    for (int i = 0; i < 4; i++) {
        parts[i] = (tg_tensor){0};
        if (!(grads & (1 << i)))
            continue;
        if (single) {
            parts[i] = packed;
            continue;
        }
        int64_t n = 1;
        for (int d = 0; d < s->ndim; d++)
            n *= s->shape[i][d];
        parts[i] = tg_reshape(tg_slice(packed, 0, start, start + n, 1), s->ndim, s->shape[i]);
        start += n;
    }
}

/* The geometry of live tensors q, k, v (and the mask when at->masked), through their metadata. */
static geometry geometry_of(const tg_tensor *in, const attention_attr *at)
{
    tg_view views[4];
    const tg_view *pv[4];
    for (int i = 0; i < 3 + (at->masked != 0); i++) {
        views[i] = tg__meta(in[i]);
        pv[i] = &views[i];
    }
    geometry g;
    layout(pv, at->masked ? pv[3] : NULL, at, &g);
    return g;
}

/* y = softmax(scale q k^T + mask) v;
 * (dq, dk, dv, dmask) += attention_backward(g, q, k, v, mask; y and P or (m, l) from the
 * forward) */
static void attention_backward(const tg_backward_io *io)
{
    const attention_attr *at = io->attr;
    int grads = 0;
    for (int i = 0; i < 3; i++)
        grads |= io->needs_grad[i] ? 1 << i : 0;
    if (at->masked && io->needs_grad[3] && tg_tensor_dtype(io->inputs[3]) != TG_I64)
        grads |= GRAD_MASK;
    if (!grads)
        return;
    tg_tensor out = io->output, in[7];
    int n = 0, nd = tg_ndim(out);
    in[n++] = io->grad_output;
    for (int i = 0; i < 3 + (at->masked != 0); i++)
        in[n++] = io->inputs[i];
    /* What the forward saved, as a tensor: P [batch..., tq, tk], or (m, l) [batch..., tq, 2]. */
    geometry g = geometry_of(io->inputs, at);
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, tg_shape(out), (size_t)nd * sizeof *shape);
    shape[nd - 1] = g.keeps_probabilities ? g.tk : 2;
    in[n++] = out;
    in[n++] =
        tg_tensor_from(tg_tensor_tape(out), g.keeps_probabilities ? tg_tensor_dtype(out) : TG_F64,
                       nd, shape, io->saved);
    attention_bw_attr bt = {*at, grads, 1};
    tg_tensor packed = tg__apply(TG__OP_scaled_dot_product_attention_backward, n, in, &bt);
    grad_shapes s = shapes_of(out, io->inputs[0], io->inputs[1]);
    tg_tensor parts[4];
    unpack(packed, grads, &s, parts);
    for (int i = 0; i < 3 + (at->masked != 0); i++)
        io->grad_inputs[i] = parts[i];
}

/* Gradient-check cases: q, k, v shapes, the mask (none, additive, additive with -inf entries
 * and a fully masked row, boolean), causal and scale. */
typedef struct attention_case {
    int nd[4];
    int64_t shape[4][4]; /* q, k, v, mask */
    int mask;            /* MASK_NONE, MASK_ADD or MASK_KEEP */
    int causal;
    double scale;
    int grads; /* the backward op's cases */
} attention_case;

static const attention_case cases[] = {
    /* plain, one batch dim */
    {{3, 3, 3, 0}, {{2, 3, 4}, {2, 3, 4}, {2, 3, 2}}, MASK_NONE, 0, 0, GRAD_Q | GRAD_K | GRAD_V},
    /* additive mask, tq != tk, no batch dims */
    {{2, 2, 2, 2}, {{3, 4}, {5, 4}, {5, 3}, {3, 5}}, MASK_ADD, 0, 0, 15},
    /* batch and head dims broadcast; a boolean key-padding mask with a fully masked row */
    {{4, 4, 4, 4},
     {{2, 2, 3, 4}, {2, 1, 5, 4}, {1, 2, 5, 3}, {2, 1, 3, 5}},
     MASK_KEEP,
     0,
     0,
     GRAD_K | GRAD_V},
    /* causal */
    {{3, 3, 3, 0}, {{2, 4, 3}, {2, 4, 3}, {2, 4, 2}}, MASK_NONE, 1, 0, GRAD_V},
    /* one query; an additive mask over the keys */
    {{3, 3, 3, 1}, {{2, 1, 4}, {2, 5, 4}, {2, 5, 3}, {5}}, MASK_ADD, 0, 0.7, GRAD_Q | GRAD_MASK},
    /* one key, causal */
    {{3, 3, 3, 0}, {{2, 3, 4}, {2, 1, 4}, {2, 1, 3}}, MASK_NONE, 1, 0, GRAD_Q},
    /* additive -inf entries and a fully masked row, causal as well, a given scale */
    {{3, 3, 3, 3}, {{2, 3, 4}, {2, 5, 4}, {2, 5, 2}, {2, 3, 5}}, MASK_ADD, 1, 0.4, 15},
    /* causal with more queries than keys; boolean mask with one value per row */
    {{2, 2, 2, 2}, {{5, 3}, {3, 3}, {3, 2}, {5, 1}}, MASK_KEEP, 1, 0, GRAD_Q | GRAD_K},
    /* d = 1: P is larger than q, k and v, so the forward saves row statistics instead */
    {{3, 3, 3, 2}, {{2, 4, 1}, {2, 5, 1}, {2, 5, 1}, {4, 5}}, MASK_ADD, 0, 0, 15},
    /* the same with causal and a boolean mask hiding query 1 */
    {{2, 2, 2, 2}, {{6, 1}, {6, 1}, {6, 1}, {6, 1}}, MASK_KEEP, 1, 0, GRAD_Q | GRAD_K | GRAD_V},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

/* The mask of case c: additive values in [-1, 1) (case 6 with -inf entries: all of row 1 of batch
 * entry 0, and one that hides row 0 of entry 1 with causal), or 0/1 entries, 0 where
 * (7 i + 3) % 5 == 0 for the flat index i, with a row of zeros (cases 2 and 7). */
static tg_tensor example_mask(tg_tape *tp, const attention_case *c, int index)
{
    int nd = c->nd[3];
    const int64_t *shape = c->shape[3];
    if (c->mask == MASK_ADD) {
        tg_tensor m = tg__example(tp, nd, shape, -1, 1, 0, 411 + (uint64_t)index);
        if (index == 6) {
            double *v = (double *)tg_data(m);
            for (int j = 0; j < 5; j++)
                v[5 + j] = -INFINITY;          /* [0, 1, :] */
            v[11] = v[15] = v[27] = -INFINITY; /* [1, 0, 0] hides row [1, 0] with causal */
        }
        return m;
    }
    int64_t n = 1, bits[64];
    for (int d = 0; d < nd; d++)
        n *= shape[d];
    for (int64_t i = 0; i < n && i < 64; i++)
        bits[i] = (i * 7 + 3) % 5 != 0;
    if (index == 2)
        for (int j = 0; j < 5; j++)
            bits[5 + j] = 0; /* row 1 of batch 0 sees nothing */
    if (index == 7)
        bits[2] = 0; /* queries 1 (by the pattern) and 2 see nothing */
    return tg_tensor_from(tp, TG_I64, nd, shape, bits);
}

static int attention_inputs(tg_tape *tp, int index, tg_tensor *in, attention_attr *at)
{
    const attention_case *c = &cases[index];
    for (int i = 0; i < 3; i++)
        in[i] =
            tg__example(tp, c->nd[i], c->shape[i], -1.5, 1.5, 0, 401 + (uint64_t)(index * 4 + i));
    at->scale = c->scale;
    at->causal = c->causal;
    at->masked = c->mask != MASK_NONE;
    if (at->masked)
        in[3] = example_mask(tp, c, index);
    return 3 + at->masked;
}
static int example_attention(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (index < 0 || index >= NCASES)
        return 0;
    return attention_inputs(tp, index, in, attr);
}

const tg_op_def tg__op_scaled_dot_product_attention = {.name = "scaled_dot_product_attention",
                                                       .ninputs = TG_VARIADIC,
                                                       .attr_size = sizeof(attention_attr),
                                                       .check = attention_check,
                                                       .forward = attention_forward,
                                                       .backward = attention_backward,
                                                       .example = example_attention};

tg_tensor tg_scaled_dot_product_attention(tg_tensor q, tg_tensor k, tg_tensor v, tg_tensor mask,
                                          bool causal, double scale)
{
    attention_attr at = {scale, causal, 0};
    tg_tensor in[4] = {q, k, v, mask};
    at.masked = tg_tensor_tape(mask) != NULL; /* a zero-initialised handle means none */
    return tg__apply(TG__OP_scaled_dot_product_attention, 3 + at.masked, in, &at);
}

/* ---- scaled_dot_product_attention_backward ---------------------------------------------- */

/* P for query rows [r0, r0 + rows) and keys [c0, c0 + w) of batch entry b (offsets o): a block
 * of the kept P (*ld = tk), or recomputed into buf (*ld = w) as exp(S - m) / l with the row
 * statistics (m, l) of the forward (l = 0: a row that saw no key, P = 0). */
#define PROBABILITIES(T, name, DT, scores)                                                         \
    static const T *name(const attention_job *j, const offsets *o, int64_t b, int64_t r0,          \
                         int64_t rows, int64_t c0, int64_t w, T *buf, int64_t *ld)                 \
    {                                                                                              \
        const geometry *g = &j->g;                                                                 \
        if (j->probs) {                                                                            \
            *ld = g->tk;                                                                           \
            return (const T *)j->probs + (b * g->tq + r0) * g->tk + c0;                            \
        }                                                                                          \
        const T *q = (const T *)j->q + o->q + r0 * g->d, *k = (const T *)j->k + o->k + c0 * g->d;  \
        const double *st = j->stats + 2 * (b * g->tq + r0);                                        \
        int64_t n[BLOCK_Q];                                                                        \
        tg__gemm(DT, false, true, rows, w, g->d, q, g->d, k, g->d, 0.0, buf, w, 1);                \
        for (int64_t i = 0; i < rows; i++) /* one step at a time, as in the forward */             \
            n[i] = st[2 * i + 1] == 0                                                              \
                       ? 0                                                                         \
                       : scores(g, buf + i * w, w, r0 + i, c0, mask_at(j, o, r0 + i, c0));         \
        for (int64_t i = 0; i < rows; i++)                                                         \
            tg__vm_reduce(TG__VM_EXP_SUM, DT, n[i], buf + i * w, st[2 * i], buf + i * w);          \
        for (int64_t i = 0; i < rows; i++) {                                                       \
            if (n[i])                                                                              \
                tg__vm_mul_scalar(1, DT, n[i], buf + i * w, 1 / st[2 * i + 1], 0, buf + i * w);    \
            memset(buf + i * w + n[i], 0, (size_t)(w - n[i]) * sizeof(T));                         \
        }                                                                                          \
        *ld = w;                                                                                   \
        return buf;                                                                                \
    }
PROBABILITIES(float, probabilities_f32, TG_F32, row_scores_f32)
PROBABILITIES(double, probabilities_f64, TG_F64, row_scores_f64)

/* sum a[i] b[i] in double, in four independent accumulators (kept in registers, so the loop
 * pipelines), added pairwise at the end. */
#define DOT(T, name)                                                                               \
    static double name(const T *a, const T *b, int64_t n)                                          \
    {                                                                                              \
        double a0 = 0, a1 = 0, a2 = 0, a3 = 0;                                                     \
        int64_t i = 0;                                                                             \
        for (; i + 4 <= n; i += 4) {                                                               \
            a0 += (double)a[i] * (double)b[i];                                                     \
            a1 += (double)a[i + 1] * (double)b[i + 1];                                             \
            a2 += (double)a[i + 2] * (double)b[i + 2];                                             \
            a3 += (double)a[i + 3] * (double)b[i + 3];                                             \
        }                                                                                          \
        for (; i < n; i++)                                                                         \
            a0 += (double)a[i] * (double)b[i];                                                     \
        return (a0 + a1) + (a2 + a3);                                                              \
    }
DOT(float, dot_f32)
DOT(double, dot_f64)

/* Query rows [r0, r0 + rows) and keys [c0, c0 + w) of batch entry b (offsets o), with P from
 * `probabilities` and delta = rowsum(g * y) of the rows:
 *   dv += P^T g,   dP = g v^T,   dS = P (dP - delta),   dmask = dS,
 *   dq += scale dS k,   dk += scale dS^T q.
 * dk and dv are written (first = 0) or added to (first = 1); dq is written by the first block of
 * keys (c0 = 0). Gradients not wanted (NULL) are skipped. */
#define BACKWARD_BLOCK(T, name, DT, probabilities)                                                 \
    static void name(const attention_job *j, const offsets *o, int64_t b, int64_t r0,              \
                     int64_t rows, int64_t c0, int64_t w, double first, const double *delta)       \
    {                                                                                              \
        const geometry *g = &j->g;                                                                 \
        const int64_t tq = g->tq, tk = g->tk, d = g->d, dv = g->dv;                                \
        const T *q = (const T *)j->q + o->q + r0 * d, *k = (const T *)j->k + o->k + c0 * d;        \
        const T *v = (const T *)j->v + o->v + c0 * dv,                                             \
                *gy = (const T *)j->grad + (b * tq + r0) * dv;                                     \
        T *dq = j->dq ? (T *)j->dq + (b * tq + r0) * d : NULL;                                     \
        T *dk = j->dk ? (T *)j->dk + (b * tk + c0) * d : NULL;                                     \
        T *dvv = j->dv ? (T *)j->dv + (b * tk + c0) * dv : NULL;                                   \
        T buf[BLOCK_Q * BLOCK_K], ds[BLOCK_Q * BLOCK_K];                                           \
        int64_t ld;                                                                                \
        const T *p = probabilities(j, o, b, r0, rows, c0, w, buf, &ld);                            \
        if (dvv)                                                                                   \
            tg__gemm(DT, true, false, w, dv, rows, p, ld, gy, dv, first, dvv, dv, 1);              \
        if (!dq && !dk && !j->dmask)                                                               \
            return;                                                                                \
        tg__gemm(DT, false, true, rows, w, dv, gy, dv, v, dv, 0.0, ds, w, 1);                      \
        /* One step at a time over the rows, as in the forward. */                                 \
        for (int64_t i = 0; i < rows; i++)                                                         \
            tg__vm_add_scalar(1, DT, w, ds + i * w, -delta[i], 0, ds + i * w);                     \
        for (int64_t i = 0; i < rows; i++)                                                         \
            tg__vm_mul(1, DT, w, ds + i * w, p + i * ld, ds + i * w);                              \
        if (j->dmask)                                                                              \
            for (int64_t i = 0; i < rows; i++)                                                     \
                memcpy((T *)j->dmask + (b * tq + r0 + i) * tk + c0, ds + i * w,                    \
                       (size_t)w * sizeof(T));                                                     \
        if (!dq && !dk)                                                                            \
            return;                                                                                \
        tg__vm_mul_scalar(1, DT, rows *w, ds, g->scale, 0, ds);                                    \
        if (dq)                                                                                    \
            tg__gemm(DT, false, false, rows, d, w, ds, w, k, d, c0 ? 1.0 : 0.0, dq, d, 1);         \
        if (dk)                                                                                    \
            tg__gemm(DT, true, false, w, d, rows, ds, w, q, d, first, dk, d, 1);                   \
    }
BACKWARD_BLOCK(float, backward_block_f32, TG_F32, probabilities_f32)
BACKWARD_BLOCK(double, backward_block_f64, TG_F64, probabilities_f64)

/* Zeroes rows [from, to) of dk and dv (those wanted) of batch entry b. */
static void zero_keys(const attention_job *j, int64_t b, int64_t from, int64_t to)
{
    const geometry *g = &j->g;
    size_t es = tg_dtype_size(j->dt);
    if (j->dk && from < to)
        memset((char *)j->dk + (size_t)((b * g->tk + from) * g->d) * es, 0,
               (size_t)((to - from) * g->d) * es);
    if (j->dv && from < to)
        memset((char *)j->dv + (size_t)((b * g->tk + from) * g->dv) * es, 0,
               (size_t)((to - from) * g->dv) * es);
}

/* Batch entry b: every block of query rows against the blocks of keys its rows see. dk and dv add
 * up over the blocks of rows: a block of keys that no earlier block of rows reached (c0 >= seen)
 * is written, the part beyond `seen` of a block that an earlier one reached in part is zeroed
 * first, and keys that no row sees (causal, tk > tq) are zeroed at the end. A row that saw no key
 * has P = 0 and gives nothing. */
#define BACKWARD_ENTRY(T, name, step, dot)                                                         \
    static void name(const attention_job *j, int64_t b)                                            \
    {                                                                                              \
        const geometry *g = &j->g;                                                                 \
        const int64_t tq = g->tq, d = g->d, dv = g->dv;                                            \
        const offsets o = offsets_of(g, b);                                                        \
        const T *gy = (const T *)j->grad + b * tq * dv, *y = (const T *)j->out + b * tq * dv;      \
        double delta[BLOCK_Q];                                                                     \
        int64_t seen = 0;                                                                          \
        if (j->dmask) /* causally hidden keys are never visited */                                 \
            memset((T *)j->dmask + b * tq * g->tk, 0, (size_t)(tq * g->tk) * sizeof(T));           \
        for (int64_t r0 = 0; r0 < tq; r0 += g->block) {                                            \
            const int64_t rows = tq - r0 < g->block ? tq - r0 : g->block;                          \
            const int64_t keys = visible_keys(g, r0 + rows);                                       \
            int64_t straddle = (seen + BLOCK_K - 1) / BLOCK_K * BLOCK_K;                           \
            zero_keys(j, b, seen, straddle < keys ? straddle : keys);                              \
            for (int64_t i = 0; i < rows; i++)                                                     \
                delta[i] = dot(gy + (r0 + i) * dv, y + (r0 + i) * dv, dv);                         \
            if (j->dq && keys == 0)                                                                \
                memset((T *)j->dq + (b * tq + r0) * d, 0, (size_t)(rows * d) * sizeof(T));         \
            for (int64_t c0 = 0; c0 < keys; c0 += BLOCK_K)                                         \
                step(j, &o, b, r0, rows, c0, keys - c0 < BLOCK_K ? keys - c0 : BLOCK_K,            \
                     c0 >= seen ? 0.0 : 1.0, delta);                                               \
            seen = keys;                                                                           \
        }                                                                                          \
        zero_keys(j, b, seen, g->tk);                                                              \
    }
BACKWARD_ENTRY(float, backward_entry_f32, backward_block_f32, dot_f32)
BACKWARD_ENTRY(double, backward_entry_f64, backward_block_f64, dot_f64)

/* Work items: batch entries (each owns its rows of every gradient). */
static void backward_items(void *user, int64_t b0, int64_t b1)
{
    const attention_job *j = user;
    for (int64_t b = b0; b < b1; b++) {
        if (j->dt == TG_F32)
            backward_entry_f32(j, b);
        else
            backward_entry_f64(j, b);
    }
}

/* Element counts of the gradients the op packs (GRAD_* order), from the geometry. */
static void grad_sizes(const geometry *g, int64_t *n)
{
    n[0] = g->nbatch * g->tq * g->d;
    n[1] = g->nbatch * g->tk * g->d;
    n[2] = g->nbatch * g->tk * g->dv;
    n[3] = g->nbatch * g->tq * g->tk;
}

/* Scratch of an uncached call: the forward's output (rounded up to 64 bytes), then what the
 * forward saves (P or the row statistics). */
static size_t output_bytes(const geometry *g, tg_dtype dt)
{
    return ((size_t)(g->nbatch * g->tq * g->dv) * tg_dtype_size(dt) + 63) & ~(size_t)63;
}

/* A tensor of shape [batch..., tq, last] and dtype dt, as input i. */
static tg_status check_rows(tg_check *c, int i, const char *what, const geometry *g, tg_dtype dt,
                            int64_t last)
{
    const tg_view *x = c->in[i];
    bool ok = x->dtype == dt && x->ndim == g->nb + 2 && x->shape[g->nb] == g->tq
              && x->shape[g->nb + 1] == last;
    for (int d = 0; ok && d < g->nb; d++)
        ok = x->shape[d] == g->batch[d];
    if (ok)
        return TG_OK;
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, g->batch, (size_t)g->nb * sizeof *shape);
    shape[g->nb] = g->tq;
    shape[g->nb + 1] = last;
    char want[128];
    tg_format_shape(want, sizeof want, dt, g->nb + 2, shape);
    return tg_check_fail(c, x->dtype == dt ? TG_SHAPE : TG_DTYPE, "%s (input %d) must be %s", what,
                         i, want);
}

/* Inputs g, q, k, v, mask (when masked), then y and what the forward saved (when cached); the
 * output is the one gradient asked for, or several packed flat in GRAD_* order. */
static tg_status attention_bw_check(tg_check *c)
{
    const attention_bw_attr *bt = c->attr;
    const attention_attr *at = &bt->forward;
    int n = 4 + (at->masked != 0) + 2 * (bt->cached != 0);
    if (c->ninputs != n)
        return tg_check_fail(c, TG_INVALID, "takes %d inputs, got %d", n, c->ninputs);
    if (bt->grads <= 0 || bt->grads > 15)
        return tg_check_fail(c, TG_INVALID, "no valid set of gradients asked for (%d)", bt->grads);
    geometry g;
    tg_status st = check_inputs(c, 1, at, &g);
    tg_dtype dt = c->in[1]->dtype;
    if (!st)
        st = check_rows(c, 0, "the output's gradient", &g, dt, g.dv);
    if (!st && bt->cached)
        st = check_rows(c, n - 2, "the output", &g, dt, g.dv);
    if (!st && bt->cached && g.keeps_probabilities)
        st = check_rows(c, n - 1, "the probabilities", &g, dt, g.tk);
    else if (!st && bt->cached)
        st = check_rows(c, n - 1, "the row statistics", &g, TG_F64, 2);
    if (!st && (bt->grads & GRAD_MASK) && g.mask != MASK_ADD)
        st = tg_check_fail(c, TG_INVALID, "only an additive mask has a gradient");
    if (st)
        return st;
    int64_t sizes[4], total = 0;
    grad_sizes(&g, sizes);
    for (int i = 0; i < 4; i++)
        total += bt->grads & (1 << i) ? sizes[i] : 0;
    tg_view *out = c->out;
    out->dtype = dt;
    if (bt->grads & (bt->grads - 1)) {
        out->ndim = 1;
        out->shape[0] = total;
    } else {
        int which = bt->grads == GRAD_Q ? 0 : bt->grads == GRAD_K ? 1 : bt->grads == GRAD_V ? 2 : 3;
        const int64_t last[4][2] = {{g.tq, g.d}, {g.tk, g.d}, {g.tk, g.dv}, {g.tq, g.tk}};
        out->ndim = g.nb + 2;
        memcpy(out->shape, g.batch, (size_t)g.nb * sizeof *g.batch);
        out->shape[g.nb] = last[which][0];
        out->shape[g.nb + 1] = last[which][1];
    }
    if (!bt->cached)
        c->saved_bytes = output_bytes(&g, dt) + saved_bytes(&g, dt);
    return TG_OK;
}
static void attention_bw_forward(const tg_kernel *k)
{
    const attention_bw_attr *bt = k->attr;
    const attention_attr *at = &bt->forward;
    const tg_view *const *in = k->in + 1;
    geometry g;
    layout(in, at->masked ? in[3] : NULL, at, &g);
    attention_job j = job_of(in, &g);
    if (bt->cached) {
        j.out = k->in[k->ninputs - 2]->data;
        use_saved(&j, k->in[k->ninputs - 1]->data);
    } else { /* recompute the forward's output and what it saves into the scratch */
        j.out = k->saved;
        use_saved(&j, (char *)k->saved + output_bytes(&g, j.dt));
        run_forward(&j, k->threads);
    }
    j.grad = k->in[0]->data;
    int64_t sizes[4];
    grad_sizes(&g, sizes);
    void **parts[4] = {&j.dq, &j.dk, &j.dv, &j.dmask};
    char *next = k->out->data;
    for (int i = 0; i < 4; i++) {
        if (!(bt->grads & (1 << i)))
            continue;
        *parts[i] = next;
        next += (size_t)sizes[i] * tg_dtype_size(j.dt);
    }
    double cost = 2.5 * (double)g.nbatch * (double)g.tq * (double)g.tk * (double)(g.d + g.dv + 4);
    tg__parallel_for(k->threads, g.nbatch, cost, backward_items, &j);
}

/* Sum of two terms, either of which may be none. */
static tg_tensor plus(tg_tensor a, tg_tensor b)
{
    if (!tg_tensor_tape(a))
        return b;
    return tg_tensor_tape(b) ? tg_add(a, b) : a;
}
static tg_tensor row_sum(tg_tensor x)
{
    int last = -1;
    return tg_sum(x, 1, &last, true);
}

/* P = softmax(scale q k^T + mask) over the keys, written with tapegrad ops (so differentiable
 * again), with the kernels' rule for a row that sees no key: P = 0 there. */
static tg_tensor probabilities(tg_tensor q, tg_tensor k, tg_tensor mask, const attention_attr *at)
{
    tg_tape *tp = tg_tensor_tape(q);
    tg_dtype dt = tg_tensor_dtype(q);
    tg_tensor s =
        tg_mul_scalar(tg_matmul_t(q, k, false, true), scale_for(at->scale, tg_dim(q, -1)));
    bool masked = at->masked || at->causal;
    if (at->masked && tg_tensor_dtype(mask) == TG_I64) {
        tg_tensor hidden = tg_full(tp, dt, tg_ndim(mask), tg_shape(mask), -INFINITY);
        s = tg_add(s, tg_masked_fill(hidden, mask, 0.0));
    } else if (at->masked) {
        s = tg_add(s, mask);
    }
    if (at->causal) {
        int64_t square[2] = {tg_dim(q, -2), tg_dim(k, -2)};
        s = tg_add(s, tg_triu(tg_full(tp, dt, 2, square, -INFINITY), 1));
    }
    if (!masked)
        return tg_softmax(s, -1);
    /* Rows whose scores are all -inf (logsumexp -inf) take scores 0 and probabilities 0. */
    tg_tensor zero = tg_constant(tp, dt, 0.0);
    tg_tensor dead = tg_eq(tg_logsumexp(s, -1, true), tg_constant(tp, dt, -INFINITY));
    return tg_where(dead, zero, tg_softmax(tg_where(dead, zero, s), -1));
}

/* The backward op is F(g, q, k, v, mask) = (dq, dk, dv, dmask) (the cached inputs are F's own
 * intermediates, given no gradient). With P, dP = g v^T, delta = rowsum(P dP) and
 * dS = P (dP - delta), and incoming gradients (aq, ak, av, am) of the parts:
 *   H = scale (aq k^T + q ak^T) + am,   Hc = H - rowsum(H P),
 *   adP = P Hc,   aP = Hc dP - delta H + g av^T,   aS = P (aP - rowsum(aP P)),
 *   dg = P av + adP v,   dq = scale (dS ak + aS k),   dk = scale (dS^T aq + aS^T q),
 *   dv = adP^T g,   dmask = aS. */
static void attention_bw_backward(const tg_backward_io *io)
{
    const attention_bw_attr *bt = io->attr;
    const attention_attr *at = &bt->forward;
    tg_tensor g = io->inputs[0], q = io->inputs[1], k = io->inputs[2], v = io->inputs[3];
    tg_tensor mask = at->masked ? io->inputs[4] : (tg_tensor){0}, a[4], none = {0};
    double scale = scale_for(at->scale, tg_dim(q, -1));
    grad_shapes s = shapes_of(g, q, k);
    unpack(io->grad_output, bt->grads, &s, a);
    tg_tensor p = probabilities(q, k, mask, at);
    tg_tensor dp = tg_matmul_t(g, v, false, true);
    tg_tensor delta = row_sum(tg_mul(p, dp));
    tg_tensor ds = tg_mul(p, tg_sub(dp, delta));
    tg_tensor h = a[3];
    if (tg_tensor_tape(a[0]))
        h = plus(h, tg_mul_scalar(tg_matmul_t(a[0], k, false, true), scale));
    if (tg_tensor_tape(a[1]))
        h = plus(h, tg_mul_scalar(tg_matmul_t(q, a[1], false, true), scale));
    tg_tensor adp = none, ap = none;
    if (tg_tensor_tape(h)) {
        tg_tensor hc = tg_sub(h, row_sum(tg_mul(h, p)));
        adp = tg_mul(p, hc);
        ap = tg_sub(tg_mul(hc, dp), tg_mul(delta, h));
    }
    if (tg_tensor_tape(a[2]))
        ap = plus(ap, tg_matmul_t(g, a[2], false, true));
    tg_tensor as = none;
    if (tg_tensor_tape(ap))
        as = tg_mul(p, tg_sub(ap, row_sum(tg_mul(ap, p))));
    tg_tensor dg = none, dq = none, dk = none, dv = none;
    if (tg_tensor_tape(a[2]))
        dg = tg_matmul(p, a[2]);
    if (tg_tensor_tape(adp)) {
        dg = plus(dg, tg_matmul(adp, v));
        dv = tg_matmul_t(adp, g, true, false);
    }
    if (tg_tensor_tape(a[1]))
        dq = tg_matmul(ds, a[1]);
    if (tg_tensor_tape(a[0]))
        dk = tg_matmul_t(ds, a[0], true, false);
    if (tg_tensor_tape(as)) {
        dq = plus(dq, tg_matmul(as, k));
        dk = plus(dk, tg_matmul_t(as, q, true, false));
    }
    tg_tensor grads[5] = {dg, tg_tensor_tape(dq) ? tg_mul_scalar(dq, scale) : none,
                          tg_tensor_tape(dk) ? tg_mul_scalar(dk, scale) : none, dv,
                          at->masked && tg_tensor_dtype(mask) != TG_I64 ? as : none};
    for (int i = 0; i < 4 + (at->masked != 0); i++)
        if (io->needs_grad[i])
            io->grad_inputs[i] = grads[i];
}

/* The forward's cases, uncached, with the gradients of each case's `grads`; g is random. */
static int example_attention_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (index < 0 || index >= NCASES)
        return 0;
    attention_bw_attr *bt = attr;
    int n = attention_inputs(tp, index, in + 1, &bt->forward);
    bt->grads = cases[index].grads;
    bt->cached = 0;
    geometry g = geometry_of(in + 1, &bt->forward);
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, g.batch, (size_t)g.nb * sizeof *shape);
    shape[g.nb] = g.tq;
    shape[g.nb + 1] = g.dv;
    in[0] = tg__example(tp, g.nb + 2, shape, -1, 1, 0, 451 + (uint64_t)index);
    return n + 1;
}

const tg_op_def tg__op_scaled_dot_product_attention_backward = {
    .name = "scaled_dot_product_attention_backward",
    .ninputs = TG_VARIADIC,
    .attr_size = sizeof(attention_bw_attr),
    .check = attention_bw_check,
    .forward = attention_bw_forward,
    .backward = attention_bw_backward,
    .example = example_attention_bw};
