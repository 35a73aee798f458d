"""The host a profile describes: a fingerprint of the machine, read from /proc and /sys.

A profile's costs describe the machine it was measured on. The fingerprint says which machine that
was (CPU vendor, model name, family/model/stepping and microcode, kernel release, the kernel config
facts the model uses, THP mode, memory, hypervisor, CPUs), so that forksim can pick the profile
measured on the host it runs on and say when it uses one measured elsewhere.

Two hosts *match* (are of the same kind, for choosing a stored profile and for the off-host
warning) when they have the same CPU vendor and model name, the same kernel major.minor release,
the same number of online CPUs and the same hypervisor (or both bare metal). Microcode, memory,
THP mode, HZ and preemption are recorded and shown but do not break a match: a profile measured on
the same CPU and kernel line is still the best description available, and `forksim profiles` shows
where the two differ.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HostFingerprint", "this_host", "MATCH_KEYS", "DETAIL_KEYS", "MATCHING_RULE", "host_from_provenance",
           "differences"]

# The facts two hosts must share for a profile of one to be used on the other without being asked.
MATCH_KEYS = ("cpu_vendor", "cpu_model", "kernel_series", "cpus", "hypervisor")
# ... and these where both hosts know them (a profile's host section predates them, or the machine does not say:
# no 'cpu family' in an arm64 /proc/cpuinfo): a VM's generic model name, such as 'AMD EPYC', covers several
# generations, and an idle vCPU's wake-up costs what its cpuidle driver makes it
DETAIL_KEYS = ("cpu_family", "cpu_model_number", "cpuidle_driver")
MATCHING_RULE = ("same CPU vendor and model name, same kernel major.minor (e.g. 6.18), same number of online "
                 "CPUs, same hypervisor (or both bare metal); and where both hosts record them, the same CPU family "
                 "and model number (a VM's generic name, such as 'AMD EPYC', covers several generations) and the "
                 "same cpuidle driver (haltpoll polls before a vCPU halts: idle wake-ups cost what it makes "
                 "them); among stored profiles that match, the newest "
                 "(its calibration date) wins; with no stored one, a shipped profile of a matching host; "
                 "with none, the shipped 'default'")


class HostFingerprint(BaseModel):
    """The machine a profile was measured on. Every field is optional: older profiles and profiles
    built from published figures do not know all of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cpu_vendor: str | None = Field(default=None, description="/proc/cpuinfo vendor_id, e.g. AuthenticAMD")
    cpu_model: str | None = Field(default=None, description="/proc/cpuinfo model name")
    cpu_family: int | None = None
    cpu_model_number: int | None = None
    cpu_stepping: int | None = None
    microcode: str | None = None
    kernel: str | None = Field(default=None, description="uname -r")
    hz: int | None = Field(default=None, description="CONFIG_HZ (the scheduler tick)")
    preempt: str | None = Field(default=None, description="preemption model: none, voluntary, lazy, full")
    thp_mode: str | None = Field(default=None, description="/sys/kernel/mm/transparent_hugepage/enabled")
    mem_total_bytes: int | None = None
    hypervisor: str | None = Field(default=None, description="hypervisor vendor (KVM, Xen, ...), 'none' on bare metal")
    cpus: int | None = Field(default=None, ge=1, description="online CPUs")
    numa_nodes: int | None = Field(default=None, ge=1)
    # 2026-12-04: two hosts that both read 'AMD EPYC' (family 25, models 1 and 17) ran kernels that idle a vCPU
    # differently, halting it at once ("none") or polling first (haltpoll): a wake-up of the idle vCPU cost 6-22 us
    # on the first, 28-55 us on the second (futex ping-pong, 10-1,000 us idle), an IPI 2.1 against 9.1 us
    cpuidle_driver: str | None = Field(default=None, description="/sys/devices/system/cpu/cpuidle/current_driver "
                                       "(none, haltpoll, acpi_idle, intel_idle): how an idle CPU waits")
    source: str = Field(default="measured: /proc/cpuinfo, uname, /proc/config.gz, /sys, lscpu",
                        description="where the facts came from")

    @property
    def kernel_series(self) -> str | None:
        """The kernel's major.minor release (6.18 for 6.18.44-fc-v669)."""
        m = re.match(r"(\d+)\.(\d+)", self.kernel or "")
        return f"{m.group(1)}.{m.group(2)}" if m else None

    def key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in MATCH_KEYS)

    def matches(self, other: "HostFingerprint") -> bool:
        """Same kind of host (see MATCHING_RULE): unknown MATCH_KEYS never match; DETAIL_KEYS are compared
        where both know them."""
        a, b = self.key(), other.key()
        if not all(x is not None and x == y for x, y in zip(a, b)):
            return False
        return all(x == y for k in DETAIL_KEYS if (x := getattr(self, k)) is not None
                   and (y := getattr(other, k)) is not None)

    def describe(self) -> str:
        """One line: 'AMD EPYC (family 25 model 17), 2 CPUs, Linux 6.18.44, KVM, cpuidle haltpoll'."""
        parts = [self.cpu_model or "unknown CPU"]
        if self.cpu_family is not None and self.cpu_model_number is not None:
            parts[0] += f" (family {self.cpu_family} model {self.cpu_model_number})"
        if self.cpus:
            parts.append(f"{self.cpus} CPUs")
        if self.kernel:
            parts.append(f"Linux {self.kernel}")
        if self.hypervisor:
            parts.append("bare metal" if self.hypervisor == "none" else self.hypervisor)
        if self.cpuidle_driver:
            parts.append(f"cpuidle {self.cpuidle_driver}")
        return ", ".join(parts)

    def slug(self) -> str:
        """A file and profile name for this kind of host, from the facts MATCHING_RULE compares (two hosts that do not
        match get two names, so that calibrating on one never overwrites the other's stored profile):
        'amd-epyc-family25-model17-2cpu-linux6.18-kvm-haltpoll', 'amd-epyc-2cpu-linux6.18-kvm' where the host
        does not say its family or idles its CPUs without a driver."""
        model = re.sub(r"\((r|tm)\)|cpu|processor|@.*$", "", (self.cpu_model or "unknown").lower())
        parts = [re.sub(r"[^a-z0-9]+", "-", model).strip("-") or "unknown"]
        if self.cpu_family is not None and self.cpu_model_number is not None:
            parts.append(f"family{self.cpu_family}-model{self.cpu_model_number}")
        parts += [f"{self.cpus or 0}cpu", f"linux{self.kernel_series or 'x'}"]
        if self.hypervisor and self.hypervisor != "none":
            parts.append(re.sub(r"[^a-z0-9]+", "", self.hypervisor.lower()))
        if self.cpuidle_driver and self.cpuidle_driver != "none":
            parts.append(re.sub(r"[^a-z0-9]+", "", self.cpuidle_driver.lower()))
        return "-".join(parts)


