"""Build the C microbenchmarks (csrc/*.c) with the system compiler and run them.

Binaries go to a folder of the lab's build cache keyed by the sources' and the compiler's hash
(`forksim.lab.compiler`: <cache root>/bench-<hash>); nothing is built into the package.
Every benchmark process runs in its own session so that a cleanup can kill it and its children by
process group; `running_children()` lists what is still alive.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import MeasurementError
from ..lab import build_dir, compile_c, compiler, compiler_version
from ..lab.processes import end_group, group_alive
from . import tracefs

__all__ = ["Benchmarks", "build", "run_bench", "background", "kill_children", "running_children", "CSRC"]

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
    pace: Path


def build(cc: str | None = None) -> Benchmarks:
    """Compile forkbench, schedbench, hiccup, pace and the static helper (cached by content hash)."""
    cc = cc or compiler()
    if not cc:
        raise MeasurementError("no C compiler found (set CC or install gcc): calibration builds C benchmarks")
    version = compiler_version(cc)
    if version is None:
        raise MeasurementError(f"the C compiler {cc!r} does not run")
    out = build_dir("bench", sorted(CSRC.glob("*.[ch]")), version)

    def cc_run(args: list[str], binary: Path, what: str) -> bool:
        if binary.exists():
            return True
        r = compile_c(cc, args, binary)
        if r.returncode != 0 and what:
            raise MeasurementError(f"cannot compile {what}: {r.stderr.strip()[-400:]}")
        return r.returncode == 0

    fb, sb, hp, hc, pc = out / "forkbench", out / "schedbench", out / "helper", out / "hiccup", out / "pace"
    static_flag = out / "helper.static"

    def helper() -> None:
        if hp.exists():
            return
        if cc_run(["-O2", "-static", "-nostdlib", "-ffreestanding", str(CSRC / "helper.c")], hp, ""):
            static_flag.touch()
        else:  # no static toolchain: a dynamic helper (the exec then includes ld.so)
            cc_run(["-O2", str(CSRC / "helper.c")], hp, "helper.c")

    # side by side: a fresh machine's first calibration compiles them all (~2 s one after another)
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        builds = [pool.submit(cc_run, ["-O2", str(CSRC / "forkbench.c"), "-lpthread"], fb, "forkbench.c"),
                  pool.submit(cc_run, ["-O2", str(CSRC / "schedbench.c")], sb, "schedbench.c"),
                  pool.submit(cc_run, ["-O2", str(CSRC / "hiccup.c")], hc, "hiccup.c"),
                  pool.submit(cc_run, ["-O2", str(CSRC / "pace.c")], pc, "pace.c"),
                  pool.submit(helper)]
        for b in builds:
            b.result()  # a failed compile raises its MeasurementError here
    return Benchmarks(fb, sb, hp, static_flag.exists(), cc, hc, pc)


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None or group_alive(p.pid):
        end_group(p)
    _children.pop(p.pid, None)


def kill_children() -> None:
    """Kill every benchmark process group this module started and that is still alive."""
    for p in list(_children.values()):
        _kill(p)


def running_children() -> list[int]:
    return [pid for pid, p in _children.items() if p.poll() is None]


@contextmanager
def background(argv: list[str]) -> Iterator[subprocess.Popen]:
    """A benchmark running beside a measurement for the length of the `with` (a co-runner): in a session of its
    own and registered as run_bench's are, so that its end, an error or Ctrl-C ends it and all it forked."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _children[p.pid] = p
    unregister = tracefs.register_cleanup(lambda: _kill(p))
    try:
        yield p
    finally:
        _kill(p)
        unregister()


def run_bench(argv: list[str], trace: "tracefs.TraceInstance | None" = None, timeout: float = 300.0,
              aux: "tracefs.TraceInstance | None" = None, aux_out: "list[tracefs.Event] | None" = None,
              on_ready: Callable[[int], None] | None = None
              ) -> tuple[dict[str, Any], list[dict[str, Any]], "list[tracefs.Event] | None", int]:
    """Run one benchmark; returns (shape, samples, trace events or None, pid).

    With `trace` or `on_ready`, the benchmark is started gated (-g): once it has built its image and
    printed its pid, `on_ready(pid)` runs (e.g. reading the image's physical layout), that pid is
    followed, tracing starts, and the benchmark is released. `aux` (an instance following every pid,
    e.g. sched_switch only, to know which CPUs were idle) runs alongside; its events are appended to
    `aux_out`."""
    gated = trace is not None or on_ready is not None
    if gated:
        argv = [*argv, "-g"]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    _children[p.pid] = p
    unregister = tracefs.register_cleanup(lambda: _kill(p))
    shape: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    events = None
    try:
        if gated:
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
                    if on_ready is not None:
                        on_ready(int(obj["ready"]))
                    if trace is None:
                        p.stdin.write("g")
                        p.stdin.flush()
                        break
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
