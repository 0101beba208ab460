"""A search end to end with real processes: Optuna in a SQLite file beside the store, trials as child runs,
a SIGKILL mid-search and the same command again, two parallel workers, the report, the confirmation on
fresh seeds, and the registered model scoring as its run did."""

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow.pyfunc
import optuna
import pytest
from mlflow.tracking import MlflowClient

from fmnist import report
from fmnist.data import DataConfig
from fmnist.device import cpu_facts
from fmnist.errors import ConfigError
from fmnist.job import dataset
from fmnist.report.search_table import Searched, Trial, merged, param_importances, read_trials, search_report
from fmnist.results import Studied, export_files, read_export
from fmnist.search import Pruned, Sampler, SearchConfig, TrialReporter, learn, open_study, study_name, suggest
from tests.conftest import cli, is_parent, runs_of, store

ROOT = Path(__file__).resolve().parent.parent

SEARCH = ["search=mlp_regularisation", "model=mlp", "data.train_size=2000", "data.test_size=2000", "schedule.epochs=2",
          "progress=false", "threads=1"]


def optuna_trials(tmp_path):
    (name,) = optuna.get_all_study_names(f"sqlite:///{tmp_path / 'optuna.db'}")
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}").get_trials(deepcopy=False)


def trial_runs(uri):
    return [r for r in runs_of(uri, "mlp_regularisation")[1] if "fmnist.trial" in r.data.tags]


def epochs_logged(uri, run) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, "val/acc"))


@pytest.mark.slow
def test_a_search_killed_mid_trial_ends_at_its_count_with_every_trial_once(tmp_path, real_data_root):
    uri = store(tmp_path)
    args = [sys.executable, "-m", "fmnist.run", "-m", *SEARCH, "data.train_size=8000", "search.trials=6", "search.confirm.top=0",
            f"data.root={real_data_root}", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path}/multi"]
    first = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once the second trial is under way
        try:
            with sqlite3.connect(tmp_path / "optuna.db") as db:
                if db.execute("select count(*) from trials where number >= 1").fetchone()[0]:
                    break
        except sqlite3.Error:
            pass
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    left = optuna_trials(tmp_path)
    assert any(t.state == optuna.trial.TrialState.RUNNING for t in left), "the kill did not land mid-search"
    assert len(left) <= 3, [t.number for t in left]
    # Where the kill lands by chance, it may also fall between asking for a trial and drawing its values: make sure it does.
    (name,) = optuna.get_all_study_names(f"sqlite:///{tmp_path / 'optuna.db'}")
    optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}").ask()

    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna_trials(tmp_path)
    ended = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(ended) == 6 and len(trials) == 6 and sorted(t.number for t in trials) == list(range(6))
    finished = [r for r in trial_runs(uri) if r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["fmnist.trial"]) for r in finished) == list(range(6))  # no trial trained twice, none lost
    for run in finished:
        steps = epochs_logged(uri, run)
        assert steps == list(range(1, len(steps) + 1)), (run.data.tags["fmnist.trial"], steps)  # each epoch once
        assert "test/acc" not in run.data.metrics  # the test set plays no part in a search
    kept = {r.info.run_id for r in finished}
    assert all(r.info.status == "KILLED" and "fmnist.superseded_by" in r.data.tags for r in trial_runs(uri) if r.info.run_id not in kept)
    parents = [r for r in runs_of(uri, "mlp_regularisation", parents=True)[1] if is_parent(r)]
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]  # the killed launch's parent is closed, not orphaned


