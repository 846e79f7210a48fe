/* tg_train.c — tg-train: trains a classifier on Fashion-MNIST (an MLP 784-256-128-10 by default,
 * or a small CNN), reporting per-epoch loss, test accuracy and throughput, with checkpoints, a
 * CSV log, early stopping on a validation split and image augmentation. Started by mpirun (in a
 * build with MPI), it trains data-parallel: each process takes its shard of every epoch in
 * batches of --batch, the gradients are averaged over the processes (tapegrad/dist.h), and rank
 * 0 prints and writes the checkpoints and the log.
 *
 *   tg-train [--model mlp|cnn] [--epochs N] [--batch N] [--lr X] [--seed N] [--threads N]
 *            [--data DIR] [--save PATH] [--resume PATH] [--limit N]
 *            [--log FILE] [--log-every N] [--valid N] [--early-stop PATIENCE]
 *            [--augment-crop PIXELS] [--augment-flip]
 *   mpirun -np 2 tg-train [same options]
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <tapegrad.h>
#ifdef TG_TRAIN_MPI
#include <tapegrad/dist.h>
#endif

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"

typedef struct config {
    const char *model;
    int epochs;
    int64_t batch;
    double lr;
    uint64_t seed;
    int threads;
    const char *data;
    const char *save;
    const char *resume;
    int64_t limit;     /* training samples per epoch (0: all) */
    const char *log;   /* CSV log (tg_train_log) */
    int64_t log_every; /* steps per log row within an epoch (0: one row per epoch) */
    int64_t valid;     /* training samples held out for validation */
    int patience;      /* early stopping on the validation loss (0: none) */
    int crop;          /* augmentation: random crops with this much padding */
    bool flip;         /* augmentation: random horizontal flips */
} config;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: tg-train [--model mlp|cnn] [--epochs N] [--batch N] [--lr X] [--seed N]\n"
               "                [--threads N] [--data DIR] [--save PATH] [--resume PATH]"
               " [--limit N]\n"
               "                [--log FILE] [--log-every N] [--valid N] [--early-stop PATIENCE]\n"
               "                [--augment-crop PIXELS] [--augment-flip]\n"
               "Trains on Fashion-MNIST from DIR (default " DEFAULT_DATA ").\n"
               "Defaults: --model mlp --epochs 15 (cnn: 8) --batch 128 --lr 0.001 --seed 1\n"
               "--log FILE: a CSV row per epoch (and every --log-every N steps)\n"
               "--valid N: hold N training samples out for validation (--early-stop: 5000)\n"
               "--early-stop P: stop when the validation loss has not improved for P epochs\n"
               "  and restore the best epoch's parameters\n"
               "--augment-crop P, --augment-flip: random shifts by up to P pixels (crops of\n"
               "  the zero-padded image) and horizontal flips of the training images\n");
}

static int parse(int argc, char **argv, config *c)
{
    int epochs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--augment-flip")) {
            c->flip = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "tg-train: %s needs a value\n", a);
            return -1;
        }
        i++;
        char *end = NULL;
        if (!strcmp(a, "--model"))
            c->model = v;
        else if (!strcmp(a, "--epochs"))
            epochs = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--batch"))
            c->batch = strtoll(v, &end, 10);
        else if (!strcmp(a, "--lr"))
            c->lr = strtod(v, &end);
        else if (!strcmp(a, "--seed"))
            c->seed = strtoull(v, &end, 10);
        else if (!strcmp(a, "--threads"))
            c->threads = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--data"))
            c->data = v;
        else if (!strcmp(a, "--save"))
            c->save = v;
        else if (!strcmp(a, "--resume"))
            c->resume = v;
        else if (!strcmp(a, "--limit"))
            c->limit = strtoll(v, &end, 10);
        else if (!strcmp(a, "--log"))
            c->log = v;
        else if (!strcmp(a, "--log-every"))
            c->log_every = strtoll(v, &end, 10);
        else if (!strcmp(a, "--valid"))
            c->valid = strtoll(v, &end, 10);
        else if (!strcmp(a, "--early-stop"))
            c->patience = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--augment-crop"))
            c->crop = (int)strtol(v, &end, 10);
        else {
            fprintf(stderr, "tg-train: unknown option %s\n", a);
            return -1;
        }
        if (end && *end) {
            fprintf(stderr, "tg-train: bad value for %s: %s\n", a, v);
            return -1;
        }
    }
    if (strcmp(c->model, "mlp") && strcmp(c->model, "cnn")) {
        fprintf(stderr, "tg-train: --model must be mlp or cnn\n");
        return -1;
    }
    c->epochs = epochs > 0 ? epochs : !strcmp(c->model, "cnn") ? 8 : 15;
    if (c->batch < 1 || !(c->lr > 0) || c->threads < 0 || c->limit < 0) {
        fprintf(stderr, "tg-train: --batch, --lr must be positive\n");
        return -1;
    }
    if (c->log_every < 0 || c->valid < 0 || c->patience < 0 || c->crop < 0) {
        fprintf(stderr, "tg-train: --log-every, --valid, --early-stop, --augment-crop must not "
                        "be negative\n");
        return -1;
    }
    if (c->patience && !c->valid)
        c->valid = 5000;
    return 0;
}

