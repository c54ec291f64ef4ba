"""The GitHub Actions workflows parse, and everything they run exists.

Every ``run:`` script is split into commands: a ``make`` target must be one of the
Makefile's, a ``.venv/bin`` program must be installed here or be one of the project's
console scripts (``[project.scripts]``), a script or test file it names must be in the
repository, and anything else must be one of a few plain shell tools. The few settings
each workflow exists for are checked too.
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
NAMES = {path.name for path in FILES}

#: Shell builtins and POSIX tools a workflow may use besides the project's own commands.
SHELL_TOOLS = frozenset(
    {"cat", "cd", "echo", "exit", "export", "false", "grep", "mkdir", "printf", "rm", "sed"}
    | {"set", "test", "true"}
    # The runner's package manager, for what the tests need of the system (PgBouncer).
    | {"sudo", "apt-get"}
)
_OPERATORS = frozenset({"&&", "||", ";", "|", "&"})
_REDIRECTIONS = frozenset({">", ">>", "<"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_REPOSITORY_PATH = re.compile(r"^(?:\./)?(?:tests|migrations|models|specs|\.ci)/")


def load(path: Path) -> dict[str, Any]:
    workflow = yaml.safe_load(path.read_text())
    assert isinstance(workflow, dict), f"{path.name} is not a mapping"
    if True in workflow:  # YAML 1.1 reads the key `on` as the boolean true
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for job in workflow["jobs"].values():
        yield from job.get("steps", [])


def make_targets() -> set[str]:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", makefile, re.MULTILINE))


def project_scripts() -> set[str]:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    return set(pyproject["project"].get("scripts", {}))


def commands(script: str) -> list[list[str]]:
    """The simple commands of a ``run:`` script, each as its words, assignments and
    redirections left out; ``$(...)`` substitutions are commands of their own."""
    script = re.sub(r"\$\{\{.*?\}\}", "EXPRESSION", script).replace("\\\n", " ")
    lines = []
    for raw in script.splitlines():
        line = raw
        while match := re.search(r"\$\(([^()]*)\)", line):
            lines.append(match[1])
            line = line[: match.start()] + "SUBSTITUTION" + line[match.end() :]
        lines.append(line)
    found = []
    for line in lines:
        if not line.strip() or line.strip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token not in _OPERATORS:
                words.append(token)
                continue
            while words and _ASSIGNMENT.match(words[0]):
                words.pop(0)
            if words:
                found.append(_without_redirections(words))
            words = []
    return found


def _without_redirections(words: list[str]) -> list[str]:
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in _REDIRECTIONS:
            skip = True
        else:
            kept.append(word)
    return kept


def problems_with(command: list[str], targets: set[str], scripts: set[str]) -> list[str]:
    program, *args = command
    found = []
    if program == "make":
        for target in (a for a in args if not a.startswith("-") and "=" not in a):
            if target not in targets:
                found.append(f"make {target}: the Makefile has no such target")
    elif program.startswith(".venv/bin/"):
        name = program.removeprefix(".venv/bin/")
        if name not in scripts and not (Path(sys.executable).parent / name).exists():
            found.append(f"{program}: neither installed in the virtual environment nor a script")
    elif "/" in program:
        if not (PROJECT_ROOT / program).is_file():
            found.append(f"{program}: no such file in the repository")
    elif program not in scripts and program not in SHELL_TOOLS:
        found.append(f"{program}: not a project command or a known shell tool")
    for arg in args:
        if _REPOSITORY_PATH.match(arg) and not (PROJECT_ROOT / arg).exists():
            found.append(f"{program} {arg}: no such path in the repository")
    return found


def test_the_workflows_are_there() -> None:
    assert {"pull-request.yml", "neon-preview.yml", "deploy.yml"} <= NAMES


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_workflow_parses_and_runs_only_what_exists(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("name")
    assert workflow.get("on"), "no trigger"
    assert workflow["jobs"], "no jobs"
    targets, scripts = make_targets(), project_scripts()
    problems = []
    for step in steps(workflow):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[\w.-]+", step["uses"]), step["uses"]
        else:
            assert isinstance(step.get("run"), str), f"a step neither uses nor runs: {step}"
            for command in commands(step["run"]):
                problems += problems_with(command, targets, scripts)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_no_condition_reads_a_secret(path: Path) -> None:
    """GitHub rejects ``secrets.*`` in ``if:``; a variable or an env value says it instead."""
    workflow = load(path)
    conditions = [job.get("if", "") for job in workflow["jobs"].values()]
    conditions += [step.get("if", "") for step in steps(workflow)]
    assert not [condition for condition in conditions if "secrets." in str(condition)]


def test_pull_request_workflow() -> None:
    workflow = load(WORKFLOWS / "pull-request.yml")
    assert "pull_request" in workflow["on"]
    (job,) = workflow["jobs"].values()
    assert job["services"]["postgres"]["image"] == "postgres:16"
    checkout = next(s for s in steps(workflow) if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    scripts = "\n".join(s.get("run", "") for s in steps(workflow))
    for command in ("make install", "make lint", "make migrate", "make check"):
        assert command in scripts
    assert (
        "TEST_DATABASE_URL=postgresql://postgres:postgres@localhost:5432/postgres make test"
        in scripts
    )
    assert "make review base=origin/${{ github.base_ref }}" in scripts
    comment = next(s for s in steps(workflow) if "sticky-pull-request-comment" in s.get("uses", ""))
    assert comment["with"]["path"] == "review.md"


def test_neon_preview_workflow() -> None:
    workflow = load(WORKFLOWS / "neon-preview.yml")
    assert set(workflow["on"]["pull_request"]["types"]) == {
        "opened",
        "synchronize",
        "reopened",
        "closed",
    }
    for job in workflow["jobs"].values():
        assert "vars.NEON_PROJECT_ID != ''" in job["if"]
    create = next(s for s in steps(workflow) if "neon-branch create" in s.get("run", ""))
    assert create["run"].count("::add-mask::") == 2  # db_url and db_url_pooled
    assert "$RUNNER_TEMP" in create["run"]  # its stdout never reaches the log
    scripts = "\n".join(s.get("run", "") for s in steps(workflow))
    assert ".venv/bin/pytest tests/isolation/test_isolation.py" in scripts
    assert '.venv/bin/neon-branch delete "$BRANCH"' in scripts
    assert workflow["env"]["BRANCH"] == "pr-${{ github.event.number }}"


def test_deploy_workflow() -> None:
    workflow = load(WORKFLOWS / "deploy.yml")
    assert workflow["on"] == {"push": {"branches": ["main"]}}
    assert workflow["concurrency"] == {
        "group": "production-migrations",
        "cancel-in-progress": False,
    }
    (migrate,) = [s for s in steps(workflow) if s.get("run") == "make migrate"]
    assert migrate["env"]["DATABASE_URL"] == "${{ secrets.PRODUCTION_DATABASE_URL }}"


def test_the_command_parser() -> None:
    script = (
        'A=1 make review base=origin/${{ github.base_ref }} > out && echo "::x::$(sed -n p f)"\n'
        "# make nothing\n.venv/bin/pytest tests/x.py | cat"
    )
    assert commands(script) == [
        ["sed", "-n", "p", "f"],
        ["make", "review", "base=origin/EXPRESSION"],
        ["echo", "::x::SUBSTITUTION"],
        [".venv/bin/pytest", "tests/x.py"],
        ["cat"],
    ]
    assert problems_with(["make", "no-such-target"], {"review"}, set()) == [
        "make no-such-target: the Makefile has no such target"
    ]
    assert problems_with(["curl", "x"], set(), set()) == [
        "curl: not a project command or a known shell tool"
    ]
