/* tapegrad/dist.h — data-parallel training over MPI: the same step on N processes as on one.
 *
 * Every process (rank) holds the whole model and trains on its own shard of every batch; before
 * the optimiser step the ranks average their gradients, as PyTorch's DistributedDataParallel and
 * Horovod do: in buckets, each bucket's non-blocking allreduce (MPI_Iallreduce) started during
 * backward as soon as all its gradients are final, and waited for before the step. Present when
 * tapegrad is built with MPI (the Meson option `mpi`; `pkg-config --variable=mpi tapegrad` says
 * "yes"). Include it after or instead of <tapegrad.h>; it includes <mpi.h>.
 *
 *     MPI_Init(&argc, &argv);
 *     ...                                          // ctx, tp, net, opt, data as usual
 *     tg_dist *dist;
 *     tg_dist_new(ctx, tg_module_param_count(net), tg_module_params(net), NULL, &dist);
 *     tg_batches *b;                               // this rank's shard of every epoch
 *     tg_dist_batches_new(dist, data, 64, true, seed, false, &b);
 *     for (tg_batches_start(b, epoch);;) {
 *         tg_tape_reset(tp);
 *         if (!tg_batches_next(b, tp, &x, &y) && tg_tape_status(tp) == TG_OK)
 *             break;                               // the end: the same step on every rank
 *         tg_tensor loss = tg_cross_entropy(tg_forward(net, x), y, TG_REDUCE_MEAN, 0.0);
 *         tg_dist_backward(dist, loss);            // gradients averaged over the ranks
 *         tg_optim_step(opt, tp);                  // skipped on every rank if one failed
 *         tg_optim_zero_grad(opt);
 *     }
 *     tg_dist_free(dist);                          // ... then MPI_Finalize()
 *
 * Conventions, true of every function taking a tg_dist:
 * - It is collective: every rank of the handle's communicator calls it, in the same order, with
 *   matching arguments. A rank whose own part fails (bad input, an allocation, a NaN loss) still
 *   takes part, so nothing hangs, and every rank returns an error: that rank its own, the others
 *   TG_PEER, whose message names the failing rank and quotes its message. Nothing that the call
 *   would have changed changes on any rank, so parameters stay identical everywhere.
 * - MPI errors come back as TG_COMM with MPI's own message: the handle's communicator returns
 *   errors instead of aborting. After one the handle is broken and every later call returns
 *   TG_COMM at once (MPI gives no guarantee after an error; other ranks may be left waiting).
 * - Messages go where tapegrad's always go: on the tape for tg_dist_backward and
 *   tg_dist_sync_grads, in tg_ctx_error of the handle's context for the others.
 * - MPI must be initialised before tg_dist_new (MPI_Init, or MPI_Init_thread with at least
 *   MPI_THREAD_FUNNELED when tapegrad runs threads) and finalised after tg_dist_free. tapegrad
 *   calls MPI only from the thread that calls these functions.
 */
#ifndef TAPEGRAD_DIST_H
#define TAPEGRAD_DIST_H

#include <mpi.h>

#include <tapegrad.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility push(default)
#endif

typedef struct tg_dist tg_dist; /* a data-parallel group of processes; opaque */

/* Options for tg_dist_new. Zero means default: fill with designated initialisers. */
typedef struct tg_dist_options {
    MPI_Comm comm;       /* the processes; MPI_COMM_NULL (or a zeroed field): MPI_COMM_WORLD */
    size_t bucket_bytes; /* gradient bytes per bucket; 0: 25 MiB, PyTorch's bucket_cap_mb */
    bool after_backward; /* start the allreduces after backward, not during it (to measure) */
} tg_dist_options;

/* Collective over opts->comm (duplicated: tapegrad's traffic never meets yours). A handle to
 * train the n parameters data-parallel, as torch.nn.parallel.DistributedDataParallel wraps a
 * model: checks that every rank passed the same list (names, dtypes, shapes; TG_SHAPE naming the
 * first difference), then copies rank 0's values to every rank (tg_dist_broadcast). The list may
 * hold buffers too (tg_module_state): they are broadcast, and have no gradient to average. The
 * parameters' gradients are averaged in buckets of at most bucket_bytes (a larger parameter gets
 * one of its own), filled in the reverse order of `params`: the order backward finishes them when
 * `params` is in forward order (DDP's rule); a bucket starts once it and every bucket before it
 * are complete. On failure
 * *out is NULL on every rank and no parameter changed. MPI not initialised (or finalised), an
 * intercommunicator, parameters of another context or repeated: TG_INVALID. Free with
 * tg_dist_free. */
tg_status tg_dist_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_dist_options *opts,
                      tg_dist **out);
/* Collective. Frees the handle and its communicator (only its memory once MPI is finalised). The
 * parameters stay. NULL: no-op. */
void tg_dist_free(tg_dist *d);
/* This process's rank and the number of ranks (-1 and 0 for NULL). */
int tg_dist_rank(const tg_dist *d);
int tg_dist_size(const tg_dist *d);
/* The handle's own communicator: a duplicate of opts->comm whose error handler returns errors.
 * Owned by the handle, valid until tg_dist_free. MPI_COMM_NULL for NULL. */
