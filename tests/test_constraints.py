"""The install that is tested is the install users get: constraints.txt pins every dependency."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[_norm(name)] = version
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    return reqs


def test_every_declared_dependency_is_pinned_within_its_range():
    pins = _pins()
    for req in _declared():
        assert _norm(req.name) in pins, f"{req.name} is a dependency but constraints.txt does not pin it"
        assert req.specifier.contains(pins[_norm(req.name)], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[_norm(req.name)]} outside pyproject's {req}"


def test_this_environment_was_installed_with_the_constraints():
    """Fails when the suite runs on versions it was not pinned to (an install without -c)."""
    wrong = []
    for name, version in _pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue                      # e.g. the gpu extra's wheels in a plain install
        if installed.split("+")[0] != version.split("+")[0]:
            wrong.append(f"{name} {installed} (pinned {version})")
    if wrong:
        pytest.fail("installed versions differ from constraints.txt: " + ", ".join(wrong)
                    + "; install with `pip install -c constraints.txt '.[test]'`")


def test_ci_runs_the_readmes_install_and_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    assert "-c constraints.txt" in ci
    assert ci in (ROOT / "README.md").read_text(), "the README's test command and .ci/run differ"
