/* module_impl.h — the module record and the helpers that build one, shared by the nn layer's
 * module files (module.c: the module tree and the simple layers; rnn.c: recurrent layers).
 * Private to src/nn/: users build modules through nn.h. Like the rest of src/nn/ it sees only
 * the public header.
 *
 * A module is a forward function, the parameters and buffers it owns (its "entries"), and named
 * children. Names are hierarchical, as PyTorch's state_dict keys: a module's name is its full
 * path ("blocks.2.attn"), an entry is the context parameter "<module>.<local>" and a child the
 * module "<module>.<key>" (just "<local>" and "<key>" under a module named ""). Locals and keys
 * are kept with their owner, so that a module placed in a container renames its whole subtree
 * from them. Each module also keeps the flat list of every parameter and then every buffer of its
 * subtree (own entries first, then each child's list in order, as PyTorch's parameters() and
 * buffers() walk a module), rebuilt whenever an entry or a child is added below it. */
#ifndef TG_NN_MODULE_IMPL_H
#define TG_NN_MODULE_IMPL_H

#include <tapegrad.h>

/* What a module does with an input. NULL for containers without a forward (lists, dicts). */
typedef tg_tensor (*tg__forward_fn)(tg_module *m, tg_tensor x);

/* Recurrent layers and cells (rnn.c). */
typedef struct tg__rnn_config {
    tg_rnn_mode mode;
    int layers; /* 0 for a cell */
    int64_t input_size, hidden_size;
    bool bias, batch_first;
    tg_dtype dtype;
} tg__rnn_config;

/* A parameter or buffer a module owns, under its local name ("weight_hh_l0"). */
typedef struct tg__entry {
    tg_param *param;
    char *local;
    size_t local_size;
} tg__entry;

struct tg_module {
    tg_ctx *ctx;
    tg__forward_fn forward;
    const char *kind; /* "Linear", "GRU", ... (PyTorch's class name), for messages */
    char *name;       /* the full path; "" for an unnamed root */
    size_t name_size;
    char *key; /* the name within the parent ("attn"); NULL for a root */
    size_t key_size;
    bool training;
    tg_module *parent; /* NULL for a root */
    tg__entry *own;    /* own parameters and buffers, in the order added */
    size_t nown, own_cap;
    tg_module **children;
    size_t nchildren, children_cap;
    /* The subtree's parameters (state[0, nparams)) then buffers (nbuffers more). */
    tg_param **state;
    size_t nparams, nbuffers, state_cap;
    tg_param *weight, *bias; /* the simple layers' own weight and bias (NULL when absent) */
    tg_module *next_freed;   /* module.c's free_taken: the modules a failed call frees */
    union {
        tg_conv2d_params conv;
        tg_pool2d_params pool;
        struct {
            int naxes;
            double eps;
        } norm;
        struct {
            double p;
            uint64_t seed, calls;
        } dropout;
        tg_activation act;
        struct {
            tg_module_forward_fn fn;
            void *user;
        } custom;
        tg__rnn_config rnn;
    } u;
};

/* A new module without entries or children, named `name` (NULL: ""), in training mode. `fn`
 * names the calling constructor in messages. */
tg_status tg__module_new(tg_ctx *ctx, const char *fn, const char *kind, const char *name,
                         tg__forward_fn forward, tg_module **out);
/* Creates an entry: a parameter (buffer false; f32 or f64) or a buffer named "<m>.<local>",
 * zero-filled. `local` must be a valid key (not empty, no '.') that m does not use yet. */
tg_status tg__module_entry(tg_module *m, const char *fn, const char *local, tg_dtype dt, int ndim,
                           const int64_t *shape, bool buffer, tg_param **out);
/* Ends a constructor: on failure frees the partial module, sets *out to NULL and returns `st`. */
tg_status tg__module_finish(tg_module **out, tg_status st);
/* Records `st` with a message on x's tape and returns its error handle (for forward functions). */
tg_tensor tg__module_fail(tg_tensor x, tg_status st, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* A default initialisation seed from a name (FNV-1a): distinct names give distinct seeds. */
uint64_t tg__name_seed(const char *name);

#endif
