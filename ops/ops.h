/* ops.h — declarations of the built-in op descriptors listed in builtins.h. */
#ifndef TG_OPS_H
#define TG_OPS_H

#include "tapegrad.h"

#include "builtins.h"

#define TG__DECLARE_OP(name) extern const tg_op_def tg__op_##name;
TG__BUILTIN_OPS(TG__DECLARE_OP)
#undef TG__DECLARE_OP

/* Every built-in descriptor, in builtins.h order (defined in ops/builtins.c). */
extern const tg_op_def *const tg__builtin_defs[TG__OP_COUNT];

/* Applies built-in op `id` (a TG__OP_* value) through its registered descriptor: what
 * tg_op_apply does, minus the registry lookup. Defined in src/apply.c. */
tg_tensor tg__apply(int id, int n, const tg_tensor *inputs, const void *attr);
static inline tg_tensor tg__apply1(int id, tg_tensor a, const void *attr)
{
    return tg__apply(id, 1, &a, attr);
}
static inline tg_tensor tg__apply2(int id, tg_tensor a, tg_tensor b, const void *attr)
{
    tg_tensor in[2] = {a, b};
    return tg__apply(id, 2, in, attr);
}
static inline tg_tensor tg__apply3(int id, tg_tensor a, tg_tensor b, tg_tensor c, const void *attr)
{
    tg_tensor in[3] = {a, b, c};
    return tg__apply(id, 3, in, attr);
}

#endif
