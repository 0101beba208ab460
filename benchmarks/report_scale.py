"""The report over many runs: `python -m fmnist.report --all` on an experiment of N finished runs.

    python benchmarks/report_scale.py --runs 1000 --out results/bench/report_scale.md
    python benchmarks/report_scale.py --runs 1000 --tracking-uri http://127.0.0.1:5055 --out results/bench/report_scale_server.md

It logs N finished runs shaped like a sweep's (params that differ by seed and learning rate, five epochs
of train and validation curves, epoch seconds, final test figures) into a new experiment of the store
(default: a new SQLite file), then, interleaved over --rounds: the whole report as a user runs it (a fresh
process, imports included), and in this process the metric histories it reads fetched in bulk (what the
report does) and run by run (what it did before: one request per run and key), as the reference.
"""

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import machine
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from fmnist.tracking import Tracker

KEYS = ("train/acc", "val/acc", "train/loss", "val/loss", "epoch/seconds")
EPOCHS = 5


def populate(uri: str, experiment: str, runs: int) -> Tracker:
    tracker, client = Tracker(uri, experiment), MlflowClient(uri)
    for i in range(runs):
        run_id = client.create_run(tracker.experiment_id, run_name=f"lr={(1, 3)[i % 2]}e-4 · seed {i // 2}").info.run_id
        params = [Param("model.name", "mlp"), Param("optimizer.lr", f"{(1, 3)[i % 2]}e-4"), Param("seed", str(i // 2))]
        at = 1_000_000 + i
        curves = [Metric(k, 0.5 + 0.05 * e + 1e-5 * i, at + e, e) for e in range(1, EPOCHS + 1) for k in KEYS]
        final = [Metric("test/acc", 0.8 + 1e-5 * i, at + EPOCHS, EPOCHS), Metric("test/loss", 0.4, at + EPOCHS, EPOCHS)]
        client.log_batch(run_id, metrics=curves + final, params=params)
        client.set_terminated(run_id, "FINISHED")
    return tracker


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tracking-uri", default=None, help="the store (default: a new SQLite file in a scratch folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here (markdown, with the command)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fmnist-report-scale-"))
    uri = args.tracking_uri or f"sqlite:///{work / 'mlflow.db'}"
    experiment = f"report-scale-{uuid.uuid4().hex[:8]}"
    logging = timed(lambda: populate(uri, experiment, args.runs))
    tracker = Tracker(uri, experiment, create=False)
    ids = [r.run_id for r in tracker.runs()]
    report = [sys.executable, "-m", "fmnist.report", "--tracking-uri", uri, "--experiment", experiment, "--all", "--out", str(work / "out"), "--name", "scale"]
    whole, bulk, one_by_one = [], [], []
    for _ in range(args.rounds):
        whole.append(timed(lambda: subprocess.run(report, check=True, capture_output=True, cwd=work)))
        bulk.append(timed(lambda: tracker.histories(ids, KEYS)))
        one_by_one.append(timed(lambda: [tracker.history(i, k) for i in ids for k in KEYS]))
    rows = (work / "out" / "scale.csv").read_text().count("\n") - 1
    figures = {
        "runs": len(ids), "rows in the report": rows, "store": "mlflow server" if uri.startswith("http") else "SQLite file",
        "processor": f"{machine.cpu_name()} ({machine.processor_class()})", "seconds to log the runs": round(logging, 1),
        "report, whole process (s)": [round(s, 2) for s in whole],
        "histories in bulk (s)": [round(s, 2) for s in bulk], "histories run by run (s)": [round(s, 2) for s in one_by_one],
    }
    print(json.dumps(figures, indent=1))
    if args.out:
        write(args.out, figures, whole, bulk, one_by_one)


def write(out: Path, figures: dict, whole: list[float], bulk: list[float], one_by_one: list[float]) -> None:
    median = statistics.median
    command = shlex.join(["python", "benchmarks/report_scale.py", *sys.argv[1:]])
    out.write_text("\n".join([
        "# The report over many runs",
        "",
        f"Made by `{command}` on {figures['processor']}, {figures['store']}.",
        "",
        "| runs | report, whole process: median s (rounds) | histories in bulk: median s | histories run by run: median s | run by run / bulk |",
        "|---:|---|---:|---:|---:|",
        f"| {figures['runs']} | {median(whole):.1f} ({', '.join(f'{s:.1f}' for s in whole)}) | {median(bulk):.2f} | "
        f"{median(one_by_one):.2f} | {median(one_by_one) / median(bulk):.1f}x |",
        "",
        f"Each round ran the whole report (a fresh process: Python and library imports, the run search, the histories, the table, "
        f"the figure; {figures['rows in the report']} rows), then fetched the histories of its {len(KEYS)} curves both ways in this "
        "process, so drift between rounds touches both sides alike. Runs: synthetic, shaped like a sweep's (two learning rates, "
        f"{figures['runs'] // 2} seeds each, {EPOCHS} epochs); logging them took {figures['seconds to log the runs']} s.",
        "",
    ]))


if __name__ == "__main__":
    main()
