"""Clone flags as copy_process() takes them, and the creation kinds as presets of flags.

One table (`KINDS`) names the kinds, each name spelled once (`FORK` .. `THREAD`: code that means
one particular kind imports its name, code that means the default uses `DEFAULT_KIND`); each `Kind`
carries the attributes the creation path branches on (`copies_mm`, `shares_mm`, `vfork_wait`,
`execs`, `clone_thread`, `new_process`), derived from its flags, and the sets of names
(`NEW_PROCESS`, `COPIES_MM`, `VFORK_WAIT`, `EXECS`) derive from those.
A config's `[workload.child] flags` adds to the kind's preset the flags in `USER_FLAGS`; `check()`
refuses the combinations copy_process() and copy_namespaces() refuse with -EINVAL (kernel/fork.c,
kernel/nsproxy.c, Linux 6.x).
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["FORK", "VFORK", "POSIX_SPAWN", "FORK_EXEC", "THREAD",
           "CLONE_FLAGS", "FLAG_BITS", "USER_FLAGS", "NAMESPACE_FLAGS", "SHARING_FLAGS", "KINDS", "Kind", "NEW_PROCESS",
           "COPIES_MM", "VFORK_WAIT", "EXECS", "DEFAULT_KIND", "kinds_where", "preset", "check", "extra_flags",
           "UNSHARE_FLAGS", "check_unshare", "shares"]

# Flag -> what copy_process() does with it (the copy_* stage it switches between share and copy).
CLONE_FLAGS: dict[str, str] = {
    "CLONE_VM": "copy_mm: share the mm (no dup_mm / dup_mmap)",
    "CLONE_FS": "copy_fs: share fs_struct (root, cwd, umask) instead of copy_fs_struct",
    "CLONE_FILES": "copy_files: share files_struct instead of dup_fd (the fd table copy)",
    "CLONE_SIGHAND": "copy_sighand: share the signal handlers instead of copying them (needs CLONE_VM)",
    "CLONE_THREAD": "copy_signal: join the thread group (shares signal_struct)",
    "CLONE_VFORK": "kernel_clone: wait_for_vfork_done until the child execs or exits",
    "CLONE_SYSVSEM": "copy_semundo: share the SysV semaphore undo list",
    "CLONE_IO": "copy_io: share the io_context",
    "CLONE_NEWNS": "copy_namespaces -> copy_mnt_ns: a new mount namespace (copy_tree of the mounts)",
    "CLONE_NEWPID": "copy_namespaces -> copy_pid_ns: a new pid namespace (alloc_pid at two levels)",
    "CLONE_NEWNET": "copy_namespaces -> copy_net_ns: a new network namespace (setup_net, loopback); "
    "its teardown (cleanup_net) runs later from a workqueue",
    "CLONE_NEWUTS": "copy_namespaces -> copy_utsname: a new UTS namespace",
    "CLONE_NEWIPC": "copy_namespaces -> copy_ipcs: a new IPC namespace (mqueue mount)",
    "CLONE_NEWCGROUP": "copy_namespaces -> copy_cgroup_ns: a new cgroup namespace",
    "CLONE_NEWUSER": "copy_creds -> create_user_ns: a new user namespace",
}

FLAG_BITS = {  # include/uapi/linux/sched.h
    "CLONE_VM": 0x100, "CLONE_FS": 0x200, "CLONE_FILES": 0x400, "CLONE_SIGHAND": 0x800,
    "CLONE_NEWNS": 0x20000, "CLONE_SYSVSEM": 0x40000, "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000, "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000, "CLONE_NEWNET": 0x40000000, "CLONE_IO": 0x80000000,
}

NAMESPACE_FLAGS = ("CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWUTS", "CLONE_NEWIPC",
                   "CLONE_NEWCGROUP", "CLONE_NEWUSER")
SHARING_FLAGS = ("CLONE_FILES", "CLONE_FS", "CLONE_SIGHAND", "CLONE_SYSVSEM", "CLONE_IO")
# What a config may add to a kind's preset (CLONE_VM, CLONE_THREAD, CLONE_VFORK make the kinds).
USER_FLAGS = SHARING_FLAGS + NAMESPACE_FLAGS
# What `[workload.child] unshare` takes (ksys_unshare: unshare_fs, unshare_fd, unshare_nsproxy_namespaces;
# CLONE_SIGHAND/VM/THREAD only succeed for a task that shares nothing, CLONE_IO is refused).
UNSHARE_FLAGS = ("CLONE_FILES", "CLONE_FS") + NAMESPACE_FLAGS


class Kind:
    """A creation kind: the clone flags it passes, whether the child then execs, and the call that
    creates it as tables and figures name it (fork_latency_us is that call's latency).

    The creation path branches on the attributes derived from the flags, never on a kind's name:
    `clone_thread` (CLONE_THREAD: joins the parent's thread group, reaped by itself, joined by the parent),
    `new_process` (its opposite: a new thread group, reaped by wait4), `shares_mm` (CLONE_VM) and
    `copies_mm` (copy_mm -> dup_mm), `vfork_wait` (CLONE_VFORK: wait_for_vfork_done)."""

    __slots__ = ("name", "flags", "execs", "how", "call", "clone_thread", "new_process", "shares_mm", "copies_mm",
                 "vfork_wait")

    def __init__(self, name: str, flags: Iterable[str], execs: bool, how: str, call: str):
        self.name = name
        self.flags = frozenset(flags)
        self.execs = execs
        self.how = how
        self.call = call
        self.clone_thread = "CLONE_THREAD" in self.flags
        self.new_process = not self.clone_thread
        self.shares_mm = "CLONE_VM" in self.flags
        self.copies_mm = not self.shares_mm
        self.vfork_wait = "CLONE_VFORK" in self.flags

    def __repr__(self) -> str:
        return f"Kind({self.name!r})"


# The kinds' names, spelled once: code that means one particular kind (a snapshot is a fork, a
# scenario of vforks) imports its name; code that branches on what a kind does reads its attributes.
FORK, VFORK, POSIX_SPAWN, FORK_EXEC, THREAD = "fork", "vfork", "posix_spawn", "fork_exec", "thread"

_THREAD = ("CLONE_VM", "CLONE_FS", "CLONE_FILES", "CLONE_SIGHAND", "CLONE_THREAD", "CLONE_SYSVSEM")

# The kinds: what glibc passes to clone (fork: SIGCHLD only; posix_spawn: CLONE_VM|CLONE_VFORK;
# pthread_create: CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|...).
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind(FORK, (), False, "fork(): clone(SIGCHLD)", "fork()"),
    Kind(VFORK, ("CLONE_VM", "CLONE_VFORK"), False, "vfork(): CLONE_VM|CLONE_VFORK", "vfork()"),
    Kind(POSIX_SPAWN, ("CLONE_VM", "CLONE_VFORK"), True, "glibc posix_spawn: CLONE_VM|CLONE_VFORK, then execve",
         "posix_spawn()"),
    Kind(FORK_EXEC, (), True, "fork() then execve in the child", "fork() (+execve)"),
    Kind(THREAD, _THREAD, False, "pthread_create: CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|"
         "CLONE_SYSVSEM (and TLS/tid flags)", "pthread_create() (clone(CLONE_THREAD))"),
)}

# The first kind is the default (a config without `clone`): plain fork().
DEFAULT_KIND: str = next(iter(KINDS))
NEW_PROCESS = frozenset(n for n, k in KINDS.items() if k.new_process)
COPIES_MM = frozenset(n for n, k in KINDS.items() if k.copies_mm)  # dup_mm
VFORK_WAIT = frozenset(n for n, k in KINDS.items() if k.vfork_wait)  # wait_for_vfork_done
EXECS = frozenset(n for n, k in KINDS.items() if k.execs)


def kinds_where(**attrs: bool) -> tuple[str, ...]:
    """The kinds' names whose attributes have these values, in table order, e.g.
    kinds_where(shares_mm=True) -> ('vfork', 'posix_spawn', 'thread')."""
    return tuple(n for n, k in KINDS.items() if all(getattr(k, a) == v for a, v in attrs.items()))


def preset(kind: str) -> frozenset[str]:
    return KINDS[kind].flags


def extra_flags(kind: str, flags: Iterable[str]) -> frozenset[str]:
    """The flags beyond the kind's preset (what changes the kind's measured costs)."""
    return frozenset(flags) - KINDS[kind].flags


def check(kind: str, flags: Iterable[str]) -> str | None:
    """Why copy_process() would refuse this kind with these flags (-EINVAL), or None."""
    unknown = sorted(set(flags) - set(USER_FLAGS))
    if unknown:
        return f"unknown clone flag {unknown[0]!r} (valid: {', '.join(USER_FLAGS)})"
    f = KINDS[kind].flags | frozenset(flags)
    rules = (
        ({"CLONE_NEWNS", "CLONE_FS"}, "CLONE_NEWNS cannot share CLONE_FS (a thread shares it)"),
        ({"CLONE_NEWUSER", "CLONE_FS"}, "CLONE_NEWUSER cannot share CLONE_FS (a thread shares it)"),
        ({"CLONE_THREAD", "CLONE_NEWUSER"}, "a thread cannot take CLONE_NEWUSER"),
        ({"CLONE_THREAD", "CLONE_NEWPID"}, "a thread cannot take CLONE_NEWPID"),
        ({"CLONE_NEWIPC", "CLONE_SYSVSEM"}, "CLONE_NEWIPC cannot share CLONE_SYSVSEM (a thread shares it)"),
    )
    for both, why in rules:
        if both <= f:
            return f"{why}: copy_process refuses it with EINVAL"
    if "CLONE_SIGHAND" in f and "CLONE_VM" not in f:
        shared = ", ".join(f'"{n}"' for n in kinds_where(shares_mm=True))
        return (f"CLONE_SIGHAND needs CLONE_VM (copy_process refuses it with EINVAL): use it with clone = one "
                f"of {shared}")
    return None


def shares(kind: str, flags: Iterable[str], what: str) -> bool:
    """Does a child of this kind, created with these extra flags, share `what` (CLONE_FILES, CLONE_FS)
    with its parent? (unshare_fd / unshare_fs copy only a shared table; alone, they do nothing.)"""
    return what in KINDS[kind].flags or what in frozenset(flags)


def check_unshare(kind: str, flags: Iterable[str]) -> str | None:
    """Why ksys_unshare would refuse these flags in a child of this kind (-EINVAL), or None."""
    unknown = sorted(set(flags) - set(UNSHARE_FLAGS))
    if unknown:
        return f"unknown unshare flag {unknown[0]!r} (valid: {', '.join(UNSHARE_FLAGS)})"
    if "CLONE_NEWUSER" in flags and KINDS[kind].clone_thread:
        # unshare(CLONE_NEWUSER) implies CLONE_THREAD: check_unshare_flags refuses a non-empty thread group
        return "a thread cannot unshare CLONE_NEWUSER (it implies CLONE_THREAD): ksys_unshare refuses it with EINVAL"
    return None
