/* dist_internal.h — the distributed layer's private types and helpers, shared by its files.
 * Like the nn layer, the distributed layer sees only the public header (and MPI). */
#ifndef TG_DIST_INTERNAL_H
#define TG_DIST_INTERNAL_H

#include <tapegrad/dist.h>

/* One parameter of the handle, in bucket order (the reverse of the list given). */
typedef struct tg__dist_entry {
    tg_param *param;
    size_t bucket;
    int64_t offset; /* elements into its bucket */
    int64_t numel;
    bool ready; /* this step's gradient is in the bucket */
} tg__dist_entry;

/* Consecutive entries of one dtype whose gradients are averaged by one allreduce (or one per
 * chunk of at most max_count elements) on a flat buffer. */
typedef struct tg__dist_bucket {
    tg_dtype dtype;
    size_t first, count; /* entries [first, first + count) */
    int64_t numel;
    size_t bytes;
    void *data;
    const void *source;     /* this step's send buffer (a lone parameter's gradient), or NULL: in
                               place on data */
    size_t pending;         /* entries not ready yet this step */
    size_t req_first, nreq; /* its requests in the handle's array */
} tg__dist_bucket;

/* A parameter's entry (SIZE_MAX for a buffer), for the hook's lookup: sorted by the
 * parameter's address. */
typedef struct tg__dist_key {
    const tg_param *param;
    size_t entry;
} tg__dist_key;

enum { TG__DIST_MESSAGE = 1024 };

struct tg_dist {
    tg_ctx *ctx;
    MPI_Comm comm;
    int rank, size;
    bool after_backward;
    int64_t max_count;      /* most elements per MPI call (counts are ints) */
    size_t capacity;        /* entries, keys and buckets allocated: the list's length */
    size_t nentries, nkeys; /* the parameters; the parameters and buffers */
    tg__dist_entry *entries;
    tg__dist_key *keys;
    size_t nbuckets, next; /* next: the first bucket not started this step */
    tg__dist_bucket *buckets;
    size_t nrequests, started; /* started: requests [0, started) are under way */
    MPI_Request *requests;
    bool in_backward; /* tg_dist_backward's backward is running */
    bool broken;      /* an MPI call failed: every later call fails at once */
    char error[TG__DIST_MESSAGE];
    tg_dist_stats stats;
};

/* The largest element count one MPI call is given (counts are ints). */
#define TG__DIST_MAX_COUNT ((int64_t)1 << 30)

/* tg_dist_new with at most max_count elements per MPI call (tests lower it to exercise the
 * chunked calls that parameters of over 2^30 elements take). */
tg_status tg__dist_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_dist_options *opts,
                       int64_t max_count, tg_dist **out);
/* Checks an MPI return code: on failure breaks the handle and keeps "<call>: <MPI's message>"
 * in d->error; returns TG_COMM then, TG_OK otherwise. */
tg_status tg__dist_mpi(tg_dist *d, int rc, const char *call);
/* The text of an MPI error code, into buf: MPI's message and its error class. */
void tg__dist_mpi_message(int rc, const char *call, char *buf, size_t size);

/* The verdict of a collective step: TG_OK when every rank's `local` status is TG_OK; otherwise
 * the lowest failing rank's status, with that rank in *who and its message in message[]
 * (TG__DIST_MESSAGE bytes; `local_message` is this rank's). TG_COMM (d->error) when MPI fails.
 * One MPI_Allreduce (MIN) of "my rank if I failed, else the size"; only when some rank failed,
 * a broadcast of its status and message. */
tg_status tg__dist_agree(tg_dist *d, tg_status local, const char *local_message, int *who,
                         char *message);
/* The same in two halves, so that the vote travels with other requests in flight: tg__dist_vote
 * starts it (MPI_Iallreduce), tg__dist_count waits for it and gives the verdict. */
typedef struct tg__dist_ballot {
    int mine, lowest;
    MPI_Request request;
} tg__dist_ballot;
tg_status tg__dist_vote(tg_dist *d, tg_status local, tg__dist_ballot *b);
tg_status tg__dist_count(tg_dist *d, tg__dist_ballot *b, tg_status local, const char *local_message,
                         int *who, char *message);
/* Records a failed collective on the context and returns what this rank reports: its own
 * failure `local` (recorded already), else another rank's as TG_PEER quoting it, or TG_COMM for
 * an MPI failure. */
tg_status tg__dist_ctx_verdict(tg_dist *d, const char *fn, tg_status local, tg_status verdict,
                               int who, const char *message);
/* Whether `count` values are the same on every rank: the index of the first that differs in
 * *first (count when none). `values` needs room for 2 * count entries (its second half is
 * scratch) and is overwritten. */
tg_status tg__dist_same(tg_dist *d, size_t count, uint64_t *values, size_t *first);
/* A 64-bit hash of `bytes` bytes, continuing from `h`. */
uint64_t tg__dist_hash(uint64_t h, const void *data, size_t bytes);
/* Whether this rank's n parameters are usable: present and of the handle's context (a message
 * into message[TG__DIST_MESSAGE] when not). Local. */
tg_status tg__dist_check_list(const tg_dist *d, size_t n, tg_param *const *params, char *message);
/* Collective: every rank passed the same parameters (names, dtypes, shapes) and, with an
 * optimiser, the same state buffers; TG_SHAPE naming the first difference otherwise. Failures
 * go to the context, under `fn`. */
tg_status tg__dist_same_layout(tg_dist *d, const char *fn, size_t n, tg_param *const *params,
                               const tg_optim *opt);
/* Copies rank 0's values of `n` parameters into every rank's, each received whole (into a
 * bucket's buffer, or a staging buffer allocated here when none is large enough) before it is
 * written; also the optimiser's state buffers and step count when opt is not NULL. The ranks
 * must agree on the list. Failures go to the context, under `fn`. */
tg_status tg__dist_copy_from_root(tg_dist *d, const char *fn, size_t n, tg_param *const *params,
                                  tg_optim *opt);
/* Elements per MPI call: a chunked call of `numel` elements for each chunk. */
static inline int tg__dist_chunk(const tg_dist *d, int64_t numel, int64_t offset)
{
    int64_t rest = numel - offset;
    return (int)(rest < d->max_count ? rest : d->max_count);
}
static inline MPI_Datatype tg__dist_type(tg_dtype dt)
{
    return dt == TG_F64 ? MPI_DOUBLE : MPI_FLOAT;
}

#endif /* TG_DIST_INTERNAL_H */
