/* What the generation loop sees of a sampler's device side (sample.c). */
#ifndef AFO_GENERATE_PICK_H
#define AFO_GENERATE_PICK_H

#include "afo/sample.h"

/* The greedy pick that the last afo_sampler_prepare made on a device
 * (int32, one element), or NULL when it made none. Borrowed. */
afo_array *sampler_device_pick(const afo_sampler *s);

/* Whether the sampler's pick is the logits' argmax and nothing else. */
bool sampler_greedy(const afo_sampler *s);

#endif
