/* arith.c — arithmetic: add sub mul div neg, scalar add/mul, pow, square. */
#include "kernels.h"
#include "ops.h"
#include "vmath.h"

typedef struct scalar_attr {
    double c;
} scalar_attr;

static int example_any(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_binary(tp, index, in, -2, 2, -2, 2);
}

/* The contiguous cases of a binary op go to vmath (vectorised for the CPU, threaded when
 * large): operands of the output's size (equal shapes, up to leading 1s), or, for `scalar_op`
 * (TG__VM_NOPS: none), one of the output's size and a one-element `b` (or `a` when `commutes`),
 * as y = a (op) c. False when the operands broadcast otherwise. */
static bool binary_fast(const tg_kernel *k, tg__vm_op op, tg__vm_op scalar_op, bool commutes,
                        bool negate)
{
    const tg_view *a = k->in[0], *b = k->in[1], *y = k->out;
    int64_t n = y->numel;
    if (a->numel == n && b->numel == n) {
        tg__vm_binary(op, k->threads, y->dtype, n, a->data, b->data, y->data);
        return true;
    }
    if (scalar_op == TG__VM_NOPS)
        return false;
    if (commutes && a->numel == 1 && b->numel == n) {
        const tg_view *t = a;
        a = b, b = t;
    }
    if (a->numel != n || b->numel != 1)
        return false;
    double c = y->dtype == TG_F32 ? *(const float *)b->data : *(const double *)b->data;
    tg__vm_map(scalar_op, k->threads, y->dtype, n, a->data, NULL, negate ? -c : c, 0, y->data);
    return true;
}

/* y = a + b;  da += g,  db += g */
TG__LOOPS2(add_loop, a + b)
static void add_forward(const tg_kernel *k)
{
    if (!binary_fast(k, TG__VM_ADD, TG__VM_ADD_SCALAR, true, false))
        TG__RUN_LOOPS(k, add_loop);
}
static void add_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = io->grad_output;
    io->grad_inputs[1] = io->grad_output;
}
const tg_op_def tg__op_add = {.name = "add",
                              .ninputs = 2,
                              .flags = TG_OP_BROADCAST,
                              .check = tg_check_elementwise,
                              .forward = add_forward,
                              .backward = add_backward,
                              .example = example_any};
tg_tensor tg_add(tg_tensor a, tg_tensor b) { return tg__apply2(TG__OP_add, a, b, NULL); }

/* y = a - b;  da += g,  db -= g */
TG__LOOPS2(sub_loop, a - b)
static void sub_forward(const tg_kernel *k)
{
    /* a - c = a + (-c) exactly (negation is exact), so a scalar b becomes add_scalar. */
    if (!binary_fast(k, TG__VM_SUB, TG__VM_ADD_SCALAR, false, true))
        TG__RUN_LOOPS(k, sub_loop);
}
static void sub_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = io->grad_output;
    if (io->needs_grad[1])
        io->grad_inputs[1] = tg_neg(io->grad_output);
}
const tg_op_def tg__op_sub = {.name = "sub",
                              .ninputs = 2,
                              .flags = TG_OP_BROADCAST,
                              .check = tg_check_elementwise,
                              .forward = sub_forward,
                              .backward = sub_backward,
                              .example = example_any};
tg_tensor tg_sub(tg_tensor a, tg_tensor b) { return tg__apply2(TG__OP_sub, a, b, NULL); }

/* y = a * b;  da += g * b,  db += g * a */
TG__LOOPS2(mul_loop, a *b)
static void mul_forward(const tg_kernel *k)
{
    if (!binary_fast(k, TG__VM_MUL, TG__VM_MUL_SCALAR, true, false))
        TG__RUN_LOOPS(k, mul_loop);
}
static void mul_backward(const tg_backward_io *io)
{
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg_mul(io->grad_output, io->inputs[1]);
    if (io->needs_grad[1])
        io->grad_inputs[1] = tg_mul(io->grad_output, io->inputs[0]);
}
const tg_op_def tg__op_mul = {.name = "mul",
                              .ninputs = 2,
                              .flags = TG_OP_BROADCAST,
                              .check = tg_check_elementwise,
                              .forward = mul_forward,
                              .backward = mul_backward,
                              .example = example_any};
tg_tensor tg_mul(tg_tensor a, tg_tensor b) { return tg__apply2(TG__OP_mul, a, b, NULL); }

/* y = a / b;  da += g / b,  db -= g * y / b */
TG__LOOPS2(div_loop, a / b)
static void div_forward(const tg_kernel *k)
{
    if (!binary_fast(k, TG__VM_DIV, TG__VM_NOPS, false, false))
        TG__RUN_LOOPS(k, div_loop);
}
static void div_backward(const tg_backward_io *io)
{
    tg_tensor g = io->grad_output, b = io->inputs[1];
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg_div(g, b);
    if (io->needs_grad[1])
        io->grad_inputs[1] = tg_neg(tg_div(tg_mul(g, io->output), b));
}
static int example_div(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_binary(tp, index, in, -2, 2, 0.5, 2);
}
const tg_op_def tg__op_div = {.name = "div",
                              .ninputs = 2,
                              .flags = TG_OP_BROADCAST,
                              .check = tg_check_elementwise,
                              .forward = div_forward,
                              .backward = div_backward,
                              .example = example_div};
