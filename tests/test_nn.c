/* test_nn.c — modules (layers, Sequential, custom, module trees: lists, dicts, hierarchical names,
 * lookup, buffers), initialisers, train/eval mode, bad input, and a
 * short real training run on Fashion-MNIST (loss falls, accuracy over 70% within a fraction of an
 * epoch). */
#include "common.h"

#include <sys/stat.h>

#define FASHION "/usr/share/datasets/fashion-mnist"

static void linear_matches_pytorch_layout(void **state)
{
    fixture *f = *state;
    tg_module *lin;
    assert_status(tg_linear_new(f->ctx, "fc", 3, 2, NULL, &lin), TG_OK);
    assert_int_equal(tg_module_param_count(lin), 2);
    tg_param *w = tg_module_params(lin)[0], *b = tg_module_params(lin)[1];
    assert_string_equal(tg_param_name(w), "fc.weight");
    assert_string_equal(tg_param_name(b), "fc.bias");
    assert_int_equal(tg_param_shape(w)[0], 2); /* [out, in] */
    assert_int_equal(tg_param_shape(w)[1], 3);
    /* PyTorch's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias. */
    const float *wd = tg_param_data(w);
    for (int i = 0; i < 6; i++)
        assert_true(fabsf(wd[i]) <= 1.0f / sqrtf(3.0f));
    tg_param_set(w, (float[]){1, 2, 3, 4, 5, 6});
    tg_param_set(b, (float[]){0.5f, -1});
    tg_tensor x = tg_tensor_from(f->tp, TG_F32, 2, (int64_t[]){1, 3}, (float[]){1, 1, 2});
    tg_tensor y = tg_forward(lin, x);
    assert_tape_ok(f->tp);
    const float *yd = tg_data(y);
    assert_close(yd[0], 1 + 2 + 6 + 0.5, 1e-7);
    assert_close(yd[1], 4 + 5 + 12 - 1, 1e-7);
    /* Without bias. */
    tg_module *nb;
    tg_linear_options o = {.no_bias = true};
    assert_status(tg_linear_new(f->ctx, "nb", 3, 2, &o, &nb), TG_OK);
    assert_int_equal(tg_module_param_count(nb), 1);
    tg_module_free(nb);
    tg_module_free(lin);
    assert_int_equal(tg_param_count(f->ctx), 0); /* the module owned its parameters */
}

static void default_init_statistics(void **state)
{
    fixture *f = *state;
    tg_module *lin, *conv;
    assert_status(tg_linear_new(f->ctx, "big", 400, 300, NULL, &lin), TG_OK);
    tg_conv2d_options co = {.params = {.groups = 2}};
    assert_status(tg_conv2d_new(f->ctx, "conv", 8, 6, 3, 5, &co, &conv), TG_OK);
    /* Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance bound^2 / 3. */
    tg_tensor w = tg_param_tensor(f->tp, tg_module_params(lin)[0]);
    double bound = 1.0 / sqrt(400.0);
    assert_close(tg_item(tg_max_all(tg_abs(w))), bound, 0.01);
    assert_close(tg_item(tg_mean_all(tg_square(w))), bound * bound / 3, 0.02);
    tg_tensor cw = tg_param_tensor(f->tp, tg_module_params(conv)[0]);
    assert_int_equal(tg_dim(cw, 1), 4); /* in_channels / groups */
    assert_true(tg_item(tg_max_all(tg_abs(cw))) <= 1.0 / sqrt(4.0 * 15));
    /* Different names give different values, the same seed the same ones. */
    tg_module *a, *b;
    tg_linear_options same = {.seed = 5};
    tg_linear_new(f->ctx, "a", 4, 4, &same, &a);
    tg_linear_new(f->ctx, "b", 4, 4, &same, &b);
    assert_memory_equal(tg_param_data(tg_module_params(a)[0]),
                        tg_param_data(tg_module_params(b)[0]), 16 * sizeof(float));
    tg_module_free(a);
    tg_module_free(b);
    tg_module_free(lin);
    tg_module_free(conv);
}

