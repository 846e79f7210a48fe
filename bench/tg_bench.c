/* tg_bench.c — tg-bench: gradient-throughput benchmarks, reported as medians over repeats after
 * warm-up runs, with the machine and settings they ran on. This file holds the harness (timing,
 * statistics, rows in text or JSON) and main; the suites are in bench/suite_*.c.
 *
 *   tg-bench [--json] [--repeats N] [--warmup N] [--threads N] [--data DIR] [suite...]
 *   suites: scalar overhead elementwise matmul training memory higher rnn (default: all)
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"

/* ---- the harness ---------------------------------------------------------------------------- */

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static bench_stats summarise(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    bench_stats s = {n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), t[0], t[n - 1], n};
    return s;
}

void bench_measure(const bench_options *o, bench_fn fn, void *user, int k, bench_stats *out)
{
    enum { MAX_PARTS = 8 };
    static double t[MAX_PARTS][BENCH_MAX_REPEATS]; /* the program's one measurement at a time */
    double times[MAX_PARTS] = {0};
    if (k > MAX_PARTS)
        k = MAX_PARTS;
    int warmup = o->warmup, n = o->repeats < BENCH_MAX_REPEATS ? o->repeats : BENCH_MAX_REPEATS;
    double t0 = bench_now();
    fn(user, times); /* the first warm-up run always happens: it sizes the rest */
    double first = bench_now() - t0;
    if (first > 1.0) { /* long runs: fewer of them, so a suite stays within minutes */
        warmup = warmup > 1 ? 1 : warmup;
        n = n > 3 ? 3 : n;
    } else if (first * (warmup + n) > 30.0) { /* and at most about 30 s per measurement */
        int fit = (int)(30.0 / first) - warmup, least = n < 3 ? n : 3;
        n = fit < least ? least : fit < n ? fit : n;
    }
    for (int i = 1; i < warmup; i++)
        fn(user, times);
    for (int i = 0; i < n; i++) {
        fn(user, times);
        for (int j = 0; j < k; j++)
            t[j][i] = times[j];
    }
    for (int j = 0; j < k; j++)
        out[j] = summarise(t[j], n);
}

bench_stats bench_per(bench_stats s, double scale)
{
    bench_stats r = {s.median * scale, s.min * scale, s.max * scale, s.repeats};
    return r;
}

bench_stats bench_rate(bench_stats s, double work)
{
    bench_stats r = {work / s.median, work / s.max, work / s.min, s.repeats};
    return r;
}

static bool first_row = true;
static char notes[8192];
static size_t notes_len;

/* Writes `s` as a JSON string. */
static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

void bench_suite(const bench_options *o, const char *suite, const char *what)
{
    if (!o->json)
        printf("%s: %s\n", suite, what);
}

void bench_row(const bench_options *o, const char *suite, const char *name, const char *unit,
               bench_stats s, int n, const bench_extra *extras)
{
    if (o->json) {
        printf("%s    {\"suite\": ", first_row ? "" : ",\n");
        json_string(suite);
        printf(", \"name\": ");
        json_string(name);
        printf(", \"unit\": ");
        json_string(unit);
        printf(", \"median\": %.7g, \"min\": %.7g, \"max\": %.7g, \"repeats\": %d", s.median, s.min,
               s.max, s.repeats);
        for (int i = 0; i < n; i++)
            printf(", \"%s\": %.10g", extras[i].key, extras[i].value);
        printf("}");
        first_row = false;
    } else {
        printf("  %-40s %11.3f %-9s", name, s.median, unit);
        if (s.min != s.max)
            printf(" (min %.3f, max %.3f)", s.min, s.max);
        if (s.repeats != o->repeats && !(s.min == s.max))
            printf("  [%d runs]", s.repeats);
        for (int i = 0; i < n; i++) {
            double v = extras[i].value;
            if (v == (double)(int64_t)v && fabs(v) < 1e15)
                printf("  %s %lld", extras[i].key, (long long)v);
            else
                printf("  %s %.4g", extras[i].key, v);
        }
        printf("\n");
    }
    fflush(stdout);
}

void bench_note(const bench_options *o, const char *suite, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (!o->json) {
        printf("  (%s)\n", text);
        return;
    }
    size_t room = sizeof notes - notes_len;
    int w = snprintf(notes + notes_len, room, "%s%s: %s", notes_len ? "\n" : "", suite, text);
    if (w > 0 && (size_t)w < room)
        notes_len += (size_t)w;
}

tg_ctx *bench_ctx(const bench_options *o)
{
    tg_ctx *ctx;
    tg_ctx_options co = {.threads = o->threads};
    if (tg_ctx_new(&ctx, &co) != TG_OK) {
        fprintf(stderr, "tg-bench: cannot create a context\n");
        exit(1);
    }
    return ctx;
}

