/* vmath.c — vector math dispatch: picks the AVX-512F, AVX2+FMA or portable kernel table by the
 * CPU's features at run time (so one binary runs on any x86-64), and splits large arrays over
 * threads. Small arrays go straight to the kernel: one feature test and one indirect call. */
#include "vmath.h"

#include "layout.h"

#include "parallel.h"
#include "vmath_impl.h"

/* Whether this CPU runs instruction set `level`. */
static bool supports(int level)
{
    switch (level) {
    case TG__VM_ISA_SCALAR:
        return true;
#ifdef TG_VMATH_X86
    case TG__VM_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case TG__VM_ISA_AVX512:
        return __builtin_cpu_supports("avx512f");
#endif
    default:
        return false;
    }
}

static int isa(void)
{
    if (supports(TG__VM_ISA_AVX512))
        return TG__VM_ISA_AVX512;
    if (supports(TG__VM_ISA_AVX2))
        return TG__VM_ISA_AVX2;
    return TG__VM_ISA_SCALAR;
}

int tg__vm_isa_level(void) { return isa(); }

const char *tg__vm_isa(void)
{
    static const char *const names[] = {"scalar", "avx2", "avx512f"};
    return names[isa()];
}

static const tg__vm_kernels *kernels(int level)
{
#ifdef TG_VMATH_X86
    if (level == TG__VM_ISA_AVX512)
        return &tg__vm_kernels_avx512;
    if (level == TG__VM_ISA_AVX2)
        return &tg__vm_kernels_avx2;
#else
    (void)level;
#endif
    return &tg__vm_kernels_scalar;
}

static void run_map(const tg__vm_kernels *k, tg__vm_op op, tg_dtype dt, int64_t n, const void *a,
                    const void *b, double c0, double c1, void *y)
{
    if (dt == TG_F32)
        k->map_f32[op](n, a, b, y, (float)c0, (float)c1);
    else
        k->map_f64[op](n, a, b, y, c0, c1);
}

/* Rough work per element, in the element-operations of tg__parallel_for's threshold: each row's
 * COST in TG__VMATH_MAPS (vmath_ops.h). */
static double op_cost(tg__vm_op op)
{
#define OP_COST(name, NAME, KIND, COST, BODY) [TG__VM_##NAME] = COST,
    static const double costs[TG__VM_NOPS] = {TG__VMATH_MAPS(OP_COST)};
#undef OP_COST
    return costs[op];
}

/* Threads get whole blocks of this many elements (whole cache lines, aligned alike). */
#define BLOCK 1024

typedef struct map_job {
    const tg__vm_kernels *k;
    tg__vm_op op;
    tg_dtype dt;
    int64_t n;
    const char *a, *b;
    char *y;
    double c0, c1;
} map_job;

static void map_range(void *user, int64_t lo, int64_t hi)
{
    const map_job *j = user;
    size_t es = tg__dtype_size(j->dt);
    int64_t b = lo * BLOCK, e = hi * BLOCK < j->n ? hi * BLOCK : j->n;
    size_t off = (size_t)b * es;
    run_map(j->k, j->op, j->dt, e - b, j->a + off, j->b ? j->b + off : NULL, j->c0, j->c1,
            j->y + off);
}

void tg__vm_map(tg__vm_op op, int threads, tg_dtype dt, int64_t n, const void *a, const void *b,
                double c0, double c1, void *y)
{
    const tg__vm_kernels *k = kernels(isa());
    if (threads > 1 && n > BLOCK) {
        double cost = (double)n * op_cost(op);
        if (cost >= TG__PARALLEL_MIN) {
            map_job j = {k, op, dt, n, a, b, y, c0, c1};
            tg__parallel_for(threads, (n + BLOCK - 1) / BLOCK, cost, map_range, &j);
            return;
        }
    }
    run_map(k, op, dt, n, a, b, c0, c1, y);
}

static double run_reduce(const tg__vm_kernels *k, tg__vm_red op, tg_dtype dt, int64_t n,
                         const void *x, double shift, void *y)
{
    if (dt == TG_F32)
        return k->red_f32[op](n, x, (float)shift, y);
    return k->red_f64[op](n, x, shift, y);
}

double tg__vm_reduce(tg__vm_red op, tg_dtype dt, int64_t n, const void *x, double shift, void *y)
{
    return run_reduce(kernels(isa()), op, dt, n, x, shift, y);
}

static void run_rows(const tg__vm_kernels *k, tg_dtype dt, int64_t rows, int64_t cols,
                     int64_t stride, const void *x, double *acc)
{
    if (dt == TG_F32)
        k->rows_f32(rows, cols, stride, x, acc);
    else
        k->rows_f64(rows, cols, stride, x, acc);
}

void tg__vm_add_rows(tg_dtype dt, int64_t rows, int64_t cols, int64_t stride, const void *x,
                     double *acc)
{
    run_rows(kernels(isa()), dt, rows, cols, stride, x, acc);
}

void tg__vm_add_into(tg_dtype dt, int64_t n, const void *x, void *y)
{
    tg__vm_map(TG__VM_ADD, 1, dt, n, y, x, 0, 0, y);
}

/* ---- for tests: one named instruction set ---- */

bool tg__vm_map_isa(int level, tg__vm_op op, tg_dtype dt, int64_t n, const void *a, const void *b,
                    double c0, double c1, void *y)
{
    if (!supports(level))
        return false;
    run_map(kernels(level), op, dt, n, a, b, c0, c1, y);
    return true;
}

bool tg__vm_reduce_isa(int level, tg__vm_red op, tg_dtype dt, int64_t n, const void *x,
                       double shift, void *y, double *result)
{
    if (!supports(level))
        return false;
    *result = run_reduce(kernels(level), op, dt, n, x, shift, y);
    return true;
}

bool tg__vm_add_rows_isa(int level, tg_dtype dt, int64_t rows, int64_t cols, int64_t stride,
                         const void *x, double *acc)
{
    if (!supports(level))
        return false;
    run_rows(kernels(level), dt, rows, cols, stride, x, acc);
    return true;
}
