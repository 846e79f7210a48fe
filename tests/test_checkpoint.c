/* test_checkpoint.c — safetensors checkpoints: round trips of parameters and optimiser state,
 * atomic saves, and loads of malformed, truncated or foreign files that must change nothing. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, setrlimit */
#define TMPDIR_TEMPLATE "/tmp/tg_ckpt_XXXXXX"
#include "common.h"
#include "files.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

/* ---- helpers ----------------------------------------------------------------------------- */

/* The test's model.safetensors in tmp_dir (set by the setup). */
static char file_path[128];

/* Files in the directory whose name contains ".tmp." */
static int temp_files(void)
{
    DIR *d = opendir(tmp_dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

/* A safetensors file from header text (padded here) and a data section. */
static void write_st(const char *path, const char *json, const void *data, size_t n)
{
    size_t len = strlen(json), padded = (len + 7) / 8 * 8;
    unsigned char *b = calloc(1, 8 + padded + n + 1);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(b + 8, json, len);
    memset(b + 8 + len, ' ', padded - len);
    if (n)
        memcpy(b + 8 + padded, data, n);
    write_all(path, b, 8 + padded + n);
    free(b);
}

/* The model of most tests: w f32 [2,3], b f64 [3], s f32 [] (0-d), with distinct values. */
typedef struct model {
    tg_param *p[3];
} model;

static void model_make(tg_ctx *ctx, model *m, const char *prefix, double seed)
{
    char name[64];
    snprintf(name, sizeof name, "%sw", prefix);
    assert_status(tg_param_new(ctx, name, TG_F32, 2, (int64_t[]){2, 3}, &m->p[0]), TG_OK);
    snprintf(name, sizeof name, "%sb", prefix);
    assert_status(tg_param_new(ctx, name, TG_F64, 1, (int64_t[]){3}, &m->p[1]), TG_OK);
    snprintf(name, sizeof name, "%ss", prefix);
    assert_status(tg_param_new(ctx, name, TG_F32, 0, NULL, &m->p[2]), TG_OK);
    for (int i = 0; i < 3; i++)
        assert_status(tg_param_uniform(m->p[i], -2, 2, (uint64_t)(seed * 100) + (uint64_t)i),
                      TG_OK);
}

static void model_free(model *m)
{
    for (int i = 0; i < 3; i++)
        tg_param_free(m->p[i]);
}

/* Values of every parameter, concatenated (malloc'd), to check a failed load changed nothing. */
static unsigned char *snapshot(tg_param *const *ps, int n, size_t *bytes)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += (size_t)tg_param_numel(ps[i]) * tg_dtype_size(tg_param_dtype(ps[i]));
    unsigned char *s = malloc(total + 1), *w = s;
    assert_non_null(s);
    for (int i = 0; i < n; i++) {
        size_t k = (size_t)tg_param_numel(ps[i]) * tg_dtype_size(tg_param_dtype(ps[i]));
        memcpy(w, tg_param_data(ps[i]), k);
        w += k;
    }
    *bytes = total;
    return s;
}

static void assert_unchanged(tg_param *const *ps, int n, const unsigned char *snap, size_t bytes)
{
    size_t now_bytes;
    unsigned char *now = snapshot(ps, n, &now_bytes);
    assert_int_equal(now_bytes, bytes);
    assert_memory_equal(now, snap, bytes);
    free(now);
}

/* ---- round trips ------------------------------------------------------------------------- */

static void round_trip_parameters(void **state)
{
    fixture *f = *state;
    model a, b;
    model_make(f->ctx, &a, "", 1);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 3, a.p, NULL), TG_OK);
    assert_int_equal(temp_files(), 0);

    /* The file: a padded header that names each tensor, then the data in order. */
    size_t len;
    unsigned char *file = read_all(file_path, &len);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)file[i] << (8 * i);
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(len, 8 + hlen + 6 * 4 + 3 * 8 + 4);
    json_t *h = json_loadb((const char *)file + 8, hlen, 0, NULL);
    assert_non_null(h);
    json_t *meta = json_object_get(h, "__metadata__");
    assert_string_equal(json_string_value(json_object_get(meta, "format")), "tapegrad");
    assert_null(json_object_get(meta, "optim_steps"));
    json_t *w = json_object_get(h, "w");
    assert_string_equal(json_string_value(json_object_get(w, "dtype")), "F32");
    assert_int_equal(json_array_size(json_object_get(w, "shape")), 2);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(w, "shape"), 1)), 3);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(w, "data_offsets"), 1)), 24);
    json_t *s = json_object_get(h, "s");
    assert_int_equal(json_array_size(json_object_get(s, "shape")), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(h, "b"), "dtype")),
                        "F64");
    json_decref(h);
    assert_memory_equal(file + 8 + hlen, tg_param_data(a.p[0]), 24);
    assert_memory_equal(file + 8 + hlen + 24, tg_param_data(a.p[1]), 24);
    free(file);

    /* Into other parameters of the same names (another context), and back over changed ones. */
    tg_ctx *ctx2;
    assert_status(tg_ctx_new(&ctx2, NULL), TG_OK);
    model_make(ctx2, &b, "", 2);
    uint64_t version = tg_param_version(b.p[0]);
    assert_status(tg_checkpoint_load(ctx2, file_path, 3, b.p, NULL), TG_OK);
    assert_true(tg_param_version(b.p[0]) > version); /* tapes see the write */
    for (int i = 0; i < 3; i++)
        assert_memory_equal(tg_param_data(a.p[i]), tg_param_data(b.p[i]),
                            (size_t)tg_param_numel(a.p[i]) * tg_dtype_size(tg_param_dtype(a.p[i])));
    /* A subset loads too, in any order. */
    assert_status(tg_param_fill(b.p[2], 0), TG_OK);
    assert_status(tg_checkpoint_load(ctx2, file_path, 2, (tg_param *[]){b.p[2], b.p[1]}, NULL),
                  TG_OK);
    assert_memory_equal(tg_param_data(a.p[2]), tg_param_data(b.p[2]), 4);
    /* Saving again replaces the file. */
    assert_status(tg_param_fill(a.p[0], 7), TG_OK);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 3, a.p, NULL), TG_OK);
    assert_status(tg_checkpoint_load(ctx2, file_path, 1, b.p, NULL), TG_OK);
    assert_close(((const float *)tg_param_data(b.p[0]))[5], 7.0, 0);
    assert_int_equal(temp_files(), 0);
    model_free(&b);
    tg_ctx_free(ctx2);
    model_free(&a);
}

