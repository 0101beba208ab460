"""A search's report: every trial (its values, validation accuracy, state, epochs run), the optimization
history and the parameters' importances as figures, and, where the winners were confirmed on fresh
seeds, each winner's search score beside what its confirmation showed."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from fmnist import plots
from fmnist.errors import UserError
from fmnist.evidence import evidence
from fmnist.report.render import markdown_table, write_csv
from fmnist.results import Studied
from fmnist.search import as_params, confirmation_study, distributions
from fmnist.tracking import RunRecord, Tracker


def values_of(run: RunRecord) -> dict[str, str]:
    """The values a trial was given (as its overrides wrote them), or its params where the sweeper never told them."""
    return dict(run.facts.trial.values) if run.facts.trial and run.facts.trial.values else dict(run.params)


def trial_runs(runs: list[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.facts.trial is not None]


@dataclass
class Trial:
    """One trial of a search as the report needs it (from the store, or from a search's export)."""

    number: int
    state: str  # COMPLETE, PRUNED, RUNNING, KILLED or FAILED
    values: dict[str, str]  # the values it was given, as overrides wrote them
    curve: list[float]  # val/acc per epoch run
    run_id: str
    seconds: float = 0.0  # training time of the epochs run
    processor: str = ""  # the class of the host that trained it (a search continued elsewhere mixes them); "" in older exports


@dataclass
class Searched:
    name: str
    space: dict  # the searched parameters and their ranges
    trials: list[Trial]
    study: str = ""  # its Optuna study (the search and the command's fixed settings); "" in exports made before it was kept


def merged(searches: list[Searched]) -> list[Searched]:
    """Exports of one search made one after another (a search continued on another machine from the first's export) as
    one search, in trial order; where two hold the same trial, the later file's counts."""
    found: dict[str, Searched] = {}
    for s in searches:
        known = found.get(s.name, Searched(s.name, s.space, [], s.study))
        trials = {t.number: t for t in known.trials} | {t.number: t for t in s.trials}
        found[s.name] = Searched(s.name, known.space or s.space, [trials[n] for n in sorted(trials)], known.study or s.study)
    return list(found.values())


def _state(run: RunRecord) -> str:
    if run.status == "FINISHED":
        return run.facts.trial.state or "COMPLETE"
    return {"RUNNING": "RUNNING", "KILLED": "KILLED"}.get(run.status, "FAILED")


def from_store(tracker: Tracker, runs: list[RunRecord]) -> Searched:
    """The trials among `runs`; a trial run twice (killed, superseded) counts by its latest run."""
    trials = sorted(trial_runs(runs), key=lambda r: (r.facts.trial.number, r.start_time))
    latest = {r.facts.trial.number: r for r in trials}
    space = next((dict(r.facts.trial.space) for r in trials if r.facts.trial.space), {})
    name = next((r.facts.trial.search for r in trials if r.facts.trial.search), "search")
    study = next((r.facts.trial.optuna_study for r in trials if r.facts.trial.optuna_study), "")
    curves = tracker.histories([r.run_id for r in latest.values()], ("val/acc", "epoch/seconds"))
    return Searched(name, space, [Trial(n, _state(r), values_of(r), list(curves[r.run_id]["val/acc"].values()), r.run_id,
                                        sum(curves[r.run_id]["epoch/seconds"].values()), r.facts.processor or "") for n, r in sorted(latest.items())],
                    study)


def write_trials(searched: Searched, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = {"search": searched.name, "space": searched.space} | ({"study": searched.study} if searched.study else {})
    path.write_text(json.dumps(kept | {"trials": [asdict(t) for t in searched.trials]}, indent=1))
    return path


def read_trials(path: Path) -> Searched:
    try:
        raw = json.loads(path.read_text())
        return Searched(raw["search"], raw["space"], [Trial(**t) for t in raw["trials"]], raw.get("study", ""))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a search's trials export ({type(err).__name__}: {err}); export the search again") from None


def search_report(searched: Searched, studied: Studied, out_dir: Path, stem: str, command: str) -> tuple[str, list[Path]]:
    """The search's tables and figures (written; the text is returned); `studied` holds the confirmation's runs, if any."""
    keys = list(searched.space) or sorted({k for t in searched.trials for k in t.values})
    rows, history = [], []
    for t in searched.trials:
        rows.append({"trial": t.number, **{k: _short(t.values.get(k, "")) for k in keys}, "val/acc": f"{t.curve[-1]:.4f}" if t.curve else "—",
                     "state": t.state, "epochs run": len(t.curve), "training min": f"{t.seconds / 60:.1f}",
                     "processor": t.processor or "not recorded", "run": t.run_id[:8]})
        history.append((t.number, t.curve[-1] if t.curve else None, t.state))
    files = [out_dir / f"{stem}_trials.md", out_dir / f"{stem}_trials.csv", out_dir / f"{stem}_history.png", out_dir / f"{stem}_importance.png"]
    write_csv(rows, files[1])
    plots.optimization_history(history, files[2], title=f"{searched.name}: validation accuracy of each trial")
    importances = param_importances(searched)
    plots.importances(importances, files[3], title=f"{searched.name}: parameter importances (fANOVA on completed trials)")
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    epochs = sum(len(t.curve) for t in searched.trials)
    confirm_seconds = {r.run_id: r.seconds for r in studied.results if r.study == confirmation_study(searched.name)}
    cost = (f"Training time: {sum(t.seconds for t in searched.trials) / 60:.1f} min for the trials ({epochs} epochs; "
            f"{sum(len(t.curve) for t in searched.trials if t.state == 'PRUNED')} of them in pruned trials)"
            + (f", {sum(confirm_seconds.values()) / 60:.1f} min for the {len(confirm_seconds)} confirmation runs" if confirm_seconds else "")
            + ".\n\n")
    text = (
        f"# The search {searched.name}: {len(rows)} trials ({len(complete)} completed, {sum(r['state'] == 'PRUNED' for r in rows)} pruned)\n\n"
        f"Made by `{command}`.\n\n"
        "The objective is validation accuracy at a trial's last epoch (one seed, the search's own); the test set played no part.\n\n"
        f"{markdown_table(rows)}\n"
        + (f"Parameter importances: {', '.join(f'{k} {v:.2f}' for k, v in importances.items())} (Optuna's fANOVA evaluator, seed 0, on "
           "the completed trials; the Optuna dashboard computes its own, with another seed, so its figures may differ).\n\n"
           if importances else "")
        + cost
        + curse_section(searched, studied)
    )
    files[0].write_text(text)
    return text, files


def _short(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def param_importances(searched: Searched) -> dict[str, float]:
    """fANOVA importances over the completed trials, from an Optuna study rebuilt in memory (the search's storage is not needed)."""
    import optuna

    made = distributions(searched.space)
    study = optuna.create_study(direction="maximize")
    for t in searched.trials:
        params = as_params(t.values, made) if t.state == "COMPLETE" and t.curve else None
        if params is not None:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=made, value=t.curve[-1]))
    if len(study.trials) < 2 or not made:
        return {}
    return dict(optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)))


