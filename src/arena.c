/* arena.c — allocation through the context's hook, and the tape's chained-block arena. */
#include "internal.h"

#include <stdlib.h>

void *tg__alloc(tg_ctx *ctx, size_t size) { return tg__realloc(ctx, NULL, 0, size); }

void *tg__realloc(tg_ctx *ctx, void *ptr, size_t old_size, size_t new_size)
{
    tg__assert(new_size > 0);
    atomic_fetch_add_explicit(&ctx->alloc_calls, 1, memory_order_relaxed);
    return ctx->alloc(ctx->alloc_user, ptr, old_size, new_size);
}

void tg__free(tg_ctx *ctx, void *ptr, size_t size)
{
    if (!ptr)
        return;
    atomic_fetch_add_explicit(&ctx->alloc_calls, 1, memory_order_relaxed);
    ctx->alloc(ctx->alloc_user, ptr, size, 0);
}

char *tg__strdup(tg_ctx *ctx, const char *s, size_t *size_out)
{
    size_t n = strlen(s) + 1;
    char *d = tg__alloc(ctx, n);
    if (d)
        memcpy(d, s, n);
    *size_out = n;
    return d;
}

/* Blocks start small and double, so a big graph needs few blocks and a small one little memory;
 * a request bigger than the next size gets a block of its own size. */
#define ARENA_FIRST ((size_t)64 << 10)
#define ARENA_MAX_STEP ((size_t)64 << 20)

static unsigned char *block_base(tg__block *b) { return (unsigned char *)b + TG__BLOCK_HEADER; }

static void *bump(tg__block *b, size_t size)
{
    uintptr_t base = (uintptr_t)block_base(b);
    uintptr_t p = (base + b->used + TG__ALIGN - 1) & ~(uintptr_t)(TG__ALIGN - 1);
    if (p + size > base + b->size)
        return NULL;
    b->used = (size_t)(p + size - base);
    return (void *)p;
}

void *tg__arena_grow(tg_ctx *ctx, tg__arena *a, size_t size)
{
    if (size == 0)
        size = 1;
    if (size > a->cap || a->bytes > a->cap - size) {
        a->refused = true;
        return NULL;
    }
    if (a->cur) {
        void *p = bump(a->cur, size);
        if (p) {
            a->bytes += size;
            return p;
        }
        /* Move on to a kept block that fits; skipped blocks stay in the chain for later. */
        for (tg__block *b = a->cur->next; b; b = b->next) {
            b->used = 0; /* blocks past the current one are free in this generation */
            if (b->size >= size + TG__ALIGN) {
                a->cur = b;
                p = bump(b, size);
                a->bytes += size;
                return p;
            }
        }
    }
    if (size > SIZE_MAX / 2 - TG__BLOCK_HEADER - TG__ALIGN)
        return NULL;
    if (a->next_size == 0)
        a->next_size = ARENA_FIRST;
    size_t want = size + TG__ALIGN > a->next_size ? size + TG__ALIGN : a->next_size;
    tg__block *b = tg__alloc(ctx, TG__BLOCK_HEADER + want);
    if (!b)
        return NULL;
    b->size = want;
    b->used = 0;
    if (a->next_size < ARENA_MAX_STEP)
        a->next_size *= 2;
    if (!a->cur) {
        b->next = a->first;
        a->first = b;
    } else {
        b->next = a->cur->next;
        a->cur->next = b;
    }
    a->cur = b;
    void *p = bump(b, size);
    a->bytes += size;
    return p;
}

void tg__arena_rewind(tg__arena *a)
{
    a->cur = a->first;
    if (a->cur)
        a->cur->used = 0;
    a->bytes = 0;
    a->refused = false;
}

void tg__arena_release(tg_ctx *ctx, tg__arena *a)
{
    tg__block *b = a->first;
    while (b) {
        tg__block *next = b->next;
        tg__free(ctx, b, TG__BLOCK_HEADER + b->size);
        b = next;
    }
    size_t cap = a->cap;
    memset(a, 0, sizeof *a);
    a->cap = cap;
}
