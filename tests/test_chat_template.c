/* Chat templates: transformers' own renders of real models' templates (the
 * shared fixtures, exact to the byte), the Jinja engine construct by
 * construct against Jinja's output, and malformed or hostile templates,
 * which must fail with a clear error and never crash or hang. */
#include <afo/afo.h>
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat_template_cases.h"
#include "support/test.h"

/* 2026-11-26 12:00:00 UTC: the day the fixtures were rendered, noon so that
 * any time zone still sees that date. */
#define FIXTURE_DAY 1795694400

/* Renders tmpl in ctx; NULL on failure with *st set. */
static char *render(const char *tmpl, const char *ctx, afo_status *st) {
    afo_chat_template *t = afo_chat_template_parse(tmpl);
    if (!t) {
        *st = afo_last_status();
        return NULL;
    }
    char *out = NULL;
    *st = afo_chat_template_render(t, ctx, &out);
    afo_chat_template_free(t);
    return out;
}

static void test_constructs(void) {
    int passed = 0, n = (int)(sizeof CHAT_CASES / sizeof *CHAT_CASES);
    for (int i = 0; i < n; i++) {
        afo_status st;
        char *out = render(CHAT_CASES[i].template_, CHAT_CASES_CONTEXT, &st);
        bool ok = out && strcmp(out, CHAT_CASES[i].want) == 0;
        CHECK_MSG(ok, "case %d: %s\n  want: %s\n  got:  %s", i, CHAT_CASES[i].template_, CHAT_CASES[i].want,
                  out ? out : afo_last_error());
        passed += ok;
        free(out);
    }
    fprintf(stderr, "  Jinja constructs: %d/%d render as Jinja does\n", passed, n);
}

/* round at precisions past a double's digits, and ints at negative ones,
 * as Python's round gives them (round(7.5, 1000) == 7.5, round(-7.5, -1000)
 * == -0.0, round(1250, -2) == 1200: an int, halves to even). */
/* The template rendered with an empty context is `want`. */
static void check_renders(const char *template_, const char *want) {
    afo_status st;
    char *out = render(template_, "{}", &st);
    CHECK_MSG(out && strcmp(out, want) == 0, "%s\n  want %s\n  got  %s", template_, want, out ? out : afo_last_error());
    free(out);
}

static void test_round_extremes(void) {
    check_renders("{{ 7.5 | round(1000) }} {{ -7.5 | round(-1000) }} {{ 1234 | round(-2) }} {{ 1250 | round(-2) }} "
                  "{{ 1350 | round(-2) }} {{ 0.0 | round(400) }}",
                  "7.5 -0.0 1200 1200 1400 0.0");
}

#define ZEROS_69                                                                                                     \
    "000000000000000000000000000000000000000000000000000000000000000000000"

/* Numbers at the edges, as Jinja2 on Python gives them: int() of NaN
 * falls back to the default, the largest doubles below 2^63 convert. */
static void test_number_edges(void) {
    /* literals longer than the lexer's old 64-byte buffer: read whole (a
     * float's digits had been cut, and its '.' written past the buffer) */
    check_renders("{{ 1" ZEROS_69 ".0 }} {{ 1_0" ZEROS_69 ".0 }} {{ 2" ZEROS_69 ".25e-60 }}", "1e+69 1e+70 2000000000.0");
    check_renders("{{ 'nan' | float | int }} {{ 'x' | int(7) }} {{ 2 ** -1 }} {{ '-12' | int }} "
                  "{{ 9.2e18 | int }} {{ ' 0x1f ' | int(0, 16) }} {{ '1.9' | int }}",
                  "0 7 0.5 -12 9200000000000000000 31 1");
}

