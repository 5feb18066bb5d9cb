/* tracer.engine._native: the notify engine's per-call loop in C (tracer/engine/native.py).
 *
 * One object, `Core(listener, wake_fd, specs)`, owns the hot part of the notify loop:
 * poll() on the seccomp listener and on the SIGCHLD wake-up fd, SECCOMP_IOCTL_NOTIF_RECV,
 * the path read with process_vm_readv, and a table of calls the collector armed
 * (tracer/engine/base.py, RepeatTable). A notification whose (tid, nr, flag arguments,
 * syscall PC, path) is armed, and whose key count + 1 is not a power of two, is answered
 * SECCOMP_USER_NOTIF_FLAG_CONTINUE at once and counted here; the interpreter is not
 * entered. So is a call the collector never records: an fstat spelled
 * newfstatat(fd, "", AT_EMPTY_PATH) (glibc's fstat), which the entry decoder drops. `run()` returns to Python for everything else: a notification that is not
 * armed (as a tuple, the fields of struct seccomp_notif), a wake-up byte (a ptrace stop is
 * waiting for waitpid), the listener hanging up, a timeout, a signal (EINTR), or a tick
 * (counts waited half a second: the collector reports them as the run goes). `drain()`
 * hands the counts over. The GIL is released for the whole loop: it touches no Python
 * object.
 *
 * `step(waker, candidates, inside, owes)` is the attach engine's stepping loop
 * (tracer/engine/stepping.py): waitpid(-1, __WALL) with the GIL released, and the syscall
 * stops that need no analysis resumed here with PTRACE_SYSCALL: the exit of an unwatched
 * call (the thread is in `inside`), and an entry whose number (orig_rax) is not a
 * candidate (the thread goes into `inside`). Everything else is returned as (tid, status,
 * waitpid reports taken); tid 0 after a signal (EINTR: Python runs its handlers), -1 when
 * no child is left.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* <linux/seccomp.h>, spelled out so that old headers do not matter (x86-64 sizes) */
struct notif_data {
    int32_t nr;
    uint32_t arch;
    uint64_t ip;
    uint64_t args[6];
};
struct notif {
    uint64_t id;
    uint32_t pid;
    uint32_t flags;
    struct notif_data data;
};
struct notif_resp {
    uint64_t id;
    int64_t val;
    int32_t error;
    uint32_t flags;
};
#define IOCTL_NOTIF_RECV 0xC0502100UL
#define IOCTL_NOTIF_SEND 0xC0182101UL
#define USER_NOTIF_FLAG_CONTINUE 1U
#define AUDIT_ARCH_X86_64 0xC000003EU
#define AT_EMPTY_PATH 0x1000U

#define NR_MAX 512
#define PATH_MAX_READ 4096
#define NBUCKETS 16384 /* power of two */
#define BLOOM_BITS 65536
#define TICK_NS 500000000LL

enum { R_TIMEOUT = 0, R_WAKE = 1, R_HUP = 2, R_TICK = 3, R_EINTR = 4, R_NOTIF = 5, R_ERROR = 6 };

typedef struct {
    uint64_t hash, k1, k2, ip;
    int32_t tid, nr;
    int32_t next; /* bucket chain, or the free list */
    int32_t slot;
    int64_t fold;
    uint64_t n; /* calls counted since the last drain */
    int64_t first_ns, last_ns;
    uint32_t path_len;
    uint8_t live, dirty;
    char *path;
} entry_t;

typedef struct {
    int8_t path_idx, k1_idx, k2_idx, empty_idx, eligible;
} spec_t;

typedef struct {
    PyObject_HEAD
    int listener, wake_fd, listener_open;
    spec_t spec[NR_MAX];
    entry_t *entries;
    int32_t cap, max_entries, top, free_head, live;
    int32_t buckets[NBUCKETS];
    uint64_t bloom[BLOOM_BITS / 64];
    uint64_t *slots;
    int32_t nslots, slots_cap, max_slots;
    int32_t *dirty;
    int32_t ndirty;
    unsigned long long handled, given, reads, restarted, dropped;
    long page;
    struct notif last;
    char buf[PATH_MAX_READ + 1];
} Core;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 29);
}

static uint64_t key_hash(int32_t tid, int32_t nr, uint64_t k1, uint64_t k2, uint64_t ip) {
    return mix(mix(mix(mix(mix(0, (uint64_t)(uint32_t)tid), (uint64_t)(uint32_t)nr), k1), k2), ip);
}

static uint64_t path_hash(uint64_t h, const char *p, size_t n) {
    uint64_t f = 0xCBF29CE484222325ULL;
    for (size_t i = 0; i < n; i++) {
        f ^= (unsigned char)p[i];
        f *= 0x100000001B3ULL;
    }
    return mix(h, f);
}

static int bloom_has(Core *c, uint64_t kh) {
    uint32_t b = (uint32_t)(kh % BLOOM_BITS);
    return (c->bloom[b / 64] >> (b % 64)) & 1;
}

static void bloom_add(Core *c, uint64_t kh) {
    uint32_t b = (uint32_t)(kh % BLOOM_BITS);
    c->bloom[b / 64] |= 1ULL << (b % 64);
}

/* The NUL-terminated string at addr, read a page at a time (a read across the end of a
 * mapping would fail whole). Its length, or -1 (unreadable, or no NUL within the limit:
 * the Python path handles those). */
static ssize_t read_cstring(Core *c, pid_t tid, uint64_t addr) {
    size_t got = 0;
    c->reads++;
    while (got < PATH_MAX_READ) {
        size_t room = (size_t)c->page - (size_t)((addr + got) % (uint64_t)c->page);
        if (room > PATH_MAX_READ - got)
            room = PATH_MAX_READ - got;
        struct iovec local = {c->buf + got, room};
        struct iovec remote = {(void *)(uintptr_t)(addr + got), room};
        ssize_t r = process_vm_readv(tid, &local, 1, &remote, 1, 0);
        if (r <= 0)
            return -1;
        char *nul = memchr(c->buf + got, 0, (size_t)r);
        if (nul != NULL)
            return nul - c->buf;
        got += (size_t)r;
        if ((size_t)r < room)
            return -1;
    }
    return -1;
}

