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
from .display import SweepTable  # noqa: E402
from .plan import PlanResult, plan  # noqa: E402
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
    "PlanResult",
    "SweepTable",
    "write_trace",
    "read_metadata",
    "plots",
    "validation",
]

# Imported on first use (they pull in matplotlib and the validation harness): name -> (module,
# attribute or None for the module itself), bound once imported.
_LAZY = {
    "write_trace": (".trace", "write_trace"),
    "read_metadata": (".io", "read_metadata"),
    "plots": (".plots", None),
    "validation": (".validation", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'forksim' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    mod = importlib.import_module(module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
