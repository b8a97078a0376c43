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


@pytest.mark.ray
def test_shared_head_dashboard_listens_on_loopback_only(ray_head):
    import psutil

    port = int(ray_head["dashboard"].rsplit(":", 1)[1])
    listening = [c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]
    assert listening and set(listening) <= {"127.0.0.1"}
