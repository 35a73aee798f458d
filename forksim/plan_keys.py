"""What `forksim plan` knows about the key it searches: which way the answer lies, how to step
through the range, and the keys a config's `[sweep]` moves with it.

- Direction. A resource (machine.cpus, think time, the time between snapshots) is bought: the answer
  is the *smallest* value meeting the SLO. A load (workload.rate, parents, sizes, a cost factor) is
  endured: the answer is the *largest* value meeting an upper bound (latency <= X), the smallest
  reaching a lower bound (throughput >= X). A resource the `[sweep]` links to a load (cpu-scaling:
  one forking parent per CPU) scales the whole machine, so it is read as a load. `--smallest` or
  `--largest` overrides; other keys take the direction their range's two ends show.
- Steps. Sizes and rates span decades: they are bisected geometrically (the midpoint of 1 GiB and
  64 GiB is 8 GiB, not 32.5 GiB); other keys arithmetically.
- Linked keys. `"machine.cpus,workload.parents" = [[2, 2], [4, 4], ...]` makes workload.parents
  follow machine.cpus at every probe: in proportion when the pairs are proportional, else
  interpolated between them.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .config import Experiment, format_config_value, quantity_parser
from .units import parse_rate, parse_size

__all__ = ["RESOURCES", "LOADS", "direction", "geometric", "linked_keys", "Linked"]

RESOURCES = ("machine.cpus", "workload.think_time", "workload.server.interval", "workload.server.cron",
             "workload.bursts.interval", "workload.bursts.spread")
LOADS = ("workload.rate", "workload.parents", "workload.image.rss", "workload.image.vmas",
         "workload.image.anon_vmas", "workload.image.threads", "workload.image.fault_rate", "background.cpu_hogs",
         "workload.child.lifetime", "workload.child.exec_lifetime", "workload.child.cow_write_fraction",
         "workload.bursts.size", "workload.server.service", "workload.server.writes_per_request")


def _is_load(key: str) -> bool:
    return key in LOADS or key.startswith("whatif.")  # a what-if factor multiplies a cost


def direction(key: str, upper_bound: bool, linked: list[str], override: str | None = None) -> tuple[str | None, str]:
    """("smallest" | "largest" | None, why). None: decided by the range's ends."""
    if override is not None:
        return override, f"the {override} value, as asked"
    if key in RESOURCES and not any(_is_load(k) for k in linked):
        return "smallest", f"{key} is a resource: the least of it that meets the SLO"
    if _is_load(key) or key in RESOURCES:
        scaled = f" (with {', '.join(linked)}: the [sweep] links them)" if linked else ""
        if upper_bound:
            return "largest", f"{key}{scaled} is a load: the most of it under which the SLO still holds"
        return "smallest", f"{key}{scaled} is a load: the least of it that reaches the SLO"
    return None, ""


def geometric(key: str) -> bool:
    """Sizes and rates are searched on a log scale."""
    return quantity_parser(key) in (parse_size, parse_rate)


class Linked:
    """A key the [sweep] moves with the searched one, as a function of the searched value (model units)."""

    def __init__(self, key: str, xs: list[float], ys: list[float]):
        self.key = key
        order = np.argsort(xs)
        self.xs, self.ys = np.asarray(xs, float)[order], np.asarray(ys, float)[order]
        ratios = self.ys / np.where(self.xs == 0, np.nan, self.xs)
        self.ratio = float(ratios[0]) if np.all(np.isfinite(ratios)) and np.allclose(ratios, ratios[0]) else None
        self.integer = all(float(y).is_integer() for y in ys) and quantity_parser(key) is None

    def __call__(self, x: float) -> Any:
        y = self.ratio * x if self.ratio is not None else float(np.interp(x, self.xs, self.ys))
        return max(1, int(round(y))) if self.integer else y

    def describe(self, find: str) -> str:
        if self.ratio is not None:
            return f"{self.key} = {self.ratio:g} x {find}"
        pairs = ", ".join(f"{format_config_value(find, x)}->{format_config_value(self.key, y)}"
                          for x, y in zip(self.xs, self.ys))
        return f"{self.key} interpolated between the [sweep] pairs ({pairs})"


def linked_keys(exp: Experiment, find: str, resolve: Callable[[str, Any], float]) -> list[Linked]:
    """The keys the config's [sweep] links to `find` ("a,b" axes), as functions of its value.
    `resolve(key, raw)` turns a value as written ("4MiB") into the model's units."""
    out = []
    for axis, values in exp.sweep.items():
        keys = [k.strip() for k in axis.split(",")]
        if find not in keys or len(keys) < 2:
            continue
        i = keys.index(find)
        xs = [resolve(find, v[i]) for v in values]
        for j, other in enumerate(keys):
            if j != i:
                out.append(Linked(other, xs, [resolve(other, v[j]) for v in values]))
    return out
