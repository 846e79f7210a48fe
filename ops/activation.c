/* activation.c — activations: tanh sigmoid relu leaky_relu gelu silu gelu_erf softplus clamp,
 * and the fused backward kernels they use. A fused backward op computes a whole first
 * derivative in one pass (no temporaries), and has a composite backward of its own so higher
 * orders still work. */
#include "kernels.h"
#include "ops.h"
#include "vmath.h"

/* The hot kernels (tanh, sigmoid, gelu, silu, gelu_erf, softplus and the fused backward
 * kernels of tanh, sigmoid, relu, gelu, silu and gelu_erf) run through vmath, which vectorises
 * them for the CPU at hand and splits large arrays over the context's threads. The lighter ones
 * use these plain fused loops over contiguous arrays of the output's shape: one function per
 * dtype, with the attributes (c0, c1) converted to the element type (as PyTorch does) so the
 * f32 loops stay in f32 and vectorise. The named operands are the inputs' elements; the output
 * may be one of the inputs (in place: same index read, then written). */
#define FUSED1_T(fname, T, X, EXPR)                                                                \
    static void fname(int64_t n, const T *X##_, T *Y_, T c0, T c1)                                 \
    {                                                                                              \
        (void)c0, (void)c1;                                                                        \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T X = X##_[i];                                                                         \
            Y_[i] = (EXPR);                                                                        \
        }                                                                                          \
    }
#define FUSED2_T(fname, T, A, B, EXPR)                                                             \
    static void fname(int64_t n, const T *A##_, const T *B##_, T *Y_, T c0, T c1)                  \
    {                                                                                              \
        (void)c0, (void)c1;                                                                        \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T A = A##_[i], B = B##_[i];                                                            \
            Y_[i] = (EXPR);                                                                        \
        }                                                                                          \
    }
