/* random.c — counter-based random fills: value i depends only on (seed, i), so results are
 * reproducible across machines and thread counts, and no generator state exists anywhere. */
#include "internal.h"

#include <math.h>

uint64_t tg__mix64(uint64_t x)
{
    /* SplitMix64's finaliser: a bijection with good avalanche. */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Uniform on [0, 1) with 53 random bits. */
static double unit(uint64_t seed, uint64_t i)
{
    uint64_t r = tg__mix64(tg__mix64(seed) ^ (i * 0xd1b54a32d192ed03ull));
    return (double)(r >> 11) * 0x1.0p-53;
}

static void store(tg_dtype dt, void *data, int64_t i, double v)
{
    if (dt == TG_F32)
        ((float *)data)[i] = (float)v;
    else if (dt == TG_F64)
        ((double *)data)[i] = v;
    else
        ((int64_t *)data)[i] = (int64_t)v;
}

void tg__fill_value(tg_dtype dt, void *data, int64_t n, double value)
{
    if (value == 0.0 && !signbit(value)) {
        memset(data, 0, (size_t)n * tg_dtype_size(dt));
        return;
    }
    for (int64_t i = 0; i < n; i++)
        store(dt, data, i, value);
}

void tg__fill_uniform(tg_dtype dt, void *data, int64_t n, double low, double high, uint64_t seed)
{
    for (int64_t i = 0; i < n; i++) {
        double v = low + (high - low) * unit(seed, (uint64_t)i);
        if (dt == TG_F32 && (float)v >= (float)high && high > low)
            v = nextafterf((float)high, (float)low); /* keep [low, high) after rounding */
        store(dt, data, i, v);
    }
}

void tg__fill_normal(tg_dtype dt, void *data, int64_t n, double mean, double std, uint64_t seed)
{
    /* Box-Muller on pairs (2k, 2k+1). */
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = 1.0 - unit(seed, (uint64_t)i); /* (0, 1]: log is finite */
        double u2 = unit(seed, (uint64_t)i + 1);
        double r = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
        store(dt, data, i, mean + std * r * cos(th));
        if (i + 1 < n)
            store(dt, data, i + 1, mean + std * r * sin(th));
    }
}
