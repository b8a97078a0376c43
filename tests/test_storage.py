"""Storage URIs on a real S3-compatible server (moto's, on 127.0.0.1): the file helpers every
command reads and writes through, run reuse with its index on the bucket, and the storage a sweep
cannot use, refused in one line before anything starts. No Ray here (the sweeps on S3 are in
tests/test_sweep_s3.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmi_ray import storage
from mmi_ray.config import load_config
from mmi_ray.layout import (
    CHECKPOINT_PATH,
    META_FILE,
    STATE_FILE,
    complete_checkpoints,
    store_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]


def test_files_and_folders_on_a_bucket_read_as_on_a_disk(s3_bucket, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    root = f"{s3_bucket}/results"
    storage.ensure_writable(root)
    storage.write_text(storage.join(root, "a", "x.json"), '{"k": 1}')
    assert storage.exists(f"{root}/a/x.json") and storage.read_text(f"{root}/a/x.json") == '{"k": 1}'
    assert storage.isdir(f"{root}/a") and not storage.isdir(f"{root}/a/x.json")
    assert storage.listdir(root) == ["a"] and storage.listdir(f"{root}/none") == []
    # a checkpoint published to the bucket: whole (meta.json last), the newest `keep` kept
    run = f"{root}/run1"
    for step in (10, 20, 30):
        src = tmp_path / f"c{step}"
        src.mkdir()
        (src / STATE_FILE).write_bytes(bytes([step]) * 1000)
        (src / META_FILE).write_text(json.dumps({"step": step}))
        assert store_checkpoint(src, run, step, keep=2) == f"{run}/checkpoint_{step:07d}"
    assert [storage.basename(c) for c in complete_checkpoints(run)] == ["checkpoint_0000020", "checkpoint_0000030"]
    assert not any("checkpoint_0000010" in k for k in s3_server.keys(run))
    storage.write_text(f"{run}/checkpoint_0000040/{STATE_FILE}", "half")  # an upload cut short: no meta.json
    assert len(complete_checkpoints(run)) == 2
    # read through this machine's cache; a second read downloads nothing
    local = storage.local_dir(f"{run}/checkpoint_0000030")
    assert (local / STATE_FILE).read_bytes() == bytes([30]) * 1000
    before = (local / STATE_FILE).stat().st_mtime_ns
    assert storage.local_dir(f"{run}/checkpoint_0000030") == local and (local / STATE_FILE).stat().st_mtime_ns == before
    # copied by the server, whole
    storage.copy_dir(f"{run}/checkpoint_0000030", f"{root}/run2/checkpoint_0000030")
    assert storage.read_text(f"{root}/run2/checkpoint_0000030/{META_FILE}") == '{"step": 30}'


def test_a_finished_run_on_a_bucket_is_reused_from_the_index_on_the_bucket(s3_bucket, s3_server):
    """The run index lives on the storage: a second run of the same identity under the same URI root
    is adopted (records and checkpoints copied by the server) and trains nothing."""
    from mmi_ray import reuse
    from mmi_ray.layout import METRICS_FILE, REUSED_FILE

    root = f"{s3_bucket}/results"
    cfg = load_config(REPO / "configs" / "tiny_builtin.yaml")
    src = f"{root}/runs/aaa_seed0"
    storage.write_text(f"{src}/config.yaml", cfg.to_yaml())
    storage.write_text(f"{src}/checkpoint_{cfg.train.max_steps:07d}/{STATE_FILE}", "weights")
    storage.write_text(f"{src}/checkpoint_{cfg.train.max_steps:07d}/{META_FILE}", "{}")
    records = [{"step": cfg.train.max_steps, "val_accuracy": 0.5,
                CHECKPOINT_PATH: f"{src}/checkpoint_{cfg.train.max_steps:07d}"}]
    storage.write_text(f"{src}/{METRICS_FILE}", "".join(json.dumps(r) + "\n" for r in records))
    index = reuse.index_root(root)
    ident = reuse.register(src, index)
    assert ident is not None and any(k.endswith(f"run_index/{ident}.json") for k in s3_server.keys(root))
    dst = f"{root}/runs/bbb_seed0"
    note = reuse.adopt(cfg, dst, index, allow_partial=False)
    assert note is not None and note["from"] == src and reuse.reused_from(dst) == src
    moved = json.loads(storage.read_text(f"{dst}/{METRICS_FILE}").splitlines()[0])
    assert moved[CHECKPOINT_PATH] == f"{dst}/checkpoint_{cfg.train.max_steps:07d}"
    assert storage.read_text(f"{moved[CHECKPOINT_PATH]}/{STATE_FILE}") == "weights"
    assert storage.exists(f"{dst}/{REUSED_FILE}")
    assert reuse.adopt(cfg, dst, index, allow_partial=False) is None  # it has records: nothing to adopt


@pytest.mark.parametrize("case", ["file", "no-bucket", "no-credentials", "unreachable"])
def test_storage_a_sweep_cannot_use_is_refused_in_one_line_before_anything_starts(case, s3_server, s3_bucket, tmp_path):
    """A file:// URI, a bucket that does not exist, no credentials, an endpoint that does not answer:
    one line naming the key and the URI, exit 2, in seconds, and no Ray started (no trial)."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(s3_server.env)
    storage_path, expected = f"{s3_bucket}/results", ""
    if case == "file":
        storage_path, expected = f"file://{tmp_path}/results", "a file:// URI is one machine's disk"
    elif case == "no-bucket":
        storage_path, expected = "s3://no-such-bucket-mmi/results", "no-such-bucket-mmi"
    elif case == "no-credentials":
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.pop(k)
        env["HOME"] = str(tmp_path)  # no ~/.aws either
        expected = "credentials: AWS_ACCESS_KEY_ID"
    elif case == "unreachable":
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{dead}"
        expected = f"endpoint: AWS_ENDPOINT_URL=http://127.0.0.1:{dead}"
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "mmi_ray.cli", "sweep", str(REPO / "sweeps" / "quickstart.yaml"),
                        f"storage_path={storage_path}", "name=refused", "--quiet"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    took = time.time() - t0
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "storage_path: " in lines[0] and expected in lines[0], lines[0]
    assert took < 30, f"{case}: refused after {took:.0f} s"
    assert "ray" not in r.stdout.lower() and not any(k.startswith("results/refused") for k in s3_server.keys(s3_bucket))
