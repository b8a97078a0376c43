"""Analysis of finished sweeps: the report (tables, comparisons, plots) and the paper table. What
it reads and computes with is shared with the sweep and lives in ``mmi_ray/results/``; the names
below are re-exported for notebooks."""

from ..results.records import LoadResult, load_results, load_sweep_dir
from ..results.stats import (
           aggregate,
           at_budget,
           paired_comparison,
           paper_table,
           t_interval,
           with_method,
)

__all__ = ["LoadResult", "load_results", "load_sweep_dir", "aggregate", "at_budget", "t_interval",
           "paired_comparison", "paper_table", "with_method"]