MPI_Comm tg_dist_comm(const tg_dist *d);

/* Collective. Copies rank 0's values of n parameters or buffers (any dtype) to every rank
 * (torch.distributed's broadcast from rank 0; DDP's broadcast_buffers). Each rank
 * receives a whole parameter before writing it. Lists that differ between ranks: TG_SHAPE, as
 * in tg_dist_new, with nothing changed. */
tg_status tg_dist_broadcast(tg_dist *d, size_t n, tg_param *const *params);

/* Collective. The data-parallel backward: tg_backward(loss) on every rank, each bucket's
 * allreduce started as soon as backward has finished its gradients (through the tape's
 * gradient-ready hook, which this call sets and removes), then waited for; afterwards every
 * parameter of the handle holds the average over the ranks of what tg_backward would have left
 * in it (its gradient before the call plus this backward's), identical on every rank. So micro-
 * batches accumulated with plain tg_backward calls are averaged with the last one. A rank fails
 * the step when its tape is in error (say after a bad forward), its loss is not finite (TG_RANGE)
 * or its backward fails; then every rank fails it (see the conventions): no gradient changes,
 * every tape holds the error, and tg_optim_step(opt, tp) changes nothing. The loss must have one
 * element. Returns the tape's status. */
tg_status tg_dist_backward(tg_dist *d, tg_tensor loss);
/* Collective. Averages the handle's gradients over the ranks now, in the same buckets, for a
 * backward of your own (tg_grad, a custom loop). `tp` carries this rank's errors as in
 * tg_optim_step: a tape in error fails the step on every rank (nothing changes; the others'
 * tapes get TG_PEER). NULL tp: this rank fails the step with TG_INVALID. */
tg_status tg_dist_sync_grads(tg_dist *d, tg_tape *tp);

/* What the handle has done, for tuning buckets and measuring overlap. */
typedef struct tg_dist_stats {
    size_t buckets;             /* buckets the gradients are averaged in */
    size_t bytes;               /* gradient bytes per step, all buckets */
    size_t started_in_backward; /* buckets the last step started during its backward (so far,
                                   while one runs) */
    int64_t steps;              /* tg_dist_backward and tg_dist_sync_grads calls completed */
    int64_t skipped;            /* of those, steps some rank failed (no rank updated) */
    double exposed_seconds;     /* over those steps, the wall time spent communicating:
                                   in MPI calls during backward, and from its end to the end of
                                   the allreduces (what overlap did not hide) */
} tg_dist_stats;
/* The handle's counters (zeros for NULL). Not collective. */
tg_dist_stats tg_dist_get_stats(const tg_dist *d);

/* Collective. This rank's shard of every epoch (tg_batches_new_shard with shard = rank, nshards
 * = size: PyTorch's DistributedSampler), after checking that every rank passed the same seed,
 * batch size, flags and dataset size (TG_INVALID naming the difference otherwise). Every rank
 * then takes the same number of steps per epoch. */
tg_status tg_dist_batches_new(tg_dist *d, const tg_dataset *data, int64_t batch_size, bool shuffle,
                              uint64_t seed, bool drop_last, tg_batches **out);

/* Collective. Rank 0 writes the checkpoint (tg_checkpoint_save); the others write nothing and
 * return once it is complete, with rank 0's status (TG_PEER quoting its message on failure). */
tg_status tg_dist_checkpoint_save(tg_dist *d, const char *path, size_t n, tg_param *const *params,
                                  const tg_optim *opt);
/* Collective. Every rank loads the checkpoint (tg_checkpoint_load), then the ranks check that
 * they hold identical values (tg_dist_check_identical). If a rank could not load, or the values
 * differ (a path that is not the same file everywhere), every rank fails and is given rank 0's
 * parameters and optimiser state, so the ranks still agree. */
tg_status tg_dist_checkpoint_load(tg_dist *d, const char *path, size_t n, tg_param *const *params,
                                  tg_optim *opt);
/* Collective. Whether every rank holds bitwise the same values of the n parameters (and, when
 * opt is not NULL, of its state buffers and step count), by a 64-bit hash of each, compared
 * across ranks. TG_OK, or TG_PEER naming the first that differs. */
tg_status tg_dist_check_identical(tg_dist *d, size_t n, tg_param *const *params,
                                  const tg_optim *opt);
/* Collective. Replaces each of n values by its mean over the ranks (for metrics: a loss, an
 * accuracy). NULL values with n > 0, or counts that differ between ranks: TG_INVALID, values
 * unchanged. */
tg_status tg_dist_mean(tg_dist *d, size_t n, double *values);

/* Whether an MPI launcher (mpirun, mpiexec, srun) started this process, from the environment it
 * sets (OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK or PMI_SIZE), so that a program can run alone
 * without initialising MPI. Does not call MPI. */
bool tg_dist_launched(void);

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_DIST_H */
