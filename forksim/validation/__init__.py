"""`forksim validate`: real process-creation load on this machine, measured per creation, beside the
simulator's prediction of the same scenarios.

- `scenarios`: the scenario list as data, each with its equivalent forksim config.
- `measure`: builds and runs the C load generator (csrc/loadgen.c), returns statistics.
- `compare`: runs the simulator on each scenario and writes validation.json/.md/.png.

The compiler, build cache, MemAvailable check and process-group kill are `forksim.lab`'s, shared with
calibration.
"""

# The submodules keep their names (`measure.measure(scenario, quick)`, `scenarios.scenarios(quick)`):
# the package does not re-export those two functions, so that the modules are not shadowed.
from . import compare, measure, scenarios
from .compare import compare_row, render_markdown, relative_error, summarize_rows, validate
from .measure import LoadgenError, build_tools, measure_all
from .scenarios import SCENARIOS, Scenario, get_scenario

__all__ = [
    "compare",
    "measure",
    "scenarios",
    "validate",
    "measure_all",
    "build_tools",
    "LoadgenError",
    "Scenario",
    "SCENARIOS",
    "get_scenario",
    "relative_error",
    "compare_row",
    "summarize_rows",
    "render_markdown",
]
