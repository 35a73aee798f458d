"""forksim: a discrete-event model of Linux process creation, calibrated on real machines.

The public API mirrors the commands::

    import forksim
    exp = forksim.load_experiment("experiments/quickstart.toml", {"workload.parents": 4})
    result = forksim.run(exp)            # RunResult: .summary (summary.json), .records (DataFrame)
    forksim.predict(256 * 2**20)         # one creation on an idle machine
"""

from __future__ import annotations

from .config import Experiment, load_experiment, parse_config
from .errors import ConfigError, ForksimError, MeasurementError, ProfileError
from .predict import predict
from .profile import Profile, load_profile, shipped_profiles
from .runner import RunResult, run_experiment

run = run_experiment

__all__ = [
    "Experiment",
    "load_experiment",
    "parse_config",
    "run",
    "run_experiment",
    "RunResult",
    "predict",
    "Profile",
    "load_profile",
    "shipped_profiles",
    "ForksimError",
    "ConfigError",
    "ProfileError",
    "MeasurementError",
    "sweep",
    "plan",
]


def __getattr__(name: str):
    # sweep and plan pull in dask and friends: import them on first use.
    if name == "sweep":
        from .sweep import sweep

        return sweep
    if name == "plan":
        from .plan import plan

        return plan
    raise AttributeError(f"module 'forksim' has no attribute {name!r}")
