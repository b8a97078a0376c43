"""The README's "Your own data" walk-through, command for command: the stand-in teacher on the port
the README names, `mmi-ray rationales` on examples/boxes.csv, `mmi-ray data`, and the sweep on the
folder it wrote (on the suite's shared Ray head), whose confirmation runs must show what the
rationales carry: DSS far above label-only, as on the built-in task."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(Path(__file__).parent))
from test_docs import shown_commands  # noqa: E402


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    nxt = text.find("\n## ", start + 1)
    return text[start:nxt if nxt > 0 else None]


@pytest.mark.ray
def test_the_readme_own_data_commands_run_and_the_sweep_learns_from_the_rationales(tmp_path, ray_head):
    commands = shown_commands(section((REPO / "README.md").read_text(), "Your own data"))
    assert [c.split()[:2] for c in commands] == [["python", "examples/teacher_server.py"], ["mmi-ray", "rationales"],
                                                  ["mmi-ray", "data"], ["mmi-ray", "sweep"]]
    for d in ("examples", "sweeps", "configs"):
        (tmp_path / d).symlink_to(REPO / d)
    # as pasted into a fresh shell after `make install`: the venv activated as the README's Install says,
    # nothing of it on PATH before; the stand-in teacher detaches once it listens
    venv = Path(sys.executable).parent
    path = ":".join(p for p in os.environ.get("PATH", "").split(":") if Path(p) != venv)
    env = {**ray_head["env"], "PATH": path}
    install = shown_commands(section((REPO / "README.md").read_text(), "Install"))
    assert install == ["make install", "source .venv/bin/activate"]
    activate = f"source {shlex.quote(str(venv / 'activate'))}"
    outputs, pid = [], None
    try:
        for cmd in commands:
            r = subprocess.run(["bash", "-c", f"{activate} && {cmd}"], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=900)
            assert r.returncode == 0, f"`{cmd}` exited {r.returncode}:\n{r.stderr[-3000:]}"
            if pid is None:
                pid = int(re.search(r"kill (\d+)", r.stdout).group(1))
            outputs.append(r.stdout)
        again = subprocess.run(["bash", "-c", f"{activate} && {commands[0]}"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=60)  # the port is taken now: said, not hidden
        assert again.returncode == 2 and "cannot listen on 127.0.0.1:8765" in again.stderr
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
    outputs = outputs[1:]
    assert "train     4000    4000  100.0% [99.9, 100.0]" in outputs[0]
    assert "complete; rows hash" in outputs[0]
    assert re.search(r"valid\s+40\s+0\s+100.00%", outputs[1])
    state = json.loads(next((tmp_path / "results").glob("*/confirm/confirmation.json")).read_text())
    by_method: dict[str, list[float]] = {}
    for run in state["runs"]:
        by_method.setdefault(run["method"], []).append(run["test_accuracy"])
    mean = {m: sum(v) / len(v) for m, v in by_method.items()}
    assert len(by_method["label-only"]) == 2 and mean["label-only"] < 0.5  # chance is 25%
    assert mean["DSS"] > mean["label-only"] + 0.3, mean
