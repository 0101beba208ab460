"""Compare runs: `python -m fmnist.report [--sweep ID | --all | --filter ... | --from EXPORT ...]`.

Runs of a study (`study=<name>` sweeps) get the study's table, one per model: seed-level paired
statistics against the baseline, Holm-adjusted, with verdicts, and the combination chosen on
validation with the command that runs it. Other runs get one row each (the config values that
differ, then the final validation and test figures). Markdown, CSV, LaTeX and figures go under
`results/`, and are logged to MLflow as a summary run. `--export` keeps a study's runs in files;
`--from` rebuilds the tables from such files alone, without the store.
"""

import argparse
import os
import re
import shlex
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fmnist.credentials import credentials_from_environment, refuse_credentials
from fmnist.errors import ConfigError, UserError
from fmnist.report.runs_table import comparison_report
from fmnist.report.search_table import from_store as search_from_store
from fmnist.report.search_table import merged, read_trials, search_report, trial_runs, write_trials
from fmnist.report.select import select_runs, whole_studies
from fmnist.report.study_table import Options, study_tables
from fmnist.results import Studied, declared, export_files, read_export, with_tables, write_export
from fmnist.study import StudyConfig
from fmnist.tracking import Tracker, resolve_uri


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fmnist.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="the store the runs were logged to (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    parser.add_argument("--experiment", help="MLflow experiment name (default: fmnist, or the latest study's)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", help="sweep id to report (default: the latest sweep)")
    which.add_argument("--all", action="store_true", help="every run in the experiment")
    which.add_argument("--from", dest="exports", nargs="+", type=Path, metavar="EXPORT",
                       help="study exports (.csv beside its .npz, or folders of them) instead of the store; a folder's owed.yaml says why a "
                            "table's next stage has not been run ({study: {model: why}})")
    parser.add_argument("--filter", default="", help="MLflow filter string, e.g. \"params.`model.name` = 'mlp'\"")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder for the files (default: reports/, which git ignores; "
                        "the committed tables under results/ are rewritten only when --out names them)")
    parser.add_argument("--name", help="base name of the files (default: the study's name, or from the selection)")
    parser.add_argument("--export", type=Path, metavar="FILE.csv", help="also write the study runs' export (FILE.csv and FILE.npz)")
    parser.add_argument("--strict", action="store_true", help="choose only levels with a significant gain on validation")
    parser.add_argument("--margin", type=float, help="equivalence margin in accuracy points (default: the study's, 0.3)")
    parser.add_argument("--per-seed", action="store_true", help="also every seed of every cell, the mean curves and the training time")
    parser.add_argument("--design-from", type=Path, metavar="STUDY.yaml",
                        help="with --from: take the seeds design, effect and ordered factors from this study file, for exports "
                             "made before the study declared them or under an earlier rule (with --export, they are written into the export)")
    args = parser.parse_args(argv)
    if args.margin is not None and args.margin <= 0:
        parser.error(f"--margin must be > 0 accuracy points, got {args.margin}")
    if args.export is not None and args.export.suffix != ".csv":
        parser.error(f"--export takes a file name ending in .csv, got {args.export}")
    if args.design_from is not None and not args.exports:
        parser.error("--design-from goes with --from: the runs in a store carry their study's design")
    return args


def ensure_folder(out: Path) -> None:
    """The output folder exists and takes files, or one sentence says why not (before any work)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".fmnist-report-probe"
        probe.write_text("")
        probe.unlink()
    except FileExistsError:
        raise UserError(f"--out {out} is a file, not a folder; name a folder for the report's files") from None
    except NotADirectoryError:
        raise UserError(f"--out {out} lies inside a file, not a folder; name a folder for the report's files") from None
    except OSError as err:
        raise UserError(f"cannot write the report into {out} ({err.strerror or err}); name a folder you can write to") from None


def options(args: argparse.Namespace) -> Options:
    owed = owed_notes([p for p in args.exports or [] if p.is_dir()])
    return Options(args.strict, args.margin, per_seed=args.per_seed, owed=owed)


def owed_notes(folders: list[Path]) -> dict[tuple[str, str], str]:
    """(study, model) -> why its next stage has not been run, from each export folder's owed.yaml ({study: {model: why}})."""
    notes = {}
    for path in (folder / "owed.yaml" for folder in folders):
        if not path.is_file():
            continue
        try:
            node = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{path} is not valid YAML ({str(err).splitlines()[0]})") from None
        pairs = [(study, model, why) for study, models in node.items() for model, why in (models or {}).items()] \
            if isinstance(node, dict) and all(isinstance(m, dict | None) for m in node.values()) else None
        if pairs is None or not all(isinstance(why, str) and why.strip() for *_, why in pairs):
            raise UserError(f"{path} must map each study to its models, each to one sentence saying why its next stage has "
                            "not been run (e.g. table2: {resnet18: ...})")
        notes |= {(str(study), str(model)): why.strip() for study, model, why in pairs}
    return notes


def from_exports(args: argparse.Namespace, command: str) -> list[Path]:
    studied = Studied([], {})
    searches = merged([read_trials(p) for p in trials_files(args.exports)])  # a search continued elsewhere: one report
    for path in export_files(args.exports, allow_none=bool(searches)):
        studied = studied + read_export(path)  # an export read twice counts once
    if args.design_from is not None:
        design = read_study_file(args.design_from)
        studied = declared(studied, design.seeds, tuple(design.ordered), design.effect)
    args.out.mkdir(parents=True, exist_ok=True)
    files = []
    for searched in searches:
        text, made = search_report(searched, studied, args.out, safe_name(args.name or searched.name), command)
        print(text)
        files += made
    studied = with_tables(studied)
    if studied.results:
        files += study_tables(studied, args.out, args.name, command, options(args))
    if args.export:  # after the tables: a merge that makes no table writes nothing
        files += write_export(studied, args.export)
    return files


def trials_files(paths: list[Path]) -> list[Path]:
    """Searches' trials exports among `paths` (a folder stands for every *_trials.json in it)."""
    found = []
    for path in paths:
        found += sorted(path.glob("*_trials.json")) if path.is_dir() else [path] if path.name.endswith("_trials.json") else []
    return found


def read_study_file(path: Path) -> StudyConfig:
    """The `study` node of a study file (conf/study/<name>.yaml), checked like a run's."""
    try:
        node = OmegaConf.load(path).get("study")
        if node is None:
            raise ConfigError("it has no study: node (see conf/study/table2.yaml)")
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(StudyConfig), node))
    except OSError as err:
        raise UserError(f"cannot read the study file {path} ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise UserError(f"the study file {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    except UserError as err:
        raise UserError(f"the study file {path} is not valid: {err}") from None
    except OmegaConfBaseException as err:
        cause = err.__cause__ or err.__context__
        message = str(cause) if isinstance(cause, UserError) else str(err).splitlines()[0]
        raise UserError(f"the study file {path} is not valid: {message}") from None


def from_store(args: argparse.Namespace, command: str) -> list[Path]:
    uri = resolve_uri(args.tracking_uri, Path.cwd())
    tracker = Tracker(uri, args.experiment or latest_experiment(uri), create=False)
    runs, name, parent = select_runs(tracker, args.sweep, args.all, args.filter)
    args.out.mkdir(parents=True, exist_ok=True)
    studied = whole_studies(tracker, runs)
    found = Studied([], {})
    for read in tracker.read_results(studied).values():
        found = found + read
    files = []
    if trial_runs(runs):
        searched = search_from_store(tracker, runs)
        text, files = search_report(searched, found, args.out, safe_name(args.name or searched.name), command)
        print(text)
        if args.export:
            files.append(write_trials(searched, args.export.with_name(f"{args.export.stem}_trials.json")))
    if studied:
        if args.export:  # first: the runs are kept even where they make no table yet (a stage's runs without their baseline)
            files += write_export(found, args.export)
        files += study_tables(found, args.out, args.name and safe_name(args.name), command, options(args))
    elif not files:
        if args.export:
            raise UserError("--export keeps the runs of a study; this selection has none (run one with study=<name>)")
        files = comparison_report(tracker, runs, args.out, safe_name(args.name or name), command)
    tracker.log_summary(f"report {args.name or name}", files, command, parent)
    print(ui_line(tracker))
    return files


def ui_line(tracker: Tracker) -> str:
    """Where the runs are in the MLflow UI: the experiment's runs table (MLflow 3 opens on GenAI otherwise)."""
    page = f"#/experiments/{tracker.experiment_id}?workflowType=machine_learning"
    if tracker.uri.startswith(("http://", "https://")):
        return f"In the MLflow UI: {tracker.uri.rstrip('/')}/{page}"
    return f"In the MLflow UI: `mlflow ui --backend-store-uri {tracker.uri} --port 5000`, then http://127.0.0.1:5000/{page}"


def latest_experiment(uri: str) -> str:
    """With no --experiment: the experiment holding the latest run (a study logs to its own)."""
    return Tracker.latest_experiment(uri) or "fmnist"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    credentials_from_environment()  # before the default --tracking-uri is read from the environment
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "fmnist.report", *argv])
    try:
        refuse_credentials(args.tracking_uri, "--tracking-uri")
        ensure_folder(args.out)
        files = from_exports(args, command) if args.exports else from_store(args, command)
    except UserError as err:
        sys.exit(f"error: {err}")
    print("wrote " + ", ".join(str(f) for f in files))
