"""Studies: the design (which jobs a study runs, which table they belong to) and the record a run keeps of its study."""

import pytest

from fmnist import study
from fmnist.errors import ConfigError
from fmnist.schedules import SCHEDULES
from fmnist.sequential import SeedsDesign
from fmnist.study import BASELINE, Choice, Composed, Level, Reading, StudyConfig, StudyRecord


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
    return Composed(params, SCHEDULES.schema(schedule)(epochs=epochs), settings=f"settings-of-{cell}")


def test_cells_differing_only_in_epochs_share_one_run_read_at_each_epoch():
    s = table2_like()
    jobs = study.jobs(s, {c: composed(c) for c in study.cells(s)})
    assert [j.readings for j in jobs] == [{BASELINE: 5, "epochs10": 10, "epochs20": 20}, {"sgd": 5}]
    assert jobs[0].overrides == ["schedule.epochs=20"]  # the longest cell's overrides
    assert jobs[0].study_overrides("t1", 2)[1:] == ["++study.readings={baseline:5,epochs10:10,epochs20:20}", "++study.table=t1", "++study.stage=2"]
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


def test_the_table_is_named_by_the_run_standing_for_the_baseline_whatever_cells_a_sweep_runs():
    every = {c: composed(c) for c in study.cells(table2_like())}
    assert study.table_of(table2_like(), every) == "settings-of-epochs20"  # baseline is read from the 20-epoch run
    assert study.table_of(table2_like(cells=["sgd"]), every) == "settings-of-epochs20"
    assert study.table_of(table2_like(share_epochs=False), every) == "settings-of-baseline"


def test_a_seeds_design_has_looks_at_each_stage_and_refuses_what_cannot_work():
    design = SeedsDesign(3, 2, 10)
    assert design.looks() == (3, 5, 7, 9, 10)
    assert [design.stage_of(i) for i in range(11)] == [1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert SeedsDesign(4, 3, 4).looks() == (4,)
    for kwargs, message in [({"first": 2}, "first must be >= 3"), ({"step": 0}, "step must be >= 1"), ({"max": 2}, "max must be >= "),
                            ({"max": 60}, "max must be <= 50"), ({"sd": 0.0}, r"study.seeds.sd \(the planned SD of per-seed differences\) must be > 0"),
                            ({"sd": float("nan")}, "must be > 0 points, got nan")]:
        with pytest.raises(ConfigError, match=message):
            SeedsDesign(**kwargs)
    with pytest.raises(ConfigError, match=r"study.effect \(the smallest difference worth reporting\) must be > 0 accuracy points, got 0"):
        table2_like(effect=0.0)
    with pytest.raises(ConfigError, match="study.ordered names speed, which is not a factor; its factors are: epochs, optimizer"):
        table2_like(ordered=["speed"])


def test_a_record_reads_back_equal_from_its_plain_form():
    rec = StudyRecord("table2", "abc", (Reading("baseline", "baseline", "baseline", 5, 92.28), Reading("epochs10", "epochs", "epochs10", 10)),
                      Choice(["flip", "mse"], 92.86), 0.3, SeedsDesign(3, 2, 10), ("epochs",), 2, ("model=mlp", "threads=1"))
    assert StudyRecord.from_dict(rec.to_dict()) == rec
    assert rec.cell == "epochs10"
    fixed = StudyRecord("s", "t", rec.readings, Choice(), 0.5, None, (), None, ())
    assert StudyRecord.from_dict(fixed.to_dict()) == fixed


def test_command_line_runs_cells_or_a_combination_over_seeds():
    line = study.command_line(["study=table2", "model=vgg", "study.combine=[x]", "threads=1"], [0, 1, 2], combine=["epochs20", "flip"])
    assert line == "python -m fmnist.run -m study=table2 model=vgg threads=1 'study.combine=[epochs20,flip]' seed=0,1,2"
    line = study.command_line(["study=table2", "model=vgg", "seed=0"], [3, 4], cells=["baseline", "sgd"])
    assert line == "python -m fmnist.run -m study=table2 model=vgg 'study.cells=[baseline,sgd]' seed=3,4"
