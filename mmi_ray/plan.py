"""``mmi-ray plan SPEC --cluster CLUSTER.yaml``: what a sweep will ask of a cluster, before it runs.

Resources per trial, trials at once, nodes of each type, expected GPU-hours (with and without
ASHA's early stopping) and cost, and warnings. Pure arithmetic on the two YAMLs and a price table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import read_yaml
from .errors import ConfigError
from .sizing import (
    ASSUMED_MFU,
    EAGER_SCORES,
    GPU,
    data_lengths,
    gib,
    gpu_of_instance,
    memory,
    micro_batches_to_fit,
    precision_on,
    shape_of,
    step_flops,
)
from .sizing import (
    step_time as flops_step_time,
)
from .storage import is_uri
from .sweep.spec import LoadedSweep

PRICES = Path(__file__).resolve().parents[1] / "cluster" / "prices.yaml"
CPU_STEP_TIME = 0.05
"""Assumed seconds per step of a CPU sweep (the tiny preset on 2 cores): CPU sweeps are not priced by FLOPs."""


@dataclass
class NodeType:
    name: str
    cpus: float
    gpus: float
    max_workers: int
    instance: str
    spot: bool
    custom: dict = field(default_factory=dict)
    min_workers: int = 0


@dataclass
class Plan:
    lines: list[str]
    warnings: list[str]
    trials_at_once: int
    nodes: dict[str, int]
    gpu_hours_full: float
    gpu_hours_asha: float
    cost_full: float | None
    cost_asha: float | None


def node_types(cluster: dict) -> tuple[dict[str, NodeType], str]:
    provider = cluster.get("provider", {}).get("type", "")
    out = {}
    for name, nt in (cluster.get("available_node_types") or {}).items():
        res = nt.get("resources") or {}
        cfg = nt.get("node_config") or {}
        instance = cfg.get("InstanceType") or cfg.get("machineType") or "?"
        spot = bool(cfg.get("InstanceMarketOptions")) or any(
            s.get("preemptible") for s in (cfg.get("scheduling") or []) if isinstance(s, dict))
        out[name] = NodeType(name, float(res.get("CPU", 0)), float(res.get("GPU", 0)),
                             int(nt.get("max_workers", 0)), instance, spot,
                             {k: v for k, v in res.items() if k not in ("CPU", "GPU")}, int(nt.get("min_workers", 0)))
    return out, provider


def asha_expected_steps(max_t: int, grace: int, eta: float) -> float:
    """Expected steps per trial under ASHA when a 1/eta share survives each rung."""
    rungs = []
    r = grace
    while r < max_t:
        rungs.append(r)
        r = int(r * eta)
    rungs.append(max_t)
    total, prev = 0.0, 0
    for k, rung in enumerate(rungs):
        total += (rung - prev) * eta ** (-k)
        prev = rung
    return total


@dataclass
class Demand:
    """What one trial of the spec asks of the cluster."""

    seeds: int
    gpus_per_worker: float  # 0 on CPU; a share below 1: several workers on one GPU
    run_gpus: float
    trial_gpus: float
    trial_cpus: float

    @classmethod
    def of(cls, spec) -> Demand:
        r, k = spec.resources, len(spec.seeds)
        share = r.gpu_share()
        return cls(k, share, r.num_workers * share, k * r.num_workers * share, k * r.num_workers * r.cpus_per_worker)


@dataclass
class Budget:
    """Steps, GPU-hours and money of the sweep (without early stopping and expected with ASHA)."""

    steps_full: int
    steps_asha: float
    run_hours_asha: float
    gpu_full: float
    gpu_asha: float
    confirm_runs: int
    confirm_gpu_hours: float
    cost_full: float | None
    cost_asha: float | None


def make_plan(sweep: LoadedSweep, cluster: dict, cluster_name: str, step_time: float | None = None,
              prices: dict | None = None) -> Plan:
    """How the sweep would run on ``cluster`` (a Ray cluster launcher YAML, read): trials at once at
    the cluster's maximum size, the nodes that holds, hours and cost, and what to fix first."""
    spec, base = sweep.spec, sweep.base
    types, provider = node_types(cluster)
    head = cluster.get("head_node_type")
    workers = {n: t for n, t in types.items() if n != head}
    price_table = (prices or {}).get(provider, {})

    def price(t: NodeType) -> float | None:
        p = price_table.get(t.instance) or {}
        return p.get("spot" if t.spot else "on_demand", p.get("on_demand"))

    need = Demand.of(spec)
    at_once = _trials_at_once(spec, need, workers)
    nodes, packed = _pack_nodes(spec.resources, need, at_once * need.seeds, workers, price)
    # the step time from FLOPs on the GPU the sweep's nodes carry (sizing.py)
    gpu = next((g for n in [*nodes, *workers] if (g := gpu_of_instance(types[n].instance))), None) \
        if need.gpus_per_worker else None
    est = estimate(base, gpu, step_time, gpu_sweep=bool(need.gpus_per_worker), share=need.gpus_per_worker or 1.0)
    budget = _budget(spec, base, need, est.step_time, at_once, nodes, types, head, price)
    warnings = [*spec.search_advice(), *_placement_warnings(spec, need, at_once, workers), *est.warnings,
                *_setup_warnings(spec, base, nodes, packed, types, workers, head)]
    if nodes and budget.cost_full is None:
        warnings.append("no price for some node types in cluster/prices.yaml: cost not estimated")
    lines = _render(spec, cluster_name, provider, need, at_once, nodes, types, workers, est, budget)
    return Plan(lines, warnings, at_once, nodes, budget.gpu_full, budget.gpu_asha, budget.cost_full, budget.cost_asha)


