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
 *         tg_optim_step(opt, tp);                 // update in place, no allocation
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
/* Batch normalisation, torch.nn.functional.batch_norm: x [N, C, ...] (e.g. [N, C] or
 * [N, C, H, W]) normalised per channel over every axis but 1, (x - mean) / sqrt(var + eps) *
 * weight + bias, with weight and bias [C] (x's dtype) or none.
 * - training: mean and var are the batch's (biased variance, computed in double), and the
 *   gradient flows through them. When running_mean and running_var are given (parameters of
 *   x's context used as buffers: x's dtype, shape [C]), they are updated as PyTorch does,
 *     running = (1 - momentum) * running + momentum * batch statistic
 *   (the unbiased variance for running_var), written through tg_param_write (their versions
 *   move) when the op is recorded, as PyTorch's forward updates its buffers. An empty batch
 *   updates nothing; one value per channel (N * H * W == 1) is TG_INVALID, as in PyTorch.
 * - evaluation (training false): mean and var are the running statistics, then required, read
 *   as constants (no gradient reaches them).
 * Unlike PyTorch: give both running statistics or neither, of x's dtype; momentum is a number
 * (no cumulative average) in [0, 1], checked in every mode (TG_RANGE). x needs 2 dims or more
 * (TG_SHAPE); eps must be finite and >= 0 (TG_INVALID); a running statistic of the wrong dtype
 * or shape is TG_DTYPE or TG_SHAPE. On any error, or on a tape already in error, the running
 * statistics are left untouched; an error later in the step does not undo an update that was
 * made (as in PyTorch): keep a copy to roll a failed step back. */
tg_tensor tg_batch_norm(tg_tensor x, tg_param *running_mean, tg_param *running_var,
                        tg_tensor weight, tg_tensor bias, bool training, double momentum,
                        double eps);
/* RMS normalisation over the last dim: x / sqrt(mean(x^2) + eps) * weight, the mean of squares
 * taken in double; weight [last dim] (x's dtype) or none. torch.nn.functional.rms_norm (PyTorch
 * >= 2.4) with normalized_shape = [last dim], except that eps is always given (PyTorch's None
 * means the dtype's machine epsilon). x must have a dim; eps must be finite and >= 0. */
tg_tensor tg_rms_norm(tg_tensor x, tg_tensor weight, double eps);

/* Rows of `table` [V, D] picked by `indices` (i64, any shape): output indices.shape + [D]. */
tg_tensor tg_embedding(tg_tensor table, tg_tensor indices);

/* Zeroes each element with probability p (0 <= p < 1) and scales the rest by 1/(1-p), with a
 * mask that depends only on (seed, element index). training == false or p == 0: returns x itself
 * (no node). */
tg_tensor tg_dropout(tg_tensor x, double p, bool training, uint64_t seed);

/* The recurrence of one recurrent layer over a sequence, given its input projections: the op
 * behind tg_rnn_new (PyTorch computes the same inside nn.RNN, nn.GRU and nn.LSTM). gates_x
 * [T, B, G*H] holds x_t W_ih^T + b_ih for each step t, with G and the gate order of `mode` (see
 * the recurrent layers below); weight_hh [G*H, H]; bias_hh [G*H] or none; h0 [B, H]; c0 [B, H]
 * for TG_RNN_LSTM, none for the other modes. All of one float dtype. Returns [T, B, S, H]:
 * h_t of every step (S = 1), and for LSTM h_t then c_t (S = 2). Differentiable to any order: its
 * backward runs the adjoint recurrence as one fused op. T >= 1, B, H >= 1. */
typedef enum tg_rnn_mode { TG_RNN_TANH, TG_RNN_RELU, TG_RNN_GRU, TG_RNN_LSTM } tg_rnn_mode;
tg_tensor tg_rnn_scan(tg_rnn_mode mode, tg_tensor gates_x, tg_tensor weight_hh, tg_tensor bias_hh,
                      tg_tensor h0, tg_tensor c0);

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
/* Penalties over n >= 1 tensors: sum of |x| and sum of x^2 (no 1/2 factor). */
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
 * Modules: layers with parameters, buffers and child modules, in a tree (PyTorch's nn.Module).
 * Every parameter and buffer is a context parameter named by its path, as PyTorch's state_dict
 * keys: a module named "blocks.2.attn" owning "in_proj_weight" and holding a child "out_proj"
 * gives "blocks.2.attn.in_proj_weight" and "blocks.2.attn.out_proj.weight" (under a module
 * named "" the path starts at the first key). A constructor names the module it makes; placing
 * it in a container (tg_sequential_new, tg_module_list_new, tg_module_dict_new,
 * tg_module_add_child) renames its whole subtree below the container's name. Free a module (and
 * everything below it) with tg_module_free before the context.
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

