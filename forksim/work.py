"""How much work a run is, before running it: the creations and events an experiment will take,
estimated from the stage table and the profile, and the check that refuses a run that would take
hours or an offered load far beyond the capacity bound."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import Experiment
from .errors import ConfigError, UnstableError
from .kernel.costs import EMPTY_IMAGE
from .kernel.flags import KINDS
from .kernel.stages import CHILD, PARENT, PER_CREATION, PER_SHARED_PAGE, STAGES
from .model import image_shape, scaled_slice_us
from .profile import Profile
from .workloads.arrivals import load_arrivals

__all__ = ["WorkEstimate", "estimate_work", "check_work", "MAX_EVENTS", "EVENTS_PER_SECOND", "EVENTS_PER_CREATION"]


# Deliberately high: `forksim bench` measures 150-260k events per second on one core and 11-17
# events a creation (2026-11-28), where this estimate assumes 100k/s and 25. MAX_EVENTS is ~15
# minutes of one core by the estimate, which runs 2-5x above the events and time a run really takes.
MAX_EVENTS = 100_000_000
EVENTS_PER_SECOND = 100_000
EVENTS_PER_CREATION = 25
_FAR_BEYOND = 10.0  # an offered rate this many times the capacity bound is refused before running


@dataclass(frozen=True)
class WorkEstimate:
    """What a run would simulate, estimated before running it (upper estimates: stage costs are taken
    at half their fitted medians, so creations are rather over- than under-counted)."""

    creations: float  # per replication
    events: float  # all replications together
    capacity_per_s: float  # an upper bound on the creations (server: requests) per second served
    creation_floor_us: float  # a lower bound on the parent's time per creation
    parts: dict[str, float]  # events per replication by cause: creations, arrivals, faults, preemption

    @property
    def wall_s(self) -> float:
        """Rough single-core wall time."""
        return self.events / EVENTS_PER_SECOND


def _mean_creation_us(exp: Experiment, profile: Profile) -> tuple[float, float]:
    """The mean CPU time (us) one creation costs its parent and its child: the stages each pays for
    the kind (kernel/stages.py: paid_by, kinds, per), the child's programme, two context switches."""
    child, kind = exp.workload.child, KINDS[exp.workload.child.clone]
    shape = image_shape(exp, profile)
    count = {PER_CREATION: 1.0, PER_SHARED_PAGE: child.cow_write_fraction * (shape.ptes + 512 * shape.pmds)}
    paid = {PARENT: 0.0, CHILD: child.lifetime + (child.exec_lifetime if kind.execs else 0.0)}
    for name, stage in STAGES.items():
        if stage.paid_by and (not stage.kinds or getattr(kind, stage.kinds)):
            cost = profile.stages[name]
            paid[stage.paid_by] += (count[stage.per] * cost.residual.mean()
                                    * cost.median_us(shape if stage.walks_image else EMPTY_IMAGE))
    sched = profile.scheduler
    childw = paid[CHILD] + 2 * sched.context_switch.fixed_us * sched.context_switch.residual.mean()
    wl = exp.workload
    if wl.parents * wl.image.threads + exp.background.cpu_hogs < exp.machine.cpus:
        childw += sched.idle_wake.fixed_us * sched.idle_wake.residual.mean()  # the child on a halted CPU
    return paid[PARENT], childw


