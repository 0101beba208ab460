"""Studies: the design (which jobs a study runs), the table (statistics per cell), the choice on validation."""

import numpy as np
import pytest

from fmnist import study
from fmnist.errors import ConfigError
from fmnist.results import Result, predictions_digest, read_export, write_export
from fmnist.schedules import SCHEDULES
from fmnist.study import BASELINE, Composed, Level, StudyConfig

IMAGES = 2000


def table2_like(**extra) -> StudyConfig:
    return StudyConfig(
        name="t",
        baseline=Level([], 92.0),
        factors={
            "epochs": {"epochs10": {"overrides": ["schedule.epochs=10"]}, "epochs20": {"overrides": ["schedule.epochs=20"]}},
            "optimizer": {"sgd": {"overrides": ["optimizer=sgd"], "reference_acc": 88}},
        },
        **extra,
    )


def composed(cell: str, schedule: str = "constant") -> Composed:
    epochs = {"epochs10": 10, "epochs20": 20}.get(cell, 5)
    params = {"schedule.epochs": epochs, "optimizer.name": "sgd" if cell == "sgd" else "adam", "seed": 0}
    return Composed(params, SCHEDULES.schema(schedule)(epochs=epochs))


def test_cells_differing_only_in_epochs_share_one_run_read_at_each_epoch():
    s = table2_like()
    jobs = study.jobs(s, {c: composed(c) for c in study.cells(s)})
    assert [j.readings for j in jobs] == [{BASELINE: 5, "epochs10": 10, "epochs20": 20}, {"sgd": 5}]
    assert jobs[0].overrides == ["schedule.epochs=20"]  # the longest cell's overrides
    assert jobs[0].study_overrides()[-1] == "++study.readings={baseline:5,epochs10:10,epochs20:20}"
    separate = study.jobs(table2_like(share_epochs=False), {c: composed(c) for c in study.cells(s)})
    assert [j.readings for j in separate] == [{BASELINE: 5}, {"epochs10": 10}, {"epochs20": 20}, {"sgd": 5}]


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_sharing_is_refused_when_the_schedule_depends_on_the_total_epochs(schedule):
    s = table2_like()
    with pytest.raises(ConfigError, match=f"schedule '{schedule}' depends on the total number of epochs.*study.share_epochs=false"):
        study.jobs(s, {c: composed(c, schedule) for c in study.cells(s)})


def test_two_levels_that_compose_to_the_same_config_are_refused():
    s = StudyConfig(name="t", factors={"f": {"a": {"overrides": ["seed=0"]}}})
    with pytest.raises(ConfigError, match="baseline, a compose to the same configuration"):
        study.jobs(s, {BASELINE: composed(BASELINE), "a": composed(BASELINE)})


