/* newton_cg.c — Newton's method on the Rosenbrock function in n = 20 dimensions, with each
 * Newton system H p = -g solved by conjugate gradient from Hessian-vector products (tg_hvp):
 * the Hessian is never formed. A truncated Newton method: CG stops at a relative residual of
 * min(0.5, sqrt(|g|)), or on negative curvature (then it keeps the last direction, or -g), and
 * a backtracking (Armijo) line search guards each step. Plain gradient descent with the same
 * line search runs beside it for comparison. Exit status 1 if Newton does not reach
 * |grad| < 1e-6. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <tapegrad.h>

enum { N = 20, NEWTON_MAX = 200, GD_MAX = 100000 };
#define TOL 1e-6

/* f(x) = sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 for i < n-1, in tensor ops. */
static tg_tensor rosenbrock(tg_tensor x)
{
    tg_tensor head = tg_slice(x, 0, 0, N - 1, 1), tail = tg_slice(x, 0, 1, N, 1);
    tg_tensor a = tg_sub(tail, tg_square(head));
    tg_tensor b = tg_add_scalar(tg_neg(head), 1.0);
    return tg_sum_all(tg_add(tg_mul_scalar(tg_square(a), 100.0), tg_square(b)));
}

static double dot(const double *a, const double *b)
{
    double s = 0;
    for (int i = 0; i < N; i++)
        s += a[i] * b[i];
    return s;
}

/* f at x (a fresh record). */
static double value(tg_tape *tp, const double *x)
{
    tg_tape_reset(tp);
    double f = tg_item(rosenbrock(tg_tensor_from(tp, TG_F64, 1, (int64_t[]){N}, x)));
    tg_tape_reset(tp);
    return f;
}

/* Backtracking line search: the largest a = a0 / 2^k with f(x + a p) <= f + 1e-4 a <g, p>.
 * Writes x + a p into x and returns f there (or a non-finite value when it fails). */
static double line_search(tg_tape *tp, double *x, const double *p, double f, double gp, double a0,
                          double *step)
{
    double trial[N];
    for (double a = a0; a > 1e-20; a *= 0.5) {
        for (int i = 0; i < N; i++)
            trial[i] = x[i] + a * p[i];
        double ft = value(tp, trial);
        if (ft <= f + 1e-4 * a * gp) {
            memcpy(x, trial, sizeof trial);
            *step = a;
            return ft;
        }
    }
    return NAN;
}

/* One Newton-CG direction at x: p ~ -H^{-1} g. Returns the Hessian-vector products used, or -1
 * on an error. f, g receive the value and gradient at x. */
static int newton_direction(tg_tape *tp, const double *x, double *f, double *g, double *p)
{
    tg_tape_reset(tp);
    tg_tensor xt = tg_tensor_from(tp, TG_F64, 1, (int64_t[]){N}, x), gt;
    tg_tensor ft = rosenbrock(xt);
    if (tg_grad(1, &ft, NULL, 1, &xt, &gt, TG_RETAIN_GRAPH))
        return -1;
    *f = tg_item(ft);
    tg_read(gt, TG_F64, g, N);
    /* CG on H p = -g from p = 0: r = -g - H p, d the search direction. */
    double r[N], d[N], hd[N], gnorm = sqrt(dot(g, g));
    double tol = fmin(0.5, sqrt(gnorm)) * gnorm;
    for (int i = 0; i < N; i++) {
        p[i] = 0;
        r[i] = d[i] = -g[i];
    }
    double rr = dot(r, r);
    int products = 0;
    for (int k = 0; k < N; k++) {
        tg_tensor dt = tg_tensor_from(tp, TG_F64, 1, (int64_t[]){N}, d), hv;
        if (tg_hvp(ft, 1, &xt, &dt, &hv, TG_RETAIN_GRAPH)) /* H d, the graph kept for the next */
            return -1;
        tg_read(hv, TG_F64, hd, N);
        products++;
        double curv = dot(d, hd);
        if (curv <= 0) { /* negative curvature: keep what we have, or steepest descent */
            if (k == 0)
                for (int i = 0; i < N; i++)
                    p[i] = -g[i];
            break;
        }
        double alpha = rr / curv;
        for (int i = 0; i < N; i++) {
            p[i] += alpha * d[i];
            r[i] -= alpha * hd[i];
        }
        double rr_new = dot(r, r);
        if (sqrt(rr_new) <= tol)
            break;
        for (int i = 0; i < N; i++)
            d[i] = r[i] + rr_new / rr * d[i];
        rr = rr_new;
    }
    return products;
}