/* ---- data ----------------------------------------------------------------------------------- */

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* A stand-in task when Fashion-MNIST is absent: ten classes of 28x28 images, each a noisy copy
 * of one of ten random prototypes. Learnable, so the run still shows the engine working. */
static tg_status synthetic(tg_ctx *ctx, int64_t n, uint64_t seed, uint64_t noise_seed,
                           tg_dataset **out)
{
    enum { PIXELS = 28 * 28 };
    float *x = tg_alloc(ctx, (size_t)n * PIXELS * sizeof *x), proto[10][PIXELS];
    int64_t *y = tg_alloc(ctx, (size_t)n * sizeof *y);
    tg_status st = x && y ? TG_OK : TG_NOMEM;
    uint64_t s = seed * 2654435761u + 12345;
    for (int c = 0; st == TG_OK && c < 10; c++)
        for (int p = 0; p < PIXELS; p++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            proto[c][p] = (float)((s >> 40) & 0xffff) / 65535.0f;
        }
    s = noise_seed * 0x9e3779b97f4a7c15ull + 1; /* same prototypes, fresh noise */
    for (int64_t i = 0; st == TG_OK && i < n; i++) {
        y[i] = i % 10;
        for (int p = 0; p < PIXELS; p++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            float noise = ((float)((s >> 40) & 0xffff) / 65535.0f - 0.5f) * 0.8f;
            float v = proto[y[i]][p] + noise;
            x[i * PIXELS + p] = v < 0 ? 0 : v > 1 ? 1 : v;
        }
    }
    if (st == TG_OK)
        st = tg_dataset_new(ctx, n, 2, (int64_t[]){28, 28}, x, y, out);
    tg_free(ctx, x, (size_t)n * PIXELS * sizeof *x);
    tg_free(ctx, y, (size_t)n * sizeof *y);
    return st;
}

/* Fashion-MNIST, or the synthetic task (saying so when `talk`). */
static tg_status load_data(tg_ctx *ctx, const config *c, tg_dataset **train, tg_dataset **test,
                           bool talk)
{
    char ti[1024], tl[1024], vi[1024], vl[1024];
    snprintf(ti, sizeof ti, "%s/train-images-idx3-ubyte.gz", c->data);
    snprintf(tl, sizeof tl, "%s/train-labels-idx1-ubyte.gz", c->data);
    snprintf(vi, sizeof vi, "%s/t10k-images-idx3-ubyte.gz", c->data);
    snprintf(vl, sizeof vl, "%s/t10k-labels-idx1-ubyte.gz", c->data);
    if (!exists(ti) || !exists(vi)) {
        if (talk)
            printf("Fashion-MNIST not found in %s.\n"
                   "Install it with: apt-get install dataset-fashion-mnist\n"
                   "Training on a built-in synthetic task instead.\n",
                   c->data);
        tg_status st = synthetic(ctx, 12000, c->seed, 1, train);
        return st ? st : synthetic(ctx, 2000, c->seed, 2, test);
    }
    tg_status st = tg_dataset_load_idx(ctx, ti, tl, train);
    if (st == TG_OK)
        st = tg_dataset_load_idx(ctx, vi, vl, test);
    return st;
}

