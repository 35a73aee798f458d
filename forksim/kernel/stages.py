"""The one table of stages: what the profile prices, what records time, what tables, traces and
figures call them.

Two views of the creation path live here:

- `STAGES`: the profile's priced stages (each a fitted cost), in kernel order, each with the kernel
  functions it stands for, a short label and, where a trace draws it as a slice, what that slice says.
- `CALL_PARTS`: how the parent's time inside the creating call is split in the records and in
  summary.json's `stage_us` (the record column each part is timed into and its label in figures).

Adding a stage is one entry here plus the code that really charges it (kernel/clone.py).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DUP_MMAP", "RET_FROM_FORK", "EXIT_MMAP", "DO_EXIT", "WAIT_REAP", "Stage", "STAGES",
           "CallPart", "CALL_PARTS", "FORK_PATH", "COLD_STAGES", "TRACE_TEXT", "PER_CREATION",
           "PER_SHARED_PAGE", "PARENT", "CHILD", "stage_label"]


@dataclass(frozen=True)
class Stage:
    """A priced stage of the creation path (a profile `stages` entry).

    `paid_by`, `kinds` and `per` say what a creation costs on average (work.estimate_work): a
    stage paid by the parent or the child, for every kind or for the kinds whose `Kind` attribute
    `kinds` names (kernel/flags.py), once per creation or per shared page written; a stage paid by
    nobody ("") is inside another stage (a lock hold) or charged per event (a fault, an IPI)."""

    name: str
    kernel: str  # the kernel functions it stands for
    label: str  # short, for tables and figures
    trace: str = ""  # what a trace slice of this stage says ("" when traces do not draw it)
    in_fork_call: bool = False  # part of the parent's fork() call (summed by `profiles --compare`)
    paid_by: str = ""  # "parent" | "child": who runs it once per creation ("": see the class docstring)
    kinds: str = ""  # the Kind attribute that selects the kinds paying it ("": every kind)
    per: str = "creation"  # "creation" | "shared page written" (a COW copy)
    walks_image: bool = False  # its median grows with the parent's image (priced with its shape)
    cold: bool = False  # a profile's `warmth` section may price a cold walk of it (ColdTerms)


# Stages' `per` values and the `paid_by` sides (work.estimate_work sums them).
PER_CREATION, PER_SHARED_PAGE = "creation", "shared page written"
PARENT, CHILD = "parent", "child"

# The names of the stages that more than the kernel names (calibration's fitters and its trace
# segments, traces, the warmth and published profiles), spelled once: import these.
DUP_MMAP, RET_FROM_FORK, EXIT_MMAP, DO_EXIT = "dup_mmap", "ret_from_fork", "exit_mmap", "do_exit"
WAIT_REAP = "wait_reap"


_STAGES = (
    Stage("copy_process_setup",
          "kernel_clone entry, dup_task_struct (without the stack), copy_creds, sched_fork, copy_files, "
          "copy_fs, copy_sighand, copy_signal: a new process (fork, vfork, posix_spawn)",
          "copy_process setup", "dup_task_struct (stack cache or vmalloc) .. copy_signal, dup_mm", True,
          PARENT, "new_process"),
    Stage("copy_process_setup_thread",
          "the same stages for CLONE_THREAD|CLONE_VM|CLONE_FILES|CLONE_FS|CLONE_SIGHAND (reference counts "
          "instead of copies)", "copy_process setup (thread)", paid_by=PARENT, kinds="clone_thread"),
    Stage("stack_cache_hit", "alloc_thread_stack_node: a per-CPU cached vmalloc'd stack, zeroed",
          "stack (cache hit)", in_fork_call=True, paid_by=PARENT),
    Stage("stack_vmalloc", "alloc_thread_stack_node: cache miss, __vmalloc_node_range of a new stack",
          "stack (vmalloc)"),
    Stage("dup_mm", "copy_mm -> dup_mm: mm_alloc, mm_init, pgd_alloc (before dup_mmap takes mmap_lock)",
          "dup_mm", in_fork_call=True, paid_by=PARENT, kinds="copies_mm"),
    Stage(DUP_MMAP,
          "dup_mmap under the parent's mmap_lock (write): vm_area_dup, anon_vma_fork, maple tree, "
          "copy_page_range (per PTE / per PMD), flush_tlb_mm",
          "dup_mmap", "copy of the parent's VMAs and page tables, the parent's mmap_lock held for write", True,
          PARENT, "copies_mm", walks_image=True, cold=True),
    Stage("copy_process_tail",
          "copy_namespaces, copy_io, copy_thread, alloc_pid, cgroup_can_fork, the tasklist_lock section, "
          "post-fork hooks (sched_post_fork, cgroup_post_fork, perf/uprobe) up to task_newtask",
          "copy_process tail",
          "copy_namespaces .. alloc_pid (pidmap_lock), tasklist_lock section, wake_up_new_task", True, PARENT),
    Stage("alloc_pid_hold", "alloc_pid: time pidmap_lock is held (idr_alloc_cyclic per namespace level)",
          "pidmap_lock hold"),
    Stage("tasklist_fork_hold", "copy_process: time tasklist_lock is held for write while linking the child",
          "tasklist_lock hold (fork)"),
    Stage("wake_up_new_task",
          "kernel_clone: trace_sched_process_fork, wake_up_new_task (select_task_rq, activate_task, "
          "wakeup_preempt) and the return to user space", "wake_up_new_task", in_fork_call=True, paid_by=PARENT),
    Stage(RET_FROM_FORK, "ret_from_fork -> schedule_tail: the child's first return to user space",
          "ret_from_fork", paid_by=CHILD),
    Stage("fork_child_touch",
          "a fork child's first writes after the return (its stack, glibc's fork bookkeeping, TLS): the COW "
          "faults it takes before it can exit or exec", "child's first writes", paid_by=CHILD, kinds="copies_mm"),
    Stage("exec", "execve of a small static binary: bprm, load_elf_binary, begin_new_exec (without dropping "
          "the old mm)", "execve", "execve (exec_mmap drops the inherited mm)", paid_by=CHILD, kinds="execs"),
    Stage(EXIT_MMAP, "exit_mmap / exec_mmap of the old mm: unmap_vmas, zap_pte_range (per PTE/PMD), "
          "free_pgtables", "exit_mmap", paid_by=CHILD, kinds="copies_mm", walks_image=True, cold=True),
    Stage(DO_EXIT, "do_exit without exit_mmap: exit_files, exit_fs, exit_sighand, exit_thread, exit_notify "
          "bookkeeping", "do_exit", "do_exit (exit_mmap of an mm the child owns)", paid_by=CHILD),
    Stage("exit_notify_hold", "exit_notify: time tasklist_lock is held for write", "tasklist_lock hold (exit)"),
    Stage(WAIT_REAP, "do_wait -> wait_task_zombie -> release_task, and the wait syscall's own entry and exit",
          "wait and reap", "wait4 -> do_wait -> release_task", paid_by=PARENT),
    Stage("release_task_hold", "release_task: time tasklist_lock is held for write (__exit_signal, "
          "__unhash_process)", "tasklist_lock hold (reap)"),
    Stage("cow_fault_copy", "do_wp_page -> wp_page_copy: a write to a page the other side still maps (per page)",
          "COW fault (copy)", paid_by=CHILD, kinds="copies_mm", per=PER_SHARED_PAGE),
    Stage("cow_fault_reuse", "do_wp_page -> wp_page_reuse: a write to a page no longer shared (per page)",
          "COW fault (reuse)"),
    Stage("page_fault", "handle_mm_fault under the per-VMA lock: an ordinary anonymous fault (per fault)",
          "page fault"),
    Stage("ipi_send", "the waker's cost of sending a reschedule IPI to a halted vCPU (VM exit on the APIC write)",
          "reschedule IPI"),
)
STAGES: dict[str, Stage] = {s.name: s for s in _STAGES}
# The stages inside the parent's fork() call, in kernel order (their medians summed are the call's
# median on an idle machine, less lock waits and interruptions).
FORK_PATH: tuple[str, ...] = tuple(s.name for s in _STAGES if s.in_fork_call)
# The stages whose walk of the image a profile's `warmth` section may price cold.
COLD_STAGES: tuple[str, ...] = tuple(s.name for s in _STAGES if s.cold)
# What a trace slice of each stage it draws says.
TRACE_TEXT: dict[str, str] = {s.name: s.trace for s in _STAGES if s.trace}


@dataclass(frozen=True)
class CallPart:
    """A part of the parent's time inside the creating call, as records and `stage_us` split it."""

    name: str
    column: str | None  # the records column it is timed into (None: the call's rest)
    label: str  # for figures (may hold a line break)


CALL_PARTS: dict[str, CallPart] = {p.name: p for p in (
    CallPart("copy_process_setup", "setup_us", "copy_process setup\n(task struct, stack, creds .. dup_mm)"),
    CallPart("mmap_lock_wait", "mmap_wait_us", "mmap_lock wait"),
    CallPart(DUP_MMAP, "dup_mmap_us", "dup_mmap\n(VMAs + page tables)"),
    CallPart("copy_process_tail", "tail_us", "copy_process tail\n(alloc_pid, tasklist_lock, wake_up_new_task)"),
    CallPart("after_wake_up_new_task", None, "after wake_up_new_task\n(IPI, vfork wait)"),
)}


def stage_label(name: str) -> str:
    """A stage's or call part's label for a table (one line), or the name itself when unknown."""
    part = CALL_PARTS.get(name)
    if part is not None:
        return part.label.replace("\n", " ")
    stage = STAGES.get(name)
    return stage.label if stage is not None else name
