// Stall capture: a signal handler that records the interrupted thread's backtrace into one
// preallocated buffer, for the stall watchdog (Sources/LWKT/Observability/StallWatchdog.swift).
// The watchdog requests one capture at a time; the handler writes only that buffer and two
// words, so it allocates nothing and takes no lock. backtrace() is called once at install
// time so that its lazy loading of the unwinder happens outside any signal handler.
#define _GNU_SOURCE
#include "CLibellula.h"
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define LB_STALL_FRAMES 64

int lb_elf_symbol(const char *path, uint64_t offset, char *out, int capacity);

static void *stall_frames[LB_STALL_FRAMES];
static volatile int stall_depth;
static volatile int stall_state;   // 0 idle, 1 requested, 2 captured
static volatile pid_t stall_target_tid;
static int stall_signal;

static void stall_handler(int sig, siginfo_t *info, void *ctx) {
    (void)sig; (void)info; (void)ctx;
    if (__atomic_load_n(&stall_state, __ATOMIC_ACQUIRE) != 1) return;
    if (lb_gettid() != stall_target_tid) return;
    int saved = errno;
    stall_depth = backtrace(stall_frames, LB_STALL_FRAMES);
    __atomic_store_n(&stall_state, 2, __ATOMIC_RELEASE);
    errno = saved;
}

int lb_stall_install(void) {
    if (stall_signal) return stall_signal;
    void *warm[4];
    (void)backtrace(warm, 4);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = stall_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    int sig = SIGRTMIN + 3;
    if (sigaction(sig, &sa, NULL) != 0) return -1;
    stall_signal = sig;
    return sig;
}

int lb_stall_capture(unsigned long thread, int tid, int64_t timeout_ns) {
    if (!stall_signal) return -1;
    stall_depth = 0;
    stall_target_tid = tid;
    __atomic_store_n(&stall_state, 1, __ATOMIC_RELEASE);
    if (pthread_kill((pthread_t)thread, stall_signal) != 0) {
        __atomic_store_n(&stall_state, 0, __ATOMIC_RELEASE);
        return -1;
    }
    uint64_t deadline = lb_now_ns() + (uint64_t)timeout_ns;
    while (__atomic_load_n(&stall_state, __ATOMIC_ACQUIRE) != 2) {
        if (lb_now_ns() > deadline) {
            __atomic_store_n(&stall_state, 0, __ATOMIC_RELEASE);
            return -1;
        }
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
    int depth = stall_depth;
    __atomic_store_n(&stall_state, 0, __ATOMIC_RELEASE);
    return depth;
}

int lb_stall_symbol(int index, char *out, int capacity, uintptr_t *address) {
    if (index < 0 || index >= stall_depth || capacity < 2) return 0;
    void *pc = stall_frames[index];
    *address = (uintptr_t)pc;
    Dl_info info;
    if (dladdr(pc, &info) && info.dli_sname) {
        snprintf(out, (size_t)capacity, "%s", info.dli_sname);
        return 1;
    }
    if (dladdr(pc, &info) && info.dli_fname) {
        // Return addresses point after the call: look up the byte before them.
        uint64_t off = (uint64_t)((uintptr_t)pc - (uintptr_t)info.dli_fbase) - (index > 0 ? 1 : 0);
        if (lb_elf_symbol(info.dli_fname, off, out, capacity) == 1) return 1;
        snprintf(out, (size_t)capacity, "%s+0x%lx", info.dli_fname,
                 (unsigned long)((uintptr_t)pc - (uintptr_t)info.dli_fbase));
        return 2;
    }
    out[0] = 0;
    return 0;
}

int lb_stall_unblock(void) {
    if (!stall_signal) return -1;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, stall_signal);
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

// Symbols of binaries whose functions are not in the dynamic symbol table (a Swift
// executable's own code): looked up in the file's ELF .symtab. Called on the watchdog
// thread only, after a capture; the last file is kept mapped.
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static char elf_path[512];
static const unsigned char *elf_map;
static size_t elf_size;

static int elf_open(const char *path) {
    if (elf_map && strcmp(path, elf_path) == 0) return 0;
    if (elf_map) { munmap((void *)elf_map, elf_size); elf_map = NULL; }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof(Elf64_Ehdr)) { close(fd); return -1; }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return -1;
    const Elf64_Ehdr *eh = m;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64) {
        munmap(m, (size_t)st.st_size);
        return -1;
    }
    elf_map = m;
    elf_size = (size_t)st.st_size;
    snprintf(elf_path, sizeof elf_path, "%s", path);
    return 0;
}

static pthread_mutex_t elf_lock = PTHREAD_MUTEX_INITIALIZER;
static int elf_symbol_locked(const char *path, uint64_t offset, char *out, int capacity);

// Called only from observability OS threads (the watchdog, the sampler), never a CPU.
int lb_elf_symbol(const char *path, uint64_t offset, char *out, int capacity) {
    pthread_mutex_lock(&elf_lock);
    int r = elf_symbol_locked(path, offset, out, capacity);
    pthread_mutex_unlock(&elf_lock);
    return r;
}

int lb_symbolize(uintptr_t address, char *out, int capacity) {
    Dl_info info;
    if (capacity < 2 || !dladdr((void *)address, &info)) return 0;
    if (info.dli_sname) { snprintf(out, (size_t)capacity, "%s", info.dli_sname); return 1; }
    if (info.dli_fname && lb_elf_symbol(info.dli_fname, (uint64_t)(address - (uintptr_t)info.dli_fbase), out, capacity) == 1) return 1;
    return 0;
}

static int elf_symbol_locked(const char *path, uint64_t offset, char *out, int capacity) {
    if (capacity < 2 || elf_open(path) != 0) return 0;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)elf_map;
    if (eh->e_shoff == 0 || eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > elf_size) return 0;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(elf_map + eh->e_shoff);
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
        const Elf64_Shdr *strs = &sh[sh[i].sh_link];
        if (sh[i].sh_offset + sh[i].sh_size > elf_size || strs->sh_offset + strs->sh_size > elf_size) return 0;
        const Elf64_Sym *syms = (const Elf64_Sym *)(elf_map + sh[i].sh_offset);
        size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
        const char *names = (const char *)(elf_map + strs->sh_offset);
        for (size_t k = 0; k < n; k++) {
            if (ELF64_ST_TYPE(syms[k].st_info) != STT_FUNC || syms[k].st_value == 0) continue;
            if (offset >= syms[k].st_value && offset < syms[k].st_value + (syms[k].st_size ? syms[k].st_size : 1)) {
                if (syms[k].st_name >= strs->sh_size) return 0;
                snprintf(out, (size_t)capacity, "%s", names + syms[k].st_name);
                return 1;
            }
        }
    }
    return 0;
}
