/* tapegrad/nn.h — layers, losses, optimisers, initialisers, checkpoints and data, built on the
 * core API. Included by <tapegrad.h>; do not include it on its own.
 *
 *     tg_module *layers[] = {NULL, NULL, NULL};
 *     tg_linear_new(ctx, "fc1", 784, 256, NULL, &layers[0]);
 *     tg_activation_new(ctx, TG_ACT_RELU, &layers[1]);
 *     tg_linear_new(ctx, "fc2", 256, 10, NULL, &layers[2]);
 *     tg_module *net;
 *     tg_sequential_new(ctx, "net", 3, layers, &net);      // net owns the three layers now
 *     tg_optim *opt;
 *     tg_adam_options ao = TG_ADAM_DEFAULTS;
 *     tg_adam_new(ctx, tg_module_param_count(net), tg_module_params(net), &ao, &opt);
 *     for (...) {
 *         tg_tensor loss = tg_cross_entropy(tg_forward(net, x), labels, TG_REDUCE_MEAN, 0.0);
 *         tg_backward(loss);
 *         tg_optim_step(opt, tp);                 // update written in tapegrad ops
 *         tg_optim_zero_grad(opt);
 *         tg_tape_reset(tp);
 *     }
 *
 * Semantics follow PyTorch's (parameter layouts, default initialisation, optimiser formulas) so
 * results compare number for number. Everything here is written against the public API.
 */
#ifndef TAPEGRAD_NN_H
#define TAPEGRAD_NN_H

#ifndef TAPEGRAD_H
#error "include <tapegrad.h>, which includes this header"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Ops used by layers (registered built-ins, differentiable).
 */

/* 2-d convolution, NCHW. x [N, C, H, W], weight [O, C/groups, KH, KW], bias [O] or none.
 * Output [N, O, (H + 2*pad - dil*(KH-1) - 1)/stride + 1, ...]. */
typedef struct tg_conv2d_params {
    int stride[2];   /* 0: 1 */
    int padding[2];  /* zero padding on both sides */
    int dilation[2]; /* 0: 1 */
    int groups;      /* 0: 1 */
} tg_conv2d_params;
tg_tensor tg_conv2d(tg_tensor x, tg_tensor weight, tg_tensor bias, const tg_conv2d_params *p);

/* Pooling over NCHW windows; stride 0 means the kernel size (PyTorch's default). avg_pool2d
 * counts padding zeros in the average (count_include_pad, PyTorch's default). */
typedef struct tg_pool2d_params {
    int kernel[2];
    int stride[2];
    int padding[2];
} tg_pool2d_params;
tg_tensor tg_max_pool2d(tg_tensor x, const tg_pool2d_params *p);
tg_tensor tg_avg_pool2d(tg_tensor x, const tg_pool2d_params *p);

/* Layer normalisation over the last `naxes` dims: (x - mean) / sqrt(var + eps) * weight + bias,
 * biased variance; weight and bias (shape of those dims) may be none. */
tg_tensor tg_layer_norm(tg_tensor x, int naxes, tg_tensor weight, tg_tensor bias, double eps);

/* Rows of `table` [V, D] picked by `indices` (i64, any shape): output indices.shape + [D]. */
tg_tensor tg_embedding(tg_tensor table, tg_tensor indices);

/* Zeroes each element with probability p and scales the rest by 1/(1-p), with a mask that
 * depends only on (seed, element index). training == false: identity. */
tg_tensor tg_dropout(tg_tensor x, double p, bool training, uint64_t seed);

/* ---------------------------------------------------------------------------------------------
 * Losses (graph ops). Labels are i64 class indices; a label out of range is a clear error.
 */
typedef enum tg_reduction {
    TG_REDUCE_MEAN = 0, /* mean over the batch (over all elements for mse and bce) */
    TG_REDUCE_SUM = 1,
    TG_REDUCE_NONE = 2 /* one loss per sample (per element for mse and bce) */
} tg_reduction;

/* Mean squared error between two tensors of one shape. */
tg_tensor tg_mse_loss(tg_tensor pred, tg_tensor target, tg_reduction r);
/* Cross-entropy from logits [N, C] and labels [N], stable for logits of any magnitude; with
 * label smoothing eps the target is (1 - eps) one-hot + eps / C (PyTorch's definition). */
tg_tensor tg_cross_entropy(tg_tensor logits, tg_tensor labels, tg_reduction r,
                           double label_smoothing);
