"""Run identity and reuse (mmi_ray/reuse.py), without Ray: what changes an identity, the index,
adopting a run (records moved, checkpoint files linked, never rewritten), the test cache."""

import json
from pathlib import Path

import pytest

from mmi_ray import reuse
from mmi_ray.config import Config, load_config
from mmi_ray.layout import REUSED_FILE, TEST_EVAL_FILE

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "configs" / "tiny_builtin.yaml"


def cfg_with(*overrides: str) -> Config:
    return load_config(CFG, list(overrides))


def test_identity_follows_what_changes_a_result_and_ignores_where_it_runs():
    base = reuse.identity(cfg_with())
    # where and how a run is kept does not change what it trains
    for same in ("run.storage_path=/elsewhere", "run.name=x", "scaling.cpus_per_worker=0.5",
                 "train.keep_checkpoints=5", "scaling.torch_threads=1"):
        assert reuse.identity(cfg_with(same)) == base, same
    # every field that changes the model or its figures does
    changed = {reuse.identity(cfg_with(o)) for o in ("loss.mi_weight=0.3", "train.seed=1", "optim.lr=0.002",
                                                     "data.builtin.seed=2", "train.max_steps=7", "scaling.num_workers=2",
                                                     "model.d_model=32", "train.eval_rationales=4")}
    assert len(changed) == 8 and base not in changed


def test_identity_changes_with_the_data_files_bytes(tmp_path):
    d = tmp_path / "data" / "svamp"
    d.mkdir(parents=True)
    (d / "svamp_train.json").write_text('{"input": "a", "label": "( 1.0 + 2.0 )"}\n')
    cfg = cfg_with("data.dataset=svamp", f"data.data_dir={tmp_path / 'data'}")
    before = reuse.identity(cfg)
    assert reuse.identity(cfg) == before
    (d / "svamp_train.json").write_text('{"input": "a", "label": "( 1.0 + 3.0 )"}\n')
    assert reuse.identity(cfg) != before


