/* Host allocator with a buffer cache and MLX-style accounting.
 *
 * Freed buffers are kept in an LRU list and reused for requests of a similar
 * size, because decode loops allocate the same shapes every token. The
 * memory limit covers active buffers; the cache is emptied before a request
 * is refused. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"

typedef struct cache_entry {
    struct cache_entry *prev, *next; /* LRU: head = most recently freed */
    void *data;
    size_t capacity;
} cache_entry;

typedef struct device_pool {
    pthread_mutex_t lock;
    afo_device device;
    size_t active, peak, cache, mapped, limit, cache_limit;
    uint64_t alloc_count, cache_hits, copied_in, copied_out;
    cache_entry *head, *tail;
    afo_held_buffers *holding;
} device_pool;

struct afo_held_entry {
    struct afo_held_entry *next;
    void *data;
    size_t capacity;
};

static device_pool g_pools[AFO_DEVICE_COUNT] = {
    [AFO_CPU] = {.lock = PTHREAD_MUTEX_INITIALIZER, .device = AFO_CPU},
    [AFO_CUDA] = {.lock = PTHREAD_MUTEX_INITIALIZER, .device = AFO_CUDA},
};

/* Raw memory of a pool's device; the backend exists whenever a buffer of
 * that device does. */
static void *raw_alloc(const device_pool *p, size_t capacity) {
    if (p->device == AFO_CPU) return aligned_alloc(64, capacity);
    const afo_backend *be = afo_backend_of(p->device);
    return be ? be->alloc(capacity) : NULL;
}

static void raw_free(const device_pool *p, void *data) {
    if (p->device == AFO_CPU) free(data);
    else afo_backend_of(p->device)->free(data);
}

static size_t round_capacity(size_t n) {
    if (n == 0) n = 1;
    size_t quantum = n < 4096 ? 64 : 4096;
    return (n + quantum - 1) / quantum * quantum;
}

static void lru_unlink(device_pool *p, cache_entry *e) {
    if (e->prev) e->prev->next = e->next; else p->head = e->next;
    if (e->next) e->next->prev = e->prev; else p->tail = e->prev;
    p->cache -= e->capacity;
}

static void lru_push_front(device_pool *p, cache_entry *e) {
    e->prev = NULL;
    e->next = p->head;
    if (p->head) p->head->prev = e; else p->tail = e;
    p->head = e;
    p->cache += e->capacity;
}

/* Frees least recently cached buffers until the cache holds at most `keep`. */
static void evict_to(device_pool *p, size_t keep) {
    while (p->cache > keep && p->tail) {
        cache_entry *e = p->tail;
        lru_unlink(p, e);
        raw_free(p, e->data);
        free(e);
    }
}

/* Smallest cached buffer that fits without wasting more than a quarter.
 * An exact fit ends the search: a decode step allocates the shapes the
 * previous step freed, found near the head, while a prompt's hundreds of
 * larger buffers wait further down (scanning them on every allocation
 * cost a decode step about 2% of its time). */
static cache_entry *cache_take(device_pool *p, size_t capacity) {
    cache_entry *best = NULL;
    for (cache_entry *e = p->head; e && !(best && best->capacity == capacity); e = e->next) {
        if (e->capacity >= capacity && e->capacity <= capacity + capacity / 4 &&
            (!best || e->capacity < best->capacity))
            best = e;
    }
    if (best) lru_unlink(p, best);
    return best;
}

/* An active buffer's memory back into the cache (or freed, past the cache
 * limit); the pool's lock is held. */
static void pool_return(device_pool *p, void *data, size_t capacity) {
    p->active -= capacity;
    size_t cache_limit = p->cache_limit ? p->cache_limit : (p->limit ? p->limit : SIZE_MAX);
    cache_entry *e = capacity <= cache_limit ? malloc(sizeof *e) : NULL;
    if (e) {
        e->data = data;
        e->capacity = capacity;
        evict_to(p, cache_limit - capacity);
        lru_push_front(p, e);
    } else {
        raw_free(p, data);
    }
}

static void count_active(device_pool *p, size_t capacity) {
    p->active += capacity;
    if (p->active > p->peak) p->peak = p->active;
}

