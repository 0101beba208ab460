"""`study=<name>` end to end: real Hydra with the study sweeper plugin, a real store, real data (a subset)."""

import csv
import os
import re
import shlex
import subprocess
import sys

import pytest

from fmnist import report
from fmnist.device import BF16_ENV
from tests.conftest import cli, facts, runs_of, store

pytestmark = pytest.mark.slow
SMALL = ["model=mlp", "data.train_size=2000", "data.val_size=1000", "data.test_size=2000", "progress=false"]
COLUMNS = ["model", "cell", "factor", "level", "n_seeds", "test_acc_mean", "test_acc_std", "diff", "ci_low", "ci_high", "p", "q", "q_holm",
           "q_tost_holm", "rci_low", "rci_high", "verdict", "stage", "seeds_needed"]


def sweep(tmp_path, *overrides, uri):
    done = cli(tmp_path, "-m", *overrides, *SMALL, f"tracking.uri={uri}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def table(path) -> dict[str, dict[str, str]]:
    return {row["cell"]: row for row in csv.DictReader(path.open())}


def test_table2_at_fixed_seeds_runs_every_cell_and_the_report_rebuilds_from_its_export(tmp_path, real_data_root, capsys):
    uri = store(tmp_path)
    sweep(tmp_path, "study=table2", "seed=0,1,2", f"data.root={real_data_root}", uri=uri)
    _, runs = runs_of(uri, "table2")
    # Per seed: one 20-epoch run for baseline, epochs10 and epochs20, then sgd, adamw, flip, mse, nll.
    assert len(runs) == 18 and all(r.info.status == "FINISHED" for r in runs)
    shared = [r for r in runs if facts(r).study.cell == "epochs20"]
    assert len(shared) == 3 and all(r.data.params["schedule.epochs"] == "20" for r in shared)
    records = [facts(r).study for r in shared]
    assert all([(x.cell, x.epoch) for x in rec.readings] == [("baseline", 5), ("epochs10", 10), ("epochs20", 20)] for rec in records)
    assert len({rec.table for rec in records} | {facts(r).study.table for r in runs}) == 1  # one table, named by the 20-epoch run
    assert {facts(r).settings for r in shared} == {records[0].table}
    sgd = next(r for r in runs if facts(r).study.cell == "sgd")
    names = sorted(r.info.run_name for r in runs)  # what the UI's runs table shows: cell and seed, no two alike
    assert len(set(names)) == 18 and f"sgd · seed {sgd.data.params['seed']}" in names
    assert "epochs20 (also baseline, epochs10) · seed 0" in names
    assert (facts(sgd).study_name, facts(sgd).study.readings[-1].factor, facts(sgd).study.readings[-1].level) == ("table2", "optimizer", "sgd")

    out = tmp_path / "results"
    report.main(["--tracking-uri", uri, "--out", str(out), "--export", str(tmp_path / "runs" / "mlp.csv")])
    printed = capsys.readouterr().out
    rows = table(out / "table2_mlp.csv")
    assert list(next(iter(rows.values())))[: len(COLUMNS)] == COLUMNS
    assert list(rows)[:8] == ["baseline", "epochs10", "epochs20", "sgd", "adamw", "flip", "mse", "nll"]
    assert all(rows[c]["n_seeds"] == "3" for c in list(rows)[:8])
    assert rows["nll"]["verdict"] == "identical"  # NLL of a log-softmax is cross-entropy
    assert rows["sgd"]["reference_acc"] == "88.27" and rows["flip"]["reference_acc"] == ""
    assert "Combination chosen on validation" in printed and "The study's own choice: flip + adamw + mse" in printed
    assert "epochs20 vs epochs10" in printed  # table2's epochs are ordered

    # table2 declares a seeds design: after stage 1 the next stage runs the open cells' seeds 3, 4 and, if validation chose two
    # levels or more, the combined cell on the seeds after the first stage's: 3, 4, 5.
    text = (out / "table2_mlp.md").read_text()
    line = next((w.strip() for w in text.splitlines() if w.strip().startswith("python -m fmnist.run") and "study.combine=" in w), None)
    if line is not None:
        words = shlex.split(line)
        assert "study=table2" in words and "seed=3,4,5" in words
        done = subprocess.run([sys.executable, *words[1:], f"hydra.sweep.dir={tmp_path}/combined"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        report.main(["--tracking-uri", uri, "--out", str(out), "--export", str(tmp_path / "runs" / "mlp.csv")])
        capsys.readouterr()
        rows = table(out / "table2_mlp.csv")
        combined = next(w for w in words if w.startswith("study.combine="))[15:-1].replace(",", "+")
        assert rows["combined"]["n_seeds"] == "3" and rows["combined"]["level"] == combined
        text = (out / "table2_mlp.md").read_text()
    assert "Stage 2 runs the open cells" in text or "the study is complete" in text
    assert float(rows["sgd"]["diff"]) < -5 and rows["sgd"]["verdict"] in ("worse", "open")

    again = tmp_path / "again"
    report.main(["--from", str(tmp_path / "runs"), "--out", str(again)])
    for name in ("table2_mlp.csv", "table2_mlp.tex"):
        assert (again / name).read_text() == (out / name).read_text(), name
    made_by = lambda text: text.split("\n", 3)[3]  # noqa: E731  (everything after the "Made by" line)
    assert made_by((again / "table2_mlp.md").read_text()) == made_by((out / "table2_mlp.md").read_text())

    # Run again: every job is found finished, nothing trains.
    rerun = sweep(tmp_path, "study=table2", "seed=0,1,2", f"data.root={real_data_root}", uri=uri)
    assert rerun.stderr.count("skipping: this configuration already finished") == 18


def stages_of(runs) -> dict[tuple[str, int], list[int]]:
    """(cell, seed) -> the stages whose runs stand for it (one each if nothing trained twice)."""
    found: dict[tuple[str, int], list[int]] = {}
    for r in runs:
        rec = facts(r).study
        for reading in rec.readings:
            found.setdefault((reading.cell, int(r.data.params["seed"])), []).append(rec.stage)
    return found


SEQUENTIAL = ["study=regularisation", "schedule.epochs=2", "threads=1"]


def test_a_sequential_study_runs_stage_after_stage_from_one_command(tmp_path, real_data_root):
    uri = store(tmp_path)
    done = sweep(tmp_path, *SEQUENTIAL, f"data.root={real_data_root}", uri=uri)
    _, runs = runs_of(uri, "regularisation")
    stages = stages_of(runs)
    assert all(len(s) == 1 for s in stages.values()), "a (cell, seed) was trained twice"
    assert all(stages[(c, s)] == [1] for c in ("baseline", "decay_low", "crop") for s in range(3))
    out = tmp_path / "out"
    report.main(["--tracking-uri", uri, "--out", str(out), "--export", str(tmp_path / "runs" / "mlp.csv")])
    rows = table(out / "regularisation_mlp.csv")
    assert {r["factor"] for r in rows.values() if " vs " in r["cell"]} == {"secondary"}
    for cell, row in rows.items():
        if cell == "baseline" or row["factor"] == "secondary":
            continue
        seeds = sorted(s for (c, s) in stages if c == cell)
        assert seeds == list(range(len(seeds))) and row["n_seeds"] == str(len(seeds))
        assert row["verdict"] in ("better", "worse", "equivalent", "identical", "futile", "undecided"), (cell, row["verdict"])
        assert row["stage"] and int(row["stage"]) == max(stages[(cell, seeds[-1])])  # it got no seeds after the stage that stopped it
        if row["verdict"] in ("futile", "undecided"):
            assert row["seeds_needed"] and row["reason"]
    assert "the study is complete" in (out / "regularisation_mlp.md").read_text()
    said = done.stdout + done.stderr
    assert "stage(s); decay_low: " in said  # the sweep says how it ended
    assert "launch 1 (of at most" in said and re.search(r"launch 2 \(of at most \d+\): \d+ run\(s\), \d+ done before it; the last took", said)
    client, found = runs_of(uri, "regularisation", parents=True)
    (parent,) = [r for r in found if "fmnist.parent" in r.data.tags]
    overview = parent.data.tags["mlflow.note.content"]  # the parent's Overview in the UI: the table as the report prints it
    assert overview.startswith("# regularisation: mlp") and "| cell |" in overview and "the study is complete" in overview


def test_a_sequential_study_continues_from_an_export_on_a_fresh_store(tmp_path, real_data_root):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    # Stage 1's cells on one machine, by hand (the seeds given), then exported.
    sweep(first, *SEQUENTIAL, "seed=0,1,2", f"data.root={real_data_root}", uri=store(first))
    report.main(["--tracking-uri", store(first), "--out", str(first / "out"), "--export", str(first / "runs.csv")])
    # Another machine: a fresh store and the export; the one command goes on from there.
    sweep(second, *SEQUENTIAL, f"exports=[{first / 'runs.csv'}]", f"data.root={real_data_root}", uri=store(second))
    _, runs = runs_of(store(second), "regularisation")
    trained = stages_of(runs)
    assert not [k for k in trained if k[0] != "combined" and k[1] < 3], "a finished run of the export was trained again"
    assert trained, "nothing went on after stage 1"
    report.main(["--tracking-uri", store(second), "--out", str(second / "out"), "--export", str(second / "runs.csv")])
    report.main(["--from", str(first / "runs.csv"), str(second / "runs.csv"), "--out", str(tmp_path / "both")])
    rows = table(tmp_path / "both" / "regularisation_mlp.csv")
    primary = [r for r in rows.values() if r["factor"] != "secondary"]
    assert all(int(r["n_seeds"]) >= 3 for r in primary)
    assert all(r["verdict"] != "open" for r in primary)


USER_STUDY = """\
# @package _global_
defaults:
  - override /hydra/sweeper: fmnist_study
study:
  name: widths
  factors:
    width:
      narrow: {overrides: ["model.hidden=[64]"]}
      wide: {overrides: ["model.hidden=[1024]"]}
    lr:
      fast: {overrides: [optimizer.lr=1e-3]}
tracking:
  experiment: widths
"""


def test_a_study_file_in_the_users_own_folder_needs_no_code(tmp_path, real_data_root):
    (tmp_path / "mine" / "study").mkdir(parents=True)
    (tmp_path / "mine" / "study" / "widths.yaml").write_text(USER_STUDY)
    uri = store(tmp_path)
    sweep(tmp_path, f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "study=widths", "seed=0,1,2", "schedule.epochs=2",
          f"data.root={real_data_root}", uri=uri)
    report.main(["--tracking-uri", uri, "--out", str(tmp_path / "out")])
    rows = table(tmp_path / "out" / "widths_mlp.csv")
    assert list(rows)[:4] == ["baseline", "narrow", "wide", "fast"]
    assert all(r["n_seeds"] == "3" and r["p"] for r in list(rows.values())[1:4])
    text = (tmp_path / "out" / "widths_mlp.md").read_text()
    assert f"hydra.searchpath=[file://{tmp_path / 'mine'}]" in text  # the combined command finds the study file too


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["study=table2", "optimizer=adamw"], "optimizer is set on the command line and by the study's cell 'sgd'"),
        (["study=table2", "schedule=cosine"], "schedule 'cosine' depends on the total number of epochs"),
        (["study=table2", "study.cells=[sdg]"], "study table2 has no cell 'sdg'"),
        (["study=table2", "study.factors.loss.mse.overrides=['loss=mes']"], "study table2, cell 'mse'"),
    ],
)
def test_a_bad_study_sweep_says_why_in_one_sentence_and_runs_nothing(tmp_path, overrides, message):
    uri = store(tmp_path)
    done = cli(tmp_path, "-m", *overrides, *SMALL, f"tracking.uri={uri}")
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
    assert runs_of(uri, "table2")[1] == []


