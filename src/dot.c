/* dot.c — the recorded tensor graph as Graphviz DOT (tg_tape_write_dot), for looking at a tape.
 * Op names come from the registry, so any registered op draws; scopes become nested clusters. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>

/* What the writer needs besides the tape: which nodes to draw, and the scope tree of the drawn
 * nodes (scopes by id, each scope's children as a list, its nodes as a run of `order`). */
typedef struct graph {
    FILE *out;
    const tg_tape *tp;
    const tg_dot_options *o;
    uint8_t *shown;             /* by node id */
    uint32_t *order;            /* drawn nodes grouped by scope id (0: no scope) */
    uint32_t *start;            /* by scope id: its first entry in order; start[S + 1] the end */
    const tg__scope **scope_of; /* by scope id; NULL for scopes no drawn node is in */
    uint32_t *child, *sibling;  /* by scope id: first child and next sibling (0: none) */
} graph;

static bool linked(const tg__node *n) { return n->inputs != NULL; }

/* Drawn: nodes linked for backward (all nodes with all_nodes), less the backward's nodes with
 * no_backward, and every input of a drawn node. Inputs precede their users, so one descending
 * pass after the first marks them all (an input that is itself linked is marked already). */
static void choose_nodes(graph *g)
{
    const tg_tape *tp = g->tp;
    for (uint32_t i = 1; i < tp->nnodes; i++) {
        const tg__node *n = tg__node_at(tp, i);
        bool wanted = g->o->all_nodes || linked(n);
        g->shown[i] = wanted && !(g->o->no_backward && n->backward);
    }
    for (uint32_t i = tp->nnodes; i-- > 1;) {
        const tg__node *n = tg__node_at(tp, i);
        if (!g->shown[i] || !linked(n))
            continue;
        for (uint32_t j = 0; j < n->ninputs; j++)
            g->shown[n->inputs[j]] = 1;
    }
}

static uint32_t scope_id(const graph *g, const tg__node *n)
{
    return g->o->no_scopes || !n->scope ? 0 : n->scope->id;
}

/* The scopes of drawn nodes and their ancestors, as a tree in opening order; the drawn nodes
 * bucketed by scope (a counting sort). */
static void build_tree(graph *g)
{
    const tg_tape *tp = g->tp;
    uint32_t count = tp->scope_count;
    for (uint32_t i = 1; i < tp->nnodes; i++) {
        const tg__node *n = tg__node_at(tp, i);
        if (!g->shown[i])
            continue;
        g->start[scope_id(g, n)]++;
        for (const tg__scope *s = g->o->no_scopes ? NULL : n->scope; s && !g->scope_of[s->id];
             s = s->parent)
            g->scope_of[s->id] = s;
    }
    /* Children prepended in descending order come out ascending. */
    for (uint32_t id = count; id >= 1; id--) {
        const tg__scope *s = g->scope_of[id];
        if (!s)
            continue;
        uint32_t parent = s->parent ? s->parent->id : 0;
        g->sibling[id] = g->child[parent];
        g->child[parent] = id;
    }
    uint32_t sum = 0;
    for (uint32_t id = 0; id <= count + 1; id++) {
        uint32_t c = g->start[id];
        g->start[id] = sum;
        sum += c;
    }
    uint32_t *next = g->child + count + 1; /* scratch: the fill position of each bucket */
    memcpy(next, g->start, (size_t)(count + 1) * sizeof *next);
    for (uint32_t i = 1; i < tp->nnodes; i++)
        if (g->shown[i])
            g->order[next[scope_id(g, tg__node_at(tp, i))]++] = i;
}

/* A string inside a DOT "..." label: quotes and backslashes escaped, control characters as
 * spaces (DOT's own \n line breaks are written by the caller). */
static void put_text(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', out);
        fputc((unsigned char)*s < 0x20 ? ' ' : *s, out);
    }
}

/* Boxes for ops and parameters, ellipses for leaves; dotted: not linked for backward; dashed: a
 * kernel gradient; shaded red: recorded by a backward pass; blue: parameters. */
static void put_style(FILE *out, const tg__node *n)
{
    bool box = n->kind == TG__OPNODE || n->kind == TG__PARAM || n->kind == TG__BARRIER;
    const char *style = "filled", *fill = "#eef2e6";
    if (n->kind == TG__PARAM)
        style = "rounded,filled", fill = "#dbeafe";
    else if (n->kind == TG__BARRIER)
        style = "dashed,filled";
    else if (n->kind == TG__OPNODE)
        style = linked(n) ? "filled" : "dotted,filled", fill = "#ffffff";
    if (n->backward)
        fill = "#fde2e4";
    fprintf(out, "shape=%s, style=\"%s\", fillcolor=\"%s\"];\n", box ? "box" : "ellipse", style,
            fill);
}