/* Containers. Each takes ownership of the n modules, also on failure (a failed call frees them,
 * except those it may not take: NULL, of another context, already in a tree, or repeated in
 * the list). A module placed in a container is renamed "<name>.<key>" with its subtree below it,
 * and the call fails with TG_EXISTS when a resulting name is already a parameter's or buffer's
 * of the context (or repeats a key), so names stay unique, as a state_dict's keys are (so
 * build repeated blocks straight into their container, or name them apart: two standalone
 * trees naming a parameter alike cannot both be placed).
 * tg_sequential_new (nn.Sequential) runs the n >= 1 modules in order, keys "0", "1", ...:
 * child i's "weight" becomes "<name>.<i>.weight". tg_module_list_new (nn.ModuleList; keys
 * "0", "1", ...) and tg_module_dict_new (nn.ModuleDict; keys[i] for module i: not empty, no
 * '.') only hold their modules (n >= 0): tg_forward on one is an error. */
tg_status tg_sequential_new(tg_ctx *ctx, const char *name, int n, tg_module *const *modules,
                            tg_module **out);
tg_status tg_module_list_new(tg_ctx *ctx, const char *name, int n, tg_module *const *modules,
                             tg_module **out);
tg_status tg_module_dict_new(tg_ctx *ctx, const char *name, int n, const char *const *keys,
                             tg_module *const *modules, tg_module **out);

/* A module of your own: forward(user, m, x) returns the output on x's tape. Give it parameters,
 * buffers and children with the three calls below (m->forward finds them with
 * tg_module_find_param and tg_module_find, or keeps the pointers they return). */
typedef tg_tensor (*tg_module_forward_fn)(void *user, tg_module *m, tg_tensor x);
tg_status tg_module_custom_new(tg_ctx *ctx, const char *name, tg_module_forward_fn forward,
                               void *user, tg_module **out);
/* A new zero-filled parameter (f32 or f64) or buffer (also i64) owned by m, named
 * "<module>.<name>" (PyTorch's register_parameter and register_buffer; buffers are saved with
 * the state). `name` must be non-empty, without '.', and not yet a member (parameter, buffer or
 * child) of m: else TG_INVALID or TG_EXISTS. *out (may be NULL) receives it, owned by m. */
tg_status tg_module_add_param(tg_module *m, const char *name, tg_dtype dt, int ndim,
                              const int64_t *shape, tg_param **out);
tg_status tg_module_add_buffer(tg_module *m, const char *name, tg_dtype dt, int ndim,
                               const int64_t *shape, tg_param **out);
/* Makes `child` a child of m under `key` (NULL: its index among m's children, as appending to
 * a list does; PyTorch's add_module), renaming its subtree; m may itself be inside a tree. Takes
 * the child as the containers take their modules (also on failure); the same checks and errors
 * (an index key is refused, TG_EXISTS, when a child freed from the list left it taken). */
tg_status tg_module_add_child(tg_module *m, const char *key, tg_module *child);

/* Applies the module to x (records on x's tape; error handle on failure, as any op). */
tg_tensor tg_forward(tg_module *m, tg_tensor x);
/* Training mode (dropout active) or evaluation mode, for m and every module below it. Default:
 * training. */
void tg_module_set_training(tg_module *m, bool training);
bool tg_module_training(const tg_module *m);
/* The module's full name ("blocks.2.attn"), and its key within its parent ("attn"; the full
 * name for a module without parent). Owned by the module, valid until it is renamed or freed. */
