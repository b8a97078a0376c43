"""The training loop without Ray: restored state follows the placed parameters, bf16 on CPU, and
relative paths resolved where the command runs."""

import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from mmi_ray.checkpoint import restore, save_checkpoint
from mmi_ray.config import load_config
from mmi_ray.data.batching import BatchStream
from mmi_ray.distill import DistillModule
from mmi_ray.model import build_seq2seq, build_tokenizer
from mmi_ray.recipe import build_optimizer, run_loop
from mmi_ray.worker import WorkerEnv, local_env

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "configs" / "tiny_builtin.yaml"


def _fresh(cfg):
    tok = build_tokenizer(cfg.model)
    torch.manual_seed(0)
    module = DistillModule(build_seq2seq(cfg.model, tok, 0), cfg.loss)
    opt = build_optimizer(module, cfg)
    from transformers import get_linear_schedule_with_warmup

    return module, opt, get_linear_schedule_with_warmup(opt, 0, cfg.train.max_steps)


def test_restored_optimizer_state_follows_the_placed_parameters(tmp_path):
    """A run restores after its model is placed; AdamW's moments then take each parameter's device
    and dtype. Here the placement is float64 on the CPU (a GPU moves device the same way)."""
    cfg = load_config(CFG, tiny_overrides(tmp_path, **{"loss.mi_estimator": "infonce"}))
    module, opt, sched = _fresh(cfg)
    batch_loss = sum(p.float().pow(2).sum() for p in module.parameters()) * 1e-6
    batch_loss.backward()
    opt.step()
    stream = BatchStream(list(range(8)), 4, 0, False, 1, 0, 1)  # only its position is saved
    save_checkpoint(tmp_path, module, opt, sched, 1, stream, cfg, {"train_time_s": 1.0})
    from mmi_ray.checkpoint import load_state

    state = load_state(tmp_path)
    assert all(v.dtype == torch.float32 for st in state["optimizer"]["state"].values()
               for k, v in st.items() if torch.is_tensor(v) and k != "step")
    module2, opt2, sched2 = _fresh(cfg)
    module2.to(torch.float64)  # "placement": what prepare_model / .to(device) does before restore
    assert restore(state, module2, opt2, sched2, BatchStream(list(range(8)), 4, 0, False, 1, 0, 1), cfg) == 1
    for group in opt2.param_groups:
        for p in group["params"]:
            for k, v in opt2.state[p].items():
                if torch.is_tensor(v) and k != "step":
                    assert v.dtype == p.dtype == torch.float64 and v.device == p.device, k


def test_bf16_autocast_trains_on_cpu(tmp_path):
    """``train.precision: bf16`` autocasts on any device: on CPU the loss terms stay finite and differ
    from the fp32 run's (bf16 rounding), so the autocast really ran."""
    runs = {}
    for precision in ("fp32", "bf16"):
        out: list[dict] = []
        cfg = load_config(CFG, tiny_overrides(tmp_path, **{"train.max_steps": 6, "train.eval_every": 3,
                                                           "train.precision": precision, "loss.mi_estimator": "maxpool"}))
        run_loop(cfg, local_env(lambda m, _c, out=out: out.append(m)))
        runs[precision] = out
    assert [m["step"] for m in runs["bf16"]] == [3, 6]
    assert all(math.isfinite(m[k]) for m in runs["bf16"] for k in ("loss", "label", "rationale", "mi"))
    assert runs["bf16"][0]["loss"] != runs["fp32"][0]["loss"]
    # every evaluation also gives its question count and calibration (both ECEs lie in [0, 1])
    assert all(m["val_n"] == 40 and 0 <= m["val_ece"] <= 1 and 0 <= m["val_ece15"] <= 1 for m in runs["fp32"])


def test_relative_paths_resolve_where_the_command_runs(tmp_path, monkeypatch):
    (tmp_path / "dss" / "cqa").mkdir(parents=True)
    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(REPO / "configs" / "cqa_t5_base.yaml",
                      ["data.data_dir=dss", "model.name=./ckpt", "run.storage_path=out"])
    assert cfg.data.data_dir == str(tmp_path / "dss") and cfg.model.name == str(tmp_path / "ckpt")
    assert cfg.run.storage_path == str(tmp_path / "out")
    hub = load_config(REPO / "configs" / "cqa_t5_base.yaml", ["data.data_dir=dss", "run.storage_path=s3://b/x"])
    assert hub.model.name == "google/t5-v1_1-base" and hub.run.storage_path == "s3://b/x"  # names and URIs stay