static void put_node(const graph *g, uint32_t id, int indent)
{
    const tg__node *n = tg__node_at(g->tp, id);
    char shape[160];
    tg__format_view(shape, sizeof shape, &n->v);
    fprintf(g->out, "%*sn%u [label=\"", indent, "", id);
    if (n->kind == TG__PARAM) {
        put_text(g->out, n->param->name && n->param->name[0] ? n->param->name : "(unnamed)");
        fprintf(g->out, "\\nparameter %s", shape);
    } else if (n->kind == TG__BARRIER) {
        fputs("kernel gradient of ", g->out);
        put_text(g->out, n->op->name);
        fprintf(g->out, "\\n%s", shape);
    } else {
        put_text(g->out, tg__node_kind_name(n));
        fprintf(g->out, "%s\\n%s", n->kind == TG__LEAF && n->leaf_marked ? " (requires grad)" : "",
                shape);
    }
    fprintf(g->out, "\\n#%u\", ", id);
    put_style(g->out, n);
}

/* The nodes of scope `id` and, nested inside, its child scopes' clusters. */
static void put_scope(const graph *g, uint32_t id, int depth)
{
    int indent = 2 * depth + 2;
    if (id) {
        fprintf(g->out, "%*ssubgraph cluster_%u {\n%*slabel=\"", indent - 2, "", id, indent, "");
        put_text(g->out, g->scope_of[id]->name);
        fprintf(g->out, "\";\n%*sstyle=rounded; color=\"#8c8c8c\"; fontcolor=\"#505050\";\n",
                indent, "");
    }
    for (uint32_t k = g->start[id]; k < g->start[id + 1]; k++)
        put_node(g, g->order[k], indent);
    for (uint32_t c = g->child[id]; c; c = g->sibling[c])
        put_scope(g, c, depth + 1);
    if (id)
        fprintf(g->out, "%*s}\n", indent - 2, "");
}

static void put_edges(const graph *g)
{
    const tg_tape *tp = g->tp;
    for (uint32_t i = 1; i < tp->nnodes; i++) {
        const tg__node *n = tg__node_at(tp, i);
        if (!g->shown[i] || !linked(n))
            continue;
        for (uint32_t j = 0; j < n->ninputs; j++) {
            /* A kernel gradient's last input is the output gradient it was made from. */
            bool grad_in = n->kind == TG__BARRIER && j + 1 == n->ninputs;
            fprintf(g->out, "  n%u -> n%u%s;\n", n->inputs[j], i, grad_in ? " [style=dashed]" : "");
        }
    }
}

static void put_graph(const graph *g)
{
    const tg_tape *tp = g->tp;
    fputs("digraph tape {\n  graph [fontname=\"Helvetica\", labelloc=t];\n"
          "  node [fontname=\"Helvetica\", fontsize=10];\n  edge [color=\"#606060\"];\n",
          g->out);
    const char *title = g->o->title ? g->o->title : tp->status ? tp->error : NULL;
    if (title) {
        fputs("  label=\"", g->out);
        put_text(g->out, title);
        fputs("\";\n", g->out);
    }
    put_scope(g, 0, 0);
    put_edges(g);
    fputs("}\n", g->out);
}

tg_status tg_tape_write_dot(tg_tape *tp, FILE *out, const tg_dot_options *opts)
{
    static const char fn[] = "tg_tape_write_dot";
    if (!tp)
        return TG_INVALID;
    if (!out)
        return tg__ctx_fail(tp->ctx, TG_INVALID, "%s: the file is NULL", fn);
    tg_dot_options defaults = {0};
    size_t nodes = tp->nnodes, scopes = (size_t)tp->scope_count + 2;
    /* shown, order | start, scope_of, child (and its scratch half), sibling */
    size_t bytes = nodes * (1 + sizeof(uint32_t))
                   + scopes * (3 * sizeof(uint32_t) + sizeof(tg__scope *) + sizeof(uint32_t));
    unsigned char *block = tg__alloc(tp->ctx, bytes);
    if (!block)
        return tg__ctx_fail(tp->ctx, TG_NOMEM, "%s: out of memory for %zu nodes", fn, nodes);
    memset(block, 0, bytes);
    graph g = {out, tp, opts ? opts : &defaults, NULL, NULL, NULL, NULL, NULL, NULL};
    g.scope_of = (const tg__scope **)block;
    g.order = (uint32_t *)(g.scope_of + scopes);
    g.start = g.order + nodes;
    g.child = g.start + scopes;
    g.sibling = g.child + 2 * scopes;
    g.shown = (uint8_t *)(g.sibling + scopes);
    choose_nodes(&g);
    build_tree(&g);
    put_graph(&g);
    tg__free(tp->ctx, block, bytes);
    if (fflush(out) != 0 || ferror(out))
        return tg__ctx_fail(tp->ctx, TG_IO, "%s: writing failed: %s", fn, strerror(errno));
    return TG_OK;
}
