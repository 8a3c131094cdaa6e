/* RoPE inverse frequencies for every rope_type transformers defines for
 * these models (modeling_rope_utils.py), computed once per model and handed
 * to afo_rope as `freqs` (their reciprocals). */
#include <math.h>
#include <stdlib.h>

#include "models/models.h"

static double yarn_mscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0; }

/* The dimension index whose wavelength turns `rotations` times over `positions`. */
static double yarn_correction_dim(double rotations, int64_t dims, double base, double positions) {
    return (double)dims * log(positions / (rotations * 2 * M_PI)) / (2 * log(base));
}

/* Blends interpolated (divided by factor) and original frequencies: the
 * fast-rotating dimensions keep theirs, the slow ones are interpolated. */
static void yarn(const rope_params *p, int64_t dims, double *inv, double *score_factor) {
    int64_t half = dims / 2;
    double low = yarn_correction_dim(p->beta_fast, dims, p->theta, (double)p->original_max_positions);
    double high = yarn_correction_dim(p->beta_slow, dims, p->theta, (double)p->original_max_positions);
    if (p->truncate) low = floor(low), high = ceil(high);
    low = fmax(low, 0), high = fmin(high, (double)(dims - 1));
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; i++) {
        double ramp = fmin(fmax(((double)i - low) / (high - low), 0.0), 1.0), extrapolation = 1 - ramp;
        inv[i] = inv[i] / p->factor * (1 - extrapolation) + inv[i] * extrapolation;
    }
    double att = p->attention_factor;
    if (att <= 0)
        att = p->mscale != 0 && p->mscale_all_dim != 0
                  ? yarn_mscale(p->factor, p->mscale) / yarn_mscale(p->factor, p->mscale_all_dim)
                  : yarn_mscale(p->factor, 1.0);
    *score_factor = att * att; /* cos and sin are both scaled: q.k gets att^2 */
}

static void llama3(const rope_params *p, int64_t half, double *inv) {
    double old = (double)p->original_max_positions;
    double low_wavelen = old / p->low_freq_factor, high_wavelen = old / p->high_freq_factor;
    for (int64_t i = 0; i < half; i++) {
        double wavelen = 2 * M_PI / inv[i];
        if (wavelen > low_wavelen) {
            inv[i] /= p->factor;
        } else if (wavelen >= high_wavelen) {
            double smooth = (old / wavelen - p->low_freq_factor) / (p->high_freq_factor - p->low_freq_factor);
            inv[i] = (1 - smooth) * inv[i] / p->factor + smooth * inv[i];
        }
    }
}

afo_array *rope_freqs(const rope_params *p, int64_t dims, int64_t max_positions, int64_t seq_len,
                      double *score_factor) {
    int64_t half = dims / 2;
    double base = p->theta;
    *score_factor = 1.0;
    if (p->kind == ROPE_DYNAMIC && seq_len > max_positions) /* NTK-aware: a larger base past the trained length */
        base *= pow(p->factor * (double)seq_len / (double)max_positions - (p->factor - 1),
                    (double)dims / (double)(dims - 2));
    double *inv = malloc(sizeof(double) * (size_t)half);
    float *freqs = malloc(sizeof(float) * (size_t)half);
    afo_array *out = NULL;
    if (inv && freqs) {
        for (int64_t i = 0; i < half; i++) inv[i] = 1.0 / pow(base, (double)(2 * i) / (double)dims);
        if (p->kind == ROPE_LINEAR)
            for (int64_t i = 0; i < half; i++) inv[i] /= p->factor;
        else if (p->kind == ROPE_LLAMA3)
            llama3(p, half, inv);
        else if (p->kind == ROPE_YARN)
            yarn(p, dims, inv, score_factor);
        for (int64_t i = 0; i < half; i++) freqs[i] = (float)(1.0 / inv[i]);
        out = afo_array_from_data(freqs, AFO_FLOAT32, 1, &half);
    } else {
        afo_error(AFO_ERR_OUT_OF_MEMORY, "out of memory computing RoPE frequencies");
    }
    free(inv);
    free(freqs);
    return out;
}