/* The template is rendered once and reused: rendering must not change it. */
static void test_reuse_and_undefined(void) {
    afo_chat_template *t = afo_chat_template_parse(
        "{{ x }}|{{ x is defined }}|{{ x | default('d') }}|{% if x %}t{% else %}f{% endif %}|{{ x | length }}");
    CHECK(t != NULL);
    const char *ctxs[3] = {"{}", "{\"x\": \"ab\"}", "{\"x\": null}"};
    const char *want[3] = {"|False|d|f|0", "ab|True|ab|t|2", "None|True|None|f|"};
    for (int i = 0; i < 3 && t; i++) {
        char *out = NULL;
        afo_status st = afo_chat_template_render(t, ctxs[i], &out);
        if (i == 2) { /* len(None) fails, as in Python */
            CHECK(st == AFO_ERR_INVALID_ARGUMENT && strstr(afo_last_error(), "has no len()"));
        } else {
            CHECK_MSG(st == AFO_OK && out && strcmp(out, want[i]) == 0, "context %s gave '%s'", ctxs[i],
                      out ? out : afo_last_error());
        }
        free(out);
    }
    afo_chat_template_free(t);
}

/* Strings holding continuation bytes without their lead (a template's
 * literal, or the context's text, need not be valid UTF-8): stripping from
 * the right had taken such a byte and the one before it as one code point,
 * past the left end, and made a string of (size_t)-1 bytes. */
static void test_malformed_utf8(void) {
    const char *templates[] = {"{{ '  \xa7  ' | trim | length }}",
                               "{{ '  \xa7  '.strip() }}|{{ ' \xa7'.rstrip() }}|{{ '\xa7 ' | trim }}",
                               "{{ ' \xa7 \xa7 '.rsplit() }}|{{ ' \xa7 '.rsplit(none, 1) }}|{{ '\xa7 \xa7'.split() }}"};
    for (size_t i = 0; i < sizeof templates / sizeof *templates; i++) {
        afo_status st;
        char *out = render(templates[i], "{}", &st);
        CHECK_MSG(out && strlen(out) < 64, "%s: %s", templates[i], out ? "output too long" : afo_last_error());
        free(out);
    }
}

/* Empty needles, found where Python finds them (an empty string's data may
 * be NULL: the search had passed it to memcmp, undefined behaviour). */
static void test_empty_needles(void) {
    check_renders("{{ ''.rfind('') }}|{{ 'ab'.rfind('') }}|{{ ''.find('') }}|{{ ''.count('') }}|{{ 'ab'.replace('', '-') }}",
                  "0|2|0|1|-a-b-");
}

static void test_strftime(void) {
    afo_chat_set_time(FIXTURE_DAY);
    afo_status st;
    char *out = render("{{ strftime_now('%Y-%m-%d') }}", "{}", &st);
    CHECK(out && strcmp(out, "2026-11-26") == 0);
    free(out);
    afo_chat_set_time(0);
    out = render("{{ strftime_now('%Y') }}", "{}", &st);
    CHECK(out && atoi(out) >= 2025);
    free(out);
}

typedef struct error_case {
    const char *template_, *context;
    afo_status status;
    const char *message; /* a part of afo_last_error() */
} error_case;

