"""Ready for the first GPU, checked on the CPU: the sizes ``mmi-ray plan`` prices with, the precision
and kernels a GPU run resolves to, evaluation in the training precision, the memory estimate against
what training holds, and the paper sweeps' precision."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from mmi_ray.config import ModelConfig, load_config
from mmi_ray.sizing import (
    GPUS,
    gpu_by_name,
    gpu_of_instance,
    memory,
    micro_batches_to_fit,
    precision_on,
    shape_of,
    step_time,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def test_the_shape_counts_what_transformers_builds():
    """The parameter count plan prices with equals the model transformers builds, for t5-v1_1-base
    (built on the meta device: no memory) and the tiny preset."""
    from transformers import T5Config, T5ForConditionalGeneration

    base = shape_of(ModelConfig(name="google/t5-v1_1-base"))
    config = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12,
                      num_heads=12, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    with torch.device("meta"):
        model = T5ForConditionalGeneration(config)
    assert base.params() == sum(p.numel() for p in model.parameters())
    from mmi_ray.model import build_seq2seq, build_tokenizer

    for positions in (False, True):
        tiny = ModelConfig(d_model=64, num_heads=4, d_ff=128, num_layers=2, abs_positions=positions)
        built = build_seq2seq(tiny, build_tokenizer(tiny), 0)
        assert shape_of(tiny).params() == sum(p.numel() for p in built.parameters())
    assert shape_of(ModelConfig(name="someone/unknown-t5")) is None  # not known, not a folder, not cached


def test_gpus_and_precision_resolve_as_a_run_would():
    assert gpu_of_instance("g5.xlarge").name == "A10G" and gpu_of_instance("g2-standard-48").name == "L4"
    assert gpu_of_instance("p4de.24xlarge").name == "A100-80GB" and gpu_of_instance("m5.2xlarge") is None
    assert gpu_by_name("NVIDIA A100-SXM4-80GB").name == "A100-80GB" and gpu_by_name("Tesla T4").name == "T4"
    assert gpu_by_name("NVIDIA L40S").name == "L40S" and gpu_by_name("NVIDIA H100 80GB HBM3").name == "H100"
    # auto: bf16 where the GPU computes it natively, fp32 where it would emulate it (V100, T4)
    assert precision_on("auto", GPUS["A10G"]) == "bf16" and precision_on("auto", GPUS["V100"]) == "fp32"
    assert precision_on("fp32", GPUS["H100"]) == "fp32"


def test_step_time_follows_precision_gpu_and_lengths():
    """The paper configs were priced with one bf16 step time whatever their precision: the step time
    is FLOPs over the precision's peak, so fp32 costs what the peaks say, and longer data costs more."""
    from mmi_ray.sizing import Lengths

    base = shape_of(ModelConfig(name="google/t5-v1_1-base"))
    short = Lengths(100, 4, 60, 200, 8, 120, 1.05, "test")
    long = Lengths(400, 4, 200, 800, 8, 256, 1.05, "test")
    a100 = GPUS["A100-80GB"]
    bf16, fp32 = step_time(base, short, 64, "bf16", a100), step_time(base, short, 64, "fp32", a100)
    assert fp32 / bf16 == pytest.approx((312 * 0.35) / (19.5 * 0.50))
    assert step_time(base, long, 64, "bf16", a100) > 3 * bf16
    assert step_time(base, short, 64, "bf16", GPUS["H100"]) < bf16


def test_the_paper_sweeps_train_in_bf16_and_the_faithful_variant_in_fp32():
    from mmi_ray.sweep import load_sweep

    for name in ("cqa", "svamp", "anli1", "esnli"):
        assert load_sweep(REPO / "sweeps" / f"paper_{name}.yaml").base.train.precision == "bf16", name
    assert load_sweep(REPO / "sweeps" / "paper_cqa_fp32.yaml").base.train.precision == "fp32"


def test_plan_prices_the_fp32_variant_higher_and_warns_when_memory_does_not_fit():
    from mmi_ray.plan import load_cluster, load_prices, make_plan
    from mmi_ray.sweep import load_sweep

    cluster = load_cluster(str(REPO / "cluster" / "aws-gpu.yaml"))
    dss = str(REPO.parent / "shared" / "data" / "dss" / "datasets")
    bf16 = make_plan(load_sweep(REPO / "sweeps" / "paper_cqa.yaml", [f"overrides.data.data_dir={dss}"]),
                     cluster, "aws", prices=load_prices())
    fp32 = make_plan(load_sweep(REPO / "sweeps" / "paper_cqa_fp32.yaml", [f"overrides.data.data_dir={dss}"]),
                     cluster, "aws", prices=load_prices())
    assert fp32.gpu_hours_full / bf16.gpu_hours_full == pytest.approx((70 * 0.35) / (31.2 * 0.50))
    text = "\n".join(bf16.lines)
    assert "GPU: A10G" in text and "bf16" in text and "step time:" in text and "GPU memory per worker" in text
    # no data here: the config's maximum lengths, said as such, and at those a batch of 64 does not fit
    bound = make_plan(load_sweep(REPO / "sweeps" / "paper_cqa.yaml", ["overrides.data.data_dir=/nowhere"]),
                      cluster, "aws", prices=load_prices())
    assert "an upper bound" in "\n".join(bound.lines)
    fix = [w for w in bound.warnings if "GPU memory" in w]
    assert fix and "train.grad_accum_steps" in fix[0] and "the same 64 examples a step" in fix[0]


