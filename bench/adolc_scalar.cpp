/* adolc_scalar.cpp — adolc-scalar: tg-bench's scalar functions taped with ADOL-C's adouble
 * (trace_on/trace_off) and differentiated with gradient() (a zero-order forward sweep over the
 * tape, then the reverse sweep), for bench/compare.py. Record + gradient time per run, reported
 * in ns per ADOL-C taped operation (tapestats' NUM_OPERATIONS, which counts ADOL-C's own
 * operations: assignments of independents, operations with constants, and so on) and in ns per
 * tapegrad node of the same function (the entries tg-bench's scalar suite records for it).
 *
 *   adolc-scalar [--json] [--repeats N] [--warmup N]
 */
#include <adolc/adolc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace
{

double now()
{
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

struct stats {
    double median, min, max;
};

stats summarise(std::vector<double> t)
{
    std::sort(t.begin(), t.end());
    size_t n = t.size();
    return {n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), t.front(), t.back()};
}

struct options {
    int repeats = 15, warmup = 3;
    bool json = false;
};

/* A function to tape: records it on `tag` from the point x and returns the number of
 * tapegrad nodes the same function has in tg-bench. */
struct problem {
    const char *name;
    int n;           /* independents */
    size_t tg_nodes; /* tapegrad scalar entries for the same function */
    void (*record)(short tag, const std::vector<double> &x, int size);
    int size;
};

/* Buffer sizes for trace_on, large enough that the whole tape stays in memory (ADOL-C writes
 * tapes beyond its buffers to files in the working directory). */
unsigned buffer_for(size_t ops) { return (unsigned)std::max<size_t>(524288, 4 * ops); }

/* Rosenbrock on n scalars, as tg-bench's scalar suite writes it. */
void rosen_record(short tag, const std::vector<double> &x, int n)
{
    unsigned b = buffer_for((size_t)12 * n);
    trace_on(tag, 0, b, b, b, b);
    std::vector<adouble> ax(n);
    for (int i = 0; i < n; i++)
        ax[i] <<= x[i];
    adouble acc = 0.0;
    for (int i = 1; i < n; i++) {
        adouble d = ax[i] - ax[i - 1] * ax[i - 1];
        adouble e = 1.0 - ax[i - 1];
        acc += 100.0 * (d * d) + e * e;
    }
    double y;
    acc >>= y;
    trace_off();
}

std::vector<double> rosen_point(int n)
{
    std::vector<double> x(n);
    for (int i = 0; i < n; i++)
        x[i] = 0.001 * (i % 1000);
    return x;
}

/* micrograd's MLP(2, [16, 16, 1]) on a batch of 32 points with a mean squared error, as
 * tg-bench's scalar suite writes it: b + sum w_i x_i per neuron, ReLU on the hidden layers. */
enum { MLP_BATCH = 32, MLP_H = 16, MLP_PARAMS = 3 * MLP_H + MLP_H * MLP_H + MLP_H + MLP_H + 1 };

struct mlp_data {
    double x[MLP_BATCH][2], y[MLP_BATCH];
};

mlp_data mlp_points()
{
    mlp_data d;
    for (int i = 0; i < MLP_BATCH; i++) {
        double t = 3.14159265358979 * (i / 2) / (MLP_BATCH / 2 - 1);
        bool upper = i % 2 == 0;
        d.x[i][0] = upper ? std::cos(t) : 1.0 - std::cos(t);
        d.x[i][1] = upper ? std::sin(t) : 0.5 - std::sin(t);
        d.y[i] = upper ? 1.0 : -1.0;
    }
    return d;
}

std::vector<double> mlp_weights()
{
    std::vector<double> w(MLP_PARAMS);
    uint64_t s = 42;
    for (int i = 0; i < MLP_PARAMS; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        w[i] = (double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
    }
    return w;
}

void mlp_record(short tag, const std::vector<double> &w, int)
{
    static const mlp_data d = mlp_points();
    unsigned b = buffer_for(40000);
    trace_on(tag, 0, b, b, b, b);
    std::vector<adouble> p(MLP_PARAMS), h1(MLP_H), h2(MLP_H);
    for (int i = 0; i < MLP_PARAMS; i++)
        p[i] <<= w[i];
    const adouble *w1 = p.data(), *b1 = w1 + 2 * MLP_H, *w2 = b1 + MLP_H, *b2 = w2 + MLP_H * MLP_H,
                  *w3 = b2 + MLP_H, *b3 = w3 + MLP_H;
    adouble loss = 0.0;
    for (int s = 0; s < MLP_BATCH; s++) {
        for (int o = 0; o < MLP_H; o++) {
            adouble acc = b1[o];
            for (int i = 0; i < 2; i++)
                acc = acc + w1[o * 2 + i] * d.x[s][i];
            h1[o] = fmax(acc, 0.0);
        }
        for (int o = 0; o < MLP_H; o++) {
            adouble acc = b2[o];
            for (int i = 0; i < MLP_H; i++)
                acc = acc + w2[o * MLP_H + i] * h1[i];
            h2[o] = fmax(acc, 0.0);
        }
        adouble out = b3[0];
        for (int i = 0; i < MLP_H; i++)
            out = out + w3[i] * h2[i];
        adouble e = out - d.y[s];
        loss = loss + e * e;
    }
    loss = loss * (1.0 / MLP_BATCH);
    double y;
    loss >>= y;
    trace_off();
}

void json_row(bool &first, const char *name, const char *unit, stats s, int repeats,
              const char *extras)
{
    std::printf("%s    {\"suite\": \"scalar\", \"name\": \"%s\", \"unit\": \"%s\", \"median\": "
                "%.6g, \"min\": %.6g, \"max\": %.6g, \"repeats\": %d%s}",
                first ? "" : ",\n", name, unit, s.median, s.min, s.max, repeats, extras);
    first = false;
}

} // namespace

int main(int argc, char **argv)
{
    options o;
    for (int i = 1; i < argc; i++) {
        if (!std::strcmp(argv[i], "--json"))
            o.json = true;
        else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc)
            o.repeats = std::max(1, std::atoi(argv[++i]));
        else if (!std::strcmp(argv[i], "--warmup") && i + 1 < argc)
            o.warmup = std::max(0, std::atoi(argv[++i]));
        else {
            std::printf("usage: adolc-scalar [--json] [--repeats N] [--warmup N]\n");
            return !std::strcmp(argv[i], "--help") ? 0 : 2;
        }
    }
    /* tapegrad's node counts: micrograd's 337 parameters, 640 operations per sample and 96 for
     * the loss; Rosenbrock's two leading leaves and ten entries per term. compare.py uses
     * tg-bench's own counts when it has them. */
    const problem problems[] = {
        {"micrograd MLP 2-16-16-1, batch 32", MLP_PARAMS, MLP_PARAMS + 640 * MLP_BATCH + 96,
         mlp_record, 0},
        {"rosenbrock n=1000", 1000, 2 + 10 * 999, rosen_record, 1000},
        {"rosenbrock n=100000", 100000, 2 + 10 * 99999, rosen_record, 100000},
    };
    if (o.json)
        std::printf("{\n  \"tool\": \"adolc-scalar\",\n  \"adolc\": \"%s\",\n  \"rows\": [\n",
                    ADOLC_VERSION_STRING);
    else
        std::printf("adolc-scalar (ADOL-C %s): record + gradient(), median of %d repeats after "
                    "%d warm-up runs\n",
                    ADOLC_VERSION_STRING, o.repeats, o.warmup);
    bool first = true;
    short tag = 1;
    for (const problem &p : problems) {
        std::vector<double> x = p.size ? rosen_point(p.size) : mlp_weights();
        std::vector<double> g(p.n);
        std::vector<double> total, rec;
        double sink = 0;
        for (int r = 0; r < o.warmup + o.repeats; r++) {
            double t0 = now();
            p.record(tag, x, p.size);
            double t1 = now();
            gradient(tag, p.n, x.data(), g.data());
            double t2 = now();
            sink += g[0];
            if (r >= o.warmup) {
                total.push_back(t2 - t0);
                rec.push_back(t1 - t0);
            }
        }
        size_t st[STAT_SIZE];
        tapestats(tag, st);
        double ops = (double)st[NUM_OPERATIONS], nodes = (double)p.tg_nodes;
        stats s = summarise(total), r = summarise(rec);
        stats per_op = {s.median * 1e9 / ops, s.min * 1e9 / ops, s.max * 1e9 / ops};
        bool on_file = st[OP_FILE_ACCESS] || st[LOC_FILE_ACCESS] || st[VAL_FILE_ACCESS];
        if (o.json) {
            char extras[512];
            std::snprintf(extras, sizeof extras,
                          ", \"taped_ops\": %.0f, \"tg_nodes\": %.0f, \"ns_per_tg_node\": %.6g, "
                          "\"seconds\": %.6g, \"record_share\": %.3f, \"tape_on_file\": %d",
                          ops, nodes, s.median * 1e9 / nodes, s.median, r.median / s.median,
                          on_file ? 1 : 0);
            json_row(first, p.name, "ns/op", per_op, o.repeats, extras);
        } else {
            std::printf("  %-40s %11.3f ns/op     (min %.3f, max %.3f)  taped_ops %.0f  "
                        "ns_per_tg_node %.4g  record_share %.2f%s\n",
                        p.name, per_op.median, per_op.min, per_op.max, ops, s.median * 1e9 / nodes,
                        r.median / s.median, on_file ? "  (tape spilled to files)" : "");
        }
        if (sink == 12345.678)
            std::printf("\n");
        tag++;
    }
    if (o.json)
        std::printf("\n  ]\n}\n");
    return 0;
}
