/*
 * forksim load generator: real process-creation load, every creation timed.
 *
 * Built at run time by forksim.validation.measure (gcc -O2 -pthread); the same file built with
 * -DSPAWN_HELPER is the tiny program posix_spawn execs (it exits at once, with its CPU as status).
 *
 * Process tree:  master (process-group leader; idle during the measurement)
 *                  +-- N CPU hogs (spin until killed)
 *                  +-- K parents (each: touch its RSS, then create -> child exits -> wait, in a loop)
 *                        +-- children (exit at once with sched_getcpu() as their exit status)
 *                        +-- with --other-work: a co-runner on the parent's CPU sweeping its own memory
 *                            between the parent's creations (the parent blocks meanwhile)
 *
 * Every creation is written to a shared buffer (MAP_SHARED, and MADV_DONTFORK in each parent so
 * that the buffer adds nothing to the fork being measured); the master writes them to OUT.rec as
 * struct rec (48 bytes, little endian) after the parents are done, and prints a JSON summary of
 * the run on stdout. Multi-threaded mode also writes the writer threads' stalls to OUT.stall.
 *
 * Times are CLOCK_MONOTONIC ns (vDSO). fork latency = t1 - t0 (the parent inside the call),
 * round trip = t2 - t0 (to waitpid/pthread_join returning), response = t2 - arrival (open mode).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef SPAWN_HELPER

#if defined(__x86_64__) && defined(SPAWN_HELPER_NOLIBC)
/* Like the calibration's helper: no libc start-up, so what the scenario measures is the kernel's
 * exec and exit (a real program's start-up is the config's workload.child.exec_lifetime). */
__attribute__((naked, noreturn)) void _start(void)
{
    __asm__ volatile("sub $16, %rsp\n\t"
                     "movl $255, (%rsp)\n\t"
                     "mov $309, %eax\n\t" /* getcpu(&cpu, NULL, NULL) */
                     "mov %rsp, %rdi\n\t"
                     "xor %esi, %esi\n\t"
                     "xor %edx, %edx\n\t"
                     "syscall\n\t"
                     "mov (%rsp), %edi\n\t"
                     "and $255, %edi\n\t"
                     "mov $231, %eax\n\t" /* exit_group */
                     "syscall\n\t"
                     "hlt\n\t");
}
#else
int main(void)
{
    int cpu = sched_getcpu();
    _exit(cpu < 0 ? 255 : (cpu & 0xff));
}
#endif

#else

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

#include "lab.h" /* now_ns, pin_cpu (forksim/lab/csrc) */

#define MAXP 256
#define MAXW 64
#define PAGE 4096UL

struct rec {              /* one creation */
    int64_t arrival;      /* open: scheduled arrival; closed: = t0 */
    int64_t t0;           /* before the creating call */
    int64_t t1;           /* after it returned in the parent */
    int64_t t2;           /* after waitpid / pthread_join returned */
    int32_t pcpu0;        /* parent's CPU before the call */
    int32_t pcpu1;        /* parent's CPU after the call */
    int32_t ccpu;         /* CPU the child ran on (its exit status), -1 unknown */
    int32_t parent;       /* parent index */
};

struct stall {            /* one writer-thread stall (multi-threaded mode) */
    int64_t start;        /* time of the last write before the gap */
    int64_t dur;          /* gap between two consecutive writes, ns */
    int32_t thread;       /* writer index */
    int32_t nvcsw;        /* voluntary context switches since the previous stall (blocked) */
    int32_t nivcsw;       /* involuntary ones (preempted) */
    int32_t pad;
};

struct ctl {
    volatile int ready;
    volatile int go;
    volatile int abort;
    int pad0;
    int64_t t_start, t_warm, t_end;
    int64_t count[MAXP];      /* records kept (after warm-up) */
    int64_t total[MAXP];      /* creations done, warm-up included */
    int64_t dropped[MAXP];    /* records not kept because the buffer was full */
    int64_t unserved[MAXP];   /* open: arrivals never served before the grace period ran out */
    int64_t errors[MAXP];     /* failed creations */
    int64_t stall_count[MAXW];
    int64_t stall_dropped[MAXW];
    int64_t writes[MAXW];
    int64_t minflt[MAXW];
    int64_t forker_minflt;
    int vmas, vmas_dontcopy, anon_vmas;
    int pad1;
    int64_t rss_kb;           /* parent 0's Rss from smaps at measurement time */
    int64_t anon_kb;
    int64_t pte_kb;           /* VmPTE of parent 0 */
    int64_t setup_ns;
    char err[256];
};

enum kind { K_FORK, K_VFORK, K_SPAWN, K_FORK_EXEC, K_THREAD };
enum mode { M_CLOSED, M_OPEN, M_MT };

