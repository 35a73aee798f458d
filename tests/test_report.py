"""`forksim report DIR` on a run and on a sweep directory (forksim/report.py, forksim/plots.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

from forksim.cli import build_parser, main
from forksim.config import experiment_to_toml_dict, parse_config
from forksim.io import write_json, write_table, write_text
from forksim.report import DIGITS, rounded
from forksim.runner import run_experiment

CONFIG = ('[experiment]\nname = "report-test"\nduration = "30ms"\nwarmup = "3ms"\nreplications = 3\nseed = 5\n'
          '[machine]\ncpus = 2\n[workload]\nparents = 2\n[workload.image]\nrss = "16MiB"\nthreads = 2\n'
          '[workload.child]\nlifetime = "50us"\n')


def _check_png(path: Path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    rgb = img[..., :3].reshape(-1, 3)
    assert float(rgb.var(axis=0).sum()) > 1e-3, f"{path} is (nearly) a single colour"
    assert len(np.unique(rgb, axis=0)) > 10


def _md_tables(text: str) -> list[list[list[str]]]:
    tables, cur = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-:") for c in cells):
                cur.append(cells)
        elif cur:
            tables.append(cur)
            cur = []
    if cur:
        tables.append(cur)
    return tables


def _num(cell: str):
    return None if cell == "-" else float(cell)


def _same(cell: str, value) -> bool:
    """A summary.md cell shows the summary.json value under report's rounding rule."""
    if value is None:
        return cell == "-"
    return cell == rounded(value) and _num(cell) == round(float(value), DIGITS)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    cfg = d / "c.toml"
    cfg.write_text(CONFIG)
    assert main(["run", str(cfg), "--out", str(d / "out"), "--quiet"]) == 0
    return d / "out"


