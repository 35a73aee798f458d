/* Helpers shared by the C programs that measure this machine (calibration/csrc/forkbench.c and
 * schedbench.c, validation/csrc/loadgen.c): the clocks, a busy wait, pinning to one CPU, and a
 * co-runner that sweeps its own memory on the caller's CPU (other work between two forks).
 * Header-only (static inline): each program is one translation unit, compiled with -I lab/csrc. */
#ifndef FORKSIM_LAB_H
#define FORKSIM_LAB_H

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

/* CLOCK_MONOTONIC in nanoseconds: the wall clock every timestamp of a measurement is read on. */
static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* CPU time of the calling thread: what it cost, without the time other tasks ran on its CPU (this
 * machine is shared; a long fork is preempted at dup_mmap's cond_resched points under load). */
static inline int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Busy-wait `us` microseconds on the CPU (keeps it out of idle, unlike a sleep). */
static inline void busy_wait_us(int64_t us)
{
    int64_t end = now_ns() + us * 1000;
    while (now_ns() < end)
        ;
}

/* Pin the calling thread to `cpu` (a negative cpu: leave it unpinned); sched_setaffinity's result. */
static inline int pin_cpu(int cpu)
{
    cpu_set_t set;
    if (cpu < 0)
        return 0;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

/* Other work on the caller's CPU: lab_start_sweeper forks a process now (so it shares none of an image
 * made later; it inherits the caller's pinning) that owns `bytes` of anonymous 4 KiB pages, touched
 * once; each lab_sweep() has it write one byte per 64-byte line of them, lab_sweep_bytes(n) of their
 * first n bytes, and returns when it is done. All return 0, or -1 when a pipe, the fork or the
 * handshake fails. */
static int lab_sweep_go = -1, lab_sweep_done = -1;

static inline int lab_start_sweeper(size_t bytes)
{
    int a[2], b[2];
    if (pipe(a) || pipe(b))
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(a[1]);
        close(b[0]);
        char *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (buf == MAP_FAILED)
            _exit(3);
        madvise(buf, bytes, MADV_NOHUGEPAGE);
        for (size_t off = 0; off < bytes; off += 4096)
            buf[off] = 1;
        size_t n;
        char c = 1;
        while (read(a[0], &n, sizeof n) == sizeof n) { /* a pipe write this small is atomic */
            for (size_t off = 0; off < n && off < bytes; off += 64)
                buf[off] += 1;
            if (write(b[1], &c, 1) != 1)
                _exit(3);
        }
        _exit(0);
    }
    close(a[0]);
    close(b[1]);
    lab_sweep_go = a[1];
    lab_sweep_done = b[0];
    return 0;
}

static inline int lab_sweep_bytes(size_t n)
{
    char c;
    if (write(lab_sweep_go, &n, sizeof n) != sizeof n)
        return -1;
    while (read(lab_sweep_done, &c, 1) != 1)
        if (errno != EINTR)
            return -1;
    return 0;
}

static inline int lab_sweep(void)
{
    return lab_sweep_bytes((size_t)-1);
}

#endif
