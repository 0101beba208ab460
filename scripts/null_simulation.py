"""How often each test calls a null cell better or worse: pooled McNemar vs a paired t-test over seeds.

    python scripts/null_simulation.py --studies 1000 --out results/stats/null_simulation.md

Each simulated study has 5 seeds and 10,000 test images; the cell's effect is zero on average but
varies from seed to seed with the SD in the first column (fmnist/simulate.py).
"""

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from fmnist.simulate import publish, simulate_null_studies
from fmnist.stats import paired_t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    lines = [
        "| seed-level SD of the effect, points | SD of per-seed differences, points | pooled McNemar: false verdicts | paired t over seeds: false verdicts |",
        "|---:|---:|---:|---:|",
    ]
    for seed_sd in (0.0, 0.1, 0.22, 0.3, 0.47):
        diffs, pooled = simulate_null_studies(args.studies, seed_sd)
        spread = np.mean([np.std(d, ddof=1) for d in diffs])
        t_rate = np.mean([paired_t(list(d), 0.3).p < 0.05 for d in diffs])  # a better or worse call by the plain test
        mcnemar_rate = np.mean([p < 0.05 for p in pooled])
        lines.append(f"| {seed_sd:.2f} | {spread:.2f} | {mcnemar_rate:.1%} | {t_rate:.1%} |")
    command = shlex.join(["python", "scripts/null_simulation.py", *sys.argv[1:]])
    text = (
        f"# False verdicts on null cells, {args.studies} simulated studies per row (α = 0.05)\n\nMade by `{command}`.\n\n"
        + "\n".join(lines) + "\n"
    )
    publish(text, args.out)


if __name__ == "__main__":
    main()
