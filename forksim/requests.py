"""Per-request records of a server workload (`kind = "server"`) and the windows they are measured in.

A server (forksim.workloads.server) logs every request that arrives after the warm-up: when it arrived, when
its service ended (NaN while it is still queued or in service at the end of the run) and which
server process took it. At the end of a replication each request is placed against that server's
snapshots (its rows in the creation records):

- `in_fork`: it arrived while the server was inside fork(), between the call's entry (`start`) and
  its return (`fork_ret`): the requests that queue behind the page-table copy;
- `in_snapshot`: it arrived between the fork's entry and the snapshot child's exit (`child_exit`):
  the fork stall and the copy-on-write period that follows it, which is what "request latency
  during the snapshot" asks about.

A window still open at the end of the run ends there. Both windows are set by the snapshots, not by
the run's length: their percentiles do not shrink as the run gets longer, where the tail of all
requests (`request_latency_us`) does, since a longer run adds requests that never meet a fork.

Column names are read through the constants below (one place to change if the records' columns are
renamed).
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .metrics import ReplicationResult

__all__ = ["RequestLog", "mark_windows", "requests_frame", "WINDOWS", "ARRIVAL", "DONE", "LATENCY", "SERVER", "IN_FORK",
           "IN_SNAPSHOT", "CREATION_START", "CREATION_FORK_RET", "CREATION_CHILD_EXIT", "CREATION_PARENT"]

# requests.parquet's columns (times in microseconds of simulated time)
ARRIVAL, DONE, LATENCY, SERVER, IN_FORK, IN_SNAPSHOT = "arrival_us", "done_us", "latency_us", "server", "in_fork", "in_snapshot"
# the creation records' columns the windows are read from (metrics.Records.frame)
CREATION_START, CREATION_FORK_RET, CREATION_CHILD_EXIT, CREATION_PARENT = "start", "fork_ret", "child_exit", "parent"

# summary.json section per window: (flag column or None for every request, what the window is)
WINDOWS = {
    "request_latency_us": (None, "every request that arrived after the warm-up and finished by the end of the run; "
                                 "its tail depends on the run length (the share of requests that meet a fork)"),
    "request_latency_in_fork_us": (IN_FORK, "requests that arrived while the server was inside fork() "
                                            "(from the call's entry to its return)"),
    "request_latency_in_snapshot_us": (IN_SNAPSHOT, "requests that arrived between the fork's entry and the "
                                                    "snapshot child's exit (the stall and the copy-on-write period)"),
}


class RequestLog:
    """One replication's requests as typed columns (arrival and end of service in us, server index)."""

    __slots__ = ("arrival", "done", "server")

    def __init__(self) -> None:
        self.arrival = array("d")
        self.done = array("d")
        self.server = array("q")

    def __len__(self) -> int:
        return len(self.arrival)

    def frame(self) -> pd.DataFrame:
        arrival = np.frombuffer(self.arrival, dtype=float) if len(self.arrival) else np.empty(0)
        done = np.frombuffer(self.done, dtype=float) if len(self.done) else np.empty(0)
        server = np.frombuffer(self.server, dtype=np.int64) if len(self.server) else np.empty(0, np.int64)
        order = np.argsort(arrival, kind="stable")  # finished rows first were logged in service order
        return pd.DataFrame({ARRIVAL: arrival[order], DONE: done[order], LATENCY: (done - arrival)[order],
                             SERVER: server[order]})


def _inside(arrival: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Whether each arrival falls in one of the intervals [starts[k], ends[k]) (sorted, not overlapping)."""
    if not len(starts):
        return np.zeros(len(arrival), dtype=bool)
    k = np.searchsorted(starts, arrival, side="right") - 1
    ok = k >= 0
    out = np.zeros(len(arrival), dtype=bool)
    out[ok] = arrival[ok] < ends[k[ok]]
    return out


def mark_windows(requests: pd.DataFrame, creations: pd.DataFrame, end: float) -> pd.DataFrame:
    """Add the `in_fork` and `in_snapshot` columns to one replication's requests, from the creation
    records of the same replication (a server's creations are its snapshots); `end`: the run's end (us),
    where a window still open closes."""
    requests[IN_FORK] = False
    requests[IN_SNAPSHOT] = False
    if not len(requests) or not len(creations):
        return requests
    for server, forks in creations.groupby(CREATION_PARENT, sort=False):
        forks = forks.sort_values(CREATION_START)
        starts = forks[CREATION_START].to_numpy(dtype=float)
        fork_end = np.nan_to_num(forks[CREATION_FORK_RET].to_numpy(dtype=float), nan=end)
        snap_end = np.nan_to_num(forks[CREATION_CHILD_EXIT].to_numpy(dtype=float), nan=end)
        mine = (requests[SERVER] == server).to_numpy()
        arrival = requests[ARRIVAL].to_numpy(dtype=float)[mine]
        requests.loc[mine, IN_FORK] = _inside(arrival, starts, fork_end)
        requests.loc[mine, IN_SNAPSHOT] = _inside(arrival, starts, snap_end)
    return requests


def requests_frame(results: Sequence["ReplicationResult"]) -> pd.DataFrame | None:
    """All replications' requests as one table with a `replication` column (requests.parquet), or None
    when the workload is not a server."""
    frames = [r.requests.assign(replication=r.replication) for r in results if r.requests is not None]
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    return df[["replication", *[c for c in df.columns if c != "replication"]]]
