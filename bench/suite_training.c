/* suite_training.c — whole training steps on Fashion-MNIST with tg-train's models and Adam
 * (lr 1e-3): samples per second for the MLP 784-256-128-10 at batch 32, 128 and 512 and the CNN
 * at batch 128; and the memory suite: allocator calls per steady-state step (through the
 * allocator hook) and peak RSS, each measured in a fresh child process. Batches are taken in file
 * order (no shuffle, last partial batch dropped), so every framework sees the same batches. A
 * step is what tg-train does: the batch copied onto the tape, forward, cross-entropy, backward,
 * the Adam step and zeroing the gradients. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

/* ---- models and data (as examples/tg_train.c builds them) ----------------------------------- */

tg_module *bench_model(tg_ctx *ctx, bool cnn)
{
    tg_module *m[11] = {NULL}, *net = NULL;
    int n = 0;
    tg_status st = TG_OK;
    tg_linear_options lo = {.seed = 1};
    if (!cnn) {
        st = tg_flatten_new(ctx, &m[n++]);
        if (!st)
            st = tg_linear_new(ctx, "fc1", 784, 256, &lo, &m[n++]);
        if (!st)
            st = tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        lo.seed = 2;
        if (!st)
            st = tg_linear_new(ctx, "fc2", 256, 128, &lo, &m[n++]);
        if (!st)
            st = tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        lo.seed = 3;
        if (!st)
            st = tg_linear_new(ctx, "fc3", 128, 10, &lo, &m[n++]);
    } else {
        tg_conv2d_options co = {.params = {.padding = {1, 1}}, .seed = 1};
        tg_pool2d_params pool = {.kernel = {2, 2}};
        st = tg_conv2d_new(ctx, "conv1", 1, 32, 3, 3, &co, &m[n++]);
        if (!st)
            st = tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        if (!st)
            st = tg_max_pool2d_new(ctx, &pool, &m[n++]);
        co.seed = 2;
        if (!st)
            st = tg_conv2d_new(ctx, "conv2", 32, 64, 3, 3, &co, &m[n++]);
        if (!st)
            st = tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        if (!st)
            st = tg_max_pool2d_new(ctx, &pool, &m[n++]);
        if (!st)
            st = tg_flatten_new(ctx, &m[n++]);
        lo.seed = 3;
        if (!st)
            st = tg_linear_new(ctx, "fc1", 64 * 7 * 7, 128, &lo, &m[n++]);
        if (!st)
            st = tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        lo.seed = 4;
        if (!st)
            st = tg_linear_new(ctx, "fc2", 128, 10, &lo, &m[n++]);
    }
    if (st) {
        fprintf(stderr, "tg-bench: building the model: %s\n", tg_ctx_error(ctx));
        for (int i = 0; i < n; i++)
            tg_module_free(m[i]);
        return NULL;
    }
    if (tg_sequential_new(ctx, cnn ? "cnn" : "mlp", n, m, &net) != TG_OK) {
        fprintf(stderr, "tg-bench: building the model: %s\n", tg_ctx_error(ctx));
        return NULL;
    }
    return net;
}

/* The training set's two files under o->data. */
static void data_paths(const bench_options *o, char *images, char *labels, size_t size)
{
    snprintf(images, size, "%s/train-images-idx3-ubyte.gz", o->data);
    snprintf(labels, size, "%s/train-labels-idx1-ubyte.gz", o->data);
}

bool bench_have_data(const bench_options *o)
{
    char images[1024], labels[1024];
    struct stat sb;
    data_paths(o, images, labels, sizeof images);
    return stat(images, &sb) == 0 && stat(labels, &sb) == 0;
}

tg_dataset *bench_dataset(const bench_options *o, tg_ctx *ctx)
{
    char images[1024], labels[1024];
    data_paths(o, images, labels, sizeof images);
    if (!bench_have_data(o)) {
        fprintf(stderr,
                "tg-bench: Fashion-MNIST not found in %s (apt-get install "
                "dataset-fashion-mnist, or --data DIR)\n",
                o->data);
        return NULL;
    }
    tg_dataset *d = NULL;
    if (tg_dataset_load_idx(ctx, images, labels, &d) != TG_OK) {
        fprintf(stderr, "tg-bench: loading %s: %s\n", images, tg_ctx_error(ctx));
        return NULL;
    }
    return d;
}

