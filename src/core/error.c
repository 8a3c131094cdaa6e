#include <stdarg.h>
#include <stdio.h>

#include "core/internal.h"

static _Thread_local char t_error[1024];
static _Thread_local afo_status t_status;

const char *afo_last_error(void) { return t_error; }

afo_status afo_last_status(void) { return t_status; }

void afo_clear_error(void) {
    t_error[0] = '\0';
    t_status = AFO_OK;
}

static void set_error(afo_status status, const char *fmt, va_list ap) {
    t_status = status;
    vsnprintf(t_error, sizeof t_error, fmt, ap);
}

afo_status afo_error(afo_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error(status, fmt, ap);
    va_end(ap);
    return status;
}

void *afo_error_null(afo_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error(status, fmt, ap);
    va_end(ap);
    return NULL;
}

const char *afo_status_name(afo_status s) {
    switch (s) {
    case AFO_OK: return "ok";
    case AFO_ERR_INVALID_ARGUMENT: return "invalid argument";
    case AFO_ERR_OUT_OF_MEMORY: return "out of memory";
    case AFO_ERR_IO: return "i/o error";
    case AFO_ERR_FORMAT: return "malformed input";
    case AFO_ERR_UNSUPPORTED: return "unsupported";
    case AFO_ERR_INTERNAL: return "internal error";
    case AFO_ERR_REJECTED: return "rejected";
    }
    return "unknown status";
}

const char *afo_version(void) { return "0.1.0"; }