/* Negative log-likelihood from log-probabilities [N, C] and labels [N]. */
tg_tensor tg_nll_loss(tg_tensor log_probs, tg_tensor labels, tg_reduction r);
/* Binary cross-entropy from logits and targets in [0, 1] of one shape, stable. */
tg_tensor tg_bce_with_logits(tg_tensor logits, tg_tensor targets, tg_reduction r);
/* Penalties over a list of tensors: sum of |x| and sum of x^2 (no 1/2 factor). */
tg_tensor tg_l1_penalty(int n, const tg_tensor *ts);
tg_tensor tg_l2_penalty(int n, const tg_tensor *ts);

/* ---------------------------------------------------------------------------------------------
 * Initialisers (PyTorch's formulas), seeded: the same seed gives the same values.
 * fan_in/fan_out of a [O, I, ...] tensor are I * receptive field and O * receptive field.
 */
typedef enum tg_fan_mode { TG_FAN_IN = 0, TG_FAN_OUT = 1 } tg_fan_mode;
tg_status tg_init_xavier_uniform(tg_param *p, double gain, uint64_t seed);
tg_status tg_init_xavier_normal(tg_param *p, double gain, uint64_t seed);
/* Kaiming with leaky_relu slope a (0 for relu): gain sqrt(2 / (1 + a^2)). */
tg_status tg_init_kaiming_uniform(tg_param *p, double a, tg_fan_mode mode, uint64_t seed);
tg_status tg_init_kaiming_normal(tg_param *p, double a, tg_fan_mode mode, uint64_t seed);

/* ---------------------------------------------------------------------------------------------
 * Modules: layers with parameters, composable into a Sequential. A module's parameters are
 * context parameters named "<module>.<weight|bias>" (Sequential children "<seq>.<index>.…", as in
 * a PyTorch state_dict). Free a module (and what it owns) with tg_module_free before the context.
 */
typedef struct tg_module tg_module;

typedef struct tg_linear_options {
    bool no_bias;
    uint64_t seed; /* initialisation seed; 0: derived from the module's name */
} tg_linear_options;
/* y = x W^T + b with W [out, in] (PyTorch's layout and default initialisation). */
tg_status tg_linear_new(tg_ctx *ctx, const char *name, int64_t in_features, int64_t out_features,
                        const tg_linear_options *opts, tg_module **out);

typedef struct tg_conv2d_options {
    tg_conv2d_params params;
    bool no_bias;
    uint64_t seed;
} tg_conv2d_options;
tg_status tg_conv2d_new(tg_ctx *ctx, const char *name, int64_t in_channels, int64_t out_channels,
                        int kernel_h, int kernel_w, const tg_conv2d_options *opts, tg_module **out);
tg_status tg_max_pool2d_new(tg_ctx *ctx, const tg_pool2d_params *p, tg_module **out);
tg_status tg_avg_pool2d_new(tg_ctx *ctx, const tg_pool2d_params *p, tg_module **out);
/* Flattens all dims after the first: [N, ...] -> [N, prod(...)]. */
tg_status tg_flatten_new(tg_ctx *ctx, tg_module **out);
/* LayerNorm over the trailing dims of `shape` with learnable weight (ones) and bias (zeros). */
tg_status tg_layer_norm_new(tg_ctx *ctx, const char *name, int ndim, const int64_t *shape,
                            double eps, tg_module **out);
/* Embedding table [num, dim], initialised N(0, 1) as in PyTorch. */
tg_status tg_embedding_new(tg_ctx *ctx, const char *name, int64_t num, int64_t dim, uint64_t seed,
                           tg_module **out);
/* Dropout with probability p; a fresh mask on every forward in training mode (seeded). */
tg_status tg_dropout_new(tg_ctx *ctx, double p, uint64_t seed, tg_module **out);

typedef enum tg_activation {
    TG_ACT_RELU,
    TG_ACT_TANH,
    TG_ACT_SIGMOID,
    TG_ACT_GELU,
    TG_ACT_SOFTPLUS,
    TG_ACT_LEAKY_RELU /* slope 0.01 */
} tg_activation;
tg_status tg_activation_new(tg_ctx *ctx, tg_activation act, tg_module **out);

/* Runs the modules in order. Takes ownership of the n modules (also on failure). `name` prefixes
 * the children's parameter names: child i's "weight" becomes "<name>.<i>.weight". */
