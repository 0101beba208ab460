"""Which runs a report covers: the latest sweep, one sweep, every run, or an MLflow filter."""

import json

from fmnist.errors import UserError
from fmnist.tracking import COMMAND_TAG, JOB_TAG, READINGS_TAG, STUDY_TAG, SWEEP_TAG, RunRecord, Tracker


def select_runs(tracker: Tracker, sweep: str | None, all_runs: bool, filter_string: str) -> tuple[list[RunRecord], str, str | None]:
    """The runs to compare, a name for the report files, and the sweep's parent run (if the selection is one sweep)."""
    if all_runs or filter_string:
        return tracker.runs(filter_string), "all" if all_runs and not filter_string else "filtered", None
    if sweep is None:
        sweep = latest_sweep(tracker)
    parent = tracker.parent(sweep)
    runs = tracker.runs(f"tags.`{SWEEP_TAG}` = '{sweep}'")
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
    candidates = [r for r in (latest[-1:] + parents[-1:])]
    return max(candidates, key=lambda r: r.start_time).tags.get(SWEEP_TAG, "")


def stand_ins(parent: RunRecord) -> list[str]:
    """Run ids recorded in a parent for its skipped jobs (those found in the store, not in an export)."""
    jobs = [json.loads(v) for k, v in sorted(parent.tags.items()) if k.startswith(JOB_TAG)]
    return [j["run_id"] for j in jobs if j["outcome"] == "skipped" and j.get("where") == "the store" and j.get("run_id")]


def whole_studies(tracker: Tracker, runs: list[RunRecord]) -> list[RunRecord]:
    """The finished study runs selected, with every other run of the same study sweep command.

    A study is often run in several sweeps (the cells, then the combined cell, then missing seeds);
    runs whose sweep had the same overrides (seeds and study bookkeeping aside) belong to one table.
    """
    studied = [r for r in runs if r.status == "FINISHED" and READINGS_TAG in r.tags]
    wanted = {(r.tags[STUDY_TAG], r.tags.get(COMMAND_TAG, "")) for r in studied}
    found = {r.run_id: r for r in studied}
    for study_name in {s for s, _ in wanted}:
        for run in tracker.runs(f"tags.`{STUDY_TAG}` = '{study_name}' and attributes.status = 'FINISHED'"):
            if READINGS_TAG in run.tags and (study_name, run.tags.get(COMMAND_TAG, "")) in wanted:
                found[run.run_id] = run
    return sorted(found.values(), key=lambda r: r.start_time)
