"""Sweeps: YAML specs -> Ray Tune (Optuna TPE + ASHA) over Train-in-Tune trials."""

from .spec import LoadedSweep, SweepSpec, load_sweep

__all__ = ["LoadedSweep", "SweepSpec", "load_sweep"]
