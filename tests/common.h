/* common.h — shared helpers for the cmocka test programs. */
#ifndef TG_TEST_COMMON_H
#define TG_TEST_COMMON_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad.h>

/* |a - b| <= tol * (1 + |b|), printing both values and the place on failure. */
#define assert_close(a, b, tol)                                                                    \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                             \
        if (!(fabs(a_ - b_) <= t_ * (1.0 + fabs(b_))))                                             \
            fail_msg("%s = %.17g, expected %s = %.17g (tol %g)", #a, a_, #b, b_, t_);              \
    } while (0)

/* The tape is fine, or the test fails with its message. */
#define assert_tape_ok(tp)                                                                         \
    do {                                                                                           \
        if (tg_tape_status(tp) != TG_OK)                                                           \
            fail_msg("tape error %s: %s", tg_status_name(tg_tape_status(tp)), tg_tape_error(tp));  \
    } while (0)

#define assert_status(expr, expected)                                                              \
    do {                                                                                           \
        tg_status s_ = (expr);                                                                     \
        if (s_ != (expected))                                                                      \
            fail_msg("%s gave %s, expected %s", #expr, tg_status_name(s_),                         \
                     tg_status_name(expected));                                                    \
    } while (0)

/* The message contains `needle`. */
#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        const char *h_ = (hay);                                                                    \
        if (!h_ || !strstr(h_, (needle)))                                                          \
            fail_msg("message \"%s\" lacks \"%s\"", h_ ? h_ : "(null)", (needle));                 \
    } while (0)

/* A context and a tape per test. */
typedef struct fixture {
    tg_ctx *ctx;
    tg_tape *tp;
} fixture;

static inline int fixture_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || tg_ctx_new(&f->ctx, NULL) != TG_OK || tg_tape_new(f->ctx, &f->tp) != TG_OK)
        return -1;
    *state = f;
    return 0;
}

static inline int fixture_teardown(void **state)
{
    fixture *f = *state;
    tg_tape_free(f->tp);
    tg_ctx_free(f->ctx);
    free(f);
    return 0;
}

#define FIXTURE_TEST(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

/* A 1-d f64 tensor from a list of values. */
#define VEC64(tp, ...)                                                                             \
    tg_tensor_from((tp), TG_F64, 1, (int64_t[]){sizeof((double[]){__VA_ARGS__}) / sizeof(double)}, \
                   (double[]){__VA_ARGS__})

#endif
