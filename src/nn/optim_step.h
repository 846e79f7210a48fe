/* optim_step.h — the update rules of optim.c element by element, in place, for tg_optim_step.
 *
 * Included by optim.c once per element type with T (float or double), SQRT (sqrtf or sqrt) and
 * SUFFIX defined. Each
 * statement is one op of the matching rule in optim.c, evaluated in T with the op's constant
 * rounded to T as tapegrad's kernels round it, so a step computed here is bitwise the step
 * tg_optim_step_graph records with lr none (test_optim checks every configuration). `first`:
 * the state buffers hold no value yet (the rules' none states). Where a rule skips a multiplication
 * by 1 the statement here keeps it: multiplying by 1 is exact. Keep the two in step.
 *
 * Each element loop is an inline function taking, as arguments, the flags that decide which
 * state buffers exist; every caller passes them as constants, so the compiler builds one copy
 * per combination with no branch on a buffer inside (it vectorises those). The other choices,
 * `first` among them, are selects between values computed from unconditional loads. */

#define FN_(name, suffix) name##_##suffix
#define FN(name, suffix) FN_(name, suffix)

/* SGD; buf: momentum_buffer when `momentum`. */
static inline void FN(sgd_loop, SUFFIX)(const tg_sgd_options *a, T lr, int64_t n, T *restrict p,
                                        const T *restrict g, T *restrict buf, bool first,
                                        bool momentum)
{
    const bool decay = a->weight_decay != 0, nesterov = a->nesterov;
    const T wd = (T)a->weight_decay, mom = (T)a->momentum, keep = (T)(1.0 - a->dampening);
    for (int64_t i = 0; i < n; i++) {
        T pi = p[i], gi = g[i];
        if (decay)
            gi = gi + pi * wd;
        if (momentum) {
            T b = buf[i] * mom + gi * keep;
            b = first ? gi : b;
            buf[i] = b;
            gi = nesterov ? gi + b * mom : b;
        }
        p[i] = pi - gi * lr;
    }
}

STEP_CLONES static void FN(sgd_step, SUFFIX)(const tg_optim *o, int64_t n, void *p, const void *g,
                                             void *const *s, bool first)
{
    const T lr = (T)o->lr;
    if (o->o.sgd.momentum != 0)
        FN(sgd_loop, SUFFIX)(&o->o.sgd, lr, n, p, g, s[0], first, true);
    else
        FN(sgd_loop, SUFFIX)(&o->o.sgd, lr, n, p, g, NULL, first, false);
}

/* Adam and AdamW's constants for one step. */
typedef struct FN(adam_consts, SUFFIX) {
    bool decoupled, coupled; /* AdamW's or Adam's weight decay */
    T shrink, wd, b1, c1, b2, c2, root_bc2, eps, step;
} FN(adam_consts, SUFFIX);

/* Adam; m, v: exp_avg, exp_avg_sq; vmax: max_exp_avg_sq when `amsgrad`. */
static inline void FN(adam_loop, SUFFIX)(const FN(adam_consts, SUFFIX) * k, int64_t n,
                                         T *restrict p, const T *restrict g, T *restrict m,
                                         T *restrict v, T *restrict vmax, bool first, bool amsgrad)
{
    for (int64_t i = 0; i < n; i++) {
        T pi = p[i], gi = g[i];
        if (k->decoupled)
            pi = pi * k->shrink;
        if (k->coupled)
            gi = gi + pi * k->wd;
        T mi = m[i] * k->b1 + gi * k->c1, vi = v[i] * k->b2 + gi * k->c2 * gi;
        mi = first ? gi * k->c1 : mi;
        vi = first ? gi * k->c2 * gi : vi;
        m[i] = mi;
        v[i] = vi;
        if (amsgrad) {
            T top = vmax[i];
            vi = first || vi > top ? vi : top;
            vmax[i] = vi;
        }
        p[i] = pi - mi * k->step / (SQRT(vi) / k->root_bc2 + k->eps);
    }
}

