"""A T5-v1.1-shaped student (or a Qwen2-shaped decoder-only one) with a SentencePiece-style (Unigram)
tokenizer, built offline.

The real students (``google/t5-v1_1-base``) come from the hub, which tests and offline machines
cannot reach. This builds the same kind of checkpoint folder from text at hand: a Unigram tokenizer
trained on it (with T5's ``<pad>`` 0 / ``</s>`` 1 / ``<unk>`` 2 and sentinel ids), and a randomly
initialised T5 with v1.1's shape (gated-GELU feed-forward, an output head of its own, unscaled
decoder outputs),
both saved with ``save_pretrained``, so ``model.name=<folder>`` loads it exactly as it loads the hub
model. Used by the tests on the DSS data; handy for offline smoke runs of the paper configs.

    python -m mmi_ray.offline_student OUT_DIR --data-dir DSS_DATASETS [--vocab 2000]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

SPECIAL = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2, as in T5's SentencePiece model


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000, extra_ids: int = 100):
    """A ``T5Tokenizer`` over a Unigram vocabulary learned from ``texts``."""
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import T5Tokenizer

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(list(texts), vocab_size=vocab_size, special_tokens=SPECIAL, unk_token="<unk>",
                           show_progress=False)
    vocab = [tuple(x) for x in json.loads(sp.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=extra_ids)


def build_student(out_dir: str | Path, texts: Iterable[str], vocab_size: int = 2000, d_model: int = 64,
                  num_layers: int = 2, num_heads: int = 4, d_ff: int = 128, seed: int = 0,
                  model_vocab: int = 0) -> Path:
    """Write tokenizer and model into ``out_dir``; returns it. ``model_vocab`` widens the output layer
    (32128 for T5's own size) beyond the tokenizer's pieces."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    out = Path(out_dir)
    tok = train_tokenizer(texts, vocab_size)
    config = T5Config(  # t5-v1_1's shape at a small size; the vocabulary padded to a multiple of 128 as in T5
        vocab_size=max(model_vocab, (len(tok) + 127) // 128 * 128), d_model=d_model, d_kv=d_model // num_heads, d_ff=d_ff,
        num_layers=num_layers, num_decoder_layers=num_layers, num_heads=num_heads, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, dropout_rate=0.1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):  # CPU generator only
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
        # v1.1's output head is its own matrix. transformers 5 ties it to the embedding at construction
        # and unties on load only when the saved values differ, so give it values of its own.
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight) * d_model**-0.5)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_causal_student(out_dir: str | Path, texts: Iterable[str], vocab_size: int = 2000, hidden: int = 64,
                         layers: int = 2, heads: int = 4, kv_heads: int = 2, ff: int = 128, seed: int = 0,
                         model_vocab: int = 0) -> Path:
    """A decoder-only student of Qwen2's kind (grouped-query attention, biased q/k/v, gated
    feed-forward, tied output layer), randomly initialised, with the Unigram tokenizer: the offline
    stand-in for ``Qwen/Qwen2.5-0.5B`` at its shape (hidden 896, 24 layers, 14 heads / 2 key-value
    heads, 4,864 wide, 151,936 outputs). ``model.name=<folder>`` reads it as a causal LM."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    tok = train_tokenizer(texts, vocab_size)
    config = Qwen2Config(
        vocab_size=max(model_vocab, (len(tok) + 127) // 128 * 128), hidden_size=hidden, intermediate_size=ff,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=True,
        max_position_embeddings=4096, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def dss_texts(data_dir: str | Path, names: Iterable[str] = ("cqa", "svamp", "anli1", "esnli"),
              split: str = "train", per_dataset: int = 3000) -> list[str]:
    """Inputs, labels and teacher rationales of the DSS datasets found in ``data_dir`` (the text a
    student sees), with the task prefixes."""
    from .data.dss import available_splits, load_dss_split

    texts: list[str] = ["predict:", "explain:"]
    for name in names:
        if not (Path(data_dir) / name).is_dir():
            continue
        have = available_splits(name, data_dir)
        use = split if split in have else have[0]
        for e in load_dss_split(name, data_dir, use).examples[:per_dataset]:
            texts += [e.input, e.label, e.rationale, e.teacher_label]
    return [t for t in texts if t]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmi_ray.offline_student", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--data-dir", required=True, help="the DSS datasets/ folder whose text trains the tokenizer")
    ap.add_argument("--vocab", type=int, default=2000)
    args = ap.parse_args(argv)
    path = build_student(args.out_dir, dss_texts(args.data_dir), args.vocab)
    print(f"[mmi-ray] student written to {path}: use model.name={path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
