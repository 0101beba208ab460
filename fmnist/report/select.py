"""Which runs a report covers: the latest sweep, one sweep, every run, or an MLflow filter."""

from fmnist.errors import UserError
from fmnist.tracking import COMMAND_TAG, READINGS_TAG, STUDY_TAG, SWEEP_TAG, RunRecord, Tracker


def select_runs(tracker: Tracker, sweep: str | None, all_runs: bool, filter_string: str) -> tuple[list[RunRecord], str]:
    """The runs to compare and a name for the report files."""
    if all_runs or filter_string:
        return tracker.runs(filter_string), "all" if all_runs and not filter_string else "filtered"
    if sweep is None:
        latest = tracker.runs()
        if not latest:
            raise UserError("the experiment has no runs yet; start one with `python -m fmnist.run`")
        sweep = latest[-1].tags.get(SWEEP_TAG, "")
    runs = tracker.runs(f"tags.`{SWEEP_TAG}` = '{sweep}'")
    if not runs:
        raise UserError(f"no runs with sweep id '{sweep}'")
    return runs, f"sweep_{sweep}"


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
