"""Search efficiency: compute that TPE + ASHA needs to come within 1 point of the
best configuration of an exhaustive grid over the same space, on the built-in task.

    python benchmarks/search_efficiency.py [--fair] [--grid-dir DIR ...] [--keep DIR] [--grace STEPS]
                                           [--replays 50] [--out BENCHMARKS.md]

``--fair`` trains a grid with 1,000 validation examples on one family that the
tiny student learns well above chance within the budget, with the ``words`` tokenizer: ``arith``
(the default; operands 2-5, a smooth learning curve, 27 configurations x 1,500 steps; ~30 min) or ``nli``
(operands up to 5, learnt in a late jump, 12 x 2,000 steps; ~45 min with 2 trials at once on 2
cores). The table of every configuration's accuracy at every rung is printed with the figure.

1. The grid: every combination of the values below is trained to the full budget by a real
   ``mmi-ray`` sweep on local Ray (all combinations as ``points_to_evaluate``, no early stopping),
   recording validation accuracy at every evaluation (the ASHA rungs). ``--grid-dir`` reuses a
   finished grid sweep folder instead of training it again; several folders of the same grid trained
   with other seeds (``--seeds 1 --keep A``, ``--seeds 2 --keep B``: one seed at a time, each trial
   in its process) make one grid whose curves are the mean over all their seeds.
2. The search, replayed on the grid's recorded learning curves (a tabular benchmark, as HPO papers
   do): Optuna's TPE sampler (as ``OptunaSearch`` uses it) over the same choices, and Optuna's
   successive-halving pruner with the sweep's grace period and reduction factor (ASHA), trials one
   after another. A trial costs the steps it trained before it finished or was stopped; a
   configuration proposed again reuses its run as an mmi-ray sweep does on local storage (a finished
   run is adopted, an in-process one stopped early resumes from its checkpoint: only steps not
   trained before are paid). The search
   stops when a trial that trained to the full budget is within ``--within`` of the grid's best.
   Replayed ``--replays`` times with different sampler seeds; the figure is the median cost as a
   share of the grid's cost (configurations x full budget); a replay that never gets there within
   500 trials is counted as such, not given a cost. The pruner's first rung is the grid's first
   evaluation unless ``--grace`` says otherwise.
3. Whether the grid can judge a search at all, printed with the figure: each rung's Spearman rank
   correlation with the final scores, and the best's margin over the runner-up and over the median
   in standard errors of the difference (binomial, on the validation size).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import tempfile
from pathlib import Path

import yaml
from bench_out import report_figures

REPO = Path(__file__).resolve().parents[1]
GRID = {"loss.mi_weight": [0.0, 0.1, 0.5], "loss.rationale_weight": [0.2, 0.5, 1.0], "optim.lr": [1e-3, 3e-3]}
OVERRIDES = {"model.d_model": 64, "model.d_ff": 128, "data.builtin.num_train": 2000, "data.builtin.num_valid": 150,
             "train.batch_size": 16, "train.max_steps": 120, "train.eval_every": 40, "loss.mi_estimator": "maxpool"}
ETA = 2  # reduction factor; the grace period is the first evaluation (train.eval_every)
# --fair: 1,000 validation examples (binomial s.e. <= 1.6 points) of one family the
# tiny student learns well above chance within the budget, with the ``words`` tokenizer (a number is
# one token). ``arith`` (the default): three-step word problems with operands 2-5, learnt in a smooth
# climb (a probe's good learning rate: 18% at step 100, 44% at 1,000; a number's chance is 5-8%), so
# early rungs can rank; 27 configurations, 1,500 steps, ten evaluations (the rungs). ``nli`` (the
# grid of 2026-12-01): learnt in a late jump, 12 configurations, 2,000 steps, eight rungs.
_FAIR_BASE = {"model.tokenizer": "words", "data.builtin.max_operand": 5, "data.builtin.num_train": 4000,
              "data.builtin.num_valid": 1000, "data.builtin.num_test": 100, "train.batch_size": 16,
              "train.max_new_tokens": 4, "loss.mi_estimator": "maxpool"}
FAIR = {
    "arith": ({"optim.lr": [3e-4, 1e-3, 3e-3], "loss.mi_weight": [0.0, 0.1, 0.5],
               "loss.rationale_weight": [0.25, 0.5, 1.0]},
              {"data.builtin.tasks": ["arith"], **_FAIR_BASE, "train.max_steps": 1500, "train.eval_every": 150}),
    "nli": ({"optim.lr": [3e-4, 1e-3, 3e-3], "loss.mi_weight": [0.0, 0.5], "loss.rationale_weight": [0.5, 1.0]},
            {"data.builtin.tasks": ["nli"], **_FAIR_BASE, "train.max_steps": 2000, "train.eval_every": 250}),
}


def grid_points(grid: dict) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


def run_grid(out_dir: Path, grid: dict, overrides: dict, name: str = "grid", seeds: tuple[int, ...] = (0,)) -> Path:
    """Train every grid point to the full budget with a real sweep, each with every seed in ``seeds``;
    returns the sweep folder."""
    import os

    from mmi_ray.sweep import load_sweep, run_sweep

    points = grid_points(grid)
    cpus = seed_cpus(len(seeds), os.cpu_count() or 1)
    spec = {"name": name, "base": str(REPO / "configs" / "tiny_builtin.yaml"), "overrides": overrides,
            "search": {k: {"type": "choice", "values": v} for k, v in grid.items()},
            "points_to_evaluate": points, "num_trials": len(points), "seeds": list(seeds),
            "scheduler": {"type": "none"}, "objective": {"metric": "val_accuracy", "mode": "max"},
            "resources": {"num_workers": 1, "cpus_per_worker": cpus}, "storage_path": str(out_dir),
            "failure": {"trial_max_failures": 1, "train_max_failures": 1, "time_budget_s": 7200 * len(seeds)}}
    path = out_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_sweep(load_sweep(path), verbose=0)
    return out_dir / name


def seed_cpus(n_seeds: int, cores: int) -> float:
    """CPUs per seed run: a trial trains its seeds side by side, so with more seeds than cores each
    gets a share (rounded down to 0.01: the trial must fit the machine); one CPU otherwise."""
    return min(1.0, math.floor(100 * cores / n_seeds) / 100)


def newest(runs, grid: dict):
    """The records of ``runs``, each seed run of a grid point once per step (its newest record)."""
    return runs.drop_duplicates([*grid, "seed", "step"], keep="last")


def table_from_runs(runs, grid: dict) -> dict[tuple, dict[int, float]]:
    """Per grid point: step -> validation accuracy, the mean over its seeds at each rung (a sweep's
    trial reports its seeds' mean); a seed's run counts once per step (its newest record)."""
    out: dict[tuple, dict[int, float]] = {}
    for key, g in newest(runs, grid).groupby(list(grid)):
        by_step = g.groupby("step")["val_accuracy"].mean()
        out[tuple(key)] = {int(s): float(v) for s, v in by_step.items()}
    return out


def curves(sweep_dirs: list[Path], grid: dict) -> tuple[dict[tuple, dict[int, float]], int, dict[tuple, list[float]]]:
    """Per grid point (values in GRID key order): step -> validation accuracy (the mean over its seeds,
    in all ``sweep_dirs``: folders of one grid trained with other seeds); the full budget; and per grid
    point its seeds' final accuracies."""
    import pandas as pd

    from mmi_ray.analysis import load_sweep_dir

    parts, seen = [], {}
    for d in sweep_dirs:
        runs = load_sweep_dir(d).runs
        for seed in set(runs["seed"]):
            if seed in seen:
                raise SystemExit(f"{d}: seed {seed} is also in {seen[seed]}: give each grid folder other seeds")
            seen[seed] = d
        have = set(runs.groupby(list(grid)).groups)
        missing = [p for p in grid_points(grid) if tuple(p[k] for k in grid) not in have]
        if missing:
            raise SystemExit(f"{d}: grid points without results: {missing}")
        parts.append(runs)
    runs = pd.concat(parts, ignore_index=True)
    out = table_from_runs(runs, grid)
    budget = max(max(c) for c in out.values())
    last = newest(runs[runs["step"] == budget], grid)
    per_seed = {tuple(k): [float(v) for v in g.sort_values("seed")["val_accuracy"]] for k, g in last.groupby(list(grid))}
    return out, budget, per_seed


def seed_margin(per_seed: dict[tuple, list[float]], best: tuple, second: tuple) -> float:
    """The best's margin over the runner-up (means over seeds) in standard errors of the difference
    from seed-to-seed variation; NaN with fewer than 2 seeds."""
    a, b = per_seed[best], per_seed[second]
    if min(len(a), len(b)) < 2:
        return float("nan")
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return (statistics.mean(a) - statistics.mean(b)) / max(se, 1e-12)


def same_grid(specs: dict[Path, dict]) -> dict:
    """The first sweep_spec.yaml of ``specs`` (folder -> its content), once every other folder's grid
    (search space and overrides) is the same."""
    (first, spec), *rest = specs.items()
    for d, other in rest:
        for key in ("search", "overrides"):
            if other["spec"][key] != spec["spec"][key]:
                raise SystemExit(f"{d / 'sweep_spec.yaml'}: spec.{key} differs from {first / 'sweep_spec.yaml'}'s: "
                                 "--grid-dir folders must hold one grid")
    return spec


def replay(table: dict, grid: dict, budget: int, target: float, seed: int, grace: int | None, eta: int,
           max_trials: int = 500, stats: dict | None = None, resume: bool = False, startup: int = 10) -> float:
    """Steps TPE + successive halving spends until a full-budget trial reaches ``target``; ``inf``
    if ``max_trials`` trials never reach it (the pruner keeps stopping the configurations that would).
    The figure uses ``resume``, as mmi-ray sweeps run (``mmi_ray/reuse.py``).
    ``grace`` None: TPE alone, every trial to the full budget (no pruning). ``stats`` gets the
    search's trial count and how many distinct configurations they were (TPE may propose one again).
    ``resume``: a configuration proposed again resumes where its last run stopped (its steps so far
    are not paid twice; one seed, so its curve is the same); one that finished is told its final
    value again without a trial (``BudgetAwareOptunaSearch.suggest``). ``startup``: proposals TPE draws at random
    before it models (a spec's ``searcher_startup_trials``)."""
    import optuna

    from mmi_ray.sweep.tuner import tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=tpe_sampler(seed, startup),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=grace, reduction_factor=eta)
                                if grace else optuna.pruners.NopPruner())
    cost = 0
    seen: list[tuple] = []
    trained: dict[tuple, int] = {}  # resume: steps each configuration has trained so far
    for _ in range(max_trials):
        trial = study.ask()
        key = tuple(trial.suggest_categorical(k, v) for k, v in grid.items())
        seen.append(key)
        if stats is not None:
            stats.update(trials=len(seen), distinct=len(set(seen)))
        curve = table[key]
        if resume and trained.get(key, 0) >= budget:  # finished before: the sweep tells Optuna its result
            study.tell(trial, curve[budget])            # again and asks for another (no trial, no steps)
            continue
        last = None
        pruned = False
        for step in sorted(curve):
            cost += max(0, step - max(last or 0, trained.get(key, 0) if resume else 0))
            last = step
            trained[key] = max(trained.get(key, 0), step)
            trial.report(curve[step], step)
            if step < budget and trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, curve[budget])
        if curve[budget] >= target:
            return cost
    return math.inf


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median: the order statistics scipy's
    ``quantile_test`` gives (n = 50, 95%: the 18th and 33rd of the sorted values). Infinite values
    (replays that never got there) count as the largest; too few values for the level: the whole range."""
    import numpy as np
    from scipy import stats

    xs = sorted(values)
    arr = np.asarray(xs, dtype=float)
    ci = stats.quantile_test(arr, q=0.5).confidence_interval(level)
    if math.isnan(ci.low):
        return xs[0], xs[-1]
    return xs[int(np.searchsorted(arr, ci.low))], xs[int(np.searchsorted(arr, ci.high))]  # the values given


def conditions(table: dict, budget: int, n_valid: int) -> dict:
    """Can this grid judge a search at all? Per rung, the Spearman rank correlation of the rung's
    scores with the final ones (ASHA stops on rung scores: they must predict the end; NaN where a
    rung scored every configuration alike, so it cannot rank them); the best's
    margin over the runner-up and over the grid's median, in standard errors of a difference of
    two accuracies on ``n_valid`` examples (binomial); and that standard error in points."""
    import pandas as pd

    frame = pd.DataFrame({k: c for k, c in table.items()}).T  # rows: configurations, columns: steps
    final = frame[budget]
    rungs = {int(s): float(frame[s].corr(final, method="spearman")) if frame[s].nunique() > 1 else math.nan
             for s in frame.columns if s < budget}
    ranked = final.sort_values(ascending=False)

    def se(p: float, q: float) -> float:
        return math.sqrt((p * (1 - p) + q * (1 - q)) / n_valid)

    best, second, median = float(ranked.iloc[0]), float(ranked.iloc[1]), float(final.median())
    return {"rung_spearman": rungs, "best": best, "runner_up": second, "median": median,
            "se_points": 100 * math.sqrt(best * (1 - best) / n_valid),
            "margin_runner_up_se": (best - second) / max(se(best, second), 1e-12),
            "margin_median_se": (best - median) / max(se(best, median), 1e-12)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid-dir", nargs="+", default=None,
                    help="finished grid sweep folder(s) to reuse; several: one grid trained with other seeds, "
                         "replayed on the mean over all their seeds")
    ap.add_argument("--keep", default=None, help="train the grid into this folder (kept afterwards)")
    ap.add_argument("--replays", type=int, default=50)
    ap.add_argument("--within", type=float, default=0.01, help="accuracy gap to the grid's best (0.01 = 1 point)")
    ap.add_argument("--small", action="store_true", help="a 4-point grid of 6-step runs (checks the script)")
    ap.add_argument("--fair", nargs="?", const="arith", choices=sorted(FAIR), default=None,
                    help="a fair grid (1,000 validation examples, one family): arith (the default; "
                         "27 configurations, 10 rungs, ~30 min) or nli (12 configurations, 8 rungs, ~45 min)")
    ap.add_argument("--grace", type=int, nargs="+", default=None,
                    help="the pruner's first rung in steps, one replay set per value (default: the grid's first "
                         "evaluation); TPE without pruning is always replayed beside them")
    ap.add_argument("--startup", type=int, default=10,
                    help="proposals TPE draws at random before it models (a sweep spec's searcher_startup_trials; "
                         "10, Optuna's default)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="train every grid point with each of these seeds, side by side; a curve is their mean "
                         "(default: 0; 3 seeds on 2 cores, 2026-12-03: ~9 min a configuration, ~4 h for arith)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    grid, overrides = GRID, dict(OVERRIDES)
    if args.fair:
        grid, overrides = FAIR[args.fair][0], dict(FAIR[args.fair][1])
    if args.small:
        grid = {"loss.mi_weight": [0.0, 0.1], "optim.lr": [1e-3, 3e-3]}
        overrides.update({"model.d_model": 32, "model.d_ff": 64, "model.num_layers": 1, "model.num_heads": 2,
                          "data.builtin.num_train": 200, "data.builtin.num_valid": 10, "data.builtin.num_test": 10,
                          "train.batch_size": 8, "train.max_steps": 6, "train.eval_every": 2})
    if args.grid_dir:
        sweep_dirs = [Path(d) for d in args.grid_dir]
    else:
        root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mmi-grid-"))
        root.mkdir(parents=True, exist_ok=True)
        sweep_dirs = [run_grid(root, grid, overrides, seeds=tuple(args.seeds))]
    # the grid, its validation size and rungs as the sweep folder recorded them (--grid-dir: any grid)
    spec = same_grid({d: yaml.safe_load((d / "sweep_spec.yaml").read_text()) for d in sweep_dirs})
    grid = {k: v["values"] for k, v in spec["spec"]["search"].items()}
    n_valid, grace = spec["base"]["data"]["builtin"]["num_valid"], spec["base"]["train"]["eval_every"]
    graces = args.grace or [grace]
    table, budget, per_seed = curves(sweep_dirs, grid)
    cond = conditions(table, budget, int(n_valid))
    finals = {k: c[budget] for k, c in table.items()}
    ranked = sorted(finals, key=finals.get, reverse=True)
    k_seeds = min(len(v) for v in per_seed.values())
    seeds_line = str(k_seeds)
    if k_seeds >= 2:
        def pct(xs: list[float]) -> str:
            return ", ".join(f"{100 * x:.1f}" for x in xs)

        seeds_line += (f"; final accuracy per seed: best {pct(per_seed[ranked[0]])}, runner-up "
                       f"{pct(per_seed[ranked[1]])}; the best's margin over the runner-up in seed-to-seed s.e. of "
                       f"the difference: {seed_margin(per_seed, ranked[0], ranked[1]):.1f}")
    best = cond["best"]
    target = best - args.within - 1e-9  # within 1 point: a gap of exactly 1 point counts
    grid_cost = len(table) * budget

    def replays(grace: int | None, resume: bool = False) -> dict:
        stats = [{} for _ in range(args.replays)]
        costs = [replay(table, grid, budget, target, seed, grace, ETA, stats=st, resume=resume, startup=args.startup)
                 for seed, st in enumerate(stats)]
        shares = sorted(c / grid_cost for c in costs)
        return {"median_share": statistics.median(shares), "median_ci": median_ci(shares), "p80_share": shares[int(0.8 * (len(shares) - 1))],
                "not_reached": sum(math.isinf(c) for c in costs),
                "trials": statistics.median(st["trials"] for st in stats),
                "distinct": statistics.median(st["distinct"] for st in stats)}

    # as mmi-ray runs a sweep, a configuration proposed again reuses its run (mmi_ray/reuse.py: a
    # finished run is adopted, one stopped early resumes from its checkpoint); beside it, what a sweep
    # that trains every proposal anew pays
    by_grace = {g: replays(g, resume=True) for g in [*graces, None]}  # None: TPE alone, no pruning
    by_grace["retrain"] = replays(graces[-1], resume=False)
    res = {"grid_points": len(table), "budget": budget, "grid_best": best, "grid_cost": grid_cost,
           **by_grace[graces[0]], "by_grace": by_grace,
           "n_within": sum(v >= target for v in finals.values()), "conditions": cond}

    def share(x: float) -> str:
        return "never (see below)" if math.isinf(x) else f"{100 * x:.0f}% of the grid"

    rungs = ", ".join(f"step {s} " + (f"{r:.2f}" if r == r else "n/a (all equal)")
                      for s, r in cond["rung_spearman"].items())
    lines = [f"grid {len(table)} configurations ({', '.join(f'{k} {v}' for k, v in grid.items())}) x {budget} steps "
             f"= {grid_cost} steps; grid best val {100 * best:.1f}% ({res['n_within']} configuration(s) within "
             f"{100 * args.within:.0f} point); TPE ({args.startup} random proposal(s) before it models) + successive halving (eta {ETA}; first rung as in each column) "
             f"replayed {args.replays} times on the grid's curves, and TPE alone (every trial to the full budget); "
             "a configuration proposed again reuses its run, as an mmi-ray sweep does, except in the last column",
             "", "| figure | " + " | ".join(f"TPE + ASHA, first rung {g}" for g in graces) + " | TPE alone | "
             f"TPE + ASHA, first rung {graces[-1]}, every proposal trained anew |",
             "|---|" + "---|" * (len(graces) + 2),
             f"| median compute to within {100 * args.within:.0f} point of the grid's best | "
             + " | ".join(f"**{share(r['median_share'])}**" for r in by_grace.values()) + " |",
             "| 95% interval of that median (order statistics over the replays) | "
             + " | ".join("[" + ", ".join("never" if math.isinf(x) else f"{100 * x:.0f}%" for x in r["median_ci"]) + "]"
                          for r in by_grace.values()) + " |",
             "| 80th percentile | " + " | ".join(share(r["p80_share"]) for r in by_grace.values()) + " |",
             "| replays that never got there (the pruner stopped every configuration that would) | "
             + " | ".join(f"{r['not_reached']} of {args.replays}" for r in by_grace.values()) + " |",
             "| trials per search; distinct configurations among them (medians) | "
             + " | ".join(f"{r['trials']:g}; {r['distinct']:g}" for r in by_grace.values()) + " |",
             "", "| the grid | |", "|---|---|",
             f"| for scale: compute of the grid in a random order, each configuration once, no pruning, to reach "
             f"the target (expected) | {100 * (len(table) + 1) / (res['n_within'] + 1) / len(table):.0f}% |",
             f"| validation examples; s.e. of the best's accuracy | {n_valid}; "
             f"{cond['se_points']:.1f} points |",
             f"| best, runner-up, median of the grid | {100 * best:.1f}%, {100 * cond['runner_up']:.1f}%, "
             f"{100 * cond['median']:.1f}% |",
             f"| best's margin over the runner-up; over the median (s.e. of the difference) | "
             f"{cond['margin_runner_up_se']:.1f}; {cond['margin_median_se']:.1f} |",
             f"| rung scores against final scores (Spearman) | {rungs} |",
             f"| seeds per configuration (a curve is their mean) | {seeds_line} |",
             f"| grid folder(s) | {', '.join(f'`{d}`' for d in sweep_dirs)} |"]
    steps = sorted(next(iter(table.values())))
    lines += ["", "Validation accuracy (%) at each rung (the best in bold):", "",
              "| " + " | ".join(k.split(".")[-1] for k in grid) + " | " + " | ".join(map(str, steps)) + " |",
              "|" + "---|" * (len(grid) + len(steps))]
    for key in sorted(table):
        cells = [f"{100 * table[key].get(s, math.nan):.1f}" for s in steps]
        if table[key][budget] == best:
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(f"{v:g}" for v in key) + " | " + " | ".join(cells) + " |")
    report_figures(lines, args.out, "search_efficiency.py", argv, "Search efficiency")
    return res


if __name__ == "__main__":
    main()
