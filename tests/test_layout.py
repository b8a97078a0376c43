"""The on-disk layout module: names, the metrics log's resume rule, checkpoint rotation, and one
definition for every name the registries and the config share."""

import json
from pathlib import Path

import pytest

from mmi_ray import layout
from mmi_ray.config import BUILTIN_TASKS, DSS_NAMES, MI_ESTIMATOR_NAMES, DataConfig, LossConfig
from mmi_ray.errors import ConfigError


def test_run_names_round_trip_and_other_folders_are_not_runs():
    assert layout.run_name("ab12_00003", 7) == "ab12_00003_seed7"
    assert layout.parse_run_name("ab12_00003_seed7") == ("ab12_00003", 7)
    for other in ("report", "seed7", "x_seedy", ".tmp_checkpoint_0000010"):
        assert layout.parse_run_name(other) is None
    assert layout.checkpoint_dir_name(40) == "checkpoint_0000040"
    assert layout.trial_dir_name("ab12") == "trial_ab12"


def test_metrics_log_keeps_an_earlier_attempt_only_before_the_first_new_step(tmp_path):
    first = layout.MetricsLog(tmp_path)
    for step in (10, 20, 30):
        first.append({"step": step, "val_accuracy": step / 100})
    (tmp_path / layout.METRICS_FILE).write_text((tmp_path / layout.METRICS_FILE).read_text() + '{"step": 4')
    resumed = layout.MetricsLog(tmp_path)  # restored from the step-10 checkpoint
    resumed.append({"step": 20, "val_accuracy": 0.9})
    skipped: list[str] = []
    assert [(m["step"], m["val_accuracy"]) for m in layout.read_metrics(tmp_path, skipped)] == [(10, 0.1), (20, 0.9)]
    assert skipped == []  # the cut-off line is gone with the rewrite
    (tmp_path / layout.METRICS_FILE).write_text('{"step": 10}\n{"step": 2\n{"no_step": 1}\n')
    assert [m["step"] for m in layout.read_metrics(tmp_path, skipped)] == [10]
    assert len(skipped) == 2 and "damaged JSON line skipped" in skipped[0] and "without 'step'" in skipped[1]


def test_divergence_record_is_recognised_everywhere_by_one_key():
    rec = layout.divergence_record(20, 13)
    assert layout.is_divergence(rec) and rec["error"] == "non-finite loss at step 13"
    assert not layout.is_divergence({"step": 20, "val_accuracy": 0.5})
    assert json.loads(json.dumps(rec)) == rec


