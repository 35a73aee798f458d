"""The lab: what measuring on this real machine needs, shared by calibration/ and validation/.

- `compiler`: the C compiler lookup, the cache root and the content-hashed build of C programs;
- `facts`: the machine's facts for a profile's provenance, MemAvailable, the EEVDF base slice;
- `pagemap`: the physical layout (scatter) of a process's anonymous pages, from /proc/PID/pagemap;
- `memory`: compacting the free lists before a calibration, and how fragmented they were (/proc/buddyinfo);
- `processes`: killing a measured program's whole process group, and asking whether any of it is left.

Nothing in the model imports it; `forksim calibrate` and `forksim validate` do.
"""

from .compiler import build_dir, cache_root, compile_c, compiler, compiler_version
from .facts import cpu_model, debugfs_base_slice, llc_bytes, machine_facts, mem_available, read_text
from .pagemap import ImageLayout, PagemapUnreadable, image_layout
from .processes import group_alive, kill_group

__all__ = ["build_dir", "cache_root", "compile_c", "compiler", "compiler_version", "cpu_model",
           "debugfs_base_slice", "llc_bytes", "machine_facts", "mem_available", "read_text", "ImageLayout", "PagemapUnreadable", "image_layout",
           "group_alive", "kill_group"]
