#define _GNU_SOURCE
#include "CFUSE.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int lb_fuse_open_device(int nonblocking) {
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0));
    return fd < 0 ? -errno : fd;
}

int lb_fuse_clone_channel(int session_fd, int nonblocking) {
    int fd = lb_fuse_open_device(nonblocking);
    if (fd < 0) return fd;
    uint32_t master = (uint32_t)session_fd;
    if (ioctl(fd, FUSE_DEV_IOC_CLONE, &master) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int lb_fuse_kernel_mount(int fd, const char *mountpoint, const char *subtype, unsigned mode_bits,
                         unsigned uid, unsigned gid, const char *extra) {
    char options[1024];
    char fstype[128];
    int n = snprintf(options, sizeof options, "fd=%d,rootmode=%o,user_id=%u,group_id=%u%s%s",
                     fd, mode_bits, uid, gid, (extra && *extra) ? "," : "", extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof options) return -EINVAL;
    n = snprintf(fstype, sizeof fstype, "fuse.%s", subtype);
    if (n < 0 || (size_t)n >= sizeof fstype) return -EINVAL;
    if (mount(subtype, mountpoint, fstype, MS_NOSUID | MS_NODEV, options) != 0) return -errno;
    return 0;
}

int lb_fuse_fusermount(const char *fusermount, const char *mountpoint, const char *options) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return -errno;
    // The child's end must survive exec: clear close-on-exec on a duplicate.
    int child_end = dup(pair[1]);
    if (child_end < 0) { int e = errno; close(pair[0]); close(pair[1]); return -e; }
    char commfd[32];
    snprintf(commfd, sizeof commfd, "_FUSE_COMMFD=%d", child_end);

    size_t envc = 0;
    while (environ && environ[envc]) envc++;
    char **env = calloc(envc + 2, sizeof *env);
    if (!env) { close(child_end); close(pair[0]); close(pair[1]); return -ENOMEM; }
    for (size_t i = 0; i < envc; i++) env[i] = environ[i];
    env[envc] = commfd;

    char *argv[] = { (char *)fusermount, "-o", (char *)options, "--", (char *)mountpoint, NULL };
    pid_t pid;
    int rc = posix_spawnp(&pid, fusermount, NULL, NULL, argv, env);
    free(env);
    close(child_end);
    close(pair[1]);
    if (rc != 0) { close(pair[0]); return -rc; }

    char byte;
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    ssize_t got;
    do { got = recvmsg(pair[0], &msg, 0); } while (got < 0 && errno == EINTR);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    close(pair[0]);
    if (got <= 0) return -EIO;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) return -EIO;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

int lb_fuse_kernel_unmount(const char *mountpoint, int lazy) {
    if (umount2(mountpoint, lazy ? MNT_DETACH : 0) != 0) return -errno;
    return 0;
}
