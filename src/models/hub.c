/* Finding a model: a directory path, or a hub id in the local Hugging Face
 * cache (never the network). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "models/models.h"

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* a + b into out; false when it does not fit. */
static bool join(char *out, size_t n, const char *a, const char *b) { return (size_t)snprintf(out, n, "%s%s", a, b) < n; }

/* The snapshot of models--ORG--NAME under `hub`: refs/main's revision, or
 * the only snapshot when there is no ref. */
static bool find_snapshot(const char *hub, const char *id, char *out, size_t n) {
    char repo[4096], ref[4096], rev[256] = "";
    int len = snprintf(repo, sizeof repo, "%s/models--", hub);
    for (const char *s = id; *s && len < (int)sizeof repo - 2; s++) {
        if (*s == '/') repo[len++] = '-', repo[len++] = '-';
        else repo[len++] = *s;
    }
    repo[len] = 0;
    if (!join(ref, sizeof ref, repo, "/refs/main")) return false;
    FILE *f = fopen(ref, "r");
    if (f) {
        if (!fgets(rev, sizeof rev, f)) rev[0] = 0;
        fclose(f);
        rev[strcspn(rev, "\r\n \t")] = 0;
    }
    if (!join(ref, sizeof ref, repo, "/snapshots/")) return false;
    if (rev[0]) return join(out, n, ref, rev) && is_dir(out);
    DIR *d = opendir(ref);
    if (!d) return false;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') found += join(out, n, ref, e->d_name) ? 1 : 2;
    closedir(d);
    return found == 1 && is_dir(out);
}

afo_status afo_model_resolve(const char *name, char *dir, size_t dir_size) {
    if (!name || !*name) return afo_error(AFO_ERR_INVALID_ARGUMENT, "model: no model given");
    if (is_dir(name)) {
        if ((size_t)snprintf(dir, dir_size, "%s", name) >= dir_size)
            return afo_error(AFO_ERR_INVALID_ARGUMENT, "model: path too long");
        return AFO_OK;
    }
    char hubs[3][4096], tried[8192] = "";
    int nhubs = 0;
    const char *env = getenv("HF_HUB_CACHE"), *home = getenv("HF_HOME"), *user = getenv("HOME");
    if (env && *env) snprintf(hubs[nhubs++], sizeof hubs[0], "%s", env);
    if (home && *home) snprintf(hubs[nhubs++], sizeof hubs[0], "%s/hub", home);
    if (user && *user) snprintf(hubs[nhubs++], sizeof hubs[0], "%s/.cache/huggingface/hub", user);
    const char *slash = strchr(name, '/');
    bool hub_id = slash && slash != name && !strchr(slash + 1, '/') && slash[1] && name[0] != '.';
    size_t len = 0;
    for (int i = 0; hub_id && i < nhubs; i++) {
        char snap[4096];
        if (find_snapshot(hubs[i], name, snap, sizeof snap)) {
            if ((size_t)snprintf(dir, dir_size, "%s", snap) >= dir_size)
                return afo_error(AFO_ERR_INVALID_ARGUMENT, "model: path too long");
            return AFO_OK;
        }
        len += (size_t)snprintf(tried + len, sizeof tried - len, "; %s/models--...", hubs[i]);
        if (len >= sizeof tried) len = sizeof tried - 1;
    }
    return afo_error(AFO_ERR_IO,
                     "model '%s' not found: not a directory%s%s (set HF_HUB_CACHE or HF_HOME, or pass a model "
                     "directory; afo does not download)",
                     name, hub_id ? ", and not in the Hugging Face cache at" : " (nor an ORG/NAME hub id)",
                     hub_id ? tried + 1 : "");
}
