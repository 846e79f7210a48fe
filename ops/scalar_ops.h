/* scalar_ops.h — the scalar instruction set, one line per op (tinygrad-style rule table).
 *
 * X(NAME, VALUE, DA, DB, GA, GB) for binary ops, X(NAME, VALUE, DA, GA) for unary ones.
 * - VALUE computes the entry's value from operand values `a`, `b` (binary) or `a` and the
 *   constant `c` (unary).
 * - DA and DB are the partial derivatives d(value)/da and d(value)/db as numbers; they may also
 *   use the entry's own value `y`. The first-order sweep uses them.
 * - GA and GB are the same rules in composite form, for TG_CREATE_GRAPH: the contribution
 *   g * d(value)/da written with the recording helpers of src/scalar.c (sadd, smul, sdiv, sneg,
 *   saddc, smulc, spow, ssin, scos), so the gradient is itself recorded and can be
 *   differentiated again. They work on handles: `g` the entry's adjoint, `A` and `B` the
 *   operands, `Y` the entry. The numbers a, b, y, c stay available for constant factors (relu's
 *   [a > 0], abs's sign). NONE means "no contribution".
 * src/scalar.c generates the record functions, the first-order sweep and the recording sweep
 * from this table.
 */
#ifndef TG_SCALAR_OPS_H
#define TG_SCALAR_OPS_H

#include <math.h>

/* a^c as PyTorch's CPU kernel computes it for the exponents it special-cases: 2 and 3 as products
 * (a * a * a, rounded twice), -1 and -2 as reciprocals, 0.5 and -0.5 as square roots; 1 and 0
 * exactly; any other by pow. Cheaper too: pow took a quarter of the time of BurTorch's
 * ten-node benchmark graph, whose b^3 it is. */
static inline double tg__spow(double a, double c)
{
    if (c == 2.0)
        return a * a;
    if (c == 3.0)
        return a * a * a;
    if (c == 1.0)
        return a;
    if (c == 0.0)
        return 1.0;
    if (c == 0.5)
        return sqrt(a);
    if (c == -0.5)
        return 1.0 / sqrt(a);
    if (c == -1.0)
        return 1.0 / a;
    if (c == -2.0)
        return 1.0 / (a * a);
    return pow(a, c);
}

#define TG__SCALAR_BINARY(X)                                                                       \
    X(ADD, a + b, 1.0, 1.0, g, g)                                                                  \
    X(SUB, a - b, 1.0, -1.0, g, sneg(g))                                                           \
    X(MUL, a *b, b, a, smul(g, B), smul(g, A))                                                     \
    X(DIV, a / b, 1.0 / b, -y / b, sdiv(g, B), sneg(sdiv(smul(g, Y), B)))

#define TG__SCALAR_UNARY(X)                                                                        \
    X(NEG, -a, -1.0, sneg(g))                                                                      \
    X(ADDC, a + c, 1.0, g)                                                                         \
    X(MULC, a *c, c, smulc(g, c))                                                                  \
    X(POW, tg__spow(a, c), c == 0.0 ? 0.0 : c * tg__spow(a, c - 1.0),                              \
      c == 0.0 ? NONE : smulc(smul(g, spow(A, c - 1.0)), c))                                       \
    X(EXP, exp(a), y, smul(g, Y))                                                                  \
    X(LOG, log(a), 1.0 / a, sdiv(g, A))                                                            \
    X(SQRT, sqrt(a), 0.5 / y, sdiv(smulc(g, 0.5), Y))                                              \
    X(SIN, sin(a), cos(a), smul(g, scos(A)))                                                       \
    X(COS, cos(a), -sin(a), sneg(smul(g, ssin(A))))                                                \
    X(TANH, tanh(a), 1.0 - y * y, smul(g, saddc(sneg(smul(Y, Y)), 1.0)))                           \
    X(SIGMOID, a >= 0 ? 1.0 / (1.0 + exp(-a)) : exp(a) / (1.0 + exp(a)), y * (1.0 - y),            \
      smul(g, smul(Y, saddc(sneg(Y), 1.0))))                                                       \
    X(RELU, a > 0 ? a : 0.0, a > 0 ? 1.0 : 0.0, a > 0 ? g : NONE)                                  \
    X(ABS, fabs(a), a > 0 ? 1.0 : (a < 0 ? -1.0 : 0.0), a > 0 ? g : (a < 0 ? sneg(g) : NONE))

#endif