static struct {
    enum mode mode;
    enum kind kind;
    int parents, hogs, writers, pin, thp;
    double duration, warmup, rate, grace, think;
    double hog_duty, hog_period; /* a hog spins duty x period of each period (wall), sleeps the rest */
    size_t rss;
    int64_t cap, stall_cap, stall_ns;
    const char *helper, *out;
    uint64_t seed;
    long fds, live;          /* open fds in each parent; live children each parent keeps */
    unsigned long cflags;    /* fork kind: clone(cflags|SIGCHLD) instead of fork() */
    int wait_any;            /* fork kind: reap with waitpid(-1) (do_wait walks the children list) */
    unsigned long unshare;   /* fork kind: the child calls unshare(unshare) before it exits */
    size_t other_work;       /* closed: bytes a co-runner on the parent's CPU sweeps before each creation */
    double child_life;       /* fork kind: the child spins this many seconds (clock reads) before it exits */
    double write_fraction;   /* closed: after each reap the parent writes one byte of this share of its pages */
    double parent_work;      /* closed: after each reap (and its writes) the parent spins this many seconds */
} opt = {M_CLOSED, K_FORK, 1, 0, 3, 0, 0, 1.0, 0.2, 0.0, 1.0, 0.0, 1.0, 0.01, 0, 0, 0, 50000, NULL, NULL, 1};

static struct ctl *ctl;
static struct rec *recbuf;
static size_t recbuf_len;
static struct stall *stallbuf;
static size_t stallbuf_len;
static pid_t kids[MAXP + 4096];
static int nkids;
static char *const empty_env[] = {NULL};

static void sleep_until(int64_t t)
{
    struct timespec ts = {t / 1000000000LL, t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --out PREFIX [--mode closed|open|mt] [--kind fork|vfork|posix_spawn|fork_exec|thread]\n"
            "  [--parents K] [--duration S] [--warmup S] [--rate R/s] [--hogs N] [--rss BYTES]\n"
            "  [--thp] [--pin] [--writers W] [--stall-us US] [--helper PATH] [--cap N] [--seed S]\n"
            "  [--fds N] [--live-children N] [--clone-flags HEX] [--wait-any] [--unshare HEX]\n"
            "  [--think S] (closed: sleep S seconds after each creation)\n"
            "  [--child-life S] (fork kind: the child spins S seconds before it exits)\n"
            "  [--write-fraction F] (closed: after each reap the parent writes one byte of each page of the first\n"
            "   F of its image, so that the next fork finds those PTEs writable and write-protects them)\n"
            "  [--parent-work S] (closed: after each reap the parent spins S seconds, its own CPU work)\n"
            "  [--other-work BYTES] (closed: then another process on the parent's CPU writes one byte per\n"
            "   64-byte line of its own BYTES of memory while the parent waits; --pin keeps them on one CPU)\n"

            "  [--hog-duty F] [--hog-period S]\n");
    exit(2);
}

/* ------------------------------------------------------------------ master cleanup */

static void kill_kids(void)
{
    for (int i = 0; i < nkids; i++)
        if (kids[i] > 0)
            kill(kids[i], SIGKILL);
}

static void on_signal(int sig)
{
    if (ctl)
        ctl->abort = 1;
    kill_kids();
    for (int i = 0; i < nkids; i++)
        if (kids[i] > 0)
            waitpid(kids[i], NULL, 0);
    _exit(128 + sig);
}

/* ------------------------------------------------------------------ the image */

static void count_vmas(void)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return;
    char line[512];
    /* Mappings marked dontcopy (our record buffers) are not part of the image the fork copies. */
    int vmas = 0, dc = 0, anon = 0;
    long cur_anon = 0, cur_rss = 0;
    int64_t rss = 0, anon_kb = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char c;
        if (sscanf(line, "%lx-%lx %c", &a, &b, &c) == 3 && strchr(line, '-') < strchr(line, ' ')) {
            vmas++;
            cur_anon = cur_rss = 0;
        } else if (!strncmp(line, "Anonymous:", 10)) {
            cur_anon = atol(line + 10);
        } else if (!strncmp(line, "Rss:", 4)) {
            cur_rss = atol(line + 4);
        } else if (!strncmp(line, "VmFlags:", 8)) {
            if (strstr(line, " dc")) {
                dc++;
                continue;
            }
            anon += cur_anon > 0;
            anon_kb += cur_anon;
            rss += cur_rss;
        }
    }
    fclose(f);
    ctl->vmas = vmas;
    ctl->vmas_dontcopy = dc;
    ctl->anon_vmas = anon;
    ctl->rss_kb = rss;
    ctl->anon_kb = anon_kb;
    f = fopen("/proc/self/status", "r");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "VmPTE:", 6))
                ctl->pte_kb = atol(line + 6);
        fclose(f);
    }
}

