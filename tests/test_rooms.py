"""Each room of the package imports only the rooms below it, as the README's Layout table says.

The table (rows from the top room down) is read from README.md, so the rule is written once,
where people read it. Every import is checked, module-level and inside functions alike (a lazy
import is still a dependency); imports under `if TYPE_CHECKING:` are annotations only and are
not. The package's `__init__.py` is the public facade and may re-export from any room.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "exprengine"


def layout_rows() -> list[list[str]]:
    """The rooms of each row of the README's Layout table, top row first: ["cli", "__main__"], ..."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 2:
            rows.append([re.sub(r"(\.py|/)$", "", r) for r in re.findall(r"`([^`]+)`", cells[0])])
    return rows


def room_of(module: str) -> str:
    """exprengine.faces.crop -> faces; exprengine.cli -> cli; exprengine -> the facade."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every exprengine import in `path`, outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "exprengine":
            if node.module == "exprengine":
                found += [(node.lineno, f"exprengine.{a.name}") for a in node.names if a.name != "__version__"]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "exprengine"]
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_layout_table_lists_every_room_of_the_package_once():
    listed = [room for row in layout_rows() for room in row]
    assert len(listed) == len(set(listed)), listed
    present = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
               if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert set(listed) == present, f"listed but absent: {set(listed) - present}; present but not listed: {present - set(listed)}"


def test_every_import_goes_down_the_layout():
    level = {room: i for i, row in enumerate(layout_rows()) for room in row}
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = room_of(module_name(path))
        if source == "__init__":
            continue
        for line, target in imports(path):
            to = room_of(target)
            if to == "__init__" or to == source:
                continue
            if to not in level:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}, a room the Layout table does not list")
            elif level[to] <= level[source]:
                where = "above it" if level[to] < level[source] else "in its own row"
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {target} ({to}, {where})")
    assert not wrong, "\n".join(wrong)


def test_the_check_finds_an_upward_import(tmp_path):
    """The scan sees a lazy import inside a function, and skips TYPE_CHECKING imports."""
    p = tmp_path / "m.py"
    p.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from exprengine.engine import Engine\n"
                 "def f():\n    from exprengine.cli import main\n    import exprengine.faces.crop\n")
    assert imports(p) == [(5, "exprengine.cli"), (6, "exprengine.faces.crop")]
