/* forksim calibration: scheduler costs (idle-CPU wake-up, context switch, IPI send).
 *
 * Build: cc -O2 -o schedbench schedbench.c
 * Usage: schedbench MODE -a CPU_A -b CPU_B [-n reps] [-w warm] [-s spin_us]
 * One JSON object per line on stdout; times in nanoseconds (CLOCK_MONOTONIC, synchronised TSC).
 *
 * wake   Two processes on CPU_A and CPU_B take turns waking each other through a futex in shared
 *        memory. Before each wake the waker spins spin_us (default 200 us) so that the other side has
 *        long blocked and, when CPU_B != CPU_A, its vCPU has halted. Per wake:
 *          lat_ns  = the wakee's first clock read after FUTEX_WAIT returns - the waker's clock just
 *                    before FUTEX_WAKE (cross-CPU: the idle-wake latency)
 *          call_ns = the waker's time inside FUTEX_WAKE (cross-CPU: try_to_wake_up incl. the IPI send)
 *        With CPU_A == CPU_B the wakee runs only when the waker blocks, so lat_ns is not a wake-up
 *        latency there; call_ns is the local wake without IPI.
 * nowake call_ns of FUTEX_WAKE with no waiter (the bare syscall), for subtraction.
 * pipe   Classic ping-pong of one byte through two pipes between CPU_A and CPU_B:
 *          rtt_ns = one round trip (two wake-ups and, on one CPU, two context switches).
 * pipe1  One process writes then reads one byte through its own pipe (no block, no switch):
 *          rtt_ns = the two syscalls' cost, to subtract from pipe's half round trip.
 * exitwake  Where a child's exit wakes its parent (do_notify_parent) when the child ran alone on CPU_B and
 *        the parent's CPU, CPU_A, runs a CPU hog (pinned there): the parent moves to CPU_A, widens its
 *        affinity to both CPUs, spins spin_us (default 200 us) beside the hog, forks a child that pins
 *        itself to CPU_B, spins 50 us and exits, and blocks in waitpid. Per creation:
 *          cpu = the CPU the parent returned from waitpid on (sched_getcpu), prev_cpu = CPU_A
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lab.h" /* now_ns, busy_wait_us, pin_cpu (forksim/lab/csrc) */

struct shared {
    volatile int32_t turn; /* futex word: whose turn (0: A, 1: B), bumped by 2 per round */
    volatile int32_t pad;
    volatile int64_t t_wake;
    volatile int64_t lat_ab;  /* A -> B wake latency, written by B */
    volatile int64_t lat_ba;  /* B -> A wake latency, written by A */
    volatile int64_t call_ba; /* B's FUTEX_WAKE time, written by B */
};

static void pin(int cpu)
{
    if (pin_cpu(cpu)) {
        printf("{\"error\": \"sched_setaffinity: %s\"}\n", strerror(errno));
        exit(3);
    }
}

