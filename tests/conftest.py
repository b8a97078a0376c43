"""Shared fixtures: one local Ray instance for the whole session, and the shared DSS data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DSS_DIR = Path(os.environ.get("MMI_RAY_DSS_DIR", REPO.parent / "shared" / "data" / "dss" / "datasets"))


@pytest.fixture(scope="session")
def dss_dir() -> Path:
    if not (DSS_DIR / "cqa").is_dir():
        pytest.skip(f"DSS data not found at {DSS_DIR}")
    return DSS_DIR


@pytest.fixture(scope="session")
def ray_session():
    """One Ray instance shared by every test that needs it (dashboard on, loopback only)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


def tiny_overrides(tmp_path: Path, **extra) -> list[str]:
    """Overrides that make the shipped tiny config a few-second run."""
    base = {
        "run.storage_path": str(tmp_path / "runs"),
        "data.builtin.num_train": 400,
        "data.builtin.num_valid": 40,
        "data.builtin.num_test": 40,
        "model.d_model": 64,
        "model.d_ff": 128,
        "train.batch_size": 16,
        "train.max_steps": 30,
        "train.eval_every": 10,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
