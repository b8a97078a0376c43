"""Confirmation runs: after the search, train the top-k configurations and the DSS and label-only
baselines again on fresh seeds at the full budget, as their own Tune experiment in ``confirm/``.

The search chose on validation; nothing here chooses. Each confirmation run is one (arm, seed)
trial; after the runs, test accuracy is read once per run from its final checkpoint and kept in
``confirm/confirmation.json`` (a resumed or repeated confirmation never reads test again). Only
these runs feed the headline table (mmi_ray/results/stats.py ``arm_table`` / ``arm_comparisons``).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ConfigError
from ..layout import (
    CHECKPOINT_PATH,
    COMPLETED,
    CONFIRM_DIR,
    CONFIRMATION_FILE,
    PARAMS_FILE,
    RUNS_DIR,
    STEP,
    TRIAL_PREFIX,
    is_divergence,
    read_metrics,
    run_name,
)
from ..results.ranking import ranked, searched_values, test_figures
from ..results.records import load_sweep_dir
from ..results.stats import DSS, LABEL_ONLY, aggregate, arm_names, best_of_method
from ..reuse import reused_from
from ..storage import basename, exists, join, listdir, parent, read_text, write_text
from .spec import Confirm, LoadedSweep, params_text

BASELINE_PARAMS = {DSS: {"loss.mi_weight": 0.0}, LABEL_ONLY: {"loss.mi_weight": 0.0, "loss.rationale_weight": 0.0}}
"""What makes a configuration DSS or label-only, set on the base config when the search found none."""


def choose_arms(sweep: LoadedSweep, sweep_dir: str, confirm: Confirm) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The arms to confirm, from the search's completed configurations ranked on validation: the
    top ``top_k``, then the DSS and label-only baselines (unless a top arm already is one), each
    named for what it is (``results.stats.arm_names``); and notes on ties, which decide nothing
    silently: where every configuration scored the same there is no best one to confirm, only the
    baselines; a tie across the top-k cut is named."""
    spec = sweep.spec
    obj, searched, k = spec.objective.metric, list(spec.search), confirm.top_k
    res = load_sweep_dir(sweep_dir, finished=True)
    agg = ranked(aggregate(res.runs, obj, searched), spec.objective.mode)
    done = agg[agg["status"] == COMPLETED] if not agg.empty else agg
    if done.empty:
        raise ConfigError(sweep.source, "confirm: no configuration of the search completed its budget; "
                                        "nothing to confirm")

    def from_search(row) -> dict[str, Any]:
        return {"method": row["method"], "params": searched_values(row, searched), "from_trial": row["trial_id"],
                f"search_{obj}": float(row["mean"])}

    scores, notes = done["mean"].round(9), []
    if len(done) > 1 and scores.nunique() == 1:
        top = done.head(0)
        notes.append(f"every completed configuration of the search scored {obj} {scores.iloc[0]:.4g}: none is "
                     "best, so none is confirmed as such; the baselines are")
    else:
        top = done.head(k)
        if len(done) > k and scores.iloc[k - 1] == scores.iloc[k]:
            tied = int((scores == scores.iloc[k - 1]).sum())
            notes.append(f"{tied} configurations tie at {obj} {scores.iloc[k - 1]:.4g} across the top-{k} cut; "
                         "the search's order (the configuration's values, then trial id) took the first")
    arms = [dict(from_search(row), search_rank=i) for i, (_, row) in enumerate(top.iterrows(), start=1)]
    if confirm.baselines:
        for method, params in BASELINE_PARAMS.items():
            if any(a["method"] == method for a in arms):
                continue
            best = best_of_method(done, method, spec.objective.mode)
            arms.append(from_search(best) if best is not None
                        else {"method": method, "params": dict(params), "from_trial": None})
    if not arms:
        raise ConfigError(sweep.source, f"confirm: {notes[0]}, but confirm.baselines is false: nothing to confirm")
    keyed = dict(enumerate(arms))
    named = {name: keyed[i] for i, name in arm_names(keyed).items()}
    for arm in named.values():  # every arm must make a valid config before anything trains
        sweep.trial_config(arm["params"], confirm.seeds[0], "/tmp")
    return named, notes


def _experiments(sweep: LoadedSweep, state: dict, seeds: list[int]) -> list[list]:
    """The Tune experiments of a confirmation, ``[folder relative to the sweep, seeds]``: the first in
    ``confirm/``, then one ``confirm/more_<seeds>`` (``seeds_name``: more_6-15) per set of seeds added
    later (the same arms). Asking for the seeds it holds, or some of them, resumes them all; for those
    and more, the new seeds are added; seeds that leave some of its seeds out are an error naming both."""
    if not state:
        return [[CONFIRM_DIR, list(seeds)]]
    held = list(state["seeds"])
    experiments = state.get("experiments") or [[CONFIRM_DIR, held]]
    added = [s for s in seeds if s not in held]
    if added and any(s not in seeds for s in held):
        raise ConfigError(sweep.source, f"confirm.seeds: {CONFIRM_DIR}/ holds runs on seeds {held}; confirm with "
                                        f"those seeds, or those and more to add seeds to it, not {list(seeds)}")
    if added:
        experiments = [*experiments, [f"{CONFIRM_DIR}/more_{seeds_name(added)}", added]]
    return experiments