tg_status bench_train_step(tg_module *net, bool cnn, tg_optim *opt, tg_batches *b, tg_tape *tp,
                           int64_t *epoch)
{
    tg_tensor x, y;
    tg_tape_reset(tp);
    if (!tg_batches_next(b, tp, &x, &y)) {
        if (tg_tape_status(tp) != TG_OK)
            return tg_tape_status(tp);
        tg_batches_start(b, ++*epoch);
        if (!tg_batches_next(b, tp, &x, &y))
            return tg_tape_status(tp) != TG_OK ? tg_tape_status(tp) : TG_INVALID;
    }
    if (cnn)
        x = tg_reshape(x, 4, (int64_t[]){tg_dim(x, 0), 1, 28, 28});
    tg_tensor loss = tg_cross_entropy(tg_forward(net, x), y, TG_REDUCE_MEAN, 0.0);
    tg_status st = tg_backward(loss);
    if (st == TG_OK)
        st = tg_optim_step(opt, tp);
    tg_optim_zero_grad(opt);
    return st;
}

/* A model, its optimiser and its batches, ready to step. */
typedef struct trainer {
    tg_ctx *ctx;
    tg_tape *tp;
    tg_module *net;
    tg_optim *opt;
    tg_batches *batches;
    bool cnn;
    int64_t batch, epoch;
    int steps; /* per timed run */
    tg_status status;
} trainer;

static bool trainer_new(trainer *t, tg_ctx *ctx, const tg_dataset *d, bool cnn, int64_t batch)
{
    memset(t, 0, sizeof *t);
    t->ctx = ctx;
    t->cnn = cnn;
    t->batch = batch;
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    if (tg_tape_new(ctx, &t->tp) || !(t->net = bench_model(ctx, cnn))
        || tg_adam_new(ctx, tg_module_param_count(t->net), tg_module_params(t->net), &ao, &t->opt)
        || tg_batches_new(d, batch, false, 0, true, &t->batches)) {
        fprintf(stderr, "tg-bench: %s\n", tg_ctx_error(ctx));
        return false;
    }
    tg_batches_start(t->batches, 0);
    return true;
}

static void trainer_free(trainer *t)
{
    tg_batches_free(t->batches);
    tg_optim_free(t->opt);
    tg_module_free(t->net);
    tg_tape_free(t->tp);
}

static tg_status trainer_step(trainer *t)
{
    tg_status st = bench_train_step(t->net, t->cnn, t->opt, t->batches, t->tp, &t->epoch);
    if (st != TG_OK && t->status == TG_OK) {
        t->status = st;
        fprintf(stderr, "tg-bench training: %s: %s\n", tg_status_name(st), tg_tape_error(t->tp));
    }
    return st;
}

static void train_run(void *user, double *times)
{
    trainer *t = user;
    double t0 = bench_now();
    for (int i = 0; i < t->steps && t->status == TG_OK; i++)
        trainer_step(t);
    times[0] = bench_now() - t0;
}

/* ---- the CNN's GEMM floor -------------------------------------------------------------------
 * The CNN's step multiplies matrices worth CNN_FLOPS per sample: the convolutions' forward and
 * weight gradients, the second one's input gradient (the first one's input needs none), and the
 * two linear layers' three products each. Its floor is that work at the GEMM rate of the
 * second convolution's products, one image's worth each (tg_matmul_t on the shapes the layer
 * runs: y = W cols, dcols = W^T g, dW = g cols^T): the step cannot take less than the floor,
 * and whatever it takes beyond it is spent outside those GEMMs. */
#define CONV1_FLOPS (2.0 * 32 * 9 * 784)   /* 1 -> 32 channels, 3x3, 28x28 */
#define CONV2_FLOPS (2.0 * 64 * 288 * 196) /* 32 -> 64 channels, 3x3, 14x14 */
#define CNN_FLOPS                                                                                  \
    (2 * CONV1_FLOPS + 3 * CONV2_FLOPS + 3 * (2.0 * 3136 * 128) + 3 * (2.0 * 128 * 10))

