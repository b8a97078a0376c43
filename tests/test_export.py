"""The student leaves the sweep: ``mmi-ray export`` writes a folder that plain transformers loads
(in a fresh process, no mmi_ray import) and answers exactly as the run's own evaluation did;
``predict`` and ``evaluate`` run on it; the model card; bad inputs; the Hub upload at its boundary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmi_ray.cli import main
from mmi_ray.config import load_config
from mmi_ray.layout import CONFIG_FILE, EXPORT_SOURCES, MODEL_SOURCES, complete_checkpoints
from mmi_ray.recipe import run_loop
from mmi_ray.worker import in_process_env

REPO = Path(__file__).resolve().parents[1]
SMALL = ["train.max_steps=40", "train.eval_every=20", "model.d_model=32", "model.d_ff=64", "model.num_heads=2",
         "data.builtin.num_train=400", "run.storage_path=unused"]


def train_run(tmp_path: Path, config: str = "tiny_props.yaml", extra: list[str] = ()) -> Path:
    """A finished run folder (config.yaml, metrics.jsonl, checkpoints), trained in this process."""
    cfg = load_config(REPO / "configs" / config, [*SMALL, *extra])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_text(cfg.to_yaml())
    env, _ = in_process_env(run_dir, 2, "node", lambda m: None)
    run_loop(cfg, env)
    return run_dir


def own_predictions(run_dir: Path, split: str = "valid") -> tuple[list[str], list[str], float]:
    """The run's evaluation of its newest checkpoint (the trainer's evaluator): inputs, predictions, accuracy."""
    from mmi_ray.checkpoint import load_config as ckpt_config
    from mmi_ray.data import load_splits
    from mmi_ray.data.batching import predict_inputs, prompts_for
    from mmi_ray.evaluate import evaluate
    from mmi_ray.export import as_module, load_student

    ckpt = complete_checkpoints(run_dir)[-1]
    student, tok, cfg = load_student(ckpt)
    assert ckpt_config(ckpt) == cfg
    data = getattr(load_splits(cfg.data), split)
    records: list[dict] = []
    m = evaluate(as_module(student), tok, data.examples, predict_inputs(data.examples, prompts_for(cfg.model, tok), cfg.model.max_source_length),
                 cfg, student.device, prefix="val", records=records)
    return [r["input"] for r in records], [r["prediction"] for r in records], m["val_accuracy"]


PLAIN_HF = """
import json, sys
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
folder, remote, inputs, max_new = sys.argv[1], sys.argv[2] == "1", json.loads(sys.argv[3]), int(sys.argv[4])
max_source = int(sys.argv[5])  # the student's input length in training (longer inputs were cut there too)
seq2seq = AutoConfig.from_pretrained(folder, trust_remote_code=remote).is_encoder_decoder
auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
model = auto.from_pretrained(folder, trust_remote_code=remote).eval()
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
out = []
for text in inputs:  # one at a time: no padding, nothing of mmi-ray's batching
    prompt = "predict: " + text + ("" if seq2seq else "\\n")  # a decoder-only student: prompt, newline, its answer
    ids = tok([prompt], return_tensors="pt", truncation=True, max_length=max_source).input_ids
    new = model.generate(ids, max_new_tokens=max_new, do_sample=False)[:, 0 if seq2seq else ids.shape[1]:]
    out.append(tok.batch_decode(new, skip_special_tokens=True)[0].strip())
