"""Faults at scale: a sweep of tiny runs on the local Slurm cluster, logging to the MLflow server on MariaDB,
with a share of its tasks requeued and another share's training process SIGKILLed at random moments; then
two identical sweeps launched at the same moment. It prints, and writes to --out, what a user must be able
to trust: every job landed exactly once, no epoch logged twice, no run left RUNNING, every parent FINISHED,
and how long it took (wall time, jobs per minute, the report over every run).

    bash scripts/local-cluster.sh start
    python benchmarks/cluster_faults.py --jobs 500 --out results/bench/cluster_faults.md

The faults are chosen before the sweep (seeded) by array task; each victim is faulted once, a random 0.5-6 s
after its process appears (start-up, an epoch, a checkpoint or a metric write, whichever it is in then).
A fault that finds its task already ended is counted as missed. tests/test_cluster.py runs it with 60 jobs.
"""

import argparse
import getpass
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from mlflow.tracking import MlflowClient

from fmnist.ledger import is_parent

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = Path(os.environ.get("FMNIST_CLUSTER_DIR", f"/var/tmp/fmnist-cluster-{getpass.getuser()}"))
EPOCHS = 2
TINY = ["model=mlp", "model.hidden=[32]", "data.train_size=3000", "data.val_size=1000", "data.test_size=1000", "batch_size=32",
        f"schedule.epochs={EPOCHS}", "progress=false", "threads=1"]


def server() -> str:
    env = CLUSTER / "env"
    if not env.is_file():
        sys.exit(f"error: no local cluster ({env} is missing); start it with `bash scripts/local-cluster.sh start`")
    return dict(line.split("=", 1) for line in env.read_text().split())["FMNIST_MLFLOW_SERVER"]


def sweep(url: str, experiment: str, seeds: range, work: Path, tag: str, name: str, parallelism: int | None = None) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "fmnist.run", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.gpus_per_node=0", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=60",
        f"hydra.launcher.array_parallelism={parallelism or len(seeds)}", *TINY, f"seed=range({seeds.start},{seeds.stop})", f"tracking.uri={url}",
        f"tracking.experiment={experiment}", f"checkpoint_dir={work / 'checkpoints'}", f"hydra.sweep.dir={work / name}",
    ]
    log = (work / f"{name}.log").open("w")
    return subprocess.Popen(command, cwd=work, stdout=log, stderr=subprocess.STDOUT, text=True, env=os.environ | {"FMNIST_BENCH": tag})


class Faults(threading.Thread):
    """Watches this machine's processes for the sweep's Slurm tasks (FMNIST_BENCH=tag in their environment) and faults
    the chosen array tasks of the first submission once each: `scontrol requeue`, or SIGKILL of the training process."""

    def __init__(self, tag: str, jobs: int, share: float, rng: random.Random):
        super().__init__(daemon=True)
        self.tag, self.rng = tag, rng
        count = max(1, round(jobs * share))
        chosen = rng.sample(range(jobs), 2 * count)
        self.plan = {task: "requeue" for task in chosen[:count]} | {task: "kill" for task in chosen[count:]}
        self.array: str | None = None  # the first submission's array job id
        self.seen: set[int] = set()
        self.done: Counter = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid, env in tasks(self.tag):
                array, task = env.get("SLURM_ARRAY_JOB_ID"), int(env.get("SLURM_ARRAY_TASK_ID", -1))
                self.array = self.array or array
                if array == self.array and task in self.plan and task not in self.seen and env.get("SLURM_RESTART_COUNT", "0") == "0":
                    self.seen.add(task)
                    threading.Timer(self.rng.uniform(0.5, 6.0), self.fault, (pid, array, task)).start()
            time.sleep(0.2)

    def fault(self, pid: int, array: str, task: int) -> None:
        kind = self.plan[task]
        if not Path(f"/proc/{pid}").exists():
            self.done[f"{kind} missed"] += 1
            return
        if kind == "kill":
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                self.done["kill missed"] += 1
                return
        else:
            if subprocess.run(["scontrol", "requeue", f"{array}_{task}"], capture_output=True, timeout=60).returncode != 0:
                self.done["requeue missed"] += 1
                return
        self.done[kind] += 1


