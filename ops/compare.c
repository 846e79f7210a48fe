/* compare.c — comparisons giving 0/1 masks without gradient, and where. */
#include "kernels.h"
#include "ops.h"

/* Examples check the f32 kernels against f64; half of eq's pairs are equal. */
static int example_compare(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    int n = tg__example_binary(tp, index, in, -2, 2, -2, 2);
    if (n && index == 0)
        in[1] = tg_where(tg_gt(in[1], tg_constant(tp, TG_F64, 0.0)), in[0], in[1]);
    return n;
}

/* mask = a > b (no gradient) */
TG__LOOPS2(gt_loop, a > b ? 1 : 0)
static void gt_forward(const tg_kernel *k) { TG__RUN_LOOPS(k, gt_loop); }
const tg_op_def tg__op_gt = {.name = "gt",
                             .ninputs = 2,
                             .flags = TG_OP_BROADCAST | TG_OP_NONDIFF,
                             .check = tg_check_elementwise,
                             .forward = gt_forward,
                             .example = example_compare};
tg_tensor tg_gt(tg_tensor a, tg_tensor b) { return tg__apply2(TG__OP_gt, a, b, NULL); }

/* mask = a < b (no gradient) */
TG__LOOPS2(lt_loop, a < b ? 1 : 0)
static void lt_forward(const tg_kernel *k) { TG__RUN_LOOPS(k, lt_loop); }
const tg_op_def tg__op_lt = {.name = "lt",
                             .ninputs = 2,
                             .flags = TG_OP_BROADCAST | TG_OP_NONDIFF,
                             .check = tg_check_elementwise,
                             .forward = lt_forward,
                             .example = example_compare};
tg_tensor tg_lt(tg_tensor a, tg_tensor b) { return tg__apply2(TG__OP_lt, a, b, NULL); }

/* mask = a == b (no gradient) */
TG__LOOPS2(eq_loop, a == b ? 1 : 0)
static void eq_forward(const tg_kernel *k) { TG__RUN_LOOPS(k, eq_loop); }
const tg_op_def tg__op_eq = {.name = "eq",
                             .ninputs = 2,
                             .flags = TG_OP_BROADCAST | TG_OP_NONDIFF,
                             .check = tg_check_elementwise,
                             .forward = eq_forward,
                             .example = example_compare};
tg_tensor tg_eq(tg_tensor a, tg_tensor b) { return tg__apply2(TG__OP_eq, a, b, NULL); }

/* y = mask != 0 ? a : b;  da += where(mask, g, 0),  db += where(mask, 0, g) */
TG__LOOPS3(where_loop, a != 0 ? b : c)
static void where_forward(const tg_kernel *k) { TG__RUN_LOOPS(k, where_loop); }
static void where_backward(const tg_backward_io *io)
{
    tg_tensor g = io->grad_output, m = io->inputs[0];
    tg_tensor zero = tg_constant(tg_tensor_tape(g), tg_tensor_dtype(g), 0.0);
    if (io->needs_grad[1])
        io->grad_inputs[1] = tg_where(m, g, zero);
    if (io->needs_grad[2])
        io->grad_inputs[2] = tg_where(m, zero, g);
}
static int example_where(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    int n = tg__example_binary(tp, index, &in[1], -2, 2, -2, 2);
    if (!n)
        return 0;
    /* A mask of a's shape, so it broadcasts in every case. */
    in[0] = tg_gt(tg__example(tp, tg_ndim(in[1]), tg_shape(in[1]), -1, 1, 0, 61),
                  tg_constant(tp, TG_F64, 0.0));
    return 3;
}
const tg_op_def tg__op_where = {.name = "where",
                                .ninputs = 3,
                                .flags = TG_OP_BROADCAST,
                                .check = tg_check_elementwise,
                                .forward = where_forward,
                                .backward = where_backward,
                                .example = example_where};
tg_tensor tg_where(tg_tensor mask, tg_tensor a, tg_tensor b)
{
    return tg__apply3(TG__OP_where, mask, a, b, NULL);
}