#define FUSED1(fname, X, EXPR)                                                                     \
    FUSED1_T(fname##_f32, float, X, EXPR) FUSED1_T(fname##_f64, double, X, EXPR)
#define FUSED2(fname, A, B, EXPR)                                                                  \
    FUSED2_T(fname##_f32, float, A, B, EXPR) FUSED2_T(fname##_f64, double, A, B, EXPR)

/* Calls the dtype's loop: RUN_FUSED(loop, dtype, c0, c1, n, inputs..., output). */
#define RUN_FUSED(fname, dt, c0, c1, ...)                                                          \
    do {                                                                                           \
        if ((dt) == TG_F32)                                                                        \
            fname##_f32(__VA_ARGS__, (float)(c0), (float)(c1));                                    \
        else                                                                                       \
            fname##_f64(__VA_ARGS__, (double)(c0), (double)(c1));                                  \
    } while (0)

/* Shorthands for a kernel's dtype, size and buffers. */
#define DT(k) ((k)->out->dtype)
#define THREADS(k) ((k)->threads)
#define NUM(k) ((k)->out->numel)
#define IN(k, i) ((k)->in[i]->data)
#define OUT(k) ((k)->out->data)

/* A fused backward op takes (g, y or x) of one dtype and exactly the output's shape: the engine
 * always hands a backward rule a gradient of the output's shape, and the kernels do not
 * broadcast, so anything else is a misuse to report, not to guess at. */
static tg_status check_fused(tg_check *c)
{
    for (int i = 0; i < 2; i++) {
        tg_status st = tg_check_float(c, i);
        if (st)
            return st;
    }
    const tg_view *g = c->in[0], *v = c->in[1];
    if (g->dtype != v->dtype)
        return tg_check_fail(c, TG_DTYPE, "gradient and input have different dtypes");
    bool same = g->ndim == v->ndim;
    for (int d = 0; same && d < g->ndim; d++)
        same = g->shape[d] == v->shape[d];
    if (!same)
        return tg_check_fail(c, TG_SHAPE,
                             "gradient and input must have the same shape "
                             "(a fused backward kernel does not broadcast)");
    *c->out = *g;
    return TG_OK;
}

/* Fused-op cases: g in [-2, 2) and the second input (y or x) in [low, high), gap as for
 * tg__example; the standard [3,4], 0-d and [2,3,2] shapes. */
static int example_pair(tg_tape *tp, int index, tg_tensor *in, double low, double high, double gap)
{
    static const int64_t s0[] = {3, 4}, s2[] = {2, 3, 2};
    static const int nds[] = {2, 0, 3};
    const int64_t *const shapes[] = {s0, NULL, s2};
    if (index < 0 || index > 2)
        return 0;
    in[0] = tg__example(tp, nds[index], shapes[index], -2, 2, 0, 71 + (uint64_t)index);
    in[1] = tg__example(tp, nds[index], shapes[index], low, high, gap, 74 + (uint64_t)index);
    return 2;
}

/* y = tanh(x);  dx += tanh_backward(g, y) = g * (1 - y^2) */
static void tanh_forward(const tg_kernel *k)
{
    tg__vm_tanh(THREADS(k), DT(k), NUM(k), IN(k, 0), OUT(k));
}
static void tanh_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg__apply2(TG__OP_tanh_backward, io->grad_output, io->output, NULL);
}
static int example_tanh(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_unary(tp, index, in, -2, 2, 0);
}
const tg_op_def tg__op_tanh = {.name = "tanh",
                               .ninputs = 1,
                               .check = tg__check_unary,
                               .forward = tanh_forward,
                               .backward = tanh_backward,
                               .example = example_tanh};
tg_tensor tg_tanh(tg_tensor a) { return tg__apply1(TG__OP_tanh, a, NULL); }

/* z = tanh_backward(g, y) = g * (1 - y^2);  dg += tanh_backward(gg, y),  dy += -2 gg g y */
static void tanh_bw_forward(const tg_kernel *k)
{
    tg__vm_binary(TG__VM_TANH_BACKWARD, THREADS(k), DT(k), NUM(k), IN(k, 0), IN(k, 1), OUT(k));
}
static void tanh_bw_backward(const tg_backward_io *io)
{
    tg_tensor gg = io->grad_output, g = io->inputs[0], y = io->inputs[1];
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg__apply2(TG__OP_tanh_backward, gg, y, NULL);
    if (io->needs_grad[1])
        io->grad_inputs[1] = tg_mul_scalar(tg_mul(tg_mul(gg, g), y), -2.0);
}
static int example_tanh_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return example_pair(tp, index, in, -0.95, 0.95, 0); /* y is a tanh output */
}
const tg_op_def tg__op_tanh_backward = {.name = "tanh_backward",
                                        .ninputs = 2,
                                        .check = check_fused,
                                        .forward = tanh_bw_forward,
                                        .backward = tanh_bw_backward,
                                        .example = example_tanh_bw};

/* y = sigmoid(x);  dx += sigmoid_backward(g, y) = g * y * (1 - y) */
static void sigmoid_forward(const tg_kernel *k)
{
    tg__vm_sigmoid(THREADS(k), DT(k), NUM(k), IN(k, 0), OUT(k));
}
static void sigmoid_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg__apply2(TG__OP_sigmoid_backward, io->grad_output, io->output, NULL);
}
static int example_sigmoid(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_unary(tp, index, in, -4, 4, 0);
}
const tg_op_def tg__op_sigmoid = {.name = "sigmoid",
                                  .ninputs = 1,
                                  .check = tg__check_unary,
                                  .forward = sigmoid_forward,
                                  .backward = sigmoid_backward,
                                  .example = example_sigmoid};
tg_tensor tg_sigmoid(tg_tensor a) { return tg__apply1(TG__OP_sigmoid, a, NULL); }

/* z = sigmoid_backward(g, y) = g y (1 - y);  dg += sigmoid_backward(gg, y),
 * dy += gg g (1 - 2y) */
static void sigmoid_bw_forward(const tg_kernel *k)
{
    tg__vm_binary(TG__VM_SIGMOID_BACKWARD, THREADS(k), DT(k), NUM(k), IN(k, 0), IN(k, 1), OUT(k));
}
static void sigmoid_bw_backward(const tg_backward_io *io)
{
    tg_tensor gg = io->grad_output, g = io->inputs[0], y = io->inputs[1];
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg__apply2(TG__OP_sigmoid_backward, gg, y, NULL);
    if (io->needs_grad[1])
        io->grad_inputs[1] = tg_mul(tg_mul(gg, g), tg_add_scalar(tg_mul_scalar(y, -2.0), 1.0));
}
static int example_sigmoid_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return example_pair(tp, index, in, 0.05, 0.95, 0); /* y is a sigmoid output */
}
const tg_op_def tg__op_sigmoid_backward = {.name = "sigmoid_backward",
                                           .ninputs = 2,
                                           .check = check_fused,
                                           .forward = sigmoid_bw_forward,
                                           .backward = sigmoid_bw_backward,
                                           .example = example_sigmoid_bw};

