/* gemm.c — matrix multiply: a blocked and packed GEMM in the manner of GotoBLAS and BLIS, the
 * only one tapegrad uses. This file holds the dispatch, the cache blocking, the packing and the
 * threading. The micro-kernels are in gemm_simd.h (AVX-512F and AVX2+FMA, chosen by the CPU at
 * run time, like vmath) and here (a scalar one for other CPUs).
 *
 * Why not OpenBLAS (which tapegrad called through CBLAS until it had these kernels): its pool of
 * threads is process-wide and sized by OpenBLAS, not by the context, so with tapegrad's own
 * threads two pools spun for the same cores (two threads ran slower than one), and setting it
 * per context is a global write racing with other contexts and with the user's own use of
 * OpenBLAS. Sharing a product among the context's threads here keeps one pool. On the
 * development machine (AMD EPYC, family 26, AVX-512) the AVX-512F kernel ran the MLP's and the
 * CNN's products at 1.0 to 2.2 times Debian's OpenBLAS 0.3.21, which runs its Haswell kernel
 * there; the AVX2 kernel, on the same machine, at 0.6 to 0.9 times it: on AVX2-only CPUs this
 * costs speed (gemm-bench, one thread; bench/README.md has the figures).
 *
 * Blocking, for one thread's part of C (rows i0..i1, columns j0..j1):
 *   for each block of NB columns                        B block: KC x NB, stays in L2
 *     for each KC-deep slice of the product
 *       pack op(B)[slice, block] into NR-column panels
 *       for each MR rows
 *         pack op(A)[rows, slice] into one panel         A panel: MR x KC, stays in L1
 *         for each NR columns of the block
 *           micro-kernel: C tile (MR x NR) += A panel * B panel, the tile in registers
 *
 * This is BLIS's loop nest with the roles of A and B exchanged, because C is row-major and the
 * kernels vectorise along its rows: the broadcast operand (A) is the small one kept in L1 and
 * reused across the block; the vector operand (B) streams from L2 one panel per kernel call.
 * Packing copies each operand into the order the kernel reads it, zero-padded to whole panels,
 * so one kernel serves the four transpose cases and every access in its loop is sequential.
 *
 * The packing buffers are local arrays of the function that runs a thread's part: tapegrad has
 * no global mutable state and kernels do not allocate, and a caller-provided buffer would have
 * to be threaded through every op that multiplies. They are bounded: A_PACK_BYTES (one A
 * panel: a part of a 32 KiB L1d) and B_PACK_BYTES (one B block: a fifth of a 1 MiB L2), about
 * 210 KiB per thread in all. The threads that run them are the caller's (8 MiB on Linux's main
 * thread) and libgomp's, which get glibc's default thread stack (RLIMIT_STACK, 8 MiB usually,
 * 2 MiB when unlimited) unless OMP_STACKSIZE says otherwise: a tenth of the smallest of these.
 * The B block's width NB follows from B_PACK_BYTES and the kernel's KC. */
#include "gemm.h"

#include <string.h>

#include "parallel.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif
#ifdef TG_GEMM_X86
#include <immintrin.h>
#endif

#define A_PACK_BYTES ((int64_t)16 << 10)
#define B_PACK_BYTES ((int64_t)192 << 10)

/* Work from which a product is shared among threads, counted as m * n * (k + 16): a row of C
 * costs about as much to write as 16 steps of the depth to compute. 2^19 is 80^3 (about 6 us
 * on one core; starting the threads costs about 1.5 us, and each packs the whole of one
 * operand). Measured on Zen 4: 64^3 ran slower on 2 threads than on 1, 80^3 and 128x128x16
 * faster. */
#define PARALLEL_WORK ((double)(1 << 19))

/* ---- The scalar micro-kernel (any CPU) ------------------------------------------------- */

/* A 4 x 8 tile: 32 accumulators the compiler keeps in registers (and vectorises if it can). */
enum { SCALAR_MR = 4, SCALAR_NR = 8, SCALAR_KC = 256 };

