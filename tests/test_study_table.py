"""A study's table on results built by hand: statistics per cell, verdicts, the choice on validation,
secondary comparisons, seeds needed, the next stage, and the export round trip."""

import csv

import numpy as np
import pytest

from fmnist import report
from fmnist.evidence import choose, evidence, gather
from fmnist.report import study_table
from fmnist.results import Result, Studied, declared, predictions_digest, read_export, write_export
from fmnist.sequential import SeedsDesign
from fmnist.study import Choice, Reading, StudyRecord

IMAGES = 2000
LABELS = np.arange(IMAGES) % 10


def result(cell: str, seed: int, acc: float, val: float | None = None, factor: str | None = None, commit: str = "c1",
           settings: str = "s", wrong_from: int = 0, time: int = 0, level: str | None = None) -> Result:
    """A run that gets `acc` of the images right: the first ones from `wrong_from` on (rotating), the rest wrong."""
    right = np.zeros(IMAGES, dtype=bool)
    idx = (np.arange(IMAGES) + wrong_from) % IMAGES
    right[idx[: int(round(acc * IMAGES))]] = True
    predictions = np.where(right, LABELS, (LABELS + 1) % 10)
    return Result(
        model="mlp", study="t", table="T", cell=cell, factor=factor or ("baseline" if cell == "baseline" else cell[:-1]),
        level=level or cell, seed=seed, stage=None, git_commit=commit, fingerprint=f"{cell}{seed}", settings=settings,
        val_acc=acc if val is None else val, test_acc=acc, epochs=5, seconds=1.0, run_id=f"{cell}-{seed}-{time}", reference_acc=None,
        predictions_sha256=predictions_digest(predictions), start_time=time, threads=1, correct=right,
        curves={"val/acc": [0.5, acc], "val/loss": [1.0, 0.5]},
    )


def record_of(r: Result, seeds: SeedsDesign | None = None, ordered: tuple[str, ...] = ()) -> StudyRecord:
    return StudyRecord("t", "T", (Reading(r.cell, r.factor, r.level, r.epochs, r.reference_acc),), Choice(["b1"], 90.0), 0.3, seeds, ordered, None,
                       ("study=t", "model=mlp"))


def studied(results: list[Result], seeds: SeedsDesign | None = None, ordered: tuple[str, ...] = ()) -> Studied:
    return Studied(results, {r.run_id: record_of(r, seeds, ordered) for r in results})


def rows_of(results: list[Result], seeds: SeedsDesign | None = None) -> dict[str, study_table.Row]:
    ev = evidence(results, record_of(results[-1], seeds))
    return {r.cell: r for r in study_table.rows(ev)}


def base_and(cell: str, shifts: list[float], seeds=range(5), **kwargs) -> list[Result]:
    base = [result("baseline", s, 0.85 + 0.002 * s) for s in seeds]
    return base + [result(cell, s, 0.85 + 0.002 * s + shift, wrong_from=7, **kwargs) for s, shift in zip(seeds, shifts)]


def test_a_consistent_gain_is_better_and_a_consistent_loss_worse():
    rows = rows_of(base_and("a1", [0.010, 0.012, 0.011, 0.009, 0.010]) + [result("b1", s, 0.85 + 0.002 * s - 0.02) for s in range(5)])
    assert rows["a1"].verdict == "better" and rows["a1"].diff == pytest.approx(1.04)
    # differences 1.0, 1.2, 1.1, 0.9, 1.0 points: sd 0.114, t(0.975, 4) = 2.7764
    half = 2.7764 * np.sqrt(0.013) / np.sqrt(5)
    assert rows["a1"].ci_low == pytest.approx(1.04 - half, abs=1e-4) and rows["a1"].ci_high == pytest.approx(1.04 + half, abs=1e-4)
    assert rows["a1"].n_seeds == 5 and rows["a1"].q_holm >= rows["a1"].p and len(rows["a1"].mcnemar_p) == 5
    assert rows["b1"].verdict == "worse" and rows["b1"].diff == pytest.approx(-2.0)
    assert rows["baseline"].verdict == "reference"


