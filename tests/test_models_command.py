"""`exprengine models`: one aligned column of descriptions, whatever the longest name."""
from __future__ import annotations

from exprengine.cli import main
from exprengine.engines.backends import BACKENDS
from exprengine.models import list_generators


def test_models_descriptions_start_in_one_column(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [*list_generators(), *BACKENDS]
    rows = {name: line for line in lines for name in names if line.startswith(f"  {name} ")}
    assert set(rows) == set(names)
    starts = {name: len(line) - len(line[2 + len(name):].lstrip(" ")) for name, line in rows.items()}
    assert len(set(starts.values())) == 1, starts                        # torch-compile was one off
    column = starts["torch-compile"]
    assert column >= 2 + len("torch-compile") + 1
    for line in lines:                                                   # the reasons line up under it
        if "unavailable here:" in line:
            assert line.index("unavailable here:") == column, line
