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
    size_t active, peak, cache, mapped, limit, cache_limit;
    uint64_t alloc_count, cache_hits;
    cache_entry *head, *tail;
} device_pool;

static device_pool g_pools[AFO_DEVICE_COUNT] = {
    [AFO_CPU] = {.lock = PTHREAD_MUTEX_INITIALIZER},
    [AFO_CUDA] = {.lock = PTHREAD_MUTEX_INITIALIZER},
};

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
        free(e->data);
        free(e);
    }
}

/* Smallest cached buffer that fits without wasting more than a quarter. */
static cache_entry *cache_take(device_pool *p, size_t capacity) {
    cache_entry *best = NULL;
    for (cache_entry *e = p->head; e; e = e->next) {
        if (e->capacity >= capacity && e->capacity <= capacity + capacity / 4 &&
            (!best || e->capacity < best->capacity))
            best = e;
    }
    if (best) lru_unlink(p, best);
    return best;
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
        b->data = aligned_alloc(64, capacity);
        if (!b->data) {
            evict_to(p, 0);
            b->data = aligned_alloc(64, capacity);
        }
        if (!b->data) {
            pthread_mutex_unlock(&p->lock);
            free(b);
            return afo_error_null(AFO_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes", nbytes);
        }
    }
    count_active(p, capacity);
    pthread_mutex_unlock(&p->lock);
    atomic_init(&b->refcount, 1);
    b->nbytes = nbytes;
    b->capacity = capacity;
    b->device = device;
    return b;
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

void afo_buffer_retain(afo_buffer *b) { atomic_fetch_add(&b->refcount, 1); }

void afo_buffer_release(afo_buffer *b) {
    if (!b || atomic_fetch_sub(&b->refcount, 1) != 1) return;
    if (b->mapping) {
        afo_mapping_release(b->mapping);
        free(b);
        return;
    }
    device_pool *p = &g_pools[b->device];
    pthread_mutex_lock(&p->lock);
    p->active -= b->capacity;
    size_t cache_limit = p->cache_limit ? p->cache_limit : (p->limit ? p->limit : SIZE_MAX);
    cache_entry *e = b->capacity <= cache_limit ? malloc(sizeof *e) : NULL;
    if (e) {
        e->data = b->data;
        e->capacity = b->capacity;
        evict_to(p, cache_limit - b->capacity);
        lru_push_front(p, e);
    } else {
        free(b->data);
    }
    pthread_mutex_unlock(&p->lock);
    free(b);
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

void afo_reset_peak_memory(void) {
    device_pool *p = &g_pools[AFO_CPU];
    pthread_mutex_lock(&p->lock);
    p->peak = p->active;
    pthread_mutex_unlock(&p->lock);
}

size_t afo_set_memory_limit(size_t bytes) {
    device_pool *p = &g_pools[AFO_CPU];
    pthread_mutex_lock(&p->lock);
    size_t old = p->limit;
    p->limit = bytes;
    pthread_mutex_unlock(&p->lock);
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
    *out = (afo_memory_stats){p->active, p->peak, p->cache, p->mapped, p->limit, p->cache_limit,
                              p->alloc_count, p->cache_hits};
    pthread_mutex_unlock(&p->lock);
    return AFO_OK;
}
