/*
 * An LD_PRELOAD shim for the syscall-fault tests (tests/syscall_faults.rs): it counts the
 * process's fsync, fdatasync and rename calls across all threads but RocksDB's background
 * ones (named "rocksdb:..."; their flushes and compactions run at times of their own, which
 * would make the numbering differ from run to run) and, as the environment asks,
 * fails one fsync/fdatasync with EIO, or kills the process (SIGKILL) at one of them or at one
 * rename, before the call happens. Every call is logged with its number and the file it
 * names, so that a dry run shows which numbers fall in which step of the test's script.
 *
 *   TELEO_FAULT_LOG=path     append "sync N thread path" / "rename N thread path" lines to path
 *   TELEO_SYNC_EIO=N         the N-th fsync/fdatasync (1-based) fails with EIO
 *   TELEO_SYNC_KILL=N        the process is killed at the N-th fsync/fdatasync
 *   TELEO_RENAME_KILL=N      the process is killed at the N-th rename
 *
 * Written for this project's tests only.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_long sync_calls;
static atomic_long rename_calls;

static long env_number(const char *name) {
    const char *v = getenv(name);
    return v ? atol(v) : 0;
}

/* Whether the calling thread is one of RocksDB's background threads. */
static int background(char *thread, size_t size) {
    snprintf(thread, size, "?");
    pthread_getname_np(pthread_self(), thread, size);
    for (char *c = thread; *c; c++) {
        if (*c == ' ') {
            *c = '_';
        }
    }
    return strncmp(thread, "rocksdb:", 8) == 0;
}

static void log_call(const char *what, long n, const char *thread, const char *path) {
    const char *log = getenv("TELEO_FAULT_LOG");
    if (!log) {
        return;
    }
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return;
    }
    char line[4200];
    int len = snprintf(line, sizeof line, "%s %ld %s %s\n", what, n, thread, path);
    if (len > 0) {
        ssize_t ignored = write(fd, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
        (void)ignored;
    }
    close(fd);
}

static void path_of_fd(int fd, char *out, size_t size) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, size - 1);
    out[n > 0 ? n : 0] = '\0';
}

/* Count one sync call; whether it must fail (after the kill, if one is due, never returns). */
static int sync_fails(int fd) {
    char thread[32];
    char path[4096];
    path_of_fd(fd, path, sizeof path);
    if (background(thread, sizeof thread)) {
        log_call("sync", 0, thread, path);
        return 0;
    }
    long n = atomic_fetch_add(&sync_calls, 1) + 1;
    log_call("sync", n, thread, path);
    if (n == env_number("TELEO_SYNC_KILL")) {
        raise(SIGKILL);
    }
    return n == env_number("TELEO_SYNC_EIO");
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    if (sync_fails(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    if (sync_fails(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

int rename(const char *from, const char *to) {
    static int (*real)(const char *, const char *);
    if (!real) {
        real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    }
    char thread[32];
    if (background(thread, sizeof thread)) {
        log_call("rename", 0, thread, to);
        return real(from, to);
    }
    long n = atomic_fetch_add(&rename_calls, 1) + 1;
    log_call("rename", n, thread, to);
    if (n == env_number("TELEO_RENAME_KILL")) {
        raise(SIGKILL);
    }
    return real(from, to);
}
