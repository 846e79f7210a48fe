/* test_inspect.c — looking at a tape: naming scopes in messages (modules push their names, a
 * backward rule runs in its node's scope), the node introspection calls, and the DOT export's
 * structure (nodes, edges, clusters, parameters, backward nodes, escaping, any registered op). */
#include "common.h"

#include <ctype.h>

/* ---- scopes in messages ------------------------------------------------------------------- */

/* A Sequential whose third layer does not fit: the message names the layer. */
static void module_names_scope_messages(void **state)
{
    fixture *f = *state;
    tg_module *layers[3], *net;
    assert_status(tg_linear_new(f->ctx, "a", 4, 3, NULL, &layers[0]), TG_OK);
    assert_status(tg_activation_new(f->ctx, TG_ACT_RELU, &layers[1]), TG_OK);
    assert_status(tg_linear_new(f->ctx, "b", 5, 2, NULL, &layers[2]), TG_OK);
    assert_status(tg_sequential_new(f->ctx, "net", 3, layers, &net), TG_OK);
    tg_tensor x = tg_ones(f->tp, TG_F32, 2, (int64_t[]){2, 4});
    tg_tensor y = tg_forward(net, x);
    assert_false(tg_ok(y));
    const char *msg = tg_tape_error(f->tp);
    assert_true(strncmp(msg, "net.2: matmul: shapes do not match", 34) == 0);
    assert_contains(msg, "f32[2,3], f32[2,5]");
    char node[32];
    snprintf(node, sizeof node, "node %zu)", tg_tape_node_count(f->tp) + 1);
    assert_contains(msg, node);
    /* Scopes closed behind the failure: the tape is back at the top. */
    assert_string_equal(tg_tape_scope(f->tp), "");
    assert_status(tg_tape_pop_scope(f->tp), TG_SHAPE); /* none open: the first error stays */

    /* On a good input, each node carries its module's name; the layers' own nodes the child's. */
    tg_tape_reset(f->tp);
    tg_module *ok[2], *net2;
    assert_status(tg_linear_new(f->ctx, "c", 4, 3, NULL, &ok[0]), TG_OK);
    assert_status(tg_activation_new(f->ctx, TG_ACT_TANH, &ok[1]), TG_OK);
    assert_status(tg_sequential_new(f->ctx, "enc", 2, ok, &net2), TG_OK);
    x = tg_ones(f->tp, TG_F32, 2, (int64_t[]){2, 4});
    y = tg_forward(net2, x);
    assert_tape_ok(f->tp);
    assert_string_equal(tg_tensor_op_name(y), "tanh");
    assert_string_equal(tg_tensor_scope(y), "enc.1");
    tg_tensor lin = tg_tensor_input(y, 0);
    assert_string_equal(tg_tensor_op_name(lin), "add");
    assert_string_equal(tg_tensor_scope(lin), "enc.0");
    assert_string_equal(tg_tensor_scope(x), "");
    tg_module_free(net);
    tg_module_free(net2);
}

static const tg_op_def opaque_def; /* below: an op without a backward rule */

