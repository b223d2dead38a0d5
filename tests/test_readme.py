"""The README as a user reads it: every Python snippet runs as written, every `exprengine ...`
command names a real subcommand with options it has, and every local link points at a file."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from exprengine.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_snippets(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def shell_commands(text: str) -> list[str]:
    """Lines of the README's code (indented blocks, fenced blocks, inline `...` and `&&`
    chains) that run `exprengine`, with their trailing comments removed."""
    commands = []
    for line in text.splitlines():
        code = [line] if line.startswith("    ") else re.findall(r"`([^`]+)`", line)
        for piece in (p for c in code for p in c.split("&&")):
            piece = piece.split("  #")[0].strip()
            if piece.startswith("exprengine ") or piece == "exprengine":
                commands.append(piece)
    return commands


def test_the_readme_is_short_and_speaks_to_a_user():
    assert len(README.splitlines()) < 250
    lower = README.lower()
    assert lower.count("thesis") <= 1 and "lent" not in lower and "project's machines" not in lower
    for link in ("https://github.com/albertpumarola/GANimation", "https://arxiv.org/abs/1807.09251",
                 "https://github.com/TadasBaltrusaitis/OpenFace"):
        assert link in README
    for command in ("pip install -c constraints.txt . && exprengine demo",
                    "pip install -c constraints.txt '.[test]' && pytest"):
        assert command in README


def test_local_links_point_at_files():
    links = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README) if not t.startswith("http")]
    assert "docs/design.md" in links and "docs/measurements.md" in links and "bench/README.md" in links
    for target in links:
        assert (ROOT / target).is_file(), target
    for doc in ("design.md", "measurements.md"):          # the docs link back to files that exist
        text = (ROOT / "docs" / doc).read_text()
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if not target.startswith("http"):
                assert (ROOT / "docs" / target).resolve().is_file(), (doc, target)


@pytest.mark.parametrize("command", sorted(set(shell_commands(README))))
def test_every_command_names_a_subcommand_and_its_options(command):
    words = shlex.split(command)
    assert words[0] == "exprengine"
    if len(words) == 1:
        return
    sub = cli.commands.get(words[1])
    assert sub is not None, f"no subcommand {words[1]!r}: {command}"
    known = {opt for p in sub.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}
    for word in words[2:]:
        if word.startswith("--"):
            assert word.split("=")[0] in known, f"{word} is not an option of `exprengine {words[1]}`: {command}"
    with click.Context(sub, info_name=words[1]) as ctx:     # --help of each named subcommand exists
        assert "Usage" in sub.get_help(ctx)


def test_the_shell_command_extraction_sees_every_usage_line():
    commands = shell_commands(README)
    for sub in ("edit", "video", "build", "info", "morph", "presets", "models", "demo"):
        assert any(c.startswith(f"exprengine {sub}") for c in commands), sub
    assert shell_commands("    exprengine bogus --x  # note\nexprengine is prose; `exprengine y`\n") == [
        "exprengine bogus --x", "exprengine y"]


@pytest.mark.parametrize("index", range(len(python_snippets(README))))
def test_python_snippet_runs_as_written(index, tmp_path, monkeypatch):
    snippets = python_snippets(README)
    assert len(snippets) >= 2
    monkeypatch.chdir(tmp_path)                            # snippets write engines/ where they run
    code = compile(snippets[index], f"README.md python snippet {index + 1}", "exec")
    exec(code, {"__name__": "__readme__"})