static void initialisers(void **state)
{
    fixture *f = *state;
    tg_param *p;
    assert_status(tg_param_new(f->ctx, "p", TG_F64, 2, (int64_t[]){300, 200}, &p), TG_OK);
    tg_tensor t;
    /* Xavier uniform: bound gain * sqrt(6 / (fan_in + fan_out)). */
    assert_status(tg_init_xavier_uniform(p, 2.0, 1), TG_OK);
    t = tg_param_tensor(f->tp, p);
    assert_close(tg_item(tg_max_all(tg_abs(t))), 2 * sqrt(6.0 / 500), 0.01);
    /* Xavier normal: std gain * sqrt(2 / (fan_in + fan_out)). */
    assert_status(tg_init_xavier_normal(p, 1.0, 2), TG_OK);
    t = tg_param_tensor(f->tp, p);
    assert_close(sqrt(tg_item(tg_mean_all(tg_square(t)))), sqrt(2.0 / 500), 0.02);
    /* Kaiming normal, relu, fan_in: std sqrt(2 / fan_in); fan_out: sqrt(2 / fan_out). */
    assert_status(tg_init_kaiming_normal(p, 0.0, TG_FAN_IN, 3), TG_OK);
    t = tg_param_tensor(f->tp, p);
    assert_close(sqrt(tg_item(tg_mean_all(tg_square(t)))), sqrt(2.0 / 200), 0.02);
    assert_status(tg_init_kaiming_uniform(p, 0.0, TG_FAN_OUT, 4), TG_OK);
    t = tg_param_tensor(f->tp, p);
    assert_close(tg_item(tg_max_all(tg_abs(t))), sqrt(3.0) * sqrt(2.0 / 300), 0.01);
    /* Seeded: the same seed twice gives the same values. */
    double first[4];
    tg_init_kaiming_uniform(p, 0.1, TG_FAN_IN, 9);
    memcpy(first, tg_param_data(p), sizeof first);
    tg_init_kaiming_uniform(p, 0.1, TG_FAN_IN, 9);
    assert_memory_equal(first, tg_param_data(p), sizeof first);
    /* Fewer than 2 dims: a clear error, the value untouched. */
    tg_param *v;
    tg_param_new(f->ctx, "v", TG_F32, 1, (int64_t[]){5}, &v);
    assert_status(tg_init_xavier_uniform(v, 1.0, 1), TG_SHAPE);
    assert_contains(tg_ctx_error(f->ctx), "at least 2 dims");
    assert_tape_ok(f->tp);
}

