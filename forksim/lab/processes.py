"""Ending a measured program with everything it started.

Every measured C program runs in its own session (`start_new_session=True`), so its process group
holds it, its children, CPU hogs and helpers; ending the group leaves nothing behind whatever
happened (an error, a timeout, Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

__all__ = ["kill_group", "group_alive", "end_group"]


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group (nothing when it is gone or not ours)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group is left that has not exited. A zombie does not count: it runs
    nothing, and an orphan's is its new parent's to reap (this machine kind's init, process_api, reaps them
    seconds late: ending a fork loop's group waited 1.3-1.9 s for it, 2026-12-03)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(state not in "ZX" for state in _member_states(pgid))


def _member_states(pgid: int) -> list[str]:
    """The states (/proc/PID/stat) of the group's processes; ["?"] where /proc cannot say."""
    try:
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return ["?"]
    states = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after "(comm)": state, ppid, pgrp, ...
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:
            states.append(fields[0].decode())
    return states


def end_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Kill the group that `proc` leads, reap `proc`, and keep killing for up to `grace_s` seconds
    while any of the group is left (a child forked while the first SIGKILL was delivered)."""
    kill_group(proc.pid)
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace_s
    while group_alive(proc.pid) and time.monotonic() < deadline:
        kill_group(proc.pid)
        time.sleep(0.01)
