/* forksim calibration: process-creation microbenchmarks against a controlled parent image.
 *
 * Build: cc -O2 -o forkbench forkbench.c -lpthread
 * Usage: forkbench MODE [options]; every result is one JSON object per line on stdout:
 *   {"shape": {...}}                       the parent image after set-up (from /proc/self/smaps)
 *   {"b": MODE, "i": k, ...ns fields...}   one raw sample (nanoseconds, CLOCK_MONOTONIC)
 *   {"error": "..."}                       a refusal (exit status 3), e.g. not enough MemAvailable
 *
 * What is timed (t0 = clock_gettime just before the call, in the parent):
 *   fork     fork_ns  = parent's return from fork() - t0           (fork_latency)
 *            fork_cpu_ns = the parent thread's CPU time over the same call (CLOCK_THREAD_CPUTIME_ID):
 *                       equal to fork_ns when nothing preempted it; the intrinsic cost under load
 *            rt_ns    = waitpid() return - t0                      (round trip)
 *            child_ns = child's first clock read - t0              (child start latency)
 *            exit_ns  = waitpid() return - child's clock just before _exit (exit + reap)
 *   vfork    fork_ns  = parent's return from vfork() - t0 (includes the child's life up to _exit)
 *   spawn    fork_ns  = return from posix_spawn(helper) - t0 (glibc: CLONE_VM|CLONE_VFORK + execve)
 *   forkexec fork_ns  = return from fork() - t0; rt_ns = waitpid return - t0 (child execve's helper)
 *   thread   fork_ns  = return from pthread_create - t0; rt_ns = pthread_join return - t0
 *            (thread, vfork, spawn: -s US sleeps that long before each recorded call, not before the -w warm-ups:
 *            a creation whose path the host's other work cooled for that long)
 *   burst    K forks before any reap; children block on a pipe; fork_ns per index j (stack cache)
 *   cow      per pass over P pages, the writing thread's CPU time: copy_ns (child writes while the parent maps them),
 *            pcopy_ns (parent writes while the child is alive), reuse_ns (parent writes after the
 *            child exited), base_ns (a pass with no fault); divide by pages
 *   fault    fault_ns: first write to P fresh anonymous pages (one fault per page), base_ns
 *   cold     the fork sample of `fork`, each fork after a gap that cools what the previous one warmed:
 *            -s US sleep (nanosleep: the vCPU halts; not before the -w warm-ups), -S US spin (clock reads, no memory traffic),
 *            -E US the child sleeps that long before its exit (not in the -w warm-ups), the parent blocked in waitpid:
 *            exit_ns is then an exit whose image cooled that long since the fork walked it, and the next fork follows
 *            that cold exit's walk
 *            -W BYTES another process pinned to the parent's CPU sweeps that much of its own memory
 *            (one write per 64-byte line) while the parent blocks on a pipe, -M the parent moves to
 *            the other CPU of a pair (sched_setaffinity) just before each fork; gap_ns = the gap
 *            -G LIST  the gaps interleaved in one process: LIST is comma-separated microseconds, each a sleep, or a
 *            spin with an S prefix, or with a W prefix bytes of other work, -W's sweep of that many bytes (e.g.
 *            0,1000,100000,S10000,W16777216); -n passes, each over the list in a fresh random
 *            order (fixed seed), so that the host's drift, +-25% within minutes on this machine kind, hits every
 *            gap alike; before each gap two unrecorded back-to-back forks walk the image, so each gap starts from
 *            a warm image whatever gap came before (one cold walk leaves a share of its coldness); each sample
 *            carries its gap's "x_us" and "spin" (a W item's: its bytes as "work", "x_us" 0) and "next_cpu_ns", the
 *            parent's CPU time in one more fork right after it (and its child's exit): the walks that followed a cold
 *            one; -s and -S are ignored
 *   lines    the caches as a back-to-back fork's walk sees them: for footprints of 256 KiB .. -r bytes
 *            (steps of sqrt(2)), passes over a private buffer of that size incrementing one
 *            word per 64-byte line in address order (what copy_page_range does to the struct pages and
 *            PTEs of a large image, fork after fork); line_ns = the thread's CPU time per line over the
 *            passes after a first (filling) pass, -n passes' worth of 256 MiB of lines per footprint;
 *            no image is built. One sample per footprint: {"b": "lines", "bytes": B, "line_ns": x}
 *            With -L random: each pass visits the lines in one fixed random permutation (the same every
 *            pass, like a fork's walk over the struct pages of an image whose frames are out of order),
 *            the buffer in 2 MiB pages where THP allows (the kernel maps its struct pages, vmemmap, with
 *            PMDs); the sample then carries "layout": "random"
 *
 * Options: -r RSS bytes (touched anonymous memory, one byte written per 4 KiB page, in address order;
 *                 faulted in first by MADV_POPULATE_WRITE where the kernel has it: the same faults in the
 *                 same order, so the same frames, without a trap per page: a third faster at 1 GiB)
 *          -A N  N extra anonymous VMAs, each with a touched page (mprotect splits one region)
 *          -F N  N extra file-backed VMAs (a memfd page mapped privately, read-only, never touched)
 *          -t 0|1 THP off (MADV_NOHUGEPAGE) / on (MADV_HUGEPAGE, 2 MiB aligned)
 *          -n reps  -w warm-up reps  -c CPU (pin; -1 = unpinned)  -k K (burst)  -p pages (cow/fault)
 *          -x helper path (spawn, forkexec)  -g (print {"ready": pid}, wait for a byte on stdin)
 *          -s US -S US -G LIST -W BYTES -M -E US (cold; -M needs -c)
 *          -L order|random the image's pages are touched (first written, so allocated) in address order
 *                 (default) or in a random permutation (fixed seed): the buddy allocator then hands out
 *                 frames in touch order, so that "random" leaves no two neighbouring pages in neighbouring
 *                 frames (the physical layout a long-lived, fragmented process has; forksim.lab.pagemap);
 *                 runs:K touches runs of K pages, each in address order, the runs in a random permutation:
 *                 a break in the frame order every K pages (scatter about 1/K), what a partly fragmented
 *                 free list hands out; spread:K touches them in address order, runs of 64/K pages
 *                 interleaved with another buffer's pages: struct pages spread K (needs large free blocks)
 *          -R CPU (fork, cold, thread) each child pins itself to CPU before it exits, so that its task, VMAs
 *                 and anon_vma chains are freed there (a thread: its task and pid, as it releases itself): with
 *                 CPU other than -c's, the next creation reuses slab objects another CPU freed (SLUB remote
 *                 frees); -R with -c's own CPU is the same call without the move (the A/B baseline)
 *          -D (fork) the image written since the last fork or not, alternating: before each fork one byte of every
 *                 page of the image written (odd i: its PTEs writable again after the write faults, so that the
 *                 fork write-protects each, copy_present_pte's ptep_set_wrprotect) or read (even i: the same
 *                 pass over the data, PTEs left read-only by the previous fork); each sample gains "dirty": 0|1
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lab.h" /* now_ns, cpu_ns, busy_wait_us, pin_cpu (forksim/lab/csrc) */