/* ---- models --------------------------------------------------------------------------------- */

static tg_status build_model(tg_ctx *ctx, const config *c, tg_module **net)
{
    tg_module *m[11] = {NULL};
    int n = 0;
    tg_status st = TG_OK;
    tg_linear_options lo = {.seed = c->seed};
    if (!strcmp(c->model, "mlp")) {
        st = tg_flatten_new(ctx, &m[n++]);
        if (!st)
            st = tg_linear_new(ctx, "fc1", 784, 256, &lo, &m[n++]);
        if (!st)
            st = tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        lo.seed = c->seed + 1;
        if (!st)
            st = tg_linear_new(ctx, "fc2", 256, 128, &lo, &m[n++]);
        if (!st)
            st = tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        lo.seed = c->seed + 2;
        if (!st)
            st = tg_linear_new(ctx, "fc3", 128, 10, &lo, &m[n++]);
    } else {
        /* conv 1->32 3x3 pad 1, relu, pool 2; conv 32->64 3x3 pad 1, relu, pool 2; fc 3136->128,
         * relu, fc 128->10. */
        tg_conv2d_options co = {.params = {.padding = {1, 1}}, .seed = c->seed};
        tg_pool2d_params pool = {.kernel = {2, 2}};
        st = tg_conv2d_new(ctx, "conv1", 1, 32, 3, 3, &co, &m[n++]);
        if (!st)
            st = tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        if (!st)
            st = tg_max_pool2d_new(ctx, &pool, &m[n++]);
        co.seed = c->seed + 1;
        if (!st)
            st = tg_conv2d_new(ctx, "conv2", 32, 64, 3, 3, &co, &m[n++]);
        if (!st)
            st = tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        if (!st)
            st = tg_max_pool2d_new(ctx, &pool, &m[n++]);
        if (!st)
            st = tg_flatten_new(ctx, &m[n++]);
        lo.seed = c->seed + 2;
        if (!st)
            st = tg_linear_new(ctx, "fc1", 64 * 7 * 7, 128, &lo, &m[n++]);
        if (!st)
            st = tg_activation_new(ctx, TG_ACT_RELU, &m[n++]);
        lo.seed = c->seed + 3;
        if (!st)
            st = tg_linear_new(ctx, "fc2", 128, 10, &lo, &m[n++]);
    }
    if (st) {
        for (int i = 0; i < n; i++)
            tg_module_free(m[i]);
        return st;
    }
    return tg_sequential_new(ctx, c->model, n, m, net);
}

/* The CNN sees [N, 1, 28, 28]; the MLP flattens whatever it gets. */
static tg_tensor as_images(tg_tensor x)
{
    return tg_reshape(x, 4, (int64_t[]){tg_dim(x, 0), 1, 28, 28});
}

/* ---- one process, or one of several -------------------------------------------------------- */

/* The processes that train together: several when an MPI launcher started this one (in a build
 * with MPI), each with its shard of the data and the gradients averaged; otherwise this one. */
typedef struct group {
    int rank, size;
#ifdef TG_TRAIN_MPI
    tg_dist *dist; /* NULL: alone */
#endif
} group;

static void group_start(group *g, int *argc, char ***argv)
{
    g->rank = 0;
    g->size = 1;
#ifdef TG_TRAIN_MPI
    g->dist = NULL;
    /* OpenMPI's non-blocking allreduce (tapegrad's, during backward) reached 27 % to 67 % of
     * its blocking one's bandwidth on 2 processes with its default algorithm, and 53 % to 97 %
     * with its ring (bench/README.md): ask for the ring unless the user chose. OpenMPI reads
     * this when MPI starts; other MPIs ignore it. */
    if (tg_dist_launched() && !getenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm"))
        setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 1);
    if (tg_dist_launched() && MPI_Init(argc, argv) == MPI_SUCCESS) {
        MPI_Comm_rank(MPI_COMM_WORLD, &g->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &g->size);
    }
#else
    (void)argc, (void)argv;
#endif
}

