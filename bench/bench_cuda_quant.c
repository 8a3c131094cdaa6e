/* CUDA quantized matmul benchmark: the GPU's device-to-device copy
 * bandwidth, measured in the same run, then the decode matvec (M = 1, bf16
 * x, group size 64) at 4 and 8 bits at Llama-3.1-8B's shapes and a 32000
 * vocabulary head: time, GB/s of bytes read (packed words, scales, biases,
 * x) and the ratio to the copy bandwidth; then prefill TFLOP/s. Each weight
 * set is cycled through enough copies (>= 256 MiB) that every call reads
 * from HBM, not from the L2. "kernel" rows call the launcher back to back;
 * "op" rows go through afo_quantized_matmul and afo_eval, host work
 * included. Prints a table and one JSON line; exits 77 with a SKIP line
 * without a GPU.
 * Usage: bench_cuda_quant [--reps N] [--json] */
#include "afo/afo.h"
#include "bench_util.h"

#ifdef AFO_HAVE_CUDA
#include "backends/cuda/cuda.h"
#include "backends/cuda/quant_kernels.h"

static const afo_dtype XDT = AFO_BFLOAT16;

/* Every sample: one batch through all copies, then a wait; rates in GB/s
 * of `bytes` per call (or GFLOP/s when bytes counts flops). */
typedef struct qset {
    int copies;
    afo_array **wq, **s, **b;
    afo_array *x;
    int64_t M, N, K;
    int bits, gs;
} qset;

static afo_array *host_random(afo_dtype dt, int64_t rows, int64_t cols, uint64_t seed) {
    int64_t n = rows * cols, shape[2] = {rows, cols};
    size_t es = afo_dtype_size(dt);
    void *v = malloc((size_t)n * es);
    if (dt == AFO_UINT32) {
        uint64_t z = seed * 0x9e3779b97f4a7c15ull + 1;
        for (int64_t i = 0; i < n; i++) {
            z ^= z << 13, z ^= z >> 7, z ^= z << 17;
            ((uint32_t *)v)[i] = (uint32_t)z;
        }
    } else {
        fill(dt, v, n);
    }
    afo_array *a = afo_array_from_data(v, dt, 2, shape);
    free(v);
    afo_array_prefetch(a, AFO_CUDA);
    return a;
}

static qset qset_make(int64_t M, int64_t N, int64_t K, int bits, int gs) {
    qset q = {.M = M, .N = N, .K = K, .bits = bits, .gs = gs};
    size_t bytes = (size_t)(N * K * bits / 8);
    q.copies = (int)(((size_t)256 << 20) / bytes) + 1;
    if (q.copies < 4) q.copies = 4;
    q.wq = malloc(sizeof(afo_array *) * (size_t)q.copies * 3);
    q.s = q.wq + q.copies, q.b = q.s + q.copies;
    for (int c = 0; c < q.copies; c++) {
        q.wq[c] = host_random(AFO_UINT32, N, K * bits / 32, (uint64_t)c + 1);
        q.s[c] = host_random(XDT, N, K / gs, 0);
        q.b[c] = host_random(XDT, N, K / gs, 0);
    }
    q.x = host_random(XDT, M, K, 0);
    return q;
}

static void qset_free(qset *q) {
    afo_release_n(q->wq, q->copies * 3);
    free(q->wq);
    afo_release(q->x);
}

static const void *dev(afo_array *a) { return afo_buffer_on(a->buf, AFO_CUDA)->data; }

