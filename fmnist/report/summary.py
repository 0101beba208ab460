"""The results prose of the docs (docs/results.md), written from the committed tables so that no number in it can drift.

    python -m fmnist.report.summary --readme docs/results.md  # rewrite the block between the markers
    python -m fmnist.report.summary                            # print it

For each committed study table (results/<study>/<study>_<model>.csv, as `python -m fmnist.report --from ...`
writes them): a compact table per model, one paragraph per model saying what the design decided, what it
stopped and why, and what is still open; for table2, the original study's claims against every model.
Every figure is read from those CSVs and printed as the tables print it.
"""

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from fmnist.errors import UserError
from fmnist.report.render import interval, num, p_text
from fmnist.study import COMBINED, levels_of

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- results: written by `python -m fmnist.report.summary --readme docs/results.md` from the committed tables; do not edit -->"
END = "<!-- results: end -->"
MODELS = {"mlp": "MLP", "vgg": "VGG", "resnet18": "ResNet-18"}


@dataclass
class Cell:
    """One row of a committed study table (its CSV), figures as the table prints them."""

    row: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.row[key]

    def value(self, key: str) -> float | None:
        return None if self.row[key] == "" else float(self.row[key])

    def number(self, key: str, signed: bool = False) -> str:
        return num(self.value(key), signed).replace("-", "−")

    def interval(self) -> str:
        return "" if self.row["rci_low"] == "" else " " + interval(self.value("rci_low"), self.value("rci_high")).replace("-", "−")

    def p(self, key: str) -> str:
        return p_text(self.value(key))

    @property
    def secondary(self) -> bool:
        return self.row["factor"] == "secondary"


def read_table(path: Path) -> list[Cell]:
    try:
        with path.open(newline="") as f:
            return [Cell(row) for row in csv.DictReader(f)]
    except OSError as err:
        raise UserError(f"cannot read the committed table {path} ({err.strerror or err}); rebuild it with its Made-by command") from None


def model_table(cells: list[Cell]) -> str:
    lines = ["| cell | n | test acc % | Δ pp [95% repeated CI] | q_holm | verdict | stage |", "|---|---|---|---|---|---|---|"]
    for c in cells:
        if c.secondary:
            continue
        delta = "" if c["cell"] == "baseline" else f"{c.number('diff', True)}{c.interval()}"
        verdict = "" if c["verdict"] == "reference" else c["verdict"]
        lines.append(f"| {c['cell']} | {c['n_seeds']} | {c.number('test_acc_mean')} ± {c.number('test_acc_std')} | {delta} | "
                     f"{'' if c['cell'] == 'baseline' else c.p('q_holm')} | {verdict} | {c['stage']} |")
    return "\n".join(lines)


def _listed(cells: list[Cell], with_chance: bool = False) -> str:
    parts = []
    for c in cells:
        extra = f", stage {c['stage']}" if c["stage"] else ""
        if with_chance and c["chance"]:
            extra += f"; about {float(c['chance']):.0%} chance to show ±{c.effect} from there"
        parts.append(f"{c['cell']} ({c.number('diff', True)}{extra})")
    return ", ".join(parts)


def paragraph(label: str, cells: list[Cell], effect: str) -> str:
    """What the design says of one model's table, in words made of the table's own figures."""
    for c in cells:
        c.effect = effect
    main = [c for c in cells if not c.secondary and c["cell"] != "baseline"]
    by = {v: [c for c in main if c["verdict"] == v] for v in ("better", "worse", "equivalent", "identical", "futile", "undecided", "open")}
    said = []
    for verdict in ("better", "worse", "equivalent", "undecided"):
        if by[verdict]:
            said.append(f"{verdict}: {_listed(by[verdict])}")
    if by["identical"]:
        said.append(f"identical to the baseline on every test image: {', '.join(c['cell'] for c in by['identical'])}")
    if by["futile"]:
        said.append(f"stopped as futile: {_listed(by['futile'], with_chance=True)}")
    if by["open"]:
        said.append("open: " + "; ".join(f"{c['cell']} ({c.number('diff', True)} over {c['n_seeds']} seeds; {c['reason']})" for c in by["open"]))
    secondary = [c for c in cells if c.secondary]
    text = f"**{label}**: " + "; ".join(said) + "."
    if secondary:
        text += " Secondary comparisons: " + "; ".join(
            f"{c['cell']} {c.number('diff', True)}{c.interval()}, {c['verdict']}" for c in secondary) + "."
    return text


