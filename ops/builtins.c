/* builtins.c — the registration table of built-in ops, generated from builtins.h. */
#include "ops.h"

const tg_op_def *const tg__builtin_defs[TG__OP_COUNT] = {
#define TG__DEF_POINTER(name) &tg__op_##name,
    TG__BUILTIN_OPS(TG__DEF_POINTER)
#undef TG__DEF_POINTER
};