def curse_section(searched: Searched, studied: Studied) -> str:
    """Each confirmed winner: its search score (one seed) beside its confirmation (fresh seeds, against the baseline)."""
    confirm = [r for r in studied.results if r.study == confirmation_study(searched.name)]  # its own, not another search's
    if not confirm:
        return ""
    ordered = sorted(confirm, key=lambda r: r.start_time)
    ev = evidence(ordered, studied.records[ordered[-1].run_id])
    base = ev.cells["baseline"]
    rows = []
    for name, cell in ev.cells.items():
        if not name.startswith("trial"):
            continue
        number = int(name.removeprefix("trial"))
        search_score = next((t.curve[-1] for t in searched.trials if t.number == number and t.curve), None)
        val = sum(r.val_acc for r in cell.by_seed.values()) / len(cell.by_seed)
        d = ev.outcome.decisions[name]
        seeds = sorted(set(cell.by_seed) & set(base.by_seed))
        diff = sum(100 * (cell.by_seed[s].test_acc - base.by_seed[s].test_acc) for s in seeds) / max(1, len(seeds))
        rows.append({
            "trial": number, "search val/acc (1 seed)": f"{search_score:.4f}" if search_score is not None else "—",
            "confirmed val/acc (mean)": f"{val:.4f}", "fresh seeds": len(cell.by_seed),
            "search score − confirmed, pp": f"{100 * (search_score - val):+.2f}" if search_score is not None else "—",
            "test Δ vs baseline, pp [95% CI]": f"{diff:+.2f} [{d.rci[0]:+.2f}, {d.rci[1]:+.2f}]" if d.rci else f"{diff:+.2f}",
            "p_holm": f"{d.q_holm:.2g}" if d.q_holm is not None else "—", "verdict": d.verdict,
        })
    return (
        "## The winners, confirmed on fresh seeds\n\n"
        "Each of the best trials trained again on seeds the search never used, beside the baseline (its table follows). "
        "The search score is what picked it, on one seed, so it is biased upwards by the picking itself (the winner's curse); "
        "the confirmed figures are not.\n\n"
        f"{markdown_table(rows)}\n"
    )