static char *touch_rss(size_t bytes)
{
    if (!bytes)
        return NULL;
    char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap rss");
    madvise(p, bytes, opt.thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    for (size_t off = 0; off < bytes; off += PAGE)
        p[off] = 1;
    return p;
}

/* ------------------------------------------------------------------ one creation */

static void *thread_fn(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)sched_getcpu();
}

/* The creating call has returned in the parent: its end and the parent's CPU then. */
static void returned(struct rec *r)
{
    r->t1 = now_ns();
    r->pcpu1 = sched_getcpu();
}

/* Wait for `pid` (-1: any child) and time the reap; its status in *st. */
static void reap(struct rec *r, pid_t pid, int *st)
{
    while (waitpid(pid, st, 0) < 0 && errno == EINTR)
        ;
    r->t2 = now_ns();
}

/* Create, let the child exit at once, reap it. Returns 0 or -1 (failed creation). */
static int create_one(struct rec *r)
{
    int st = 0;
    pid_t pid;
    r->pcpu0 = sched_getcpu();
    switch (opt.kind) {
    case K_FORK:
        r->t0 = now_ns();
        pid = opt.cflags ? (pid_t)syscall(SYS_clone, opt.cflags | SIGCHLD, 0, NULL, NULL, 0) : fork();
        if (pid == 0) {
            if (opt.unshare && syscall(SYS_unshare, opt.unshare))
                _exit(254); /* the parent says why: see below */
            if (opt.child_life > 0) { /* a child that lives: the parent's image cools meanwhile */
                int64_t end = now_ns() + (int64_t)(opt.child_life * 1e9);
                while (now_ns() < end)
                    ;
            }
            _exit(sched_getcpu() & 0xff);
        }
        returned(r);
        if (pid < 0)
            return -1;
        reap(r, opt.wait_any ? -1 : pid, &st);
        if (opt.unshare && WIFEXITED(st) && WEXITSTATUS(st) == 254) {
            errno = EPERM;
            die("unshare in the child (--unshare needs CAP_SYS_ADMIN)");
        }
        r->ccpu = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        return 0;
    case K_VFORK:
        r->t0 = now_ns();
        pid = vfork();
        if (pid == 0) {
            /* not sched_getcpu(): a CLONE_VM child has no rseq area of its own, and glibc's reads the
             * parent's cpu_id (a vfork child on the other CPU would report the parent's) */
            unsigned cpu = 255;
            syscall(SYS_getcpu, &cpu, NULL, NULL);
            _exit(cpu & 0xff);
        }
        returned(r);
        if (pid < 0)
            return -1;
        reap(r, pid, &st);
        r->ccpu = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        return 0;
    case K_FORK_EXEC: {
        /* fork, then the child execs the helper: exec_mmap drops the child's copy of the image */
        char *argv[] = {(char *)opt.helper, NULL};
        r->t0 = now_ns();
        pid = fork();
        if (pid == 0) {
            execve(opt.helper, argv, empty_env);
            abort(); /* (any exit status is a CPU number): the parent says why, below */
        }
        returned(r);
        if (pid < 0)
            return -1;
        reap(r, pid, &st);
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT) {
            errno = ENOEXEC;
            die("execve of the helper in the child");
        }
        r->ccpu = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        return 0;
    }
    case K_SPAWN: {
        char *argv[] = {(char *)opt.helper, NULL};
        r->t0 = now_ns();
        int e = posix_spawn(&pid, opt.helper, NULL, NULL, argv, empty_env);
        returned(r);
        if (e)
            return -1;
        reap(r, pid, &st);
        r->ccpu = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        return 0;
    }
    case K_THREAD: {
        pthread_t th;
        void *ret = NULL;
        r->t0 = now_ns();
        int e = pthread_create(&th, NULL, thread_fn, NULL);
        returned(r);
        if (e)
            return -1;
        pthread_join(th, &ret);
        r->t2 = now_ns();
        r->ccpu = (int)(intptr_t)ret;
        return 0;
    }
    }
    return -1;
}

/* ------------------------------------------------------------------ writer threads (mt mode) */

struct writer {
    int idx;
    char *base;
    size_t pages;
    pthread_t th;
};
static volatile int writers_stop;

