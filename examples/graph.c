/* graph.c — looking at a tape: writes the recorded graphs of two networks as Graphviz DOT, for
 * `dot -Tpng` (Debian's graphviz; tapegrad itself does not need it):
 *
 *   xor.dot   the XOR network of xor.c (core API, 2-4-1 sigmoid), its loss and its backward
 *             recorded with TG_CREATE_GRAPH, with a naming scope per layer;
 *   mlp.dot   tg-train's MLP 784-256-128-10 built from modules (each module's name is a scope),
 *             forward and cross-entropy loss at batch 128.
 *
 *   build/examples/graph DIR && dot -Tpng DIR/xor.dot -o xor.png && dot -Tpng DIR/mlp.dot -o
 * mlp.png
 */
#include <stdio.h>

#include <tapegrad.h>

/* Writes tp's graph to dir/name; false with a message on failure. */
static bool write_dot(tg_tape *tp, const char *dir, const char *name, const char *title)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return false;
    }
    tg_status st = tg_tape_write_dot(tp, f, &(tg_dot_options){.title = title});
    if (fclose(f) != 0 && st == TG_OK)
        st = TG_IO;
    if (st != TG_OK) {
        fprintf(stderr, "%s: %s: %s\n", path, tg_status_name(st), tg_ctx_error(tg_tape_ctx(tp)));
        return false;
    }
    printf("wrote %s (%zu nodes on the tape)\n", path, tg_tape_node_count(tp));
    return true;
}

/* One sigmoid layer, x W + b, in a scope of its own. */
static tg_tensor layer(tg_tape *tp, const char *name, tg_tensor x, tg_param *w, tg_param *b)
{
    tg_tape_push_scope(tp, name);
    tg_tensor y = tg_sigmoid(tg_add(tg_matmul(x, tg_param_tensor(tp, w)), tg_param_tensor(tp, b)));
    tg_tape_pop_scope(tp);
    return y;
}

static bool xor_graph(tg_ctx *ctx, tg_tape *tp, const char *dir)
{
    const float inputs[4][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}};
    const float targets[4][1] = {{0}, {1}, {1}, {0}};
    tg_param *w1, *b1, *w2, *b2;
    if (tg_param_new(ctx, "w1", TG_F32, 2, (int64_t[]){2, 4}, &w1)
        || tg_param_new(ctx, "b1", TG_F32, 1, (int64_t[]){4}, &b1)
        || tg_param_new(ctx, "w2", TG_F32, 2, (int64_t[]){4, 1}, &w2)
        || tg_param_new(ctx, "b2", TG_F32, 1, (int64_t[]){1}, &b2)) {
        fprintf(stderr, "setup failed: %s\n", tg_ctx_error(ctx));
        return false;
    }
    tg_param_uniform(w1, -1, 1, 1);
    tg_param_uniform(w2, -1, 1, 2);
    tg_tensor x = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){4, 2}, inputs);
    tg_tensor y = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){4, 1}, targets);
    tg_tensor out = layer(tp, "output", layer(tp, "hidden", x, w1, b1), w2, b2);
    tg_tape_push_scope(tp, "loss");
    tg_tensor loss = tg_mean_all(tg_square(tg_sub(out, y)));
    tg_tape_pop_scope(tp);
    /* Recorded, so the gradients' nodes are linked (and drawn, shaded). */
    if (tg_backward_ex(loss, (tg_tensor){0}, TG_CREATE_GRAPH) != TG_OK) {
        fprintf(stderr, "error: %s\n", tg_tape_error(tp));
        return false;
    }
    return write_dot(tp, dir, "xor.dot",
                     "XOR 2-4-1: forward, MSE loss and backward recorded with TG_CREATE_GRAPH "
                     "(shaded)");
}

static bool mlp_graph(tg_ctx *ctx, tg_tape *tp, const char *dir)
{
    tg_module *m[6] = {NULL}, *net;
    if (tg_flatten_new(ctx, &m[0]) || tg_linear_new(ctx, "fc1", 784, 256, NULL, &m[1])
        || tg_activation_new(ctx, TG_ACT_RELU, &m[2])
        || tg_linear_new(ctx, "fc2", 256, 128, NULL, &m[3])
        || tg_activation_new(ctx, TG_ACT_RELU, &m[4])
        || tg_linear_new(ctx, "fc3", 128, 10, NULL, &m[5])
        || tg_sequential_new(ctx, "mlp", 6, m, &net)) {
        fprintf(stderr, "setup failed: %s\n", tg_ctx_error(ctx));
        return false;
    }
    tg_tensor images = tg_uniform(tp, TG_F32, 3, (int64_t[]){128, 28, 28}, 0, 1, 1);
    tg_tensor labels = tg_full(tp, TG_I64, 1, (int64_t[]){128}, 3);
    tg_tensor loss = tg_cross_entropy(tg_forward(net, images), labels, TG_REDUCE_MEAN, 0.0);
    bool ok = tg_ok(loss);
    if (!ok)
        fprintf(stderr, "error: %s\n", tg_tape_error(tp));
    else
        ok = write_dot(tp, dir, "mlp.dot",
                       "tg-train's MLP: Sequential 'mlp' of modules, forward and loss");
    tg_module_free(net);
    return ok;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    tg_ctx *ctx;
    tg_tape *tp;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp))
        return 1;
    bool ok = xor_graph(ctx, tp, dir);
    tg_tape_reset(tp);
    ok = ok && mlp_graph(ctx, tp, dir);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return ok ? 0 : 1;
}