def test_a_study_in_emulated_bf16_is_refused_before_anything_runs_unless_allowed(tmp_path):
    uri = store(tmp_path)
    slow_cpu = os.environ | {BF16_ENV: "0"}
    done = cli(tmp_path, "-m", "study=table2", "precision=bf16", *SMALL, f"tracking.uri={uri}", "data.root=/nonexistent", env=slow_cpu)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "precision=bf16: this CPU has no native bfloat16 instructions" in done.stderr and "allow_emulated_bf16=true" in done.stderr
    assert runs_of(uri, "table2")[1] == []
    # Allowed, it goes on to the next check (here: the data folder that does not exist).
    done = cli(tmp_path, "-m", "study=table2", "precision=bf16", "allow_emulated_bf16=true", *SMALL, f"tracking.uri={uri}",
               "data.root=/nonexistent", env=slow_cpu)
    assert "to run it anyway" not in done.stderr and "/nonexistent" in done.stderr


BAD_STUDIES = [
    ("  factors: [a, b]", "study/bad.yaml: Cannot merge DictConfig with ListConfig"),
    ("  sedes: {first: 3}", "study/bad.yaml: study.sedes is not a setting of study; its settings are: baseline"),
    ("  factors: {f: {a: {overrides: [loss=mse]}}}\n  seeds: {first: three}", "study/bad.yaml: study.seeds.first: Value 'three'"),
    ("  factors: {f: {a: {overrides: [loss=mse]}}\n  broken: [", "bad.yaml, line 5, column 3 is not valid YAML"),
    ("  factors: {f: {a: {overrides: [loss=mes]}}}", "study bad, cell 'a' (loss=mes): loss=mes is not an option; choose one of: ce, mae, mse, nll"),
    ("  factors: {f: {a: {overrides: loss=mse}}}", "level 'a': overrides must be a list of key=value strings"),
    ("  factors: {f: {a: {overrides: [loss=mse]}}}\n  seeds: {first: 2}", "study.seeds.first must be >= 3"),
]


@pytest.mark.parametrize("body,message", BAD_STUDIES, ids=[m[:30] for _, m in BAD_STUDIES])
def test_a_broken_study_file_is_one_sentence_and_leaves_no_run_not_even_a_parent(tmp_path, body, message):
    (tmp_path / "mine" / "study").mkdir(parents=True)
    (tmp_path / "mine" / "study" / "bad.yaml").write_text(f"# @package _global_\nstudy:\n  name: bad\n{body}\n")
    uri = store(tmp_path)
    done = cli(tmp_path, "-m", f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "study=bad", *SMALL, f"tracking.uri={uri}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert runs_of(uri, "fmnist", parents=True)[1] == []


def test_a_bad_value_in_one_job_of_a_plain_sweep_stops_it_before_any_run(tmp_path):
    uri = store(tmp_path)
    done = cli(tmp_path, "-m", "optimizer.lr=0.001,-1", *SMALL, f"tracking.uri={uri}")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].endswith("optimizer.lr=-1 progress=False: optimizer.lr must be > 0, got -1.0") or \
        "optimizer.lr must be > 0, got -1.0" in done.stderr.strip().splitlines()[-1]
    assert runs_of(uri, "fmnist", parents=True)[1] == []
