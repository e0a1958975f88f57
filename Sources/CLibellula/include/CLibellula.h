// Thin C wrappers for what Swift's Glibc module does not export. No logic lives here.
#ifndef CLIBELLULA_H
#define CLIBELLULA_H

#include <stdint.h>
#include <stddef.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Pins the calling thread to one CPU core. Returns 0 or an errno value.
int lb_pin_self(int core);
/// The core the calling thread runs on now (sched_getcpu), or -1.
int lb_getcpu(void);
/// The kernel thread id of the calling thread.
int lb_gettid(void);
/// Number of online processors.
int lb_online_cores(void);
/// Sets the calling thread's name (at most 15 bytes are kept).
void lb_set_thread_name(const char *name);

/// FUTEX_WAIT_PRIVATE with an optional relative timeout in nanoseconds (< 0: none).
long lb_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns);
/// FUTEX_WAKE_PRIVATE.
long lb_futex_wake(uint32_t *addr, int count);

/// eventfd(initval, EFD_CLOEXEC | EFD_NONBLOCK).
int lb_eventfd(void);
/// Adds 1 to an eventfd counter.
int lb_eventfd_signal(int fd);
/// Reads (and resets) an eventfd counter; returns 0 when it was already zero.
uint64_t lb_eventfd_drain(int fd);

/// epoll_create1(EPOLL_CLOEXEC).
int lb_epoll_create(void);

/// pipe2(fds, O_CLOEXEC): a pipe whose ends a spawned child never inherits (Glibc's Swift
/// module has no pipe2). Returns 0, or -1 with errno set.
int lb_pipe_cloexec(int fds[2]);
/// epoll_ctl; op is 1 add, 2 delete, 3 modify. Returns 0 or -errno.
int lb_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// epoll_wait into parallel arrays of events and data, with a timeout in nanoseconds
/// (< 0: forever, 0: poll); returns the count or -errno.
int lb_epoll_wait(int epfd, uint32_t *events, uint64_t *data, int max, int64_t timeout_ns);

/// Event bits, re-exported with stable names.
extern const uint32_t LB_EPOLLIN, LB_EPOLLOUT, LB_EPOLLERR, LB_EPOLLHUP, LB_EPOLLRDHUP,
                      LB_EPOLLET, LB_EPOLLONESHOT;

/// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) after registration; 0 on success.
int lb_membarrier(void);

/// Monotonic clock in nanoseconds (vDSO, about 20 ns).
static inline uint64_t lb_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/// Time-stamp counter where the processor has one; otherwise the monotonic clock.
static inline uint64_t lb_cycles(void) {
#if defined(__x86_64__)
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
#else
    return lb_now_ns();
#endif
}

/// A spin-wait hint to the processor.
static inline void lb_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/// A compiler-only fence: stops the compiler moving memory accesses across it.
static inline void lb_compiler_fence(void) { __asm__ __volatile__("" ::: "memory"); }

/// The per-thread "current CPU" pointer, set by each CPU's OS thread at start.
/// Initial-exec model: one `mov %fs:` load through the GOT. The default (general dynamic)
/// is a call to `__tls_get_addr` as far as the compiler knows, even where the linker later
/// relaxes it, so every fast path reading it (slab, ports) saved registers around it.
/// The library is linked into executables or loaded at start, never `dlopen`ed late.
extern __thread void *lb_tls_current_cpu __attribute__((tls_model("initial-exec")));
static inline void *lb_current_cpu(void) { return lb_tls_current_cpu; }
static inline void lb_set_current_cpu(void *cpu) { lb_tls_current_cpu = cpu; }

/// The slab's size class of a request of 1...1024 bytes, by table (branch-free): entry k
/// is the class of a request rounded up to 8k bytes (`SizeClass.index(forSize:)`; a test
/// checks the two agree for every size).
static inline long lb_slab_small_class(unsigned long size) {
    static const unsigned char table[129] = {
        0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 16, 17, 17, 18, 18, 19, 19,
        20, 20, 21, 21, 22, 22, 23, 23, 24, 24, 24, 24, 25, 25, 25, 25, 26, 26, 26, 26, 27, 27,
        27, 27, 28, 28, 28, 28, 29, 29, 29, 29, 30, 30, 30, 30, 31, 31, 31, 31, 32, 32, 32, 32,
        32, 32, 32, 32, 33, 33, 33, 33, 33, 33, 33, 33, 34, 34, 34, 34, 34, 34, 34, 34, 35, 35,
        35, 35, 35, 35, 35, 35, 36, 36, 36, 36, 36, 36, 36, 36, 37, 37, 37, 37, 37, 37, 37, 37,
        38, 38, 38, 38, 38, 38, 38, 38, 39, 39, 39, 39, 39, 39, 39, 39 };
    return table[(size + 7) >> 3];
}