static entry_t *find(Core *c, uint64_t h, int32_t tid, int32_t nr, uint64_t k1, uint64_t k2,
                     uint64_t ip, const char *path, uint32_t len) {
    for (int32_t i = c->buckets[h & (NBUCKETS - 1)]; i >= 0; i = c->entries[i].next) {
        entry_t *e = &c->entries[i];
        if (e->hash == h && e->tid == tid && e->nr == nr && e->k1 == k1 && e->k2 == k2 &&
            e->ip == ip && e->path_len == len && memcmp(e->path, path, len) == 0)
            return e;
    }
    return NULL;
}

static void key_args(const spec_t *s, const uint64_t *args, uint64_t *k1, uint64_t *k2) {
    *k1 = s->k1_idx >= 0 ? args[(int)s->k1_idx] : 0;
    *k2 = s->k2_idx >= 0 ? args[(int)s->k2_idx] : 0;
}

static int reply_continue(Core *c, uint64_t id) {
    struct notif_resp r = {id, 0, 0, USER_NOTIF_FLAG_CONTINUE};
    return ioctl(c->listener, IOCTL_NOTIF_SEND, &r);
}

/* newfstatat(fd, "", AT_EMPTY_PATH) and the like: the entry decoder records nothing for it
 * (an fstat of an open file), so the answer is CONTINUE whatever the collector's state. */
static int dropped_call(Core *c, const struct notif *n, const spec_t *s) {
    if (s->empty_idx < 0 || !(n->data.args[(int)s->empty_idx] & AT_EMPTY_PATH))
        return 0;
    char first;
    struct iovec local = {&first, 1};
    struct iovec remote = {(void *)(uintptr_t)n->data.args[(int)s->path_idx], 1};
    if (process_vm_readv((pid_t)n->pid, &local, 1, &remote, 1, 0) != 1 || first != 0)
        return 0;
    if (reply_continue(c, n->id) != 0)
        c->restarted++;
    else
        c->dropped++;
    return 1;
}

/* 1: answered here (counted, dropped, or the call was interrupted and will notify again);
 * 0: for Python. */
static int try_repeat(Core *c, const struct notif *n, int64_t t) {
    if (n->data.arch != AUDIT_ARCH_X86_64)
        return 0;
    uint32_t nr = (uint32_t)n->data.nr;
    if (nr >= NR_MAX || !c->spec[nr].eligible)
        return 0;
    const spec_t *s = &c->spec[nr];
    if (dropped_call(c, n, s))
        return 1;
    if (c->live == 0)
        return 0;
    uint64_t k1, k2;
    key_args(s, n->data.args, &k1, &k2);
    uint64_t kh = key_hash((int32_t)n->pid, (int32_t)nr, k1, k2, n->data.ip);
    if (!bloom_has(c, kh))
        return 0; /* nothing armed for this thread, call and PC: no read */
    ssize_t len = read_cstring(c, (pid_t)n->pid, n->data.args[(int)s->path_idx]);
    if (len <= 0 || c->buf[0] != '/')
        return 0;
    uint64_t h = path_hash(kh, c->buf, (size_t)len);
    entry_t *e = find(c, h, (int32_t)n->pid, (int32_t)nr, k1, k2, n->data.ip, c->buf, (uint32_t)len);
    if (e == NULL)
        return 0;
    uint64_t count = c->slots[e->slot];
    if (((count + 1) & count) == 0)
        return 0; /* the key's next call is a power-of-two sample: Python observes it */
    if (reply_continue(c, n->id) != 0) {
        c->restarted++; /* a signal ended the wait: the call restarts and notifies again */
        return 1;
    }
    c->slots[e->slot] = count + 1;
    if (e->n == 0)
        e->first_ns = t;
    e->n++;
    e->last_ns = t;
    if (!e->dirty) {
        e->dirty = 1;
        c->dirty[c->ndirty++] = (int32_t)(e - c->entries);
    }
    c->handled++;
    return 1;
}

static int loop(Core *c, int timeout_ms, int *err) {
    int64_t start = now_ns();
    int64_t deadline = timeout_ms >= 0 ? start + (int64_t)timeout_ms * 1000000LL : -1;
    for (;;) {
        struct pollfd fds[2] = {{c->wake_fd, POLLIN, 0}, {c->listener, POLLIN, 0}};
        int wait = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0)
                return R_TIMEOUT;
            wait = (int)((left + 999999) / 1000000);
        }
        int r = poll(fds, c->listener_open ? 2 : 1, wait);
        if (r < 0) {
            if (errno == EINTR)
                return R_EINTR;
            *err = errno;
            return R_ERROR;
        }
        if (r == 0)
            return R_TIMEOUT;
        if (fds[0].revents)
            return R_WAKE;
        if (fds[1].revents & POLLIN) {
            memset(&c->last, 0, sizeof c->last); /* the kernel wants it zeroed */
            if (ioctl(c->listener, IOCTL_NOTIF_RECV, &c->last) != 0)
                continue; /* EINTR, ENOENT (the waiter went away) */
            int64_t t = now_ns();
            if (!try_repeat(c, &c->last, t)) {
                c->given++;
                return R_NOTIF;
            }
            if (c->ndirty && t - start >= TICK_NS)
                return R_TICK;
        } else if (fds[1].revents & (POLLHUP | POLLERR | POLLNVAL)) {
            c->listener_open = 0; /* no process holds the filter any more */
            return R_HUP;
        }
    }
}

/* -- the attach engine's stepping loop ------------------------------------------------ */

#ifndef __WALL
#define __WALL 0x40000000
#endif
#define ORIG_RAX_OFFSET (15 * 8)

