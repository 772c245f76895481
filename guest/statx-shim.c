/* agentbox image shim, preloaded through /etc/ld.so.preload. gVisor's statx(2) before 2023
 * rejects AT_NO_AUTOMOUNT with EINVAL, and coreutils 9 passes that flag, so `ls -l` and
 * `stat` fail inside such a sandbox. The flag means nothing without automount points, so the
 * shim drops it. Built by `agentbox image build` when a C compiler is present. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
  return (int)syscall(SYS_statx, dirfd, path, flags & ~AT_NO_AUTOMOUNT, mask, buf);
}