extern char **environ;

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define PAGE 4096UL
#define HPAGE (2UL * 1024 * 1024)

struct shared {
    volatile int64_t child_start;
    volatile int64_t child_exit;
    volatile int64_t child_copy;
    volatile int64_t thread_start;
};

static struct shared *sh;
static char *region;
static size_t region_len;

static void die(const char *what)
{
    printf("{\"error\": \"%s: %s\"}\n", what, strerror(errno));
    fflush(stdout);
    exit(3);
}

static void refuse(const char *msg)
{
    printf("{\"error\": \"%s\"}\n", msg);
    fflush(stdout);
    exit(3);
}

static long meminfo_kb(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = atol(line + kl + 1);
            break;
        }
    fclose(f);
    return v;
}

static void touch(char *p, size_t len)
{
    for (size_t off = 0; off < len; off += PAGE)
        p[off] = (char)(off >> 12) | 1;
}

/* splitmix64: a fixed-seed generator of our own, so that the permutation is the same with every libc */
static uint64_t rng_state = 0x5eedf0e4c0ffee11ULL;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* 0 .. n-1 in a random order (Fisher-Yates; the caller frees it) */
static uint32_t *permutation(size_t n)
{
    uint32_t *idx = malloc(n * sizeof *idx);
    if (!idx)
        die("malloc permutation");
    for (size_t i = 0; i < n; i++)
        idx[i] = (uint32_t)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_next() % i);
        uint32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
    return idx;
}