static long futex(volatile int32_t *uaddr, int op, int val)
{
    return syscall(SYS_futex, uaddr, op, val, NULL, NULL, 0);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "wake";
    int a = 0, b = 1, opt;
    long reps = 200, warm = 10, spin_us = 200;
    optind = 2;
    while ((opt = getopt(argc, argv, "a:b:n:w:s:")) != -1) {
        switch (opt) {
        case 'a': a = atoi(optarg); break;
        case 'b': b = atoi(optarg); break;
        case 'n': reps = atol(optarg); break;
        case 'w': warm = atol(optarg); break;
        case 's': spin_us = atol(optarg); break;
        default: return 2;
        }
    }
    struct shared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return 3;
    memset((void *)sh, 0, sizeof *sh);

    if (!strcmp(mode, "nowake")) {
        pin(a);
        for (long i = -warm; i < reps; i++) {
            int64_t t0 = now_ns();
            futex(&sh->turn, FUTEX_WAKE, 1);
            int64_t t1 = now_ns();
            if (i >= 0)
                printf("{\"b\": \"nowake\", \"i\": %ld, \"call_ns\": %ld}\n", i, (long)(t1 - t0));
        }
        return 0;
    }
    if (!strcmp(mode, "pipe1")) {
        int p[2];
        char c = 'x';
        pin(a);
        if (pipe(p))
            return 3;
        for (long i = -warm; i < reps; i++) {
            int64_t t0 = now_ns();
            if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1)
                return 3;
            int64_t t1 = now_ns();
            if (i >= 0)
                printf("{\"b\": \"pipe1\", \"i\": %ld, \"rtt_ns\": %ld}\n", i, (long)(t1 - t0));
        }
        return 0;
    }
    if (!strcmp(mode, "pipe")) {
        int p1[2], p2[2];
        char c = 'x';
        if (pipe(p1) || pipe(p2))
            return 3;
        pid_t pid = fork();
        if (pid == 0) {
            pin(b);
            close(p1[1]);
            close(p2[0]);
            for (;;) {
                if (read(p1[0], &c, 1) != 1)
                    _exit(0);
                if (write(p2[1], &c, 1) != 1)
                    _exit(0);
            }
        }
        pin(a);
        for (long i = -warm; i < reps; i++) {
            int64_t t0 = now_ns();
            if (write(p1[1], &c, 1) != 1 || read(p2[0], &c, 1) != 1)
                break;
            int64_t t1 = now_ns();
            if (i >= 0)
                printf("{\"b\": \"pipe\", \"i\": %ld, \"a\": %d, \"cpu_b\": %d, \"rtt_ns\": %ld}\n", i, a, b,
                       (long)(t1 - t0));
        }
        close(p1[1]);
        waitpid(pid, NULL, 0);
        return 0;
    }
    if (!strcmp(mode, "exitwake")) {
        pid_t hog = fork();
        if (hog == 0) {
            pin(a);
            for (;;)
                __asm__ volatile("");
        }
        cpu_set_t both;
        CPU_ZERO(&both);
        CPU_SET(a, &both);
        CPU_SET(b, &both);
        for (long i = -warm; i < reps; i++) {
            pin(a);
            if (sched_setaffinity(0, sizeof both, &both))
                break;
            busy_wait_us(spin_us);
            pid_t child = fork();
            if (child == 0) {
                pin(b);
                busy_wait_us(50);
                _exit(0);
            }
            if (child < 0 || waitpid(child, NULL, 0) != child)
                break;
            int cpu = sched_getcpu();
            if (i >= 0)
                printf("{\"b\": \"exitwake\", \"i\": %ld, \"prev_cpu\": %d, \"waker_cpu\": %d, \"cpu\": %d}\n",
                       i, a, b, cpu);
        }
        kill(hog, SIGKILL);
        waitpid(hog, NULL, 0);
        return 0;
    }
    /* wake */
    pid_t pid = fork();
    int me = pid == 0 ? 1 : 0;
    pin(me ? b : a);
    for (long i = -warm; i < reps; i++) {
        for (int side = 0; side < 2; side++) {
            int32_t want = (int32_t)((i + warm) * 2 + side);
            if (side == me) {
                /* my turn to wake the other side */
                while (sh->turn != want)
                    futex(&sh->turn, FUTEX_WAIT, sh->turn);
                busy_wait_us(spin_us);
                int64_t t0 = now_ns();
                sh->t_wake = t0;
                __atomic_store_n(&sh->turn, want + 1, __ATOMIC_SEQ_CST);
                futex(&sh->turn, FUTEX_WAKE, 1);
                int64_t t1 = now_ns();
                if (!me && i >= 0)
                    printf("{\"b\": \"wake\", \"i\": %ld, \"a\": %d, \"cpu_b\": %d, \"call_ns\": %ld, ", i, a, b,
                           (long)(t1 - t0));
                if (me)
                    sh->call_ba = t1 - t0; /* B's call time, reported by A */
            } else {
                int32_t v;
                while ((v = sh->turn) != want + 1)
                    futex(&sh->turn, FUTEX_WAIT, v);
                int64_t t2 = now_ns();
                if (!me)
                    sh->lat_ba = t2 - sh->t_wake;
                else
                    sh->lat_ab = t2 - sh->t_wake;
            }
        }
        if (!me && i >= 0)
            printf("\"lat_ns\": %ld, \"lat_back_ns\": %ld, \"call_back_ns\": %ld}\n", (long)sh->lat_ab,
                   (long)sh->lat_ba, (long)sh->call_ba);
    }
    if (me)
        _exit(0);
    waitpid(pid, NULL, 0);
    return 0;
}