static void *writer_fn(void *arg)
{
    struct writer *w = arg;
    struct stall *buf = stallbuf + (size_t)w->idx * opt.stall_cap;
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    long vcsw = ru.ru_nvcsw, ivcsw = ru.ru_nivcsw;
    size_t off = (size_t)(w->idx % 64) * 64;
    size_t i = w->pages * (size_t)w->idx / (size_t)(opt.writers ? opt.writers : 1);
    int64_t n = 0, writes = 0;
    while (!ctl->go)
        usleep(100);
    int64_t t_warm = ctl->t_warm, t_end = ctl->t_end;
    int64_t last = now_ns();
    while (!writers_stop) {
        w->base[i * PAGE + off] = (char)i;
        writes++;
        int64_t now = now_ns();
        if (now - last > opt.stall_ns && last >= t_warm && last < t_end) {
            getrusage(RUSAGE_THREAD, &ru);
            if (n < opt.stall_cap) {
                struct stall *s = &buf[n++];
                s->start = last;
                s->dur = now - last;
                s->thread = w->idx;
                s->nvcsw = (int32_t)(ru.ru_nvcsw - vcsw);
                s->nivcsw = (int32_t)(ru.ru_nivcsw - ivcsw);
                s->pad = 0;
            } else {
                ctl->stall_dropped[w->idx]++;
            }
            vcsw = ru.ru_nvcsw;
            ivcsw = ru.ru_nivcsw;
            now = now_ns(); /* getrusage itself is not a stall */
        }
        last = now;
        if (++i == w->pages)
            i = 0;
    }
    getrusage(RUSAGE_THREAD, &ru);
    ctl->minflt[w->idx] = ru.ru_minflt;
    ctl->writes[w->idx] = writes;
    ctl->stall_count[w->idx] = n;
    return NULL;
}

/* ------------------------------------------------------------------ other work (closed, --other-work) */

/* Like forkbench's cold mode: lab_start_sweeper (lab.h), started before the parent's image exists. */
static void start_co_runner(size_t bytes)
{
    if (lab_start_sweeper(bytes))
        die("co-runner");
}

static void other_work(void)
{
    if (lab_sweep())
        die("co-runner");
}

/* ------------------------------------------------------------------ a parent */

static uint64_t rng_state;
static double urand(void) /* xorshift64*, (0,1] */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return ((rng_state * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0) + 1e-17;
}

static void parent_main(int idx)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (opt.pin) {
        int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
        pin_cpu(idx % ncpu);
    }
    int64_t t_setup = now_ns();
    /* The record buffers must not be part of the measured fork. */
    madvise(recbuf, recbuf_len, MADV_DONTFORK);
    if (stallbuf)
        madvise(stallbuf, stallbuf_len, MADV_DONTFORK);
    struct rec *mine = recbuf + (size_t)idx * opt.cap;
#ifdef MADV_POPULATE_WRITE
    madvise(mine, opt.cap * sizeof(struct rec), MADV_POPULATE_WRITE);
