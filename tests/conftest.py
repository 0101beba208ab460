"""Shared fixtures: the real Hydra config, tiny IDX files written on the spot, the real data set."""

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Null distributions from fewer draws: tests of logic run in seconds; those that check committed figures or the rule's
# precision set fmnist.sequential.NULL_DRAWS back to fmnist.sequential.DRAWS. Set before fmnist is imported.
os.environ.setdefault("FMNIST_NULL_DRAWS", "500000")

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from fmnist import ledger
from fmnist.config import register_schema
from fmnist.data import ENV_VAR, FILES, DataConfig, locate
from fmnist.ledger import RunFacts

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
register_schema()


def idx_bytes(tensor: torch.Tensor) -> bytes:
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(s.to_bytes(4, "big") for s in tensor.shape)
    return header + tensor.to(torch.uint8).numpy().tobytes()


def write_tiny_fmnist(root: Path, n_train: int = 64, n_test: int = 32, gz: bool = True, seed: int = 0) -> Path:
    """Four valid IDX files with random pixels and balanced labels (not the real checksums)."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images_name, labels_name, _ = FILES[split]
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.arange(n) % 10
        for name, tensor in ((images_name, images), (labels_name, labels)):
            data = idx_bytes(tensor)
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
    return root


def compose_config(overrides: list[str] = ()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return write_tiny_fmnist(tmp_path / "tiny")


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The real Fashion-MNIST; CI sets FMNIST_REQUIRE_REAL_DATA=1 so a missing copy fails, not skips."""
    try:
        return locate(DataConfig(download=False))
    except Exception as err:
        if os.environ.get("FMNIST_REQUIRE_REAL_DATA") == "1":
            raise
        pytest.skip(f"real data set not here ({err.__class__.__name__}); install dataset-fashion-mnist or set {ENV_VAR}")


def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def runs_of(uri: str, experiment: str = "fmnist", parents: bool = False):
    """(client, runs oldest first) of one experiment, read straight through MLflow; sweeps' parent runs only if asked."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = [] if exp is None else client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    return client, [r for r in runs if parents or not ledger.is_parent(r.data.tags)]


# A run in a second on tiny IDX data (write_tiny_fmnist): the smallest real training.
TINY = ["model=mlp", "model.hidden=[16]", "batch_size=16", "data.val_size=16", "data.verify=false", "schedule.epochs=1",
        "progress=false", "threads=1"]


def steps(client, run, key: str = "val/acc") -> list[int]:
    """The steps an MLflow run logged `key` at, in order."""
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def facts(run) -> RunFacts:
    """What an MLflow run's tags say, as the ledger reads them."""
    return RunFacts.from_tags(run.data.tags)


def is_parent(run) -> bool:
    return ledger.is_parent(run.data.tags)


def jobs_of(parent) -> list[ledger.JobLine]:
    return ledger.job_lines(parent.data.tags)


def cli(tmp_path: Path, *overrides: str, timeout: int = 600, **popen) -> subprocess.CompletedProcess:
    """`python -m fmnist.run` in tmp_path, with Hydra's output folders kept inside it."""
    args = [sys.executable, "-m", "fmnist.run", *overrides, f"hydra.run.dir={tmp_path}/out", f"hydra.sweep.dir={tmp_path}/multi"]
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, **popen)


def wait_for_port(port: int, process: subprocess.Popen, what: str, seconds: float = 120) -> None:
    """Return once something listens on 127.0.0.1:`port`; fail the test (killing `process`) after `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    process.kill()
    pytest.fail(f"{what} did not start within {seconds:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "server-artifacts")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_port(port, server, "mlflow server")
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
