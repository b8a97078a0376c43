"""Autoscaling seen (issue 17, item 7): the worker node types of ``cluster/aws-gpu.yaml`` on Ray's
fake multi-node provider (the autoscaler runs here; nodes are processes; GPUs are the custom
resource ``sim_gpu``). The harness is ``benchmarks/autoscaling.py``, run in its own process: it
starts its own head, so the test runs before the suite's shared head (``alone_on_host``)."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.ray, pytest.mark.alone_on_host]


def test_a_sweeps_demand_scales_the_gpu_type_to_the_plan_and_back_to_zero(tmp_path):
    out = tmp_path / "autoscaling.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "autoscaling.py"), "--trials", "2", "--steps", "20",
                        "--idle-timeout-s", "10", "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    # what `mmi-ray plan` predicts for the GPU sweep on the real YAML: 2 trials at once on 2 spot 1-GPU nodes
    assert res["plan_at_once"] == 2 and res["plan_nodes"] == {"gpu_spot_1x": 2}
    # what the autoscaler did for the same demand: that many nodes of that type, none of the other. The count
    # it held longest while nodes were up is the plan's; Ray's autoscaler may launch one node more for a few
    # seconds (seen once in a CI run: a third node for 7 s); one more at most
    held = Counter(c["gpu_spot_1x"] for _, c in res["timeline"] if c["gpu_spot_1x"] > 0).most_common(1)[0][0]
    assert held == 2 and 2 <= res["peak"]["gpu_spot_1x"] <= 3, res["timeline"]
    assert res["peak"]["gpu_ondemand_4x"] == 0, res["timeline"]
    assert res["completed"] == 2 and res["drivers_on_head"], res
    # and back to zero workers once idle (idle timeout 10 s)
    assert sum(res["final"].values()) == 0, res["timeline"]
    counts = [sum(c.values()) for _, c in res["timeline"]]
    assert counts[0] == 0 and max(counts) in (2, 3)
    print("\n" + "\n".join(line for line in r.stdout.splitlines() if line.startswith(("|", "peak"))))