const char *tg_module_name(const tg_module *m);
const char *tg_module_key(const tg_module *m);
/* Lists of the module's subtree, owned by the module and valid until it or a module below it
 * changes (an entry or child added, a child freed) or it is freed: parameters (its own, in the
 * order created, then each child's in order: PyTorch's parameters()), buffers (the same walk:
 * buffers()), and the state, parameters then buffers (what a state_dict holds: pass it to
 * tg_checkpoint_save/load to save or load a whole model). Optimisers take the parameters. */
size_t tg_module_param_count(const tg_module *m);
tg_param *const *tg_module_params(const tg_module *m);
size_t tg_module_buffer_count(const tg_module *m);
tg_param *const *tg_module_buffers(const tg_module *m);
size_t tg_module_state_count(const tg_module *m);
tg_param *const *tg_module_state(const tg_module *m);
/* Children in order (NULL past the end), and the descendant at a dotted path of keys relative
 * to m ("blocks.2.attn"; "" is m itself; NULL if there is none: PyTorch's get_submodule). */
size_t tg_module_child_count(const tg_module *m);
tg_module *tg_module_child(const tg_module *m, size_t i);
tg_module *tg_module_find(const tg_module *m, const char *path);
/* A parameter or buffer by its path relative to m: its local name for one of m's own
 * ("weight_hh_l0"), or "<path of a descendant>.<local>" ("blocks.2.attn.in_proj_weight");
 * NULL if there is none (PyTorch's get_parameter and get_buffer). */
tg_param *tg_module_find_param(const tg_module *m, const char *path);
/* Frees the module, everything below it and their parameters and buffers; a module inside a
 * tree is taken out of its parent first (its siblings keep their names). NULL is a no-op. */
void tg_module_free(tg_module *m);

/* Recurrent layers: PyTorch's nn.RNN (tanh or relu), nn.GRU and nn.LSTM, and the cells
 * nn.RNNCell, nn.GRUCell and nn.LSTMCell, with their parameter names, layouts, gate orders and
 * default initialisation, so weights move between the two unchanged (through a checkpoint).
 * With H the hidden size and G = 1 (tanh, relu), 3 (GRU: gates r, z, n) or 4 (LSTM: i, f, g, o):
 *   a cell has weight_ih [G*H, I], weight_hh [G*H, H], bias_ih [G*H], bias_hh [G*H];
 *   layer l of a multi-layer RNN has weight_ih_l<l> [G*H, I (layer 0) or H], weight_hh_l<l>,
 *   bias_ih_l<l>, bias_hh_l<l> (in that order, layer by layer);
 * every tensor initialised U(-1/sqrt(H), 1/sqrt(H)). The steps (x_t input, h hidden state):
 *   tanh/relu: h' = act(W_ih x + b_ih + W_hh h + b_hh)
 *   GRU:  r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz),
 *         n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h
 *   LSTM: i, f, o = sigmoid(...), g = tanh(...) of W_i* x + b_i* + W_h* h + b_h*,
 *         c' = f * c + i * g,  h' = o * tanh(c')
 * Not supported (no option for them): dropout between layers, bidirectional layers, LSTM
 * projections (proj_size); inputs are always batched (for PyTorch's unbatched inputs, give
 * B = 1). */
typedef struct tg_rnn_options {
    int num_layers;   /* layers of tg_rnn_new (0: 1); cells take 0 or 1 */
    bool no_bias;     /* bias=False: no bias_ih / bias_hh */
    bool batch_first; /* tg_rnn_new: input and output [B, T, .] (PyTorch's default is [T, B, .]);
                         states stay [L, B, H] */
    tg_dtype dtype;   /* of the parameters: TG_F32 (0 means f32) or TG_F64 */
    uint64_t seed;    /* initialisation seed; 0: derived from the module's name */
} tg_rnn_options;
/* A cell (one step) or a multi-layer RNN over sequences; `opts` may be NULL. Sizes must be >= 1
 * and the mode known, else TG_SHAPE / TG_INVALID. */
tg_status tg_rnn_cell_new(tg_ctx *ctx, const char *name, tg_rnn_mode mode, int64_t input_size,
                          int64_t hidden_size, const tg_rnn_options *opts, tg_module **out);
tg_status tg_rnn_new(tg_ctx *ctx, const char *name, tg_rnn_mode mode, int64_t input_size,
                     int64_t hidden_size, const tg_rnn_options *opts, tg_module **out);