static PyObject *native_step(PyObject *module, PyObject *args) {
    (void)module;
    int waker;
    Py_buffer cand;
    PyObject *inside, *owes;
    if (!PyArg_ParseTuple(args, "iy*O!O!", &waker, &cand, &PySet_Type, &inside, &PySet_Type,
                          &owes))
        return NULL;
    const unsigned char *is_candidate = cand.buf;
    Py_ssize_t ncand = cand.len;
    unsigned long long taken = 0;
    PyObject *result = NULL;
    (void)waker; /* its exit is not a syscall stop: returned like any other report */
    for (;;) {
        int status = 0, err = 0;
        pid_t tid;
        Py_BEGIN_ALLOW_THREADS
        tid = waitpid(-1, &status, __WALL);
        err = errno;
        Py_END_ALLOW_THREADS
        if (tid < 0) {
            if (err == EINTR || err == ECHILD) {
                result = Py_BuildValue("(iiK)", err == EINTR ? 0 : -1, 0, taken);
                break;
            }
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            break;
        }
        taken++;
        if ((status >> 8) != (SIGTRAP | 0x80) || (status & 0xFF) != 0x7F) {
            result = Py_BuildValue("(iiK)", (int)tid, status, taken);
            break;
        }
        PyObject *key = PyLong_FromLong(tid);
        if (key == NULL)
            break;
        int in = PySet_Contains(inside, key);
        if (in == 1) { /* the exit of an unwatched call: nothing to read */
            if (PySet_Discard(inside, key) < 0) {
                Py_DECREF(key);
                break;
            }
            Py_DECREF(key);
            ptrace(PTRACE_SYSCALL, tid, 0, 0); /* fails only for a thread that is gone */
            continue;
        }
        int owed = in == 0 ? PySet_Contains(owes, key) : -1;
        if (owed != 0) { /* an owed exit (or an error): Python reads it */
            Py_DECREF(key);
            if (owed < 0)
                break;
            result = Py_BuildValue("(iiK)", (int)tid, status, taken);
            break;
        }
        errno = 0;
        long nr = ptrace(PTRACE_PEEKUSER, tid, (void *)ORIG_RAX_OFFSET, 0);
        if (errno == 0 && nr >= 0 && nr < ncand && is_candidate[nr]) {
            Py_DECREF(key); /* an entry that may be watched: Python decides */
            result = Py_BuildValue("(iiK)", (int)tid, status, taken);
            break;
        }
        /* an unwatched entry (or the thread is gone): only its number was read */
        int added = PySet_Add(inside, key);
        Py_DECREF(key);
        if (added < 0)
            break;
        ptrace(PTRACE_SYSCALL, tid, 0, 0);
    }
    PyBuffer_Release(&cand);
    return result;
}

/* upgrade */
/* The notify engine's upgrade of a notification to a full view (tracer/engine/notify_engine.py,
 * "FULL"), driven here between the two points where Python decides: once Python has sent
 * PTRACE_INTERRUPT, `upgrade(tid)` waits (waitpid(-1, __WALL), the GIL released) for the
 * thread's PTRACE_EVENT_STOP and returns its registers (Python checks them and runs
 * on_entry with a full view); `finish(tid, timeout_ms)` resumes it with PTRACE_SYSCALL,
 * takes the restarted call's entry stop, resumes again, receives the same call's second
 * notification and answers CONTINUE, then waits for the syscall-exit stop on the listener
 * and the wake-up fd together, reads the result (PTRACE_GET_SYSCALL_INFO) and resumes the
 * thread with PTRACE_CONT before returning the result. A restart errno at that exit goes
 * round again, as in Python. Armed repeats of other threads are answered meanwhile
 * (try_repeat). Anything else is handed back to the Python loop with the thread's upgrade
 * state, which then continues exactly as without the core: another thread's report or
 * notification, a signal or group-stop of this thread, its exit, a CONTINUE refused.
 * With WAIT_KILLABLE_RECV (tracer/sandbox/launch.py) Python answers CONTINUE right after the
 * interrupt, and `await_ran(tid, timeout_ms)` waits for the interrupt stop that follows the
 * call (on the listener and the wake-up fd, as for the exit stop): its registers carry the
 * result; `finish` is then needed only when that result is a restart errno. */

#include <sys/user.h>

#ifndef PTRACE_GET_SYSCALL_INFO
#define PTRACE_GET_SYSCALL_INFO 0x420e
#endif
#define EVENT_STOP 128
#define SC_INFO_ENTRY 1
#define SC_INFO_EXIT 2

/* what upgrade()/finish() return first; notify_engine.py has the same numbers */
enum { U_REGS = 0, U_RESULT = 1, U_OTHER = 2, U_NOTIF = 3, U_FAILED = 4, U_GONE = 5,
       U_QUIET = 6, U_PENDING = 7, U_NOCHILD = 8 };
/* the thread's upgrade state, as NotifyEngine.upgrading numbers it */
enum { S_INTERRUPTED = 1, S_RESTART = 2, S_AWAIT_NOTIF = 3, S_AWAIT_EXIT = 4, S_RAN = 5 };

struct sc_exit_info { /* struct ptrace_syscall_info, up to the exit member */
    uint8_t op;
    uint8_t pad[3];
    uint32_t arch;
    uint64_t ip, sp;
    union {
        struct { int64_t rval; uint8_t is_error; } exit;
        uint64_t raw[8];
    } u;
};

typedef struct {
    int kind, state, chase, reap;
    pid_t got;
    int status;
    int64_t rval;
    unsigned stops, notifications;
    int have_regs;
    struct user_regs_struct regs;
} upgrade_t;

static int is_syscall_stop(int status) {
    return (status & 0xFF) == 0x7F && ((status >> 8) & 0xFFFF) == (SIGTRAP | 0x80);
}

static int is_interrupt_stop(int status) {
    return (status & 0xFF) == 0x7F && ((status >> 8) & 0xFF) == SIGTRAP &&
           ((status >> 16) & 0xFF) == EVENT_STOP;
}

/* waitpid(-1, __WALL | flags), retried on EINTR: the tid, 0 (WNOHANG: none), -1 (no child) */
static pid_t wait_any(int flags, int *status) {
    for (;;) {
        pid_t got = waitpid(-1, status, __WALL | flags);
        if (got >= 0 || errno != EINTR)
            return got < 0 ? -1 : got;
    }
}

static int restart_errno(int64_t rval) {
    return rval == -512 || rval == -513 || rval == -514 || rval == -516;
}

/* At the thread's own syscall stop: the next state, with the thread resumed; or a final
 * kind (U_RESULT, U_GONE) with o filled. Mirrors NotifyEngine.syscall_stop. */
