/* vmath.h — the engine's vector math over contiguous arrays (f32 or f64 by `dt`); the only
 * layer that names SLEEF. x and y may be the same array. */
#ifndef TG_VMATH_H
#define TG_VMATH_H

#include "tapegrad.h"

void tg__vm_add_into(tg_dtype dt, int64_t n, const void *x, void *y); /* y += x */
void tg__vm_exp(tg_dtype dt, int64_t n, const void *x, void *y);
void tg__vm_log(tg_dtype dt, int64_t n, const void *x, void *y);
void tg__vm_log1p(tg_dtype dt, int64_t n, const void *x, void *y);
void tg__vm_sqrt(tg_dtype dt, int64_t n, const void *x, void *y);
void tg__vm_sin(tg_dtype dt, int64_t n, const void *x, void *y);
void tg__vm_cos(tg_dtype dt, int64_t n, const void *x, void *y);
void tg__vm_tanh(tg_dtype dt, int64_t n, const void *x, void *y);
void tg__vm_sigmoid(tg_dtype dt, int64_t n, const void *x, void *y);

/* The instruction set the vector paths use on this CPU: "avx512f", "avx2" or "scalar". */
const char *tg__vm_isa(void);

#endif