#endif
    if (opt.other_work && opt.mode == M_CLOSED)
        start_co_runner(opt.other_work); /* before the image: it shares none of it */
    char *image = touch_rss(opt.rss);
    size_t write_pages = opt.mode == M_CLOSED ? (size_t)(opt.write_fraction * (double)(opt.rss / PAGE) + 0.5) : 0;

    struct writer ws[MAXW];
    if (opt.mode == M_MT) {
        if (!image) {
            snprintf(ctl->err, sizeof ctl->err, "mt mode needs --rss > 0");
            _exit(3);
        }
        if (stallbuf)
            madvise(stallbuf, stallbuf_len, MADV_POPULATE_WRITE);
        for (int w = 0; w < opt.writers; w++) {
            ws[w].idx = w;
            ws[w].base = image;
            ws[w].pages = opt.rss / PAGE;
            if (pthread_create(&ws[w].th, NULL, writer_fn, &ws[w]))
                die("pthread_create writer");
        }
    }
    if (opt.fds > 3) { /* a server's connections: dups of /dev/null up to --fds open descriptors */
        int null = open("/dev/null", O_RDONLY);
        if (null < 0)
            die("open /dev/null");
        for (long have = null + 1; have < opt.fds; have++)
            if (dup(null) < 0)
                die("dup (--fds above RLIMIT_NOFILE?)");
    }
    if (opt.live > 0) { /* a prefork master's idle workers: block in read() until this parent dies */
        int lp[2];
        if (pipe(lp))
            die("pipe");
        for (long j = 0; j < opt.live; j++) {
            pid_t w = fork();
            if (w == 0) {
                char c;
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                close(lp[1]);
                while (read(lp[0], &c, 1) < 0 && errno == EINTR)
                    ;
                _exit(0);
            }
            if (w < 0)
                die("fork (--live-children)");
        }
        close(lp[0]);
    }
    if (opt.kind == K_THREAD) { /* warm glibc's stack cache outside the measurement */
        pthread_t th;
        pthread_create(&th, NULL, thread_fn, NULL);
        pthread_join(th, NULL);
    }
    if (idx == 0) {
        count_vmas();
        ctl->setup_ns = now_ns() - t_setup;
    }
    rng_state = opt.seed * 0x9E3779B97F4A7C15ULL + (uint64_t)idx * 0xD1B54A32D192ED03ULL + 1;
    __atomic_fetch_add(&ctl->ready, 1, __ATOMIC_SEQ_CST);
    while (!ctl->go) {
        if (ctl->abort)
            _exit(1);
        usleep(200);
    }
    int64_t t_warm = ctl->t_warm, t_end = ctl->t_end;
    sleep_until(ctl->t_start);

    int64_t n = 0;
    struct rec r;
    if (opt.mode == M_OPEN) {
        double mean_gap_ns = 1e9 * opt.parents / opt.rate;
        int64_t grace_end = t_end + (int64_t)(opt.grace * 1e9);
        double a = (double)ctl->t_start - mean_gap_ns * log(urand());
        while ((int64_t)a < t_end && !ctl->abort) {
            int64_t arr = (int64_t)a;
            if (now_ns() < arr)
                sleep_until(arr);
            else if (now_ns() > grace_end) {
                for (; (int64_t)a < t_end; a -= mean_gap_ns * log(urand()))
                    if ((int64_t)a >= t_warm)
                        ctl->unserved[idx]++;
                break;
            }
            memset(&r, 0, sizeof r);
            r.arrival = arr;
            r.parent = idx;
            if (create_one(&r) < 0) {
                ctl->errors[idx]++;
            } else {
                ctl->total[idx]++;
                if (arr >= t_warm) {
                    if (n < opt.cap)
                        mine[n++] = r;
                    else
                        ctl->dropped[idx]++;
                }
            }
            a -= mean_gap_ns * log(urand());
        }
    } else {
        for (;;) {
            if (ctl->abort || now_ns() >= t_end)
                break;
            memset(&r, 0, sizeof r);
            r.parent = idx;
            if (create_one(&r) < 0) {
                ctl->errors[idx]++;
                usleep(1000);
                continue;
            }
            r.arrival = r.t0;
            ctl->total[idx]++;
            if (r.t0 >= t_warm && r.t0 < t_end) {
                if (n < opt.cap)
                    mine[n++] = r;
                else
                    ctl->dropped[idx]++;
            }
            if (write_pages) /* the parent's own work writes its image: the next fork write-protects the PTEs */
                for (size_t pg = 0; pg < write_pages; pg++)
                    ((volatile char *)image)[pg * PAGE]++;
            if (opt.parent_work > 0) { /* the parent's own CPU work before its next creation: clock reads */
                int64_t end = now_ns() + (int64_t)(opt.parent_work * 1e9);
                while (now_ns() < end)
                    ;
            }
            if (opt.think > 0) /* closed loop with think time: the parent sleeps between creations */
                sleep_until(now_ns() + (int64_t)(opt.think * 1e9));
            if (opt.other_work) /* then another process's work on this CPU, just before the next creation */
                other_work();
        }
    }
    ctl->count[idx] = n;
    if (opt.mode == M_MT) {
        struct rusage ru;
        getrusage(RUSAGE_THREAD, &ru);
        ctl->forker_minflt = ru.ru_minflt;
        writers_stop = 1;
        for (int w = 0; w < opt.writers; w++)
            pthread_join(ws[w].th, NULL);
    }
    _exit(0);
}

static void hog_main(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    volatile uint64_t x = 0;
    if (opt.hog_duty >= 1.0)
        for (;;)
            x++;
    /* duty cycle: spin until `on` has passed on the clock, sleep the rest of the period */
    int64_t period = (int64_t)(opt.hog_period * 1e9), on = (int64_t)(opt.hog_duty * opt.hog_period * 1e9);
    for (int64_t start = now_ns();; start += period) {
        while (now_ns() - start < on)
            x++;
        int64_t left = start + period - now_ns();
        if (left > 0) {
            struct timespec ts = {left / 1000000000, left % 1000000000};
            nanosleep(&ts, NULL);
        }
    }
}

/* ------------------------------------------------------------------ CPU accounting (master) */

struct cpu_sample {
    long long busy, idle, steal; /* /proc/stat, all CPUs, USER_HZ ticks */
    long long hogs, parents;     /* utime+stime of our hogs, and of our parents with their reaped and live children */
};

/* The start of a /proc file into buf (NUL-terminated); 0 when it cannot be read or is empty. */
static int read_proc(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return 1;
}

static long long pid_ticks(pid_t pid, int with_children)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!read_proc(path, buf, sizeof buf))
        return 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    /* fields after ")": 3 state ... 14 utime 15 stime 16 cutime 17 cstime */
    long long f[18] = {0};
    int i = 3;
    for (char *tok = strtok(p + 2, " "); tok && i <= 17; tok = strtok(NULL, " "), i++)
        if (i >= 14)
            f[i] = atoll(tok);
    return f[14] + f[15] + (with_children ? f[16] + f[17] : 0);
}

