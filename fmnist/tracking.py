"""Everything that talks to MLflow lives here: the store, its queries (every filter string), runs' writes.

Runs go in and come out as ledger values (fmnist.ledger): `RunRecord.facts` is what a run's tags say,
decoded once; callers never see a tag or build a query.
"""

import functools
import json
import logging
import os
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracking import MlflowClient
from mlflow.utils.rest_utils import http_request, verify_rest_response

from fmnist import ledger
from fmnist.credentials import PASSWORD_ENV, USERNAME_ENV, without_credentials
from fmnist.errors import NoSpace, UserError, no_space
from fmnist.identity import as_computed
from fmnist.ledger import JobLine, RunFacts, SweepFacts
from fmnist.results import Result, Studied, predictions_digest

MAX_PARAM_LENGTH = 6000  # MLflow's limit on one param value
MAX_RUN_NAME_LENGTH = 250  # the run name column of MLflow's SQL schema (MySQL refuses longer; SQLite lets it pass)


def resolve_uri(uri: str, base: Path) -> str:
    """Anchor a relative `sqlite:///file.db` at `base`, so every process sees the same store."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str((base / uri[len(prefix) :]).resolve())
    if "://" not in uri:  # a bare path: treat it as a SQLite file
        return prefix + str((base / uri).resolve())
    return uri


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store go in `mlartifacts/` beside the database file, not the cwd."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None  # a tracking server decides for itself


RETRY_SECONDS = float(os.environ.get("FMNIST_STORE_RETRY_SECONDS", "60"))  # how long a transient store error is retried
# What a store says when it is briefly unable to answer, as opposed to refusing the request.
TRANSIENT = (
    "database is locked", "database is busy", "connection reset", "connection aborted", "connection refused",
    "remote end closed", "max retries exceeded", "temporarily unavailable", "bad gateway", "service unavailable",
    "gateway timeout", "internal server error", "error code 500", "error code 502", "error code 503", "error code 504",
    "too many 500 error responses", "too many 502 error responses", "too many 503 error responses", "too many 504 error responses",
)


def is_transient(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    return isinstance(err, (ConnectionError, TimeoutError)) or any(marker in text for marker in TRANSIENT)


def retrying(call, *args, seconds: float = RETRY_SECONDS, **kwargs):
    """`call(*args, **kwargs)`, retried with exponential backoff while it fails transiently, for at most `seconds`."""
    start, delay = time.monotonic(), 0.25
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as err:
            if no_space(err):
                raise NoSpace("no space left on the tracking store's disk (it could not take a write); free some space or move "
                              "the store (tracking.uri), then run the same command again") from None
            if not is_transient(err) or time.monotonic() - start + delay > seconds:
                raise
            logging.getLogger("fmnist.tracking").warning("the tracking store failed transiently (%s); retrying in %.1f s",
                                                        str(err).splitlines()[0][:200], delay)
            time.sleep(delay)
            delay = min(2 * delay, 8.0)


BULK_RUNS, BULK_POINTS = 100, 25_000  # the server's limits on one bulk history request


def _bulk_history(store, run_ids: list[str], key: str) -> list[tuple[str, int, float, int]] | None:
    """(run id, step, value, timestamp) of `key` in `run_ids` in one request; None where the store has no bulk route."""
    if isinstance(store, RestStore):
        answer = http_request(store.get_host_creds(), "/ajax-api/2.0/mlflow/metrics/get-history-bulk", "GET",
                              params={"run_id": run_ids, "metric_key": key, "max_results": BULK_POINTS})
        metrics = verify_rest_response(answer, "get-history-bulk").json().get("metrics", [])
        points = [(m["run_id"], int(m.get("step", 0)), float(m["value"]), int(m["timestamp"])) for m in metrics]
    elif hasattr(store, "get_metric_history_bulk"):  # the SQL store
        points = [(m.run_id, m.step, m.value, m.timestamp) for m in store.get_metric_history_bulk(run_ids, key, BULK_POINTS)]
    else:
        return None
    return None if len(points) >= BULK_POINTS else points


class RetryingClient:
    """An MlflowClient whose every call is retried while the store fails transiently."""

    def __init__(self, uri: str):
        self._client = MlflowClient(tracking_uri=uri)

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        return functools.partial(retrying, attribute) if callable(attribute) else attribute


def login_refused(err: MlflowException, uri: str) -> UserError | None:
    """One sentence for a server that refuses who we are (HTTP 401) or what we ask (403); None for other errors."""
    text = str(err)
    if "401" in text or "UNAUTHENTICATED" in str(err.error_code) or "not authenticated" in text.lower():
        who = f"the user {os.environ[USERNAME_ENV]!r}" if os.environ.get(USERNAME_ENV) else "no user name"
        return UserError(f"the tracking server at {without_credentials(uri)} refused the login ({who} given); set {USERNAME_ENV} and "
                         f"{PASSWORD_ENV} to an account of that server")
    if "403" in text or "PERMISSION_DENIED" in str(err.error_code):
        return UserError(f"the tracking server at {without_credentials(uri)} refused {os.environ.get(USERNAME_ENV, 'this user')!r} "
                         "permission for this experiment; ask its admin for EDIT permission, or use another experiment")
    return None


def check_store(uri: str) -> None:
    """Fail in one sentence, before anything is written, if the store cannot be used."""
    if uri.startswith(("http://", "https://")):
        _probe_server(uri)
    elif uri.startswith("sqlite:///"):
        _check_sqlite(Path(uri[len("sqlite:///") :]))


def _probe_server(uri: str, attempts: int = 3) -> None:
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=3) as response:
                if response.status < 500:
                    return
                reason = f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            if err.code < 500:
                return  # it answers: a server (perhaps behind a proxy without /health)
            reason = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            reason = str(getattr(err, "reason", err))
        time.sleep(1.0 * (attempt + 1) if attempt + 1 < attempts else 0)
    raise UserError(
        f"cannot reach the MLflow tracking server at {without_credentials(uri)} ({reason}); start one, e.g. `mlflow server --host 127.0.0.1 "
        f"--port 5000 --backend-store-uri sqlite:///server.db`, or point tracking.uri (or MLFLOW_TRACKING_URI) at a running one"
    )


def _check_sqlite(path: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        return  # a new store
    with path.open("rb") as f:
        header = f.read(16)
    problem = None if header == b"SQLite format 3\x00" else "it is not a SQLite database"
    if problem is None:
        problem = _sqlite_check_says(path)
    if problem:
        raise UserError(
            f"the tracking store {path} is damaged ({problem}); move it aside (mv {path} {path}.damaged) and run again: "
            "nothing has been written to it"
        )


def _sqlite_check_says(path: Path, mode: str = "ro") -> str | None:
    """None if SQLite finds the file sound (or busy: another writer holds it); otherwise what it says."""
    try:
        with sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=10) as db:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
        return None if result == "ok" else f"SQLite's check says: {result}"
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            return None
        if mode == "ro" and err.sqlite_errorname == "SQLITE_READONLY_ROLLBACK":
            # A writer killed mid-transaction left a hot journal; only a writer may roll it back, as the store's next write would.
            return _sqlite_check_says(path, "rw")
        return str(err)
    except sqlite3.DatabaseError as err:
        return str(err)


def _quiet_mlflow() -> None:
    # Store creation logs alembic migrations at INFO, downloads draw progress bars; users need neither.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's own HTTP retries would wait minutes on a dead server; ours are bounded (RETRY_SECONDS).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # It logs a database error with its whole traceback, then raises it: the error reaches fmnist, which says it in a sentence.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def predictions_name(epoch: int, final: bool) -> str:
    return "test_predictions.csv" if final else f"test_predictions_epoch{epoch}.csv"


@dataclass
class RunRecord:
    """A run as the rest of fmnist sees it: plain values and its ledger facts, no MLflow objects."""

    run_id: str
    name: str
    status: str  # FINISHED, FAILED, KILLED or RUNNING
    params: dict[str, str]
    metrics: dict[str, float]  # the last value of each metric
    start_time: int  # milliseconds since the epoch
    facts: RunFacts  # what its tags say
    sweep: SweepFacts | None = None  # for a sweep's parent run
    jobs: tuple[JobLine, ...] = ()  # a parent's job lines

    @classmethod
    def of(cls, run) -> "RunRecord":
        tags = dict(run.data.tags)
        return cls(run.info.run_id, run.info.run_name, run.info.status, as_computed(dict(run.data.params)), dict(run.data.metrics), run.info.start_time,
                   RunFacts.from_tags(tags), SweepFacts.from_tags(tags), tuple(ledger.job_lines(tags)))


class Tracker:
    """One tracking store and experiment. With `create=False` both must already exist."""

    def __init__(self, uri: str, experiment: str, create: bool = True):
        _quiet_mlflow()
        self.uri = uri
        self.experiment = experiment
        if not create and uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
            raise UserError(f"no tracking store at {without_credentials(uri)}; run `python -m fmnist.run` first or pass the right --tracking-uri")
        check_store(uri)
        self.client = RetryingClient(uri)
        try:
            self._open(experiment, create)
        except MlflowException as err:
            raise login_refused(err, uri) or err from None

    def _open(self, experiment: str, create: bool) -> None:
        if create:
            self.experiment_id = self._experiment_id(experiment)
            return
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(e.name for e in self.client.search_experiments()) or "none"
            raise UserError(f"no experiment '{experiment}' in {without_credentials(self.uri)}; experiments there: {names}")
        self.experiment_id = found.experiment_id

    @staticmethod
    def latest_experiment(uri: str) -> str | None:
        """The experiment holding the most recent training run; None if there is no store or no run."""
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
            return None
        _quiet_mlflow()
        check_store(uri)
        client = RetryingClient(uri)
        try:
            ids = [e.experiment_id for e in client.search_experiments()]
        except MlflowException as err:
            raise login_refused(err, uri) or err from None
        if not ids:
            return None
        recent = client.search_runs(ids, max_results=50, order_by=["attributes.start_time DESC"])
        training = [r for r in recent if not ledger.is_summary(r.data.tags)]
        return client.get_experiment(training[0].info.experiment_id).name if training else None

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        root = _artifact_root(self.uri)
        try:
            return self.client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None, tags=dict([ledger.EXPERIMENT_KIND]))
        except MlflowException:
            # Another job created it between our look-up and our create.
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _search(self, filter_string: str) -> list:
        try:
            return self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=50_000,
                                           order_by=["attributes.start_time ASC"])
        except MlflowException as err:
            refused = login_refused(err, self.uri)
            if refused is not None:
                raise refused from None
            if err.error_code == "INVALID_PARAMETER_VALUE":
                raise UserError(f"the tracking store refused the filter {filter_string!r}: {err.message}") from None
            raise

    def runs(self, user_filter: str = "") -> list[RunRecord]:
        """Training runs of the experiment (no parents, no summaries) matching a user's MLflow filter string, oldest first."""
        return [RunRecord.of(r) for r in self._search(user_filter) if not ledger.is_summary(r.data.tags) and not ledger.is_parent(r.data.tags)]

    @staticmethod
    def _tag(name: str, value: str) -> str:
        return f"tags.`{name}` = '{value}'"

    def job_runs(self, fingerprint: str) -> list[RunRecord]:
        """Every run of one job (one configuration), oldest first."""
        return self.runs(self._tag(ledger.tag("fingerprint"), fingerprint))

    def attempt_run(self, attempt: str) -> RunRecord | None:
        """The run an attempt created, if the store has it (its answer to the attempt may have been lost)."""
        found = self.runs(self._tag(ledger.tag("attempt"), attempt))
        return found[0] if found else None

    def sweep_runs(self, sweep_id: str) -> list[RunRecord]:
        return self.runs(self._tag(ledger.tag("sweep_id"), sweep_id))

    def table_runs(self, study: str, table: str) -> list[RunRecord]:
        """The finished runs of one study table, whichever sweeps made them."""
        return self.runs(f"{self._tag(ledger.tag('study_name'), study)} and {self._tag(ledger.TABLE, table)} and attributes.status = 'FINISHED'")

    def children(self, parent_run_id: str) -> list[RunRecord]:
        """The runs of a sweep's jobs: those its parent run holds."""
        return self.runs(self._tag(ledger.tag("parent_run_id"), parent_run_id))

    def parents(self, running: bool = False) -> list[RunRecord]:
        """The sweeps' parent runs, oldest first; `running`: only those still RUNNING (a live launch's, or a dead one's)."""
        status = " and attributes.status = 'RUNNING'" if running else ""
        return [RunRecord.of(r) for r in self._search(self._tag(ledger.PARENT, "1") + status)]

    def parent(self, sweep_id: str) -> RunRecord | None:
        return next((r for r in reversed(self.parents()) if r.sweep and r.sweep.sweep_id == sweep_id), None)

    def get(self, run_id: str) -> RunRecord | None:
        try:
            return RunRecord.of(self.client.get_run(run_id))
        except MlflowException:
            return None

    def history(self, run_id: str, key: str) -> list[float]:
        """A metric's values ordered by step."""
        return [value for _, value, _ in self.history_by_step(run_id, key)]

    def history_by_step(self, run_id: str, key: str) -> list[tuple[int, float, int]]:
        """(step, value, when it was logged in ms since the epoch), ordered by step."""
        return sorted((m.step, m.value, m.timestamp) for m in self.client.get_metric_history(run_id, key))

    def histories(self, run_ids: list[str], keys: tuple[str, ...]) -> dict[str, dict[str, dict[int, float]]]:
        """run id -> key -> step -> value, for many runs at once: one request per 100 runs and key (the server's bulk
        route, the SQL store's bulk query) where a run-by-run fetch would make one per run and key."""
        store = self.client._client._tracking_client.store
        found = {run_id: {key: {} for key in keys} for run_id in run_ids}
        for key in keys:
            for start in range(0, len(run_ids), BULK_RUNS):
                chunk = run_ids[start : start + BULK_RUNS]
                points = retrying(_bulk_history, store, chunk, key)
                if points is None:  # neither route, or more points than one answer holds: run by run
                    points = [(run_id, *point) for run_id in chunk for point in self.history_by_step(run_id, key)]
                for run_id, step, value, _ in sorted(points, key=lambda p: (p[0], p[1], p[3])):  # a step logged twice: the latest
                    found[run_id][key][step] = value
        return found

    def read_results(self, runs: list[RunRecord]) -> dict[str, Studied]:
        """Per finished study run, the cells it stands for, each read at its own epoch, with the run's record."""
        histories = self.histories([run.run_id for run in runs], ("val/acc", "val/loss", "epoch/seconds", "test/acc"))
        return {run.run_id: self._results_of(run, histories[run.run_id]) for run in runs}

    def _results_of(self, run: RunRecord, history: dict[str, dict[int, float]]) -> Studied:
        facts = run.facts
        record = facts.study
        curves = {key: list(history[key].values()) for key in ("val/acc", "val/loss")}
        seconds, test_acc = list(history["epoch/seconds"].values()), history["test/acc"]
        final = int(run.params["schedule.epochs"])
        results = []
        for reading in record.readings:
            predictions = np.loadtxt(
                self.artifact_text(run.run_id, predictions_name(reading.epoch, reading.epoch == final)).splitlines(),
                delimiter=",", skiprows=1, dtype=np.int64, ndmin=2,
            )
            results.append(Result(
                model=run.params["model.name"], study=record.study, table=record.table, cell=reading.cell, factor=reading.factor,
                level=reading.level, seed=int(run.params["seed"]), stage=record.stage, git_commit=facts.commit or "unknown",
                fingerprint=facts.fingerprint, settings=facts.settings,
                val_acc=curves["val/acc"][reading.epoch - 1], test_acc=test_acc[reading.epoch], epochs=reading.epoch,
                seconds=sum(seconds[: reading.epoch]), run_id=run.run_id, reference_acc=reading.reference_acc,
                predictions_sha256=predictions_digest(predictions[:, 2]), start_time=run.start_time,
                threads=facts.threads, correct=predictions[:, 1] == predictions[:, 2],
                curves={k: v[: reading.epoch] for k, v in curves.items()},
            ))
        return Studied(results, {run.run_id: record})

    def artifact_file(self, run_id: str, path: str, folder: Path) -> Path:
        return Path(self.client.download_artifacts(run_id, path, str(folder)))

    def log_model(self, run_id: str, model, example, name: str, cell: str) -> str:
        """Log `model` to a finished run as an MLflow model (signature and input example from `example`), register
        it under `name` (tagged with the study cell it stands for), and return the registered version."""
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        with torch.no_grad():
            output = model(example)
        signature = infer_signature(example.numpy(), output.numpy())
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=run_id):  # pickled, not exported: load_model gives back a module that .eval() and moves
            info = mlflow.pytorch.log_model(model, name="model", signature=signature, input_example=example.numpy(),
                                            serialization_format="pickle", metadata={"classes": list(getattr(model, "classes", []))})
        version = retrying(mlflow.register_model, info.model_uri, name, tags={ledger.CELL: cell})
        return str(version.version)

    def artifact_text(self, run_id: str, path: str) -> str:
        with tempfile.TemporaryDirectory(prefix="fmnist-download-") as folder:
            return Path(self.client.download_artifacts(run_id, path, folder)).read_text()

    def log_summary(self, name: str, files: list[Path], command: str, parent: str | None = None) -> str:
        """A report's files: in the sweep's parent run when there is one, else in a summary run of their own."""
        tags = ledger.summary_tags(command)
        if parent is not None:
            for path in files:
                self.client.log_artifact(parent, str(path), artifact_path="report")
            self.client.log_batch(parent, tags=[RunTag(k, v) for k, v in tags.items() if k != ledger.SUMMARY])
            return parent
        run = self._create(name, {}, tags)
        for path in files:
            self.client.log_artifact(run.run_id, str(path))
        run.finish()
        return run.run_id

    def status(self, run_id: str) -> str | None:
        """FINISHED, RUNNING, FAILED or KILLED; None if the store says there is no such run.

        Any other failure (an outage, a refused login) raises: "cannot tell" must never read as "gone".
        """
        try:
            return self.client.get_run(run_id).info.status
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(err).lower():
                return None
            raise

    def handle(self, run_id: str) -> "TrackedRun":
        return TrackedRun(self.client, run_id)

    def reopen(self, run_id: str, facts: RunFacts) -> "TrackedRun":
        """Continue an interrupted run: it is RUNNING again, its failure reason is cleared, `facts` added."""
        self.client.update_run(run_id, status="RUNNING")
        run = TrackedRun(self.client, run_id)
        run.add(facts, cleared=True)
        return run

    def start_run(self, name: str, params: dict[str, object], facts: RunFacts) -> "TrackedRun":
        """A new training run with its params and facts."""
        return self._create(name, params, facts.tags())

    def open_parent(self, name: str, sweep: SweepFacts) -> "TrackedRun":
        """A sweep's parent run: no training, its jobs' runs its children."""
        return self._create(name, {}, sweep.tags())

    def _create(self, name: str, params: dict[str, object], tags: dict[str, str]) -> "TrackedRun":
        if len(name) > MAX_RUN_NAME_LENGTH:
            name = name[: MAX_RUN_NAME_LENGTH - 3].rsplit(" ", 1)[0] + "..."  # ASCII: the column may not be utf8
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        tracked = TrackedRun(self.client, run.info.run_id)
        tracked.log_params(params)
        return tracked