typedef struct floor_job {
    tg_tape *tp;
    tg_param *w, *cols, *g; /* W [64, 288], columns [288, 196], gradient [64, 196] */
    int inner;
    tg_status status;
} floor_job;

static void floor_run(void *user, double *times)
{
    floor_job *j = user;
    double t0 = bench_now();
    for (int r = 0; r < j->inner; r++) {
        tg_tape_reset(j->tp);
        tg_tensor w = tg_param_tensor(j->tp, j->w), cols = tg_param_tensor(j->tp, j->cols);
        tg_tensor g = tg_param_tensor(j->tp, j->g);
        tg_matmul_t(w, cols, false, false); /* y = W cols */
        tg_matmul_t(w, g, true, false);     /* dcols = W^T g */
        tg_matmul_t(g, cols, false, true);  /* dW = g cols^T */
        if (tg_tape_status(j->tp) != TG_OK && j->status == TG_OK) {
            j->status = tg_tape_status(j->tp);
            fprintf(stderr, "tg-bench training: %s\n", tg_tape_error(j->tp));
        }
    }
    times[0] = bench_now() - t0;
}

/* The row "cnn GEMM rate at conv shapes" (GFLOP/s); returns its median. */
static double gemm_rate_row(const bench_options *o, tg_ctx *ctx)
{
    floor_job j = {.inner = 1};
    if (tg_tape_new(ctx, &j.tp) || tg_param_new(ctx, "w", TG_F32, 2, (int64_t[]){64, 288}, &j.w)
        || tg_param_new(ctx, "cols", TG_F32, 2, (int64_t[]){288, 196}, &j.cols)
        || tg_param_new(ctx, "g", TG_F32, 2, (int64_t[]){64, 196}, &j.g)) {
        fprintf(stderr, "tg-bench training: %s\n", tg_ctx_error(ctx));
        tg_tape_free(j.tp);
        return 0;
    }
    tg_param_uniform(j.w, -1, 1, 1);
    tg_param_uniform(j.cols, -1, 1, 2);
    tg_param_uniform(j.g, -1, 1, 3);
    double once;
    floor_run(&j, &once);
    j.inner = once < 5e-3 && once > 0 ? (int)(5e-3 / once) + 1 : 1; /* about 5 ms a sample */
    bench_stats s;
    bench_measure(o, floor_run, &j, 1, &s);
    bench_extra ex[] = {{"flops_per_sample_of_cnn", CNN_FLOPS}};
    bench_stats rate = bench_rate(s, 3 * CONV2_FLOPS * j.inner / 1e9);
    bench_row(o, "training", "cnn GEMM rate at conv shapes", "GFLOP/s", rate, 1, ex);
    tg_tape_free(j.tp);
    tg_param_free(j.w);
    tg_param_free(j.cols);
    tg_param_free(j.g);
    return j.status == TG_OK ? rate.median : 0;
}

/* One training case: its row (named `name`), and its median samples per second. */
static double train_case(const bench_options *o, tg_ctx *ctx, const tg_dataset *d, bool cnn,
                         int64_t batch, int steps, const char *name, int nextra,
                         const bench_extra *extra, int *failed)
{
    trainer t;
    if (!trainer_new(&t, ctx, d, cnn, batch)) {
        trainer_free(&t);
        *failed = 1;
        return 0;
    }
    t.steps = steps;
    bench_stats s;
    bench_measure(o, train_run, &t, 1, &s);
    bench_extra ex[4] = {{"steps_per_run", (double)steps}, {"ms_per_step", 1e3 * s.median / steps}};
    for (int i = 0; i < nextra && i < 2; i++)
        ex[2 + i] = extra[i];
    bench_stats rate = bench_rate(s, (double)(steps * batch));
    bench_row(o, "training", name, "samples/s", rate, 2 + (nextra < 2 ? nextra : 2), ex);
    *failed |= t.status != TG_OK;
    trainer_free(&t);
    return t.status == TG_OK ? rate.median : 0;
}

