/* bench/alternatives.c: how a first sighting's result can be had, measured in C.
 *
 * A child stats N paths (`new`: N distinct paths, every other one existing; `same`: one path
 * N times) with raw newfstatat under one of these tracers, each a floor for its way of
 * getting (path, result) for a watched call (single-threaded tracee, blocking waits, no
 * SIGCHLD wake-ups, no stack read: only the mechanism):
 *
 *   none             untraced
 *   notify-continue  USER_NOTIF: RECV, read the path, reply CONTINUE (capture-then-continue:
 *                    no result)
 *   notify-upgrade   USER_NOTIF, the notify engine's upgrade: PTRACE_INTERRUPT, the
 *                    interrupt stop (GETREGS), PTRACE_SYSCALL, the restarted call's entry
 *                    stop, PTRACE_SYSCALL, the second notification, CONTINUE, the exit stop
 *                    (GET_SYSCALL_INFO), PTRACE_CONT
 *   notify-killable  USER_NOTIF with SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: RECV, read the
 *                    path, PTRACE_INTERRUPT (the wait, received, is killable only: the
 *                    thread stays in it), reply CONTINUE; the call runs and the thread stops
 *                    on its way back to user mode (PTRACE_EVENT_STOP) before any user
 *                    instruction: GETREGS gives the result (rax) and the registers of the
 *                    call (rip, rsp, rbp unchanged); PTRACE_CONT. A restart errno in rax
 *                    (a blocking call the pending interrupt cut short) sends the restarted
 *                    call through the upgrade's tail (PTRACE_SYSCALL, entry stop, second
 *                    notification, CONTINUE, exit stop)
 *   trace-2stop      RET_TRACE (the ptrace engine; what routing a call class to RET_TRACE
 *                    gives its first sightings): seccomp stop (GET_SYSCALL_INFO, GETREGS,
 *                    read the path), PTRACE_SYSCALL, exit stop (GET_SYSCALL_INFO), PTRACE_CONT
 *   trace-1stop      RET_TRACE, the seccomp stop only (PTRACE_CONT at once: what that
 *                    routing gives a repeat; no result)
 *
 * Usage: alternatives MODE new|same N DIR RECORDS
 * Prints: mode, workload, N, the child's loop microseconds per call, the tracer's kernel
 * requests per call; writes "path<TAB>result" per call to RECORDS ("?" when not observed).
 * bench/alternatives.py builds and drives it, and compares RECORDS with strace's set.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP 1UL
#endif
#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif

static unsigned long long requests; /* the tracer's kernel requests, counted by R() */
#define R(call) (requests++, (call))

enum { NONE, NCONT, NUPG, NKILL, T2, T1 };
static const char *names[] = {"none", "notify-continue", "notify-upgrade", "notify-killable",
                              "trace-2stop", "trace-1stop"};

