/* matmul through cuBLAS. Row-major C = A B is column-major Cᵀ = Bᵀ Aᵀ, so
 * each operand is handed over as the transpose cuBLAS sees in its memory:
 * a row-major matrix is a column-major transpose (op N), a transposed view
 * is a column-major matrix (op T). Only operands neither can describe (or
 * of a dtype the GEMM cannot mix) are first copied densely on the GPU.
 * Half types accumulate in float32 and float32 is true float32 (no TF32):
 * the results are compared with the CPU's at float32 bounds. */
#include <cublas_v2.h>
#include <limits.h>
#include <pthread.h>

#include "backends/cpu/nn_kernels.h"
#include "backends/cuda/cuda.h"
#include "backends/cuda/nn_kernels.h"
#include "backends/cuda/kernels.h"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* a handle is not for concurrent use */
static cublasHandle_t g_handle;
static cublasStatus_t g_init_status;
static afo_buffer *g_workspace;

static afo_status cublas_status(cublasStatus_t s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return AFO_OK;
    return afo_error(s == CUBLAS_STATUS_ALLOC_FAILED ? AFO_ERR_OUT_OF_MEMORY : AFO_ERR_INTERNAL, "matmul: cuBLAS %s: %s",
                     what, cublasGetStatusString(s));
}

static void init_handle(void) {
    cublasStatus_t s = cublasCreate(&g_handle);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(g_handle, afo_cuda_stream());
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(g_handle, CUBLAS_DEFAULT_MATH);
    /* cuBLAS's own workspace would be memory afo neither counts nor limits;
     * without this buffer it still works, allocating its own */
    const size_t ws = (size_t)32 << 20;
    if (s == CUBLAS_STATUS_SUCCESS && (g_workspace = afo_buffer_alloc(AFO_CUDA, ws)) != NULL &&
        cublasSetWorkspace(g_handle, g_workspace->data, ws) != CUBLAS_STATUS_SUCCESS) {
        afo_buffer_release(g_workspace);
        g_workspace = NULL;
    }
    g_init_status = s;
}

afo_status afo_cuda_dense(const afo_array *a, afo_dtype dt, afo_array *view, afo_buffer **scratch) {
    *view = *a;
    *scratch = afo_buffer_alloc(AFO_CUDA, (size_t)a->size * afo_dtype_size(dt));
    if (!*scratch) return afo_last_status();
    view->buf = *scratch;
    view->dtype = dt;
    view->offset = 0;
    afo_contiguous_strides(a->ndim, a->shape, view->strides);
    view->contiguous = true;
    afo_cuda_strided d;
    afo_array *src = (afo_array *)a;
    afo_cuda_describe(&d, view, &src, 1);
    afo_cuda_ctype ct = dt == AFO_FLOAT64 || a->dtype == AFO_FLOAT64 ? AFO_CUDA_F64 : AFO_CUDA_F32;
    afo_cuda_elementwise(&d, AFO_OP_ASTYPE, ct, afo_cuda_stream());
    return afo_cuda_launched("dense copy");
}

/* How cuBLAS reads x's last two axes (a row-major R x C matrix) as a
 * column-major C x R matrix; false when the strides allow neither way. */
static bool layout(const afo_array *x, cublasOperation_t *op, int64_t *ld) {
    int nd = x->ndim;
    int64_t R = x->shape[nd - 2], C = x->shape[nd - 1], rs = x->strides[nd - 2], cs = x->strides[nd - 1];
    if ((C == 1 || cs == 1) && (R == 1 || rs >= C)) {
        *op = CUBLAS_OP_N;
        *ld = R == 1 ? C : rs;
    } else if ((R == 1 || rs == 1) && (C == 1 || cs >= R)) {
        *op = CUBLAS_OP_T;
        *ld = C == 1 ? R : cs;
    } else {
        return false;
    }
    return *ld <= INT_MAX;
}

