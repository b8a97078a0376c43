"""What one run asks of a GPU, before it runs: FLOPs and time per optimizer step, and peak memory.

``mmi-ray plan`` prices a sweep with these; ``benchmarks/gpu_check.py`` and ``benchmarks/memory_estimate.py``
hold them against what a device measures. Each number says where it comes from: GPU peaks from the
vendors' datasheets (dense, no sparsity), model shapes from the model's config, token lengths from
the run's own data and tokenizer where they can be read here, and two assumptions that no GPU has
measured for mmi-ray yet: the share of peak a step reaches (``ASSUMED_MFU``) and the padding left
by length bucketing (``PADDING``, measured on CPU). Plain Python; no GPU needed.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from .config import Config, ModelConfig


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float
    """Dense bf16 tensor-core peak (fp16 for GPUs without bf16), TFLOP/s."""
    fp32_tflops: float
    """Plain fp32 peak (no TF32), TFLOP/s: what ``train.precision: fp32`` runs at."""
    memory_gib: float
    bf16_native: bool
    """bf16 in hardware (Ampere and later); V100 and T4 only emulate it."""


GPUS = {g.name: g for g in (
    GPU("T4", 65.0, 8.1, 15.0, False),
    GPU("V100", 125.0, 15.7, 16.0, False),
    GPU("A10G", 70.0, 31.2, 22.0, True),  # AWS g5: A10G's bf16 is below the A10's 125
    GPU("L4", 121.0, 30.3, 22.0, True),
    GPU("L40S", 362.0, 91.6, 44.0, True),
    GPU("A100-40GB", 312.0, 19.5, 39.0, True),
    GPU("A100-80GB", 312.0, 19.5, 79.0, True),
    GPU("H100", 989.0, 67.0, 79.0, True),
    GPU("H200", 989.0, 67.0, 139.0, True),
)}
"""Datasheet peaks (memory: what CUDA can allocate of it, about 1 GiB under the nominal size)."""

INSTANCE_GPUS = (
    (r"^g4dn\.", "T4"), (r"^p3\.", "V100"), (r"^g5\.", "A10G"), (r"^g6\.", "L4"), (r"^g6e\.", "L40S"),
    (r"^p4d\.", "A100-40GB"), (r"^p4de\.", "A100-80GB"), (r"^p5\.", "H100"), (r"^p5e", "H200"),
    (r"^g2-standard-", "L4"), (r"^a2-highgpu-", "A100-40GB"), (r"^a2-ultragpu-", "A100-80GB"),
    (r"^a3-", "H100"), (r"^n1-.*nvidia-tesla-t4", "T4"),
)
"""Cloud instance types (AWS, GCP) and the GPU they carry."""

ASSUMED_MFU = {"bf16": 0.35, "fp32": 0.50}
"""Share of the precision's peak a training step reaches: assumed (about what encoder-decoders of
this size reach in plain PyTorch), not measured for mmi-ray. ``gpu_check.py`` measures it; pass the
measured step time to ``mmi-ray plan --step-time``."""

PADDING = 1.05
"""Padded tokens per real token with length bucketing (``train.bucket_by_length``): 1.05 measured on
the DSS CQA files (1.30 without bucketing)."""


def gpu_by_name(name: str) -> GPU | None:
    """The table's GPU for a device name as ``torch.cuda.get_device_name`` gives it
    ("NVIDIA A100-SXM4-80GB", "Tesla T4") or a table key."""
    for part, key in (("H200", "H200"), ("H100", "H100"), ("L40S", "L40S"), ("A10G", "A10G"), ("L4", "L4"),
                      ("V100", "V100"), ("T4", "T4")):
        if part in name:
            return GPUS[key]
    if "A100" in name:
        return GPUS["A100-80GB" if "80GB" in name else "A100-40GB"]
    return None


def gpu_of_instance(instance: str) -> GPU | None:
    for pattern, gpu in INSTANCE_GPUS:
        if re.search(pattern, instance):
            return GPUS[gpu]
    return None


@dataclass(frozen=True)
class Shape:
    """An encoder-decoder student's dimensions, and where they were read."""

    d_model: int
    inner: int  # heads x d_kv
    heads: int
    d_ff: int
    enc_layers: int
    dec_layers: int
    vocab: int
    source: str
    extra: int = 0
    """Parameters beyond T5's own (the tiny preset's learned encoder positions)."""

    def params(self) -> int:
        """Parameters: the embedding (transformers 5 ties T5's output layer to it, v1.1 included),
        attention (self; cross in the decoder), gated feed-forward, norms, the two stacks' relative
        position biases (32 buckets a head)."""
        d, i, ff = self.d_model, self.inner, self.d_ff
        enc = self.enc_layers * (4 * d * i + 3 * d * ff + 2 * d)
        dec = self.dec_layers * (8 * d * i + 3 * d * ff + 3 * d)
        return self.vocab * d + enc + dec + 2 * d + 2 * 32 * self.heads + self.extra


