/* dist_bench.c — tg-bench-dist, the `dist` suite: data-parallel training over MPI measured on the
 * ranks it is started on (bench/dist.sh starts 2, one thread each). Rank 0 prints.
 *
 *   mpirun -np 2 tg-bench-dist [--rounds N] [--json] [bandwidth] [training]
 *
 * bandwidth: the bus bandwidth (nccl-tests' definition: size / time * 2 (n - 1) / n) of
 *   tapegrad's bucketed averaging of one parameter of the buffer's size, against a raw
 *   MPI_Allreduce loop on a buffer of the same size, the three alternating round by round:
 *   tg_dist_sync_grads (the bucket's blocking MPI_Allreduce straight from the gradient, the
 *   step's vote beside it, the sum divided by n into the gradient), and tg_dist_backward's path
 *   (MPI_Iallreduce on the bucket, vote, wait, divide), timed from the end of backward.
 * training: tg-train's MLP (batch 128 per rank) and CNN (batch 64 per rank) on synthetic 28x28
 *   images (throughput does not depend on the values), steps of forward, backward, Adam and
 *   zero_grad, timed in four phases per round: rank 0 alone (the others wait asleep), every rank
 *   alone at once (the probe: does the host give each rank a core of its own?), and
 *   data-parallel steps with the allreduces started during backward and after it. From them:
 *   scaling efficiency = throughput(n) / (n throughput(1)) = alone / data-parallel (Horovod's
 *   definition, per-rank batch fixed), what the host allowed = alone / together, and the share
 *   of the allreduce time hidden behind backward = 1 - (communication time, started during it)
 *   / (communication time, started after it): tg_dist_stats.exposed_seconds, the time in MPI
 *   calls during backward and from its end to the averaged gradients, each step's that of the
 *   rank that finished backward last (the others' also hold their wait for it).
 * Figures are medians over the rounds; each timed phase is the slowest rank's time. */
#define _DEFAULT_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tapegrad/dist.h>

static int rank, nranks;

static double now(void) { return MPI_Wtime(); }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median, minimum and maximum of n values (sorted in place). */
typedef struct spread {
    double median, min, max;
} spread;

static spread summarise(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    spread s = {n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]), v[0], v[n - 1]};
    return s;
}

static double median(double *v, int n) { return summarise(v, n).median; }

/* a[r] / b[r] for each round r, summarised: paired within a round, so that drift between rounds
 * on a shared machine cancels. Call before anything sorts a or b. */
static spread ratios(const double *a, const double *b, int n)
{
    double r[64];
    for (int i = 0; i < n; i++)
        r[i] = a[i] / b[i];
    return summarise(r, n);
}

