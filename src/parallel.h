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

/* fn(user, part, parts) for every part in [0, parts), each part on a thread of its own when the
 * build has OpenMP (a thread runs several in turn if OpenMP gives fewer threads). For kernels that
 * give each thread its own slice of scratch: `parts` is at most the threads they sized it for. */
typedef void (*tg__part_fn)(void *user, int part, int parts);
void tg__parallel_parts(int parts, tg__part_fn fn, void *user);

/* Work (in element-operations) below which a loop stays on one thread: about 30 us. */
#define TG__PARALLEL_MIN 100000.0

/* Threads the build can use at most (1 without OpenMP). */
int tg__parallel_max(void);

#endif
