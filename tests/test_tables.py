"""The stage table (kernel/stages.py) and the kind table (kernel/flags.py), and what derives from them."""

from __future__ import annotations

import typing

import pytest

from forksim import plots, profile_compare, trace
from forksim.config import CLONE_KINDS, ChildSection, parse_config
from forksim.errors import ConfigError
from forksim.kernel import flags, stages
from forksim.profile import STAGES as PROFILE_STAGES
from forksim.profile import Warmth, load_profile
from forksim.work import estimate_work


def test_kinds_derive_their_attributes_from_their_flags():
    assert flags.COPIES_MM == {"fork", "fork_exec"}
    assert flags.VFORK_WAIT == {"vfork", "posix_spawn"}
    assert flags.EXECS == {"posix_spawn", "fork_exec"}
    assert flags.NEW_PROCESS == set(flags.KINDS) - {"thread"}
    for kind in flags.KINDS.values():
        assert kind.copies_mm == (not kind.shares_mm) == ("CLONE_VM" not in kind.flags)
        assert kind.new_process == (not kind.clone_thread) == ("CLONE_THREAD" not in kind.flags)
        assert not (kind.vfork_wait and kind.copies_mm)  # CLONE_VFORK comes with CLONE_VM in every kind
    assert flags.kinds_where(shares_mm=True) == ("vfork", "posix_spawn", "thread")
    assert flags.DEFAULT_KIND == "fork"


def test_config_clone_is_the_kind_table():
    assert typing.get_args(ChildSection.model_fields["clone"].annotation) == CLONE_KINDS == tuple(flags.KINDS)
    assert parse_config({}).workload.child.clone == flags.DEFAULT_KIND
    with pytest.raises(ConfigError, match="workload.child.clone"):
        parse_config({"workload": {"child": {"clone": "spawn"}}})
    # a server snapshots with the one kind that copies the mm and does not exec
    with pytest.raises(ConfigError, match='workload.child.clone must be "fork"'):
        parse_config({"workload": {"kind": "server", "rate": "100/s", "child": {"clone": "fork_exec"}}})


def test_every_stage_field_names_something_that_exists():
    kind_attrs = {a for a in flags.Kind.__slots__ if isinstance(getattr(flags.KINDS["fork"], a), bool)}
    for stage in stages.STAGES.values():
        assert stage.kinds in kind_attrs | {""}, stage.name
        assert stage.paid_by in (stages.PARENT, stages.CHILD, ""), stage.name
        assert stage.per in (stages.PER_CREATION, stages.PER_SHARED_PAGE), stage.name
        assert stage.label and stage.kernel
    assert set(stages.COLD_STAGES) <= {s.name for s in stages.STAGES.values() if s.walks_image}


def test_users_derive_from_the_stage_table():
    assert list(PROFILE_STAGES) == list(stages.STAGES)
    assert plots.STAGE_LABELS == {n: p.label for n, p in stages.CALL_PARTS.items()}
    assert profile_compare.FORK_PATH == stages.FORK_PATH
    assert set(trace._STAGE_ARGS) <= set(stages.STAGES)
    assert stages.stage_label("dup_mmap") == "dup_mmap (VMAs + page tables)"
    assert stages.stage_label("no_such_stage") == "no_such_stage"


def test_warmth_prices_only_the_cold_stages():
    terms = {"fixed_us": 1.0}
    base = {"tau_us": 1.0, "footprint_bytes": 1.0, "source": "assumption: test"}
    assert set(Warmth.model_validate({**base, "stages": {s: terms for s in stages.COLD_STAGES}}).stages) \
        == set(stages.COLD_STAGES)
    with pytest.raises(ValueError):
        Warmth.model_validate({**base, "stages": {"wait_reap": terms}})


def _estimate(kind: str, rss: str, cow: float = 0.0):
    exp = parse_config({"machine": {"profile": "default"},
                        "workload": {"image": {"rss": rss}, "child": {"clone": kind, "cow_write_fraction": cow}}})
    return estimate_work(exp, load_profile("default"))


def test_estimate_charges_the_image_walks_only_to_the_kinds_that_copy_the_mm():
    for kind in flags.KINDS:
        small, big = _estimate(kind, "4MiB"), _estimate(kind, "1GiB")
        if kind in flags.COPIES_MM:  # dup_mmap and exit_mmap walk the image: fewer creations fit
            assert big.creations < small.creations
            assert _estimate(kind, "1GiB", cow=0.5).creations < big.creations  # the child's COW copies
        else:
            assert big.creations == small.creations
            assert _estimate(kind, "1GiB", cow=0.5).creations == big.creations
    # a thread pays neither dup_mm nor dup_mmap: its floor is below a fork's. (Not necessarily below a
    # vfork's: the thread's setup is fitted to pthread_create's untraced call, which holds glibc's own work,
    # its stack and TLS and the signal mask around clone3: calibration.families.)
    assert _estimate("thread", "64MiB").creation_floor_us < _estimate("fork", "64MiB").creation_floor_us