/* A model of a Linear layer and a module holding PyTorch-style buffers (f32 running statistics,
 * an i64 count, and a state stored from a tape with a shape of its own). */
static tg_module *stateful_model(tg_ctx *ctx, tg_tape *tp, uint64_t seed)
{
    tg_module *parts[2], *model;
    assert_status(tg_linear_new(ctx, "", 3, 2, &(tg_linear_options){.seed = seed}, &parts[0]),
                  TG_OK);
    assert_status(tg_module_list_new(ctx, "", 0, NULL, &parts[1]), TG_OK); /* a plain holder */
    tg_param *mean, *count, *hidden;
    assert_status(tg_module_add_buffer(parts[1], "running_mean", TG_F32, 1, (int64_t[]){2}, &mean),
                  TG_OK);
    assert_status(tg_module_add_buffer(parts[1], "count", TG_I64, 0, NULL, &count), TG_OK);
    assert_status(tg_module_add_buffer(parts[1], "hidden", TG_F64, 2, (int64_t[]){1, 1}, &hidden),
                  TG_OK);
    assert_status(tg_param_uniform(mean, -1, 1, seed), TG_OK);
    assert_status(tg_param_fill(count, (double)seed), TG_OK);
    tg_tape_reset(tp);
    tg_tensor h = tg_uniform(tp, TG_F64, 2, (int64_t[]){2, 3}, -1, 1, seed); /* grows to [2,3] */
    assert_status(tg_buffer_store(hidden, h), TG_OK);
    assert_status(
        tg_module_dict_new(ctx, "model", 2, (const char *[]){"fc", "stats"}, parts, &model), TG_OK);
    return model;
}

/* One call saves and loads a whole model: its parameters and its buffers (f32, i64, one resized
 * by tg_buffer_store), all checked like parameters (a buffer of another shape is refused). */
static void round_trip_module_state(void **state)
{
    fixture *f = *state;
    tg_module *a = stateful_model(f->ctx, f->tp, 1);
    assert_int_equal(tg_module_param_count(a), 2);
    assert_int_equal(tg_module_buffer_count(a), 3);
    assert_int_equal(tg_module_state_count(a), 5);
    assert_string_equal(tg_param_name(tg_module_state(a)[0]), "model.fc.weight");
    assert_string_equal(tg_param_name(tg_module_state(a)[4]), "model.stats.hidden");
    assert_status(
        tg_checkpoint_save(f->ctx, file_path, tg_module_state_count(a), tg_module_state(a), NULL),
        TG_OK);
    size_t len;
    unsigned char *file = read_all(file_path, &len);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)file[i] << (8 * i);
    json_t *h = json_loadb((const char *)file + 8, hlen, 0, NULL);
    assert_non_null(h);
    json_t *count = json_object_get(h, "model.stats.count");
    assert_string_equal(json_string_value(json_object_get(count, "dtype")), "I64");
    assert_int_equal(json_array_size(json_object_get(count, "shape")), 0);
    json_t *hidden = json_object_get(json_object_get(h, "model.stats.hidden"), "shape");
    assert_int_equal(json_integer_value(json_array_get(hidden, 1)), 3);
    json_decref(h);
    free(file);

    tg_ctx *ctx2;
    tg_tape *tp2;
    assert_status(tg_ctx_new(&ctx2, NULL), TG_OK);
    assert_status(tg_tape_new(ctx2, &tp2), TG_OK);
    tg_module *b = stateful_model(ctx2, tp2, 2);
    assert_status(
        tg_checkpoint_load(ctx2, file_path, tg_module_state_count(b), tg_module_state(b), NULL),
        TG_OK);
    for (size_t i = 0; i < tg_module_state_count(a); i++) {
        tg_param *pa = tg_module_state(a)[i], *pb = tg_module_state(b)[i];
        assert_string_equal(tg_param_name(pa), tg_param_name(pb));
        assert_memory_equal(tg_param_data(pa), tg_param_data(pb),
                            (size_t)tg_param_numel(pa) * tg_dtype_size(tg_param_dtype(pa)));
    }
    assert_int_equal(*(const int64_t *)tg_param_data(tg_module_find_param(b, "stats.count")), 1);
    /* A buffer of another shape is refused, as a parameter is, and nothing changes. */
    tg_param *hb = tg_module_find_param(b, "stats.hidden");
    tg_tape_reset(tp2);
    assert_status(tg_buffer_store(hb, tg_zeros(tp2, TG_F64, 1, (int64_t[]){6})), TG_OK);
    assert_status(
        tg_checkpoint_load(ctx2, file_path, tg_module_state_count(b), tg_module_state(b), NULL),
        TG_SHAPE);
    assert_contains(tg_ctx_error(ctx2), "model.stats.hidden");
    assert_int_equal(tg_param_ndim(hb), 1);
    tg_module_free(b);
    tg_tape_free(tp2);
    tg_ctx_free(ctx2);
    tg_module_free(a);
}

/* One Adam step on gradients g = p * k + 0.1 (so steps differ). */
static void optim_steps(tg_tape *tp, tg_optim *opt, int steps)
{
    for (int s = 0; s < steps; s++) {
        for (size_t i = 0; i < tg_optim_param_count(opt); i++) {
            tg_param *p = tg_optim_param(opt, i);
            for (int64_t j = 0; j < tg_param_numel(p); j++) {
                if (tg_param_dtype(p) == TG_F32)
                    ((float *)tg_param_grad(p))[j] =
                        ((const float *)tg_param_data(p))[j] * (float)(s + 1) + 0.1f;
                else
                    ((double *)tg_param_grad(p))[j] =
                        ((const double *)tg_param_data(p))[j] * (s + 1) + 0.1;
            }
        }
        assert_status(tg_optim_step(opt, tp), TG_OK);
        tg_tape_reset(tp);
    }
}

typedef tg_status (*optim_new_fn)(tg_ctx *ctx, size_t n, tg_param *const *params, tg_optim **out);

