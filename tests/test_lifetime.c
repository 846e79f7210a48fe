/* test_lifetime.c — what a new user trips over in the life of a tape: a training loop without
 * tg_tape_reset meets the memory limit with a message naming the cause; the limit covers the
 * arena, the node table and the scalar table, and 0 lifts it; the context may be freed before
 * its tapes (also from several threads); reset turns recording back on; an error handle's data
 * is NULL. */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

/* A thread-safe allocator that counts what is outstanding, to prove everything is freed. */
typedef struct ledger {
    atomic_long blocks;
    atomic_long bytes;
} ledger;

static void *ledger_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    ledger *l = user;
    if (new_size == 0) {
        if (ptr) {
            atomic_fetch_sub(&l->blocks, 1);
            atomic_fetch_sub(&l->bytes, (long)old_size);
            free(ptr);
        }
        return NULL;
    }
    void *p = realloc(ptr, new_size);
    if (p) {
        if (!ptr)
            atomic_fetch_add(&l->blocks, 1);
        atomic_fetch_add(&l->bytes, (long)new_size - (long)(ptr ? old_size : 0));
    }
    return p;
}

/* One step of a small regression: forward, backward, an SGD update of w. */
static tg_status step(tg_tape *tp, tg_param *w, uint64_t seed)
{
    tg_tensor x = tg_uniform(tp, TG_F32, 2, (int64_t[]){16, 64}, -1, 1, seed);
    tg_tensor y = tg_tanh(tg_mul(x, tg_param_tensor(tp, w)));
    tg_status st = tg_backward(tg_mean_all(tg_square(y)));
    if (st)
        return st;
    float *v = tg_param_write(w);
    const float *g = tg_param_grad(w);
    for (int i = 0; i < 64; i++)
        v[i] -= 0.1f * g[i];
    tg_param_zero_grad(w);
    return TG_OK;
}

static void forgotten_reset_meets_the_limit(void **state)
{
    fixture *f = *state;
    tg_param *w;
    assert_status(tg_param_new(f->ctx, "w", TG_F32, 1, (int64_t[]){64}, &w), TG_OK);
    tg_param_fill(w, 0.5);
    assert_int_equal(tg_tape_memory_limit(f->tp), TG_TAPE_MEMORY_LIMIT);
    const size_t limit = (size_t)4 << 20;
    assert_status(tg_tape_set_memory_limit(f->tp, limit), TG_OK);
    assert_int_equal(tg_tape_memory_limit(f->tp), limit);

    /* The loop forgets tg_tape_reset: the tape grows until the limit stops it. */
    int steps = 0;
    tg_status st = TG_OK;
    while (st == TG_OK && steps < 100000)
        st = step(f->tp, w, (uint64_t)++steps);
    assert_status(st, TG_NOMEM);
    assert_true(steps > 10);
    assert_true(tg_tape_bytes(f->tp) <= limit);
    const char *msg = tg_tape_error(f->tp);
    assert_contains(msg, "memory limit is reached");
    assert_contains(msg, "limit 4 MiB");
    assert_contains(msg, "backward passes without tg_tape_reset");
    assert_contains(msg, "call tg_tape_reset after each training step");
    /* The failed step changed no parameter gradient. */
    for (int i = 0; i < 64; i++)
        assert_true(((const float *)tg_param_grad(w))[i] == 0);

    /* With the reset, the same loop runs on in constant memory under the same limit. */
    tg_tape_reset(f->tp);
    size_t bytes = 0;
    for (int i = 0; i < 2000; i++) {
        tg_tape_reset(f->tp);
        assert_status(step(f->tp, w, (uint64_t)i), TG_OK);
        if (i == 1)
            bytes = tg_tape_bytes(f->tp);
    }
    assert_int_equal(tg_tape_bytes(f->tp), bytes);
    tg_param_free(w);
}

