"""How long training waits on checkpoints going to a storage URI: synchronous against asynchronous upload.

    python benchmarks/checkpoint_upload.py [--rounds 3] [--steps 6] [--eval-every 2] [--out BENCHMARKS.md]

A Ray Train run (``mmi-ray train``'s ``run_training``, one CPU worker) of a random student the shape of
t5-v1_1-base (d_model 768, d_ff 2048, 12 + 12 layers, 12 heads; the built-in data's small vocabulary,
so about 200M parameters and a 2-3 GB checkpoint with AdamW's moments) writes a checkpoint at every
evaluation to a bucket on an S3-compatible server on 127.0.0.1 (moto's, as in the tests; ``--endpoint``
takes a running one). ``train.checkpoint_upload`` sync (every worker waits for the upload) against
async (Ray's ``CheckpointUploadMode.ASYNC``: training goes on while it uploads), in interleaved
rounds. Prints, median [min, max] over the rounds: the run's wall time, the loop's own time (training
steps and evaluation), the seconds rank 0 spent in ``ray.train.report`` with a checkpoint (the stall;
all but the last report's), and that stall as a share of the wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench_out import report_figures, spread
from storage_overhead import use_s3

REPO = Path(__file__).resolve().parents[1]
BASE_SHAPE = {"model.d_model": 768, "model.d_ff": 2048, "model.num_layers": 12, "model.num_heads": 12}


def one_run(mode: str, uri: str, steps: int, eval_every: int) -> dict:
    from mmi_ray import storage
    from mmi_ray.config import load_config
    from mmi_ray.layout import METRICS_FILE
    from mmi_ray.train import run_training
    from mmi_ray.worker import CHECKPOINT_TIME

    overrides = {**BASE_SHAPE, "data.builtin.num_train": 200, "data.builtin.num_valid": 8, "data.builtin.num_test": 8,
                 "train.batch_size": 2, "train.max_steps": steps, "train.eval_every": eval_every,
                 "train.log_every": eval_every, "train.keep_checkpoints": 2, "train.checkpoint_upload": mode,
                 "run.storage_path": uri, "run.name": f"ckpt-{mode}-{time.time_ns()}"}
    cfg = load_config(REPO / "configs" / "tiny_builtin.yaml", [f"{k}={v}" for k, v in overrides.items()])
    t0 = time.time()
    summary = run_training(cfg, verbose=False, rerun=True)
    wall = time.time() - t0
    records = [json.loads(x) for x in storage.read_text(storage.join(summary["run_dir"], METRICS_FILE)).splitlines()]
    last = records[-1]
    state = storage.join(summary["run_dir"], Path(last["checkpoint_path"]).name, "state.pt")
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(state)
    t1 = time.time()
    while (size := filesystem.get_file_info(path).size) is None and time.time() - t1 < 300:
        time.sleep(0.5)  # the server may still be assembling the last upload's parts
    visible = time.time() - t1
    loop = last["train_time_s"] + sum(r.get("eval_time_s", 0.0) for r in records)
    return {"wall_s": wall, "loop_s": loop, "stall_s": last[CHECKPOINT_TIME], "share": last[CHECKPOINT_TIME] / wall,
            "checkpoints": len(records), "checkpoint_gb": (size or 0) / 1e9, "visible_after_s": visible}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--endpoint", default=None)
    ap.add_argument("--bucket", default="mmi-ckpt-bench")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server: a line per request
    server, args.endpoint = use_s3(args.endpoint, args.bucket)
    runs: dict[str, list[dict]] = {"sync": [], "async": []}
    for i in range(args.rounds):
        for mode in (("sync", "async") if i % 2 == 0 else ("async", "sync")):
            r = one_run(mode, f"s3://{args.bucket}/runs", args.steps, args.eval_every)
            runs[mode].append(r)
            print(f"[round {i + 1}] {mode}: wall {r['wall_s']:.0f} s, loop {r['loop_s']:.0f} s, stall {r['stall_s']:.1f} s, "
                  f"{r['checkpoints']} checkpoints of {r['checkpoint_gb']:.2f} GB (the last visible {r['visible_after_s']:.0f} s "
                  "after the run)", file=sys.stderr, flush=True)
    if server is not None:
        server.stop()
    first = runs["sync"][0]
    lines = [f"t5-v1_1-base-shaped random student ({first['checkpoints']} checkpoints of {first['checkpoint_gb']:.2f} GB, "
             f"{args.steps} steps, one CPU worker) to s3:// ({'moto on 127.0.0.1' if server is not None else args.endpoint}); "
             f"{args.rounds} interleaved rounds, median [min, max]", "",
             "| figure | sync | async |", "|---|---|---|"]
    for label, key, d in (("run wall time, s", "wall_s", 0), ("loop (steps + evaluation), s", "loop_s", 0),
                          ("training held up by checkpoints, s", "stall_s", 1),
                          ("**share of the wall time**", "share", 3)):
        lines.append(f"| {label} | {spread([r[key] for r in runs['sync']], d)} | {spread([r[key] for r in runs['async']], d)} |")
    report_figures(lines, args.out, "checkpoint_upload.py", argv, "Checkpoint upload: sync against async")
    return runs


if __name__ == "__main__":
    main()