static const error_case ERRORS[] = {
    /* malformed */
    {"{{ x ", "{}", AFO_ERR_FORMAT, "line 1, column 1: unexpected end of template: '{{' is never closed"},
    {"ok\n{% if x %}", "{}", AFO_ERR_FORMAT, "line 2, column 11: unexpected end of template"},
    {"{% for m in messages %}{{ m }}", "{}", AFO_ERR_FORMAT, "expected 'endfor' or 'else'"},
    {"{# note", "{}", AFO_ERR_FORMAT, "comment '{#' is never closed"},
    {"{% raw %}x", "{}", AFO_ERR_FORMAT, "'{% raw %}' is never closed"},
    {"{{ x | nosuch }}", "{}", AFO_ERR_FORMAT, "column 6: no filter named 'nosuch'"},
    {"{{ x is nosuch }}", "{}", AFO_ERR_FORMAT, "no test named 'nosuch'"},
    {"{% frobnicate %}", "{}", AFO_ERR_FORMAT, "unknown tag 'frobnicate'"},
    {"{% endif %}", "{}", AFO_ERR_FORMAT, "unknown tag 'endif'"},
    {"{% break %}", "{}", AFO_ERR_FORMAT, "unknown tag 'break'"},
    {"{{ 1 + }}", "{}", AFO_ERR_FORMAT, "unexpected end of print statement"},
    {"{{ (1, 2 }}", "{}", AFO_ERR_FORMAT, "unexpected '}'"},
    {"{{ 'open }}", "{}", AFO_ERR_FORMAT, "unterminated string literal"},
    {"{{ a $ b }}", "{}", AFO_ERR_FORMAT, "unexpected character '$'"},
    {"{% for in x %}{% endfor %}", "{}", AFO_ERR_FORMAT, "expected a name"},
    {"{% set = 1 %}", "{}", AFO_ERR_FORMAT, "expected a name"},
    {"{% macro m(1) %}{% endmacro %}", "{}", AFO_ERR_FORMAT, "expected a name"},
    {"{% macro m( %}{% endmacro %}", "{}", AFO_ERR_FORMAT, "unexpected '}'"},
    {"{{ f(a=1, 2) }}", "{}", AFO_ERR_FORMAT, "positional argument follows keyword argument"},
    {"{% for x in y recursive %}{% endfor %}", "{}", AFO_ERR_FORMAT, "recursive loops are not supported"},
    {"{{ '\\N{BULLET}' }}", "{}", AFO_ERR_FORMAT, "\\N{...} escapes are not supported"},
    /* failing at render time */
    {"{{ raise_exception('No system role, please') }}", "{}", AFO_ERR_REJECTED, "No system role, please"},
    {"\n  {{ x.y }}", "{}", AFO_ERR_INVALID_ARGUMENT, "line 2, column 7: 'x' is undefined"},
    {"{{ x + 1 }}", "{}", AFO_ERR_INVALID_ARGUMENT, "'x' is undefined"},
    {"{{ x() }}", "{}", AFO_ERR_INVALID_ARGUMENT, "'x' is undefined"},
    {"{{ 'a' + 1 }}", "{}", AFO_ERR_INVALID_ARGUMENT, "can only concatenate str (not \"int\") to str"},
    {"{{ 1 / 0 }}", "{}", AFO_ERR_INVALID_ARGUMENT, "division by zero"},
    /* where Python raises, or gives what afo cannot hold (a complex number, a big int) */
    {"{{ 0 ** -1 }}", "{}", AFO_ERR_INVALID_ARGUMENT, "0.0 cannot be raised to a negative power"},
    {"{{ 10.0 ** 400 }}", "{}", AFO_ERR_INVALID_ARGUMENT, "numerical result out of range"},
    {"{{ (-8) ** 0.5 }}", "{}", AFO_ERR_INVALID_ARGUMENT, "would give a complex number"},
    {"{{ 1e308 | int }}", "{}", AFO_ERR_INVALID_ARGUMENT, "int: 1e+308 does not fit in 64 bits"},
    {"{{ '99999999999999999999' | int }}", "{}", AFO_ERR_INVALID_ARGUMENT, "does not fit in 64 bits"},
    {"{{ 'inf' | float | int }}", "{}", AFO_ERR_INVALID_ARGUMENT, "cannot convert float infinity to integer"},
    {"{{ '%d' % 3 }}", "{}", AFO_ERR_INVALID_ARGUMENT, "'%' string formatting is not supported"},
    {"{{ 'a' < 1 }}", "{}", AFO_ERR_INVALID_ARGUMENT, "'<' not supported between instances of 'str' and 'int'"},
    {"{{ m[5].role }}", "{\"m\": []}", AFO_ERR_INVALID_ARGUMENT, "list object has no element 5"},
    {"{{ m.a.b }}", "{\"m\": {}}", AFO_ERR_INVALID_ARGUMENT, "'dict object' has no attribute 'a'"},
    {"{{ x | tojson }}", "{}", AFO_ERR_INVALID_ARGUMENT, "Object of type Undefined is not JSON serializable"},
    {"{{ m.append(1) }}", "{\"m\": []}", AFO_ERR_INVALID_ARGUMENT, "access to attribute 'append' of 'list' object is unsafe"},
    {"{{ m.update({}) }}", "{\"m\": {}}", AFO_ERR_INVALID_ARGUMENT, "access to attribute 'update' of 'dict' object is unsafe"},
    {"{% set a, b = [1] %}", "{}", AFO_ERR_INVALID_ARGUMENT, "not enough values to unpack (expected 2)"},
    {"{% set x.y = 1 %}", "{\"x\": {}}", AFO_ERR_INVALID_ARGUMENT, "cannot assign attribute on non-namespace object"},
    {"{% for x in 5 %}{% endfor %}", "{}", AFO_ERR_INVALID_ARGUMENT, "'int' object is not iterable"},
    {"{{ 'abc'() }}", "{}", AFO_ERR_INVALID_ARGUMENT, "'str' object is not callable"},
    {"{{ 'x'.strip(1) }}", "{}", AFO_ERR_INVALID_ARGUMENT, "strip arg must be None or str"},
    {"{{ 'x'.split('') }}", "{}", AFO_ERR_INVALID_ARGUMENT, "empty separator"},
    {"{{ 'x'.upper(1) }}", "{}", AFO_ERR_INVALID_ARGUMENT, "upper() takes no arguments"},
    {"{{ x | truncate(bogus=1) }}", "{}", AFO_ERR_INVALID_ARGUMENT, "truncate() got an unexpected keyword argument 'bogus'"},
    {"{{ range(1000000) | length }}", "{}", AFO_ERR_INVALID_ARGUMENT, "Range too big"},
    /* 2**64 long: bounded before its length is cast (undefined behaviour) */
    {"{{ range(-9223372036854775807 - 1, 9223372036854775807) | length }}", "{}", AFO_ERR_INVALID_ARGUMENT,
     "Range too big"},
    /* string methods without their argument (Python: TypeError); rfind() had
     * searched for a NULL needle */
    {"{{ s.rfind() }}", "{\"s\": \"ab\"}", AFO_ERR_INVALID_ARGUMENT, "rfind() is missing a required argument"},
    {"{{ s.find() }}", "{\"s\": \"ab\"}", AFO_ERR_INVALID_ARGUMENT, "find() is missing a required argument"},
    {"{{ s.count() }}", "{\"s\": \"ab\"}", AFO_ERR_INVALID_ARGUMENT, "count() is missing a required argument"},
    {"{{ s.replace('a') }}", "{\"s\": \"ab\"}", AFO_ERR_INVALID_ARGUMENT, "replace() is missing a required argument"},
    /* bad contexts */
    {"{{ x }}", "[1, 2]", AFO_ERR_INVALID_ARGUMENT, "the context must be a JSON object"},
    {"{{ x }}", "{\"x\": }", AFO_ERR_INVALID_ARGUMENT, "not valid JSON at byte 6"},
    {"{{ x }}", "{\"x\": 1} 2", AFO_ERR_INVALID_ARGUMENT, "extra data after the value"},
    /* limits: each stops quickly with an error instead of hanging or exhausting memory */
    {"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "{}",
     AFO_ERR_INVALID_ARGUMENT, "loops ran more than 10000000 iterations"},
    {"{% for i in range(100000) %}{% for j in range(1000) %}{{ '0123456789' * 100 }}{% endfor %}{% endfor %}", "{}",
     AFO_ERR_INVALID_ARGUMENT, "exceeds 64 MiB"},
    {"{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "{}",
     AFO_ERR_INVALID_ARGUMENT, "exceeds 64 MiB"},
    {"{{ 'x' * 100000000000 }}", "{}", AFO_ERR_INVALID_ARGUMENT, "repetition result too large"},
    {"{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}", "{}", AFO_ERR_INVALID_ARGUMENT, "macro calls nested deeper than 200"},
    {"{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}", "{}",
     AFO_ERR_INVALID_ARGUMENT, "nested deeper than 1000 levels"},
};

