"""What makes two runs the same computation: the semantic params, their fingerprint, their settings.

Plain dicts in, strings out: no Hydra, no MLflow, so the report and the study code can use it.
"""

import functools
import hashlib
import json
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Keys that change where or how a run is recorded, not what it computes. Of the study node only the
# readings and test_at count: they decide which test evaluations a run makes and which cells it stands for.
NON_SEMANTIC = ("tracking", "device", "progress", "threads", "force", "checkpoint_dir", "data.root", "data.download", "exports",
                "rerun_on_code_change", "lease_seconds", "allow_emulated_bf16", "launch")
STUDY_SEMANTIC = ("study.readings", "study.test_at")
# Settings added after runs were made, at the value those runs computed with: left out of the fingerprint there, so
# earlier runs (and exports) still stand for the jobs they did.
ADDED_LATER = {"ema": 0.0, "model.first_convs": 2, "model.pool_ceil": False, "model.global_pool": False,
               "model.whiten": False}
ADDED_TO = {key: ("model.name", "vgg") for key in ("model.first_convs", "model.pool_ceil", "model.global_pool", "model.whiten")}  # the runs it applies to
# Within a cell, runs differ in their seed and in which cells they also stand for; nothing else.
PER_RUN = ("seed", "study.readings")


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def is_semantic(key: str) -> bool:
    """Does this dotted key change what a run computes (not just where or how it is recorded)?"""
    if key == "study" or key.startswith("study."):
        return _under(key, STUDY_SEMANTIC)
    if key == "search" or key.startswith("search."):
        return key == "search.trial"  # two trials are two runs, even where the sampler drew the same values
    return not _under(key, NON_SEMANTIC)


def semantic_params(config: dict) -> dict[str, object]:
    """The resolved config (a plain nested dict), flattened, without the keys that do not change the computation."""
    return {k: v for k, v in applied(flatten(config)).items() if is_semantic(k) and not (k in ADDED_LATER and v == ADDED_LATER[k])}


def as_computed(params: dict[str, str]) -> dict[str, str]:
    """A run's params read back, with each setting added since it ran at the value it computed with: an old run and a new
    one of the same settings read alike (a sweep's parent, which trains nothing, stays as it is)."""
    def applies(key: str) -> bool:
        if key in params or "model.name" not in params:
            return False
        option, value = ADDED_TO.get(key, (None, None))
        return option is None or params.get(option) == value

    return params | {k: str(v) for k, v in ADDED_LATER.items() if applies(k)}


def applied(flat: dict[str, object]) -> dict[str, object]:
    """Without the settings of augmentations the run does not apply (`transform.<name>.<setting>`, name not in transform.augment)."""
    used = set(flat.get("transform.augment") or [])
    return {k: v for k, v in flat.items() if not (k.startswith("transform.") and k.count(".") == 2 and k.split(".")[1] not in used)}


def run_params(config: dict) -> dict[str, object]:
    """A run's MLflow params: the flattened config; of the study node only what places the run (its name and readings),
    of the search its name and trial; nothing of `launch`."""
    keep = ("study.name", "search.name", "search.trial")
    return {k: v for k, v in applied(flatten(config)).items()
            if not k.startswith(("study.", "search.", "launch.")) or is_semantic(k) or k in keep}


def _digest(params: dict[str, object]) -> str:
    canonical = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def fingerprint(config: dict) -> str:
    """Same semantic config, same fingerprint: a run asked for twice is recognisable."""
    return _digest(semantic_params(config))


def settings_id(config: dict) -> str:
    """The fingerprint without the seed and the study readings: runs of one cell share it across seeds."""
    return _digest({k: v for k, v in semantic_params(config).items() if not _under(k, PER_RUN)})


@functools.cache  # the code running is the code imported at start-up: one look per process, not per job
def git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{'-dirty' if dirty else ''}" if commit else "unknown"
