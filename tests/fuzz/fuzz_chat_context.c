/* libFuzzer target: the JSON context a template renders, against every
 * template of the chat cases (parsed once). */
#include <stdlib.h>

#include <afo/afo.h>

#include "chat_template_cases.h"
#include "fuzz.h"

#define NCASES (sizeof CHAT_CASES / sizeof CHAT_CASES[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static afo_chat_template *templates[NCASES];
    static bool parsed;
    if (!parsed) {
        for (size_t i = 0; i < NCASES; i++) templates[i] = afo_chat_template_parse(CHAT_CASES[i].template_);
        parsed = true;
    }
    char *context = fuzz_string(data, size);
    for (size_t i = 0; i < NCASES; i++) {
        char *out = NULL;
        if (templates[i] && afo_chat_template_render(templates[i], context, &out) == AFO_OK) free(out);
    }
    free(context);
    return 0;
}
