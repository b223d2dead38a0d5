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


def test_the_cli_says_its_own_options(tmp_path, face_png, capsys):
    code, _, err = run_cli(["edit", face_png, "--crop", "--au", "AU12=3", "--above-max", "error",
                            "--out", tmp_path / "o.png"], capsys)
    assert_one_line_error(code, err)
    assert "set --above-max to warn" in err and "`" not in err
    code, _, err = run_cli(["train", "--data", "synthetic:x", "--out", tmp_path / "run", "--steps", "1"], capsys)
    assert_one_line_error(code, err)
    assert "--data synthetic:x: expected" in err
