"""Decoder-only students (issue 42): each task is a prompt and its continuation; the loss terms and
the MI term are taken at the continuation positions, as a seq2seq student's are at its decoder's.
Checked against each row run alone, unpadded on the left, through plain ``transformers`` calls."""

from __future__ import annotations

import re

import pytest
import torch

from mmi_ray.config import LossConfig, ModelConfig
from mmi_ray.data.batching import Prompts, collate, tokenize
from mmi_ray.data.builtin import generate
from mmi_ray.distill import DistillModule, left_align
from mmi_ray.losses import IGNORE, maxpool_ce, token_ce
from mmi_ray.model import build_student, build_tokenizer, student_kind

MODEL = ModelConfig(kind="causal", d_model=32, d_ff=64, num_layers=2, num_heads=2, dropout=0.0,
                    max_source_length=256, max_target_length=128)


def _module(loss: LossConfig, n: int = 4):
    tok = build_tokenizer(MODEL)
    module = DistillModule(build_student(MODEL, tok, 0), loss).double().eval()
    exs = generate(n, seed=1, tasks=["arith", "choice", "nli"], error_rate=0.0)
    return module, tok, collate(tokenize(exs, Prompts(tok, causal=True), 256, 128), list(range(n)), tok.pad_token_id)


def _alone(student, prompt: torch.Tensor, prompt_mask: torch.Tensor, labels: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Row by row: prompt + continuation with no padding before them, the batch's right padding after
    (attention mask 0), transformers' own positions; the logits that predict each of the C columns."""
    rows = []
    for b in range(prompt.size(0)):
        p = prompt[b][prompt_mask[b]]
        cont = labels[b].masked_fill(labels[b].eq(IGNORE), pad_id)
        ids = torch.cat([p, cont]).unsqueeze(0)
        mask = torch.cat([torch.ones_like(p), labels[b].ne(IGNORE).long()]).unsqueeze(0)
        logits = student(input_ids=ids, attention_mask=mask, use_cache=False).logits[0]
        rows.append(logits[len(p) - 1 : len(p) - 1 + labels.size(1)])
    return torch.stack(rows)


def test_the_kind_is_read_or_stated():
    assert student_kind(MODEL) == "causal"
    assert student_kind(ModelConfig()) == "seq2seq"  # the tiny T5


def test_left_align_moves_each_row_to_the_right_edge():
    ids = torch.tensor([[5, 6, 7, 0], [8, 0, 0, 0], [1, 2, 3, 4]])
    out, mask, shift = left_align(ids, ids.ne(0), 0)
    assert out.tolist() == [[0, 5, 6, 7], [0, 0, 0, 8], [1, 2, 3, 4]]
    assert mask.tolist() == [[False, True, True, True], [False, False, False, True], [True] * 4]
    assert shift.tolist() == [1, 3, 0]


def test_loss_terms_and_the_fused_maxpool_equal_each_row_run_alone():
    """The batch pads prompts on both sides of the module's layout (left after left_align, and
    continuations on the right): every term equals the one from each row alone, with the released
    max-pool formula (padding positions pooled, as for T5) applied to those rows' logits."""
    module, tok, batch = _module(LossConfig(mi_weight=0.3, mi_estimator="maxpool"))
    assert len(set(batch["predict_mask"].sum(1).tolist())) > 1 and len(set(batch["explain_mask"].sum(1).tolist())) > 1
    assert len(set(batch["rationale_ids"].ne(IGNORE).sum(1).tolist())) > 1  # padding on both sides, really
    terms = module(batch)
    s, pad = module.student, tok.pad_token_id
    with torch.no_grad():
        lab = _alone(s, batch["predict_ids"], batch["predict_mask"], batch["label_ids"], pad)
        rat = _alone(s, batch["explain_ids"], batch["explain_mask"], batch["rationale_ids"], pad)
        mine, _ = module._causal_pass(batch["explain_ids"], batch["explain_mask"], batch["rationale_ids"], False)
    cont = batch["rationale_ids"].ne(IGNORE)
    torch.testing.assert_close(mine[cont], rat[cont], rtol=1e-9, atol=1e-9)  # fp64: the same logits
    assert terms.label.item() == pytest.approx(token_ce(lab, batch["label_ids"]).item(), rel=1e-6)  # CEs in float32
    assert terms.rationale.item() == pytest.approx(token_ce(rat, batch["rationale_ids"]).item(), rel=1e-6)
    assert terms.mi.item() == pytest.approx(maxpool_ce(lab, rat).item(), rel=1e-6)  # both pool in float32


def test_label_only_rows_leave_a_causal_students_rationale_and_mi_terms():
    """Rows that train the label task only (data.rationales.keep: label_only): the rationale and MI
    terms equal those of the other rows, each run alone."""
    module, tok, batch = _module(LossConfig(mi_weight=0.3, mi_estimator="maxpool"))
    rows = torch.tensor([True, False, True, False])
    terms = module({**batch, "rationale_rows": rows})
    s, pad = module.student, tok.pad_token_id
    with torch.no_grad():
        lab = _alone(s, batch["predict_ids"], batch["predict_mask"], batch["label_ids"], pad)
        rat = _alone(s, batch["explain_ids"], batch["explain_mask"], batch["rationale_ids"], pad)
    assert terms.rationale.item() == pytest.approx(token_ce(rat[rows], batch["rationale_ids"][rows]).item(), rel=1e-6)
    assert terms.mi.item() == pytest.approx(maxpool_ce(lab[rows], rat[rows]).item(), rel=1e-6)


def test_the_mi_term_trains_the_rationale_side_only_through_the_continuation():
    module, _, batch = _module(LossConfig(mi_weight=1.0, mi_estimator="maxpool", rationale_weight=0.0, label_weight=0.0))
    module.train()
    module(batch).loss.backward()
    grads = [p.grad for p in module.student.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["infonce", "nwj"])
def test_learned_critics_read_the_continuation_hidden_states(name):
    module, _, batch = _module(LossConfig(mi_weight=1.0, mi_estimator=name, critic_size=16))
    module.float().train()
    terms = module(batch)
    terms.mi.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.estimator.parameters())