static tg_status adam_amsgrad(tg_ctx *ctx, size_t n, tg_param *const *ps, tg_optim **out)
{
    tg_adam_options o = TG_ADAM_DEFAULTS;
    o.lr = 0.05;
    o.amsgrad = true;
    return tg_adam_new(ctx, n, ps, &o, out);
}

static tg_status sgd_momentum(tg_ctx *ctx, size_t n, tg_param *const *ps, tg_optim **out)
{
    tg_sgd_options o = TG_SGD_DEFAULTS;
    o.momentum = 0.9;
    return tg_sgd_new(ctx, n, ps, &o, out);
}

static tg_status rmsprop_centered(tg_ctx *ctx, size_t n, tg_param *const *ps, tg_optim **out)
{
    tg_rmsprop_options o = TG_RMSPROP_DEFAULTS;
    o.centered = true;
    o.momentum = 0.5;
    return tg_rmsprop_new(ctx, n, ps, &o, out);
}

/* Save after 3 steps, load into a fresh optimiser elsewhere, then both take 2 more steps: the
 * results agree bit for bit, so the state was restored completely. */
static void round_trip_optimiser(void **state)
{
    fixture *f = *state;
    optim_new_fn makers[] = {adam_amsgrad, sgd_momentum, rmsprop_centered};
    for (int k = 0; k < 3; k++) {
        model a, b;
        tg_optim *oa, *ob;
        tg_ctx *ctx2;
        tg_tape *tp2;
        model_make(f->ctx, &a, "net.", 1);
        assert_status(makers[k](f->ctx, 3, a.p, &oa), TG_OK);
        optim_steps(f->tp, oa, 3);
        assert_int_equal(tg_optim_steps(oa), 3);
        assert_status(tg_checkpoint_save(f->ctx, file_path, 3, a.p, oa), TG_OK);

        assert_status(tg_ctx_new(&ctx2, NULL), TG_OK);
        assert_status(tg_tape_new(ctx2, &tp2), TG_OK);
        model_make(ctx2, &b, "net.", 5);
        assert_status(makers[k](ctx2, 3, b.p, &ob), TG_OK);
        assert_status(tg_checkpoint_load(ctx2, file_path, 3, b.p, ob), TG_OK);
        assert_int_equal(tg_optim_steps(ob), 3);
        assert_true(tg_optim_state_count(ob) > 0);
        for (size_t i = 0; i < tg_optim_state_count(ob); i++) {
            void *da, *db;
            tg_param *p;
            const char *na, *nb;
            assert_status(tg_optim_state_info(oa, i, &na, &p, &da), TG_OK);
            assert_status(tg_optim_state_info(ob, i, &nb, NULL, &db), TG_OK);
            assert_string_equal(na, nb);
            assert_memory_equal(da, db,
                                (size_t)tg_param_numel(p) * tg_dtype_size(tg_param_dtype(p)));
        }
        optim_steps(f->tp, oa, 2);
        optim_steps(tp2, ob, 2);
        for (int i = 0; i < 3; i++)
            assert_memory_equal(tg_param_data(a.p[i]), tg_param_data(b.p[i]),
                                (size_t)tg_param_numel(a.p[i])
                                    * tg_dtype_size(tg_param_dtype(a.p[i])));
        tg_optim_free(ob);
        tg_tape_free(tp2);
        model_free(&b);
        tg_ctx_free(ctx2);
        tg_optim_free(oa);
        model_free(&a);
    }
}

/* The state names in the file: "<param>.<state>", and the step count in the metadata. */
/* The header's exact bytes (those cJSON wrote, kept through the move to jansson): compact JSON,
 * keys in order, names escaped as JSON requires and UTF-8 written as is; the padding after it.
 * A name that is not UTF-8 cannot be written as JSON: a clear error. */
static void header_text_is_exact(void **state)
{
    fixture *f = *state;
    tg_param *p[3];
    assert_status(tg_param_new(f->ctx, "fc.weight", TG_F32, 2, (int64_t[]){2, 3}, &p[0]), TG_OK);
    assert_status(tg_param_new(f->ctx, "fc.bias", TG_F64, 1, (int64_t[]){3}, &p[1]), TG_OK);
    assert_status(tg_param_new(f->ctx, "s\"q\\\x01\xc3\xa9/", TG_F32, 0, NULL, &p[2]), TG_OK);
    tg_optim *opt;
    assert_status(tg_adam_new(f->ctx, 2, p, &(tg_adam_options){.amsgrad = true}, &opt), TG_OK);
    tg_optim_set_steps(opt, 12);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 3, p, opt), TG_OK);
    const char *want =
        "{\"__metadata__\":{\"format\":\"tapegrad\",\"optim_steps\":\"12\"},"
        "\"fc.weight\":{\"shape\":[2,3],\"data_offsets\":[0,24],\"dtype\":\"F32\"},"
        "\"fc.bias\":{\"shape\":[3],\"data_offsets\":[24,48],\"dtype\":\"F64\"},"
        "\"s\\\"q\\\\\\u0001\xc3\xa9/\":{\"shape\":[],\"data_offsets\":[48,52],\"dtype\":\"F32\"},"
        "\"fc.weight.exp_avg\":{\"shape\":[2,3],\"data_offsets\":[52,76],\"dtype\":\"F32\"},"
        "\"fc.weight.exp_avg_sq\":{\"shape\":[2,3],\"data_offsets\":[76,100],\"dtype\":\"F32\"},"
        "\"fc.weight.max_exp_avg_sq\":{\"shape\":[2,3],\"data_offsets\":[100,124],\"dtype\":"
        "\"F32\"},"
        "\"fc.bias.exp_avg\":{\"shape\":[3],\"data_offsets\":[124,148],\"dtype\":\"F64\"},"
        "\"fc.bias.exp_avg_sq\":{\"shape\":[3],\"data_offsets\":[148,172],\"dtype\":\"F64\"},"
        "\"fc.bias.max_exp_avg_sq\":{\"shape\":[3],\"data_offsets\":[172,196],\"dtype\":"
        "\"F64\"}}";
    size_t len, wlen = strlen(want);
    unsigned char *file = read_all(file_path, &len);
    size_t hlen = (wlen + 7) / 8 * 8;
    assert_int_equal(file[0] | file[1] << 8, hlen);
    assert_memory_equal(file + 8, want, wlen);
    for (size_t k = wlen; k < hlen; k++)
        assert_int_equal(file[8 + k], ' ');
    assert_int_equal(len, 8 + hlen + 196);
    free(file);
    tg_optim_free(opt);

    tg_param *latin1;
    assert_status(tg_param_new(f->ctx, "caf\xe9", TG_F32, 0, NULL, &latin1), TG_OK);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 1, &latin1, NULL), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "parameter 0 is not valid UTF-8");
    tg_param_free(latin1);
    for (int i = 0; i < 3; i++)
        tg_param_free(p[i]);
}

