/* parallel.c — the parallel loops behind tg__parallel_for and tg__parallel_parts (OpenMP, or
 * serial without it). */
#include "parallel.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int tg__parallel_max(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

void tg__parallel_for(int threads, int64_t n, double cost, tg__range_fn fn, void *user)
{
    if (n <= 0)
        return;
#ifdef _OPENMP
    int t = threads;
    if (t > n)
        t = (int)n;
    if (t > 1 && cost >= TG__PARALLEL_MIN) {
        /* Static, contiguous chunks: each thread streams its own part of memory. */
#pragma omp parallel num_threads(t)
        {
            int id = omp_get_thread_num(), nt = omp_get_num_threads();
            int64_t lo = n * id / nt, hi = n * (id + 1) / nt;
            if (lo < hi)
                fn(user, lo, hi);
        }
        return;
    }
#else
    (void)threads;
    (void)cost;
#endif
    fn(user, 0, n);
}

void tg__parallel_parts(int parts, tg__part_fn fn, void *user)
{
#ifdef _OPENMP
    if (parts > 1) {
#pragma omp parallel num_threads(parts)
        {
            int nt = omp_get_num_threads();
            for (int part = omp_get_thread_num(); part < parts; part += nt)
                fn(user, part, parts);
        }
        return;
    }
#endif
    for (int part = 0; part < parts; part++)
        fn(user, part, parts);
}
