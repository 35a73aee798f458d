"""A profile's placement_room section: where a kernel that packs vCPUs puts a new task, and a woken parent, by
the state of the CPUs at that moment (measured by forksim.calibration.room_loops; absent: the placement
section's shares). Part of a profile (forksim.profile re-exports every name here).
"""

from __future__ import annotations

import bisect
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .profile_terms import _check_idle_times

__all__ = ["ROOM_FAMILIES", "RoomCurve", "WakeAway", "PlacementRoom"]

# The creation families placement_room distinguishes (kernel/clone.py's Kernel._family names them).
ROOM_FAMILIES = ("fork", "vfork", "spawn", "thread")


def _check_curve(name: str, edges: list[float], what: str, shares: list[float]) -> None:
    """A share per idle-time bin: the idle times' checks of the scheduler curves, and shares in [0, 1]."""
    _check_idle_times(name, edges, what, shares)
    if any(not 0.0 <= x <= 1.0 for x in shares):
        raise ValueError(f"{name}.{what} must lie in [0, 1]")


def _step(edges: list[float], values: list[float], idle_us: float) -> float:
    """The value of the bin whose upper edge is the first at or above `idle_us` (beyond the last: the last)."""
    i = bisect.bisect_left(edges, idle_us)
    return values[i] if i < len(edges) else values[-1]


class RoomCurve(BaseModel):
    """One creation family under PlacementRoom: `room_local`, the share kept on the parent's CPU while that
    CPU has been awake under the family's own `room_us` (absent: the section's); beyond it, `local[i]`, the share kept local when the
    idle CPU has been idle at most `idle_us[i]` (ascending upper edges; longer than the last: the last share)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    room_local: float = Field(ge=0.0, le=1.0)
    idle_us: list[float] = Field(min_length=1)
    local: list[float] = Field(min_length=1)
    room_us: float | None = Field(default=None, gt=0.0, le=1e6)

    @model_validator(mode="after")
    def _curve(self) -> "RoomCurve":
        _check_curve("placement_room curve", self.idle_us, "local", self.local)
        return self

    def share(self, awake_us: float, room_us: float, idle_us: float) -> float:
        """P(kept on the parent's CPU) for a parent CPU awake `awake_us` and an idle CPU idle `idle_us` (`room_us`:
        the section's threshold, for a family without its own)."""
        if awake_us < (self.room_us if self.room_us is not None else room_us):
            return self.room_local
        return _step(self.idle_us, self.local, idle_us)


class WakeAway(BaseModel):
    """Under PlacementRoom, for one family: the share of wake-ups of the parent sleeping in wait or pthread_join
    by the child on the parent's own CPU (a process child's exit_notify, a thread's clear_child_tid) that put the
    parent on the idle CPU (select_idle_sibling; a packing kernel keeps it some of the time), by that CPU's idle
    time: `share[i]` up to `idle_us[i]` (ascending upper edges; longer than the last: the last)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    idle_us: list[float] = Field(min_length=1)
    share: list[float] = Field(min_length=1)
    # A parent a pick dequeued while it slept as a delayed sleeper (Task.picked_off: its CPU's tick once its child's
    # protected slice was over, eevdf.pick_over_delayed) is woken through select_task_rq, not in place: the share
    # that then goes to the idle CPU, by how long the waker's CPU had been awake (ascending upper edges).
    after_pick_awake_us: list[float] | None = Field(default=None, min_length=1, description=(
        "upper edges (us) of the waker CPU's awake time for after_pick; absent: the curve for every wake-up"))
    after_pick: list[float] | None = Field(default=None, min_length=1, description=(
        "the share that went to the idle CPU of the wake-ups that came after a tick on the parent's CPU at least "
        "the child's protected slice (half a slice: a new task's) after the parent left it, per awake-time bin "
        "(the curve is then fitted on the other wake-ups)"))
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _curve(self) -> "WakeAway":
        _check_curve("placement_room wake_away", self.idle_us, "share", self.share)
        if (self.after_pick is None) != (self.after_pick_awake_us is None):
            raise ValueError("placement_room wake_away: after_pick and after_pick_awake_us come together")
        if self.after_pick is not None:
            _check_curve("placement_room wake_away", self.after_pick_awake_us, "after_pick", self.after_pick)
        return self

    def at(self, idle_us: float, picked_awake_us: float | None = None) -> float:
        """P(the parent goes to the idle CPU, idle `idle_us`); `picked_awake_us`: for a parent a pick dequeued
        while it slept, how long the waker's CPU has been awake (after_pick's curve where the profile has it)."""
        if picked_awake_us is not None and self.after_pick is not None:
            return _step(self.after_pick_awake_us, self.after_pick, picked_awake_us)
        return _step(self.idle_us, self.share, idle_us)


class PlacementRoom(BaseModel):
    """Where a kernel that packs vCPUs (this host's non-upstream sched_vcpu_pack) puts a new task while another
    CPU is idle and the parent's CPU has nothing else to run: kept on the parent's CPU while that CPU has been
    awake (running since it last left idle) under `room_us`, else by how long the idle CPU has been idle
    (RoomCurve), for each family measured; a family not listed keeps the placement section's rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    room_us: float = Field(gt=0.0, le=1e6)
    families: dict[Literal["fork", "vfork", "spawn", "thread"], RoomCurve] = Field(min_length=1)
    source: str = Field(min_length=1)
    # by family; absent for a family: Machine._select_wake_cpu's rule (a wait wake-up, sync, keeps the parent on
    # the waker's CPU; a pthread_join wake-up puts it on the idle CPU)
    wake_away: dict[Literal["fork", "vfork", "spawn", "thread"], WakeAway] = Field(default_factory=dict)
