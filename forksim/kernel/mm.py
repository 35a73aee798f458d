"""Address spaces (struct mm_struct) and processes as the creation path sees them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from ..locks import LockStats, MmapLock
from ..profile import ImageShape

if TYPE_CHECKING:
    from ..machine import Task

__all__ = ["MM", "Process", "wrote"]


class MM:
    """An mm_struct: its image shape (what dup_mmap and exit_mmap walk) and its mmap_lock."""

    __slots__ = ("shape", "mmap_lock", "users", "walked_at", "walked_cpu", "walked_mark", "walk_residual",
                 "written", "created_at", "created_cpu", "created_mark")

    def __init__(self, env: simpy.Environment, shape: ImageShape, mmap_stats: LockStats):
        self.shape = shape
        self.mmap_lock = MmapLock(env, mmap_stats)
        self.users = 1  # processes mapping these pages (COW: a copy while the other side still maps)
        # 4 KiB pages written since the last fork copied this mm: their PTEs are writable, and the next fork
        # write-protects each (copy_present_pte). A run starts in the state of a process that forks regularly,
        # its image forked just before: none (a first fork after touching the image would find all of them)
        self.written = 0
        # the last walk of its image (kernel/warmth.py): when (us), on which CPU, and that CPU's
        # walk-byte total then, and the coldness that walk left; None: not walked in this run
        self.walked_at: float | None = None
        self.walked_cpu = -1
        self.walked_mark = 0.0
        self.walk_residual = 0.0
        # the last creation that copied no image from it (a thread, vfork, posix_spawn): when, on which CPU,
        # and that CPU's walk-byte total then; None: none in this run (kernel/warmth.py)
        self.created_at: float | None = None
        self.created_cpu = -1
        self.created_mark = 0.0


class Process:
    """A thread group: its main task, its mm, and its children awaiting wait()."""

    __slots__ = ("task", "mm", "parent", "zombies", "waiter", "vfork_waiter", "inherited", "exited", "tid_cleared",
                 "threads", "cold_rest_us", "cold_start_us")

    def __init__(self, task: "Task", mm: MM | None, parent: "Process | None" = None):
        self.task = task
        self.mm = mm
        self.parent = parent
        self.zombies: list["Process"] = []  # exited children not yet reaped
        self.waiter: "Task | None" = None  # a task sleeping in wait()/join on this process's children
        self.vfork_waiter: "Task | None" = None  # the parent sleeping in wait_for_vfork_done
        self.inherited = False  # its mm is a fork copy still mapping the parent's pages
        self.exited = False
        self.tid_cleared = False  # a thread: mm_release cleared its tid and woke pthread_join
        self.threads: list["Task"] = [task]
        self.cold_rest_us = 0.0  # a creation that copies no image: its cold extra after the call (do_exit charges it)
        # ... and a vfork child's share of the call's, after the placement (its ret_from_fork charges it)
        self.cold_start_us = 0.0


def wrote(mm: MM, pages: int) -> None:
    """The process wrote `pages` 4 KiB pages of its image (write faults: their PTEs writable again); at most all."""
    mm.written = min(mm.shape.ptes, mm.written + pages)
