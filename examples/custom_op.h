/* custom_op.h — the swish op of examples/custom_op.c, for the program and its test. */
#ifndef TG_EXAMPLE_CUSTOM_OP_H
#define TG_EXAMPLE_CUSTOM_OP_H

#include <tapegrad.h>

typedef struct swish_ops {
    const tg_op *composite; /* "swish": composite backward */
    const tg_op *kernel;    /* "swish_kernel": kernel backward, first order only */
} swish_ops;

/* Registers both variants with ctx. */
tg_status swish_register(tg_ctx *ctx, swish_ops *ops);
/* y = x * sigmoid(beta * x) through one of the registered variants. */
tg_tensor swish(const tg_op *op, tg_tensor x, double beta);

#endif