def test_batched_generation_answers_as_each_row_alone():
    """Greedy labels from a batch (prompts moved left, KV cache) equal each row's own generation,
    and only the new tokens come back."""
    module, tok, batch = _module(LossConfig(mi_weight=0.0))
    ids, mask = batch["predict_ids"], batch["predict_mask"]
    out, conf = module.predict_labels(ids, mask, max_new_tokens=6)
    assert out.size(1) <= 6 and conf.shape == (ids.size(0),)
    for b in range(ids.size(0)):
        row = ids[b][mask[b]].unsqueeze(0)
        alone, _ = module.predict_labels(row, torch.ones_like(row, dtype=torch.bool), max_new_tokens=6)
        got = [t for t in out[b].tolist() if t != tok.pad_token_id]
        want = [t for t in alone[0].tolist() if t != tok.pad_token_id]
        assert got == want, b


def test_a_causal_student_trains_evaluates_and_its_checkpoint_answers_as_the_run(tmp_path):
    """The training loop as a sweep runs it (a plain process, the props task, the words tokenizer):
    the loss falls, validation is scored, and the checkpoint loads back as a causal student that
    scores validation as the run did."""
    from pathlib import Path

    from mmi_ray.config import load_config
    from mmi_ray.evaluate import evaluate_checkpoint
    from mmi_ray.recipe import run_loop
    from mmi_ray.worker import in_process_env

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "tiny_props.yaml", [
        "model.kind=causal", "train.max_steps=60", "train.eval_every=30", "train.batch_size=32",
        "model.d_model=64", "model.d_ff=128", "data.builtin.num_train=800", "run.storage_path=unused"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    reports: list[dict] = []
    env, _ = in_process_env(str(run_dir), 2, "node", reports.append)
    run_loop(cfg, env)
    assert [r["step"] for r in reports] == [30, 60]
    assert reports[-1]["loss"] < reports[0]["loss"] and 0.0 <= reports[-1]["val_accuracy"] <= 1.0
    again = evaluate_checkpoint(reports[-1]["checkpoint_path"], split="valid")
    assert again["valid_accuracy"] == reports[-1]["val_accuracy"]


# --- prompts and continuations, and what a causal config may not ask


def test_causal_prompts_end_with_the_separator_and_continuations_with_one_eos():
    tok = build_tokenizer(ModelConfig(tokenizer="words"))
    exs = generate(6, seed=2, tasks=["arith", "choice", "nli"], error_rate=0.0)
    seq = tokenize(exs, Prompts(tok), 256, 128)
    cau = tokenize(exs, Prompts(tok, causal=True), 256, 128)
    for e, s_pred, c_pred, c_lab, c_rat in zip(exs, seq.predict_ids, cau.predict_ids, cau.label_ids, cau.rationale_ids,
                                                strict=True):
        assert c_pred == s_pred  # the words tokenizer drops the newline and appends its EOS, as for T5
        for ids, text in ((c_lab, e.label), (c_rat, e.rationale)):
            assert ids[-1] == tok.eos_token_id and tok.eos_token_id not in ids[:-1]
            assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == text.replace(" ", "")
    byte = build_tokenizer(ModelConfig())
    ids = Prompts(byte, causal=True).inputs("predict: ", ["2 + 3"], 64)[0]
    assert byte.decode(ids) == "predict: 2 + 3\n</s>"  # the tokenizer's own special tokens kept
    assert len(Prompts(byte, causal=True).targets(["x" * 50], 10)[0]) == 10  # truncated, its EOS kept


def _chat_words():
    tok = build_tokenizer(ModelConfig(tokenizer="words"))
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} ?{% endfor %}{% if add_generation_prompt %} :{% endif %}"
    return tok


