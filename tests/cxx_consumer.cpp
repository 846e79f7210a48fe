// cxx_consumer.cpp — the public header compiles as C++ and the library links into a C++ program.
#include <tapegrad.h>

#include <cmath>
#include <cstdio>

int main()
{
    tg_ctx *ctx = nullptr;
    tg_tape *tp = nullptr;
    if (tg_ctx_new(&ctx, nullptr) != TG_OK || tg_tape_new(ctx, &tp) != TG_OK)
        return 1;
    const int64_t shape[] = {3};
    const double values[] = {0.5, -1.0, 2.0};
    tg_tensor x = tg_requires_grad(tg_tensor_from(tp, TG_F64, 1, shape, values));
    tg_tensor y = tg_sum_all(tg_mul(x, x));
    tg_status st = tg_backward(y);
    double g[3] = {0, 0, 0};
    tg_read(tg_tensor_grad(x), TG_F64, g, 3);
    tg_scalar s = tg_s_mul(tg_s_var(tp, 3.0), tg_s_var(tp, 4.0));
    bool ok = st == TG_OK && std::fabs(tg_item(y) - 5.25) < 1e-15 && g[1] == -2.0
              && tg_s_value(s) == 12.0 && tg_tensor{}.tape_ == nullptr;
    std::printf("C++ consumer: %s\n", ok ? "ok" : tg_tape_error(tp));
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return ok ? 0 : 1;
}