def claims(tables: dict[str, list[Cell]], study_file: Path) -> str:
    """The original study's claims (its per-cell Δ from reference_acc) against each model's verdict."""
    from fmnist.report.cli import read_study_file

    study = read_study_file(study_file)
    base = study.baseline.reference_acc
    models = [m for m in MODELS if m in tables]
    lines = ["| the study's cell (its Δ: ResNet-18, 224 px, one run) | " + " | ".join(MODELS[m] for m in models) + " |",
             "|---|" + "---|" * len(models)]
    for levels in study.factors.values():
        for name, level in levels.items():
            theirs = f"{level.reference_acc - base:+.2f}".replace("-", "−") if level.reference_acc is not None and base is not None else "no figure"
            row = [f"{name} ({theirs})"]
            for m in models:
                found = next((c for c in tables[m] if c["cell"] == name and not c.secondary), None)
                row.append("—" if found is None else f"{found['verdict']}: {found.number('diff', True)}" + (f" (stage {found['stage']})" if found["stage"] else ""))
            lines.append("| " + " | ".join(row) + " |")
    combined = [next((c for c in tables[m] if c["cell"] == COMBINED), None) for m in models]
    row = [f"combined ({' + '.join(study.choice.levels)}: {study.choice.reference_acc - base:+.2f})".replace("-", "−")]
    for c in combined:
        row.append("not run (validation chose no combination of two or more levels)" if c is None else
                   f"{' + '.join(levels_of(COMBINED, c['level']))}: {c['verdict']}, {c.number('diff', True)}" + (f" (stage {c['stage']})" if c["stage"] else ""))
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary(root: Path = ROOT) -> str:
    parts = [BEGIN, ""]
    table2 = {m: read_table(root / "results" / "table2" / f"table2_{m}.csv") for m in MODELS if (root / "results" / "table2" / f"table2_{m}.csv").exists()}
    effect = _effect(root / "conf" / "study" / "table2.yaml")
    parts += ["The original study's cells against each model's verdict (Δ in points against the model's own baseline, over the paired "
              "seeds; from `results/table2/table2_<model>.csv`):", "", claims(table2, root / "conf" / "study" / "table2.yaml"), ""]
    for m, cells in table2.items():
        parts += [paragraph(MODELS[m], cells, effect), "", model_table(cells), ""]
    reg = root / "results" / "regularisation" / "regularisation_mlp.csv"
    if reg.exists():
        parts += ["The regularisation study (`results/regularisation/regularisation_mlp.csv`):", "",
                  paragraph("MLP", read_table(reg), _effect(root / "conf" / "study" / "regularisation.yaml")), "", model_table(read_table(reg)), ""]
    parts.append(END)
    return "\n".join(parts)


def _effect(study_file: Path) -> str:
    from fmnist.report.cli import read_study_file

    return f"{read_study_file(study_file).effect:g}"


def rewrite(readme: Path, text: str) -> None:
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        raise UserError(f"{readme} has no results block (a line `{BEGIN}` and a line `{END}`); add both where the results go")
    head, rest = content.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + text + tail)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fmnist.report.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, help="rewrite the results block of this file instead of printing it")
    args = parser.parse_args(argv)
    try:
        text = summary()
        if args.readme:
            rewrite(args.readme, text)
        else:
            print(text)
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