/* xorshift64 steps, each depending on the last: the core's integer units and nothing else. */
static uint64_t spin(uint64_t n)
{
    uint64_t x = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

/* Seconds for `procs` processes to run the loop at once (-1 if one could not start). */
static double probe_run(int procs)
{
    enum { STEPS = 100000000 }; /* about 0.1 s */
    pid_t pid[2];
    double t0 = bench_now();
    int started = 0;
    for (; started < procs; started++) {
        fflush(stdout);
        pid[started] = fork();
        if (pid[started] < 0)
            break;
        if (pid[started] == 0)
            _exit(spin(STEPS) == 0); /* the result, so the loop is not optimised away */
    }
    for (int i = 0; i < started; i++)
        waitpid(pid[i], NULL, 0);
    return started == procs ? bench_now() - t0 : -1;
}

double bench_core_probe(void)
{
    double best[2] = {0, 0};
    for (int round = 0; round < 3; round++) /* the fastest of three of each */
        for (int p = 1; p <= 2; p++) {
            double t = probe_run(p);
            if (t < 0)
                return NAN;
            best[p - 1] = round == 0 || t < best[p - 1] ? t : best[p - 1];
        }
    return 2 * best[0] / best[1];
}

/* ---- the machine ---------------------------------------------------------------------------- */

typedef struct machine {
    char cpu[256];
    int family, model;
    long cores;
    double mem_gib;
    char kernel[200];
    char date[64];
    double load; /* 1-minute load average at the start: other work on the machine */
    const char *build;
    char vmath[32], gemm[32], openmp[8];
} machine;

/* Copies the value after "key<spaces>:" from the first line of `path` starting with key. */
static bool proc_field(const char *path, const char *key, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    bool found = false;
    size_t klen = strlen(key);
    while (f && !found && fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) || !strchr(line, ':'))
            continue;
        const char *v = strchr(line, ':') + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        snprintf(out, size, "%s", v);
        out[strcspn(out, "\n")] = 0;
        found = true;
    }
    if (f)
        fclose(f);
    return found;
}

/* The value of `key=` in tg_build_info's string. */
static void build_field(const char *info, const char *key, char *out, size_t size)
{
    const char *p = strstr(info, key);
    snprintf(out, size, "?");
    if (p) {
        p += strlen(key);
        size_t n = strcspn(p, " ");
        snprintf(out, size, "%.*s", (int)n, p);
    }
}

