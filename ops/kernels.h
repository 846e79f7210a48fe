/* kernels.h — helpers shared by the built-in ops: typed elementwise loops for tg_kernel_loop
 * and random example inputs for the registry gradcheck. Private to ops/. */
#ifndef TG_KERNELS_H
#define TG_KERNELS_H

#include "tapegrad.h"

#include "../src/layout.h"

#include <math.h>
#include <string.h>

/* Hot loops of the window ops (convolution, pooling) are written once, with the compiler's
 * generic vectors where they need them, and compiled per instruction set as vmath's and the
 * GEMM's kernels are: one copy with the target attribute of AVX-512F, one of AVX2 with FMA, one
 * for the baseline, each with vectors of its set's width in bytes (TG__FOR_EACH_ISA gives
 * suffix, attribute and width), and TG__ISA_CALL calls the copy of the best set this CPU runs
 * (tg__vm_isa_level, read each call). Not target_clones: GCC 12 compiled the max-pooling loop
 * element by element in its AVX-512 clone (15 ms against 0.55 ms with a target attribute), and
 * a 64-byte vector in AVX2 code element by element too (19 ms). */
#ifdef TG_VMATH_X86
#define TG__TARGET_AVX512 __attribute__((target("avx512f,fma")))
#define TG__TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define TG__TARGET_AVX512
#define TG__TARGET_AVX2
#endif
#define TG__FOR_EACH_ISA(X)                                                                        \
    X(avx512, TG__TARGET_AVX512, 64)                                                               \
    X(avx2, TG__TARGET_AVX2, 32)                                                                   \
    X(base, , 16)
#ifdef TG__ISA_FORCE /* tests: a lower set than the CPU's best (see tests/meson.build) */
#define TG__ISA_LEVEL() (tg__vm_isa_level() < TG__ISA_FORCE ? tg__vm_isa_level() : TG__ISA_FORCE)
#else
#define TG__ISA_LEVEL() tg__vm_isa_level()
#endif
#define TG__ISA_CALL(fn, ...)                                                                      \
    do {                                                                                           \
        int isa_ = TG__ISA_LEVEL();                                                                \
        if (isa_ == TG__VM_ISA_AVX512)                                                             \
            fn##_avx512(__VA_ARGS__);                                                              \
        else if (isa_ == TG__VM_ISA_AVX2)                                                          \
            fn##_avx2(__VA_ARGS__);                                                                \
        else                                                                                       \
            fn##_base(__VA_ARGS__);                                                                \
    } while (0)

/* A tg_loop_fn computing y = EXPR(a, b) for one element type T. The output step is always the
 * element size; an input step is the element size or 0 (broadcast). The common cases get their
 * own loops so the compiler can vectorise them. */