static void test_errors(void) {
    for (size_t i = 0; i < sizeof ERRORS / sizeof *ERRORS; i++) {
        const error_case *e = &ERRORS[i];
        afo_status st;
        char *out = render(e->template_, e->context, &st);
        CHECK_MSG(!out && st == e->status && strstr(afo_last_error(), e->message), "%s\n  want %s: %s\n  got  %s: %s",
                  e->template_, afo_status_name(e->status), e->message, afo_status_name(st),
                  out ? out : afo_last_error());
        free(out);
    }
}

/* Nesting that would overflow the C stack of a naive recursive parser. */
static void test_deep_nesting(void) {
    size_t n = 100000;
    char *src = malloc(4 * n + 16);
    strcpy(src, "{{ ");
    char *p = src + 3;
    for (size_t i = 0; i < n; i++) *p++ = '(';
    *p++ = '1';
    for (size_t i = 0; i < n; i++) *p++ = ')';
    strcpy(p, " }}");
    afo_status st;
    char *out = render(src, "{}", &st);
    CHECK(!out && st == AFO_ERR_FORMAT && strstr(afo_last_error(), "nested too deeply"));
    /* a long flat chain parses in a loop, but evaluates recursively */
    p = src + 3;
    for (size_t i = 0; i < n / 2; i++) *p++ = '1', *p++ = '+';
    strcpy(p, "1 }}");
    out = render(src, "{}", &st);
    CHECK(!out && st == AFO_ERR_INVALID_ARGUMENT && strstr(afo_last_error(), "nested deeper than"));
    p = src + 3;
    for (size_t i = 0; i < n / 4; i++) memcpy(p, "not ", 4), p += 4;
    strcpy(p, "1 }}");
    out = render(src, "{}", &st);
    CHECK(!out && st == AFO_ERR_FORMAT);
    free(src);
}