/* Rank 0's parameters on every process. */
static tg_status group_join(group *g, tg_ctx *ctx, tg_module *net)
{
#ifdef TG_TRAIN_MPI
    if (g->size > 1)
        return tg_dist_new(ctx, tg_module_param_count(net), tg_module_params(net), NULL, &g->dist);
#endif
    (void)g, (void)ctx, (void)net;
    return TG_OK;
}

/* This process's batches: its shard of every epoch, or all of them. */
static tg_status group_batches(group *g, const tg_dataset *d, int64_t batch, bool shuffle,
                               uint64_t seed, tg_batches **out)
{
#ifdef TG_TRAIN_MPI
    if (g->dist)
        return tg_dist_batches_new(g->dist, d, batch, shuffle, seed, false, out);
#endif
    return tg_batches_new(d, batch, shuffle, seed, false, out);
}

static tg_status group_backward(group *g, tg_tensor loss)
{
#ifdef TG_TRAIN_MPI
    if (g->dist)
        return tg_dist_backward(g->dist, loss);
#endif
    return tg_backward(loss);
}

/* Means over the processes (of a loss, of counts). */
static tg_status group_mean(group *g, size_t n, double *values)
{
#ifdef TG_TRAIN_MPI
    if (g->dist)
        return tg_dist_mean(g->dist, n, values);
#endif
    (void)g, (void)n, (void)values;
    return TG_OK;
}

static tg_status group_save(group *g, tg_ctx *ctx, const char *path, tg_module *net,
                            const tg_optim *opt)
{
    size_t n = tg_module_param_count(net);
#ifdef TG_TRAIN_MPI
    if (g->dist)
        return tg_dist_checkpoint_save(g->dist, path, n, tg_module_params(net), opt);
#endif
    return tg_checkpoint_save(ctx, path, n, tg_module_params(net), opt);
}

static tg_status group_load(group *g, tg_ctx *ctx, const char *path, tg_module *net, tg_optim *opt)
{
    size_t n = tg_module_param_count(net);
#ifdef TG_TRAIN_MPI
    if (g->dist)
        return tg_dist_checkpoint_load(g->dist, path, n, tg_module_params(net), opt);
#endif
    return tg_checkpoint_load(ctx, path, n, tg_module_params(net), opt);
}

static void group_end(group *g)
{
#ifdef TG_TRAIN_MPI
    tg_dist_free(g->dist);
    if (g->size > 1 || tg_dist_launched())
        MPI_Finalize();
#endif
    (void)g;
}

/* ---- training ---------------------------------------------------------------------------------
 */

static void progress(int epoch, int epochs, int64_t done, int64_t total, double elapsed,
                     double loss)
{
    int width = 30, filled = total ? (int)(width * done / total) : width;
    double eta = done ? elapsed * (double)(total - done) / (double)done : 0;
    fprintf(stderr, "\repoch %d/%d [", epoch, epochs);
    for (int i = 0; i < width; i++)
        fputc(i < filled ? '=' : i == filled ? '>' : ' ', stderr);
    fprintf(stderr, "] %lld/%lld loss %.4f  ETA %3.0fs ", (long long)done, (long long)total, loss,
            eta);
    fflush(stderr);
}

/* Accuracy on a dataset (and the mean cross-entropy into *loss, when not NULL), in evaluation
 * mode without recording; each process evaluates its shard and the figures are of all of them. */
