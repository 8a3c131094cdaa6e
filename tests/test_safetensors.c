/* Safetensors: shared fixtures, a real bf16 model, save/open round trips,
 * sharded models, and malformed files that must fail cleanly. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "afo/afo.h"
#include "core/internal.h"
#include "support/test.h"

static char g_dir[64];

static const char *tmp_path(const char *name, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}


static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* A safetensors file: length prefix, header as given, data_bytes of 0..n. */
static void write_st(const char *path, const char *header, size_t data_bytes) {
    size_t hl = strlen(header), n = 8 + hl + data_bytes;
    unsigned char *buf = calloc(1, n);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_bytes; i++) buf[8 + hl + i] = (unsigned char)i;
    write_bytes(path, buf, n);
    free(buf);
}

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

/* ------------------------------------------------------------ fixtures */

typedef struct fixture {
    const char *file;
    afo_dtype dtype;
    int ndim;
    int64_t shape[4];
    double values[18];
} fixture;

static const fixture g_fixtures[] = {
    {"tensor-1d-int32.safetensors", AFO_INT32, 1, {3}, {1, 2, 3}},
    {"tensor-2d-float64.safetensors", AFO_FLOAT64, 2, {2, 3}, {1, 2, 3, 24, 25, 26}},
    {"tensor-3d-float32.safetensors", AFO_FLOAT32, 3, {2, 2, 3}, {22, 23, 24, 11, 12, 13, 2, 3, 4, 1, 2, 3}},
    {"tensor-4d-float32.safetensors", AFO_FLOAT32, 4, {2, 3, 1, 3},
     {11, 12, 13, 1, 2, 3, 4, 5, 6, 22, 23, 24, 15, 16, 17, 17, 18, 19}},
};

static void check_fixture(const fixture *fx) {
    char rel[128], buf[512];
    snprintf(rel, sizeof rel, "fixtures/safetensors/%s", fx->file);
    const char *path = test_shared_path(rel, buf, sizeof buf);
    if (!path) return;
    afo_weights *w = afo_weights_open(path);
    CHECK_MSG(w, "%s: %s", fx->file, afo_last_error());
    if (!w) return;
    CHECK(afo_weights_count(w) == 1);
    CHECK(strcmp(afo_weights_name(w, 0), "embedding") == 0);
    afo_array *a = afo_weights_get(w, "embedding");
    afo_weights_close(w);
    CHECK(a && afo_array_dtype(a) == fx->dtype && afo_array_ndim(a) == fx->ndim);
    if (!a) return;
    for (int d = 0; d < fx->ndim; d++) CHECK(afo_array_shape(a)[d] == fx->shape[d]);
    double got[18];
    int64_t n = afo_array_size(a);
    CHECK(afo_array_read(a, AFO_FLOAT64, got, sizeof got) == AFO_OK);
    for (int64_t i = 0; i < n; i++) CHECK_MSG(got[i] == fx->values[i], "%s[%lld]", fx->file, (long long)i);
    /* The bytes must be the file's own data section, read here without the
     * parser (every fixture's single tensor starts at data offset 0). */
    size_t size;
    unsigned char *raw = NULL;
    afo_read_file(path, 0, false, (char **)&raw, &size);
    size_t start = 8 + (size_t)le64(raw), nbytes = afo_array_nbytes(a);
    CHECK(start + nbytes <= size && memcmp(afo_array_data(a), raw + start, nbytes) == 0);
    free(raw);
    afo_release(a);
}

static void test_fixtures(void) {
    for (size_t i = 0; i < sizeof g_fixtures / sizeof g_fixtures[0]; i++) check_fixture(&g_fixtures[i]);
}

