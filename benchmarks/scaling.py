"""Data-parallel scaling: Ray Train workers against 1 worker
and against the machine's own ceiling, plain processes without Ray.

    python benchmarks/scaling.py [--steps 150] [--batch 32] [--accum 1] [--workers 1 2] [--rounds 5] [--ceiling]
                                 [--beside-ray] [--ddp] [--lean] [--nice0] [--cpu-split] [--out BENCHMARKS.md] [overrides ...]

Each Ray run is ``mmi-ray train configs/tiny_builtin.yaml`` (``train.run_training``: a Ray Train run
on a local Ray) with ``batch`` examples per worker per step (weak scaling: 2 workers do twice the
examples per step). With ``--ceiling``, k plain processes (no Ray, no DDP: the same loop, one
thread each) run at once, their examples/s summed: the most k workers could reach here. Throughput
is training examples/s from the loop's own timers (evaluation and start-up excluded), over every
evaluation interval after the first (warm-up). With ``--beside-ray``, the plain processes also run
while an idle local Ray (head, dashboard, raylet) is up: the share of the gap that Ray's own
processes take on a small machine, apart from what data parallelism (DDP) costs. With ``--ddp``,
k plain processes train one model data-parallel (DDP over gloo on loopback, as Ray Train sets it
up) without Ray: Ray Train against it is Ray's own cost, it against independent processes is what
DDP costs. With ``--lean``, Ray Train also runs on a local Ray started with Ray's periodic background
work turned down (``LEAN``: metrics export, event stats, the dashboard's and Train's polls), beside
one on Ray's own settings: what that background work costs the training (Ray restarts between the
two kinds of run; on 2 cores, 2026-12-03: within the noise, so mmi-ray keeps Ray's settings). With
``--nice0``, Ray Train also runs on a local Ray whose worker processes run at niceness 0, as the
plain processes do (``RAY_worker_niceness``: Ray starts its workers at 15, below its own daemons,
so a daemon that wakes takes a core from a Train worker at once; on 2 cores, 2026-12-03: no
difference, so mmi-ray keeps Ray's niceness). With ``--cpu-split``, each Ray Train run with the most workers is watched between its
first and its second-to-last report (start-up and teardown left out): every process's CPU time over
that window, grouped by role (Train workers, Ray Train's helper actors, dashboard, agents, GCS and
raylet, idle workers, this driver, the rest of the machine), says where the machine's cores went
while Ray Train trained. Every side runs once per round, the order shuffled per round; ratios are taken
within a round and printed as median [min, max] over rounds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
from pathlib import Path

from bench_out import report_figures, spread

from mmi_ray.config import load_config
from mmi_ray.layout import read_metrics
from mmi_ray.train import run_training

REPO = Path(__file__).resolve().parents[1]
# --lean: Ray's periodic background work, turned down (Ray 2.60's own values in the comments)
LEAN = {
    "RAY_enable_metrics_collection": "0",  # Prometheus metrics from every Ray process (on)
    "RAY_event_stats": "0",  # event-loop statistics (on)
    "REPORTER_UPDATE_INTERVAL_MS": "30000",  # the dashboard agent's node and process stats (5,000)
    "METRICS_RECORD_INTERVAL_S": "60",  # the dashboard head's own metrics record (5)
    "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "60",  # Ray Train's preemption poll (5)
}
# --nice0: Ray starts its worker processes (Train workers, Tune trials, helper actors) at niceness 15,
# below its own daemons (GCS, raylet, dashboard, agents) at 0; the plain processes run at 0
NICE0 = {"RAY_worker_niceness": "0"}
SETTINGS = {"lean": LEAN, "nice0": NICE0}  # a Ray started with other settings: what each side sets
SETTING_KEYS = tuple(k for env in SETTINGS.values() for k in env)
LABELS = {"lean": "on a local Ray with its background work turned down",
          "nice0": "on a local Ray whose workers run at niceness 0 (Ray's default: 15)"}


def _config(args, *extra: str):
    return load_config(REPO / "configs" / "tiny_builtin.yaml", [
        "scaling.cpus_per_worker=1", f"train.batch_size={args.batch}", f"train.grad_accum_steps={args.accum}",
        f"train.max_steps={args.steps}", f"train.eval_every={args.eval_every}", "data.builtin.num_valid=30",
        *extra, *args.overrides])


def _rate(lines: list[dict], examples_per_step: int) -> tuple[float, float]:
    """(examples/s, s/step) from metrics lines, leaving out the first interval (warm-up)."""
    first = lines[0] if len(lines) > 1 else {"train_time_s": 0.0, "step": 0}
    seconds = lines[-1]["train_time_s"] - first["train_time_s"]  # train_time_s is cumulative in-loop time
    steps = lines[-1]["step"] - first["step"]
    return steps * examples_per_step / seconds, seconds / steps


ROLES = (  # (role, substrings of a process's command line), first match wins
    ("Ray Train workers", ("RayTrainWorker",)),
    ("Ray Train's helper actors", ("TrainController", "PlacementGroupCleaner", "SynchronizationActor",
                                   "DatasetManager", "PreemptionWatcher", "AutoscalingCoordinator")),
    ("dashboard (head and its modules)", ("dashboard/dashboard.py", "ray-dashboard-")),
    ("agents and monitors", ("DashboardAgent", "RuntimeEnvAgent", "runtime_env/agent", "dashboard/agent.py",
                             "log_monitor.py", "autoscaler/_private/monitor.py")),
    ("GCS and raylet", ("gcs_server", "raylet")),
    ("idle Ray workers", ("ray::IDLE",)),
)
DRIVER, REST = "this driver (the benchmark process)", "the rest of the machine (kernel, other processes)"


def role(cmdline: str, is_driver: bool = False) -> str:
    """Which part of a Ray Train run a process is, from its command line."""
    if is_driver:
        return DRIVER
    for name, marks in ROLES:
        if any(m in cmdline for m in marks):
            return name
    return REST


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """``{pid: (command line, CPU seconds so far)}`` of every process on the machine."""
    import psutil

    out = {}
    for p in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is not None:
            out[p.pid] = (" ".join(p.info["cmdline"] or []) or p.info["name"] or "", t.user + t.system)
    return out


def split_cpu(before: dict, after: dict, seconds: float, driver_pid: int) -> dict[str, float]:
    """Percent of one core each role used between two snapshots ``seconds`` apart, each process by
    its role at the end (an idle worker that became a Train worker counts as one). A process that
    started inside the window counts from zero; one that ended inside it is not seen (its share goes
    uncounted, so the shares can sum to less than what the machine did)."""
    used: dict[str, float] = {name: 0.0 for name, _ in ROLES} | {DRIVER: 0.0, REST: 0.0}
    for pid, (cmd, cpu) in after.items():
        start = before[pid][1] if pid in before else 0.0
        used[role(cmd, pid == driver_pid)] += max(0.0, cpu - start) / seconds * 100
    return used


def _watch(run_dir: Path, first: int, last: int, out: dict, done) -> None:
    """CPU split of every process between the run's report number ``first`` and ``last`` (records of
    its metrics.jsonl); leaves ``out`` empty when the run ends before the window closes."""
    import os
    import time

    while len(read_metrics(run_dir)) < first:
        if done.wait(0.2):
            return
    before, t0 = cpu_snapshot(), time.monotonic()
    while len(read_metrics(run_dir)) < last:
        if done.wait(0.2):
            return
    out.update(split_cpu(before, cpu_snapshot(), time.monotonic() - t0, os.getpid()))
    out["window_s"] = time.monotonic() - t0
    out["worker_niceness"] = train_worker_niceness()


def train_worker_niceness() -> list[int]:
    """The niceness of every Ray Train worker process running now (what the scheduler gives them)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline", "name", "nice"]):
        if role(" ".join(p.info["cmdline"] or []) or p.info["name"] or "") == ROLES[0][0]:
            out.append(p.info["nice"])
    return sorted(out)


