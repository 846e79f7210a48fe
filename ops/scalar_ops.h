/* scalar_ops.h — the scalar instruction set, one line per op (tinygrad-style rule table).
 *
 * X(NAME, ARITY, VALUE, DA, DB): VALUE computes the entry's value from operand values `a`, `b`
 * (binary) or the constant `c`; DA and DB are the partial derivatives d(value)/da and
 * d(value)/db, which may also use the entry's own value `y`. src/scalar.c generates the record
 * functions and the reverse sweep from this table.
 */
#ifndef TG_SCALAR_OPS_H
#define TG_SCALAR_OPS_H

#define TG__SCALAR_BINARY(X)                                                                       \
    X(ADD, a + b, 1.0, 1.0)                                                                        \
    X(SUB, a - b, 1.0, -1.0)                                                                       \
    X(MUL, a *b, b, a)                                                                             \
    X(DIV, a / b, 1.0 / b, -y / b)

#define TG__SCALAR_UNARY(X)                                                                        \
    X(NEG, -a, -1.0)                                                                               \
    X(ADDC, a + c, 1.0)                                                                            \
    X(MULC, a *c, c)                                                                               \
    X(POW, pow(a, c), c == 0.0 ? 0.0 : c * pow(a, c - 1.0))                                        \
    X(EXP, exp(a), y)                                                                              \
    X(LOG, log(a), 1.0 / a)                                                                        \
    X(SQRT, sqrt(a), 0.5 / y)                                                                      \
    X(SIN, sin(a), cos(a))                                                                         \
    X(COS, cos(a), -sin(a))                                                                        \
    X(TANH, tanh(a), 1.0 - y * y)                                                                  \
    X(SIGMOID, a >= 0 ? 1.0 / (1.0 + exp(-a)) : exp(a) / (1.0 + exp(a)), y * (1.0 - y))            \
    X(RELU, a > 0 ? a : 0.0, a > 0 ? 1.0 : 0.0)                                                    \
    X(ABS, fabs(a), a > 0 ? 1.0 : (a < 0 ? -1.0 : 0.0))

#endif
