/* test_nn.c — modules (layers, Sequential, custom), initialisers, train/eval mode, bad input, and a
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
        FIXTURE_TEST(short_training_run),
    };
    return cmocka_run_group_tests_name("nn", tests, NULL, NULL);
}