def test_a_chat_template_wraps_each_prompt_as_one_user_turn():
    tok = _chat_words()
    ids = Prompts(tok, causal=True, chat=True).inputs("predict: ", ["what is 2 + 3"], 64)[0]
    assert tok.decode(ids) == tok.decode(tok("predict: what is 2 + 3 ? :", add_special_tokens=False)["input_ids"])


def test_a_prompt_that_holds_the_pad_token_is_read_whole():
    """Llama 3's instruct tokenizers have no pad token (so EOS pads) and their chat template ends the
    user's turn with EOS: that EOS is part of the prompt. Masks come from each row's length, so
    training's pass and generation read every prompt whole, as each row alone."""
    from mmi_ray.predict import generate as predict_generate

    tok = _chat_words()
    tok.pad_token = tok.eos_token
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {{ eos_token }}{% endfor %}{% if add_generation_prompt %} :{% endif %}"
    prompts = Prompts(tok, causal=True, chat=True)
    exs = generate(4, seed=1, tasks=["arith", "choice", "nli"], error_rate=0.0)
    t = tokenize(exs, prompts, 256, 128)
    assert all(ids[-2] == tok.eos_token_id == tok.pad_token_id for ids in t.predict_ids + t.explain_ids)
    batch = collate(t, list(range(4)), tok.pad_token_id)
    assert batch["predict_mask"].sum(1).tolist() == [len(ids) for ids in t.predict_ids]
    assert len(set(batch["explain_mask"].sum(1).tolist())) > 1
    student = build_student(MODEL, tok, 0).double().eval()
    module = DistillModule(student, LossConfig(mi_weight=0.3, mi_estimator="maxpool")).eval()
    with torch.no_grad():
        rat = _alone(student, batch["explain_ids"], batch["explain_mask"], batch["rationale_ids"], tok.pad_token_id)
        mine, _ = module._causal_pass(batch["explain_ids"], batch["explain_mask"], batch["rationale_ids"], False)
    cont = batch["rationale_ids"].ne(IGNORE)
    torch.testing.assert_close(mine[cont], rat[cont], rtol=1e-9, atol=1e-9)
    texts = [e.input for e in exs]
    together = predict_generate(student, prompts, texts, "predict: ", 6, 256)
    assert together == [predict_generate(student, prompts, [x], "predict: ", 6, 256)[0] for x in texts]


def _folder(tmp_path, config, tokenizer=None):
    config.save_pretrained(tmp_path)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp_path)
    return str(tmp_path)


def test_a_local_causal_lm_is_read_as_causal_and_its_context_is_checked(tmp_path):
    from transformers import LlamaConfig

    from mmi_ray.model import student_problems

    tok = build_tokenizer(ModelConfig(tokenizer="words"))
    path = _folder(tmp_path, LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=300), tok)
    assert student_kind(ModelConfig(name=path)) == "causal"
    assert student_problems(ModelConfig(name=path, max_source_length=200, max_target_length=100)) == []
    assert student_problems(ModelConfig(name=path, max_source_length=256, max_target_length=128)) == [
        f"model.max_source_length + model.max_target_length: 256 + 128 tokens exceed the context of '{path}' "
        "(300 positions)"]
    assert student_problems(ModelConfig(name=path, max_source_length=200, max_target_length=100, chat_template=True)) == [
        f"model.chat_template: tokenizer '{path}' has no chat template; set model.chat_template: false "
        "(prompt, newline, continuation)"]
    assert student_problems(ModelConfig(chat_template=True)) == [
        "model.chat_template: for decoder-only students only (this student is seq2seq)"]


