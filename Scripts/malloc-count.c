/* LD_PRELOAD shim for the HTTP benchmarks: counts malloc-family calls in a process and
 * writes the total to $MALLOC_COUNT_FILE when the process exits. With $MALLOC_COUNT_LIVE set
 * it also rewrites the running total to that file every 20 ms (from a thread that allocates
 * nothing), so a script can read the count before and after each workload. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_long calls;
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static char bootstrap[8192];
static size_t bootstrap_used;

static void *early(size_t n) {
    size_t at = (bootstrap_used + 15) & ~(size_t)15;
    if (at + n > sizeof bootstrap) return NULL;
    bootstrap_used = at + n;
    return bootstrap + at;
}

void *malloc(size_t n) {
    if (!real_malloc) { real_malloc = dlsym(RTLD_NEXT, "malloc"); if (!real_malloc) return early(n); }
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return real_malloc(n);
}
void *calloc(size_t a, size_t b) {
    if (!real_calloc) { static int busy; if (busy) return early(a * b); busy = 1; real_calloc = dlsym(RTLD_NEXT, "calloc"); busy = 0; }
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return real_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    if (!real_realloc) real_realloc = dlsym(RTLD_NEXT, "realloc");
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return real_realloc(p, n);
}
int posix_memalign(void **out, size_t al, size_t n) {
    if (!real_posix_memalign) real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return real_posix_memalign(out, al, n);
}
void *aligned_alloc(size_t al, size_t n) {
    if (!real_aligned_alloc) real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return real_aligned_alloc(al, n);
}
void free(void *p) {
    static void (*real_free)(void *);
    if ((char *)p >= bootstrap && (char *)p < bootstrap + sizeof bootstrap) return;
    if (!real_free) real_free = dlsym(RTLD_NEXT, "free");
    real_free(p);
}

__attribute__((destructor)) static void report(void) {
    const char *path = getenv("MALLOC_COUNT_FILE");
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "%ld\n", atomic_load(&calls));
    fclose(f);
}

/* Calls so far: a process that finds this with dlsym (TCPBench) measures one interval. */
long malloc_count_calls(void) { return atomic_load_explicit(&calls, memory_order_relaxed); }

static void *live_writer(void *arg) {
    int fd = (int)(long)arg;
    char line[32];
    for (;;) {
        long n = atomic_load_explicit(&calls, memory_order_relaxed);
        int len = 0;
        char digits[24];
        int d = 0;
        do { digits[d++] = (char)('0' + n % 10); n /= 10; } while (n > 0 && d < 23);
        while (d > 0) line[len++] = digits[--d];
        line[len++] = '\n';
        if (pwrite(fd, line, (size_t)len, 0) == len) (void)ftruncate(fd, len);
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    return NULL;
}

__attribute__((constructor)) static void start_live(void) {
    const char *path = getenv("MALLOC_COUNT_LIVE");
    if (!path) return;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    pthread_t t;
    if (pthread_create(&t, NULL, live_writer, (void *)(long)fd) == 0) pthread_detach(t);
}