@pytest.mark.slow
def test_two_workers_share_one_study_without_duplicates_and_the_winners_are_confirmed(tmp_path, real_data_root, capsys):
    uri = store(tmp_path)
    done = cli(tmp_path, "-m", *SEARCH, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "search.trials=6", "search.confirm.top=2",
               "search.confirm.seeds=3", f"data.root={real_data_root}", f"tracking.uri={uri}", timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna_trials(tmp_path)
    assert sorted(t.number for t in trials) == list(range(6)) and all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    client, found = runs_of(uri, "mlp_regularisation", parents=True)
    (parent,) = [r for r in found if "fmnist.parent" in r.data.tags]
    children = [r for r in found if "fmnist.parent" not in r.data.tags]
    assert parent.info.status == "FINISHED" and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert sorted(int(r.data.tags["fmnist.trial"]) for r in children if "fmnist.trial" in r.data.tags) == list(range(6))
    assert {r.data.tags["fmnist.trial_state"] for r in children if "fmnist.trial" in r.data.tags} <= {"COMPLETE", "PRUNED"}
    # Optuna and MLflow name each other: each trial's user attribute is the run that trained it, whose tag is the trial's number.
    trained = {r.info.run_id: int(r.data.tags["fmnist.trial"]) for r in children if "fmnist.trial" in r.data.tags}
    assert all(trained[t.user_attrs["mlflow_run_id"]] == t.number for t in trials), [t.user_attrs for t in trials]
    (name,) = optuna.get_all_study_names(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}").metric_names == ["val/acc"]
    confirm = [r for r in children if r.data.tags.get("fmnist.study") == "mlp_regularisation-confirm"]
    assert len(confirm) == 3 * 3 and {int(r.data.params["seed"]) for r in confirm} == {1000, 1001, 1002}  # fresh seeds
    # Names a person can tell apart: each trial by its number (a pruned one says so), each confirmation run by cell and seed.
    for r in children:
        if "fmnist.trial" in r.data.tags and r not in confirm:
            assert r.info.run_name.startswith(f"trial {r.data.tags['fmnist.trial']} · ")
            assert r.info.run_name.endswith(" · pruned") == (r.data.tags["fmnist.trial_state"] == "PRUNED"), r.info.run_name
    assert sorted(r.info.run_name for r in confirm) == sorted(f"{r.data.tags['fmnist.cell']} · seed {r.data.params['seed']}" for r in confirm)
    assert len({r.info.run_name for r in confirm}) == 9 and "search=mlp_regularisation" in parent.info.run_name

    out = tmp_path / "report"
    report.main(["--tracking-uri", uri, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "# The search mlp_regularisation: 6 trials" in printed and "## The winners, confirmed on fresh seeds" in printed
    assert (out / "mlp_regularisation_history.png").stat().st_size and (out / "mlp_regularisation_importance.png").stat().st_size
    confirmed = (out / "mlp_regularisation-confirm_mlp.csv").read_text()
    assert "p_holm" in (out / "mlp_regularisation-confirm_mlp.md").read_text() and "q_holm" in confirmed.splitlines()[0]
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id, "report")]
    assert "report/mlp_regularisation_history.png" in artifacts  # the figures are logged to the sweep's parent run

    # The confirmed best is a registered MLflow model that takes raw images and scores as its run did: the docs' example, run.
    (version,) = client.search_model_versions("name='fmnist-mlp_regularisation'")
    run = client.get_run(version.run_id)
    example = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "search.md").read_text(), re.S).group(1)
    example = example.replace("DataConfig()", f"DataConfig(root={str(real_data_root)!r}, train_size=2000, test_size=2000)")  # the runs' data
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        capsys.readouterr()
        exec(compile(example, "docs/search.md", "exec"), {})
        said = capsys.readouterr().out
        model = mlflow.pyfunc.load_model(f"models:/fmnist-mlp_regularisation/{version.version}")  # the generic loader too
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
    shown = float(re.search(r"test accuracy ([\d.]+)%", said).group(1))
    assert shown == pytest.approx(100 * run.data.metrics["test/acc"], abs=0.1), said
    data, _ = dataset(DataConfig(root=str(real_data_root), train_size=2000, test_size=2000))
    logits = model.predict(data.test.images.numpy())
    assert (logits.argmax(1) == data.test.labels.numpy()).mean() == pytest.approx(run.data.metrics["test/acc"], abs=1e-3)