def test_a_model_that_is_neither_seq2seq_nor_causal_is_named(tmp_path):
    from transformers import ViTConfig

    from mmi_ray.model import student_problems

    path = _folder(tmp_path, ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    assert student_problems(ModelConfig(name=path)) == [
        f"model.name: '{path}' (model_type vit) is neither a seq2seq model nor a causal LM; set model.kind if it is "
        "one of them"]


# --- LoRA students


def test_a_lora_student_trains_only_its_adapters_and_its_checkpoint_holds_them_alone(tmp_path):
    """r = 8 adapters on the tiny causal student: the student's own weights do not move, the
    checkpoint holds the adapters (and nothing of the frozen student), and it loads back to score
    validation as the run did."""
    from pathlib import Path

    from mmi_ray.checkpoint import load_module, load_state
    from mmi_ray.config import load_config
    from mmi_ray.evaluate import evaluate_checkpoint
    from mmi_ray.model import count_params
    from mmi_ray.recipe import run_loop
    from mmi_ray.worker import in_process_env

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "tiny_props.yaml", [
        "model.kind=causal", "model.lora.r=8", "model.lora.alpha=16", "train.max_steps=20", "train.eval_every=20",
        "model.d_model=64", "model.d_ff=128", "data.builtin.num_train=400", "loss.mi_weight=0.5",
        "loss.mi_estimator=infonce", "run.storage_path=unused"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    reports: list[dict] = []
    env, _ = in_process_env(str(run_dir), 2, "node", reports.append)
    run_loop(cfg, env)
    ckpt = reports[-1]["checkpoint_path"]
    saved = load_state(ckpt)["model"]
    assert saved and all("lora_" in k or k.startswith("estimator.") for k in saved), sorted(saved)[:5]
    assert any(k.startswith("estimator.") for k in saved)  # the learned critic travels with the adapters
    module, tok, _ = load_module(ckpt)
    base = build_student(cfg.model, tok, cfg.train.seed, lora=False)
    frozen = {k.replace("base_model.model.", "", 1).replace(".base_layer", ""): v
              for k, v in module.student.state_dict().items() if "lora_" not in k}
    for k, v in base.state_dict().items():
        torch.testing.assert_close(frozen[k], v, rtol=0, atol=0)  # the student's own weights never moved
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)  # the adapters did
    adapters = sum(v.numel() for k, v in saved.items() if "lora_" in k)
    assert adapters == count_params(module.student, trained=True) == 4096  # 2 layers x (q, v) x r (64 + 64)
    assert adapters < count_params(base) / 50
    again = evaluate_checkpoint(ckpt, split="valid")
    assert again["valid_accuracy"] == reports[-1]["val_accuracy"]


def test_lora_target_modules_the_model_lacks_are_named():
    from mmi_ray.model import student_problems

    m = ModelConfig(kind="causal", tokenizer="words", lora={"r": 4, "target_modules": ["q_proj", "query"]})
    [line] = student_problems(m)
    assert line.startswith("model.lora.target_modules: 'tiny' has no layer named 'query' (its linear layers: ")
    assert "q_proj" in line and "lm_head" in line
    assert student_problems(m.model_copy(update={"lora": m.lora.model_copy(update={"target_modules": ["q_proj"]})})) == []


PLAIN_PEFT = """
import json, sys
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, inputs, merged = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "1"
model = AutoModelForCausalLM.from_pretrained(folder) if merged else PeftModel.from_pretrained(
    AutoModelForCausalLM.from_pretrained(folder + "/base"), folder)
tok = AutoTokenizer.from_pretrained(folder)
out = []
for text in inputs:  # one at a time, no padding
    ids = tok(["predict: " + text + "\\n"], return_tensors="pt").input_ids
    out.append(tok.decode(model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:], skip_special_tokens=True).strip())
assert not any(m.startswith("mmi_ray") for m in sys.modules)
print(json.dumps({"class": type(model).__name__, "answers": out}))
"""


def test_a_lora_student_exports_as_its_adapter_or_merged_and_loads_in_a_fresh_process(tmp_path, capsys):
    """The adapter folder (peft, its frozen tiny student in base/) and the merged folder (plain
    transformers) each load in a fresh process with no mmi_ray and answer validation as the run's own
    evaluation did; mmi-ray predict reads the adapter folder too."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from mmi_ray.cli import main
    from mmi_ray.config import load_config
    from mmi_ray.layout import CONFIG_FILE
    from mmi_ray.recipe import run_loop
    from mmi_ray.worker import in_process_env

    sys.path.insert(0, str(Path(__file__).parent))
    from test_export import own_predictions

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "tiny_props.yaml", [
        "model.kind=causal", "model.lora.r=8", "model.lora.alpha=32", "model.lora.target_modules=[q_proj,v_proj,o_proj,down_proj,lm_head]",
        "train.max_steps=150", "train.eval_every=150", "model.d_model=64", "model.d_ff=128", "data.builtin.num_train=400",
        "optim.lr=0.01", "train.max_new_tokens=8", "run.storage_path=unused"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_text(cfg.to_yaml())
    env, _ = in_process_env(str(run_dir), 2, "node", lambda m: None)
    run_loop(cfg, env)
    inputs, preds, _ = own_predictions(run_dir)
    assert all(preds)  # words, not an empty answer: the comparisons below compare something
    for merged in (False, True):
        out = tmp_path / ("merged" if merged else "adapter")
        assert main(["export", str(run_dir), "--out", str(out), *(["--merge"] if merged else [])]) == 0
        names = {p.name for p in out.iterdir()}
        assert ("adapter_config.json" in names) != merged and ("base" in names) != merged
        r = subprocess.run([sys.executable, "-c", PLAIN_PEFT, str(out), json.dumps(inputs), "1" if merged else "0"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        got = json.loads(r.stdout.strip().splitlines()[-1])
        assert got["class"] == ("LlamaForCausalLM" if merged else "PeftModelForCausalLM")
        assert got["answers"] == preds
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "A LoRA adapter (peft; r = 8, alpha = 32)" in card and "PeftModel.from_pretrained" in card
    src = tmp_path / "in.txt"
    src.write_text("\n".join(inputs[:4]) + "\n")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "adapter"), "--input", str(src)]) == 0
    assert [json.loads(x)["answer"] for x in capsys.readouterr().out.splitlines()] == preds[:4]


# --- sizing: what mmi-ray plan says of a decoder-only student


@pytest.mark.parametrize("lora", [0, 16])
def test_a_causal_shape_counts_the_parameters_the_model_and_peft_build(lora):
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from mmi_ray.sizing import shape_of

    cfg = ModelConfig(name="Qwen/Qwen2.5-0.5B", lora={"r": lora, "target_modules": ["q_proj", "k_proj", "down_proj"]})
    shape = shape_of(cfg)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                             num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                             tie_word_embeddings=True))
        assert shape.params() == sum(p.numel() for p in model.parameters()) == 494_032_768
        if lora:
            model = get_peft_model(model, PeftLora(r=16, target_modules=["q_proj", "k_proj", "down_proj"]))
            assert shape.trained() == sum(p.numel() for p in model.parameters() if p.requires_grad)
    tiny = ModelConfig(kind="causal", tokenizer="words", lora={"r": lora})
    built = build_student(tiny, build_tokenizer(tiny), 0)
    assert shape_of(tiny).params() == sum(p.numel() for p in built.parameters() if not lora or not p.requires_grad)
    assert shape_of(tiny).trained() == sum(p.numel() for p in built.parameters() if p.requires_grad)


def test_plan_sizes_a_causal_student_and_a_lora_run_fits_where_a_full_one_does_not():
    from mmi_ray.sizing import (
        CAUSAL_TRANSIENT,
        EAGER_SCORES,
        GPUS,
        Lengths,
        memory,
        micro_batches_to_fit,
        shape_of,
    )

    n = Lengths(120, 4, 90, 256, 8, 256, 1.05, "given")
    full = shape_of(ModelConfig(name="Qwen/Qwen2.5-1.5B"))
    lora = shape_of(ModelConfig(name="Qwen/Qwen2.5-1.5B", lora={"r": 16}))
    a10g = GPUS["A10G"]
    assert micro_batches_to_fit(full, n, 32, "bf16", "maxpool", a10g) is None  # 16 bytes x 1.54B: no batch fits
    k = micro_batches_to_fit(lora, n, 32, "bf16", "maxpool", a10g)
    assert k is not None  # with micro-batches (train.grad_accum_steps) as plan advises
    m_full, m_lora = (memory(s, 256, 8, 256, 4, "bf16", "maxpool") for s in (full, lora))
    # 16 bytes a trained parameter, 4 a frozen one, and autocast's bf16 copy of each weight
    assert m_full["weights, gradients, AdamW"] == 18 * full.params()
    assert m_lora["frozen weights, adapters + AdamW"] == 6 * lora.params() + 16 * lora.trained()
    assert m_lora["activations"] < 0.8 * m_full["activations"]  # a frozen linear layer keeps no input
    assert memory(full, 256, 8, 256, 4, "fp32", "maxpool")["weights, gradients, AdamW"] == 16 * full.params()
    # eager attention (train.deterministic on a GPU) keeps each layer's [B, heads, n, n] probabilities
    eager = memory(full, 256, 8, 256, 4, "bf16", "maxpool", eager=True)
    scores = CAUSAL_TRANSIENT * full.layers * 4 * full.heads * ((256 + 8) ** 2 + (256 + 256) ** 2) * 5
    assert EAGER_SCORES not in m_full and eager[EAGER_SCORES] == pytest.approx(scores)
    assert eager["activations"] == m_full["activations"]
    assert eager["total"] == pytest.approx(m_full["total"] + scores)
    assert micro_batches_to_fit(lora, n, 32, "bf16", "maxpool", a10g, eager=True) > k


def test_plan_names_sdpa_where_eager_attention_is_much_of_a_causal_runs_memory():
    """The LoRA sweep on Qwen2.5-0.5B with train.deterministic (eager attention on the GPU): plan lists
    the attention probabilities apart and names both fixes; without deterministic it has no such part."""
    from pathlib import Path

    from mmi_ray.plan import load_cluster, load_prices, make_plan
    from mmi_ray.sweep import load_sweep

    repo = Path(__file__).resolve().parents[1]
    cluster = load_cluster(str(repo / "cluster" / "aws-gpu.yaml"))

    def plan(*ov):
        p = make_plan(load_sweep(repo / "sweeps" / "paper_cqa_qwen_lora.yaml", list(ov)), cluster, "aws",
                      prices=load_prices())
        return "\n".join(p.lines), [w for w in p.warnings if "GPU memory" in w]

    text, [fix] = plan()
    assert "eager attention probabilities" in text
    m = re.search(r"set train.batch_size: (\d+) .*SDPA keeps none of the [\d.]+ GiB of eager attention probabilities, "
                  r"(\d+) examples a micro-batch", fix)
    assert m and int(m.group(2)) > int(m.group(1)), fix
    text, fixes = plan("overrides.train.deterministic=false")
    assert "eager attention" not in text and all("SDPA" not in w for w in fixes)


def test_the_causal_memory_estimate_is_within_a_fifth_of_what_training_holds():
    """The decoder-only estimate (a LoRA student, and a full one with long prompts) against the peak
    resident memory two AdamW steps add on the CPU, fp32, sdpa."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import memory_estimate

    rows = memory_estimate.main(["--shapes", "causal-lora-32k", "causal-long"])
    assert [r["shape"] for r in rows] == ["causal-lora-32k", "causal-long"]
    for r in rows:
        assert 0.8 <= r["ratio"] <= 1.25, r


def test_a_lora_run_resumed_from_its_checkpoint_ends_bit_for_bit_as_the_uninterrupted_run(tmp_path):
    """The adapters and their optimizer state alone in the checkpoint are enough to resume: the frozen
    student rebuilt from its seed, the run continued from step 10 ends with the same adapters and loss."""
    import shutil
    from pathlib import Path

    from mmi_ray.checkpoint import load_state
    from mmi_ray.config import load_config
    from mmi_ray.layout import complete_checkpoints
    from mmi_ray.recipe import run_loop
    from mmi_ray.worker import in_process_env

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "tiny_props.yaml", [
        "model.kind=causal", "model.lora.r=4", "train.max_steps=20", "train.eval_every=10", "model.d_model=32",
        "model.d_ff=64", "model.num_heads=2", "data.builtin.num_train=200", "loss.mi_estimator=infonce",
        "run.storage_path=unused"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first: list[dict] = []
    run_loop(cfg, in_process_env(str(run_dir), 3, "node", first.append)[0])
    whole = load_state(complete_checkpoints(str(run_dir))[-1])["model"]
    shutil.rmtree(complete_checkpoints(str(run_dir))[-1])  # as if the run had died after step 10
    again: list[dict] = []
    run_loop(cfg, in_process_env(str(run_dir), 3, "node", again.append)[0])
    assert [r["step"] for r in again] == [20]
    assert again[-1]["loss"] == first[-1]["loss"] and again[-1]["val_accuracy"] == first[-1]["val_accuracy"]
    resumed = load_state(complete_checkpoints(str(run_dir))[-1])["model"]
    assert resumed.keys() == whole.keys()
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=0, atol=0)


def test_a_local_causal_lm_folder_is_the_student_with_its_weights_and_a_pad_token(tmp_path):
    """model.name: a folder written by save_pretrained (as a hub download is): the student starts from
    its weights; a tokenizer without a pad token pads with its EOS."""
    from mmi_ray.distill import DistillModule

    tok = build_tokenizer(ModelConfig(tokenizer="words"))
    saved = build_student(MODEL.model_copy(update={"tokenizer": "words"}), tok, 7)
    saved.save_pretrained(tmp_path / "lm")
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "lm")
    cfg = ModelConfig(name=str(tmp_path / "lm"), max_source_length=128, max_target_length=64)
    assert student_kind(cfg) == "causal"
    loaded_tok = build_tokenizer(cfg)
    assert loaded_tok.pad_token == loaded_tok.eos_token == "</s>"
    student = build_student(cfg, loaded_tok, 0)
    for (k, a), (_, b) in zip(saved.state_dict().items(), student.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    module = DistillModule(student, LossConfig(mi_weight=0.1, mi_estimator="maxpool"))
    exs = generate(4, seed=1, tasks=["arith"], error_rate=0.0)
    batch = collate(tokenize(exs, Prompts(loaded_tok, causal=True), 128, 64), list(range(4)), loaded_tok.pad_token_id)
    assert torch.isfinite(module(batch).loss)


def test_a_chat_template_student_trains_exports_and_predicts_through_its_template(tmp_path, capsys):
    """model.chat_template: training, the run's evaluation, the exported folder (its prompt file) and
    mmi-ray predict all wrap the prompts in the tokenizer's template: predict answers as the run did."""
    import json
    import sys
    from pathlib import Path

    from mmi_ray.cli import main
    from mmi_ray.config import load_config
    from mmi_ray.layout import CONFIG_FILE
    from mmi_ray.recipe import run_loop
    from mmi_ray.worker import in_process_env

    sys.path.insert(0, str(Path(__file__).parent))
    from test_export import own_predictions

    _chat_words().save_pretrained(tmp_path / "tok")
    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "tiny_props.yaml", [
        "model.kind=causal", f"model.tokenizer={tmp_path / 'tok'}", "model.chat_template=true", "train.max_steps=150",
        "train.eval_every=150", "model.d_model=64", "model.d_ff=128", "data.builtin.num_train=400",
        "run.storage_path=unused"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_text(cfg.to_yaml())
    run_loop(cfg, in_process_env(str(run_dir), 2, "node", lambda m: None)[0])
    inputs, preds, _ = own_predictions(run_dir)
    assert all(preds)
    out = tmp_path / "student"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert json.loads((out / "mmi_ray_prompt.json").read_text())["chat_template"] is True
    example = (out / "README.md").read_text().split("```python\n")[1].split("```")[0]
    assert "apply_chat_template" in example
    import subprocess

    r = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == preds[0]  # the card's five lines, on the first validation question, as the run
    src = tmp_path / "in.txt"
    src.write_text("\n".join(inputs[:6]) + "\n")
    capsys.readouterr()
    assert main(["predict", str(out), "--input", str(src)]) == 0
    assert [json.loads(x)["answer"] for x in capsys.readouterr().out.splitlines()] == preds[:6]