/* y = max(x, 0);  dx += relu_backward(g, y) = (y > 0 ? g : 0) */
static void relu_forward(const tg_kernel *k)
{
    TG__MAP1(k, x < 0 ? 0 : x); /* NaN and -0 pass through, as PyTorch's relu */
}
static void relu_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg__apply2(TG__OP_relu_backward, io->grad_output, io->output, NULL);
}
static int example_relu(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_unary(tp, index, in, -2, 2, 0.1); /* away from the kink at 0 */
}
const tg_op_def tg__op_relu = {.name = "relu",
                               .ninputs = 1,
                               .check = tg__check_unary,
                               .forward = relu_forward,
                               .backward = relu_backward,
                               .example = example_relu};
tg_tensor tg_relu(tg_tensor a) { return tg__apply1(TG__OP_relu, a, NULL); }

/* z = relu_backward(g, y) = (y > 0 ? g : 0);  dg += relu_backward(gg, y),  dy: 0 a.e. */
static void relu_bw_forward(const tg_kernel *k)
{
    tg__vm_binary(TG__VM_RELU_BACKWARD, THREADS(k), DT(k), NUM(k), IN(k, 0), IN(k, 1), OUT(k));
}
static void relu_bw_backward(const tg_backward_io *io)
{
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg__apply2(TG__OP_relu_backward, io->grad_output, io->inputs[1], NULL);
}
static int example_relu_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return example_pair(tp, index, in, -1, 1, 0.1);
}
const tg_op_def tg__op_relu_backward = {.name = "relu_backward",
                                        .ninputs = 2,
                                        .check = check_fused,
                                        .forward = relu_bw_forward,
                                        .backward = relu_bw_backward,
                                        .example = example_relu_bw};

/* Attributes of leaky_relu and leaky_relu_backward. */
typedef struct leaky_attr {
    double slope;
} leaky_attr;

static tg_status check_slope(tg_check *c)
{
    double s = ((const leaky_attr *)c->attr)->slope;
    if (!isfinite(s))
        return tg_check_fail(c, TG_INVALID, "negative_slope must be finite, not %g", s);
    return TG_OK;
}

/* Slopes the examples cycle through, one per case. */
static const double example_slopes[] = {0.1, 0.2, 0.01};

/* y = x > 0 ? x : slope x;  dx += leaky_relu_backward(g, x) = g * (x > 0 ? 1 : slope) */
static tg_status leaky_relu_check(tg_check *c)
{
    tg_status st = tg__check_unary(c);
    return st ? st : check_slope(c);
}
/* Written as selects feeding unconditional arithmetic: GCC (with -ftrapping-math) vectorises
 * neither a conditional multiply nor x * (x > 0 ? 1 : c0). Exact: one term is always 0 (the
 * slope is finite, by the check); NaN goes through the slope term. */
FUSED1(leaky_relu_loop, x, (x > 0 ? x : 0) + (x > 0 ? 0 : x) * c0)
static void leaky_relu_forward(const tg_kernel *k)
{
    double s = ((const leaky_attr *)k->attr)->slope;
    RUN_FUSED(leaky_relu_loop, DT(k), s, 0, NUM(k), IN(k, 0), OUT(k));
}
static void leaky_relu_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] =
        tg__apply2(TG__OP_leaky_relu_backward, io->grad_output, io->inputs[0], io->attr);
}
static int example_leaky_relu(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (index < 0 || index > 2)
        return 0;
    ((leaky_attr *)attr)->slope = example_slopes[index];
    return tg__example_unary(tp, index, in, -2, 2, 0.1); /* away from the kink at 0 */
}
const tg_op_def tg__op_leaky_relu = {.name = "leaky_relu",
                                     .ninputs = 1,
                                     .attr_size = sizeof(leaky_attr),
                                     .check = leaky_relu_check,
                                     .forward = leaky_relu_forward,
                                     .backward = leaky_relu_backward,
                                     .example = example_leaky_relu};
