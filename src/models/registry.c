/* Architectures by model_type. */
#include <stdio.h>

#include "models/models.h"

static const arch_desc *const ARCHS[] = {
    &arch_llama, &arch_mistral, &arch_qwen2, &arch_qwen3, &arch_qwen3_moe, &arch_gemma3_text, &arch_gemma3, &arch_phi3,
};
#define NARCHS (int)(sizeof ARCHS / sizeof *ARCHS)

const arch_desc *arch_find(const char *model_type) {
    for (int i = 0; i < NARCHS; i++)
        if (strcmp(ARCHS[i]->model_type, model_type) == 0) return ARCHS[i];
    char list[256] = "";
    size_t len = 0;
    for (int i = 0; i < NARCHS; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", ARCHS[i]->model_type);
    return afo_error_null(AFO_ERR_UNSUPPORTED, "model_type \"%s\" is not supported (supported: %s)", model_type, list);
}