static void test_tiny_model(void) {
    char buf[512];
    const char *path = test_shared_path("fixtures/models/tiny-classics/model.safetensors", buf, sizeof buf);
    if (!path) return;
    struct stat st;
    stat(path, &st);
    size_t active = afo_get_active_memory(), mapped = afo_get_mapped_memory();
    afo_weights *w = afo_weights_open(path);
    CHECK_MSG(w, "%s", afo_last_error());
    if (!w) return;
    CHECK(afo_weights_count(w) == 56);
    CHECK(afo_weights_metadata(w, "format") && strcmp(afo_weights_metadata(w, "format"), "pt") == 0);
    CHECK(afo_weights_metadata(w, "absent") == NULL);
    CHECK(afo_get_mapped_memory() == mapped + (size_t)st.st_size);
    afo_array *arrays[56] = {0};
    for (int i = 0; i < 56; i++) {
        const char *name = afo_weights_name(w, i);
        CHECK(i == 0 || strcmp(afo_weights_name(w, i - 1), name) < 0);
        arrays[i] = afo_weights_get(w, name);
        CHECK(arrays[i] && afo_array_dtype(arrays[i]) == AFO_BFLOAT16);
    }
    CHECK(afo_get_active_memory() == active);
    afo_weights_close(w);
    /* Arrays outlive the table: the mapping stays until the last one goes. */
    CHECK(afo_get_mapped_memory() == mapped + (size_t)st.st_size);
    CHECK(afo_array_data(arrays[0]) != NULL);
    for (int i = 0; i < 56; i++) afo_release(arrays[i]);
    CHECK(afo_get_mapped_memory() == mapped);
    CHECK(afo_weights_get(NULL, "x") == NULL);
}

/* ------------------------------------------------------------ round trips */

enum { NDT = AFO_DTYPE_COUNT };
static const char *const g_dt_names[NDT] = {"bool", "i8", "u8", "i32", "u32", "i64", "f16", "bf16", "f32", "f64"};

/* Six elements of each dtype with values that use the whole element. */
static void dtype_bytes(afo_dtype t, unsigned char *out) {
    size_t es = afo_dtype_size(t);
    for (int i = 0; i < 6; i++) {
        double v = (i - 2) * 37.25;
        union {
            uint8_t u8;
            int8_t i8;
            int32_t i32;
            uint32_t u32;
            int64_t i64;
            uint16_t half;
            float f32;
            double f64;
        } e;
        switch (t) {
        case AFO_BOOL: e.u8 = (uint8_t)(i % 2); break;
        case AFO_INT8: e.i8 = (int8_t)(i * 50 - 128); break;
        case AFO_UINT8: e.u8 = (uint8_t)(250 + i); break;
        case AFO_INT32: e.i32 = -2000000000 + i * 123456789; break;
        case AFO_UINT32: e.u32 = 4000000000u + (uint32_t)i; break;
        case AFO_INT64: e.i64 = ((int64_t)1 << 50) * (i - 3) + i; break;
        case AFO_FLOAT16: e.half = afo_f32_to_f16((float)v); break;
        case AFO_BFLOAT16: e.half = afo_f32_to_bf16((float)v); break;
        case AFO_FLOAT32: e.f32 = (float)v + 0.1f; break;
        default: e.f64 = v + 1e-9; break;
        }
        memcpy(out + (size_t)i * es, &e, es);
    }
}

static bool same_bytes(afo_weights *w, const char *name, afo_dtype dtype, int ndim, const int64_t *shape,
                       const void *expect) {
    afo_array *a = afo_weights_get(w, name);
    bool ok = a && afo_array_dtype(a) == dtype && afo_array_ndim(a) == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = afo_array_shape(a)[d] == shape[d];
    size_t nbytes = ok ? afo_array_nbytes(a) : 0;
    ok = ok && (nbytes == 0 || memcmp(afo_array_data(a), expect, nbytes) == 0);
    afo_release(a);
    return ok;
}

/* Transposed, sliced, broadcast, scalar and empty arrays beside one 2x3
 * array per dtype, saved in scrambled order with metadata. */
