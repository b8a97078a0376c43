"""The model card (``README.md``, Hugging Face format: YAML front matter, then prose) of an exported
student: how it was chosen, its confirmation figures with n and intervals, the comparison with DSS
and label-only, the resolved config, the data and code identity, and how to prompt and load it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .checkpoint import load_config
from .data import load_splits
from .data.batching import LABEL_PREFIX, RATIONALE_PREFIX, SEPARATOR
from .export import Chosen
from .layout import MACHINE, META_FILE
from .results.stats import arm_comparisons, arm_table, confirmation_runs, method_of, named_arms
from .reuse import code_version, data_fingerprint, identity
from .storage import join, read_text

TAGS = ["mmi-ray", "chain-of-thought-distillation", "distilling-step-by-step", "mutual-information", "t5",
        "text2text-generation"]
HUB_DATASETS = {"cqa": "cos_e", "svamp": "ChilleD/SVAMP", "anli1": "facebook/anli", "esnli": "esnli"}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _interval(lo: float, hi: float, cut: bool = False) -> str:
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]{'*' * cut}" if lo == lo else "(1 seed)"


def arm_table_lines(table, bold: str | None = None, with_sd: bool = False) -> list[str]:
    """A confirmation's per-arm table (``results.stats.arm_table``) as Markdown, ranked on
    validation: rank, n seeds, validation and test means with their 95% t intervals (cut at 0 and
    100, a ``*`` where too few seeds made it wider than that), optionally the test sd; ``bold`` marks one arm.
    The model card and the README's figures render it alike."""
    head = ("| rank | arm | method | n seeds | validation % [95% t] | test % [95% t] |"
            + (" test sd (points) |" * with_sd))
    lines = [head, "|" + " --- |" * (7 if with_sd else 6)]
    for r in table.itertuples():
        arm = f"**{r.arm}**" if r.arm == bold else r.arm
        lines.append(f"| {'=' if r.tied else ''}{r.rank} | {arm} | {r.method} | {r.n} | {_pct(r.val_mean)} "
                     f"{_interval(r.val_low, r.val_high, r.val_wide)} | {_pct(r.test_mean)} "
                     f"{_interval(r.test_low, r.test_high, r.test_wide)} |"
                     + (f" {100 * r.test_sd:.1f} |" if with_sd else ""))
    if table[["val_wide", "test_wide"]].any(axis=None):
        lines += ["", f"\\* the t interval over {int(table['n'].min())} seeds is wider than 0-100 (cut to it): too few "
                  "seeds to bound the mean."]
    return lines


def example_input(chosen: Chosen) -> str:
    """A validation input of the run's data, to show how to prompt the student."""
    splits = load_splits(chosen.cfg.data, need_train=False)
    return splits.valid.examples[0].input


def usage(model_ref: str, remote: bool, text: str, max_new_tokens: int, causal: bool = False, chat: bool = False,
          base: str | None = None) -> str:
    """Five lines that load the folder with plain transformers and answer one question, prompted as in
    training (a decoder-only student: its prompt, then only the new tokens decoded); an adapter folder
    (``base``: its frozen student's name or folder) loads that, then the adapter on it through peft."""
    trust = ", trust_remote_code=True" if remote else ""
    auto = "AutoModelForCausalLM" if causal else "AutoModelForSeq2SeqLM"
    if base is not None:  # a LoRA adapter folder: its frozen student, then the adapter on it
        return (f"from peft import PeftModel\nfrom transformers import {auto}, AutoTokenizer\n"
                f"base = {auto}.from_pretrained({base!r}{trust})\n"
                f"model = PeftModel.from_pretrained(base, {model_ref!r})\n"
                + usage(model_ref, False, text, max_new_tokens, causal, chat).split("\n", 2)[2])
    if chat:
        ids = (f"ids = tokenizer.apply_chat_template([{{'role': 'user', 'content': {(LABEL_PREFIX + text)!r}}}], "
               "add_generation_prompt=True, return_tensors=\"pt\", return_dict=True).input_ids\n")
    else:
        ids = (f"ids = tokenizer([{(LABEL_PREFIX + text + (SEPARATOR if causal else ''))!r}], return_tensors=\"pt\", "
               "truncation=True).input_ids\n")
    new = "[:, ids.shape[1]:]" if causal else ""
    return (f"from transformers import {auto}, AutoTokenizer\n"
            f"model = {auto}.from_pretrained({model_ref!r}{trust})\n"
            f"tokenizer = AutoTokenizer.from_pretrained({model_ref!r}{trust})\n"
            + ids +
            f"print(tokenizer.batch_decode(model.generate(ids, max_new_tokens={max_new_tokens}){new}, "
            f"skip_special_tokens=True)[0])\n")