def test_holm_can_take_away_a_verdict_that_one_test_alone_would_give():
    shifts = [0.004, 0.0, 0.006, 0.002, 0.003]  # p about 0.03 on its own
    results = base_and("a1", shifts)
    results += [result(c, s, 0.85 + 0.002 * s + 0.001 * ((s % 3) - 1), wrong_from=3) for c in ("b1", "c1", "d1") for s in range(5)]
    rows = rows_of(results)
    assert rows["a1"].p < 0.05 < rows["a1"].q_holm and rows["a1"].verdict == "inconclusive"
    assert rows["a1"].seeds_needed is not None  # and the table says how many seeds would decide it


def test_a_tiny_noisy_difference_is_equivalent_within_the_margin_and_a_big_noisy_one_inconclusive():
    rows = rows_of(base_and("a1", [0.0005, -0.0005, 0.0, 0.001, -0.0005]))
    assert rows["a1"].verdict == "equivalent" and rows["a1"].q_tost_holm < 0.05
    noisy = rows_of(base_and("a1", [0.01, -0.008, 0.004, -0.006, 0.012]))
    assert noisy["a1"].verdict == "inconclusive" and noisy["a1"].seeds_needed > 10  # 80% power at ±0.5 with an SD of 0.85 points


def test_same_predictions_on_every_seed_are_identical_and_two_seeds_are_too_few():
    results = [result("baseline", s, 0.85) for s in range(3)] + [result("a1", s, 0.85) for s in range(3)]
    results += [result("b1", s, 0.87, wrong_from=5) for s in range(2)]
    rows = rows_of(results)
    assert rows["a1"].verdict == "identical" and rows["a1"].diff == 0.0
    assert rows["b1"].verdict == "too few seeds" and rows["b1"].q_holm is None and len(rows["b1"].mcnemar_p) == 2


def test_a_cell_never_mixes_commits_and_the_note_says_what_was_left_out():
    results = [result("baseline", s, 0.85, time=s) for s in range(3)]
    results += [result("a1", s, 0.80, commit="old", time=10 + s) for s in range(3)]
    results += [result("a1", s, 0.86, commit="new", time=20 + s) for s in range(3)]
    results += [result("a1", 0, 0.87, commit="new", time=30)]  # a repeat of seed 0
    cells = gather(results)
    kept = cells["a1"].by_seed
    assert {r.git_commit for r in kept.values()} == {"new"} and kept[0].test_acc == 0.87
    note = "; ".join(cells["a1"].left_out)
    assert "3 run(s) with other settings or code (commit old) left out" in note and "1 repeated run(s)" in note


def test_the_combination_is_chosen_on_validation_not_on_test():
    results = [result("baseline", s, 0.85, val=0.84) for s in range(3)]
    # a1 is better on test but worse on validation; a2 the other way round.
    results += [result("a1", s, 0.88, val=0.83, factor="a") for s in range(3)]
    results += [result("a2", s, 0.84, val=0.85 + 0.001 * s, factor="a") for s in range(3)]
    results += [result("b1", s, 0.86, val=0.839, factor="b") for s in range(3)]
    picks = {p.factor: p for p in choose(gather(results), ["a", "b"], strict=False)}
    assert picks["a"].level == "a2" and picks["a"].gain == pytest.approx(1.1)
    assert picks["b"].level is None and picks["b"].best == "b1"
    strict = {p.factor: p for p in choose(gather(results), ["a", "b"], strict=True)}
    assert strict["a"].p_holm is not None


def test_with_a_design_the_choice_reads_only_the_first_stage():
    results = [result("baseline", s, 0.85, val=0.84) for s in range(5)]
    # a1 looks better on validation only in seeds 3 and 4, which a sequential study has not seen when it chooses.
    results += [result("a1", s, 0.85, val=0.83 if s < 3 else 0.90, factor="a") for s in range(5)]
    assert choose(gather(results), ["a"], strict=False)[0].level == "a1"
    assert choose(gather(results), ["a"], strict=False, seeds=[0, 1, 2])[0].level is None


def sequential_table(tmp_path, results, **kwargs) -> str:
    files = study_table.study_tables(studied(results, SeedsDesign(), ("a",)), tmp_path, None, "python -m fmnist.report",
                                     study_table.Options(**kwargs))
    return next(f for f in files if f.suffix == ".md").read_text()