def test_a_sweep_resolves_its_base_paths_on_the_driver(tmp_path, monkeypatch):
    import yaml

    from mmi_ray.sweep import load_sweep

    (tmp_path / "data" / "anli1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "base": str(CFG), "num_trials": 1,
                                    "overrides": {"data.dataset": "anli1", "data.data_dir": "data"},
                                    "search": {"loss.mi_weight": {"type": "uniform", "low": 0.0, "high": 1.0}}}))
    sweep = load_sweep(spec)
    cfg = sweep.trial_config({"loss.mi_weight": 0.2}, 0, "/elsewhere")  # as a trial builds it, in another directory
    assert cfg.data.data_dir == str(tmp_path / "data")


def test_fault_hook_is_off_unless_a_test_sets_it(monkeypatch, tmp_path):
    from mmi_ray import faults

    monkeypatch.delenv(faults.FAULT_ENV, raising=False)
    env = WorkerEnv(0, 1, torch.device("cpu"), lambda: None, lambda m, c: None, lambda m: m)
    env.after_step(0, 15)  # nothing happens
    marker = tmp_path / "m"
    monkeypatch.setenv(faults.FAULT_ENV, f'{{"step": 3, "marker": "{marker}"}}')
    env = WorkerEnv(0, 1, torch.device("cpu"), lambda: None, lambda m, c: None, lambda m: m)
    env.after_step(1, 3)  # another rank: nothing
    with pytest.raises(RuntimeError, match="injected fault at step 3"):
        env.after_step(0, 3)
    env.after_step(0, 3)  # once only: the marker is there
    assert marker.exists()


def test_relative_storage_under_a_ray_job_goes_to_a_results_root_that_outlives_it(tmp_path, monkeypatch):
    from mmi_ray.storage import RESULTS_ENV, results_root

    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    job_pkg = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    job_pkg.mkdir(parents=True)
    monkeypatch.chdir(job_pkg)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert results_root() == tmp_path / "home" / "mmi-ray-results"
    cfg = load_config(CFG, ["run.storage_path=runs"])
    assert cfg.run.storage_path == str(tmp_path / "home" / "mmi-ray-results" / "runs")
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path / "keep"))
    assert load_config(CFG, ["run.storage_path=runs"]).run.storage_path == str(tmp_path / "keep" / "runs")
    monkeypatch.delenv(RESULTS_ENV)
    monkeypatch.chdir(tmp_path)  # an ordinary command: where it runs
    assert load_config(CFG, ["run.storage_path=runs"]).run.storage_path == str(tmp_path / "runs")


def test_worker_failures_become_one_line_naming_ranks_and_cause():
    """Ray Train's public ``WorkerGroupError`` / ``ControllerError`` carry each rank's traceback; the
    driver turns them into one line (same cause on several ranks said once) and the full text."""
    import logging

    from ray.train import ControllerError, WorkerGroupError

    from mmi_ray.errors import DataError, describe_worker_failures
    from mmi_ray.recipe import _drop_user_error

    tb = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\nmmi_ray.errors.DataError: {}\n'
    # Ray hands over each rank's exception, and the tracebacks in the error's message
    e = WorkerGroupError(tb.format("row 3 bad"), {1: DataError("row 3 bad"), 0: DataError("row 3 bad"),
                                                  2: RuntimeError("CUDA out of memory")})
    line, text = describe_worker_failures(e)
    assert line == "Train worker ranks 0, 1: DataError: row 3 bad; Train worker rank 2: RuntimeError: CUDA out of memory"
    assert text.index("rank 0: DataError") < text.index("rank 1: DataError") < text.index("rank 2: RuntimeError")
    assert 'File "x.py"' in text
    # a traceback handed over as text gives its last line
    assert describe_worker_failures(WorkerGroupError("", {0: Exception(tb.format("bad"))}))[0] == \
        "Train worker rank 0: DataError: bad"
    assert describe_worker_failures(ControllerError(ValueError("no placement")))[0] == \
        "Ray Train controller: ValueError: no placement"
    assert describe_worker_failures(ValueError("not from Ray Train")) is None
    rec = lambda msg: logging.LogRecord("ray.train", logging.ERROR, "f", 1, msg, None, None)  # noqa: E731
    assert not _drop_user_error(rec("Error in training function:\nTraceback ..."))
    assert _drop_user_error(rec("Worker group failed to start"))