def test_the_memory_estimate_is_within_a_fifth_of_what_training_holds():
    """Against the peak resident memory that two AdamW steps add on the CPU, fp32, for shapes where
    the output layer, the batch or the input length dominates."""
    import memory_estimate

    rows = memory_estimate.main(["--small"])
    assert len(rows) == 2
    for r in rows:
        assert 0.8 <= r["ratio"] <= 1.25, r


def test_a_fix_is_named_for_a_run_that_does_not_fit():
    base = shape_of(ModelConfig(name="google/t5-v1_1-base"))
    from mmi_ray.sizing import Lengths

    n = Lengths(1024, 8, 256, 1024, 8, 256, 1.0, "bound")
    assert micro_batches_to_fit(base, n, 64, "bf16", "maxpool", GPUS["A10G"]) > 1
    assert micro_batches_to_fit(base, n, 64, "bf16", "maxpool", GPUS["H200"]) < \
        micro_batches_to_fit(base, n, 64, "bf16", "maxpool", GPUS["A10G"])
    full = memory(base, 1024, 8, 256, 8, "bf16", "maxpool")
    fp32 = memory(base, 1024, 8, 256, 8, "fp32", "maxpool")
    assert fp32["activations"] == pytest.approx(2.0 / 1.6 * full["activations"])  # ACTIVATION_SCALE
    assert memory(base, 128, 8, 64, 8, "bf16", None)["[B, T, V] buffers"] > \
        memory(base, 128, 8, 64, 8, "bf16", "maxpool")["[B, T, V] buffers"]  # token_ce's float32 copies


def test_kernels_and_precision_under_deterministic_on_a_gpu(monkeypatch):
    """With train.deterministic a GPU student attends eagerly (SDPA's memory-efficient backward is not
    deterministic); a CPU keeps SDPA; auto precision is bf16 only on GPUs with native bf16."""
    from mmi_ray.machine import attention_kernel, uses_bf16
    from mmi_ray.model import build_seq2seq, build_tokenizer

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert attention_kernel(True, cuda) == "eager" and attention_kernel(False, cuda) == "sdpa"
    assert attention_kernel(True, cpu) == "sdpa"
    m = ModelConfig(d_model=32, num_heads=2, d_ff=64, num_layers=1)
    assert build_seq2seq(m, build_tokenizer(m), 0, attention_kernel(True, cuda)).config._attn_implementation == "eager"
    # a V100: bf16 "supported" only through emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert not uses_bf16("auto", cuda) and uses_bf16("bf16", cuda) and not uses_bf16("auto", cpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert uses_bf16("auto", cuda)


def test_deterministic_kernels_set_what_torchs_call_sets_without_importing_inductor():
    """In a new process (as a Train worker starts): torch's deterministic flag and warn-only are on,
    torch._inductor is not imported for it (2 s a process), and inductor imported afterwards is
    deterministic too, as after ``torch.use_deterministic_algorithms``."""
    import subprocess

    code = ("import sys, torch\n"
            "from mmi_ray.machine import pin_numerics\n"
            "pin_numerics(1, True, torch.device('cpu'))\n"
            "before = 'torch._inductor' in sys.modules\n"
            "import torch._inductor.config as inductor\n"
            "print(before, torch.are_deterministic_algorithms_enabled(),\n"
            "      torch.is_deterministic_algorithms_warn_only_enabled(), inductor.deterministic)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True", "True"], out


def test_a_bf16_checkpoint_is_loaded_in_fp32(tmp_path):
    """transformers 5 loads a folder in the dtype it was saved in (dtype="auto"): a bf16 folder would
    train with bf16 master weights. Students load in fp32."""
    from mmi_ray.model import build_seq2seq, build_tokenizer
    from mmi_ray.offline_student import build_student

    folder = build_student(tmp_path / "s", ["predict: a b c", "explain: d e f"] * 20, vocab_size=60, d_model=32,
                           num_layers=1, num_heads=2, d_ff=64)
    from transformers import AutoModelForSeq2SeqLM

    AutoModelForSeq2SeqLM.from_pretrained(folder).to(torch.bfloat16).save_pretrained(folder)
    m = ModelConfig(name=str(folder))
    student = build_seq2seq(m, build_tokenizer(m), 0)
    assert {p.dtype for p in student.parameters()} == {torch.float32}


