"""`exprengine.errors.plural`, how messages count things (the command line's process itself is
tested through the commands, in test_cli.py and test_cli_reliability.py)."""
from __future__ import annotations

import doctest

import exprengine.errors as errors
from exprengine.errors import plural


def test_plural_counts_in_english():
    assert [plural(n, "face") for n in (0, 1, 2, 3)] == ["0 faces", "1 face", "2 faces", "3 faces"]
    assert plural(1, "photo") == "1 photo" and plural(2, "photo") == "2 photos"
    assert plural(1, "unknown model") == "1 unknown model" and plural(2, "unknown model") == "2 unknown models"
    assert plural(1, "child", "children") == "1 child" and plural(0, "child", "children") == "0 children"
    assert plural(-1, "face") == "-1 faces"                 # only exactly 1 is singular


def test_plural_docstring_examples_hold():
    examples = doctest.DocTestFinder().find(errors.plural, "plural", globs={"plural": plural})
    results = [doctest.DocTestRunner().run(t) for t in examples]
    assert sum(r.attempted for r in results) == 2 and sum(r.failed for r in results) == 0
