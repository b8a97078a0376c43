"""A T5-v1.1-shaped student with a Unigram (SentencePiece-style) tokenizer trained offline on the DSS
training text, loaded from a folder as the hub model would be: each paper config trains, evaluates,
checkpoints and restores exactly on the real DSS data, and every label round-trips the tokenizer."""

from pathlib import Path

import pytest

from mmi_ray.config import load_config
from mmi_ray.data import load_splits
from mmi_ray.metrics import label_correct
from mmi_ray.model import build_tokenizer
from mmi_ray.offline_student import build_student, dss_texts
from mmi_ray.recipe import run_loop
from mmi_ray.worker import WorkerEnv

REPO = Path(__file__).resolve().parents[1]
DATASETS = ["cqa", "svamp", "anli1", "esnli"]


@pytest.fixture(scope="module")
def data_dir(dss_dir, tmp_path_factory) -> Path:
    """The shared DSS data; a dataset shipped without a train split (anli1 here) trains on its
    validation rows, so that every paper config can run."""
    import shutil

    root = tmp_path_factory.mktemp("dss")
    for name in DATASETS:
        src = dss_dir / name
        if not src.is_dir():
            continue
        (root / name).symlink_to(src) if (src / f"{name}_train.json").exists() else shutil.copytree(src, root / name)
        if not (root / name / f"{name}_train.json").exists():
            shutil.copy(src / f"{name}_valid.json", root / name / f"{name}_train.json")
            for f in (src / "llm").glob("valid_CoT_*.json"):
                shutil.copy(f, root / name / "llm" / f.name.replace("valid_", "train_"))
    return root


@pytest.fixture(scope="module")
def student(data_dir, tmp_path_factory) -> Path:
    return build_student(tmp_path_factory.mktemp("student") / "t5-v1_1-offline", dss_texts(data_dir), vocab_size=2000)


def _cfg(name, dss_dir, student, tmp_path, **extra):
    ov = {"model.name": str(student), "data.data_dir": str(dss_dir), "scaling.use_gpu": False,
          "scaling.cpus_per_worker": 1, "train.max_steps": 4, "train.eval_every": 2, "train.batch_size": 4,
          "train.eval_batch_size": 8, "train.max_new_tokens": 8, "data.max_train_examples": 64,
          "data.max_eval_examples": 8, "model.max_source_length": 128, "model.max_target_length": 64,
          "run.storage_path": str(tmp_path), **extra}
    return load_config(REPO / "configs" / f"{name}_t5_base.yaml", [f"{k}={v}" for k, v in ov.items()])


def test_the_folder_loads_as_a_t5_v1_1_student(student):
    from transformers import AutoConfig, AutoTokenizer

    from mmi_ray.config import ModelConfig
    from mmi_ray.model import build_seq2seq

    c = AutoConfig.from_pretrained(student)
    assert c.model_type == "t5" and c.feed_forward_proj == "gated-gelu" and c.scale_decoder_outputs is False
    m = build_seq2seq(ModelConfig(name=str(student)), None, 0)
    assert m.lm_head.weight.data_ptr() != m.shared.weight.data_ptr()  # v1.1: an output head of its own
    tok = AutoTokenizer.from_pretrained(student)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert "▁" in "".join(tok.convert_ids_to_tokens(tok("predict: a question")["input_ids"]))  # SentencePiece pieces


@pytest.mark.parametrize("name", DATASETS)
def test_labels_round_trip_the_tokenizer(name, data_dir, student):
    if not (data_dir / name).is_dir():
        pytest.skip(f"{name} is not in the shared DSS data")
    cfg = _cfg(name, data_dir, student, Path("/tmp"))
    tok = build_tokenizer(cfg.model)
    splits = load_splits(cfg.data)
    examples = splits.valid.examples + (splits.test.examples if splits.test else [])
    labels = sorted({e.label for e in examples})
    back = tok.batch_decode(tok(labels)["input_ids"], skip_special_tokens=True)
    kind = examples[0].kind
    wrong = [(a, b) for a, b in zip(labels, back) if not label_correct(b, a, kind)]
    assert not wrong, wrong[:5]
    assert tok.unk_token_id not in {i for ids in tok(labels)["input_ids"] for i in ids}


@pytest.mark.parametrize("name", DATASETS)
def test_paper_config_trains_evaluates_checkpoints_and_restores_exactly(name, data_dir, student, tmp_path):
    if not (data_dir / name).is_dir():
        pytest.skip(f"{name} is not in the shared DSS data")
    import torch

    cfg = _cfg(name, data_dir, student, tmp_path)
    assert cfg.train.precision == "bf16" and cfg.model.name == str(student)  # the paper configs train in bf16 (autocast on CPU here)
    saved: dict[int, dict] = {}

    def env(restore_from=None):
        out: list[dict] = []

        def report(metrics, ckpt_dir):
            out.append(metrics)
            if ckpt_dir is not None:
                from mmi_ray.checkpoint import load_state

                saved[metrics["step"]] = load_state(ckpt_dir)
        return out, WorkerEnv(0, 1, torch.device("cpu"), lambda: restore_from, report, lambda m: m)

    full, e = env()
    run_loop(cfg, e)
    assert [m["step"] for m in full] == [2, 4] and all(0 <= m["val_accuracy"] <= 1 for m in full)
    assert full[-1]["loss"] == full[-1]["loss"] and full[-1]["rationale"] > 0  # real rationales trained
    resumed, e = env(restore_from=saved[2])
    run_loop(cfg, e)
    keys = ["loss", "label", "rationale", "mi", "val_accuracy"]
    assert [m["step"] for m in resumed] == [4]
    assert {k: resumed[0][k] for k in keys} == {k: full[1][k] for k in keys}


def test_readme_command_builds_a_student_folder(data_dir, tmp_path, capsys):
    from mmi_ray.offline_student import main

    assert main([str(tmp_path / "student"), "--data-dir", str(data_dir), "--vocab", "500"]) == 0
    assert f"model.name={tmp_path / 'student'}" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "student").iterdir()}


def test_an_exported_t5_v1_1_student_answers_in_plain_transformers_as_its_run(data_dir, student, tmp_path):
    """The offline T5-v1.1 student (as a hub model would be) trains 4 steps on CQA, exports as a stock
    T5 folder (no remote code), and plain transformers in a fresh process gives the run's own answers."""
    if not (data_dir / "cqa").is_dir():
        pytest.skip("cqa is not in the shared DSS data")
    from test_export import own_predictions, plain_transformers

    from mmi_ray.cli import main
    from mmi_ray.layout import CONFIG_FILE
    from mmi_ray.worker import in_process_env

    cfg = _cfg("cqa", data_dir, student, tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_text(cfg.to_yaml())
    run_loop(cfg, in_process_env(run_dir, 1, "node", lambda m: None)[0])
    assert main(["export", str(run_dir), "--out", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "modeling_mmi_t5.py").exists()
    inputs, preds, _ = own_predictions(run_dir)
    got = plain_transformers(tmp_path / "out", inputs, False, cfg.train.max_new_tokens, cfg.model.max_source_length)
    assert got["class"] == "T5ForConditionalGeneration" and got["answers"] == preds
