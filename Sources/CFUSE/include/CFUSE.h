// CFUSE: the FUSE kernel protocol's message layouts (from the kernel's own UAPI header,
// <linux/fuse.h>, which ships with the C library headers) and the few calls Swift cannot
// make itself: the variadic ioctl that clones a /dev/fuse channel, mount(2) with FUSE's
// option string, and receiving a descriptor from fusermount3 over a socket. No libfuse.
#ifndef LIBELLULA_CFUSE_H
#define LIBELLULA_CFUSE_H

#include <stdint.h>
#include <sys/types.h>
#include <linux/fuse.h>

/// Opens /dev/fuse (read/write, close-on-exec, optionally non-blocking). Returns the
/// descriptor or -errno.
int lb_fuse_open_device(int nonblocking);

/// Opens a new /dev/fuse descriptor and attaches it to the session of `session_fd`
/// (FUSE_DEV_IOC_CLONE): requests of the one mount can then be read from either, and each
/// reply goes back on the descriptor its request came from. Returns the descriptor or -errno.
int lb_fuse_clone_channel(int session_fd, int nonblocking);

/// mount(2) of a FUSE file system of type `fuse.<subtype>` at `mountpoint` served by `fd`,
/// with `extra` appended to the option string (may be empty). Returns 0 or -errno.
int lb_fuse_kernel_mount(int fd, const char *mountpoint, const char *subtype, unsigned mode_bits,
                         unsigned uid, unsigned gid, const char *extra);

/// Runs `fusermount3 -o OPTIONS -- MOUNTPOINT` with a socket in _FUSE_COMMFD and receives
/// the /dev/fuse descriptor it opens (the unprivileged mount path). Returns the descriptor
/// or -errno (-ENOENT when fusermount3 is not installed).
int lb_fuse_fusermount(const char *fusermount, const char *mountpoint, const char *options);

/// umount2(mountpoint, MNT_DETACH when `lazy`). Returns 0 or -errno.
int lb_fuse_kernel_unmount(const char *mountpoint, int lazy);

#endif