def ray_settings(kind: str, saved: dict) -> None:
    """Set the environment a local Ray is started with: ``SETTINGS[kind]`` ("lean", "nice0") and,
    for every other key, the values ``saved`` before this script changed them (unset: Ray's own)."""
    import os

    mine = SETTINGS.get(kind, {})
    for key in SETTING_KEYS:
        if key in mine:
            os.environ[key] = mine[key]
        elif saved.get(key) is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved[key]


def throughput(workers: int, args, storage: str, watch: bool = False, name: str = "scaling") -> dict:
    import threading

    cfg = _config(args, f"scaling.num_workers={workers}", f"run.storage_path={storage}", f"run.name={name}-{workers}w")
    split, done = {}, threading.Event()
    if watch:  # between the first report (warm-up over) and the second-to-last (before teardown)
        last = max(2, args.steps // args.eval_every - 1)
        t = threading.Thread(target=_watch, args=(Path(storage) / f"{name}-{workers}w", 1, last, split, done), daemon=True)
        t.start()
    try:
        summary = run_training(cfg, verbose=False)
    finally:
        done.set()
    lines = read_metrics(summary["run_dir"])
    rate, step_s = _rate(lines, args.batch * args.accum * workers)
    return {"workers": workers, "examples_per_s": rate, "step_s": step_s, "cpu_split": split}


def _alone(args, q) -> None:
    """One in-process loop (no Ray, no DDP): examples/s after the first evaluation interval."""
    from mmi_ray.recipe import run_loop
    from mmi_ray.worker import local_env

    lines: list[dict] = []
    run_loop(_config(args), local_env(lambda m, _c: lines.append(m)))
    q.put(_rate(lines, args.batch * args.accum)[0])


def _ddp_rank(args, rank: int, world: int, port: int, q) -> None:
    """Rank ``rank`` of a plain data-parallel job: the same loop, DDP over gloo on loopback, no Ray."""
    import torch
    import torch.distributed as dist

    from mmi_ray.recipe import run_loop
    from mmi_ray.worker import WorkerEnv

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    lines: list[dict] = []
    env = WorkerEnv(rank, world, torch.device("cpu"), lambda: None, lambda m, _c: lines.append(m),
                    lambda m: torch.nn.parallel.DistributedDataParallel(m))
    try:
        run_loop(_config(args), env)
    finally:
        dist.destroy_process_group()
    if rank == 0:  # examples/s of the whole job (every rank runs the same steps)
        q.put(_rate(lines, args.batch * args.accum * world)[0])


def _spawn(target, arg_tuples: list[tuple], results: int) -> list:
    """Start one spawned process per argument tuple (each gets a result queue as its last argument),
    collect ``results`` results, join them all."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, q)) for a in arg_tuples]
    for p in procs:
        p.start()
    out = [q.get() for _ in range(results)]
    for p in procs:
        p.join()
    return out


def plain_ddp(k: int, args) -> float:
    """Examples/s of ``k`` plain processes training one model data-parallel (torch.distributed,
    gloo, as Ray Train sets it up) without Ray: what DDP itself costs here, apart from Ray."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return _spawn(_ddp_rank, [(args, r, k, port) for r in range(k)], results=1)[0]  # rank 0 reports


def ceiling(k: int, args) -> float:
    """Summed examples/s of ``k`` independent single-thread loops running at once: what this
    machine allows k workers without any communication or Ray processes."""
    return sum(_spawn(_alone, [(args,)] * k, results=k))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step (one all-reduce each step)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (at least 5 for a figure)")
    ap.add_argument("--ceiling", action="store_true",
                    help="also run as many plain processes at once without Ray (the machine's own limit)")
    ap.add_argument("--beside-ray", action="store_true",
                    help="also run the plain processes while an idle local Ray runs (what Ray's own processes cost)")
    ap.add_argument("--ddp", action="store_true",
                    help="also run the same data-parallel job in plain processes (DDP over gloo) without Ray")
    ap.add_argument("--lean", action="store_true",
                    help="also run Ray Train on a local Ray with Ray's periodic background work turned down "
                         "(what that work costs the training); Ray restarts between the two kinds of run")
    ap.add_argument("--nice0", action="store_true",
                    help="also run Ray Train on a local Ray whose worker processes run at niceness 0 like the plain "
                         "processes (Ray starts them at 15, below its own daemons); Ray restarts between kinds")
    ap.add_argument("--cpu-split", action="store_true",
                    help="watch each Ray Train run with the most workers in its steady state: the CPU of every "
                         "process, by role (needs psutil, the dev extra)")
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    if args.cpu_split and args.steps // args.eval_every < 3:
        ap.error("--cpu-split needs at least 3 reports per run (steps / eval-every >= 3): the window runs from "
                 "the first to the second-to-last")
    sides = [("ray", w) for w in args.workers] + ([("plain", w) for w in args.workers] if args.ceiling else [])
    sides += [("beside", w) for w in args.workers if w > 1] if args.beside_ray else []
    sides += [("ddp", w) for w in args.workers if w > 1] if args.ddp else []
    sides += [("lean", w) for w in args.workers] if args.lean else []
    sides += [("nice0", w) for w in args.workers] if args.nice0 else []
    ray_kinds = ("ray", *SETTINGS)
    rates: dict[tuple[str, int], list[float]] = {k: [] for k in sides}
    step_s: dict[tuple[str, int], list[float]] = {k: [] for k in sides}
    splits: dict[str, list[dict]] = {k: [] for k in ray_kinds}
    rng = random.Random(0)
    import os

    import ray

    ours = not ray.is_initialized()  # else a Ray someone else started (a test's shared head): leave it be
    if (args.lean or args.nice0) and not ours:
        ap.error("--lean and --nice0 restart Ray with other settings: run them where no Ray is up in this process")
    saved, settings = {key: os.environ.get(key) for key in SETTING_KEYS}, None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kind, w in rng.sample(sides, len(sides)):
                want = kind if kind in SETTINGS else "ray"
                if ours and ray.is_initialized() and (kind in ("plain", "ddp") or want != settings):
                    ray.shutdown()  # no idle Ray beside the plain processes; a restart to change settings
                if not ray.is_initialized():
                    ray_settings(want, saved)
                    settings = want
                if kind == "beside" and not ray.is_initialized():
                    from mmi_ray.ray_init import init_ray

                    init_ray()  # as a Ray Train run starts it, left idle while the plain processes run
                if kind in ray_kinds:
                    # a folder of its own: a finished run of the same config in the same storage is reused
                    row = throughput(w, args, str(Path(tmp) / f"r{r}-{kind}"), name=f"scaling-{kind}",
                                     watch=args.cpu_split and w == max(args.workers))
                    rates[kind, w].append(row["examples_per_s"])
                    if row["cpu_split"]:
                        splits[kind].append(row["cpu_split"])
                    step_s[kind, w].append(row["step_s"])
                elif kind == "ddp":
                    rates[kind, w].append(plain_ddp(w, args))
                else:
                    rates[kind, w].append(ceiling(w, args))
    if ours and ray.is_initialized():
        ray.shutdown()
    ray_settings("ray", saved)
    base = ("ray", args.workers[0])
    rows = []
    for kind, w in sides:
        ratio = [a / b for a, b in zip(rates[kind, w], rates[base])]
        row = {"side": kind, "workers": w, "examples_per_s": statistics.median(rates[kind, w]), "runs": rates[kind, w],
               "vs_base": ratio}
        if kind in ray_kinds:
            row["step_s"] = statistics.median(step_s[kind, w])
        if kind != "plain" and ("plain", w) in rates:
            row["vs_plain"] = [a / b for a, b in zip(rates[kind, w], rates["plain", w])]
        if kind in ray_kinds and ("ddp", w) in rates:
            row["vs_ddp"] = [a / b for a, b in zip(rates[kind, w], rates["ddp", w])]
        rows.append(row)
    per = f"{args.batch} examples" if args.accum == 1 else f"{args.accum} micro-batches of {args.batch} examples"
    head = (f"tiny T5 (configs/tiny_builtin.yaml), {per} per worker per step, 1 CPU (1 thread) per "
            f"worker, steps {args.eval_every + 1}-{args.steps}; {args.rounds} interleaved rounds (order shuffled per "
            f"round); examples/s: median over rounds; ratios within a round, median [min, max] over rounds"
            + ("" if args.rounds >= 5 else " (fewer than 5 rounds: a smoke run, not a figure)"))
    ddp_col = any("vs_ddp" in r for r in rows)
    lines = [head, "", f"| run | examples/s | vs Ray {args.workers[0]} worker(s) | vs as many plain processes |"
             + (" vs the same DDP job without Ray |" if ddp_col else ""), "|---|---|---|---|" + ("---|" if ddp_col else "")]
    for row in rows:
        name = {"ray": f"Ray Train, {row['workers']} worker(s)",
                **{k: f"Ray Train, {row['workers']} worker(s), {label}" for k, label in LABELS.items()},
                "plain": f"{row['workers']} plain process(es) at once, no Ray",
                "beside": f"{row['workers']} plain process(es) at once beside an idle local Ray",
                "ddp": f"{row['workers']} plain processes, one model data-parallel (DDP, gloo), no Ray"}[row["side"]]
        vs_plain = f"**{spread(row['vs_plain'])}**" if "vs_plain" in row else ""
        vs_ddp = (f" **{spread(row['vs_ddp'])}** |" if "vs_ddp" in row else " |") if ddp_col else ""
        lines.append(f"| {name} | {row['examples_per_s']:.1f} | {spread(row['vs_base'])}x | {vs_plain} |{vs_ddp}")
    if args.cpu_split:
        for kind in [k for k in ray_kinds if (k, max(args.workers)) in rates]:
            lines += ["", *split_table(splits[kind], max(args.workers), kind=kind)]
            next(r for r in rows if r["side"] == kind and r["workers"] == max(args.workers))["cpu_split"] = splits[kind]
    report_figures(lines, args.out, "scaling.py", argv, "Data-parallel scaling")
    return rows


def split_table(splits: list[dict], workers: int, kind: str = "ray") -> list[str]:
    """Markdown lines: each role's share of the machine while Ray Train trained, median [min, max]
    over the watched runs."""
    import os

    if not splits:
        return [f"CPU split: no Ray Train run with {workers} worker(s) reached its second-to-last report "
                "while watched (too few steps?)"]
    cores = os.cpu_count() or 1
    window = statistics.median(s["window_s"] for s in splits)
    on = f" {LABELS[kind]}" if kind in LABELS else ""
    nice = sorted({n for s in splits for n in s.get("worker_niceness", [])})
    out = [f"Where the {cores} cores went while Ray Train trained with {workers} worker(s){on}: CPU time of every process "
           f"from the run's first report to its second-to-last (median window {window:.0f} s; {len(splits)} run(s)), "
           "by role; % of one core, median [min, max] over runs"
           + (f" (Train workers' niceness: {', '.join(map(str, nice))})" if nice else ""),
           "", "| role | % of one core | share of the machine |", "|---|---|---|"]
    for name in [n for n, _ in ROLES] + [DRIVER, REST]:
        vals = [s[name] for s in splits]
        out.append(f"| {name} | {spread(vals, 1)} | {statistics.median(vals) / cores:.1f}% |")
    total = [sum(s[n] for n, _ in ROLES) + s[DRIVER] + s[REST] for s in splits]
    out.append(f"| all seen | {spread(total, 1)} | {statistics.median(total) / cores:.1f}% |")
    return out


if __name__ == "__main__":
    main()