static void sequential_names_and_runs(void **state)
{
    fixture *f = *state;
    tg_module *m[3], *net;
    assert_status(tg_linear_new(f->ctx, "a", 4, 8, NULL, &m[0]), TG_OK);
    assert_status(tg_activation_new(f->ctx, TG_ACT_TANH, &m[1]), TG_OK);
    assert_status(tg_linear_new(f->ctx, "b", 8, 2, NULL, &m[2]), TG_OK);
    assert_status(tg_sequential_new(f->ctx, "net", 3, m, &net), TG_OK);
    assert_int_equal(tg_module_param_count(net), 4);
    const char *names[] = {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(tg_param_name(tg_module_params(net)[i]), names[i]);
    assert_ptr_equal(tg_param_find(f->ctx, "net.2.bias"), tg_module_params(net)[3]);
    tg_tensor x = tg_uniform(f->tp, TG_F32, 2, (int64_t[]){5, 4}, -1, 1, 1);
    tg_tensor y = tg_forward(net, x);
    assert_tape_ok(f->tp);
    assert_int_equal(tg_dim(y, 0), 5);
    assert_int_equal(tg_dim(y, 1), 2);
    /* Gradients reach every parameter. */
    assert_status(tg_backward(tg_sum_all(tg_square(y))), TG_OK);
    for (int i = 0; i < 4; i++) {
        tg_param *p = tg_module_params(net)[i];
        tg_tensor g = tg_param_grad_tensor(f->tp, p);
        assert_true(tg_item(tg_sum_all(tg_abs(g))) > 0);
    }
    /* Shape mismatch inside: a clear error naming the op. */
    tg_tape_reset(f->tp);
    x = tg_uniform(f->tp, TG_F32, 2, (int64_t[]){5, 3}, -1, 1, 1);
    assert_false(tg_ok(tg_forward(net, x)));
    assert_contains(tg_tape_error(f->tp), "matmul");
    tg_module_free(net);
    assert_int_equal(tg_param_count(f->ctx), 0);
}

static void dropout_train_and_eval(void **state)
{
    fixture *f = *state;
    tg_module *d;
    assert_status(tg_dropout_new(f->ctx, 0.5, 3, &d), TG_OK);
    tg_tensor x = tg_ones(f->tp, TG_F32, 1, (int64_t[]){10000});
    tg_tensor y1 = tg_forward(d, x), y2 = tg_forward(d, x);
    assert_tape_ok(f->tp);
    /* Kept elements are scaled by 1/(1-p); the mean stays near 1; masks differ per call. */
    assert_close(tg_item(tg_mean_all(y1)), 1.0, 0.05);
    assert_close(tg_item(tg_max_all(y1)), 2.0, 1e-7);
    assert_true(tg_item(tg_sum_all(tg_abs(tg_sub(y1, y2)))) > 100);
    tg_module_set_training(d, false);
    assert_false(tg_module_training(d));
    tg_tensor y3 = tg_forward(d, x);
    assert_close(tg_item(tg_min_all(y3)), 1.0, 0);
    assert_status(tg_dropout_new(f->ctx, 1.0, 3, &(tg_module *){NULL}), TG_RANGE);
    tg_module_free(d);
}

static void other_layers(void **state)
{
    fixture *f = *state;
    tg_module *m[6], *net;
    tg_conv2d_options co = {.params = {.padding = {1, 1}}};
    tg_pool2d_params pool = {.kernel = {2, 2}};
    assert_status(tg_conv2d_new(f->ctx, "c", 1, 4, 3, 3, &co, &m[0]), TG_OK);
    assert_status(tg_max_pool2d_new(f->ctx, &pool, &m[1]), TG_OK);
    assert_status(tg_avg_pool2d_new(f->ctx, &pool, &m[2]), TG_OK);
    assert_status(tg_flatten_new(f->ctx, &m[3]), TG_OK);
    assert_status(tg_layer_norm_new(f->ctx, "ln", 1, (int64_t[]){16}, 1e-5, &m[4]), TG_OK);
    assert_status(tg_activation_new(f->ctx, TG_ACT_GELU, &m[5]), TG_OK);
    assert_status(tg_sequential_new(f->ctx, "", 6, m, &net), TG_OK);
    /* An unnamed Sequential gives PyTorch's state_dict keys. */
    assert_string_equal(tg_param_name(tg_module_params(net)[0]), "0.weight");
    assert_string_equal(tg_param_name(tg_module_params(net)[2]), "4.weight");
    tg_tensor x = tg_uniform(f->tp, TG_F32, 4, (int64_t[]){2, 1, 8, 8}, 0, 1, 2);
    tg_tensor y = tg_forward(net, x); /* [2,4,8,8] -> [2,4,4,4] -> [2,4,2,2] -> [2,16] */
    assert_tape_ok(f->tp);
    assert_int_equal(tg_ndim(y), 2);
    assert_int_equal(tg_dim(y, 1), 16);
    assert_status(tg_backward(tg_sum_all(y)), TG_OK);
    tg_module_free(net);

    tg_module *emb;
    assert_status(tg_embedding_new(f->ctx, "emb", 10, 3, 1, &emb), TG_OK);
    tg_tape_reset(f->tp);
    tg_tensor idx = tg_tensor_from(f->tp, TG_I64, 2, (int64_t[]){2, 2}, (int64_t[]){0, 9, 9, 3});
    tg_tensor e = tg_forward(emb, idx);
    assert_tape_ok(f->tp);
    assert_int_equal(tg_ndim(e), 3);
    const float *ed = tg_data(e), *table = tg_param_data(tg_module_params(emb)[0]);
    assert_memory_equal(ed + 3, table + 27, 3 * sizeof(float)); /* row 9 */
    idx = tg_tensor_from(f->tp, TG_I64, 1, (int64_t[]){1}, (int64_t[]){10});
    assert_false(tg_ok(tg_forward(emb, idx)));
    assert_contains(tg_tape_error(f->tp), "out of range");
    tg_module_free(emb);
}

typedef struct scale_module {
    double factor;
} scale_module;

static tg_tensor scale_forward(void *user, tg_module *m, tg_tensor x)
{
    (void)m;
    return tg_mul_scalar(x, ((scale_module *)user)->factor);
}

static void custom_module_and_bad_arguments(void **state)
{
    fixture *f = *state;
    scale_module s = {3.0};
    tg_module *m;
    assert_status(tg_module_custom_new(f->ctx, "scale", scale_forward, &s, &m), TG_OK);
    assert_close(tg_item(tg_forward(m, tg_constant(f->tp, TG_F64, 2.0))), 6.0, 0);
    assert_string_equal(tg_module_name(m), "scale");
    tg_module_free(m);

    tg_module *out = (tg_module *)&s;
    assert_status(tg_linear_new(f->ctx, "x", 0, 3, NULL, &out), TG_SHAPE);
    assert_null(out);
    assert_contains(tg_ctx_error(f->ctx), "tg_linear_new(x)");
    assert_status(
        tg_conv2d_new(f->ctx, "c", 3, 4, 3, 3, &(tg_conv2d_options){.params.groups = 2}, &out),
        TG_SHAPE);
    assert_status(tg_sequential_new(f->ctx, "s", 0, NULL, &out), TG_INVALID);
    assert_int_equal(tg_param_count(f->ctx), 0); /* failed constructors leave nothing behind */
    assert_false(tg_ok(tg_forward(NULL, tg_constant(f->tp, TG_F32, 1))));
    assert_contains(tg_tape_error(f->tp), "module is NULL");
}

/* Layer options: zeros take their defaults (stride 0: the kernel size for pooling, 1 for a
 * convolution), values without one are refused by the constructor (a pooling kernel of 0 used to
 * be accepted and failed at every forward). */
static void layer_options_checked_at_construction(void **state)
{
    fixture *f = *state;
    tg_module *m = NULL;
    assert_status(tg_max_pool2d_new(f->ctx, &(tg_pool2d_params){.kernel = {2, 2}}, &m), TG_OK);
    tg_tensor y = tg_forward(m, tg_ones(f->tp, TG_F32, 4, (int64_t[]){1, 1, 4, 6}));
    assert_int_equal(tg_dim(y, 2), 2);
    assert_int_equal(tg_dim(y, 3), 3);
    tg_module_free(m);
    const tg_pool2d_params bad_pools[] = {{{0, 0}, {0, 0}, {0, 0}},
                                          {{2, 0}, {0, 0}, {0, 0}},
                                          {{2, 2}, {-1, 1}, {0, 0}},
                                          {{2, 2}, {0, 0}, {2, 0}},
                                          {{3, 3}, {0, 0}, {0, -1}}};
    for (size_t i = 0; i < sizeof bad_pools / sizeof bad_pools[0]; i++) {
        m = (tg_module *)1;
        assert_status(tg_avg_pool2d_new(f->ctx, &bad_pools[i], &m), TG_INVALID);
        assert_null(m);
        assert_contains(tg_ctx_error(f->ctx), "tg_avg_pool2d_new: kernel");
    }
    tg_conv2d_options co = {.params = {.stride = {0, -2}}};
    m = (tg_module *)1;
    assert_status(tg_conv2d_new(f->ctx, "c", 1, 2, 3, 3, &co, &m), TG_INVALID);
    assert_null(m);
    assert_contains(tg_ctx_error(f->ctx), "tg_conv2d_new(c): stride 0x-2");
    co = (tg_conv2d_options){.params = {.dilation = {-1, 1}}};
    assert_status(tg_conv2d_new(f->ctx, "c", 1, 2, 3, 3, &co, &m), TG_INVALID);
    co = (tg_conv2d_options){.params = {.padding = {-1, 0}}};
    assert_status(tg_conv2d_new(f->ctx, "c", 1, 2, 3, 3, &co, &m), TG_INVALID);
    assert_int_equal(tg_param_count(f->ctx), 0);
    assert_status(tg_conv2d_new(f->ctx, "c", 1, 2, 3, 3, &(tg_conv2d_options){0}, &m), TG_OK);
    y = tg_forward(m, tg_ones(f->tp, TG_F32, 4, (int64_t[]){1, 1, 5, 5}));
    assert_int_equal(tg_dim(y, 2), 3);
    tg_module_free(m);
}

/* ---- module trees ----------------------------------------------------------------------- */

static tg_tensor passthrough(void *user, tg_module *m, tg_tensor x)
{
    (void)user, (void)m;
    return x;
}

/* An attention-like block: a module "attn" owning in_proj_weight [6, 2] and in_proj_bias [6],
 * with the children "out_proj" (Linear 2 -> 2) and "drop" (Dropout), as PyTorch names them,
 * appended to `list`. (Built one at a time into the list: two such blocks standing alone at once
 * would both name a parameter "attn.out_proj.weight", which the second adoption refuses.) */
static void add_block(tg_ctx *ctx, tg_module *list)
{
    tg_module *attn, *out_proj, *drop, *blk;
    assert_status(tg_module_custom_new(ctx, "attn", passthrough, NULL, &attn), TG_OK);
    assert_status(tg_module_add_param(attn, "in_proj_weight", TG_F32, 2, (int64_t[]){6, 2}, NULL),
                  TG_OK);
    assert_status(tg_module_add_param(attn, "in_proj_bias", TG_F32, 1, (int64_t[]){6}, NULL),
                  TG_OK);
    assert_status(tg_linear_new(ctx, "anything", 2, 2, NULL, &out_proj), TG_OK);
    assert_status(tg_module_add_child(attn, "out_proj", out_proj), TG_OK);
    assert_status(tg_dropout_new(ctx, 0.5, 1, &drop), TG_OK);
    assert_status(tg_module_add_child(attn, "drop", drop), TG_OK);
    assert_status(tg_module_custom_new(ctx, "", passthrough, NULL, &blk), TG_OK);
    assert_status(tg_module_add_child(blk, "attn", attn), TG_OK);
    assert_string_equal(tg_param_name(tg_module_params(blk)[2]), "attn.out_proj.weight");
    assert_status(tg_module_add_child(list, NULL, blk), TG_OK);
}

/* Containers build PyTorch's state_dict names at any depth, lookups follow dotted paths, lists
 * stay right when a module deep inside gains or loses a child, and training mode reaches every
 * descendant. */
static void hierarchical_names_and_lookup(void **state)
{
    fixture *f = *state;
    tg_module *list, *head, *model;
    assert_status(tg_module_list_new(f->ctx, "blocks", 0, NULL, &list), TG_OK);
    for (int i = 0; i < 3; i++)
        add_block(f->ctx, list);
    assert_string_equal(tg_param_name(tg_module_params(list)[10]), "blocks.2.attn.out_proj.weight");
    assert_status(tg_linear_new(f->ctx, "head", 2, 1, NULL, &head), TG_OK);
    assert_status(tg_module_dict_new(f->ctx, "", 2, (const char *[]){"blocks", "head"},
                                     (tg_module *[]){list, head}, &model),
                  TG_OK);
    /* PyTorch's parameters() order: each module's own, then its children's, depth first. */
    const char *names[] = {"blocks.0.attn.in_proj_weight", "blocks.0.attn.in_proj_bias",
                           "blocks.0.attn.out_proj.weight", "blocks.0.attn.out_proj.bias",
                           "blocks.1.attn.in_proj_weight"};
    assert_int_equal(tg_module_param_count(model), 14);
    for (int i = 0; i < 5; i++)
        assert_string_equal(tg_param_name(tg_module_params(model)[i]), names[i]);
    assert_string_equal(tg_param_name(tg_module_params(model)[13]), "head.bias");
    /* Lookup. */
    tg_module *attn = tg_module_find(model, "blocks.2.attn");
    assert_non_null(attn);
    assert_string_equal(tg_module_name(attn), "blocks.2.attn");
    assert_string_equal(tg_module_key(attn), "attn");
    assert_string_equal(tg_module_key(tg_module_child(model, 0)), "blocks");
    assert_int_equal(tg_module_child_count(model), 2);
    assert_null(tg_module_child(model, 2));
    assert_ptr_equal(tg_module_find(model, ""), model);
    assert_ptr_equal(tg_module_find(tg_module_find(model, "blocks"), "2.attn"), attn);
    tg_param *w = tg_param_find(f->ctx, "blocks.2.attn.in_proj_weight");
    assert_non_null(w);
    assert_ptr_equal(tg_module_find_param(model, "blocks.2.attn.in_proj_weight"), w);
    assert_ptr_equal(tg_module_find_param(attn, "in_proj_weight"), w);
    assert_ptr_equal(tg_module_find_param(attn, "out_proj.bias"),
                     tg_param_find(f->ctx, "blocks.2.attn.out_proj.bias"));
    const char *missing[] = {"blocks.3.attn", "blocks..2", "blocks.2.", ".blocks", "head.weight"};
    for (int i = 0; i < 5; i++)
        assert_null(tg_module_find(model, missing[i]));
    assert_null(tg_module_find_param(model, "blocks.2.attn.nothing"));
    assert_null(tg_module_find_param(model, ".in_proj_weight"));
    assert_null(tg_module_find_param(attn, "out_proj"));
    /* Training mode reaches the dropout three levels down. */
    tg_module *drop = tg_module_find(model, "blocks.1.attn.drop");
    assert_true(tg_module_training(drop));
    tg_module_set_training(model, false);
    assert_false(tg_module_training(drop));
    /* A list or dict holds modules; it does not run them. */
    assert_false(tg_ok(tg_forward(list, tg_ones(f->tp, TG_F32, 1, (int64_t[]){2}))));
    assert_contains(tg_tape_error(f->tp), "tg_forward(blocks): a ModuleList has no forward");
    /* A child added deep inside shows in every ancestor's lists, in tree order; freeing it
     * takes it out again. */
    tg_module *extra;
    assert_status(tg_linear_new(f->ctx, "x", 2, 3, NULL, &extra), TG_OK);
    tg_module *attn1 = tg_module_find(model, "blocks.1.attn");
    assert_status(tg_module_add_child(attn1, NULL, extra), TG_OK);
    assert_string_equal(tg_module_name(extra), "blocks.1.attn.2");
    assert_int_equal(tg_module_param_count(model), 16);
    assert_string_equal(tg_param_name(tg_module_params(model)[8]), "blocks.1.attn.2.weight");
    assert_string_equal(tg_param_name(tg_module_params(tg_module_find(model, "blocks"))[8]),
                        "blocks.1.attn.2.weight");
    size_t before = tg_param_count(f->ctx);
    tg_module_free(extra);
    assert_int_equal(tg_param_count(f->ctx), before - 2);
    assert_int_equal(tg_module_param_count(model), 14);
    assert_int_equal(tg_module_child_count(attn1), 2);
    assert_string_equal(tg_param_name(tg_module_params(model)[8]), "blocks.2.attn.in_proj_weight");
    /* Freed from the middle of a list, a child leaves its index taken: appending refuses it
     * rather than naming two children "2". */
    tg_module_free(tg_module_child(list, 1));
    assert_int_equal(tg_module_child_count(list), 2);
    assert_string_equal(tg_module_key(tg_module_child(list, 1)), "2");
    tg_module *late;
    assert_status(tg_activation_new(f->ctx, TG_ACT_RELU, &late), TG_OK);
    assert_status(tg_module_add_child(list, NULL, late), TG_EXISTS);
    assert_contains(tg_ctx_error(f->ctx), "already has a member named \"2\"");
    tg_module_free(model);
    assert_int_equal(tg_param_count(f->ctx), 0);
}

/* Names must stay unique: a repeated key, a name already in the context or a member name used
 * twice are refused at creation, with the modules taken (freed) as the containers promise, and
 * modules that are not the call's to take (in a tree, of another context, repeated) kept. */
static void duplicate_names_are_refused(void **state)
{
    fixture *f = *state;
    tg_module *a, *b, *m = (tg_module *)1;
    assert_status(tg_linear_new(f->ctx, "a", 2, 2, NULL, &a), TG_OK);
    assert_status(tg_linear_new(f->ctx, "b", 2, 2, NULL, &b), TG_OK);
    assert_status(
        tg_module_dict_new(f->ctx, "d", 2, (const char *[]){"k", "k"}, (tg_module *[]){a, b}, &m),
        TG_EXISTS);
    assert_null(m);
    assert_contains(tg_ctx_error(f->ctx), "tg_module_dict_new(d): key \"k\" appears twice");
    assert_int_equal(tg_param_count(f->ctx), 0); /* both taken, also on failure */

    tg_module *standing;
    assert_status(tg_linear_new(f->ctx, "enc.0", 2, 2, NULL, &standing), TG_OK);
    assert_status(tg_linear_new(f->ctx, "a", 2, 2, NULL, &a), TG_OK);
    assert_status(tg_module_list_new(f->ctx, "enc", 1, &a, &m), TG_EXISTS);
    assert_contains(tg_ctx_error(f->ctx),
                    "\"enc.0.weight\" would name two parameters or buffers of the context");
    assert_int_equal(tg_param_count(f->ctx), 2); /* the standing module's */
    assert_string_equal(tg_param_name(tg_module_params(standing)[0]), "enc.0.weight");

    /* Keys: valid and unused by the module's parameters, buffers and children. */
    assert_status(tg_linear_new(f->ctx, "a", 2, 2, NULL, &a), TG_OK);
    assert_status(tg_module_add_child(standing, "weight", a), TG_EXISTS);
    assert_contains(tg_ctx_error(f->ctx), "already has a member named \"weight\"");
    assert_status(tg_linear_new(f->ctx, "a", 2, 2, NULL, &a), TG_OK);
    assert_status(tg_module_add_child(standing, "x.y", a), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "\"x.y\" is not a valid name");
    assert_int_equal(tg_param_count(f->ctx), 2);
    assert_status(tg_module_add_param(standing, "bias", TG_F32, 0, NULL, NULL), TG_EXISTS);
    assert_status(tg_module_add_buffer(standing, "", TG_F32, 0, NULL, NULL), TG_INVALID);
    assert_status(tg_module_add_param(standing, "n", TG_I64, 0, NULL, NULL), TG_DTYPE);
    assert_int_equal(tg_module_state_count(standing), 2);

    /* Not the call's to take: kept. A module twice in one list is taken once. */
    tg_module *inner, *outer, *twice;
    assert_status(tg_linear_new(f->ctx, "i", 2, 2, NULL, &inner), TG_OK);
    assert_status(tg_sequential_new(f->ctx, "outer", 1, &inner, &outer), TG_OK);
    assert_status(tg_module_list_new(f->ctx, "l", 1, &inner, &m), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "(outer.0) already has a parent");
    assert_ptr_equal(tg_module_find(outer, "0"), inner);
    assert_status(tg_module_add_child(inner, "loop", outer), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "contains the container");
    tg_ctx *other;
    assert_status(tg_ctx_new(&other, NULL), TG_OK);
    tg_module *foreign;
    assert_status(tg_linear_new(other, "f", 2, 2, NULL, &foreign), TG_OK);
    assert_status(tg_linear_new(f->ctx, "t", 2, 2, NULL, &twice), TG_OK);
    assert_status(tg_module_list_new(f->ctx, "l", 3, (tg_module *[]){twice, foreign, twice}, &m),
                  TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "module 1 is of another context");
    assert_int_equal(tg_param_count(other), 2);
    assert_status(tg_module_list_new(f->ctx, "l", 2, (tg_module *[]){NULL, NULL}, &m), TG_INVALID);
    /* A list naming a tree and a module inside it, in either order: the tree is taken (with what
     * it holds); which modules are taken is settled before any is freed. */
    for (int order = 0; order < 2; order++) {
        tg_module *leaf, *tree;
        assert_status(tg_linear_new(f->ctx, "leaf", 2, 2, NULL, &leaf), TG_OK);
        assert_status(tg_sequential_new(f->ctx, "tree", 1, &leaf, &tree), TG_OK);
        tg_module *pair[2] = {order ? leaf : tree, order ? tree : leaf};
        assert_status(tg_module_list_new(f->ctx, "l", 2, pair, &m), TG_INVALID);
        assert_contains(tg_ctx_error(f->ctx), "(tree.0) already has a parent");
    }
    assert_status(tg_module_dict_new(f->ctx, "d", 1, NULL, &standing, &m), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "keys is NULL");
    assert_int_equal(tg_param_count(f->ctx), 2); /* outer's: the dict took standing */
    tg_module_free(foreign);
    tg_ctx_free(other);
    tg_module_free(outer);
    assert_int_equal(tg_param_count(f->ctx), 0);
}

/* Buffers: state with the parameters, without gradients. A module lists them after its
 * parameters; optimisers and clipping refuse them; a tape reads a copy; stores check what they
 * are given and change nothing when they fail. */
static void buffers_in_modules(void **state)
{
    fixture *f = *state;
    tg_module *m;
    tg_param *w, *mean, *count;
    assert_status(tg_module_custom_new(f->ctx, "norm", passthrough, NULL, &m), TG_OK);
    assert_status(tg_module_add_buffer(m, "running_mean", TG_F32, 1, (int64_t[]){3}, &mean), TG_OK);
    assert_status(tg_module_add_param(m, "weight", TG_F32, 1, (int64_t[]){3}, &w), TG_OK);
    assert_status(tg_module_add_buffer(m, "count", TG_I64, 0, NULL, &count), TG_OK);
    assert_int_equal(tg_module_param_count(m), 1);
    assert_int_equal(tg_module_buffer_count(m), 2);
    assert_ptr_equal(tg_module_params(m)[0], w);
    assert_ptr_equal(tg_module_buffers(m)[0], mean);
    assert_ptr_equal(tg_module_state(m)[2], count);
    assert_string_equal(tg_param_name(mean), "norm.running_mean");
    assert_ptr_equal(tg_param_find(f->ctx, "norm.count"), count);
    assert_ptr_equal(tg_module_find_param(m, "running_mean"), mean);
    assert_null(tg_param_grad(mean));
    tg_param_zero_grad(mean);
    tg_zero_grad(f->ctx);
    /* Optimisers and clipping refuse a buffer. */
    tg_optim *opt = (tg_optim *)1;
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    assert_status(tg_adam_new(f->ctx, tg_module_state_count(m), tg_module_state(m), &ao, &opt),
                  TG_INVALID);
    assert_null(opt);
    assert_contains(tg_ctx_error(f->ctx), "parameter 1 (norm.running_mean) is a buffer");
    assert_true(isnan(tg_clip_grad_norm(2, (tg_param *[]){w, mean}, 1.0, 2.0)));
    assert_contains(tg_ctx_error(f->ctx), "parameter 1 is a buffer");
    assert_status(tg_adam_new(f->ctx, tg_module_param_count(m), tg_module_params(m), &ao, &opt),
                  TG_OK);
    /* A tape reads a copy that needs no gradient: backward reaches the parameter only. */
    assert_status(tg_param_fill(w, 2.0), TG_OK);
    assert_status(tg_param_set(mean, (float[]){1, 2, 3}), TG_OK);
    tg_tensor b = tg_param_tensor(f->tp, mean);
    assert_true(tg_data(b) != tg_param_data(mean));
    tg_tensor loss = tg_sum_all(tg_mul(tg_param_tensor(f->tp, w), b));
    assert_status(tg_buffer_store(mean, tg_mul_scalar(b, 10.0)), TG_OK); /* before backward */
    assert_status(tg_backward(loss), TG_OK);
    const float *gw = tg_param_grad(w), *mv = tg_param_data(mean);
    assert_true(gw[0] == 1 && gw[1] == 2 && gw[2] == 3);
    assert_true(mv[0] == 10 && mv[2] == 30);
    assert_status(tg_optim_step(opt, f->tp), TG_OK);
    assert_true(mv[0] == 10); /* the optimiser never sees the buffer */
    assert_false(tg_ok(tg_param_grad_tensor(f->tp, mean)));
    assert_contains(tg_tape_error(f->tp), "tg_param_grad_tensor(norm.running_mean): a buffer has");
    /* Stores that fail change nothing. */
    tg_tape_reset(f->tp);
    uint64_t version = tg_param_version(mean);
    assert_status(tg_buffer_store(w, tg_zeros(f->tp, TG_F32, 1, (int64_t[]){3})), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx),
                    "tg_buffer_store(norm.weight): a parameter, not a buffer");
    assert_status(tg_buffer_store(mean, tg_zeros(f->tp, TG_F64, 1, (int64_t[]){3})), TG_DTYPE);
    assert_contains(tg_ctx_error(f->ctx), "the value is f64, the buffer f32");
    assert_status(tg_buffer_store(mean, (tg_tensor){0}), TG_INVALID);
    tg_tensor old = tg_zeros(f->tp, TG_F32, 1, (int64_t[]){3});
    tg_tape_reset(f->tp);
    assert_status(tg_buffer_store(mean, old), TG_STALE);
    assert_status(tg_buffer_store(NULL, old), TG_INVALID);
    tg_ctx *other;
    tg_tape *otp;
    assert_status(tg_ctx_new(&other, NULL), TG_OK);
    assert_status(tg_tape_new(other, &otp), TG_OK);
    assert_status(tg_buffer_store(mean, tg_zeros(otp, TG_F32, 1, (int64_t[]){3})), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "another context");
    tg_tape_free(otp);
    tg_ctx_free(other);
    assert_int_equal(tg_param_version(mean), version);
    assert_true(mv[0] == 10);
    /* i64 buffers hold integers. */
    assert_status(tg_param_fill(count, 41), TG_OK);
    assert_int_equal(*(const int64_t *)tg_param_data(count), 41);
    assert_status(tg_param_fill(count, NAN), TG_RANGE);
    assert_status(tg_param_uniform(count, 0, 1, 1), TG_DTYPE);
    assert_status(tg_param_normal(count, 0, 1, 1), TG_DTYPE);
    assert_int_equal(*(const int64_t *)tg_param_data(count), 41);
    tg_tensor c = tg_param_tensor(f->tp, count);
    assert_int_equal(tg_tensor_dtype(c), TG_I64);
    assert_status(tg_buffer_store(count, tg_constant(f->tp, TG_I64, 42)), TG_OK);
    assert_int_equal(*(const int64_t *)tg_param_data(count), 42);
    assert_status(tg_buffer_new(f->ctx, "x", TG_I64, 1, NULL, &count), TG_SHAPE);
    assert_status(tg_buffer_new(f->ctx, "x", (tg_dtype)9, 0, NULL, &count), TG_DTYPE);
    tg_optim_free(opt);
    tg_module_free(m);
    assert_int_equal(tg_param_count(f->ctx), 0);
}