STEP_CLONES static void FN(adam_step, SUFFIX)(const tg_optim *o, int64_t n, void *p, const void *g,
                                              void *const *s, bool first)
{
    const tg_adam_options *a = &o->o.adam;
    const int64_t t = o->steps + 1;
    const double bc1 = 1.0 - pow(a->beta1, (double)t), bc2 = 1.0 - pow(a->beta2, (double)t);
    const FN(adam_consts, SUFFIX) k = {
        .decoupled = a->weight_decay != 0 && o->kind == KIND_ADAMW,
        .coupled = a->weight_decay != 0 && o->kind != KIND_ADAMW,
        .shrink = (T)(1.0 - o->lr * a->weight_decay),
        .wd = (T)a->weight_decay,
        .b1 = (T)a->beta1,
        .c1 = (T)(1.0 - a->beta1),
        .b2 = (T)a->beta2,
        .c2 = (T)(1.0 - a->beta2),
        .root_bc2 = (T)sqrt(bc2),
        .eps = (T)a->eps,
        .step = (T)(o->lr * 1.0 / bc1),
    };
    if (a->amsgrad)
        FN(adam_loop, SUFFIX)(&k, n, p, g, s[0], s[1], s[2], first, true);
    else
        FN(adam_loop, SUFFIX)(&k, n, p, g, s[0], s[1], NULL, first, false);
}

/* RMSprop; sq: square_avg; buf: momentum_buffer when `momentum`; ga: grad_avg when `centered`. */
static inline void FN(rmsprop_loop, SUFFIX)(const tg_rmsprop_options *a, T lr, int64_t n,
                                            T *restrict p, const T *restrict g, T *restrict sq,
                                            T *restrict buf, T *restrict ga, bool first,
                                            bool momentum, bool centered)
{
    const bool decay = a->weight_decay != 0;
    const T wd = (T)a->weight_decay, alpha = (T)a->alpha, c = (T)(1.0 - a->alpha);
    const T eps = (T)a->eps, mom = (T)a->momentum;
    for (int64_t i = 0; i < n; i++) {
        T pi = p[i], gi = g[i];
        if (decay)
            gi = gi + pi * wd;
        T sqi = sq[i] * alpha + gi * c * gi;
        sqi = first ? gi * c * gi : sqi;
        sq[i] = sqi;
        T avg;
        if (centered) {
            T gai = ga[i] * alpha + gi * c;
            gai = first ? gi * c : gai;
            ga[i] = gai;
            avg = SQRT(sqi - gai * gai);
        } else {
            avg = SQRT(sqi);
        }
        avg = avg + eps;
        if (momentum) {
            T b = buf[i] * mom + gi / avg;
            b = first ? gi / avg : b;
            buf[i] = b;
            p[i] = pi - b * lr;
        } else {
            p[i] = pi - gi * lr / avg;
        }
    }
}

STEP_CLONES static void FN(rmsprop_step, SUFFIX)(const tg_optim *o, int64_t n, void *p,
                                                 const void *g, void *const *s, bool first)
{
    const tg_rmsprop_options *a = &o->o.rms;
    const T lr = (T)o->lr;
    /* The buffers in order: square_avg, momentum_buffer (momentum), grad_avg (centered). */
    if (a->momentum > 0 && a->centered)
        FN(rmsprop_loop, SUFFIX)(a, lr, n, p, g, s[0], s[1], s[2], first, true, true);
    else if (a->momentum > 0)
        FN(rmsprop_loop, SUFFIX)(a, lr, n, p, g, s[0], s[1], NULL, first, true, false);
    else if (a->centered)
        FN(rmsprop_loop, SUFFIX)(a, lr, n, p, g, s[0], NULL, s[1], first, false, true);
    else
        FN(rmsprop_loop, SUFFIX)(a, lr, n, p, g, s[0], NULL, NULL, first, false, false);
}

#undef FN
#undef FN_
