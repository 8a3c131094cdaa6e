/* Whole files into memory: the one reader behind configs, indexes, JSON and
 * tokenizer files. It reads until end of file rather than trusting a size
 * taken beforehand, so a file that changes underneath is read as it ends. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/internal.h"

afo_status afo_read_file(const char *path, size_t max_bytes, bool missing_ok, char **text, size_t *len) {
    *text = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (missing_ok && errno == ENOENT) return AFO_OK;
        return afo_error(AFO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    afo_status st = AFO_OK;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            char *grown = realloc(buf, cap + 1);
            if (!grown) {
                st = afo_error(AFO_ERR_OUT_OF_MEMORY, "%s: out of memory reading", path);
                break;
            }
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (max_bytes && n > max_bytes) {
            st = afo_error(AFO_ERR_FORMAT, "%s: more than %zu bytes, too large for what it should hold", path,
                           max_bytes);
            break;
        }
        if (got == 0) break;
    }
    if (st == AFO_OK && ferror(f)) st = afo_error(AFO_ERR_IO, "%s: read error", path);
    fclose(f);
    if (st != AFO_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *text = buf;
    if (len) *len = n;
    return AFO_OK;
}
