"""Workloads, one module per kind over a small base (as Ciw's arrival node, node and server):

- `base`: what every workload shares (records, the stop event of a capped run, CPU hogs), and the
  parents that create: their start-up, faulting threads and one creation from entry to reap;
- `closed`: parents in a create-reap-think loop;
- `open`: arrivals queue for parents, one creation per request;
- `server`: a single-threaded server that snapshots by fork (Redis BGSAVE);
- `arrivals`: arrival streams (a file, bursts, poisson, deterministic) and the bounded queue feed.

`make_workload(params, kernel, streams)` builds the one `workload.kind` names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING


from .base import ParentWorkload, Workload
from .closed import ClosedWorkload
from .open import OpenWorkload
from .server import Server

if TYPE_CHECKING:
    from ..kernel.clone import Kernel
    from ..model import ModelParams
    from ..streams import Streams

__all__ = ["WORKLOADS", "make_workload", "Workload", "ParentWorkload", "ClosedWorkload", "OpenWorkload", "Server"]

# workload.kind -> the workload that runs it
WORKLOADS: dict[str, type[Workload]] = {"closed": ClosedWorkload, "open": OpenWorkload, "server": Server}


def make_workload(params: "ModelParams", kernel: "Kernel", streams: "Streams") -> Workload:
    """The workload of `params` (its `workload.kind`) on `kernel`, drawing from the replication's
    named `streams` (forksim.streams)."""
    return WORKLOADS[params.workload.kind](params, kernel, streams)