def fake_run(root: Path, name: str, cfg: Config, steps: list[int]) -> Path:
    """A run folder as a trainer leaves it: config, records with checkpoint paths, checkpoints."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(cfg.to_yaml())
    lines = []
    for s in steps:
        ck = run / f"checkpoint_{s:07d}"
        ck.mkdir()
        (ck / "state.pt").write_bytes(b"weights %d" % s)
        (ck / "meta.json").write_text(json.dumps({"step": s}))
        lines.append(json.dumps({"step": s, "val_accuracy": s / 100, "checkpoint_path": str(ck)}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_a_finished_run_is_adopted_with_linked_checkpoints_and_its_records_moved(tmp_path):
    cfg = cfg_with("train.max_steps=20")
    src = fake_run(tmp_path / "sweepA" / "runs", "t1_seed0", cfg, [10, 20])
    root = reuse.index_root(str(tmp_path))
    assert reuse.lookup(cfg, root) is None  # nothing registered yet
    ident = reuse.register(src, root)
    assert ident == reuse.identity(cfg)
    entry = json.loads((tmp_path / "run_index" / f"{ident}.json").read_text())
    assert entry == {"run_dir": str(src.resolve()), "step": 20, "finished": True}

    dst = tmp_path / "sweepB" / "runs" / "t9_seed0"
    note = reuse.adopt(cfg.model_copy(update={"run": cfg.run.model_copy(update={"storage_path": "/x"})}), dst, root,
                       allow_partial=False)
    assert note["from"] == str(src.resolve()) and note["finished"]
    assert json.loads((dst / REUSED_FILE).read_text())["from"] == str(src.resolve())
    assert reuse.reused_from(dst) == str(src.resolve()) and reuse.reused_from(src) is None
    for s in (10, 20):  # the same file on disk: nothing written again
        a, b = src / f"checkpoint_{s:07d}" / "state.pt", dst / f"checkpoint_{s:07d}" / "state.pt"
        assert a.stat().st_ino == b.stat().st_ino
    records = [json.loads(x) for x in (dst / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20]
    assert all(r["checkpoint_path"].startswith(str(dst)) for r in records)  # moved here, the source untouched
    assert all(json.loads(x)["checkpoint_path"].startswith(str(src)) for x in (src / "metrics.jsonl").read_text().splitlines())
    # an adopted folder is adopted once: a second call finds records and does nothing
    assert reuse.adopt(cfg, dst, root, allow_partial=False) is None
    # another identity finds nothing; reuse off (None root) adopts nothing
    assert reuse.adopt(cfg_with("train.max_steps=20", "loss.mi_weight=0.5"), tmp_path / "c", root, False) is None
    assert reuse.adopt(cfg, tmp_path / "d", None, False) is None


def test_the_index_keeps_the_furthest_run_and_partial_runs_only_where_resumable(tmp_path):
    cfg = cfg_with("train.max_steps=30")
    root = reuse.index_root(str(tmp_path))
    part = fake_run(tmp_path / "runs", "a_seed0", cfg, [10])
    reuse.register(part, root)
    assert reuse.adopt(cfg, tmp_path / "x", root, allow_partial=False) is None  # a Ray Train run: finished only
    # a run that resumes the source's checkpoint needs its exact config (checkpoint.restore checks it)
    other_cpus = cfg_with("train.max_steps=30", "scaling.cpus_per_worker=0.5")
    assert reuse.identity(other_cpus) == reuse.identity(cfg)
    assert reuse.adopt(other_cpus, tmp_path / "z", root, allow_partial=True) is None
    assert reuse.adopt(cfg, tmp_path / "y", root, allow_partial=True)["step"] == 10
    full = fake_run(tmp_path / "runs", "b_seed0", cfg, [10, 20, 30])
    reuse.register(full, root)
    reuse.register(part, root)  # a shorter run never replaces a longer one
    assert reuse.lookup(cfg, root)["run_dir"] == str(full.resolve())
    # a diverged run is not reused
    bad = fake_run(tmp_path / "runs2", "c_seed0", cfg_with("train.max_steps=30", "optim.lr=1"), [10])
    with (bad / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 12, "non_finite_step": 12, "error": "non-finite loss at step 12"}) + "\n")
    assert reuse.register(bad, root) is None
    # a storage URI keeps its index on the storage itself (tests/test_storage.py runs it on an S3 server)
    assert reuse.index_root("s3://bucket/results/") == "s3://bucket/results" and reuse.index_root(str(tmp_path), False) is None


def test_test_figures_are_read_once_per_run_and_travel_with_an_adopted_run(tmp_path):
    cfg = cfg_with("train.max_steps=10")
    src = fake_run(tmp_path / "runs", "a_seed0", cfg, [10])
    calls = []

    def evaluate(ckpt):
        calls.append(ckpt)
        return {"test_accuracy": 0.75, "test_n": 40}

    ck = str(src / "checkpoint_0000010")
    assert reuse.cached_test(src, ck, 10, evaluate) == {"test_accuracy": 0.75, "test_n": 40}
    assert reuse.cached_test(src, ck, 10, evaluate)["test_accuracy"] == 0.75
    assert len(calls) == 1 and (src / TEST_EVAL_FILE).exists()
    root = reuse.index_root(str(tmp_path))
    reuse.register(src, root)
    dst = tmp_path / "other" / "b_seed0"
    reuse.adopt(cfg, dst, root, allow_partial=False)
    assert reuse.cached_test(dst, str(dst / "checkpoint_0000010"), 10, evaluate)["test_n"] == 40
    assert len(calls) == 1  # the adopted run did not read test again


@pytest.mark.parametrize("module", reuse.RESULT_SOURCES)
def test_every_result_source_exists(module):
    assert (Path(reuse.__file__).parent / module).is_file()