/* The launcher itself, back to back on the stream. */
static stats time_kernel(const qset *q, double per_call, int reps) {
    afo_buffer *y = afo_buffer_alloc(AFO_CUDA, (size_t)(q->M * q->N) * 2);
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
        for (int c = 0; c < q->copies; c++) {
            afo_cuda_qmat m = {.w = dev(q->wq[c]), .s = dev(q->s[c]), .b = dev(q->b[c]), .sdt = XDT, .bits = q->bits,
                               .gs = q->gs, .rows = q->N, .cols = q->K, .words = q->K * q->bits / 32};
            afo_cuda_quantized_matmul(&m, dev(q->x), XDT, q->M, 1, y->data, (afo_cuda_addend){NULL, AFO_FLOAT32},
                                      afo_cuda_stream());
        }
        afo_synchronize(AFO_CUDA);
        if (r >= 0) rates[r] = per_call * q->copies / (bench_now() - t0) * 1e-9;
    }
    stats s = summarize(rates, reps);
    free(rates);
    afo_buffer_release(y);
    return s;
}

/* Through the op: lazy nodes for the batch, one afo_eval, one wait. */
static stats time_op(const qset *q, double per_call, int reps) {
    afo_array **ys = malloc(sizeof(afo_array *) * (size_t)q->copies);
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
        afo_set_default_device(AFO_CUDA);
        for (int c = 0; c < q->copies; c++)
            ys[c] = afo_quantized_matmul(q->x, q->wq[c], q->s[c], q->b[c], 1, q->gs, q->bits);
        afo_set_default_device(AFO_CPU);
        afo_eval(ys, q->copies);
        afo_synchronize(AFO_CUDA);
        if (r >= 0) rates[r] = per_call * q->copies / (bench_now() - t0) * 1e-9;
        afo_release_n(ys, q->copies);
    }
    stats s = summarize(rates, reps);
    free(rates);
    free(ys);
    return s;
}

/* 1 GiB cudaMemcpy device to device: (read + written bytes) / time. */
static stats copy_bandwidth(int reps) {
    size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) return (stats){0};
    cudaMemset(a, 1, bytes);
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int r = -2; r < reps; r++) {
        cudaStreamSynchronize(afo_cuda_stream());
        double t0 = bench_now();
        cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, afo_cuda_stream());
        cudaStreamSynchronize(afo_cuda_stream());
        if (r >= 0) rates[r] = 2.0 * (double)bytes / (bench_now() - t0) * 1e-9;
    }
    stats s = summarize(rates, reps);
    free(rates);
    cudaFree(a), cudaFree(b);
    return s;
}

/* bf16 W [N, K] . x through afo_matmul, when this tree has a CUDA matmul
 * kernel (the result stays on the GPU); 0 rates otherwise. */
static stats bf16_matvec(int64_t N, int64_t K, int reps, int *have) {
    int copies = (int)(((size_t)256 << 20) / (size_t)(N * K * 2)) + 1;
    afo_array **w = malloc(sizeof(afo_array *) * (size_t)copies * 2), **ys = w + copies;
    afo_array *x = host_random(XDT, 1, K, 0);
    for (int c = 0; c < copies; c++) {
        afo_array *rowmajor = host_random(XDT, N, K, 0);
        w[c] = afo_transpose(rowmajor, NULL);
        afo_release(rowmajor);
    }
    afo_set_default_device(AFO_CUDA);
    afo_array *probe = afo_matmul(x, w[0]);
    afo_set_default_device(AFO_CPU);
    *have = afo_eval1(probe) == AFO_OK && afo_array_device(probe) == AFO_CUDA;
    afo_release(probe);
    stats s = {0};
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int r = -1; *have && r < reps; r++) {
        double t0 = bench_now();
        afo_set_default_device(AFO_CUDA);
        for (int c = 0; c < copies; c++) ys[c] = afo_matmul(x, w[c]);
        afo_set_default_device(AFO_CPU);
        afo_eval(ys, copies);
        afo_synchronize(AFO_CUDA);
        if (r >= 0) rates[r] = (double)(N * K * 2 + K * 2) * copies / (bench_now() - t0) * 1e-9;
        afo_release_n(ys, copies);
    }
    if (*have) s = summarize(rates, reps);
    free(rates);
    afo_release_n(w, copies);
    free(w);
    afo_release(x);
    return s;
}

