/* test_dist.c — data-parallel training over MPI (tapegrad/dist.h), on 2 ranks: run as
 * `mpirun -np 2 test_dist [filter]`. Rank 0's parameters everywhere at the start; gradients
 * averaged in buckets started during backward; a step that fails on one rank fails on every rank
 * and changes nothing; 10 Adam steps of tg-train's MLP on 2 ranks of batch b against one process
 * of batch 2b (within 1e-12 in f64) and against one process accumulating the two batches (bit
 * for bit); sharded batches; checkpoints; the errored-tape and out-of-memory sweeps across
 * ranks. Every rank runs every test; a test that fails on one rank while the other waits in a
 * collective is ended by the watchdog (alarm), which fails the run. */
#include "common.h"

#include <unistd.h>

#include <tapegrad/dist.h>

/* White-box: the handle's chunk size (lowered to exercise chunked calls) and its MPI error path. */
#include "../src/dist/dist_internal.h"

static int rank, nranks;

/* ---- helpers -------------------------------------------------------------------------------- */

/* Whether `ok` holds on every rank. */
static bool everywhere(bool ok)
{
    int mine = ok, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all;
}

/* Whether these bytes are the same on every rank (rank 0's sent to all and compared). */
static bool same_bytes(const void *data, size_t bytes)
{
    unsigned char *theirs = malloc(bytes ? bytes : 1);
    assert_non_null(theirs);
    memcpy(theirs, data, bytes);
    MPI_Bcast(theirs, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
    bool same = !bytes || !memcmp(theirs, data, bytes);
    free(theirs);
    return everywhere(same);
}

static size_t param_bytes(const tg_param *p)
{
    return (size_t)tg_param_numel(p) * tg_dtype_size(tg_param_dtype(p));
}

/* Every rank holds bitwise the same values (checked without the library). */
static bool params_identical(size_t n, tg_param *const *params)
{
    bool same = true;
    for (size_t i = 0; i < n; i++)
        same &= same_bytes(tg_param_data(params[i]), param_bytes(params[i]));
    return same;
}

static double value_at(const tg_param *p, const void *data, int64_t i)
{
    return tg_param_dtype(p) == TG_F64 ? ((const double *)data)[i] : ((const float *)data)[i];
}

/* A copy of a parameter's values or gradient, to compare later. */
typedef struct snapshot {
    size_t n;
    unsigned char *values[8], *grads[8];
} snapshot;

static void snap(snapshot *s, size_t n, tg_param *const *params)
{
    s->n = n;
    for (size_t i = 0; i < n; i++) {
        size_t bytes = param_bytes(params[i]);
        s->values[i] = malloc(bytes);
        s->grads[i] = malloc(bytes);
        memcpy(s->values[i], tg_param_data(params[i]), bytes);
        memcpy(s->grads[i], tg_param_grad(params[i]), bytes);
    }
}

/* Nothing changed since the snapshot (and the snapshot is freed). */
static void assert_unchanged(snapshot *s, tg_param *const *params)
{
    for (size_t i = 0; i < s->n; i++) {
        size_t bytes = param_bytes(params[i]);
        assert_memory_equal(s->values[i], tg_param_data(params[i]), bytes);
        assert_memory_equal(s->grads[i], tg_param_grad(params[i]), bytes);
        free(s->values[i]);
        free(s->grads[i]);
    }
}

/* ---- a model: tg-train's MLP, of either dtype ------------------------------------------------ */

typedef struct mlp {
    tg_dtype dtype;
    tg_param *p[6]; /* w1 b1 w2 b2 w3 b3, forward order; w [out, in] as nn.Linear */
} mlp;

static const int64_t sizes[4] = {784, 256, 128, 10};

/* Parameters as nn.Linear initialises them, from fixed seeds (plus `salt`, per rank when a test
 * wants them to differ before the broadcast). */
static void mlp_new(tg_ctx *ctx, tg_dtype dt, const int64_t *dims, uint64_t salt, mlp *m)
{
    static const char *const names[6] = {"fc1.weight", "fc1.bias",   "fc2.weight",
                                         "fc2.bias",   "fc3.weight", "fc3.bias"};
    m->dtype = dt;
    for (int l = 0; l < 3; l++) {
        double bound = 1 / sqrt((double)dims[l]);
        assert_status(
            tg_param_new(ctx, names[2 * l], dt, 2, (int64_t[]){dims[l + 1], dims[l]}, &m->p[2 * l]),
            TG_OK);
        assert_status(tg_param_new(ctx, names[2 * l + 1], dt, 1, &dims[l + 1], &m->p[2 * l + 1]),
                      TG_OK);
        tg_param_uniform(m->p[2 * l], -bound, bound, 10 * (uint64_t)l + 1 + salt);
        tg_param_uniform(m->p[2 * l + 1], -bound, bound, 10 * (uint64_t)l + 2 + salt);
    }
}

/* Cross-entropy of the MLP on x (f32 from the batches; converted for an f64 model). */
static tg_tensor mlp_loss(tg_tape *tp, const mlp *m, tg_tensor x, tg_tensor y)
{
    if (m->dtype == TG_F64 && tg_ok(x)) {
        int64_t numel = tg_numel(x);
        double *buf = malloc((size_t)numel * sizeof *buf);
        assert_non_null(buf);
        assert_status(tg_read(x, TG_F64, buf, numel), TG_OK);
        x = tg_tensor_from(tp, TG_F64, tg_ndim(x), tg_shape(x), buf);
        free(buf);
    }
    tg_tensor h = tg_reshape(x, 2, (int64_t[]){tg_dim(x, 0), -1});
    for (int l = 0; l < 3; l++) {
        tg_tensor w = tg_param_tensor(tp, m->p[2 * l]);
        tg_tensor b = tg_param_tensor(tp, m->p[2 * l + 1]);
        h = tg_add(tg_matmul_t(h, w, false, true), b);
        if (l < 2)
            h = tg_relu(h);
    }
    return tg_cross_entropy(h, y, TG_REDUCE_MEAN, 0.0);
}

/* n samples of `features` values in [0, 1) and labels in [0, classes), from a seed. */
static tg_dataset *synthetic(tg_ctx *ctx, int64_t n, int64_t features, int64_t classes,
                             uint64_t seed)
{
    float *x = malloc((size_t)(n * features) * sizeof *x);
    int64_t *y = malloc((size_t)n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int64_t i = 0; i < n * features; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)(s >> 40) / 16777216.0f;
    }
    for (int64_t i = 0; i < n; i++)
        y[i] = (i * 7 + 3) % classes;
    tg_dataset *d;
    assert_status(tg_dataset_new(ctx, n, 1, &features, x, y, &d), TG_OK);
    free(x);
    free(y);
    return d;
}