def test_bf16_training_runs_its_backward_outside_autocast_and_evaluates_in_bf16(tmp_path, monkeypatch):
    """The forward passes autocast, the backward does not (as torch asks), and evaluation generates in
    the training precision."""
    from mmi_ray.distill import DistillModule
    from mmi_ray.recipe import run_loop
    from mmi_ray.worker import local_env

    seen = {"backward": set(), "generate": set()}
    backward = torch.Tensor.backward

    def spy_backward(self, *a, **k):
        seen["backward"].add(torch.is_autocast_enabled("cpu"))
        return backward(self, *a, **k)

    predict = DistillModule.predict_labels

    def spy_predict(self, *a, **k):
        seen["generate"].add(torch.is_autocast_enabled("cpu"))
        return predict(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "backward", spy_backward)
    monkeypatch.setattr(DistillModule, "predict_labels", spy_predict)
    cfg = load_config(REPO / "configs" / "tiny_builtin.yaml",
                      tiny_overrides(tmp_path, **{"train.precision": "bf16", "train.max_steps": 4, "train.eval_every": 4}))
    out: list[dict] = []
    run_loop(cfg, local_env(lambda m, _c: out.append(m)))
    assert seen == {"backward": {False}, "generate": {True}} and out[-1]["step"] == 4


def test_the_first_step_confidence_is_what_all_steps_logits_gave():
    """The calibration confidence keeps the first decoding step's logits only; it equals what
    ``output_logits=True`` (every step's [B, V], kept to read the first) gave."""
    from mmi_ray.config import LossConfig
    from mmi_ray.distill import DistillModule
    from mmi_ray.model import build_seq2seq, build_tokenizer

    m = ModelConfig(d_model=32, num_heads=2, d_ff=64, num_layers=1)
    tok = build_tokenizer(m)
    module = DistillModule(build_seq2seq(m, tok, 0), LossConfig(mi_weight=0.0)).eval()
    ids = torch.randint(3, 200, (5, 12))
    mask = torch.ones_like(ids, dtype=torch.bool)
    seq, conf = module.predict_labels(ids, mask, 6)
    ref = module.student.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, num_beams=1,
                                  return_dict_in_generate=True, output_logits=True)
    assert torch.equal(seq, ref.sequences)
    assert torch.equal(conf, ref.logits[0].float().softmax(-1).max(-1).values)


def test_the_fused_backward_writes_a_bf16_gradient_without_a_float32_copy_of_it(monkeypatch):
    """A bf16 student's [B, T, V] gradient is written in bf16 slice by slice (was: a float32 buffer,
    then a bf16 copy of it): the same values as the float32 gradient rounded, at every slice size."""
    from mmi_ray import losses

    torch.manual_seed(0)
    logits32 = torch.randn(6, 5, 300)
    labels = torch.randint(0, 300, (6, 5))
    labels[0, 3:] = losses.IGNORE
    g_pool = torch.randn(6, 300)

    def grads(x):
        x = x.clone().requires_grad_(True)
        ce, pooled = losses.ce_and_maxpool(x, labels)
        (2.0 * ce + (pooled * g_pool).sum()).backward()
        return x.grad

    want = grads(logits32)  # float32, in place
    for chunk in (300 * 5, 300 * 5 * 4, losses.CHUNK_ELEMENTS):  # one example a slice, four, all
        monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk)
        bf = logits32.to(torch.bfloat16)
        got = grads(bf)
        assert got.dtype == torch.bfloat16
        ref = grads(bf.float()).to(torch.bfloat16)  # the float32 computation on the same inputs, rounded
        assert torch.equal(got, ref)
    assert want.dtype == torch.float32


def test_plan_says_when_it_does_not_know_the_gpu():
    """A node type whose instance carries no GPU the table knows: the step time is an assumption,
    said to be one, not a CPU sweep's."""
    import copy

    from mmi_ray.plan import load_cluster, load_prices, make_plan
    from mmi_ray.sweep import load_sweep

    cluster = copy.deepcopy(load_cluster(str(REPO / "cluster" / "aws-gpu.yaml")))
    for name, t in cluster["available_node_types"].items():
        if name != cluster["head_node_type"]:
            t["node_config"]["InstanceType"] = "x9.mystery"
    plan = make_plan(load_sweep(REPO / "sweeps" / "paper_cqa.yaml"), cluster, "aws", prices=load_prices())
    assert any("the node types' GPU is not in mmi_ray/sizing.py's table" in line for line in plan.lines)
