"""The README and the docs site: the site builds strictly (every internal link and anchor resolves), and
every command in their code blocks names things that exist: a run's overrides compose and validate, a
report's options parse, a script, a study file or a make target is there."""

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from fmnist.config import validate
from fmnist.report.cli import parse_args
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands() -> list[tuple[str, str]]:
    """(page, command) for every python, bash or make command in a page's code blocks, continued lines joined."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line.startswith(("python ", "bash ", "make ")):
                    found.append((page.name, line))
    return found


def test_the_readme_is_short_and_the_docs_site_builds_strictly(tmp_path):
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
    mkdocs = Path(sys.executable).with_name("mkdocs")
    done = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "studies" / "index.html").is_file()


def first_of_each_sweep(overrides: list[str]) -> list[str]:
    """`loss=ce,mse,nll` as `loss=ce`: one job of the sweep, which composes like all of them."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [f"{o.get_key_element()}={next(o.sweep_string_iterator())}" if o.is_sweep_override() else o.input_line for o in parsed]


@pytest.mark.parametrize("page,command", commands())
def test_every_command_in_the_readme_and_the_docs_names_what_exists(page, command):
    words = shlex.split(command)
    if words[0] == "make":
        assert re.search(rf"^{re.escape(words[1])}:", (ROOT / "Makefile").read_text(), re.M), command
    elif words[0] == "bash" or not words[1] == "-m":
        assert (ROOT / words[1]).is_file(), command
    else:
        module, args = words[2], words[3:]
        assert importlib.util.find_spec(module) is not None, command
        if module == "fmnist.run":
            overrides = [a for a in args if a != "-m" and not a.startswith(("hydra/", "hydra."))]
            validate(compose_config(first_of_each_sweep(overrides)))
        elif module == "fmnist.report":
            parse_args(args)
        elif module == "fmnist.plan":
            assert all((ROOT / a).is_file() for a in args if not a.startswith("-")), command
