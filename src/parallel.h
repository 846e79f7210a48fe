/* parallel.h — the engine's one threading primitive, for kernels: a parallel loop over [0, n) in
 * chunks, on up to `threads` threads (the context's setting, tg_kernel.threads), and only when
 * the work is large enough to pay for it. OpenMP when the build has it, else a plain loop. */
#ifndef TG_PARALLEL_H
#define TG_PARALLEL_H

#include <stdint.h>

/* fn(user, begin, end) over disjoint ranges covering [0, n). `cost` is the work of the whole
 * loop in rough element-operations: below tg__PARALLEL_MIN it runs on the calling thread. */
typedef void (*tg__range_fn)(void *user, int64_t begin, int64_t end);
void tg__parallel_for(int threads, int64_t n, double cost, tg__range_fn fn, void *user);

/* Work (in element-operations) below which a loop stays on one thread: about 30 us. */
#define TG__PARALLEL_MIN 100000.0

/* Threads the build can use at most (1 without OpenMP). */
int tg__parallel_max(void);

#endif