static int at_syscall_stop(pid_t tid, upgrade_t *o) {
    if (o->state == S_RESTART) { /* resumed from the interrupt: the restarted call's entry */
        o->state = S_AWAIT_NOTIF;
        ptrace(PTRACE_SYSCALL, tid, 0, 0);
        return -1;
    }
    struct sc_exit_info info;
    memset(&info, 0, sizeof info);
    if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, (void *)sizeof info, &info) <= 0)
        return U_GONE;
    if (info.op == SC_INFO_ENTRY) {
        o->state = S_AWAIT_NOTIF;
    } else if (o->state == S_AWAIT_EXIT && info.op == SC_INFO_EXIT) {
        int64_t rval = info.u.exit.rval;
        if (info.u.exit.is_error && restart_errno(rval)) {
            o->state = S_RESTART; /* interrupted again: it restarts and notifies again */
        } else {
            o->rval = rval;
            ptrace(PTRACE_CONT, tid, 0, 0); /* fails only for a thread that is gone */
            return U_RESULT;
        }
    }
    ptrace(PTRACE_SYSCALL, tid, 0, 0);
    return -1;
}

/* The reports waiting now (the wake-up fd had a byte): the thread's own syscall stops are
 * taken here; the first other report is handed back. -1: none left, go on polling. */
static int take_reports(Core *c, pid_t tid, upgrade_t *o) {
    char sink[512];
    while (read(c->wake_fd, sink, sizeof sink) == (ssize_t)sizeof sink)
        ; /* a short read emptied it: no second read to learn so */
    o->reap = 1; /* bytes were taken: Python reaps what may be left once it is back */
    for (;;) {
        int status = 0;
        pid_t got = wait_any(WNOHANG, &status);
        if (got == 0)
            return -1;
        if (got < 0)
            return U_NOCHILD;
        if (got == tid && o->state == S_RAN && is_interrupt_stop(status)) {
            o->stops++; /* back from the call: its result and registers (await_ran) */
            o->have_regs = ptrace(PTRACE_GETREGS, tid, 0, &o->regs) == 0;
            return U_REGS;
        }
        if (got == tid && o->state != S_RAN && is_syscall_stop(status)) {
            o->stops++;
            int k = at_syscall_stop(tid, o);
            if (k >= 0)
                return k;
            continue;
        }
        o->got = got; /* Python counts what it handles */
        o->status = status;
        return U_OTHER;
    }
}

/* A notification received while the thread is between its entry stop and its exit. */
static int take_notification(Core *c, pid_t tid, upgrade_t *o) {
    struct notif *n = &c->last;
    o->notifications++;
    if ((pid_t)n->pid == tid && (o->state == S_AWAIT_NOTIF || o->state == S_RESTART)) {
        if (reply_continue(c, n->id) != 0)
            return U_PENDING; /* a signal ended the wait: it restarts and notifies again */
        o->state = S_AWAIT_EXIT;
        return -1;
    }
    if ((pid_t)n->pid != tid && try_repeat(c, n, now_ns()))
        return -1;
    c->given++;
    o->notifications--; /* Python counts what it handles */
    return U_NOTIF;
}

static int drive(Core *c, pid_t tid, int timeout_ms, upgrade_t *o) {
    for (;;) {
        if (o->chase) { /* the restarted call's entry stop comes without anyone's help */
            int status = 0;
            pid_t got = wait_any(0, &status);
            if (got < 0)
                return U_NOCHILD;
            if (got != tid || !is_syscall_stop(status)) {
                o->got = got;
                o->status = status;
                return U_OTHER;
            }
            o->stops++;
            o->chase = 0;
            int k = at_syscall_stop(tid, o);
            if (k >= 0)
                return k;
            continue;
        }
        struct pollfd fds[2] = {{c->wake_fd, POLLIN, 0}, {c->listener, POLLIN, 0}};
        int r = poll(fds, c->listener_open ? 2 : 1, timeout_ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return U_NOCHILD;
        }
        /* the notification first: the wake-up fd still holds the bytes of the stops taken
         * while chasing, and by the time the call is answered its exit may have come */
        if (c->listener_open && (fds[1].revents & POLLIN)) {
            memset(&c->last, 0, sizeof c->last);
            if (ioctl(c->listener, IOCTL_NOTIF_RECV, &c->last) == 0) {
                int k = take_notification(c, tid, o);
                if (k >= 0)
                    return k;
            }
        } else if (c->listener_open && (fds[1].revents & (POLLHUP | POLLERR | POLLNVAL))) {
            c->listener_open = 0;
        }
        if (r == 0 || fds[0].revents) {
            int k = take_reports(c, tid, o);
            if (k >= 0)
                return k;
        }
    }
}

static int wait_interrupt_stop(pid_t tid, upgrade_t *o) {
    o->state = S_INTERRUPTED;
    o->chase = 1;
    int status = 0;
    pid_t got = wait_any(0, &status);
    if (got < 0)
        return U_NOCHILD;
    if (got != tid || !is_interrupt_stop(status)) {
        o->got = got;
        o->status = status;
        return U_OTHER;
    }
    o->stops++;
    o->have_regs = ptrace(PTRACE_GETREGS, tid, 0, &o->regs) == 0;
    return U_REGS;
}

static PyObject *notification_tuple(const struct notif *n);

static PyObject *upgrade_result(Core *c, upgrade_t *o) {
    PyObject *a;
    if (o->kind == U_REGS && o->have_regs)
        a = PyBytes_FromStringAndSize((const char *)&o->regs, sizeof o->regs);
    else if (o->kind == U_RESULT)
        a = PyLong_FromLongLong((long long)o->rval);
    else if (o->kind == U_OTHER)
        a = Py_BuildValue("(ii)", (int)o->got, o->status);
    else if (o->kind == U_NOTIF)
        a = notification_tuple(&c->last);
    else {
        Py_INCREF(Py_None);
        a = Py_None;
    }
    if (a == NULL)
        return NULL;
    return Py_BuildValue("(iiNiiII)", o->kind, o->state, a, o->chase, o->reap, o->stops,
                         o->notifications);
}

static PyObject *Core_upgrade(Core *c, PyObject *args) {
    int tid;
    upgrade_t o;
    memset(&o, 0, sizeof o);
    if (!PyArg_ParseTuple(args, "i", &tid))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    o.kind = wait_interrupt_stop((pid_t)tid, &o);
    Py_END_ALLOW_THREADS
    return upgrade_result(c, &o);
}

