/* forksim calibration: what interrupts a running CPU. Spins on one CPU reading the clock and prints
 * every gap longer than a threshold (start offset and length, microseconds, and the context switches
 * the spin went through during it): the scheduler tick, device and IPI interrupts, and the host taking
 * the vCPU away (no context switch), or another task of this guest running (a context switch: the
 * guest's own scheduling, which the model simulates, not an interruption). The model stretches each
 * chunk of work by the interruptions that land in it.
 * usage: hiccup CPU SECONDS THRESHOLD_US */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static inline double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static long context_switches(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_nvcsw + r.ru_nivcsw;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: hiccup CPU SECONDS THRESHOLD_US\n");
        return 2;
    }
    int cpu = atoi(argv[1]);
    double secs = atof(argv[2]), thr = atof(argv[3]);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (cpu >= 0 && sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        return 1;
    }
    double t0 = now_us(), end = t0 + secs * 1e6, prev = t0;
    long switches = context_switches();
    for (;;) {
        double t = now_us();
        if (t - prev > thr) {
            long s = context_switches(); /* only after a gap: the syscall stays out of the spin */
            printf("%.3f %.3f %ld\n", prev - t0, t - prev, s - switches);
            switches = s;
            t = now_us(); /* the getrusage and printf are not a gap of the CPU's */
        }
        prev = t;
        if (t > end)
            break;
    }
    return 0;
}
