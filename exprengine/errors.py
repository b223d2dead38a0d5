"""Errors a user can fix: the CLI prints them as one line and exits with status 2.

Library errors speak in API terms: a message names the argument it is about in backquotes,
as the Python caller wrote it ("`test_fraction` must be between 0 and 1, got 1.5"). The CLI
translates each such name into the option the command-line user typed ("--test-fraction must
be ...", `console.Command.invoke`); a Python caller reads the name of its own argument.
"""
import errno
import re

#: OSError numbers that are about the disk, not the data (full, over quota, read-only, a file or
#: name too large): wherever they occur while writing, they are the user's to fix.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.ENAMETOOLONG})

#: An argument name as library messages quote it: `name`.
ARGUMENT = re.compile(r"`([a-z_][a-z0-9_]*)`")


class UserError(Exception):
    """Bad input, bad option or a bad file: the message is one self-contained sentence."""


class EngineError(UserError):
    """An engine directory that is missing, corrupt, truncated or does not match this install."""


def rename_arguments(text: str, names: dict[str, str]) -> str:
    """`text` with each quoted argument name found in `names` replaced by what it maps to (a
    command-line option); names not in `names` stay as they are."""
    return ARGUMENT.sub(lambda m: names.get(m.group(1), m.group(0)), text)


def renamed(error: UserError, names: dict[str, str]) -> UserError:
    """`error` with its quoted argument names renamed (`rename_arguments`), as an error of the
    same class (the same object when nothing changed)."""
    message = rename_arguments(str(error), names)
    if message == str(error):
        return error
    translated = type(error).__new__(type(error))
    Exception.__init__(translated, message)
    return translated


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`n` and `noun` as English says them: the singular for exactly 1, else the plural, which is
    `noun` + "s" unless `nouns` gives an irregular one. The one place user-facing text counts
    things (the web page's app.js has the same `plural`).

    >>> plural(1, "face"), plural(0, "face"), plural(3, "face")
    ('1 face', '0 faces', '3 faces')
    >>> plural(2, "unknown model"), plural(1, "child", "children"), plural(4, "child", "children")
    ('2 unknown models', '1 child', '4 children')
    """
    return f"{n} {noun if n == 1 else nouns if nouns is not None else noun + 's'}"