#define SCALAR_KERNEL(T, name)                                                                     \
    static void name(int64_t kc, const void *pa, const void *pb, void *pc, int64_t rs, int64_t cs, \
                     int64_t mr, int64_t nr, bool load)                                            \
    {                                                                                              \
        const T *a = pa, *b = pb;                                                                  \
        T *c = pc, acc[SCALAR_MR][SCALAR_NR] = {{0}};                                              \
        for (int64_t p = 0; p < kc; p++, a += SCALAR_MR, b += SCALAR_NR)                           \
            for (int i = 0; i < SCALAR_MR; i++)                                                    \
                for (int j = 0; j < SCALAR_NR; j++)                                                \
                    acc[i][j] += a[i] * b[j];                                                      \
        for (int64_t i = 0; i < mr; i++)                                                           \
            for (int64_t j = 0; j < nr; j++)                                                       \
                c[i * rs + j * cs] = load ? c[i * rs + j * cs] + acc[i][j] : acc[i][j];            \
    }
SCALAR_KERNEL(float, scalar_f32)
SCALAR_KERNEL(double, scalar_f64)

/* ---- Micro-kernel dispatch ------------------------------------------------------------- */

bool tg__gemm_isa_ok(tg__gemm_isa isa)
{
    switch (isa) {
    case TG__GEMM_BEST:
    case TG__GEMM_SCALAR:
        return true;
#ifdef TG_GEMM_X86
    case TG__GEMM_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case TG__GEMM_AVX512:
        return __builtin_cpu_supports("avx512f");
#endif
    default:
        return false;
    }
}

/* Read from the CPU model the compiler's runtime fills in once: no state of ours. */
static tg__gemm_isa best_isa(void)
{
    if (tg__gemm_isa_ok(TG__GEMM_AVX512))
        return TG__GEMM_AVX512;
    if (tg__gemm_isa_ok(TG__GEMM_AVX2))
        return TG__GEMM_AVX2;
    return TG__GEMM_SCALAR;
}

const char *tg__gemm_isa_name(tg__gemm_isa isa)
{
    switch (isa == TG__GEMM_BEST ? best_isa() : isa) {
    case TG__GEMM_AVX2:
        return "avx2";
    case TG__GEMM_AVX512:
        return "avx512f";
    default:
        return "scalar";
    }
}

static tg__gemm_kernel kernel_for(tg__gemm_isa isa, tg_dtype dt)
{
    switch (isa == TG__GEMM_BEST ? best_isa() : isa) {
#ifdef TG_GEMM_X86
    case TG__GEMM_AVX512:
        return tg__gemm_kernel_avx512(dt);
    case TG__GEMM_AVX2:
        return tg__gemm_kernel_avx2(dt);
#endif
    default:
        return (tg__gemm_kernel){SCALAR_MR, SCALAR_NR, SCALAR_KC,
                                 dt == TG_F32 ? scalar_f32 : scalar_f64};
    }
}

/* ---- Packing --------------------------------------------------------------------------- */

/* A panel holds w values (MR rows of op(A), or NR columns of op(B)) per step of the depth:
 * d[p * w + x], the first len from the operand and zeros after, kc steps. The operand has them
 * either along memory (x contiguous, p stepping by ld: copy_panel) or across it (p contiguous,
 * x stepping by ld: interleave_panel, a transpose). op(A) is interleaved unless ta, op(B) copied
 * unless tb. The transpose goes through SSE registers, 4 x 4 floats or 2 x 2 doubles at a time,
 * where the CPU has them (every x86-64); one element at a time costs several times more, which
 * shows for products with a small dimension (the packing is then a large part of the work). */
typedef void (*panel_fn)(const void *src, int64_t ld, int64_t len, int64_t kc, int64_t w,
                         void *dst);

#define PANELS(T, sfx)                                                                             \
    static void zero_tail_##sfx(T *d, int64_t len, int64_t kc, int64_t w)                          \
    {                                                                                              \
        if (len < w)                                                                               \
            for (int64_t p = 0; p < kc; p++)                                                       \
                for (int64_t x = len; x < w; x++)                                                  \
                    d[p * w + x] = 0;                                                              \
    }                                                                                              \
    static void copy_panel_##sfx(const void *src, int64_t ld, int64_t len, int64_t kc, int64_t w,  \
                                 void *dst)                                                        \
    {                                                                                              \
        const T *s = src;                                                                          \
        T *d = dst;                                                                                \
        for (int64_t p = 0; p < kc; p++)                                                           \
            for (int64_t x = 0; x < len; x++)                                                      \
                d[p * w + x] = s[p * ld + x];                                                      \
        zero_tail_##sfx(d, len, kc, w);                                                            \
    }                                                                                              \
    /* Rows x0.. of the operand, one element at a time (what the SSE blocks leave). */             \
    static void interleave_rest_##sfx(const T *s, int64_t ld, int64_t x0, int64_t len, int64_t p0, \
                                      int64_t kc, int64_t w, T *d)                                 \
    {                                                                                              \
        for (int64_t x = x0; x < len; x++)                                                         \
            for (int64_t p = p0; p < kc; p++)                                                      \
                d[p * w + x] = s[x * ld + p];                                                      \
    }
