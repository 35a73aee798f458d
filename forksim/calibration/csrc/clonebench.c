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
 * block in read() on a pipe (a prefork master's idle workers), then times -n creations:
 *   fork_ns     = parent's return from the call - t0           (the call: copy_process)
 *   fork_cpu_ns = the parent thread's CPU time over the same call
 *   exit_ns     = waitpid return - the child's last clock read before it exits (do_exit + reap)
 *   rt_ns       = waitpid return - t0
 * The call is glibc fork() with -f 0 and no -C, else glibc clone(fn, stack, FLAGS|SIGCHLD) with
 * FLAGS from -f (hex; CLONE_SIGHAND needs CLONE_VM, so -f adds CLONE_VM when it is set).
 * -a: reap with waitpid(-1) (do_wait walks the parent's children list) instead of waitpid(pid).
 * Options: -n reps -w warm-up -c CPU (pin; -1 unpinned) -d fds -L live children -f flags -C (clone
 *          even with flags 0)
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

struct shared {
    volatile int64_t child_exit;
};

static struct shared *sh;

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

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
    cpu_set_t set;
    if (cpu < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set))
        die("sched_setaffinity");
}

static int child_fn(void *arg)
{
    (void)arg;
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

int main(int argc, char **argv)
{
    long reps = 200, warm = 10, fds = 3, live = 0;
    unsigned long flags = 0;
    int cpu = -1, any = 0, use_clone = 0, opt, pipefd[2];
    const size_t stack_len = 64 * 1024;
    char *stack;
    int64_t busy0, own0, wall0;

    while ((opt = getopt(argc, argv, "n:w:c:d:L:f:aC")) != -1) {
        switch (opt) {
        case 'n': reps = atol(optarg); break;
        case 'w': warm = atol(optarg); break;
        case 'c': cpu = atoi(optarg); break;
        case 'd': fds = atol(optarg); break;
        case 'L': live = atol(optarg); break;
        case 'f': flags = strtoul(optarg, NULL, 16); break;
        case 'a': any = 1; break;
        case 'C': use_clone = 1; break;
        default: refuse("bad option");
        }
    }
    if (flags & CLONE_SIGHAND)
        flags |= CLONE_VM;
    if (flags)
        use_clone = 1;
    pin(cpu);
    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    stack = mmap(NULL, stack_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED || stack == MAP_FAILED)
        die("mmap");
    stack[stack_len - 64] = 1;
    fds = open_fds(fds);
    if (pipe(pipefd))
        die("pipe");
    for (long j = 0; j < live; j++) {
        pid_t pid = fork();
        if (pid == 0) {
            char c;
            close(pipefd[1]);
            while (read(pipefd[0], &c, 1) < 0 && errno == EINTR)
                ;
            _exit(0);
        }
        if (pid < 0)
            die("fork (live children)");
    }
    printf("{\"shape\": {\"pid\": %d, \"fds\": %ld, \"live_children\": %ld, \"flags\": \"0x%lx\", \"clone\": %d, "
           "\"wait_any\": %d, \"vmas\": %ld}}\n", getpid(), fds, live, flags, use_clone, any, count_vmas());
    fflush(stdout);

    busy0 = machine_busy_ns();
    own0 = own_cpu_ns();
    wall0 = now_ns();
    for (long i = -warm; i < reps; i++) {
        int64_t t0, t1, t2, c0, c1;
        pid_t pid;
        sh->child_exit = 0;
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
        reap(pid, any);
        t2 = now_ns();
        if (i >= 0)
            printf("{\"b\": \"clone\", \"i\": %ld, \"fork_ns\": %ld, \"fork_cpu_ns\": %ld, \"rt_ns\": %ld, "
                   "\"exit_ns\": %ld}\n",
                   i, (long)(t1 - t0), (long)(c1 - c0), (long)(t2 - t0), (long)(t2 - sh->child_exit));
    }
    {
        /* deferred work (cleanup_net runs from a workqueue): give it a moment, then count what the
         * machine spent outside this benchmark and its reaped children */
        int64_t wall1;
        usleep(flags & CLONE_NEWNET ? 300000 : 0);
        wall1 = now_ns();
        printf("{\"b\": \"sys\", \"reps\": %ld, \"wall_ns\": %ld, \"other_cpu_ns\": %ld}\n", reps + warm,
               (long)(wall1 - wall0), (long)((machine_busy_ns() - busy0) - (own_cpu_ns() - own0)));
    }
    close(pipefd[0]);
    close(pipefd[1]);
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    fflush(stdout);
    return 0;
}
