/* Helpers shared by the C programs that measure this machine (calibration/csrc/forkbench.c and
 * schedbench.c, validation/csrc/loadgen.c): the clocks, a busy wait, pinning to one CPU.
 * Header-only (static inline): each program is one translation unit, compiled with -I lab/csrc. */
#ifndef FORKSIM_LAB_H
#define FORKSIM_LAB_H

#include <sched.h>
#include <stdint.h>
#include <time.h>

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

#endif