/* A context, a tape, an MLP, Adam, on this rank. */
typedef struct rig {
    tg_ctx *ctx;
    tg_tape *tp;
    mlp m;
    tg_optim *opt;
    tg_dist *dist;
} rig;

static void rig_new(rig *r, tg_dtype dt, const int64_t *dims, uint64_t salt,
                    const tg_dist_options *o)
{
    memset(r, 0, sizeof *r);
    assert_status(tg_ctx_new(&r->ctx, NULL), TG_OK);
    assert_status(tg_tape_new(r->ctx, &r->tp), TG_OK);
    mlp_new(r->ctx, dt, dims, salt, &r->m);
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    assert_status(tg_adam_new(r->ctx, 6, r->m.p, &ao, &r->opt), TG_OK);
    if (o)
        assert_status(tg_dist_new(r->ctx, 6, r->m.p, o, &r->dist), TG_OK);
}

static void rig_free(rig *r)
{
    tg_dist_free(r->dist);
    tg_optim_free(r->opt);
    tg_tape_free(r->tp);
    tg_ctx_free(r->ctx);
}

/* One training step on the next batch of b: forward, (distributed) backward, Adam, zero_grad.
 * Returns the step's status. */
static tg_status train_step(rig *r, tg_batches *b)
{
    tg_tensor x = {0}, y = {0};
    tg_tape_reset(r->tp);
    if (!tg_batches_next(b, r->tp, &x, &y) && tg_tape_status(r->tp) == TG_OK)
        return TG_RANGE; /* the epoch ended: the test asked for too many steps */
    tg_tensor loss = mlp_loss(r->tp, &r->m, x, y);
    tg_status st = r->dist ? tg_dist_backward(r->dist, loss) : tg_backward(loss);
    if (st == TG_OK)
        st = tg_optim_step(r->opt, r->tp);
    tg_optim_zero_grad(r->opt);
    return st;
}

static const int64_t small_dims[4] = {6, 5, 4, 3};

/* ---- the handle ----------------------------------------------------------------------------- */

static void handle_and_communicators(void **state)
{
    (void)state;
    assert_true(tg_dist_launched());
    rig r;
    rig_new(&r, TG_F32, small_dims, (uint64_t)rank, &(tg_dist_options){.bucket_bytes = 64});
    assert_int_equal(tg_dist_rank(r.dist), rank);
    assert_int_equal(tg_dist_size(r.dist), nranks);
    /* Rank 0's values everywhere, though each rank initialised its own. */
    assert_true(params_identical(6, r.m.p));
    /* Buckets of 64 bytes (16 floats), filled from the last parameter: fc3.bias (3) and
     * fc3.weight (12) share one; fc2.bias (4), fc2.weight (20), fc1.bias (5) and fc1.weight (30)
     * fit beside no neighbour. */
    tg_dist_stats s = tg_dist_get_stats(r.dist);
    assert_int_equal(s.buckets, 5);
    size_t total = 0;
    for (int i = 0; i < 6; i++)
        total += param_bytes(r.m.p[i]);
    assert_int_equal(s.bytes, total);
    assert_int_equal(s.steps, 0);
    /* Its communicator is its own, and returns errors: calling its error handler returns. */
    MPI_Comm comm = tg_dist_comm(r.dist);
    int cmp;
    MPI_Comm_compare(comm, MPI_COMM_WORLD, &cmp);
    assert_int_equal(cmp, MPI_CONGRUENT);
    MPI_Errhandler eh;
    MPI_Comm_get_errhandler(comm, &eh);
    assert_true(eh == MPI_ERRORS_RETURN);
    MPI_Errhandler_free(&eh);
    assert_int_equal(MPI_Comm_call_errhandler(comm, MPI_ERR_OTHER), MPI_SUCCESS);
    /* The world's handler is as it was. */
    MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh);
    assert_true(eh == MPI_ERRORS_ARE_FATAL);
    MPI_Errhandler_free(&eh);
    /* A buffer (state without a gradient), larger than any bucket: staged whole, then written. */
    tg_param *buffer;
    assert_status(tg_buffer_new(r.ctx, "running", TG_F64, 1, (int64_t[]){100000}, &buffer), TG_OK);
    tg_param_fill(buffer, rank + 0.5);
    assert_status(tg_dist_broadcast(r.dist, 1, &buffer), TG_OK);
    assert_true(params_identical(1, &buffer));
    assert_close(((const double *)tg_param_data(buffer))[99999], 0.5, 0);
    /* Lists that differ are refused, nothing received. */
    tg_param_fill(buffer, rank);
    assert_status(tg_dist_broadcast(r.dist, 1, rank ? &buffer : &r.m.p[0]), TG_SHAPE);
    assert_close(((const double *)tg_param_data(buffer))[0], rank, 0);
    /* Buffers in tg_dist_new's list (an i64 one too): broadcast at the start, no bucket. */
    tg_param *whole[8], *counts;
    memcpy(whole, r.m.p, sizeof r.m.p);
    assert_status(tg_buffer_new(r.ctx, "counts", TG_I64, 1, (int64_t[]){3}, &counts), TG_OK);
    tg_param_fill(counts, 7 + rank);
    whole[6] = buffer;
    whole[7] = counts;
    tg_dist *with_state;
    assert_status(tg_dist_new(r.ctx, 8, whole, &(tg_dist_options){.bucket_bytes = 64}, &with_state),
                  TG_OK);
    assert_true(params_identical(8, whole));
    assert_int_equal(((const int64_t *)tg_param_data(counts))[2], 7);
    assert_int_equal(tg_dist_get_stats(with_state).buckets, 5);
    tg_tape_reset(r.tp);
    tg_tensor x = tg_uniform(r.tp, TG_F32, 2, (int64_t[]){4, 6}, 0, 1, 1);
    tg_tensor y = tg_tensor_from(r.tp, TG_I64, 1, (int64_t[]){4}, (int64_t[]){0, 1, 2, 0});
    assert_status(tg_dist_backward(with_state, mlp_loss(r.tp, &r.m, x, y)), TG_OK);
    assert_true(params_identical(8, whole));
    tg_dist_free(with_state);
    tg_dist_stats zero = tg_dist_get_stats(NULL);
    assert_int_equal(zero.buckets, 0);
    assert_int_equal(zero.steps, 0);
    rig_free(&r);

    /* A communicator of the user's, ranks reversed: its rank 0 (world rank 1) broadcasts. */
    MPI_Comm reversed;
    MPI_Comm_split(MPI_COMM_WORLD, 0, nranks - 1 - rank, &reversed);
    rig_new(&r, TG_F64, small_dims, (uint64_t)rank, NULL);
    assert_status(tg_dist_new(r.ctx, 6, r.m.p, &(tg_dist_options){.comm = reversed}, &r.dist),
                  TG_OK);
    assert_int_equal(tg_dist_rank(r.dist), nranks - 1 - rank);
    rig other;
    rig_new(&other, TG_F64, small_dims, (uint64_t)nranks - 1, NULL); /* world rank 1's values */
    for (int i = 0; i < 6; i++)
        assert_memory_equal(tg_param_data(r.m.p[i]), tg_param_data(other.m.p[i]),
                            param_bytes(r.m.p[i]));
    rig_free(&other);
    rig_free(&r);
    MPI_Comm_free(&reversed);
    assert_true(tg_dist_comm(NULL) == MPI_COMM_NULL);
    assert_int_equal(tg_dist_rank(NULL), -1);
    assert_int_equal(tg_dist_size(NULL), 0);
    tg_dist_free(NULL);
}