tg_tensor tg_leaky_relu(tg_tensor a, double negative_slope)
{
    leaky_attr at = {negative_slope};
    return tg__apply1(TG__OP_leaky_relu, a, &at);
}

/* z = leaky_relu_backward(g, x) = g * (x > 0 ? 1 : slope);
 * dg += leaky_relu_backward(gg, x),  dx: 0 a.e. */
static tg_status leaky_relu_bw_check(tg_check *c)
{
    tg_status st = check_fused(c);
    return st ? st : check_slope(c);
}
FUSED2(leaky_relu_bw_loop, g, x, (x > 0 ? g : 0) + (x > 0 ? 0 : g) * c0) /* as leaky_relu */
static void leaky_relu_bw_forward(const tg_kernel *k)
{
    double s = ((const leaky_attr *)k->attr)->slope;
    RUN_FUSED(leaky_relu_bw_loop, DT(k), s, 0, NUM(k), IN(k, 0), IN(k, 1), OUT(k));
}
static void leaky_relu_bw_backward(const tg_backward_io *io)
{
    if (io->needs_grad[0])
        io->grad_inputs[0] =
            tg__apply2(TG__OP_leaky_relu_backward, io->grad_output, io->inputs[1], io->attr);
}
static int example_leaky_relu_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (index < 0 || index > 2)
        return 0;
    ((leaky_attr *)attr)->slope = example_slopes[index];
    return example_pair(tp, index, in, -2, 2, 0.1);
}
const tg_op_def tg__op_leaky_relu_backward = {.name = "leaky_relu_backward",
                                              .ninputs = 2,
                                              .attr_size = sizeof(leaky_attr),
                                              .check = leaky_relu_bw_check,
                                              .forward = leaky_relu_bw_forward,
                                              .backward = leaky_relu_bw_backward,
                                              .example = example_leaky_relu_bw};

/* gelu, tanh approximation (PyTorch's approximate='tanh'): u = K0 (x + K1 x^3), t = tanh(u). */
#define GELU_K0 0.7978845608028654 /* sqrt(2 / pi) */
#define GELU_K1 0.044715

/* y = 0.5 x (1 + t);  dx += gelu_backward(g, x) = g * dy/dx. One pass through vmath (f32 as
 * x sigmoid(2u), the same function; see vmath_simd.h). */
static void gelu_forward(const tg_kernel *k)
{
    tg__vm_gelu(THREADS(k), DT(k), NUM(k), IN(k, 0), OUT(k));
}
static void gelu_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg__apply2(TG__OP_gelu_backward, io->grad_output, io->inputs[0], NULL);
}
static int example_gelu(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_unary(tp, index, in, -3, 3, 0);
}
const tg_op_def tg__op_gelu = {.name = "gelu",
                               .ninputs = 1,
                               .check = tg__check_unary,
                               .forward = gelu_forward,
                               .backward = gelu_backward,
                               .example = example_gelu};
tg_tensor tg_gelu(tg_tensor a) { return tg__apply1(TG__OP_gelu, a, NULL); }

/* z = gelu_backward(g, x) = g * (0.5 (1 + t) + 0.5 x (1 - t^2) u'),  u' = K0 (1 + 3 K1 x^2);
 * dg += gelu_backward(gg, x),  dx += gg g y'' with y'' = (1 - t^2) (K0 + 6 K0 K1 x^2 - x t u'^2)
 * One pass through vmath (f64 in PyTorch's order of operations). */
