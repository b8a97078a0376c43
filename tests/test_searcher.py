"""The sweep's searcher (mmi_ray/sweep/tuner.py): Ray's OptunaSearch told what early stopping means,
and a configuration that already finished never takes a second trial. Driven as Tune drives it
(suggest, on_trial_result, on_trial_complete), without a Ray instance."""

from __future__ import annotations

import optuna
import pytest

from mmi_ray.layout import STEP
from mmi_ray.sweep import tuner

BUDGET = 100


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _searcher(db, values=("a", "b", "c"), startup=1, seed=0):
    cls = tuner._searcher_class()
    return cls(budget_steps=BUDGET, space={"x": optuna.distributions.CategoricalDistribution(list(values))},
               metric="acc", mode="max", sampler=tuner.tpe_sampler(seed, startup), study_name="s",
               storage=optuna.storages.RDBStorage(db))


def _finish(s, tid, acc, step=BUDGET):
    s.on_trial_result(tid, {"acc": acc / 2, STEP: step // 2})
    s.on_trial_complete(tid, {"acc": acc, STEP: step})


def _study(db):
    return optuna.load_study(study_name="s", storage=db)


def test_finished_configurations_are_told_again_not_retried(db, capsys):
    s = _searcher(db)
    seen = []
    for i in range(3):
        cfg = s.suggest(f"t{i}")
        seen.append(cfg["x"])
        _finish(s, f"t{i}", acc={"a": 0.9, "b": 0.5, "c": 0.1}[cfg["x"]])
    # three trials, three configurations: a repeat never took a trial while one was left untried
    assert sorted(seen) == ["a", "b", "c"]
    trials = _study(db).trials
    # Optuna holds every proposal: the repeats with the result their configuration finished with
    assert len(trials) == 3 + s.repeats_told
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        assert t.value == {"a": 0.9, "b": 0.5, "c": 0.1}[t.params["x"]]
    # the trial that asked again reported its intermediate value on the proposal it runs
    ran = [t for t in trials if t.intermediate_values]
    assert sorted(t.params["x"] for t in ran) == ["a", "b", "c"]
    assert s.repeats_told > 0  # TPE (one random start-up proposal, seed 0) did propose a finished one
    assert "again, finished before: Optuna is told" in capsys.readouterr().out


def test_a_tried_out_space_takes_the_repeat(db):
    s = _searcher(db, values=("a", "b"))
    for i in range(2):
        cfg = s.suggest(f"t{i}")
        _finish(s, f"t{i}", acc=0.9 if cfg["x"] == "a" else 0.4)
    told = s.repeats_told
    cfg = s.suggest("t2")  # nothing untried: after REPEAT_ASKS asks the repeat takes the trial
    assert cfg["x"] in ("a", "b")
    assert s.repeats_told - told == tuner.REPEAT_ASKS - 1
    _finish(s, "t2", acc=0.9 if cfg["x"] == "a" else 0.4)
    assert len(_study(db).trials) == 3 + s.repeats_told


@pytest.mark.parametrize("how", ["stopped", "error"])
def test_a_configuration_stopped_early_or_failed_is_not_finished(db, how):
    s = _searcher(db, values=("a",))
    s.suggest("t0")
    if how == "stopped":  # ASHA stopped it at step 40: PRUNED, and a repeat may continue it
        s.on_trial_complete("t0", {"acc": 0.3, STEP: 40})
    else:
        s.on_trial_complete("t0", None, error=True)
    assert s.suggest("t1") == {"x": "a"}
    assert s.repeats_told == 0
    state = optuna.trial.TrialState.PRUNED if how == "stopped" else optuna.trial.TrialState.FAIL
    assert _study(db).trials[0].state == state


def test_trials_side_by_side_are_kept_off_a_running_configuration(monkeypatch):
    """Two slots, as the quickstart runs: a proposal equal to the configuration the other slot is
    training would train it twice. TPE's constant liar keeps that rare (4 of these 200; without it 30,
    and Optuna before 5.0 has it off by default)."""
    import random

    space = {"m": [0.0, 0.03, 0.1, 0.3], "r": [0.0, 1.0, 4.0, 8.0], "e": ["maxpool", "infonce"]}
    monkeypatch.setattr("builtins.print", lambda *a, **k: None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    twins = proposals = 0
    for seed in range(20):
        rng, values = random.Random(seed), {}
        s = tuner._searcher_class()(
            budget_steps=BUDGET, metric="acc", mode="max", sampler=tuner.tpe_sampler(seed, 4),
            space={k: optuna.distributions.CategoricalDistribution(v) for k, v in space.items()})
        running = {f"t{i:02d}": s.suggest(f"t{i:02d}") for i in range(2)}
        for n in range(2, 12):
            done = min(running)
            cfg = running.pop(done)
            s.on_trial_complete(done, {"acc": values.setdefault(tuner.config_key(cfg), rng.random()), STEP: BUDGET})
            new = s.suggest(f"t{n:02d}")
            proposals += 1
            twins += new in running.values()
            running[f"t{n:02d}"] = new
    assert proposals == 200
    assert twins <= 8, twins


@pytest.mark.parametrize("then", ["result", "complete"])
def test_a_trial_finished_after_the_searchers_last_save_is_not_told_twice_on_resume(db, tmp_path, then):
    """Tune saves the searcher now and then; a trial can finish in the study (SQLite, at once) after
    the last save, and the driver be killed before the next. ``--resume`` restores the older state,
    where that trial is still open, and runs it again (its run adopted): its results must not reach
    Optuna a second time (UpdateFinishedTrialError, the sweep dead; seen in CI on S3)."""
    s = _searcher(db)
    s.suggest("t0")
    s.on_trial_result("t0", {"acc": 0.1, STEP: 25})  # the trial is known open in the study
    saved = tmp_path / "searcher.pkl"
    s.save(str(saved))
    s.on_trial_result("t0", {"acc": 0.2, STEP: 50})
    s.on_trial_complete("t0", {"acc": 0.4, STEP: BUDGET})  # finished in the study, never saved
    resumed = _searcher(db)
    resumed.restore(str(saved))
    for step, acc in ((25, 0.1), (50, 0.2)):  # the adopted run reports again
        resumed.on_trial_result("t0", {"acc": acc, STEP: step})
    if then == "complete":
        resumed.on_trial_complete("t0", {"acc": 0.4, STEP: BUDGET})
    trials = _study(db).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE]
    assert trials[0].value == 0.4 and trials[0].intermediate_values == {25: 0.1, 50: 0.2, BUDGET: 0.4}
    if then == "complete":  # known finished again: TPE's repeat of it is told, not trained
        assert tuner.config_key({"x": trials[0].params["x"]}) in resumed.finished
    resumed.suggest("t1")
    resumed.on_trial_complete("t1", {"acc": 0.1, STEP: BUDGET})
    assert [t.state for t in _study(db).trials] == [optuna.trial.TrialState.COMPLETE] * (2 + resumed.repeats_told)
