"""Safe defaults: no eval/exec on text, yaml.safe_load only, torch.load(weights_only=True), token
auth kept on, dashboards on loopback."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "mmi_ray").rglob("*.py"), *(REPO / "analysis").rglob("*.py"),
                  *(REPO / "benchmarks").rglob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_unsafe_calls(path):
    text = path.read_text()
    assert not re.search(r"(?<![\w.])(eval|exec)\(", text), "eval/exec on text"
    assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text), "yaml.safe_load only"
    assert not re.search(r"pickle\.loads?\(", text)
    for call in re.findall(r"torch\.load\([^)]*\)", text):
        assert "weights_only=True" in call


def test_no_opt_out_of_token_auth():
    for p in [*SOURCES, *(REPO / "cluster").rglob("*.yaml"), REPO / "Makefile", REPO / "README.md"]:
        assert "RAY_AUTH_MODE=disabled" not in p.read_text(), p


def test_local_ray_binds_dashboard_to_loopback():
    text = (REPO / "mmi_ray" / "ray_init.py").read_text()
    assert 'dashboard_host="127.0.0.1"' in text and '_node_ip_address="127.0.0.1"' in text


def test_importing_the_cli_changes_no_environment_and_ray_start_sets_loopback_mode():
    """Importing the CLI (or the whole package) leaves the environment alone. Where Ray is started
    (``ray_init.prepare_env``, before Ray is imported), a local Ray gets single-machine mode; joining a
    cluster (RAY_ADDRESS) leaves cluster mode alone and turns token mode on."""
    import subprocess
    import sys

    code = ("import os, sys; keys = ('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', 'RAY_AUTH_MODE'); "
            "import mmi_ray.cli, mmi_ray.sweep, mmi_ray.train, mmi_ray.analysis.report; "
            "print(*[os.environ.get(k) for k in keys], 'ray' in sys.modules); "
            "from mmi_ray.ray_init import prepare_env; prepare_env(); "
            "print(*[os.environ.get(k) for k in keys], 'ray' in sys.modules)")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "None", "False", "0", "None", "False"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "RAY_ADDRESS": "127.0.0.1:1"},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "None", "False", "None", "token", "False"]
