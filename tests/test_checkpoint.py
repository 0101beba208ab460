import os

import pytest
import torch

from fmnist import checkpoint
from fmnist.engine import EpochResult
from fmnist.errors import NoSpace
from fmnist.models import MLPConfig, build_model


def make_state(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(MLPConfig(hidden=[8]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    optimizer.step()
    return model, optimizer, torch.Generator().manual_seed(seed)


def test_checkpoint_round_trip_restores_model_optimizer_and_generators(tmp_path):
    model, optimizer, generator = make_state()
    history = [EpochResult(1, 0.5, 0.8, 0.4, 0.85, 2.0)]
    path = tmp_path / "ck" / "abc.pt"
    checkpoint.save(checkpoint.capture("run-1", "abc", history, model, optimizer, generator), path)
    expected_draw = torch.rand(3, generator=generator)
    expected_global = torch.rand(3)

    loaded = checkpoint.load(path)
    assert (loaded.run_id, loaded.epoch, loaded.history[0]["val_acc"]) == ("run-1", 1, 0.85)
    other_model, other_optimizer, other_generator = make_state(seed=1)
    checkpoint.restore(loaded, other_model, other_optimizer, other_generator)
    for a, b in zip(model.state_dict().values(), other_model.state_dict().values()):
        assert torch.equal(a, b)
    assert other_optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert torch.equal(torch.rand(3, generator=other_generator), expected_draw)
    assert torch.equal(torch.rand(3), expected_global)
    assert not list(path.parent.glob("*.partial"))


class Foreign:
    pass


@pytest.mark.parametrize(
    "write,message",
    [
        (lambda p: p.write_bytes(b"\x80\x02garbage"), "unreadable"),
        (lambda p: torch.save({"weights": torch.zeros(2)}, p), "not an fmnist checkpoint"),
        (lambda p: torch.save(Foreign(), p), "unreadable"),  # weights_only refuses arbitrary objects
    ],
)
def test_truncated_or_foreign_files_are_refused_with_a_message(tmp_path, write, message):
    path = tmp_path / "x.pt"
    write(path)
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(path)


def test_a_truncated_checkpoint_is_refused(tmp_path):
    model, optimizer, generator = make_state()
    path = tmp_path / "abc.pt"
    checkpoint.save(checkpoint.capture("run-1", "abc", [], model, optimizer, generator), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        checkpoint.load(path)


@pytest.mark.parametrize("errno,raised,message", [
    (28, NoSpace, "no space left on the disk of the checkpoint folder .*its last checkpoint is kept"),
    (5, OSError, "Input/output error"),
])
def test_a_write_that_fails_leaves_the_old_checkpoint_and_no_partial_file(tmp_path, monkeypatch, errno, raised, message):
    model, optimizer, generator = make_state()
    path = tmp_path / "abc.pt"
    checkpoint.save(checkpoint.capture("run-1", "abc", [], model, optimizer, generator), path)
    before = path.read_bytes()

    def failing_disk(*args, **kwargs):
        raise OSError(errno, os.strerror(errno))

    monkeypatch.setattr(checkpoint.os, "fsync", failing_disk)  # the data never reaches the disk
    with pytest.raises(raised, match=message):
        checkpoint.save(checkpoint.capture("run-1", "abc", [EpochResult(1, 0.5, 0.8, 0.4, 0.85, 2.0)], model, optimizer, generator), path)
    assert path.read_bytes() == before and not list(tmp_path.glob("*.partial"))


def test_partial_files_of_a_killed_writer_are_cleaned_by_the_next_owner(tmp_path):
    path = tmp_path / "abc.pt"
    left = [tmp_path / "abc.pt.node.123.deadbeef.partial", tmp_path / "abc.pt.node.456.cafe.partial"]
    for p in left:
        p.write_bytes(b"half a checkpoint")
    (tmp_path / "other.pt.node.1.x.partial").write_bytes(b"another job's")
    assert sorted(checkpoint.clean_partials(path)) == sorted(left)
    assert [p.name for p in tmp_path.iterdir()] == ["other.pt.node.1.x.partial"]


def test_a_checkpoint_that_no_longer_fits_the_model_is_refused_in_one_sentence(tmp_path):
    model, optimizer, generator = make_state()
    path = tmp_path / "abc.pt"
    checkpoint.save(checkpoint.capture("run-1", "abc", [], model, optimizer, generator), path)
    wider = build_model(MLPConfig(hidden=[16]))  # the code changed the model's shape since
    with pytest.raises(checkpoint.CheckpointError, match="the checkpoint of run run-1 no longer fits this code's model or optimizer"):
        checkpoint.restore(checkpoint.load(path), wider, torch.optim.Adam(wider.parameters()), torch.Generator())
