"""Which runs a report covers: the latest sweep, one sweep, every run, or an MLflow filter."""

from fmnist.errors import UserError
from fmnist.tracking import RunRecord, Tracker


def select_runs(tracker: Tracker, sweep: str | None, all_runs: bool, filter_string: str) -> tuple[list[RunRecord], str, str | None]:
    """The runs to compare, a name for the report files, and the sweep's parent run (if the selection is one sweep)."""
    if all_runs or filter_string:
        return tracker.runs(filter_string), "all" if all_runs and not filter_string else "filtered", None
    if sweep is None:
        sweep = latest_sweep(tracker)
    parent = tracker.parent(sweep)
    runs = tracker.sweep_runs(sweep)
    known = {r.run_id for r in runs}
    for run_id in stand_ins(parent) if parent else []:  # the finished runs that stand for the sweep's skipped jobs
        run = tracker.get(run_id)
        if run is not None and run.run_id not in known:
            runs.append(run)
            known.add(run.run_id)
    if not runs:
        raise UserError(f"no runs with sweep id '{sweep}'")
    return sorted(runs, key=lambda r: r.start_time), f"sweep_{sweep}", parent.run_id if parent else None


def latest_sweep(tracker: Tracker) -> str:
    """The sweep id of the latest multirun (its parent run) or single run, whichever started last."""
    latest = tracker.runs()
    parents = tracker.parents()
    if not latest and not parents:
        raise UserError("the experiment has no runs yet; start one with `python -m fmnist.run`")
    latest_run = max(latest[-1:] + parents[-1:], key=lambda r: r.start_time)
    return latest_run.sweep.sweep_id if latest_run.sweep else latest_run.facts.sweep_id or ""


def stand_ins(parent: RunRecord) -> list[str]:
    """Run ids recorded in a parent for its skipped jobs (those found in the store, not in an export)."""
    return [j.run_id for j in parent.jobs if j.outcome == "skipped" and j.where == "the store" and j.run_id]


def whole_studies(tracker: Tracker, runs: list[RunRecord]) -> list[RunRecord]:
    """The finished study runs selected, with every other finished run of the same study tables.

    A study is often run in several sweeps (the cells, then the combined cell, then more seeds): their
    runs' records name one table (the settings of the baseline's run), whatever the commands were.
    """
    studied = {r.run_id: r for r in runs if r.status == "FINISHED" and r.facts.study is not None}
    tables = {(r.facts.study.study, r.facts.study.table) for r in studied.values()}
    for study_name, table in tables:
        for run in tracker.table_runs(study_name, table):
            if run.facts.study is not None:
                studied[run.run_id] = run
    return sorted(studied.values(), key=lambda r: r.start_time)
