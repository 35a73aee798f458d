"""Build the C microbenchmarks (csrc/*.c) with the system compiler and run them.

Binaries go to a cache directory keyed by the sources' and the compiler's hash
($XDG_CACHE_HOME/forksim/bench-<hash>, else a temp dir); nothing is built into the package.
Every benchmark process runs in its own session so that a cleanup can kill it and its children by
process group; `running_children()` lists what is still alive.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MeasurementError
from . import tracefs

__all__ = ["Benchmarks", "build", "run_bench", "mem_available", "kill_children", "running_children", "CSRC"]

CSRC = Path(__file__).parent / "csrc"

_children: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class Benchmarks:
    forkbench: Path
    schedbench: Path
    helper: Path
    helper_static: bool
    cc: str
    hiccup: Path


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    root = Path(base) / "forksim"
    try:
        root.mkdir(parents=True, exist_ok=True)
        test = root / ".w"
        test.touch()
        test.unlink()
        return root
    except OSError:
        return Path(tempfile.gettempdir()) / f"forksim-{os.getuid()}"


def build(cc: str | None = None) -> Benchmarks:
    """Compile forkbench, schedbench and the static helper (cached by content hash)."""
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise MeasurementError("no C compiler found (set CC or install gcc): calibration builds C benchmarks")
    try:
        ver = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MeasurementError(f"the C compiler {cc!r} does not run: {exc}") from None
    h = hashlib.sha256(ver.encode())
    for src in sorted(CSRC.glob("*.c")):
        h.update(src.name.encode())
        h.update(src.read_bytes())
    out = _cache_root() / f"bench-{h.hexdigest()[:16]}"
    out.mkdir(parents=True, exist_ok=True)

    def cc_run(args: list[str], what: str) -> bool:
        r = subprocess.run([cc, *args], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            if what:
                raise MeasurementError(f"cannot compile {what}: {r.stderr.strip()[-400:]}")
            return False
        return True

    fb, sb, hp = out / "forkbench", out / "schedbench", out / "helper"
    if not fb.exists():
        cc_run(["-O2", "-o", str(fb) + ".tmp", str(CSRC / "forkbench.c"), "-lpthread"], "forkbench.c")
        os.replace(str(fb) + ".tmp", fb)
    if not sb.exists():
        cc_run(["-O2", "-o", str(sb) + ".tmp", str(CSRC / "schedbench.c")], "schedbench.c")
        os.replace(str(sb) + ".tmp", sb)
    hc = out / "hiccup"
    if not hc.exists():
        cc_run(["-O2", "-o", str(hc) + ".tmp", str(CSRC / "hiccup.c")], "hiccup.c")
        os.replace(str(hc) + ".tmp", hc)
    static_flag = out / "helper.static"
    if not hp.exists():
        ok = cc_run(["-O2", "-static", "-nostdlib", "-ffreestanding", "-o", str(hp) + ".tmp",
                     str(CSRC / "helper.c")], "")
        if not ok:  # no static toolchain: a dynamic helper (the exec then includes ld.so)
            cc_run(["-O2", "-o", str(hp) + ".tmp", str(CSRC / "helper.c")], "helper.c")
        else:
            static_flag.touch()
        os.replace(str(hp) + ".tmp", hp)
    return Benchmarks(fb, sb, hp, static_flag.exists(), cc, hc)


def mem_available() -> int:
    """MemAvailable in bytes (0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    _children.pop(p.pid, None)


def kill_children() -> None:
    """Kill every benchmark process group this module started and that is still alive."""
    for p in list(_children.values()):
        _kill(p)


def running_children() -> list[int]:
    return [pid for pid, p in _children.items() if p.poll() is None]


def run_bench(argv: list[str], trace: "tracefs.TraceInstance | None" = None, timeout: float = 300.0,
              aux: "tracefs.TraceInstance | None" = None, aux_out: "list[tracefs.Event] | None" = None
              ) -> tuple[dict[str, Any], list[dict[str, Any]], "list[tracefs.Event] | None", int]:
    """Run one benchmark; returns (shape, samples, trace events or None, pid).

    With `trace`, the benchmark is started gated (-g): once it has built its image and printed its
    pid, that pid is followed, tracing starts, and the benchmark is released. `aux` (an instance
    following every pid, e.g. sched_switch only, to know which CPUs were idle) runs alongside; its
    events are appended to `aux_out`."""
    if trace is not None:
        argv = [*argv, "-g"]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    _children[p.pid] = p
    unregister = tracefs.register_cleanup(lambda: _kill(p))
    shape: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    events = None
    try:
        if trace is not None:
            assert p.stdout is not None and p.stdin is not None
            while True:
                line = p.stdout.readline()
                if not line:
                    break
                obj = json.loads(line)
                if "shape" in obj:
                    shape = obj["shape"]
                elif "error" in obj:
                    raise MeasurementError(f"{Path(argv[0]).name} {' '.join(argv[1:])}: {obj['error']}")
                elif "ready" in obj:
                    trace.follow(int(obj["ready"]))
                    trace.start()
                    if aux is not None:
                        aux.tsc_hz = aux.tsc_hz or trace.tsc_hz
                        aux.start()
                    p.stdin.write("g")
                    p.stdin.flush()
                    break
        out, err = p.communicate(timeout=timeout)
        if trace is not None:
            trace.stop()
            events = trace.read()
            trace.clear_buffer()
        if aux is not None:
            aux.stop()
            aux.tsc_hz = aux.tsc_hz or (trace.tsc_hz if trace is not None else None)
            if aux_out is not None:
                aux_out.extend(aux.read())
            aux.clear_buffer()
        for line in out.splitlines():
            if not line.strip():
                continue
            obj = json.loads(line)
            if "shape" in obj:
                shape = obj["shape"]
            elif "error" in obj:
                raise MeasurementError(f"{Path(argv[0]).name} {' '.join(argv[1:])}: {obj['error']}")
            elif "b" in obj:
                samples.append(obj)
        if p.returncode not in (0, None) and not samples:
            raise MeasurementError(f"{Path(argv[0]).name} failed (status {p.returncode}): {err.strip()[-300:]}")
        return shape, samples, events, p.pid
    except subprocess.TimeoutExpired:
        raise MeasurementError(f"{Path(argv[0]).name} {' '.join(argv[1:])}: timed out after {timeout:.0f}s") from None
    finally:
        _kill(p)
        unregister()