/* One step of a cell: from x [B, I], h [B, H] and (LSTM) c [B, H], where a none h or c means
 * zeros, the next h (and for LSTM c) on x's tape. c must be none for the other modes, and *c_out
 * is none for them. h_out and c_out may be NULL. tg_forward(cell, x) is h_out with zero state.
 * Returns the tape's status: on failure (a wrong module, dtype or shape: the message names the
 * module and the shapes) the outputs are error handles. */
tg_status tg_rnn_cell_step(tg_module *cell, tg_tensor x, tg_tensor h, tg_tensor c, tg_tensor *h_out,
                           tg_tensor *c_out);
/* A multi-layer RNN over a sequence x [T, B, I] ([B, T, I] with batch_first) from the initial
 * states h0 [L, B, H] and (LSTM) c0 [L, B, H] (none: zeros): output [T, B, H] ([B, T, H]), the
 * last layer's h_t for every t, and the final states h_n and c_n [L, B, H]. Each layer projects
 * its whole input with one matrix product and runs its recurrence as one tg_rnn_scan.
 * tg_forward(rnn, x) is the output with zero initial states. Outputs may be NULL (*c_n is none
 * for the other modes); errors as in tg_rnn_cell_step. */
tg_status tg_rnn_run(tg_module *rnn, tg_tensor x, tg_tensor h0, tg_tensor c0, tg_tensor *output,
                     tg_tensor *h_n, tg_tensor *c_n);

/* ---------------------------------------------------------------------------------------------
 * Optimisers. Each algorithm has one update rule, followed two ways. tg_optim_step, the training
 * loop's step, applies it in place: plain C loops over each parameter's values, its gradient and
 * the optimiser's own state buffers, with no tape nodes and no allocation (the tape passed only
 * carries errors). tg_optim_step_graph records the same rule as tapegrad ops on the caller's
 * tensors, with the state carried in tensors, so a step (or several) can be differentiated, e.g.
 * with respect to the learning rate; it touches neither the parameters nor the optimiser's
 * buffers and step count. Both give bitwise the same numbers.
 */
typedef struct tg_optim tg_optim;

/* Options. Every optimiser takes its options struct by pointer; NULL means all the defaults.
 * Zero means default: a field left 0 (as in `&(tg_adam_options){.lr = 3e-4}`) takes the default
 * below, PyTorch's (torch.optim's, except SGD's lr, which PyTorch >= 2.2 sets to 1e-3):
 *   SGD:      lr 0.01; momentum, dampening, weight_decay 0; nesterov false
 *   Adam:     lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-8; weight_decay 0; amsgrad false
 *   AdamW:    as Adam, but weight_decay 1e-2
 *   RMSprop:  lr 1e-2, alpha 0.99, eps 1e-8; weight_decay, momentum 0; centered false
 * To ask for a real 0 in a field whose default is not 0 (beta1 = 0 in Adam, an AdamW without
 * decay, eps = 0, alpha = 0, lr = 0), write TG_OPTION_ZERO: the least positive double, which no
 * option means literally, read as an exact 0 in every double field of these structs (in fields
 * whose default is 0 it is simply 0). A zero learning rate can also be set later with
 * tg_optim_set_lr(opt, 0). The TG_*_DEFAULTS initialisers spell the defaults out. */
#define TG_OPTION_ZERO 4.9406564584124654e-324

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

/* Each optimiser keeps its own list of the n parameters (n >= 1, all of one context, no repeats;
 * they must outlive the optimiser). After the defaults are filled in, options are checked as
 * PyTorch checks them (lr, eps, momentum, weight_decay, alpha >= 0; 0 <= beta < 1; nesterov
 * needs momentum > 0 and dampening 0): a bad one fails with TG_RANGE or TG_INVALID and a message
 * in tg_ctx_error. A buffer in the list is refused (TG_INVALID): it has no gradient. Every
 * parameter gets a gradient each step (zeros count as a gradient, unlike a PyTorch parameter
 * whose .grad is None). */
tg_status tg_sgd_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_sgd_options *o,
                     tg_optim **out);
tg_status tg_adam_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_adam_options *o,
                      tg_optim **out);
tg_status tg_adamw_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_adam_options *o,
                       tg_optim **out);
