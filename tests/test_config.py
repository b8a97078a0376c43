import subprocess
import sys
from pathlib import Path

import pytest

from mmi_ray.config import Config, load_config
from mmi_ray.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert path.read_text().startswith("#"), "each shipped YAML starts with a comment giving its command"


def test_overrides_are_typed_and_dotted():
    cfg = load_config(REPO / "configs/tiny_builtin.yaml",
                      ["loss.mi_weight=0.25", "loss.mi_estimator=infonce", "scaling.num_workers=2",
                       "data.builtin.tasks=[arith]"])
    assert cfg.loss.mi_weight == 0.25 and cfg.loss.mi_estimator == "infonce"
    assert cfg.scaling.num_workers == 2 and cfg.data.builtin.tasks == ["arith"]
    assert cfg.examples_per_step() == 2 * cfg.train.batch_size


def _err(tmp_path, text, overrides=()):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, list(overrides))
    return str(e.value)


@pytest.mark.parametrize(
    "text,overrides,expected",
    [
        ("loss:\n  mi_weight: -0.1\n", (), "bad.yaml: loss.mi_weight: Input should be greater than or equal to 0 (got -0.1)"),
        ("loss:\n  mi_wieght: 0.1\n", (), "bad.yaml: loss.mi_wieght: unknown key"),
        ("modle:\n  name: tiny\n", (), "bad.yaml: modle: unknown key"),
        ("loss:\n  mi_estimator: magic\n", (), "bad.yaml: loss.mi_estimator: Input should be 'maxpool'"),
        ("train:\n  max_steps: 0\n", (), "bad.yaml: train.max_steps: Input should be greater than or equal to 1"),
        ("train:\n  batch_size: many\n", (), "bad.yaml: train.batch_size: Input should be a valid integer"),
        ("data:\n  dataset: cqa\n", (), "bad.yaml: data: data_dir is required for dataset 'cqa'"),
        ("model:\n  d_model: 130\n  num_heads: 4\n", (), "bad.yaml: model: d_model (130) must be divisible by num_heads (4)"),
        ("loss:\n  label_weight: 0\n  rationale_weight: 0\n  mi_weight: 0\n", (), "bad.yaml: loss: at least one of"),
        ("loss: [1, 2\n", (), "bad.yaml: line 2: invalid YAML"),
        ("- a\n- b\n", (), "bad.yaml: top level must be a mapping"),
        ("", ("optim.lr=-1",), "command line: optim.lr: Input should be greater than 0"),
        ("", ("loss.nothing=1",), "command line: loss.nothing: unknown key"),
        ("", ("loss.mi_wieght=0.1",), "command line: loss.mi_wieght: unknown key (did you mean loss.mi_weight?)"),
        ("", ("trian.max_steps=3",), "command line: trian: unknown key (did you mean train?)"),
        ("", ("loss.max_steps=3",), "command line: loss.max_steps: unknown key (did you mean train.max_steps?)"),
        ("loss:\n  mi_wieght: 0.1\n", ("loss.mi_weight=0.2",), "bad.yaml: loss.mi_wieght: unknown key (did you mean"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, text, overrides, expected):
    assert expected in _err(tmp_path, text, overrides)


def test_all_problems_reported_at_once(tmp_path):
    msg = _err(tmp_path, "loss:\n  mi_weight: -1\ntrain:\n  max_steps: 0\n")
    assert "loss.mi_weight" in msg and "train.max_steps" in msg


def test_cli_bad_config_is_one_line_exit_2_no_traceback(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("loss:\n  mi_weight: -0.1\n")
    runs = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "mmi_ray.cli", "train", str(p), f"run.storage_path={runs}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"mmi-ray: error: {p}: loss.mi_weight: Input should be greater than or equal to 0 (got -0.1)"]
    assert not runs.exists(), "nothing is written for a config that does not validate"


@pytest.mark.parametrize("args,expected", [
    (["data", "cqa", "--data-dir", "/no/such/dir"], "/no/such/dir/cqa: folder not found"),
    (["train", "{cfg}", "data.dataset=cqa", "data.data_dir=/no/such/dir"], "data.data_dir: folder not found: /no/such/dir"),
    (["train", "{cfg}", "model.name=/no/such/model"], "model.name: checkpoint folder not found: /no/such/model"),
    (["train", "/no/such/config.yaml"], "/no/such/config.yaml: file not found"),
])
def test_cli_missing_paths(tmp_path, args, expected):
    args = [a.replace("{cfg}", str(REPO / "configs/tiny_builtin.yaml")) for a in args]
    r = subprocess.run([sys.executable, "-m", "mmi_ray.cli", *args, f"run.storage_path={tmp_path}"]
                       if args[0] == "train" else [sys.executable, "-m", "mmi_ray.cli", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_local_hf_checkpoint_loads_as_student(tmp_path):
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    from mmi_ray.config import ModelConfig
    from mmi_ray.model import build_seq2seq, build_tokenizer

    tok = ByT5Tokenizer()
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                                num_heads=4, decoder_start_token_id=0))
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    cfg = ModelConfig(name=str(tmp_path / "ckpt"))
    loaded = build_seq2seq(cfg, build_tokenizer(cfg), seed=0)
    assert loaded.config.d_model == 32
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_unreachable_hub_model_is_a_clear_error(tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "mmi_ray.cli", "train", str(REPO / "configs/tiny_builtin.yaml"),
                        "model.name=no-such-org/no-such-model", f"run.storage_path={tmp_path}"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert ("model.name: 'no-such-org/no-such-model': not in the Hugging Face cache, and HF_HUB_OFFLINE is set"
            in r.stderr)  # checked before Ray starts: nothing ran
    assert len(r.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_every_config_and_spec_key_is_read_by_code():
    """A documented key that no code reads is a defect (``train.log_every`` was one): each key of the
    training config is read outside config.py (validators there do not count), each key of a sweep
    spec somewhere in the package (as an attribute, or by its name as a string)."""
    import re

    from mmi_ray.config import model_keys
    from mmi_ray.sweep.spec import SweepSpec

    files = {p: p.read_text() for p in (REPO / "mmi_ray").rglob("*.py")}
    dead = []
    for cls, skip in ((Config, "config.py"), (SweepSpec, None)):
        texts = [t for p, t in files.items() if p.name != skip]
        for key in model_keys(cls):
            field = key.rsplit(".", 1)[-1]
            read = re.compile(rf"\.{field}\b|[\"']({re.escape(key)}|{field})[\"']")
            if not any(read.search(t) for t in texts):
                dead.append(f"{cls.__name__}: {key}")
    assert not dead, f"keys no code reads: {dead}"


def test_model_and_tokenizer_names_are_checked_before_any_trial(tmp_path, monkeypatch):
    """A name that is not a preset, not a local folder and not a hub name that the cache holds or the
    Hub knows is one line naming the key, in seconds (it was taken for a hub name: 4 trials x 2
    tries, 4.3 minutes, then `no configuration completed its budget`); HF_HUB_OFFLINE is honoured; a
    cached hub name passes without the network."""
    import time

    from huggingface_hub.errors import RepositoryNotFoundError

    from mmi_ray.config import ModelConfig, model_source_problems

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))  # read when called
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    assert model_source_problems(ModelConfig(tokenizer="byte")) == [
        "model.tokenizer: 'byte': not in the Hugging Face cache, and HF_HUB_OFFLINE is set; did you mean byt5?"]
    assert model_source_problems(ModelConfig(name="google/t5-v1_1-base"))[0].startswith(
        "model.name: 'google/t5-v1_1-base': not in the Hugging Face cache")
    assert model_source_problems(ModelConfig(name="./nowhere"))[0] == "model.name: checkpoint folder not found: ./nowhere"
    assert model_source_problems(ModelConfig(tokenizer="a b c"))[0].startswith(
        "model.tokenizer: 'a b c': not a local folder and not a hub name")
    assert model_source_problems(ModelConfig(tokenizer="words")) == [] and model_source_problems(ModelConfig()) == []
    assert time.time() - t0 < 5
    # cached: found without the network (the cache's own layout: refs/main -> snapshots/<rev>/config.json)
    repo = tmp_path / "hub" / "models--someone--t5-small"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc" / "config.json").write_text("{}")
    assert model_source_problems(ModelConfig(name="someone/t5-small")) == []
    # online, a name the Hub does not know
    monkeypatch.delenv("HF_HUB_OFFLINE")

    class Response:  # what the error reads of the HTTP reply
        headers: dict = {}
        request = None

    def unknown(self, name, timeout=None):
        raise RepositoryNotFoundError("404", response=Response())

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", unknown)
    assert "no such model on the Hugging Face Hub" in model_source_problems(ModelConfig(name="someone/nothing"))[0]


def test_every_command_argument_says_what_it_is():
    """`mmi-ray plan --help` listed `spec` and `overrides` with no word on either: every argument of
    every command carries a help text."""
    import argparse

    from mmi_ray.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    silent = [f"{name} {a.dest}" for name, p in sub.choices.items() for a in p._actions
              if a.help is None and a.nargs != argparse.REMAINDER and not isinstance(a, argparse._HelpAction)]
    assert not silent, f"arguments without help: {silent}"
