"""Text files people give us (CSV tables, JSON timelines, id lists): read as UTF-8 (a byte-order
mark allowed), every unreadable, undecodable or malformed file one `UserError` sentence that
names what the file is for and its path."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from exprengine.errors import UserError


def read_text(path: str | os.PathLike, what: str) -> str:
    """The whole file as text. UserError if it cannot be read or is not UTF-8."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{what} {p} is not UTF-8 text") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {p} ({e.strerror or type(e).__name__})") from None


def parse_csv(text: str, what: str, path: str | os.PathLike) -> list[list[str]]:
    """All rows of CSV `text` as lists of strings. UserError for malformed CSV, including a field
    over csv.field_size_limit() (131,072 characters)."""
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise UserError(f"{what} {path} is not a readable CSV file ({str(e).splitlines()[0][:80]})") from None


def read_csv(path: str | os.PathLike, what: str) -> list[list[str]]:
    """`read_text` then `parse_csv`."""
    return parse_csv(read_text(path, what), what, path)