static void optimiser_state_names(void **state)
{
    fixture *f = *state;
    model a;
    tg_optim *opt;
    model_make(f->ctx, &a, "fc1.", 1);
    assert_status(adam_amsgrad(f->ctx, 3, a.p, &opt), TG_OK);
    optim_steps(f->tp, opt, 10);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 3, a.p, opt), TG_OK);
    size_t len;
    unsigned char *file = read_all(file_path, &len);
    json_t *h = json_loadb((const char *)file + 8, len - 8, JSON_DISABLE_EOF_CHECK, NULL);
    assert_non_null(h);
    json_t *meta = json_object_get(h, "__metadata__");
    assert_string_equal(json_string_value(json_object_get(meta, "optim_steps")), "10");
    const char *names[] = {"fc1.w.exp_avg", "fc1.w.exp_avg_sq", "fc1.w.max_exp_avg_sq",
                           "fc1.b.exp_avg", "fc1.s.max_exp_avg_sq"};
    for (int i = 0; i < 5; i++)
        if (!json_object_get(h, names[i]))
            fail_msg("no %s in the header", names[i]);
    assert_int_equal(json_object_size(h), 1 + 3 + 9);
    json_decref(h);
    free(file);

    /* A file without optimiser state, or another optimiser's: TG_NOT_FOUND, nothing changed. */
    model b;
    tg_optim *sgd;
    model_make(f->ctx, &b, "other.", 2);
    assert_status(sgd_momentum(f->ctx, 3, b.p, &sgd), TG_OK);
    optim_steps(f->tp, sgd, 1);
    char other[160];
    tmp_path(other, sizeof other, "other.safetensors");
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "fc1.%c", "wbs"[i]);
        assert_status(tg_param_rename(b.p[i], name), TG_OK);
    }
    tg_tape_reset(f->tp);
    size_t bytes;
    unsigned char *snap = snapshot(a.p, 3, &bytes);
    void *buf0;
    assert_status(tg_optim_state_info(opt, 0, NULL, NULL, &buf0), TG_OK);
    float before = ((float *)buf0)[0];
    assert_status(tg_checkpoint_save(f->ctx, other, 3, b.p, sgd), TG_OK);
    assert_status(tg_checkpoint_load(f->ctx, other, 3, a.p, opt), TG_NOT_FOUND);
    assert_contains(tg_ctx_error(f->ctx), "fc1.w.exp_avg");
    assert_unchanged(a.p, 3, snap, bytes);
    assert_true(((float *)buf0)[0] == before);
    assert_int_equal(tg_optim_steps(opt), 10);
    assert_status(tg_checkpoint_save(f->ctx, other, 3, b.p, NULL), TG_OK);
    assert_status(tg_checkpoint_load(f->ctx, other, 3, a.p, opt), TG_NOT_FOUND);
    /* ... but its parameters load without the optimiser. */
    assert_status(tg_checkpoint_load(f->ctx, other, 3, a.p, NULL), TG_OK);
    free(snap);
    tg_optim_free(sgd);
    model_free(&b);
    tg_optim_free(opt);
    model_free(&a);
}

/* ---- saving: names, atomicity ------------------------------------------------------------ */

static void save_rejects_bad_names(void **state)
{
    fixture *f = *state;
    model a;
    model_make(f->ctx, &a, "", 1);
    tg_param *u;
    assert_status(tg_param_new(f->ctx, NULL, TG_F32, 1, (int64_t[]){2}, &u), TG_OK);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 2, (tg_param *[]){a.p[0], u}, NULL),
                  TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "unnamed");
    assert_status(tg_param_rename(u, "w"), TG_OK);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 2, (tg_param *[]){a.p[0], u}, NULL),
                  TG_EXISTS);
    assert_contains(tg_ctx_error(f->ctx), "\"w\"");
    assert_status(tg_checkpoint_save(f->ctx, file_path, 2, (tg_param *[]){a.p[0], a.p[0]}, NULL),
                  TG_EXISTS);
    assert_status(tg_param_rename(u, "__metadata__"), TG_OK);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 1, &u, NULL), TG_INVALID);
    /* A parameter whose name collides with an optimiser buffer's. */
    tg_optim *opt;
    assert_status(adam_amsgrad(f->ctx, 1, a.p, &opt), TG_OK);
    assert_status(tg_param_rename(u, "w.exp_avg"), TG_OK);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 2, (tg_param *[]){a.p[0], u}, opt),
                  TG_EXISTS);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 2, (tg_param *[]){a.p[0], NULL}, NULL),
                  TG_INVALID);
    assert_status(tg_checkpoint_save(f->ctx, NULL, 1, a.p, NULL), TG_INVALID);
    assert_status(tg_checkpoint_save(f->ctx, "", 1, a.p, NULL), TG_INVALID);
    assert_status(tg_checkpoint_save(NULL, file_path, 1, a.p, NULL), TG_INVALID);
    assert_status(tg_checkpoint_load(f->ctx, file_path, 2, (tg_param *[]){a.p[0], a.p[0]}, NULL),
                  TG_EXISTS);
    /* None of these wrote anything. */
    assert_int_equal(access(file_path, F_OK), -1);
    assert_int_equal(temp_files(), 0);
    tg_optim_free(opt);
    tg_param_free(u);
    model_free(&a);
}

/* A pid that existed and is gone: a child that exits at once, reaped. */
static pid_t dead_pid(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return pid;
}

/* A save killed between creating and renaming its temporary file left it forever: the next save
 * of that path removes temporary files whose process is gone, and only those. */
