"""Profiles that travel: host fingerprints, the user's profile store, `auto` resolution, the
off-host warning, and which profile a result says it used."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import REFERENCE_PROFILE

import forksim.store as store
from forksim.cli import main as cli_main
from forksim.config import parse_config
from forksim.host import HostFingerprint, differences, host_from_provenance, this_host
from forksim.profile import load_profile, profile_path
from forksim.runner import run_experiment

INTEL = HostFingerprint(cpu_vendor="GenuineIntel", cpu_model="Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
                        kernel="6.18.44-fc-v1045", cpus=2, hypervisor="KVM")


@pytest.fixture
def xdg(tmp_path, monkeypatch) -> Path:
    """An empty profile store of this test's own (and the off-host warning reset)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(store.PROFILE_ENV, raising=False)  # `auto` as a user gets it
    monkeypatch.setattr(store, "_warned", set())
    return tmp_path / "xdg" / "forksim" / "profiles"


def _store_copy(d: Path, name: str, host: HostFingerprint, date: str) -> Path:
    """The shipped default, re-badged as a profile measured on `host` at `date`, in the store."""
    data = json.loads(profile_path("default").read_text())
    data["name"], data["host"] = name, host.model_dump(mode="json", exclude_none=True)
    data["provenance"]["date"] = date
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_matching_needs_vendor_model_kernel_series_cpus_and_hypervisor():
    a = HostFingerprint(cpu_vendor="AuthenticAMD", cpu_model="AMD EPYC", kernel="6.18.44-a", cpus=2, hypervisor="KVM",
                        microcode="0x1", mem_total_bytes=1)
    assert a.matches(a.model_copy(update={"kernel": "6.18.2-b", "microcode": "0x2", "mem_total_bytes": 2}))
    for change in ({"cpu_model": "AMD EPYC 9R14"}, {"kernel": "6.19.1"}, {"cpus": 4}, {"hypervisor": "none"},
                   {"cpu_vendor": "GenuineIntel"}):
        assert not a.matches(a.model_copy(update=change)), change
    assert not a.matches(a.model_copy(update={"hypervisor": None}))  # unknown never matches
    # family, model number and cpuidle driver: compared where both hosts know them (two EPYC generations under
    # the one name 'AMD EPYC', and a kernel that polls before it halts an idle vCPU, were two hosts of one name)
    milan = a.model_copy(update={"cpu_family": 25, "cpu_model_number": 1, "cpuidle_driver": "none"})
    assert milan.matches(a)
    for change in ({"cpu_model_number": 17}, {"cpuidle_driver": "haltpoll"}):
        assert not milan.matches(milan.model_copy(update=change)), change
    assert "family 25 model 1" in milan.describe() and "cpuidle none" in milan.describe()
    assert differences(a, a.model_copy(update={"cpus": 4})) == ["cpus: 2 -> 4"]
    assert a.slug() == "amd-epyc-2cpu-linux6.18-kvm"
    # two hosts that do not match never share a stored profile's file (the 12-05 Intel host, family 6 model 207,
    # would have overwritten the model 167 one's)
    assert milan.slug() == "amd-epyc-family25-model1-2cpu-linux6.18-kvm"
    assert milan.model_copy(update={"cpu_model_number": 17, "cpuidle_driver": "haltpoll"}).slug() == \
        "amd-epyc-family25-model17-2cpu-linux6.18-kvm-haltpoll"
    assert INTEL.slug() == "intel-xeon-platinum-8375c-2cpu-linux6.18-kvm"


def test_this_host_reads_the_machine():
    h = this_host()
    assert h.cpus and h.cpus >= 1 and h.kernel and h.kernel_series
    assert h.cpu_model


def test_old_profiles_fall_back_to_their_provenance_and_published_has_no_host():
    prov = {"cpu_model": "AMD EPYC", "kernel": "6.18.44-fc-v669", "cpus": 2}
    assert host_from_provenance(prov).cpu_vendor == "AuthenticAMD"
    assert load_profile("published").fingerprint() is None
    assert load_profile("default").fingerprint().cpu_model == "AMD EPYC"


def test_auto_uses_the_newest_matching_stored_profile_and_results_say_so(xdg, tiny_dict):
    here = this_host()
    _store_copy(xdg, "older", here, "2026-01-01T00:00:00+00:00")
    newest = _store_copy(xdg, "newer", here, "2026-06-01T00:00:00+00:00")
    _store_copy(xdg, "intel", INTEL, "2027-01-01T00:00:00+00:00")  # newest of all, but another host
    exp = parse_config(tiny_dict(), source="tiny")  # machine.profile left at 'auto'
    assert exp.machine.profile == str(newest)
    res = run_experiment(exp)
    used = res.summary["profile_used"]
    assert res.summary["profile"] == "newer" and used["name"] == "newer"
    assert used["sha256"] == hashlib.sha256(newest.read_bytes()).hexdigest()
    assert used["host_cpu"] == here.cpu_model
    # a config that names a profile gets it; a stored profile is named by its file name
    assert parse_config(tiny_dict({"machine": {"profile": "default"}}), source="t").machine.profile == "default"
    assert parse_config(tiny_dict({"machine": {"profile": "intel"}}), source="t").machine.profile == str(xdg / "intel.json")


