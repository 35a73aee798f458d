"""What copy_process copies beyond the address space, for one kind, image and set of flags.

The profile's measured stages hold a plain fork() of a parent with 3 open fds and no other child;
`Copies` says what a creation adds to (or saves from) those stages:

- copy_files -> dup_fd: per open fd beyond those 3, unless CLONE_FILES shares the table; the child's
  exit_files -> close_files closes them again (a shared table is only dropped);
- each flag beyond the kind's preset: its measured change of the call (copy_fs, copy_sighand,
  copy_semundo, copy_io sharing instead of copying; copy_namespaces creating a namespace), of the
  child's exit (exit_task_namespaces, free_nsproxy), and deferred work (cleanup_net); with the profile's
  `netns_cleanup`, a network namespace's rtnl section and batched teardown are kernel/netns.py's
  (`netns_clone`, `netns_unshare`: the call's median less the rtnl section, no deferred_us);
- the parent's other live children: the costs that grow with them, where the measurement put them;
  do_wait's walk of the children list only for a parent that reaps with waitpid(-1) (`wait = "any"`):
  __do_wait sends a waitpid(pid) to do_wait_pid, which looks the one child up without the walk.

The child's unshare(2) (`[workload.child] unshare`), a stage of its own after ret_from_fork:
ksys_unshare -> unshare_nsproxy_namespaces builds each namespace (create_new_namespaces, as clone
does); unshare_fd copies the fd table (dup_fd, per fd) and unshare_fs the fs_struct only where the
child shares them with its parent, else they return at once. Its namespaces are torn down at the
child's exit (and a network namespace's cleanup_net later on a worker), like a clone flag's.

Every term is zero for the default workload (fds = 3, no flag, no live child), and nothing is
drawn from the random stream then, so default results are unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..profile import FD_BASE, Profile
from .flags import KINDS, NAMESPACE_FLAGS, extra_flags, shares

if TYPE_CHECKING:
    from ..config import Experiment

__all__ = ["Copies"]


class Copies:
    """Medians (us) a creation of `kind` adds to the stages of the profile's plain fork()."""

    __slots__ = ("setup_us", "tail_us", "exit_us", "exit_notify_us", "wait_us", "deferred_us", "sigma",
                 "flags", "saved_us", "link_us", "unshare_us", "netns_clone", "netns_unshare", "live_children")

    def __init__(self, profile: Profile, kind: str, flags: list[str] | tuple[str, ...] = (), fds: int = FD_BASE,
                 live_children: int = 0, wait: str = "pid", unshare: list[str] | tuple[str, ...] = ()):
        extra = extra_flags(kind, flags)
        self.flags = extra
        all_flags = KINDS[kind].flags | extra
        files = profile.files_cost()
        per_fd = max(0, fds - FD_BASE) if "CLONE_FILES" not in all_flags else 0
        setup = per_fd * files.dup_fd_per_fd_us      # copy_files -> dup_fd
        exit_ = per_fd * files.close_files_per_fd_us  # exit_files -> close_files
        saved = tail = deferred = 0.0
        sigmas = [files.sigma if per_fd else 0.0]
        # a network namespace with the profile's netns_cleanup: its rtnl section and its teardown are
        # kernel/netns.py's (taken out of the call's median here; the worker's CPU replaces deferred_us)
        netns = profile.netns_cleanup
        self.netns_clone = netns is not None and "CLONE_NEWNET" in extra
        self.netns_unshare = netns is not None and "CLONE_NEWNET" in unshare
        for flag in sorted(extra):
            cost = profile.flag_cost(flag)
            sigmas.append(cost.sigma)
            if flag == "CLONE_NEWNET" and netns is not None:
                tail += max(0.0, cost.call_us - netns.rtnl_setup_us)  # copy_net_ns less its rtnl section
                exit_ += cost.exit_us
                continue
            if flag in NAMESPACE_FLAGS:
                tail += cost.call_us  # copy_namespaces (copy_creds for CLONE_NEWUSER), before alloc_pid
            elif cost.call_us < 0.0:
                saved -= cost.call_us  # a shared copy_* the plain fork()'s setup paid
            else:
                setup += cost.call_us
            exit_ += cost.exit_us
            deferred += cost.deferred_us
        unshare_us = 0.0
        for flag in unshare:  # ksys_unshare, in the child
            if flag in ("CLONE_FILES", "CLONE_FS") and not shares(kind, flags, flag):
                continue  # unshare_fd / unshare_fs: nothing shared, nothing to copy
            cost = profile.unshare_cost(flag)
            sigmas.append(cost.sigma)
            netns_here = flag == "CLONE_NEWNET" and netns is not None
            unshare_us += max(0.0, cost.call_us - (netns.rtnl_setup_us if netns_here else 0.0))
            exit_ += cost.exit_us
            deferred += 0.0 if netns_here else cost.deferred_us
            if flag == "CLONE_FILES":  # unshare_fd -> dup_fd: the child's own table, closed at its exit
                own = max(0, fds - FD_BASE)
                unshare_us += own * files.dup_fd_per_fd_us
                exit_ += own * files.close_files_per_fd_us
                sigmas.append(files.sigma if own else 0.0)
        self.unshare_us = unshare_us
        kids = profile.children_cost()
        self.live_children = live_children  # they share the parent's anon folios (kernel/damon.py's walks)
        self.setup_us = setup
        self.saved_us = saved
        self.tail_us = max(0.0, tail)
        self.link_us = live_children * kids.fork_per_child_us
        self.exit_us = exit_
        self.exit_notify_us = live_children * kids.exit_per_child_us
        # do_wait -> __do_wait: waitpid(-1) walks every child (do_wait_thread); a pid goes to do_wait_pid
        self.wait_us = live_children * kids.wait_per_child_us if wait == "any" else 0.0
        # the walk's footprint cools the parent's next fork (copy_process's working set out of the caches): a
        # parent that reaps with waitpid(-1) forks after a walk each time (its previous child's reap)
        if wait == "any":
            self.setup_us += live_children * kids.fork_after_walk_per_child_us
        self.deferred_us = deferred
        sigmas.append(kids.sigma if live_children else 0.0)
        self.sigma = max(sigmas)  # one lognormal spread for the added terms: the widest involved

    @classmethod
    def of(cls, exp: "Experiment", profile: Profile) -> "Copies":
        wl = exp.workload
        return cls(profile, wl.child.clone, wl.child.flags, wl.image.fds, wl.live_children, wl.wait,
                   wl.child.unshare)

    @property
    def zero(self) -> bool:
        return not (self.setup_us or self.saved_us or self.tail_us or self.link_us or self.exit_us or self.exit_notify_us
                    or self.wait_us or self.deferred_us or self.unshare_us or self.netns_clone or self.netns_unshare)