tg_status tg_rmsprop_new(tg_ctx *ctx, size_t n, tg_param *const *params,
                         const tg_rmsprop_options *o, tg_optim **out);
void tg_optim_free(tg_optim *opt);

/* One step from the parameters' gradients, in place: every parameter and state buffer is
 * updated element by element, in one pass each, with exactly the arithmetic tg_optim_step_graph
 * records (the results are bitwise equal), and the step count grows by one. Nothing is recorded
 * or allocated. `tp` (a tape of the parameters' context) only carries errors: a tape already in
 * error makes the step change nothing and return that error. */
tg_status tg_optim_step(tg_optim *opt, tg_tape *tp);
/* One step as recorded ops on tensors: new_params[i] from params[i] and grads[i] (same dtype and
 * shape, all on one tape), with the learning rate `lr` (a 0-d tensor of the parameters' dtype, so
 * it can be differentiated; none: the optimiser's lr as a constant). Same rule, same arithmetic
 * as tg_optim_step. The optimiser itself is untouched (its buffers and step count are not used):
 * graph state is carried in `state`, tg_optim_state_size(opt) tensors per parameter (parameter
 * i's at state[i*k .. i*k+k-1]), in this order:
 *   SGD:          momentum_buffer (momentum != 0 only)
 *   Adam, AdamW:  exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad only), step
 *   RMSprop:      square_avg, momentum_buffer (momentum > 0 only), grad_avg (centered only)
 * Buffers have the parameter's dtype and shape; `step` is a 0-d f64 count of the steps taken
 * (Adam's bias correction uses step + 1). Entries that are none start as PyTorch's fresh state
 * (momentum buffer = the gradient, moments zero, step 0). On success the call replaces every
 * entry with the new state; on failure state is unchanged, new_params[i] are error handles and
 * the tape holds the error. */
tg_status tg_optim_step_graph(tg_optim *opt, tg_tensor lr, size_t n, const tg_tensor *params,
                              const tg_tensor *grads, tg_tensor *state, tg_tensor *new_params);
/* Tensors of graph state per parameter for tg_optim_step_graph (0 for SGD without momentum). */
size_t tg_optim_state_size(const tg_optim *opt);
/* Zeroes the gradients of the optimiser's parameters (only those). */
void tg_optim_zero_grad(tg_optim *opt);
double tg_optim_lr(const tg_optim *opt);
/* Sets the lr used by later steps (e.g. from a tg_lr_* schedule). A negative or non-finite lr is
 * refused: the lr is kept and tg_ctx_error says why. */
void tg_optim_set_lr(tg_optim *opt, double lr);
/* Steps taken by tg_optim_step (graph steps do not count). A step count is at most
 * TG_OPTIM_MAX_STEPS = 2^53 - 1, so that it and Adam's t = count + 1 are exact as doubles (as in
 * a graph step's `step` tensor): a tg_optim_step at the limit is refused (TG_RANGE on the tape,
 * nothing changed). */
#define TG_OPTIM_MAX_STEPS INT64_C(9007199254740991)
int64_t tg_optim_steps(const tg_optim *opt);
size_t tg_optim_param_count(const tg_optim *opt);
tg_param *tg_optim_param(const tg_optim *opt, size_t i);

/* Optimiser state for checkpoints. The optimiser owns one buffer per (parameter, state name),
 * with the parameter's dtype and numel, zeroed at creation; they hold state only once
 * tg_optim_steps > 0 (before that a step starts fresh, as PyTorch's empty state does).
 * tg_optim_state_count: buffers in all (parameters x names per parameter; 0 for plain SGD). */
size_t tg_optim_state_count(const tg_optim *opt);
/* Buffer i (0 <= i < count, grouped by parameter in the optimiser's order): its PyTorch state
 * name ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg", "grad_avg";
 * a static string), its parameter, and its data (owned by the optimiser, valid until it is
 * freed; write it to restore state). Any output pointer may be NULL. TG_RANGE past the end. */
tg_status tg_optim_state_info(const tg_optim *opt, size_t i, const char **name, tg_param **param,
                              void **data);
/* Sets the step count (after restoring the buffers; Adam's bias correction uses it). A count
 * outside [0, TG_OPTIM_MAX_STEPS] is refused (kept, with a message in tg_ctx_error). */