static void test_api_misuse(void) {
    char *out = (char *)1;
    CHECK(afo_chat_template_parse(NULL) == NULL && afo_last_status() == AFO_ERR_INVALID_ARGUMENT);
    afo_chat_template *t = afo_chat_template_parse("x");
    CHECK(afo_chat_template_render(t, NULL, &out) == AFO_ERR_INVALID_ARGUMENT);
    CHECK(afo_chat_template_render(NULL, "{}", &out) == AFO_ERR_INVALID_ARGUMENT);
    CHECK(afo_chat_template_render(t, "{}", &out) == AFO_OK && strcmp(out, "x") == 0);
    free(out);
    afo_chat_template_free(t);
    afo_chat_template_free(NULL);
    char *src;
    CHECK(afo_chat_template_from_model("/nonexistent-model-dir", &src, NULL, NULL) == AFO_ERR_IO && !src);
}

/* ------------------------------------------------------------ model dirs */
static void write_text(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_from_model(void) {
    char dir[] = "/tmp/afo_chat_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    char *src, *bos, *eos;
    /* a list of named templates; tokens as AddedToken objects; eos only in special_tokens_map.json */
    write_text(dir, "tokenizer_config.json",
               "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D\"}],"
               " \"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<s>\"}}");
    write_text(dir, "special_tokens_map.json", "{\"eos_token\": \"</s>\"}");
    CHECK(afo_chat_template_from_model(dir, &src, &bos, &eos) == AFO_OK);
    CHECK(src && !strcmp(src, "D") && bos && !strcmp(bos, "<s>") && eos && !strcmp(eos, "</s>"));
    free(src), free(bos), free(eos);
    /* chat_template.jinja wins over the config; no tokens: NULL */
    write_text(dir, "tokenizer_config.json", "{\"chat_template\": \"config\"}");
    write_text(dir, "special_tokens_map.json", "{}");
    write_text(dir, "chat_template.jinja", "file");
    CHECK(afo_chat_template_from_model(dir, &src, &bos, &eos) == AFO_OK);
    CHECK(src && !strcmp(src, "file") && !bos && !eos);
    free(src);
    /* no template at all; a list without "default" */
    char path[512];
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    unlink(path);
    write_text(dir, "tokenizer_config.json", "{\"chat_template\": [{\"name\": \"x\", \"template\": \"X\"}]}");
    CHECK(afo_chat_template_from_model(dir, &src, NULL, NULL) == AFO_ERR_FORMAT && strstr(afo_last_error(), "default"));
    write_text(dir, "tokenizer_config.json", "{}");
    CHECK(afo_chat_template_from_model(dir, &src, NULL, NULL) == AFO_ERR_FORMAT && strstr(afo_last_error(), "no chat template"));
    write_text(dir, "tokenizer_config.json", "{not json");
    CHECK(afo_chat_template_from_model(dir, &src, NULL, NULL) == AFO_ERR_FORMAT && strstr(afo_last_error(), "not valid JSON"));
    const char *names[] = {"tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* ---------------------------------------------------------------- fixtures */
/* The context transformers renders with: messages, add_generation_prompt,
 * the special tokens and the extra keyword arguments. */
static char *fixture_context(const cJSON *c) {
    cJSON *ctx = cJSON_CreateObject();
    cJSON_AddItemToObject(ctx, "messages", cJSON_Duplicate(cJSON_GetObjectItem(c, "messages"), 1));
    cJSON_AddItemToObject(ctx, "add_generation_prompt", cJSON_Duplicate(cJSON_GetObjectItem(c, "add_generation_prompt"), 1));
    const char *groups[] = {"special_tokens", "kwargs"};
    for (int g = 0; g < 2; g++) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(c, groups[g])) cJSON_AddItemToObject(ctx, e->string, cJSON_Duplicate(e, 1));
    }
    char *text = cJSON_PrintUnformatted(ctx);
    cJSON_Delete(ctx);
    return text;
}

static void test_fixture_folder(const char *dir, int *total, int *passed) {
    char path[1400];
    snprintf(path, sizeof path, "%s/chat.jsonl", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return;
    char *src, *bos, *eos;
    afo_status st = afo_chat_template_from_model(dir, &src, &bos, &eos);
    CHECK_MSG(st == AFO_OK, "%s: %s", dir, afo_last_error());
    afo_chat_template *t = st == AFO_OK ? afo_chat_template_parse(src) : NULL;
    CHECK_MSG(st != AFO_OK || t, "%s: %s", dir, afo_last_error());
    int n = 0, ok = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *c = cJSON_Parse(line);
        if (!c) continue;
        n++;
        const cJSON *special = cJSON_GetObjectItem(c, "special_tokens");
        const cJSON *fb = cJSON_GetObjectItem(special, "bos_token"), *fe = cJSON_GetObjectItem(special, "eos_token");
        CHECK_MSG(!fb || (bos && !strcmp(bos, fb->valuestring)), "%s: bos_token %s", dir, bos ? bos : "(none)");
        CHECK_MSG(!fe || (eos && !strcmp(eos, fe->valuestring)), "%s: eos_token %s", dir, eos ? eos : "(none)");
        char *ctx = fixture_context(c), *out = NULL;
        st = t ? afo_chat_template_render(t, ctx, &out) : AFO_ERR_FORMAT;
        const cJSON *want = cJSON_GetObjectItem(c, "text"), *err = cJSON_GetObjectItem(c, "error");
        bool good = want ? st == AFO_OK && !strcmp(out, want->valuestring)
                         : st == AFO_ERR_REJECTED && strstr(afo_last_error(), err->valuestring);
        CHECK_MSG(good, "%s case %d:\n  want %s\n  got  %s", dir, n, want ? want->valuestring : err->valuestring,
                  st == AFO_OK ? out : afo_last_error());
        ok += good;
        free(out);
        free(ctx);
        cJSON_Delete(c);
    }
    fprintf(stderr, "  %-12s %d/%d exact\n", strrchr(dir, '/') + 1, ok, n);
    *total += n, *passed += ok;
    free(line);
    fclose(f);
    afo_chat_template_free(t);
    free(src), free(bos), free(eos);
}

static void test_fixtures(void) {
    char root[1024];
    if (!test_shared_path("fixtures/tokenizers", root, sizeof root)) return;
    afo_chat_set_time(FIXTURE_DAY); /* smollm3 prints today's date */
    static const char *const folders[] = {"gemma", "llama2-chat", "llama3", "phi3-mini", "qwen2.5", "qwen3", "smollm3"};
    int total = 0, passed = 0;
    for (size_t i = 0; i < sizeof folders / sizeof *folders; i++) {
        char dir[1200];
        snprintf(dir, sizeof dir, "%s/%s", root, folders[i]);
        test_fixture_folder(dir, &total, &passed);
    }
    afo_chat_set_time(0);
    CHECK_MSG(total >= 36, "expected at least 36 fixture cases, found %d", total);
    fprintf(stderr, "  fixtures: %d/%d exact\n", passed, total);
}

int main(void) {
    RUN(test_constructs);
    RUN(test_round_extremes);
    RUN(test_number_edges);
    RUN(test_reuse_and_undefined);
    RUN(test_malformed_utf8);
    RUN(test_empty_needles);
    RUN(test_strftime);
    RUN(test_errors);
    RUN(test_deep_nesting);
    RUN(test_api_misuse);
    RUN(test_from_model);
    RUN(test_fixtures);
    return test_finish();
}
