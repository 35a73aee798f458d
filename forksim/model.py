"""The config resolved once into frozen model parameters.

`ModelParams.of(exp, profile)` turns an experiment and its (what-if applied) profile into what the
model reads while it runs: the scheduler's settings (`SchedulerSpec`: the profile's costs with the
config's [machine] overrides on top, the base slice scaled to the CPU count, EEVDF and balancing),
what a creation copies beyond the address space (`Copies`: fds, flags, live children), the child's
program, the parent's image shape and the arrivals file (read here, once per experiment). Nothing in
it draws a random number: every replication binds the same parameters to its own random stream
(`SchedulerSpec.bind(costs)`) in `forksim.simulation.Simulation`. (As a Ciw network is built once
from its parameters and each run gets its own seed.)
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .draws import values
from .host_speed import SpeedEpisodes
from .kernel.copies import Copies
from .rcu import RcuSpec
from .profile import HostSpeed, IdleWakeCurve, ImageShape, IpiSendCurve, Profile, StageCost
from .profile_terms import DEFAULT_TIMER_SLACK_US
from .sched.balance import BalanceParams
from .sched.idlest import NO_IDLE_KEYS
from .sched.params import SchedulerParams
from .workloads.arrivals import FILE_FREE, load_arrivals

if TYPE_CHECKING:
    from .config import BackgroundSection, ChildSection, Experiment, WorkloadSection
    from .kernel.costs import Costs

__all__ = ["ModelParams", "SchedulerSpec", "BalanceSpec", "image_shape", "scaled_slice_us", "slice_factor"]


def image_shape(exp: "Experiment", profile: Profile | None = None) -> ImageShape:
    """The parent's image ([workload.image]) as the cost model sees it, its physical layout (scatter, spread) the
    config's, else `profile`'s fresh-image defaults (`ImageSection.scatter_used`, `spread_used`)."""
    img = exp.workload.image
    scatter, _origin = img.scatter_used(profile)
    spread, _origin = img.spread_used(profile)
    return ImageShape.from_rss(img.rss, img.vmas, img.anon_vma_count, img.thp, img.threads, scatter, spread)


def slice_factor(cpus: int) -> int:
    """kernel/sched/fair.c get_update_sysctl_factor (SCHED_TUNABLESCALING_LOG, the default): the boot-time
    scale of sysctl_sched_base_slice, 1 + ilog2(min(online CPUs, 8))."""
    return 1 + (min(max(cpus, 1), 8).bit_length() - 1)


def scaled_slice_us(profile: Profile, cpus: int) -> float:
    """The profile's base slice, measured (or derived) on its host's CPU count, carried to a machine of
    `cpus` CPUs the way the kernel scales it at boot; unscaled when the profile's CPU count is unknown."""
    host = profile.fingerprint()
    measured_on = (host.cpus if host and host.cpus else None) or profile.provenance.get("cpus") or \
        (profile.provenance.get("borrowed_from") or {}).get("cpus")
    base = profile.scheduler.slice.fixed_us
    if not measured_on:
        return base
    return base * slice_factor(cpus) / slice_factor(int(measured_on))


@dataclass(frozen=True)
class BalanceSpec:
    """Load balancing for the simulated machine: one MC domain spanning its CPUs (sd_init:
    balance_interval = the domain's weight in ms, busy_factor 16, imbalance_pct 117,
    cache_nice_tries 1), the profile's migration cost and vCPU packing."""

    interval_us: float
    migration_cost_us: float
    idle_pull: float
    wake_prev: float
    fork_local_no_idle: tuple[float, ...] | None = None  # in forksim.sched.idlest.NO_IDLE_KEYS order
    tick_pass_delay_us: float = 0.0

    @classmethod
    def of(cls, exp: "Experiment", profile: Profile) -> "BalanceSpec":
        b = profile.balancing
        wake_prev = profile.placement.get("wake_prev_when_busy")
        no_idle = b.fork_local_no_idle
        return cls(interval_us=1000.0 * exp.machine.cpus, migration_cost_us=b.migration_cost_us,
                   idle_pull=b.idle_pull.value, wake_prev=wake_prev.value if wake_prev else 0.0,
                   fork_local_no_idle=tuple(no_idle[k].value for k in NO_IDLE_KEYS)
                   if no_idle is not None else None, tick_pass_delay_us=b.tick_pass_delay_us)

    def bind(self, costs: "Costs") -> BalanceParams:
        return BalanceParams(interval_us=self.interval_us, migration_cost_us=self.migration_cost_us,
                             idle_pull=self.idle_pull, wake_prev=self.wake_prev,
                             fork_local_no_idle=self.fork_local_no_idle, uniform=costs.uniform,
                             tick_pass_delay_us=self.tick_pass_delay_us)