void tg_optim_set_steps(tg_optim *opt, int64_t steps);

/* Gradient clipping over a set of parameters' gradients, in place (PyTorch's clip_grad_norm_ and
 * clip_grad_value_). tg_clip_grad_norm: the total norm of all the gradients together (norm_type
 * p > 0, or INFINITY for the max-norm); when max_norm / (norm + 1e-6) < 1 every gradient is
 * multiplied by it. Returns the total norm before clipping (0 for n == 0), or NaN on bad
 * arguments (NULL parameter or a buffer, max_norm < 0, norm_type <= 0), changing nothing
 * (tg_clip_grad_value likewise changes nothing then).
 * tg_clip_grad_value clamps every gradient element to [-clip, clip] (clip >= 0). */
double tg_clip_grad_norm(size_t n, tg_param *const *params, double max_norm, double norm_type);
void tg_clip_grad_value(size_t n, tg_param *const *params, double clip);

/* Learning-rate schedules: lr for epoch/step `t` (>= 0) from the base lr, the closed forms of
 * torch.optim.lr_scheduler's StepLR (gamma^floor(t/step_size)), ExponentialLR (gamma^t),
 * CosineAnnealingLR (eta_min + (base - eta_min)(1 + cos(pi t / t_max)) / 2) and LinearLR with
 * end_factor 1. NaN on bad arguments (t < 0, step_size < 1, t_max < 1, warmup < 0,
 * start_factor outside (0, 1]). */
double tg_lr_step(double base, int64_t t, int64_t step_size, double gamma);
double tg_lr_exponential(double base, int64_t t, double gamma);
double tg_lr_cosine(double base, int64_t t, int64_t t_max, double eta_min);
/* Linear warm-up from base * start_factor to base over `warmup` steps, then base. */
double tg_lr_warmup(double base, int64_t t, int64_t warmup, double start_factor);

/* ---------------------------------------------------------------------------------------------
 * Checkpoints in the safetensors format: a little-endian u64 header length, a JSON header naming
 * each tensor's dtype, shape and byte range, then the data. Parameters are stored under their
 * names; optimiser state under "<param>.<state>" names (e.g. "fc1.weight.exp_avg") with the
 * step count in the metadata. Saving writes a temporary file (anonymous, O_TMPFILE, where the
 * file system allows), fsyncs it and renames it over the old one: a crash mid-save leaves the
 * previous checkpoint intact and, with O_TMPFILE, no temporary file; each save also removes the
 * "<path>.tmp.<pid>.<hex>" files of earlier saves of that path whose process is gone. Names must
 * be valid UTF-8 (TG_INVALID otherwise). Loading validates everything
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
 * Data: IDX files (the MNIST format), plain or gzip-compressed, and a shuffling batch iterator;
 * text as a token stream.
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
/* Splits d into two new datasets (copies, owned by the caller): `second_size` samples drawn at
 * random from the seed (a validation split held out of a training set, say) and the other
 * d->n - second_size, both in that random order; d is unchanged. As torch.utils.data.random_split
 * (d, [n - k, k]) (the permutation is tapegrad's own, the same on every machine). TG_RANGE when
 * second_size is outside [0, n]. */
tg_status tg_dataset_split(const tg_dataset *d, int64_t second_size, uint64_t seed,
                           tg_dataset **first, tg_dataset **second);

/* Batches of a dataset in an order shuffled per epoch from `seed` (or in order when !shuffle). */
typedef struct tg_batches tg_batches;
tg_status tg_batches_new(const tg_dataset *d, int64_t batch_size, bool shuffle, uint64_t seed,
                         bool drop_last, tg_batches **out);
/* Shard `shard` of `nshards` of every epoch, for data-parallel training (PyTorch's
 * DistributedSampler with drop_last=True under a DataLoader): the epoch's order (tg_batches_new's
 * for the same seed) is cut to a multiple of nshards, leaving out n mod nshards samples
 * (different ones each epoch when shuffled), and the shard serves its elements shard,
 * shard + nshards, shard + 2 nshards, ... in batches of batch_size (drop_last: its last partial
 * batch dropped). The shards of one seed are disjoint, each serves the same number of samples
 * and batches, and batch k of every shard together holds the samples of batch k of a
 * tg_batches_new of batch_size * nshards (when n is a multiple of nshards). nshards 1 is
 * tg_batches_new; shard outside [0, nshards): TG_INVALID. */