def test_a_config_without_a_machine_table_sees_a_profile_stored_after_import(xdg):
    bare = {"experiment": {"name": "bare"}}  # machine.profile left to its default, 'auto'
    assert parse_config(bare, source="t").machine.profile == store.auto_profile()
    stored = _store_copy(xdg, "mine", this_host(), "2026-06-01T00:00:00+00:00")  # calibrated in this session
    assert parse_config(bare, source="t").machine.profile == str(stored)


def test_forksim_profile_pins_what_auto_means(xdg, monkeypatch, tiny_dict):
    _store_copy(xdg, "mine", this_host(), "2026-06-01T00:00:00+00:00")
    monkeypatch.setenv(store.PROFILE_ENV, "published")
    assert store.auto_profile() == "published"
    assert parse_config(tiny_dict(), source="t").machine.profile == "published"
    monkeypatch.setenv(store.PROFILE_ENV, "")  # empty: as unset
    assert store.auto_profile() == str(xdg / "mine.json")


def test_no_matching_stored_or_shipped_profile_means_default(xdg, tiny_dict, monkeypatch):
    # a host no shipped profile was measured on (the tests run on either kind of host)
    monkeypatch.setattr(store, "this_host", lambda: INTEL.model_copy(update={"cpu_model": "Intel(R) Xeon(R) Gold 6354"}))
    _store_copy(xdg, "intel", INTEL, "2027-01-01T00:00:00+00:00")
    assert parse_config(tiny_dict(), source="tiny").machine.profile == "default"


def test_a_shipped_profile_of_this_kind_of_host_comes_before_default(xdg, monkeypatch, tmp_path):
    import forksim.profile as profile_mod

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "default.json").write_bytes(profile_path("default").read_bytes())
    _store_copy(shipped, "intel-xeon", INTEL, "2026-12-02T00:00:00+00:00")
    monkeypatch.setattr(profile_mod, "_SHIPPED", shipped)
    monkeypatch.setattr(store, "this_host", lambda: INTEL)
    assert store.auto_profile() == "intel-xeon"
    mine = _store_copy(xdg, "mine", INTEL, "2026-01-01T00:00:00+00:00")  # a stored one wins, however old
    assert store.auto_profile() == str(mine)
    monkeypatch.setattr(store, "this_host", lambda: load_profile("default").fingerprint())
    assert store.auto_profile() == "default"  # the AMD host: the default is its own shipped profile


