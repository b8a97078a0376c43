"""The catalogue of bad inputs (also in docs/bad-inputs.md): each gives a one-line error naming
the file and the key or line, exit code 2, no traceback, and leaves existing results untouched."""

import json
from pathlib import Path

import pytest
import yaml

from mmi_ray.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = (REPO / "configs" / "tiny_builtin.yaml").read_text()
ROW = {"id": "1", "question": "Q?", "choices": ["a", "b", "c", "d", "e"], "answer": "b",
       "abstractive_explanation": "", "extractive_explanation": ""}
OUT = "r. So the answer is (b) b."
BAD_JSON_LINE = (json.dumps(ROW) + "\n{oops\n").encode()
NON_UTF8 = json.dumps(ROW).encode() + b"\n\xff\xfe\n"
NO_QUESTION = {k: v for k, v in ROW.items() if k != "question"}


def cfg(tmp, text=TINY, name="c.yaml"):
    p = tmp / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(p)


def dss(tmp, rows=(ROW, ROW), outputs=(OUT, OUT), gold_text=None, teacher_text=None, files=("train_CoT_0.json",)):
    d = tmp / "dss" / "cqa"
    (d / "llm").mkdir(parents=True, exist_ok=True)
    (d / "cqa_train.json").write_bytes(gold_text if gold_text is not None else
                                      ("\n".join(json.dumps(r) for r in rows) + "\n").encode())
    for f in files:
        (d / "llm" / f).write_text(teacher_text if teacher_text is not None else json.dumps(list(outputs)))
    return str(tmp / "dss")


def spec(tmp, **changes):
    s = {"name": "s", "base": str(REPO / "configs" / "tiny_builtin.yaml"),
         "search": {"loss.mi_weight": {"type": "uniform", "low": 0.0, "high": 1.0}}, "num_trials": 2,
         "storage_path": str(tmp / "results")}
    s.update(changes)
    return cfg(tmp, yaml.safe_dump(s), "spec.yaml")