tg_status tg_batches_new_shard(const tg_dataset *d, int64_t batch_size, bool shuffle, uint64_t seed,
                               bool drop_last, int64_t shard, int64_t nshards, tg_batches **out);
void tg_batches_free(tg_batches *b);
/* Starts epoch `epoch` (reshuffling); batches per epoch. */
int64_t tg_batches_start(tg_batches *b, int64_t epoch);
/* The next batch as tensors on tp: x [B, sample shape...] f32, labels [B] i64. False at the end of
 * the epoch (x and labels untouched) or on error (the tape holds it). */
bool tg_batches_next(tg_batches *b, tg_tape *tp, tg_tensor *x, tg_tensor *labels);

/* A token stream for character-level language models: the bytes of text files as tokens, split
 * into a training part (the first) and a validation part (the rest), and batches of random
 * windows for next-token prediction (as nanoGPT's get_batch). */
typedef struct tg_text tg_text;
typedef struct tg_text_options {
    double validation_fraction; /* 0: 0.1, the last tenth of the tokens (TG_OPTION_ZERO: none) */
    bool char_vocab;            /* a vocabulary of the bytes that occur (sorted), not all 256 */
} tg_text_options;
/* Loads the bytes of n >= 1 paths in order. A file is read whole, whatever it holds; a directory
 * stands for its regular files in name order (bytewise), skipping the binary ones, those that
 * contain a NUL byte (fortune's .dat indexes), and what is not a regular file (subdirectories
 * and symbolic links: Debian's fortunes links each file again as ".u8"). Tokens are bytes:
 * vocabulary 256 (token = byte), or with char_vocab the sorted set of bytes present. The first
 * floor((1 - f) * tokens) train, the rest validate. o may be NULL (defaults). Errors (message in
 * tg_ctx_error): TG_IO naming the path and the errno text, TG_INVALID when there is no text,
 * TG_RANGE for f outside [0, 1), TG_NOMEM; *out is then NULL and nothing leaks. Free the text
 * with tg_text_free (before the context). */
tg_status tg_text_load(tg_ctx *ctx, int n, const char *const *paths, const tg_text_options *o,
                       tg_text **out);
void tg_text_free(tg_text *t);
/* The vocabulary's size, and the tokens of a split; -1 for a NULL text. */
int64_t tg_text_vocab_size(const tg_text *t);
int64_t tg_text_length(const tg_text *t, bool validation);
/* A byte's token id (-1 if not in the vocabulary), and a token's byte (-1 if out of range). */
int64_t tg_text_encode(const tg_text *t, unsigned char byte);
int tg_text_decode(const tg_text *t, int64_t token);
/* `batch` random windows of context + 1 contiguous tokens of a split: inputs [batch, context]
 * (the first context tokens of each) and targets [batch, context] (the next token after each
 * input position), i64 leaves on tp. Window starts are uniform over the split and a pure
 * function of (seed, split, step, window), so a run resumed at step s draws what the
 * uninterrupted run drew (the two splits draw independently). On failure both are error
 * handles and the tape holds the error: a split of at most `context` tokens, batch or context
 * < 1, step < 0 (TG_RANGE), a NULL argument (TG_INVALID). Returns the tape's status. It only
 * reads the text: tapes in several threads may draw from one text at once. */
tg_status tg_text_batch(const tg_text *t, tg_tape *tp, bool validation, int64_t batch,
                        int64_t context, uint64_t seed, int64_t step, tg_tensor *inputs,
                        tg_tensor *targets);
/* Image augmentation, applied while a sample is copied into its batch (no extra pass). The
 * sample's last two dims are its height and width (every plane before them moves alike). */
