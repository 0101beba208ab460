"""Bad input, as an adversary gives it: one sentence, a non-zero exit, and no run left FAILED or RUNNING (nor a parent);
a disk that fills during a run closes that run FAILED with the reason.

Each case is the command a user would type, run as a process on tiny IDX data; the full disks are real (a tmpfs mounted
for the test, skipped where this process may not mount one).
"""

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import TINY, cli, runs_of, write_tiny_fmnist

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny(tmp_path) -> list[str]:
    root = write_tiny_fmnist(tmp_path / "tiny")
    return [*TINY, f"data.root={root}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]


def one_sentence(done: subprocess.CompletedProcess, *words: str) -> str:
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0, done.stderr[-1500:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert last.startswith(("error: ", "stopped: ")) and all(w in last for w in words), last
    return last


def nothing_left(tmp_path: Path, experiment: str = "fmnist") -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    if (tmp_path / "mlflow.db").exists():
        _, runs = runs_of(uri, experiment, parents=True)
        assert not [r for r in runs if r.info.status in ("FAILED", "RUNNING")], [(r.info.run_name, r.info.status) for r in runs]


@pytest.mark.parametrize("overrides,words", [
    (["optimizer=sgd", "optimizer.lr=1e308"], ["optimizer.lr must be a finite number > 0", "1e+308"]),
    (["optimizer.lr=inf"], ["optimizer.lr must be a finite number > 0", "got inf"]),
    (["data.train_size=60000"], ["data.train_size=60000 is more than the 48 training images left after validation"]),
    (["data.test_size=20000"], ["data.test_size=20000 is more than the 32 test images"]),
    (["tracking.experiment="], ["tracking.experiment must name an experiment"]),
])
def test_a_bad_value_is_one_sentence_and_no_run(tmp_path, tiny, overrides, words):
    one_sentence(cli(tmp_path, *tiny, *overrides), *words)
    one_sentence(cli(tmp_path, "-m", *tiny, "seed=0,1", *overrides), *words)  # a sweep: no parent either
    nothing_left(tmp_path)


def test_an_empty_sweep_opens_no_parent(tmp_path, tiny):
    one_sentence(cli(tmp_path, "-m", *tiny, "seed=range(0,0)"), "this sweep has no jobs", "seed=range(0,0)")
    _, runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "fmnist", parents=True)
    assert runs == []


def test_a_study_file_that_is_not_utf8_is_named(tmp_path, tiny):
    study = tmp_path / "mine" / "study" / "latin.yaml"
    study.parent.mkdir(parents=True)
    study.write_bytes(b"# @package _global_\nstudy:\n  name: latin\n  factors: {f: {caf\xe9: {overrides: [loss=mse]}}}\n")
    one_sentence(cli(tmp_path, "-m", f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "study=latin", *tiny),
                 str(study), "is not UTF-8 text", "0xe9")


SEARCH = """# @package _global_
search:
  name: {name}
  trials: 3
  params:
{params}
  sampler: {{name: random, seed: 0}}
{pruner}  confirm: {{top: 0}}
tracking:
  experiment: {name}
"""


@pytest.mark.parametrize("name,params,pruner,words", [
    ("choice", "    transform: {type: choice, choices: [normalize, flip, flipp]}", "", ["transform=flipp is not an option"]),
    ("pruner", "    optimizer.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}",
     "  pruner: {name: median, startup_trials: -3, warmup_epochs: 1}\n", ["search.pruner.startup_trials must be >= 0, got -3"]),
])
def test_a_bad_search_is_refused_before_its_first_trial(tmp_path, tiny, name, params, pruner, words):
    search = tmp_path / "mine" / "search" / f"{name}.yaml"
    search.parent.mkdir(parents=True)
    search.write_text(SEARCH.format(name=name, params=params, pruner=pruner))
    one_sentence(cli(tmp_path, "-m", f"hydra.searchpath=[file://{tmp_path / 'mine'}]", f"search={name}", *tiny), *words)
    nothing_left(tmp_path, name)
    assert not list(tmp_path.glob("*optuna*.db")) or name == "choice"  # no Optuna trial left RUNNING: none was asked


def test_an_output_folder_that_cannot_be_written_is_one_sentence(tmp_path, tiny):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    args = [sys.executable, "-m", "fmnist.run", *tiny, f"hydra.run.dir={blocked / 'out'}"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    one_sentence(done, f"cannot write {blocked / 'out'}", "hydra.run.dir")


@pytest.mark.parametrize("password", ["p@ss", "p:ss/w#d", "100%"])
def test_a_password_with_reserved_characters_unencoded_is_refused_and_never_printed(tmp_path, tiny, password):
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": f"http://alice:{password}@127.0.0.1:9"}
    args = [sys.executable, "-m", "fmnist.run", *[t for t in tiny if not t.startswith("tracking.uri=")], f"hydra.run.dir={tmp_path}/out"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    one_sentence(done, "not percent-encoded", "MLFLOW_TRACKING_PASSWORD")
    assert password not in done.stdout + done.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs, unmounted afterwards; skipped where this process may not mount one."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                                                        capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # a file still open: detach it now, free it when closed


def fill(disk: Path) -> None:
    with (disk / "filler").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass


def test_a_full_disk_under_the_store_is_one_sentence_and_no_run(tmp_path, tiny, small_disk):
    uri = f"tracking.uri=sqlite:///{small_disk / 'mlflow.db'}"
    done = cli(tmp_path, *tiny, uri)
    assert done.returncode == 0, done.stderr[-2000:]  # the store is made while there is room
    fill(small_disk)
    one_sentence(cli(tmp_path, *tiny, uri, "seed=1"), "no space left on the tracking store's disk")
    one_sentence(cli(tmp_path, "-m", *tiny, uri, "seed=2,3"), "no space left on the tracking store's disk")
    import sqlite3

    db = sqlite3.connect(small_disk / "mlflow.db")
    try:
        assert db.execute("select status, count(*) from runs group by status").fetchall() == [("FINISHED", 1)]
    finally:
        db.close()  # an open file would keep the disk from being unmounted


def test_a_full_disk_under_the_checkpoints_is_one_sentence_and_the_run_closed(tmp_path, tiny, small_disk):
    fill(small_disk)  # full before the run: refused before one is created
    one_sentence(cli(tmp_path, *tiny, f"checkpoint_dir={small_disk}"), f"cannot write in the checkpoint folder {small_disk}")
    assert not (tmp_path / "mlflow.db").exists() or runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}")[1] == []
    with (small_disk / "filler").open("r+b") as f:  # room for a lease, none for a checkpoint (~2.4 MB)
        f.truncate(f.seek(0, 2) - 256 * 1024)
    last = one_sentence(cli(tmp_path, *tiny, "model.hidden=[256]", "schedule.epochs=2", f"checkpoint_dir={small_disk}"),
                        f"no space left on the disk of the checkpoint folder {small_disk}")
    assert "checkpoint is kept" not in last  # the first epoch's failed: there is none to keep
    _, (run,) = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run.info.status == "FAILED" and "NoSpace" in run.data.tags["fmnist.failure"]  # closed, with the reason
    left = sorted(p.name for p in small_disk.iterdir())
    assert [p for p in left if p != "filler" and ".lease." not in p] == [], left  # no partial checkpoint or lease file
    assert not [p for p in left if p.endswith(".partial")], left
