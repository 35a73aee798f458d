"""The C load generator of the validation: building it (csrc/loadgen.c, compiled at run time with the
system compiler into the lab's build cache, `forksim.lab.compiler`), refusing a scenario whose images do not
fit, and running it in its own process group, which is killed whatever happens (an error, Ctrl-C, SIGTERM),
so that no parent, child or CPU hog is left behind. `measure` turns its records into statistics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..lab import build_dir, compile_c, compiler, compiler_version, mem_available
from ..lab.processes import end_group
from .layouts import ParentLayouts
from .scenarios import Scenario

__all__ = ["CSRC", "LoadgenError", "Tools", "build_tools", "check_memory", "run_loadgen", "REC_DTYPE", "STALL_DTYPE"]

CSRC = Path(__file__).with_name("csrc") / "loadgen.c"

REC_DTYPE = np.dtype([
    ("arrival", "<i8"), ("t0", "<i8"), ("t1", "<i8"), ("t2", "<i8"),
    ("pcpu0", "<i4"), ("pcpu1", "<i4"), ("ccpu", "<i4"), ("parent", "<i4"),
])
STALL_DTYPE = np.dtype([
    ("start", "<i8"), ("dur", "<i8"), ("thread", "<i4"), ("nvcsw", "<i4"), ("nivcsw", "<i4"), ("pad", "<i4"),
])

# Headroom beyond the parents' images: page tables, the record buffers, the rest of the system.
_MEM_HEADROOM = 512 * 1024**2


class LoadgenError(RuntimeError):
    """The real load could not be built or run; the message says why."""


# ------------------------------------------------------------------ building


@dataclass(frozen=True)
class Tools:
    loadgen: Path
    helper: Path
    helper_static: bool
    compiler: str
    compiler_version: str


_tools_cache: Tools | None = None


def build_tools(force: bool = False) -> Tools:
    """Compile the load generator and the posix_spawn helper (cached by source and compiler)."""
    global _tools_cache
    if _tools_cache is not None and not force and _tools_cache.loadgen.exists():
        return _tools_cache
    cc = compiler()
    if cc is None:
        raise LoadgenError("no C compiler found (install gcc, or set $CC): the real load is a C program")
    version = compiler_version(cc) or cc
    d = build_dir("loadgen", [CSRC], version)
    loadgen, helper = d / "loadgen", d / "spawn_helper"
    meta_path = d / "build.json"
    if not force and loadgen.exists() and helper.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
    else:
        proc = compile_c(cc, ["-O2", "-pthread", str(CSRC), "-lm"], loadgen)
        if proc.returncode != 0:
            raise LoadgenError(f"compiling {CSRC.name} with {cc} failed:\n{proc.stderr.strip()}")
        static = True
        proc = compile_c(cc, ["-O2", "-static", "-nostdlib", "-DSPAWN_HELPER", "-DSPAWN_HELPER_NOLIBC", str(CSRC)],
                         helper)
        if proc.returncode != 0:
            proc = compile_c(cc, ["-O2", "-static", "-DSPAWN_HELPER", str(CSRC)], helper)
        if proc.returncode != 0:
            static = False
            proc = compile_c(cc, ["-O2", "-DSPAWN_HELPER", str(CSRC)], helper)
            if proc.returncode != 0:
                raise LoadgenError(f"compiling the spawn helper failed:\n{proc.stderr.strip()}")
        meta = {"helper_static": static, "compiler": cc, "compiler_version": version}
        tmp = meta_path.with_name(f"build.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, meta_path)
    _tools_cache = Tools(loadgen, helper, bool(meta["helper_static"]), meta["compiler"], meta["compiler_version"])
    return _tools_cache


# ------------------------------------------------------------------ running


def check_memory(scenario: Scenario) -> None:
    """Refuse a scenario whose parents' images MemAvailable cannot hold."""
    need = scenario.rss * scenario.parents
    if need == 0:
        return
    avail = mem_available()
    if avail is not None and need + _MEM_HEADROOM > avail:
        raise LoadgenError(
            f"scenario {scenario.name}: {scenario.parents} parent(s) x {scenario.rss / 1024**2:.0f} MiB "
            f"= {need / 1024**2:.0f} MiB (+{_MEM_HEADROOM // 1024**2} MiB headroom) does not fit in "
            f"MemAvailable = {avail / 1024**2:.0f} MiB; refusing to run it")


class _Terminated(BaseException):
    pass


@contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """Turn SIGTERM (and SIGHUP) into an exception while the load runs, so `finally` cleans up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # pragma: no cover - exercised by hand
        raise _Terminated(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_loadgen(args: list[str], *, timeout: float, tools: Tools | None = None,
                image: tuple[int, int] | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Run the load generator with `args`; return (its JSON summary, records, stalls). `image`: (bytes, parents)
    of the images its parents touch: their physical layout is read while it runs (the summary's
    "image_layout", forksim.validation.layouts)."""
    tools = tools or build_tools()
    probe: ParentLayouts | None = None
    with tempfile.TemporaryDirectory(prefix="forksim-loadgen-") as tmp:
        prefix = str(Path(tmp) / "run")
        cmd = [str(tools.loadgen), *args, "--helper", str(tools.helper), "--out", prefix]
        proc: subprocess.Popen | None = None
        with _terminate_as_exception():
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
                if image is not None and image[0] > 0:
                    probe = ParentLayouts(proc.pid, image[0], image[1], limit_s=timeout)
                    probe.start()
                try:
                    out, err = proc.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    raise LoadgenError(f"the load generator ran past {timeout:.0f} s and was killed") from None
            finally:
                if proc is not None:
                    end_group(proc)  # the group: hogs, parents, children, whatever is left
                layout = probe.result() if probe is not None else None
        if proc.returncode != 0:
            raise LoadgenError(f"the load generator failed (exit {proc.returncode}): {err.strip() or out.strip()}")
        try:
            meta = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise LoadgenError(f"the load generator printed no summary: {out!r} {err!r}") from None
        if layout is not None:
            meta["image_layout"] = layout
        recs = np.fromfile(prefix + ".rec", dtype=REC_DTYPE)
        stall_path = Path(prefix + ".stall")
        stalls = np.fromfile(stall_path, dtype=STALL_DTYPE) if stall_path.exists() else np.zeros(0, STALL_DTYPE)
    return meta, recs, stalls