typedef struct tg_augment_options {
    int crop_padding;     /* > 0: a random crop of the image's size from the image padded with
                             this many zeros on each side (torchvision's RandomCrop(size,
                             padding)): a random shift by up to crop_padding pixels; 0: none */
    bool horizontal_flip; /* mirror left to right with probability 1/2 (torchvision's
                             RandomHorizontalFlip()), after the crop */
    uint64_t seed;        /* the draws are a function of (seed, epoch, sample index) only */
} tg_augment_options;
/* Augments every batch b serves from now on; NULL or all zero: none. TG_RANGE for a negative
 * padding, TG_SHAPE for samples of fewer than 2 dims, TG_NOMEM (allocated once, here, for
 * batches in order); on failure the setting is unchanged. Use it on training batches only. */
tg_status tg_batches_set_augment(tg_batches *b, const tg_augment_options *o);

/* ---------------------------------------------------------------------------------------------
 * Around a training loop: early stopping on a validation metric, and a CSV log of the run.
 */
typedef struct tg_early_stopping tg_early_stopping;
/* Zero means default. As PyTorch Lightning's EarlyStopping(monitor, min_delta, patience, mode,
 * check_finite=True), with the best parameters kept in memory (Keras's restore_best_weights). */
typedef struct tg_early_stopping_options {
    int patience;     /* evaluations in a row without improvement before stopping; 0: 3 */
    double min_delta; /* an improvement must be larger than this (>= 0); 0: any */
    bool maximize;    /* larger is better (an accuracy); default: smaller (a loss) */
} tg_early_stopping_options;
/* Watches n parameters (of ctx; they must outlive it) and keeps a copy of their values at the
 * best evaluation. Free with tg_early_stopping_free. TG_RANGE for a negative patience or
 * min_delta, TG_INVALID for no or foreign parameters, TG_NOMEM. */
tg_status tg_early_stopping_new(tg_ctx *ctx, size_t n, tg_param *const *params,
                                const tg_early_stopping_options *o, tg_early_stopping **out);
void tg_early_stopping_free(tg_early_stopping *es);
/* Records one evaluation (the validation loss after an epoch, say). When it beats the best by
 * more than min_delta it becomes the best, and the parameters' current values are copied. *stop
 * becomes true when `patience` evaluations in a row have not improved, or at once when the
 * value is NaN or infinite (a diverged run). */
tg_status tg_early_stopping_update(tg_early_stopping *es, double value, bool *stop);
/* Writes the best values back into the parameters (as tg_param_set does). TG_NOT_FOUND before
 * any finite evaluation. */
tg_status tg_early_stopping_restore(tg_early_stopping *es);
/* The best value (NaN before one), its evaluation's index (0 for the first update; -1 before
 * one), and the evaluations since it (0 right after an improvement). */
double tg_early_stopping_best(const tg_early_stopping *es);
int64_t tg_early_stopping_best_index(const tg_early_stopping *es);
int64_t tg_early_stopping_wait(const tg_early_stopping *es);

/* A CSV log of a training run, one row per logging interval, for plotting (tools/plot_log.py);
 * PyTorch itself has none (PyTorch Lightning's CSVLogger is the like, with columns of its own):
 *   step,epoch,train_loss,valid_loss,valid_accuracy,test_accuracy,<unit>_per_s,lr
 * An empty field is a figure not measured in that interval (NaN in the row). Accuracies are
 * fractions (0 to 1). Rows are flushed as they are written. */
typedef struct tg_train_log tg_train_log;
typedef struct tg_log_row {
    int64_t step;          /* optimiser steps so far */
    double epoch;          /* epochs so far, fractional within an epoch */
    double train_loss;     /* mean training loss over the interval */
    double valid_loss;     /* NaN when not measured */
    double valid_accuracy; /* NaN when not measured */
    double test_accuracy;  /* NaN when not measured */
    double throughput;     /* <unit>s per second over the interval */
    double lr;
} tg_log_row;
/* Creates (truncates) the file and writes the header; `unit` names the throughput column
 * ("samples" gives samples_per_s; "tokens" tokens_per_s). TG_IO with the reason in
 * tg_ctx_error when the file cannot be opened. */
tg_status tg_train_log_open(tg_ctx *ctx, const char *path, const char *unit, tg_train_log **out);
tg_status tg_train_log_write(tg_train_log *log, const tg_log_row *row);
/* Closes the file and frees the log (NULL: TG_OK); TG_IO if a write had failed. */
tg_status tg_train_log_close(tg_train_log *log);

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_NN_H */
