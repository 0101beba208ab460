"""The ledger: any run's or sweep's record goes to tags and comes back the same; no other file spells a tag."""

import ast
from pathlib import Path
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from fmnist import ledger
from fmnist.ledger import JobLine, RunFacts, SweepFacts, Trial
from fmnist.sequential import SeedsDesign
from fmnist.study import Choice, Reading, StudyConfig, StudyRecord, levels_of

ROOT = Path(__file__).resolve().parent.parent
# Values a tag can carry: MLflow keeps them as text, so anything printable (empty text is what "unset" reads as).
text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
maybe = st.none() | text
number = st.integers(min_value=0, max_value=10**6)
word = st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)

readings = st.lists(st.builds(Reading, word, word, word, st.integers(1, 50), st.none() | st.floats(0, 100, allow_nan=False)),
                    min_size=1, max_size=3).map(tuple)
designs = st.none() | st.builds(SeedsDesign, st.integers(3, 5), st.integers(1, 3), st.integers(5, 20),
                                st.floats(0.01, 5, allow_nan=False))
records = st.builds(StudyRecord, word, word, readings, st.builds(Choice, st.lists(word, max_size=3), st.none() | st.floats(0, 100)),
                    st.floats(0.01, 5), designs, st.lists(word, max_size=2).map(tuple), st.none() | st.integers(1, 9),
                    st.lists(text, max_size=4).map(tuple), st.floats(0.01, 5))
jsonable = st.dictionaries(word, st.text(max_size=10) | st.integers(), max_size=3)
trials = st.none() | st.builds(Trial, number, st.just("") | word, st.just("") | word, st.sampled_from(["", "COMPLETE", "PRUNED"]),
                               jsonable, jsonable)
run_facts = st.builds(
    RunFacts, fingerprint=maybe, settings=maybe, overrides=st.none() | st.lists(text, max_size=4).map(tuple), sweep_id=maybe,
    commit=maybe, study_name=maybe, study=st.none() | records, trial=trials, host=maybe, pid=st.none() | number, device=maybe,
    threads=st.none() | number, processor=maybe, slurm_job=maybe, attempt=maybe, parent_run_id=maybe, superseded_by=maybe, failure=maybe,
)


@settings(max_examples=300, deadline=None)
@given(run_facts)
def test_any_run_record_reads_back_from_its_tags(facts):
    if facts.study is not None:  # the record names its study; the tag of the name is the record's
        facts = facts | RunFacts(study_name=facts.study.study)
    assert RunFacts.from_tags(facts.tags()) == facts


@settings(max_examples=200, deadline=None)
@given(st.builds(SweepFacts, text, st.lists(text, max_size=4).map(tuple), st.lists(word, max_size=3).map(tuple), text, st.none() | text, text, text))
def test_any_sweep_record_reads_back_from_its_tags(sweep):
    tags = sweep.tags()
    assert ledger.is_parent(tags) and SweepFacts.from_tags(tags) == sweep


@settings(max_examples=200, deadline=None)
@given(st.lists(st.builds(JobLine, st.integers(0, 9999), text, st.sampled_from(["trained", "skipped", "failed"]), maybe,
                          st.just("") | text, st.just("") | text), max_size=5, unique_by=lambda line: line.number))
def test_job_lines_read_back_in_job_order(lines):
    tags = {}
    for line in lines:
        tags |= line.tags()
    assert ledger.job_lines(tags) == sorted(lines, key=lambda line: line.number)


def test_facts_added_to_a_run_keep_what_it_had():
    start = RunFacts(fingerprint="f", commit="c", host="a")
    moved = start | RunFacts(host="b", superseded_by="r2")
    assert (moved.fingerprint, moved.commit, moved.host, moved.superseded_by) == ("f", "c", "b", "r2")
    assert RunFacts(failure="").tags() == {ledger.tag("failure"): "", ledger.NOTE: ""}  # an empty reason clears a note


def test_no_file_but_the_ledger_spells_a_tag():
    names = ledger.tag_names()
    found = []
    for path in [*ROOT.glob("fmnist/**/*.py"), *ROOT.glob("hydra_plugins/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("benchmarks/*.py")]:
        if path.name == "ledger.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (node.value in names or node.value.startswith(ledger.JOB)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "tag names spelled outside fmnist/ledger.py:\n" + "\n".join(found)


def test_no_filter_string_is_built_outside_tracking():
    found = []
    for path in [*ROOT.glob("fmnist/**/*.py"), *ROOT.glob("hydra_plugins/**/*.py")]:
        if path.name == "tracking.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ("tags.`" in node.value or "attributes." in node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"MLflow filter strings outside fmnist/tracking.py: {found}"


def test_the_combined_cells_level_name_is_written_and_read_in_one_place():
    """`StudyConfig.level_name` joins the combined cell's levels and `levels_of` splits them; nothing else joins, splits or
    replaces a "+"."""
    def plus(node) -> bool:
        return isinstance(node, ast.Constant) and node.value == "+"

    found = []
    for path in [*ROOT.glob("fmnist/**/*.py"), *ROOT.glob("hydra_plugins/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("join", "split", "replace")
                    and (plus(node.func.value) or any(map(plus, node.args))) and path.name != "study.py"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"the combined cell's '+' spelled outside fmnist/study.py: {found}"
    assert levels_of("combined", StudyConfig.level_name(SimpleNamespace(combine=["epochs10", "adamw"]), "combined")) == ("epochs10", "adamw")
    assert levels_of("epochs10", "epochs10") == ("epochs10",)
