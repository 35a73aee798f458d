"""Writing results atomically: a temporary file in the same folder, then a rename, so a reader
(or a resumed sweep) never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd

__all__ = ["atomic_write", "write_json", "write_text", "write_table", "read_table", "read_metadata"]


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp_path)`, fsync, then rename onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)  # mkstemp makes the file 0600: give it the mode a plain open() would
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_table(path: str | Path, df: pd.DataFrame, metadata: dict[str, str] | None = None) -> Path:
    """Parquet when the name ends in .parquet (with `metadata` as the file's key-value metadata,
    beside pandas' own, so categoricals read back as categoricals), else CSV (no metadata)."""
    path = Path(path)
    if path.suffix == ".parquet":
        def parquet(p: Path) -> None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if metadata:
                extra = {k.encode(): v.encode() for k, v in metadata.items()}
                table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
            pq.write_table(table, p)

        return atomic_write(path, parquet)
    return atomic_write(path, lambda p: df.to_csv(p, index=False))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The forksim key-value metadata of a parquet file (`forksim.config`, `forksim.profile`,
    `forksim.seed`; see `RunResult.metadata`); empty for a file without them."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"forksim.")}


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