def test_report_run(run_dir):
    assert main(["report", str(run_dir), "--quiet"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    pngs = sorted(run_dir.glob("*.png"))
    assert {p.name for p in pngs} >= {"latency_ecdf.png", "stages.png", "latency_percentiles.png", "lock_waits.png"}
    for p in pngs:
        _check_png(p)
    md = (run_dir / "summary.md").read_text()
    for p in pngs:
        assert f"]({p.name})" in md
    tables = _md_tables(md)
    checked = 0
    lat = next(t for t in tables if t[0][0] == "latency")
    for row in lat[1:]:
        s = summary[row[0].strip("`")]
        ci = s["ci95"]["p99"] or [None, None]  # a p99 from too few samples is not given
        for cell, value in zip(row[1:], [s["count"], s["mean"], s["p50"], s["p90"], s["p99"], s["p999"], ci[0], ci[1]]):
            assert _same(cell, value), (row[0], cell, value)
            checked += 1
    assert len(lat) >= 4
    thr = next(t for t in tables if t[0][0] == "quantity" and len(t[0]) == 4)
    tci = summary["throughput_per_s"]["ci95"]
    uci = summary["cpu_utilization_ci95"]
    assert [_same(c, v) for c, v in zip(thr[1][1:], [summary["throughput_per_s"]["mean"], *tci])] == [True] * 3
    assert [_same(c, v) for c, v in zip(thr[2][1:], [summary["cpu_utilization"], *uci])] == [True] * 3
    stages = next(t for t in tables if t[0] == ["stage", "µs"])
    assert {r[0].strip("`") for r in stages[1:]} == set(summary["stage_us"])
    for name, cell in stages[1:]:
        assert _same(cell, summary["stage_us"][name.strip("`")])
        checked += 1
    locks = next(t for t in tables if t[0][0] == "lock")
    for row in locks[1:]:
        v = summary["lock_wait_us"][row[0].strip("`")]
        for cell, value in zip(row[1:], [v["acquisitions"], v["mean"], v["p99"], v["max"]]):
            assert _same(cell, value)
            checked += 1
    assert checked > 30
    # every number in the prose is a config value or one of summary.json's
    assert f"{summary['forks']} creations measured" in md


def test_report_run_csv_and_out(tmp_path, run_dir):
    d = tmp_path / "csvrun"
    d.mkdir()
    for name in ("summary.json", "config.resolved.toml"):
        (d / name).write_text((run_dir / name).read_text())
    pd.read_parquet(run_dir / "forks.parquet").to_csv(d / "forks.csv", index=False)
    assert main(["report", str(d), "--out", str(tmp_path / "figs"), "--quiet"]) == 0
    assert (tmp_path / "figs" / "summary.md").exists()
    for p in (tmp_path / "figs").glob("*.png"):
        _check_png(p)


def test_report_bad_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "neither a run directory" in err and "Traceback" not in err
    assert not list((tmp_path / "empty").iterdir())


def make_sweep(out: Path, values=(1, 2, 4), key="workload.parents") -> Path:
    """A tiny sweep directory in the contract's layout, made with the Python API."""
    base = parse_config({"experiment": {"name": "tiny-sweep", "duration": "20ms", "warmup": "2ms", "replications": 3},
                         "machine": {"cpus": 2}, "workload": {"image": {"rss": "8MiB"}}, "sweep": {key: list(values)}})
    write_text(out / "config.resolved.toml", tomli_w.dumps(experiment_to_toml_dict(base)))
    rows = []
    for i, v in enumerate(values):
        exp = base.with_overrides({key: v})
        res = run_experiment(exp)
        name = f"{i:04d}"
        write_json(out / "points" / name / "summary.json", res.summary)
        write_text(out / "points" / name / "config.resolved.toml", tomli_w.dumps(experiment_to_toml_dict(exp)))
        for rep, sub in res.records.groupby("replication"):
            rows.append({"point": name, key: v, "replication": int(rep), "forks": len(sub)})
    write_table(out / "results.parquet", pd.DataFrame(rows))
    return out


def _check_sweep_report(d: Path, key: str) -> None:
    pngs = sorted(d.glob("sweep_*.png"))
    assert {p.name for p in pngs} >= {"sweep_throughput.png", "sweep_fork_latency.png", "sweep_throughput_latency.png"}
    for p in pngs:
        _check_png(p)
    md = (d / "summary.md").read_text()
    table = next(t for t in _md_tables(md) if t[0][0] == "point")
    header = [h.strip("`") for h in table[0]]
    assert key in header
    assert len(table) - 1 == len(list((d / "points").glob("*/summary.json")))
    for row in table[1:]:
        s = json.loads((d / "points" / row[0].strip("`") / "summary.json").read_text())
        cells = dict(zip(header, row))
        assert _same(cells["forks"], s["forks"])
        assert _same(cells["throughput"], s["throughput_per_s"]["mean"])
        assert _same(cells["thr. CI low"], s["throughput_per_s"]["ci95"][0])
        assert _same(cells["thr. CI high"], s["throughput_per_s"]["ci95"][1])
        assert _same(cells["fork p50"], s["fork_latency_us"]["p50"])
        assert _same(cells["fork p99"], s["fork_latency_us"]["p99"])
        p99_ci = s["fork_latency_us"]["ci95"]["p99"] or [None, None]  # none for a p99 from too few samples
        assert _same(cells["fork p99 CI low"], p99_ci[0])
        assert _same(cells["fork p99 CI high"], p99_ci[1])
        assert _same(cells["round trip p99"], s["roundtrip_latency_us"]["p99"])
        assert _same(cells["cpu_utilization"], s["cpu_utilization"])


def test_report_sweep_made_here(tmp_path):
    d = make_sweep(tmp_path / "sweep")
    assert main(["report", str(d), "--quiet"]) == 0
    _check_sweep_report(d, "workload.parents")


def test_report_sweep_from_forksim_sweep(tmp_path):
    parser = build_parser()
    if "sweep" not in parser._subparsers._group_actions[0].choices:
        pytest.skip("forksim sweep is not in this installation")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[experiment]\nname = "sw"\nduration = "20ms"\nwarmup = "2ms"\nreplications = 2\n'
                   '[workload.image]\nrss = "8MiB"\n[sweep]\n"workload.parents" = [1, 2]\n')
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "sw")]) == 0
    assert main(["report", str(tmp_path / "sw"), "--quiet"]) == 0
    _check_sweep_report(tmp_path / "sw", "workload.parents")


def test_rounding_rule():
    assert rounded(None) == "-" and rounded(3) == "3" and rounded(2.345678) == f"{round(2.345678, DIGITS):.{DIGITS}f}"
    assert rounded(float("nan")) == "-"
    assert re.fullmatch(r"-?\d+\.\d{%d}" % DIGITS, rounded(-0.004))
