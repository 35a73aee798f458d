"""Network namespaces: copy_net_ns's rtnl section, and cleanup_net's batched teardown on the netns workqueue.

A dying namespace's last put (the child's exit: exit_task_namespaces -> put_net -> __put_net) adds it to
cleanup_list and queues net_cleanup_work on netns_wq; one work item, run by a kernel worker, takes every
namespace queued so far (cleanup_net: llist_del_all) and tears them down as a batch, and runs again at
once if more were queued meanwhile (net/core/net_namespace.c). Its rtnl section, the loopbacks'
unregister chain and a synchronize_net, grows with the batch; a clone(CLONE_NEWNET) needs rtnl_mutex
for its own loopback (setup_net -> loopback_net_init -> register_netdev) and sleeps until the batch lets
go. The costs are the profile's `netns_cleanup` section (forksim.calibration.netns traces them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generator

import simpy

from ..locks import LockStats, Mutex

if TYPE_CHECKING:
    from ..machine import Machine, Task
    from ..profile_sections import NetnsCleanup

__all__ = ["Netns"]

Proc = Generator[simpy.Event, object, object]


class Netns:
    """rtnl_mutex and the cleanup_net worker of one simulated machine."""

    def __init__(self, machine: "Machine", spec: "NetnsCleanup", sample, stats: LockStats | None = None):
        self.machine = machine
        self.env = machine.env
        self.spec = spec
        self._sample = sample  # (median us) -> a draw with the creation's added-term spread
        self.rtnl = Mutex(machine.env, stats or LockStats("rtnl_mutex"))
        self.dying = 0  # namespaces on cleanup_list
        self.queued = False  # net_cleanup_work pending or running
        self.batches: list[int] = []  # each cleanup_net's batch size (namespaces)

    @property
    def setup_hold_us(self) -> float:
        """copy_net_ns's time under rtnl_lock (a part of the clone flag's measured call_us)."""
        return self.spec.rtnl_setup_us

    def copy_net_ns(self, task: "Task") -> Proc:
        """setup_net -> loopback_net_init -> register_netdev: rtnl_lock, the NETDEV_REGISTER chain, rtnl_unlock.
        Returns the wait for the mutex (us)."""
        wait = yield from self.rtnl.lock(task)
        yield task.run(self._sample(self.spec.rtnl_setup_us))
        self.rtnl.release()
        return wait

    def put_net(self) -> None:
        """__put_net: the namespace joins cleanup_list; net_cleanup_work is queued unless it already is."""
        self.dying += 1
        if not self.queued:
            self.queued = True
            self.env.process(self._worker())

    def _worker(self) -> Proc:
        task, first_run = self.machine.start_task("kworker/u:netns")
        yield first_run
        while self.dying:  # a put while the item ran queued it again: it runs again at once
            yield from self._cleanup_net(task)
        self.queued = False
        task.exit()

    def _cleanup_net(self, task: "Task") -> Proc:
        """One work item: every namespace queued so far, as one batch (cleanup_net -> ops_undo_list)."""
        s, draw = self.spec, self._sample
        n, self.dying = self.dying, 0
        self.batches.append(n)
        if s.pre_us > 0.0:
            yield task.sleep_for(draw(s.pre_us))  # synchronize_rcu before the exit methods
        yield from self.rtnl.lock(task)  # rtnl_lock: exit_rtnl methods, unregister_netdevice_many
        chain = draw(s.rtnl_fixed_us + s.rtnl_per_netns_us * n)
        yield task.run(chain, preemptible=True)
        if s.rtnl_grace_us > 0.0:
            yield task.sleep_for(draw(s.rtnl_grace_us))  # synchronize_net, rtnl still held
        self.rtnl.release()
        rest = s.cpu_fixed_us + s.cpu_per_netns_us * n - (s.rtnl_fixed_us + s.rtnl_per_netns_us * n)
        if rest > 0.0:
            yield task.run(draw(rest), preemptible=True)  # the other exit methods, ops_free
        if s.post_us > 0.0:
            yield task.sleep_for(draw(s.post_us))  # rcu_barrier, then the frees