static void one_large_step_and_no_limit(void **state)
{
    fixture *f = *state;
    assert_status(tg_tape_set_memory_limit(f->tp, (size_t)1 << 20), TG_OK);
    tg_tensor big = tg_zeros(f->tp, TG_F64, 1, (int64_t[]){1 << 18}); /* 2 MiB */
    assert_false(tg_ok(big));
    assert_null(tg_data(big));
    assert_status(tg_tape_status(f->tp), TG_NOMEM);
    const char *msg = tg_tape_error(f->tp);
    assert_contains(msg, "tg_zeros");
    assert_contains(msg, "limit 1 MiB");
    assert_contains(msg, "is tg_tape_reset missing between steps?");
    assert_true(strstr(msg, "backward passes") == NULL);
    /* Raised, or lifted with 0, the same allocation succeeds. */
    tg_tape_reset(f->tp);
    assert_status(tg_tape_set_memory_limit(f->tp, 0), TG_OK);
    big = tg_zeros(f->tp, TG_F64, 1, (int64_t[]){1 << 18});
    assert_tape_ok(f->tp);
    assert_non_null(tg_data(big));
    /* A limit lowered below what the tape holds refuses the next growth, not what exists. */
    assert_status(tg_tape_set_memory_limit(f->tp, (size_t)1 << 20), TG_OK);
    assert_non_null(tg_data(big));
    assert_false(tg_ok(tg_zeros(f->tp, TG_F64, 1, (int64_t[]){1 << 18})));
    assert_status(tg_tape_status(f->tp), TG_NOMEM);
}

/* An allocator that refuses every request over 1 MiB. */
static void *small_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    (void)user, (void)old_size;
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    return new_size > ((size_t)1 << 20) ? NULL : realloc(ptr, new_size);
}

/* An out-of-memory error that is not the limit's says nothing about it. */
static void other_out_of_memory_has_no_hint(void **state)
{
    (void)state;
    tg_ctx *ctx;
    tg_tape *tp;
    tg_ctx_options o = {.alloc = small_alloc};
    assert_status(tg_ctx_new(&ctx, &o), TG_OK);
    assert_status(tg_tape_new(ctx, &tp), TG_OK);
    assert_false(tg_ok(tg_zeros(tp, TG_F64, 1, (int64_t[]){1 << 18})));
    assert_status(tg_tape_status(tp), TG_NOMEM);
    assert_contains(tg_tape_error(tp), "tg_zeros: out of memory");
    assert_true(strstr(tg_tape_error(tp), "memory limit") == NULL);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
}

/* The node and scalar tables count too: leaks that put nothing in the arena are caught. */
static void node_and_scalar_tables_count(void **state)
{
    fixture *f = *state;
    assert_status(tg_tape_set_memory_limit(f->tp, (size_t)2 << 20), TG_OK);
    tg_scalar s = tg_s_var(f->tp, 1.0);
    long entries = 0;
    while (tg_s_ok(s) && entries < 10000000)
        s = tg_s_mulc(s, 1.0), entries++;
    assert_status(tg_tape_status(f->tp), TG_NOMEM);
    assert_contains(tg_tape_error(f->tp), "scalar entries");
    assert_contains(tg_tape_error(f->tp), "memory limit is reached");
    assert_true(entries > 10000);

    tg_tape_reset(f->tp);
    tg_tensor x = tg_ones(f->tp, TG_F32, 0, NULL), y = x;
    long nodes = 0;
    while (tg_ok(y) && nodes < 10000000)
        y = tg_detach(x), nodes++; /* a node and no arena bytes */
    assert_status(tg_tape_status(f->tp), TG_NOMEM);
    assert_contains(tg_tape_error(f->tp), "memory limit is reached");
    assert_true(nodes > 1000);
    /* After a reset everything works again within the limit. */
    tg_tape_reset(f->tp);
    assert_true(tg_ok(tg_add(VEC64(f->tp, 1), VEC64(f->tp, 2))));
}

/* Freeing the context first: the tapes keep working and the last one frees everything. */
static void context_freed_before_its_tapes(void **state)
{
    (void)state;
    ledger l = {0};
    tg_ctx_options o = {.alloc = ledger_alloc, .alloc_user = &l};
    tg_ctx *ctx;
    tg_tape *a, *b;
    tg_param *w;
    assert_status(tg_ctx_new(&ctx, &o), TG_OK);
    assert_status(tg_tape_new(ctx, &a), TG_OK);
    assert_status(tg_tape_new(ctx, &b), TG_OK);
    assert_status(tg_param_new(ctx, "w", TG_F64, 1, (int64_t[]){3}, &w), TG_OK);
    tg_param_fill(w, 2.0);
    tg_ctx_free(ctx);
    /* Both tapes, and the parameter they read, are still fine. */
    tg_tensor y = tg_sum_all(tg_square(tg_param_tensor(a, w)));
    assert_status(tg_backward(y), TG_OK);
    assert_close(tg_item(y), 12.0, 0);
    assert_close(((const double *)tg_param_grad(w))[0], 4.0, 0);
    tg_tape_free(a);
    assert_true(atomic_load(&l.blocks) > 0);
    tg_tensor z = tg_mul(VEC64(b, 1, 2), VEC64(b, 3, 4));
    assert_close(((const double *)tg_data(z))[1], 8.0, 0);
    assert_status(tg_tape_status(b), TG_OK);
    tg_tape_free(b); /* the last reference: the context goes with it */
    assert_int_equal(atomic_load(&l.blocks), 0);
    assert_int_equal(atomic_load(&l.bytes), 0);

    /* The usual order still frees everything at tg_ctx_free. */
    assert_status(tg_ctx_new(&ctx, &o), TG_OK);
    assert_status(tg_tape_new(ctx, &a), TG_OK);
    tg_tape_free(a);
    assert_true(atomic_load(&l.blocks) > 0);
    tg_ctx_free(ctx);
    assert_int_equal(atomic_load(&l.blocks), 0);
}