@dataclass(frozen=True)
class CausalShape:
    """A decoder-only student's dimensions (Llama / Qwen2 family: grouped-query attention, gated
    feed-forward), its LoRA adapters if any, and where they were read."""

    d_model: int
    heads: int
    kv_heads: int
    head_dim: int
    d_ff: int
    layers: int
    vocab: int
    tied: bool
    source: str
    qkv_bias: bool = False
    lora_r: int = 0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    """peft's default for these architectures."""

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim

    def _linears(self) -> dict[str, tuple[int, int]]:
        d, i, kv, ff = self.d_model, self.inner, self.kv_heads * self.head_dim, self.d_ff
        return {"q_proj": (d, i), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (i, d), "gate_proj": (d, ff),
                "up_proj": (d, ff), "down_proj": (ff, d)}

    def params(self) -> int:
        """Parameters: embedding (and an untied output layer), each layer's attention (query, key,
        value biases where the family has them) and gated feed-forward, its two norms, the final norm."""
        lin = self._linears()
        layer = sum(a * b for a, b in lin.values()) + 2 * self.d_model
        if self.qkv_bias:
            layer += lin["q_proj"][1] + 2 * lin["k_proj"][1]
        return self.vocab * self.d_model * (1 if self.tied else 2) + self.layers * layer + self.d_model

    def trained(self) -> int:
        """Parameters that train: the adapters' (``r x (in + out)`` per targeted layer), or all."""
        if not self.lora_r:
            return self.params()
        lin = self._linears()
        return self.layers * sum(self.lora_r * sum(lin[t]) for t in self.lora_targets if t in lin)


KNOWN_SHAPES = {
    "google/t5-v1_1-small": (512, 384, 6, 1024, 8, 8, 32128),
    "google/t5-v1_1-base": (768, 768, 12, 2048, 12, 12, 32128),
    "google/t5-v1_1-large": (1024, 1024, 16, 2816, 24, 24, 32128),
    "google/t5-v1_1-xl": (2048, 2048, 32, 5120, 24, 24, 32128),
}
"""Hub students by name (their config.json), so ``plan`` sizes them with no network."""

KNOWN_CAUSAL = {  # hidden, heads, kv heads, intermediate, layers, vocab, tied, qkv bias
    "Qwen/Qwen2.5-0.5B": (896, 14, 2, 4864, 24, 151936, True, True),
    "Qwen/Qwen2.5-1.5B": (1536, 12, 2, 8960, 28, 151936, True, True),
    "meta-llama/Llama-3.2-1B": (2048, 32, 8, 8192, 16, 128256, True, False),
    "HuggingFaceTB/SmolLM2-360M": (960, 15, 5, 2560, 32, 49152, True, False),
}
"""Decoder-only hub students (their config.json; the Instruct variants share the shapes)."""