static void path_of(char *buf, size_t n, const char *dir, int same, long i) {
    if (same)
        snprintf(buf, n, "%s/f-0", dir);
    else
        snprintf(buf, n, "%s/f-%ld", dir, i);
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int install(int mode) {
    uint32_t action = (mode == T2 || mode == T1) ? SECCOMP_RET_TRACE : SECCOMP_RET_USER_NOTIF;
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_newfstatat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, action),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    unsigned long flags = 0;
    if (action == SECCOMP_RET_USER_NOTIF)
        flags = SECCOMP_FILTER_FLAG_NEW_LISTENER |
                (mode == NKILL ? SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV : 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static void child(int mode, int same, long n, const char *dir, int tell, int go) {
    int fd = mode == NONE ? 0 : install(mode);
    if (fd < 0)
        _exit(90);
    if (write(tell, &fd, sizeof fd) != sizeof fd)
        _exit(91);
    char c;
    if (read(go, &c, 1) != 1)
        _exit(92);
    char path[4096];
    struct stat st;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        path_of(path, sizeof path, dir, same, i);
        syscall(SYS_newfstatat, AT_FDCWD, path, &st, 0);
    }
    int64_t dt = now_ns() - t0;
    if (write(tell, &dt, sizeof dt) != sizeof dt)
        _exit(93);
    _exit(0);
}

/* -- the records ---------------------------------------------------------------------- */
static FILE *records;
static char pathbuf[4096];

static void read_path(pid_t tid, uint64_t addr) {
    struct iovec l = {pathbuf, sizeof pathbuf - 1}, r = {(void *)(uintptr_t)addr, 256};
    l.iov_len = 256;
    ssize_t got = R(process_vm_readv(tid, &l, 1, &r, 1, 0));
    pathbuf[got > 0 ? got : 0] = 0;
}

static void record(long long result, int observed) {
    if (observed)
        fprintf(records, "%s\t%lld\n", pathbuf, result);
    else
        fprintf(records, "%s\t?\n", pathbuf);
}

/* -- tracers -------------------------------------------------------------------------- */
static int listener, done_fd; /* done_fd: the child's pipe, readable once its loop ended */

static int recv_notif(struct seccomp_notif *n) {
    for (;;) {
        struct pollfd p[2] = {{listener, POLLIN, 0}, {done_fd, POLLIN, 0}};
        if (R(poll(p, 2, -1)) < 0)
            continue;
        if (!(p[0].revents & POLLIN))
            return -1; /* the child's loop is over, or it is gone */
        memset(n, 0, sizeof *n);
        if (R(ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, n)) == 0)
            return 0;
    }
}

static int reply_continue(uint64_t id) {
    struct seccomp_notif_resp r = {id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE};
    return R(ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &r));
}

static int wait_child(pid_t pid, int *status) {
    return R(waitpid(pid, status, __WALL)) == pid ? 0 : -1;
}

static int is_syscall_stop(int s) { return WIFSTOPPED(s) && WSTOPSIG(s) == (SIGTRAP | 0x80); }
static int is_event(int s, int ev) { return WIFSTOPPED(s) && (s >> 16) == ev; }

static long long exit_rval(pid_t pid) {
    struct __ptrace_syscall_info info;
    R(ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof info, &info));
    return info.exit.rval;
}

/* From a stop of the restarted call's thread: PTRACE_SYSCALL, its entry stop, the
 * notification, CONTINUE, its exit stop. The result; the thread left at the exit stop. */
static long long upgrade_tail(pid_t pid) {
    int status;
    struct seccomp_notif n;
    for (;;) {
        R(ptrace(PTRACE_SYSCALL, pid, 0, 0));
        if (wait_child(pid, &status) || !is_syscall_stop(status))
            return -1000;
        R(ptrace(PTRACE_SYSCALL, pid, 0, 0)); /* the entry stop: seccomp runs next */
        if (recv_notif(&n))
            return -1000;
        reply_continue(n.id);
        if (wait_child(pid, &status) || !is_syscall_stop(status))
            return -1000;
        long long rv = exit_rval(pid);
        if (rv != -512 && rv != -513 && rv != -514 && rv != -516)
            return rv;
    }
}