def test_off_host_profile_warns_once_naming_both_cpus(xdg, tmp_path, capsys):
    intel = _store_copy(tmp_path, "intel-host", INTEL, "2027-01-01T00:00:00+00:00")
    for _ in range(2):  # one line per process, however often the profile is loaded
        assert cli_main(["predict", "--rss", "1MiB", "--samples", "20", "--profile", str(intel)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("forksim: warning: profile 'intel-host' was measured on Intel(R) Xeon(R)")
    assert this_host().cpu_model in err[0] and "forksim calibrate --quick" in err[0]


def test_the_default_warns_on_another_kind_of_host(xdg, monkeypatch, capsys):
    monkeypatch.setattr(store, "this_host", lambda: INTEL)  # as if forksim ran on the Intel host
    assert store.auto_profile() == "default"
    assert cli_main(["predict", "--rss", "1MiB", "--samples", "20", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["profile_used"]["name"] == "default"
    assert "measured on AMD EPYC" in out.err and "this host is Intel(R) Xeon(R)" in out.err
    assert store.warn_if_off_host(load_profile("published")) is None  # no host, no warning


def test_resolved_config_records_the_stored_profile_used(xdg, forksim_cli, tiny_toml, tmp_path):
    path = _store_copy(xdg, "mine", this_host(), "2026-06-01T00:00:00+00:00")
    r = forksim_cli("run", tiny_toml(), "--out", tmp_path / "out", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    assert f'profile = "{path}"' in (tmp_path / "out" / "config.resolved.toml").read_text()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["profile_used"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_profiles_lists_stored_and_compares_with_a_figure(xdg, forksim_cli, tmp_path):
    _store_copy(xdg, "intel", INTEL, "2027-01-01T00:00:00+00:00")
    r = forksim_cli("profiles", "--json")
    assert r.returncode == 0, r.stderr
    rows = {p["name"]: p for p in json.loads(r.stdout)["profiles"]}
    assert rows["intel"]["where"] == "stored" and rows["intel"]["status"] == "other host"
    assert rows["intel"]["host"]["cpu_vendor"] == "GenuineIntel"
    assert rows["published"]["status"] == "no host"
    r = forksim_cli("profiles", "--compare", "default", "intel", "--figure", tmp_path / "cmp.png", "--json")
    assert r.returncode == 0, r.stderr
    cmp = json.loads(r.stdout)
    fork = next(m for m in cmp["medians"] if m["stage"].startswith("fork()"))
    assert fork["RSS 1 GiB"]["ratio"] == pytest.approx(1.0)  # the same costs under another host's name
    assert any(t["stage"] == "dup_mmap" and t["term"] == "per_pte_us" for t in cmp["terms"])
    assert (tmp_path / "cmp.png").stat().st_size > 10_000
    r = forksim_cli("profiles", "--compare", "default", "nosuch")
    assert r.returncode == 2 and "nosuch" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_every_size_dependent_cost_says_how_it_scales_and_where_from():
    prof = load_profile("default")
    for name in ("lock_hold", "ipi_and_idle_wake", "tlb_shootdown", "page_table_copy", "numa_distance",
                 "scheduler_slice"):
        rule = prof.scaling[name]
        assert rule.depends_on and rule.model
        assert rule.source.split(":")[0] in ("measured", "derived", "assumption")


def test_other_hosts_section_puts_published_figures_beside_predictions():
    from forksim.validation.other_hosts import PUBLISHED_FORKS, other_hosts_rows, render_other_hosts

    rows = other_hosts_rows(lambda gib: 9.0 * gib)  # 9 ms per GiB, like the published profile's slope
    assert len(rows) == len(PUBLISHED_FORKS)
    xeon = next(r for r in rows if r["by_construction"])
    assert xeon["ratio"] == pytest.approx(9.0 / (62.0 / 6.9))
    text = render_other_hosts(rows)
    assert text.startswith("## Other hosts") and "Redis documentation" in text and "On-demand-fork" in text
    assert "slower than predicted" in text  # the old Xen guests are named as outside the model


def test_the_slice_follows_the_kernels_cpu_scaling():
    from forksim.runner import scaled_slice_us

    prof = load_profile(REFERENCE_PROFILE)  # measured on 2 CPUs: 1.5 ms (the reference profile)
    assert prof.scheduler.slice.fixed_us == pytest.approx(1500.0)
    got = {n: scaled_slice_us(prof, n) for n in (1, 2, 3, 4, 8, 256)}
    assert got == pytest.approx({1: 750.0, 2: 1500.0, 3: 1500.0, 4: 2250.0, 8: 3000.0, 256: 3000.0})
    assert scaled_slice_us(load_profile("published"), 8) == pytest.approx(3000.0)  # borrowed from a 2-CPU host


def test_compare_shows_the_cache_miss_term_and_a_share_only_one_profile_measured():
    from forksim.profile_compare import compare_profiles
    from forksim.profile_terms import CacheCurve

    a = load_profile("default")
    curve = CacheCurve(bytes=[1e6, 1e8], miss=[0.0, 1.0], source="assumption: a test curve")
    stages = dict(a.stages)
    stages["dup_mmap"] = stages["dup_mmap"].model_copy(update={"per_pte_miss_us": 0.02, "cache_curve": curve})
    placement = {k: v for k, v in a.placement.items() if k != "thread_local_when_idle"}
    b = a.model_copy(update={"stages": stages, "placement": placement})
    cmp = compare_profiles(a, b)
    miss = next(t for t in cmp["terms"] if t["stage"] == "dup_mmap" and t["term"] == "per_pte_miss_us")
    assert miss["a"] == 0.0 and miss["b"] == 0.02 and miss["ratio"] is None
    thread = next(m for m in cmp["machine"] if m["what"] == "placement.thread_local_when_idle (share)")
    assert thread["a"] == a.placement["thread_local_when_idle"].value and thread["b"] is None
    assert thread["ratio"] is None


def test_compare_shows_the_cross_cpu_terms_where_either_profile_has_them():
    from forksim.profile import ConcurrentCreation
    from forksim.profile_compare import compare_profiles

    a = load_profile(REFERENCE_PROFILE)
    assert a.concurrent_creation is None
    b = a.model_copy(update={"concurrent_creation": ConcurrentCreation(fork_us=6.0, exit_us=9.0,
                                                                         source="assumption: test")})
    rows = {m["what"]: m for m in compare_profiles(a, b)["machine"]}
    assert rows["concurrent_creation.fork_us (us)"] == {"what": "concurrent_creation.fork_us (us)", "a": None,
                                                        "b": 6.0, "ratio": None}
    assert rows["concurrent_creation.exit_us (us)"]["b"] == 9.0
    assert not any(w.startswith("remote_free") for w in rows)  # neither profile has it: no row
