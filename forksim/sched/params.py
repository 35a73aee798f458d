"""The scheduler's parameters as the machine uses them during one replication: costs in microseconds,
and samplers that draw one value per use (built per replication from the frozen
`forksim.model.SchedulerSpec`, on the replication's own random stream)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..host_speed import SpeedEpisodes
from ..rcu import RcuSpec
from .balance import BalanceParams

__all__ = ["SchedulerParams"]


@dataclass
class SchedulerParams:
    """Scheduling costs in microseconds; samplers draw one value per use (tails come from them)."""

    tick_us: float = 4000.0
    slice_us: float = 1500.0
    wakeup_granularity_us: float = 1500.0
    wakeup_preemption: bool = True
    context_switch: Callable[[], float] = field(default=lambda: 0.0)
    idle_wake: Callable[[], float] = field(default=lambda: 0.0)
    # idle_wake's scale for a CPU idle this long (microseconds); None: 1 whatever the idle time
    idle_wake_scale: Callable[[float], float] | None = None
    # a whole halt exit's draw for a CPU idle this long (microseconds), where the profile measured its shape by idle
    # time (IdleWakeCurve.residuals); None: idle_wake (times idle_wake_scale)
    idle_wake_at: Callable[[float], float] | None = None
    ipi_send: Callable[[], float] = field(default=lambda: 0.0)
    # ipi_send for a wakee CPU idle this long (microseconds); None: ipi_send whatever the idle time
    ipi_send_by_idle: Callable[[float], float] | None = None
    migration: Callable[[], float] = field(default=lambda: 0.0)
    # how much later than asked a user task's timer sleep ends (timer_slack_ns: Task.nanosleep)
    timer_slack_us: float = 0.0
    # Interruptions of a running CPU (tick, device interrupts, host preemption of a vCPU): the gap
    # to the next one (None: none) and how long one lasts.
    interruption_gap: Callable[[], float] | None = None
    interruption: Callable[[], float] = field(default=lambda: 0.0)
    # The host's slow episodes per CPU (forksim.host_speed); None: every CPU at one speed throughout
    host_speed: SpeedEpisodes | None = None
    # RCU callbacks of exited tasks (forksim.rcu): what a reap and a dying mm queue, the grace period;
    # None: none (they cost nothing)
    rcu: RcuSpec | None = None
    # EEVDF (Linux 6.6+, forksim.sched.eevdf): lag placement, deadlines and RUN_TO_PARITY slice
    # protection. False: the plain fair queue (wake-up preemption after wakeup_granularity_us).
    eevdf: bool = False
    # Load balancing (forksim.sched.balance): periodic, nohz and newidle passes with PELT load and
    # cache-hot tasks. None: an idealised balancer (an idle CPU pulls any waiting task at once).
    balance: BalanceParams | None = None