static uint32_t *touch_order; /* -L random: the order the image's pages were touched in */

/* touch's pages in a random permutation (-L random), or runs of run_pages pages in address order, the runs in a
 * random permutation (-L runs:K): each page's frame is whatever the allocator had next */
static size_t run_pages = 1; /* -L runs:K: runs of K pages in address order, the runs in a random order */
static void touch_random(char *p, size_t len)
{
    size_t n = len / PAGE;
    if (run_pages > 1) {
        size_t nr = (n + run_pages - 1) / run_pages, k = 0;
        uint32_t *runs = permutation(nr);
        touch_order = malloc(n * sizeof *touch_order);
        if (!touch_order)
            die("malloc touch order");
        for (size_t r = 0; r < nr; r++)
            for (size_t j = 0; j < run_pages && (size_t)runs[r] * run_pages + j < n; j++)
                touch_order[k++] = (uint32_t)(runs[r] * run_pages + j);
        free(runs);
    } else
        touch_order = permutation(n);
    for (size_t i = 0; i < n; i++)
        p[(size_t)touch_order[i] * PAGE] = (char)touch_order[i] | 1;
}

/* -L random, before exit: free the image's pages in the order they were allocated (exit_mmap would free
 * them in address order, i.e. in a random frame order, and the free lists hand frames out last in, first
 * out: every later image on this machine, touched in order, would then get its frames out of order) */
static void release_random(void)
{
    if (!touch_order || !region)
        return;
    for (size_t i = 0; i < region_len / PAGE; i++)
        madvise(region + (size_t)touch_order[i] * PAGE, PAGE, MADV_DONTNEED);
    free(touch_order);
    touch_order = NULL;
}

static int random_layout; /* -L random */
static size_t spread_k;   /* -L spread:K */

/* -L spread:K: the image's pages in address order, each run of 64 / K of them followed by (K - 1) times as many
 * pages of another buffer, freed once the image is touched: with frames handed out in touch order, each 4 KiB page
 * of struct pages (64 frames) then holds one run of the image's, spread K (forksim.lab.pagemap.spread_of) */