assert not any(m.startswith("mmi_ray") for m in sys.modules)
print(json.dumps({"class": type(model).__name__, "answers": out}))
"""


def plain_transformers(folder: Path, inputs: list[str], remote: bool, max_new: int, max_source: int = 512) -> dict:
    r = subprocess.run([sys.executable, "-c", PLAIN_HF, str(folder), "1" if remote else "0", json.dumps(inputs),
                        str(max_new), str(max_source)], capture_output=True, text=True, cwd=folder.parent, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("config,extra,remote", [
    ("tiny_props.yaml", [], True),  # words tokenizer, learned encoder positions: ships its modeling file
    ("tiny_builtin.yaml", ["model.abs_positions=false", "model.max_source_length=96", "model.max_target_length=48",
                           "model.num_layers=1", "train.max_new_tokens=8"], False),  # byte tokenizer, stock T5
    ("tiny_props.yaml", ["model.kind=causal"], False),  # words tokenizer, a Llama-shaped decoder-only student
], ids=["tiny-words-positions", "byte-stock-t5", "causal-llama"])
def test_an_exported_run_loads_in_plain_transformers_and_answers_as_the_run_did(tmp_path, config, extra, remote, capsys):
    run_dir = train_run(tmp_path, config, extra)
    out = tmp_path / "student"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert "exported:" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "README.md"} <= names
    assert ("modeling_mmi_t5.py" in names) == remote
    assert not any("critic" in k or "estimator" in k for k in json.loads((out / "config.json").read_text()))
    # the tokenizer cuts inputs where training did
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == \
        load_config(run_dir / CONFIG_FILE).model.max_source_length
    inputs, preds, acc = own_predictions(run_dir)
    cfg = load_config(run_dir / CONFIG_FILE)
    got = plain_transformers(out, inputs, remote, cfg.train.max_new_tokens)
    causal = "model.kind=causal" in extra
    assert got["class"] == ("LlamaForCausalLM" if causal else "MMIT5ForConditionalGeneration" if remote
                            else "T5ForConditionalGeneration")
    assert got["answers"] == preds  # bit-for-bit the run's own greedy answers on validation
    final = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert acc == final["val_accuracy"]  # the same evaluation the run logged
    # the card's five-line usage example runs as written, from the folder's parent
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "apache-2.0" and "mmi-ray" in front["tags"] and front["library_name"] == "transformers"
    example = card.split("```python\n")[1].split("```")[0]
    assert len(example.strip().splitlines()) == 5
    r = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    asked = example.split("predict: ")[1].split("'")[0].split('"')[0].removesuffix("\\n")  # the newline, as written
    assert r.stdout.strip() == preds[inputs.index(asked)]
    assert front["pipeline_tag"] == ("text-generation" if causal else "text2text-generation")


@pytest.mark.parametrize("extra", [[], ["model.kind=causal"]], ids=["t5", "causal"])
def test_predict_and_evaluate_on_an_exported_folder_and_a_run(tmp_path, capsys, extra):
    run_dir = train_run(tmp_path, extra=extra)
    out = tmp_path / "student"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    inputs, preds, acc = own_predictions(run_dir)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"input": x, "id": i}) + "\n" for i, x in enumerate(inputs[:3])))
    capsys.readouterr()
    for model in (out, run_dir):  # an exported folder and a run folder answer alike
        assert main(["predict", str(model), "--input", str(src), "--explain", "--batch", "2"]) == 0
        rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [r["answer"] for r in rows] == preds[:3] and all(r["rationale"] for r in rows)
    # words the student's tokenizer never saw reach it as <unk>: a warning counts and names them
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"input": inputs[0]}) + "\n" + json.dumps({"input": inputs[0].lower() + " please"}) + "\n")
    assert main(["predict", str(out), "--input", str(odd)]) == 0
    err = capsys.readouterr().err
    assert f"warning: 1 of 2 inputs in {odd} have words the student's tokenizer does not know" in err
    assert "'please'" in err and "line 2" in err
    text = tmp_path / "in.txt"
    text.write_text("\n".join(inputs[:2]) + "\n")
    assert main(["predict", str(out), "--input", str(text), "--out", str(tmp_path / "o.jsonl")]) == 0
    assert [json.loads(x)["answer"] for x in (tmp_path / "o.jsonl").read_text().splitlines()] == preds[:2]
    # evaluate: the trainer's evaluator; on validation it gives the run's own figure
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--split", "valid", "--out", str(tmp_path / "p.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert f"valid accuracy {100 * acc:.1f}% [" in printed and "(95% Wilson, n=40 questions)" in printed
    per = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in per] == preds and sum(r["correct"] for r in per) == round(acc * 40)
    cfg_file = tmp_path / "data.yaml"
    cfg_file.write_text((run_dir / CONFIG_FILE).read_text())
    assert main(["evaluate", str(out), "--data", str(cfg_file), "--split", "test", "--rationales", "5"]) == 0
    assert "rationales (n=5): BLEU" in capsys.readouterr().out


def test_bad_inputs_name_the_path_or_key_exit_2_and_write_nothing(tmp_path, capsys):
    run_dir = train_run(tmp_path)
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    (empty_run / CONFIG_FILE).write_text((run_dir / CONFIG_FILE).read_text())
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep_spec.yaml").write_text("spec: {objective: {metric: val_accuracy, mode: max}}\nbase: {}\n")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    bad_input = tmp_path / "bad.jsonl"
    bad_input.write_text('{"input": "box KQ: what color?"}\n{"question": "no input"}\n')
    cases = [
        (["export", str(sweep), "--out", str(tmp_path / "o1")], "confirmation.json: no confirmation runs"),
        (["export", str(empty_run), "--out", str(tmp_path / "o2")], "empty_run: no checkpoint"),
        (["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3")], f"nowhere: not {EXPORT_SOURCES}"),
        (["predict", str(tmp_path / "nowhere"), "--input", str(bad_input)], f"nowhere: not found (MODEL is {MODEL_SOURCES})"),
        (["predict", str(taken), "--input", str(bad_input)], f"taken: not {MODEL_SOURCES}"),
        (["export", str(run_dir), "--out", str(taken)], "taken: --out is a folder that is not empty"),
        (["predict", str(run_dir), "--input", str(bad_input), "--out", str(tmp_path / "o4.jsonl")],
         "bad.jsonl: line 2: input: missing"),
    ]
    for argv, expected in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (argv, err)
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3)) and not (tmp_path / "o4.jsonl").exists()
    # what each command takes: its help says what its errors say
    for command, takes in (("export", EXPORT_SOURCES), ("predict", MODEL_SOURCES), ("evaluate", MODEL_SOURCES)):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert " ".join(takes.split()) in " ".join(capsys.readouterr().out.split())
    assert [p.name for p in taken.iterdir()] == ["keep.txt"] and (taken / "keep.txt").read_text() == "mine"
    assert main(["export", str(run_dir), "--out", str(taken), "--force"]) == 0  # --force replaces it
    assert not (taken / "keep.txt").exists() and (taken / "model.safetensors").exists()


def test_push_to_hub_uploads_the_folder_through_huggingface_hub(tmp_path, monkeypatch, capsys):
    """Offline here: ``HfApi``'s two network calls are replaced at the library boundary and the test
    checks what mmi-ray hands them; a failing upload is one line, and the folder stays written."""
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload(self, folder_path, repo_id, **kw):
        calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir()), kw))
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/abc",
                                          commit_message="m", commit_description="", oid="abc")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload)
    run_dir = train_run(tmp_path)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "s"), "--push-to-hub", "me/props-student"]) == 0
    assert calls[0] == ("create", "me/props-student", {"repo_type": "model", "exist_ok": True})
    assert calls[1][1] == "me/props-student" and "model.safetensors" in calls[1][2] and "README.md" in calls[1][2]
    assert "from_pretrained('me/props-student'" in (tmp_path / "s" / "README.md").read_text()

    def refuse(self, repo_id, **kw):  # what the Hub answers a wrong token with
        import importlib.util

        from huggingface_hub.errors import HfHubHTTPError

        # huggingface_hub's own HTTP client: httpx2 from 2.x, httpx before
        httpx = importlib.import_module("httpx2" if importlib.util.find_spec("httpx2") else "httpx")

        response = httpx.Response(401, request=httpx.Request("POST", "https://huggingface.co/api/repos/create"))
        raise HfHubHTTPError("401 Client Error: Unauthorized", response=response)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    capsys.readouterr()
    assert main(["export", str(run_dir), "--out", str(tmp_path / "t"), "--push-to-hub", "me/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--push-to-hub me/x: HfHubHTTPError: 401" in err[0] and (tmp_path / "t").is_dir()


@pytest.mark.ray
def test_export_from_a_real_sweep_takes_the_confirmed_arm_and_answers_as_its_run(ray_session, tmp_path, capsys):
    """A real small sweep with confirmation runs (Ray Tune, in-process trials): the export takes the
    arm ranked first on its confirmation's mean validation accuracy and the seed closest to that mean,
    the folder loads in plain transformers in a fresh process and answers every validation question
    as that run's own evaluation did, and the card's model-index holds the arm's mean test accuracy."""
    import pandas as pd

    from mmi_ray.sweep import load_sweep, run_sweep

    spec = {"name": "exp", "base": str(REPO / "configs" / "tiny_props.yaml"),
            "overrides": {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in SMALL[:-1])},
            "search": {"loss.mi_weight": {"type": "choice", "values": [0.0, 0.1]}},
            "points_to_evaluate": [{"loss.mi_weight": 0.0}, {"loss.mi_weight": 0.1}],
            "num_trials": 2, "seeds": [0], "scheduler": {"type": "none"},
            "storage_path": str(tmp_path / "results"), "confirm": {"top_k": 1, "seeds": [5, 6], "baselines": True},
            "failure": {"trial_max_failures": 1, "train_max_failures": 1, "time_budget_s": 900}}
    (tmp_path / "s.yaml").write_text("# test\n" + yaml.safe_dump(spec))
    summary = run_sweep(load_sweep(tmp_path / "s.yaml"), verbose=0)
    state = summary["confirmation"]
    runs = pd.DataFrame(state["runs"])
    means = runs.groupby("arm")["val_accuracy"].mean()
    arm = max(means.index, key=lambda a: (means[a], -list(state["arms"]).index(a)))
    mine = runs[runs["arm"] == arm].set_index("seed")
    seed = min(mine.index, key=lambda s: (abs(mine.loc[s, "val_accuracy"] - means[arm]), s))
    assert "label-only" in state["arms"] and set(state["arms"]) <= {"DSS", "MI-maxpool", "label-only"}  # not topN
    latest = tmp_path / "results" / "latest"  # the newest sweep's name to type (README: results/latest)
    assert latest.is_symlink() and latest.resolve() == Path(summary["sweep_dir"]).resolve()
    out = tmp_path / "student"
    assert main(["export", str(latest), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sweep exp:" in printed  # the sweep's own name, not the link's
    assert f"confirmation arm {arm} (" in printed and f"seed {seed}:" in printed
    run_dir = Path(summary["sweep_dir"]) / "confirm" / "runs" / f"{mine.loc[seed, 'trial_id']}_seed{seed}"
    inputs, preds, acc = own_predictions(run_dir)
    assert acc == mine.loc[seed, "val_accuracy"]  # the figure the confirmation recorded for that run
    got = plain_transformers(out, inputs, True, 4)
    assert got["answers"] == preds
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    [result] = front["model-index"][0]["results"]
    assert result["metrics"][0]["value"] == round(100 * float(mine["test_accuracy"].mean()), 2)
    assert f"| **{arm}** |" in card and "Paired by seed on test" in card
    # an arm or a seed that is not there: one line naming the key
    assert main(["export", summary["sweep_dir"], "--out", str(tmp_path / "x"), "--arm", "top9"]) == 2
    assert main(["export", summary["sweep_dir"], "--out", str(tmp_path / "x"), "--seed", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--arm: no arm 'top9'" in err[0] and "--seed: arm " in err[1] and not (tmp_path / "x").exists()
