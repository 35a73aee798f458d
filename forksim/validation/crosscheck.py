"""Cross-checks against stress-ng, where it is installed: reported beside the model's prediction, never asserted.

- stress-ng's vfork stressor, pinned to one CPU, is the same loop as the load generator's pinned vfork+_exit+wait:
  the bogo-ops/s of the one should match the creations/s of the other. It tells a user whether the harness
  measures what a tool they know measures.
- stress-ng's fork stressor, unpinned, is a benchmark of its own: per bogo-op the parent forks, setpgid()s and
  kill()s the child and reaps it, and both touch their memory. The model gets what a user reads from /proc
  while it runs, never its result: the stressor's image (RssAnon, VMAs, VMAs with anonymous pages from smaps),
  its minor faults per op (each a page written since the last fork: `workload.image.write_fraction`), its
  children's (`child.cow_write_fraction`) and its user CPU time per op (`workload.parent_work`); ops counted by
  the pids the machine handed out meanwhile (/proc/loadavg's last pid: the stressor's children, and anything
  else that forked).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from ..kernel.flags import FORK, VFORK
from .measure import LoadgenError, measure
from .scenarios import Scenario

__all__ = ["stress_ng_vfork", "stress_ng_fork", "read_stressor"]


def _bogo(stressor: str) -> re.Pattern[str]:
    """stress-ng --metrics-brief's line for `stressor`: bogo ops, real time, usr, sys, bogo ops/s (real time)."""
    return re.compile(stressor + r"\s+(\d+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)")


def stress_ng_vfork(seconds: float, simulate: Callable[[dict[str, Any], str | None], dict[str, Any]],
                    profile: str) -> dict[str, Any] | None:
    """stress-ng --vfork 1 pinned to CPU 0, the load generator's pinned K=1 vfork, and the model
    (one CPU). None when stress-ng is not installed."""
    exe = shutil.which("stress-ng")
    if exe is None:
        return None
    out: dict[str, Any] = {"seconds": seconds}
    try:
        proc = subprocess.run([exe, "--vfork", "1", "--taskset", "0", "--timeout", f"{seconds:g}s", "--metrics-brief"],
                              capture_output=True, text=True, timeout=seconds + 30)
        m = _bogo("vfork").search(proc.stdout + proc.stderr)
        out["stress_ng_per_s"] = float(m.group(3)) if m else None
    except (OSError, subprocess.TimeoutExpired) as exc:
        out["error"] = f"stress-ng: {exc}"
        return out
    sc = Scenario(name="crosscheck-vfork-K1-pinned", mode="closed", kind=VFORK, parents=1, rss=0, pin=True)
    try:
        measured = measure(sc, quick=True)
        out["loadgen_per_s"] = measured["throughput_per_s"]
        config = sc.to_config(measured, cpus=1, quick=True, profile=profile)
        out["model_per_s"] = simulate(config, profile)["throughput_per_s"]["mean"]
    except (LoadgenError, ValueError, KeyError) as exc:
        out["error"] = str(exc)
    return out


def _stat(pid: int) -> dict[str, int]:
    """/proc/PID/stat's fault and CPU-time counters (clock ticks), the reaped children's included."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"minflt": int(f[7]), "cminflt": int(f[8]), "utime": int(f[11]), "cutime": int(f[13])}


def _last_pid() -> int:
    return int(Path("/proc/loadavg").read_text().split()[-1])


def _child_of(ppid: int) -> int | None:
    """A process whose parent is `ppid` (stress-ng's stressor, forked by its main process), or None."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                    return int(d.name)
            except (OSError, ValueError, IndexError):
                continue
    return None


def read_stressor(pid: int, window_s: float) -> dict[str, Any]:
    """What a user reads from /proc about a forking process over `window_s`: its image (RssAnon, VMAs, VMAs with
    anonymous pages) and, per creation (the pids handed out meanwhile), its minor faults, its reaped children's
    and its user CPU time (us)."""
    smaps = Path(f"/proc/{pid}/smaps").read_text()
    status = Path(f"/proc/{pid}/status").read_text()
    image = {"rss_bytes": int(re.search(r"RssAnon:\s+(\d+)", status).group(1)) * 1024,
             "vmas": len(re.findall(r"^[0-9a-f]+-[0-9a-f]+ ", smaps, re.M)),
             "anon_vmas": sum(1 for m in re.finditer(r"^Anonymous:\s+(\d+)", smaps, re.M) if int(m.group(1)) > 0)}
    s0, p0 = _stat(pid), _last_pid()
    time.sleep(window_s)
    s1, p1 = _stat(pid), _last_pid()
    ops = max(1, p1 - p0)
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    return {**image, "ops": ops, "minflt_per_op": (s1["minflt"] - s0["minflt"]) / ops,
            "child_minflt_per_op": (s1["cminflt"] - s0["cminflt"]) / ops,
            "user_us_per_op": (s1["utime"] - s0["utime"]) * tick_us / ops}


def stress_ng_fork(seconds: float, simulate: Callable[[dict[str, Any], str | None], dict[str, Any]],
                   profile: str, cpus: int) -> dict[str, Any] | None:
    """stress-ng --fork 1, unpinned: its bogo ops/s beside the model's creations/s for the stressor as /proc
    describes it (read_stressor over the run's middle). None when stress-ng is not installed."""
    exe = shutil.which("stress-ng")
    if exe is None:
        return None
    out: dict[str, Any] = {"seconds": seconds}
    try:
        proc = subprocess.Popen([exe, "--fork", "1", "--timeout", f"{seconds:g}s", "--metrics-brief"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        out["error"] = f"stress-ng: {exc}"
        return out
    try:
        time.sleep(min(1.0, seconds / 4))
        pid = _child_of(proc.pid)
        if pid is None:
            raise OSError("its stressor process was not found")
        out["stressor"] = read_stressor(pid, seconds / 2)
        text = proc.communicate(timeout=seconds + 30)[0]
        m = _bogo("fork").search(text)
        out["stress_ng_per_s"] = float(m.group(3)) if m else None
    except (OSError, ValueError, AttributeError, subprocess.TimeoutExpired) as exc:
        proc.kill()
        proc.wait()
        out["error"] = f"stress-ng --fork: {exc}"
        return out
    st = out["stressor"]
    ptes = max(1, st["rss_bytes"] // 4096)
    config = {
        "experiment": {"name": "crosscheck-stress-ng-fork", "duration": 2e6, "warmup": 2e5, "replications": 3,
                       "seed": 42},
        "machine": {"cpus": cpus, "profile": profile},
        "workload": {"kind": "closed", "parents": 1, "parent_work": st["user_us_per_op"],
                     "image": {"rss": st["rss_bytes"], "vmas": st["vmas"], "anon_vmas": st["anon_vmas"],
                               "write_fraction": min(1.0, st["minflt_per_op"] / ptes)},
                     "child": {"clone": FORK, "cow_write_fraction": min(1.0, st["child_minflt_per_op"] / ptes)}},
    }
    try:
        out["model_per_s"] = simulate(config, profile)["throughput_per_s"]["mean"]
    except (ValueError, KeyError) as exc:
        out["error"] = str(exc)
    out["config"] = config
    return out
