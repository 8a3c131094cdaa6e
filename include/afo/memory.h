/* afo — memory accounting and limits (semantics of MLX's functions of the
 * same names). Figures are bytes of array data on the host unless a device
 * is named; file-backed (mmap) arrays count as mapped, not active. */
#ifndef AFO_MEMORY_H
#define AFO_MEMORY_H

#include "afo/base.h"

#ifdef __cplusplus
extern "C" {
#endif

size_t afo_get_active_memory(void); /* held by live arrays */
size_t afo_get_peak_memory(void);   /* max active since start / last reset */
void afo_reset_peak_memory(void);
size_t afo_get_cache_memory(void);  /* freed buffers kept for reuse */
size_t afo_get_mapped_memory(void); /* file bytes mapped by open weights */
/* Allocations that would push active memory past the limit first empty the
 * cache, then fail with AFO_ERR_OUT_OF_MEMORY. 0 = no limit. Returns the
 * previous limit. */
size_t afo_set_memory_limit(size_t bytes);
/* Cache above this size evicts least recently freed buffers. Returns the
 * previous limit. Default: no limit beyond the memory limit. */
size_t afo_set_cache_limit(size_t bytes);
void afo_clear_cache(void);

typedef struct afo_memory_stats {
    size_t active, peak, cache, mapped, limit, cache_limit;
    uint64_t alloc_count, cache_hits;
    uint64_t copied_in;  /* bytes copied onto this device from another */
    uint64_t copied_out; /* bytes copied from this device to another */
} afo_memory_stats;
afo_status afo_get_memory_stats(afo_device device, afo_memory_stats *out);
/* The limits above, for one device (the functions above act on the CPU). */
afo_status afo_set_device_memory_limit(afo_device device, size_t bytes, size_t *previous);
void afo_reset_device_peak_memory(afo_device device);

#ifdef __cplusplus
}
#endif
#endif
