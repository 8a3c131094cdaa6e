/* afo_graph_dump: the graph as text or Graphviz dot. */
#include <stdio.h>
#include <stdlib.h>

#include "core/internal.h"


static void format_attrs(const afo_array *a, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = '\0';
    if (afo_array_op(a) == AFO_OP_NONE) return; /* data: attrs no longer mean anything */
    for (int i = 0; i < a->attrs.ni && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? "," : "", (long long)a->attrs.i[i]);
    for (int i = 0; i < a->attrs.nf && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%g", i || a->attrs.ni ? "," : "", a->attrs.f[i]);
}

afo_status afo_graph_dump(FILE *f, afo_array *const *outputs, int n, afo_dump_format format) {
    if (!f) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_graph_dump: FILE is NULL");
    afo_array **order;
    size_t count;
    AFO_TRY(afo_graph_topo(outputs, n, true, &order, &count));
    if (format == AFO_DUMP_DOT) fprintf(f, "digraph afo {\n  node [shape=box, fontname=monospace];\n");
    for (size_t k = 0; k < count; k++) {
        const afo_array *a = order[k];
        char shape[160], attrs[256];
        afo_shape_str(a->ndim, a->shape, shape, sizeof shape);
        format_attrs(a, attrs, sizeof attrs);
        const char *op = afo_array_op_name(a);
        if (format == AFO_DUMP_DOT) {
            fprintf(f, "  n%llu [label=\"%s%s%s%s\\n%s %s\"];\n", (unsigned long long)a->id, op,
                    attrs[0] ? "(" : "", attrs, attrs[0] ? ")" : "", afo_dtype_name(a->dtype), shape);
            for (int i = 0; i < a->nin; i++)
                fprintf(f, "  n%llu -> n%llu;\n", (unsigned long long)a->in[i]->id, (unsigned long long)a->id);
        } else {
            fprintf(f, "%%%llu = %s%s%s%s %s%s", (unsigned long long)a->id, op, attrs[0] ? "(" : "", attrs,
                    attrs[0] ? ")" : "", afo_dtype_name(a->dtype), shape);
            for (int i = 0; i < a->nin; i++)
                fprintf(f, "%s%%%llu", i ? ", " : " <- ", (unsigned long long)a->in[i]->id);
            fputc('\n', f);
        }
    }
    if (format == AFO_DUMP_DOT) fprintf(f, "}\n");
    free(order);
    return AFO_OK;
}