def tasks(tag: str):
    """(pid, environment) of the running Python processes of this benchmark's Slurm tasks."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"submitit" not in (proc / "cmdline").read_bytes():
                continue
            env = dict(item.split("=", 1) for item in (proc / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
        except OSError:
            continue
        if env.get("FMNIST_BENCH") == tag and "SLURM_ARRAY_TASK_ID" in env:
            yield int(proc.name), env


def audit(client: MlflowClient, experiment: str, seeds: range) -> dict:
    """What the store says of the jobs of `seeds`: landed once, duplicated epochs, RUNNING runs, parents not FINISHED."""
    exp = client.get_experiment_by_name(experiment)
    found, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        found += page
        token = page.token
        if not token:
            break
    runs = [r for r in found if not is_parent(r.data.tags) and int(r.data.params["seed"]) in seeds]
    finished = Counter(r.data.params["seed"] for r in runs if r.info.status == "FINISHED")
    duplicated = 0
    for run in (r for r in runs if r.info.status == "FINISHED"):
        for key in ("train/loss", "val/acc"):
            logged = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            duplicated += len(logged) - len(set(logged)) + len(set(range(1, EPOCHS + 1)) - set(logged))
    return {
        "jobs": len(seeds),
        "landed once": sum(1 for s in seeds if finished[str(s)] == 1),
        "landed twice or more": sum(1 for s in seeds if finished[str(s)] > 1),
        "duplicated or missing epochs": duplicated,
        "runs RUNNING": sum(1 for r in runs if r.info.status == "RUNNING"),
        "runs superseded or closed (KILLED)": sum(1 for r in runs if r.info.status == "KILLED"),
        "parents not FINISHED": sum(1 for p in found if is_parent(p.data.tags) and p.info.status != "FINISHED"),
        "parents": [(p.info.run_name[:60], p.info.status) for p in found if is_parent(p.data.tags)],
    }


def raced(work: Path) -> int:
    """Tasks of the racing pair that found their job's lease held by a live task of the other sweep, and waited for it."""
    logs = [*work.glob("racer-*/.submitit/*/*_log.err")]
    return sum("this copy waits for it to end" in log.read_text(errors="replace") for log in logs)