afo_buffer *afo_buffer_alloc(afo_device device, size_t nbytes) {
    device_pool *p = &g_pools[device];
    size_t capacity = round_capacity(nbytes);
    afo_buffer *b = calloc(1, sizeof *b);
    if (!b) return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "out of memory allocating a buffer header");
    pthread_mutex_lock(&p->lock);
    p->alloc_count++;
    cache_entry *hit = cache_take(p, capacity);
    if (hit) {
        p->cache_hits++;
        b->data = hit->data;
        capacity = hit->capacity;
        free(hit);
    } else {
        if (p->limit && p->active + p->cache + capacity > p->limit)
            evict_to(p, p->active + capacity > p->limit ? 0 : p->limit - p->active - capacity);
        if (p->limit && p->active + capacity > p->limit) {
            size_t active = p->active, limit = p->limit;
            pthread_mutex_unlock(&p->lock);
            free(b);
            return afo_error_null(AFO_ERR_OUT_OF_MEMORY,
                                  "memory limit of %zu bytes reached: allocating %zu bytes with %zu active",
                                  limit, nbytes, active);
        }
        b->data = raw_alloc(p, capacity);
        if (!b->data) {
            evict_to(p, 0);
            b->data = raw_alloc(p, capacity);
        }
        if (!b->data) {
            pthread_mutex_unlock(&p->lock);
            free(b);
            return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "out of %s memory allocating %zu bytes",
                                  afo_device_name(device), nbytes);
        }
    }
    count_active(p, capacity);
    pthread_mutex_unlock(&p->lock);
    atomic_init(&b->refcount, 1);
    b->nbytes = nbytes;
    b->capacity = capacity;
    b->device = device;
    afo_buffer_mark_written(b);
    return b;
}

void afo_buffer_mark_written(afo_buffer *b) {
    if (b->device != AFO_CPU) b->queued_at = afo_backend_of(b->device)->synchronizations();
}

afo_buffer *afo_buffer_from_mapping(afo_mapping *m, size_t offset, size_t nbytes) {
    afo_buffer *b = calloc(1, sizeof *b);
    if (!b) return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "out of memory allocating a buffer header");
    atomic_init(&b->refcount, 1);
    afo_mapping_retain(m);
    b->mapping = m;
    b->data = (char *)m->base + offset;
    b->nbytes = nbytes;
    b->device = AFO_CPU;
    return b;
}

/* One lock for making copies: two threads asking for the same weight on a
 * GPU must not both upload it. */
static pthread_mutex_t g_copy_lock = PTHREAD_MUTEX_INITIALIZER;

void afo_buffer_retain(afo_buffer *b) { atomic_fetch_add(&b->refcount, 1); }

void afo_buffer_release(afo_buffer *b) {
    if (!b || atomic_fetch_sub(&b->refcount, 1) != 1) return;
    if (b->copy) {
        pthread_mutex_lock(&g_copy_lock);
        b->copy->origin = NULL; /* views may keep the copy alive */
        pthread_mutex_unlock(&g_copy_lock);
    }
    afo_buffer_release(b->copy);
    if (b->mapping) {
        afo_mapping_release(b->mapping);
        free(b);
        return;
    }
    device_pool *p = &g_pools[b->device];
    pthread_mutex_lock(&p->lock);
    if (p->holding) {
        /* without room to note it, the buffer is lost rather than reused
         * under a graph that writes it */
        struct afo_held_entry *h = malloc(sizeof *h);
        if (h) {
            *h = (struct afo_held_entry){p->holding->list, b->data, b->capacity};
            p->holding->list = h;
        }
        pthread_mutex_unlock(&p->lock);
        free(b);
        return;
    }
    pool_return(p, b->data, b->capacity);
    pthread_mutex_unlock(&p->lock);
    free(b);
}

void afo_pool_hold(afo_device device, afo_held_buffers *into) {
    device_pool *p = &g_pools[device];
    pthread_mutex_lock(&p->lock);
    p->holding = into;
    pthread_mutex_unlock(&p->lock);
}

void afo_held_release(afo_device device, afo_held_buffers *held) {
    device_pool *p = &g_pools[device];
    pthread_mutex_lock(&p->lock);
    while (held->list) {
        struct afo_held_entry *h = held->list;
        held->list = h->next;
        pool_return(p, h->data, h->capacity);
        free(h);
    }
    pthread_mutex_unlock(&p->lock);
}

bool afo_buffer_own_bytes(const afo_buffer *b) { return !b->mapping && !b->copy && !b->is_copy; }

bool afo_buffer_writable(const afo_buffer *b) { return atomic_load(&b->refcount) == 1 && afo_buffer_own_bytes(b); }

static void count_copy(afo_device from, afo_device to, size_t nbytes) {
    pthread_mutex_lock(&g_pools[from].lock);
    g_pools[from].copied_out += nbytes;
    pthread_mutex_unlock(&g_pools[from].lock);
    pthread_mutex_lock(&g_pools[to].lock);
    g_pools[to].copied_in += nbytes;
    pthread_mutex_unlock(&g_pools[to].lock);
}

afo_buffer *afo_buffer_fetch(const afo_buffer *b) {
    if (b->device == AFO_CPU) return afo_error_null(AFO_ERR_INTERNAL, "afo_buffer_fetch: the buffer is on the CPU");
    afo_buffer *c = afo_buffer_alloc(AFO_CPU, b->nbytes);
    if (!c) return NULL;
    if (afo_backend_of(b->device)->download(c->data, b->data, b->nbytes) != AFO_OK) {
        afo_buffer_release(c);
        return NULL;
    }
    count_copy(b->device, AFO_CPU, b->nbytes);
    return c;
}

