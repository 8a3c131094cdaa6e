/* afo — devices: which are present, where new ops run, what each holds.
 *
 * An op runs on the default device of the thread that created it. Evaluation
 * runs it there (on the CPU when that device has no kernel for the op) and
 * gives it its inputs there: a buffer that lives elsewhere is copied once and
 * the copy is kept beside it for later consumers, so weights mapped from a
 * file reach a GPU once. Reading an array's data (afo_array_data,
 * afo_array_read) brings it to the host the same way. */
#ifndef AFO_DEVICE_H
#define AFO_DEVICE_H

#include "afo/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct afo_array afo_array;

typedef struct afo_device_info {
    char name[128];       /* "NVIDIA H100 80GB HBM3", or the CPU model */
    size_t total_memory;  /* bytes */
    size_t free_memory;   /* bytes, at the time of the call */
    int compute_major, compute_minor; /* CUDA compute capability; 0 for the CPU */
} afo_device_info;

const char *afo_device_name(afo_device d);    /* "cpu", "cuda" */
int afo_device_from_name(const char *name);   /* -1 when unknown */
/* 1 when this build has the backend and the machine has the device. */
int afo_device_available(afo_device d);
afo_status afo_device_get_info(afo_device d, afo_device_info *out);

/* The device ops created by this thread run on; AFO_CPU until set. Fails
 * with AFO_ERR_UNSUPPORTED (naming why) when the device is not available. */
afo_status afo_set_default_device(afo_device d);
afo_device afo_get_default_device(void);
/* The device an evaluated array's data lives on (its creation device before). */
afo_device afo_array_device(const afo_array *a);
/* Evaluates `a` and makes its data resident on `d` (cached beside it). */
afo_status afo_array_prefetch(afo_array *a, afo_device d);
/* Ops evaluated on the CPU because the device they were made for has no
 * kernel for them, since the process started. */
int64_t afo_cpu_fallback_count(void);
/* Ops a backend computed inside another op's kernel (a decode step's
 * product in the residual add after it, a norm or a swiglu in the product
 * after it), since the process started: a chain of three ops in one kernel
 * counts two. */
int64_t afo_fused_count(void);
/* Waits until all work queued on `d` has finished. */
afo_status afo_synchronize(afo_device d);

/* Recording, for loops that run the same work again and again (a decode
 * step): what evaluation queues on the device between afo_record_begin and
 * afo_record_end is recorded instead of run, then launched as one CUDA
 * graph. When a recording repeats the previous one's kernels in the same
 * order, the graph made last time is updated with the new arguments rather
 * than built again. Between begin and end the host must not read device
 * data (that fails and abandons the recording). Devices without graphs
 * (the CPU) just run the work: begin and end do nothing.
 *
 * afo_record_replay launches the last recording again, as it was made: the
 * same kernels on the same buffers, without building anything on the host.
 * What it computes can change only through the data of the arrays it reads
 * (afo_array_write between replays; positions given to the *_at ops), and
 * the arrays it wrote hold the new results. Device buffers freed while
 * recording stay reserved for the recording until it records again or is
 * freed; arrays made before it and read or written by it must be kept alive
 * by the caller for as long as it is replayed. */
typedef struct afo_recording afo_recording;
afo_recording *afo_recording_new(afo_device d);
afo_status afo_record_begin(afo_recording *r);
afo_status afo_record_end(afo_recording *r);
/* Ends a recording without running it (after an error inside it). */
void afo_record_cancel(afo_recording *r);
afo_status afo_record_replay(afo_recording *r);
/* How many recordings were launched and how many needed a new graph. */
void afo_recording_counts(const afo_recording *r, int64_t *launched, int64_t *instantiated);
void afo_recording_free(afo_recording *r);

#ifdef __cplusplus
}
#endif
#endif