/* Lists that differ between ranks, or a bad argument on one rank: every rank fails, and no rank
 * received anything. */
static void bad_setups_fail_everywhere(void **state)
{
    (void)state;
    rig r;
    rig_new(&r, TG_F32, small_dims, (uint64_t)rank, NULL);
    snapshot s;
    snap(&s, 6, r.m.p);
    tg_dist *d = (tg_dist *)1;
    /* Rank 1 lists five parameters. */
    assert_status(tg_dist_new(r.ctx, rank ? 5 : 6, r.m.p, NULL, &d), TG_SHAPE);
    assert_null(d);
    assert_contains(tg_ctx_error(r.ctx), "different numbers of parameters");
    /* Rank 1 lists them in another order: fc1.weight against fc1.bias. */
    tg_param *swapped[6] = {r.m.p[1], r.m.p[0], r.m.p[2], r.m.p[3], r.m.p[4], r.m.p[5]};
    assert_status(tg_dist_new(r.ctx, 6, rank ? swapped : r.m.p, NULL, &d), TG_SHAPE);
    assert_contains(tg_ctx_error(r.ctx), "parameter 0 differs between ranks");
    /* Rank 1 passes no output pointer: its own TG_INVALID, TG_PEER on rank 0. */
    assert_status(tg_dist_new(r.ctx, 6, r.m.p, NULL, rank ? NULL : &d),
                  rank ? TG_INVALID : TG_PEER);
    assert_contains(tg_ctx_error(r.ctx), rank ? "out is NULL" : "rank 1 of 2 failed");
    /* Rank 1 repeats a parameter. */
    tg_param *twice[6] = {r.m.p[0], r.m.p[1], r.m.p[2], r.m.p[3], r.m.p[4], r.m.p[4]};
    assert_status(tg_dist_new(r.ctx, 6, rank ? twice : r.m.p, NULL, &d),
                  rank ? TG_INVALID : TG_PEER);
    assert_contains(tg_ctx_error(r.ctx), "'fc3.weight' is in the list twice");
    /* A parameter of another context. */
    tg_ctx *ctx2;
    tg_param *foreign;
    assert_status(tg_ctx_new(&ctx2, NULL), TG_OK);
    assert_status(tg_param_new(ctx2, "x", TG_F32, 0, NULL, &foreign), TG_OK);
    tg_param *mixed[6] = {r.m.p[0], r.m.p[1], r.m.p[2], r.m.p[3], r.m.p[4], foreign};
    assert_status(tg_dist_new(r.ctx, 6, rank ? mixed : r.m.p, NULL, &d),
                  rank ? TG_INVALID : TG_PEER);
    assert_contains(tg_ctx_error(r.ctx), "of another context");
    /* No context at all on rank 1. */
    assert_status(tg_dist_new(rank ? NULL : r.ctx, 6, r.m.p, NULL, &d),
                  rank ? TG_INVALID : TG_PEER);
    tg_ctx_free(ctx2);
    assert_unchanged(&s, r.m.p);
    rig_free(&r);
}

/* ---- gradient averaging --------------------------------------------------------------------- */

/* loss = sum(w * c) with c = rank + 1 elementwise, for parameters of both dtypes: d loss / dw =
 * rank + 1, averaged (1 + 2) / 2 = 1.5; with a gradient g0 already there, (g0 + g0 + 3) / 2. */
static void averages_in_buckets_and_chunks(void **state)
{
    (void)state;
    tg_ctx *ctx;
    tg_tape *tp;
    assert_status(tg_ctx_new(&ctx, NULL), TG_OK);
    assert_status(tg_tape_new(ctx, &tp), TG_OK);
    tg_param *p[5];
    const tg_dtype dts[5] = {TG_F32, TG_F32, TG_F64, TG_F32, TG_F64};
    const int64_t lens[5] = {10, 1, 7, 40, 3};
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof name, "p%d", i);
        assert_status(tg_param_new(ctx, name, dts[i], 1, &lens[i], &p[i]), TG_OK);
    }
    for (int setting = 0; setting < 3; setting++) {
        /* 1: small buckets; 2: the same with at most 7 elements per MPI call. */
        tg_dist_options o = {.bucket_bytes = setting ? 48 : 0};
        tg_dist *d;
        assert_status(tg__dist_new(ctx, 5, p, &o, setting == 2 ? 7 : TG__DIST_MAX_COUNT, &d),
                      TG_OK);
        for (int i = 0; i < 5; i++) {
            tg_param_zero_grad(p[i]);
            if (i == 3) /* an accumulated gradient from an earlier (micro-batch) backward */
                for (int64_t k = 0; k < lens[i]; k++)
                    ((float *)tg_param_grad(p[i]))[k] = (float)(k + 10 * rank);
        }
        tg_tape_reset(tp);
        tg_tensor loss = tg_zeros(tp, TG_F64, 0, NULL);
        for (int i = 0; i < 5; i++) {
            tg_tensor w = tg_param_tensor(tp, p[i]);
            tg_tensor term = tg_sum_all(tg_mul_scalar(w, rank + 1));
            if (dts[i] == TG_F32) /* into the f64 sum through a scalar */
                term = tg_s_tensor(tg_s_from(term));
            loss = tg_add(loss, term);
        }
        assert_status(tg_dist_backward(d, loss), TG_OK);
        for (int i = 0; i < 5; i++) {
            const void *g = tg_param_grad(p[i]);
            for (int64_t k = 0; k < lens[i]; k++) {
                double expected = i == 3 ? (2.0 * k + 10 + 3) / 2 : 1.5;
                assert_close(value_at(p[i], g, k), expected, 0);
            }
        }
        tg_dist_stats s = tg_dist_get_stats(d);
        assert_int_equal(s.steps, 1);
        assert_int_equal(s.skipped, 0);
        assert_int_equal(s.buckets, 4); /* p4 | p3 | p2 | p1 p0: a bucket holds one dtype */
        /* tg_dist_sync_grads on these averages: averaging equal values changes nothing. */
        assert_status(tg_dist_sync_grads(d, tp), TG_OK);
        for (int k = 0; k < 10; k++)
            assert_close(((const float *)tg_param_grad(p[0]))[k], 1.5, 0);
        assert_int_equal(tg_dist_get_stats(d).steps, 2);
        tg_dist_free(d);
    }
    tg_tape_free(tp);
    tg_ctx_free(ctx);
}