class TrackedRun:
    def __init__(self, client: RetryingClient, run_id: str):
        self.client = client
        self.run_id = run_id

    def log_params(self, params: dict[str, object]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_datasets(self, inputs: list[tuple[str, str, str, int, str]]) -> None:
        """(name, digest, source, rows, context) per data set: the run's inputs, shown in the UI's Dataset column."""
        datasets = [
            DatasetInput(
                Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
                        profile=json.dumps({"num_rows": rows})),
                [InputTag("mlflow.data.context", context)],
            )
            for name, digest, source, rows, context in inputs
        ]
        try:
            self.client.log_inputs(self.run_id, datasets=datasets)
        except MlflowException as err:
            # Parallel jobs log the same data sets: the store's check-then-insert races, and the loser
            # finds them already there on a second try.
            if "unique constraint" not in str(err).lower() and "duplicate entry" not in str(err).lower():
                raise
            time.sleep(0.5)
            self.client.log_inputs(self.run_id, datasets=datasets)

    def logged_steps(self, key: str) -> list[int]:
        return sorted(m.step for m in self.client.get_metric_history(self.run_id, key))

    def add(self, facts: RunFacts, cleared: bool = False) -> None:
        """Record these facts of the run (those set); `cleared`: its failure reason no longer holds."""
        self._set_tags({**(ledger.cleared_failure() if cleared else {}), **facts.tags()})

    def end_trial(self, trial: ledger.Trial, state: str, reason: str = "") -> None:
        """A trial's end; a pruned one says so in its name too, where the runs table shows it (its status stays FINISHED:
        pruning is a search's answer, and the same command must not train it again)."""
        self._set_tags(ledger.trial_ended(trial, state, reason))
        name = self.client.get_run(self.run_id).info.run_name if state == "PRUNED" else ""
        if name and not name.endswith(" · pruned"):  # a resumed trial pruned again is named once
            self.client.update_run(self.run_id, name=name[: MAX_RUN_NAME_LENGTH - 9] + " · pruned")

    def record_job(self, line: JobLine) -> None:
        """On a sweep's parent run: one job's outcome."""
        self._set_tags(line.tags())

    def _set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, folder: Path) -> None:
        self.client.log_artifacts(self.run_id, str(folder))

    def describe(self, text: str) -> None:
        self._set_tags({ledger.NOTE: text})

    def finish(self, note: str = "") -> None:
        if note:
            self._set_tags({ledger.NOTE: note})
        self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FINISHED))

    def fail(self, reason: str, killed: bool = False, failed_jobs: int | None = None) -> None:
        self._set_tags(RunFacts(failure=reason).tags() | (ledger.failed_jobs(failed_jobs) if failed_jobs is not None else {}))
        status = RunStatus.KILLED if killed else RunStatus.FAILED
        self.client.set_terminated(self.run_id, RunStatus.to_string(status))
