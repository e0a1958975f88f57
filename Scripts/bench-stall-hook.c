// The per-job cost of the stall watch words, old and new, measured in isolation: the
// run loop's begin/end pair around an empty job, repeated, taking the fastest of many
// short trials (the minimum is what an undisturbed core does, so it holds up on a loaded
// machine where a mean would not).
//
//   old: begin stores the thread block, bumps a sequence, reads the time-stamp counter and
//        stores it; end clears the start word (4 words from malloc, possibly sharing a
//        cache line with another CPU's words);
//   new: begin stores the thread block and bumps the sequence to odd; end bumps it to
//        even; no clock read; the words fill a cache line of their own.
//
// Build and run: cc -O2 -I Sources/CLibellula/include Scripts/bench-stall-hook.c
// -o /tmp/bench-stall-hook && /tmp/bench-stall-hook
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "CLibellula.h"

__thread void *lb_tls_current_cpu;

enum { ITERATIONS = 100000, TRIALS = 300 };

static inline __attribute__((always_inline)) void old_begin(int64_t *w, int64_t stats) {
    lb_counter_store(w + 2, stats);
    lb_counter_store(w + 1, lb_counter_load(w + 1) + 1);
    uint64_t c = lb_cycles();
    lb_counter_store(w, (int64_t)(c > 1 ? c : 1));
}
static inline __attribute__((always_inline)) void old_end(int64_t *w) { lb_counter_store(w, 0); }

static inline __attribute__((always_inline)) void new_begin(int64_t *w, int64_t stats) {
    lb_counter_store(w + 1, stats);
    lb_counter_store(w, lb_counter_load(w) + 1);
}
static inline __attribute__((always_inline)) void new_end(int64_t *w) { lb_counter_store(w, lb_counter_load(w) + 1); }

static int64_t sink;

// An empty job the compiler cannot remove.
static inline __attribute__((always_inline)) void job(int64_t i) { __asm__ __volatile__("" ::"r"(i) : "memory"); }

typedef enum { NONE, OLD, NEW } variant;

static double trial(variant v, int64_t *w) {
    uint64_t t0 = lb_now_ns();
    for (int64_t i = 0; i < ITERATIONS; i++) {
        if (v == OLD) old_begin(w, i);
        else if (v == NEW) new_begin(w, i);
        job(i);
        if (v == OLD) old_end(w);
        else if (v == NEW) new_end(w);
    }
    uint64_t t1 = lb_now_ns();
    sink += w[0];
    return (double)(t1 - t0) / ITERATIONS;
}

static double best(variant v, int64_t *w) {
    double m = 1e9;
    for (int t = 0; t < TRIALS; t++) {
        double x = trial(v, w);
        if (x < m) m = x;
    }
    return m;
}

int main(void) {
    int64_t *line = aligned_alloc(64, 256);
    for (int i = 0; i < 32; i++) line[i] = 0;
    // Interleave the variants so that a change in load hits them alike.
    double none = 1e9, old = 1e9, new = 1e9;
    for (int r = 0; r < 5; r++) {
        double a = best(NONE, line), b = best(OLD, line), c = best(NEW, line);
        if (a < none) none = a;
        if (b < old) old = b;
        if (c < new) new = c;
    }
    printf("one core, empty job, fastest of %d trials of %d jobs (x5 interleaved):\n", TRIALS, ITERATIONS);
    printf("  no watch words          %6.2f ns/job\n", none);
    printf("  old (rdtsc + 3 stores)  %6.2f ns/job  (+%.2f ns)\n", old, old - none);
    printf("  new (2 stores + 1)      %6.2f ns/job  (+%.2f ns)\n", new, new - none);
    free(line);
    return sink == 42 ? 1 : 0;
}