/* probe: the identity; its backward records how many buckets the handle had started then. */
typedef struct probe_attr {
    const tg_dist *d;
    size_t *started;
} probe_attr;

static tg_status probe_check(tg_check *c)
{
    *c->out = *c->in[0];
    c->alias = 0;
    return TG_OK;
}

static void probe_backward(const tg_backward_io *io)
{
    const probe_attr *a = io->attr;
    *a->started = tg_dist_get_stats(a->d).started_in_backward;
    io->grad_inputs[0] = io->grad_output;
}

static const tg_op_def probe_def = {.name = "probe",
                                    .ninputs = 1,
                                    .attr_size = sizeof(probe_attr),
                                    .check = probe_check,
                                    .backward = probe_backward};

/* With small buckets, fc3's and fc2's buckets start before backward reaches fc1; with
 * after_backward none does. */
static void buckets_start_during_backward(void **state)
{
    (void)state;
    for (int after = 0; after < 2; after++) {
        rig r;
        rig_new(&r, TG_F32, small_dims, 0,
                &(tg_dist_options){.bucket_bytes = 64, .after_backward = after});
        const tg_op *probe;
        assert_status(tg_op_register(r.ctx, &probe_def, &probe), TG_OK);
        size_t started = 99;
        probe_attr attr = {r.dist, &started};
        tg_tensor x = tg_uniform(r.tp, TG_F32, 2, (int64_t[]){4, 6}, 0, 1, 3);
        tg_tensor w1 = tg_param_tensor(r.tp, r.m.p[0]), b1 = tg_param_tensor(r.tp, r.m.p[1]);
        tg_tensor h = tg_relu(tg_add(tg_matmul_t(x, w1, false, true), b1));
        h = tg_op_apply(probe, 1, &h, &attr); /* between fc1 and fc2 */
        for (int l = 1; l < 3; l++) {
            tg_tensor w = tg_param_tensor(r.tp, r.m.p[2 * l]);
            tg_tensor b = tg_param_tensor(r.tp, r.m.p[2 * l + 1]);
            h = tg_add(tg_matmul_t(h, w, false, true), b);
        }
        assert_status(tg_dist_backward(r.dist, tg_sum_all(h)), TG_OK);
        /* Buckets: {fc3.bias, fc3.weight}, {fc2.bias}, {fc2.weight}, {fc1.bias}, {fc1.weight}. */
        assert_int_equal(started, after ? 0 : 3);
        assert_int_equal(tg_dist_get_stats(r.dist).started_in_backward, after ? 0 : 5);
        rig_free(&r);
    }
}

/* ---- one rank fails, every rank skips ------------------------------------------------------- */

/* An allocator that refuses everything once armed. */
typedef struct refusing {
    bool armed;
    long refused;
} refusing;

static void *refusing_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    refusing *r = user;
    (void)old_size;
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    if (r->armed) {
        r->refused++;
        return NULL;
    }
    return realloc(ptr, new_size);
}

enum { BAD_INPUT, NAN_LOSS, NO_MEMORY, FAILURES };

static void failure_on_rank_one_is_every_ranks(void **state)
{
    (void)state;
    static const char *const expected[FAILURES] = {"matmul", "the loss is nan on rank 1",
                                                   "out of memory"};
    static const tg_status own[FAILURES] = {TG_SHAPE, TG_RANGE, TG_NOMEM};
    for (int kind = 0; kind < FAILURES; kind++) {
        refusing alloc = {0};
        rig r = {0};
        tg_ctx_options co = {.alloc = refusing_alloc, .alloc_user = &alloc};
        assert_status(tg_ctx_new(&r.ctx, &co), TG_OK);
        assert_status(tg_tape_new(r.ctx, &r.tp), TG_OK);
        mlp_new(r.ctx, TG_F32, small_dims, 0, &r.m);
        tg_adam_options ao = TG_ADAM_DEFAULTS;
        assert_status(tg_adam_new(r.ctx, 6, r.m.p, &ao, &r.opt), TG_OK);
        assert_status(tg_dist_new(r.ctx, 6, r.m.p, &(tg_dist_options){.bucket_bytes = 64}, &r.dist),
                      TG_OK);
        tg_dataset *data = synthetic(r.ctx, 64, 6, 3, 1);
        tg_batches *b;
        assert_status(tg_dist_batches_new(r.dist, data, 8, true, 5, false, &b), TG_OK);
        tg_batches_start(b, 0);
        assert_status(train_step(&r, b), TG_OK);       /* a good step first: Adam has state */
        ((float *)tg_param_grad(r.m.p[3]))[0] = 0.25f; /* a gradient there before the step */
        snapshot before;
        snap(&before, 6, r.m.p);

        /* The failing step, by hand so that each kind can be injected on rank 1; a fresh tape,
         * so that the step must allocate. */
        tg_tape_free(r.tp);
        assert_status(tg_tape_new(r.ctx, &r.tp), TG_OK);
        alloc.armed = kind == NO_MEMORY && rank == 1;
        tg_tensor x = {0}, y = {0};
        assert_true(tg_batches_next(b, r.tp, &x, &y) || alloc.armed);
        if (kind == BAD_INPUT && rank == 1)
            x = tg_reshape(x, 2, (int64_t[]){4, 12}); /* 12 features where fc1 takes 6 */
        if (kind == NAN_LOSS && rank == 1)
            x = tg_mul_scalar(x, NAN);
        tg_tensor loss = mlp_loss(r.tp, &r.m, x, y);
        tg_status st = tg_dist_backward(r.dist, loss);
        alloc.armed = false;
        assert_status(st, rank ? own[kind] : TG_PEER);
        if (rank == 0) {
            assert_contains(tg_tape_error(r.tp), "rank 1 of 2 failed this step");
            assert_contains(tg_tape_error(r.tp), tg_status_name(own[kind]));
        }
        assert_contains(tg_tape_error(r.tp), expected[kind]);
        assert_true(kind != NO_MEMORY || rank == 0 || alloc.refused > 0);
        /* The optimiser sees the tape in error and changes nothing, on either rank. */
        int64_t steps = tg_optim_steps(r.opt);
        assert_int_not_equal(tg_optim_step(r.opt, r.tp), TG_OK);
        assert_int_equal(tg_optim_steps(r.opt), steps);
        assert_unchanged(&before, r.m.p);
        tg_dist_stats stats = tg_dist_get_stats(r.dist);
        assert_int_equal(stats.steps, 2);
        assert_int_equal(stats.skipped, 1);
        assert_true(params_identical(6, r.m.p));
        assert_status(tg_dist_check_identical(r.dist, 6, r.m.p, r.opt), TG_OK);

        /* The next step goes on as usual, everywhere. */
        tg_optim_zero_grad(r.opt);
        assert_status(train_step(&r, b), TG_OK);
        assert_int_equal(tg_optim_steps(r.opt), 2);
        assert_true(params_identical(6, r.m.p));
        tg_batches_free(b);
        tg_dataset_free(data);
        rig_free(&r);
    }
}