static void scopes_by_hand(void **state)
{
    fixture *f = *state;
    assert_status(tg_tape_pop_scope(f->tp), TG_INVALID);
    assert_contains(tg_tape_error(f->tp), "tg_tape_pop_scope: no scope is open");
    tg_tape_reset(f->tp);
    assert_status(tg_tape_push_scope(f->tp, "encoder"), TG_OK);
    assert_status(tg_tape_push_scope(f->tp, "encoder.attn"), TG_OK);
    assert_string_equal(tg_tape_scope(f->tp), "encoder.attn");
    tg_tensor a = VEC64(f->tp, 1, 2);
    assert_status(tg_tape_pop_scope(f->tp), TG_OK);
    tg_tensor b = VEC64(f->tp, 3, 4);
    assert_string_equal(tg_tape_scope(f->tp), "encoder");
    assert_status(tg_tape_pop_scope(f->tp), TG_OK);
    assert_string_equal(tg_tensor_scope(a), "encoder.attn");
    assert_string_equal(tg_tensor_scope(b), "encoder");
    assert_string_equal(tg_tape_scope(f->tp), "");
    assert_tape_ok(f->tp);

    /* A message recorded inside a scope starts with its name; a NULL name is an error. */
    tg_tape_push_scope(f->tp, "blocks.2.attn");
    assert_false(tg_ok(tg_matmul(tg_reshape(a, 2, (int64_t[]){1, 2}), b)));
    assert_true(strncmp(tg_tape_error(f->tp), "blocks.2.attn: matmul: ", 23) == 0);
    tg_tape_pop_scope(f->tp);
    tg_tape_reset(f->tp);
    assert_status(tg_tape_push_scope(f->tp, NULL), TG_INVALID);
    assert_contains(tg_tape_error(f->tp), "name is NULL");
    assert_status(tg_tape_pop_scope(f->tp), TG_INVALID); /* the failed push is popped */
    /* tg_tape_reset closes every scope. */
    tg_tape_reset(f->tp);
    tg_tape_push_scope(f->tp, "left open");
    tg_tape_reset(f->tp);
    assert_string_equal(tg_tape_scope(f->tp), "");
    assert_string_equal(tg_tensor_scope(VEC64(f->tp, 1)), "");

    /* A backward rule runs in the scope of its node: its failure and its nodes say so. */
    tg_tape_reset(f->tp);
    const tg_op *opaque;
    assert_status(tg_op_register(f->ctx, &opaque_def, &opaque), TG_OK);
    tg_tensor x = tg_requires_grad(VEC64(f->tp, 1, 2));
    tg_tape_push_scope(f->tp, "head");
    tg_tensor y = tg_op_apply(opaque, 1, &x, NULL);
    tg_tape_pop_scope(f->tp);
    assert_status(tg_backward(tg_sum_all(y)), TG_NO_BACKWARD);
    assert_true(strncmp(tg_tape_error(f->tp), "head: opaque: op has no backward rule", 37) == 0);
    tg_tape_reset(f->tp);
    x = tg_requires_grad(VEC64(f->tp, 1, 2));
    tg_tape_push_scope(f->tp, "head");
    y = tg_sum_all(tg_tanh(x));
    tg_tape_pop_scope(f->tp);
    tg_tensor g;
    assert_status(tg_grad(1, &y, NULL, 1, &x, &g, TG_CREATE_GRAPH), TG_OK);
    assert_string_equal(tg_tensor_scope(g), "head");
    assert_string_equal(tg_tape_scope(f->tp), "");
}

/* ---- introspection ------------------------------------------------------------------------- */

static void nodes_by_number(void **state)
{
    fixture *f = *state;
    tg_param *w;
    assert_status(tg_param_new(f->ctx, "w", TG_F64, 1, (int64_t[]){2}, &w), TG_OK);
    tg_tensor x = VEC64(f->tp, 1, 2);
    tg_tensor wt = tg_param_tensor(f->tp, w);
    tg_tensor y = tg_mul(x, wt);
    assert_int_equal(tg_tensor_node(x), 1);
    assert_int_equal(tg_tensor_node(y), 3);
    assert_int_equal(tg_tensor_node(tg_tape_tensor(f->tp, 3)), 3);
    assert_string_equal(tg_tensor_op_name(tg_tape_tensor(f->tp, 2)), "parameter");
    assert_ptr_equal(tg_tensor_param(tg_tape_tensor(f->tp, 2)), w);
    assert_string_equal(tg_tensor_op_name(x), "leaf");
    assert_string_equal(tg_tensor_op_name(tg_s_tensor(tg_s_var(f->tp, 1))), "scalar");
    assert_int_equal(tg_tensor_input_count(y), 2);
    assert_int_equal(tg_tensor_node(tg_tensor_input(y, 1)), 2);
    assert_false(tg_ok(tg_tensor_input(y, 2)));
    assert_false(tg_ok(tg_tensor_input(y, -1)));
    assert_int_equal(tg_tensor_input_count(x), 0);
    /* No such node: none. The number a failed op's message gives was never recorded. */
    assert_false(tg_ok(tg_tape_tensor(f->tp, 0)));
    assert_false(tg_ok(tg_tape_tensor(f->tp, 99)));
    assert_false(tg_ok(tg_tape_tensor(NULL, 1)));
    assert_false(tg_ok(tg_mul(x, VEC64(f->tp, 1, 2, 3)))); /* the vector is node 5 */
    assert_contains(tg_tape_error(f->tp), "node 6)");
    assert_false(tg_ok(tg_tape_tensor(f->tp, 6)));
    /* Recorded without grad: no inputs; invalid handles read as nothing. */
    tg_tape_reset(f->tp);
    tg_tape_set_grad(f->tp, false);
    y = tg_exp(VEC64(f->tp, 1));
    assert_string_equal(tg_tensor_op_name(y), "exp");
    assert_int_equal(tg_tensor_input_count(y), 0);
    tg_tensor none = {0};
    assert_string_equal(tg_tensor_op_name(none), "");
    assert_string_equal(tg_tensor_scope(none), "");
    assert_int_equal(tg_tensor_node(none), 0);
    assert_null(tg_tensor_param(none));
    tg_tape_reset(f->tp);
    assert_false(tg_ok(tg_tape_tensor(f->tp, 1))); /* gone with the reset */
}

