/* builtins.h — the one table of built-in ops: each entry names a tg_op_def `tg__op_<name>`
 * defined in one file of ops/. The context registers them in this order through the public
 * tg_op_register, and op wrappers reach their registered op by this id. */
#ifndef TG_BUILTINS_H
#define TG_BUILTINS_H

/* clang-format off */
#define TG__BUILTIN_OPS(X)                                                                         \
    /* ops/arith.c */                                                                              \
    X(add) X(sub) X(mul) X(div) X(neg) X(add_scalar) X(mul_scalar) X(pow) X(square)               \
    /* ops/unary.c */                                                                              \
    X(exp) X(log) X(sqrt) X(abs) X(sign) X(sin) X(cos)                                             \
    /* ops/activation.c */                                                                         \
    X(tanh) X(tanh_backward) X(sigmoid) X(sigmoid_backward) X(relu) X(relu_backward)               \
    X(leaky_relu) X(leaky_relu_backward) X(gelu) X(gelu_backward) X(softplus) X(clamp)             \
    X(clamp_backward) X(silu) X(silu_backward) X(gelu_erf) X(gelu_erf_backward)                    \
    /* ops/compare.c */                                                                            \
    X(gt) X(lt) X(eq) X(where)                                                                     \
    /* ops/reduce.c */                                                                             \
    X(sum) X(mean) X(max) X(min) X(sum_to)                                                         \
    /* ops/softmax.c */                                                                            \
    X(softmax) X(log_softmax) X(logsumexp)                                                         \
    /* ops/mask.c */                                                                               \
    X(tril) X(triu) X(masked_fill)                                                                 \
    /* ops/attention.c */                                                                          \
    X(scaled_dot_product_attention) X(scaled_dot_product_attention_backward)                       \
    /* ops/shape.c */                                                                              \
    X(reshape) X(permute) X(broadcast_to)                                                          \
    /* ops/cumsum.c */                                                                             \
    X(cumsum)                                                                                      \
    /* ops/cast.c */                                                                               \
    X(cast) X(cast_to_i64)                                                                         \
    /* ops/slice.c */                                                                              \
    X(slice) X(slice_backward) X(concat) X(stack)                                                  \
    /* ops/index.c */                                                                              \
    X(index_select) X(index_add) X(gather) X(scatter_add)                                          \
    /* ops/select.c */                                                                             \
    X(argmax) X(argmin) X(topk) X(multinomial)                                                     \
    /* ops/norm.c */                                                                               \
    X(layer_norm) X(layer_norm_backward) X(rms_norm) X(rms_norm_backward)                          \
    /* ops/batch_norm.c */                                                                         \
    X(batch_norm) X(batch_norm_stats) X(batch_norm_sums) X(batch_norm_backward)                    \
    X(batch_norm_update)                                                                           \
    /* ops/embedding.c */                                                                          \
    X(embedding) X(embedding_backward)                                                             \
    /* ops/dropout.c */                                                                            \
    X(dropout)                                                                                     \
    /* ops/loss.c */                                                                               \
    X(one_hot) X(cross_entropy) X(nll_loss)                                                        \
    /* ops/conv.c */                                                                               \
    X(conv2d) X(conv2d_backward_input) X(conv2d_backward_weight)                                   \
    /* ops/pool.c */                                                                               \
    X(max_pool2d) X(max_pool2d_select) X(max_pool2d_backward) X(avg_pool2d)                        \
    X(avg_pool2d_backward)                                                                         \
    /* ops/rnn.c */                                                                                \
    X(rnn_scan) X(linear_scan)                                                                     \
    /* ops/matmul.c */                                                                             \
    X(matmul)
/* clang-format on */

enum {
#define TG__BUILTIN_ENUM(name) TG__OP_##name,
    TG__BUILTIN_OPS(TG__BUILTIN_ENUM)
#undef TG__BUILTIN_ENUM
        TG__OP_COUNT
};

#endif