def test_rationale_metrics_are_logged_only_when_asked_for(tmp_path):
    """``train.eval_rationales: N`` adds BLEU, ROUGE-L, faithfulness and their cost to each
    evaluation, for label-only, DSS and MI alike (the rationale head is trained or not); off, none."""
    props = REPO / "configs" / "tiny_props.yaml"
    common = [f"run.storage_path={tmp_path}", "data.builtin.num_train=200", "train.max_steps=10", "train.eval_every=10",
              "model.d_model=32", "model.d_ff=64"]
    for method in (["loss.rationale_weight=0", "loss.mi_weight=0"], ["loss.mi_weight=0.1"]):
        out: list[dict] = []
        run_loop(load_config(props, [*common, *method, "train.eval_rationales=12"]),
                 local_env(lambda m, _c, out=out: out.append(m)))
        m = out[-1]
        assert m["val_rationale_n"] == 12 and m["val_rationale_s"] > 0
        assert 0 <= m["val_rationale_bleu"] <= 100 and 0 <= m["val_rationale_rougeL"] <= 1
        assert 0 <= m["val_rationale_faithful"] <= m["val_rationale_answered"] <= 1
    out = []
    run_loop(load_config(props, common), local_env(lambda m, _c: out.append(m)))
    assert not [k for k in out[-1] if "rationale_" in k]


def test_a_checkpoint_from_a_release_with_fewer_config_keys_resumes_and_a_changed_value_refuses(tmp_path):
    """A checkpoint written before ``model.kind``, ``model.chat_template`` and ``model.lora`` existed
    (its fingerprint hashed a config without them) resumes under this release while they hold their
    defaults; a value its run set otherwise, or a key this release does not read, still refuses."""
    import hashlib
    import json

    from mmi_ray.checkpoint import load_state
    from mmi_ray.errors import MmiError
    from mmi_ray.layout import META_FILE, STATE_FILE

    cfg = load_config(CFG, tiny_overrides(tmp_path))
    module, opt, sched = _fresh(cfg)
    stream = BatchStream(list(range(8)), 4, 0, False, 1, 0, 1)
    save_checkpoint(tmp_path, module, opt, sched, 3, stream, cfg, {"train_time_s": 1.0})

    def as_written(edit) -> dict:  # the checkpoint as an older release (or another config) wrote it
        written = cfg.model_dump(mode="json")
        edit(written)
        state = torch.load(tmp_path / STATE_FILE, weights_only=True)
        hashed = {k: v for k, v in written.items() if k != "run"}  # how fingerprint() hashed it
        state["fingerprint"] = hashlib.sha1(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:10]
        torch.save(state, tmp_path / STATE_FILE)
        (tmp_path / META_FILE).write_text(json.dumps({"step": 3, "metrics": {}, "config": written}))
        return load_state(tmp_path)

    def fresh_stream():
        return BatchStream(list(range(8)), 4, 0, False, 1, 0, 1)

    def older(written):
        for key in ("kind", "chat_template", "lora"):
            del written["model"][key]

    state = as_written(older)
    assert state["fingerprint"] != cfg.fingerprint()
    assert restore(state, *_fresh(cfg), fresh_stream(), cfg) == 3

    def other_value(written):
        older(written)
        written["loss"]["mi_weight"] = cfg.loss.mi_weight + 0.5

    def unknown_key(written):
        older(written)
        written["model"]["gone"] = 1

    for edit in (other_value, unknown_key):
        with pytest.raises(MmiError, match="checkpoint was written by a different config"):
            restore(as_written(edit), *_fresh(cfg), fresh_stream(), cfg)


def test_label_only_rows_train_with_every_row_kept_and_the_rationale_term_from_the_others(tmp_path):
    """A teacher wrong on half the rows: keep: label_only trains on every row (correct drops half),
    and the rationale and MI terms it logs are finite and differ from keep: all's (fewer rows in them)."""
    ov = {"data.builtin.teacher_error_rate": 0.5, "train.max_steps": 6, "train.eval_every": 6, "loss.mi_weight": 0.2}

    def run(keep):
        out: list[dict] = []
        run_loop(load_config(CFG, tiny_overrides(tmp_path, **ov, **{"data.rationales.keep": keep})),
                 local_env(lambda m, _c: out.append(m)))
        return out[-1]

    only, every, correct = run("label_only"), run("all"), run("correct")
    assert only["train_rows"] == every["train_rows"] == 400 and 100 < correct["train_rows"] < 340
    assert math.isfinite(only["rationale"]) and math.isfinite(only["mi"])
    assert only["label"] != every["label"] and only["rationale"] != every["rationale"]


