"""The records table: creations kept as objects only while in flight, then as typed columns in
entry order, whatever order they are reaped in."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forksim.metrics import Creation, Records


def _fill(rec: Creation, t: float) -> None:
    rec.start, rec.fork_ret, rec.reap = t, t + 1.0, t + 2.5
    rec.parent_cpu, rec.child_cpu, rec.stack_hit = 1, 0, False
    rec.setup_us, rec.tasklist_wait = 0.25, 0.125


@pytest.mark.parametrize("n", [5, 8199])
def test_rows_in_entry_order_whatever_the_reap_order(n):
    rng = np.random.default_rng(1)
    records = Records()
    recs = [records.new("fork" if i % 3 else "vfork", parent=i % 4, arrival=float(i)) for i in range(n)]
    assert records.in_flight == n and len(records) == n
    in_flight = {int(i) for i in rng.choice(n, size=3, replace=False)}
    for i in rng.permutation(n):  # reaped in a random order; three never are
        if i in in_flight:
            continue
        _fill(recs[i], float(i))
        records.done(recs[i])
    assert records.in_flight == 3
    df = records.frame()
    assert list(df.columns) == list(Creation.FIELDS)
    assert df["seq"].tolist() == list(range(n))
    assert df["kind"].tolist() == ["fork" if i % 3 else "vfork" for i in range(n)]
    assert df["parent"].tolist() == [i % 4 for i in range(n)]
    assert str(df["seq"].dtype) == "int64" and str(df["parent_cpu"].dtype) == "int64"
    assert df["stack_hit"].dtype == bool and df["arrival"].dtype == np.float64
    done = ~df["seq"].isin(in_flight)
    assert (df.loc[done, "reap"] - df.loc[done, "start"] == 2.5).all()
    assert not df.loc[done, "stack_hit"].any()
    assert df.loc[~done, "reap"].isna().all() and df.loc[~done, "stack_hit"].all()  # as left in flight
    assert (df.loc[~done, "parent_cpu"] == -1).all()


def test_an_empty_replication_has_an_empty_table():
    df = Records().frame()
    assert len(df) == 0 and list(df.columns) == list(Creation.FIELDS)


def test_a_simulated_replication_records_every_creation():
    from forksim.bench import scenario_experiment
    from forksim.runner import run_experiment

    res = run_experiment(scenario_experiment(16, 0, "closed", 600))
    df = res.records
    assert df["seq"].tolist() == list(range(len(df)))
    assert df["reap_us"].notna().sum() >= 600
    assert res.summary["in_flight_at_end"] == int(df["reap_us"].isna().sum())
    assert all(math.isfinite(x) for x in df["start_us"])