# A scheduler cost: a fixed value (a [machine] override) or the profile's cost, sampled per use.
Cost = float | StageCost


@dataclass(frozen=True)
class SchedulerSpec:
    """The scheduler's settings for one experiment (microseconds): the profile's, with the config's
    [machine] overrides on top. `bind(costs)` makes the per-replication `SchedulerParams`."""

    tick_us: float
    slice_us: float
    wakeup_granularity_us: float
    wakeup_preemption: bool
    context_switch: Cost
    idle_wake: Cost
    idle_wake_curve: IdleWakeCurve | None  # None: idle_wake whatever the idle time (or overridden)
    ipi_send: StageCost | None  # None: no IPI cost (machine.idle_wake overrides the halt exit)
    ipi_send_curve: IpiSendCurve | None  # None: ipi_send whatever the wakee CPU's idle time
    migration: Cost
    eevdf: bool
    balance: BalanceSpec | None
    interruption_rate_per_s: float  # interruptions of a running CPU; 0: none
    interruption: StageCost | None  # how long one lasts
    rcu: RcuSpec | None  # RCU callbacks of exited tasks (profile.rcu_callbacks); None: none
    timer_slack_us: float  # a user task's timer sleep ends this much late (profile.scheduler.timer_slack)
    host_speed: HostSpeed | None = None  # the host's slow episodes (profile.host_speed, unless machine.host_speed off)

    @classmethod
    def of(cls, exp: "Experiment", profile: Profile) -> "SchedulerSpec":
        sched, m, irq = profile.scheduler, exp.machine, profile.interruptions

        def cost(override: float | None, measured: StageCost) -> Cost:
            return override if override is not None else measured

        has_irq = irq is not None and irq.rate_per_s > 0.0
        tick_us = m.tick if m.tick is not None else sched.tick.fixed_us
        rc = profile.rcu_callbacks
        return cls(
            tick_us=tick_us,
            slice_us=m.slice if m.slice is not None else scaled_slice_us(profile, m.cpus),
            wakeup_granularity_us=m.slice if m.slice is not None else sched.wakeup_granularity.fixed_us,
            wakeup_preemption=m.wakeup_preemption,
            context_switch=cost(m.context_switch, sched.context_switch),
            idle_wake=cost(m.idle_wake, sched.idle_wake),
            idle_wake_curve=sched.idle_wake_curve if m.idle_wake is None else None,
            ipi_send=profile.stages["ipi_send"] if m.idle_wake is None else None,
            ipi_send_curve=sched.ipi_send_curve if m.idle_wake is None else None,
            migration=cost(m.migration, sched.migration),
            eevdf=profile.balancing is not None and profile.balancing.eevdf,
            balance=BalanceSpec.of(exp, profile) if profile.balancing is not None else None,
            interruption_rate_per_s=irq.rate_per_s if has_irq else 0.0,
            interruption=irq.duration if has_irq else None,
            rcu=RcuSpec(rc.reap_us, rc.exit_mm_us, rc.grace_us, rc.softirq_cap_us or math.inf,
                        rc.gp_kthread_us or 0.0, (rc.fqs_jiffies or 1) * tick_us, rc.vfree_per_stack_us or 0.0)
            if rc is not None else None,
            timer_slack_us=sched.timer_slack.fixed_us if sched.timer_slack is not None else DEFAULT_TIMER_SLACK_US,
            host_speed=profile.host_speed if m.host_speed and profile.host_speed is not None
            and profile.host_speed.slow_share > 0.0 else None,
        )

    def bind(self, costs: "Costs") -> SchedulerParams:
        """The scheduler's parameters on one replication's stream (samplers draw lazily, per use)."""

        def sampler(c: Cost, name: str) -> Callable[[], float]:
            if isinstance(c, StageCost):
                return costs.sampler(c, name)
            return lambda: c

        ipi = self.ipi_send
        return SchedulerParams(
            tick_us=self.tick_us,
            slice_us=self.slice_us,
            wakeup_granularity_us=self.wakeup_granularity_us,
            wakeup_preemption=self.wakeup_preemption,
            context_switch=sampler(self.context_switch, "context_switch"),
            idle_wake=sampler(self.idle_wake, "idle_wake"),
            idle_wake_scale=self.idle_wake_curve.scaler() if self.idle_wake_curve is not None else None,
            idle_wake_at=self._idle_wake_at(costs),
            ipi_send=costs.sampler(ipi, "ipi_send") if ipi is not None else (lambda: 0.0),
            ipi_send_by_idle=self._ipi_send_by_idle(costs),
            migration=sampler(self.migration, "migration"),
            eevdf=self.eevdf,
            balance=self.balance.bind(costs) if self.balance is not None else None,
            rcu=self.rcu,
            timer_slack_us=self.timer_slack_us,
            host_speed=SpeedEpisodes(self.host_speed, costs) if self.host_speed is not None else None,
            **self._interruptions(costs),
        )

    def _idle_wake_at(self, costs: "Costs") -> Callable[[float], float] | None:
        """A wake-up latency after the CPU's idle time drawn from one of the two measured idle times' latencies around
        it (idle_wake's median times the curve's scale and shape there), the upper one's with the share
        IdleWakeCurve.around gives; None where the profile has no shapes by idle time."""
        curve = self.idle_wake_curve
        if curve is None or curve.residuals is None or not isinstance(self.idle_wake, StageCost):
            return None
        around = curve.around()
        draws = [costs.sampler(StageCost(fixed_us=self.idle_wake.fixed_us * s, residual=r, source="idle_wake_curve"),
                               f"idle_wake@{idle:g}us")
                 for idle, s, r in zip(curve.idle_us, curve.scale, curve.residuals)]
        upper = values(costs.stream("idle_wake_between").random).__next__  # which of the two, where between

        def at(idle_us: float) -> float:
            lo, hi, share = around(idle_us)
            return draws[hi if share and upper() < share else lo]()

        return at

    def _ipi_send_by_idle(self, costs: "Costs") -> Callable[[float], float] | None:
        curve = self.ipi_send_curve
        if curve is None:
            return None
        draws = [costs.sampler(c, f"ipi_send@{idle:g}us") for idle, c in zip(curve.idle_us, curve.costs)]
        cuts = curve.cuts()  # curve.nearest()'s bisection, in the lambda itself (a call fewer at each wake-up)
        return lambda idle_us: draws[bisect_right(cuts, idle_us)]()

    def _interruptions(self, costs: "Costs") -> dict[str, Any]:
        if self.interruption is None:
            # RCU batches ride the interruption path (CPU._interruptions): a stream that never fires
            return {"interruption_gap": lambda: math.inf} if self.rcu is not None else {}
        mean_gap_us = 1e6 / self.interruption_rate_per_s
        rng = costs.stream("interruption_gap")
        # (a C-level iterator's __next__: the same draws in the same order as Draws, without a Python frame per draw)
        return {"interruption_gap": values(lambda n: rng.exponential(mean_gap_us, n)).__next__,
                "interruption": costs.sampler(self.interruption, "interruption")}


