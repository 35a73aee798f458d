/* forksim calibration: what interrupts a running CPU. Spins on one CPU reading the clock and prints
 * every gap longer than a threshold (start offset and length, microseconds): the scheduler tick,
 * device and IPI interrupts, and the host taking the vCPU away. The model stretches each chunk of
 * work by the interruptions that land in it.
 * usage: hiccup CPU SECONDS THRESHOLD_US */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
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
    for (;;) {
        double t = now_us();
        if (t - prev > thr)
            printf("%.3f %.3f\n", prev - t0, t - prev);
        prev = t;
        if (t > end)
            break;
    }
    return 0;
}
