/* unary.c — elementwise math: exp log sqrt abs sign sin cos. The transcendental forwards go
 * through the engine's vector math (src/vmath.h), which picks the CPU's best SIMD path. */
#include "kernels.h"
#include "ops.h"
#include "vmath.h"

/* Input and output are contiguous and of one shape, so a unary op is one vmath call. */
#define VM_FORWARD(k, fn)                                                                          \
    fn((k)->threads, (k)->out->dtype, (k)->out->numel, (k)->in[0]->data, (k)->out->data)

static int example_any(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_unary(tp, index, in, -2, 2, 0);
}

/* Positive inputs, away from 0 where log and sqrt (and their gradients) blow up. */
static int example_positive(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_unary(tp, index, in, 0.2, 3, 0);
}

/* Inputs at least 0.1 away from the kink (or step) at 0. */
static int example_kink(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_unary(tp, index, in, -2, 2, 0.1);
}

/* y = exp(x);  dx += g * y */
static void exp_forward(const tg_kernel *k) { VM_FORWARD(k, tg__vm_exp); }
static void exp_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg_mul(io->grad_output, io->output);
}
const tg_op_def tg__op_exp = {.name = "exp",
                              .ninputs = 1,
                              .check = tg__check_unary,
                              .forward = exp_forward,
                              .backward = exp_backward,
                              .example = example_any};
tg_tensor tg_exp(tg_tensor a) { return tg__apply1(TG__OP_exp, a, NULL); }

/* y = log(x);  dx += g / x */
static void log_forward(const tg_kernel *k) { VM_FORWARD(k, tg__vm_log); }
static void log_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg_div(io->grad_output, io->inputs[0]);
}
const tg_op_def tg__op_log = {.name = "log",
                              .ninputs = 1,
                              .check = tg__check_unary,
                              .forward = log_forward,
                              .backward = log_backward,
                              .example = example_positive};
tg_tensor tg_log(tg_tensor a) { return tg__apply1(TG__OP_log, a, NULL); }

/* y = sqrt(x);  dx += g * 0.5 / y */
static void sqrt_forward(const tg_kernel *k) { VM_FORWARD(k, tg__vm_sqrt); }
static void sqrt_backward(const tg_backward_io *io)
{
    /* Through y rather than x: reuses the forward's result, and stays differentiable. */
    io->grad_inputs[0] = tg_div(tg_mul_scalar(io->grad_output, 0.5), io->output);
}
const tg_op_def tg__op_sqrt = {.name = "sqrt",
                               .ninputs = 1,
                               .check = tg__check_unary,
                               .forward = sqrt_forward,
                               .backward = sqrt_backward,
                               .example = example_positive};
tg_tensor tg_sqrt(tg_tensor a) { return tg__apply1(TG__OP_sqrt, a, NULL); }

/* y = |x|;  dx += g * sign(x)   (0 at x = 0, as PyTorch) */
static void abs_forward(const tg_kernel *k) { TG__MAP1(k, fabs(x)); }
static void abs_backward(const tg_backward_io *io)
{
    /* sign carries no gradient: the second derivative is 0 away from the kink. */
    io->grad_inputs[0] = tg_mul(io->grad_output, tg_sign(io->inputs[0]));
}
const tg_op_def tg__op_abs = {.name = "abs",
                              .ninputs = 1,
                              .check = tg__check_unary,
                              .forward = abs_forward,
                              .backward = abs_backward,
                              .example = example_kink};
tg_tensor tg_abs(tg_tensor a) { return tg__apply1(TG__OP_abs, a, NULL); }

/* y = sign(x) in {-1, 0, +1} (0 at 0, and at NaN as PyTorch 1.13) (no gradient) */
static void sign_forward(const tg_kernel *k)
{
    /* Float selects (exact in both types): the int form does not vectorise for f64. */
    TG__MAP1(k, (x > 0 ? 1.0f : 0.0f) - (x < 0 ? 1.0f : 0.0f));
}
const tg_op_def tg__op_sign = {.name = "sign",
                               .ninputs = 1,
                               .flags = TG_OP_NONDIFF,
                               .check = tg__check_unary,
                               .forward = sign_forward,
                               .example = example_kink};
tg_tensor tg_sign(tg_tensor a) { return tg__apply1(TG__OP_sign, a, NULL); }

/* y = sin(x);  dx += g * cos(x) */
static void sin_forward(const tg_kernel *k) { VM_FORWARD(k, tg__vm_sin); }
static void sin_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg_mul(io->grad_output, tg_cos(io->inputs[0]));
}
const tg_op_def tg__op_sin = {.name = "sin",
                              .ninputs = 1,
                              .check = tg__check_unary,
                              .forward = sin_forward,
                              .backward = sin_backward,
                              .example = example_any};
tg_tensor tg_sin(tg_tensor a) { return tg__apply1(TG__OP_sin, a, NULL); }

/* y = cos(x);  dx += -g * sin(x) */
static void cos_forward(const tg_kernel *k) { VM_FORWARD(k, tg__vm_cos); }
static void cos_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg_neg(tg_mul(io->grad_output, tg_sin(io->inputs[0])));
}
const tg_op_def tg__op_cos = {.name = "cos",
                              .ninputs = 1,
                              .check = tg__check_unary,
                              .forward = cos_forward,
                              .backward = cos_backward,
                              .example = example_any};
tg_tensor tg_cos(tg_tensor a) { return tg__apply1(TG__OP_cos, a, NULL); }
