"""The default local Ray of ``mmi-ray`` (no RAY_ADDRESS) listens on loopback only.

Marked ``alone_on_host``, so it runs before the suite's shared Ray head starts (tests/conftest.py)
and only one Ray instance is up at a time: ``mmi-ray train`` starts its own local Ray, trains a few
steps and shuts it down.
"""

import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.alone_on_host]


def _listening(root_pid: int) -> set[tuple[str, int, str]]:
    import psutil

    try:
        procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    pids = {p.pid: p for p in procs}
    out = set()
    for c in psutil.net_connections("tcp"):
        if c.status == "LISTEN" and c.pid in pids:
            try:
                name = pids[c.pid].name()
            except psutil.NoSuchProcess:
                name = "?"
            out.add((c.laddr.ip, c.laddr.port, name))
    return out


def test_local_mmi_ray_run_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    cmd = [str(Path(sys.executable).parent / "mmi-ray"), "train", str(REPO / "configs" / "tiny_builtin.yaml"),
           *tiny_overrides(tmp_path, **{"train.max_steps": 20})]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set = set()
    while proc.poll() is None:
        seen |= _listening(proc.pid)
        time.sleep(0.5)
    out = proc.stdout.read()
    assert proc.returncode == 0, out[-3000:]
    assert "final step 20" in out
    # quiet by default: mmi-ray's own lines, not Ray Train's per-report INFO lines (those need --verbose)
    assert "[mmi-ray] step     10 |" in out and "Reporting training result" not in out, out[-3000:]
    names = {n for _, _, n in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # the watch saw Ray's own servers
    assert len(seen) >= 6, seen
    for ip, port, name in sorted(seen):
        addr = ipaddress.ip_address(ip)
        if addr.version == 6 and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        assert addr.is_loopback, f"{name} listens on {ip}:{port}; all: {sorted(seen)}"


def test_a_run_asking_for_gpus_a_local_ray_lacks_fails_in_seconds_with_one_line(tmp_path):
    """No RAY_ADDRESS: mmi-ray starts its own Ray, which has no GPU here and cannot grow, so a run
    asking for one ends at once with the key named, before any trainer starts or any file is written."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    cmd = [str(Path(sys.executable).parent / "mmi-ray"), "train", str(REPO / "configs" / "tiny_builtin.yaml"),
           *tiny_overrides(tmp_path), "scaling.use_gpu=true", "--quiet"]
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    took = time.time() - t0
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [x for x in r.stderr.strip().splitlines() if x.startswith("mmi-ray: error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "scaling.use_gpu: 1 worker(s): one worker needs 1 GPU, but no node has that many" in lines[0]
    assert not any((tmp_path / "runs").glob("*/config.yaml"))
    print(f"\n[no GPU] {took:.1f} s to: {lines[0]}")
