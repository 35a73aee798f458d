/* Cold forks after a slept or a spun gap, interleaved in one process (calibration/data/gaps-spin-sleep-20261203.json).
 *
 * Build: gcc -O2 -o cold_gaps tools/cold_gaps.c
 * Usage: cold_gaps RSS_MIB ROUNDS CPU > out.jsonl
 *
 * One parent pinned to CPU with RSS_MIB of touched memory. Each round runs the gaps 0, 1, 10, 30, 100, 300 and
 * 1000 ms twice, once slept (nanosleep: the vCPU halts) and once spun (clock reads, no memory traffic), in a
 * shuffled order (fixed seed), so that the host's drift over minutes hits every gap alike. After each gap: a
 * fixed xorshift loop, timed (alu: the CPU's speed at that moment, no memory), then fork() timed in wall and
 * thread CPU time (the child _exits at once), then waitpid. One JSON line per fork, times in ns; drop round 0.
 * forkbench cold -G (forksim/calibration/csrc) is the calibration's version of the same design. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t ns(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static volatile uint64_t sink;

static int64_t alu(void)
{
    int64_t t = ns(CLOCK_MONOTONIC);
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    sink = x;
    return ns(CLOCK_MONOTONIC) - t;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: cold_gaps RSS_MIB ROUNDS CPU\n");
        return 2;
    }
    size_t rss = (size_t)atol(argv[1]) << 20;
    int rounds = atoi(argv[2]), cpu = atoi(argv[3]);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set))
        return perror("sched_setaffinity"), 1;
    char *p = mmap(NULL, rss ? rss : 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return perror("mmap"), 1;
    for (size_t o = 0; o < rss; o += 4096)
        p[o] = 1;
    const int gaps_ms[] = {0, 1, 10, 30, 100, 300, 1000}, ng = 7, n = 2 * ng;
    int idx[2 * 7];
    srand(1);
    for (int w = 0; w < 5; w++) {
        pid_t c = fork();
        if (!c)
            _exit(0);
        waitpid(c, NULL, 0);
    }
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < n; i++)
            idx[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = rand() % (i + 1), t = idx[i];
            idx[i] = idx[j], idx[j] = t;
        }
        for (int k = 0; k < n; k++) {
            int gap = gaps_ms[idx[k] % ng], spin = idx[k] >= ng;
            if (spin) {
                int64_t end = ns(CLOCK_MONOTONIC) + (int64_t)gap * 1000000;
                while (ns(CLOCK_MONOTONIC) < end)
                    ;
            } else if (gap) {
                struct timespec ts = {gap / 1000, (gap % 1000) * 1000000L};
                nanosleep(&ts, NULL);
            }
            int64_t a = alu();
            int64_t c0 = ns(CLOCK_THREAD_CPUTIME_ID), t0 = ns(CLOCK_MONOTONIC);
            pid_t c = fork();
            if (!c)
                _exit(0);
            int64_t t1 = ns(CLOCK_MONOTONIC), c1 = ns(CLOCK_THREAD_CPUTIME_ID);
            waitpid(c, NULL, 0);
            int64_t t2 = ns(CLOCK_MONOTONIC);
            printf("{\"rss\":%zu,\"r\":%d,\"gap\":%d,\"spin\":%d,\"alu\":%ld,\"fork\":%ld,\"rt\":%ld,\"cpu\":%ld}\n",
                   rss >> 20, r, gap, spin, (long)a, (long)(t1 - t0), (long)(t2 - t0), (long)(c1 - c0));
        }
        fflush(stdout);
    }
    return 0;
}