static void touch_spread(char *p, size_t len)
{
    size_t n = len / PAGE, run = spread_k >= 64 ? 1 : 64 / spread_k;
    size_t flen = (n + run) * (spread_k - 1) * PAGE, fi = 0;
    char *f = mmap(NULL, flen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (f == MAP_FAILED)
        die("mmap spread filler");
    madvise(f, flen, MADV_NOHUGEPAGE);
    for (size_t i = 0; i < n; i += run) {
        for (size_t j = i; j < i + run && j < n; j++)
            p[j * PAGE] = 1;
        for (size_t j = 0; j < run * (spread_k - 1); j++, fi++)
            f[fi * PAGE] = 1;
    }
    munmap(f, flen);
}

static void setup_image(size_t rss, int thp, long anon_vmas, long file_vmas)
{
    long avail = meminfo_kb("MemAvailable");
    /* keep a margin: the image, plus its page tables, plus 512 MiB for everyone else */
    if (avail >= 0 && (long)((rss + rss / 256) / 1024) + 512 * 1024 > avail) {
        char msg[200];
        snprintf(msg, sizeof msg, "refused: rss %zu bytes does not fit in MemAvailable %ld kB (with a 512 MiB margin)",
                 rss, avail);
        refuse(msg);
    }
    sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        die("mmap shared");
    if (rss) {
        size_t len = (rss + PAGE - 1) & ~(PAGE - 1);
        char *p = mmap(NULL, len + (thp ? HPAGE : 0), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            die("mmap rss");
        if (thp) {
            char *a = (char *)(((uintptr_t)p + HPAGE - 1) & ~(HPAGE - 1));
            if (a > p)
                munmap(p, a - p);
            size_t tail = (size_t)((p + len + HPAGE) - (a + len));
            if (tail)
                munmap(a + len, tail);
            p = a;
            if (madvise(p, len, MADV_HUGEPAGE))
                die("madvise(MADV_HUGEPAGE)");
        } else {
            madvise(p, len, MADV_NOHUGEPAGE);
        }
        if (spread_k > 1)
            touch_spread(p, len);
        else if (random_layout)
            touch_random(p, len);
        else {
            /* the write faults in address order without a trap per page (a kernel before 5.14: the loop's
             * own faults), then the loop's byte per page, so that no page is all zeros (THP shrinkers) */
            madvise(p, len, MADV_POPULATE_WRITE);
            touch(p, len);
        }
        region = p;
        region_len = len;
    }
    if (anon_vmas > 0) {
        size_t len = (size_t)anon_vmas * PAGE;
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            die("mmap anon vmas");
        madvise(p, len, MADV_NOHUGEPAGE);
        touch(p, len);
        for (long i = 1; i < anon_vmas; i += 2)
            if (mprotect(p + i * PAGE, PAGE, PROT_READ))
                die("mprotect (vm.max_map_count?)");
    }
    if (file_vmas > 0) {
        int fd = memfd_create("forksim-file-vmas", 0);
        if (fd < 0)
            die("memfd_create");
        if (ftruncate(fd, PAGE))
            die("ftruncate");
        for (long i = 0; i < file_vmas; i++)
            if (mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED)
                die("mmap file vma (vm.max_map_count?)");
        close(fd);
    }
}

/* The image as the cost model sees it: VMAs, VMAs holding anonymous pages, anon 4K pages, THP. */
static void print_shape(size_t rss, int thp)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    long vmas = 0, anon_vmas = 0, anon_kb = 0, ahp_kb = 0;
    if (!f)
        die("smaps");
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        long v;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            vmas++;
        } else if (sscanf(line, "Anonymous: %ld kB", &v) == 1) {
            anon_kb += v;
            if (v > 0)
                anon_vmas++;
        } else if (sscanf(line, "AnonHugePages: %ld kB", &v) == 1) {
            ahp_kb += v;
        }
    }
    fclose(f);
    printf("{\"shape\": {\"pid\": %d, \"rss_bytes\": %zu, \"thp\": %d, \"vmas\": %ld, \"anon_vmas\": %ld, "
           "\"anon_kb\": %ld, \"anon_huge_kb\": %ld, \"ptes\": %ld, \"pmds\": %ld}}\n",
           getpid(), rss, thp, vmas, anon_vmas, anon_kb, ahp_kb, (anon_kb - ahp_kb) / 4, ahp_kb / 2048);
    fflush(stdout);
}

static void pin(int cpu)
{
    if (pin_cpu(cpu))
        die("sched_setaffinity");
}

static void *thread_fn(void *arg)
{
    int exit_cpu = *(const int *)arg;

    sh->thread_start = now_ns();
    if (exit_cpu >= 0 && pin_cpu(exit_cpu)) /* -R: it exits, and releases itself, there */
        die("sched_setaffinity");
    return NULL;
}

static void reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
}

/* cold -G: the gap list (microseconds; spin[i] set for an S prefix; work[i] the bytes of a W item) */
#define MAX_GAPS 64
static long gap_us[MAX_GAPS];
static int gap_spin[MAX_GAPS];
static size_t gap_work[MAX_GAPS];
static int n_gaps;

static void parse_gaps(const char *list)
{
    char *copy = strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n_gaps == MAX_GAPS)
            refuse("-G: too many gaps");
        gap_spin[n_gaps] = *tok == 'S';
        if (*tok == 'W')
            gap_work[n_gaps] = strtoull(tok + 1, NULL, 0);
        else
            gap_us[n_gaps] = atol(tok + gap_spin[n_gaps]);
        n_gaps++;
    }
    free(copy);
    if (!n_gaps)
        refuse("-G needs at least one gap");
}

/* A fork whose child exits at once: a walk of the image (cold -G's reset before each gap); returns the parent's CPU
 * time in fork() (ns) */
static int64_t fork_and_reap(void)
{
    int64_t c0 = cpu_ns();
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    int64_t c1 = cpu_ns();
    if (pid < 0)
        die("fork");
    reap(pid);
    return c1 - c0;
}

