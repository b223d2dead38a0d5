"""Every public name in the package says what it is (issue 15 item 7).

Walks every module under `exprengine/` (pkgutil, nothing skipped: no module needs a GPU package
to import, see tests/test_layout.py; `exprengine.__main__` is a program, so it is found, not run)
and checks, for each module:
- every public module-level function and class defined there (`obj.__module__` is the module);
- every public method defined on those classes (in the class `__dict__`: functions,
  classmethods, staticmethods, properties)
has a non-empty `inspect.getdoc`. A method may inherit its base class's docstring (getdoc finds
it, e.g. the backends' `build`/`load`); a class must carry its own: the text Python writes for an
undocumented dataclass or namedtuple ("Name(a, b)"), or a base class's docstring, does not count.
Every offender is reported at once.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re

import exprengine


def module_names() -> list[str]:
    return ["exprengine"] + [m.name for m in pkgutil.walk_packages(exprengine.__path__, "exprengine.")]


def own_class_doc(cls: type) -> str:
    """The class's own docstring, '' when it has none or only the one Python generates."""
    doc = (cls.__dict__.get("__doc__") or "").strip()
    # dataclasses write "Name(field: type, ...)", namedtuples "Name(a, b)" (or "Name(a,)")
    if "\n" not in doc and re.fullmatch(re.escape(cls.__name__) + r"\(.*\)", doc):
        return ""
    return inspect.cleandoc(doc)


def undocumented(module) -> list[str]:
    missing = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            if not own_class_doc(obj).strip():
                missing.append(f"{module.__name__}.{name} (class)")
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, property):
                    doc = inspect.getdoc(member)
                elif isinstance(member, (staticmethod, classmethod)) or inspect.isfunction(member):
                    doc = inspect.getdoc(getattr(obj, attr))
                else:
                    continue
                if not (doc or "").strip():
                    missing.append(f"{module.__name__}.{name}.{attr}")
        elif inspect.isfunction(obj):
            if not (inspect.getdoc(obj) or "").strip():
                missing.append(f"{module.__name__}.{name}")
    return missing


def test_every_public_name_has_a_docstring():
    missing, failed = [], []
    for name in module_names():
        if name.rsplit(".", 1)[-1] == "__main__":      # a program: found, not run
            assert importlib.util.find_spec(name) is not None
            continue
        try:
            module = importlib.import_module(name)
        except Exception as exc:                        # reported with the rest, not first only
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if not (inspect.getdoc(module) or "").strip():
            missing.append(f"{name} (module)")
        missing += undocumented(module)
    assert not failed, "modules that do not import:\n" + "\n".join(failed)
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)