PANELS(float, f32)
PANELS(double, f64)

/* Rows x0..len of interleave_panel_f32: 4 x 4 blocks through SSE registers, then one element
 * at a time. */
static void interleave_sse_f32(const float *s, int64_t ld, int64_t x0, int64_t len, int64_t kc,
                               int64_t w, float *d)
{
    int64_t x = x0;
#ifdef __SSE2__
    for (; x + 4 <= len; x += 4) {
        const float *s0 = s + x * ld, *s1 = s0 + ld, *s2 = s1 + ld, *s3 = s2 + ld;
        int64_t p = 0;
        for (; p + 4 <= kc; p += 4) {
            __m128 r0 = _mm_loadu_ps(s0 + p), r1 = _mm_loadu_ps(s1 + p);
            __m128 r2 = _mm_loadu_ps(s2 + p), r3 = _mm_loadu_ps(s3 + p);
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
            _mm_storeu_ps(d + p * w + x, r0);
            _mm_storeu_ps(d + (p + 1) * w + x, r1);
            _mm_storeu_ps(d + (p + 2) * w + x, r2);
            _mm_storeu_ps(d + (p + 3) * w + x, r3);
        }
        interleave_rest_f32(s, ld, x, x + 4, p, kc, w, d);
    }
#endif
    interleave_rest_f32(s, ld, x, len, 0, kc, w, d);
}

static void interleave_panel_f32(const void *src, int64_t ld, int64_t len, int64_t kc, int64_t w,
                                 void *dst)
{
    interleave_sse_f32(src, ld, 0, len, kc, w, dst);
    zero_tail_f32(dst, len, kc, w);
}

#ifdef TG_GEMM_X86
/* The same with 8 x 8 blocks through AVX registers where a panel is 8 wide or more (the
 * transposed operands of every product: the CNN's weight gradients pack both their operands
 * this way, and the SSE blocks ran at about one element a cycle), for the AVX2 and AVX-512F
 * kernel sets (a CPU with AVX-512F has AVX2). The 8 x 8 transpose is the usual one: pairs of
 * rows interleaved, then pairs of pairs, then the 128-bit halves exchanged. */
