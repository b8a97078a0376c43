from pathlib import Path

import pytest
import yaml

from mmi_ray.errors import ConfigError
from mmi_ray.sweep import load_sweep

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "sweeps").glob("*.yaml"))
BASE = str(REPO / "configs" / "tiny_builtin.yaml")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_spec_validates(path):
    sweep = load_sweep(path)
    assert sweep.spec.num_trials >= 1
    assert path.read_text().startswith("#"), "each spec begins with a comment giving its command"
    assert "test" not in sweep.spec.objective.metric
    assert sweep.spec.search_advice() == [], "a shipped spec sizes TPE's start-up for its trial count"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_each_spec_states_its_hardware_and_the_cpu_ones_start_on_two_cores(path):
    from mmi_ray.sweep.placement import check_cluster_fits

    sweep = load_sweep(path)
    header = "\n".join(x for x in path.read_text().splitlines() if x.startswith("#"))
    if sweep.spec.resources.use_gpu:
        assert "GPU" in header
        return
    assert "2 CPU cores" in header or "2 cores" in header, header
    check_cluster_fits(sweep, [{"CPU": 2.0}])  # raises when one trial cannot start on 2 cores
    assert sweep.derived_concurrency({"CPU": 2.0}) >= 1


def good_spec(**changes) -> dict:
    spec = {
        "name": "t",
        "base": BASE,
        "search": {"loss.mi_weight": {"type": "loguniform", "low": 0.01, "high": 1.0},
                   "loss.critic_size": {"type": "int", "low": 16, "high": 128, "log": True}},
        "points_to_evaluate": [{"loss.mi_weight": 0.1, "loss.critic_size": 64}],
        "num_trials": 4,
    }
    spec.update(changes)
    return spec


def _load(tmp_path, spec):
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return load_sweep(p)


def test_good_spec_builds_trial_configs(tmp_path):
    sweep = _load(tmp_path, good_spec(seeds=[0, 1], resources={"num_workers": 2, "cpus_per_worker": 0.5}))
    cfg = sweep.trial_config({"loss.mi_weight": 0.3, "loss.critic_size": 32}, 1, str(tmp_path))
    assert cfg.loss.mi_weight == 0.3 and cfg.loss.critic_size == 32 and cfg.train.seed == 1
    assert cfg.scaling.num_workers == 2 and cfg.run.storage_path == str(tmp_path)
    assert cfg.data.split_seed == 0 and cfg.data.builtin.seed == 0, "the data split seed stays apart from train.seed"
    # 2 seeds x 2 workers x 0.5 CPU = 2 CPUs a trial
    assert sweep.derived_concurrency({"CPU": 8}) == 4 and sweep.derived_concurrency({"CPU": 3}) == 1


