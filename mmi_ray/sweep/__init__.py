"""Sweeps: YAML specs (spec.py) -> a Ray Tune Tuner with Optuna TPE + ASHA (tuner.py) over
Train-in-Tune trial drivers (trial.py) -> a summary from the sweep folder (summary.py)."""

from .spec import LoadedSweep, SweepSpec, load_sweep
from .tuner import run_sweep

__all__ = ["LoadedSweep", "SweepSpec", "load_sweep", "run_sweep"]