/* WAIT_KILLABLE_RECV: Python interrupted the thread and answered CONTINUE; the call runs
 * and the thread stops on its way back to user mode. Waited for on the listener and the
 * wake-up fd together (the call may take time), the listener served meanwhile. */
static PyObject *Core_await_ran(Core *c, PyObject *args) {
    int tid, timeout_ms = -1;
    upgrade_t o;
    memset(&o, 0, sizeof o);
    if (!PyArg_ParseTuple(args, "i|i", &tid, &timeout_ms))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    o.state = S_RAN;
    o.kind = drive(c, (pid_t)tid, timeout_ms, &o);
    Py_END_ALLOW_THREADS
    return upgrade_result(c, &o);
}

static PyObject *Core_finish(Core *c, PyObject *args) {
    int tid, timeout_ms = -1;
    upgrade_t o;
    memset(&o, 0, sizeof o);
    if (!PyArg_ParseTuple(args, "i|i", &tid, &timeout_ms))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    o.state = S_RESTART;
    o.chase = 1;
    if (ptrace(PTRACE_SYSCALL, (pid_t)tid, 0, 0) != 0)
        o.kind = U_QUIET;
    else
        o.kind = drive(c, (pid_t)tid, timeout_ms, &o);
    Py_END_ALLOW_THREADS
    return upgrade_result(c, &o);
}

/* -- Python methods ----------------------------------------------------------------- */

static PyObject *Core_run(Core *c, PyObject *args) {
    int timeout_ms = -1, err = 0, r;
    if (!PyArg_ParseTuple(args, "|i", &timeout_ms))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    r = loop(c, timeout_ms, &err);
    Py_END_ALLOW_THREADS
    if (r == R_ERROR) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (r != R_NOTIF)
        return PyLong_FromLong(r);
    return notification_tuple(&c->last);
}

static PyObject *notification_tuple(const struct notif *n) {
    return Py_BuildValue("(KkkiIKKKKKKK)", (unsigned long long)n->id, (unsigned long)n->pid,
                         (unsigned long)n->flags, (int)n->data.nr, (unsigned int)n->data.arch,
                         (unsigned long long)n->data.ip, (unsigned long long)n->data.args[0],
                         (unsigned long long)n->data.args[1], (unsigned long long)n->data.args[2],
                         (unsigned long long)n->data.args[3], (unsigned long long)n->data.args[4],
                         (unsigned long long)n->data.args[5]);
}

static int grow_entries(Core *c) {
    int32_t cap = c->cap ? c->cap * 2 : 256;
    if (cap > c->max_entries)
        cap = c->max_entries;
    if (cap <= c->cap)
        return -1;
    entry_t *e = realloc(c->entries, sizeof(entry_t) * (size_t)cap);
    if (e == NULL)
        return -1;
    int32_t *d = realloc(c->dirty, sizeof(int32_t) * (size_t)cap);
    if (d == NULL) {
        c->entries = e;
        return -1;
    }
    c->entries = e;
    c->dirty = d;
    c->cap = cap;
    return 0;
}

static PyObject *Core_arm(Core *c, PyObject *args) {
    int tid, nr, slot;
    long long fold;
    unsigned long long ip;
    PyObject *argt;
    const char *path;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "iiO!Ky#iL", &tid, &nr, &PyTuple_Type, &argt, &ip, &path, &len,
                          &slot, &fold))
        return NULL;
    if (nr < 0 || nr >= NR_MAX || !c->spec[nr].eligible || len <= 0 || len > PATH_MAX_READ ||
        path[0] != '/' || memchr(path, 0, (size_t)len) != NULL || slot < 0 || slot >= c->nslots ||
        PyTuple_GET_SIZE(argt) != 6)
        return PyLong_FromLong(-1);
    uint64_t a[6];
    for (int i = 0; i < 6; i++) {
        a[i] = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(argt, i));
        if (PyErr_Occurred())
            return NULL;
    }
    uint64_t k1, k2;
    key_args(&c->spec[nr], a, &k1, &k2);
    uint64_t kh = key_hash(tid, nr, k1, k2, ip);
    uint64_t h = path_hash(kh, path, (size_t)len);
    entry_t *e = find(c, h, tid, nr, k1, k2, ip, path, (uint32_t)len);
    if (e != NULL) { /* armed already: count onto the fold the collector names now */
        e->slot = slot;
        e->fold = fold;
        return PyLong_FromLong((long)(e - c->entries));
    }
    int32_t i;
    if (c->free_head >= 0) {
        i = c->free_head;
        c->free_head = c->entries[i].next;
    } else {
        if (c->top == c->cap && grow_entries(c) != 0)
            return PyLong_FromLong(-1);
        i = c->top++;
    }
    char *copy = malloc((size_t)len);
    if (copy == NULL) {
        c->entries[i].live = 0;
        c->entries[i].next = c->free_head;
        c->free_head = i;
        return PyErr_NoMemory();
    }
    memcpy(copy, path, (size_t)len);
    e = &c->entries[i];
    memset(e, 0, sizeof *e);
    e->hash = h;
    e->k1 = k1;
    e->k2 = k2;
    e->ip = ip;
    e->tid = tid;
    e->nr = nr;
    e->slot = slot;
    e->fold = fold;
    e->path = copy;
    e->path_len = (uint32_t)len;
    e->live = 1;
    int32_t *b = &c->buckets[h & (NBUCKETS - 1)];
    e->next = *b;
    *b = i;
    bloom_add(c, kh);
    c->live++;
    return PyLong_FromLong(i);
}

static PyObject *Core_disarm(Core *c, PyObject *arg) {
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || i >= c->top || !c->entries[i].live)
        Py_RETURN_NONE;
    entry_t *e = &c->entries[i];
    int32_t *p = &c->buckets[e->hash & (NBUCKETS - 1)];
    while (*p >= 0 && *p != (int32_t)i)
        p = &c->entries[*p].next;
    if (*p == (int32_t)i)
        *p = e->next;
    free(e->path);
    e->path = NULL;
    e->live = 0;
    e->dirty = 0;
    e->n = 0;
    e->next = c->free_head;
    c->free_head = (int32_t)i;
    c->live--;
    Py_RETURN_NONE;
}