T = "train"
CASES = [
    # training configs
    ("malformed YAML", lambda t: [T, cfg(t, "loss: [1, 2\n")], "c.yaml: line 2: invalid YAML"),
    ("unknown section", lambda t: [T, cfg(t, TINY + "modle: {}\n")], "c.yaml: modle: unknown key"),
    ("unknown key", lambda t: [T, cfg(t), "loss.mi_wieght=0.1"], "command line: loss.mi_wieght: unknown key (did you mean loss.mi_weight?)"),
    ("negative MI weight", lambda t: [T, cfg(t), "loss.mi_weight=-0.1"], "command line: loss.mi_weight: Input should be greater than or equal to 0"),
    ("zero learning rate", lambda t: [T, cfg(t), "optim.lr=0"], "command line: optim.lr: Input should be greater than 0"),
    ("text learning rate", lambda t: [T, cfg(t), "optim.lr=fast"], "command line: optim.lr: Input should be a valid number"),
    ("zero steps", lambda t: [T, cfg(t), "train.max_steps=0"], "command line: train.max_steps:"),
    ("negative batch", lambda t: [T, cfg(t), "train.batch_size=-4"], "command line: train.batch_size:"),
    ("unknown estimator", lambda t: [T, cfg(t), "loss.mi_estimator=magic"], "command line: loss.mi_estimator:"),
    ("heads do not divide width", lambda t: [T, cfg(t), "model.d_model=130"], "command line: model: d_model (130) must be divisible"),
    ("every loss weight zero", lambda t: [T, cfg(t), "loss.label_weight=0", "loss.rationale_weight=0", "loss.mi_weight=0"], "command line: loss: at least one of"),
    ("unknown dataset", lambda t: [T, cfg(t), "data.dataset=gsm8k"], "command line: data.dataset:"),
    ("DSS dataset without data_dir", lambda t: [T, cfg(t), "data.dataset=cqa"], "command line: data: data_dir is required"),
    ("data_dir does not exist", lambda t: [T, cfg(t), "data.dataset=cqa", f"data.data_dir={t}/nope"], "data.data_dir: folder not found"),
    ("data_dir lacks the dataset", lambda t: [T, cfg(t), "data.dataset=svamp", f"data.data_dir={t}"], "data.data_dir: no 'svamp' folder"),
    ("model path does not exist", lambda t: [T, cfg(t), f"model.name={t}/no-model"], "model.name: checkpoint folder not found"),
    ("override without =", lambda t: [T, cfg(t), "loss.mi_weight"], "command line: override 'loss.mi_weight' must look like key.path=value"),
    ("override into a value", lambda t: [T, cfg(t), "loss.mi_weight.x=1"], "loss.mi_weight: is a value, not a section"),
    ("config file missing", lambda t: [T, f"{t}/none.yaml"], "none.yaml: file not found"),
    ("config is a list", lambda t: [T, cfg(t, "- 1\n- 2\n")], "c.yaml: top level must be a mapping"),
    ("config not UTF-8", lambda t: [T, cfg(t, b"loss:\n  mi_weight: \xff\n")], "c.yaml: not UTF-8"),
    ("bad label_type", lambda t: [T, cfg(t), "data.label_type=silver"], "command line: data.label_type:"),
    ("valid_fraction above 1", lambda t: [T, cfg(t), "data.valid_fraction=1.5"], "command line: data.valid_fraction:"),
    ("unwritable storage", lambda t: [T, cfg(t), "run.storage_path=/etc/hostname/x"], "run.storage_path: cannot write"),
    ("hub data for DSS/MI (no rationales)", lambda t: [T, cfg(t), "data.dataset=cqa", "data.source=hub"], "command line: data.source: 'hub' has the gold rows but no teacher rationales"),
    ("`model.tokenizer: words` with a DSS dataset", lambda t: [T, cfg(t), "model.tokenizer=words", "data.dataset=cqa", "data.data_dir=/nonexistent"], "command line: model.tokenizer: 'words' knows only the built-in task's words"),
    # DSS data files
    ("gold train file missing", lambda t: [T, cfg(t), "data.dataset=cqa", f"data.data_dir={_no_gold(t)}"], "cqa_train.json: file not found"),
    ("teacher/gold line counts differ", lambda t: [T, cfg(t), "data.dataset=cqa", f"data.data_dir={dss(t, outputs=(OUT,))}"], "1 teacher outputs for 2 rows in cqa_train.json"),
    ("invalid JSON line", lambda t: [T, cfg(t), "data.dataset=cqa", "data.data_dir=" + dss(t, gold_text=BAD_JSON_LINE)], "cqa_train.json: line 2, column 2: invalid JSON"),
    ("missing key", lambda t: [T, cfg(t), "data.dataset=cqa", "data.data_dir=" + dss(t, rows=(NO_QUESTION, ROW))], "cqa_train.json: line 1: missing or invalid key 'question'"),
    ("non-UTF-8 bytes", lambda t: [T, cfg(t), "data.dataset=cqa", "data.data_dir=" + dss(t, gold_text=NON_UTF8)], "cqa_train.json: line 2: not UTF-8"),
    ("empty split", lambda t: [T, cfg(t), "data.dataset=cqa", f"data.data_dir={dss(t, gold_text=b'', outputs=())}"], "cqa_train.json: empty split"),
    ("teacher file not strings", lambda t: [T, cfg(t), "data.dataset=cqa", f"data.data_dir={dss(t, teacher_text='[1, 2]')}"], "train_CoT_0.json: expected a JSON array of strings"),
    ("teacher files not contiguous", lambda t: [T, cfg(t), "data.dataset=cqa", f"data.data_dir={dss(t, files=('train_CoT_0.json', 'train_CoT_2.json'))}"], "train_CoT_1.json is missing"),
    ("teacher file invalid JSON", lambda t: [T, cfg(t), "data.dataset=cqa", "data.data_dir=" + dss(t, teacher_text='["a",')], "train_CoT_0.json: line 1: invalid JSON"),
    ("data command: no dataset folder", lambda t: ["data", "cqa", "--data-dir", str(t)], "cqa: folder not found"),
    # sweep specs
    ("spec: empty search space", lambda t: ["sweep", spec(t, search={})], "spec.yaml: search: the space is empty"),
    ("spec: low > high", lambda t: ["sweep", spec(t, search={"loss.mi_weight": {"type": "uniform", "low": 1, "high": 0}})], "spec.yaml: search.loss.mi_weight: low must be < high"),
    ("spec: test metric objective", lambda t: ["sweep", spec(t, objective={"metric": "test_accuracy"})], "spec.yaml: objective: the objective must be a validation metric"),
    ("spec: zero trials", lambda t: ["sweep", spec(t, num_trials=0)], "spec.yaml: num_trials:"),
    ("spec: negative weights", lambda t: ["sweep", spec(t, search={"loss.rationale_weight": {"type": "uniform", "low": -1, "high": 1}})], "spec.yaml: search.loss.rationale_weight: Input should be greater than or equal to 0"),
    ("spec: unknown searched key", lambda t: ["sweep", spec(t, search={"loss.beta": {"type": "uniform", "low": 0, "high": 1}})], "spec.yaml: search.loss.beta: unknown key"),
    ("spec: unknown spec key", lambda t: ["sweep", spec(t, trials=3)], "spec.yaml: trials: unknown key (did you mean num_trials?)"),
    ("spec: base missing", lambda t: ["sweep", spec(t, base="nope.yaml")], "spec.yaml: base: file not found"),
    ("spec: point outside space", lambda t: ["sweep", spec(t, points_to_evaluate=[{"loss.mi_weight": 3.0}])], "points_to_evaluate[0].loss.mi_weight: 3.0 is outside the search space"),
    ("spec: resume a sweep that never ran", lambda t: ["sweep", spec(t), "--resume"], "spec.yaml: name: no sweep 's'"),
    ("spec: MLflow file store", lambda t: ["sweep", spec(t, tracking={"mlflow_uri": f"file://{t}/mlruns"})], "spec.yaml: tracking.mlflow_uri: MLflow 3 refuses file stores"),
    ("spec: a renamed resources key", lambda t: ["sweep", spec(t, resources={"workers": 2})], "spec.yaml: resources.workers: unknown key (now called resources.num_workers)"),
    ("spec: confirmation seeds not fresh", lambda t: ["sweep", spec(t, seeds=[0, 1], confirm={"seeds": [1, 2]})], "spec.yaml: confirm.seeds must be fresh: [1] also in seeds"),
    ("confirm: not a sweep folder", lambda t: ["confirm", str(t)], "no sweep_spec.yaml: not a sweep folder"),
    ("confirm: seeds that leave held ones out", lambda t: ["confirm", held_confirmation(t), "--seeds", "2", "3"],
     "s/sweep_spec.yaml: confirm.seeds: confirm/ holds runs on seeds [1, 2]; confirm with those seeds, or those and "
     "more to add seeds to it, not [2, 3]"),
    ("a tokenizer name no one has", lambda t: [T, cfg(t), "model.tokenizer=byte"], "c.yaml: model.tokenizer: 'byte': "),
    ("a student neither seq2seq nor causal", lambda t: [T, cfg(t), f"model.name={_folder(t, 'vit')}"],
     "(model_type vit) is neither a seq2seq model nor a causal LM"),
    ("prompt and continuation longer than the context", lambda t: [T, cfg(t), f"model.name={_folder(t, 'llama')}", "model.tokenizer=words"],
     "c.yaml: model.max_source_length + model.max_target_length: 256 + 128 tokens exceed the context of"),
    ("a chat template the tokenizer lacks", lambda t: [T, cfg(t), "model.kind=causal", "model.tokenizer=words", "model.chat_template=true"],
     "c.yaml: model.chat_template: tokenizer 'words' has no chat template"),
    ("LoRA target modules the model lacks", lambda t: [T, cfg(t), "model.kind=causal", "model.tokenizer=words", "model.lora.r=4", "model.lora.target_modules=[q_proj,query]"],
     "c.yaml: model.lora.target_modules: 'tiny' has no layer named 'query' (its linear layers: "),
    ("a chat template for a seq2seq student", lambda t: [T, cfg(t), "model.chat_template=true"],
     "c.yaml: model.chat_template: for decoder-only students only"),
    ("a student name no one has", lambda t: [T, cfg(t), "model.name=no-such-org/t5-tiny"], "c.yaml: model.name: 'no-such-org/t5-tiny': "),
    ("spec: a searched tokenizer no one has", lambda t: ["sweep", spec(t, search={"model.tokenizer": {"type": "choice", "values": ["byt5", "bytes"]}})],
     "spec.yaml (search.model.tokenizer): model.tokenizer: 'bytes': "),
    ("spec: a sweep that already exists", lambda t: ["sweep", started_sweep(t)],
     "--resume`, or start another with `mmi-ray sweep "),
    # cluster YAMLs
    ("cluster YAML without node types", lambda t: ["plan", spec(t), "--cluster", cfg(t, "cluster_name: x\n", "cl.yaml")], "cl.yaml: available_node_types: missing"),
    ("cluster YAML missing", lambda t: ["plan", spec(t), "--cluster", f"{t}/none.yaml"], "none.yaml: file not found"),
    ("cluster YAML malformed", lambda t: ["plan", spec(t), "--cluster", cfg(t, "a: [\n", "cl.yaml")], "cl.yaml: line 2: invalid YAML"),
]