static void gelu_bw_forward(const tg_kernel *k)
{
    tg__vm_binary(TG__VM_GELU_BACKWARD, THREADS(k), DT(k), NUM(k), IN(k, 0), IN(k, 1), OUT(k));
}
static void gelu_bw_backward(const tg_backward_io *io)
{
    tg_tensor gg = io->grad_output, g = io->inputs[0], x = io->inputs[1];
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg__apply2(TG__OP_gelu_backward, gg, x, NULL);
    if (io->needs_grad[1]) {
        /* Primitive ops only, so that this gradient is differentiable again. */
        tg_tensor x2 = tg_square(x);
        tg_tensor u =
            tg_mul_scalar(tg_mul(x, tg_add_scalar(tg_mul_scalar(x2, GELU_K1), 1.0)), GELU_K0);
        tg_tensor du = tg_add_scalar(tg_mul_scalar(x2, 3 * GELU_K0 * GELU_K1), GELU_K0);
        tg_tensor t = tg_tanh(u);
        tg_tensor sech2 = tg_add_scalar(tg_neg(tg_square(t)), 1.0);
        tg_tensor inner = tg_sub(tg_add_scalar(tg_mul_scalar(x2, 6 * GELU_K0 * GELU_K1), GELU_K0),
                                 tg_mul(tg_mul(x, t), tg_square(du)));
        io->grad_inputs[1] = tg_mul(tg_mul(gg, g), tg_mul(sech2, inner));
    }
}
static int example_gelu_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return example_pair(tp, index, in, -3, 3, 0);
}
const tg_op_def tg__op_gelu_backward = {.name = "gelu_backward",
                                        .ninputs = 2,
                                        .check = check_fused,
                                        .forward = gelu_bw_forward,
                                        .backward = gelu_bw_backward,
                                        .example = example_gelu_bw};

/* y = silu(x) = x sigmoid(x);  dx += silu_backward(g, x) = g s (1 + x (1 - s)), s = sigmoid(x).
 * One pass through vmath, in PyTorch's form x / (1 + exp(-x)). */
static void silu_forward(const tg_kernel *k)
{
    tg__vm_silu(THREADS(k), DT(k), NUM(k), IN(k, 0), OUT(k));
}
static void silu_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg__apply2(TG__OP_silu_backward, io->grad_output, io->inputs[0], NULL);
}
static int example_silu(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_unary(tp, index, in, -5, 5, 0);
}
const tg_op_def tg__op_silu = {.name = "silu",
                               .ninputs = 1,
                               .check = tg__check_unary,
                               .forward = silu_forward,
                               .backward = silu_backward,
                               .example = example_silu};
tg_tensor tg_silu(tg_tensor a) { return tg__apply1(TG__OP_silu, a, NULL); }

/* z = silu_backward(g, x) = g silu'(x);  dg += silu_backward(gg, x),
 * dx += gg g silu''(x),  silu'' = s (1 - s) (2 + x (1 - 2 s)). One pass through vmath. */
static void silu_bw_forward(const tg_kernel *k)
{
    tg__vm_binary(TG__VM_SILU_BACKWARD, THREADS(k), DT(k), NUM(k), IN(k, 0), IN(k, 1), OUT(k));
}
static void silu_bw_backward(const tg_backward_io *io)
{
    tg_tensor gg = io->grad_output, g = io->inputs[0], x = io->inputs[1];
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg__apply2(TG__OP_silu_backward, gg, x, NULL);
    if (io->needs_grad[1]) {
        /* Primitive ops only, so that this gradient is differentiable again. */
        tg_tensor s = tg_sigmoid(x);
        tg_tensor ds = tg_mul(s, tg_add_scalar(tg_neg(s), 1.0));
        tg_tensor bracket =
            tg_add_scalar(tg_mul(x, tg_add_scalar(tg_mul_scalar(s, -2.0), 1.0)), 2.0);
        io->grad_inputs[1] = tg_mul(tg_mul(gg, g), tg_mul(ds, bracket));
    }
}
static int example_silu_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return example_pair(tp, index, in, -5, 5, 0);
}
const tg_op_def tg__op_silu_backward = {.name = "silu_backward",
                                        .ninputs = 2,
                                        .check = check_fused,
                                        .forward = silu_bw_forward,
                                        .backward = silu_bw_backward,
                                        .example = example_silu_bw};

/* y = gelu_erf(x) = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (PyTorch's approximate='none');
 * dx += gelu_erf_backward(g, x) = g (Phi(x) + x phi(x)). One pass through vmath (SLEEF's erf). */
static void gelu_erf_forward(const tg_kernel *k)
{
    tg__vm_gelu_erf(THREADS(k), DT(k), NUM(k), IN(k, 0), OUT(k));
}
static void gelu_erf_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg__apply2(TG__OP_gelu_erf_backward, io->grad_output, io->inputs[0], NULL);
}
static int example_gelu_erf(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_unary(tp, index, in, -3, 3, 0);
}
const tg_op_def tg__op_gelu_erf = {.name = "gelu_erf",
                                   .ninputs = 1,
                                   .check = tg__check_unary,
                                   .forward = gelu_erf_forward,
                                   .backward = gelu_erf_backward,
                                   .example = example_gelu_erf};
