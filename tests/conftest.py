"""Shared fixtures: one local Ray instance for the whole session, and the shared DSS data."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from mmi_ray.ray_init import stop_processes

# A pytest started as a background job of a non-interactive shell (`make ... &`) inherits SIGINT
# ignored, and so would every command a test starts: a Ctrl-C test would see it ignored. A handler
# here is reset to the default in each child at exec, so children take Ctrl-C as from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Token authentication stays on (Ray 2.60's default); a client joining a running cluster must be in
# token mode before Ray reads its config, so set it before anything imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")

REPO = Path(__file__).resolve().parents[1]
DSS_DIR = Path(os.environ.get("MMI_RAY_DSS_DIR", REPO.parent / "shared" / "data" / "dss" / "datasets"))


UNIT_MODULES = {"test_losses", "test_config", "test_layout", "test_metrics", "test_analysis", "test_table",
                "test_sweep_spec", "test_searcher", "test_capacity", "test_cluster", "test_custom_data", "test_dss",
                "test_reuse", "test_fastdrop", "test_builtin_and_batching", "test_bad_inputs"}
"""The modules of ``make test-unit``: pure logic (losses, configs, stats, parsers, layout, plans), their
tests that start no Ray; nothing trains a model or builds the site."""


def pytest_collection_modifyitems(config, items):
    """Order by what a test needs of the machine, not by file name: ``alone_on_host`` tests (they
    start their own Ray, and one Ray per host is the rule) run before the shared head starts, and
    ``adds_nodes`` tests (they join extra nodes to the shared head) run last. Stable otherwise.
    Tests of ``UNIT_MODULES`` that start no Ray are marked ``unit``."""
    for item in items:
        if item.module.__name__ in UNIT_MODULES and not item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.unit)

    def rank(item):
        return 0 if item.get_closest_marker("alone_on_host") else 2 if item.get_closest_marker("adds_nodes") else 1
    items.sort(key=rank)


@pytest.fixture(scope="session")
def dss_dir() -> Path:
    if not (DSS_DIR / "cqa").is_dir():
        pytest.skip(f"DSS data not found at {DSS_DIR}")
    return DSS_DIR


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_started_ray(temp_dir: str, gcs_port: int) -> None:
    """Stop only the Ray processes this session started (never ``ray stop``): those whose command
    line names our temp dir or GCS port, and their children."""
    stop_processes(lambda cmd: temp_dir in cmd or f":{gcs_port}" in cmd)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    """moto's S3-compatible server on 127.0.0.1 (a real HTTP server: pyarrow, boto3 and Ray reach it
    through ``AWS_ENDPOINT_URL``, as they would reach MinIO or S3). ``stop``/``start`` take it away
    and bring it back on the same port with the same buckets (a storage outage)."""

    def __init__(self):
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request: noise in a failure

        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {**S3_ENV, "AWS_ENDPOINT_URL": self.endpoint}
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=S3_ENV["AWS_DEFAULT_REGION"],
                            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"])

    def bucket(self, name: str) -> str:
        """A new, empty bucket; returns its URI."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, uri: str) -> list[str]:
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self):
        self._server.stop()

    def start(self):
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()


@pytest.fixture(scope="session")
def s3_server():
    """One S3 server for the session, its endpoint and test credentials in this process's
    environment (so in every Ray process the session's head starts: that head starts after it)."""
    server = S3Server()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket for one test, named for it; its URI."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    return s3_server.bucket(name)


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory, s3_server):
    """One local Ray head for the whole session, started like a user would (``ray start --head``,
    dashboard on loopback, token auth on), shared by every Ray test; it starts after the session's
    S3 server, so its processes reach the server as the user's would (``AWS_ENDPOINT_URL``). Yields
    its addresses."""
    import subprocess
    import sys
    import tempfile

    temp_dir = tempfile.mkdtemp(prefix="mmirt-", dir="/tmp")  # short: Ray puts unix sockets here
    port, dash = _free_port(), _free_port()
    # Ray Train's controller polls its workers every 2 s by default: a short run's end is seen up to
    # 2 s late, in every one of the suite's runs. Ray's own knob, for this head only (the latency of
    # noticing, not what runs)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "RAY_AUTH_MODE": "token", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--temp-dir", temp_dir,
           "--node-ip-address", "127.0.0.1", "--port", str(port), "--dashboard-host", "127.0.0.1",
           "--dashboard-port", str(dash), "--num-cpus", "4", "--disable-usage-stats",
           "--resources", '{"mmi_driver": 100}']
    # a machine where no local Ray ran yet has no token: make one (what `ray.init` does for itself),
    # so the head starts whichever test runs first
    subprocess.run([str(Path(sys.executable).parent / "ray"), "get-auth-token", "--generate"], env=env,
                   capture_output=True, text=True, timeout=60, check=True)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        stop_started_ray(temp_dir, port)
        raise RuntimeError(f"ray start failed: {r.stderr[-2000:]}")
    info = {"address": f"127.0.0.1:{port}", "port": port, "dashboard": f"http://127.0.0.1:{dash}", "temp_dir": temp_dir,
            "env": {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}}
    try:
        yield info
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        stop_started_ray(temp_dir, port)


@pytest.fixture(scope="session")
def ray_session(ray_head):
    """This test process connected to the shared head."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_head["address"], log_to_driver=False, configure_logging=False)
    yield ray


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


def read_trials(path) -> pandas.DataFrame:  # noqa: F821
    """A sweep's trials.csv with trial ids as text (an id such as ``2e508110`` would read as a float)."""
    import pandas as pd

    return pd.read_csv(path, dtype={"trial_id": str})
