"""The notebooks: committed without outputs, and each runs top to bottom headless in small mode."""

from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
EXPECTED = {"01-quickstart", "02-calibration", "03-validation", "04-capacity-planning", "05-redis-bgsave"}
LIMIT_S = 120


def test_all_notebooks_present():
    assert {p.stem for p in NOTEBOOKS} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs (strip them before committing)"
            assert cell.execution_count is None, f"{path.name}: a code cell has an execution count"


def _code(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_use_only_the_top_level_api(path):
    """README: the notebooks use only `import forksim` and the names in `forksim.__all__` (with the
    public submodules listed there, `forksim.plots` and `forksim.validation`, through their own __all__)."""
    import importlib

    import forksim

    text = _code(path)
    assert not re.search(r"^\s*(from\s+forksim\b|import\s+forksim\.)", text, re.M), "imports a forksim submodule"
    used = set(re.findall(r"(?<![\w.])forksim\.([A-Za-z_]\w*)", text))
    assert used and used <= set(forksim.__all__), used - set(forksim.__all__)
    for sub, name in re.findall(r"(?<![\w.])forksim\.(plots|validation)\.([A-Za-z_]\w*)", text):
        assert name in importlib.import_module(f"forksim.{sub}").__all__, f"forksim.{sub}.{name}"


def test_notebook_05_takes_the_what_if_factors_from_the_configs():
    """The what-ifs are the shipped configs' [whatif] tables, not numbers repeated in the notebook."""
    text = _code(next(p for p in NOTEBOOKS if p.stem == "05-redis-bgsave"))
    assert not re.search(r"whatif\.\w|_us\"\s*:\s*[\d.]", text), "a what-if factor written into the notebook"
    root = NOTEBOOKS[0].parent.parent / "experiments"
    for name in ("redis-bgsave.toml", "on-demand-fork.toml", "async-fork.toml"):
        assert f'"{name}"' in text
        if name != "redis-bgsave.toml":
            assert tomllib.loads((root / name).read_text())["whatif"]  # there are factors to take


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_small_mode(path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("FORKSIM_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "FORKSIM_SMALL" in text
    # the public API only: no private forksim names
    assert "forksim._" not in text and "from forksim.commands" not in text
    client = NotebookClient(nb, timeout=LIMIT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.monotonic()
    client.execute()
    took = time.monotonic() - start
    assert took < LIMIT_S, f"{path.name} took {took:.0f} s in small mode"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    assert images >= 2, f"{path.name} drew {images} figures"