static PyObject *Core_new_slot(Core *c, PyObject *arg) {
    unsigned long long count = PyLong_AsUnsignedLongLongMask(arg);
    if (PyErr_Occurred())
        return NULL;
    if (c->nslots == c->slots_cap) {
        int32_t cap = c->slots_cap ? c->slots_cap * 2 : 1024;
        if (cap > c->max_slots)
            cap = c->max_slots;
        if (cap <= c->slots_cap)
            return PyLong_FromLong(-1);
        uint64_t *s = realloc(c->slots, sizeof(uint64_t) * (size_t)cap);
        if (s == NULL)
            return PyLong_FromLong(-1);
        c->slots = s;
        c->slots_cap = cap;
    }
    c->slots[c->nslots] = count;
    return PyLong_FromLong(c->nslots++);
}

static PyObject *Core_set_count(Core *c, PyObject *args) {
    int slot;
    unsigned long long count;
    if (!PyArg_ParseTuple(args, "iK", &slot, &count))
        return NULL;
    if (slot >= 0 && slot < c->nslots)
        c->slots[slot] = count;
    Py_RETURN_NONE;
}

static void clear_table(Core *c) {
    for (int32_t i = 0; i < c->top; i++)
        if (c->entries[i].live)
            free(c->entries[i].path);
    c->top = 0;
    c->free_head = -1;
    c->live = 0;
    c->ndirty = 0;
    c->nslots = 0;
    memset(c->buckets, 0xFF, sizeof c->buckets);
    memset(c->bloom, 0, sizeof c->bloom);
}

static PyObject *Core_clear(Core *c, PyObject *unused) {
    (void)unused;
    clear_table(c);
    Py_RETURN_NONE;
}

static PyObject *Core_drain(Core *c, PyObject *unused) {
    (void)unused;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int32_t k = 0; k < c->ndirty; k++) {
        entry_t *e = &c->entries[c->dirty[k]];
        if (!e->live || !e->dirty || e->n == 0) {
            e->dirty = 0;
            continue;
        }
        PyObject *t = Py_BuildValue("(LiKKLL)", (long long)e->fold, (int)e->slot,
                                    (unsigned long long)c->slots[e->slot],
                                    (unsigned long long)e->n, (long long)e->first_ns,
                                    (long long)e->last_ns);
        if (t == NULL || PyList_Append(out, t) != 0) {
            Py_XDECREF(t);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(t);
        e->n = 0;
        e->dirty = 0;
    }
    c->ndirty = 0;
    return out;
}

static PyObject *Core_stats(Core *c, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("{sKsKsKsKsKsi}", "handled", c->handled, "dropped", c->dropped,
                         "given", c->given, "reads", c->reads, "restarted", c->restarted,
                         "armed", (int)c->live);
}

static int Core_init(Core *c, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"listener", "wake_fd", "specs", "max_entries", "max_slots", NULL};
    PyObject *specs;
    int max_entries = 65536, max_slots = 262144;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiO|ii", kw, &c->listener, &c->wake_fd, &specs,
                                     &max_entries, &max_slots))
        return -1;
    c->listener_open = 1;
    c->max_entries = max_entries > 0 ? max_entries : 1;
    c->max_slots = max_slots > 0 ? max_slots : 1;
    c->page = sysconf(_SC_PAGESIZE);
    memset(c->spec, 0, sizeof c->spec);
    PyObject *it = PyObject_GetIter(specs);
    if (it == NULL)
        return -1;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        int nr, p, k1, k2, empty;
        int ok = PyArg_ParseTuple(item, "iiiii", &nr, &p, &k1, &k2, &empty);
        Py_DECREF(item);
        if (!ok) {
            Py_DECREF(it);
            return -1;
        }
        if (nr < 0 || nr >= NR_MAX || p < 0 || p > 5 || k1 < -1 || k1 > 5 || k2 < -1 || k2 > 5 ||
            empty < -1 || empty > 5) {
            Py_DECREF(it);
            PyErr_Format(PyExc_ValueError, "bad call spec for %d", nr);
            return -1;
        }
        c->spec[nr] = (spec_t){(int8_t)p, (int8_t)k1, (int8_t)k2, (int8_t)empty, 1};
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    clear_table(c);
    return 0;
}

static PyObject *Core_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    Core *c = (Core *)type->tp_alloc(type, 0);
    if (c != NULL) {
        c->free_head = -1;
        memset(c->buckets, 0xFF, sizeof c->buckets);
    }
    return (PyObject *)c;
}