/* utime+stime of pid's live children (/proc/PID/task/PID/children, the children its main thread forked): a parent's
 * co-runner (--other-work) lives through the window, so its time is in no reaped child's; a creation's child alive at
 * the first sample and reaped by the second is counted here, then in cutime, so the window's difference is exact. */
static long long live_children_ticks(pid_t pid)
{
    char path[96], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    if (!read_proc(path, buf, sizeof buf))
        return 0;
    long long ticks = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
        ticks += pid_ticks((pid_t)atoi(tok), 0);
    return ticks;
}

static void cpu_sample(struct cpu_sample *s, int first_parent)
{
    memset(s, 0, sizeof *s);
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        long long v[10] = {0};
        if (fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]) >= 4) {
            s->idle = v[3] + v[4];
            s->busy = v[0] + v[1] + v[2] + v[5] + v[6];
            s->steal = v[7];
        }
        fclose(f);
    }
    for (int i = 0; i < nkids; i++) {
        if (kids[i] <= 0)
            continue;
        if (i < first_parent)
            s->hogs += pid_ticks(kids[i], 0);
        else
            s->parents += pid_ticks(kids[i], 1) + live_children_ticks(kids[i]);
    }
}

/* ------------------------------------------------------------------ master */

static void *shared(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        die("mmap shared");
    return p;
}

static void write_file(const char *suffix, const void *data, size_t bytes)
{
    char path[4096];
    snprintf(path, sizeof path, "%s%s", opt.out, suffix);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die(path);
    const char *p = data;
    while (bytes) {
        ssize_t w = write(fd, p, bytes);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        p += w;
        bytes -= (size_t)w;
    }
    close(fd);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && ++i)
        if (ARG("--mode")) {
            if (!strcmp(v, "closed")) opt.mode = M_CLOSED;
            else if (!strcmp(v, "open")) opt.mode = M_OPEN;
            else if (!strcmp(v, "mt")) opt.mode = M_MT;
            else usage();
        } else if (ARG("--kind")) {
            if (!strcmp(v, "fork")) opt.kind = K_FORK;
            else if (!strcmp(v, "vfork")) opt.kind = K_VFORK;
            else if (!strcmp(v, "posix_spawn")) opt.kind = K_SPAWN;
            else if (!strcmp(v, "fork_exec")) opt.kind = K_FORK_EXEC;
            else if (!strcmp(v, "thread")) opt.kind = K_THREAD;
            else usage();
        } else if (ARG("--parents")) opt.parents = atoi(v);
        else if (ARG("--duration")) opt.duration = atof(v);
        else if (ARG("--warmup")) opt.warmup = atof(v);
        else if (ARG("--rate")) opt.rate = atof(v);
        else if (ARG("--grace")) opt.grace = atof(v);
        else if (ARG("--think")) opt.think = atof(v);
        else if (ARG("--child-life")) opt.child_life = atof(v);
        else if (ARG("--write-fraction")) opt.write_fraction = atof(v);
        else if (ARG("--parent-work")) opt.parent_work = atof(v);
        else if (ARG("--other-work")) opt.other_work = (size_t)strtoull(v, NULL, 10);
        else if (ARG("--hogs")) opt.hogs = atoi(v);
        else if (ARG("--hog-duty")) opt.hog_duty = atof(v);
        else if (ARG("--hog-period")) opt.hog_period = atof(v);
        else if (ARG("--rss")) opt.rss = (size_t)strtoull(v, NULL, 10);
        else if (ARG("--writers")) opt.writers = atoi(v);
        else if (ARG("--stall-us")) opt.stall_ns = (int64_t)(atof(v) * 1000);
        else if (ARG("--helper")) opt.helper = v;
        else if (ARG("--cap")) opt.cap = atoll(v);
        else if (ARG("--seed")) opt.seed = strtoull(v, NULL, 10);
        else if (ARG("--out")) opt.out = v;
        else if (ARG("--fds")) opt.fds = atol(v);
        else if (ARG("--live-children")) opt.live = atol(v);
        else if (ARG("--clone-flags")) opt.cflags = strtoul(v, NULL, 16);
        else if (ARG("--unshare")) opt.unshare = strtoul(v, NULL, 16);
        else if (!strcmp(a, "--wait-any")) opt.wait_any = 1;
        else if (!strcmp(a, "--pin")) opt.pin = 1;
        else if (!strcmp(a, "--thp")) opt.thp = 1;
        else usage();