static void trace_notify(pid_t pid, int mode) {
    struct seccomp_notif n;
    struct user_regs_struct regs;
    int status;
    while (recv_notif(&n) == 0) {
        read_path(pid, n.data.args[1]);
        if (mode == NCONT) {
            reply_continue(n.id);
            record(0, 0);
        } else if (mode == NUPG) {
            R(ptrace(PTRACE_INTERRUPT, pid, 0, 0));
            if (wait_child(pid, &status) || !is_event(status, PTRACE_EVENT_STOP))
                break;
            R(ptrace(PTRACE_GETREGS, pid, 0, &regs)); /* the full view */
            record(upgrade_tail(pid), 1);
            R(ptrace(PTRACE_CONT, pid, 0, 0));
        } else { /* NKILL */
            R(ptrace(PTRACE_INTERRUPT, pid, 0, 0));
            reply_continue(n.id);
            if (wait_child(pid, &status) || !is_event(status, PTRACE_EVENT_STOP))
                break;
            R(ptrace(PTRACE_GETREGS, pid, 0, &regs)); /* the result and the full view */
            long long rv = (long long)regs.rax;
            if (regs.rip != n.data.instruction_pointer || (int)regs.orig_rax != n.data.nr) {
                fprintf(stderr, "not at the call: rip %llx\n", (unsigned long long)regs.rip);
                exit(3);
            }
            if (rv == -512 || rv == -513 || rv == -514 || rv == -516)
                rv = upgrade_tail(pid); /* the pending interrupt cut a blocking call short */
            record(rv, 1);
            R(ptrace(PTRACE_CONT, pid, 0, 0));
        }
    }
}

static void trace_ptrace(pid_t pid, int mode) {
    struct user_regs_struct regs;
    int status;
    for (;;) {
        if (wait_child(pid, &status) || !WIFSTOPPED(status))
            return;
        if (!is_event(status, PTRACE_EVENT_SECCOMP)) {
            R(ptrace(PTRACE_CONT, pid, 0, 0));
            continue;
        }
        struct __ptrace_syscall_info info;
        R(ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof info, &info));
        read_path(pid, info.seccomp.args[1]);
        if (mode == T1) {
            record(0, 0);
            R(ptrace(PTRACE_CONT, pid, 0, 0));
            continue;
        }
        R(ptrace(PTRACE_GETREGS, pid, 0, &regs));
        R(ptrace(PTRACE_SYSCALL, pid, 0, 0));
        if (wait_child(pid, &status) || !is_syscall_stop(status))
            return;
        record(exit_rval(pid), 1);
        R(ptrace(PTRACE_CONT, pid, 0, 0));
    }
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: alternatives MODE new|same N DIR RECORDS\n");
        return 2;
    }
    int mode = -1;
    for (int i = 0; i < 6; i++)
        if (strcmp(argv[1], names[i]) == 0)
            mode = i;
    int same = strcmp(argv[2], "same") == 0;
    long n = atol(argv[3]);
    if (mode < 0 || n <= 0) {
        fprintf(stderr, "alternatives: bad mode or N\n");
        return 2;
    }
    records = fopen(argv[5], "w");
    if (records == NULL)
        return 2;
    int tell[2], go[2];
    if (pipe(tell) || pipe(go))
        return 2;
    pid_t pid = fork();
    if (pid == 0)
        child(mode, same, n, argv[4], tell[1], go[0]);
    int fd;
    if (read(tell[0], &fd, sizeof fd) != sizeof fd)
        return 4;
    if (mode != NONE) {
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (mode != T2 && mode != T1) { /* as the notify engine: SYNC_WAKE_UP when it can */
            listener = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
            ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
        }
        if (ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACESECCOMP |
                                             PTRACE_O_EXITKILL) != 0) {
            perror("seize");
            return 4;
        }
    }
    done_fd = tell[0];
    requests = 0;
    if (write(go[1], "g", 1) != 1)
        return 4;
    if (mode == T2 || mode == T1)
        trace_ptrace(pid, mode);
    else if (mode != NONE)
        trace_notify(pid, mode);
    unsigned long long used = requests;
    int64_t dt = 0;
    if (read(tell[0], &dt, sizeof dt) != sizeof dt)
        return 5;
    int status;
    while (waitpid(pid, &status, __WALL) == pid && !WIFEXITED(status) && !WIFSIGNALED(status))
        ptrace(PTRACE_CONT, pid, 0, 0);
    fclose(records);
    printf("%s %s %ld %.2f %.2f\n", names[mode], same ? "same" : "new", n, dt / 1000.0 / n,
           (double)used / n);
    return 0;
}