tg_tensor tg_gelu_erf(tg_tensor a) { return tg__apply1(TG__OP_gelu_erf, a, NULL); }

/* 1 / sqrt(2 pi): phi(x) = exp(-x^2 / 2) / sqrt(2 pi), the standard normal density. */
#define INV_SQRT_2PI 0.39894228040143267794

/* z = gelu_erf_backward(g, x) = g (Phi(x) + x phi(x));  dg += gelu_erf_backward(gg, x),
 * dx += gg g phi(x) (2 - x^2) (as Phi' = phi and phi' = -x phi). One pass through vmath. */
static void gelu_erf_bw_forward(const tg_kernel *k)
{
    tg__vm_binary(TG__VM_GELU_ERF_BACKWARD, THREADS(k), DT(k), NUM(k), IN(k, 0), IN(k, 1), OUT(k));
}
static void gelu_erf_bw_backward(const tg_backward_io *io)
{
    tg_tensor gg = io->grad_output, g = io->inputs[0], x = io->inputs[1];
    if (io->needs_grad[0])
        io->grad_inputs[0] = tg__apply2(TG__OP_gelu_erf_backward, gg, x, NULL);
    if (io->needs_grad[1]) {
        tg_tensor x2 = tg_square(x);
        tg_tensor pdf = tg_mul_scalar(tg_exp(tg_mul_scalar(x2, -0.5)), INV_SQRT_2PI);
        tg_tensor curvature = tg_mul(pdf, tg_add_scalar(tg_neg(x2), 2.0));
        io->grad_inputs[1] = tg_mul(tg_mul(gg, g), curvature);
    }
}
static int example_gelu_erf_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return example_pair(tp, index, in, -3, 3, 0);
}
const tg_op_def tg__op_gelu_erf_backward = {.name = "gelu_erf_backward",
                                            .ninputs = 2,
                                            .check = check_fused,
                                            .forward = gelu_erf_bw_forward,
                                            .backward = gelu_erf_bw_backward,
                                            .example = example_gelu_erf_bw};

/* y = x > 20 ? x : log1p(exp(x)) = max(x, 0) + log1p(exp(-|x|));  dx += g * sigmoid(x)
 * (PyTorch's softplus with beta 1, threshold 20; the stable form never overflows exp.) One
 * pass through vmath. */
static void softplus_forward(const tg_kernel *k)
{
    tg__vm_softplus(THREADS(k), DT(k), NUM(k), IN(k, 0), OUT(k));
}
static void softplus_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] = tg_mul(io->grad_output, tg_sigmoid(io->inputs[0]));
}
static int example_softplus(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    (void)attr;
    return tg__example_unary(tp, index, in, -5, 5, 0);
}
const tg_op_def tg__op_softplus = {.name = "softplus",
                                   .ninputs = 1,
                                   .check = tg__check_unary,
                                   .forward = softplus_forward,
                                   .backward = softplus_backward,
                                   .example = example_softplus};
tg_tensor tg_softplus(tg_tensor a) { return tg__apply1(TG__OP_softplus, a, NULL); }

/* Attributes of clamp and clamp_backward: bounds, either may be infinite (one-sided). */
typedef struct clamp_attr {
    double low, high;
} clamp_attr;

static tg_status check_bounds(tg_check *c)
{
    const clamp_attr *at = c->attr;
    if (isnan(at->low) || isnan(at->high))
        return tg_check_fail(c, TG_INVALID, "bounds must not be NaN (low %g, high %g)", at->low,
                             at->high);
    if (at->low > at->high)
        return tg_check_fail(c, TG_INVALID, "low bound %g is greater than high bound %g", at->low,
                             at->high);
    return TG_OK;
}

/* Clamp cases: bounds [-1, 1.5], [0, inf) and (-inf, 0.5], inputs in [-2.5, 2.5) kept 0.1 away
 * from each finite bound (the kinks), so finite differences see one side only. */
