/* Loading a model directory and what it reports about itself. */
#include <stdio.h>
#include <stdlib.h>

#include "models/models.h"

void afo_model_free(afo_model *m) {
    if (!m) return;
    model_release_weights(m);
    afo_release(m->freqs_full);
    afo_release(m->freqs_sliding);
    afo_weights_close(m->weights);
    config_free(&m->cfg);
    free(m->dir);
    free(m);
}

afo_status afo_model_load(const char *name_or_path, const afo_model_options *opts, afo_model **out) {
    if (!out) return afo_error(AFO_ERR_INVALID_ARGUMENT, "model load: out is NULL");
    *out = NULL;
    char dir[4096], config[4200];
    AFO_TRY(afo_model_resolve(name_or_path, dir, sizeof dir));
    if (opts && opts->config_path) snprintf(config, sizeof config, "%s", opts->config_path);
    else snprintf(config, sizeof config, "%s/config.json", dir);
    afo_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(dir))) {
        free(m);
        return afo_error(AFO_ERR_OUT_OF_MEMORY, "model load: out of memory");
    }
    afo_status st = config_load(config, dir, &m->cfg, &m->arch);
    if (st == AFO_OK) st = model_bind_weights(m);
    if (st == AFO_OK) {
        m->compute = opts && opts->compute_in_storage_dtype ? model_storage_dtype(m) : AFO_FLOAT32;
        const model_config *c = &m->cfg;
        m->freqs_full = rope_freqs(&c->rope_full, c->rotary_dims, c->max_positions, 0, &m->score_full);
        m->freqs_sliding = rope_freqs(&c->rope_sliding, c->rotary_dims, c->max_positions, 0, &m->score_sliding);
        if (!m->freqs_full || !m->freqs_sliding) st = afo_last_status();
    }
    if (st != AFO_OK) {
        afo_model_free(m);
        return st;
    }
    *out = m;
    return AFO_OK;
}

const char *afo_model_type(const afo_model *m) { return m->cfg.model_type; }
const char *afo_model_dir(const afo_model *m) { return m->dir; }
int64_t afo_model_vocab_size(const afo_model *m) { return m->cfg.vocab; }
int afo_model_num_layers(const afo_model *m) { return (int)m->cfg.layers; }
int64_t afo_model_hidden_size(const afo_model *m) { return m->cfg.hidden; }
int64_t afo_model_max_positions(const afo_model *m) { return m->cfg.max_positions; }
afo_dtype afo_model_dtype(const afo_model *m) { return model_storage_dtype(m); }
afo_dtype afo_model_compute_dtype(const afo_model *m) { return m->compute; }
int64_t afo_model_num_params(const afo_model *m) { return m->num_params; }
size_t afo_model_weight_bytes(const afo_model *m) { return m->weight_bytes; }

afo_status afo_model_decode_bytes(const afo_model *m, const afo_kv_cache *c, size_t *bytes) {
    if (!m || !c || !bytes || kv_cache_model(c) != m)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "decode bytes: needs a model, a cache of that model and an out");
    size_t read = m->weight_bytes;
    if (m->lm_head.w) {
        const linear_weight *e = &m->embed;
        size_t table = afo_array_nbytes(e->w);
        if (e->scales) table += afo_array_nbytes(e->scales) + afo_array_nbytes(e->biases);
        int64_t rows = afo_kv_cache_batch(c) < m->cfg.vocab ? afo_kv_cache_batch(c) : m->cfg.vocab;
        read -= table - table / (size_t)m->cfg.vocab * (size_t)rows;
    }
    *bytes = read + kv_step_bytes(c);
    return AFO_OK;
}

const afo_generation_config *afo_model_generation_config(const afo_model *m) { return &m->cfg.gen; }

int afo_model_is_eos(const afo_model *m, int32_t id) {
    for (int i = 0; i < m->cfg.gen.num_eos; i++)
        if (m->cfg.gen.eos_token_ids[i] == id) return 1;
    return 0;
}