int main(int argc, char **argv) {
    int reps, json_only;
    afo_device_info info;
    int start = bench_cuda_start(argc, argv, 10, &reps, &json_only, &info);
    if (start != 0) return start;
    stats bw = copy_bandwidth(reps);

    static const struct { int64_t n, k; } shapes[] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {32000, 2048}};
    enum { NS = 4 };
    static const int widths[2] = {4, 8};
    stats kern[2][NS], op[2][NS];
    double us[2][NS];
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < NS; i++) {
            qset q = qset_make(1, shapes[i].n, shapes[i].k, widths[b], 64);
            double bytes = (double)q.N * q.K * q.bits / 8 + 2.0 * q.N * (q.K / 64) * 2 + q.K * 2;
            kern[b][i] = time_kernel(&q, bytes, reps);
            op[b][i] = time_op(&q, bytes, reps);
            us[b][i] = bytes / kern[b][i].median * 1e-3;
            qset_free(&q);
        }
    int have_mm = 0;
    stats mm = bf16_matvec(4096, 4096, reps, &have_mm);

    static const int64_t pm[2] = {512, 4096};
    stats pf[2];
    for (int i = 0; i < 2; i++) {
        qset q = qset_make(pm[i], 4096, 4096, 4, 64);
        pf[i] = time_kernel(&q, 2.0 * pm[i] * 4096 * 4096 * 1e-3, reps); /* TFLOP/s */
        qset_free(&q);
    }

    char name[96];
    if (!json_only) {
        printf("gpu: %s (sm_%d%d) | reps: %d | x bf16, group size 64\n", info.name, info.compute_major,
               info.compute_minor, reps);
        printf("%-34s %8s %8s  %-18s %s\n", "", "median", "best", "[p10 .. p90]", "unit");
        row("copy bandwidth (1 GiB d2d, r+w)", bw, "GB/s", 0, NULL);
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < NS; i++) {
                snprintf(name, sizeof name, "q%d matvec %lldx%lld kernel", widths[b], (long long)shapes[i].n,
                         (long long)shapes[i].k);
                row(name, kern[b][i], "GB/s", kern[b][i].median / bw.median, "copy bw");
                printf("%-34s %8.1f us per call\n", "", us[b][i]);
                snprintf(name, sizeof name, "q%d matvec %lldx%lld op", widths[b], (long long)shapes[i].n,
                         (long long)shapes[i].k);
                row(name, op[b][i], "GB/s", op[b][i].median / bw.median, "copy bw");
            }
        if (have_mm) row("bf16 matvec 4096x4096 (matmul op)", mm, "GB/s", mm.median / bw.median, "copy bw");
        else printf("bf16 matvec 4096x4096 (matmul op)  skipped: no CUDA matmul kernel in this tree\n");
        for (int i = 0; i < 2; i++) {
            snprintf(name, sizeof name, "q4 prefill M=%lld 4096x4096", (long long)pm[i]);
            row(name, pf[i], "TFLOP/s", 0, NULL);
        }
    }
    printf("{\"gpu\":\"%s\",\"reps\":%d,\"copy_bw_gbs\":{\"median\":%.1f,\"best\":%.1f},\"matvec\":{", info.name, reps,
           bw.median, bw.best);
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < NS; i++)
            printf("%s\"q%d_%lldx%lld\":{\"us\":%.2f,\"kernel_gbs\":%.1f,\"op_gbs\":%.1f,\"ratio_to_copy_bw\":%.3f}",
                   b || i ? "," : "", widths[b], (long long)shapes[i].n, (long long)shapes[i].k, us[b][i],
                   kern[b][i].median, op[b][i].median, kern[b][i].median / bw.median);
    printf("},\"bf16_matvec_4096_gbs\":");
    if (have_mm) printf("%.1f", mm.median);
    else printf("null");
    printf(",\"prefill_q4_4096x4096_tflops\":{\"M512\":%.2f,\"M4096\":%.2f}}\n", pf[0].median, pf[1].median);
    return 0;
}

#else
int main(void) {
    printf("SKIP: this build has no CUDA backend\n");
    return 0;
}
#endif