static void save_removes_stale_temp_files(void **state)
{
    fixture *f = *state;
    model a;
    model_make(f->ctx, &a, "", 1);
    char dead[192], live[192], other[192], foreign[192];
    snprintf(dead, sizeof dead, "%s.tmp.%ld.0badf00d", file_path, (long)dead_pid());
    snprintf(live, sizeof live, "%s.tmp.%ld.12345678", file_path, (long)getppid());
    snprintf(other, sizeof other, "%s.tmp.notapid", file_path);
    tmp_path(foreign, sizeof foreign, "other.safetensors.tmp.1.12345678");
    const char *leftovers[] = {dead, live, other, foreign};
    for (int i = 0; i < 4; i++)
        write_all(leftovers[i], "leftover", 8);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 3, a.p, NULL), TG_OK);
    assert_int_equal(access(dead, F_OK), -1);
    for (int i = 1; i < 4; i++)
        assert_int_equal(access(leftovers[i], F_OK), 0); /* alive, not ours, not this path's */
    assert_int_equal(temp_files(), 3);
    for (int i = 1; i < 4; i++)
        assert_int_equal(unlink(leftovers[i]), 0);
    /* A normal save leaves no temporary file. */
    assert_status(tg_checkpoint_save(f->ctx, file_path, 3, a.p, NULL), TG_OK);
    assert_int_equal(temp_files(), 0);
    model_free(&a);
}

static void save_is_atomic(void **state)
{
    fixture *f = *state;
    model a;
    model_make(f->ctx, &a, "", 1);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 3, a.p, NULL), TG_OK);
    size_t old_len;
    unsigned char *old = read_all(file_path, &old_len);

    /* A write that fails midway (the file size limit): TG_IO, old file intact, no temp file. */
    tg_param *big;
    assert_status(tg_param_new(f->ctx, "big", TG_F64, 1, (int64_t[]){100000}, &big), TG_OK);
    struct rlimit saved, small;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    small = saved;
    small.rlim_cur = 64 * 1024;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    tg_status st =
        tg_checkpoint_save(f->ctx, file_path, 4, (tg_param *[]){a.p[0], a.p[1], a.p[2], big}, NULL);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, prev);
    assert_status(st, TG_IO);
    assert_contains(tg_ctx_error(f->ctx), file_path);
    assert_int_equal(temp_files(), 0);
    size_t len;
    unsigned char *now = read_all(file_path, &len);
    assert_int_equal(len, old_len);
    assert_memory_equal(now, old, len);
    free(now);

    /* The rename fails (the target is a directory): the directory stays, no temp file. */
    char sub[160];
    tmp_path(sub, sizeof sub, "sub");
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_status(tg_checkpoint_save(f->ctx, sub, 3, a.p, NULL), TG_IO);
    assert_contains(tg_ctx_error(f->ctx), "rename");
    struct stat sb;
    assert_int_equal(stat(sub, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(temp_files(), 0);
    assert_int_equal(rmdir(sub), 0);
    /* A directory that does not exist: TG_IO naming the path. */
    tmp_path(sub, sizeof sub, "missing/model.safetensors");
    assert_status(tg_checkpoint_save(f->ctx, sub, 3, a.p, NULL), TG_IO);
    assert_contains(tg_ctx_error(f->ctx), sub);
    /* Loading a directory or a missing file: TG_IO. */
    assert_status(tg_checkpoint_load(f->ctx, tmp_dir, 3, a.p, NULL), TG_IO);
    assert_status(tg_checkpoint_load(f->ctx, sub, 3, a.p, NULL), TG_IO);

    /* Every allocation failure of a save: TG_NOMEM, file intact, nothing leaked. */
    bool saved_ok = false;
    for (long k = 1; !saved_ok && k < 200; k++) {
        counter c = {0, 0, 0};
        tg_ctx *ctx;
        assert_status(
            tg_ctx_new(&ctx, &(tg_ctx_options){.alloc = counting_alloc, .alloc_user = &c}), TG_OK);
        model m;
        tg_optim *opt;
        model_make(ctx, &m, "", 3);
        assert_status(adam_amsgrad(ctx, 3, m.p, &opt), TG_OK);
        long long base = c.live;
        c.fail_at = c.calls + k;
        st = tg_checkpoint_save(ctx, file_path, 3, m.p, opt);
        c.fail_at = 0;
        if (st == TG_OK) {
            saved_ok = true;
        } else {
            assert_status(st, TG_NOMEM);
            now = read_all(file_path, &len);
            assert_int_equal(len, old_len);
            assert_memory_equal(now, old, len);
            free(now);
        }
        assert_int_equal(c.live, base);
        assert_int_equal(temp_files(), 0);
        tg_optim_free(opt);
        model_free(&m);
        tg_ctx_free(ctx);
        assert_int_equal(c.live, 0);
    }
    assert_true(saved_ok);
    free(old);
    tg_param_free(big);
    model_free(&a);
}

/* ---- loading: malformed files and other models ------------------------------------------- */

static void load_rejects_truncated_files(void **state)
{
    fixture *f = *state;
    model a, b;
    model_make(f->ctx, &a, "", 1);
    model_make(f->ctx, &b, "x.", 2);
    tg_optim *opt;
    assert_status(adam_amsgrad(f->ctx, 3, a.p, &opt), TG_OK);
    optim_steps(f->tp, opt, 2);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 3, a.p, opt), TG_OK);
    size_t len;
    unsigned char *full = read_all(file_path, &len);
    char cut_path[160];
    tmp_path(cut_path, sizeof cut_path, "cut.safetensors");
    /* Load into a's parameters changed (so a load that wrongly happened would show). */
    for (int i = 0; i < 3; i++)
        assert_status(tg_param_fill(a.p[i], 0.5), TG_OK);
    size_t bytes;
    unsigned char *snap = snapshot(a.p, 3, &bytes);
    for (size_t cut = 0; cut < len; cut++) {
        write_all(cut_path, full, cut);
        tg_status st = tg_checkpoint_load(f->ctx, cut_path, 3, a.p, opt);
        if (st != TG_FORMAT)
            fail_msg("cut at %zu of %zu: %s (%s)", cut, len, tg_status_name(st),
                     tg_ctx_error(f->ctx));
        assert_contains(tg_ctx_error(f->ctx), cut_path);
        assert_unchanged(a.p, 3, snap, bytes);
        assert_int_equal(tg_optim_steps(opt), 2);
    }
    write_all(cut_path, full, 5);
    assert_status(tg_checkpoint_load(f->ctx, cut_path, 3, a.p, opt), TG_FORMAT);
    assert_contains(tg_ctx_error(f->ctx), "too short");
    write_all(cut_path, full, len);
    assert_status(tg_checkpoint_load(f->ctx, cut_path, 3, a.p, opt), TG_OK);
    free(snap);
    free(full);
    tg_optim_free(opt);
    model_free(&b);
    model_free(&a);
}

