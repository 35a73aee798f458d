"""How each cost that depends on the machine's size scales beyond the host a profile was measured on.

A profile is measured on one host (its `host.cpus`, `host.numa_nodes`, memory). Capacity planning
asks about machines with 64-256 CPUs. Every cost that on a real kernel depends on the CPU count or
the machine's size is listed here with what the model does with it and where that comes from
(`measured: ...`, `derived: ...`, `assumption: ...`). A profile may carry its own `scaling` section;
one without it gets these statements (`Profile.scaling`), and `forksim profiles --json` shows them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ScalingRule", "DEFAULT_SCALING", "default_scaling"]


class ScalingRule(BaseModel):
    """One size-dependent cost: what it depends on, what the model does, and where that comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    depends_on: str = Field(min_length=1, description="cpus, memory, numa_nodes, threads of the parent, ...")
    model: str = Field(min_length=1, description="what forksim does with it on a machine of another size")
    source: str = Field(min_length=1, description="measured: ... | derived: ... | assumption: ...")


DEFAULT_SCALING: dict[str, dict[str, str]] = {
    "lock_hold": {
        "depends_on": "cpus (contending CPUs)",
        "model": "tasklist_fork_hold, exit_notify_hold, release_task_hold and alloc_pid_hold are constant hold times; "
                 "contention is modelled (the lock's timeline: waiters spin until the holder's interval ends), "
                 "the lock word's cache-line transfer to each new holder is not added",
        "source": "measured: hold times on the calibrated host (traced, uncontended); assumption: a handover costs "
                  "nothing extra. On a many-CPU machine each handover of tasklist_lock / pidmap_lock (a queued "
                  "rwlock / spinlock, one cache line: kernel/locking/qrwlock.c, qspinlock.c) moves that line between "
                  "cores, roughly 0.1-0.3 us on one socket and more across sockets, so heavily contended "
                  "throughput on 64+ CPUs is optimistic",
    },
    "ipi_and_idle_wake": {
        "depends_on": "cpus (idle CPUs to wake)",
        "model": "ipi_send (the waker) and scheduler.idle_wake (the wakee) per wake-up of one halted CPU; constant "
                 "in the CPU count: a wake-up sends one reschedule IPI to one target",
        "source": "measured: futex ping-pong to a halted vCPU on the calibrated host; derived: a wake-up targets one "
                  "CPU (kernel/sched/core.c ttwu_queue_wakelist / smp_send_reschedule), so its cost does not grow "
                  "with the machine; the halt-exit part is a virtualisation cost (bare metal with C-states differs)",
    },
    "tlb_shootdown": {
        "depends_on": "CPUs that ran the parent's threads",
        "model": "dup_mmap's flush_tlb_mm is inside its fixed cost, measured with a single-threaded parent; a "
                 "multi-threaded parent spread over many CPUs pays no extra IPIs in the model",
        "source": "measured: with a single-threaded parent (one CPU in mm_cpumask); assumption: no more. "
                  "arch/x86/mm/tlb.c flush_tlb_mm_range -> flush_tlb_multi sends one IPI per other CPU in "
                  "mm_cpumask, so a parent with threads on N CPUs pays about N IPIs per fork",
    },
    "page_table_copy": {
        "depends_on": "memory size (RSS), memory bandwidth shared by concurrent forks",
        "model": "dup_mmap and exit_mmap cost per 4 KiB PTE and per 2 MiB PMD, linear in the image at any size; "
                 "concurrent copies on many CPUs do not slow each other",
        "source": "measured: slopes fitted on 0-1 GiB (quick) or 0-2 GiB (full, 4 GiB when memory allows), held-out "
                  "sizes within a few %; assumption: linear beyond and no bandwidth contention. Published per-GB "
                  "fork times of bigger machines (VALIDATION.md, 'Other hosts') span 9-13 ms/GB on physical and "
                  "VMware hosts and 10-424 ms/GB on Xen guests",
    },
    "numa_distance": {
        "depends_on": "numa_nodes",
        "model": "not modelled: every CPU reaches every page at the calibrated host's cost",
        "source": "assumption: one NUMA node (the calibrated host's host.numa_nodes). On a multi-node machine page "
                  "tables and copied pages of a parent on another node cost more per page (remote DRAM, about "
                  "1.5-2x latency); pin the parent's memory and CPUs to one node to stay within the profile",
    },
    "scheduler_slice": {
        "depends_on": "cpus",
        "model": "the profile's slice (base_slice on its host's CPU count) times f(machine.cpus) / f(host cpus), "
                 "f(n) = 1 + ilog2(min(n, 8)): 0.75 ms on 1 CPU, 1.5 ms on 2, 2.25 ms on 4, 3 ms on 8 or more for a "
                 "2-CPU profile of 1.5 ms; machine.slice overrides it",
        "source": "derived: the kernel scales sysctl_sched_base_slice at boot by get_update_sysctl_factor "
                  "(kernel/sched/fair.c, SCHED_TUNABLESCALING_LOG, the default)",
    },
    "stack_cache": {
        "depends_on": "cpus",
        "model": "stack_cache_per_cpu stacks cached on each simulated CPU",
        "source": "derived: NR_CACHED_STACKS per CPU (kernel/fork.c), so the cache grows with the machine",
    },
    "interruptions": {
        "depends_on": "cpus",
        "model": "each simulated CPU sees the profile's interruption stream (rate and durations) independently",
        "source": "measured: on one CPU of the calibrated host; assumption: every CPU of a bigger machine sees the "
                  "same tick, device and host-preemption interruptions",
    },
    "host_speed": {
        "depends_on": "cpus",
        "model": "each simulated CPU has its own slow episodes, drawn from the profile's host_speed quantiles",
        "source": "measured: on each CPU of the calibrated host in turn (one vCPU's episodes independent of the "
                  "other's); assumption: every vCPU of a bigger VM on the same host kind sees the same episodes",
    },
    "rcu_callbacks": {
        "depends_on": "cpus",
        "model": "each simulated CPU runs the RCU callbacks queued on it (forksim.rcu), per reap and per dying mm",
        "source": "measured: per creation on one CPU of the calibrated host; assumption: the grace period does not "
                  "lengthen with more CPUs (tree RCU reports quiescent states per leaf node of 16 CPUs)",
    },
    "concurrent_creation": {
        "depends_on": "cpus creating at once",
        "model": "a creation or exit pays the profile's fork_us / exit_us when another CPU, for another process, "
                 "wrote the shared creation state last (kernel/shared.py): on many CPUs creating at once that is "
                 "nearly every creation, at the same price",
        "source": "measured: two fork loops on the calibrated host's two CPUs; assumption: a line's transfer costs "
                  "the same with more CPUs contending for it (with many writers queueing on the same lines it costs "
                  "more: not modelled)",
    },
    "migration_and_context_switch": {
        "depends_on": "cpus (distance between them)",
        "model": "scheduler.migration and scheduler.context_switch are constant",
        "source": "measured (context_switch, same-CPU pipe ping-pong) and assumption (migration, 3 us); a move "
                  "across sockets or NUMA nodes costs more cache refill than on the calibrated host",
    },
}


def default_scaling() -> dict[str, ScalingRule]:
    return {k: ScalingRule(**v) for k, v in DEFAULT_SCALING.items()}
