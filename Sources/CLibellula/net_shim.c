// NetStack: thin wrappers around the TUN/TAP ioctls. No logic lives here.
#define _GNU_SOURCE
#include "CLibellula.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/bpf.h>
#include <sys/syscall.h>

int lb_tap_open_queue(const char *name, int multi_queue, int vnet_hdr) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (multi_queue) ifr.ifr_flags |= IFF_MULTI_QUEUE;
    if (vnet_hdr) ifr.ifr_flags |= IFF_VNET_HDR;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { int e = errno; close(fd); return -e; }
    return fd;
}

int lb_tap_set_offload(int fd, int csum, int tso) {
    unsigned int flags = 0;
    if (csum) flags |= TUN_F_CSUM;
    if (csum && tso) flags |= TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    if (ioctl(fd, TUNSETOFFLOAD, flags) < 0) return -errno;
    return 0;
}

int lb_bpf_load_socket_filter(const unsigned long long *insns, int count, char *log, unsigned int log_size) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (unsigned long long)(unsigned long)insns;
    attr.insn_cnt = (unsigned int)count;
    attr.license = (unsigned long long)(unsigned long)"GPL";
    int fd = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (fd >= 0) return fd;
    int e = errno;
    if (log && log_size > 0) {
        // Load again with the verifier's log on, only to say why.
        log[0] = 0;
        attr.log_buf = (unsigned long long)(unsigned long)log;
        attr.log_size = log_size;
        attr.log_level = 1;
        int again = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
        if (again >= 0) return again;
        log[log_size - 1] = 0;
    }
    return -e;
}

int lb_tap_set_steering_ebpf(int fd, int prog_fd) {
    if (ioctl(fd, TUNSETSTEERINGEBPF, &prog_fd) < 0) return -errno;
    return 0;
}

int lb_tap_vnet_hdr_size(void) { return 10; }

long lb_read(int fd, void *buf, size_t len) {
    ssize_t n = read(fd, buf, len);
    return n < 0 ? -errno : (long)n;
}

long lb_readv2(int fd, void *b0, size_t l0, void *b1, size_t l1) {
    struct iovec iov[2] = { { b0, l0 }, { b1, l1 } };
    ssize_t n = readv(fd, iov, b1 ? 2 : 1);
    return n < 0 ? -errno : (long)n;
}

long lb_writev(int fd, void *const *bases, const size_t *lens, int count) {
    struct iovec iov[16];
    if (count > 16) count = 16;
    for (int i = 0; i < count; i++) { iov[i].iov_base = bases[i]; iov[i].iov_len = lens[i]; }
    ssize_t n = writev(fd, iov, count);
    return n < 0 ? -errno : (long)n;
}

int lb_close(int fd) { return close(fd) < 0 ? -errno : 0; }