/* One write per page; returns the thread's CPU time for the pass (faults included). */
static int64_t write_pass(char *p, size_t pages)
{
    int64_t c0 = cpu_ns();
    for (size_t i = 0; i < pages; i++)
        p[i * PAGE] += 1;
    return cpu_ns() - c0;
}

/* One read per page (-D's clean half: the same pass over the data as write_pass, no fault). */
volatile char read_sink;
static void read_pass(const char *p, size_t pages)
{
    char sum = 0;
    for (size_t i = 0; i < pages; i++)
        sum += p[i * PAGE];
    read_sink = sum;
}

/* cold mode's other work: lab_start_sweeper (lab.h), started before the image exists. */
static void start_worker(size_t bytes)
{
    if (lab_start_sweeper(bytes))
        die("worker");
}

static void other_work(size_t bytes)
{
    if (lab_sweep_bytes(bytes))
        die("worker");
}

/* lines mode: one sample per footprint (see the header); the buffer is 4 KiB pages (no THP), like the
 * struct pages and page tables a fork walks, and the passes run in address order (prefetchable).
 * -L random: the passes visit the lines in one fixed random permutation, the buffer in 2 MiB pages where
 * THP allows (vmemmap, the struct pages' mapping, is PMD-mapped on x86-64) */
static void lines_curve(size_t max_bytes, long scale)
{
    long i = 0;
    for (double f = 256 << 10; f <= (double)max_bytes * 1.01; f *= 1.41421356) {
        /* 256 KiB, 362 KiB, 512 KiB, ...: steps of sqrt(2), in whole pages */
        size_t bytes = (size_t)f & ~(size_t)4095;
        size_t n = bytes / 64;
        uint32_t *order = random_layout ? permutation(n) : NULL;
        char *b = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b == MAP_FAILED)
            die("mmap");
        madvise(b, bytes, random_layout ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        for (size_t o = 0; o < bytes; o += 64)
            b[o] = 1;
        long passes = (long)((scale * (256ul << 20)) / bytes);
        if (passes < 3)
            passes = 3;
        int64_t c0 = cpu_ns();
        if (order)
            for (long p = 0; p < passes; p++)
                for (size_t j = 0; j < n; j++)
                    (*(volatile long *)(b + (size_t)order[j] * 64))++;
        else
            for (long p = 0; p < passes; p++)
                for (size_t o = 0; o < bytes; o += 64)
                    (*(volatile long *)(b + o))++;
        double per = (double)(cpu_ns() - c0) / ((double)passes * (double)n);
        if (order)
            printf("{\"b\": \"lines\", \"i\": %ld, \"bytes\": %zu, \"passes\": %ld, \"line_ns\": %.4f, "
                   "\"layout\": \"random\"}\n", i++, bytes, passes, per);
        else
            printf("{\"b\": \"lines\", \"i\": %ld, \"bytes\": %zu, \"passes\": %ld, \"line_ns\": %.4f}\n",
                   i++, bytes, passes, per);
        fflush(stdout);
        munmap(b, bytes);
        free(order);
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "fork";
    size_t rss = 0, pages = 1024;
    long anon_vmas = 0, file_vmas = 0, reps = 100, warm = 5, k = 8;
    int thp = 0, cpu = -1, gate = 0, migrate = 0, exit_cpu = -1, dirty_ab = 0, opt;
    long sleep_us = 0, spin_us = 0, child_sleep_us = 0;
    size_t work_bytes = 0;
    const char *helper = NULL;

    optind = 2;
    while ((opt = getopt(argc, argv, "r:A:F:t:n:w:c:k:p:x:gs:S:G:W:MR:L:E:D")) != -1) {
        switch (opt) {
        case 'r': rss = strtoull(optarg, NULL, 0); break;
        case 'A': anon_vmas = atol(optarg); break;
        case 'F': file_vmas = atol(optarg); break;
        case 't': thp = atoi(optarg); break;
        case 'n': reps = atol(optarg); break;
        case 'w': warm = atol(optarg); break;
        case 'c': cpu = atoi(optarg); break;
        case 'k': k = atol(optarg); break;
        case 'p': pages = strtoull(optarg, NULL, 0); break;
        case 'x': helper = optarg; break;
        case 'g': gate = 1; break;
        case 's': sleep_us = atol(optarg); break;
        case 'S': spin_us = atol(optarg); break;
        case 'G': parse_gaps(optarg); break;
        case 'W': work_bytes = strtoull(optarg, NULL, 0); break;
        case 'M': migrate = 1; break;
        case 'R': exit_cpu = atoi(optarg); break;
        case 'E': child_sleep_us = atol(optarg); break;
        case 'D': dirty_ab = 1; break;
        case 'L':
            if (!strcmp(optarg, "random"))
                random_layout = 1;
            else if (!strncmp(optarg, "runs:", 5) && atol(optarg + 5) >= 1)
                random_layout = 1, run_pages = (size_t)atol(optarg + 5);
            else if (!strncmp(optarg, "spread:", 7) && atol(optarg + 7) >= 1)
                spread_k = (size_t)atol(optarg + 7);
            else if (strcmp(optarg, "order"))
                refuse("-L takes order, random, runs:K or spread:K (K >= 1)");
            break;
        default: refuse("bad option");
        }
    }
    pin(cpu);
    if (migrate && cpu < 0)
        refuse("-M needs -c CPU (the parent alternates between CPU and its neighbour)");
    const int home = cpu;
    if (!strcmp(mode, "lines")) {
        lines_curve(rss ? rss : 64ul << 20, reps > 0 ? reps : 1);
        return 0;
    }
    size_t most_work = work_bytes; /* the sweeper's buffer: -W's, or the largest W item of -G */
    for (int j = 0; j < n_gaps; j++)
        if (gap_work[j] > most_work)
            most_work = gap_work[j];
    if (!strcmp(mode, "cold") && most_work)
        start_worker(most_work);
    if (!strcmp(mode, "cow") && rss < pages * PAGE)
        rss = pages * PAGE;
    if (!strcmp(mode, "fault"))
        setup_image(0, 0, anon_vmas, file_vmas);
    else
        setup_image(rss, thp, anon_vmas, file_vmas);
    print_shape(rss, thp);
    if (gate) {
        char c;
        printf("{\"ready\": %d}\n", getpid());
        fflush(stdout);
        if (read(0, &c, 1) != 1) {
            release_random();
            return 0;
        }
    }

    /* cold -G: the schedule, pass after pass, each a shuffle of the gap list (indices into gap_us) */
    int *order = NULL;
    if (n_gaps && !strcmp(mode, "cold")) {
        order = malloc(sizeof *order * (size_t)(reps * n_gaps));
        srand(4242);
        for (long pass = 0; pass < reps; pass++) {
            int *o = order + pass * n_gaps;
            for (int j = 0; j < n_gaps; j++)
                o[j] = j;
            for (int j = n_gaps - 1; j > 0; j--) {
                int m = rand() % (j + 1), t = o[j];
                o[j] = o[m], o[m] = t;
            }
        }
        reps *= n_gaps;
    }
    int item = -1; /* the gap of this fork, in order */
    size_t sweep_bytes = work_bytes; /* -W's, or this gap's W item */

    for (long i = -warm; i < reps; i++) {
        int64_t t0, t1, t2, c0, c1;
        pid_t pid;
        int64_t gap = 0;
        if (!strcmp(mode, "cold")) {
            if (order && i >= 0) {
                item = order[i];
                sleep_us = gap_spin[item] ? 0 : gap_us[item];
                spin_us = gap_spin[item] ? gap_us[item] : 0;
                sweep_bytes = gap_work[item];
                fork_and_reap();
                fork_and_reap();
            }
            int64_t g0 = now_ns();
            if (sleep_us && i >= 0) { /* a warm-up fork only has to walk the image: the next sleep cools it */
                struct timespec ts = {sleep_us / 1000000, (sleep_us % 1000000) * 1000};
                while (nanosleep(&ts, &ts) && errno == EINTR)
                    ;
            }
            if (spin_us)
                busy_wait_us(spin_us);
            if (sweep_bytes)
                other_work(sweep_bytes);
            if (migrate) /* a toggle, not the parity of i: from a negative i (an odd warm-up count) that
                            * read -1, "no pin", and the parent never moved */
                pin(cpu = cpu == home ? home + 1 : home);
            gap = now_ns() - g0;
        } else if (sleep_us && i >= 0 && (!strcmp(mode, "thread") || !strcmp(mode, "vfork") || !strcmp(mode, "spawn"))) {
            struct timespec ts = {sleep_us / 1000000, (sleep_us % 1000000) * 1000}; /* -s: a cold creation */
            while (nanosleep(&ts, &ts) && errno == EINTR)
                ;
        }
        if (dirty_ab && !strcmp(mode, "fork") && region) {
            if (i & 1)
                write_pass(region, region_len / PAGE);
            else
                read_pass(region, region_len / PAGE);
        }
        if (!strcmp(mode, "fork") || !strcmp(mode, "cold")) {
            sh->child_start = sh->child_exit = 0;
            c0 = cpu_ns();
            t0 = now_ns();
            pid = fork();
            if (pid == 0) {
                sh->child_start = now_ns();
                if (exit_cpu >= 0 && pin_cpu(exit_cpu))
                    _exit(4);
                if (child_sleep_us && i >= 0) { /* as -s: a warm-up only has to walk the image */
                    struct timespec ts = {child_sleep_us / 1000000, (child_sleep_us % 1000000) * 1000};
                    while (nanosleep(&ts, &ts) && errno == EINTR)
                        ;
                }
                sh->child_exit = now_ns();
                _exit(0);
            }
            t1 = now_ns();
            c1 = cpu_ns();
            if (pid < 0)
                die("fork");
            reap(pid);
            t2 = now_ns();
            /* cold -G: the fork right after this one and its child's exit, which walked the image at this fork's
             * coldness and left a share of it (the model's Warmth.residual, twice: the fork's walk and the exit's) */
            int64_t next_cpu = item >= 0 ? fork_and_reap() : 0;
            if (i >= 0) {
                printf("{\"b\": \"%s\", \"i\": %ld, \"fork_ns\": %ld, \"fork_cpu_ns\": %ld, \"rt_ns\": %ld, "
                       "\"child_ns\": %ld, \"exit_ns\": %ld, \"gap_ns\": %ld, \"cpu\": %d",
                       mode, i, (long)(t1 - t0), (long)(c1 - c0), (long)(t2 - t0), (long)(sh->child_start - t0),
                       (long)(t2 - sh->child_exit), (long)gap, sched_getcpu());
                if (dirty_ab)
                    printf(", \"dirty\": %d", (int)(i & 1));
                if (item >= 0) /* cold -G: the gap this fork followed */
                    printf(", \"x_us\": %ld, \"spin\": %d, \"work\": %zu, \"next_cpu_ns\": %ld", gap_us[item],
                           gap_spin[item], gap_work[item], (long)next_cpu);
                printf("}\n");
            }
        } else if (!strcmp(mode, "vfork")) {
            t0 = now_ns();
            pid = vfork();
            if (pid == 0)
                _exit(0);
            t1 = now_ns();
            if (pid < 0)
                die("vfork");
            reap(pid);
            t2 = now_ns();
            if (i >= 0)
                printf("{\"b\": \"vfork\", \"i\": %ld, \"fork_ns\": %ld, \"rt_ns\": %ld}\n", i, (long)(t1 - t0),
                       (long)(t2 - t0));
        } else if (!strcmp(mode, "spawn") || !strcmp(mode, "forkexec")) {
            char *args[] = {(char *)helper, NULL};
            if (!helper)
                refuse("spawn/forkexec need -x helper");
            t0 = now_ns();
            if (mode[0] == 's') {
                int rc = posix_spawn(&pid, helper, NULL, NULL, args, environ);
                if (rc) {
                    errno = rc;
                    die("posix_spawn");
                }
            } else {
                pid = fork();
                if (pid == 0) {
                    execve(helper, args, environ);
                    _exit(127);
                }
                if (pid < 0)
                    die("fork");
            }
            t1 = now_ns();
            reap(pid);
            t2 = now_ns();
            if (i >= 0)
                printf("{\"b\": \"%s\", \"i\": %ld, \"fork_ns\": %ld, \"rt_ns\": %ld}\n", mode, i, (long)(t1 - t0),
                       (long)(t2 - t0));
        } else if (!strcmp(mode, "thread")) {
            pthread_t th;
            sh->thread_start = 0;
            t0 = now_ns();
            if (pthread_create(&th, NULL, thread_fn, &exit_cpu))
                die("pthread_create");
            t1 = now_ns();
            pthread_join(th, NULL);
            t2 = now_ns();
            if (i >= 0)
                printf("{\"b\": \"thread\", \"i\": %ld, \"fork_ns\": %ld, \"rt_ns\": %ld, \"child_ns\": %ld}\n", i,
                       (long)(t1 - t0), (long)(t2 - t0), (long)(sh->thread_start - t0));
        } else if (!strcmp(mode, "burst")) {
            int fds[2];
            pid_t kids[256];
            int64_t lat[256], clat[256];
            if (k > 256)
                k = 256;
            if (pipe(fds))
                die("pipe");
            for (long j = 0; j < k; j++) {
                c0 = cpu_ns();
                t0 = now_ns();
                pid = fork();
                if (pid == 0) {
                    char c;
                    close(fds[1]);
                    while (read(fds[0], &c, 1) < 0 && errno == EINTR)
                        ;
                    _exit(0);
                }
                t1 = now_ns();
                c1 = cpu_ns();
                if (pid < 0)
                    die("fork");
                kids[j] = pid;
                lat[j] = t1 - t0;
                clat[j] = c1 - c0;
            }
            close(fds[0]);
            close(fds[1]);
            for (long j = 0; j < k; j++)
                reap(kids[j]);
            if (i >= 0)
                for (long j = 0; j < k; j++)
                    printf("{\"b\": \"burst\", \"i\": %ld, \"j\": %ld, \"k\": %ld, \"fork_ns\": %ld, "
                           "\"fork_cpu_ns\": %ld}\n", i, j, k, (long)lat[j], (long)clat[j]);
        } else if (!strcmp(mode, "cow")) {
            int fds[2];
            int64_t copy, pcopy, reuse, base;
            /* 1. the child writes every page while the parent still maps them: wp_page_copy */
            sh->child_copy = 0;
            pid = fork();
            if (pid == 0) {
                sh->child_copy = write_pass(region, pages);
                _exit(0);
            }
            if (pid < 0)
                die("fork");
            reap(pid);
            copy = sh->child_copy;
            /* 2. the child is gone: the parent's writes find pages it alone maps: wp_page_reuse */
            reuse = write_pass(region, pages);
            base = write_pass(region, pages);
            /* 3. the parent writes while a child still maps the pages: wp_page_copy in the parent */
            if (pipe(fds))
                die("pipe");
            pid = fork();
            if (pid == 0) {
                char c;
                close(fds[1]);
                while (read(fds[0], &c, 1) < 0 && errno == EINTR)
                    ;
                _exit(0);
            }
            if (pid < 0)
                die("fork");
            pcopy = write_pass(region, pages);
            close(fds[0]);
            close(fds[1]);
            reap(pid);
            if (i >= 0)
                printf("{\"b\": \"cow\", \"i\": %ld, \"pages\": %zu, \"copy_ns\": %ld, \"pcopy_ns\": %ld, "
                       "\"reuse_ns\": %ld, \"base_ns\": %ld}\n",
                       i, pages, (long)copy, (long)pcopy, (long)reuse, (long)base);
        } else if (!strcmp(mode, "fault")) {
            size_t len = pages * PAGE;
            char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            int64_t f, base;
            if (p == MAP_FAILED)
                die("mmap");
            madvise(p, len, MADV_NOHUGEPAGE);
            f = write_pass(p, pages);
            base = write_pass(p, pages);
            munmap(p, len);
            if (i >= 0)
                printf("{\"b\": \"fault\", \"i\": %ld, \"pages\": %zu, \"fault_ns\": %ld, \"base_ns\": %ld}\n", i,
                       pages, (long)f, (long)base);
        } else {
            refuse("unknown mode (fork vfork spawn forkexec thread burst cow fault cold)");
        }
    }
    fflush(stdout);
    free(order);
    release_random();
    return 0;
}
