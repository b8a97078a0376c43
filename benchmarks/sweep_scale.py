"""How a sweep's own cost grows with the work, on a simulated cluster.

    python benchmarks/sweep_scale.py [--trials 50 100 200] [--nodes 4] [--out BENCHMARKS.md]

For each trial count, a fresh process starts a simulated cluster on this machine
(``ray.cluster_utils.Cluster``: a head with no CPUs for trials, and ``--nodes`` worker nodes of
1 CPU and one ``sim_gpu`` each, GPUs as a custom resource) and runs a real sweep on it
(``mmi_ray.sweep.run_sweep``: Optuna TPE, our callbacks, the run index, the summary) whose trials are
very short in-process runs (a 1-layer T5 of width 16, 2 optimizer steps) that each hold a
``sim_gpu``: at most one trial per node at a time. It reports, against the trial count:
- driver CPU time per trial (the sweep process's own user+system CPU seconds during ``Tuner.fit``,
  over the trials): Tune's controller, the searcher, callbacks, experiment-state saves (the
  driver's threads included: Ray's core worker and Tune's syncer);
- trials per minute and wall time per trial of ``Tuner.fit``;
- driver memory (the sweep process's peak RSS) and its growth over the sweep (from after the
  imports the sweep needs to its end);
- the size on disk of the sweep's state (Tune's experiment state, searcher state, Optuna's study)
  and of the whole sweep folder.
Goal: per-trial overhead and memory flat within 20% from 50 to 200 trials.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_out import report_figures

REPO = Path(__file__).resolve().parents[1]
TINY_TRIAL = {"model.d_model": 16, "model.d_ff": 32, "model.num_layers": 1, "model.num_heads": 2,
              "data.builtin.num_train": 64, "data.builtin.num_valid": 8, "data.builtin.num_test": 8,
              "train.batch_size": 8}
"""A trial that costs next to nothing (configs/tiny_builtin.yaml shrunk): what a sweep's own cost is
measured with."""


def _spec(folder: Path, trials: int, nodes: int) -> Path:
    spec = {
        "name": f"scale-{trials}",
        "base": str(REPO / "configs" / "tiny_builtin.yaml"),
        "overrides": {**TINY_TRIAL, "train.max_steps": 2, "train.eval_every": 2},
        "search": {"loss.mi_weight": {"type": "uniform", "low": 0.0, "high": 1.0},
                   "loss.rationale_weight": {"type": "uniform", "low": 0.0, "high": 1.0}},
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "num_trials": trials, "seeds": [0], "scheduler": {"type": "none"},
        "max_concurrent_trials": nodes,
        "resources": {"num_workers": 1, "cpus_per_worker": 1, "in_process": True, "worker_resources": {"sim_gpu": 1}},
        "storage_path": str(folder / "results"),
    }
    path = folder / f"scale-{trials}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _size(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def one(trials: int, nodes: int) -> dict:
    """One sweep of ``trials`` trials on a fresh simulated cluster (run in its own process)."""
    import ray
    from ray.cluster_utils import Cluster

    from mmi_ray.sweep import load_sweep, run_sweep

    folder = Path(tempfile.mkdtemp(prefix="mmi-scale-"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True,
                                                             "dashboard_host": "127.0.0.1"})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=1, resources={"sim_gpu": 1})
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        sweep = load_sweep(_spec(folder, trials, nodes), [])
        import optuna  # noqa: F401  what the sweep imports, loaded before the baseline
        import ray.tune.search.optuna  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401

        rss0 = _rss_mb()
        t0 = time.time()
        summary = run_sweep(sweep, verbose=0, rerun=True)
        command = time.time() - t0
        rss1 = _rss_mb()
        sweep_dir = folder / "results" / sweep.spec.name
        state = [p for p in sweep_dir.iterdir() if p.name.startswith(("experiment_state", "searcher-state",
                                                                        "search_gen_state", "tuner.pkl"))]
        return {"trials": trials, "nodes": nodes, "fit_s": summary["wall_time_s"], "command_s": command,
                "completed": summary["status_counts"].get("completed", 0),
                # the driver's own CPU during Tuner.fit: Tune's controller, searcher, callbacks, state saves
                "driver_cpu_s": summary["phases"]["fit_driver_cpu_s"],
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_growth_mb": rss1 - rss0,
                "tune_state_kb": _size(state) / 1024, "optuna_db_kb": _size([sweep_dir / "optuna.db"]) / 1024,
                "sweep_dir_mb": _size(sweep_dir.rglob("*")) / 2**20}
    finally:
        ray.shutdown()
        cluster.shutdown()


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--nodes", type=int, default=4, help="simulated worker nodes (1 CPU, 1 sim_gpu each)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.one is not None:
        print("RESULT " + json.dumps(one(args.one, args.nodes)), flush=True)
        return []
    rows = []
    for n in args.trials:  # each in a fresh process: its memory and CPU are the sweep's alone
        r = subprocess.run([sys.executable, __file__, "--one", str(n), "--nodes", str(args.nodes)],
                           capture_output=True, text=True, cwd=REPO)
        lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
        if r.returncode != 0 or not lines:
            raise RuntimeError(f"sweep of {n} trials failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        rows.append(json.loads(lines[-1][len("RESULT "):]))
    base = rows[0]
    lines = [f"simulated cluster (`ray.cluster_utils.Cluster`): a head without trial CPUs and {args.nodes} worker "
             f"nodes (1 CPU, 1 `sim_gpu` each) on this machine; trials: 2-step in-process runs of a width-16 T5, "
             f"one `sim_gpu` each; Optuna TPE; driver CPU and memory: the sweep process itself", "",
             "| trials | completed | fit wall s | trials/min | driver CPU s per trial | vs first | driver peak RSS MB "
             "| vs first | RSS growth MB | Tune state KB | Optuna DB KB | sweep folder MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = r["driver_cpu_s"] / r["trials"]
        lines.append(f"| {r['trials']} | {r['completed']} | {r['fit_s']:.0f} | {60 * r['trials'] / r['fit_s']:.1f} | "
                     f"{per:.3f} | {per / (base['driver_cpu_s'] / base['trials']):.2f}x | {r['peak_rss_mb']:.0f} | "
                     f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x | {r['rss_growth_mb']:.0f} | "
                     f"{r['tune_state_kb']:.0f} | {r['optuna_db_kb']:.0f} | {r['sweep_dir_mb']:.1f} |")
    report_figures(lines, args.out, "sweep_scale.py", argv, "Sweep cost against trial count (simulated cluster)")
    return rows


if __name__ == "__main__":
    main()