def _trials_at_once(spec, need: Demand, workers: dict[str, NodeType]) -> int:
    """How many trials fit the worker nodes at their maximum size (at most ``max_concurrent_trials``)."""
    r = spec.resources
    runs_fit = 0
    for t in workers.values():
        per_node = math.inf
        if need.gpus_per_worker:
            per_node = min(per_node, _fits(t.gpus, need.gpus_per_worker))
        if r.cpus_per_worker:
            per_node = min(per_node, t.cpus // r.cpus_per_worker)
        runs_fit += (per_node * t.max_workers) // r.num_workers if per_node != math.inf else 0
    at_once = min(spec.num_trials, int(runs_fit // need.seeds) if need.seeds else 0)
    return min(at_once, spec.max_concurrent_trials) if spec.max_concurrent_trials else at_once


def _pack_nodes(r, need: Demand, runs: int, workers: dict[str, NodeType], price) -> tuple[dict[str, int], dict[str, int]]:
    """(nodes of each type at the peak, seed runs one node of each type holds): ``runs`` seed runs
    on the cheapest-per-GPU types first."""
    nodes: dict[str, int] = {}
    packed: dict[str, int] = {}
    for t in sorted(workers.values(), key=lambda t: (price(t) or 1e9) / max(t.gpus, 1)):
        if runs <= 0:
            break
        per_node = (_fits(t.gpus, need.gpus_per_worker) if need.gpus_per_worker
                    else t.cpus // max(r.cpus_per_worker, 1e-9))
        runs_per_node = per_node // r.num_workers
        packed[t.name] = runs_per_node
        if runs_per_node <= 0:
            continue
        n = min(t.max_workers, math.ceil(runs / runs_per_node))
        nodes[t.name] = int(n)
        runs -= n * runs_per_node
    return nodes, packed


def _budget(spec, base, need: Demand, st: float, at_once: int, nodes: dict[str, int], types: dict[str, NodeType],
            head: str | None, price) -> Budget:
    """Steps per run, GPU-hours and cost of the search (and of its confirmation runs) at ``st``
    seconds a step."""
    k = need.seeds
    steps_full = base.train.max_steps
    steps_asha = (asha_expected_steps(steps_full, spec.scheduler.grace_period, spec.scheduler.reduction_factor)
                  if spec.scheduler.type == "asha" else steps_full)
    run_hours_full = spec.num_trials * k * steps_full * st / 3600
    run_hours_asha = spec.num_trials * k * steps_asha * st / 3600
    gpu_per_run = max(need.run_gpus, 0)
    gpu_full, gpu_asha = run_hours_full * gpu_per_run, run_hours_asha * gpu_per_run
    c = spec.confirm  # confirmation runs: at most top_k + 2 arms, each on every fresh seed, full budget
    confirm_runs = (c.top_k + 2 * c.baselines) * len(c.seeds) if c is not None else 0
    cost_full = cost_asha = None
    if nodes and at_once and all(price(types[n]) is not None for n in nodes):
        used_gpus = sum(types[n].gpus * c for n, c in nodes.items())
        per_gpu_hour = sum(price(types[n]) * c for n, c in nodes.items()) / max(used_gpus, 1e-9)
        head_price = (price(types[head]) if head in types else None) or 0
        cost_full = gpu_full * per_gpu_hour + head_price * run_hours_full / max(at_once * k, 1)
        cost_asha = gpu_asha * per_gpu_hour + head_price * run_hours_asha / max(at_once * k, 1)
    return Budget(steps_full, steps_asha, run_hours_asha, gpu_full, gpu_asha, confirm_runs,
                  confirm_runs * steps_full * st / 3600 * gpu_per_run, cost_full, cost_asha)


def _placement_warnings(spec, need: Demand, at_once: int, workers: dict[str, NodeType]) -> list[str]:
    """Trials that cannot start, or start fewer at once than the cluster holds."""
    r, out = spec.resources, []
    if 0 < need.gpus_per_worker < 1 and not r.driver_resource:
        out.append("GPUs shared by trials with trial drivers unpinned: a driver's CPU share on a GPU node can take "
                   "a worker's place there; set resources.driver_resource (e.g. mmi_driver, on the head)")
    if need.gpus_per_worker and all(t.gpus < need.gpus_per_worker for t in workers.values()):
        out.append("a worker needs a GPU (resources.use_gpu) but no worker node type has one")
    if need.trial_gpus and need.trial_gpus > sum(t.gpus * t.max_workers for t in workers.values()):
        out.append(f"one trial needs {need.trial_gpus:g} GPUs ({need.seeds} seeds x {r.num_workers} workers), more "
                   f"than the cluster can ever have: it will never start")
    if at_once == 0:
        out.append("no trial fits this cluster at its maximum size")
    return out


def _setup_warnings(spec, base, nodes: dict[str, int], packed: dict[str, int], types: dict[str, NodeType],
                    workers: dict[str, NodeType], head: str | None) -> list[str]:
    """Driver placement, storage and CPU training on a cluster: what would go wrong or run slow."""
    r, out = spec.resources, []
    head_res = (types.get(head).custom if head in types else {})
    if r.driver_resource and r.driver_resource not in head_res:
        out.append(f"the spec pins drivers to resource '{r.driver_resource}' but the head "
                   "node type does not carry it: trials will never start")
    if not r.driver_resource:
        out.append("no driver resource: Tune trial drivers may land on spot workers and die with them "
                   "(set resources.driver_resource: mmi_driver)")
    if not is_uri(spec.storage_path) and not spec.storage_path.startswith("/mnt"):
        out.append(f"storage_path '{spec.storage_path}' is local: on a multi-node cluster use shared storage "
                   "(s3://, gs://, or an NFS mount)")
    if not r.use_gpu and r.cpus_per_worker:
        # Ray's own processes (raylet, dashboard agent, Ray Train's controller and helper actors) take
        # their CPU from workers that hold every core (BENCHMARKS.md, "Data-parallel scaling")
        full = [n for n in nodes if packed[n] * r.num_workers * r.cpus_per_worker >= types[n].cpus]
        if full:
            out.append(f"CPU training takes every CPU of {', '.join(full)}: Ray's own processes then share the "
                       "workers' cores and slow them; leave a core free: declare one CPU fewer in the node type's "
                       "resources" + (", or let each worker do more micro-batches per all-reduce "
                                      "(train.grad_accum_steps)" if r.num_workers > 1 else "")
                       + " (docs/clusters.md)")
    if not base.scaling.use_gpu and not r.use_gpu and any(t.gpus for t in workers.values()):
        out.append("the spec trains on CPU (resources.use_gpu false) on a GPU cluster")
    return out


def _render(spec, cluster_name: str, provider: str, need: Demand, at_once: int, nodes: dict[str, int],
            types: dict[str, NodeType], workers: dict[str, NodeType], est, b: Budget) -> list[str]:
    """The plan as the console shows it."""
    r, c = spec.resources, spec.confirm
    autoscales = not spec.max_concurrent_trials and any(t.max_workers > t.min_workers for t in workers.values())
    return [
        f"sweep '{spec.name}' on {cluster_name} ({provider})",
        f"  per seed run: {r.num_workers} worker(s) x ({r.cpus_per_worker:g} CPU, {need.gpus_per_worker:g} GPU)",
        f"  per trial: {need.seeds} seed run(s) side by side = {need.trial_cpus:g} CPUs, {need.trial_gpus:g} GPUs "
        f"(+ a driver on '{r.driver_resource or 'any node'}')",
        f"  trials: {spec.num_trials}; at once on this cluster: {at_once}"
        + (" (a sweep on the head reads the cluster's config, ~/ray_bootstrap_config.yaml, and runs as many, "
           "the autoscaler adding nodes for them)" if autoscales else ""),
        "  nodes at peak: " + (", ".join(f"{n} x {c} ({types[n].instance}{', spot' if types[n].spot else ''})"
                                         for n, c in nodes.items()) or "none"),
        *est.lines,
        f"  steps per run: {b.steps_full} (full); {b.steps_asha:.0f} expected with ASHA "
        f"(grace {spec.scheduler.grace_period}, eta {spec.scheduler.reduction_factor:g})"
        if spec.scheduler.type == "asha" else f"  steps per run: {b.steps_full} (no early stopping)",
        f"  GPU-hours: {b.gpu_full:.1f} without early stopping, {b.gpu_asha:.1f} expected",
        (f"  confirmation: up to {b.confirm_runs} runs (({c.top_k} best + {2 * c.baselines} baselines) x "
         f"{len(c.seeds)} fresh seeds, full budget): {b.confirm_gpu_hours:.1f} GPU-hours more") if c is not None
        else "  confirmation: none (no confirm section; `mmi-ray confirm` runs it later)",
        f"  wall time: about {b.run_hours_asha / max(at_once * need.seeds, 1):.1f} h at {at_once} trials at once",
        ("  cost: $" + f"{b.cost_full:,.0f} without early stopping, ${b.cost_asha:,.0f} expected (GPU nodes + head)")
        if b.cost_full is not None else "  cost: unknown (no prices)",
    ]


@dataclass
class Estimate:
    step_time: float
    lines: list[str]
    warnings: list[str]


def _fits(have: float, share: float) -> int:
    """Workers of ``share`` GPU that ``have`` GPUs hold (0.1 x 10 is 1, not 0.999...)."""
    return math.floor(have / share + 1e-9)


def estimate(base, gpu: GPU | None, given: float | None, gpu_sweep: bool = True, share: float = 1.0) -> Estimate:
    """Seconds per optimizer step and peak GPU memory of one seed run of ``base`` on ``gpu``, each with
    where its numbers come from; what cannot be known here is said, and assumed only where needed.
    ``share`` below 1: ``1 / share`` workers (of several trials) hold one GPU, and their memory adds up."""
    t, m = base.train, base.model
    if gpu is None:
        st = given if given is not None else (1.0 if gpu_sweep else CPU_STEP_TIME)
        why = ("given" if given is not None else "assumed: the node types' GPU is not in mmi_ray/sizing.py's table; "
               "measure and pass --step-time" if gpu_sweep else "assumed for a CPU sweep")
        return Estimate(st, [f"  step time: {st:g} s ({why})"], [])
    p = precision_on(t.precision, gpu)
    shape, lengths = shape_of(m), data_lengths(base)
    lines, warnings = [f"  GPU: {gpu.name} ({gpu.memory_gib:g} GiB usable; {p}: train.precision {t.precision})"], []
    if t.precision == "bf16" and not gpu.bf16_native:
        warnings.append(f"train.precision bf16 on {gpu.name}, which only emulates bf16 (slow): use fp32 or auto")
    if shape is None:
        st = given if given is not None else 1.0
        lines.append(f"  step time: {st:g} s ({'given' if given is not None else 'assumed: the shape of ' + m.name + ' is unknown here (not a known name, folder or cached)'})")
        return Estimate(st, lines, warnings)
    examples = t.examples_per_worker_step
    lengths_text = (f"mean tokens {lengths.src:.0f} in / {lengths.label:.0f} label / {lengths.rationale:.0f} rationale"
                    f"{f' x {lengths.padding:g} padding' if lengths.padding != 1 else ''}, from {lengths.source}")
    if given is not None:
        st, how = given, "given"
    else:
        st = flops_step_time(shape, lengths, examples, t.precision, gpu)
        pad = lengths.padding
        flops = step_flops(shape, examples, lengths.src * pad, lengths.label * pad, lengths.rationale * pad)
        peak = gpu.bf16_tflops if p == "bf16" else gpu.fp32_tflops
        how = (f"estimated: {flops / 1e12:.1f} TFLOP a step ({examples} examples, {shape.params() / 1e6:.0f}M "
               f"parameters from {shape.source}; {lengths_text}) at an assumed {ASSUMED_MFU[p]:.0%} of {gpu.name}'s "
               f"{peak:g} TFLOP/s {p} peak; measure with benchmarks/gpu_check.py and pass --step-time")
    lines.append(f"  step time: {st:.3g} s ({how})")
    mi = base.loss.mi_estimator if base.loss.mi_weight > 0 else None
    rationale_pass = base.loss.rationale_weight > 0 or base.loss.mi_weight > 0
    eager = t.deterministic  # on a GPU, deterministic attention is eager (machine.attention_kernel)
    mem = memory(shape, lengths.src_max, lengths.label_max, lengths.rationale_max, t.batch_size, p, mi, rationale_pass,
                 eager=eager)
    parts = ", ".join(f"{k} {gib(v)}" for k, v in mem.items() if k != "total")
    lines.append(f"  GPU memory per worker: about {gib(mem['total'])} of {gpu.memory_gib:g} GiB ({parts}; micro-batch "
                 f"{t.batch_size}, longest {lengths.src_max}/{lengths.label_max}/{lengths.rationale_max} tokens)")
    k = micro_batches_to_fit(shape, lengths, t.batch_size, p, mi, gpu, rationale_pass, eager)
    if k is None:
        warnings.append(f"a run needs about {gib(mem['total'])} of GPU memory, more than {gpu.name}'s "
                        f"{gpu.memory_gib:g} GiB even at one example per micro-batch: a GPU with more memory, or "
                        "shorter model.max_source_length / max_target_length")
    elif k > 1:
        warnings.append(f"a run needs about {gib(mem['total'])} of GPU memory, more than {gpu.name}'s "
                        f"{gpu.memory_gib:g} GiB holds: set train.batch_size: {t.batch_size // k} and "
                        f"train.grad_accum_steps: {k * t.grad_accum_steps} (the same {examples} examples a step)"
                        + _sdpa_hint(shape, lengths, t.batch_size, p, mi, gpu, rationale_pass, mem, k))
    if share < 1:
        together = _fits(1.0, share)
        lines.append(f"  GPU shared: {together} workers per GPU (resources.gpus_per_worker {share:g}): together about "
                     f"{gib(together * mem['total'])} of {gpu.memory_gib:g} GiB (Ray counts the shares; it does not "
                     "split the memory); the step time above is one worker's with the GPU to itself")
        if together * mem["total"] > gpu.memory_gib * 2**30:
            fit = max(1, int(gpu.memory_gib * 2**30 // max(mem["total"], 1)))
            warnings.append(f"{together} workers per GPU need about {gib(together * mem['total'])} of GPU memory, more "
                            f"than {gpu.name}'s {gpu.memory_gib:g} GiB: set resources.gpus_per_worker: "
                            f"{1 / fit:.3g} ({fit} per GPU)" + (" or 1" if fit == 1 else ""))
    return Estimate(st, lines, warnings)


def _sdpa_hint(shape, lengths, batch: int, precision: str, mi, gpu: GPU, rationale_pass: bool, mem: dict,
               k: int) -> str:
    """Where eager attention (train.deterministic) is much of a decoder-only run's memory: what SDPA
    would need instead (runs then not bit-for-bit repeatable on a GPU)."""
    if mem.get(EAGER_SCORES, 0) < mem["total"] / 4:
        return ""
    k2 = micro_batches_to_fit(shape, lengths, batch, precision, mi, gpu, rationale_pass, eager=False)
    fewer = "" if k2 is None or k2 >= k else f", {batch // k2} examples a micro-batch"
    return (f"; or train.deterministic: false: SDPA keeps none of the {gib(mem[EAGER_SCORES])} of eager attention "
            f"probabilities{fewer}, but GPU runs are then not repeatable bit for bit")


def load_cluster(path: str) -> dict:
    cfg = read_yaml(path)
    if "available_node_types" not in cfg:
        raise ConfigError(path, "available_node_types: missing (a Ray cluster-launcher YAML is expected)")
    return cfg


def load_prices(path: Path = PRICES) -> dict:
    return yaml.safe_load(path.read_text()) if path.exists() else {}
