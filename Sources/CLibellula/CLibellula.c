#define _GNU_SOURCE
#include "CLibellula.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

__thread void *lb_tls_current_cpu __attribute__((tls_model("initial-exec"))) = NULL;

const uint32_t LB_EPOLLIN = EPOLLIN, LB_EPOLLOUT = EPOLLOUT, LB_EPOLLERR = EPOLLERR,
               LB_EPOLLHUP = EPOLLHUP, LB_EPOLLRDHUP = EPOLLRDHUP, LB_EPOLLET = EPOLLET,
               LB_EPOLLONESHOT = EPOLLONESHOT;

int lb_pin_self(int core) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int lb_getcpu(void) { return sched_getcpu(); }
int lb_gettid(void) { return (int)syscall(SYS_gettid); }
int lb_online_cores(void) { return (int)sysconf(_SC_NPROCESSORS_ONLN); }

void lb_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, 15);
    buf[15] = 0;
    pthread_setname_np(pthread_self(), buf);
}

long lb_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
    }
    long rc = syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, tsp, NULL, 0);
    return rc < 0 ? -errno : rc;
}

long lb_futex_wake(uint32_t *addr, int count) {
    long rc = syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
    return rc < 0 ? -errno : rc;
}

int lb_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int lb_eventfd_signal(int fd) {
    uint64_t one = 1;
    return write(fd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

uint64_t lb_eventfd_drain(int fd) {
    uint64_t value = 0;
    if (read(fd, &value, sizeof(value)) != sizeof(value)) return 0;
    return value;
}

int lb_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }
int lb_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int lb_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = data;
    int kop = op == 1 ? EPOLL_CTL_ADD : op == 2 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    return epoll_ctl(epfd, kop, fd, &ev) == 0 ? 0 : -errno;
}

int lb_epoll_wait(int epfd, uint32_t *events, uint64_t *data, int max, int64_t timeout_ns) {
    struct epoll_event evs[64];
    if (max > 64) max = 64;
    int n;
    if (timeout_ns < 0) {
        n = epoll_wait(epfd, evs, max, -1);
    } else if (timeout_ns == 0) {
        n = epoll_wait(epfd, evs, max, 0);
    } else {
        struct timespec ts = { .tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000 };
        n = epoll_pwait2(epfd, evs, max, &ts, NULL);
        if (n < 0 && errno == ENOSYS) n = epoll_wait(epfd, evs, max, (int)((timeout_ns + 999999) / 1000000));
    }
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) {
        events[i] = evs[i].events;
        data[i] = evs[i].data.u64;
    }
    return n;
}

int lb_membarrier(void) {
    static int registered = 0;
    if (!registered) {
        if (syscall(SYS_membarrier, 1 << 4 /* REGISTER_PRIVATE_EXPEDITED */, 0, 0) != 0) return -errno;
        registered = 1;
    }
    return syscall(SYS_membarrier, 1 << 3 /* PRIVATE_EXPEDITED */, 0, 0) == 0 ? 0 : -errno;
}

#include <sys/uio.h>

long lb_pread_nowait(int fd, void *buf, size_t count, int64_t offset) {
    struct iovec v = { .iov_base = buf, .iov_len = count };
    ssize_t n = preadv2(fd, &v, 1, (off_t)offset, RWF_NOWAIT);
    return n >= 0 ? (long)n : -(long)errno;
}