@pytest.mark.parametrize("changes,expected", [
    ({"serach": {}}, "serach: unknown key"),
    ({"search": {}}, "search: the space is empty"),
    ({"search": {"loss.mi_weight": {"type": "uniform", "low": 0.5, "high": 0.1}}, "points_to_evaluate": []},
     "search.loss.mi_weight: low must be < high (got low=0.5, high=0.1)"),
    ({"objective": {"metric": "test_accuracy"}}, "objective: the objective must be a validation metric"),
    ({"num_trials": 0}, "num_trials: Input should be greater than or equal to 1"),
    ({"searcher_startup_trials": 0}, "searcher_startup_trials: Input should be greater than or equal to 1"),
    ({"search": {"loss.mi_weight": {"type": "uniform", "low": -0.1, "high": 1.0}}, "points_to_evaluate": []},
     "search.loss.mi_weight: Input should be greater than or equal to 0 (got -0.1)"),
    ({"search": {"loss.mi_wieght": {"type": "uniform", "low": 0.0, "high": 1.0}}, "points_to_evaluate": []},
     "search.loss.mi_wieght: unknown key"),
    ({"search": {"loss.mi_estimator": {"type": "choice", "values": ["maxpool", "nope"]}}, "points_to_evaluate": []},
     "search.loss.mi_estimator: Input should be 'maxpool'"),
    ({"points_to_evaluate": [{"loss.mi_weight": 5.0, "loss.critic_size": 64}]},
     "points_to_evaluate[0].loss.mi_weight: 5.0 is outside the search space"),
    ({"points_to_evaluate": [{"loss.mi_weight": 0.1}]}, "must set exactly the searched keys"),
    ({"seeds": [0, 1], "confirm": {"seeds": [1, 7]}}, "confirm.seeds must be fresh: [1] also in seeds"),
    ({"confirm": {"seeds": [7]}}, "confirm.seeds: List should have at least 2 items"),
    ({"confirm": {"top_k": 0}}, "confirm.top_k: Input should be greater than or equal to 1"),
    ({"resources": {"in_process": True, "use_gpu": True}}, "resources.in_process: needs one seed and one CPU worker"),
    ({"search": {"loss.mi_weight": {"type": "loguniform", "low": 0.0, "high": 1.0}}, "points_to_evaluate": []},
     "low must be > 0 on a log scale"),
    ({"scheduler": {"grace_period": 5000}}, "scheduler.grace_period: 5000 exceeds train.max_steps"),
    ({"seeds": []}, "seeds: List should have at least 1 item"),
    ({"name": "has space"}, "name: String should match pattern"),
    ({"base": "no_such.yaml"}, "base: file not found"),
    ({"overrides": {"loss.mi_weight": -1}}, "loss.mi_weight: Input should be greater than or equal to 0"),
    ({"objective": []}, "objective: an empty list"),
    ({"objective": [{"metric": "val_accuracy"}, {"metric": "val_accuracy", "mode": "min"}]},
     "objective: each metric once"),
    ({"objective": [{"metric": "val_accuracy"}, {"metric": "test_ece", "mode": "min"}]},
     "objective.1: the objective must be a validation metric, not a test metric (got 'test_ece')"),
    ({"objective": [{"metric": "val_accuracy"}, {"metric": "val_rationale_bleu"}]},
     "objective.1.metric: 'val_rationale_bleu' needs rationales generated at evaluation; set train.eval_rationales"),
])
def test_bad_specs_name_the_key(tmp_path, changes, expected):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, good_spec(**changes))
    assert expected in str(e.value)
    assert "spec.yaml" in str(e.value)


