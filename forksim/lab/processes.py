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
    """Whether any process of the process group is left (zombies of ours included)."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


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
