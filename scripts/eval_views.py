"""Would more test-time views help a study's runs? Their own weights, evaluated again on the validation split only.

For each finished run of an experiment that left its weights (model.pt), validation accuracy with the logits averaged
over: the run's own views (the image, and its mirror under transform.eval_flip); those and the image moved one pixel
left and right; and also up and down, each moved image with its mirror where the run mirrors. The test set plays no
part: a choice is made on validation and reported on test once, by a study of the chosen setting.

    python scripts/eval_views.py --tracking-uri sqlite:///mlflow.db --experiment fast_fp32_pool --out results/fast_fp32_pool/eval_views.md
"""

import argparse
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per downloaded file says nothing here
from mlflow.tracking import MlflowClient  # noqa: E402

from fmnist.credentials import refuse_credentials
from fmnist.data import DataConfig
from fmnist.errors import UserError
from fmnist.job import dataset
from fmnist.ledger import RunFacts
from fmnist.models import MODELS, build_model
from fmnist.transforms import TransformConfig, build_transform

SHIFTS = {"own views": [(0, 0)], "+ 1 px left/right": [(0, 0), (0, 1), (0, -1)],
          "+ 1 px left/right/up/down": [(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0)]}


def moved(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """uint8 images moved by (dy, dx) pixels, the side they leave filled with background (0)."""
    padded = F.pad(images, (1, 1, 1, 1))
    return padded[:, 1 - dy:29 - dy, 1 - dx:29 - dx]


def accuracies(config: dict, weights: dict) -> dict[str, float]:
    model = build_model(MODELS.config(config["model"]))
    model.load_state_dict(weights)
    model.eval()
    transform = build_transform(TransformConfig(**config["transform"]))
    val = dataset(DataConfig(**config["data"]))[0].val
    with torch.no_grad():  # each moved image's logits once (with its mirror's, where the run mirrors), then summed per view set
        each = {shift: sum(model(view) for view in transform.eval_views(moved(val.images, *shift))) for shift in max(SHIFTS.values(), key=len)}
    return {name: 100 * (sum(each[shift] for shift in shifts).argmax(1) == val.labels).float().mean().item() for name, shifts in SHIFTS.items()}


def cell_of(run) -> str:
    """The study cell the run stands for (its last reading's), else its name."""
    study = RunFacts.from_tags(run.data.tags).study
    return study.readings[-1].cell if study else run.info.run_name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--out", type=Path, required=True, help="the Markdown file to write")
    args = parser.parse_args(argv)
    try:
        refuse_credentials(args.tracking_uri, "--tracking-uri")  # the command is written into the file
    except UserError as err:
        sys.exit(str(err))
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        sys.exit(f"no experiment {args.experiment} in {args.tracking_uri}; name one that holds finished runs")
    runs = [r for r in client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'", max_results=5000)
            if "model.name" in r.data.params]
    rows, by_cell = [], defaultdict(list)
    with tempfile.TemporaryDirectory() as folder:
        for run in sorted(runs, key=lambda r: (cell_of(r), int(r.data.params.get("seed", 0)))):
            config = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml", folder)).read_text())
            weights = torch.load(client.download_artifacts(run.info.run_id, "model.pt", folder), weights_only=True)
            found = accuracies(config, weights)
            cell = cell_of(run)
            by_cell[cell].append(found)
            logged = 100 * run.data.metrics["val/acc"]
            rows.append(f"| {cell} | {config['seed']} | {logged:.2f} | " + " | ".join(f"{v:.2f}" for v in found.values()) + " |")
    if not rows:
        sys.exit(f"experiment {args.experiment} holds no finished training run; train one first")
    names = list(SHIFTS)
    summary = []
    for cell, found in by_cell.items():
        gains = [[f[name] - f[names[0]] for f in found] for name in names[1:]]
        summary.append(f"| {cell} | {len(found)} | {statistics.mean(f[names[0]] for f in found):.2f} | " + " | ".join(
            f"{statistics.mean(g):+.2f} ({min(g):+.2f} to {max(g):+.2f})" for g in gains) + " |")
    every = {name: statistics.mean(f[name] - f[names[0]] for found in by_cell.values() for f in found) for name in names[1:]}
    views = "/".join(str(len(s)) for s in SHIFTS.values())
    body = "\n".join([
        f"Validation accuracy (%) of each finished run of experiment `{args.experiment}`, its weights evaluated again with the "
        f"logits averaged over more views; the test set plays no part. Moved images count {views} times the run's own views "
        "(which are the image, and its mirror where the run set `transform.eval_flip`).",
        "",
        "| cell | runs | own views: val acc % | " + " | ".join(f"{name}: Δ pp, mean (min to max)" for name in names[1:]) + " |",
        "|---|---:|---:|" + "---|" * (len(names) - 1),
        *summary,
        "",
        "Over every run, on average: " + "; ".join(f"{name} {gain:+.2f} points" for name, gain in every.items()) + ".",
        "",
        "| cell | seed | val acc % as the run logged it | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
        *rows,
    ])
    command = f"python scripts/eval_views.py --tracking-uri {args.tracking_uri} --experiment {args.experiment} --out {args.out}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# More test-time views, on validation: {args.experiment}\n\nMade by `{command}`.\n\n{body}\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
