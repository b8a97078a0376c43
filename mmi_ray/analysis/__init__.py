"""Analysis of sweep results: load (the one place that reads Ray's files), stats, plots, report."""

from .load import LoadResult, load_results, load_sweep_dir
from .stats import aggregate, at_budget, paired_comparison, paper_table, t_interval, with_method

__all__ = ["LoadResult", "load_results", "load_sweep_dir", "aggregate", "at_budget", "t_interval",
           "paired_comparison", "paper_table", "with_method"]