@pytest.mark.slow
def test_a_search_continues_on_a_fresh_store_from_its_trials_export_and_a_foreign_export_is_one_sentence(tmp_path, real_data_root):
    first, second, third = (tmp_path / name for name in ("first", "second", "third"))
    for folder in (first, second, third / "old"):
        folder.mkdir(parents=True)
    common = ["-m", *SEARCH, "search.confirm.top=0", f"data.root={real_data_root}"]
    done = cli(first, *common, "search.trials=2", f"tracking.uri={store(first)}")
    assert done.returncode == 0, done.stderr[-3000:]
    report.main(["--tracking-uri", store(first), "--out", str(first / "out"), "--export", str(first / "runs.csv")])
    exported = first / "runs_trials.json"
    assert read_trials(exported).study  # the export names its Optuna study: a continuation checks it

    # Another machine: a fresh store and Optuna database, the export named; the search goes on to 3 trials with one.
    done = cli(second, *common, "search.trials=3", f"exports=[{exported}]", f"tracking.uri={store(second)}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "learned 2 earlier trials" in done.stdout + done.stderr  # Hydra logs to the console
    before, after = optuna_trials(first), optuna_trials(second)
    assert [t.number for t in after] == [0, 1, 2] and [t.params for t in after[:2]] == [t.params for t in before]
    assert [t.state for t in after[:2]] == [t.state for t in before] and [t.value for t in after[:2]] == [t.value for t in before]
    assert after[0].intermediate_values == before[0].intermediate_values  # the curves too: a pruner compares against them
    assert after[2].params not in [t.params for t in before]  # drawn anew here, not the first trial's values again
    assert [int(r.data.tags["fmnist.trial"]) for r in trial_runs(store(second))] == [2]  # only the new trial trained here
    report.main(["--tracking-uri", store(second), "--out", str(second / "out"), "--export", str(second / "runs.csv")])
    both = tmp_path / "both"
    report.main(["--from", str(exported), str(second / "runs_trials.json"), "--out", str(both)])
    rows = list(csv.DictReader((both / "mlp_regularisation_trials.csv").open()))
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    assert {row["processor"] for row in rows} == {cpu_facts().describe()}  # each trial names the class that trained it

    # An export of the same search with another space (here: a range changed since) trains nothing, in one sentence.
    foreign = json.loads(exported.read_text())
    foreign["space"]["optimizer.lr"]["high"] = 0.01
    (third / "old" / "old_trials.json").write_text(json.dumps(foreign))
    done = cli(third, *common, "search.trials=3", f"exports=[{third / 'old' / 'old_trials.json'}]", f"tracking.uri={store(third)}")
    assert done.returncode != 0 and "with another space or other fixed settings than this command's" in done.stderr
    assert done.stderr.count("error") <= 2 and "Traceback" not in done.stderr
    assert runs_of(store(third), "mlp_regularisation", parents=True)[1] == []  # not even a parent run


def test_a_search_file_is_checked_in_one_sentence():
    with pytest.raises(ConfigError, match="search.params.lr: give low < high"):
        SearchConfig(name="s", params={"lr": {"type": "float", "low": 1.0, "high": 0.1}})
    with pytest.raises(ConfigError, match="a log scale needs low > 0"):
        SearchConfig(name="s", params={"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}})
    with pytest.raises(ConfigError, match="search.storage holds a user name and password; give the URL in FMNIST_OPTUNA_STORAGE"):
        SearchConfig(name="s", params={"lr": {"type": "float", "low": 0.1, "high": 1.0}}, storage="mysql+pymysql://u:secret@host/optuna")
    with pytest.raises(ConfigError, match="choose|must be one of"):
        SearchConfig(name="s", params={"t": {"type": "choice", "choices": ["a", "b"]}}, sampler=Sampler(name="grid"))
    with pytest.raises(ConfigError, match="search.trial_seconds must be > 0 seconds or null, got 0"):
        SearchConfig(name="s", params={"lr": {"type": "float", "low": 0.1, "high": 1.0}}, trial_seconds=0)


def test_a_trial_projected_past_its_time_budget_is_pruned_and_one_within_it_goes_on(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="budget", storage=storage, direction="maximize")
    trials = [optuna.load_study(study_name="budget", storage=storage).ask().number for _ in range(3)]

    def reporter(trial: int) -> TrialReporter:
        search = SearchConfig(name="s", params={"lr": {"type": "float", "low": 0.1, "high": 1.0}}, storage=storage, trial_seconds=100,
                              study="budget", trial=trial)
        return TrialReporter(search, epochs=4)

    within, later, over = (reporter(t) for t in trials)
    within.report(1, 0.8, 30.0)  # 4 epochs at 30 s would be 120 s, but a first epoch carries one-time costs: not yet
    within.report(2, 0.85, 52.0)  # the pace after the first, 22 s: 52 + 2 x 22 = 96 s
    within.report(3, 0.86, 74.0)  # 96 s still
    later.report(1, 0.8, 30.0)
    with pytest.raises(Pruned, match=r"pruned after epoch 2: its 4 epochs would train for about 102 s, over search.trial_seconds=100"):
        later.report(2, 0.9, 54.0)  # 24 s an epoch after the first: 54 + 2 x 24 = 102 s
    with pytest.raises(Pruned, match=r"pruned after epoch 1: its 4 epochs would train for about 128 s, over search.trial_seconds=100"):
        over.report(1, 0.9, 32.0)  # past the budget by more than a first epoch's one-time costs; the better score does not save it


def test_a_trial_left_running_before_or_while_drawing_its_values_gets_them_all_and_keeps_those_it_had(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    params = {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
              "transform": {"type": "choice", "choices": ["normalize", "flip"]}}
    search = SearchConfig(name="s", params=params)
    study = optuna.create_study(study_name="killed", storage=storage, direction="maximize")
    study.ask()  # a search killed between asking for the trial and drawing any value
    study.ask().suggest_float("optimizer.lr", 1e-3, 1e-2, log=True)  # ... and one killed between two draws
    again = optuna.load_study(study_name="killed", storage=storage)  # the command run again: what the store kept
    none, part = again.get_trials(deepcopy=False)
    had = part.params["optimizer.lr"]
    for left in (none, part):
        values = suggest(again, left, search)
        assert set(values) == set(params)  # every searched setting becomes an override: none falls back to its default
        assert again.get_trials()[left.number].params == values  # what Optuna learns from is what the job trains
    assert again.get_trials()[1].params["optimizer.lr"] == had  # a value already drawn is kept, not drawn again


def test_a_trials_values_depend_on_its_number_not_on_which_process_asked_for_it(tmp_path):
    search = SearchConfig(name="s", params={"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                                            "batch_size": {"type": "choice", "choices": [64, 128, 256, 512]}})

    def drawn(storage: str, processes: list[int]) -> list[dict]:
        values = []
        for asks in processes:  # each "process" opens the stored study afresh, as a continued search or a second worker does
            study = open_study(search, storage, "s-0")
            values += [suggest(study, study.ask(), search) for _ in range(asks)]
        return values

    one = drawn(f"sqlite:///{tmp_path / 'one.db'}", [3])
    assert len({json.dumps(v, sort_keys=True) for v in one}) == 3  # three trials, three draws
    assert drawn(f"sqlite:///{tmp_path / 'three.db'}", [1, 1, 1]) == one  # killed and continued twice: the same trials, none repeated


def test_importances_read_int_and_list_choices_from_the_override_text_a_trial_keeps():
    space = {"batch_size": {"type": "choice", "choices": [128, 256], "log": False},
             "optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    trials = [Trial(i, "COMPLETE", {"batch_size": str(b), "optimizer.lr": repr(lr)}, [0.9 + lr], f"r{i}")
              for i, (b, lr) in enumerate([(128, 0.001), (256, 0.002), (128, 0.005), (256, 0.009)])]
    found = param_importances(Searched("s", space, trials))
    assert set(found) == {"batch_size", "optimizer.lr"} and found["optimizer.lr"] > found["batch_size"]


def test_a_study_is_named_by_its_search_fixed_settings_and_named_experiment_not_by_where_it_is_stored():
    search = SearchConfig(name="s", params={"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}})
    plain = study_name(search, ["search=s", "model=mlp"])
    assert study_name(search, ["model=mlp", "search=s", "tracking.uri=sqlite:///elsewhere.db", "hydra.sweep.dir=x", "checkpoint_dir=y"]) == plain
    # two experiments on one shared Optuna database are two studies: a search in a new experiment never finds another's trials
    named = {study_name(search, ["search=s", "model=mlp", f"tracking.experiment={e}"]) for e in ("a", "b")}
    assert len(named) == 2 and plain not in named
    assert study_name(search, ["search=s", "model=vgg"]) != plain  # a fixed setting that changes what a trial computes


def test_a_new_study_learns_exported_trials_by_number_and_two_exports_of_one_search_read_as_one():
    space = {"model.channels": {"type": "choice", "choices": ["[16,32]", "[32,64]"], "log": False},
             "schedule.epochs": {"type": "int", "low": 2, "high": 6, "log": False},
             "optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    first = Searched("s", space, [Trial(0, "COMPLETE", {"model.channels": "[32,64]", "schedule.epochs": "3", "optimizer.lr": "0.002"},
                                        [0.8, 0.85, 0.9], "r0"),
                                  Trial(1, "PRUNED", {"model.channels": "[16,32]", "schedule.epochs": "6", "optimizer.lr": "0.005"}, [0.7], "r1"),
                                  Trial(3, "KILLED", {"model.channels": "[16,32]", "schedule.epochs": "2", "optimizer.lr": "0.003"}, [0.6], "r3")],
                     "s-abc")
    study = optuna.create_study(direction="maximize")
    assert learn(study, {t.number: t for t in first.trials}, space)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]  # numbered as they were; the missing 2 and the killed 3 fail, to be asked again
    states = optuna.trial.TrialState
    assert [t.state for t in trials] == [states.COMPLETE, states.PRUNED, states.FAIL, states.FAIL]
    assert trials[0].params == {"model.channels": "[32,64]", "schedule.epochs": 3, "optimizer.lr": 0.002} and trials[0].value == 0.9
    assert trials[1].intermediate_values == {1: 0.7} and trials[0].user_attrs == {"mlflow_run_id": "r0"}
    assert not learn(study, {t.number: t for t in first.trials}, space)  # a study with trials has learned them already
    assert study.ask().number == 4

    later = Searched("s", space, [Trial(4, "COMPLETE", {"model.channels": "[16,32]", "schedule.epochs": "4", "optimizer.lr": "0.004"},
                                        [0.91], "r4")], "s-abc")
    other = Searched("t", space, [Trial(0, "COMPLETE", {}, [0.5], "q0")])
    (one, two) = merged([first, other, later])
    assert (one.name, [t.number for t in one.trials], one.study) == ("s", [0, 1, 3, 4], "s-abc") and two.name == "t"


def test_a_search_reports_its_own_confirmation_only_beside_another_searchs_exports(tmp_path):
    folder = ROOT / "results" / "search" / "runs"  # several searches' exports, each with its confirmation study
    studied = Studied([], {})
    for path in export_files([folder]):
        studied = studied + read_export(path)
    assert {r.study for r in studied.results} >= {"mlp_regularisation-confirm", "fast-confirm", "fast2-confirm"}
    text, _ = search_report(read_trials(folder / "mlp_trials.json"), studied, tmp_path, "mlp", "cmd")
    assert "for the 20 confirmation runs" in text  # 5 seeds of its baseline and 3 winners, none of fast's 10
    assert "| not recorded |" in text  # an export made before trials kept their processor class reads, and says so
    winners = text.split("## The winners")[1]
    assert [line.split("|")[1].strip() for line in winners.splitlines() if re.match(r"\| \d+ \|", line)] == ["25", "28", "32"]
    text, _ = search_report(read_trials(folder / "fast_trials.json"), studied, tmp_path, "fast", "cmd")
    assert "for the 10 confirmation runs" in text  # fast's own, not fast2's beside it (a name that begins the same)