int bench_training(const bench_options *o)
{
    bench_suite(o, "training", "Adam steps on Fashion-MNIST batches in file order, samples/s");
    if (!bench_have_data(o)) {
        bench_note(o, "training", "skipped: Fashion-MNIST not found in %s", o->data);
        return BENCH_SKIPPED;
    }
    tg_ctx *ctx = bench_ctx(o);
    tg_dataset *d = bench_dataset(o, ctx);
    if (!d) {
        tg_ctx_free(ctx);
        return 1;
    }
    static const struct {
        bool cnn;
        int64_t batch;
        int steps;
    } cases[] = {{false, 32, 256}, {false, 128, 64}, {false, 512, 16}, {true, 128, 2}};
    int failed = 0;
    double rates[4];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s batch %lld", cases[i].cnn ? "cnn" : "mlp",
                 (long long)cases[i].batch);
        rates[i] = train_case(o, ctx, d, cases[i].cnn, cases[i].batch, cases[i].steps, name, 0,
                              NULL, &failed);
    }
    /* The CNN's step against its GEMM floor, in the same run. */
    double gemm = gemm_rate_row(o, ctx);
    if (gemm > 0 && rates[3] > 0) {
        double floor_s = CNN_FLOPS / (gemm * 1e9), step_s = 1.0 / rates[3];
        bench_stats share = {100 * floor_s / step_s, 100 * floor_s / step_s, 100 * floor_s / step_s,
                             1};
        bench_extra ex[] = {{"floor_ms_per_step", 1e3 * floor_s * 128},
                            {"step_ms", 1e3 * step_s * 128},
                            {"gemm_GFLOPs", gemm}};
        bench_row(o, "training", "cnn batch 128, share of its GEMM floor", "%", share, 3, ex);
    }
    /* Two threads against one (tapegrad's; OpenBLAS is not used), with the probe's reading of
     * how many cores the host gave two busy processes just before. */
    if (o->threads == 1) {
        double cores = bench_core_probe();
        bench_stats probe = {cores, cores, cores, 1};
        bench_row(o, "training", "two-process compute probe", "cores", probe, 0, NULL);
        tg_ctx_set_threads(ctx, 2);
        static const int two[] = {3, 2}; /* cnn batch 128, mlp batch 512 */
        for (int i = 0; i < 2; i++) {
            int c = two[i];
            char name[64];
            snprintf(name, sizeof name, "%s batch %lld, 2 threads", cases[c].cnn ? "cnn" : "mlp",
                     (long long)cases[c].batch);
            bench_extra ex[] = {{"one_thread", rates[c]}, {"probe_cores", cores}};
            double r = train_case(o, ctx, d, cases[c].cnn, cases[c].batch, cases[c].steps, name, 2,
                                  ex, &failed);
            bench_extra x[] = {{"probe_cores", cores}};
            snprintf(name, sizeof name, "%s batch %lld, 2 threads over 1",
                     cases[c].cnn ? "cnn" : "mlp", (long long)cases[c].batch);
            double ratio = rates[c] > 0 ? r / rates[c] : 0;
            bench_row(o, "training", name, "x", (bench_stats){ratio, ratio, ratio, 1}, 1, x);
        }
        tg_ctx_set_threads(ctx, 1);
    }
    tg_dataset_free(d);
    tg_ctx_free(ctx);
    return failed;
}

/* ---- memory ----------------------------------------------------------------------------------
 * Each case runs in a child process (this program with --memory-child), so that its peak RSS is
 * its own: the dataset, the model, Adam's state and the tape, and nothing from other suites. */

typedef struct counter {
    uint64_t calls;
} counter;

static void *counting_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    (void)old_size;
    ((counter *)user)->calls++;
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, new_size);
}

