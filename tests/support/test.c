#define _GNU_SOURCE /* nftw */
#include "support/test.h"
#include "afo/afo.h"

#include <string.h>
#include <unistd.h>
#include <ftw.h>

int test_failures, test_checks;
static uint64_t g_state = 0x9e3779b97f4a7c15ull;

int test_finish(void) {
    int passed = test_checks - test_failures;
    printf("%d passed, %d failed\n", passed, test_failures);
    return test_failures ? 1 : 0;
}

bool test_selected(const char *name) {
    const char *only = getenv("AFO_TEST_ONLY");
    if (!only || !*only) return true;
    for (const char *p = only; *p;) {
        size_t n = strcspn(p, ",");
        for (const char *at = name; n > 0 && *at; at++)
            if (strncmp(at, p, n) == 0) return true;
        p += n + (p[n] == ',');
    }
    return false;
}

void test_seed(uint64_t seed) { g_state = seed ? seed : 0x9e3779b97f4a7c15ull; }

uint64_t test_rand_u64(void) {
    g_state ^= g_state << 13;
    g_state ^= g_state >> 7;
    g_state ^= g_state << 17;
    return g_state;
}

double test_uniform(double lo, double hi) {
    return lo + (hi - lo) * (double)(test_rand_u64() >> 11) / 9007199254740992.0;
}

double test_normal(void) {
    double u1 = test_uniform(1e-12, 1.0), u2 = test_uniform(0.0, 1.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

const char *test_shared_path(const char *rel, char *buf, size_t n) {
    const char *root = getenv("AFO_SHARED_DIR");
    if (!root) root = "../shared";
    snprintf(buf, n, "%s/%s", root, rel);
    if (access(buf, R_OK) != 0) {
        fprintf(stderr, "SKIP: fixture %s not found (set AFO_SHARED_DIR to the shared/ folder)\n", buf);
        return NULL;
    }
    return buf;
}

/* AFO_TEST_DEVICE=cuda runs a whole test program with that default device,
 * so every test doubles as a differential test of the backend against the
 * references it already checks. */
__attribute__((constructor)) static void test_device_from_env(void) {
    const char *name = getenv("AFO_TEST_DEVICE");
    if (!name || !*name) return;
    int d = afo_device_from_name(name);
    if (d < 0 || afo_set_default_device((afo_device)d) != AFO_OK) {
        fprintf(stderr, "AFO_TEST_DEVICE=%s: %s\n", name, d < 0 ? "unknown device" : afo_last_error());
        exit(1);
    }
}

const char *test_temp_dir(const char *name, char *buf, size_t n) {
    snprintf(buf, n, "/tmp/afo-%s-XXXXXX", name);
    if (mkdtemp(buf)) return buf;
    perror("mkdtemp");
    return NULL;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void test_remove_tree(const char *dir) {
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) fprintf(stderr, "could not remove %s\n", dir);
}
