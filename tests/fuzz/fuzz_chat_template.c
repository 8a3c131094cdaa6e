/* libFuzzer target: a chat template's source, parsed and rendered in the
 * chat cases' context. Any input must give a template or an error, never
 * a crash, a leak or undefined behaviour (build: README, "Fuzzing"). */
#include <stdlib.h>
#include <string.h>

#include <afo/afo.h>

#include "chat_template_cases.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *source = fuzz_string(data, size);
    afo_chat_template *t = afo_chat_template_parse(source);
    if (t) {
        char *out = NULL;
        if (afo_chat_template_render(t, CHAT_CASES_CONTEXT, &out) == AFO_OK) free(out);
        afo_chat_template_free(t);
    }
    free(source);
    return 0;
}