static tg_tensor example_clamp_input(tg_tape *tp, int index, const clamp_attr *at, uint64_t seed)
{
    static const int64_t s0[] = {3, 4}, s2[] = {2, 3, 2};
    static const int nds[] = {2, 0, 3};
    const int64_t *const shapes[] = {s0, NULL, s2};
    tg_tensor t = tg__example(tp, nds[index], shapes[index], -2.5, 2.5, 0, seed);
    if (tg_ok(t)) {
        double *d = (double *)tg_data(t); /* the leaf's own buffer, as tg__example does */
        const double bounds[2] = {at->low, at->high}, gap = 0.1;
        for (int64_t i = 0; i < tg_numel(t); i++)
            for (int b = 0; b < 2; b++)
                if (isfinite(bounds[b]) && fabs(d[i] - bounds[b]) < gap)
                    d[i] = d[i] < bounds[b] ? d[i] - gap : d[i] + gap;
    }
    return t;
}
static bool example_bounds(int index, void *attr)
{
    static const clamp_attr cases[] = {{-1, 1.5}, {0, INFINITY}, {-INFINITY, 0.5}};
    if (index < 0 || index > 2)
        return false;
    *(clamp_attr *)attr = cases[index];
    return true;
}

/* y = min(max(x, low), high);  dx += clamp_backward(g, x) = (low <= x <= high ? g : 0) */
static tg_status clamp_check(tg_check *c)
{
    tg_status st = tg__check_unary(c);
    return st ? st : check_bounds(c);
}
FUSED1(clamp_loop, x, x<c0 ? c0 : x> c1 ? c1 : x) /* NaN passes through, as PyTorch */
static void clamp_forward(const tg_kernel *k)
{
    const clamp_attr *at = k->attr;
    RUN_FUSED(clamp_loop, DT(k), at->low, at->high, NUM(k), IN(k, 0), OUT(k));
}
static void clamp_backward(const tg_backward_io *io)
{
    io->grad_inputs[0] =
        tg__apply2(TG__OP_clamp_backward, io->grad_output, io->inputs[0], io->attr);
}
static int example_clamp(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (!example_bounds(index, attr))
        return 0;
    in[0] = example_clamp_input(tp, index, attr, 81 + (uint64_t)index);
    return 1;
}
const tg_op_def tg__op_clamp = {.name = "clamp",
                                .ninputs = 1,
                                .attr_size = sizeof(clamp_attr),
                                .check = clamp_check,
                                .forward = clamp_forward,
                                .backward = clamp_backward,
                                .example = example_clamp};
tg_tensor tg_clamp(tg_tensor a, double low, double high)
{
    clamp_attr at = {low, high};
    return tg__apply1(TG__OP_clamp, a, &at);
}

/* z = clamp_backward(g, x) = (low <= x <= high ? g : 0), bounds inclusive as PyTorch;
 * dg += clamp_backward(gg, x),  dx: 0 a.e. */
static tg_status clamp_bw_check(tg_check *c)
{
    tg_status st = check_fused(c);
    return st ? st : check_bounds(c);
}
FUSED2(clamp_bw_loop, g, x, x >= c0 && x <= c1 ? g : 0)
static void clamp_bw_forward(const tg_kernel *k)
{
    const clamp_attr *at = k->attr;
    RUN_FUSED(clamp_bw_loop, DT(k), at->low, at->high, NUM(k), IN(k, 0), IN(k, 1), OUT(k));
}
static void clamp_bw_backward(const tg_backward_io *io)
{
    if (io->needs_grad[0])
        io->grad_inputs[0] =
            tg__apply2(TG__OP_clamp_backward, io->grad_output, io->inputs[1], io->attr);
}
static int example_clamp_bw(tg_tape *tp, int index, tg_tensor *in, void *attr)
{
    if (!example_bounds(index, attr))
        return 0;
    int n = example_pair(tp, index, in, -1, 1, 0); /* g; x replaced below */
    in[1] = example_clamp_input(tp, index, attr, 84 + (uint64_t)index);
    return n;
}
const tg_op_def tg__op_clamp_backward = {.name = "clamp_backward",
                                         .ninputs = 2,
                                         .attr_size = sizeof(clamp_attr),
                                         .check = clamp_bw_check,
                                         .forward = clamp_bw_forward,
                                         .backward = clamp_bw_backward,
                                         .example = example_clamp_bw};