/// Statistics counters: written by one thread, read by any. Relaxed atomics, so a reader
/// never sees a torn value and the writer pays a plain add.
static inline void lb_counter_add(int64_t *p, int64_t v) {
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}
static inline int64_t lb_counter_load(const int64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline void lb_counter_store(int64_t *p, int64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}
/// Fences for sequence-locked records (one writer, readers that retry; Observability's
/// per-CPU time series): a release fence orders earlier writes before later ones, an
/// acquire fence orders earlier reads before later ones.
static inline void lb_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void lb_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
/// A futex word with sequentially consistent loads and stores (the stall watchdog's "parked"
/// word, read by CPUs that leave their idle sleep: Dekker-style against their sleep flag).
static inline uint32_t lb_u32_load_seq(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void lb_u32_store_seq(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t lb_u32_exchange_seq(uint32_t *p, uint32_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
/// Shared statistics counters (several writers): relaxed read-modify-write.
static inline void lb_atomic_add64(int64_t *p, int64_t v) {
    __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline void lb_atomic_max64(int64_t *p, int64_t v) {
    int64_t old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
}

// Stall capture (stall_capture.c) ------------------------------------------------------
/// Installs the capture signal handler once; returns the signal number or -1.
int lb_stall_install(void);
/// Unblocks the capture signal in the calling thread (threads inherit blocked masks).
int lb_stall_unblock(void);
/// Signals `thread` (a pthread_t, Linux thread id `tid`) and waits up to `timeout_ns` for
/// its handler to record a backtrace. Returns the number of frames or -1.
int lb_stall_capture(unsigned long thread, int tid, int64_t timeout_ns);
/// Frame `index` of the last capture: writes its symbol (mangled) or `binary+offset` into
/// `out`, its address into `address`. Returns 1 for a symbol, 2 for binary+offset, 0 if none.
int lb_stall_symbol(int index, char *out, int capacity, uintptr_t *address);
/// The function symbol (mangled) containing file-relative `offset` in the ELF file at
/// `path`, from its .symtab, into `out`. Returns 1 if found, else 0.
int lb_elf_symbol(const char *path, uint64_t offset, char *out, int capacity);
/// The (mangled) function symbol at `address` (dynamic symbols, then the ELF .symtab).
/// Returns 1 if found. For observability threads only (it may open files).
int lb_symbolize(uintptr_t address, char *out, int capacity);

/// Pointer-sized words shared between a CPU and other threads (per-CPU hooks in the
/// globaldata): a relaxed load (a plain move), a release store and a compare-and-swap.
static inline void *lb_ptr_load_relaxed(void *const *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void lb_ptr_store_release(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int lb_ptr_cas(void **p, void *expected, void *desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

// NetStack ------------------------------------------------------------------------------
/// Opens one queue of TAP device `name` (IFF_TAP|IFF_NO_PI, optionally IFF_MULTI_QUEUE and
/// IFF_VNET_HDR), non-blocking. Returns the descriptor or -errno.
int lb_tap_open_queue(const char *name, int multi_queue, int vnet_hdr);
/// TUNSETOFFLOAD with TUN_F_CSUM (csum) and TUN_F_TSO4/6/ECN (tso). 0 or -errno.
int lb_tap_set_offload(int fd, int csum, int tso);
/// bpf(BPF_PROG_LOAD) of a socket-filter program of `count` 8-byte instructions (struct
/// bpf_insn, little-endian words), license "GPL". On failure, when `log` is not NULL, the
/// verifier's log (NUL-terminated, truncated to `log_size`). Returns the program's
/// descriptor or -errno.
int lb_bpf_load_socket_filter(const unsigned long long *insns, int count, char *log, unsigned int log_size);
/// TUNSETSTEERINGEBPF: program `prog_fd` (-1 removes it) chooses the queue of every frame
/// the kernel sends to the TAP that `fd` is a queue of. 0 or -errno.
int lb_tap_set_steering_ebpf(int fd, int prog_fd);
/// Size of the virtio-net header in front of every frame with IFF_VNET_HDR (10).
int lb_tap_vnet_hdr_size(void);
/// read(2); bytes or -errno.
long lb_read(int fd, void *buf, size_t len);
/// readv(2) into one or two buffers (b1 may be NULL); bytes or -errno.
long lb_readv2(int fd, void *b0, size_t l0, void *b1, size_t l1);
/// writev(2) of up to 16 buffers; bytes or -errno.
long lb_writev(int fd, void *const *bases, const size_t *lens, int count);
/// close(2); 0 or -errno.
int lb_close(int fd);
// end NetStack --------------------------------------------------------------------------

/// preadv2(fd, {buf, count}, offset, RWF_NOWAIT): reads only what is already in the page
/// cache, failing with EAGAIN instead of waiting for the disk. Returns bytes read or -errno.
long lb_pread_nowait(int fd, void *buf, size_t count, int64_t offset);

#ifdef __cplusplus
}
#endif
#endif
