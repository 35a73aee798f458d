"""The C compiler and the build cache of the programs that measure this machine.

C programs (calibration's microbenchmarks, validation's load generator) are compiled at run time with
the system compiler, never into the package: each build goes to its own folder under the cache root,
named by a hash of its sources and of the compiler's version, so a changed source or compiler builds
afresh and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

__all__ = ["compiler", "compiler_version", "cache_root", "build_dir", "compile_c", "LAB_CSRC"]

# lab.h: the helpers the measuring programs share (clocks, busy wait, pinning); on every build's
# include path and in every build's hash
LAB_CSRC = Path(__file__).parent / "csrc"

# A compile that takes longer than this is stuck (the sources build in about a second).
_COMPILE_TIMEOUT_S = 300


def compiler() -> str | None:
    """The C compiler to use: $CC, else gcc, cc or clang (the first on PATH); None when there is none."""
    for cand in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if cand and shutil.which(cand):
            return cand
    return None


def compiler_version(cc: str) -> str | None:
    """The first line of `cc --version` (the compiler and its version); None when it does not run."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.splitlines()
    return lines[0] if lines else cc


def cache_root() -> Path:
    """forksim's cache folder: $FORKSIM_CACHE_DIR/forksim, else $XDG_CACHE_HOME/forksim, else
    ~/.cache/forksim; a per-user folder in the temp dir when that one is not writable."""
    base = os.environ.get("FORKSIM_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) / "forksim" if base else Path.home() / ".cache" / "forksim"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}.{threading.get_ident()}"  # builds run in threads side by side
        probe.touch()
        probe.unlink()
        return root
    except OSError:
        return Path(tempfile.gettempdir()) / f"forksim-{os.getuid()}"


def build_dir(name: str, sources: list[Path], version: str) -> Path:
    """The (created) cache folder `<name>-<hash>` of one build: the hash covers the compiler's version
    and each source's name and bytes, the lab's shared headers included."""
    h = hashlib.sha256(version.encode())
    for src in [*sources, *sorted(LAB_CSRC.glob("*.h"))]:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    out = cache_root() / f"{name}-{h.hexdigest()[:16]}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def compile_c(cc: str, args: list[str], out: Path) -> subprocess.CompletedProcess:
    """Run `cc -I LAB_CSRC ARGS -o OUT`; the binary appears atomically (a concurrent build never sees
    half of it). The result's returncode and stderr say whether and why it failed (124: it timed out)."""
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}.{threading.get_ident()}")
    cmd = [cc, "-I", str(LAB_CSRC), *args, "-o", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc = subprocess.CompletedProcess(cmd, 124, "", f"timed out after {_COMPILE_TIMEOUT_S} s")
    if proc.returncode == 0:
        os.replace(tmp, out)
    else:
        tmp.unlink(missing_ok=True)
    return proc