def estimate_work(exp: Experiment, profile: Profile) -> WorkEstimate:
    """Estimate what `exp` would simulate: creations ~ capacity x time for a closed workload (capacity
    from a lower bound of one creation's cost), the offered rate x time for an open one (at most what
    the capacity serves plus `max_queue`), plus the other threads' faults and preemptions."""
    wl, img = exp.workload, exp.workload.image
    parent, childw = _mean_creation_us(exp, profile)
    # Mean costs; half of them as the floor (the estimate errs towards more work, not less).
    floor = max(0.5 * parent, 0.5)
    cpu = max(0.5 * (parent + childw), 0.5) + wl.parent_work
    # A closed parent forks, then waits to reap: its loop takes at least the child's life too.
    cycle = cpu + wl.think_time
    per_us = min(wl.parents / cycle, exp.machine.cpus / cpu)  # creations per us, upper bound
    total_us = exp.experiment.warmup + exp.experiment.duration
    limit = exp.experiment.max_creations

    if limit and wl.kind != "server":  # the run stops after `limit` creations
        served_per_us = per_us
        if wl.kind == "open" and wl.rate is not None and wl.arrivals in ("poisson", "deterministic"):
            served_per_us = min(per_us, wl.rate / 1e6)
        total_us = min(total_us, exp.experiment.warmup + limit / served_per_us)
    arrivals = 0.0
    if wl.kind == "closed":
        creations = per_us * total_us
    else:
        if wl.arrivals not in ("poisson", "deterministic", "bursty"):
            times = load_arrivals(exp.workload.arrivals)
            offered = float(np.searchsorted(times, total_us, side="right"))
        elif wl.arrivals == "bursty":
            offered = wl.bursts.size * total_us / wl.bursts.interval
        else:
            offered = wl.rate * total_us / 1e6
        if wl.kind == "server":
            streams = wl.parents
            per_us = min(wl.parents / wl.server.service, exp.machine.cpus / wl.server.service)
            served = min(offered * streams, per_us * total_us)
            arrivals = min(offered * streams, served + wl.max_queue * streams)
            creations = total_us / wl.server.interval * wl.parents
            arrivals += 2 * served  # a request's service: a run and a wake-up
        else:
            served = min(offered, per_us * total_us)
            arrivals = min(offered, served + wl.max_queue * wl.parents)
            creations = served
    if limit:
        creations = min(creations, float(limit))
    faults = wl.parents * max(img.threads - 1, 0) * img.fault_rate * total_us / 1e6 * 3
    preemption = 0.0
    if exp.background.cpu_hogs > 0 or wl.parents * img.threads > exp.machine.cpus:
        tick = exp.machine.tick if exp.machine.tick is not None else profile.scheduler.tick.fixed_us
        slc = exp.machine.slice if exp.machine.slice is not None else scaled_slice_us(profile, exp.machine.cpus)
        preemption = 2 * exp.machine.cpus * total_us / max(min(tick, slc), 1e-3)
    parts = {"creations": creations * EVENTS_PER_CREATION, "arrivals": arrivals, "faults": faults,
             "preemption": preemption}
    events = exp.experiment.replications * sum(parts.values())
    return WorkEstimate(creations, events, per_us * 1e6, floor, parts)


def _human_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def check_work(exp: Experiment, profile: Profile, *, max_events: float = MAX_EVENTS) -> WorkEstimate:
    """Refuse, before running, an experiment that would simulate far more than `max_events` (hours of
    computing) or an open workload offered far more than the machine can serve. `run_experiment` and
    `run_replication` (so `forksim run`, `sweep`, `plan` and `predict`) all go through here."""
    est = estimate_work(exp, profile)
    wl, reps = exp.workload, exp.experiment.replications
    if wl.kind in ("open", "server") and wl.rate is not None and wl.arrivals in ("poisson", "deterministic"):
        rate = wl.rate * (wl.parents if wl.kind == "server" else 1)
        if rate > _FAR_BEYOND * est.capacity_per_s:
            who = (f"{wl.parents} server(s) at workload.server.service = {wl.server.service:g} us per request"
                   if wl.kind == "server" else
                   f"{wl.parents} parent(s) on {exp.machine.cpus} CPU(s), one creation taking at least "
                   f"~{est.creation_floor_us:.3g} us")
            raise UnstableError(
                f"{exp.source + ': ' if exp.source else ''}workload.rate: {wl.rate:g}/s is far beyond what "
                f"{who} can serve (at most ~{est.capacity_per_s:.3g}/s): the queue would only grow; lower "
                f"workload.rate, or add workload.parents or machine.cpus"
            )
    if not math.isfinite(est.events) or est.events > max_events:
        per_rep = sum(est.parts.values())
        cause = max(est.parts, key=lambda k: est.parts[k])
        head = (f"this run would simulate about {est.events:.2g} events ({per_rep:.2g} per replication x {reps}; "
                f"roughly {_human_s(est.wall_s)} of one CPU core), above the limit of {max_events:.2g} "
                f"(~{_human_s(max_events / EVENTS_PER_SECOND)})")
        if cause == "creations" or cause == "arrivals":
            other = per_rep - est.parts["creations"]
            fits = int(max(max_events / reps - other, 0) / EVENTS_PER_CREATION)
            advice = (f"about {est.creations:.2g} creations per replication: lower experiment.duration (now "
                      f"{exp.experiment.duration / 1e6:g}s) or experiment.replications")
            if wl.kind != "server" and fits >= 1:
                advice += f", or cap each replication: experiment.max_creations={fits}"
            field = "experiment.duration"
        elif cause == "faults":
            field = "workload.image.fault_rate"
            advice = (f"the parent's {exp.workload.image.threads - 1} other thread(s) fault "
                      f"{exp.workload.image.fault_rate:g} times/s each: lower workload.image.fault_rate, "
                      f"workload.image.threads or experiment.duration")
        else:
            field = "machine.tick"
            advice = ("preemptions at every tick/slice of a busy CPU: raise machine.tick and machine.slice (or leave "
                      "them to the profile), or lower experiment.duration")
        raise ConfigError(f"{head}; {advice}", source=exp.source, field=field)
    return est