/* ---- the same step on 2 ranks as on one ---------------------------------------------------- */

typedef struct difference {
    double worst;   /* largest |a - b| / max |b| within a parameter, over the parameters */
    double l2;      /* ||a - b|| / ||b|| over all the model's values */
    int64_t equal;  /* values equal bit for bit */
    int64_t beyond; /* values differing by more than 1e-6 of their parameter's largest */
    int64_t total;
} difference;

static difference compare(const mlp *a, const mlp *b)
{
    difference r = {0};
    double diff2 = 0, norm2 = 0;
    for (int i = 0; i < 6; i++) {
        const void *x = tg_param_data(a->p[i]), *y = tg_param_data(b->p[i]);
        int64_t n = tg_param_numel(a->p[i]);
        double diff = 0, scale = 0;
        for (int64_t k = 0; k < n; k++)
            scale = fmax(scale, fabs(value_at(b->p[i], y, k)));
        for (int64_t k = 0; k < n; k++) {
            double u = value_at(a->p[i], x, k), v = value_at(b->p[i], y, k);
            diff = fmax(diff, fabs(u - v));
            diff2 += (u - v) * (u - v);
            norm2 += v * v;
            r.equal += u == v;
            r.beyond += fabs(u - v) > 1e-6 * scale;
        }
        r.total += n;
        r.worst = fmax(r.worst, diff / scale);
    }
    r.l2 = sqrt(diff2 / norm2);
    return r;
}

enum { BATCH = 32, STEPS = 10 };

typedef enum reference {
    WIDE_BATCH, /* one process, batches of 2 * BATCH over the same samples */
    ACCUMULATED /* one process, the two ranks' batches as micro-batches of loss / 2 each */
} reference;

/* One process's step against the 2-rank one: the two shards' batches, either as one batch of
 * twice the size (drawn from `wide`), or accumulated. */
static tg_status reference_step(rig *r, reference kind, tg_batches *wide, tg_batches *const *shards)
{
    if (kind == WIDE_BATCH)
        return train_step(r, wide);
    tg_status st = TG_OK;
    for (int k = 0; k < 2 && !st; k++) {
        tg_tensor x, y;
        tg_tape_reset(r->tp);
        assert_true(tg_batches_next(shards[k], r->tp, &x, &y));
        st = tg_backward(tg_mul_scalar(mlp_loss(r->tp, &r->m, x, y), 0.5));
    }
    if (!st)
        st = tg_optim_step(r->opt, r->tp);
    tg_optim_zero_grad(r->opt);
    return st;
}

/* tg-train's MLP for 10 steps of Adam (or SGD) on 2 ranks with batches of BATCH, and in this
 * process alone over the same samples. */
static difference train_both(tg_dtype dt, bool sgd, reference kind, size_t bucket_bytes)
{
    rig dp, one;
    /* Each rank starts from other values: the broadcast makes them rank 0's. */
    rig_new(&dp, dt, sizes, (uint64_t)rank * 1000,
            &(tg_dist_options){.bucket_bytes = bucket_bytes});
    rig_new(&one, dt, sizes, 0, NULL);
    if (sgd) {
        tg_optim_free(dp.opt);
        tg_optim_free(one.opt);
        tg_sgd_options so = {.lr = 0.1};
        assert_status(tg_sgd_new(dp.ctx, 6, dp.m.p, &so, &dp.opt), TG_OK);
        assert_status(tg_sgd_new(one.ctx, 6, one.m.p, &so, &one.opt), TG_OK);
    }
    tg_dataset *data = synthetic(dp.ctx, BATCH * 2 * STEPS, 784, 10, 7);
    tg_batches *shard, *wide, *shards[2];
    assert_status(tg_dist_batches_new(dp.dist, data, BATCH, true, 11, false, &shard), TG_OK);
    assert_status(tg_batches_new(data, 2 * BATCH, true, 11, false, &wide), TG_OK);
    for (int k = 0; k < 2; k++)
        assert_status(tg_batches_new_shard(data, BATCH, true, 11, false, k, 2, &shards[k]), TG_OK);
    tg_batches_start(shard, 0);
    tg_batches_start(wide, 0);
    tg_batches_start(shards[0], 0);
    tg_batches_start(shards[1], 0);
    for (int s = 0; s < STEPS; s++) {
        assert_status(train_step(&dp, shard), TG_OK);
        assert_status(reference_step(&one, kind, wide, shards), TG_OK);
    }
    difference d = compare(&dp.m, &one.m);
    assert_true(params_identical(6, dp.m.p));
    assert_status(tg_dist_check_identical(dp.dist, 6, dp.m.p, dp.opt), TG_OK);
    assert_true(tg_dist_get_stats(dp.dist).started_in_backward > 0 || bucket_bytes == 0);
    if (rank == 0)
        printf("  %s %s, buckets of %s (%zu): against one process %s: largest difference %.3g "
               "of its parameter's largest value, %.3g over the model (L2); %lld of %lld values "
               "equal bit for bit, %lld beyond 1e-6\n",
               tg_dtype_name(dt), sgd ? "SGD" : "Adam", bucket_bytes ? "64 KiB" : "25 MiB",
               tg_dist_get_stats(dp.dist).buckets,
               kind == WIDE_BATCH ? "with batches of 64" : "accumulating the 2 batches", d.worst,
               d.l2, (long long)d.equal, (long long)d.total, (long long)d.beyond);
    for (int k = 0; k < 2; k++)
        tg_batches_free(shards[k]);
    tg_batches_free(shard);
    tg_batches_free(wide);
    tg_dataset_free(data);
    rig_free(&one);
    rig_free(&dp);
    return d;
}

/* 2 ranks with batches of 32 against one process with batches of 64 over the same samples:
 * within 1e-12 in f64. In f32, Adam divides each gradient element by its own running size, so
 * an element whose batch gradient nearly cancels moves by a fraction of lr that depends on the
 * last bits of the batch sum: a few values (under 0.1 %) move apart by more than 1e-6 while SGD
 * stays within 1e-6. Against one process that accumulates the two ranks' batches (loss / 2
 * each), the same step bit for bit: 2 ranks sum a + b in one order everywhere. */