typedef struct bad_case {
    const char *json; /* NULL: raw bytes */
    size_t data;      /* bytes of data section */
    tg_status status;
    const char *needle;
} bad_case;

/* Step counts above 2^53 - 1 (INT64_MAX overflowed at the next step) are refused, changing
 * nothing; the largest one round-trips. */
static void load_rejects_step_counts_past_the_limit(tg_ctx *ctx, const char *path, tg_param *w,
                                                    tg_optim *opt)
{
    const char *counts[] = {"9007199254740992", "9223372036854775807"};
    const float data[2] = {7, 8};
    char json[320];
    for (int i = 0; i < 2; i++) {
        snprintf(json, sizeof json,
                 "{\"__metadata__\": {\"optim_steps\": \"%s\"}, \"w\": {\"dtype\": \"F32\", "
                 "\"shape\": [2], \"data_offsets\": [0, 8]}, \"w.momentum_buffer\": {\"dtype\": "
                 "\"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                 counts[i]);
        write_st(path, json, data, 8);
        int64_t steps = tg_optim_steps(opt);
        assert_status(tg_checkpoint_load(ctx, path, 1, &w, opt), TG_FORMAT);
        assert_contains(tg_ctx_error(ctx), "is not an integer in [0, 2^53 - 1]");
        assert_int_equal(tg_optim_steps(opt), steps);
        assert_true(((const float *)tg_param_data(w))[0] != 7);
    }
    tg_optim_set_steps(opt, TG_OPTIM_MAX_STEPS);
    assert_status(tg_checkpoint_save(ctx, path, 1, &w, opt), TG_OK);
    tg_optim_set_steps(opt, 0);
    assert_status(tg_checkpoint_load(ctx, path, 1, &w, opt), TG_OK);
    assert_int_equal(tg_optim_steps(opt), TG_OPTIM_MAX_STEPS);
}

static void load_rejects_malformed_files(void **state)
{
    fixture *f = *state;
    tg_param *w;
    assert_status(tg_param_new(f->ctx, "w", TG_F32, 1, (int64_t[]){2}, &w), TG_OK);
    assert_status(tg_param_set(w, (float[]){1.5f, -2.5f}), TG_OK);
    char path[160];
    tmp_path(path, sizeof path, "bad.safetensors");
    static const bad_case cases[] = {
        {"not json", 8, TG_FORMAT, "not valid JSON"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]", 8, TG_FORMAT,
         "not valid JSON"},
        {"[1, 2]", 8, TG_FORMAT, "not a JSON object"},
        {"\"w\"", 8, TG_FORMAT, "not a JSON object"},
        {"{} trailing", 8, TG_FORMAT, "after its JSON"},
        {"{\"w\": 3}", 8, TG_FORMAT, "not a JSON object"},
        {"{\"w\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8, TG_FORMAT, "no \"dtype\""},
        {"{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}", 8, TG_FORMAT, "no \"shape\""},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8, TG_FORMAT, "no \"data_offsets\""},
        {"{\"w\": {\"dtype\": \"F33\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, TG_FORMAT,
         "unknown dtype \"F33\""},
        {"{\"w\": {\"dtype\": 32, \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, TG_FORMAT,
         "unknown dtype"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": 2, \"data_offsets\": [0, 8]}}", 8, TG_FORMAT,
         "not an array"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8, TG_FORMAT,
         "shape entry 0"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 8]}}", 8, TG_FORMAT,
         "shape entry 0"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}", 8,
         TG_FORMAT, "shape entry 0"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1e300], \"data_offsets\": [0, 8]}}", 8,
         TG_FORMAT, "shape entry 0"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], "
         "\"data_offsets\": [0, 8]}}",
         8, TG_FORMAT, "overflows"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 12]}}", 12, TG_FORMAT,
         "span 12 bytes"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 8, TG_FORMAT,
         "span 4 bytes"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}", 8, TG_FORMAT,
         "outside"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", 8, TG_FORMAT,
         "outside"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", 8, TG_FORMAT,
         "pair"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, -8]}}", 8, TG_FORMAT,
         "pair"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
         "\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
         8, TG_FORMAT, "appears twice"},
        {"{\"__metadata__\": {\"a\": 1}, \"w\": {\"dtype\": \"F32\", \"shape\": [2], "
         "\"data_offsets\": [0, 8]}}",
         8, TG_FORMAT, "not a string"},
        {"{\"__metadata__\": [], \"w\": {\"dtype\": \"F32\", \"shape\": [2], "
         "\"data_offsets\": [0, 8]}}",
         8, TG_FORMAT, "not an object"},
        /* Another tensor broken: rejected too, though nobody asked for it. */
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
         "\"v\": {\"dtype\": \"F16\", \"shape\": [3], \"data_offsets\": [0, 8]}}",
         8, TG_FORMAT, "\"v\""},
        /* Well formed, but not what the parameter is. */
        {"{\"w\": {\"dtype\": \"F64\", \"shape\": [2], \"data_offsets\": [0, 16]}}", 16, TG_DTYPE,
         "is F64, the parameter is f32"},
        {"{\"w\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 8, TG_DTYPE,
         "is BF16"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1, 2], \"data_offsets\": [0, 8]}}", 8, TG_SHAPE,
         "has shape [1,2], the parameter [2]"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}}", 8, TG_SHAPE,
         "has shape []"},
        {"{\"W\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, TG_NOT_FOUND,
         "no tensor \"w\""},
        {"{}", 0, TG_NOT_FOUND, "no tensor \"w\""},
    };
    unsigned char data[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                              0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_st(path, cases[i].json, data, cases[i].data);
        tg_status st = tg_checkpoint_load(f->ctx, path, 1, &w, NULL);
        if (st != cases[i].status || !strstr(tg_ctx_error(f->ctx), cases[i].needle)
            || !strstr(tg_ctx_error(f->ctx), path))
            fail_msg("case %zu (%s): %s \"%s\", expected %s \"%s\"", i, cases[i].json,
                     tg_status_name(st), tg_ctx_error(f->ctx), tg_status_name(cases[i].status),
                     cases[i].needle);
        const float *v = tg_param_data(w);
        assert_true(v[0] == 1.5f && v[1] == -2.5f);
    }

    /* Header lengths: past the end of the file, absurdly large, and a file of size 0. */
    unsigned char raw[24] = {0};
    raw[0] = 17; /* 17 bytes of header in a 24-byte file */
    write_all(path, raw, sizeof raw);
    assert_status(tg_checkpoint_load(f->ctx, path, 1, &w, NULL), TG_FORMAT);
    assert_contains(tg_ctx_error(f->ctx), "past the end");
    raw[0] = 0;
    raw[4] = 1; /* 2^32 */
    write_all(path, raw, sizeof raw);
    assert_status(tg_checkpoint_load(f->ctx, path, 1, &w, NULL), TG_FORMAT);
    assert_contains(tg_ctx_error(f->ctx), "too large");
    memset(raw, 0xff, 8);
    write_all(path, raw, sizeof raw);
    assert_status(tg_checkpoint_load(f->ctx, path, 1, &w, NULL), TG_FORMAT);
    memset(raw, 0, 8);
    write_all(path, raw, sizeof raw); /* an empty header */
    assert_status(tg_checkpoint_load(f->ctx, path, 1, &w, NULL), TG_FORMAT);
    write_all(path, raw, 0);
    assert_status(tg_checkpoint_load(f->ctx, path, 1, &w, NULL), TG_FORMAT);
    assert_contains(tg_ctx_error(f->ctx), "0 bytes");
    /* A step count that is not a count. */
    tg_optim *opt;
    assert_status(sgd_momentum(f->ctx, 1, &w, &opt), TG_OK);
    write_st(path,
             "{\"__metadata__\": {\"optim_steps\": \"-3\"}, \"w\": {\"dtype\": \"F32\", \"shape\": "
             "[2], \"data_offsets\": [0, 8]}, \"w.momentum_buffer\": {\"dtype\": \"F32\", "
             "\"shape\": [2], \"data_offsets\": [0, 8]}}",
             data, 8);
    assert_status(tg_checkpoint_load(f->ctx, path, 1, &w, opt), TG_FORMAT);
    assert_contains(tg_ctx_error(f->ctx), "step count \"-3\"");
    const float *v = tg_param_data(w);
    assert_true(v[0] == 1.5f && v[1] == -2.5f);
    load_rejects_step_counts_past_the_limit(f->ctx, path, w, opt);
    tg_optim_free(opt);
    tg_param_free(w);
}

