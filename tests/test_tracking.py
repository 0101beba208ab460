"""The store: transient failures retried (SQLite locked by another process, a server answering 5xx or
resetting connections), an unreachable server and a damaged file refused in one sentence."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from fmnist.errors import UserError
from fmnist.ledger import RunFacts
from fmnist.tracking import Tracker, is_transient, retrying
from tests.conftest import cli, free_port, runs_of, store

SMALL = ["model=mlp", "data.train_size=1000", "data.val_size=1000", "data.test_size=1000", "progress=false", "threads=1"]


def test_retrying_retries_transient_errors_only_and_for_a_bounded_time():
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert retrying(flaky, seconds=10) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        retrying(lambda: (_ for _ in ()).throw(ValueError("no such run")), seconds=10)
    start = time.monotonic()
    with pytest.raises(RuntimeError):
        retrying(lambda: (_ for _ in ()).throw(RuntimeError("503 Service Unavailable")), seconds=1.5)
    assert time.monotonic() - start < 3
    assert is_transient(ConnectionResetError()) and not is_transient(KeyError("x"))


def steps(uri, experiment="fmnist", key="val/acc"):
    client, runs = runs_of(uri, experiment)
    return [sorted(m.step for m in client.get_metric_history(r.info.run_id, key)) for r in runs], runs


@pytest.mark.slow
def test_a_job_outlasts_another_process_holding_the_sqlite_store_locked(tmp_path, real_data_root):
    uri = store(tmp_path)
    Tracker(uri, "fmnist")  # create the store first
    job = subprocess.Popen(
        [sys.executable, "-m", "fmnist.run", *SMALL, "data.train_size=10000", "schedule.epochs=6", f"tracking.uri={uri}", f"data.root={real_data_root}",
         f"hydra.run.dir={tmp_path}/out"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not any(s for s in steps(uri)[0]):
        time.sleep(0.2)
    # Hold an exclusive lock longer than the busy timeout MLflow gives SQLite (20 s): MLflow raises "database is locked".
    locker = "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); " \
             "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(26); db.execute('COMMIT')"
    subprocess.run([sys.executable, "-c", locker, str(tmp_path / "mlflow.db")], check=True, timeout=60)
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output[-3000:]
    assert "failed transiently" in output  # it did meet the lock, and retried
    (history,), (run,) = steps(uri)
    assert history == [1, 2, 3, 4, 5, 6] and run.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["503", "reset"])
def test_a_job_outlasts_a_server_failing_bursts_of_requests(tmp_path, mlflow_server, real_data_root, mode):
    port = free_port()
    proxy = subprocess.Popen([sys.executable, str(Path(__file__).with_name("faulty_proxy.py")), mlflow_server, str(port),
                              "--mode", mode, "--every", "12", "--burst", "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout.readline().strip() == "ready"
        url = f"http://127.0.0.1:{port}"
        done = cli(tmp_path, *SMALL, "schedule.epochs=3", f"tracking.uri={url}", f"data.root={real_data_root}")
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        proxy.terminate()
        failures = proxy.communicate(timeout=30)[0].count(f"fail {mode}")
    assert failures >= 4  # at least one burst hit the job
    (history,), (run,) = steps(mlflow_server)
    assert history == [1, 2, 3] and run.info.status == "FINISHED"  # every epoch exactly once


@pytest.mark.slow
def test_a_run_the_server_created_but_whose_answer_was_lost_is_not_left_behind(tmp_path, mlflow_server, real_data_root):
    port = free_port()
    proxy = subprocess.Popen([sys.executable, str(Path(__file__).with_name("faulty_proxy.py")), mlflow_server, str(port),
                              "--mode", "lose-answer", "--path", "runs/create", "--burst", "1"], stdout=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout.readline().strip() == "ready"
        done = cli(tmp_path, *SMALL, "schedule.epochs=2", f"tracking.uri=http://127.0.0.1:{port}", f"data.root={real_data_root}")
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        proxy.terminate()
        lost = proxy.communicate(timeout=30)[0].count("fail lose-answer POST")
    assert lost == 1  # the store committed a run whose id never came back
    _, found = runs_of(mlflow_server)
    finished = [r for r in found if r.info.status == "FINISHED"]
    assert len(finished) == 1 and [m.step for m in MlflowClient(mlflow_server).get_metric_history(finished[0].info.run_id, "val/acc")] == [1, 2]
    for other in found:
        if other.info.run_id != finished[0].info.run_id:  # the one created twice: closed, naming the run that stands for the job
            assert other.info.status == "KILLED" and other.data.tags["fmnist.superseded_by"] == finished[0].info.run_id


@pytest.mark.slow
def test_an_unreachable_server_is_one_sentence_within_seconds_and_nothing_runs(tmp_path):
    start = time.monotonic()
    done = cli(tmp_path, *SMALL, "tracking.uri=http://127.0.0.1:9")
    assert done.returncode != 0 and time.monotonic() - start < 30
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot reach the MLflow tracking server at http://127.0.0.1:9")
    assert "mlflow server" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"this is not a database", "truncated"])
def test_a_damaged_store_is_named_and_left_untouched(tmp_path, content):
    if content == "truncated":
        good = tmp_path / "good.db"
        Tracker(f"sqlite:///{good}", "fmnist")
        content = good.read_bytes()[:20_000]
    path = tmp_path / "mlflow.db"
    path.write_bytes(content)
    for command in (["-m", "fmnist.run", *SMALL], ["-m", "fmnist.report"]):
        done = subprocess.run([sys.executable, *command, f"hydra.run.dir={tmp_path}/out"] if "fmnist.run" in command
                              else [sys.executable, *command], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode != 0 and last.startswith(f"error: the tracking store {path} is damaged"), done.stderr[-2000:]
        assert "move it aside" in last and "Traceback" not in done.stderr
    assert path.read_bytes() == content
    with pytest.raises(UserError, match="damaged"):
        Tracker(f"sqlite:///{path}", "fmnist")



HALF_A_TRANSACTION = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size=1")  # spill pages into the file mid-transaction: the journal is hot
db.execute("BEGIN")
db.execute("CREATE TABLE half_written (x)")
for _ in range(2000):
    db.execute("INSERT INTO half_written VALUES (randomblob(1000))")
print("writing", flush=True)
time.sleep(600)
"""