static double evaluate(group *g, tg_module *net, bool cnn, const tg_dataset *d, tg_tape *tp,
                       double *loss)
{
    tg_batches *b;
    if (loss)
        *loss = NAN;
    if (group_batches(g, d, 1000, false, 0, &b))
        return NAN;
    tg_module_set_training(net, false);
    int64_t correct = 0, seen = 0;
    double loss_sum = 0;
    tg_batches_start(b, 0);
    tg_tensor x, y;
    for (;;) {
        tg_tape_reset(tp);
        tg_tape_set_grad(tp, false);
        if (!tg_batches_next(b, tp, &x, &y))
            break;
        tg_tensor logits = tg_forward(net, cnn ? as_images(x) : x);
        tg_tensor best = tg_max(logits, 1, (int[]){1}, true);
        tg_tensor hit = tg_eq(logits, best); /* 1 at the arg max (ties count as hits) */
        double batch_loss = loss ? tg_item(tg_cross_entropy(logits, y, TG_REDUCE_SUM, 0.0)) : 0;
        const float *h = tg_data(hit);
        const int64_t *lab = tg_data(y);
        if (!h || !lab)
            break;
        loss_sum += batch_loss;
        int64_t n = tg_dim(logits, 0), classes = tg_dim(logits, 1);
        for (int64_t i = 0; i < n; i++)
            correct += h[i * classes + lab[i]] > 0;
        seen += n;
    }
    tg_batches_free(b);
    tg_tape_reset(tp);
    tg_module_set_training(net, true);
    double counts[3] = {(double)correct, (double)seen, loss_sum};
    if (group_mean(g, 3, counts) || !counts[1])
        return NAN;
    if (loss)
        *loss = counts[2] / counts[1];
    return counts[0] / counts[1];
}

/* ---- validation, augmentation, the log ------------------------------------------------------
 */

/* Holds c->valid training samples out for validation: *train becomes the rest. */
static tg_status hold_out(tg_ctx *ctx, const config *c, tg_dataset **train, tg_dataset **valid)
{
    if (!c->valid)
        return TG_OK;
    if (c->valid >= tg_dataset_size(*train))
        return tg_ctx_fail(ctx, TG_RANGE, "--valid %lld leaves no training sample (of %lld)",
                           (long long)c->valid, (long long)tg_dataset_size(*train));
    tg_dataset *rest;
    tg_status st = tg_dataset_split(*train, c->valid, c->seed, &rest, valid);
    if (st)
        return st;
    tg_dataset_free(*train);
    *train = rest;
    return TG_OK;
}

static tg_status augment(const config *c, tg_batches *b)
{
    if (!c->crop && !c->flip)
        return TG_OK;
    tg_augment_options o = {.crop_padding = c->crop, .horizontal_flip = c->flip, .seed = c->seed};
    return tg_batches_set_augment(b, &o);
}

/* A log row; a no-op without --log. */
static tg_status log_row(tg_train_log *log, int64_t step, double epoch, double loss,
                         double valid_loss, double valid_acc, double test_acc, double per_s,
                         double lr)
{
    tg_log_row r = {step, epoch, loss, valid_loss, valid_acc, test_acc, per_s, lr};
    return log ? tg_train_log_write(log, &r) : TG_OK;
}

