/* Devices: names, availability, the per-thread default device, and moving an
 * array's data to where it is needed. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/internal.h"
#ifdef AFO_HAVE_CUDA
#include "backends/cuda/cuda.h"
#endif

static _Thread_local afo_device g_default_device = AFO_CPU;

static const char *const g_names[AFO_DEVICE_COUNT] = {[AFO_CPU] = "cpu", [AFO_CUDA] = "cuda"};

const char *afo_device_name(afo_device d) {
    return (unsigned)d < AFO_DEVICE_COUNT ? g_names[d] : "unknown";
}

int afo_device_from_name(const char *name) {
    for (int d = 0; name && d < AFO_DEVICE_COUNT; d++)
        if (strcmp(name, g_names[d]) == 0) return d;
    return -1;
}

const afo_backend *afo_backend_of(afo_device device) {
    if (device == AFO_CUDA) {
#ifdef AFO_HAVE_CUDA
        return afo_cuda_backend();
#else
        return afo_error_null(AFO_ERR_UNSUPPORTED, "this build of afo has no CUDA backend (nvcc was not found "
                                                   "when it was configured; see -DAFO_CUDA)");
#endif
    }
    return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "device %d has no accelerator backend", (int)device);
}

int afo_device_available(afo_device d) {
    if (d == AFO_CPU) return 1;
    return (unsigned)d < AFO_DEVICE_COUNT && afo_backend_of(d) != NULL;
}

static void cpu_info(afo_device_info *out) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(out->name, sizeof out->name, "unknown");
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (colon && strncmp(line, "model name", 10) == 0) {
            snprintf(out->name, sizeof out->name, "%s", colon + 2);
            out->name[strcspn(out->name, "\n")] = 0;
            break;
        }
    }
    if (f) fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    out->total_memory = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)page;
    out->free_memory = (size_t)sysconf(_SC_AVPHYS_PAGES) * (size_t)page;
}

afo_status afo_device_get_info(afo_device d, afo_device_info *out) {
    if (!out) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_device_get_info: out is NULL");
    memset(out, 0, sizeof *out);
    if (d == AFO_CPU) {
        cpu_info(out);
        return AFO_OK;
    }
    if ((unsigned)d >= AFO_DEVICE_COUNT)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_device_get_info: invalid device %d", (int)d);
    const afo_backend *be = afo_backend_of(d);
    return be ? be->info(out) : afo_last_status();
}

afo_status afo_set_default_device(afo_device d) {
    if ((unsigned)d >= AFO_DEVICE_COUNT)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_set_default_device: invalid device %d", (int)d);
    if (!afo_device_available(d)) return afo_last_status();
    g_default_device = d;
    return AFO_OK;
}

afo_device afo_get_default_device(void) { return g_default_device; }

afo_device afo_array_device(const afo_array *a) { return a->buf ? a->buf->device : a->device; }

afo_status afo_array_prefetch(afo_array *a, afo_device d) {
    if (!a) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_prefetch: array is NULL");
    if ((unsigned)d >= AFO_DEVICE_COUNT)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_array_prefetch: invalid device %d", (int)d);
    AFO_TRY(afo_eval1(a));
    return afo_buffer_on(a->buf, d) ? AFO_OK : afo_last_status();
}

afo_status afo_synchronize(afo_device d) {
    if (d == AFO_CPU) return AFO_OK; /* CPU kernels finish before they return */
    const afo_backend *be = (unsigned)d < AFO_DEVICE_COUNT ? afo_backend_of(d) : NULL;
    return be ? be->synchronize() : afo_last_status();
}

struct afo_recording {
    const afo_backend *be; /* NULL: nothing to record on this device */
    afo_device device;
    void *state;           /* the backend's */
    bool open, ready;      /* ready: something was recorded and can be replayed */
    afo_held_buffers held; /* what the last recording's graph names besides live arrays */
    int64_t launched, instantiated;
};

afo_recording *afo_recording_new(afo_device d) {
    if ((unsigned)d >= AFO_DEVICE_COUNT)
        return afo_error_null(AFO_ERR_INVALID_ARGUMENT, "afo_recording_new: invalid device %d", (int)d);
    const afo_backend *be = d == AFO_CPU ? NULL : afo_backend_of(d);
    if (d != AFO_CPU && !be) return NULL;
    afo_recording *r = calloc(1, sizeof *r);
    if (!r) return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "afo_recording_new: out of memory");
    r->be = be && be->record_begin ? be : NULL;
    r->device = d;
    return r;
}

afo_status afo_record_begin(afo_recording *r) {
    if (!r) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_record_begin: recording is NULL");
    if (r->open) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_record_begin: already recording");
    if (!r->be) return AFO_OK;
    r->ready = false;
    AFO_TRY(r->be->record_begin(&r->state));
    /* the previous graph is replaced: what only it named may be reused */
    afo_held_release(r->device, &r->held);
    afo_pool_hold(r->device, &r->held);
    r->open = true;
    return AFO_OK;
}

static afo_status record_finish(afo_recording *r, bool discard) {
    r->open = false;
    afo_pool_hold(r->device, NULL);
    int fresh = 0;
    AFO_TRY(r->be->record_end(&r->state, &fresh, discard));
    r->ready = !discard;
    r->launched += !discard;
    r->instantiated += fresh;
    return AFO_OK;
}

afo_status afo_record_end(afo_recording *r) {
    if (!r) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_record_end: recording is NULL");
    if (!r->be) return AFO_OK;
    if (!r->open) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_record_end: not recording");
    return record_finish(r, false);
}

void afo_record_cancel(afo_recording *r) {
    if (r && r->be && r->open) record_finish(r, true);
}

afo_status afo_record_replay(afo_recording *r) {
    if (!r) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_record_replay: recording is NULL");
    if (!r->be) return afo_error(AFO_ERR_UNSUPPORTED, "afo_record_replay: the CPU records nothing to replay");
    if (!r->ready) return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_record_replay: nothing recorded yet");
    AFO_TRY(r->be->replay(r->state));
    r->launched++;
    return AFO_OK;
}

void afo_recording_counts(const afo_recording *r, int64_t *launched, int64_t *instantiated) {
    if (launched) *launched = r ? r->launched : 0;
    if (instantiated) *instantiated = r ? r->instantiated : 0;
}

void afo_recording_free(afo_recording *r) {
    if (!r) return;
    afo_record_cancel(r);
    if (r->be) {
        r->be->record_free(r->state); /* after the last launch is done */
        afo_held_release(r->device, &r->held);
    }
    free(r);
}