def test_a_loop_stopped_between_reports_trains_no_further(tmp_path):
    """``iter_loop`` pauses after each report: a caller that stops (a Tune trial that ASHA or Ctrl-C
    stopped) leaves no step trained past the last report, and its next report is the next
    evaluation's (what the class trainable of in-process trials relies on)."""
    from mmi_ray.recipe import iter_loop

    steps_run: list[int] = []
    out: list[dict] = []
    cfg = load_config(CFG, tiny_overrides(tmp_path, **{"train.max_steps": 9, "train.eval_every": 3}))
    env = local_env(lambda m, _c: out.append(m))
    env.after_step = lambda rank, step: steps_run.append(step)
    loop = iter_loop(cfg, env)
    assert next(loop) == 3 and [m["step"] for m in out] == [3] and steps_run == [1, 2, 3]
    assert next(loop) == 6 and [m["step"] for m in out] == [3, 6] and steps_run == [1, 2, 3, 4, 5, 6]
    loop.close()  # stopped here
    assert steps_run == [1, 2, 3, 4, 5, 6] and [m["step"] for m in out] == [3, 6]


@pytest.mark.parametrize("estimator", ["maxpool", "infonce"])
def test_the_same_config_gives_the_same_floats_at_1_2_and_4_torch_threads(estimator):
    """Threads come from the config, and on this CPU build the kernels give the same floats at any
    thread count: metrics and every trained parameter equal at 1, 2 and 4 threads (the quickstart's
    figures at 2 and 3 CPUs, locally and as a job, rest on it). The machine is recorded with them."""
    from mmi_ray.layout import MACHINE

    finals, params = {}, {}
    for threads in (1, 2, 4):
        cfg = load_config(REPO / "configs" / "tiny_props.yaml", [
            "train.max_steps=40", "train.eval_every=20", f"scaling.torch_threads={threads}",
            f"loss.mi_estimator={estimator}", "run.storage_path=unused"])
        records: list[dict] = []
        state: dict = {}

        def report(m, ckpt, records=records, state=state):
            records.append(m)
            if ckpt is not None:
                from mmi_ray.checkpoint import load_state

                state.update(load_state(ckpt)["model"])

        run_loop(cfg, local_env(report))
        assert torch.get_num_threads() == threads
        assert f"| {threads} thread" in records[-1][MACHINE] and "torch " in records[-1][MACHINE]
        finals[threads] = [{k: v for k, v in r.items() if not k.endswith("_s") and k != MACHINE} for r in records]
        params[threads] = state
    assert finals[1] == finals[2] == finals[4]
    assert finals[1][-1]["val_accuracy"] > 0  # it trained and evaluated
    for k, v in params[1].items():
        assert torch.equal(v, params[2][k]) and torch.equal(v, params[4][k]), k


def test_training_terms_are_logged_every_log_every_steps_and_agree_with_the_reports(tmp_path):
    """``train.log_every`` (once read by no code): the run's ``train_log.jsonl`` holds the loss terms
    averaged over each ``log_every`` steps, TensorBoard gets them as ``train/*``, and the evaluation
    record's terms (averaged since the last report) are the mean of the log records in between. A
    resumed run keeps the log up to the step it resumes from."""
    from mmi_ray.layout import TRAIN_LOG_FILE, TrainLog, read_metrics

    cfg = load_config(CFG, tiny_overrides(tmp_path, **{"train.max_steps": 12, "train.eval_every": 6,
                                                       "train.log_every": 3}))
    out: list[dict] = []
    run_loop(cfg, local_env(lambda m, _c: out.append(m), log_dir=str(tmp_path)))
    log = read_metrics(tmp_path, file=TRAIN_LOG_FILE)
    assert [r["step"] for r in log] == [3, 6, 9, 12] and [m["step"] for m in out] == [6, 12]
    for term in ("loss", "label", "rationale", "mi"):
        assert out[0][term] == pytest.approx((log[0][term] + log[1][term]) / 2, rel=1e-6)
        assert out[1][term] == pytest.approx((log[2][term] + log[3][term]) / 2, rel=1e-6)
    assert [r["lr"] for r in log] == sorted({r["lr"] for r in log}, key=[r["lr"] for r in log].index)  # the schedule moves
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert events and b"train/loss" in events[0].read_bytes()
    TrainLog(tmp_path, resume_step=6).append({"step": 9, "loss": 1.0})
    assert [r["step"] for r in read_metrics(tmp_path, file=TRAIN_LOG_FILE)] == [3, 6, 9]
