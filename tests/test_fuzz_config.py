"""Fuzzing the config loader: whatever the mapping or the --set string, the loader returns an
Experiment or raises ConfigError (one message), never anything else."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from forksim.config import Experiment, apply_overrides, parse_config, parse_override
from forksim.errors import ConfigError

FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _names(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        out.append(prefix + name)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_names(ann, f"{prefix}{name}."))
    return out


DOTTED = _names(Experiment)
KEYS = sorted({k.rsplit(".", 1)[-1] for k in DOTTED})
QUANTITIES = ["256MiB", "1GiB", "0", "2ms", "10s", "5000/s", "-1s", "1e400", "nan", "inf", "1PiB", "3 furlongs",
              "uniform", "fork", "vfork", "thread", "open", "closed", "server", "bursty", "poisson", "default",
              "dup_mmap.per_pte_us", "", " ", "../..", "0.5", "1e9/s", "64TiB", "65TiB"]

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=70_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(QUANTITIES),
    st.text(max_size=8),
)
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(DOTTED), st.text(max_size=8))
values = st.recursive(scalars, lambda ch: st.lists(ch, max_size=3) | st.dictionaries(keys, ch, max_size=3),
                      max_leaves=4)
configs = st.recursive(
    st.dictionaries(keys, values, max_size=4),
    lambda ch: st.dictionaries(keys, st.one_of(values, ch), max_size=5),
    max_leaves=10,
)


@FUZZ
@given(configs)
def test_parse_config_only_raises_config_error(data):
    try:
        exp = parse_config(data, source="fuzz.toml")
    except ConfigError as exc:
        assert str(exc).strip() and "\n" not in str(exc)
        return
    assert isinstance(exp, Experiment)


override_values = st.one_of(st.sampled_from(QUANTITIES), st.text(max_size=12),
                            st.integers().map(str), st.floats().map(repr),
                            st.sampled_from(["[1, 2]", "{a = 1}", "true", '"x"', "[[1]]", "{}", "=", "'"]))
override_keys = st.one_of(st.sampled_from(DOTTED), st.text(max_size=12),
                          st.sampled_from(DOTTED).map(lambda k: k + ".x"),
                          st.sampled_from(["whatif.dup_mmap.per_pte_us", "whatif.", "whatif", "source", "sweep.x"]))
overrides = st.one_of(st.text(max_size=30), st.tuples(override_keys, override_values).map(lambda kv: "=".join(kv)))
BASE = {"experiment": {"duration": "10ms"}, "workload": {"parents": 2, "image": {"rss": "1MiB"}}}


@FUZZ
@given(st.lists(overrides, min_size=1, max_size=3), st.sampled_from([BASE, {}, {"workload": 5}, {"whatif": 3}]))
def test_overrides_only_raise_config_error(texts, base):
    data = copy.deepcopy(base)
    try:
        pairs = dict(parse_override(t) for t in texts)
        data = apply_overrides(data, pairs, source="fuzz.toml")
        exp = parse_config(data, source="fuzz.toml")
    except ConfigError as exc:
        assert str(exc).strip()
        return
    assert isinstance(exp, Experiment)
    assert base == copy.deepcopy(base)  # overrides never touch the caller's mapping