static void equivalent_to_one_process(void **state)
{
    (void)state;
    if (rank == 0)
        printf("10 steps of tg-train's MLP on 2 ranks x batch %d:\n", BATCH);
    for (size_t bucket = 0; bucket <= 64 << 10; bucket += 64 << 10) {
        difference d = train_both(TG_F64, false, WIDE_BATCH, bucket);
        assert_true(d.worst <= 1e-12);
        d = train_both(TG_F32, false, WIDE_BATCH, bucket);
        assert_true(d.beyond * 1000 < d.total);
        d = train_both(TG_F32, true, WIDE_BATCH, bucket);
        assert_true(d.worst <= 1e-6);
        for (int t = 0; t < 2; t++) {
            d = train_both(t ? TG_F64 : TG_F32, false, ACCUMULATED, bucket);
            assert_int_equal(d.equal, d.total);
        }
    }
}

/* ---- data, checkpoints, metrics ------------------------------------------------------------ */

/* n samples whose label is their index. */
static tg_dataset *indexed(tg_ctx *ctx, int64_t n)
{
    float *x = calloc((size_t)n, sizeof *x);
    int64_t *y = malloc((size_t)n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (int64_t i = 0; i < n; i++)
        y[i] = i;
    tg_dataset *d;
    assert_status(tg_dataset_new(ctx, n, 1, (int64_t[]){1}, x, y, &d), TG_OK);
    free(x);
    free(y);
    return d;
}

/* Each rank serves a disjoint half of every epoch's order, the same number of batches each; the
 * ranks must pass the same seed and batch size. */
static void shards_split_every_epoch(void **state)
{
    (void)state;
    enum { N = 101, BS = 7 };
    tg_ctx *ctx;
    tg_tape *tp;
    tg_dist *d;
    assert_status(tg_ctx_new(&ctx, NULL), TG_OK);
    assert_status(tg_tape_new(ctx, &tp), TG_OK);
    assert_status(tg_dist_new(ctx, 0, NULL, NULL, &d), TG_OK); /* no parameters: data only */
    tg_dataset *data = indexed(ctx, N);
    tg_batches *b, *whole;
    assert_status(tg_dist_batches_new(d, data, BS, true, 3, false, &b), TG_OK);
    assert_status(tg_batches_new(data, N, true, 3, false, &whole), TG_OK);
    for (int64_t epoch = 0; epoch < 3; epoch++) {
        assert_int_equal(tg_batches_start(b, epoch), 8); /* 50 samples each: 7 of 7, one of 1 */
        int64_t mine[N / 2], all[2][N / 2], order[N], got = 0;
        tg_tensor x, y;
        while (tg_batches_next(b, tp, &x, &y)) {
            const int64_t *labels = tg_data(y);
            for (int64_t i = 0; i < tg_dim(y, 0); i++)
                mine[got++] = labels[i];
            tg_tape_reset(tp);
        }
        assert_int_equal(got, N / 2);
        MPI_Allgather(mine, N / 2, MPI_INT64_T, all, N / 2, MPI_INT64_T, MPI_COMM_WORLD);
        tg_batches_start(whole, epoch);
        assert_true(tg_batches_next(whole, tp, &x, &y));
        memcpy(order, tg_data(y), sizeof order);
        tg_tape_reset(tp);
        /* Rank r's i-th sample is the epoch's sample 2i + r: disjoint, one left out (101 is
         * odd), a new order each epoch. */
        for (int64_t i = 0; i < N / 2; i++)
            for (int r = 0; r < 2; r++)
                assert_int_equal(all[r][i], order[2 * i + r]);
    }
    tg_batches_free(whole);
    tg_batches_free(b);
    /* Different seeds, or batch sizes: refused everywhere. */
    assert_status(tg_dist_batches_new(d, data, BS, true, 3 + (uint64_t)rank, false, &b),
                  TG_INVALID);
    assert_null(b);
    assert_contains(tg_ctx_error(ctx), "the ranks passed different seeds");
    assert_status(tg_dist_batches_new(d, data, BS + rank, true, 3, false, &b), TG_INVALID);
    assert_contains(tg_ctx_error(ctx), "different batch sizes");
    /* No data on rank 1. */
    assert_status(tg_dist_batches_new(d, rank ? NULL : data, BS, true, 3, false, &b),
                  rank ? TG_INVALID : TG_PEER);
    tg_dataset_free(data);
    tg_dist_free(d);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
}

/* A directory rank 0 makes, named on every rank. */
static void shared_directory(char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/tg_dist_XXXXXX");
    if (rank == 0)
        assert_non_null(mkdtemp(dir));
    MPI_Bcast(dir, (int)size, MPI_CHAR, 0, MPI_COMM_WORLD);
}

static void values_of(const mlp *m, float *out)
{
    for (int i = 0; i < 6; i++) {
        memcpy(out, tg_param_data(m->p[i]), param_bytes(m->p[i]));
        out += tg_param_numel(m->p[i]);
    }
}

/* Rank 0 writes, every rank loads and they compare; a rank that cannot load, or loads other
 * values, fails every rank and everyone ends with rank 0's values. */
static void checkpoints(void **state)
{
    (void)state;
    enum { VALUES = 30 + 5 + 20 + 4 + 12 + 3 };
    rig r;
    rig_new(&r, TG_F32, small_dims, 0, &(tg_dist_options){0});
    tg_dataset *data = synthetic(r.ctx, 64, 6, 3, 2);
    tg_batches *b;
    assert_status(tg_dist_batches_new(r.dist, data, 4, true, 1, false, &b), TG_OK);
    tg_batches_start(b, 0);
    assert_status(train_step(&r, b), TG_OK);
    char dir[64], path[128], other[128], nowhere[128];
    shared_directory(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    snprintf(other, sizeof other, "%s/other.safetensors", dir);
    snprintf(nowhere, sizeof nowhere, "%s/missing/ck.safetensors", dir);
    float saved[VALUES], now[VALUES];

    /* Only rank 0 writes: rank 1's path could not be written. */
    assert_status(tg_dist_checkpoint_save(r.dist, rank ? nowhere : path, 6, r.m.p, r.opt), TG_OK);
    assert_int_equal(access(path, R_OK), 0);
    values_of(&r.m, saved);
    assert_status(train_step(&r, b), TG_OK);
    assert_status(tg_dist_checkpoint_save(r.dist, other, 6, r.m.p, r.opt), TG_OK);
    assert_status(train_step(&r, b), TG_OK);
    assert_status(tg_dist_checkpoint_load(r.dist, path, 6, r.m.p, r.opt), TG_OK);
    values_of(&r.m, now);
    assert_memory_equal(now, saved, sizeof now);
    assert_int_equal(tg_optim_steps(r.opt), 1);

    /* Rank 1 cannot read its file: every rank fails and holds rank 0's (loaded) values. */
    assert_status(train_step(&r, b), TG_OK);
    assert_status(tg_dist_checkpoint_load(r.dist, rank ? nowhere : path, 6, r.m.p, r.opt),
                  rank ? TG_IO : TG_PEER);
    assert_contains(tg_ctx_error(r.ctx), "every rank holds rank 0's values now");
    if (rank == 0)
        assert_contains(tg_ctx_error(r.ctx), "rank 1 of 2 failed (TG_IO)");
    values_of(&r.m, now);
    assert_memory_equal(now, saved, sizeof now);
    assert_true(params_identical(6, r.m.p));
    assert_status(tg_dist_check_identical(r.dist, 6, r.m.p, r.opt), TG_OK);

    /* The ranks read different files: both fail, and take rank 0's. */
    assert_status(tg_dist_checkpoint_load(r.dist, rank ? other : path, 6, r.m.p, r.opt), TG_PEER);
    assert_contains(tg_ctx_error(r.ctx), "comparing the loaded values");
    assert_contains(tg_ctx_error(r.ctx), "parameter 'fc1.weight' differs");
    values_of(&r.m, now);
    assert_memory_equal(now, saved, sizeof now);

    /* Rank 0 cannot write: its error, quoted to rank 1. */
    assert_status(tg_dist_checkpoint_save(r.dist, nowhere, 6, r.m.p, r.opt),
                  rank ? TG_PEER : TG_IO);
    if (rank == 1)
        assert_contains(tg_ctx_error(r.ctx), "rank 0 of 2 failed (TG_IO)");

    /* The comparison names what differs: a value, then the step count. */
    if (rank == 1)
        ((float *)tg_param_write(r.m.p[2]))[3] += 1;
    assert_status(tg_dist_check_identical(r.dist, 6, r.m.p, r.opt), TG_PEER);
    assert_contains(tg_ctx_error(r.ctx), "parameter 'fc2.weight' differs between the 2 ranks");
    assert_status(tg_dist_check_identical(r.dist, 2, r.m.p, NULL), TG_OK); /* fc1 alone */
    assert_status(tg_dist_broadcast(r.dist, 6, r.m.p), TG_OK);
    assert_status(tg_dist_check_identical(r.dist, 6, r.m.p, NULL), TG_OK);
    void *state0;
    const char *name;
    assert_status(tg_optim_state_info(r.opt, 1, &name, NULL, &state0), TG_OK);
    ((float *)state0)[0] += (float)rank;
    assert_status(tg_dist_check_identical(r.dist, 6, r.m.p, r.opt), TG_PEER);
    assert_contains(tg_ctx_error(r.ctx), "optimiser state 'fc1.weight.exp_avg_sq' differs");
    ((float *)state0)[0] -= (float)rank;
    tg_optim_set_steps(r.opt, 5 + rank);
    assert_status(tg_dist_check_identical(r.dist, 6, r.m.p, r.opt), TG_PEER);
    assert_contains(tg_ctx_error(r.ctx), "the optimiser's step count differs");

    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        remove(path);
        remove(other);
        rmdir(dir);
    }
    tg_batches_free(b);
    tg_dataset_free(data);
    rig_free(&r);
}

static void mean_of_metrics(void **state)
{
    (void)state;
    rig r;
    rig_new(&r, TG_F32, small_dims, 0, &(tg_dist_options){0});
    double v[2] = {rank, 10.0 * rank + 1};
    assert_status(tg_dist_mean(r.dist, 2, v), TG_OK);
    assert_close(v[0], 0.5, 0);
    assert_close(v[1], 6, 0);
    assert_status(tg_dist_mean(r.dist, 2, rank ? NULL : v), rank ? TG_INVALID : TG_PEER);
    assert_status(tg_dist_mean(r.dist, 1 + (size_t)rank, v), TG_INVALID);
    assert_contains(tg_ctx_error(r.ctx), "different counts");
    assert_status(tg_dist_mean(r.dist, 0, NULL), TG_OK);
    rig_free(&r);
}

/* ---- the errored-tape sweep and the out-of-memory sweep, across ranks ----------------------- */

/* Every function of dist.h that takes a tape or tensors, on an errored tape (both ranks): the
 * tape's first error comes back and nothing changes. */
static void every_function_on_errored_tape(void **state)
{
    (void)state;
    rig r;
    rig_new(&r, TG_F32, small_dims, 0, &(tg_dist_options){.bucket_bytes = 64});
    snapshot s;
    snap(&s, 6, r.m.p);
    tg_tensor loss = tg_sum_all(tg_param_tensor(r.tp, r.m.p[0]));
    tg_tape_fail(r.tp, TG_SHAPE, "first error");
    assert_status(tg_dist_backward(r.dist, loss), TG_SHAPE);
    assert_status(tg_dist_backward(r.dist, tg_error(r.tp)), TG_SHAPE);
    assert_status(tg_dist_sync_grads(r.dist, r.tp), TG_SHAPE);
    assert_string_equal(tg_tape_error(r.tp), "first error");
    assert_unchanged(&s, r.m.p);
    assert_int_equal(tg_dist_get_stats(r.dist).skipped, 3);
    /* A none loss or NULL tape fails this rank with TG_INVALID (on its context). */
    assert_status(tg_dist_backward(r.dist, (tg_tensor){0}), TG_INVALID);
    assert_contains(tg_ctx_error(r.ctx), "the loss is none");
    assert_status(tg_dist_sync_grads(r.dist, NULL), TG_INVALID);
    assert_status(tg_dist_backward(NULL, loss), TG_SHAPE); /* the tape's error stays first */
    assert_status(tg_dist_sync_grads(NULL, NULL), TG_INVALID);
    tg_tape_reset(r.tp);
    assert_status(tg_dist_backward(r.dist, tg_sum_all(tg_param_tensor(r.tp, r.m.p[0]))), TG_OK);
    rig_free(&r);
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, fp) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = '\0';
    fclose(fp);
    return s;
}

