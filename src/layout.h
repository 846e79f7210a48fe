/* layout.h — what a tensor's layout is, defined once for the engine (src/) and the ops (ops/):
 * element sizes and the rule for a valid shape. (Shapes are printed by tg_format_shape.) */
#ifndef TG_LAYOUT_H
#define TG_LAYOUT_H

#include "tapegrad.h"

/* Bytes per element of each dtype (0 for a value that is none of them): the one table. */
static inline size_t tg__dtype_size(tg_dtype dt)
{
    static const unsigned char sizes[] = {[TG_F32] = 4, [TG_F64] = 8, [TG_I64] = 8};
    return (unsigned)dt < sizeof sizes ? sizes[dt] : 0;
}

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
        int64_t n = shape[d];
        /* Both factors below 2^29: the product is below 2^58, under the limit, no division. */
        bool small = (uint64_t)(nonzero | n) < ((uint64_t)1 << 29);
        if (!small && (n < 0 || (n > 0 && nonzero > TG__SHAPE_LIMIT / n)))
            return false;
        empty |= n == 0;
        nonzero *= n ? n : 1;
    }
    *numel = empty ? 0 : nonzero;
    return true;
}

#endif