/* A short real run: 120 Adam steps of batch 64 on Fashion-MNIST (about an eighth of an epoch). */
static void short_training_run(void **state)
{
    fixture *f = *state;
    struct stat sb;
    if (stat(FASHION "/train-images-idx3-ubyte.gz", &sb) != 0) {
        printf("Fashion-MNIST not installed (" FASHION "): skipping\n");
        skip();
    }
    tg_dataset *train, *test;
    assert_status(tg_dataset_load_idx(f->ctx, FASHION "/train-images-idx3-ubyte.gz",
                                      FASHION "/train-labels-idx1-ubyte.gz", &train),
                  TG_OK);
    assert_status(tg_dataset_load_idx(f->ctx, FASHION "/t10k-images-idx3-ubyte.gz",
                                      FASHION "/t10k-labels-idx1-ubyte.gz", &test),
                  TG_OK);
    tg_module *m[6], *net;
    tg_flatten_new(f->ctx, &m[0]);
    tg_linear_new(f->ctx, "fc1", 784, 256, &(tg_linear_options){.seed = 1}, &m[1]);
    tg_activation_new(f->ctx, TG_ACT_RELU, &m[2]);
    tg_linear_new(f->ctx, "fc2", 256, 128, &(tg_linear_options){.seed = 2}, &m[3]);
    tg_activation_new(f->ctx, TG_ACT_RELU, &m[4]);
    tg_linear_new(f->ctx, "fc3", 128, 10, &(tg_linear_options){.seed = 3}, &m[5]);
    assert_status(tg_sequential_new(f->ctx, "mlp", 6, m, &net), TG_OK);
    tg_optim *opt;
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    assert_status(tg_adam_new(f->ctx, tg_module_param_count(net), tg_module_params(net), &ao, &opt),
                  TG_OK);
    tg_batches *b;
    assert_status(tg_batches_new(train, 64, true, 7, true, &b), TG_OK);
    tg_batches_start(b, 0);
    double first = 0, last = 0;
    for (int step = 0; step < 120; step++) {
        tg_tape_reset(f->tp);
        tg_tensor x, y;
        assert_true(tg_batches_next(b, f->tp, &x, &y));
        tg_tensor loss = tg_cross_entropy(tg_forward(net, x), y, TG_REDUCE_MEAN, 0.0);
        assert_status(tg_backward(loss), TG_OK);
        assert_status(tg_optim_step(opt, f->tp), TG_OK);
        tg_optim_zero_grad(opt);
        double l = tg_item(loss);
        if (step < 10)
            first += l / 10;
        if (step >= 110)
            last += l / 10;
    }
    printf("mean loss of the first 10 steps %.3f, of the last 10 %.3f\n", first, last);
    assert_true(last < 0.6 * first);
    /* Test accuracy over 2000 test images. */
    tg_module_set_training(net, false);
    tg_batches *tb;
    assert_status(tg_batches_new(test, 1000, false, 0, false, &tb), TG_OK);
    tg_batches_start(tb, 0);
    int64_t correct = 0, seen = 0;
    for (int k = 0; k < 2; k++) {
        tg_tape_reset(f->tp);
        tg_tensor x, y;
        assert_true(tg_batches_next(tb, f->tp, &x, &y));
        tg_tensor logits = tg_forward(net, x);
        tg_tensor hit = tg_eq(logits, tg_max(logits, 1, (int[]){1}, true));
        const float *h = tg_data(hit);
        const int64_t *lab = tg_data(y);
        for (int64_t i = 0; i < 1000; i++)
            correct += h[i * 10 + lab[i]] > 0;
        seen += 1000;
    }
    double acc = (double)correct / (double)seen;
    printf("test accuracy after 120 steps: %.1f%%\n", 100 * acc);
    assert_true(acc > 0.70);
    tg_batches_free(tb);
    tg_batches_free(b);
    tg_optim_free(opt);
    tg_module_free(net);
    tg_dataset_free(train);
    tg_dataset_free(test);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(linear_matches_pytorch_layout),
        FIXTURE_TEST(default_init_statistics),
        FIXTURE_TEST(initialisers),
        FIXTURE_TEST(sequential_names_and_runs),
        FIXTURE_TEST(dropout_train_and_eval),
        FIXTURE_TEST(other_layers),
        FIXTURE_TEST(custom_module_and_bad_arguments),
        FIXTURE_TEST(layer_options_checked_at_construction),
        FIXTURE_TEST(hierarchical_names_and_lookup),
        FIXTURE_TEST(duplicate_names_are_refused),
        FIXTURE_TEST(buffers_in_modules),
        FIXTURE_TEST(short_training_run),
    };
    return cmocka_run_group_tests_name("nn", tests, NULL, NULL);
}