def test_a_sequential_table_says_the_stage_of_each_verdict_and_what_runs_next(tmp_path, capsys):
    results = [result("baseline", s, 0.85 + 0.002 * s) for s in range(3)]
    results += [result("a1", s, 0.85 + 0.002 * s - 0.10, factor="a") for s in range(3)]  # far worse: decided at once
    results += [result("a2", s, 0.85 + 0.002 * s + d, wrong_from=7, factor="a") for s, d in zip(range(3), [0.006, 0.004, 0.005])]
    text = sequential_table(tmp_path, results)
    rows = {r["cell"]: r for r in csv.DictReader((tmp_path / "t_mlp.csv").open())}
    assert rows["a1"]["verdict"] == "worse" and rows["a1"]["stage"] == "1"
    assert rows["a2"]["verdict"] == "open" and int(rows["a2"]["seeds_needed"]) <= 10 and rows["a2"]["rci_low"]
    assert "Stage 2 runs the open cells (a2 to 5 seeds), with the baseline runs they pair with: seeds 3, 4 still to run" in text
    assert "python -m fmnist.run -m study=t model=mlp 'study.cells=[baseline,a2]' seed=3,4" in text
    assert "a2 vs a1" in text and "Secondary comparisons" in text  # `a` is an ordered factor
    assert (tmp_path / "t_forest.png").stat().st_size > 0 and (tmp_path / "t_mlp_a.png").exists()


def test_a_cell_near_zero_stops_for_futility_with_its_reason_and_the_study_is_complete(tmp_path):
    results = [result("baseline", s, 0.85 + 0.002 * s) for s in range(3)]
    results += [result("a1", s, 0.85 + 0.002 * s + d, wrong_from=7, factor="a") for s, d in zip(range(3), [0.008, -0.009, 0.001])]
    text = sequential_table(tmp_path, results)
    row = next(r for r in csv.DictReader((tmp_path / "t_mlp.csv").open()) if r["cell"] == "a1")
    assert row["verdict"] == "futile" and row["seeds_needed"] == "more than max" and "would be shown with about" in row["reason"]
    assert "| futile | 1 | more than max |" in text and "the study is complete" in text


def test_per_seed_prints_every_seed_the_mean_curves_and_the_training_time(tmp_path):
    results = base_and("a1", [0.01, 0.0, 0.02, 0.0, 0.01])
    text = sequential_table(tmp_path, results, per_seed=True)
    seeds = list(csv.DictReader((tmp_path / "t_mlp_seeds.csv").open()))
    assert len(seeds) == 10 and [r["Δ pp"] for r in seeds if r["cell"] == "a1"] == ["+1.00", "+0.00", "+2.00", "+0.00", "+1.00"]
    curves = list(csv.DictReader((tmp_path / "t_mlp_curves.csv").open()))
    assert curves[0] == {"cell": "baseline", "epoch": "1", "n": "5", "val acc % (mean)": "50.00", "val loss (mean)": "1.0000"}
    assert "Training time, each run counted once: 0.2 min for the cells, 0.0 min for the combined cell (10 runs)" in text


def test_an_export_reads_back_equal_with_its_records(tmp_path):
    results = base_and("a1", [0.01, 0.0, 0.02, 0.0, 0.01])
    results[0].reference_acc = 92.28
    before = studied(results, SeedsDesign(3, 2, 10), ("a",))
    files = write_export(before, tmp_path / "runs.csv")
    assert [f.name for f in files] == ["runs.csv", "runs.npz"]
    back = read_export(tmp_path / "runs.csv")
    assert back.records == {r.run_id: record_of(r, SeedsDesign(3, 2, 10), ("a",)) for r in results}
    for a, b in zip(results, back.results):
        assert (a.correct == b.correct).all() and a.curves == b.curves
        a.correct = b.correct = a.curves = b.curves = None
        assert a == b