int main(int argc, char **argv)
{
    config c = {.model = "mlp", .batch = 128, .lr = 1e-3, .seed = 1, .data = DEFAULT_DATA};
    if (parse(argc, argv, &c))
        return 2;
    group g;
    group_start(&g, &argc, &argv);
    bool talk = g.rank == 0; /* rank 0 prints */
    bool cnn = !strcmp(c.model, "cnn"), tty = talk && isatty(fileno(stderr));
    char who[32] = "";
    if (g.size > 1)
        snprintf(who, sizeof who, " (rank %d)", g.rank);
    tg_ctx *ctx = NULL;
    tg_tape *tp = NULL;
    tg_dataset *train = NULL, *valid = NULL, *test = NULL;
    tg_module *net = NULL;
    tg_optim *opt = NULL;
    tg_batches *batches = NULL;
    tg_early_stopping *es = NULL;
    tg_train_log *log = NULL;
    tg_ctx_options co = {.threads = c.threads};
    tg_status st = tg_ctx_new(&ctx, &co);
    if (!st)
        st = tg_tape_new(ctx, &tp);
    if (!st)
        st = load_data(ctx, &c, &train, &test, talk);
    if (!st)
        st = hold_out(ctx, &c, &train, &valid);
    if (!st)
        st = build_model(ctx, &c, &net);
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    ao.lr = c.lr;
    if (!st)
        st = tg_adam_new(ctx, tg_module_param_count(net), tg_module_params(net), &ao, &opt);
    if (!st && c.patience)
        st = tg_early_stopping_new(ctx, tg_module_param_count(net), tg_module_params(net),
                                   &(tg_early_stopping_options){.patience = c.patience}, &es);
    if (!st && c.log && talk) /* rank 0 writes the log */
        st = tg_train_log_open(ctx, c.log, "samples", &log);
    /* Together from here: a process that failed above still joins (without a context), so that
     * the others hear of it instead of waiting for it. */
    tg_status joined = group_join(&g, st ? NULL : ctx, net);
    st = st ? st : joined;
    int64_t n = st ? 0 : tg_dataset_size(train);
    if (!st && c.limit && c.limit < n)
        n = c.limit;
    if (!st)
        st = group_batches(&g, train, c.batch, true, c.seed, &batches);
    if (!st)
        st = augment(&c, batches);
    int64_t step_samples = c.batch * g.size; /* samples per step, over every process */
    int64_t per_epoch = (n + step_samples - 1) / step_samples;
    int first = 1;
    if (!st && c.resume) {
        st = group_load(&g, ctx, c.resume, net, opt);
        if (!st) {
            first = (int)(tg_optim_steps(opt) / per_epoch) + 1;
            if (talk)
                printf("resumed from %s after %lld steps (epoch %d)\n", c.resume,
                       (long long)tg_optim_steps(opt), first - 1);
        }
    }
    if (st) {
        fprintf(stderr, "tg-train%s: %s: %s\n", who, tg_status_name(st),
                ctx ? tg_ctx_error(ctx) : "");
        goto done;
    }
    if (talk) {
        printf("tg-train: %s, %lld training and %lld test samples, batch %lld, Adam lr %g, "
               "%d epochs\n",
               c.model, (long long)n, (long long)tg_dataset_size(test), (long long)c.batch, c.lr,
               c.epochs);
        if (g.size > 1)
            printf("data-parallel on %d processes: each takes its shard of every epoch in "
                   "batches of %lld (%lld samples a step in all), gradients averaged over them\n",
                   g.size, (long long)c.batch, (long long)step_samples);
        if (valid)
            printf("validation: %lld samples held out%s\n", (long long)tg_dataset_size(valid),
                   es ? ", early stopping on their loss" : "");
        if (c.crop || c.flip)
            printf("augmentation: random crops with padding %d, horizontal flips %s\n", c.crop,
                   c.flip ? "on" : "off");
    }

    for (int epoch = first; epoch <= c.epochs; epoch++) {
        double t0 = now(), loss_sum = 0, interval_t0 = t0, interval_loss = 0;
        int64_t seen = 0, steps = 0, interval_seen = 0, interval_steps = 0;
        tg_batches_start(batches, epoch);
        for (;;) {
            tg_tensor x = {0}, y = {0};
            tg_tape_reset(tp);
            /* The end of the epoch; a batch that failed goes on, so that backward reports it
             * (to every process). */
            if (seen >= n || (!tg_batches_next(batches, tp, &x, &y) && tg_tape_status(tp) == TG_OK))
                break;
            tg_tensor logits = tg_forward(net, cnn ? as_images(x) : x);
            tg_tensor loss = tg_cross_entropy(logits, y, TG_REDUCE_MEAN, 0.0);
            st = group_backward(&g, loss);
            if (!st)
                st = tg_optim_step(opt, tp);
            if (st) {
                fprintf(stderr, "\ntg-train%s: %s: %s\n", who, tg_status_name(st),
                        tg_tape_error(tp));
                goto done;
            }
            tg_optim_zero_grad(opt);
            loss_sum += tg_item(loss);
            interval_loss += tg_item(loss);
            seen += tg_dim(x, 0) * g.size;
            interval_seen += tg_dim(x, 0) * g.size;
            steps++;
            interval_steps++;
            if (c.log_every && interval_steps == c.log_every && seen < n) {
                double t = now();
                st = log_row(log, tg_optim_steps(opt), epoch - 1 + (double)seen / (double)n,
                             interval_loss / (double)interval_steps, NAN, NAN, NAN,
                             (double)interval_seen / (t - interval_t0), tg_optim_lr(opt));
                if (st)
                    goto failed;
                interval_t0 = t, interval_loss = 0, interval_seen = interval_steps = 0;
            }
            if (tty && (steps % 10 == 0 || seen >= n))
                progress(epoch, c.epochs, seen, n, now() - t0, loss_sum / (double)steps);
        }
        double dt = now() - t0, train_loss = loss_sum / (double)(steps ? steps : 1);
        double valid_loss = NAN,
               valid_acc = valid ? evaluate(&g, net, cnn, valid, tp, &valid_loss) : NAN;
        double acc = evaluate(&g, net, cnn, test, tp, NULL);
        if ((st = group_mean(&g, 1, &train_loss))) {
            fprintf(stderr, "tg-train%s: %s: %s\n", who, tg_status_name(st), tg_ctx_error(ctx));
            goto done;
        }
        if (tty)
            fprintf(stderr, "\r%*s\r", 90, "");
        char valid_text[64] = "";
        if (valid)
            snprintf(valid_text, sizeof valid_text, "valid loss %.4f  ", valid_loss);
        if (talk)
            printf("epoch %2d  train loss %.4f  %stest accuracy %.2f%%  %.0f samples/s  (%.1fs)\n",
                   epoch, train_loss, valid_text, 100 * acc, (double)seen / dt, dt);
        fflush(stdout);
        /* Like every row, the epoch's covers the steps since the row before (the whole epoch
         * without --log-every), its time without the evaluations. */
        st = log_row(log, tg_optim_steps(opt), epoch,
                     interval_loss / (double)(interval_steps ? interval_steps : 1), valid_loss,
                     valid_acc, acc, (double)interval_seen / (t0 + dt - interval_t0),
                     tg_optim_lr(opt));
        if (st)
            goto failed;
        if (c.save) {
            st = group_save(&g, ctx, c.save, net, opt);
            if (st) {
                fprintf(stderr, "tg-train%s: saving %s: %s\n", who, c.save, tg_ctx_error(ctx));
                goto done;
            }
        }
        bool stop = false;
        if (es && (st = tg_early_stopping_update(es, valid_loss, &stop)))
            goto failed;
        if (stop) {
            if (talk)
                printf("early stopping: no better validation loss for %lld epochs\n",
                       (long long)tg_early_stopping_wait(es));
            break;
        }
    }
    if (es && tg_early_stopping_best_index(es) >= 0) {
        /* The best epoch's parameters, as the run's result (and its checkpoint). */
        if ((st = tg_early_stopping_restore(es)))
            goto failed;
        double acc = evaluate(&g, net, cnn, test, tp, NULL);
        if (talk)
            printf("restored epoch %d (validation loss %.4f): test accuracy %.2f%%\n",
                   first + (int)tg_early_stopping_best_index(es), tg_early_stopping_best(es),
                   100 * acc);
        if (c.save && (st = group_save(&g, ctx, c.save, net, opt)))
            goto failed;
    }
    if (c.save && talk)
        printf("checkpoint saved to %s\n", c.save);
    st = tg_train_log_close(log);
    log = NULL;
    if (st)
        goto failed;
    goto done;

failed:
    fprintf(stderr, "tg-train%s: %s: %s\n", who, tg_status_name(st), tg_ctx_error(ctx));
done:
    tg_train_log_close(log);
    tg_early_stopping_free(es);
    tg_batches_free(batches);
    tg_optim_free(opt);
    tg_module_free(net);
    tg_dataset_free(train);
    tg_dataset_free(valid);
    tg_dataset_free(test);
    tg_tape_free(tp);
    group_end(&g);
    tg_ctx_free(ctx);
    return st ? 1 : 0;
}