static void test_roundtrip(void) {
    const int64_t s23[2] = {2, 3}, s34[2] = {3, 4}, s02[2] = {0, 2}, s22[2] = {2, 2};
    unsigned char bytes[NDT][48];
    afo_array *arrays[NDT + 5];
    const char *names[NDT + 5];
    for (int t = NDT - 1; t >= 0; t--) {
        dtype_bytes((afo_dtype)t, bytes[t]);
        arrays[NDT - 1 - t] = afo_array_from_data(bytes[t], (afo_dtype)t, 2, s23);
        names[NDT - 1 - t] = g_dt_names[t];
    }
    afo_array *range = afo_arange(0, 1, 12, AFO_FLOAT32);
    afo_array *base = afo_reshape(range, 2, s34);
    afo_release(range);
    arrays[NDT] = afo_transpose(base, NULL);
    arrays[NDT + 1] = afo_slice(base, (int64_t[]){0, 1}, (int64_t[]){3, 4}, (int64_t[]){2, 2});
    arrays[NDT + 2] = afo_full(7, AFO_INT32, 2, s22);
    arrays[NDT + 3] = afo_scalar(-1.5, AFO_FLOAT64);
    arrays[NDT + 4] = afo_zeros(AFO_INT8, 2, s02);
    const char *extra[] = {"t.transposed", "t.sliced", "t.broadcast", "t.scalar", "t.empty"};
    for (int i = 0; i < 5; i++) names[NDT + i] = extra[i];
    const char *keys[] = {"format", "quote\"key"}, *values[] = {"pt", "line\nbreak"};
    char path[128];
    tmp_path("roundtrip.safetensors", path, sizeof path);
    CHECK_MSG(afo_safetensors_save(path, NDT + 5, names, arrays, 2, keys, values) == AFO_OK, "%s", afo_last_error());

    afo_weights *w = afo_weights_open(path);
    CHECK_MSG(w, "%s", afo_last_error());
    if (w) {
        CHECK(afo_weights_count(w) == NDT + 5);
        for (int i = 1; i < afo_weights_count(w); i++)
            CHECK(strcmp(afo_weights_name(w, i - 1), afo_weights_name(w, i)) < 0);
        /* Mixed dtypes laid out by the writer all load aligned: no copies. */
        size_t active = afo_get_active_memory();
        afo_array *held[NDT + 5];
        for (int i = 0; i < NDT + 5; i++) held[i] = afo_weights_get(w, afo_weights_name(w, i));
        CHECK(afo_get_active_memory() == active);
        for (int i = 0; i < NDT + 5; i++) afo_release(held[i]);
        for (int t = 0; t < NDT; t++)
            CHECK_MSG(same_bytes(w, g_dt_names[t], (afo_dtype)t, 2, s23, bytes[t]), "%s", g_dt_names[t]);
        float tr[12], sl[4] = {1, 3, 9, 11};
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 3; j++) tr[i * 3 + j] = (float)(j * 4 + i);
        int32_t sevens[4] = {7, 7, 7, 7};
        double scalar = -1.5;
        CHECK(same_bytes(w, "t.transposed", AFO_FLOAT32, 2, (int64_t[]){4, 3}, tr));
        CHECK(same_bytes(w, "t.sliced", AFO_FLOAT32, 2, (int64_t[]){2, 2}, sl));
        CHECK(same_bytes(w, "t.broadcast", AFO_INT32, 2, s22, sevens));
        CHECK(same_bytes(w, "t.scalar", AFO_FLOAT64, 0, NULL, &scalar));
        CHECK(same_bytes(w, "t.empty", AFO_INT8, 2, s02, ""));
        CHECK(afo_weights_metadata(w, "format") && strcmp(afo_weights_metadata(w, "format"), "pt") == 0);
        CHECK(afo_weights_metadata(w, "quote\"key") &&
              strcmp(afo_weights_metadata(w, "quote\"key"), "line\nbreak") == 0);
        CHECK(afo_weights_get(w, "nope") == NULL && strstr(afo_last_error(), "tensor \"nope\" not found in") &&
              strstr(afo_last_error(), "roundtrip.safetensors"));
        afo_weights_close(w);
    }
    /* Header as the reference writer lays it out: padded to 8 bytes with
     * spaces, metadata first, names sorted. */
    size_t size;
    unsigned char *raw = NULL;
    afo_read_file(path, 0, false, (char **)&raw, &size);
    uint64_t hl = le64(raw);
    CHECK(hl % 8 == 0 && hl + 8 <= size);
    CHECK(memcmp(raw + 8, "{\"__metadata__\":{", 17) == 0);
    const char *h = (const char *)raw + 8;
    CHECK(strstr(h, "\"bf16\"") < strstr(h, "\"bool\"") && strstr(h, "\"bool\"") < strstr(h, "\"f16\""));
    free(raw);
    afo_release(base);
    for (int i = 0; i < NDT + 5; i++) afo_release(arrays[i]);
    CHECK(count_tmp_files(g_dir) == 0);
}

/* A tensor whose element size does not divide its file offset is valid but
 * is handed out as an aligned copy. */
