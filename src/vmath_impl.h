/* vmath_impl.h — private to src/vmath*.c: the kernels one instruction set provides, as a table
 * that vmath.c dispatches through. Each table is built from the one template, vmath_simd.h. */
#ifndef TG_VMATH_IMPL_H
#define TG_VMATH_IMPL_H

#include "vmath.h"

typedef void (*tg__vm_map_f32)(int64_t n, const float *a, const float *b, float *y, float c0,
                               float c1);
typedef void (*tg__vm_map_f64)(int64_t n, const double *a, const double *b, double *y, double c0,
                               double c1);
typedef double (*tg__vm_red_f32)(int64_t n, const float *x, float shift, float *y);
typedef double (*tg__vm_red_f64)(int64_t n, const double *x, double shift, double *y);
typedef void (*tg__vm_rows_f32)(int64_t rows, int64_t cols, int64_t stride, const float *x,
                                double *acc);
typedef void (*tg__vm_rows_f64)(int64_t rows, int64_t cols, int64_t stride, const double *x,
                                double *acc);

typedef struct tg__vm_kernels {
    tg__vm_map_f32 map_f32[TG__VM_NOPS];
    tg__vm_map_f64 map_f64[TG__VM_NOPS];
    tg__vm_red_f32 red_f32[TG__VM_NREDS];
    tg__vm_red_f64 red_f64[TG__VM_NREDS];
    tg__vm_rows_f32 rows_f32;
    tg__vm_rows_f64 rows_f64;
} tg__vm_kernels;

/* One table per instruction set (vmath_scalar.c, vmath_avx2.c, vmath_avx512.c). */
extern const tg__vm_kernels tg__vm_kernels_scalar;
extern const tg__vm_kernels tg__vm_kernels_avx2;
extern const tg__vm_kernels tg__vm_kernels_avx512;

#endif