def test_cli_bad_spec_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(good_spec(num_trials=0)))
    r = subprocess.run([sys.executable, "-m", "mmi_ray.cli", "sweep", str(p)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"mmi-ray: error: {p}: num_trials: Input should be greater than or equal to 1 (got 0)"


def test_command_line_overrides_reach_the_base_config(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(good_spec(overrides={"train.max_steps": 50}, scheduler={"grace_period": 10})))
    sweep = load_sweep(p, ["overrides.train.max_steps=70", "num_trials=2", "overrides.data.builtin.num_train=99"])
    assert sweep.base.train.max_steps == 70 and sweep.base.data.builtin.num_train == 99
    assert sweep.spec.num_trials == 2


def test_several_objectives_make_a_multi_objective_spec(tmp_path):
    one = _load(tmp_path, good_spec())
    assert [o.metric for o in one.spec.objectives] == ["val_accuracy"] and not one.spec.more_objectives
    two = _load(tmp_path, good_spec(objective=[{"metric": "val_accuracy", "mode": "max"},
                                               {"metric": "val_ece", "mode": "min"}]))
    assert [(o.metric, o.mode) for o in two.spec.objectives] == [("val_accuracy", "max"), ("val_ece", "min")]
    assert two.spec.objective.metric == "val_accuracy"  # the primary one: ASHA, ranking, confirmation
    # what trials receive (the dumped spec) validates back to the same objectives
    from mmi_ray.sweep.spec import SweepSpec

    again = SweepSpec.model_validate(two.spec.model_dump(mode="json"))
    assert again.objectives == two.spec.objectives
    # the searcher Tune gets is Optuna's multi-objective TPE, one direction per objective
    from mmi_ray.sweep.tuner import _searcher

    searcher, _ = _searcher(two, str(tmp_path / "sweep"))
    assert searcher.metric == ["val_accuracy", "val_ece"]
    assert searcher._ot_study.directions[1].name == "MINIMIZE" and len(searcher._ot_study.directions) == 2


def test_searcher_startup_trials_reach_optunas_tpe(tmp_path):
    """TPE draws ``searcher_startup_trials`` proposals at random before it models (10, Optuna's
    default, unless the spec says): on a small grid the spec can let it model sooner."""
    from mmi_ray.sweep.tuner import _searcher

    default, _ = _searcher(_load(tmp_path, good_spec()), str(tmp_path / "a"))
    assert default._sampler._n_startup_trials == 10
    low, _ = _searcher(_load(tmp_path, good_spec(searcher_startup_trials=2)), str(tmp_path / "b"))
    assert low._sampler._n_startup_trials == 2


def test_a_small_sweep_left_on_tpes_default_start_up_is_warned_at_its_start_and_in_its_plan(tmp_path, capsys):
    """Optuna's 10 random start-up proposals leave TPE to model few of a small sweep's proposals: the
    spec is warned (with a size for its trial count) when it leaves the key unset, not when it sets it
    or when TPE models at least half of what it proposes; a resumed sweep is not warned again."""
    from mmi_ray.sweep.tuner import announce

    small = _load(tmp_path, good_spec(num_trials=9))  # 1 point, 8 proposals, all random under the default
    (advice,) = small.spec.search_advice()
    assert advice.startswith("searcher_startup_trials: TPE draws 8 of this sweep's 8 proposals at random")
    assert "models 0" in advice and "set searcher_startup_trials: 3 (1 point, then 2 at random)" in advice
    announce(small, str(tmp_path / "s"), resume=False)
    out = capsys.readouterr().out
    assert f"[mmi-ray] warning: {small.source}: searcher_startup_trials: TPE draws 8" in out
    announce(small, str(tmp_path / "s"), resume=True)
    assert "warning" not in capsys.readouterr().out
    assert _load(tmp_path, good_spec(num_trials=9, searcher_startup_trials=10)).spec.search_advice() == []
    assert _load(tmp_path, good_spec(num_trials=17)).spec.search_advice()  # models 7 of 16
    assert _load(tmp_path, good_spec(num_trials=19)).spec.search_advice() == []  # models 9 of 18
    assert _load(tmp_path, good_spec(num_trials=1)).spec.search_advice() == []  # the points alone: no TPE
    # the plan names it among its warnings
    from mmi_ray.plan import load_cluster, make_plan

    plan = make_plan(small, load_cluster(str(REPO / "cluster" / "aws-gpu.yaml")), "aws")
    assert any(w.startswith("searcher_startup_trials: TPE draws 8") for w in plan.warnings)


def test_a_sweep_started_before_a_spec_key_existed_resumes_and_a_changed_spec_does_not(tmp_path):
    """The recorded spec of a sweep started by an older mmi-ray lacks keys added since; they take
    their defaults, so --resume goes on. A spec that really changed is still refused, by name."""
    from mmi_ray.errors import ConfigError
    from mmi_ray.layout import SPEC_FILE
    from mmi_ray.sweep.tuner import _start_or_resume

    sweep = _load(tmp_path, good_spec(storage_path=str(tmp_path / "results")))
    sweep_dir = tmp_path / "results" / "t"
    sweep_dir.mkdir(parents=True)
    _start_or_resume(sweep, str(tmp_path / "results"), str(sweep_dir), resume=False)
    recorded = yaml.safe_load((sweep_dir / SPEC_FILE).read_text())
    del recorded["spec"]["searcher_startup_trials"]  # as a sweep started before the key existed recorded it
    (sweep_dir / SPEC_FILE).write_text(yaml.safe_dump(recorded, sort_keys=True))
    _start_or_resume(sweep, str(tmp_path / "results"), str(sweep_dir), resume=True)  # no error
    changed = _load(tmp_path, good_spec(storage_path=str(tmp_path / "results"), num_trials=5))
    with pytest.raises(ConfigError, match="the spec differs from the one sweep 't' started with"):
        _start_or_resume(changed, str(tmp_path / "results"), str(sweep_dir), resume=True)
    recorded["spec"]["retired_key"] = 1  # a key this version does not know: refused the same way, no traceback
    (sweep_dir / SPEC_FILE).write_text(yaml.safe_dump(recorded, sort_keys=True))
    with pytest.raises(ConfigError, match="the spec differs"):
        _start_or_resume(sweep, str(tmp_path / "results"), str(sweep_dir), resume=True)


def test_confirmation_experiments_add_seeds_in_a_folder_named_by_their_ranges():
    """A confirmation's Tune experiments: the first in confirm/, each set of seeds added later in
    confirm/more_<ranges>; asking for held seeds resumes them all; leaving held seeds out is refused."""
    from types import SimpleNamespace

    from mmi_ray.errors import ConfigError
    from mmi_ray.sweep.confirm import _experiments, seeds_name

    assert seeds_name(list(range(15, 5, -1))) == "6-15" and seeds_name([9, 3, 4]) == "3-4_9" and seeds_name([7]) == "7"
    sweep = SimpleNamespace(source="s/sweep_spec.yaml")
    assert _experiments(sweep, {}, [1, 2]) == [["confirm", [1, 2]]]
    held = {"seeds": [1, 2, 3, 4, 5], "experiments": [["confirm", [1, 2, 3, 4, 5]]]}
    assert _experiments(sweep, held, [1, 2]) == held["experiments"]  # fewer: resume them all
    more = _experiments(sweep, held, list(range(1, 16)))
    assert more == [["confirm", [1, 2, 3, 4, 5]], ["confirm/more_6-15", list(range(6, 16))]]
    older = {"seeds": [1, 2, 3, 4], "experiments": [["confirm", [1, 2]], ["confirm/more_3_4", [3, 4]]]}  # named before
    assert _experiments(sweep, older, [1, 2, 3, 4, 9])[-1] == ["confirm/more_9", [9]]
    with pytest.raises(ConfigError, match=r"holds runs on seeds \[1, 2, 3, 4, 5\]"):
        _experiments(sweep, held, [2, 6])


def test_the_search_never_draws_a_key_that_means_nothing_given_the_others(tmp_path):
    """Conditional space (define-by-run): at mi_weight 0 the estimator and critic size are not drawn
    (they hold the base config's values), and a critic size is drawn only for a learned critic. So
    two trials that differ only where it means nothing are one configuration (the repeat rule then
    spends no trial on it)."""
    import pickle

    from mmi_ray.layout import STEP
    from mmi_ray.sweep.tuner import _searcher

    spec = good_spec(
        search={"loss.critic_size": {"type": "int", "low": 16, "high": 128, "log": True},
                "loss.mi_estimator": {"type": "choice", "values": ["maxpool", "infonce", "nwj"]},
                "loss.mi_weight": {"type": "choice", "values": [0.0, 0.1]}},
        points_to_evaluate=[{"loss.mi_weight": 0.0, "loss.mi_estimator": "nwj", "loss.critic_size": 16}],
        num_trials=40, searcher_startup_trials=5)
    sweep = _load(tmp_path, spec)
    base = sweep.base.loss
    assert (base.mi_estimator, base.critic_size) == ("maxpool", 128)
    searcher, _ = _searcher(sweep, str(tmp_path / "sweep"))
    configs = []
    for i in range(40):
        cfg = searcher.suggest(f"t{i}")
        configs.append(cfg)
        searcher.on_trial_complete(f"t{i}", {"val_accuracy": 0.5 + 0.01 * i, STEP: sweep.max_steps})
    # the point's meaningless values were not enqueued: its trial is plain DSS at the base's values
    assert configs[0] == {"loss.mi_weight": 0.0, "loss.mi_estimator": "maxpool", "loss.critic_size": 128}
    for c in configs:
        assert set(c) == set(spec["search"])  # every trial names every searched key
        if c["loss.mi_weight"] == 0:
            assert (c["loss.mi_estimator"], c["loss.critic_size"]) == ("maxpool", 128)
        elif c["loss.mi_estimator"] == "maxpool":
            assert c["loss.critic_size"] == 128
    drawn = {(c["loss.mi_estimator"], c["loss.critic_size"]) for c in configs if c["loss.mi_weight"] > 0}
    assert any(e != "maxpool" and size != 128 for e, size in drawn)  # the critic size is searched where it counts
    # the space is pickled with the searcher's state (sweep --resume)
    again = pickle.loads(pickle.dumps(sweep.space()))
    assert again.order == ["loss.mi_weight", "loss.mi_estimator", "loss.critic_size"]
    assert again.canonical({"loss.mi_weight": 0.0, "loss.mi_estimator": "nwj", "loss.critic_size": 16}) == configs[0]


def test_momentum_is_drawn_only_for_sgd(tmp_path):
    import optuna

    sweep = _load(tmp_path, good_spec(
        search={"optim.momentum": {"type": "uniform", "low": 0.5, "high": 0.99},
                "optim.optimizer": {"type": "choice", "values": ["adamw", "sgd"]}},
        points_to_evaluate=[], num_trials=2))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = sweep.space()
    for _ in range(20):
        t = study.ask()
        constants = space(t)
        assert ("optim.momentum" in t.params) == (t.params["optim.optimizer"] == "sgd")
        assert ("optim.momentum" in constants) != ("optim.momentum" in t.params)
        study.tell(t, 0.0)