def started_sweep(t):
    """A spec whose sweep folder is there already."""
    path = spec(t)
    (t / "results" / "s").mkdir(parents=True)
    (t / "results" / "s" / "sweep_spec.yaml").write_text("spec: {}\n")
    return path


def held_confirmation(t):
    """A sweep folder (among the results) whose confirmation holds runs on seeds 1 and 2."""
    d = t / "results" / "s"
    (d / "confirm").mkdir(parents=True)
    saved = {"spec": yaml.safe_load(Path(spec(t, seeds=[0], confirm={"seeds": [1, 2]})).read_text()),
             "base": yaml.safe_load(TINY)}
    (d / "sweep_spec.yaml").write_text(yaml.safe_dump(saved))
    (d / "confirm" / "confirmation.json").write_text(json.dumps({"seeds": [1, 2], "arms": {}, "runs": []}))
    return str(d)


def _folder(t, kind):
    """A local model folder (config only): a ViT (neither seq2seq nor causal) or a Llama with 300 positions."""
    from transformers import LlamaConfig, ViTConfig

    config = ViTConfig() if kind == "vit" else LlamaConfig(max_position_embeddings=300)
    config.save_pretrained(t / kind)
    return str(t / kind)


def _no_gold(t):
    (t / "dss" / "cqa" / "llm").mkdir(parents=True)
    return str(t / "dss")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, tmp_path, capsys, monkeypatch):
    _, make_args, expected = case
    results = tmp_path / "results"
    (results / "earlier-run").mkdir(parents=True)
    (results / "earlier-run" / "metrics.jsonl").write_text('{"step": 1}\n')
    monkeypatch.chdir(tmp_path)  # a default storage path ("runs", "results") would land here
    args = make_args(tmp_path)  # may place earlier results of its own (a sweep folder)
    before = {str(p): p.read_bytes() for p in results.rglob("*") if p.is_file()}
    folders = sorted(str(p) for p in results.rglob("*"))
    if args[0] == "train" and not any(a.startswith("run.storage_path=") for a in args):
        args.append(f"run.storage_path={results}")
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("mmi-ray: error: "), err
    assert expected in err[0]
    assert sorted(str(p) for p in results.rglob("*")) == folders, "existing results were touched"
    assert {str(p): p.read_bytes() for p in results.rglob("*") if p.is_file()} == before
    assert (results / "earlier-run" / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert not (tmp_path / "runs").exists()


def test_catalogue_size_and_docs_match():
    assert len(CASES) >= 30
    doc = (REPO / "docs" / "bad-inputs.md").read_text()
    for name, _, _ in CASES:
        assert f"| {name} |" in doc, f"docs/bad-inputs.md lacks '{name}'"


def test_unparseable_teacher_outputs_are_counted_not_fatal(tmp_path, capsys):
    d = dss(tmp_path, outputs=("rambling with no answer", OUT))
    assert main(["data", "cqa", "--data-dir", d]) == 0
    out = capsys.readouterr().out
    import re

    assert re.search(r"^train\s+2\s+1\s+50\.00%$", out, re.M), out