bool linear_fusable(const linear_weight *p, int n) {
    for (int i = 0; i < n; i++) {
        if (!p[i].w || afo_array_ndim(p[i].w) != 2 || !p[0].scales != !p[i].scales) return false;
        if (afo_array_dtype(p[i].w) != afo_array_dtype(p[0].w) || afo_array_dim(p[i].w, 1) != afo_array_dim(p[0].w, 1))
            return false;
        if (p[i].scales && (p[i].bits != p[0].bits || p[i].group_size != p[0].group_size ||
                            afo_array_dtype(p[i].scales) != afo_array_dtype(p[0].scales)))
            return false;
    }
    return true;
}

/* into = the rows of parts stacked (evaluated where the default device
 * says); each part then becomes a view of its rows, so no weight is held
 * twice and everything that reads a part by name still can. */
static afo_status stack_rows(linear_weight **parts, int n, linear_weight *into) {
    *into = (linear_weight){.bits = parts[0]->bits, .group_size = parts[0]->group_size};
    afo_array **fields[3] = {&into->w, &into->scales, &into->biases};
    for (int f = 0; f < (parts[0]->scales ? 3 : 1); f++) {
        afo_array *src[3];
        for (int i = 0; i < n; i++) src[i] = f == 0 ? parts[i]->w : f == 1 ? parts[i]->scales : parts[i]->biases;
        afo_array *all = afo_concatenate(src, n, 0);
        if (!all || afo_eval1(all) != AFO_OK) {
            afo_release(all);
            return afo_last_status();
        }
        *fields[f] = all;
        int64_t row = 0;
        for (int i = 0; i < n; i++) {
            int64_t rows = afo_array_dim(src[i], 0);
            afo_array *view = afo_slice_axis(all, 0, row, row + rows);
            if (!view) return afo_last_status();
            afo_array **slot = f == 0 ? &parts[i]->w : f == 1 ? &parts[i]->scales : &parts[i]->biases;
            afo_release(*slot);
            *slot = view;
            row += rows;
        }
    }
    return AFO_OK;
}

afo_status model_stack_projections(afo_model *m) {
    for (int l = 0; l < m->cfg.layers; l++) {
        layer_weights *w = &m->layers[l];
        linear_weight qkv[3] = {w->q, w->k, w->v}, gu[2] = {w->gate, w->up};
        if (!w->qkv.w && !w->q_bias && !w->k_bias && !w->v_bias && linear_fusable(qkv, 3)) {
            w->stacked_qkv = true;
            AFO_TRY(stack_rows((linear_weight *[]){&w->q, &w->k, &w->v}, 3, &w->qkv));
        }
        if (!w->gate_up.w && !w->gate_bias && !w->up_bias && linear_fusable(gu, 2)) {
            w->stacked_gate_up = true;
            AFO_TRY(stack_rows((linear_weight *[]){&w->gate, &w->up}, 2, &w->gate_up));
        }
    }
    return AFO_OK;
}

/* Copies every weight to the device now, in one pass through the pinned
 * staging buffers, instead of on first use inside the first forward pass;
 * on a GPU, stacks projections as well (model_stack_projections). */
afo_status afo_model_to_device(afo_model *m, afo_device d) {
    if (!m) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_model_to_device: model is NULL");
    for (int i = 0; i < m->nspecs; i++) {
        const tensor_spec *t = &m->specs[i];
        afo_array *parts[3] = {*t->slot, t->linear ? t->linear->scales : NULL, t->linear ? t->linear->biases : NULL};
        for (int k = 0; k < 3; k++)
            if (parts[k]) AFO_TRY(afo_array_prefetch(parts[k], d));
    }
    AFO_TRY(afo_array_prefetch(m->freqs_full, d));
    AFO_TRY(afo_array_prefetch(m->freqs_sliding, d));
    if (d == AFO_CPU) return AFO_OK;
    afo_device before = afo_get_default_device();
    afo_set_default_device(d);
    afo_status st = model_stack_projections(m);
    afo_set_default_device(before);
    return st;
}
