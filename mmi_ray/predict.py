"""A trained student (exported folder, run folder or checkpoint) on new inputs: ``mmi-ray predict``
(its command line: mmi_ray/commands/predict.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator

import torch

from .data.batching import LABEL_PREFIX, RATIONALE_PREFIX, Prompts, padded
from .errors import DataError


def read_inputs(source: str) -> Iterator[tuple[int, str]]:
    """(line number, input text) from a JSONL file (an ``input`` field per line), plain text lines,
    or ``-`` (standard input). A JSON line without ``input`` is an error naming the file and line."""
    stream = sys.stdin if source == "-" else open(source, encoding="utf-8")  # noqa: SIM115
    name = "<stdin>" if source == "-" else source
    try:
        for n, line in enumerate(stream, start=1):
            text = line.rstrip("\n")
            if not text.strip():
                continue
            if text.lstrip().startswith("{"):
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as e:
                    raise DataError(f"{name}: line {n}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict) or not isinstance(row.get("input"), str):
                    raise DataError(f"{name}: line {n}: input: missing (each JSON line needs an \"input\" string)")
                text = row["input"]
            yield n, text
    finally:
        if stream is not sys.stdin:
            stream.close()


@torch.no_grad()
def generate(model, prompts: Prompts, texts: list[str], prefix: str, max_new_tokens: int, max_source: int) -> list[str]:
    """Greedy generation for one batch, as the trainer's evaluation generates (the same prompts, cut at
    ``max_source`` tokens, as in training)."""
    from .distill import greedy

    batch, mask = padded(prompts.inputs(prefix, texts, max_source), prompts.tokenizer.pad_token_id)
    out = greedy(model, batch.to(model.device), mask.to(model.device), max_new_tokens)
    return [s.strip() for s in prompts.tokenizer.batch_decode(out, skip_special_tokens=True)]


def predict(model, prompts: Prompts, rows: Iterable[tuple[int, str]], explain: bool, batch: int, max_new_tokens: int,
            max_source: int, max_rationale_tokens: int = 128) -> Iterator[dict]:
    """One output record per input: ``answer`` and, with ``explain``, ``rationale``."""
    buf: list[tuple[int, str]] = []

    def flush():
        texts = [t for _, t in buf]
        answers = generate(model, prompts, texts, LABEL_PREFIX, max_new_tokens, max_source)
        rats = generate(model, prompts, texts, RATIONALE_PREFIX, max_rationale_tokens, max_source) if explain else None
        for i, ((_, text), ans) in enumerate(zip(buf, answers)):
            yield {"input": text, "answer": ans, **({"rationale": rats[i]} if explain else {})}

    for row in rows:
        buf.append(row)
        if len(buf) == batch:
            yield from flush()
            buf = []
    if buf:
        yield from flush()


def unknown_words(tokenizer, texts: list[str]) -> list[list[str]]:
    """Per text, the pieces the tokenizer maps to its unknown token (the ``words`` tokenizer knows only
    the built-in task's words, case included): the student never saw them, so it answers blind."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not getattr(tokenizer, "is_fast", False):
        return [[] for _ in texts]
    enc = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=False)
    return [[t[a:b] for i, (a, b) in zip(ids, offs, strict=True) if i == unk]
            for t, ids, offs in zip(texts, enc["input_ids"], enc["offset_mapping"], strict=True)]


def warn_unknown(tokenizer, rows: list[tuple[int, str]], source: str) -> int:
    """A warning on standard error naming the inputs with words the student's tokenizer does not know
    (counted, the first few shown); returns how many inputs have them."""
    unknown = unknown_words(tokenizer, [t for _, t in rows])
    hit = [(n, words) for (n, _), words in zip(rows, unknown, strict=True) if words]
    if hit:
        words = sorted({w for _, ws in hit for w in ws})
        where = ", ".join(f"line {n}" for n, _ in hit[:5]) + (" ..." if len(hit) > 5 else "")
        print(f"[mmi-ray] warning: {len(hit)} of {len(rows)} inputs in {source} have words the student's tokenizer "
              f"does not know ({len(words)} distinct: {', '.join(repr(w) for w in words[:8])}"
              f"{' ...' if len(words) > 8 else ''}; {where}): they reach the student as <unk>, so its answers "
              "to them mean little", file=sys.stderr)
    return len(hit)


def run_predict(model_path: str, source: str, explain: bool, batch: int, out: str | None, device: str | None) -> int:
    from .export import load_model

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(model_path, dev)
    rows = list(read_inputs(source))  # read (and check) every line before anything is written
    warn_unknown(loaded.tokenizer, rows, "<stdin>" if source == "-" else source)
    sink = open(out, "w", encoding="utf-8") if out else sys.stdout  # noqa: SIM115
    bar = None
    if sys.stderr.isatty() and len(rows) > batch:
        from tqdm import tqdm

        bar = tqdm(total=len(rows), unit="input", file=sys.stderr)
    try:
        for rec in predict(loaded.model, loaded.prompts, rows, explain, batch, loaded.max_new_tokens,
                           loaded.max_source):
            sink.write(json.dumps(rec) + "\n")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if out:
            sink.close()
    return 0