def test_a_store_whose_writer_was_killed_mid_transaction_is_rolled_back_not_called_damaged(tmp_path):
    path = tmp_path / "mlflow.db"
    before = Tracker(f"sqlite:///{path}", "fmnist")
    first = before.client.create_run(before.experiment_id).info.run_id
    writer = subprocess.Popen([sys.executable, "-c", HALF_A_TRANSACTION, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert (tmp_path / "mlflow.db-journal").stat().st_size > 0  # what a killed worker leaves (it broke the CI's fault test)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("PRAGMA quick_check").fetchone()
    tracker = Tracker(f"sqlite:///{path}", "fmnist")
    assert tracker.client.get_run(first).info.run_id == first
    assert not sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE name = 'half_written'").fetchall()

LOG_SAME_DATA = """
import sys, time
from fmnist.ledger import RunFacts
from fmnist.tracking import Tracker
tracker = Tracker(sys.argv[1], "fmnist")
for i in range(20):
    run = tracker.start_run("r", {}, RunFacts())
    time.sleep(max(0.0, float(sys.argv[2]) + 0.4 * i - time.time()))  # every process at the same moment, 20 times
    run.log_datasets([(f"fashion-mnist-{context}", f"{i:016d}", "here", 10, context) for context in ("training", "validation", "test")])
print("ok")
"""


@pytest.mark.slow
def test_parallel_jobs_logging_the_same_data_sets_all_succeed(tmp_path):
    uri = store(tmp_path)
    Tracker(uri, "fmnist")
    start = time.time() + 10
    workers = [subprocess.Popen([sys.executable, "-c", LOG_SAME_DATA, uri, str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(6)]
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0 and out.strip() == "ok", err[-2000:]


def test_a_long_run_name_fits_the_servers_name_column_and_sampled_numbers_are_shortened(tmp_path):
    from fmnist.bookkeeping import run_name

    sampled = ["model=mlp", "optimizer.lr=0.00207614104200153", "model.dropout=0.3958625190413323", "schedule.epochs=2", "transform=crop"]
    assert run_name(sampled) == "model=mlp optimizer.lr=0.00208 model.dropout=0.396 schedule.epochs=2 transform=crop"
    tracker = Tracker(store(tmp_path), "names")
    long = " ".join(f"key{i}=value{i}" for i in range(60))  # MySQL's runs.name is VARCHAR(250): a longer name is a BAD_REQUEST
    run = tracker.start_run(long, {}, RunFacts())
    name = tracker.client.get_run(run.run_id).info.run_name
    assert len(name) <= 250 and name.endswith("...") and long.startswith(name[:-3])


def logged_runs(uri: str, count: int) -> tuple[Tracker, list[str]]:
    tracker, client = Tracker(uri, "bulk"), MlflowClient(uri)
    ids = []
    for i in range(count):
        run_id = client.create_run(tracker.experiment_id).info.run_id
        steps = range(1, 2 + i % 4)  # runs of 1 to 4 epochs
        client.log_batch(run_id, metrics=[Metric("val/acc", 0.5 + 0.01 * s + 1e-4 * i, 1000 + s, s) for s in reversed(steps)])
        ids.append(run_id)
    return tracker, ids


def check_bulk(tracker: Tracker, ids: list[str]) -> None:
    found = tracker.histories(ids, ("val/acc", "never/logged"))
    assert [list(found[i]["val/acc"].values()) for i in ids] == [tracker.history(i, "val/acc") for i in ids]
    assert [len(found[i]["val/acc"]) for i in ids[:4]] == [1, 2, 3, 4] and all(found[i]["never/logged"] == {} for i in ids)


def test_many_runs_histories_come_in_bulk_and_equal_each_runs_own_on_sqlite(tmp_path):
    tracker, ids = logged_runs(store(tmp_path), 103)  # past the 100 runs of one request
    check_bulk(tracker, ids)


@pytest.mark.slow
def test_many_runs_histories_come_in_bulk_and_equal_each_runs_own_from_a_server(mlflow_server):
    tracker, ids = logged_runs(mlflow_server, 103)
    check_bulk(tracker, ids)