/* ---- DOT ---------------------------------------------------------------------------------- */

static tg_status opaque_check(tg_check *c)
{
    *c->out = *c->in[0];
    return TG_OK;
}
static void opaque_forward(const tg_kernel *k)
{
    memcpy(k->out->data, k->in[0]->data, (size_t)k->out->numel * tg_dtype_size(k->out->dtype));
}
static const tg_op_def opaque_def = {
    .name = "opaque", .ninputs = 1, .check = opaque_check, .forward = opaque_forward};

/* The DOT text of the tape, NUL-terminated (freed by the caller). */
static char *dot_text(tg_tape *tp, const tg_dot_options *o)
{
    FILE *fp = tmpfile();
    assert_non_null(fp);
    assert_status(tg_tape_write_dot(tp, fp, o), TG_OK);
    long n = ftell(fp);
    rewind(fp);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, fp), (size_t)n);
    s[n] = '\0';
    fclose(fp);
    return s;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Node declarations ("n<id> [") and edges ("n<a> -> n<b>"), by scanning the lines. */
static void tally(const char *s, int *nodes, int *edges)
{
    *nodes = *edges = 0;
    for (const char *line = s; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : 0) {
        while (*line == ' ')
            line++;
        unsigned a, b;
        char c;
        if (sscanf(line, "n%u -> n%u%c", &a, &b, &c) == 3)
            (*edges)++;
        else if (sscanf(line, "n%u [%c", &a, &c) == 2)
            (*nodes)++;
    }
}

/* Braces balance outside quoted strings (escapes honoured): the file is well nested. */
static void balanced(const char *s)
{
    int depth = 0;
    bool quoted = false;
    for (const char *p = s; *p; p++) {
        if (quoted && *p == '\\' && p[1])
            p++;
        else if (*p == '"')
            quoted = !quoted;
        else if (!quoted && *p == '{')
            depth++;
        else if (!quoted && *p == '}')
            assert_true(--depth >= 0);
    }
    assert_false(quoted);
    assert_int_equal(depth, 0);
}

static void dot_of_a_module_graph(void **state)
{
    fixture *f = *state;
    tg_module *layers[3], *net;
    assert_status(tg_linear_new(f->ctx, "fc1", 2, 4, NULL, &layers[0]), TG_OK);
    assert_status(tg_activation_new(f->ctx, TG_ACT_SIGMOID, &layers[1]), TG_OK);
    assert_status(tg_linear_new(f->ctx, "fc2", 4, 1, NULL, &layers[2]), TG_OK);
    assert_status(tg_sequential_new(f->ctx, "xor", 3, layers, &net), TG_OK);
    tg_tensor x = tg_ones(f->tp, TG_F32, 2, (int64_t[]){4, 2});
    tg_tensor y = tg_ones(f->tp, TG_F32, 2, (int64_t[]){4, 1});
    tg_tensor loss = tg_mse_loss(tg_forward(net, x), y, TG_REDUCE_MEAN);
    assert_tape_ok(f->tp);

    char *s = dot_text(f->tp, &(tg_dot_options){.title = "xor \"net\""});
    balanced(s);
    assert_true(strncmp(s, "digraph tape {", 14) == 0);
    assert_contains(s, "label=\"xor \\\"net\\\"\";");
    /* Every node linked for backward and every input of one is drawn, each edge once. */
    int want_nodes = 0, want_edges = 0;
    for (size_t i = 1; i <= tg_tape_node_count(f->tp); i++) {
        tg_tensor t = tg_tape_tensor(f->tp, i);
        want_edges += tg_tensor_input_count(t);
        bool used = tg_tensor_input_count(t) > 0;
        for (size_t j = i + 1; !used && j <= tg_tape_node_count(f->tp); j++) {
            tg_tensor u = tg_tape_tensor(f->tp, j);
            for (int k = 0; k < tg_tensor_input_count(u); k++)
                used |= tg_tensor_node(tg_tensor_input(u, k)) == i;
        }
        want_nodes += used;
    }
    int nodes, edges;
    tally(s, &nodes, &edges);
    assert_int_equal(nodes, want_nodes);
    assert_int_equal(edges, want_edges);
    char edge[64];
    snprintf(edge, sizeof edge, "n%zu -> n%zu;", tg_tensor_node(tg_tensor_input(loss, 0)),
             tg_tensor_node(loss));
    assert_contains(s, edge);
    /* Clusters: the Sequential and its three children, nested; parameters by name. */
    assert_int_equal(count(s, "subgraph cluster_"), 4);
    assert_contains(s, "label=\"xor\";");
    assert_contains(s, "label=\"xor.0\";");
    assert_contains(s, "label=\"xor.2\";");
    assert_true(strstr(s, "label=\"xor\";") < strstr(s, "label=\"xor.0\";"));
    assert_contains(s, "xor.0.weight\\nparameter f32[4,2]");
    assert_contains(s, "xor.2.bias\\nparameter f32[1]");
    assert_contains(s, "sigmoid\\nf32[4,4]");
    assert_int_equal(count(s, "#fde2e4"), 0); /* no backward yet */
    free(s);

    /* Without clusters: the same nodes, no subgraph. */
    s = dot_text(f->tp, &(tg_dot_options){.no_scopes = true});
    balanced(s);
    tally(s, &nodes, &edges);
    assert_int_equal(nodes, want_nodes);
    assert_int_equal(count(s, "subgraph"), 0);
    free(s);

    /* A recorded backward (TG_CREATE_GRAPH) adds shaded, linked gradient nodes; no_backward
     * leaves them out; a plain backward's nodes are unlinked, drawn only with all_nodes. */
    assert_status(tg_backward_ex(loss, (tg_tensor){0}, TG_CREATE_GRAPH), TG_OK);
    s = dot_text(f->tp, NULL);
    balanced(s);
    int with_nodes, with_edges;
    tally(s, &with_nodes, &with_edges);
    assert_true(with_nodes > nodes);
    assert_true(count(s, "#fde2e4") > 0);
    assert_int_equal(count(s, "#fde2e4"), with_nodes - nodes);
    free(s);
    s = dot_text(f->tp, &(tg_dot_options){.no_backward = true});
    tally(s, &with_nodes, &with_edges);
    assert_int_equal(with_nodes, nodes);
    assert_int_equal(count(s, "#fde2e4"), 0);
    free(s);
    tg_module_free(net);
}

