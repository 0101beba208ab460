"""scripts/eval_views.py: a study's runs evaluated again on validation with more test-time views."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import cli, store, write_tiny_fmnist

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import eval_views  # noqa: E402


def test_a_moved_image_is_the_image_one_pixel_over_with_background_where_it_left():
    images = torch.arange(2 * 28 * 28, dtype=torch.int64).remainder(255).add(1).to(torch.uint8).reshape(2, 28, 28)
    right = eval_views.moved(images, 0, 1)
    assert torch.equal(right[:, :, 1:], images[:, :, :-1]) and not right[:, :, 0].any()
    up = eval_views.moved(images, -1, 0)
    assert torch.equal(up[:, :-1], images[:, 1:]) and not up[:, -1].any()


@pytest.mark.slow
def test_a_runs_own_views_score_what_it_logged_and_the_moved_views_are_added(tmp_path):
    uri, data = store(tmp_path), write_tiny_fmnist(tmp_path / "tiny", n_train=256)
    done = cli(tmp_path, "model=vgg", "model.channels=[4,8]", "transform.eval_flip=true", "schedule.epochs=2", "batch_size=32",
               "data.val_size=64", "data.verify=false", f"data.root={data}", "progress=false", "threads=1", f"tracking.uri={uri}",
               "tracking.experiment=views")
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "views.md"
    script = [sys.executable, str(ROOT / "scripts" / "eval_views.py")]
    made = subprocess.run([*script, "--tracking-uri", uri, "--experiment", "views", "--out", str(out)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    text = out.read_text()
    (row,) = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ") and line.split("|")[2].strip() == "0"]
    logged, own, across, both = (float(v) for v in row[2:])
    assert own == logged  # the run's weights and views, evaluated again, score what the run logged
    assert all(0 <= v <= 100 for v in (across, both)) and "test" not in row
    assert "+ 1 px left/right/up/down: Δ pp" in text and "the test set plays no part" in text

    for args, says in ((["--tracking-uri", "http://me:secret@localhost:1/", "--experiment", "views"], "holds a user name and password"),
                       (["--tracking-uri", uri, "--experiment", "none"], "no experiment none in")):
        refused = subprocess.run([*script, *args, "--out", str(tmp_path / "x.md")], capture_output=True, text=True, cwd=tmp_path)
        assert refused.returncode == 1 and says in refused.stderr and "secret" not in refused.stderr + refused.stdout
        assert "Traceback" not in refused.stderr
