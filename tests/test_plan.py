"""The design calculator: its forecast against the fixed design on the same tables, an open cell's outlook, its one-sentence errors."""

import numpy as np
import pytest

from fmnist import plan
from fmnist.sequential import Rule, SeedsDesign

RULE = Rule(SeedsDesign(sd=0.3), 0.5, 0.3, 8)  # 0.5 points at SD 0.3: the design can show it


def test_the_forecast_sees_the_effect_and_costs_fewer_runs_than_the_fixed_design():
    f = plan.forecast(RULE, 0.3, lagged=True, tables=400)
    assert f.power > 0.7 and abs(f.power - f.fixed_power) < 0.1
    assert f.runs_null < f.runs_effect < f.fixed_runs and f.runs_most == 8 * 11 + 11 + 3
    assert f.seeds_null < f.seeds_effect <= 11
    text = "\n".join(f.lines())
    assert "called better with" in text and "the fixed design" in text and "at most 102" in text


def test_a_noisier_table_than_planned_loses_power_not_error_control():
    planned, noisy = plan.forecast(RULE, 0.3, False, 400), plan.forecast(RULE, 0.9, False, 400)
    assert noisy.power < planned.power


def test_an_open_cells_outlook_continues_from_its_own_data():
    looks = RULE.looks
    strong = plan.outlook(RULE, [0.9, 1.1, 1.0, 0.95, 1.05], looked=3, least=1.0, level=0.05 / 8, paths=400)
    hopeless = plan.outlook(RULE, [0.2, -0.3, 0.1], looked=3, least=1.0, level=0.05 / 8, paths=400)
    assert strong.ends["trend"][0] > 0.9 and strong.ends["trend"][1] < looks[-1]
    assert hopeless.ends["effect"][0] < strong.ends["effect"][0]
    assert "power if the true change is ±0.5" in strong.text(0.5)


def test_the_command_prints_the_forecast_of_a_study_file(capsys):
    plan.main(["conf/study/table2.yaml", "--tables", "200"])
    out = capsys.readouterr().out
    assert "Design for 8 comparisons (seeds: first 3, step 2, max 11, planned SD 0.5; effect ±0.5 points" in out


def test_bad_input_says_what_was_wrong(tmp_path):
    study = tmp_path / "fixed.yaml"
    study.write_text("study:\n  name: fixed\n  factors: {f: {a: {overrides: [loss=mse]}}}\n")
    for args, message in ((["conf/study/table2.yaml", "--tables", "5"], "--tables must be >= 100"),
                          (["conf/study/table2.yaml", "--sd", "0"], "--sd must be > 0 points"),
                          ([str(study)], "declares no seeds design"),
                          (["conf/study/table2.yaml", "--sd-from", str(tmp_path / "none.csv")], "cannot read the export")):
        with pytest.raises(SystemExit) as stopped:
            plan.main(args)
        assert message in str(stopped.value), (args, stopped.value)


def test_the_sd_of_an_export_is_the_rms_of_its_cells():
    sd = plan.sd_from_export(__import__("pathlib").Path("results/table2/runs/resnet18.csv"))
    assert 0.3 < sd < 0.8 and np.isfinite(sd)