@dataclass(frozen=True)
class ModelParams:
    """An experiment resolved once for its replications: the profile, the scheduler, the machine's
    size, what a creation copies, the parent's image shape and the arrivals (times in us, read-only)."""

    experiment: "Experiment"
    profile: Profile
    scheduler: SchedulerSpec
    copies: Copies
    shape: ImageShape
    arrivals: np.ndarray | None  # a file's arrival times (us); None: a generated stream or none

    @classmethod
    def of(cls, exp: "Experiment", profile: Profile) -> "ModelParams":
        arrivals = None
        if exp.workload.kind in ("open", "server") and exp.workload.arrivals not in FILE_FREE:
            arrivals = load_arrivals(exp.workload.arrivals)
            arrivals.flags.writeable = False
        return cls(exp, profile, SchedulerSpec.of(exp, profile), Copies.of(exp, profile), image_shape(exp, profile),
                   arrivals)

    @property
    def cpus(self) -> int:
        return self.experiment.machine.cpus

    @property
    def workload(self) -> "WorkloadSection":
        return self.experiment.workload

    @property
    def child(self) -> "ChildSection":
        return self.experiment.workload.child

    @property
    def background(self) -> "BackgroundSection":
        return self.experiment.background

    @property
    def warmup(self) -> float:
        return self.experiment.experiment.warmup

    @property
    def end(self) -> float:
        """The end of the measured window (us): warm-up + duration."""
        return self.experiment.experiment.warmup + self.experiment.experiment.duration

    @property
    def max_creations(self) -> int | None:
        return self.experiment.experiment.max_creations