def build_card(chosen: Chosen, name: str, model_ref: str, remote: bool, adapter: bool = False) -> str:
    from .model import student_kind

    cfg = chosen.cfg
    method = method_of(cfg.loss.rationale_weight, cfg.loss.mi_weight, cfg.loss.mi_estimator)
    meta = json.loads(read_text(join(chosen.checkpoint, META_FILE)))
    text = example_input(chosen)
    dataset = {"builtin": f"builtin ({', '.join(cfg.data.builtin.tasks)})",
               "custom": f"custom ({Path(cfg.data.path or '').name})"}.get(cfg.data.dataset, cfg.data.dataset)
    causal = student_kind(cfg.model) == "causal"
    base = None if not adapter else f"{model_ref}/base" if cfg.model.name == "tiny" else cfg.model.name
    task = "text-generation" if causal else "text2text-generation"
    chat = causal and cfg.model.chat_template
    front: dict = {"license": "apache-2.0", "library_name": "transformers", "pipeline_tag": task, "tags": TAGS}
    if not cfg.model.name.startswith((".", "/", "~")) and cfg.model.name != "tiny":
        front["base_model"] = cfg.model.name
    if cfg.data.dataset in HUB_DATASETS:
        front["datasets"] = [HUB_DATASETS[cfg.data.dataset]]
    lines = [f"# {name}", "",
             f"A {method} student ({_model_words(cfg)}) distilled with mmi-ray (mutual-information chain-of-thought distillation) on {dataset}: "
             "it answers with `predict: ` before the input and writes its rationale with `explain: `.", ""]
    lines += ["## How it was chosen", ""] + [f"- {w}" for w in chosen.why] + [""]
    results = []
    if chosen.confirmation:
        runs = confirmation_runs(chosen.confirmation)
        shown = named_arms(chosen.confirmation["arms"])[chosen.arm]
        table = arm_table(runs, chosen.metric, mode=chosen.mode)
        mine = table[table["arm"] == shown].iloc[0]
        results.append({"type": "accuracy", "value": round(100 * float(mine["test_mean"]), 2),
                        "name": f"test accuracy, mean over {int(mine['n'])} confirmation seeds"})
        lines += ["## Confirmation runs (fresh seeds, full budget; test read once per run)", "",
                  *arm_table_lines(table, bold=shown)]
        pairs = this_arm_against_baselines(runs, shown)
        if pairs:
            lines += ["", "Paired by seed on test (Holm-corrected over the confirmation's comparisons):", "",
                      "| comparison | difference, points [95% t] | d_z | p (Holm) | n |", "| --- | --- | --- | --- | --- |"]
            for other, diff, lo, hi, dz, p, n in pairs:
                lines.append(f"| {method} - {other} | {100 * diff:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | "
                             f"{dz:.2f} | {p:.2g} | {n} |")
        lines += ["", "An interval that holds 0 is no measurable difference at this number of seeds.", ""]
    else:
        metrics = meta.get("metrics", {})
        if "val_accuracy" in metrics:
            lines += ["## Figures", "", f"Validation accuracy at step {meta['step']}: {_pct(metrics['val_accuracy'])}% "
                      f"(n = {metrics.get('val_n', '?')} questions, one run, one seed: no interval over seeds; "
                      "export from a sweep with confirmation runs for those).", ""]
    if results:
        front["model-index"] = [{"name": name, "results": [{
            "task": {"type": task, "name": "label prediction"},
            "dataset": {"name": dataset, "type": HUB_DATASETS.get(cfg.data.dataset, f"mmi-ray/{cfg.data.dataset}"),
                        "split": "test"},
            "metrics": results}]}]
    how = (" as one user turn of its tokenizer's chat template (with the generation prompt)" if chat
           else " followed by a newline (`\\n`)" if causal else "")
    after = ("; the answer is the text it writes after the prompt, up to its end-of-text token" if causal else "")
    lines += ["## How to prompt it", "",
              f"- `{LABEL_PREFIX}<input>`{how} gives the answer (greedy, at most {cfg.train.max_new_tokens} new tokens "
              f"in training's evaluation){after};",
              f"- `{RATIONALE_PREFIX}<input>`{', the same way,' if how else ''} gives the rationale (chain of thought).", "",
              "```python", usage(model_ref, remote, text, cfg.train.max_new_tokens, causal, chat, base).rstrip(), "```", ""]
    if adapter:
        lines += [f"A LoRA adapter (peft; r = {cfg.model.lora.r}, alpha = {cfg.model.lora.alpha:g}) on "
                  + ("the frozen student in `base/` (mmi-ray's random `tiny` preset, written beside it)" if cfg.model.name == "tiny"
                     else f"`{cfg.model.name}`") + "; `mmi-ray export --merge` writes the student with it merged in.", ""]
    if remote:
        lines += ["The student adds learned absolute positions to the encoder input (mmi-ray's `tiny` preset), so "
                  "the folder ships `modeling_mmi_t5.py` (torch and transformers only) and loads with "
                  "`trust_remote_code=True`.", ""]
    lines += ["## Training", "",
              f"Method: {method}; loss = {cfg.loss.label_weight} x CE(label) + {cfg.loss.rationale_weight} x "
              f"CE(rationale) + {cfg.loss.mi_weight} x L_mi ({cfg.loss.mi_estimator}). The MI critic, if any, is not "
              "part of this model.", "",
              f"- run identity `{identity(load_config(chosen.checkpoint))}`, data fingerprint "
              f"`{data_fingerprint(cfg.data)}`, code `{code_version()}` (`reuse.py`, under the code version that exported it: equal to the run's own when the training code is unchanged since)",
              f"- trained on: {meta.get('metrics', {}).get(MACHINE, 'not recorded')}",
              f"- step {meta['step']} of {cfg.train.max_steps}, seed {chosen.seed}", "",
              "Resolved config:", "", "```yaml", cfg.to_yaml().rstrip(), "```", ""]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(lines)


def this_arm_against_baselines(runs, arm: str) -> list[tuple]:
    """The confirmation's paired test comparisons that involve ``arm``, as ``arm - other``:
    (other, difference, low, high, d_z, Holm p, n). Where ``arm`` is itself the DSS baseline, its
    comparisons are the other arms' against it, turned round."""
    cmp = arm_comparisons(runs, "test_accuracy")
    if cmp.empty:
        return []
    base_arm = {m: runs.loc[runs["method"] == m, "arm"].iloc[0] for m in cmp["baseline"].unique()}
    out = []
    for r in cmp.itertuples():
        if r.arm == arm:
            out.append((r.baseline, r.mean_diff, r.ci_low, r.ci_high, r.effect_dz, r.p_holm, r.n_pairs))
        elif base_arm[r.baseline] == arm:
            out.append((r.method, 0.0 - r.mean_diff, 0.0 - r.ci_high, 0.0 - r.ci_low, 0.0 - r.effect_dz, r.p_holm,
                        r.n_pairs))
    return out


def _model_words(cfg) -> str:
    m = cfg.model
    if m.name == "tiny":
        return f"tiny T5, d_model {m.d_model}, {m.num_layers}+{m.num_layers} layers, trained from scratch"
    return m.name