def test_an_export_from_before_the_record_reads_and_takes_a_declared_design(tmp_path):
    results = base_and("a1", [0.01, 0.0, 0.02, 0.0, 0.01])
    write_export(studied(results), tmp_path / "runs.csv")
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    legacy = [{k if k not in ("choice", "choice_acc") else f"study_{k}": v for k, v in row.items() if k not in ("table", "stage", "seeds", "ordered")}
              for row in rows]
    with (tmp_path / "runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(legacy[0]))
        writer.writeheader()
        writer.writerows(legacy)
    old = read_export(tmp_path / "runs.csv")
    assert {r.table for r in old.results} == {"s"}  # its baseline runs' settings
    assert all(r.seeds is None for r in old.records.values())
    new = declared(old, SeedsDesign(3, 2, 10), ("a",), 0.5)
    assert [r.stage for r in new.results if r.cell == "a1"] == [1, 1, 1, 2, 2]
    assert all(r.seeds == SeedsDesign(3, 2, 10) for r in new.records.values())


def test_report_from_exports_with_a_study_file_rewrites_the_export(tmp_path, capsys):
    results = base_and("a1", [0.01, 0.011, 0.012, 0.0, 0.01])
    write_export(studied(results), tmp_path / "runs" / "mlp.csv")
    study_file = tmp_path / "t.yaml"
    study_file.write_text("study:\n  name: t\n  factors: {a: {a1: {overrides: [loss=mse]}}}\n  seeds: {first: 3, step: 2, max: 10}\n")
    report.main(["--from", str(tmp_path / "runs"), "--design-from", str(study_file), "--out", str(tmp_path / "out"),
                 "--export", str(tmp_path / "runs2" / "mlp.csv")])
    assert "Sequential design (seeds: first 3, step 2, max 10" in (tmp_path / "out" / "t_mlp.md").read_text()
    assert all(r.seeds == SeedsDesign(3, 2, 10) for r in read_export(tmp_path / "runs2" / "mlp.csv").records.values())
    study_file.write_text("study:\n  name: t\n  seeds: {first: 1}\n")
    with pytest.raises(SystemExit, match="the study file .* is not valid: study.seeds.first must be >= 3"):
        report.main(["--from", str(tmp_path / "runs"), "--design-from", str(study_file), "--out", str(tmp_path / "out")])


def test_an_export_folders_owed_note_says_why_the_next_stage_has_not_run_and_a_bad_one_is_one_sentence(tmp_path):
    write_export(studied(base_and("a2", [0.006, 0.004, 0.005], seeds=range(3)), SeedsDesign(), ("a",)), tmp_path / "runs" / "mlp.csv")
    why = "each run takes two hours on this host; stage 2 waits for a bigger one."
    (tmp_path / "runs" / "owed.yaml").write_text(f"t:\n  mlp: {why}\n  vgg: another table's\n")
    report.main(["--from", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "t_mlp.md").read_text()
    assert "seeds 3, 4 still to run" in text and f"Why stage 2 has not been run: {why}" in text
    for bad in ["t: [one, two]\n", "t:\n  mlp: 3\n", "t: {mlp: [\n"]:
        (tmp_path / "runs" / "owed.yaml").write_text(bad)
        with pytest.raises(SystemExit, match=r"owed.yaml (must map each study to its models|is not valid YAML)") as raised:
            report.main(["--from", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
        assert "\n" not in str(raised.value.code)


@pytest.mark.parametrize("damage,message", [
    (lambda csv_path, npz: npz.write_text("not arrays"), "is not the .npz file that --export writes"),
    (lambda csv_path, npz: csv_path.write_text(csv_path.read_text().splitlines()[0] + "\n"), "holds no runs"),
    (lambda csv_path, npz: csv_path.write_text(csv_path.read_text().replace(",0.3,", ",lots,", 1)), "is damaged"),
    (lambda csv_path, npz: npz.unlink(), "both files are needed"),
    (lambda csv_path, npz: csv_path.write_text("a,b\n1,2\n"), "is not an fmnist export"),
])
def test_a_damaged_export_is_one_sentence(tmp_path, damage, message):
    write_export(studied(base_and("a1", [0.01, 0.0, 0.02])), tmp_path / "runs.csv")
    damage(tmp_path / "runs.csv", tmp_path / "runs.npz")
    with pytest.raises(SystemExit, match=message) as raised:
        report.main(["--from", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "out")])
    assert str(raised.value.code).startswith("error: ") and "\n" not in str(raised.value.code)


def test_an_output_folder_that_cannot_be_one_is_one_sentence(tmp_path):
    write_export(studied(base_and("a1", [0.01, 0.0, 0.02])), tmp_path / "runs.csv")
    (tmp_path / "afile").write_text("")
    for out, message in [("afile", "is a file, not a folder"), ("afile/sub", "lies inside a file")]:
        with pytest.raises(SystemExit, match=message):
            report.main(["--from", str(tmp_path / "runs.csv"), "--out", str(tmp_path / out)])


def test_a_stage_half_run_asks_each_cell_for_the_seeds_it_lacks_and_the_combined_cell_for_fresh_seeds(tmp_path):
    # Seed 3 of the cells ran, and the combined cell's first fresh seed; then a session ended.
    results = [result("baseline", s, 0.85 + 0.002 * s, val=0.84) for s in range(4)]
    for cell, factor, diffs in (("a1", "a", [0.006, 0.004, 0.005, 0.003]), ("b1", "b", [0.005, 0.006, 0.004, 0.006])):
        results += [result(cell, s, 0.85 + 0.002 * s + d, val=0.86, wrong_from=7, factor=factor) for s, d in zip(range(4), diffs)]
    results += [result("combined", s, 0.86 + 0.002 * s, wrong_from=11, factor="combined", level="a1+b1") for s in range(4)]
    text = sequential_table(tmp_path, results)
    rows = {r["cell"]: r for r in csv.DictReader((tmp_path / "t_mlp.csv").open())}
    assert rows["a1"]["verdict"] == "open" and rows["a1"]["stage"] == ""  # stage 2 is not whole
    assert rows["combined"]["n_seeds"] == "1" and "its runs on seeds 0, 1, 2 left out" in rows["combined"]["note"]
    assert "seeds 4, 5 still to run" in text
    assert "'study.cells=[baseline]' seed=4,5\n" in text  # the baseline pairs with the combined cell's seeds 3-5
    assert "'study.cells=[a1,b1]' seed=4\n" in text  # the cells lack seed 4 only
    assert "'study.combine=[a1,b1]' seed=4,5\n" in text  # the combined cell's fresh seeds 3, 4, 5 lack 4 and 5


def test_stage_one_ends_with_the_combined_cell_validation_chose_to_run_on_fresh_seeds(tmp_path):
    results = [result("baseline", s, 0.85 + 0.002 * s, val=0.84) for s in range(3)]
    results += [result("a1", s, 0.85 + 0.002 * s + 0.004, val=0.86, wrong_from=7, factor="a") for s in range(3)]
    results += [result("b1", s, 0.85 + 0.002 * s + 0.003, val=0.86, wrong_from=11, factor="b") for s in range(3)]
    text = sequential_table(tmp_path, results)
    assert "Stage 2 runs the open cells (combined to 3 seeds after the first stage's)" in text and "seeds 3, 4, 5 still to run" in text
    assert "'study.combine=[a1,b1]' seed=3,4,5\n" in text and "'study.cells=[baseline]' seed=3,4,5\n" in text
    assert "is tested on the seeds after the first stage's" in text


def test_the_next_stage_is_a_function_of_the_results_alone():
    # Stage 1 done, a1 and b1 open, the combined cell (a1 + b1) has its first fresh seed: what stage 2 needs, per cell.
    results = [result("baseline", s, 0.85 + 0.002 * s, val=0.84) for s in range(4)]
    for cell, factor, diffs in (("a1", "a", [0.006, 0.004, 0.005, 0.003]), ("b1", "b", [0.005, 0.006, 0.004, 0.006])):
        results += [result(cell, s, 0.85 + 0.002 * s + d, val=0.86, wrong_from=7, factor=factor) for s, d in zip(range(4), diffs)]
    results += [result("combined", s, 0.86 + 0.002 * s, wrong_from=11, factor="combined", level="a1+b1") for s in range(4)]
    ev = evidence(results, record_of(results[-1], SeedsDesign()))
    assert ev.outcome.stages_done == 1
    assert ev.next_runs() == {"a1": [0, 1, 2, 3, 4], "b1": [0, 1, 2, 3, 4], "combined": [3, 4, 5], "baseline": [0, 1, 2, 3, 4, 5]}