def seeds_name(seeds: list[int]) -> str:
    """Seeds as a folder name, runs of consecutive seeds as ranges: [6, ..., 15] -> "6-15",
    [3, 4, 9] -> "3-4_9"."""
    runs: list[list[int]] = []
    for s in sorted(seeds):
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return "_".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _read_state(confirm_dir: str) -> dict:
    path = join(confirm_dir, CONFIRMATION_FILE)
    return json.loads(read_text(path)) if exists(path) else {}


def collect(sweep: LoadedSweep, confirm_dir: str, state: dict) -> list[dict]:
    """One record per finished confirmation run: arm, method, seed, step, the validation objective,
    and test accuracy, read from its final checkpoint now unless an earlier call read it already.
    The trials are those of every experiment of ``state`` (``_experiments``); every run's folder is
    under ``confirm_dir``."""
    obj = sweep.spec.objective.metric
    known = {(r["arm"], r["seed"]): r for r in state.get("runs", [])}
    out = []
    sweep_dir = parent(confirm_dir)
    trial_dirs = sorted(join(sweep_dir, exp, t) for exp, _ in state["experiments"]
                        for t in listdir(join(sweep_dir, exp)) if t.startswith(TRIAL_PREFIX))
    for tdir in trial_dirs:
        if not exists(join(tdir, PARAMS_FILE)):
            continue
        params = json.loads(read_text(join(tdir, PARAMS_FILE)))
        arm, seed = params["arm"], int(params["seed"])
        tid = basename(tdir)[len(TRIAL_PREFIX):]
        history = [m for m in read_metrics(join(confirm_dir, RUNS_DIR, run_name(tid, seed))) if not is_divergence(m)]
        final = history[-1] if history else None
        if final is None or final[STEP] < sweep.max_steps:
            continue  # diverged, failed or unfinished: not a confirmation figure
        record = known.get((arm, seed))
        if record is None or record.get("trial_id") != tid:
            run_dir = join(confirm_dir, RUNS_DIR, run_name(tid, seed))  # read once per run identity
            test = test_figures(run_dir, final[CHECKPOINT_PATH], int(final[STEP]))
            record = {"arm": arm, "method": state["arms"][arm]["method"], "seed": seed, "trial_id": tid,
                      STEP: int(final[STEP]), obj: float(final[obj]),
                      # every figure of the final validation and the one test evaluation: accuracy,
                      # questions counted (_n), calibration (_ece), rationale scores when configured
                      **{k: v for k, v in final.items() if k.startswith("val_") and k != obj},
                      **{k: v for k, v in test.items() if k.startswith("test_")}}
            if reused_from(run_dir):
                record["reused_from"] = reused_from(run_dir)
        out.append(record)
    return sorted(out, key=lambda r: (list(state["arms"]).index(r["arm"]), r["seed"]))


def run_confirmation(sweep: LoadedSweep, sweep_dir: str, confirm: Confirm, verbose: int = 1,
                     rerun: bool = False) -> dict:
    """Train (or resume) the confirmation runs of a finished search; returns and writes
    ``confirm/confirmation.json``: the arms, their runs (validation and test per seed), the seeds."""
    from ray import tune

    from ..ray_init import init_ray
    from ..reuse import index_root, tune_callback
    from .experiment import experiment
    from .live import SweepProgress, configure, hide_tune_restore_hint, tune_verbosity
    from .placement import check_cluster_fits, concurrency, sweep_dir_of
    from .trial import TrialPayload

    spec = sweep.spec  # its validation already holds confirm.seeds apart from the search's seeds
    confirm_dir = join(sweep_dir, CONFIRM_DIR)
    state = _read_state(confirm_dir)
    reuse_root = index_root(sweep_dir_of(spec)[0], not rerun)
    experiments = _experiments(sweep, state, list(confirm.seeds))
    if not state:
        arms, notes = choose_arms(sweep, sweep_dir, confirm)
        state = {"seeds": list(confirm.seeds), "arms": arms, "notes": notes, "runs": []}
    state["seeds"] = [s for _, seeds in experiments for s in seeds]
    state["experiments"] = experiments
    write_text(join(confirm_dir, CONFIRMATION_FILE), json.dumps(state, indent=2))
    init_ray(log_to_driver=verbose > 1)
    payload = TrialPayload.of(sweep, confirm_dir, verbose, reuse_root,
                              arms={k: a["params"] for k, a in state["arms"].items()})
    check_cluster_fits(sweep, n_seeds=1)
    hide_tune_restore_hint()
    for name, seeds in experiments:  # the first confirmation, then each set of seeds added to it
        n_runs = len(state["arms"]) * len(seeds)
        configure(show=verbose == 1)
        progress = SweepProgress(join(sweep_dir, name), "confirmation", n_runs, sweep.max_steps, [], None,
                                 show=verbose == 1)
        tuner, restored = experiment(
            sweep, payload, sweep_dir, name, restore=True, at_once=concurrency(sweep, 1, n_runs)[0], n_seeds=1,
            callbacks=[progress, *filter(None, [tune_callback(payload.runs_root, reuse_root)])],
            verbose=tune_verbosity(verbose),
            param_space={"arm": tune.grid_search(list(state["arms"])), "seed": tune.grid_search(seeds)})
        if verbose and not restored:
            print(f"[mmi-ray] confirmation: {len(state['arms'])} arms ({', '.join(state['arms'])}) x "
                  f"{len(seeds)} fresh seeds {seeds} = {n_runs} runs at the full budget", flush=True)
        try:
            tuner.fit()
        finally:
            configure(None)
    state["runs"] = collect(sweep, confirm_dir, state)
    write_text(join(confirm_dir, CONFIRMATION_FILE), json.dumps(state, indent=2))
    return state