static cudaDataType_t cuda_type(afo_dtype t) {
    switch (t) {
    case AFO_FLOAT16: return CUDA_R_16F;
    case AFO_BFLOAT16: return CUDA_R_16BF;
    case AFO_FLOAT32: return CUDA_R_32F;
    default: return CUDA_R_64F;
    }
}

typedef struct gemm {
    afo_array *a, *b, *out;
    cublasOperation_t opa, opb;
    int64_t lda, ldb, M, N, K;
} gemm;

/* `count` products whose operands start at a, b and c and step by sa, sb
 * and M*N elements. */
static afo_status gemm_batch(const gemm *g, const char *a, const char *b, char *c, int64_t sa, int64_t sb,
                             int64_t count) {
    cudaDataType_t t = cuda_type(g->b->dtype);
    bool f64 = g->b->dtype == AFO_FLOAT64;
    float one = 1, zero = 0;
    double one64 = 1, zero64 = 0;
    cublasStatus_t s = cublasGemmStridedBatchedEx(
        g_handle, g->opb, g->opa, (int)g->N, (int)g->M, (int)g->K, f64 ? (const void *)&one64 : (const void *)&one,
        b, t, (int)g->ldb, sb, a, t, (int)g->lda, sa, f64 ? (const void *)&zero64 : (const void *)&zero, c, t,
        (int)g->N, g->M * g->N, (int)count, f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return cublas_status(s, "gemm");
}

static afo_status run(gemm *g) {
    const afo_array *a = g->a, *b = g->b, *out = g->out;
    int nd = out->ndim, nb = nd - 2;
    int64_t sa[AFO_MAX_DIMS] = {0}, sb[AFO_MAX_DIMS] = {0};
    for (int d = 0; d < nb; d++) {
        int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
        sa[d] = da >= 0 && a->shape[da] != 1 ? a->strides[da] : 0;
        sb[d] = db >= 0 && b->shape[db] != 1 ? b->strides[db] : 0;
    }
    size_t es = afo_dtype_size(out->dtype);
    const char *A = afo_array_ptr(a), *B = afo_array_ptr(b);
    char *C = afo_array_ptr(out);
    int64_t batches = afo_shape_size(nb, out->shape);
    /* A shared b and rows of a evenly spaced across the batch make one
     * (batches*M) x K product: the common x [B, L, H] @ W case */
    bool fold = g->opa == CUBLAS_OP_N && batches > 1;
    int64_t rs = g->M > 1 ? g->lda : 0, span = g->M;
    for (int d = nb - 1; fold && d >= 0; d--) {
        if (out->shape[d] == 1) continue;
        if (rs == 0 && sa[d] >= g->K) rs = sa[d];
        fold = sb[d] == 0 && sa[d] == rs * span;
        span *= out->shape[d];
    }
    if (fold && rs >= g->K && rs <= INT_MAX && span <= INT_MAX) {
        g->M = span;
        g->lda = rs;
        return gemm_batch(g, A, B, C, 0, 0, 1);
    }
    /* innermost batch axes with even steps go to one strided-batched call */
    int64_t inner = 1, bsa = 0, bsb = 0;
    int group = nb;
    for (int d = nb - 1; d >= 0; d--) {
        if (out->shape[d] != 1) {
            if (inner == 1) bsa = sa[d], bsb = sb[d];
            else if (sa[d] != bsa * inner || sb[d] != bsb * inner || inner * out->shape[d] > INT_MAX) break;
            inner *= out->shape[d];
        }
        group = d;
    }
    for (int64_t o = 0; o < batches / inner; o++) {
        int64_t oa = 0, ob = 0, r = o;
        for (int d = group - 1; d >= 0; d--) {
            int64_t idx = r % out->shape[d];
            r /= out->shape[d];
            oa += idx * sa[d];
            ob += idx * sb[d];
        }
        AFO_TRY(gemm_batch(g, A + oa * (int64_t)es, B + ob * (int64_t)es, C + o * inner * g->M * g->N * (int64_t)es,
                           bsa, bsb, inner));
    }
    return AFO_OK;
}

static bool is_half_or_float(afo_dtype t) { return t == AFO_FLOAT16 || t == AFO_BFLOAT16 || t == AFO_FLOAT32; }

/* A decode-sized linear layer, x [..., R, K] @ W^T with W a row-major
 * [N, K] matrix and few rows in all: the GEMV kernel (gemv.cu), computing
 * `fuse` along (NULL: nothing). False, launching nothing, otherwise. */
static bool gemv_case(afo_array *out, const afo_array *x, const afo_array *w, const afo_cuda_gemv_fusion *fuse) {
    int nx = x->ndim;
    if (w->ndim != 2 || nx < 1 || !is_half_or_float(x->dtype) || !is_half_or_float(w->dtype) ||
        !is_half_or_float(out->dtype))
        return false;
    int64_t K = x->shape[nx - 1], N = w->shape[1], rows = x->size / (K ? K : 1);
    if (K == 0 || rows > afo_cuda_gemv_max_rows() || w->strides[0] != 1 || (N > 1 && w->strides[1] != K))
        return false;
    /* x's rows evenly spaced (`step` apart), elements contiguous */
    if (x->strides[nx - 1] != 1 && K > 1) return false;
    int64_t step = 0, span = 1;
    for (int d = nx - 2; d >= 0; d--) {
        if (x->shape[d] == 1) continue;
        if (step == 0) step = x->strides[d];
        if (x->strides[d] != step * span) return false;
        span *= x->shape[d];
    }
    return afo_cuda_gemv(afo_array_ptr(w), w->dtype, afo_array_ptr(x), x->dtype, step ? step : K, afo_array_ptr(out),
                         out->dtype, rows, N, K, fuse, afo_cuda_stream());
}

void afo_cuda_declined(afo_array *out) {
    afo_buffer_release(out->buf);
    out->buf = NULL;
}

/* The fused pairs of a decode step (afo_fused_fn), where the product takes
 * the GEMV kernel: out computed by gemv_case with `fuse`, or *done left
 * false. */
static afo_status fused_gemv(afo_array *out, const afo_array *x, const afo_array *w, const afo_cuda_gemv_fusion *fuse,
                             const char *what, bool *done) {
    AFO_TRY(afo_array_alloc(out));
    if (!gemv_case(out, x, w, fuse)) {
        afo_cuda_declined(out);
        return AFO_OK;
    }
    *done = true;
    return afo_cuda_launched(what);
}

const afo_array *afo_cuda_residual(const afo_array *out, afo_array *const *in, int producer) {
    const afo_array *m = in[producer], *r = in[1 - producer];
    bool fits = out->dtype == m->dtype && r->size == out->size && m->size == out->size && r->contiguous &&
                is_half_or_float(r->dtype);
    return fits ? r : NULL;
}

/* out = r + x W^T: the residual joins the GEMV's float sums. */
static afo_status residual_product(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    (void)nin;
    const afo_array *m = in[producer], *r = afo_cuda_residual(out, in, producer);
    /* a product taking its own input along (a norm) runs with its own pair */
    if (!r || m->in[0]->deferred || m->in[1]->deferred) return AFO_OK;
    afo_cuda_gemv_fusion fuse = {.addend = {afo_array_ptr(r), r->dtype}};
    return fused_gemv(out, m->in[0], m->in[1], &fuse, "matmul + add", done);
}

const afo_array *afo_cuda_norm_input(afo_array *const *in, int producer, const afo_array **weight) {
    const afo_array *norm = in[0];
    if (producer != 0 || norm->nin != 2 || !norm->attrs.i[AFO_NORM_I_HAS_WEIGHT]) return NULL;
    const afo_array *x = norm->in[0], *w = norm->in[1];
    if (!x->contiguous || !w->contiguous || w->dtype != x->dtype || x->size != w->size) return NULL;
    *weight = w;
    return x;
}

/* out = rms_norm(x, weight) W^T for one row x, normalized inside the GEMV. */
static afo_status normed_product(afo_array *out, afo_array *const *in, int nin, int producer, bool *done) {
    (void)nin;
    const afo_array *norm = in[0], *weight, *x = afo_cuda_norm_input(in, producer, &weight);
    if (!x) return AFO_OK;
    afo_array xv = *x; /* x seen as the norm's output: the same dtype, the norm's shape */
    xv.ndim = norm->ndim;
    for (int d = 0; d < norm->ndim; d++) xv.shape[d] = norm->shape[d];
    afo_contiguous_strides(xv.ndim, xv.shape, xv.strides);
    afo_cuda_gemv_fusion fuse = {.norm_weight = afo_array_ptr(weight), .eps = norm->attrs.f[AFO_NORM_F_EPS]};
    return fused_gemv(out, &xv, in[1], &fuse, "rms_norm + matmul", done);
}

static afo_status matmul_kernel(afo_array *out, afo_array *const *in, int nin, const afo_attrs *attrs) {
    AFO_TRY(afo_array_alloc(out));
    return afo_cuda_matmul(out, in[0], in[1]);
}

afo_status afo_cuda_matmul(afo_array *out, const afo_array *a, const afo_array *b) {
    afo_array *in[2] = {(afo_array *)a, (afo_array *)b}; /* only read */
    if (out->size == 0) return AFO_OK;
    if (gemv_case(out, a, b, NULL)) return afo_cuda_launched("matmul");
    int nd = out->ndim;
    gemm g = {.out = out, .M = out->shape[nd - 2], .N = out->shape[nd - 1], .K = in[0]->shape[in[0]->ndim - 1]};
    if (g.K == 0)
        return afo_cuda_status(cudaMemsetAsync(afo_array_ptr(out), 0, afo_array_nbytes(out), afo_cuda_stream()),
                               "matmul");
    if (g.M > INT_MAX || g.N > INT_MAX || g.K > INT_MAX)
        return afo_error(AFO_ERR_UNSUPPORTED, "matmul: %lld x %lld x %lld exceeds cuBLAS's int sizes", (long long)g.M,
                         (long long)g.K, (long long)g.N);
    pthread_once(&g_once, init_handle);
    AFO_TRY(cublas_status(g_init_status, "initialisation"));
    /* cuBLAS multiplies one type: mixed operands meet in the result's */
    afo_dtype t = in[0]->dtype == in[1]->dtype ? in[0]->dtype : out->dtype;
    afo_array view[2];
    afo_buffer *scratch[2] = {NULL, NULL};
    afo_status st = AFO_OK;
    for (int i = 0; i < 2 && st == AFO_OK; i++) {
        cublasOperation_t op;
        int64_t ld;
        view[i] = *in[i];
        if (in[i]->dtype != t || !layout(in[i], &op, &ld)) st = afo_cuda_dense(in[i], t, &view[i], &scratch[i]);
    }
    if (st == AFO_OK) {
        g.a = &view[0], g.b = &view[1];
        layout(g.a, &g.opa, &g.lda);
        layout(g.b, &g.opb, &g.ldb);
        pthread_mutex_lock(&g_lock);
        st = run(&g);
        pthread_mutex_unlock(&g_lock);
    }
    /* the stream orders the GEMMs before any reuse of the copies */
    for (int i = 0; i < 2; i++)
        if (scratch[i]) afo_buffer_release(scratch[i]);
    return st == AFO_OK ? afo_cuda_launched("matmul") : st;
}

void afo_cuda_register_linalg(void) {
    afo_op_set_kernel(AFO_OP_MATMUL, AFO_CUDA, matmul_kernel);
    afo_op_set_fused(AFO_CUDA, AFO_OP_ADD, AFO_OP_MATMUL, residual_product);
    afo_op_set_fused(AFO_CUDA, AFO_OP_MATMUL, AFO_OP_RMS_NORM, normed_product);
}