static long peak_rss_kib(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

int bench_memory_child(const bench_options *o, const char *model, int64_t batch)
{
    counter c = {0};
    tg_ctx_options co = {.alloc = counting_alloc, .alloc_user = &c, .threads = o->threads};
    tg_ctx *ctx;
    bool cnn = !strcmp(model, "cnn");
    int steps = cnn ? 4 : 20;
    if (tg_ctx_new(&ctx, &co) != TG_OK)
        return 1;
    tg_dataset *d = bench_dataset(o, ctx);
    trainer t;
    if (!d || !trainer_new(&t, ctx, d, cnn, batch))
        return 1;
    long setup = peak_rss_kib();
    uint64_t c0 = c.calls;
    /* Two warm-up steps: the first grows the tape's storage to the step's size; the second
     * shows that nothing else is still growing (it makes no call in the runs recorded in
     * bench/README.md), and the counted steps follow. */
    trainer_step(&t);
    uint64_t first = c.calls - c0, c1 = c.calls;
    trainer_step(&t);
    uint64_t second = c.calls - c1, later_most = 0, total = 0;
    for (int i = 0; i < steps && t.status == TG_OK; i++) {
        uint64_t before = c.calls;
        trainer_step(&t);
        uint64_t n = c.calls - before;
        total += n;
        later_most = n > later_most ? n : later_most;
    }
    size_t tape = tg_tape_bytes(t.tp);
    printf("first=%llu second=%llu later_most=%llu total=%llu steps=%d setup_kib=%ld "
           "peak_kib=%ld tape=%zu status=%d\n",
           (unsigned long long)first, (unsigned long long)second, (unsigned long long)later_most,
           (unsigned long long)total, steps, setup, peak_rss_kib(), tape, (int)t.status);
    trainer_free(&t);
    tg_dataset_free(d);
    tg_ctx_free(ctx);
    return t.status != TG_OK;
}

/* Runs argv as a child process and reads its first line of output into `line`. */
static bool run_child(char *const *argv, char *line, size_t size)
{
    int fd[2];
    if (pipe(fd))
        return false;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    bool ok = f && fgets(line, (int)size, f);
    if (f) {
        char rest[256];
        while (fgets(rest, sizeof rest, f))
            ;
        fclose(f);
    }
    int status;
    waitpid(pid, &status, 0);
    return ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int bench_memory(const bench_options *o)
{
    bench_suite(o, "memory",
                "allocator calls per training step after two warm-up steps (target 0), "
                "and peak RSS; each case in a fresh process");
    if (!bench_have_data(o)) {
        bench_note(o, "memory", "skipped: Fashion-MNIST not found in %s", o->data);
        return BENCH_SKIPPED;
    }
    char self[4096];
    ssize_t len = readlink(o->self, self, sizeof self - 1);
    if (len <= 0) {
        fprintf(stderr, "tg-bench memory: cannot find this program (%s)\n", o->self);
        return 1;
    }
    self[len] = 0;
    static const struct {
        const char *model, *batch;
    } cases[] = {{"mlp", "32"}, {"mlp", "128"}, {"cnn", "128"}};
    char threads[16];
    snprintf(threads, sizeof threads, "%d", o->threads);
    int failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *argv[] = {self,
                        "--threads",
                        threads,
                        "--data",
                        (char *)o->data,
                        "--memory-child",
                        (char *)cases[i].model,
                        (char *)cases[i].batch,
                        NULL};
        char line[512], name[64];
        unsigned long long first, second, later_most, total;
        int steps, status;
        long setup, peak;
        size_t tape;
        if (!run_child(argv, line, sizeof line)
            || sscanf(line,
                      "first=%llu second=%llu later_most=%llu total=%llu steps=%d setup_kib=%ld "
                      "peak_kib=%ld tape=%zu status=%d",
                      &first, &second, &later_most, &total, &steps, &setup, &peak, &tape, &status)
                   != 9) {
            fprintf(stderr, "tg-bench memory: the %s batch %s case failed\n", cases[i].model,
                    cases[i].batch);
            failed = 1;
            continue;
        }
        double per = (double)total / steps;
        bench_stats calls = {per, per, per, 1};
        bench_extra ec[] = {{"steps", (double)steps},
                            {"step_1", (double)first},
                            {"step_2", (double)second},
                            {"most_in_a_counted_step", (double)later_most}};
        snprintf(name, sizeof name, "allocator calls/step, %s batch %s", cases[i].model,
                 cases[i].batch);
        bench_row(o, "memory", name, "calls", calls, 4, ec);
        double mib = (double)peak / 1024.0;
        bench_stats rss = {mib, mib, mib, 1};
        bench_extra er[] = {{"after_setup_MiB", (double)setup / 1024.0},
                            {"tape_MiB", (double)tape / 1048576.0}};
        snprintf(name, sizeof name, "peak RSS, %s batch %s", cases[i].model, cases[i].batch);
        bench_row(o, "memory", name, "MiB", rss, 2, er);
    }
    return failed;
}