tg_status tg_sequential_new(tg_ctx *ctx, const char *name, int n, tg_module *const *modules,
                            tg_module **out);

/* A module of your own: forward(user, m, x) returns the output on x's tape. */
typedef tg_tensor (*tg_module_forward_fn)(void *user, tg_module *m, tg_tensor x);
tg_status tg_module_custom_new(tg_ctx *ctx, const char *name, tg_module_forward_fn forward,
                               void *user, tg_module **out);

/* Applies the module to x (records on x's tape; error handle on failure, as any op). */
tg_tensor tg_forward(tg_module *m, tg_tensor x);
/* Training mode (dropout active) or evaluation mode; applies to children too. Default: training. */
void tg_module_set_training(tg_module *m, bool training);
bool tg_module_training(const tg_module *m);
const char *tg_module_name(const tg_module *m);
/* The module's parameters, children's included, in order; the array is owned by the module and
 * valid until it is freed. */
size_t tg_module_param_count(const tg_module *m);
tg_param *const *tg_module_params(const tg_module *m);
/* Frees the module, its children and their parameters. NULL is a no-op. */
void tg_module_free(tg_module *m);

/* ---------------------------------------------------------------------------------------------
 * Optimisers. The update of each step is written in tapegrad ops on a tape you pass: by default
 * they run without recording and the results are written into the parameters (and the
 * optimiser's state). tg_optim_step_graph records a step instead, so it can be differentiated.
 */
typedef struct tg_optim tg_optim;

typedef struct tg_sgd_options {
    double lr;
    double momentum;
    double dampening;
    double weight_decay;
    bool nesterov;
} tg_sgd_options;
#define TG_SGD_DEFAULTS                                                                            \
    {                                                                                              \
        0.01, 0.0, 0.0, 0.0, false                                                                 \
    }

typedef struct tg_adam_options {
    double lr;
    double beta1, beta2;
    double eps;
    double weight_decay; /* Adam: L2 added to the gradient; AdamW: decoupled decay */
    bool amsgrad;
} tg_adam_options;
#define TG_ADAM_DEFAULTS                                                                           \
    {                                                                                              \
        1e-3, 0.9, 0.999, 1e-8, 0.0, false                                                         \
    }
#define TG_ADAMW_DEFAULTS                                                                          \
    {                                                                                              \
        1e-3, 0.9, 0.999, 1e-8, 1e-2, false                                                        \
    }

typedef struct tg_rmsprop_options {
    double lr;
    double alpha;
    double eps;
    double weight_decay;
    double momentum;
    bool centered;
} tg_rmsprop_options;
#define TG_RMSPROP_DEFAULTS                                                                        \
    {                                                                                              \
        1e-2, 0.99, 1e-8, 0.0, 0.0, false                                                          \
    }

/* Each optimiser keeps its own list of the n parameters (all of one context). */
tg_status tg_sgd_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_sgd_options *o,
                     tg_optim **out);
tg_status tg_adam_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_adam_options *o,
                      tg_optim **out);
tg_status tg_adamw_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_adam_options *o,
                       tg_optim **out);
tg_status tg_rmsprop_new(tg_ctx *ctx, size_t n, tg_param *const *params,
                         const tg_rmsprop_options *o, tg_optim **out);
void tg_optim_free(tg_optim *opt);

/* One step from the parameters' gradients. The arithmetic runs as ops on `tp` (not recorded,
 * whatever the tape's grad mode); all parameters and state are written only if every update
 * succeeded. On failure nothing changes and the tape holds the error. */
tg_status tg_optim_step(tg_optim *opt, tg_tape *tp);
/* One step as recorded ops on tensors: new_params[i] from params[i] and grads[i], with the
 * learning rate `lr` (a 0-d tensor, so it can be differentiated; none: the optimiser's lr).
 * The optimiser's state stays untouched; graph state (momenta) is carried in `state`, which the
 * optimiser fills on the first call (state[i] none) and updates on each: see tg_optim_state_size.
 */
tg_status tg_optim_step_graph(tg_optim *opt, tg_tensor lr, size_t n, const tg_tensor *params,
                              const tg_tensor *grads, tg_tensor *state, tg_tensor *new_params);