/* A file from elsewhere: other tensors and dtypes are ignored; overlapping ranges are fine. */
static void load_ignores_extra_tensors(void **state)
{
    fixture *f = *state;
    tg_param *w, *b;
    assert_status(tg_param_new(f->ctx, "0.weight", TG_F32, 2, (int64_t[]){1, 2}, &w), TG_OK);
    assert_status(tg_param_new(f->ctx, "0.bias", TG_F64, 1, (int64_t[]){1}, &b), TG_OK);
    char path[160];
    tmp_path(path, sizeof path, "torch.safetensors");
    unsigned char data[32];
    float wv[2] = {0.25f, -4.0f};
    double bv = 3.125;
    memcpy(data, wv, 8);
    memcpy(data + 8, &bv, 8);
    int64_t count = 7;
    memcpy(data + 16, &count, 8);
    memset(data + 24, 0, 8);
    write_st(path,
             "{\"__metadata__\": {\"format\": \"pt\"}, "
             "\"1.num_batches_tracked\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": "
             "[16, 24]}, "
             "\"0.bias\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [8, 16]}, "
             "\"1.half\": {\"dtype\": \"F16\", \"shape\": [2, 2], \"data_offsets\": [24, 32]}, "
             "\"0.weight\": {\"dtype\": \"F32\", \"shape\": [1, 2], \"data_offsets\": [0, 8]}, "
             "\"alias\": {\"dtype\": \"U8\", \"shape\": [16], \"data_offsets\": [0, 16]}, "
             "\"empty\": {\"dtype\": \"F32\", \"shape\": [0, 3], \"data_offsets\": [32, 32]}}",
             data, sizeof data);
    assert_status(tg_checkpoint_load(f->ctx, path, 2, (tg_param *[]){w, b}, NULL), TG_OK);
    const float *w2 = tg_param_data(w);
    assert_true(w2[0] == 0.25f && w2[1] == -4.0f);
    assert_true(*(const double *)tg_param_data(b) == 3.125);
    tg_param_free(w);
    tg_param_free(b);
}

/* A checkpoint of a different model: a missing name or another shape, and nothing changes even
 * though the first parameters matched. */