def differences(a: HostFingerprint, b: HostFingerprint) -> list[str]:
    """The facts that differ between two hosts, as 'name: a -> b' (unknown on either side skipped)."""
    out = []
    for name in HostFingerprint.model_fields:
        if name == "source":
            continue
        x, y = getattr(a, name), getattr(b, name)
        if x is not None and y is not None and x != y:
            out.append(f"{name}: {x} -> {y}")
    return out


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _kconfig(keys: tuple[str, ...]) -> dict[str, str]:
    import gzip

    out: dict[str, str] = {}
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                if k in keys:
                    out[k] = v
    except OSError:
        pass
    return out


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if not line.strip():
            break  # the first CPU is enough
        k, _, v = line.partition(":")
        info.setdefault(k.strip(), v.strip())
    return info


def _hypervisor(flags: str) -> str | None:
    """The hypervisor's vendor from lscpu (CPUID leaf 0x40000000), 'none' without the hypervisor flag."""
    if "hypervisor" not in flags.split():
        return "none" if flags else None
    if shutil.which("lscpu"):
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5,
                                 env={**os.environ, "LC_ALL": "C"}).stdout
            m = re.search(r"^Hypervisor vendor:\s*(.+)$", out, re.M)
            if m:
                return m.group(1).strip()
        except (OSError, subprocess.SubprocessError):
            pass
    xen = _read("/sys/hypervisor/type")
    return xen or "unknown"


