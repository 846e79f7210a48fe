/* files.h — what the test programs that write files share (test_checkpoint.c, test_data.c): a
 * fresh temporary directory per test, made by the test's setup and removed with all in it by its
 * teardown (so a failed assertion leaves nothing behind); whole-file reads and writes; and a
 * counting allocator that can fail, for the loaders' allocation failures. Define
 * _POSIX_C_SOURCE 200809L (mkdtemp) before any include, and TMPDIR_TEMPLATE (a mkdtemp template)
 * to name the directories after the program. */
#ifndef TG_TEST_FILES_H
#define TG_TEST_FILES_H

#include "common.h"

#include <unistd.h>

#ifndef TMPDIR_TEMPLATE
#define TMPDIR_TEMPLATE "/tmp/tg_test_XXXXXX"
#endif

/* The current test's temporary directory. */
static char tmp_dir[64];

/* A setup making tmp_dir. */
static inline int tmpdir_setup(void **state)
{
    (void)state;
    strcpy(tmp_dir, TMPDIR_TEMPLATE);
    return mkdtemp(tmp_dir) ? 0 : -1;
}

/* A teardown removing tmp_dir and everything in it. */
static inline int tmpdir_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The same with the fixture of common.h. */
static inline int tmpdir_fixture_setup(void **state)
{
    return tmpdir_setup(state) || fixture_setup(state);
}

static inline int tmpdir_fixture_teardown(void **state)
{
    int a = fixture_teardown(state), b = tmpdir_teardown(state);
    return a || b;
}

#define TMPDIR_TEST(fn) cmocka_unit_test_setup_teardown(fn, tmpdir_setup, tmpdir_teardown)
#define TMPDIR_FIXTURE_TEST(fn)                                                                    \
    cmocka_unit_test_setup_teardown(fn, tmpdir_fixture_setup, tmpdir_fixture_teardown)

/* out = tmp_dir/name. */
static inline void tmp_path(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", tmp_dir, name);
}

/* The whole file (malloc'd, one spare byte), its length in *n. */
static inline unsigned char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static inline void write_all(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n)
        assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* A counting allocator that can fail the k-th call (k > 0), to check failures leak nothing. */
typedef struct counter {
    long long live; /* bytes allocated and not freed */
    long calls, fail_at;
} counter;

static inline void *counting_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    counter *c = user;
    if (new_size == 0) {
        if (ptr)
            c->live -= (long long)old_size;
        free(ptr);
        return NULL;
    }
    if (++c->calls == c->fail_at)
        return NULL;
    void *p = realloc(ptr, new_size);
    if (p)
        c->live += (long long)new_size - (ptr ? (long long)old_size : 0);
    return p;
}

#endif
