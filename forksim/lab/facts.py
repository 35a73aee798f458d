"""Facts about this machine: for a profile's provenance (kernel, CPU, THP, HZ, preemption, base slice)
and for what a measurement may ask of it (MemAvailable)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["machine_facts", "debugfs_base_slice", "proc_sched_slice", "mem_available", "cpu_model", "read_text", "llc_bytes"]


def read_text(path: str) -> str | None:
    """A /proc or /sys file's text, stripped; None when it cannot be read."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _kconfig() -> dict[str, str]:
    try:
        import gzip as _gz

        with _gz.open("/proc/config.gz", "rt") as f:
            out = {}
            for line in f:
                if line.startswith("CONFIG_"):
                    k, _, v = line.strip().partition("=")
                    out[k] = v
            return out
    except OSError:
        return {}


def debugfs_base_slice() -> tuple[float | None, str]:
    """EEVDF base slice (us) from debugfs (mounted for the read if needed, then unmounted), else from
    /proc/self/sched (`proc_sched_slice`)."""
    path = Path("/sys/kernel/debug/sched/base_slice_ns")
    mounted = False
    try:
        if not path.exists() and os.geteuid() == 0 and not any(
            l.split()[1] == "/sys/kernel/debug" for l in Path("/proc/self/mounts").read_text().splitlines()
        ):
            r = subprocess.run(["mount", "-t", "debugfs", "nodev", "/sys/kernel/debug"], capture_output=True)
            mounted = r.returncode == 0
        if path.exists():
            return float(path.read_text()) / 1000.0, "measured: /sys/kernel/debug/sched/base_slice_ns"
        return proc_sched_slice("debugfs not readable")
    except OSError as exc:
        return proc_sched_slice(f"debugfs: {exc}")
    finally:
        if mounted:
            subprocess.run(["umount", "/sys/kernel/debug"], capture_output=True)


def proc_sched_slice(why: str) -> tuple[float | None, str]:
    """The base slice as this process's own `se.slice` in /proc/self/sched (Linux 6.12+ prints it),
    in us: a nice-0 task without a custom slice (sched_setattr) gets sysctl_sched_base_slice at fork
    and at every update_deadline, so this is the debugfs value where debugfs is locked. `why` says
    why debugfs was not used; it ends the provenance when /proc/self/sched has no slice either."""
    try:
        for line in Path("/proc/self/sched").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "se.slice" and value.strip().isdigit():
                return float(value) / 1000.0, (f"measured: se.slice of a nice-0 task in /proc/self/sched "
                                               f"(sysctl_sched_base_slice; {why})")
    except OSError:
        pass
    return None, why


def llc_bytes() -> int:
    """The largest cache the kernel reports for CPU 0 (sysfs; under a VM it may be the host's), in
    bytes; 32 MiB when sysfs says nothing."""
    best = 0
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        txt = read_text(str(d / "size")) or ""
        mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(txt[-1:], 1)
        try:
            best = max(best, int(txt.rstrip("KMG")) * mult)
        except ValueError:
            continue
    return best or 32 * 1024**2


def mem_available() -> int | None:
    """MemAvailable in bytes (/proc/meminfo); None when unknown."""
    for line in (read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo); None when it says none."""
    for line in (read_text("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def machine_facts() -> dict[str, Any]:
    """The facts a profile's provenance records (`facts` in calibration's raw file)."""
    cfg = _kconfig()
    thp = read_text("/sys/kernel/mm/transparent_hugepage/enabled") or "unknown"
    m = re.search(r"\[(\w+)\]", thp)
    preempt = read_text("/sys/kernel/debug/sched/preempt")
    if not preempt:
        preempt = next((k[len("CONFIG_PREEMPT_"):].lower() for k in ("CONFIG_PREEMPT_NONE", "CONFIG_PREEMPT_VOLUNTARY",
                       "CONFIG_PREEMPT_LAZY", "CONFIG_PREEMPT") if cfg.get(k) == "y"), "unknown")
    try:
        from importlib.metadata import version

        fv = version("forksim")
    except Exception:  # noqa: BLE001
        fv = "dev"
    return {
        "kernel": platform.release(),
        "cpu_model": cpu_model() or "unknown",
        "cpus": os.cpu_count() or 1,
        "thp_mode": m.group(1) if m else thp,
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "hz": int(cfg["CONFIG_HZ"]) if cfg.get("CONFIG_HZ", "").isdigit() else None,
        "hz_source": "/proc/config.gz CONFIG_HZ" if cfg.get("CONFIG_HZ") else None,
        "preempt": preempt,
        "vmap_stack": cfg.get("CONFIG_VMAP_STACK") == "y" if cfg else None,
        "per_vma_lock": cfg.get("CONFIG_PER_VMA_LOCK") == "y" if cfg else None,
        "cpuidle_driver": read_text("/sys/devices/system/cpu/cpuidle/current_driver"),
        "mem_total_bytes": int((read_text("/proc/meminfo") or "MemTotal: 0").splitlines()[0].split()[1]) * 1024,
        "forksim_version": fv,
        "python": platform.python_version(),
    }