def timed_report(url: str, experiment: str, work: Path) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fmnist.report", "--tracking-uri", url, "--experiment", experiment, "--all",
                           "--out", str(work / "report"), "--name", "faults"], capture_output=True, text=True, cwd=work)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: the report failed: {done.stderr.strip().splitlines()[-1:]}")
    return seconds, (work / "report" / "faults.csv").read_text().count("\n") - 1


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--faults", type=float, default=0.05, help="share of jobs requeued, and the same share SIGKILLed")
    parser.add_argument("--race-jobs", type=int, default=None, help="jobs of each racing sweep (default: --jobs)")
    parser.add_argument("--race-parallelism", type=int, default=1,
                        help="tasks each racing sweep runs at once (default 1: on the 2-CPU local cluster the two arrays then run side "
                             "by side, a task of each on every job at about the same moment; left to Slurm, the second array would "
                             "wait for the first and only find its jobs finished)")
    parser.add_argument("--phases", default="faulted,race", help="faulted, race, or both (the racing pair's seeds follow the first's)")
    parser.add_argument("--experiment", default=None, help="the MLflow experiment (default: a new one); a later phase may reuse it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="a folder for the sweeps' files (default: a new one under /tmp)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here (markdown, with the command)")
    args = parser.parse_args(argv)
    url = server()
    work = (args.work or Path(f"/tmp/fmnist-faults-{uuid.uuid4().hex[:8]}")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    experiment = args.experiment or f"faults-{uuid.uuid4().hex[:8]}"
    phases = set(args.phases.split(","))
    if not phases or phases - {"faulted", "race"}:
        sys.exit(f"error: --phases {args.phases}: name faulted, race or both (comma-separated)")
    client = MlflowClient(url)
    figures: dict = {"experiment": experiment, "server": "local Slurm (2 CPUs, one task per CPU) + mlflow server on MariaDB"}

    first, race = range(0, args.jobs), range(args.jobs, args.jobs + (args.race_jobs or args.jobs))
    figures["processor"] = processor()
    if "faulted" in phases:
        faulted(args, url, experiment, first, work, client, figures, argv)
    if "race" in phases:
        start = time.perf_counter()
        pair = [sweep(url, experiment, race, work, uuid.uuid4().hex, f"racer-{i}", args.race_parallelism) for i in (1, 2)]
        codes = [p.wait() for p in pair]
        wall = time.perf_counter() - start
        figures["racing pair"] = {"exits": codes, "wall s": round(wall, 1), "jobs/min": round(len(race) / wall * 60, 1),
                                  "array parallelism": args.race_parallelism, "jobs raced": raced(work)}
        figures["racing pair"] |= audit(client, experiment, race)
    seconds, rows = timed_report(url, experiment, work)
    figures["report"] = {"runs": rows, "seconds": round(seconds, 1)}
    print(json.dumps(figures, indent=1))
    if args.out:
        write(args.out, figures, argv if argv is not None else sys.argv[1:])
    return figures


def faulted(args, url: str, experiment: str, first: range, work: Path, client: MlflowClient, figures: dict, argv) -> None:
    tag = uuid.uuid4().hex
    faults = Faults(tag, args.jobs, args.faults, random.Random(args.seed))
    faults.start()
    start = time.perf_counter()
    code = sweep(url, experiment, first, work, tag, "faulted").wait()
    wall = time.perf_counter() - start
    faults.stop.set()
    figures["faulted sweep"] = {"exit": code, "wall s": round(wall, 1), "jobs/min": round(args.jobs / wall * 60, 1),
                                "faults planned": dict(Counter(faults.plan.values())), "faults delivered": dict(faults.done)}
    figures["faulted sweep"] |= audit(client, experiment, first)
    if args.out:  # the first half's figures, kept should the racing pair not finish
        write(args.out, figures, argv if argv is not None else sys.argv[1:])


def processor() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    kind = "AVX-512 + AMX" if "amx_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else platform.machine()
    return f"{os.cpu_count()} cores, {kind}"


def race_line(pair: dict | None) -> str:
    if pair is None:
        return ""
    if "jobs raced" not in pair:  # a file written before the count
        return "The racing pair: two identical sweeps launched at the same moment (how many of its jobs they met on was not counted)."
    return (f"The racing pair: two identical sweeps launched at the same moment, each array {pair['array parallelism']} task(s) at a "
            f"time; {pair['jobs raced']} of its {pair['jobs']} jobs were raced (a task found the other sweep's live task holding the "
            "job, waited for it, then skipped the run it had finished).")


def write(path: Path, figures: dict, argv: list[str]) -> None:
    argv = [a for a, before in zip(argv, [None, *argv]) if a != "--work" and before != "--work"]  # a scratch folder: not the result's
    rows = []
    phases = [n for n in ("faulted sweep", "racing pair") if n in figures]
    for name in phases:
        f = figures[name]
        rows.append(f"| {name} | {f['landed once']}/{f['jobs']} | {f['landed twice or more']} | {f['duplicated or missing epochs']} | "
                    f"{f['runs RUNNING']} | {f['runs superseded or closed (KILLED)']} | {f['parents not FINISHED']} | {f.get('exit', f.get('exits'))} | "
                    f"{f['wall s']} | {f['jobs/min']} |")
    text = "\n".join([
        "# Faults at scale on Slurm",
        "",
        f"Made by `python benchmarks/cluster_faults.py {' '.join(argv)}` (after `bash scripts/local-cluster.sh start`), "
        f"on {figures['processor']}; {figures['server']}.",
        "",
        "| sweep | jobs landed once | landed twice | duplicated or missing epochs | runs RUNNING | runs KILLED (superseded or closed) | parents not FINISHED | exit | wall s | jobs/min |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Faults planned in the first sweep: {figures['faulted sweep']['faults planned']}; delivered: "
        f"{figures['faulted sweep']['faults delivered']} (a fault whose task had already ended is missed)."
        if "faulted sweep" in figures else f"This command ran the racing pair only (the seeds after a --jobs sweep's), into {figures['experiment']}.",
        "",
        race_line(figures.get("racing pair")),
        "",
        "Parent runs: " + "; ".join(f"{n}: {s}" for n, s in figures[phases[-1]]["parents"]) + ".",
        "",
        f"The report over every run of the experiment ({figures['report']['runs']} runs): {figures['report']['seconds']} s."
        if "report" in figures else "The racing pair and the report had not run when this was written.",
        "",
        "```json",
        json.dumps(figures, indent=1),
        "```",
        "",
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    main()