def test_cells_and_combine_pick_what_a_sweep_runs():
    assert study.cells(table2_like(cells=["sgd"])) == ["sgd"]
    combined = table2_like(combine=["epochs10", "sgd"])
    assert study.cells(combined) == ["combined"]
    assert combined.level("combined").overrides == ["schedule.epochs=10", "optimizer=sgd"]
    assert combined.level_name("combined") == "epochs10+sgd"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"cells": ["sdg"]}, "no cell 'sdg'; its cells are: baseline, epochs10, epochs20, sgd"),
        ({"combine": ["epochs10", "epochs20"]}, "at most one level per factor"),
        ({"margin": 0.0}, "study.margin must be > 0"),
    ],
)
def test_bad_study_settings_say_what_is_wrong(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        table2_like(**kwargs)


def test_a_misspelt_level_key_is_named():
    with pytest.raises(ConfigError, match="level 'a': unknown key override; a level has overrides and reference_acc"):
        StudyConfig(name="t", factors={"f": {"a": {"override": ["loss=mse"]}}})


def test_a_command_line_key_that_a_level_varies_is_refused():
    with pytest.raises(ConfigError, match="optimizer is set on the command line and by the study's cell 'sgd'"):
        study.check_command_line(table2_like(), ["model", "optimizer", "seed"])
    study.check_command_line(table2_like(), ["model", "seed", "optimizer.lr"])  # not varied by any level


# ----- the table, on results built by hand -----

LABELS = np.arange(IMAGES) % 10


def result(cell: str, seed: int, acc: float, val: float | None = None, factor: str | None = None, commit: str = "c1",
           settings: str = "s", wrong_from: int = 0, time: int = 0) -> Result:
    """A run that gets `acc` of the images right: the first ones from `wrong_from` on (rotating), the rest wrong."""
    right = np.zeros(IMAGES, dtype=bool)
    idx = (np.arange(IMAGES) + wrong_from) % IMAGES
    right[idx[: int(round(acc * IMAGES))]] = True
    predictions = np.where(right, LABELS, (LABELS + 1) % 10)
    return Result(
        model="mlp", study="t", cell=cell, factor=factor or ("baseline" if cell == "baseline" else cell[:-1]), level=cell, seed=seed,
        git_commit=commit, fingerprint=f"{cell}{seed}", settings=settings, val_acc=acc if val is None else val, test_acc=acc,
        epochs=5, seconds=1.0, run_id=f"{cell}-{seed}-{time}", reference_acc=None, predictions_sha256=predictions_digest(predictions),
        command=["study=t", "model=mlp"], study_choice=["b1"], study_choice_acc=90.0, margin=0.3, start_time=time, threads=1,
        correct=right, curves={"val/acc": [0.5, acc], "val/loss": [1.0, 0.5]},
    )


def rows_of(results: list[Result]) -> dict[str, study.Row]:
    cells = study.gather(results)
    return {r.cell: r for r in study.table("mlp", cells, ["baseline", "a1", "b1", "c1", "d1", "e1"], 0.3)}


def base_and(cell: str, shifts: list[float], seeds=range(5), **kwargs) -> list[Result]:
    base = [result("baseline", s, 0.85 + 0.002 * s) for s in seeds]
    return base + [result(cell, s, 0.85 + 0.002 * s + shift, wrong_from=7, **kwargs) for s, shift in zip(seeds, shifts)]


def test_a_consistent_gain_is_better_and_a_consistent_loss_worse():
    rows = rows_of(base_and("a1", [0.010, 0.012, 0.011, 0.009, 0.010]) + [result("b1", s, 0.85 + 0.002 * s - 0.02) for s in range(5)])
    assert rows["a1"].verdict == "better" and rows["a1"].diff == pytest.approx(1.04)
    # differences 1.0, 1.2, 1.1, 0.9, 1.0 points: sd 0.114, t(0.975, 4) = 2.7764
    half = 2.7764 * np.sqrt(0.013) / np.sqrt(5)
    assert rows["a1"].ci_low == pytest.approx(1.04 - half, abs=1e-4) and rows["a1"].ci_high == pytest.approx(1.04 + half, abs=1e-4)
    assert rows["a1"].n_seeds == 5
    assert rows["b1"].verdict == "worse" and rows["b1"].diff == pytest.approx(-2.0)
    assert rows["a1"].p_holm >= rows["a1"].p
    assert len(rows["a1"].mcnemar_p) == 5
    assert rows["baseline"].verdict == "reference"


def test_holm_can_take_away_a_verdict_that_one_test_alone_would_give():
    shifts = [0.004, 0.0, 0.006, 0.002, 0.003]  # p about 0.03 on its own
    results = base_and("a1", shifts)
    results += [result(c, s, 0.85 + 0.002 * s + 0.001 * ((s % 3) - 1), wrong_from=3) for c in ("b1", "c1", "d1") for s in range(5)]
    rows = rows_of(results)
    assert rows["a1"].p < 0.05 < rows["a1"].p_holm
    assert rows["a1"].verdict != "better"


def test_a_tiny_noisy_difference_is_equivalent_within_the_margin_and_a_big_noisy_one_inconclusive():
    rows = rows_of(base_and("a1", [0.0005, -0.0005, 0.0, 0.001, -0.0005]))
    assert rows["a1"].verdict == "equivalent" and rows["a1"].p_tost < 0.05
    noisy = rows_of(base_and("a1", [0.01, -0.008, 0.004, -0.006, 0.012]))
    assert noisy["a1"].verdict == "inconclusive"


def test_same_predictions_on_every_seed_are_identical_and_two_seeds_are_too_few():
    results = [result("baseline", s, 0.85) for s in range(3)] + [result("a1", s, 0.85) for s in range(3)]
    results += [result("b1", s, 0.87, wrong_from=5) for s in range(2)]
    rows = rows_of(results)
    assert rows["a1"].verdict == "identical" and rows["a1"].diff == 0.0
    assert rows["b1"].verdict == "too few seeds" and rows["b1"].p_holm is None and len(rows["b1"].mcnemar_p) == 2


def test_a_cell_never_mixes_commits_and_the_note_says_what_was_left_out():
    results = [result("baseline", s, 0.85, time=s) for s in range(3)]
    results += [result("a1", s, 0.80, commit="old", time=10 + s) for s in range(3)]
    results += [result("a1", s, 0.86, commit="new", time=20 + s) for s in range(3)]
    results += [result("a1", 0, 0.87, commit="new", time=30)]  # a repeat of seed 0
    cells = study.gather(results)
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
    picks = {p.factor: p for p in study.choose(study.gather(results), ["a", "b"], strict=False)}
    assert picks["a"].level == "a2" and picks["a"].gain == pytest.approx(1.1)
    assert picks["b"].level is None and picks["b"].best == "b1"
    strict = {p.factor: p for p in study.choose(study.gather(results), ["a", "b"], strict=True)}
    assert strict["a"].p_holm is not None


def test_combined_command_keeps_the_sweep_and_replaces_seed_and_combination():
    line = study.combined_command(["study=table2", "model=vgg", "study.combine=[x]", "threads=1"], ["epochs20", "flip"], [0, 1, 2])
    assert line == "python -m fmnist.run -m study=table2 model=vgg threads=1 'study.combine=[epochs20,flip]' seed=0,1,2"


def test_an_export_reads_back_equal(tmp_path):
    results = base_and("a1", [0.01, 0.0, 0.02, 0.0, 0.01])
    results[0].reference_acc = 92.28
    files = write_export(results, tmp_path / "runs.csv")
    assert [f.name for f in files] == ["runs.csv", "runs.npz"]
    back = read_export(tmp_path / "runs.csv")
    for a, b in zip(results, back):
        assert (a.correct == b.correct).all() and a.curves == b.curves
        a.correct = b.correct = a.curves = b.curves = None
        assert a == b
