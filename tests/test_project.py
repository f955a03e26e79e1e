"""Project files agree with each other: README commands, CI, environment.yml and pyproject."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from support import ROOT
from support.project import readme_commands


def test_readme_opens_with_exactly_two_commands_and_ci_runs_the_test_one():
    text = (ROOT / "README.md").read_text()
    first_block = text.index("```bash")
    assert text[:first_block].strip().count("\n") == 0, "only the title may precede the two commands"
    run, test = readme_commands()
    assert run == "bash scripts/run.sh" and test == "bash scripts/test.sh"
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci


def test_environment_yml_installs_the_package_with_every_extra():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    dependencies = environment["dependencies"]
    python = next(d for d in dependencies if isinstance(d, str) and d.startswith("python="))
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))
    pip = next(d["pip"] for d in dependencies if isinstance(d, dict))
    editable = next(p for p in pip if p.startswith("-e ."))
    extras = set(re.search(r"\[(.*)\]", editable).group(1).split(","))
    assert extras == set(pyproject["project"]["optional-dependencies"])
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for pin in ("torch==2.14.1", "torchvision==0.29.1"):
        assert pin in pip and pin in setup, pin
    assert f'-e ".[{",".join(sorted(extras))}]"' in setup


def test_package_layering_holds():
    """The contracts in pyproject.toml's [tool.importlinter]: folders import only the folders below them."""
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


def test_readme_is_short_and_every_docs_link_points_to_a_file():
    """README.md stays a two-minute read (at most 150 lines); the detail lives in docs/*.md, and every link in
    README.md and the docs pages — relative links, and any docs/... path they name — reaches a file that exists."""
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 150, "README.md is over 150 lines: move detail into docs/"
    pages = [readme, *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            path = target.split("#")[0]
            if path and not re.match(r"[a-z]+:", path) and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
        for path in re.findall(r"(?<![\w/.])docs/[\w./-]*\w\.\w+", text):
            if not (ROOT / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {path}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)
