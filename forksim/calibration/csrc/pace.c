/* forksim calibration: the host's speed over time as one vCPU sees it. Pinned to one CPU, times a fixed
 * unit of work (a dependent multiply-add chain over a 32 KiB table: CPU and L1, no system call) back to
 * back and prints each unit's start and length (microseconds from the start). Another tenant on the
 * physical core's SMT sibling, or the host's frequency, slows every unit for a while; forksim.calibration.
 * host_speed finds those episodes in windows of units.
 * usage: pace CPU SECONDS ITERATIONS */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
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
        fprintf(stderr, "usage: pace CPU SECONDS ITERATIONS\n");
        return 2;
    }
    int cpu = atoi(argv[1]);
    double secs = atof(argv[2]);
    int iters = atoi(argv[3]);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        return 1;
    }
    static uint64_t table[4096];
    for (int i = 0; i < 4096; i++)
        table[i] = (uint64_t)i * 2654435761u;
    /* the units are kept in memory and printed at the end: no output inside the measured stretch */
    size_t cap = (size_t)(secs * 1e6) + 16, n = 0;
    double *start = malloc(cap * sizeof *start), *len = malloc(cap * sizeof *len);
    if (!start || !len) {
        perror("malloc");
        return 1;
    }
    uint64_t x = 1;
    double t0 = now_us(), end = t0 + secs * 1e6;
    while (n < cap) {
        double a = now_us();
        for (int i = 0; i < iters; i++) {
            x = x * 6364136223846793005ull + table[(x >> 20) & 4095];
            table[i & 4095] ^= x;
        }
        double b = now_us();
        start[n] = a - t0;
        len[n++] = b - a;
        if (b > end)
            break;
    }
    for (size_t i = 0; i < n; i++)
        printf("%.3f %.3f\n", start[i], len[i]);
    return (int)(x & 0); /* x used: the chain is not optimised away */
}