static void test_misaligned(void) {
    char path[128];
    tmp_path("misaligned.safetensors", path, sizeof path);
    const char *header = "{\"pad\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                         "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}    ";
    size_t hl = strlen(header);
    CHECK((8 + hl + 2) % 4 != 0);
    unsigned char buf[256] = {0};
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    float x[2] = {1.5f, -2.25f};
    memcpy(buf + 8 + hl + 2, x, sizeof x);
    write_bytes(path, buf, 8 + hl + 10);
    afo_weights *w = afo_weights_open(path);
    CHECK_MSG(w, "%s", afo_last_error());
    if (!w) return;
    size_t active = afo_get_active_memory();
    afo_array *a = afo_weights_get(w, "x");
    CHECK(afo_get_active_memory() > active);
    const float *p = a ? afo_array_data(a) : NULL;
    CHECK(p && (uintptr_t)p % 4 == 0 && p[0] == 1.5f && p[1] == -2.25f);
    afo_release(a);
    afo_weights_close(w);
}

/* ------------------------------------------------------------ sharded */

static void save_one(const char *path, int n, const char *const *names, const float *first_values) {
    afo_array *arrays[4];
    for (int i = 0; i < n; i++) arrays[i] = afo_full(first_values[i], AFO_FLOAT32, 1, (int64_t[]){3});
    CHECK_MSG(afo_safetensors_save(path, n, names, arrays, 0, NULL, NULL) == AFO_OK, "%s", afo_last_error());
    for (int i = 0; i < n; i++) afo_release(arrays[i]);
}

static void check_value(afo_weights *w, const char *name, float v) {
    afo_array *a = afo_weights_get(w, name);
    const float *p = a ? afo_array_data(a) : NULL;
    CHECK_MSG(p && p[0] == v && p[2] == v, "%s", name);
    afo_release(a);
}

static const char *const g_shard1[] = {"layer.0.w", "layer.1.w"}, *const g_shard2[] = {"embed", "norm"};

/* Two shards written by afo, the index written by hand. */
static void make_sharded(const char *dir, const char *index_json) {
    char path[160];
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    save_one(path, 2, g_shard1, (float[]){1, 2});
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    save_one(path, 2, g_shard2, (float[]){3, 4});
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_bytes(path, index_json, strlen(index_json));
}

static const char g_good_index[] =
    "{\"metadata\":{\"total_size\":48},\"weight_map\":{"
    "\"layer.0.w\":\"model-00001-of-00002.safetensors\",\"layer.1.w\":\"model-00001-of-00002.safetensors\","
    "\"embed\":\"model-00002-of-00002.safetensors\",\"norm\":\"model-00002-of-00002.safetensors\"}}";

static void check_sharded(afo_weights *w) {
    CHECK_MSG(w, "%s", afo_last_error());
    if (!w) return;
    CHECK(afo_weights_count(w) == 4);
    CHECK(strcmp(afo_weights_name(w, 0), "embed") == 0 && strcmp(afo_weights_name(w, 3), "norm") == 0);
    check_value(w, "layer.0.w", 1);
    check_value(w, "layer.1.w", 2);
    check_value(w, "embed", 3);
    check_value(w, "norm", 4);
    afo_weights_close(w);
}

static void test_sharded(void) {
    char dir[128], path[192];
    tmp_path("sharded", dir, sizeof dir);
    make_sharded(dir, g_good_index);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    check_sharded(afo_weights_open(path));
    check_sharded(afo_weights_open(dir));
    /* Without an index, a directory means all of its *.safetensors. */
    unlink(path);
    check_sharded(afo_weights_open(dir));
    /* model.safetensors wins over other files in the directory. */
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    save_one(path, 1, (const char *[]){"only"}, (float[]){9});
    afo_weights *w = afo_weights_open(dir);
    CHECK(w && afo_weights_count(w) == 1);
    CHECK(afo_weights_name(w, 1) == NULL && afo_weights_name(w, -1) == NULL);
    afo_weights_close(w);
    /* Without an index nothing says which of two copies of a name to use. */
    tmp_path("dup-across-files", dir, sizeof dir);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    save_one(path, 1, (const char *[]){"x"}, (float[]){1});
    snprintf(path, sizeof path, "%s/b.safetensors", dir);
    save_one(path, 1, (const char *[]){"x"}, (float[]){2});
    CHECK(afo_weights_open(dir) == NULL && strstr(afo_last_error(), "tensor \"x\" appears in both") &&
          strstr(afo_last_error(), "a.safetensors") && strstr(afo_last_error(), "b.safetensors"));
    tmp_path("empty-dir", dir, sizeof dir);
    mkdir(dir, 0755);
    CHECK(afo_weights_open(dir) == NULL && strstr(afo_last_error(), "empty-dir"));
    CHECK(afo_weights_open("/nonexistent/afo/model.safetensors") == NULL &&
          strstr(afo_last_error(), "cannot open"));
}