/* Tensors of graph state per parameter for tg_optim_step_graph (0 for plain SGD). */
size_t tg_optim_state_size(const tg_optim *opt);
void tg_optim_zero_grad(tg_optim *opt);
double tg_optim_lr(const tg_optim *opt);
void tg_optim_set_lr(tg_optim *opt, double lr);
int64_t tg_optim_steps(const tg_optim *opt);
size_t tg_optim_param_count(const tg_optim *opt);
tg_param *tg_optim_param(const tg_optim *opt, size_t i);

/* Gradient clipping over a set of parameters' gradients (PyTorch's clip_grad_norm_ and
 * clip_grad_value_). Returns the total norm before clipping (NaN on bad arguments). */
double tg_clip_grad_norm(size_t n, tg_param *const *params, double max_norm, double norm_type);
void tg_clip_grad_value(size_t n, tg_param *const *params, double clip);

/* Learning-rate schedules: lr for epoch/step `t` from the base lr. */
double tg_lr_step(double base, int64_t t, int64_t step_size, double gamma);
double tg_lr_exponential(double base, int64_t t, double gamma);
double tg_lr_cosine(double base, int64_t t, int64_t t_max, double eta_min);
/* Linear warm-up from base * start_factor to base over `warmup` steps, then base. */
double tg_lr_warmup(double base, int64_t t, int64_t warmup, double start_factor);

/* ---------------------------------------------------------------------------------------------
 * Checkpoints in the safetensors format: a little-endian u64 header length, a JSON header naming
 * each tensor's dtype, shape and byte range, then the data. Parameters are stored under their
 * names; optimiser state under "<param>.<state>" names (e.g. "fc1.weight.exp_avg") with the
 * step count in the metadata. Saving writes a temporary file, fsyncs it and renames it over the
 * old one: a crash mid-save leaves the previous checkpoint intact. Loading validates everything
 * before changing anything: a failed load leaves every parameter and state as it was.
 */
tg_status tg_checkpoint_save(tg_ctx *ctx, const char *path, size_t n, tg_param *const *params,
                             const tg_optim *opt);
/* Loads the named parameters (and the optimiser's state when opt is not NULL). Every parameter
 * must be present with its dtype and shape (else TG_NOT_FOUND / TG_SHAPE / TG_DTYPE);
 * malformed, truncated or oversized files give TG_FORMAT or TG_IO. Details: tg_ctx_error. */
tg_status tg_checkpoint_load(tg_ctx *ctx, const char *path, size_t n, tg_param *const *params,
                             tg_optim *opt);

/* ---------------------------------------------------------------------------------------------
 * Data: IDX files (the MNIST format), plain or gzip-compressed, and a shuffling batch iterator.
 */
typedef struct tg_dataset tg_dataset;
/* Loads images (IDX u8, [N, H, W]) scaled to [0, 1] as f32, and labels (IDX u8, [N]) as i64.
 * Free with tg_dataset_free. */
tg_status tg_dataset_load_idx(tg_ctx *ctx, const char *images_path, const char *labels_path,
                              tg_dataset **out);
/* A dataset from memory (copied): n samples of `sample_numel` f32 values and i64 labels. */
tg_status tg_dataset_new(tg_ctx *ctx, int64_t n, int ndim, const int64_t *sample_shape,
                         const float *x, const int64_t *labels, tg_dataset **out);
void tg_dataset_free(tg_dataset *d);
int64_t tg_dataset_size(const tg_dataset *d);
/* Shape of one sample (e.g. {28, 28}); the array is owned by the dataset. */
int tg_dataset_sample_ndim(const tg_dataset *d);
const int64_t *tg_dataset_sample_shape(const tg_dataset *d);
/* Number of distinct classes (max label + 1). */
int64_t tg_dataset_classes(const tg_dataset *d);

/* Batches of a dataset in an order shuffled per epoch from `seed` (or in order when !shuffle). */
typedef struct tg_batches tg_batches;
tg_status tg_batches_new(const tg_dataset *d, int64_t batch_size, bool shuffle, uint64_t seed,
                         bool drop_last, tg_batches **out);
void tg_batches_free(tg_batches *b);
/* Starts epoch `epoch` (reshuffling); batches per epoch. */
int64_t tg_batches_start(tg_batches *b, int64_t epoch);
/* The next batch as tensors on tp: x [B, sample shape...] f32, labels [B] i64. False at the end of
 * the epoch (x and labels untouched) or on error (the tape holds it). */
bool tg_batches_next(tg_batches *b, tg_tape *tp, tg_tensor *x, tg_tensor *labels);

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_NN_H */