/* The slowest rank's time. */
static double slowest(double t)
{
    double worst;
    MPI_Allreduce(&t, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return worst;
}

/* A barrier that sleeps instead of spinning, so that a rank waiting for a phase it takes no part
 * in leaves its core to the ones that work. */
static void quiet_barrier(void)
{
    MPI_Request r;
    int done = 0;
    MPI_Ibarrier(MPI_COMM_WORLD, &r);
    while (MPI_Test(&r, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done)
        nanosleep(&(struct timespec){0, 200000}, NULL);
}

static void die(const char *what, tg_status st, const char *message)
{
    fprintf(stderr, "tg-bench-dist (rank %d): %s: %s: %s\n", rank, what, tg_status_name(st),
            message);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* ---- bandwidth ------------------------------------------------------------------------------ */

static double bus_bandwidth(size_t bytes, double seconds)
{
    return (double)bytes / seconds * 2.0 * (nranks - 1) / nranks / 1e9;
}

/* The backward path's allreduce of one parameter, seconds per step: tg_dist_backward of
 * sum(w) with the allreduce started after backward, timed from the end of backward to the
 * averaged gradient (tg_dist_stats.exposed_seconds), the slowest rank's. */
static double backward_path(tg_dist *d, tg_tape *tp, tg_param *p, int iters)
{
    double before = tg_dist_get_stats(d).exposed_seconds;
    for (int i = 0; i < iters; i++) {
        tg_tape_reset(tp);
        tg_status st = tg_dist_backward(d, tg_sum_all(tg_param_tensor(tp, p)));
        if (st)
            die("tg_dist_backward", st, tg_tape_error(tp));
    }
    return slowest(tg_dist_get_stats(d).exposed_seconds - before) / iters;
}

static void bandwidth(int rounds, bool json, bool *first_row)
{
    static const size_t sizes[] = {64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20};
    if (rank == 0 && !json)
        printf("bandwidth: bus bandwidth in GB/s (nccl-tests: size / time x 2(n-1)/n), medians "
               "of %d rounds; %% of MPI_Allreduce's: the median of the rounds' ratios (their "
               "range)\n  %-10s %13s %13s %15s %13s %15s\n",
               rounds, "size", "MPI_Allreduce", "sync_grads", "", "backward", "");
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t bytes = sizes[s];
        int64_t count = (int64_t)(bytes / sizeof(float));
        int iters = (int)(256.0 * (1 << 20) / (double)bytes);
        iters = iters < 4 ? 4 : iters > 400 ? 400 : iters;
        tg_ctx *ctx;
        tg_tape *tp;
        tg_param *p;
        tg_dist *d, *after;
        tg_dist_options o = {.bucket_bytes = bytes},
                        oa = {.bucket_bytes = bytes, .after_backward = true};
        tg_status st = tg_ctx_new(&ctx, NULL);
        st = st ? st : tg_tape_new(ctx, &tp);
        st = st ? st : tg_param_new(ctx, "g", TG_F32, 1, &count, &p);
        st = st ? st : tg_dist_new(ctx, 1, &p, &o, &d);
        st = st ? st : tg_dist_new(ctx, 1, &p, &oa, &after);
        if (st)
            die("setting up", st, tg_ctx_error(ctx));
        float *raw = malloc(bytes), *grad = tg_param_grad(p);
        for (int64_t i = 0; i < count; i++)
            raw[i] = grad[i] = (float)(i % 7);
        backward_path(after, tp, p, 1); /* the tape grows to its size once */
        double t_raw[64], t_sync[64], t_back[64];
        for (int r = 0; r < rounds; r++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = now();
            for (int i = 0; i < iters; i++)
                MPI_Allreduce(MPI_IN_PLACE, raw, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            t_raw[r] = slowest(now() - t0) / iters;
            MPI_Barrier(MPI_COMM_WORLD);
            t0 = now();
            for (int i = 0; i < iters && !st; i++)
                st = tg_dist_sync_grads(d, tp);
            if (st)
                die("tg_dist_sync_grads", st, tg_tape_error(tp));
            t_sync[r] = slowest(now() - t0) / iters;
            MPI_Barrier(MPI_COMM_WORLD);
            t_back[r] = backward_path(after, tp, p, iters);
        }
        /* The bandwidths' ratio is the times' inverted; taken before the medians sort them. */
        spread sync = ratios(t_raw, t_sync, rounds), back = ratios(t_raw, t_back, rounds);
        double bw_raw = bus_bandwidth(bytes, median(t_raw, rounds));
        double bw_sync = bus_bandwidth(bytes, median(t_sync, rounds));
        double bw_back = bus_bandwidth(bytes, median(t_back, rounds));
        if (rank == 0 && json) {
            printf("%s    {\"suite\": \"dist\", \"name\": \"bandwidth %zu\", \"bytes\": %zu, "
                   "\"mpi_busbw_gbs\": %.4f, \"sync_busbw_gbs\": %.4f, \"sync_ratio\": %.4f, "
                   "\"backward_busbw_gbs\": %.4f, \"backward_ratio\": %.4f}",
                   *first_row ? "" : ",\n", bytes, bytes, bw_raw, bw_sync, sync.median, bw_back,
                   back.median);
            *first_row = false;
        } else if (rank == 0) {
            printf("  %-10zu %13.3f %13.3f %4.0f%% (%3.0f-%3.0f) %13.3f %4.0f%% (%3.0f-%3.0f)\n",
                   bytes, bw_raw, bw_sync, 100 * sync.median, 100 * sync.min, 100 * sync.max,
                   bw_back, 100 * back.median, 100 * back.min, 100 * back.max);
        }
        fflush(stdout);
        free(raw);
        tg_dist_free(after);
        tg_dist_free(d);
        tg_tape_free(tp);
        tg_ctx_free(ctx);
    }
}

/* ---- training ------------------------------------------------------------------------------- */

/* tg-train's models (examples/tg_train.c), the same on every rank. */
static tg_module *model(tg_ctx *ctx, bool cnn)
{
    tg_module *m[11] = {NULL}, *net = NULL;
    int n = 0;
    tg_status st = TG_OK;
    tg_linear_options lo = {.seed = 1};
    tg_pool2d_params pool = {.kernel = {2, 2}};
    tg_conv2d_options co = {.params = {.padding = {1, 1}}, .seed = 1};
    if (cnn) {
        st = tg_conv2d_new(ctx, "conv1", 1, 32, 3, 3, &co, &m[n++]);
        st = st ? st : tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        st = st ? st : tg_max_pool2d_new(ctx, &pool, &m[n++]);
        co.seed = 2;
        st = st ? st : tg_conv2d_new(ctx, "conv2", 32, 64, 3, 3, &co, &m[n++]);
        st = st ? st : tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        st = st ? st : tg_max_pool2d_new(ctx, &pool, &m[n++]);
    }
    st = st ? st : tg_flatten_new(ctx, &m[n++]);
    int64_t in = cnn ? 64 * 7 * 7 : 784;
    st = st ? st : tg_linear_new(ctx, "fc1", in, cnn ? 128 : 256, &lo, &m[n++]);
    st = st ? st : tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
    lo.seed = 2;
    if (!cnn) {
        st = st ? st : tg_linear_new(ctx, "fc2", 256, 128, &lo, &m[n++]);
        st = st ? st : tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        lo.seed = 3;
    }
    st = st ? st : tg_linear_new(ctx, cnn ? "fc2" : "fc3", 128, 10, &lo, &m[n++]);
    st = st ? st : tg_sequential_new(ctx, cnn ? "cnn" : "mlp", n, m, &net);
    if (st)
        die("building the model", st, tg_ctx_error(ctx));
    return net;
}

/* Random 28x28 images in [0, 1) and labels, 4096 per rank. */
static tg_dataset *images(tg_ctx *ctx)
{
    enum { N = 4096, PIXELS = 28 * 28 };
    float *x = malloc((size_t)N * PIXELS * sizeof *x);
    int64_t *y = malloc(N * sizeof *y);
    uint64_t s = 12345 + (uint64_t)rank;
    for (int64_t i = 0; i < (int64_t)N * PIXELS; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)(s >> 40) / 16777216.0f;
    }
    for (int i = 0; i < N; i++)
        y[i] = i % 10;
    tg_dataset *d;
    tg_status st = tg_dataset_new(ctx, N, 2, (int64_t[]){28, 28}, x, y, &d);
    if (st)
        die("making data", st, tg_ctx_error(ctx));
    free(x);
    free(y);
    return d;
}

typedef struct trainer {
    tg_ctx *ctx;
    tg_tape *tp;
    tg_module *net;
    tg_optim *opt;
    tg_batches *batches;
    bool cnn;
    int64_t epoch;
} trainer;

enum { MAX_STEPS = 64 };

/* `steps` steps, with averaging through d (or none); returns the seconds they took here, and
 * with d each step's communication time in waits[] (tg_dist_stats.exposed_seconds). */
static double run(trainer *t, tg_dist *d, int steps, double *waits)
{
    double t0 = now();
    for (int s = 0; s < steps; s++) {
        double waited = d ? tg_dist_get_stats(d).exposed_seconds : 0;
        tg_tensor x = {0}, y = {0};
        tg_tape_reset(t->tp);
        if (!tg_batches_next(t->batches, t->tp, &x, &y)) {
            tg_batches_start(t->batches, ++t->epoch);
            tg_batches_next(t->batches, t->tp, &x, &y);
        }
        if (t->cnn)
            x = tg_reshape(x, 4, (int64_t[]){tg_dim(x, 0), 1, 28, 28});
        tg_tensor loss = tg_cross_entropy(tg_forward(t->net, x), y, TG_REDUCE_MEAN, 0.0);
        tg_status st = d ? tg_dist_backward(d, loss) : tg_backward(loss);
        if (!st)
            st = tg_optim_step(t->opt, t->tp);
        if (st)
            die("a training step", st, tg_tape_error(t->tp));
        tg_optim_zero_grad(t->opt);
        if (d)
            waits[s] = tg_dist_get_stats(d).exposed_seconds - waited;
    }
    return now() - t0;
}

/* The allreduces' own communication time in the steps: step by step, that of the rank that
 * finished backward last. The others' also hold their wait for it (the ranks' skew), which is
 * not the allreduce's. */
static double allreduce_wait(double *waits, int steps)
{
    MPI_Allreduce(MPI_IN_PLACE, waits, steps, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    double sum = 0;
    for (int s = 0; s < steps; s++)
        sum += waits[s];
    return sum;
}

enum { ALONE, TOGETHER, OVERLAPPED, AFTER, PHASES };

static void training(bool cnn, int rounds, size_t bucket, bool json, bool *first_row)
{
    int64_t batch = cnn ? 64 : 128;
    int steps = cnn ? 4 : 24;
    trainer t = {.cnn = cnn};
    tg_status st = tg_ctx_new(&t.ctx, NULL);
    st = st ? st : tg_tape_new(t.ctx, &t.tp);
    if (st)
        die("setting up", st, "");
    t.net = model(t.ctx, cnn);
    tg_dataset *data = images(t.ctx);
    size_t np = tg_module_param_count(t.net);
    tg_param *const *params = tg_module_params(t.net);
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    tg_dist *overlapped, *after;
    st = tg_adam_new(t.ctx, np, params, &ao, &t.opt);
    st = st ? st : tg_batches_new(data, batch, true, 1, true, &t.batches);
    st = st ? st
            : tg_dist_new(t.ctx, np, params, &(tg_dist_options){.bucket_bytes = bucket},
                          &overlapped);
    st = st ? st
            : tg_dist_new(t.ctx, np, params,
                          &(tg_dist_options){.bucket_bytes = bucket, .after_backward = true},
                          &after);
    if (st)
        die("setting up", st, tg_ctx_error(t.ctx));
    tg_batches_start(t.batches, 0);
    double warm[2];
    run(&t, overlapped, 2, warm); /* warm-up: the tape grows to its size once */
    run(&t, NULL, 1, NULL);
    double times[PHASES][64], exposed[2][64];
    for (int r = 0; r < rounds; r++) {
        quiet_barrier();
        double alone = rank == 0 ? run(&t, NULL, steps, NULL) : 0;
        quiet_barrier();
        times[ALONE][r] = slowest(alone);
        times[TOGETHER][r] = slowest(run(&t, NULL, steps, NULL));
        MPI_Barrier(MPI_COMM_WORLD);
        double waits[MAX_STEPS];
        times[OVERLAPPED][r] = slowest(run(&t, overlapped, steps, waits));
        exposed[0][r] = allreduce_wait(waits, steps);
        MPI_Barrier(MPI_COMM_WORLD);
        times[AFTER][r] = slowest(run(&t, after, steps, waits));
        exposed[1][r] = allreduce_wait(waits, steps);
    }
    /* Ratios within each round, then their median: efficiency = alone / data-parallel, the
     * probe = alone / together. The allreduce time is what it costs after backward; the share
     * hidden, what starting it during backward saves of it: from the waits after backward
     * (direct), and from whole steps (the same saving, noisier). */
    spread efficiency = ratios(times[ALONE], times[OVERLAPPED], rounds);
    spread host = ratios(times[ALONE], times[TOGETHER], rounds);
    double kept[64], kept_steps[64];
    for (int r = 0; r < rounds; r++) {
        kept[r] = exposed[0][r] / exposed[1][r];
        kept_steps[r] =
            (times[OVERLAPPED][r] - times[TOGETHER][r]) / (times[AFTER][r] - times[TOGETHER][r]);
    }
    double hidden = 1 - median(kept, rounds), hidden_steps = 1 - median(kept_steps, rounds);
    double m[PHASES];
    for (int p = 0; p < PHASES; p++)
        m[p] = median(times[p], rounds) / steps;
    double one = (double)batch / m[ALONE], all = (double)batch * nranks / m[OVERLAPPED];
    double waits[2] = {median(exposed[0], rounds) / steps, median(exposed[1], rounds) / steps};
    tg_dist_stats s = tg_dist_get_stats(overlapped);
    if (rank == 0 && json) {
        printf("%s    {\"suite\": \"dist\", \"name\": \"training %s\", \"batch_per_rank\": %lld, "
               "\"ranks\": %d, \"bucket_bytes\": %zu, \"buckets\": %zu, "
               "\"step_alone_ms\": %.4f, \"step_together_ms\": %.4f, "
               "\"step_overlapped_ms\": %.4f, \"step_after_ms\": %.4f, "
               "\"samples_per_s_1\": %.1f, \"samples_per_s_n\": %.1f, "
               "\"scaling_efficiency\": %.4f, \"probe_alone_over_together\": %.4f, "
               "\"hidden_share\": %.4f, \"hidden_share_steps\": %.4f, "
               "\"wait_overlapped_ms\": %.4f, \"wait_after_ms\": %.4f}",
               *first_row ? "" : ",\n", cnn ? "cnn" : "mlp", (long long)batch, nranks, bucket,
               s.buckets, 1e3 * m[ALONE], 1e3 * m[TOGETHER], 1e3 * m[OVERLAPPED], 1e3 * m[AFTER],
               one, all, efficiency.median, host.median, hidden, hidden_steps, 1e3 * waits[0],
               1e3 * waits[1]);
        *first_row = false;
    } else if (rank == 0) {
        printf("  %s, batch %lld per rank, buckets of %zu KiB (%zu): ms per step: rank 0 alone "
               "%.2f, all ranks alone at once %.2f, data-parallel %.2f (allreduces after "
               "backward: %.2f)\n",
               cnn ? "CNN" : "MLP", (long long)batch, bucket >> 10, s.buckets, 1e3 * m[ALONE],
               1e3 * m[TOGETHER], 1e3 * m[OVERLAPPED], 1e3 * m[AFTER]);
        printf("    throughput: %.0f samples/s on 1 rank, %.0f on %d: scaling efficiency %.1f%% "
               "(rounds %.0f-%.0f%%; Horovod's published figure: 90%%)\n",
               one, all, nranks, 100 * efficiency.median, 100 * efficiency.min,
               100 * efficiency.max);
        printf("    probe: rank 0 alone / all ranks alone at once = %.2f (rounds %.2f-%.2f; 1.00: "
               "a core per rank, %.2f: one core shared by all)\n",
               host.median, host.min, host.max, 1.0 / nranks);
        printf("    allreduce time hidden behind backward: %.0f%% (communication per step: %.3f "
               "ms with the allreduces started during backward, %.3f ms started after it; from "
               "whole steps: %.0f%%)\n",
               100 * hidden, 1e3 * waits[0], 1e3 * waits[1], 100 * hidden_steps);
    }
    fflush(stdout);
    tg_dist_free(after);
    tg_dist_free(overlapped);
    tg_batches_free(t.batches);
    tg_dataset_free(data);
    tg_optim_free(t.opt);
    tg_module_free(t.net);
    tg_tape_free(t.tp);
    tg_ctx_free(t.ctx);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    int rounds = 7;
    bool json = false, want_bandwidth = false, want_training = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "bandwidth"))
            want_bandwidth = true;
        else if (!strcmp(argv[i], "training"))
            want_training = true;
        else {
            if (rank == 0)
                fprintf(stderr, "usage: mpirun -np N tg-bench-dist [--rounds N] [--json] "
                                "[bandwidth] [training]\n");
            MPI_Finalize();
            return 2;
        }
    }
    if (nranks < 2) {
        if (rank == 0)
            fprintf(stderr, "tg-bench-dist: start it on 2 or more ranks (bench/dist.sh)\n");
        MPI_Finalize();
        return 2;
    }
    if (!want_bandwidth && !want_training)
        want_bandwidth = want_training = true;
    rounds = rounds < 1 ? 1 : rounds > 64 ? 64 : rounds;
    double load[1] = {-1};
    if (rank == 0 && json)
        printf("{\n  \"tool\": \"tg-bench-dist\",\n  \"ranks\": %d,\n  \"build\": \"%s\",\n"
               "  \"rows\": [\n",
               nranks, tg_build_info());
    else if (rank == 0)
        printf("tg-bench-dist: %d ranks, %s; load average %.2f\n", nranks, tg_build_info(),
               getloadavg(load, 1) == 1 ? load[0] : -1);
    bool first_row = true;
    if (want_bandwidth)
        bandwidth(rounds, json, &first_row);
    if (want_training) {
        if (rank == 0 && !json)
            printf("training: medians of %d rounds, one thread per rank\n", rounds);
        training(false, rounds, 256 << 10, json, &first_row);
        training(true, rounds, 256 << 10, json, &first_row);
        training(false, rounds, 25 << 20, json, &first_row);
        training(true, rounds, 25 << 20, json, &first_row);
    }
    if (rank == 0 && json)
        printf("\n  ]\n}\n");
    MPI_Finalize();
    return 0;
}