static void Core_dealloc(Core *c) {
    for (int32_t i = 0; i < c->top; i++)
        if (c->entries[i].live)
            free(c->entries[i].path);
    free(c->entries);
    free(c->dirty);
    free(c->slots);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyMethodDef Core_methods[] = {
    {"run", (PyCFunction)Core_run, METH_VARARGS,
     "run(timeout_ms=-1): answer armed repeats until Python is needed; an int (0 timeout, "
     "1 wake-up, 2 listener hung up, 3 tick, 4 EINTR) or a notification tuple"},
    {"arm", (PyCFunction)Core_arm, METH_VARARGS,
     "arm(tid, nr, args, ip, path, slot, fold) -> handle, or -1"},
    {"disarm", (PyCFunction)Core_disarm, METH_O, "disarm(handle)"},
    {"new_slot", (PyCFunction)Core_new_slot, METH_O, "new_slot(count) -> slot, or -1"},
    {"set_count", (PyCFunction)Core_set_count, METH_VARARGS, "set_count(slot, count)"},
    {"clear", (PyCFunction)Core_clear, METH_NOARGS, "disarm everything, free every slot"},
    {"drain", (PyCFunction)Core_drain, METH_NOARGS,
     "[(fold, slot, slot count, calls, first ns, last ns)] since the last drain"},
    {"stats", (PyCFunction)Core_stats, METH_NOARGS, "counters"},
    {"upgrade", (PyCFunction)Core_upgrade, METH_VARARGS,
     "upgrade(tid) -> (kind, state, value, chase, reap, stops, notifications): wait for the "
     "interrupt stop of a thread Python interrupted (see /* upgrade */)"},
    {"await_ran", (PyCFunction)Core_await_ran, METH_VARARGS,
     "await_ran(tid, timeout_ms=-1) -> as upgrade(): the interrupt stop that follows the "
     "call Python answered (WAIT_KILLABLE_RECV)"},
    {"finish", (PyCFunction)Core_finish, METH_VARARGS,
     "finish(tid, timeout_ms=-1) -> as upgrade(): from the interrupt stop to the result"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tracer.engine._native.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The notify engine's per-call loop (see the module source).",
    .tp_new = Core_new,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
};

static PyMethodDef module_methods[] = {
    {"step", native_step, METH_VARARGS,
     "step(waker, candidates, inside, owes) -> (tid, status, reports taken): the attach "
     "engine's stepping loop (see the module source)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tracer.engine._native",
    "The notify engine's per-call loop and the attach engine's stepping loop in C "
    "(tracer/engine/native.py).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

static int capture_add(PyObject *m); /* the capture section, at the end of the file */

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&CoreType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "TIMEOUT", R_TIMEOUT);
    PyModule_AddIntConstant(m, "WAKE", R_WAKE);
    PyModule_AddIntConstant(m, "HUP", R_HUP);
    PyModule_AddIntConstant(m, "TICK", R_TICK);
    PyModule_AddIntConstant(m, "EINTR", R_EINTR);
    if (capture_add(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* capture */
/*
 * capture(pid, rsp, fs_base, layout, hint_pages, hint_lo, hint_hi)
 *   -> (pages, datas, calls, hint_pages, stack_lo, stack_hi)
 *
 * tracer/unwind/capture.py's take_capture in C: the pages of a stopped thread a walk will
 * read, in rounds of one process_vm_readv each (one iovec per page), a round only for
 * pages not captured yet. `layout` is None (no Go runtime: only [SP, SP+STACK_WINDOW)) or
 * (tls_g_offset, g_stack_hi, g_m, m_g0, m_curg, g_sched, stack_window, max_window, g_span,
 * m_span, max_rounds). `datas[i]` is page `pages[i]`, b"" when it was unreadable. The
 * pure-Python function is the reference: the same pages, the same hint.
 */

#define CAP_PAGE 4096ULL
#define CAP_MAX 192 /* pages one capture holds */
#define CAP_BATCH 64 /* iovecs per process_vm_readv */

typedef struct {
    uint64_t addr[CAP_MAX];
    signed char ok[CAP_MAX]; /* 1 read, 0 unreadable */
    int n;
    int calls;
    char data[CAP_MAX][CAP_PAGE];
} CapStore;

static CapStore cap_store;

typedef struct {
    uint64_t p[CAP_MAX];
    int n;
} CapSet;

static void capset_add(CapSet *s, uint64_t page) {
    for (int i = 0; i < s->n; i++)
        if (s->p[i] == page)
            return;
    if (s->n < CAP_MAX)
        s->p[s->n++] = page;
}

static void capset_range(CapSet *s, uint64_t lo, uint64_t hi) {
    if (lo == 0 || lo >= hi)
        return;
    for (uint64_t p = lo & ~(CAP_PAGE - 1); p < hi && s->n < CAP_MAX; p += CAP_PAGE)
        capset_add(s, p);
}

static int cap_find(const CapStore *st, uint64_t page) {
    for (int i = 0; i < st->n; i++)
        if (st->addr[i] == page)
            return i;
    return -1;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Read the pages of `want` not held yet; the kernel stops a batch at its first unreadable
 * page: that one is kept as unreadable and the rest asked again. */
static void cap_fill(pid_t pid, CapStore *st, const CapSet *want) {
    uint64_t todo[CAP_MAX];
    int n = 0;
    for (int i = 0; i < want->n; i++)
        if (cap_find(st, want->p[i]) < 0)
            todo[n++] = want->p[i];
    qsort(todo, (size_t)n, sizeof(uint64_t), cmp_u64);
    int at = 0;
    while (at < n && st->n < CAP_MAX) {
        int batch = n - at;
        if (batch > CAP_BATCH)
            batch = CAP_BATCH;
        if (batch > CAP_MAX - st->n)
            batch = CAP_MAX - st->n;
        struct iovec local[CAP_BATCH], remote[CAP_BATCH];
        int first = st->n;
        for (int i = 0; i < batch; i++) {
            st->addr[first + i] = todo[at + i];
            st->ok[first + i] = 0;
            local[i].iov_base = st->data[first + i];
            local[i].iov_len = CAP_PAGE;
            remote[i].iov_base = (void *)(uintptr_t)todo[at + i];
            remote[i].iov_len = CAP_PAGE;
        }
        st->calls++;
        ssize_t got = process_vm_readv(pid, local, (unsigned long)batch, remote,
                                       (unsigned long)batch, 0);
        int full = got > 0 ? (int)((uint64_t)got / CAP_PAGE) : 0;
        for (int i = 0; i < full; i++)
            st->ok[first + i] = 1;
        if (full < batch) { /* page todo[at+full] is unreadable: keep it so, go on after */
            st->n = first + full + 1;
            at += full + 1;
        } else {
            st->n = first + batch;
            at += batch;
        }
    }
}

/* The word at addr from the capture alone; 0 with *found = 0 when not captured. */
static uint64_t cap_peek(const CapStore *st, uint64_t addr, int *found) {
    uint64_t off = addr & (CAP_PAGE - 1);
    int i = cap_find(st, addr - off);
    *found = 0;
    if (i < 0 || !st->ok[i] || off > CAP_PAGE - 8)
        return 0;
    uint64_t v;
    memcpy(&v, st->data[i] + off, 8);
    *found = 1;
    return v;
}

typedef struct {
    long long tls_off;
    uint64_t g_stack_hi, g_m, m_g0, m_curg, g_sched, window, max_window, g_span, m_span;
    long rounds;
} CapLayout;

/* _go_pages: the pages a walk reads as far as the capture tells, and the hint. */
static void cap_go_pages(const CapStore *st, const CapLayout *l, uint64_t sp,
                         uint64_t fs_base, CapSet *want, CapSet *kept, uint64_t *lo,
                         uint64_t *hi) {
    int f;
    want->n = 0;
    kept->n = 0;
    *lo = *hi = 0;
    if (!fs_base) {
        capset_range(want, sp, sp + l->window);
        return;
    }
    uint64_t tls = fs_base + (uint64_t)l->tls_off;
    uint64_t g = cap_peek(st, tls, &f);
    if (!g) {
        capset_range(want, sp, sp + l->window);
        capset_add(want, tls & ~(CAP_PAGE - 1));
        return;
    }
    capset_range(kept, g, g + l->g_span);
    uint64_t glo = cap_peek(st, g, &f);
    uint64_t ghi = cap_peek(st, g + l->g_stack_hi, &f);
    if (sp < ghi) {
        uint64_t top = sp + l->max_window < ghi ? sp + l->max_window : ghi;
        capset_range(want, sp, top);
    } else {
        capset_range(want, sp, sp + l->window);
    }
    capset_add(want, tls & ~(CAP_PAGE - 1));
    uint64_t m = cap_peek(st, g + l->g_m, &f);
    if (m) {
        capset_range(kept, m, m + l->m_span);
        if (cap_peek(st, m + l->m_g0, &f) == g) {
            uint64_t curg = cap_peek(st, m + l->m_curg, &f);
            if (curg) {
                capset_range(kept, curg, curg + l->g_span);
                uint64_t gsp = cap_peek(st, curg + l->g_sched, &f);
                uint64_t chi = cap_peek(st, curg + l->g_stack_hi, &f);
                if (gsp && chi && gsp < chi) {
                    uint64_t top = gsp + l->max_window < chi ? gsp + l->max_window : chi;
                    capset_range(kept, gsp - 64, top);
                }
            }
        }
    }
    for (int i = 0; i < kept->n; i++)
        capset_add(want, kept->p[i]);
    *lo = glo;
    *hi = ghi;
}

static PyObject *native_capture(PyObject *self, PyObject *args) {
    (void)self;
    int pid;
    unsigned long long sp, fs_base, hint_lo, hint_hi;
    PyObject *layout, *hint;
    if (!PyArg_ParseTuple(args, "iKKOOKK", &pid, &sp, &fs_base, &layout, &hint, &hint_lo,
                          &hint_hi))
        return NULL;
    CapLayout l = {0, 0, 0, 0, 0, 0, 16384, 65536, 512, 256, 1};
    int go = layout != Py_None;
    if (go && !PyArg_ParseTuple(layout, "LKKKKKKKKKl", &l.tls_off, &l.g_stack_hi, &l.g_m,
                                &l.m_g0, &l.m_curg, &l.g_sched, &l.window, &l.max_window,
                                &l.g_span, &l.m_span, &l.rounds))
        return NULL;
    if (!PyTuple_Check(hint)) {
        PyErr_SetString(PyExc_TypeError, "hint must be a tuple");
        return NULL;
    }
    CapStore *st = &cap_store;
    st->n = 0;
    st->calls = 0;
    CapSet want = {.n = 0}, kept = {.n = 0};
    if (hint_lo <= sp && sp < hint_hi)
        capset_range(&want, sp, sp + l.max_window < hint_hi ? sp + l.max_window : hint_hi);
    else
        capset_range(&want, sp, sp + l.window);
    Py_ssize_t nh = PyTuple_Size(hint);
    for (Py_ssize_t i = 0; i < nh; i++) {
        unsigned long long page = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(hint, i));
        if (PyErr_Occurred())
            return NULL;
        capset_add(&want, page);
    }
    if (go && fs_base)
        capset_add(&want, (fs_base + (uint64_t)l.tls_off) & ~(CAP_PAGE - 1));
    uint64_t lo = 0, hi = 0;
    Py_BEGIN_ALLOW_THREADS
    for (long round = 0; round < (go ? l.rounds : 1); round++) {
        cap_fill((pid_t)pid, st, &want);
        if (!go)
            break;
        cap_go_pages(st, &l, sp, fs_base, &want, &kept, &lo, &hi);
        int all = 1;
        for (int i = 0; i < want.n && all; i++)
            all = cap_find(st, want.p[i]) >= 0;
        if (all)
            break;
    }
    Py_END_ALLOW_THREADS
    PyObject *pages = PyTuple_New(st->n), *datas = PyTuple_New(st->n);
    PyObject *hint_pages = NULL;
    if (pages == NULL || datas == NULL)
        goto fail;
    for (int i = 0; i < st->n; i++) {
        PyObject *a = PyLong_FromUnsignedLongLong(st->addr[i]);
        PyObject *d = PyBytes_FromStringAndSize(st->ok[i] ? st->data[i] : "",
                                                st->ok[i] ? (Py_ssize_t)CAP_PAGE : 0);
        if (a == NULL || d == NULL) {
            Py_XDECREF(a);
            Py_XDECREF(d);
            goto fail;
        }
        PyTuple_SET_ITEM(pages, i, a);
        PyTuple_SET_ITEM(datas, i, d);
    }
    qsort(kept.p, (size_t)kept.n, sizeof(uint64_t), cmp_u64);
    hint_pages = PyTuple_New(kept.n);
    if (hint_pages == NULL)
        goto fail;
    for (int i = 0; i < kept.n; i++) {
        PyObject *a = PyLong_FromUnsignedLongLong(kept.p[i]);
        if (a == NULL)
            goto fail;
        PyTuple_SET_ITEM(hint_pages, i, a);
    }
    return Py_BuildValue("(NNiNKK)", pages, datas, st->calls, hint_pages,
                         (unsigned long long)lo, (unsigned long long)hi);
fail:
    Py_XDECREF(pages);
    Py_XDECREF(datas);
    Py_XDECREF(hint_pages);
    return NULL;
}

static PyMethodDef capture_methods[] = {
    {"capture", native_capture, METH_VARARGS,
     "capture(pid, rsp, fs_base, layout, hint_pages, hint_lo, hint_hi) -> (pages, datas, "
     "calls, hint_pages, stack_lo, stack_hi): tracer/unwind/capture.py's take_capture"},
    {NULL, NULL, 0, NULL},
};

static int capture_add(PyObject *m) {
    return PyModule_AddFunctions(m, capture_methods);
}