static void load_rejects_other_models(void **state)
{
    fixture *f = *state;
    model a;
    model_make(f->ctx, &a, "", 1);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 3, a.p, NULL), TG_OK);
    tg_param *w, *b, *extra;
    assert_status(tg_param_new(f->ctx, "w", TG_F32, 2, (int64_t[]){2, 3}, &w), TG_OK);
    assert_status(tg_param_new(f->ctx, "b", TG_F64, 1, (int64_t[]){4}, &b), TG_OK);
    assert_status(tg_param_new(f->ctx, "extra", TG_F32, 1, (int64_t[]){4}, &extra), TG_OK);
    size_t bytes;
    unsigned char *snap = snapshot((tg_param *[]){w, b, extra}, 3, &bytes);
    assert_status(tg_checkpoint_load(f->ctx, file_path, 2, (tg_param *[]){w, extra}, NULL),
                  TG_NOT_FOUND);
    assert_contains(tg_ctx_error(f->ctx), "no tensor \"extra\" for the parameter");
    assert_contains(tg_ctx_error(f->ctx), file_path);
    assert_status(tg_checkpoint_load(f->ctx, file_path, 2, (tg_param *[]){w, b}, NULL), TG_SHAPE);
    assert_contains(tg_ctx_error(f->ctx), "\"b\" has shape [3], the parameter [4]");
    assert_unchanged((tg_param *[]){w, b, extra}, 3, snap, bytes);
    /* The same names in another dtype. */
    tg_param *b32;
    assert_status(tg_param_new(f->ctx, "b", TG_F32, 1, (int64_t[]){3}, &b32), TG_OK);
    assert_status(tg_checkpoint_load(f->ctx, file_path, 2, (tg_param *[]){w, b32}, NULL), TG_DTYPE);
    assert_unchanged((tg_param *[]){w, b, extra}, 3, snap, bytes);
    /* The matching part alone loads. */
    assert_status(tg_checkpoint_load(f->ctx, file_path, 1, &w, NULL), TG_OK);
    assert_memory_equal(tg_param_data(w), tg_param_data(a.p[0]), 24);
    free(snap);
    tg_param_free(b32);
    tg_param_free(w);
    tg_param_free(b);
    tg_param_free(extra);
    model_free(&a);
}

/* Every allocation failure of a load: TG_NOMEM, nothing changed, nothing leaked. */
static void load_allocation_failures(void **state)
{
    fixture *f = *state;
    model a;
    tg_optim *oa;
    model_make(f->ctx, &a, "", 1);
    assert_status(adam_amsgrad(f->ctx, 3, a.p, &oa), TG_OK);
    optim_steps(f->tp, oa, 2);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 3, a.p, oa), TG_OK);
    bool loaded = false;
    for (long k = 1; !loaded && k < 200; k++) {
        counter c = {0, 0, 0};
        tg_ctx *ctx;
        assert_status(
            tg_ctx_new(&ctx, &(tg_ctx_options){.alloc = counting_alloc, .alloc_user = &c}), TG_OK);
        model m;
        tg_optim *opt;
        model_make(ctx, &m, "", 3);
        assert_status(adam_amsgrad(ctx, 3, m.p, &opt), TG_OK);
        size_t bytes;
        unsigned char *snap = snapshot(m.p, 3, &bytes);
        long long base = c.live;
        c.fail_at = c.calls + k;
        tg_status st = tg_checkpoint_load(ctx, file_path, 3, m.p, opt);
        c.fail_at = 0;
        if (st == TG_OK) {
            loaded = true;
            assert_int_equal(tg_optim_steps(opt), 2);
        } else {
            assert_status(st, TG_NOMEM);
            assert_contains(tg_ctx_error(ctx), "out of memory");
            assert_unchanged(m.p, 3, snap, bytes);
            assert_int_equal(tg_optim_steps(opt), 0);
        }
        assert_int_equal(c.live, base);
        free(snap);
        tg_optim_free(opt);
        model_free(&m);
        tg_ctx_free(ctx);
        assert_int_equal(c.live, 0);
    }
    assert_true(loaded);
    tg_optim_free(oa);
    model_free(&a);
}

/* ---- threads ----------------------------------------------------------------------------- */

typedef struct load_job {
    const char *good, *bad; /* a checkpoint of "w" f32 [2], and a header that is not JSON */
    int failures;
} load_job;

/* 50 loads of each file on a context of the thread's own; counts the results that are wrong. */
static void *load_both(void *arg)
{
    load_job *job = arg;
    tg_ctx *ctx;
    tg_param *w;
    if (tg_ctx_new(&ctx, NULL) != TG_OK) {
        job->failures++;
        return NULL;
    }
    if (tg_param_new(ctx, "w", TG_F32, 1, (int64_t[]){2}, &w) != TG_OK)
        job->failures++;
    for (int k = 0; k < 50 && !job->failures; k++) {
        job->failures += tg_checkpoint_load(ctx, job->good, 1, &w, NULL) != TG_OK;
        job->failures += tg_checkpoint_load(ctx, job->bad, 1, &w, NULL) != TG_FORMAT
                         || !strstr(tg_ctx_error(ctx), "not valid JSON");
    }
    tg_ctx_free(ctx);
    return NULL;
}

/* Loads on four threads at once, half of them failing to parse. cJSON wrote its error position
 * to a process-global on every parse (a data race that -fsanitize=thread reports in an
 * instrumented cJSON); jansson reports errors in a json_error_t on the loader's stack. */
static void concurrent_loads(void **state)
{
    fixture *f = *state;
    char bad[160];
    tmp_path(bad, sizeof bad, "bad.safetensors");
    write_st(bad, "{\"w\": {\"dtype\": \"F32\",,}}", NULL, 0);
    tg_param *w;
    assert_status(tg_param_new(f->ctx, "w", TG_F32, 1, (int64_t[]){2}, &w), TG_OK);
    assert_status(tg_checkpoint_save(f->ctx, file_path, 1, &w, NULL), TG_OK);
    pthread_t t[4];
    load_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (load_job){file_path, bad, 0};
        assert_int_equal(pthread_create(&t[i], NULL, load_both, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(jobs[i].failures, 0);
    }
    tg_param_free(w);
}

#define DIR_TEST(fn) cmocka_unit_test_setup_teardown(fn, dir_fixture_setup, tmpdir_fixture_teardown)

/* The temporary directory and the fixture, and file_path in that directory. */
static int dir_fixture_setup(void **state)
{
    if (tmpdir_fixture_setup(state))
        return -1;
    tmp_path(file_path, sizeof file_path, "model.safetensors");
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        DIR_TEST(round_trip_parameters),         DIR_TEST(round_trip_optimiser),
        DIR_TEST(round_trip_module_state),       DIR_TEST(header_text_is_exact),
        DIR_TEST(optimiser_state_names),         DIR_TEST(save_rejects_bad_names),
        DIR_TEST(save_removes_stale_temp_files), DIR_TEST(save_is_atomic),
        DIR_TEST(load_rejects_truncated_files),  DIR_TEST(load_rejects_malformed_files),
        DIR_TEST(load_ignores_extra_tensors),    DIR_TEST(load_rejects_other_models),
        DIR_TEST(load_allocation_failures),      DIR_TEST(concurrent_loads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