def _int(v: str | None) -> int | None:
    return int(v) if v and v.isdigit() else None


def _preempt(cfg: dict[str, str]) -> str | None:
    dyn = _read("/sys/kernel/debug/sched/preempt")
    if dyn:
        m = re.search(r"\((\w+)\)", dyn)
        return m.group(1) if m else dyn
    for k in ("CONFIG_PREEMPT_NONE", "CONFIG_PREEMPT_VOLUNTARY", "CONFIG_PREEMPT_LAZY", "CONFIG_PREEMPT"):
        if cfg.get(k) == "y":
            return k[len("CONFIG_PREEMPT_"):].lower() if k != "CONFIG_PREEMPT" else "full"
    return None


@functools.lru_cache(maxsize=1)
def this_host() -> HostFingerprint:
    """The fingerprint of the machine forksim runs on (read once per process)."""
    info = _cpuinfo()
    cfg = _kconfig(("CONFIG_HZ", "CONFIG_PREEMPT_NONE", "CONFIG_PREEMPT_VOLUNTARY", "CONFIG_PREEMPT_LAZY",
                    "CONFIG_PREEMPT"))
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled") or ""
    m = re.search(r"\[(\w+)\]", thp)
    mem = re.search(r"MemTotal:\s+(\d+)", _read("/proc/meminfo") or "")
    nodes = [p for p in Path("/sys/devices/system/node").glob("node[0-9]*")] if Path("/sys/devices/system/node").exists() else []
    return HostFingerprint(
        cpu_vendor=info.get("vendor_id"),
        cpu_model=info.get("model name") or platform.processor() or None,
        cpu_family=_int(info.get("cpu family")),
        cpu_model_number=_int(info.get("model")),
        cpu_stepping=_int(info.get("stepping")),
        microcode=info.get("microcode"),
        kernel=platform.release() or None,
        hz=_int(cfg.get("CONFIG_HZ")),
        preempt=_preempt(cfg),
        thp_mode=m.group(1) if m else None,
        mem_total_bytes=int(mem.group(1)) * 1024 if mem else None,
        hypervisor=_hypervisor(info.get("flags", "")),
        cpus=os.cpu_count() or None,
        numa_nodes=len(nodes) or None,
        cpuidle_driver=_read("/sys/devices/system/cpu/cpuidle/current_driver"),
    )


_VENDORS = (("amd", "AuthenticAMD"), ("intel", "GenuineIntel"), ("xeon", "GenuineIntel"))


def host_from_provenance(prov: dict[str, Any]) -> HostFingerprint | None:
    """For a profile written before profiles carried a `host` section: the facts its provenance
    recorded (CPU model name, kernel, CPUs, HZ, preemption, THP, memory); the vendor is read from the
    model name. None for a profile that was not measured on a host (published figures)."""
    if prov.get("kind") == "published" or not prov.get("cpu_model"):
        return None
    model = str(prov["cpu_model"])
    vendor = next((v for k, v in _VENDORS if k in model.lower()), None)
    return HostFingerprint(
        cpu_vendor=vendor, cpu_model=model, kernel=prov.get("kernel"), hz=prov.get("hz"),
        preempt=prov.get("preempt"), thp_mode=prov.get("thp_mode"), mem_total_bytes=prov.get("mem_total_bytes"),
        cpus=prov.get("cpus"), hypervisor=prov.get("hypervisor"), cpuidle_driver=prov.get("cpuidle_driver"),
        source="derived: from the profile's provenance (written before profiles carried a host section)",
    )
