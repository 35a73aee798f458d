"""The grid of a sweep: the points of a config's `[sweep]` table, each with its overrides, resolved
experiment and profile, replication streams and id.

The grid is the cartesian product of the `[sweep]` axes, in the table's order (the last axis varies
fastest). An axis is one dotted key with a list of values, or linked keys that move together:
`"machine.cpus,workload.parents" = [[2, 2], [4, 4]]`. A point's id holds a digest of its resolved
experiment and profile, so a resumed sweep reuses a point only if nothing that made it has changed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import Experiment, config_value, experiment_to_toml_dict, sweep_overrides
from .errors import ForksimError
from .profile import Profile
from .runner import replication_seeds, resolve_profile

__all__ = ["SweepPoint", "grid_points", "swept_keys"]


@dataclass
class SweepPoint:
    """One point of the grid: its overrides, the resolved experiment and profile, its id."""

    index: int
    overrides: dict[str, Any]
    values: dict[str, Any]  # the swept keys' resolved values (model units), the table's columns
    exp: Experiment | None
    profile: Profile | None
    id: str
    error: str | None = None
    seeds: list[np.random.SeedSequence] = field(default_factory=list, repr=False)

    @property
    def replications(self) -> int:
        return self.exp.experiment.replications if self.exp is not None else 0


def _axes(exp: Experiment) -> list[tuple[str, list[Any]]]:
    return list(exp.sweep.items())


def swept_keys(exp: Experiment) -> list[str]:
    """The dotted keys the grid sets, linked keys expanded."""
    return [k.strip() for axis, _ in _axes(exp) for k in axis.split(",")]


def _digest(exp: Experiment, profile: Profile | None, overrides: dict[str, Any]) -> str:
    data = experiment_to_toml_dict(exp)
    data.pop("sweep", None)
    blob = json.dumps(
        {"experiment": data, "profile": profile.model_dump(mode="json") if profile is not None else None,
         "overrides": overrides},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def grid_points(exp: Experiment, profile: str | Profile | None = None) -> list[SweepPoint]:
    """The sweep's points in grid order (an experiment without `[sweep]` is one point)."""
    axes = _axes(exp)
    combos = itertools.product(*[values for _, values in axes]) if axes else [()]
    base = exp.model_copy(update={"sweep": {}})
    points = []
    for index, combo in enumerate(combos):
        overrides: dict[str, Any] = {}
        for (axis, _), value in zip(axes, combo):
            overrides.update(sweep_overrides(axis, value, source=exp.source))
        pexp = base.with_overrides(overrides) if overrides else base
        pexp = pexp.model_copy(update={"sweep": {}})
        prof: Profile | None = None
        error = None
        try:
            prof = resolve_profile(pexp, profile)
        except ForksimError as exc:
            error = f"{exc.__class__.__name__}: {exc}"
        values = {k: config_value(pexp, k, v) for k, v in overrides.items()}
        pid = f"{index:04d}-{_digest(pexp, prof, overrides)}"
        seeds = replication_seeds(pexp.experiment.seed, pexp.experiment.replications)
        points.append(SweepPoint(index, overrides, values, pexp, prof, pid, error, seeds))
    return points
