/* shape.h — the one rule for a valid shape, shared by the engine (src/) and the ops (ops/). */
#ifndef TG_SHAPE_H
#define TG_SHAPE_H

#include "tapegrad.h"

/* Largest product of a shape's non-zero dims: a byte count of any sub-shape (a stride, a
 * buffer of up to 16-byte elements) then fits an int64_t. */
#define TG__SHAPE_LIMIT (INT64_MAX / 16)

/* Valid: 0..TG_MAX_DIMS dims, none negative, the product of the non-zero ones at most
 * TG__SHAPE_LIMIT, whatever their order (so [0, 2^62, 2] is as invalid as [2, 2^62, 0]: both
 * would overflow a stride). *numel receives the element count. */
static inline bool tg__shape_ok(int ndim, const int64_t *shape, int64_t *numel)
{
    if (ndim < 0 || ndim > TG_MAX_DIMS || (ndim > 0 && !shape))
        return false;
    int64_t nonzero = 1;
    bool empty = false;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] > 0 && nonzero > TG__SHAPE_LIMIT / shape[d]))
            return false;
        if (shape[d] == 0)
            empty = true;
        else
            nonzero *= shape[d];
    }
    *numel = empty ? 0 : nonzero;
    return true;
}

#endif