static void machine_read(machine *m, const bench_options *o)
{
    char v[256];
    memset(m, 0, sizeof *m);
    if (!proc_field("/proc/cpuinfo", "model name", m->cpu, sizeof m->cpu))
        snprintf(m->cpu, sizeof m->cpu, "unknown");
    m->family = proc_field("/proc/cpuinfo", "cpu family", v, sizeof v) ? atoi(v) : -1;
    m->model = proc_field("/proc/cpuinfo", "model\t", v, sizeof v) ? atoi(v) : -1;
    m->cores = sysconf(_SC_NPROCESSORS_ONLN);
    double load[1] = {-1};
    m->load = getloadavg(load, 1) == 1 ? load[0] : -1;
    m->mem_gib = proc_field("/proc/meminfo", "MemTotal", v, sizeof v) ? atof(v) / 1048576.0 : 0;
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(m->kernel, sizeof m->kernel, "%s %s", u.sysname, u.release);
    time_t now = time(NULL);
    strftime(m->date, sizeof m->date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    m->build = tg_build_info();
    build_field(m->build, "vmath=", m->vmath, sizeof m->vmath);
    build_field(m->build, "gemm=", m->gemm, sizeof m->gemm);
    build_field(m->build, "openmp=", m->openmp, sizeof m->openmp);
    (void)o;
}

static void machine_print(const machine *m, const bench_options *o, int nsuites,
                          const char *const *suites)
{
    if (!o->json) {
        printf("tg-bench %d.%d.%d: median of %d repeats after %d warm-up runs (min, max beside)\n",
               TG_VERSION_MAJOR, TG_VERSION_MINOR, TG_VERSION_PATCH, o->repeats, o->warmup);
        printf("machine: %s (family %d, model %d), %ld cores, %.1f GiB, %s, load average %.2f\n",
               m->cpu, m->family, m->model, m->cores, m->mem_gib, m->kernel, m->load);
        printf("tapegrad: %s; %d thread%s; %s\n", m->build, o->threads, o->threads == 1 ? "" : "s",
               m->date);
        return;
    }
    printf("{\n  \"tool\": \"tg-bench\",\n  \"version\": \"%d.%d.%d\",\n", TG_VERSION_MAJOR,
           TG_VERSION_MINOR, TG_VERSION_PATCH);
    printf("  \"machine\": {\"cpu\": ");
    json_string(m->cpu);
    printf(", \"cpu_family\": %d, \"cpu_model\": %d, \"cores\": %ld, \"memory_gib\": %.1f, "
           "\"kernel\": ",
           m->family, m->model, m->cores, m->mem_gib);
    json_string(m->kernel);
    printf(", \"load_average\": %.2f, \"threads\": %d, \"build\": ", m->load, o->threads);
    json_string(m->build);
    printf(", \"vmath\": ");
    json_string(m->vmath);
    printf(", \"gemm\": ");
    json_string(m->gemm);
    printf(", \"openmp\": ");
    json_string(m->openmp);
    printf(", \"compiler\": ");
#if defined(__clang__)
    json_string(__VERSION__);
#elif defined(__GNUC__)
    json_string("gcc " __VERSION__);
#else
    json_string("unknown");
#endif
    printf("},\n  \"settings\": {\"repeats\": %d, \"warmup\": %d, \"date\": ", o->repeats,
           o->warmup);
    json_string(m->date);
    printf(", \"suites\": [");
    for (int i = 0; i < nsuites; i++) {
        printf("%s", i ? ", " : "");
        json_string(suites[i]);
    }
    printf("]},\n  \"rows\": [\n");
}

/* ---- main ----------------------------------------------------------------------------------- */

typedef struct suite {
    const char *name;
    int (*run)(const bench_options *o);
} suite;

static const suite suites[] = {
    {"scalar", bench_scalar}, {"overhead", bench_overhead}, {"elementwise", bench_elementwise},
    {"matmul", bench_matmul}, {"training", bench_training}, {"memory", bench_memory},
    {"higher", bench_higher}, {"rnn", bench_rnn},
};
enum { NSUITES = sizeof suites / sizeof suites[0] };

static void usage(FILE *f)
{
    fprintf(f, "usage: tg-bench [--json] [--repeats N] [--warmup N] [--threads N] [--data DIR]"
               " [suite...]\n"
               "suites:");
    for (int i = 0; i < NSUITES; i++)
        fprintf(f, " %s", suites[i].name);
    fprintf(f, " (default: all)\n"
               "--threads N  tapegrad's threads (default 1)\n"
               "--data DIR   Fashion-MNIST (default " DEFAULT_DATA ")\n");
}

int main(int argc, char **argv)
{
    bench_options o = {15, 3, 1, false, DEFAULT_DATA, "/proc/self/exe"};
    const char *chosen[NSUITES];
    int nchosen = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(a, "--json"))
            o.json = true;
        else if (!strcmp(a, "--repeats") && has_value)
            o.repeats = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && has_value)
            o.warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && has_value)
            o.threads = atoi(argv[++i]);
        else if (!strcmp(a, "--data") && has_value)
            o.data = argv[++i];
        else if (!strcmp(a, "--memory-child") && i + 2 < argc) {
            i += 2;
            if (o.threads < 1)
                o.threads = 1;
            return bench_memory_child(&o, argv[i - 1], atoll(argv[i]));
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            int k = 0;
            while (k < NSUITES && strcmp(a, suites[k].name))
                k++;
            if (k == NSUITES) {
                fprintf(stderr, "tg-bench: unknown suite or option '%s'\n", a);
                usage(stderr);
                return 2;
            }
            if (nchosen < NSUITES)
                chosen[nchosen++] = suites[k].name;
        }
    }
    if (o.repeats < 1)
        o.repeats = 1;
    if (o.repeats > BENCH_MAX_REPEATS)
        o.repeats = BENCH_MAX_REPEATS;
    if (o.warmup < 1)
        o.warmup = 1;
    if (o.threads < 1)
        o.threads = 1;
    if (!nchosen)
        for (int k = 0; k < NSUITES; k++)
            chosen[nchosen++] = suites[k].name;

    machine m;
    machine_read(&m, &o);
    machine_print(&m, &o, nchosen, chosen);
    int failed = 0, skipped = 0;
    for (int k = 0; k < NSUITES; k++)
        for (int i = 0; i < nchosen; i++)
            if (!strcmp(chosen[i], suites[k].name)) {
                int r = suites[k].run(&o);
                failed += r != 0 && r != BENCH_SKIPPED;
                skipped += r == BENCH_SKIPPED;
            }
    if (o.json) {
        printf("\n  ],\n  \"notes\": [");
        const char *p = notes;
        for (bool first = true; notes_len && *p; first = false) {
            char line[1100];
            size_t n = strcspn(p, "\n");
            snprintf(line, sizeof line, "%.*s", (int)n, p);
            printf("%s\n    ", first ? "" : ",");
            json_string(line);
            p += n + (p[n] == '\n');
        }
        printf("%s]\n}\n", notes_len ? "\n  " : "");
    }
    /* 77: Meson's "skipped", when nothing could run. */
    return failed ? 1 : skipped == nchosen ? BENCH_SKIPPED : 0;
}
