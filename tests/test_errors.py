"""Library errors speak in API terms (the argument names a Python caller wrote); the CLI says
the option the command-line user typed instead (`errors.renamed`, `console.Command.invoke`)."""
from __future__ import annotations

import numpy as np
import pytest

from exprengine.aus import AUPolicy
from exprengine.data.datasets import write_synthetic
from exprengine.errors import EngineError, UserError, renamed
from test_cli import assert_one_line_error, face_png, run_cli  # noqa: F401 (face_png: a fixture)


def test_renamed_replaces_only_the_quoted_names_it_knows():
    e = renamed(EngineError("`max_batch` is 0 and `other` stays; max_batch unquoted stays"), {"max_batch": "--max-batch"})
    assert str(e) == "--max-batch is 0 and `other` stays; max_batch unquoted stays"
    assert type(e) is EngineError
    same = UserError("nothing quoted")
    assert renamed(same, {"x": "--x"}) is same


def test_library_errors_name_the_python_arguments(tmp_path):
    with pytest.raises(UserError, match="set `above_max` to warn"):
        AUPolicy(max_intensity=2.0, above_max="error").check(np.full(17, 3.0, np.float32))
    with pytest.raises(UserError, match="^`test_fraction` must be between 0 and 1"):
        write_synthetic(tmp_path / "s", 4, test_fraction=1.5)


def test_the_cli_says_its_own_options(tmp_path, face_png, capsys):  # noqa: F811 (the imported fixture)
    code, _, err = run_cli(["edit", face_png, "--crop", "--au", "AU12=3", "--above-max", "error",
                            "--out", tmp_path / "o.png"], capsys)
    assert_one_line_error(code, err)
    assert "set --above-max to warn" in err and "`" not in err
    code, _, err = run_cli(["train", "--data", "synthetic:x", "--out", tmp_path / "run", "--steps", "1"], capsys)
    assert_one_line_error(code, err)
    assert "--data synthetic:x: expected" in err


def test_no_library_error_names_a_command_line_option():
    """Library messages quote Python argument names; only the command line (cli/, console.py,
    and the modules' own `python -m` entry points) speaks of --options. A suggested command in
    backquotes (`exprengine build --model rig`) is advice, not an option of the caller's."""
    import ast
    import re
    from pathlib import Path
    package = Path(__file__).resolve().parents[1] / "exprengine"
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel.startswith("cli/") or rel == "console.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        mains = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "main"
                 for n in ast.walk(f)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.endswith("Error")
                    and node.args and id(node) not in mains):
                text = "".join(part.value for part in ast.walk(node.args[0])
                               if isinstance(part, ast.Constant) and isinstance(part.value, str))
                if re.search(r"(?<![\w-])--[a-z]", re.sub(r"`[^`]*`", "", text)):
                    found.append(f"{rel}:{node.lineno}: {text[:90]}")
    assert not found, "\n".join(found)
