/* Opening a 1 GiB safetensors file is zero-copy: no read of tensor data, no
 * anonymous memory, until elements are touched. The file is sparse, so the
 * test costs no disk. */
#include <afo/afo.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/test.h"

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return kib;
}

static void test_one_gib_open_is_free(void) {
    char path[] = "/tmp/afo-mmap-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    const int64_t rows = 16384, cols = 16384; /* 1 GiB of float32 */
    char header[128];
    int len = snprintf(header, sizeof header,
                       "{\"w\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[0,%lld]}}",
                       (long long)rows, (long long)cols, (long long)(rows * cols * 4));
    while (len % 8) header[len++] = ' ';
    uint64_t n = (uint64_t)len;
    CHECK(write(fd, &n, 8) == 8 && write(fd, header, (size_t)len) == len);
    CHECK(ftruncate(fd, 8 + len + rows * cols * 4) == 0);
    close(fd);

    size_t active0 = afo_get_active_memory(), mapped0 = afo_get_mapped_memory();
    long rss0 = rss_kib();
    afo_weights *w = afo_weights_open(path);
    CHECK_MSG(w != NULL, "%s", afo_last_error());
    afo_array *t = w ? afo_weights_get(w, "w") : NULL;
    CHECK(t && afo_array_size(t) == rows * cols);
    long rss1 = rss_kib();
    CHECK(afo_get_active_memory() == active0);
    CHECK(afo_get_mapped_memory() - mapped0 >= (size_t)(rows * cols * 4));
    CHECK_MSG(rss1 - rss0 < 8 * 1024, "opening grew RSS by %ld KiB", rss1 - rss0);
    /* touching one row reads only that row */
    afo_array *row = t ? afo_slice_axis(t, 0, 777, 778) : NULL;
    afo_array *s = row ? afo_sum(row, NULL, 0, 0) : NULL;
    double v = -1;
    CHECK(s && afo_array_item(s, &v) == AFO_OK && v == 0.0);
    CHECK_MSG(rss_kib() - rss0 < 8 * 1024, "reading a row grew RSS by %ld KiB", rss_kib() - rss0);
    afo_release(s), afo_release(row), afo_release(t);
    afo_weights_close(w);
    CHECK(afo_get_mapped_memory() == mapped0);
    unlink(path);
}

int main(void) {
    RUN(test_one_gib_open_is_free);
    return test_finish();
}