__attribute__((target("avx2"))) static void interleave_panel_f32_avx2(const void *src, int64_t ld,
                                                                      int64_t len, int64_t kc,
                                                                      int64_t w, void *dst)
{
    const float *s = src;
    float *d = dst;
    int64_t x = 0;
    for (; x + 8 <= len && x + 8 <= w; x += 8) {
        int64_t p = 0;
        for (; p + 8 <= kc; p += 8) {
            __m256 r[8], t[8], u[8];
            for (int i = 0; i < 8; i++)
                r[i] = _mm256_loadu_ps(s + (x + i) * ld + p);
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
                u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
                u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
            }
            for (int i = 0; i < 4; i++) {
                _mm256_storeu_ps(d + (p + i) * w + x, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
                _mm256_storeu_ps(d + (p + 4 + i) * w + x,
                                 _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
            }
        }
        interleave_rest_f32(s, ld, x, x + 8, p, kc, w, d);
    }
    interleave_sse_f32(s, ld, x, len, kc, w, d);
    zero_tail_f32(d, len, kc, w);
}
#endif

static void interleave_panel_f64(const void *src, int64_t ld, int64_t len, int64_t kc, int64_t w,
                                 void *dst)
{
    const double *s = src;
    double *d = dst;
    int64_t x = 0;
#ifdef __SSE2__
    for (; x + 2 <= len; x += 2) {
        const double *s0 = s + x * ld, *s1 = s0 + ld;
        int64_t p = 0;
        for (; p + 2 <= kc; p += 2) {
            __m128d r0 = _mm_loadu_pd(s0 + p), r1 = _mm_loadu_pd(s1 + p);
            _mm_storeu_pd(d + p * w + x, _mm_unpacklo_pd(r0, r1));
            _mm_storeu_pd(d + (p + 1) * w + x, _mm_unpackhi_pd(r0, r1));
        }
        interleave_rest_f64(s, ld, x, x + 2, p, kc, w, d);
    }
#endif
    interleave_rest_f64(s, ld, x, len, 0, kc, w, d);
    zero_tail_f64(d, len, kc, w);
}

/* ---- The blocked product --------------------------------------------------------------- */

/* An operand as the kernel sees it: element (x, p), x a row of op(A) or a column of op(B) and p
 * the depth, is at base[x * xs + p * ps]; one of the strides is 1. */
typedef struct operand {
    const char *base;
    int64_t xs, ps;
} operand;

typedef struct job {
    tg__gemm_kernel kern;
    panel_fn copy, interleave;
    int64_t es;
    int64_t m, n, k;
    operand a, b;
    char *c;
    int64_t rs, cs; /* element (i, j) of C is c[i * rs + j * cs] */
    bool beta;
    bool by_rows; /* threads share out rows of C in whole tiles (else columns) */
} job;

/* Elements x0..x0+len (len <= w) and depth p0..p0+kc of an operand into one panel. */
static void pack(const job *g, const operand *o, int64_t x0, int64_t p0, int64_t len, int64_t kc,
                 int64_t w, unsigned char *dst)
{
    const char *src = o->base + (x0 * o->xs + p0 * o->ps) * g->es;
    if (o->xs == 1)
        g->copy(src, o->ps, len, kc, w, dst);
    else
        g->interleave(src, o->xs, len, kc, w, dst);
}

/* The size of the equal parts (rounded up to a multiple of unit) that cover len in as few
 * parts of at most max as possible. */
static int64_t balanced(int64_t len, int64_t max, int64_t unit)
{
    int64_t parts = (len + max - 1) / max, size = (len + parts - 1) / parts;
    size = (size + unit - 1) / unit * unit;
    return size < max ? size : max;
}

/* C[i0..i1, j0..j1] of the job, blocked as described at the top. */
static void run_block(const job *g, int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    _Alignas(64) unsigned char apack[A_PACK_BYTES];
    _Alignas(64) unsigned char bpack[B_PACK_BYTES];
    int64_t es = g->es, MR = g->kern.mr, NR = g->kern.nr, KC = g->kern.kc;
    if (KC > A_PACK_BYTES / (MR * es))
        KC = A_PACK_BYTES / (MR * es);
    int64_t NB = B_PACK_BYTES / (KC * es) / NR * NR;
    /* Equal slices and blocks rather than full ones and a remnant: k = 784 in slices of 256
     * would leave one 16 deep, whose kernel calls load and store C for little work. */
    KC = balanced(g->k, KC, 1);
    NB = balanced(j1 - j0, NB, NR);
    for (int64_t jb = j0; jb < j1; jb += NB) {
        int64_t nb = j1 - jb < NB ? j1 - jb : NB;
        for (int64_t pb = 0; pb < g->k; pb += KC) {
            int64_t kc = g->k - pb < KC ? g->k - pb : KC;
            bool load = g->beta || pb > 0; /* later slices add to what the first wrote */
            for (int64_t jr = 0; jr < nb; jr += NR)
                pack(g, &g->b, jb + jr, pb, nb - jr < NR ? nb - jr : NR, kc, NR,
                     bpack + jr * kc * es);
            for (int64_t ib = i0; ib < i1; ib += MR) {
                int64_t mr = i1 - ib < MR ? i1 - ib : MR;
                pack(g, &g->a, ib, pb, mr, kc, MR, apack);
                for (int64_t jr = 0; jr < nb; jr += NR)
                    g->kern.fn(kc, apack, bpack + jr * kc * es,
                               g->c + (ib * g->rs + (jb + jr) * g->cs) * es, g->rs, g->cs, mr,
                               nb - jr < NR ? nb - jr : NR, load);
            }
        }
    }
}

/* tg__parallel_for's body: tiles lo..hi of the dimension the threads share. */
static void run_part(void *user, int64_t lo, int64_t hi)
{
    const job *g = user;
    if (g->by_rows) {
        int64_t i1 = hi * g->kern.mr;
        run_block(g, lo * g->kern.mr, i1 < g->m ? i1 : g->m, 0, g->n);
    } else {
        int64_t j1 = hi * g->kern.nr;
        run_block(g, 0, g->m, lo * g->kern.nr, j1 < g->n ? j1 : g->n);
    }
}

/* x rounded up to a multiple of tile, as a double (the work a dimension costs in tiles). */
static double padded(int64_t x, int64_t tile) { return (double)((x + tile - 1) / tile * tile); }

/* The cases with nothing to multiply: true when C is done. */
static bool trivial(tg_dtype dt, int64_t m, int64_t n, int64_t k, double beta, void *c, int64_t ldc)
{
    if (m <= 0 || n <= 0)
        return true;
    if (k > 0)
        return false;
    size_t es = tg_dtype_size(dt);
    if (beta == 0)
        for (int64_t i = 0; i < m; i++)
            memset((char *)c + (size_t)(i * ldc) * es, 0, (size_t)n * es);
    return true;
}

void tg__gemm_with_isa(tg__gemm_isa isa, tg_dtype dt, bool ta, bool tb, int64_t m, int64_t n,
                       int64_t k, const void *a, int64_t lda, const void *b, int64_t ldb,
                       double beta, void *c, int64_t ldc, int threads)
{
    if (trivial(dt, m, n, k, beta, c, ldc))
        return;
    tg__gemm_kernel kern = kernel_for(isa, dt);
    panel_fn interleave = dt == TG_F32 ? interleave_panel_f32 : interleave_panel_f64;
#ifdef TG_GEMM_X86
    tg__gemm_isa set = isa == TG__GEMM_BEST ? best_isa() : isa;
    if (dt == TG_F32 && (set == TG__GEMM_AVX2 || set == TG__GEMM_AVX512))
        interleave = interleave_panel_f32_avx2;
#endif
    job g = {.kern = kern,
             .copy = dt == TG_F32 ? copy_panel_f32 : copy_panel_f64,
             .interleave = interleave,
             .es = (int64_t)tg_dtype_size(dt),
             .m = m,
             .n = n,
             .k = k,
             .a = {a, ta ? 1 : lda, ta ? lda : 1},
             .b = {b, tb ? ldb : 1, tb ? 1 : ldb},
             .c = c,
             .rs = ldc,
             .cs = 1,
             .beta = beta != 0,
             .by_rows = true};
    /* A narrow C (n well under a tile's NR columns, m long) wastes most of each tile: compute
     * C^T = op(B)^T op(A)^T instead, the kernel storing its tiles transposed. Only for C
     * narrower than a tile: transposed tiles are stored an element at a time, which for a
     * shallow product costs more than the padding saves ([32 x 25088] by depth 9 ran at 5
     * GFLOP/s transposed). */
    if (n < kern.nr
        && padded(n, kern.mr) * padded(m, kern.nr) * 5
               < padded(m, kern.mr) * padded(n, kern.nr) * 4) {
        operand t = g.a;
        g.a = g.b, g.b = t;
        g.m = n, g.n = m;
        g.rs = 1, g.cs = ldc;
    }
    double work = (double)m * (double)n * (double)(k + 16);
    int t = work >= PARALLEL_WORK && threads > 1 ? threads : 1;
    int64_t mt = (g.m + kern.mr - 1) / kern.mr, nt = (g.n + kern.nr - 1) / kern.nr;
    if (t > 1) {
        /* Threads share out rows of C: each then writes one contiguous part of C and packs all
         * of op(B) for itself. Columns only when rows would leave the threads clearly unequal
         * parts, counting whole tiles (measured: a strided part of C is slower to write). */
        double rows = (double)((mt + t - 1) / t * kern.mr) * (double)g.n;
        double cols = (double)((nt + t - 1) / t * kern.nr) * (double)g.m;
        g.by_rows = cols > 0.85 * rows;
    }
    tg__parallel_for(t, g.by_rows ? mt : nt, work, run_part, &g);
}

void tg__gemm(tg_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
              int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc,
              int threads)
{
    tg__gemm_with_isa(TG__GEMM_BEST, dt, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc, threads);
}