def causal_from_hf(c: dict, source: str, m: ModelConfig) -> CausalShape:
    """A Llama / Qwen2 / Mistral-style ``config.json`` as a shape, with ``model.lora``'s adapters."""
    heads = c["num_attention_heads"]
    return CausalShape(c["hidden_size"], heads, c.get("num_key_value_heads") or heads,
                       c.get("head_dim") or c["hidden_size"] // heads, c["intermediate_size"], c["num_hidden_layers"],
                       c["vocab_size"], bool(c.get("tie_word_embeddings", False)), source,
                       c.get("model_type") == "qwen2" or bool(c.get("attention_bias", False)), **_lora(m))


def _lora(m: ModelConfig) -> dict:
    if not m.lora.r:
        return {}
    return {"lora_r": m.lora.r, **({"lora_targets": tuple(m.lora.target_modules)} if m.lora.target_modules else {})}


def _is_causal_config(c: dict) -> bool:
    return not c.get("is_encoder_decoder", False) and "num_hidden_layers" in c and "intermediate_size" in c


def shape_from_hf(c: dict, source: str) -> Shape:
    """A T5 ``config.json`` (or ``T5Config.to_dict()``) as a shape."""
    heads = c["num_heads"]
    return Shape(c["d_model"], heads * c["d_kv"], heads, c["d_ff"], c["num_layers"],
                 c.get("num_decoder_layers") or c["num_layers"], c["vocab_size"], source)