def test_publish_checkpoint_is_whole_and_keeps_the_newest(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for step in (10, 20, 30):
        src = tmp_path / f"src{step}"
        src.mkdir()
        (src / layout.STATE_FILE).write_text(str(step))
        (src / layout.META_FILE).write_text("{}")
        layout.store_checkpoint(src, run, step, keep=2)
    (run / "checkpoint_0000040").mkdir()  # a folder cut short (no files) is not a checkpoint
    assert [Path(p).name for p in layout.complete_checkpoints(run)] == ["checkpoint_0000020", "checkpoint_0000030"]
    assert not list(run.glob(".tmp_*"))


def test_statuses_are_one_vocabulary():
    assert layout.STATUSES[0] == layout.COMPLETED and len(set(layout.STATUSES)) == 6
    assert layout.INTERRUPTED in layout.STATUSES and layout.STOPPED in layout.STATUSES


def test_registries_have_exactly_the_config_names():
    from mmi_ray.data.builtin import TASKS
    from mmi_ray.data.dss import DSS_DATASETS
    from mmi_ray.losses import MI_ESTIMATORS

    assert set(DSS_DATASETS) == set(DSS_NAMES) and len(DSS_DATASETS) == len(DSS_NAMES)
    assert set(TASKS) == set(BUILTIN_TASKS) and len(TASKS) == len(BUILTIN_TASKS)
    assert set(MI_ESTIMATORS) == set(MI_ESTIMATOR_NAMES)
    assert DataConfig(dataset="anli1", data_dir="x").dataset == "anli1"
    assert LossConfig(mi_estimator="nwj").mi_estimator == "nwj"
    with pytest.raises(ValueError):
        LossConfig(mi_estimator="mine")


def test_renamed_resource_keys_name_their_new_names_and_a_gpu_share_needs_a_gpu(tmp_path):
    from mmi_ray.sweep import load_sweep

    spec = tmp_path / "s.yaml"
    head = "name: s\nbase: {}\nnum_trials: 1\nsearch: {loss.mi_weight: {type: uniform, low: 0, high: 1}}\n"
    spec.write_text(head + "resources: {workers: 2}\n")
    with pytest.raises(ConfigError) as e:
        load_sweep(spec)
    assert "resources.workers: unknown key (now called resources.num_workers)" in str(e.value)
    for resources, expected in (("{gpus_per_worker: 0.25}", "resources.gpus_per_worker: needs use_gpu: true"),
                                ("{use_gpu: true, gpus_per_worker: 2}", "resources.gpus_per_worker: 2 is more than one GPU"),
                                ("{use_gpu: true, gpus_per_worker: 0}", "resources.gpus_per_worker: Input should be greater than 0")):
        spec.write_text(head + f"resources: {resources}\n")
        with pytest.raises(ConfigError) as e:
            load_sweep(spec)
        assert expected in str(e.value), str(e.value)


PACKAGE = __import__("pathlib").Path(layout.__file__).parent


def _module_imports() -> dict[str, set[str]]:
    """Every mmi_ray module -> the mmi_ray modules it imports anywhere (function-level imports too)."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        pkg = name if rel.name == "__init__" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith("mmi_ray"):
                    deps.add(base)
                    deps.update(f"{base}.{a.name}" for a in node.names)  # `from . import faults`
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("mmi_ray"))
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    graph = _module_imports()
    assert "mmi_ray.recipe" in graph and "mmi_ray.worker" in graph["mmi_ray.recipe"]
    # a package's __init__ re-exports its modules: an edge into an __init__ is not a circle of logic
    packages = {m for m in graph if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    circles = []
    for a, deps in graph.items():
        for b in deps - packages:
            seen, todo = set(), [b]
            while todo:  # does b reach a again?
                m = todo.pop()
                if m == a:
                    circles.append((a, b))
                    break
                if m not in seen:
                    seen.add(m)
                    todo.extend(graph[m] - packages)
    assert circles == []


def test_the_sweep_and_the_analysis_do_not_import_each_other():
    """``mmi_ray/sweep/`` runs sweeps, ``mmi_ray/analysis/`` reads finished ones; what both need
    (intervals, method names, ranking, reading a sweep folder) lives in ``mmi_ray/results/``."""
    graph = _module_imports()
    assert "mmi_ray.results.stats" in graph["mmi_ray.sweep.confirm"]  # the test sees the shared home
    crossing = [(a, b) for a, deps in graph.items() for b in deps
                for side, other in (("mmi_ray.sweep", "mmi_ray.analysis"), ("mmi_ray.analysis", "mmi_ray.sweep"))
                if (a == side or a.startswith(side + ".")) and (b == other or b.startswith(other + "."))]
    assert crossing == []


def test_no_user_facing_text_names_an_issue_or_a_file_not_in_the_repository():
    """Messages and docstrings give the conclusion and a docs page; the history stays in CHANGELOG.md
    and BENCHMARKS.md. Every ``docs/...md`` a source names exists."""
    import re

    repo = PACKAGE.parent
    files = [*PACKAGE.rglob("*.py"), *(repo / "benchmarks").glob("*.py"), *(repo / "tools").glob("*.py"),
             *(repo / "examples").glob("*.py"), *(repo / "configs").glob("*.yaml"), *(repo / "sweeps").glob("*.yaml"),
             *(repo / "docs").glob("*.md"), repo / "README.md"]
    found = []
    for f in files:
        text = f.read_text()
        found += [f"{f.relative_to(repo)}: {m.group(0)}" for m in re.finditer(r"\bissues? \d+|method\.md|perf-notes", text)]
        found += [f"{f.relative_to(repo)}: {m.group(0)}"
                  for m in re.finditer(r"\b(?:docs/[\w-]+\.md|(?:mmi_ray|benchmarks|tools|examples|analysis)/[\w/]+\.py)", text)
                  if not (repo / m.group(0)).exists()]
    assert found == []


def test_every_layout_file_name_is_written_only_in_the_layout_module():
    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and "." in v}
    assert {"trials.csv", "config.yaml", "runs.csv", "pareto_front.png"} <= names
    found = [f"{p.relative_to(PACKAGE.parent)}: {n}" for p in PACKAGE.rglob("*.py") if p.name != "layout.py"
             for n in names if f'"{n}"' in p.read_text() or f"'{n}'" in p.read_text()]
    assert found == []