#define TG__LOOP2(fname, T, EXPR)                                                                  \
    static void fname(int64_t n, char *const *p, const int64_t *s, void *user)                     \
    {                                                                                              \
        (void)user;                                                                                \
        const T *A = (const T *)p[0], *B = (const T *)p[1];                                        \
        T *Y = (T *)p[2];                                                                          \
        if (s[0] && s[1]) {                                                                        \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T a = A[i], b = B[i];                                                              \
                Y[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else if (s[0]) {                                                                         \
            const T b = B[0];                                                                      \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T a = A[i];                                                                        \
                Y[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else if (s[1]) {                                                                         \
            const T a = A[0];                                                                      \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T b = B[i];                                                                        \
                Y[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else {                                                                                   \
            const T a = A[0], b = B[0];                                                            \
            const T y = (EXPR);                                                                    \
            for (int64_t i = 0; i < n; i++)                                                        \
                Y[i] = y;                                                                          \
        }                                                                                          \
    }

/* Both element types at once: defines fname_f32 and fname_f64. */
#define TG__LOOPS2(fname, EXPR)                                                                    \
    TG__LOOP2(fname##_f32, float, EXPR)                                                            \
    TG__LOOP2(fname##_f64, double, EXPR)

/* y = EXPR(a) for one operand that may broadcast (step 0). */
#define TG__LOOP1(fname, T, EXPR)                                                                  \
    static void fname(int64_t n, char *const *p, const int64_t *s, void *user)                     \
    {                                                                                              \
        (void)user;                                                                                \
        const T *A = (const T *)p[0];                                                              \
        T *Y = (T *)p[1];                                                                          \
        if (s[0]) {                                                                                \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T a = A[i];                                                                        \
                Y[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else {                                                                                   \
            const T a = A[0];                                                                      \
            const T y = (EXPR);                                                                    \
            for (int64_t i = 0; i < n; i++)                                                        \
                Y[i] = y;                                                                          \
        }                                                                                          \
    }
#define TG__LOOPS1(fname, EXPR)                                                                    \
    TG__LOOP1(fname##_f32, float, EXPR)                                                            \
    TG__LOOP1(fname##_f64, double, EXPR)

/* y = EXPR(a, b, c) for three operands (any may broadcast). */
#define TG__LOOP3(fname, T, EXPR)                                                                  \
    static void fname(int64_t n, char *const *p, const int64_t *s, void *user)                     \
    {                                                                                              \
        (void)user;                                                                                \
        T *Y = (T *)p[3];                                                                          \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T a = *(const T *)(p[0] + i * s[0]), b = *(const T *)(p[1] + i * s[1]),                \
              c = *(const T *)(p[2] + i * s[2]);                                                   \
            Y[i] = (EXPR);                                                                         \
        }                                                                                          \
    }
#define TG__LOOPS3(fname, EXPR)                                                                    \
    TG__LOOP3(fname##_f32, float, EXPR)                                                            \
    TG__LOOP3(fname##_f64, double, EXPR)

/* Runs the f32 or f64 loop of an elementwise op over its broadcast operands. */
#define TG__RUN_LOOPS(k, fname)                                                                    \
    tg_kernel_loop((k), (k)->out->dtype == TG_F32 ? fname##_f32 : fname##_f64, NULL)

/* y = EXPR(x) over a contiguous array, for unary ops (x and y have the same shape). */
#define TG__MAP1(k, EXPR)                                                                          \
    do {                                                                                           \
        int64_t n_ = (k)->out->numel;                                                              \
        if ((k)->out->dtype == TG_F32) {                                                           \
            const float *X_ = (const float *)(k)->in[0]->data;                                     \
            float *Y_ = (float *)(k)->out->data;                                                   \
            for (int64_t i_ = 0; i_ < n_; i_++) {                                                  \
                float x = X_[i_];                                                                  \
                Y_[i_] = (float)(EXPR);                                                            \
            }                                                                                      \
        } else {                                                                                   \
            const double *X_ = (const double *)(k)->in[0]->data;                                   \
            double *Y_ = (double *)(k)->out->data;                                                 \
            for (int64_t i_ = 0; i_ < n_; i_++) {                                                  \
                double x = X_[i_];                                                                 \
                Y_[i_] = (double)(EXPR);                                                           \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* An axis of an ndim-dim tensor with negative values counting from the end; -1 if out of
 * range (and for any axis when ndim < 0, an error handle's). */
static inline int tg__axis(int axis, int ndim)
{
    if (ndim < 0 || axis < -ndim || axis >= ndim)
        return -1;
    return axis < 0 ? axis + ndim : axis;
}

/* Elements before and after `axis` of a contiguous tensor (the layout [outer, dim, inner]). */
static inline void tg__outer_inner(const tg_view *v, int axis, int64_t *outer, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int d = 0; d < axis; d++)
        *outer *= v->shape[d];
    for (int d = axis + 1; d < v->ndim; d++)
        *inner *= v->shape[d];
}

/* Check of a unary elementwise op: one float input, output of the same dtype and shape. */
static inline tg_status tg__check_unary(tg_check *c)
{
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    *c->out = *c->in[0];
    return TG_OK;
}

/* Window ops (conv, pooling): the outputs [*lo, *hi) of m whose input position q * stride + off
 * lies in [0, n). */
static inline void tg__valid_range(int64_t off, int64_t stride, int64_t n, int64_t m, int64_t *lo,
                                   int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t h = n - 1 - off < 0 ? 0 : (n - 1 - off) / stride + 1;
    h = h < m ? h : m;
    *lo = l < h ? l : h;
    *hi = h;
}

/* Window ops: every input is f32 or f64 of one dtype, and the first `nimages` are 4-d (NCHW);
 * `names` name the inputs in messages. */
static inline tg_status tg__check_images(tg_check *c, const char *const *names, int nimages)
{
    for (int i = 0; i < c->ninputs; i++) {
        tg_status st = tg_check_float(c, i);
        if (st)
            return st;
        if (c->in[i]->dtype != c->in[0]->dtype)
            return tg_check_fail(c, TG_DTYPE, "%s is %s, %s is %s", names[i],
                                 tg_dtype_name(c->in[i]->dtype), names[0],
                                 tg_dtype_name(c->in[0]->dtype));
    }
    for (int i = 0; i < nimages && i < c->ninputs; i++)
        if (c->in[i]->ndim != 4)
            return tg_check_fail(c, TG_SHAPE, "%s must be 4-d (NCHW), got %d dims", names[i],
                                 c->in[i]->ndim);
    return TG_OK;
}

/* Broadcasts the shape in[0..n) into shape[0..*ndim) (NumPy rules: aligned at the last dim, a
 * dim of 1 stretches, 0 wins over 1) and updates *ndim; false (shape unspecified) if they do not
 * broadcast or n > TG_MAX_DIMS. Start from *ndim = 0 to broadcast several shapes together. */
static inline bool tg__broadcast_into(int *ndim, int64_t *shape, int n, const int64_t *in)
{
    int nd = *ndim > n ? *ndim : n;
    if (n < 0 || nd > TG_MAX_DIMS)
        return false;
    int shift = nd - *ndim;
    for (int d = nd - 1; d >= 0; d--)
        shape[d] = d >= shift ? shape[d - shift] : 1;
    for (int d = 0; d < n; d++) {
        int64_t s = in[d], *o = &shape[nd - n + d];
        if (s != *o && s != 1 && *o != 1)
            return false;
        *o = s == 1 ? *o : s;
    }
    *ndim = nd;
    return true;
}

/* A tensor's metadata (no data) as a view, through the public accessors. */
static inline tg_view tg__meta(tg_tensor t)
{
    tg_view v;
    memset(&v, 0, sizeof v);
    v.dtype = tg_tensor_dtype(t);
    v.ndim = tg_ndim(t) < 0 ? 0 : tg_ndim(t);
    v.numel = tg_numel(t);
    if (tg_shape(t))
        memcpy(v.shape, tg_shape(t), (size_t)v.ndim * sizeof(int64_t));
    return v;
}

/* y = EXPR(x, c) with the constant c in the element type (as PyTorch rounds a Python scalar to
 * the tensor's dtype first), so f32 results match number for number. */
#define TG__MAP1C(k, cval, EXPR)                                                                   \
    do {                                                                                           \
        int64_t n_ = (k)->out->numel;                                                              \
        if ((k)->out->dtype == TG_F32) {                                                           \
            const float *X_ = (const float *)(k)->in[0]->data;                                     \
            float *Y_ = (float *)(k)->out->data;                                                   \
            const float c = (float)(cval);                                                         \
            for (int64_t i_ = 0; i_ < n_; i_++) {                                                  \
                float x = X_[i_];                                                                  \
                Y_[i_] = (EXPR);                                                                   \
            }                                                                                      \
        } else {                                                                                   \
            const double *X_ = (const double *)(k)->in[0]->data;                                   \
            double *Y_ = (double *)(k)->out->data;                                                 \
            const double c = (double)(cval);                                                       \
            for (int64_t i_ = 0; i_ < n_; i_++) {                                                  \
                double x = X_[i_];                                                                 \
                Y_[i_] = (EXPR);                                                                   \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* Example inputs: f64 uniform on [low, high) with magnitude at least `gap` (keeps inputs away
 * from kinks such as relu's at 0 when gap > 0). */
static inline tg_tensor tg__example(tg_tape *tp, int ndim, const int64_t *shape, double low,
                                    double high, double gap, uint64_t seed)
{
    tg_tensor t = tg_uniform(tp, TG_F64, ndim, shape, low, high, seed);
    if (gap > 0 && tg_ok(t)) {
        /* Shift values within `gap` of zero outward; the data is the leaf's own buffer. */
        double *d = (double *)tg_data(t);
        for (int64_t i = 0; i < tg_numel(t); i++)
            if (fabs(d[i]) < gap)
                d[i] = d[i] < 0 ? d[i] - gap : d[i] + gap;
    }
    return t;
}

/* The standard unary cases: [3,4], a 0-d tensor and a 3-d [2,3,2]; values in [low, high). */
static inline int tg__example_unary(tg_tape *tp, int index, tg_tensor *in, double low, double high,
                                    double gap)
{
    static const int64_t s0[] = {3, 4}, s2[] = {2, 3, 2};
    switch (index) {
    case 0:
        in[0] = tg__example(tp, 2, s0, low, high, gap, 11);
        return 1;
    case 1:
        in[0] = tg__example(tp, 0, NULL, low, high, gap, 12);
        return 1;
    case 2:
        in[0] = tg__example(tp, 3, s2, low, high, gap, 13);
        return 1;
    }
    return 0;
}

/* The standard binary cases: equal shapes, a row broadcast, two-sided broadcasting, and a 0-d
 * operand. Values of `a` in [alow, ahigh), of `b` in [blow, bhigh). */
static inline int tg__example_binary(tg_tape *tp, int index, tg_tensor *in, double alow,
                                     double ahigh, double blow, double bhigh)
{
    static const int64_t s34[] = {3, 4}, s4[] = {4}, s213[] = {2, 1, 3}, s41[] = {4, 1};
    switch (index) {
    case 0:
        in[0] = tg__example(tp, 2, s34, alow, ahigh, 0, 21);
        in[1] = tg__example(tp, 2, s34, blow, bhigh, 0, 22);
        return 2;
    case 1:
        in[0] = tg__example(tp, 2, s34, alow, ahigh, 0, 23);
        in[1] = tg__example(tp, 1, s4, blow, bhigh, 0, 24);
        return 2;
    case 2:
        in[0] = tg__example(tp, 3, s213, alow, ahigh, 0, 25);
        in[1] = tg__example(tp, 2, s41, blow, bhigh, 0, 26);
        return 2;
    case 3:
        in[0] = tg__example(tp, 0, NULL, alow, ahigh, 0, 27);
        in[1] = tg__example(tp, 2, s34, blow, bhigh, 0, 28);
        return 2;
    }
    return 0;
}

#endif
