/* forksim calibration: what copy_process copies beyond the address space.
 *
 * Build: cc -O2 -o clonebench clonebench.c
 * Usage: clonebench [options]; one JSON object per line on stdout, like forkbench:
 *   {"shape": {...}}                        what was set up (open fds, live children, flags)
 *   {"b": "clone", "i": k, ...ns fields...} one raw sample (nanoseconds, CLOCK_MONOTONIC)
 *   {"b": "sys", ...}                       CPU time the whole machine spent outside this benchmark
 *                                           (deferred work: a network namespace's cleanup_net)
 *   {"error": "..."}                        a refusal (exit status 3), e.g. EPERM for a namespace
 *
 * The parent (RSS ~0) first opens fds up to -d (dup of /dev/null: the fdtable grows to the next
 * power of two above the highest fd, as expand_fdtable does), then starts -L live children that
 * block in read() on a pipe (a prefork master's idle workers; it waits until each has got there, and
 * with -L it warms up for at least 300 ms), then times -n creations:
 *   fork_ns     = parent's return from the call - t0           (the call: copy_process)
 *   fork_cpu_ns = the parent thread's CPU time over the same call
 *   exit_ns     = waitpid return - the child's last clock read before it exits (do_exit + reap)
 *   rt_ns       = waitpid return - t0
 * The call is glibc fork() with -f 0 and no -C, else glibc clone(fn, stack, FLAGS|SIGCHLD) with
 * FLAGS from -f (hex; CLONE_SIGHAND needs CLONE_VM, so -f adds CLONE_VM when it is set).
 * -a: reap with waitpid(-1) (do_wait walks the parent's children list) instead of waitpid(pid).
 * -A: both, alternating repetition by repetition (odd i: waitpid(-1)); each sample gains "any": 0|1.
 *   One set of -L live children then serves both (their start and teardown dominate the run).
 * -u HEX (unshare(2)): every child calls unshare(HEX) first thing and times it itself (ksys_unshare:
 *   unshare_fs, unshare_fd, unshare_nsproxy_namespaces); a fresh child per repetition, because a
 *   process can unshare CLONE_NEWPID only once and nests CLONE_NEWUSER at most 32 deep. Repetitions
 *   alternate with unshare(0) (the syscall alone, "u": 0) so that both are measured interleaved:
 *   {"b": "unshare", "i": k, "u": 0|1, "unshare_ns", "unshare_cpu_ns", "fork_ns", "exit_ns", "rt_ns"}
 *   (the child's unshare and its exit + reap; with -f CLONE_FILES|CLONE_FS the child starts sharing
 *   the parent's fd table and fs_struct, so unshare copies them as dup_fd / copy_fs_struct).
 * -P N: N creators at once, worker k pinned to CPU (c + k) % CPUs, released together, each running
 *   the whole loop; every sample gains "w": k, and each worker prints
 *   {"b": "span", "w": k, "reps": n, "wall_ns": ...} (its loop's wall time): creators serialising
 *   on a lock (namespace_sem, rtnl_lock) show as a longer call wall time (fork_ns) at N = 2.
 * Options: -n reps -w warm-up -c CPU (pin; -1 unpinned) -d fds -L live children -f flags -C (clone
 *          even with flags 0) -u unshare flags -P creators -a / -A wait style
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lab.h" /* now_ns, cpu_ns, pin_cpu */

struct shared {
    volatile int64_t child_exit;
    volatile int64_t unshare_ns, unshare_cpu_ns;
    volatile int unshare_err;
    volatile int ready;    /* -P: workers ready (slot 0 only) */
    volatile int out_lock; /* -P: one worker writes its buffered lines at a time (slot 0 only) */
    char pad[64 - 3 * sizeof(int64_t) - 3 * sizeof(int)];
};

static struct shared *sh;

static void refuse(const char *msg)
{
    printf("{\"error\": \"%s\"}\n", msg);
    fflush(stdout);
    exit(3);
}

static void die(const char *what)
{
    char msg[300];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(errno));
    refuse(msg);
}

/* Busy CPU time of the whole machine (all CPUs, jiffies -> ns): user+nice+system+irq+softirq. */
static int64_t machine_busy_ns(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long u, n, s, idle, io, irq, sirq;
    long hz = sysconf(_SC_CLK_TCK);
    if (!f)
        return -1;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &u, &n, &s, &idle, &io, &irq, &sirq) != 7) {
        fclose(f);
        return -1;
    }
    fclose(f);
    return (int64_t)((u + n + s + irq + sirq) * (1000000000ULL / (unsigned long long)hz));
}

static int64_t own_cpu_ns(void)
{
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    getrusage(RUSAGE_CHILDREN, &b);
    return (int64_t)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) * 1000000000LL +
           (int64_t)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec + b.ru_stime.tv_usec) * 1000LL;
}