/* ------------------------------------------------------------ malformed */

static void expect_error(const char *path, const char *needle) {
    const char *file = strrchr(path, '/') + 1;
    afo_weights *w = afo_weights_open(path);
    CHECK_MSG(!w, "%s opened", file);
    afo_weights_close(w);
    CHECK_MSG(strstr(afo_last_error(), needle), "%s: expected \"%s\" in \"%s\"", file, needle, afo_last_error());
    CHECK_MSG(strstr(afo_last_error(), file), "%s: error does not name the file: \"%s\"", file, afo_last_error());
}

typedef struct bad_case {
    const char *label, *header, *needle;
    size_t data_bytes;
} bad_case;

#define T_(dtype, shape, offsets) "{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offsets "}"

static const bad_case g_bad[] = {
    {"invalid-json", "{\"t\":", "not valid JSON", 0},
    {"not-object", "[1,2,3]", "header JSON is not an object", 0},
    {"trailing-bytes", "{} x", "unexpected bytes after the header JSON", 0},
    {"entry-not-object", "{\"t\":5}", "tensor \"t\": entry is not an object", 0},
    {"missing-dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "tensor \"t\": missing \"dtype\"", 4},
    {"dtype-not-string", "{\"t\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}",
     "tensor \"t\": \"dtype\" is not a string", 4},
    {"unknown-dtype", "{\"t\":" T_("F33", "[1]", "[0,4]") "}", "tensor \"t\": unknown dtype \"F33\"", 4},
    {"unsupported-dtype", "{\"t\":" T_("F8_E4M3", "[4]", "[0,4]") "}", "tensor \"t\": unsupported dtype F8_E4M3", 4},
    {"unsupported-i16", "{\"t\":" T_("I16", "[2]", "[0,4]") "}", "unsupported dtype I16", 4},
    {"missing-shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "tensor \"t\": missing \"shape\"", 4},
    {"shape-not-array", "{\"t\":" T_("F32", "4", "[0,4]") "}", "\"shape\" is not an array", 4},
    {"negative-dim", "{\"t\":" T_("F32", "[-1]", "[0,4]") "}", "tensor \"t\": negative dimension -1", 4},
    {"fractional-dim", "{\"t\":" T_("F32", "[1.5]", "[0,4]") "}", "dimension 0 is not a non-negative integer", 4},
    {"string-dim", "{\"t\":" T_("F32", "[1,\"2\"]", "[0,8]") "}", "dimension 1 is not a non-negative integer", 8},
    {"too-many-dims", "{\"t\":" T_("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", "9 dimensions", 4},
    {"missing-offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", "missing \"data_offsets\"", 4},
    {"offsets-length", "{\"t\":" T_("F32", "[1]", "[0]") "}", "\"data_offsets\" is not an array [begin, end]", 4},
    {"offsets-not-int", "{\"t\":" T_("F32", "[1]", "[0,\"4\"]") "}", "\"data_offsets\" are not non-negative integers", 4},
    {"begin-after-end", "{\"t\":" T_("F32", "[0]", "[8,4]") "}", "data_offsets begin 8 > end 4", 8},
    {"size-mismatch", "{\"t\":" T_("F32", "[2]", "[0,4]") "}", "shape [2] of F32 needs 8 bytes but data_offsets span 4", 8},
    {"shape-overflow", "{\"t\":" T_("F32", "[4294967296,4294967296]", "[0,4]") "}", "overflows the size computation", 4},
    {"past-end", "{\"t\":" T_("F32", "[4]", "[0,16]") "}", "run past the 8-byte data section", 8},
    {"overlap", "{\"a\":" T_("F32", "[2]", "[0,8]") ",\"b\":" T_("F32", "[2]", "[4,12]") "}",
     "tensors \"a\" [0, 8] and \"b\" [4, 12] overlap", 12},
    {"duplicate-name", "{\"t\":" T_("F32", "[1]", "[0,4]") ",\"t\":" T_("F32", "[1]", "[4,8]") "}",
     "duplicate tensor name \"t\"", 8},
    {"metadata-not-string", "{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}", "__metadata__ value of \"n\" is not a string", 0},
    {"metadata-not-object", "{\"__metadata__\":[\"pt\"]}", "__metadata__ is not an object", 0},
    {"unknown-key", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"scale\":2}}",
     "tensor \"t\": unknown key \"scale\"", 4},
    {"repeated-key", "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
     "key \"dtype\" appears twice", 4},
};

static void test_malformed_headers(void) {
    char path[160];
    for (size_t i = 0; i < sizeof g_bad / sizeof g_bad[0]; i++) {
        const bad_case *c = &g_bad[i];
        char name[96];
        snprintf(name, sizeof name, "bad-%s.safetensors", c->label);
        tmp_path(name, path, sizeof path);
        write_st(path, c->header, c->data_bytes);
        expect_error(path, c->needle);
    }
}

/* Broken length prefixes, written byte by byte. */
static void test_malformed_prefix(void) {
    char path[160];
    write_bytes(tmp_path("bad-empty.safetensors", path, sizeof path), "", 0);
    expect_error(path, "file is 0 bytes, too short");
    write_bytes(tmp_path("bad-short.safetensors", path, sizeof path), "\x02\0\0\0\0", 5);
    expect_error(path, "file is 5 bytes, too short");
    unsigned char past[20] = {0xe8, 0x03}; /* 1000-byte header in a 20-byte file */
    write_bytes(tmp_path("bad-length-past-end.safetensors", path, sizeof path), past, sizeof past);
    expect_error(path, "header length 1000 exceeds the 12 bytes that follow it");
    unsigned char huge[16] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'}; /* 2^63 */
    write_bytes(tmp_path("bad-length-huge.safetensors", path, sizeof path), huge, sizeof huge);
    expect_error(path, "header length 9223372036854775808 exceeds the 100000000-byte limit");
    write_st(tmp_path("bad-empty-header.safetensors", path, sizeof path), "", 0);
    expect_error(path, "not valid JSON");
}

/* Indexes that disagree with their shards; each names index and shard. */
static void expect_index_error(const char *label, const char *json, const char *needle, const char *shard) {
    char dir[128], path[192];
    tmp_path(label, dir, sizeof dir);
    make_sharded(dir, json);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    expect_error(path, needle);
    CHECK_MSG(strstr(afo_last_error(), shard), "%s: expected \"%s\" in \"%s\"", label, shard, afo_last_error());
    /* The directory form reaches the same index and the same verdict. */
    CHECK(afo_weights_open(dir) == NULL && strstr(afo_last_error(), needle));
}

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

static void test_bad_index(void) {
    expect_index_error("idx-missing-shard",
                       "{\"weight_map\":{\"layer.0.w\":\"" SHARD1 "\",\"layer.1.w\":\"" SHARD1 "\","
                       "\"embed\":\"model-00003.safetensors\",\"norm\":\"" SHARD2 "\"}}",
                       "cannot open", "model-00003.safetensors");
    expect_index_error("idx-map-not-object", "{\"weight_map\":[\"" SHARD1 "\"]}", "\"weight_map\" is not an object",
                       "model.safetensors.index.json");
    expect_index_error("idx-invalid-json", "{\"weight_map\":{", "not valid JSON", "model.safetensors.index.json");
    expect_index_error("idx-absent-tensor",
                       "{\"weight_map\":{\"layer.0.w\":\"" SHARD1 "\",\"layer.1.w\":\"" SHARD1 "\","
                       "\"embed\":\"" SHARD2 "\",\"norm\":\"" SHARD2 "\",\"lm_head\":\"" SHARD2 "\"}}",
                       "weight_map assigns tensor \"lm_head\" to", SHARD2);
    expect_index_error("idx-unlisted-tensor",
                       "{\"weight_map\":{\"layer.0.w\":\"" SHARD1 "\",\"layer.1.w\":\"" SHARD1 "\","
                       "\"embed\":\"" SHARD2 "\"}}",
                       "tensor \"norm\" in", SHARD2);
    expect_index_error("idx-wrong-shard",
                       "{\"weight_map\":{\"layer.0.w\":\"" SHARD1 "\",\"layer.1.w\":\"" SHARD2 "\","
                       "\"embed\":\"" SHARD2 "\",\"norm\":\"" SHARD2 "\"}}",
                       "tensor \"layer.1.w\" is in", SHARD1);
    expect_index_error("idx-escaping-path", "{\"weight_map\":{\"embed\":\"../" SHARD2 "\"}}",
                       "not a file name in the same directory", "model.safetensors.index.json");
}

/* ------------------------------------------------------------ saving */

static void test_save_errors(void) {
    afo_array *x = afo_full(1, AFO_FLOAT32, 1, (int64_t[]){2});
    afo_array *xs[2] = {x, x};
    char path[160];
    tmp_path("no-such-dir/out.safetensors", path, sizeof path);
    CHECK(afo_safetensors_save(path, 1, (const char *[]){"x"}, xs, 0, NULL, NULL) == AFO_ERR_IO);
    CHECK(strstr(afo_last_error(), "out.safetensors") && strstr(afo_last_error(), "No such file"));
    CHECK(count_tmp_files(g_dir) == 0);
    tmp_path("args.safetensors", path, sizeof path);
    CHECK(afo_safetensors_save(path, 2, (const char *[]){"x", "x"}, xs, 0, NULL, NULL) == AFO_ERR_INVALID_ARGUMENT);
    CHECK(strstr(afo_last_error(), "tensor name \"x\" given twice"));
    CHECK(afo_safetensors_save(path, 1, (const char *[]){""}, xs, 0, NULL, NULL) == AFO_ERR_INVALID_ARGUMENT);
    CHECK(afo_safetensors_save(path, -1, NULL, NULL, 0, NULL, NULL) == AFO_ERR_INVALID_ARGUMENT);
    CHECK(afo_safetensors_save(path, 1, (const char *[]){"__metadata__"}, xs, 0, NULL, NULL) ==
          AFO_ERR_INVALID_ARGUMENT);
    CHECK(afo_safetensors_save(path, 1, (const char *[]){"x"}, xs, 2, (const char *[]){"k", "k"},
                               (const char *[]){"a", "b"}) == AFO_ERR_INVALID_ARGUMENT);
    CHECK(access(path, F_OK) != 0);
    /* Renaming onto a directory fails after the data is written: the
     * temporary file must go and the directory must stay. */
    tmp_path("a-directory", path, sizeof path);
    mkdir(path, 0755);
    CHECK(afo_safetensors_save(path, 1, (const char *[]){"x"}, xs, 0, NULL, NULL) == AFO_ERR_IO);
    struct stat st;
    CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK(count_tmp_files(g_dir) == 0);
    afo_release(x);
}

/* Saving over a file replaces it whole; arrays mapped from the old file
 * keep their data (they hold the old inode). */
static void test_save_replace(void) {
    char path[160];
    tmp_path("replace.safetensors", path, sizeof path);
    save_one(path, 1, (const char *[]){"v"}, (float[]){1});
    afo_weights *w = afo_weights_open(path);
    afo_array *old = w ? afo_weights_get(w, "v") : NULL;
    afo_weights_close(w);
    save_one(path, 2, (const char *[]){"v", "extra"}, (float[]){2, 3});
    w = afo_weights_open(path);
    CHECK_MSG(w && afo_weights_count(w) == 2, "%s", afo_last_error());
    if (w) check_value(w, "v", 2);
    afo_weights_close(w);
    const float *p = old ? afo_array_data(old) : NULL;
    CHECK(p && p[0] == 1);
    afo_release(old);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
    CHECK(count_tmp_files(g_dir) == 0);
}

int main(void) {
    if (!test_temp_dir("safetensors", g_dir, sizeof g_dir)) return 1;
    RUN(test_fixtures);
    RUN(test_tiny_model);
    RUN(test_roundtrip);
    RUN(test_misaligned);
    RUN(test_sharded);
    RUN(test_malformed_headers);
    RUN(test_malformed_prefix);
    RUN(test_bad_index);
    RUN(test_save_errors);
    RUN(test_save_replace);
    test_remove_tree(g_dir);
    return test_finish();
}
