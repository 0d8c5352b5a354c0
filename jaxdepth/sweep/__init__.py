"""Resumable depth x width x scheme sweeps: specs, the sharded runner, the results table.

    spec = load_spec("configs/sweep_tiny.yaml")      # or a mapping
    runs = expand(spec)                              # validated RunConfigs named by run id
    rows = run_sweep(spec, "results/sweeps/tiny", shard=(0, 1))
    rows = results_table("results/sweeps/tiny")      # also writes results.csv / .parquet
"""

from jaxdepth.sweep.results import results_table
from jaxdepth.sweep.runner import run_sweep
from jaxdepth.sweep.spec import SweepSpec, expand, load_spec, run_id

__all__ = ["SweepSpec", "expand", "load_spec", "results_table", "run_id", "run_sweep"]