static long count_vmas(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int c;
    if (!f)
        return -1;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static void pin(int cpu)
{
    if (pin_cpu(cpu))
        die("sched_setaffinity");
}

static unsigned long unshare_flags; /* -u: this repetition's unshare(2) flags (0: the syscall alone) */
static int do_unshare;

static int child_fn(void *arg)
{
    (void)arg;
    if (do_unshare) {
        int64_t c0 = cpu_ns(), t0 = now_ns();
        int r = unshare((int)unshare_flags);
        int64_t t1 = now_ns(), c1 = cpu_ns();
        sh->unshare_ns = t1 - t0;
        sh->unshare_cpu_ns = c1 - c0;
        sh->unshare_err = r ? errno : 0;
    }
    sh->child_exit = now_ns();
    return 0; /* glibc's clone: exit(2) with this status */
}

static void reap(pid_t pid, int any)
{
    int st;
    for (;;) {
        pid_t r = waitpid(any ? -1 : pid, &st, __WALL);
        if (r == pid)
            return;
        if (r < 0 && errno != EINTR)
            die("waitpid");
    }
}

static long open_fds(long want)
{
    long have = 3; /* stdin, stdout, stderr */
    int null;
    if (want <= have)
        return have;
    null = open("/dev/null", O_RDONLY);
    if (null < 0)
        die("open /dev/null");
    have = null + 1;
    while (have < want) {
        if (dup(null) < 0)
            die("dup (RLIMIT_NOFILE?)");
        have++;
    }
    return have;
}

#define SETTLE_NS 300000000LL /* warm-up after -L children start: their start-up transient is over */
static int64_t settle_until;

/* The timed loop of one creator (worker `w`, -1 without -P). */
static void creator(long reps, long warm, unsigned long flags, int use_clone, int any, int w, char *stack,
                    size_t stack_len, unsigned long uflags)
/* any: 0 waitpid(pid), 1 waitpid(-1), 2 alternating (-A) */
{
    int64_t busy0 = machine_busy_ns(), own0 = own_cpu_ns(), wall0 = now_ns(), loop0 = 0;
    char wfield[24] = "";
    if (w >= 0)
        snprintf(wfield, sizeof wfield, "\"w\": %d, ", w);
    for (long i = -warm; i < reps; i++) {
        int64_t t0, t1, t2, c0, c1;
        pid_t pid;
        if (i == 0)
            loop0 = now_ns();
        sh->child_exit = 0;
        unshare_flags = (i & 1) ? 0 : uflags; /* -u: unshare(flags) and unshare(0) interleaved */
        c0 = cpu_ns();
        t0 = now_ns();
        if (use_clone) {
            pid = clone(child_fn, stack + stack_len - 64, (int)(flags | SIGCHLD), NULL);
        } else {
            pid = fork();
            if (pid == 0)
                _exit(child_fn(NULL));
        }
        t1 = now_ns();
        c1 = cpu_ns();
        if (pid < 0)
            die("clone");
        reap(pid, any == 2 ? (int)(i & 1) : any);
        t2 = now_ns();
        if (do_unshare && sh->unshare_err) {
            errno = sh->unshare_err;
            die("unshare");
        }
        if (i == -1 && now_ns() < settle_until)
            i = -3; /* still settling: more warm-up rounds (-A's alternation goes on) */
        if (i < 0)
            continue;
        if (do_unshare)
            printf("{\"b\": \"unshare\", %s\"i\": %ld, \"u\": %d, \"unshare_ns\": %ld, \"unshare_cpu_ns\": %ld, "
                   "\"fork_ns\": %ld, \"rt_ns\": %ld, \"exit_ns\": %ld}\n", wfield, i, unshare_flags != 0,
                   (long)sh->unshare_ns, (long)sh->unshare_cpu_ns, (long)(t1 - t0), (long)(t2 - t0),
                   (long)(t2 - sh->child_exit));
        else
            printf("{\"b\": \"clone\", %s\"i\": %ld, \"any\": %d, \"fork_ns\": %ld, \"fork_cpu_ns\": %ld, "
                   "\"rt_ns\": %ld, \"exit_ns\": %ld}\n", wfield, i, any == 2 ? (int)(i & 1) : any, (long)(t1 - t0),
                   (long)(c1 - c0), (long)(t2 - t0), (long)(t2 - sh->child_exit));
    }
    if (w >= 0)
        printf("{\"b\": \"span\", \"w\": %d, \"reps\": %ld, \"wall_ns\": %ld}\n", w, reps, (long)(now_ns() - loop0));
    {
        /* deferred work (cleanup_net runs from a workqueue): give it a moment, then count what the
         * machine spent outside this benchmark and its reaped children */
        int64_t wall1;
        usleep((flags | uflags) & CLONE_NEWNET ? 300000 : 0);
        wall1 = now_ns();
        printf("{\"b\": \"sys\", %s\"reps\": %ld, \"wall_ns\": %ld, \"other_cpu_ns\": %ld}\n", wfield, reps + warm,
               (long)(wall1 - wall0), (long)((machine_busy_ns() - busy0) - (own_cpu_ns() - own0)));
    }
}

int main(int argc, char **argv)
{
    long reps = 200, warm = 10, fds = 3, live = 0;
    unsigned long flags = 0, uflags = 0;
    int cpu = -1, any = 0, use_clone = 0, opt, pipefd[2], readyfd[2], creators = 0;
    const size_t stack_len = 64 * 1024;
    char *stack;
    struct shared *slots;
    static char obuf[1 << 22]; /* -P: a worker's whole run of lines, written at its end under out_lock */

    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);

    while ((opt = getopt(argc, argv, "n:w:c:d:L:f:aACu:P:")) != -1) {
        switch (opt) {
        case 'n': reps = atol(optarg); break;
        case 'w': warm = atol(optarg); break;
        case 'c': cpu = atoi(optarg); break;
        case 'd': fds = atol(optarg); break;
        case 'L': live = atol(optarg); break;
        case 'f': flags = strtoul(optarg, NULL, 16); break;
        case 'a': any = 1; break;
        case 'A': any = 2; break;
        case 'C': use_clone = 1; break;
        case 'u': uflags = strtoul(optarg, NULL, 16); do_unshare = 1; break;
        case 'P': creators = atoi(optarg); break;
        default: refuse("bad option");
        }
    }
    if (flags & CLONE_SIGHAND)
        flags |= CLONE_VM;
    if (flags)
        use_clone = 1;
    if (creators < 0 || creators > 64)
        refuse("-P: 0 to 64 creators");
    if (any == 2 && uflags)
        refuse("-A with -u: both alternate repetitions");
    slots = mmap(NULL, 65 * sizeof(struct shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    stack = mmap(NULL, stack_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (slots == MAP_FAILED || stack == MAP_FAILED)
        die("mmap");
    sh = &slots[0];
    stack[stack_len - 64] = 1;
    if (creators == 0)
        pin(cpu);
    fds = open_fds(fds);
    if (pipe(pipefd))
        die("pipe");
    if (live > 0 && pipe(readyfd)) /* (only then: an fd more can grow the fd table -d sized) */
        die("pipe");
    for (long j = 0; j < live; j++) {
        pid_t pid = fork();
        if (pid == 0) {
            char c = 0;
            close(pipefd[1]);
            if (write(readyfd[1], &c, 1) != 1)
                _exit(1);
            while (read(pipefd[0], &c, 1) < 0 && errno == EINTR)
                ;
            _exit(0);
        }
        if (pid < 0)
            die("fork (live children)");
    }
    /* Time nothing until every live child has run up to its read(), and then only after SETTLE_NS of
     * warm-up rounds: for up to ~90 ms after 10,000 children start, a fork costs 3x its CPU time
     * (measured on the AMD EPYC host, 2026-12-06: 147-172 us against 50-55 us later in the same run;
     * a quick calibration's 80 calls fell inside that and fitted a 20x slope) */
    if (live > 0) {
        close(readyfd[1]);
        for (long got = 0; got < live;) {
            char buf[4096];
            ssize_t r = read(readyfd[0], buf, sizeof buf);
            if (r > 0)
                got += r;
            else if (r == 0 || errno != EINTR)
                die("read (live children ready)");
        }
        close(readyfd[0]);
        settle_until = now_ns() + SETTLE_NS;
    }
    printf("{\"shape\": {\"pid\": %d, \"fds\": %ld, \"live_children\": %ld, \"flags\": \"0x%lx\", \"clone\": %d, "
           "\"wait_any\": %d, \"vmas\": %ld, \"unshare\": \"0x%lx\", \"creators\": %d}}\n", getpid(), fds, live, flags,
           use_clone, any, count_vmas(), uflags, creators);
    fflush(stdout);

    if (creators == 0) {
        creator(reps, warm, flags, use_clone, any, -1, stack, stack_len, uflags);
    } else {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        for (int k = 0; k < creators; k++) {
            pid_t pid = fork();
            if (pid < 0)
                die("fork (-P creators)");
            if (pid == 0) {
                sh = &slots[1 + k];
                pin(cpu < 0 ? -1 : (int)((cpu + k) % ncpu));
                __sync_fetch_and_add(&slots[0].ready, 1);
                while (slots[0].ready < creators) /* released together */
                    ;
                creator(reps, warm, flags, use_clone, any, k, stack, stack_len, uflags);
                while (__sync_lock_test_and_set(&slots[0].out_lock, 1))
                    ;
                fflush(stdout);
                __sync_lock_release(&slots[0].out_lock);
                _exit(0);
            }
        }
        for (int k = 0; k < creators; k++)
            while (wait(NULL) < 0 && errno == EINTR)
                ;
    }
    close(pipefd[0]);
    close(pipefd[1]);
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    fflush(stdout);
    return 0;
}
