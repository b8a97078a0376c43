"""The student: a HF seq2seq model by hub name or local path, or the offline ``tiny`` T5 preset."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig
from .errors import ModelError


class EncoderPositions(nn.Module):
    """Token embedding plus learned absolute positions, for the encoder input only.

    Installed as the encoder's ``embed_tokens``, so ``forward`` and ``generate`` both use it; the
    decoder keeps the plain shared embedding.
    """

    def __init__(self, tokens: nn.Embedding, max_positions: int, d_model: int):
        super().__init__()
        self.tokens = tokens
        self.positions = nn.Embedding(max_positions, d_model)
        nn.init.normal_(self.positions.weight, std=0.02)

    @property
    def weight(self) -> torch.Tensor:  # what HF code reads as embed_tokens.weight
        return self.tokens.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.size(1), device=input_ids.device)
        return self.tokens(input_ids) + self.positions(pos)  # [B, T, D]


def build_tokenizer(cfg: ModelConfig):
    name = cfg.tokenizer or cfg.name
    if name in ("tiny", "byt5"):
        from transformers import ByT5Tokenizer

        return ByT5Tokenizer()
    if name == "words":
        return words_tokenizer()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as e:  # noqa: BLE001 - any loading failure becomes one actionable line
        key = "model.tokenizer" if cfg.tokenizer else "model.name"
        raise ModelError(f"{key}: cannot load tokenizer '{name}' ({type(e).__name__}: {_first_line(e)})") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:  # many decoder-only LMs have none
        tokenizer.pad_token = tokenizer.eos_token  # masks come from lengths (batching.padded): a prompt may hold it
    return tokenizer


def words_tokenizer():
    """A word-level tokenizer over the built-in task's fixed vocabulary (no files, no training): every
    word, number (0-999), box name and punctuation mark of the generated text is one token, so a
    ``props`` box is one token and sequences are a quarter of their byte length. Text from elsewhere
    would map to ``<unk>``: with ``data.dataset: custom`` every word must be in it (``check_vocabulary``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from .data.builtin import vocabulary

    words = ["<pad>", "</s>", "<unk>", *vocabulary()]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # runs of word characters, runs of punctuation
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def check_vocabulary(cfg, splits, source: str) -> None:
    """The ``words`` tokenizer on custom data: every word of every split must be in its vocabulary
    (an unknown word would become ``<unk>`` and the student could not write it)."""
    if cfg.model.tokenizer != "words" or cfg.data.dataset != "custom":
        return
    from .data.builtin import vocabulary, words_of

    known, unknown = set(vocabulary()), {}
    for name, sp in splits.items():
        for i, e in enumerate(sp.examples):
            for w in words_of(f"{e.input} {e.label} {e.rationale}"):
                if w not in known and w not in unknown:
                    unknown[w] = f"{name} row {i + 1}"
    if unknown:
        first = ", ".join(f"'{w}' ({where})" for w, where in list(unknown.items())[:5])
        raise ModelError(f"{source}: model.tokenizer: 'words' knows only the built-in task's words; {cfg.data.path} "
                         f"has {len(unknown)} others: {first}; leave model.tokenizer unset (bytes)")


def _first_line(e: Exception) -> str:
    s = str(e).strip().splitlines()
    return s[0][:200] if s else ""


def build_seq2seq(cfg: ModelConfig, tokenizer, seed: int, attn: str = "sdpa") -> nn.Module:
    """A randomly initialised tiny T5 (seeded), or pretrained weights from the hub / a folder, in
    fp32 (the optimizer's master weights; a bf16 checkpoint folder is loaded up, never trained in bf16),
    attending through ``attn`` (``machine.attention_kernel``: eager or sdpa)."""
    if cfg.name == "tiny":
        from transformers import T5Config, T5ForConditionalGeneration

        config = T5Config(
            vocab_size=len(tokenizer),
            d_model=cfg.d_model,
            d_kv=cfg.d_model // cfg.num_heads,
            d_ff=cfg.d_ff,
            num_layers=cfg.num_layers,
            num_decoder_layers=cfg.num_layers,
            num_heads=cfg.num_heads,
            feed_forward_proj="gated-gelu",
            dropout_rate=cfg.dropout,
            tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            attn_implementation=attn,
        )
        with torch.random.fork_rng(devices=[]):  # CPU generator only: the model is built on the CPU
            torch.manual_seed(seed)
            model = T5ForConditionalGeneration(config)
            # HF's T5 init draws the untied lm_head with std 1, so a fresh tiny model starts at a
            # cross-entropy near 40; std d_model^-0.5 starts it near ln(V) instead.
            nn.init.normal_(model.lm_head.weight, std=cfg.d_model**-0.5)
            if cfg.abs_positions:
                model.encoder.embed_tokens = EncoderPositions(model.shared, cfg.max_source_length, cfg.d_model)
        return model

    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    p = Path(cfg.name).expanduser()
    if cfg.name.startswith((".", "/", "~")) and not p.is_dir():
        raise ModelError(f"model.name: checkpoint folder not found: {cfg.name}")
    try:
        hf_config = AutoConfig.from_pretrained(str(p) if p.is_dir() else cfg.name)
        kwargs = {"dropout_rate": cfg.dropout} if hasattr(hf_config, "dropout_rate") else {}
        model = AutoModelForSeq2SeqLM.from_pretrained(str(p) if p.is_dir() else cfg.name, dtype=torch.float32,
                                                      attn_implementation=attn, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model.name: cannot load '{cfg.name}' ({type(e).__name__}: {_first_line(e)})") from None
    return model


def source_of(name: str) -> str:
    """What ``from_pretrained`` takes for ``model.name``: the folder's path, or the hub name."""
    p = Path(name).expanduser()
    return str(p) if p.is_dir() else name


def hf_config(cfg: ModelConfig):
    """The model's ``config.json`` (folder or hub), or one line naming ``model.name``."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source_of(cfg.name))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model.name: cannot load '{cfg.name}' ({type(e).__name__}: {_first_line(e)})") from None


def student_kind(cfg: ModelConfig) -> str:
    """``seq2seq`` or ``causal``: as stated (``model.kind``), else read from the model's config."""
    if cfg.kind != "auto":
        return cfg.kind
    if cfg.name == "tiny":
        return "seq2seq"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    conf = hf_config(cfg)
    if getattr(conf, "is_encoder_decoder", False):
        return "seq2seq"
    if conf.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise ModelError(f"model.name: '{cfg.name}' (model_type {conf.model_type}) is neither a seq2seq model nor "
                     "a causal LM; set model.kind if it is one of them")


def context_length(cfg: ModelConfig) -> int | None:
    """The positions a decoder-only student has (``max_position_embeddings``), or None if unknown."""
    if cfg.name == "tiny":
        return None  # the preset is built with room for the configured lengths
    return getattr(hf_config(cfg), "max_position_embeddings", None)


def build_student(cfg: ModelConfig, tokenizer, seed: int, attn: str = "sdpa", lora: bool = True) -> nn.Module:
    """The student ``model.kind`` names (or its config says): ``build_seq2seq`` or ``build_causal``,
    with LoRA adapters where ``model.lora.r`` > 0 (``lora=False``: the frozen base alone)."""
    causal = student_kind(cfg) == "causal"
    model = (build_causal if causal else build_seq2seq)(cfg, tokenizer, seed, attn)
    return with_lora(model, cfg, causal) if lora and cfg.lora.r else model


def with_lora(model: nn.Module, cfg: ModelConfig, causal: bool) -> nn.Module:
    """The student frozen, ``model.lora``'s adapters (peft) trainable in its layers."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ModelError("model.lora.r: LoRA students need peft (pip install 'mmi-ray[lora]')") from None
    missing = missing_lora_targets(model, cfg.lora.target_modules)
    if missing:
        raise ModelError(lora_targets_problem(cfg, missing, model))
    lc = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM" if causal else "SEQ_2_SEQ_LM")
    return get_peft_model(model, lc)


def skeleton(cfg: ModelConfig) -> nn.Module:
    """The student's layers without weights (on the meta device): their names and shapes, in seconds,
    for the checks made before any trial."""
    causal = student_kind(cfg) == "causal"
    with torch.device("meta"):
        if cfg.name == "tiny":
            return (build_causal if causal else build_seq2seq)(cfg, build_tokenizer(cfg), 0)
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        return (AutoModelForCausalLM if causal else AutoModelForSeq2SeqLM).from_config(hf_config(cfg))


def missing_lora_targets(model: nn.Module, targets: list[str] | None) -> list[str]:
    """The names in ``model.lora.target_modules`` that no linear layer of ``model`` ends with."""
    if not targets:
        return []
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Embedding | nn.Conv1d)]
    return [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]


def lora_targets_problem(cfg: ModelConfig, missing: list[str], model: nn.Module) -> str:
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
    return (f"model.lora.target_modules: '{cfg.name}' has no layer named {', '.join(repr(t) for t in missing)} "
            f"(its linear layers: {', '.join(leaves)})")


def build_causal(cfg: ModelConfig, tokenizer, seed: int, attn: str = "sdpa") -> nn.Module:
    """A decoder-only student: with ``name: tiny`` a randomly initialised Llama-shaped model (seeded;
    ``d_model``, ``d_ff``, ``num_layers`` and ``num_heads`` as for the tiny T5, rotary positions), else
    pretrained weights from the hub / a folder through ``AutoModelForCausalLM``, in fp32."""
    if cfg.name == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.d_model,
            intermediate_size=cfg.d_ff,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_heads,
            max_position_embeddings=cfg.max_source_length + cfg.max_target_length,
            attention_dropout=cfg.dropout,
            tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            attn_implementation=attn,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return LlamaForCausalLM(config)

    from transformers import AutoModelForCausalLM

    p = Path(cfg.name).expanduser()
    if cfg.name.startswith((".", "/", "~")) and not p.is_dir():
        raise ModelError(f"model.name: checkpoint folder not found: {cfg.name}")
    try:
        model = AutoModelForCausalLM.from_pretrained(source_of(cfg.name), dtype=torch.float32, attn_implementation=attn)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model.name: cannot load '{cfg.name}' ({type(e).__name__}: {_first_line(e)})") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # build_tokenizer gives one (EOS where there is none)
    return model


def d_model_of(model: nn.Module) -> int:
    c = model.config
    return getattr(c, "d_model", None) or c.hidden_size


def count_params(model: nn.Module, trained: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trained)


def student_problems(m: ModelConfig) -> list[str]:
    """What the student and its tokenizer (found: ``config.model_source_problems`` passed) cannot do
    that the config asks: a model neither seq2seq nor causal, a chat template its tokenizer lacks,
    prompts and continuations longer than its context, LoRA target modules it does not have."""
    import importlib.util

    try:
        kind = student_kind(m)
        tokenizer = build_tokenizer(m) if m.chat_template else None
    except ModelError as e:
        return [str(e)]
    problems = []
    if m.chat_template and kind != "causal":
        problems.append("model.chat_template: for decoder-only students only (this student is seq2seq)")
    elif m.chat_template and not getattr(tokenizer, "chat_template", None):
        problems.append(f"model.chat_template: tokenizer '{m.tokenizer or m.name}' has no chat template; "
                        "set model.chat_template: false (prompt, newline, continuation)")
    if kind == "causal":
        ctx = context_length(m)
        if ctx is not None and m.max_source_length + m.max_target_length > ctx:
            problems.append(f"model.max_source_length + model.max_target_length: {m.max_source_length} + "
                            f"{m.max_target_length} tokens exceed the context of '{m.name}' ({ctx} positions)")
    if m.lora.r:
        if importlib.util.find_spec("peft") is None:
            problems.append("model.lora.r: LoRA students need peft (pip install 'mmi-ray[lora]')")
        elif m.lora.target_modules:
            model = skeleton(m)
            missing = missing_lora_targets(model, m.lora.target_modules)
            if missing:
                problems.append(lora_targets_problem(m, missing, model))
    return problems


def check_student(cfg, source: str) -> None:
    """``student_problems`` as one error naming the config (run after ``config.check_paths``)."""
    from .errors import ConfigError

    problems = student_problems(cfg.model)
    if problems:
        raise ConfigError(source, problems)