static void dot_of_unlinked_custom_and_errored(void **state)
{
    fixture *f = *state;
    const tg_op *opaque;
    assert_status(tg_op_register(f->ctx, &opaque_def, &opaque), TG_OK);
    tg_param *w;
    assert_status(tg_param_new(f->ctx, "odd \"name\" \\ here", TG_F64, 0, NULL, &w), TG_OK);
    tg_tensor wt = tg_param_tensor(f->tp, w);
    tg_tensor a = tg_op_apply(opaque, 1, &wt, NULL); /* any registered op, by its name */
    tg_tape_set_grad(f->tp, false);
    tg_exp(a); /* unlinked */
    tg_tape_set_grad(f->tp, true);
    char *s = dot_text(f->tp, NULL);
    balanced(s);
    int nodes, edges;
    tally(s, &nodes, &edges);
    assert_int_equal(nodes, 2);
    assert_int_equal(edges, 1);
    assert_contains(s, "opaque\\nf64[]");
    assert_contains(s, "odd \\\"name\\\" \\\\ here\\nparameter f64[]");
    free(s);
    s = dot_text(f->tp, &(tg_dot_options){.all_nodes = true});
    tally(s, &nodes, &edges);
    assert_int_equal(nodes, 3);
    assert_int_equal(edges, 1);
    assert_contains(s, "exp\\nf64[]\\n#3\", shape=box, style=\"dotted,filled\"");
    free(s);
    /* A tape in error still draws, with its message as the label. */
    assert_false(tg_ok(tg_matmul(a, a)));
    s = dot_text(f->tp, NULL);
    balanced(s);
    assert_contains(s, "label=\"matmul: ");
    free(s);
    /* Bad arguments. */
    assert_status(tg_tape_write_dot(NULL, stdout, NULL), TG_INVALID);
    assert_status(tg_tape_write_dot(f->tp, NULL, NULL), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "tg_tape_write_dot: the file is NULL");
    FILE *ro = fopen(TG_SOURCE_DIR "/README.md", "r"); /* writes to it fail */
    assert_non_null(ro);
    assert_status(tg_tape_write_dot(f->tp, ro, NULL), TG_IO);
    assert_contains(tg_ctx_error(f->ctx), "tg_tape_write_dot: writing failed");
    fclose(ro);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(module_names_scope_messages),
        FIXTURE_TEST(scopes_by_hand),
        FIXTURE_TEST(nodes_by_number),
        FIXTURE_TEST(dot_of_a_module_graph),
        FIXTURE_TEST(dot_of_unlinked_custom_and_errored),
    };
    return cmocka_run_group_tests_name("inspect", tests, NULL, NULL);
}
