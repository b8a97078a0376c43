"""A sweep on a storage URI against the same sweep on a local folder: the cost per trial slot.

    python benchmarks/storage_overhead.py [SPEC] [--rounds 5] [--out BENCHMARKS.md] [spec overrides ...]
    python benchmarks/storage_overhead.py sweeps/quickstart.yaml --rounds 5     # the quickstart's search

Starts an S3-compatible server on 127.0.0.1 (moto's, the one the tests use; ``--endpoint`` takes a
running one, e.g. MinIO, with credentials from the usual AWS variables) and runs the spec's search
(confirmation left out) in interleaved rounds: local folder then bucket, bucket then local folder,
each a fresh sweep name (nothing reused). Prints, as median [min, max] over the rounds, each
storage's per-slot figure (wall x concurrent trials / summed in-loop training time; 1.0 = every
slot trains all the time) and their ratio, and where a trial's time went: in-loop training,
evaluation, checkpoint writes (uploads on the bucket), metric writes, and the rest (the trial's
start, data and model building, reporting).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
from pathlib import Path

from bench_out import report_figures, spread
from sweep_overhead import one_sweep

REPO = Path(__file__).resolve().parents[1]


def use_s3(endpoint: str | None, bucket: str) -> tuple[object | None, str]:
    """(the server started here or None, its endpoint): moto's S3 server on 127.0.0.1 unless
    ``endpoint`` names a running one; the endpoint in ``AWS_ENDPOINT_URL`` (pyarrow here, and the Ray
    this process starts, read it) and ``bucket`` made if absent."""
    server = None
    if endpoint is None:
        from moto.server import ThreadedMotoServer

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                     "AWS_DEFAULT_REGION": "us-east-1"}.items():
            os.environ.setdefault(k, v)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    if bucket not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=bucket)
    return server, endpoint


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default=str(REPO / "sweeps" / "quickstart.yaml"))
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (at least 5 for a figure)")
    ap.add_argument("--endpoint", default=None, help="a running S3-compatible server (default: start moto's here)")
    ap.add_argument("--bucket", default="mmi-bench")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server: a line per request
    server, args.endpoint = use_s3(args.endpoint, args.bucket)
    runs: dict[str, list[dict]] = {"local": [], "s3": []}
    for i in range(args.rounds):
        order = ("local", "s3") if i % 2 == 0 else ("s3", "local")
        for where in order:
            r = one_sweep(args.spec, args.overrides, None if where == "local" else f"s3://{args.bucket}/results")
            runs[where].append(r)
            print(f"[round {i + 1}] {where}: wall {r['wall_s']:.0f} s, in-loop {r['train_s']:.0f} s, per slot "
                  f"{r['slot_ratio']:.2f}", file=sys.stderr, flush=True)
    if server is not None:
        server.stop()
    first = runs["local"][0]
    n = max(1, first["trials"])
    ratio = [s["slot_ratio"] / loc["slot_ratio"] for s, loc in zip(runs["s3"], runs["local"])]

    def per(where: str, k: str) -> str:
        return f"{statistics.median(r[k] for r in runs[where]) / n:.2f}"

    lines = [f"`{Path(args.spec).name}` {' '.join(args.overrides)}: the search, {first['trials']} trials, "
             f"{first['slots']} at once; {args.rounds} interleaved rounds, median [min, max]; S3: "
             f"{'moto on 127.0.0.1' if server is not None else args.endpoint}"
             + ("" if args.rounds >= 5 else " (fewer than 5 rounds: a smoke run, not a figure)"),
             "", "| figure | local folder | s3:// |", "|---|---|---|"]
    for label, key, digits in (("sweep wall time (`Tuner.fit`), s", "wall_s", 0),
                               ("summed in-loop training time, s", "train_s", 0),
                               ("**per slot: wall x slots / in-loop**", "slot_ratio", 2)):
        lines.append(f"| {label} | {spread([r[key] for r in runs['local']], digits)} | "
                     f"{spread([r[key] for r in runs['s3']], digits)} |")
    lines.append("| per trial, s: in-loop / evaluation / checkpoint writes / metric writes / rest | "
                 + " | ".join(" / ".join(per(w, k) for k in ("train_s", "eval_s", "checkpoint_s", "metrics_write_s",
                                                              "other_s")) for w in ("local", "s3")) + " |")
    lines += ["", f"per slot, s3:// / local folder (same round): **{spread(ratio, 2)}**"]
    report_figures(lines, args.out, "storage_overhead.py", argv, "A sweep on s3:// against a local folder")
    return {"runs": runs, "ratio": ratio}


if __name__ == "__main__":
    main()
