/* bench.h — the harness shared by tg-bench's suites: options, timing, statistics over repeats,
 * and the rows every suite prints (text or JSON). Suites use the public API only. */
#ifndef TG_BENCH_H
#define TG_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tapegrad.h>

#define BENCH_MAX_REPEATS 1000

typedef struct bench_options {
    int repeats;      /* timed runs per measurement */
    int warmup;       /* untimed runs before them */
    int threads;      /* tapegrad's threads */
    bool json;        /* one JSON document instead of text */
    const char *data; /* Fashion-MNIST directory */
    const char *self; /* this program, for the memory suite's child processes */
} bench_options;

/* Median, minimum and maximum of the repeats, and how many there were. */
typedef struct bench_stats {
    double median, min, max;
    int repeats;
} bench_stats;

/* A named number printed after a row's figures (and as a field of its JSON object). */
typedef struct bench_extra {
    const char *key;
    double value;
} bench_extra;

double bench_now(void);

/* A run of a benchmark: does the work once and writes the seconds of each of its `k` timed parts
 * into times[0..k-1]. */
typedef void (*bench_fn)(void *user, double *times);

/* Runs fn warmup times, then `repeats` times, and summarises each of its k timed parts into
 * out[0..k-1] (seconds). Long runs get fewer repeats: 3 after one warm-up run when the first
 * run takes over a second, else as many as fit in about 30 s (at least 3). */
void bench_measure(const bench_options *o, bench_fn fn, void *user, int k, bench_stats *out);

/* Seconds to a per-item cost: each figure times `scale` (e.g. 1e9 / items for ns per item). */
bench_stats bench_per(bench_stats seconds, double scale);
/* Seconds to a rate: `work` / seconds (the fastest run gives the maximum). */
bench_stats bench_rate(bench_stats seconds, double work);

/* Prints a suite's heading (text mode only). */
void bench_suite(const bench_options *o, const char *suite, const char *what);
/* Prints one row: its figures, and n extras. A single measurement passes median = min = max
 * (text mode then prints no range). */
void bench_row(const bench_options *o, const char *suite, const char *name, const char *unit,
               bench_stats s, int n, const bench_extra *extras);
/* A note under the current suite (text) or a "note" row (JSON). */
void bench_note(const bench_options *o, const char *suite, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* How many cores the host gives two busy processes now: a fixed compute loop (no memory
 * traffic) timed in one process, then in two at once; 2 * one / two (about 2 on two free cores,
 * 1 when the host shares one between them). NaN if a process could not start. */
double bench_core_probe(void);

/* Creates a context with the options' thread count (exits on failure). */
tg_ctx *bench_ctx(const bench_options *o);

/* The suites. Each returns 0, 1 when something failed (after saying what), or BENCH_SKIPPED
 * when it cannot run here (no dataset). */
#define BENCH_SKIPPED 77
int bench_scalar(const bench_options *o);
int bench_overhead(const bench_options *o);
int bench_elementwise(const bench_options *o);
int bench_matmul(const bench_options *o);
int bench_training(const bench_options *o);
int bench_memory(const bench_options *o);
int bench_higher(const bench_options *o);
int bench_rnn(const bench_options *o);

/* Shared by the training and memory suites: the models of tg-train and its data. */
tg_module *bench_model(tg_ctx *ctx, bool cnn);
/* Whether o->data holds the Fashion-MNIST training set. */
bool bench_have_data(const bench_options *o);
/* Loads that training set (NULL, with a message, if it cannot). */
tg_dataset *bench_dataset(const bench_options *o, tg_ctx *ctx);
/* One training step (batch, forward, cross-entropy, backward, Adam, zero_grad) on the next batch
 * of `b` in order, starting the next epoch at the end of one; returns the tape's status. */
tg_status bench_train_step(tg_module *net, bool cnn, tg_optim *opt, tg_batches *b, tg_tape *tp,
                           int64_t *epoch);
/* Runs as the memory suite's child: `tg-bench --memory-child mlp|cnn BATCH`. */
int bench_memory_child(const bench_options *o, const char *model, int64_t batch);

#endif