def shape_of(m: ModelConfig) -> Shape | CausalShape | None:
    """The student's shape from the config (the ``tiny`` preset), a local folder's or the cache's
    ``config.json``, or the table of known hub students; None when none of those knows it."""
    if m.name == "tiny" and m.kind == "causal":
        from .model import build_tokenizer

        return CausalShape(m.d_model, m.num_heads, m.num_heads, m.d_model // m.num_heads, m.d_ff, m.num_layers,
                           len(build_tokenizer(m)), False, "the tiny causal preset", **_lora(m))
    if m.name == "tiny":
        from .model import build_tokenizer

        vocab = len(build_tokenizer(m))
        return Shape(m.d_model, m.d_model, m.num_heads, m.d_ff, m.num_layers, m.num_layers, vocab, "the tiny preset",
                     m.max_source_length * m.d_model if m.abs_positions else 0)
    path = Path(m.name).expanduser() / "config.json"
    if path.is_file():
        return _shape(json.loads(path.read_text()), str(path), m)
    if m.name in KNOWN_CAUSAL or m.name.removesuffix("-Instruct") in KNOWN_CAUSAL:
        d, h, kv, ff, layers, v, tied, bias = KNOWN_CAUSAL[m.name.removesuffix("-Instruct")]
        return CausalShape(d, h, kv, d // h, ff, layers, v, tied, f"{m.name}'s config.json (known)", bias, **_lora(m))
    if m.name in KNOWN_SHAPES:
        d, inner, heads, ff, enc, dec, v = KNOWN_SHAPES[m.name]
        return Shape(d, inner, heads, ff, enc, dec, v, f"{m.name}'s config.json (known)")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(m.name, "config.json")
        if isinstance(cached, str):
            return _shape(json.loads(Path(cached).read_text()), f"{m.name} (Hugging Face cache)", m)
    except Exception:  # noqa: BLE001 - no cache, no shape: the caller says so
        pass
    return None


@dataclass(frozen=True)
class Lengths:
    """Tokens per example (prefix and end token included): means, the longest, padding per real
    token, and where they were read."""

    src: float
    label: float
    rationale: float
    src_max: int
    label_max: int
    rationale_max: int
    padding: float
    source: str


CHARS_PER_TOKEN = 4.0
"""Characters per SentencePiece token on English text (T5's tokenizer: about 4): used when the data
is here but the student's tokenizer is not (a hub name not in the cache)."""


def _offline_tokenizer(m: ModelConfig):
    """The student's tokenizer when it can be had without the network (a preset, a folder, the cache)."""
    from .config import model_source_problems
    from .model import build_tokenizer

    if model_source_problems(m.model_copy(update={"name": "tiny"}) if m.tokenizer else m):  # not to be had
        return None
    try:
        return build_tokenizer(m)
    except Exception:  # noqa: BLE001 - cached but unreadable: treated as absent
        return None


def data_lengths(cfg: Config, sample: int = 2000) -> Lengths:
    """The run's own data (its first ``sample`` training rows), through its own tokenizer and
    truncated as training truncates where the tokenizer can be had offline, else at
    ``CHARS_PER_TOKEN``; without the data, the config's maximum lengths (an upper bound)."""
    m = cfg.model
    try:
        from .data import load_splits

        rows = load_splits(cfg.data).train.examples[:sample]
    except Exception as e:  # noqa: BLE001 - no data here: the bound, said as such
        return Lengths(m.max_source_length, m.max_target_length, m.max_target_length, m.max_source_length,
                       m.max_target_length, m.max_target_length, 1.0,
                       f"the config's maximum lengths (no data here: {type(e).__name__}): an upper bound")
    from .data.batching import LABEL_PREFIX, Prompts, prompts_for, tokenize
    from .errors import ModelError

    tok = _offline_tokenizer(m)
    if tok is not None:
        try:
            prompts = prompts_for(m, tok)
        except ModelError:  # the tokenizer is here, the model's config is not: lengths differ by a token at most
            prompts = Prompts(tok)
        t = tokenize(rows, prompts, m.max_source_length, m.max_target_length, cfg.data.label_type)
        lens = {k: [len(x) for x in getattr(t, f"{k}_ids")] for k in ("predict", "label", "rationale")}
        how = "its tokenizer"
    else:
        def count(text: str, cap: int) -> int:
            return min(cap, round(len(text) / CHARS_PER_TOKEN) + 1)

        lens = {"predict": [count(LABEL_PREFIX + e.input, m.max_source_length) for e in rows],
                "label": [count(e.label, m.max_target_length) for e in rows],
                "rationale": [count(e.rationale, m.max_target_length) for e in rows]}
        how = f"{CHARS_PER_TOKEN:g} characters a token (the tokenizer is not here)"
    return Lengths(statistics.mean(lens["predict"]), statistics.mean(lens["label"]), statistics.mean(lens["rationale"]),
                   max(lens["predict"]), max(lens["label"]), max(lens["rationale"]), PADDING,
                   f"{len(rows)} training rows of {cfg.data.dataset}, {how}")


def _shape(c: dict, source: str, m: ModelConfig) -> Shape | CausalShape:
    return causal_from_hf(c, source, m) if _is_causal_config(c) else shape_from_hf(c, source)


def causal_pass_flops(s: CausalShape, prompt: float, cont: float) -> float:
    """Forward matmul FLOPs of one decoder-only pass for one example: every layer over the prompt and
    its continuation, attention scores and weighted sums (full squares: what the kernels compute on
    padded batches), the output layer over the continuation only (``logits_to_keep``)."""
    n = prompt + cont
    linear = sum(a * b for a, b in s._linears().values())
    return 2.0 * (s.layers * (n * linear + 2 * n * n * s.inner) + cont * s.d_model * s.vocab)


def pass_flops(s: Shape, src: float, tgt: float) -> float:
    """Forward matmul FLOPs of one encoder-decoder pass for one example (2 per multiply-add),
    attention scores and weighted sums included."""
    d, inner, ff, v = s.d_model, s.inner, s.d_ff, s.vocab
    ffn = 3 * d * ff  # gated-gelu: wi_0, wi_1, wo
    enc = s.enc_layers * src * (4 * d * inner + ffn) + s.enc_layers * 2 * src * src * inner
    dec = s.dec_layers * tgt * (4 * d * inner + 2 * d * inner + ffn)  # self q,k,v,o + cross q,o
    dec += s.dec_layers * 2 * src * d * inner  # cross-attention k,v over the encoder output
    dec += s.dec_layers * (2 * tgt * tgt * inner + 2 * tgt * src * inner)
    return 2.0 * (enc + dec + tgt * d * v)


def step_flops(s: Shape, batch: int, src: float, label: float, rationale: float) -> float:
    """Training FLOPs of one DSS / MI step: both passes, forward and backward (3x the forward; a LoRA
    student's backward computes no gradients for its frozen weights: 2x)."""
    if isinstance(s, CausalShape):
        factor = 2.0 if s.lora_r else 3.0
        return factor * batch * (causal_pass_flops(s, src, label) + causal_pass_flops(s, src, rationale))
    return 3.0 * batch * (pass_flops(s, src, label) + pass_flops(s, src, rationale))


def precision_on(precision: str, gpu: GPU) -> str:
    """``train.precision`` resolved on ``gpu`` (``machine.resolve_precision``'s rule)."""
    from .machine import resolve_precision

    return resolve_precision(precision, gpu.bf16_native)


def step_time(s: Shape, n: Lengths, examples: int, precision: str, gpu: GPU) -> float:
    """Seconds per optimizer step of ``examples`` examples on one ``gpu``: FLOPs over the padded mean
    lengths, at ``ASSUMED_MFU`` of the precision's peak."""
    p = precision_on(precision, gpu)
    peak = (gpu.bf16_tflops if p == "bf16" else gpu.fp32_tflops) * 1e12
    flops = step_flops(s, examples, n.src * n.padding, n.label * n.padding, n.rationale * n.padding)
    return flops / (peak * ASSUMED_MFU[p])


ACTIVATION_SCALE = {"fp32": 2.0, "bf16": 1.6}
"""What autograd keeps over the textbook count at 2 bytes an element (Korthikanti et al. 2022's
per-layer tensors, adapted to T5's gated feed-forward and cross-attention): fitted on the CPU to the
peak resident memory of ``benchmarks/memory_estimate.py``'s four shapes (the estimate then lands at
0.90-1.13 of it in fp32 and 0.92-1.00 under bf16 autocast, where softmax and T5's norms stay float32).
A GPU's bf16 is measured by gpu_check.py."""


CAUSAL_KEPT = {("fp32", False): ((44, 16), 4), ("bf16", False): ((40, 8), 5),
               ("fp32", True): ((36, 12), 4), ("bf16", True): ((24, 6), 5)}
"""A Llama / Qwen2 layer's tensors kept for backward, by precision and LoRA: bytes a token per unit
of d_model and of d_ff, and (eager attention) bytes a ``[B, heads, n, n]`` element (the float32
softmax and, under bf16, the copy the value product keeps). A frozen linear layer keeps no input, so
a LoRA student keeps less. Counted with ``torch.autograd.graph.saved_tensors_hooks`` on the CPU over
sdpa and eager, fp32 and bf16 autocast, full and LoRA (r 8 on q_proj, v_proj); grouped-query
attention changed nothing; autocast's bf16 weight copies are counted with the states."""

CAUSAL_TRANSIENT = 1.3
"""What a step's peak holds over the kept tensors (backward's working buffers), fitted on the CPU to
the peak resident memory of ``benchmarks/memory_estimate.py``'s three decoder-only shapes (full,
LoRA, long prompts): the estimate then lands at 0.80-1.20 of it over fp32 and bf16 autocast, sdpa
and eager attention (the measured peak moves about 8% from run to run). A GPU's figure is
gpu_check.py's to measure."""


EAGER_SCORES = "eager attention probabilities"
"""``memory``'s part for a decoder-only student's eager attention (``train.deterministic`` on a GPU)."""


def memory(s: Shape, src: int, label: int, rationale: int, batch: int, precision: str, mi: str | None,
           rationale_pass: bool = True, critic_params: int = 0, eager: bool = False) -> dict[str, float]:
    """Peak bytes of one training micro-batch of ``batch`` examples at these lengths (the longest a
    batch holds): fp32 weights, gradients and AdamW's two moments (16 bytes a parameter); the
    activations autograd keeps for both passes (``ACTIVATION_SCALE``); and the ``[B, T, V]`` output
    buffers: the logits, and either the fused cross-entropy + max-pool's backward (its gradient in the
    logits' dtype, float32 slices of at most 2**25 elements) or ``token_ce``'s float32 copy and
    log-softmax. ``eager``: a decoder-only student attends eagerly (``train.deterministic`` on a GPU),
    which keeps every layer's ``[B, heads, n, n]`` attention probabilities for backward."""
    el = 2 if precision == "bf16" else 4
    d, ff, h, v = s.d_model, s.d_ff, s.heads, s.vocab
    causal = isinstance(s, CausalShape)
    if causal:  # frozen fp32 weights (4 bytes) + 16 bytes a trained parameter; LoRA trains the adapters alone
        states = 4.0 * s.params() + 16.0 * (s.trained() + critic_params) if s.lora_r else 16.0 * (s.params() + critic_params)
    else:
        states = 16.0 * (s.params() + critic_params)

    def encoder(b: int, n: int) -> float:  # elements kept by the encoder stack, x 2 bytes
        return s.enc_layers * (2 * (18 * n * b * d + 8 * n * b * ff) + 10 * h * n * n * b)

    def decoder(b: int, t: int, n: int) -> float:
        return s.dec_layers * (2 * (31 * t * b * d + 4 * n * b * d + 8 * t * b * ff) + 10 * h * (t * t + t * n) * b)

    passes = [label] + ([rationale] if rationale_pass else [])
    scores = 0.0
    if causal:  # bytes autograd keeps in a pass of n = prompt + continuation tokens (CAUSAL_KEPT)
        (per_d, per_ff), per_score = CAUSAL_KEPT[precision, bool(s.lora_r)]
        layers = CAUSAL_TRANSIENT * s.layers * batch
        acts = sum(layers * (src + t) * (per_d * d + per_ff * ff) for t in passes)
        if eager:  # and, attending eagerly, every layer's [B, heads, n, n] probabilities
            scores = sum(layers * per_score * h * (src + t) * (src + t) for t in passes)
        if el == 2:  # autocast's bf16 copy of every weight, kept for backward
            states += 2.0 * s.params()
    else:
        acts = ACTIVATION_SCALE[precision] * sum(encoder(batch, src) + decoder(batch, t, src) for t in passes)
    fused = mi == "maxpool"
    # the fused pass's float32 slices: a log-softmax (and, from bf16 logits, their float32 copy)
    chunk = (8 if el == 2 else 4) * min(2**25, batch * max(passes) * v)
    bvt = 0.0
    for t in passes:
        n = batch * t * v
        # logits (el) kept for backward; token_ce: + a float32 copy and its log-softmax
        bvt += n * el + (0 if fused else 8 * n)
    bvt += batch * max(passes) * v * el + (chunk if fused else 0)  # the largest pass's gradient in backward
    key = "frozen weights, adapters + AdamW" if causal and s.lora_r else "weights, gradients, AdamW"
    out = {key: states, "activations": acts}
    if scores:
        out[EAGER_SCORES] = scores
    return {**out, "[B, T, V] buffers": bvt, "total": states + acts + scores + bvt}


def fits(total_bytes: float, gpu: GPU, headroom: float = 0.9) -> bool:
    """Whether an estimate fits ``gpu`` with room for the CUDA context and the allocator's slack."""
    return total_bytes <= headroom * gpu.memory_gib * 2**30


def micro_batches_to_fit(s: Shape, n: Lengths, batch: int, precision: str, mi: str | None, gpu: GPU,
                         rationale_pass: bool = True, eager: bool = False) -> int | None:
    """The fewest micro-batches per optimizer step (``train.grad_accum_steps``, with
    ``train.batch_size`` divided by it) whose peak fits ``gpu``; None when even one example does not."""
    for k in range(1, batch + 1):
        if batch % k:
            continue
        est = memory(s, n.src_max, n.label_max, n.rationale_max, batch // k, precision, mi, rationale_pass, eager=eager)
        if fits(est["total"], gpu):
            return k
    return None


def gib(x: float) -> str:
    return f"{x / 2**30:.1f} GiB" if x >= 2**30 / 10 else f"{x / 2**20:.0f} MiB"