typedef struct worker {
    tg_tape *tp;
    double result;
} worker;

static void *work_and_free(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < 200; i++) {
        tg_tape_reset(w->tp);
        tg_tensor x = tg_requires_grad(tg_full(w->tp, TG_F64, 1, (int64_t[]){64}, 0.5));
        tg_backward(tg_sum_all(tg_tanh(x)));
        w->result = tg_item(tg_sum_all(tg_tensor_grad(x)));
    }
    tg_tape_free(w->tp);
    return NULL;
}

/* Tapes freed in several threads at once after the context: exactly one frees it. */
static void last_tape_in_any_thread_frees_the_context(void **state)
{
    (void)state;
    for (int round = 0; round < 20; round++) {
        ledger l = {0};
        tg_ctx_options o = {.alloc = ledger_alloc, .alloc_user = &l};
        tg_ctx *ctx;
        worker w[4];
        pthread_t th[4];
        assert_status(tg_ctx_new(&ctx, &o), TG_OK);
        for (int i = 0; i < 4; i++)
            assert_status(tg_tape_new(ctx, &w[i].tp), TG_OK);
        tg_ctx_free(ctx);
        for (int i = 0; i < 4; i++)
            assert_int_equal(pthread_create(&th[i], NULL, work_and_free, &w[i]), 0);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        for (int i = 0; i < 4; i++)
            assert_close(w[i].result, 64 * (1 - tanh(0.5) * tanh(0.5)), 1e-12);
        assert_int_equal(atomic_load(&l.blocks), 0);
        assert_int_equal(atomic_load(&l.bytes), 0);
    }
}

/* tg_tape_reset turns recording back on, as the header says, so a step that failed inside a
 * no-grad section cannot leave the next one unrecorded. */
static void reset_turns_recording_on(void **state)
{
    fixture *f = *state;
    assert_true(tg_tape_set_grad(f->tp, false));
    tg_tape_fail(f->tp, TG_INVALID, "a step failed inside its no-grad section");
    tg_tape_reset(f->tp);
    assert_true(tg_tape_grad_enabled(f->tp));
    tg_tensor x = tg_requires_grad(VEC64(f->tp, 3));
    assert_status(tg_backward(tg_square(x)), TG_OK);
    assert_close(tg_item(tg_tensor_grad(x)), 6.0, 0);
}

/* An error handle's data is NULL (and its metadata invalid), as the header documents. */
static void error_handle_reads_as_invalid(void **state)
{
    fixture *f = *state;
    tg_tensor bad = tg_matmul(VEC64(f->tp, 1, 2), VEC64(f->tp, 3));
    assert_false(tg_ok(bad));
    assert_null(tg_data(bad));
    assert_null(tg_shape(bad));
    assert_int_equal(tg_numel(bad), -1);
    assert_true(isnan(tg_item(bad)));
    assert_int_equal(tg_tensor_node(bad), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(forgotten_reset_meets_the_limit),
        FIXTURE_TEST(one_large_step_and_no_limit),
        cmocka_unit_test(other_out_of_memory_has_no_hint),
        FIXTURE_TEST(node_and_scalar_tables_count),
        cmocka_unit_test(context_freed_before_its_tapes),
        cmocka_unit_test(last_tape_in_any_thread_frees_the_context),
        FIXTURE_TEST(reset_turns_recording_on),
        FIXTURE_TEST(error_handle_reads_as_invalid),
    };
    return cmocka_run_group_tests_name("lifetime", tests, NULL, NULL);
}
