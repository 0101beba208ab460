"""Writing tables: Markdown, CSV and LaTeX from rows of plain values."""

import csv
from pathlib import Path


def num(value: float | None, signed: bool = False, digits: int = 2) -> str:
    """A figure as every table prints it: 2 decimals, a sign where asked, — for none (or NaN)."""
    if value is None or value != value:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def p_text(value: float | None) -> str:
    return "—" if value is None else "<1e-300" if value == 0 else f"{value:.2g}"


def interval(low: float | None, high: float | None) -> str:
    return "—" if low is None else f"[{num(low, True)}, {num(high, True)}]"


def format_cell(key: str, value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if key == "seconds" else f"{value:.4f}"
    return str(value)


def markdown_table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "(no runs)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(format_cell(k, row[k]) for k in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["run"])
        writer.writeheader()
        writer.writerows(rows)


def latex_table(header: list[str], rows: list[list[str]], caption: str, align: str) -> str:
    def tex(text: str) -> str:
        return text.replace("%", r"\%").replace("±", r"$\pm$").replace("—", "--").replace("_", r"\_").replace("Δ", r"$\Delta$")

    body = [" & ".join(tex(c) for c in row) + r" \\" for row in rows]
    return "\n".join([
        r"\begin{table}[t]", r"\centering", rf"\caption{{{tex(caption)}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
        " & ".join(tex(h) for h in header) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", "",
    ])
