/* Which bits each matrix gets when converting: the global choice, the
 * architecture's own rule (mlx-lm's model quant_predicate), or one of
 * mlx-lm's mixed recipes, whose rule follows llama.cpp's Q4_K_M: v_proj and
 * down_proj get the high bits in the first and last eighth of the layers and
 * every third layer between, lm_head always, everything else the low bits.
 * The rule matches substrings of module paths as mlx-lm does, so a fused
 * qkv_proj counts as a v_proj there too. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "models/models.h"

static const struct {
    const char *name;
    int low, high;
} RECIPES[] = {{"mixed_2_6", 2, 6}, {"mixed_3_4", 3, 4}, {"mixed_3_6", 3, 6}, {"mixed_4_6", 4, 6}};

/* The dot-separated component of path at index k, as a layer number; -1
 * when there is none or it is not a number. */
static long component_number(const char *path, int k) {
    const char *c = path;
    for (int i = 0; i < k && c; i++) c = strchr(c, '.'), c = c ? c + 1 : NULL;
    if (!c || !isdigit((unsigned char)*c)) return -1;
    char *end;
    long v = strtol(c, &end, 10);
    return *end == '.' || *end == '\0' ? v : -1;
}

afo_status quant_plan_init(const afo_model *m, const afo_convert_options *o, quant_plan *p) {
    *p = (quant_plan){.bits = o->bits, .group_size = o->group_size, .arch = m->arch->quant_predicate};
    if (!o->predicate) return AFO_OK;
    size_t n = sizeof RECIPES / sizeof *RECIPES, r = 0;
    while (r < n && strcmp(RECIPES[r].name, o->predicate) != 0) r++;
    if (r == n)
        return afo_error(AFO_ERR_INVALID_ARGUMENT,
                         "convert: unknown quantization predicate '%s': supported are mixed_2_6, mixed_3_4, "
                         "mixed_3_6 and mixed_4_6",
                         o->predicate);
    if (!o->bits)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "convert: quantization predicate %s needs quantizing (bits)",
                         o->predicate);
    p->low = RECIPES[r].low, p->high = RECIPES[r].high;
    p->num_layers = (int)m->cfg.layers;
    /* the layer index sits where the first down_proj's path has its first
     * number, as mlx-lm finds it */
    for (int i = 0; i < m->nspecs; i++) {
        if (!strstr(m->specs[i].name, "down_proj")) continue;
        for (int k = 0; k < 8; k++)
            if (component_number(m->specs[i].name, k) >= 0) {
                p->layer_location = k;
                return AFO_OK;
            }
        break;
    }
    return afo_error(AFO_ERR_UNSUPPORTED, "convert: model %s has no down_proj layers for recipe %s", m->dir,
                     o->predicate);
}

quant_choice quant_plan_choose(const quant_plan *p, const char *path, int64_t in) {
    quant_choice c = {0};
    if (!p->bits || in % p->group_size != 0) return c;
    c.bits = p->bits, c.group_size = p->group_size;
    if (p->low) {
        long index = component_number(path, p->layer_location);
        int n = p->num_layers;
        if (index < 0) index = 0;
        bool more = index < n / 8 || index >= 7 * n / 8 || (index - n / 8) % 3 == 2;
        bool v = strstr(path, "v_proj") || strstr(path, "v_a_proj") || strstr(path, "v_b_proj");
        bool high = ((v || strstr(path, "down_proj")) && more) || strstr(path, "lm_head");
        c.bits = high ? p->high : p->low;
        c.entry = QUANT_ENTRY_MODE;
        return c;
    }
    int bits = 0, group_size = 0, rule = p->arch ? p->arch(path, &bits, &group_size) : QUANT_GLOBAL;
    if (rule == QUANT_NONE || (rule == QUANT_OWN && in % group_size != 0)) return (quant_choice){0};
    if (rule == QUANT_OWN) c.bits = bits, c.group_size = group_size, c.entry = QUANT_ENTRY;
    return c;
}
