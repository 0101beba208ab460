"""One job: exact resume under every schedule and optimizer, the checkpoint policy, skips that name the code."""

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.optim.swa_utils import AveragedModel

from fmnist import job, ledger
from fmnist.bookkeeping import Terminated
from fmnist.config import RunSpec, run_spec
from fmnist.engine import Diverged
from fmnist.errors import UserError
from fmnist.identity import as_computed, fingerprint
from fmnist.job import Launch, train, warmed_ema
from fmnist.ledger import RunFacts
from fmnist.models import build_model, from_data
from fmnist.optimizers import OPTIMIZERS
from fmnist.schedules import SCHEDULES
from tests.conftest import compose_config, facts, runs_of, write_tiny_fmnist

EPOCH_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One store and one tiny data set for the whole module: a fresh SQLite store costs seconds to create."""
    root = tmp_path_factory.mktemp("job")
    return root, write_tiny_fmnist(root / "tiny", n_train=96, n_test=32), f"sqlite:///{root / 'mlflow.db'}"


def tiny(shared, experiment: str, *overrides: str) -> RunSpec:
    root, data, uri = shared
    return run_spec(compose_config([
        "model=mlp", "model.hidden=[16]", "batch_size=16", "data.val_size=16", "data.verify=false", f"data.root={data}",
        "progress=false", "threads=1", f"tracking.uri={uri}", f"tracking.experiment={experiment}",
        f"checkpoint_dir={root / experiment / 'checkpoints'}", *overrides,
    ]))


def stop_after(monkeypatch, epoch: int) -> None:
    """Make the job stop like a SIGTERM right after `epoch` is checkpointed and logged."""
    original = job.Training._after_epoch

    def after_epoch(self, result):
        original(self, result)
        if result.epoch == epoch:
            raise Terminated("test: stop here")

    monkeypatch.setattr(job.Training, "_after_epoch", after_epoch)


def history(uri: str, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run.info.run_id, key))


def weights(uri: str, run, folder: Path) -> dict[str, torch.Tensor]:
    path = MlflowClient(uri).download_artifacts(run.info.run_id, "model.pt", str(folder))
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
@pytest.mark.parametrize("schedule", SCHEDULES.names())
def test_resumed_equals_uninterrupted_bit_for_bit(shared, monkeypatch, tmp_path, schedule, optimizer):
    root, _, uri = shared
    overrides = [f"schedule={schedule}", "schedule.epochs=3", f"optimizer={optimizer}"]
    if optimizer in ("sgd", "rmsprop"):
        overrides.append("optimizer.momentum=0.9")  # a state that must survive the restart
    name = f"{schedule}-{optimizer}"
    launch = Launch(overrides, "s", tmp_path)
    train(tiny(shared, f"whole-{name}", *overrides), launch)

    with monkeypatch.context() as patch:
        stop_after(patch, 1)
        with pytest.raises(Terminated):
            train(tiny(shared, f"resumed-{name}", *overrides), launch)
    _, (killed,) = runs_of(uri, f"resumed-{name}")
    assert killed.info.status == "KILLED" and (root / f"resumed-{name}" / "checkpoints").glob("*.pt")
    train(tiny(shared, f"resumed-{name}", *overrides), launch)

    _, (whole,) = runs_of(uri, f"whole-{name}")
    _, (resumed,) = runs_of(uri, f"resumed-{name}")
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    for key in (*EPOCH_KEYS, "test/acc", "test/loss"):
        assert history(uri, resumed, key) == history(uri, whole, key), key
    a, b = weights(uri, whole, tmp_path / "a"), weights(uri, resumed, tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_whitened_run_takes_its_first_layer_from_its_training_split_and_resumes_with_it(shared, monkeypatch, tmp_path):
    root, data, uri = shared
    overrides = ["model=vgg", "model.channels=[4,8]", "model.first_convs=1", "model.whiten=true", "schedule.epochs=2"]
    launch = Launch(overrides, "s", tmp_path)

    def spec(experiment: str) -> RunSpec:
        return run_spec(compose_config([*overrides, "batch_size=16", "data.val_size=16", "data.verify=false", f"data.root={data}",
                                        "progress=false", "threads=1", f"tracking.uri={uri}", f"tracking.experiment={experiment}",
                                        f"checkpoint_dir={root / experiment}"]))
    train(spec("whiten-whole"), launch)
    with monkeypatch.context() as patch:
        stop_after(patch, 1)
        with pytest.raises(Terminated):
            train(spec("whiten-resumed"), launch)
    train(spec("whiten-resumed"), launch)
    (whole,), (resumed,) = (runs_of(uri, name)[1] for name in ("whiten-whole", "whiten-resumed"))
    a, b = weights(uri, whole, tmp_path / "a"), weights(uri, resumed, tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    settings = spec("whiten-whole").settings
    expected = build_model(settings.model)
    from_data(expected, settings.model, job.dataset(settings.data)[0].train.images)
    assert torch.equal(a["0.weight"], expected[0].weight.detach())  # the training split's, untouched by two epochs
    assert whole.data.params["model.whiten"] == "True"


def test_a_transient_failure_keeps_the_checkpoint_and_the_next_attempt_resumes(shared, monkeypatch, tmp_path):
    root, _, uri = shared
    original = job.Training._after_epoch

    def flaky(self, result):
        original(self, result)
        if result.epoch == 2:
            raise OSError("the network file system went away")

    monkeypatch.setattr(job.Training, "_after_epoch", flaky)
    with pytest.raises(OSError):
        train(tiny(shared, "transient", "schedule.epochs=3"), Launch([], "s", tmp_path))
    _, (failed,) = runs_of(uri, "transient")
    assert failed.info.status == "FAILED" and "checkpoint is kept" in facts(failed).failure
    assert list((root / "transient" / "checkpoints").glob("*.pt"))
    monkeypatch.undo()
    train(tiny(shared, "transient", "schedule.epochs=3"), Launch([], "s", tmp_path))
    _, (finished,) = runs_of(uri, "transient")
    assert finished.info.run_id == failed.info.run_id and finished.info.status == "FINISHED"
    assert [s for s, _ in history(uri, finished, "val/acc")] == [1, 2, 3]
    assert not list((root / "transient" / "checkpoints").glob("*.pt"))


def test_a_diverging_run_loses_its_checkpoint(shared, tmp_path):
    root, _, uri = shared
    cfg = tiny(shared, "diverge", "optimizer=sgd", "optimizer.lr=1e12", "optimizer.momentum=0.9", "schedule.epochs=2")
    with pytest.raises(Diverged):
        train(cfg, Launch([], "s", tmp_path))
    _, (failed,) = runs_of(uri, "diverge")
    assert failed.info.status == "FAILED" and "checkpoint is kept" not in facts(failed).failure
    assert not list((root / "diverge" / "checkpoints").glob("*.pt"))


def test_a_skip_names_the_commit_of_other_code_and_rerun_on_code_change_trains_again(shared, tmp_path, capsys):
    _, _, uri = shared
    cfg = lambda *more: tiny(shared, "code", "schedule.epochs=1", *more)  # noqa: E731
    train(cfg(), Launch([], "s", tmp_path))
    client, (first,) = runs_of(uri, "code")
    client.set_tag(first.info.run_id, ledger.tag("commit"), "0123456789abcdef0123")
    capsys.readouterr()
    train(cfg(), Launch([], "s", tmp_path))
    said = capsys.readouterr().err
    assert f"already finished as run {first.info.run_id}" in said and "made by commit 0123456789ab" in said
    assert len(runs_of(uri, "code")[1]) == 1
    train(cfg("rerun_on_code_change=true"), Launch([], "s", tmp_path))
    assert [r.info.status for r in runs_of(uri, "code")[1]] == ["FINISHED", "FINISHED"]


def test_the_dataset_is_read_once_per_process_and_described_as_three_inputs(tiny_data):
    from fmnist.data import DataConfig
    from fmnist.job import dataset

    first = dataset(DataConfig(root=str(tiny_data), val_size=16, verify=False, download=False))
    assert dataset(DataConfig(root=str(tiny_data), val_size=16, verify=False, download=False)) is first
    data, inputs = first
    assert [(name, rows, context) for name, _, _, rows, context in inputs] == [
        ("fashion-mnist-train", 48, "training"), ("fashion-mnist-val", 16, "validation"), ("fashion-mnist-test", 32, "test")]
    assert all(len(digest) == 16 and str(tiny_data) in source for _, digest, source, _, _ in inputs)
    other, other_inputs = dataset(DataConfig(root=str(tiny_data), val_size=8, verify=False, download=False))
    assert len(other.val) == 8 and other_inputs[1][1] != inputs[1][1]  # other content, other digest
    assert other_inputs[2][1] == inputs[2][1]  # the same test set, the same digest


def test_a_run_killed_after_logging_its_test_figures_logs_them_once_when_resumed(shared, monkeypatch, tmp_path):
    _, _, uri = shared
    original = job.Bookkeeping._end

    def killed_before_finishing(self, run, err, pruned):
        if err is None:
            raise Terminated("test: killed between the test figures and the finish")
        original(self, run, err, pruned)

    monkeypatch.setattr(job.Bookkeeping, "_end", killed_before_finishing)
    with pytest.raises(Terminated):
        train(tiny(shared, "testonce", "schedule.epochs=2"), Launch([], "s", tmp_path))
    _, (run,) = runs_of(uri, "testonce")
    assert [s for s, _ in history(uri, run, "test/acc")] == [2] and run.info.status == "RUNNING"
    monkeypatch.undo()
    train(tiny(shared, "testonce", "schedule.epochs=2"), Launch([], "s", tmp_path))
    _, (run,) = runs_of(uri, "testonce")
    assert run.info.status == "FINISHED" and [s for s, _ in history(uri, run, "test/acc")] == [2]


def test_a_checkpoint_that_no_longer_fits_the_code_starts_a_fresh_run_that_supersedes_the_old(shared, monkeypatch, tmp_path, capsys):
    root, _, uri = shared
    stop_after(monkeypatch, 1)
    with pytest.raises(Terminated):
        train(tiny(shared, "misfit", "schedule.epochs=2"), Launch([], "s", tmp_path))
    monkeypatch.undo()
    saved = next((root / "misfit" / "checkpoints").glob("*.pt"))
    state = torch.load(saved, weights_only=True)
    state["model"] = {k + "_renamed": v for k, v in state["model"].items()}  # as if the code renamed a layer since
    torch.save(state, saved)
    capsys.readouterr()
    train(tiny(shared, "misfit", "schedule.epochs=2"), Launch([], "s", tmp_path))
    assert "no longer fits this code's model or optimizer" in capsys.readouterr().err
    _, (old, new) = runs_of(uri, "misfit")
    assert new.info.status == "FINISHED" and [s for s, _ in history(uri, new, "val/acc")] == [1, 2]
    assert old.info.status == "KILLED" and old.data.tags["fmnist.superseded_by"] == new.info.run_id


def test_the_owner_closes_every_other_unfinished_run_of_its_job_whatever_host_it_names(shared, tmp_path):
    _, _, uri = shared
    cfg = tiny(shared, "orphans", "schedule.epochs=1")
    from fmnist.tracking import Tracker

    tracker = Tracker(uri, "orphans")
    orphan = tracker.start_run("an orphan", {}, RunFacts(fingerprint=cfg.fingerprint, host="node-far-away", pid=1))
    train(cfg, Launch([], "s", tmp_path))
    runs = {r.info.run_id: r for r in runs_of(uri, "orphans")[1]}
    finished = next(r for r in runs.values() if r.info.status == "FINISHED")
    assert runs[orphan.run_id].info.status == "KILLED"
    assert runs[orphan.run_id].data.tags["fmnist.superseded_by"] == finished.info.run_id


def test_a_store_that_cannot_answer_is_not_taken_for_a_missing_run(shared, monkeypatch, tmp_path):
    root, _, uri = shared
    stop_after(monkeypatch, 1)
    with pytest.raises(Terminated):
        train(tiny(shared, "outage", "schedule.epochs=2"), Launch([], "s", tmp_path))
    monkeypatch.undo()
    from mlflow.exceptions import MlflowException

    answered, original = [], MlflowClient.search_runs

    def refused_after_the_first(self, *args, **kwargs):  # the store answers the first look, then refuses the owner's
        answered.append(1)
        if len(answered) > 1:
            raise MlflowException("API request failed with error code 401 != 200: You are not authenticated", error_code="UNAUTHENTICATED")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "search_runs", refused_after_the_first)
    with pytest.raises(UserError, match="refused the login"):
        train(tiny(shared, "outage", "schedule.epochs=2"), Launch([], "s", tmp_path))
    assert len(answered) == 2  # refused at the owner's look, where the checkpoint is judged
    assert list((root / "outage" / "checkpoints").glob("*.pt"))  # kept: the store could not say the run is gone


def test_weight_averaging_is_what_is_validated_and_saved_and_resumes_bit_for_bit(shared, monkeypatch, tmp_path):
    _, _, uri = shared
    averaging = ["schedule.epochs=3", "ema=0.9"]
    launch = Launch(averaging, "s", tmp_path)
    train(tiny(shared, "ema-whole", *averaging), launch)
    with monkeypatch.context() as patch:
        stop_after(patch, 1)
        with pytest.raises(Terminated):
            train(tiny(shared, "ema-resumed", *averaging), launch)
    train(tiny(shared, "ema-resumed", *averaging), launch)
    train(tiny(shared, "ema-off", "schedule.epochs=3"), Launch(["schedule.epochs=3"], "s", tmp_path))
    (whole,), (resumed,), (off,) = (runs_of(uri, f"ema-{name}")[1] for name in ("whole", "resumed", "off"))
    for key in (*EPOCH_KEYS, "test/acc", "test/loss"):
        assert history(uri, resumed, key) == history(uri, whole, key), key
    assert history(uri, whole, "train/loss") == history(uri, off, "train/loss")  # the same training: the average only follows it
    assert history(uri, whole, "val/loss") != history(uri, off, "val/loss")  # what is validated is the average
    a, b, c = (weights(uri, run, tmp_path / name) for run, name in ((whole, "a"), (resumed, "b"), (off, "c")))
    assert a.keys() == b.keys() == c.keys() and all(torch.equal(a[k], b[k]) for k in a)  # a plain model's weights, resumed exactly
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert whole.data.params["ema"] == "0.9"


def test_a_setting_added_later_leaves_the_fingerprints_of_earlier_runs_alone_at_its_old_value(shared):
    spec = tiny(shared, "fingerprints")
    assert fingerprint({k: v for k, v in spec.values.items() if k != "ema"}) == spec.fingerprint  # a run made before `ema` existed
    assert tiny(shared, "fingerprints", "ema=0.5").fingerprint != spec.fingerprint
    vgg = run_spec(compose_config(["model=vgg"]))
    added = ("first_convs", "pool_ceil", "global_pool", "whiten")
    before = vgg.values | {"model": {k: v for k, v in vgg.values["model"].items() if k not in added}}
    assert fingerprint(before) == vgg.fingerprint  # a VGG run made before `model.first_convs` and the pool settings existed
    for changed in ("model.first_convs=1", "model.pool_ceil=true", "model.global_pool=true"):
        assert run_spec(compose_config(["model=vgg", changed])).fingerprint != vgg.fingerprint
    narrow = ["model=vgg", "model.channels=[16,32]"]  # whitening takes a first stage of at most 18
    assert run_spec(compose_config([*narrow, "model.whiten=true"])).fingerprint != run_spec(compose_config(narrow)).fingerprint
    # read back, an old run's params show the value it computed with, where the setting applies
    assert as_computed({"model.name": "vgg"}) == {"model.name": "vgg", "model.first_convs": "2", "model.pool_ceil": "False",
                                                  "model.global_pool": "False", "model.whiten": "False", "ema": "0.0"}
    assert as_computed({"model.name": "mlp", "ema": "0.9"}) == {"model.name": "mlp", "ema": "0.9"}
    assert as_computed({}) == {}  # a sweep's parent


def test_test_set_evaluations_at_earlier_epochs_leave_the_training_unchanged(shared, tmp_path):
    _, _, uri = shared
    train(tiny(shared, "tested-at-end", "schedule.epochs=3"), Launch(["schedule.epochs=3"], "s", tmp_path))
    train(tiny(shared, "tested-each-epoch", "schedule.epochs=3", "study.test_at=[1,2]"), Launch(["schedule.epochs=3"], "s", tmp_path))
    (end,), (each,) = (runs_of(uri, name)[1] for name in ("tested-at-end", "tested-each-epoch"))
    assert [step for step, _ in history(uri, each, "test/acc")] == [1, 2, 3] and len(history(uri, end, "test/acc")) == 1
    for key in (*EPOCH_KEYS, "test/loss"):
        assert history(uri, each, key)[-1] == history(uri, end, key)[-1], key
    a, b = weights(uri, end, tmp_path / "a"), weights(uri, each, tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "experiment").glob("*.yaml")))
def test_every_preset_trains_an_epoch_on_tiny_data(shared, tmp_path, preset):
    root, data, uri = shared
    narrow = ["model.channels=[4,8]"] if compose_config([f"experiment={preset}"]).model.name == "vgg" else []
    spec = run_spec(compose_config([
        f"experiment={preset}", *narrow, "schedule.epochs=1", "batch_size=16", "data.train_size=null", "data.test_size=null",
        "data.val_size=16", "data.verify=false", f"data.root={data}", "progress=false", "threads=1", f"tracking.uri={uri}",
        f"tracking.experiment=preset-{preset}", f"checkpoint_dir={root / preset}",
    ]))
    assert train(spec, Launch([f"experiment={preset}"], "s", tmp_path)) is not None
    _, (run,) = runs_of(uri, f"preset-{preset}")
    assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics


def test_the_weight_average_follows_the_weights_early_and_settles_to_its_decay():
    model = torch.nn.Linear(1, 1, bias=False)
    averaged = AveragedModel(model, multi_avg_fn=warmed_ema(0.99), use_buffers=True)
    seen = []
    for step in range(2000):
        with torch.no_grad():
            model.weight.fill_(float(step))
        averaged.update_parameters(model)
        seen.append(averaged.module.weight.item())
    assert seen[:2] == [0.0, pytest.approx(1 - 2 / 11)]  # a copy, then 1 - min(0.99, 2/11) of the way
    assert seen[20] > 20 - 4  # early on it lags by about a tenth of the steps, not by 1/(1 - decay) = 100
    assert 1999 - seen[-1] == pytest.approx(0.99 / 0.01, rel=0.02)  # settled: a fixed decay's lag on a ramp