/* Every function dist.h declares with a tape or tensor argument is called in the sweep above. */
static void sweep_covers_the_header(void **state)
{
    (void)state;
    char *header = slurp(TG_SOURCE_DIR "/include/tapegrad/dist.h");
    char *self = slurp(TG_SOURCE_DIR "/tests/test_dist.c");
    assert_non_null(header);
    assert_non_null(self);
    const char *sweep = strstr(self, "static void every_function_on_errored_tape");
    assert_non_null(sweep);
    int checked = 0, missing = 0;
    for (char *line = header; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : 0) {
        if (strncmp(line, "tg_status tg_", 13) && strncmp(line, "bool tg_", 8))
            continue;
        char name[64], call[80];
        if (sscanf(line + (line[0] == 'b' ? 5 : 10), "%63[a-z0-9_]", name) != 1)
            continue;
        const char *paren = strchr(line, '('), *end = strchr(line, ';');
        if (!paren || !end || end < paren)
            continue;
        char args[512];
        snprintf(args, sizeof args, "%.*s", (int)(end - paren), paren);
        if (!strstr(args, "tg_tape *") && !strstr(args, "tg_tensor"))
            continue;
        checked++;
        snprintf(call, sizeof call, "%s(", name);
        if (!strstr(sweep, call)) {
            printf("not covered by the errored-tape sweep: %s\n", name);
            missing++;
        }
    }
    free(header);
    free(self);
    assert_int_equal(checked, 2);
    assert_int_equal(missing, 0);
}