tg_tensor tg_div(tg_tensor a, tg_tensor b) { return tg__apply2(TG__OP_div, a, b, NULL); }

/* y = -a;  da -= g */
static void neg_forward(const tg_kernel *k) { TG__MAP1(k, -x); }
static void neg_backward(const tg_backward_io *io) { io->grad_inputs[0] = tg_neg(io->grad_output); }
static int example_unary(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_unary(tp, index, in, -2, 2, 0);
}
const tg_op_def tg__op_neg = {.name = "neg",
                              .ninputs = 1,
                              .check = tg__check_unary,
                              .forward = neg_forward,
                              .backward = neg_backward,
                              .example = example_unary};
tg_tensor tg_neg(tg_tensor a) { return tg__apply1(TG__OP_neg, a, NULL); }

/* y = a + c;  da += g */
/* Scalar ops: y = a (op) c through vmath, c rounded to the element type there. */
static void scalar_forward(const tg_kernel *k, tg__vm_op op)
{
    tg__vm_map(op, k->threads, k->out->dtype, k->out->numel, k->in[0]->data, NULL,
               ((const scalar_attr *)k->attr)->c, 0, k->out->data);
}
static void add_scalar_forward(const tg_kernel *k) { scalar_forward(k, TG__VM_ADD_SCALAR); }
static void add_scalar_backward(const tg_backward_io *io) { io->grad_inputs[0] = io->grad_output; }
static int example_scalar(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    ((scalar_attr *)attr)->c = -1.5;
    return tg__example_unary(tp, index, in, -2, 2, 0);
}
const tg_op_def tg__op_add_scalar = {.name = "add_scalar",
                                     .ninputs = 1,
                                     .attr_size = sizeof(scalar_attr),
                                     .check = tg__check_unary,
                                     .forward = add_scalar_forward,
                                     .backward = add_scalar_backward,
                                     .example = example_scalar};
tg_tensor tg_add_scalar(tg_tensor a, double c)
{
    scalar_attr at = {c};
    return tg__apply1(TG__OP_add_scalar, a, &at);
}

/* y = a * c;  da += g * c */
static void mul_scalar_forward(const tg_kernel *k) { scalar_forward(k, TG__VM_MUL_SCALAR); }
static void mul_scalar_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg_mul_scalar(io->grad_output, ((const scalar_attr *)io->attr)->c);
}
const tg_op_def tg__op_mul_scalar = {.name = "mul_scalar",
                                     .ninputs = 1,
                                     .attr_size = sizeof(scalar_attr),
                                     .check = tg__check_unary,
                                     .forward = mul_scalar_forward,
                                     .backward = mul_scalar_backward,
                                     .example = example_scalar};
tg_tensor tg_mul_scalar(tg_tensor a, double c)
{
    scalar_attr at = {c};
    return tg__apply1(TG__OP_mul_scalar, a, &at);
}

/* y = a^p;  da += g * p * a^(p-1)   (p == 0: no gradient; p == 1: da += g) */
static void pow_forward(const tg_kernel *k)
{
    double p = ((const scalar_attr *)k->attr)->c;
    if (p == 2)
        TG__MAP1(k, x * x);
    else if (p == 1)
        TG__MAP1(k, x);
    else
        TG__MAP1(k, pow(x, p));
}
static void pow_backward(const tg_backward_io *io)
{
    double p = ((const scalar_attr *)io->attr)->c;
    tg_tensor g = io->grad_output, x = io->inputs[0];
    if (p == 0)
        io->grad_inputs[0] = tg_mul_scalar(g, 0.0);
    else if (p == 1)
        io->grad_inputs[0] = g;
    else
        io->grad_inputs[0] = tg_mul(g, tg_mul_scalar(tg_pow(x, p - 1), p));
}
static int example_pow(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    static const double exps[] = {3.0, 2.0, 0.5, -1.5, 1.0, 0.0};
    if (index >= 6)
        return 0;
    ((scalar_attr *)attr)->c = exps[index];
    /* Positive bases: fractional powers are real there. */
    return tg__example_unary(tp, index % 3, in, 0.5, 2, 0);
}
const tg_op_def tg__op_pow = {.name = "pow",
                              .ninputs = 1,
                              .attr_size = sizeof(scalar_attr),
                              .check = tg__check_unary,
                              .forward = pow_forward,
                              .backward = pow_backward,
                              .example = example_pow};
tg_tensor tg_pow(tg_tensor a, double exponent)
{
    scalar_attr at = {exponent};
    return tg__apply1(TG__OP_pow, a, &at);
}

/* y = a^2;  da += 2 g a */
static void square_forward(const tg_kernel *k)
{
    const tg_view *x = k->in[0];
    tg__vm_binary(TG__VM_MUL, k->threads, x->dtype, x->numel, x->data, x->data, k->out->data);
}
static void square_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg_mul(io->grad_output, tg_mul_scalar(io->inputs[0], 2.0));
}
const tg_op_def tg__op_square = {.name = "square",
                                 .ninputs = 1,
                                 .check = tg__check_unary,
                                 .forward = square_forward,
                                 .backward = square_backward,
                                 .example = example_unary};
tg_tensor tg_square(tg_tensor a) { return tg__apply1(TG__OP_square, a, NULL); }
