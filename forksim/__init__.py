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

# Imported here, not on first use: importing the submodule `forksim.sweep` binds the package's
# `sweep` attribute to the module, and a lazy `__getattr__` is no longer asked after that (the name
# would be a function once, then a module). Bound after the import, the names stay the functions.
from .plan import plan  # noqa: E402
from .sweep import sweep  # noqa: E402

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