#undef ARG
    }
    if (!opt.out || opt.parents < 1 || opt.parents > MAXP || opt.duration <= 0 || opt.warmup < 0 ||
        opt.hogs < 0 || opt.hogs > 4096 || opt.writers < 1 || opt.writers > MAXW ||
        !(opt.hog_duty > 0 && opt.hog_duty <= 1) || !(opt.hog_period > 0 && opt.hog_period <= 10))
        usage();
    if (opt.other_work && opt.mode != M_CLOSED) {
        fprintf(stderr, "loadgen: --other-work needs --mode closed\n");
        return 2;
    }
    if (opt.mode == M_OPEN && opt.rate <= 0) {
        fprintf(stderr, "loadgen: open mode needs --rate > 0\n");
        return 2;
    }
    if ((opt.kind == K_SPAWN || opt.kind == K_FORK_EXEC) && !opt.helper) {
        fprintf(stderr, "loadgen: posix_spawn and fork_exec need --helper PATH\n");
        return 2;
    }
    if (opt.mode == M_MT)
        opt.parents = 1;
    if (!(opt.parent_work >= 0)) {
        fprintf(stderr, "loadgen: --parent-work must be 0 or more seconds\n");
        return 2;
    }
    if (!(opt.write_fraction >= 0 && opt.write_fraction <= 1)) {
        fprintf(stderr, "loadgen: --write-fraction must be between 0 and 1\n");
        return 2;
    }
    if (opt.rss % PAGE)
        opt.rss += PAGE - opt.rss % PAGE;
    if (opt.cap <= 0) {
        double per_parent = opt.mode == M_OPEN ? opt.rate / opt.parents * 3 + 1000 : 300000.0;
        opt.cap = (int64_t)(per_parent * opt.duration) + 1000;
    }
    opt.stall_cap = 200000;

    /* Our own process group, so that whoever started us can kill the lot with killpg. */
    if (getpgrp() != getpid())
        setpgid(0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    ctl = shared(sizeof(struct ctl));
    recbuf_len = (size_t)opt.cap * opt.parents * sizeof(struct rec);
    recbuf = shared(recbuf_len);
    if (opt.mode == M_MT) {
        stallbuf_len = (size_t)opt.stall_cap * opt.writers * sizeof(struct stall);
        stallbuf = shared(stallbuf_len);
    }

    /* Block the signals while forking so no child is missed by the handler. */
    sigset_t all, old;
    sigemptyset(&all);
    sigaddset(&all, SIGINT);
    sigaddset(&all, SIGTERM);
    sigaddset(&all, SIGHUP);
    for (int h = 0; h < opt.hogs; h++) {
        sigprocmask(SIG_BLOCK, &all, &old);
        pid_t p = fork();
        if (p == 0) {
            sigprocmask(SIG_SETMASK, &old, NULL);
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            signal(SIGHUP, SIG_DFL);
            hog_main();
        }
        if (p < 0)
            die("fork hog");
        kids[nkids++] = p;
        sigprocmask(SIG_SETMASK, &old, NULL);
    }
    int first_parent = nkids;
    for (int i = 0; i < opt.parents; i++) {
        sigprocmask(SIG_BLOCK, &all, &old);
        pid_t p = fork();
        if (p == 0) {
            sigprocmask(SIG_SETMASK, &old, NULL);
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            signal(SIGHUP, SIG_DFL);
            parent_main(i);
        }
        if (p < 0) {
            kill_kids();
            die("fork parent");
        }
        kids[nkids++] = p;
        sigprocmask(SIG_SETMASK, &old, NULL);
    }

    /* Wait for every parent to have its image ready, then start them together. */
    int64_t t_wait = now_ns();
    while (ctl->ready < opt.parents) {
        for (int i = first_parent; i < nkids; i++) {
            int st;
            if (kids[i] > 0 && waitpid(kids[i], &st, WNOHANG) == kids[i]) {
                kids[i] = -1;
                fprintf(stderr, "loadgen: a parent died during setup %s\n", ctl->err);
                ctl->abort = 1;
                kill_kids();
                return 3;
            }
        }
        if (now_ns() - t_wait > 600LL * 1000000000LL) {
            fprintf(stderr, "loadgen: parents not ready after 600 s\n");
            kill_kids();
            return 3;
        }
        usleep(1000);
    }
    ctl->t_start = now_ns() + 20000000LL;
    ctl->t_warm = ctl->t_start + (int64_t)(opt.warmup * 1e9);
    ctl->t_end = ctl->t_warm + (int64_t)(opt.duration * 1e9);
    __atomic_store_n(&ctl->go, 1, __ATOMIC_SEQ_CST);

    /* CPU accounting over the measured window: the machine, our hogs, our parents and children. */
    struct cpu_sample s0, s1;
    sleep_until(ctl->t_warm);
    cpu_sample(&s0, first_parent);
    sleep_until(ctl->t_end);
    cpu_sample(&s1, first_parent);

    int bad = 0;
    for (int i = first_parent; i < nkids; i++) {
        int st = 0;
        while (waitpid(kids[i], &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad++;
        kids[i] = -1;
    }
    for (int i = 0; i < first_parent; i++) {
        kill(kids[i], SIGKILL);
        waitpid(kids[i], NULL, 0);
        kids[i] = -1;
    }
    int64_t t_done = now_ns();

    /* Records: parents' slices, concatenated. */
    char suffix[32];
    int64_t total_recs = 0;
    {
        char path[4096];
        snprintf(path, sizeof path, "%s.rec", opt.out);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            die(path);
        close(fd);
    }
    for (int i = 0; i < opt.parents; i++) {
        total_recs += ctl->count[i];
    }
    {
        struct rec *all_recs = malloc((size_t)(total_recs ? total_recs : 1) * sizeof(struct rec));
        size_t k = 0;
        for (int i = 0; i < opt.parents; i++)
            for (int64_t j = 0; j < ctl->count[i]; j++)
                all_recs[k++] = recbuf[(size_t)i * opt.cap + j];
        write_file(".rec", all_recs, k * sizeof(struct rec));
        free(all_recs);
    }
    int64_t total_stalls = 0;
    if (opt.mode == M_MT) {
        struct stall *all_st = malloc(((size_t)opt.stall_cap * opt.writers + 1) * sizeof(struct stall));
        size_t k = 0;
        for (int w = 0; w < opt.writers; w++)
            for (int64_t j = 0; j < ctl->stall_count[w]; j++)
                all_st[k++] = stallbuf[(size_t)w * opt.stall_cap + j];
        write_file(".stall", all_st, k * sizeof(struct stall));
        total_stalls = (int64_t)k;
        free(all_st);
    }
    (void)suffix;

    int64_t sum_total = 0, sum_drop = 0, sum_unserved = 0, sum_err = 0, writes = 0, minflt = 0, sdrop = 0;
    for (int i = 0; i < opt.parents; i++) {
        sum_total += ctl->total[i];
        sum_drop += ctl->dropped[i];
        sum_unserved += ctl->unserved[i];
        sum_err += ctl->errors[i];
    }
    for (int w = 0; w < opt.writers && opt.mode == M_MT; w++) {
        writes += ctl->writes[w];
        minflt += ctl->minflt[w];
        sdrop += ctl->stall_dropped[w];
    }
    printf("{\"records\": %lld, \"creations\": %lld, \"dropped\": %lld, \"unserved\": %lld, \"errors\": %lld, "
           "\"bad_parents\": %d, \"t_start_ns\": %lld, \"t_warm_ns\": %lld, \"t_end_ns\": %lld, \"t_done_ns\": %lld, "
           "\"vmas\": %d, \"vmas_dontcopy\": %d, \"anon_vmas\": %d, \"rss_kb\": %lld, \"anon_kb\": %lld, "
           "\"pte_kb\": %lld, \"setup_s\": %.6f, \"record_size\": %zu, \"stall_size\": %zu, \"stalls\": %lld, "
           "\"stalls_dropped\": %lld, \"writer_writes\": %lld, \"writer_minflt\": %lld, \"forker_minflt\": %lld, "
           "\"cpus\": %ld, \"rec_cap\": %lld, \"clk_tck\": %ld, \"win_busy_ticks\": %lld, \"win_idle_ticks\": %lld, "
           "\"win_steal_ticks\": %lld, \"win_hog_ticks\": %lld, \"win_parent_ticks\": %lld}\n",
           (long long)total_recs, (long long)sum_total, (long long)sum_drop, (long long)sum_unserved,
           (long long)sum_err, bad, (long long)ctl->t_start, (long long)ctl->t_warm, (long long)ctl->t_end,
           (long long)t_done, ctl->vmas, ctl->vmas_dontcopy, ctl->anon_vmas, (long long)ctl->rss_kb,
           (long long)ctl->anon_kb, (long long)ctl->pte_kb, ctl->setup_ns / 1e9, sizeof(struct rec),
           sizeof(struct stall), (long long)total_stalls, (long long)sdrop, (long long)writes, (long long)minflt,
           (long long)ctl->forker_minflt, sysconf(_SC_NPROCESSORS_ONLN), (long long)opt.cap, sysconf(_SC_CLK_TCK),
           s1.busy - s0.busy, s1.idle - s0.idle, s1.steal - s0.steal, s1.hogs - s0.hogs, s1.parents - s0.parents);
    return bad ? 4 : 0;
}

#endif /* SPAWN_HELPER */
