/* Minimal test harness: CHECK macros that count failures, a seeded RNG, and
 * the "N passed, N failed" closing line. */
#ifndef AFO_TEST_H
#define AFO_TEST_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

extern int test_failures, test_checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        test_checks++;                                                               \
        if (!(cond)) {                                                               \
            test_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_MSG(cond, ...)                                                   \
    do {                                                                       \
        test_checks++;                                                         \
        if (!(cond)) {                                                         \
            test_failures++;                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

/* Whether the test function `name` runs: all of them, unless
 * AFO_TEST_ONLY lists comma-separated parts of the names to run (for
 * instance one test under compute-sanitizer, which is slow). */
bool test_selected(const char *name);

/* Runs a test function and reports it. */
#define RUN(fn)                                   \
    do {                                          \
        if (!test_selected(#fn)) break;           \
        int before_ = test_failures;              \
        fn();                                     \
        fprintf(stderr, "%-40s %s\n", #fn, test_failures == before_ ? "ok" : "FAILED"); \
    } while (0)

/* Prints the closing line and returns the process exit code. */
int test_finish(void);

/* Deterministic xorshift RNG for test inputs. */
uint64_t test_rand_u64(void);
void test_seed(uint64_t seed);
double test_uniform(double lo, double hi);
double test_normal(void);

/* A new empty directory /tmp/afo-NAME-XXXXXX, its path in buf (at least
 * 64 bytes); NULL, after printing why, when it cannot be made. */
const char *test_temp_dir(const char *name, char *buf, size_t n);
/* Removes a directory and everything below it (a test's scratch space). */
void test_remove_tree(const char *dir);

/* Path under the shared fixtures directory (AFO_SHARED_DIR or ../shared);
 * returns NULL, after printing a skip message, when it does not exist. */
const char *test_shared_path(const char *rel, char *buf, size_t n);

#endif