def headline(state: dict, metric: str, mode: str = "max") -> tuple:
    """(per-arm table ranked on validation, comparisons on test, comparisons on validation) from a
    confirmation state, each arm under its shown name."""
    import pandas as pd

    from ..results.stats import arm_comparisons, arm_table, confirmation_runs

    runs = confirmation_runs(state)
    if runs.empty:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    return arm_table(runs, metric, mode=mode), arm_comparisons(runs, "test_accuracy"), arm_comparisons(runs, metric)


def print_headline(state: dict, metric: str, mode: str = "max") -> None:
    print("\n" + "\n".join(headline_lines(state, metric, mode)))


def comparison_text(r) -> str:
    """One paired comparison (a row of ``arm_comparisons``) as the console prints it."""
    head = f"{r.arm} - {r.baseline}:"
    if r.all_equal:
        return f"{head} no difference measurable: every run of both scored {100 * r.common:.2f}%, n={r.n_pairs}"
    diff = f"{head} {100 * r.mean_diff:+.2f} points [{100 * r.ci_low:+.2f}, {100 * r.ci_high:+.2f}]{'*' * r.ci_wide}"
    if r.effect_dz != r.effect_dz:  # no spread over seeds: nothing for a t-test to measure
        return f"{diff}, the same difference on every seed (no spread to test), n={r.n_pairs}"
    return f"{diff}, d_z {r.effect_dz:.2f}, p {r.p_value:.3g} (Holm {r.p_holm:.3g}), n={r.n_pairs}"


def headline_lines(state: dict, metric: str, mode: str = "max") -> list[str]:
    """The confirmation's closing lines, as the console prints them (and the README shows them:
    tools/readme_figures.py renders the same lines from a committed record): the arms ranked on
    mean validation over the fresh seeds (the rank the export takes), each with its values."""
    from ..results.stats import named_arms

    table, test_cmp, _ = headline(state, metric, mode)
    lines = [f"[mmi-ray] confirmation runs (fresh seeds {state['seeds']}, full budget; ranked on mean {metric}; "
             "the headline):"]
    lines += [f"  note: {n}" for n in state.get("notes", [])]
    if table.empty:
        return lines + ["  no confirmation run finished"]

    def pct(lo, hi, cut):  # an accuracy's interval, cut at 0 and 100 (few seeds can reach past them)
        return f"[{100 * lo:.2f}, {100 * hi:.2f}]{'*' * cut}" if lo == lo else "(1 seed: no interval)"

    shown = named_arms(state["arms"])
    arms = {shown[k]: a for k, a in state["arms"].items()}
    width = max(len(a) for a in table["arm"])
    for r in table.itertuples():
        rank = f"{'=' if r.tied else '#'}{r.rank}"
        lines.append(f"  {rank:<3} {r.arm:<{width}} n={r.n} seeds  val {100 * r.val_mean:6.2f} "
                     f"{pct(r.val_low, r.val_high, r.val_wide)}  test {100 * r.test_mean:6.2f} "
                     f"{pct(r.test_low, r.test_high, r.test_wide)}  ({params_text(arms[r.arm]['params']) or 'base config'})")
    lines += [f"  test: {comparison_text(r)}" for r in test_cmp.itertuples()]
    questions = {k: int(v) for k in ("val_n", "test_n") if k in table and (v := table[k].max()) == v}
    asked = (f"; each run scored on {questions['val_n']} validation and {questions['test_n']} test questions"
             if len(questions) == 2 else "")
    if table[["val_wide", "test_wide"]].any(axis=None) or (not test_cmp.empty and test_cmp["ci_wide"].any()):
        lines.append(f"  * the t interval over n={int(table['n'].min())} seeds is wider than the whole range (here cut to "
                     "it): too few seeds to bound it; add seeds with mmi-ray confirm SWEEP --seeds ...")
    if table["tied"].any():
        lines.append("  = arms tied on mean validation share a rank; the export takes the first listed, or --arm")
    return lines + [f"  (95% Student-t intervals over seeds, cut at 0 and 100{asked}; test read once per run, after "
                    "training; it chose nothing)"]