afo_buffer *afo_buffer_on(afo_buffer *b, afo_device device) {
    if (b->device == device) return b;
    pthread_mutex_lock(&g_copy_lock);
    afo_buffer *c = b->copy;
    if (!c) {
        const afo_backend *be = afo_backend_of(device == AFO_CPU ? b->device : device);
        c = be ? afo_buffer_alloc(device, b->nbytes) : NULL;
        if (c) {
            afo_status st = device == AFO_CPU ? be->download(c->data, b->data, b->nbytes)
                                              : be->upload(c->data, b->data, b->nbytes);
            if (st != AFO_OK) {
                afo_buffer_release(c);
                c = NULL;
            } else {
                c->is_copy = true;
                c->origin = b;
                b->copy = c;
                count_copy(b->device, device, b->nbytes);
            }
        }
    }
    pthread_mutex_unlock(&g_copy_lock);
    return c;
}

afo_mapping *afo_mapping_open(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return afo_error_null(AFO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return afo_error_null(AFO_ERR_IO, "%s: not a regular file", path);
    }
    void *base = NULL;
    if (st.st_size > 0) {
        base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (base == MAP_FAILED) {
            close(fd);
            return afo_error_null(AFO_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
        }
    }
    close(fd);
    afo_mapping *m = calloc(1, sizeof *m);
    if (!m) {
        if (base) munmap(base, (size_t)st.st_size);
        return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "out of memory mapping %s", path);
    }
    atomic_init(&m->refcount, 1);
    m->base = base;
    m->length = (size_t)st.st_size;
    device_pool *p = &g_pools[AFO_CPU];
    pthread_mutex_lock(&p->lock);
    p->mapped += m->length;
    pthread_mutex_unlock(&p->lock);
    return m;
}

void afo_mapping_retain(afo_mapping *m) { atomic_fetch_add(&m->refcount, 1); }

void afo_mapping_release(afo_mapping *m) {
    if (!m || atomic_fetch_sub(&m->refcount, 1) != 1) return;
    if (m->base) munmap(m->base, m->length);
    device_pool *p = &g_pools[AFO_CPU];
    pthread_mutex_lock(&p->lock);
    p->mapped -= m->length;
    pthread_mutex_unlock(&p->lock);
    free(m);
}

#define POOL_GET(field)                                  \
    size_t v;                                            \
    pthread_mutex_lock(&g_pools[AFO_CPU].lock);          \
    v = g_pools[AFO_CPU].field;                          \
    pthread_mutex_unlock(&g_pools[AFO_CPU].lock);        \
    return v

size_t afo_get_active_memory(void) { POOL_GET(active); }
size_t afo_get_peak_memory(void) { POOL_GET(peak); }
size_t afo_get_cache_memory(void) { POOL_GET(cache); }
size_t afo_get_mapped_memory(void) { POOL_GET(mapped); }

void afo_reset_device_peak_memory(afo_device device) {
    if ((unsigned)device >= AFO_DEVICE_COUNT) return;
    device_pool *p = &g_pools[device];
    pthread_mutex_lock(&p->lock);
    p->peak = p->active;
    pthread_mutex_unlock(&p->lock);
}

void afo_reset_peak_memory(void) { afo_reset_device_peak_memory(AFO_CPU); }

afo_status afo_set_device_memory_limit(afo_device device, size_t bytes, size_t *previous) {
    if ((unsigned)device >= AFO_DEVICE_COUNT)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_set_device_memory_limit: invalid device %d", (int)device);
    device_pool *p = &g_pools[device];
    pthread_mutex_lock(&p->lock);
    if (previous) *previous = p->limit;
    p->limit = bytes;
    pthread_mutex_unlock(&p->lock);
    return AFO_OK;
}

size_t afo_set_memory_limit(size_t bytes) {
    size_t old = 0;
    afo_set_device_memory_limit(AFO_CPU, bytes, &old);
    return old;
}

size_t afo_set_cache_limit(size_t bytes) {
    device_pool *p = &g_pools[AFO_CPU];
    pthread_mutex_lock(&p->lock);
    size_t old = p->cache_limit;
    p->cache_limit = bytes;
    evict_to(p, bytes ? bytes : SIZE_MAX);
    pthread_mutex_unlock(&p->lock);
    return old;
}

void afo_clear_cache(void) {
    for (int d = 0; d < AFO_DEVICE_COUNT; d++) {
        pthread_mutex_lock(&g_pools[d].lock);
        evict_to(&g_pools[d], 0);
        pthread_mutex_unlock(&g_pools[d].lock);
    }
}

afo_status afo_get_memory_stats(afo_device device, afo_memory_stats *out) {
    if ((unsigned)device >= AFO_DEVICE_COUNT || !out)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "afo_get_memory_stats: invalid device %d", (int)device);
    device_pool *p = &g_pools[device];
    pthread_mutex_lock(&p->lock);
    *out = (afo_memory_stats){p->active,      p->peak,       p->cache,     p->mapped,    p->limit,
                              p->cache_limit, p->alloc_count, p->cache_hits, p->copied_in, p->copied_out};
    pthread_mutex_unlock(&p->lock);
    return AFO_OK;
}