int main(void)
{
    tg_ctx *ctx;
    tg_tape *tp;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp))
        return 1;
    double x0[N];
    for (int i = 0; i < N; i++)
        x0[i] = i % 2 ? 1.0 : -1.2; /* the classic start (-1.2, 1, -1.2, 1, ...) */

    /* Newton-CG. */
    double x[N], g[N], p[N], f = 0, step = 1;
    memcpy(x, x0, sizeof x);
    int newton_iters = -1, products = 0;
    printf("Rosenbrock, n = %d, from (-1.2, 1, -1.2, 1, ...); stop at |grad| < %g\n", N, TOL);
    printf("Newton-CG (Hessian-vector products by tg_hvp):\n");
    for (int it = 0; it <= NEWTON_MAX; it++) {
        int hv = newton_direction(tp, x, &f, g, p);
        if (hv < 0) {
            fprintf(stderr, "error: %s\n", tg_tape_error(tp));
            return 1;
        }
        double gnorm = sqrt(dot(g, g));
        if (it % 10 == 0 || gnorm < TOL)
            printf("  iter %3d  f %.6e  |grad| %.3e\n", it, f, gnorm);
        if (gnorm < TOL) {
            newton_iters = it;
            break;
        }
        products += hv;
        double gp = dot(g, p);
        if (!isfinite(line_search(tp, x, p, f, gp, 1.0, &step))) {
            fprintf(stderr, "Newton line search failed at iteration %d\n", it);
            break;
        }
    }
    double err = 0;
    for (int i = 0; i < N; i++)
        err = fmax(err, fabs(x[i] - 1));

    /* Gradient descent with the same line search (starting from twice the last step). */
    double y[N];
    memcpy(y, x0, sizeof y);
    int gd_iters = -1;
    double a = 1e-3, gnorm = 0;
    for (int it = 0; it <= GD_MAX; it++) {
        tg_tape_reset(tp);
        tg_tensor yt = tg_tensor_from(tp, TG_F64, 1, (int64_t[]){N}, y), gt;
        tg_tensor ft = rosenbrock(yt);
        if (tg_grad(1, &ft, NULL, 1, &yt, &gt, 0)) {
            fprintf(stderr, "error: %s\n", tg_tape_error(tp));
            return 1;
        }
        tg_read(gt, TG_F64, g, N);
        f = tg_item(ft);
        gnorm = sqrt(dot(g, g));
        if (gnorm < TOL) {
            gd_iters = it;
            break;
        }
        for (int i = 0; i < N; i++)
            p[i] = -g[i];
        if (!isfinite(line_search(tp, y, p, f, -gnorm * gnorm, 2 * a, &a)))
            break;
    }

    printf("Newton-CG:        %s after %d iterations (%d Hessian-vector products), "
           "max |x_i - 1| = %.1e\n",
           newton_iters >= 0 ? "converged" : "NOT converged", newton_iters, products, err);
    if (gd_iters >= 0)
        printf("gradient descent: converged after %d iterations\n", gd_iters);
    else
        printf("gradient descent: not converged after %d iterations (|grad| %.2e, f %.2e)\n",
               GD_MAX, gnorm, f);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return newton_iters >= 0 && err < 1e-6 ? 0 : 1;
}
