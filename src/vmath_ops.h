/* vmath_ops.h — the one list of the vector-math ops (src/vmath.h). A row of TG__VMATH_MAPS is
 * one elementwise op; from it are generated
 *   the enum value TG__VM_<NAME> and the shorthand tg__vm_<name> (vmath.h),
 *   the kernels vm_<name>_f32 and vm_<name>_f64 of every instruction set, which compute BODY
 *   over full vectors and then one masked tail (vmath_simd.h: VM_MAP_<KIND>),
 *   their entries in each instruction set's kernel table (vmath_simd.h: VM_TABLE_MAP),
 *   the cost that decides when a call is split over threads (vmath.c: op_cost).
 * A row of TG__VMATH_REDUCTIONS is one reduction: its enum value TG__VM_<NAME> and its kernel
 * table entries are generated; its kernels vm_<name>_f32/_f64 are written out in vmath_simd.h.
 *
 * X(name, NAME, KIND, COST, BODY):
 *   name  lower case: the shorthand tg__vm_<name>, the kernels vm_<name>_<f32|f64>
 *   NAME  the same in upper case: the enum value TG__VM_<NAME>
 *   KIND  UNARY   y = f(a),         tg__vm_<name>(threads, dt, n, x, y)
 *         BINARY  y = f(a, b),      tg__vm_<name>(threads, dt, n, a, b, y)
 *         SCALAR  y = f(a; c0, c1), tg__vm_<name>(threads, dt, n, x, c0, c1, y)
 *   COST  rough work per element, in the element-operations of tg__parallel_for's threshold:
 *         plain arithmetic is memory-bound (1); the fused transcendental kernels cost 3 or 6
 *   BODY  one vector of y in vmath_simd.h's vector macros (ADD, MUL, SEL, ...), over the inputs
 *         a and b and the constants C0 and C1 (c0 and c1 rounded to the element type, as
 *         PyTorch rounds a Python scalar to the tensor's dtype). SLEEF(fn) is SLEEF's 1-ulp
 *         function fn for the instruction set and element type (libm's for the portable set);
 *         FAST_EXP and TANH are f32's own inlined exp and tanh (SLEEF's for f64); FN(x) names
 *         the helper vm_x_<f32|f64> that vmath_simd.h defines before the kernels.
 * The rows' order is the enum's. */
#ifndef TG_VMATH_OPS_H
#define TG_VMATH_OPS_H

/* clang-format off */
#define TG__VMATH_MAPS(X)                                                                          \
    /*name              NAME              KIND  COST BODY */                                       \
    X(exp,              EXP,              UNARY,  3, SLEEF(exp)(a))                                \
    X(log,              LOG,              UNARY,  6, SLEEF(log)(a))                                \
    X(log1p,            LOG1P,            UNARY,  6, SLEEF(log1p)(a))                              \
    X(sqrt,             SQRT,             UNARY,  3, SQRT(a))                                      \
    X(sin,              SIN,              UNARY,  6, SLEEF(sin)(a))                                \
    X(cos,              COS,              UNARY,  6, SLEEF(cos)(a))                                \
    X(tanh,             TANH,             UNARY,  3, TANH(a))                                      \
    /* 1 / (1 + exp(-a)); exp(-a) = inf for a << 0 gives exactly 0 */                              \
    X(sigmoid,          SIGMOID,          UNARY,  3, DIV(ONE, ADD(ONE, FAST_EXP(SUB(ZERO, a)))))   \
    /* tanh approximation, one pass (see vmath_simd.h for the forms) */                            \
    X(gelu,             GELU,             UNARY,  3, FN(gelu_v)(a))                                \
    /* a > 20 ? a : log1p(exp(a)), computed stably */                                              \
    X(softplus,         SOFTPLUS,         UNARY,  6, FN(softplus_v)(a))                            \
    /* a sigmoid(a) = a / (1 + exp(-a)), PyTorch's form (NaN at -inf, as PyTorch) */               \
    X(silu,             SILU,             UNARY,  3, DIV(a, ADD(ONE, FAST_EXP(SUB(ZERO, a)))))     \
    /* exact gelu, a Phi(a) = a 0.5 (1 + erf(a / sqrt 2)), PyTorch's order */                      \
    X(gelu_erf,         GELU_ERF,         UNARY,  6, FN(gelu_erf_v)(a))                            \
    X(add,              ADD,              BINARY, 1, ADD(a, b))                                    \
    X(sub,              SUB,              BINARY, 1, SUB(a, b))                                    \
    X(mul,              MUL,              BINARY, 1, MUL(a, b))                                    \
    X(div,              DIV,              BINARY, 1, DIV(a, b))                                    \
    /* NaN if either is NaN, else the larger (a on ties) */                                        \
    X(max,              MAX,              BINARY, 1, SEL(MOR(CMPGT(a, b), CMPUNORD(a, a)), b, a))  \
    /* NaN if either is NaN, else the smaller (a on ties) */                                       \
    X(min,              MIN,              BINARY, 1, SEL(MOR(CMPLT(a, b), CMPUNORD(a, a)), b, a))  \
    /* a = g, b = y = tanh(x): g (1 - y^2) */                                                      \
    X(tanh_backward,    TANH_BACKWARD,    BINARY, 1, MUL(a, SUB(ONE, MUL(b, b))))                  \
    /* a = g, b = y = sigmoid(x): g y (1 - y) */                                                   \
    X(sigmoid_backward, SIGMOID_BACKWARD, BINARY, 1, MUL(MUL(a, b), SUB(ONE, b)))                  \
    /* a = g, b = y = relu(x): y > 0 ? g : 0 */                                                    \
    X(relu_backward,    RELU_BACKWARD,    BINARY, 1, SEL(CMPGT(b, ZERO), ZERO, a))                 \
    /* a = g, b = x: g gelu'(x) */                                                                 \
    X(gelu_backward,    GELU_BACKWARD,    BINARY, 3, FN(gelu_backward_v)(a, b))                    \
    /* a = g, b = x: g silu'(x) = g s (1 + x (1 - s)), s = sigmoid(x) */                           \
    X(silu_backward,    SILU_BACKWARD,    BINARY, 3, FN(silu_backward_v)(a, b))                    \
    /* a = g, b = x: g gelu_erf'(x) = g (Phi(x) + x phi(x)) */                                     \
    X(gelu_erf_backward, GELU_ERF_BACKWARD, BINARY, 6, FN(gelu_erf_backward_v)(a, b))              \
    X(add_scalar,       ADD_SCALAR,       SCALAR, 1, ADD(a, C0))                                   \
    X(mul_scalar,       MUL_SCALAR,       SCALAR, 1, MUL(a, C0))                                   \
    /* (a - c0) - c1, rounded after each step (log_softmax) */                                     \
    X(sub2,             SUB2,             SCALAR, 1, SUB(SUB(a, C0), C1))

/* X(name, NAME): reductions of one contiguous array, on the calling thread. Sums accumulate in
 * double in several independent lanes for either element type. */
#define TG__VMATH_REDUCTIONS(X)                                                                    \
    X(sum,     SUM)     /* sum of x */                                                             \
    X(maxall,  MAXALL)  /* max of x; NaN if any element is NaN; -inf if n == 0 */                  \
    X(minall,  MINALL)  /* min of x; NaN if any element is NaN; +inf if n == 0 */                  \
    X(exp_sum, EXP_SUM) /* y = exp(x - shift) (y may be NULL: not stored); returns the sum of y */
/* clang-format on */

#endif