typedef struct counting {
    long calls, fail_at, live;
    size_t bytes;
    int failures;
} counting;

static void *counting_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    counting *c = user;
    if (new_size == 0) {
        if (ptr) {
            c->live--;
            c->bytes -= old_size;
            free(ptr);
        }
        return NULL;
    }
    if (c->calls++ == c->fail_at) {
        c->failures++;
        return NULL;
    }
    void *p = realloc(ptr, new_size);
    if (p) {
        if (!ptr)
            c->live++;
        c->bytes += new_size - (ptr ? old_size : 0);
    }
    return p;
}

static tg_status first(tg_status st, tg_status next) { return st ? st : next; }

/* A small data-parallel program, every allocation through `c`: setup, the handle, a shard, two
 * steps, a checkpoint saved and loaded, a comparison and a mean. Like a real program it goes on
 * calling the collectives after a failure of its own, so that the other rank hears of it.
 * Returns the first failure. */
static tg_status oom_scenario(counting *c, const char *path)
{
    tg_ctx *ctx = NULL;
    tg_tape *tp = NULL;
    tg_optim *opt = NULL;
    tg_dataset *data = NULL;
    tg_batches *b = NULL;
    tg_dist *d = NULL;
    mlp m = {.dtype = TG_F32};
    tg_ctx_options co = {.alloc = counting_alloc, .alloc_user = c};
    tg_status st = tg_ctx_new(&ctx, &co);
    static const char *const names[6] = {"w1", "b1", "w2", "b2", "w3", "b3"};
    for (int i = 0; i < 6 && !st; i++) {
        int64_t shape[2] = {small_dims[i / 2 + 1], small_dims[i / 2]};
        st = tg_param_new(ctx, names[i], TG_F32, i % 2 ? 1 : 2, shape, &m.p[i]);
        if (!st)
            st = tg_param_uniform(m.p[i], -0.5, 0.5, (uint64_t)i + 1);
    }
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    st = first(st, st ? st : tg_tape_new(ctx, &tp));
    st = first(st, st ? st : tg_adam_new(ctx, 6, m.p, &ao, &opt));
    float x[16 * 6];
    int64_t y[16];
    for (int i = 0; i < 16 * 6; i++)
        x[i] = (float)(i % 7) / 7;
    for (int i = 0; i < 16; i++)
        y[i] = i % 3;
    st = first(st, st ? st : tg_dataset_new(ctx, 16, 1, &small_dims[0], x, y, &data));
    /* The collectives, called whatever happened before (a NULL context: "I failed"). */
    st =
        first(st, tg_dist_new(st ? NULL : ctx, 6, m.p, &(tg_dist_options){.bucket_bytes = 64}, &d));
    if (d) {
        tg_batches *bb = NULL;
        st = first(st, tg_dist_batches_new(d, st ? NULL : data, 4, true, 1, false, &bb));
        b = bb;
        for (int step = 0; step < 2 && b; step++) {
            rig r = {.ctx = ctx, .tp = tp, .m = m, .opt = opt, .dist = d};
            if (step == 0)
                tg_batches_start(b, 0);
            st = first(st, train_step(&r, b));
        }
        if (b) {
            st = first(st, tg_dist_checkpoint_save(d, path, 6, m.p, opt));
            st = first(st, tg_dist_checkpoint_load(d, path, 6, m.p, opt));
            st = first(st, tg_dist_check_identical(d, 6, m.p, opt));
            double v = 1;
            st = first(st, tg_dist_mean(d, 1, &v));
        }
    }
    tg_batches_free(b);
    tg_dist_free(d);
    tg_dataset_free(data);
    tg_optim_free(opt);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return st;
}

/* Every allocation of the scenario fails in turn on one rank: that rank reports TG_NOMEM, the
 * other TG_PEER (or both stop at the same collective), nothing hangs and nothing leaks. */
static void every_allocation_can_fail_on_one_rank(void **state)
{
    (void)state;
    char dir[64], path[128];
    shared_directory(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/oom.safetensors", dir);
    for (int failing = 0; failing < 2; failing++) {
        long n;
        int nomem = 0;
        for (n = 0;; n++) {
            counting c = {0, rank == failing ? n : -1, 0, 0, 0};
            tg_status st = oom_scenario(&c, path);
            if (c.live != 0 || c.bytes != 0)
                fail_msg("rank %d, failing request %ld on rank %d: %ld blocks (%zu bytes) leaked",
                         rank, n, failing, c.live, c.bytes);
            int reached = c.failures > 0;
            MPI_Bcast(&reached, 1, MPI_INT, failing, MPI_COMM_WORLD);
            if (!reached) {
                assert_status(st, TG_OK);
                break;
            }
            if (rank == failing && st != TG_NOMEM)
                fail_msg("failing request %ld gave %s, expected TG_NOMEM", n, tg_status_name(st));
            if (rank != failing && st != TG_PEER)
                fail_msg("request %ld failing on rank %d gave %s here, expected TG_PEER", n,
                         failing, tg_status_name(st));
            nomem++;
        }
        if (rank == 0)
            printf("failing each of rank %d's %ld allocations in turn: each reported on both "
                   "ranks\n",
                   failing, n);
        assert_true(nomem > 50);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        remove(path);
        rmdir(dir);
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (nranks != 2) {
        if (rank == 0)
            fprintf(stderr, "test_dist: run it on 2 ranks: mpirun -np 2 %s\n", argv[0]);
        MPI_Finalize();
        return 1;
    }
    /* A rank stuck in a collective after the other one failed ends here: the run fails. */
    alarm(540);
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handle_and_communicators),
        cmocka_unit_test(bad_setups_fail_everywhere),
        cmocka_unit_test(averages_in_buckets_and_chunks),
        cmocka_unit_test(buckets_start_during_backward),
        cmocka_unit_test(failure_on_rank_one_is_every_ranks),
        cmocka_unit_test(equivalent_to_one_process),
        cmocka_unit_test(shards_split_every_epoch),
        cmocka_unit_test(checkpoints),
        cmocka_unit_test(mean_of_metrics),
        cmocka_unit_test(every_function_on_errored_tape),
        cmocka_unit_test(sweep_covers_the_header),
        cmocka_unit_test(every_allocation_can_fail_on_one_rank),
    };
    char group[32];
    snprintf(group, sizeof group, "dist (rank %d)", rank);
    int failed = cmocka_run_group_tests_name(group, tests, NULL, NULL);
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any ? 1 : 0;
}
