"""The package imports from a source checkout, every module from inside `exprengine/`.

The trap this guards against: `export/` and `csrc/` used to be mapped into the package
(`exprengine.export`, `exprengine.csrc`) by pyproject's package-dir, so they existed only once
installed, and `from exprengine.export import graph` failed from a checkout. Now every module
lives under `exprengine/`; a child Python with the repository first on sys.path and the
editable install's import hooks removed must import each of them from there.

No module needs an optional GPU package (cuda-bindings, TensorRT) to import: they are imported
where used. The child blocks them, so a CPU-only install is what is checked (measured: nothing
fails without them, hence no skips).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "exprengine"
GPU_ONLY = ("cuda", "tensorrt")          # top-level names of the optional GPU packages

PROBE = r"""
import importlib, importlib.util, json, pkgutil, sys, traceback
root, package, blocked = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(","))

# The editable install's hooks map names to folders of their own: drop them, so that only
# the repository (first on sys.path) can provide `exprengine`.
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")
                    and not type(f).__module__.startswith("__editable__")]
sys.path_hooks[:] = [h for h in sys.path_hooks if not getattr(h, "__module__", "").startswith("__editable__")]
sys.path_importer_cache.clear()
sys.path.insert(0, root)

class BlockGpuPackages:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is an optional GPU package (blocked by the test)", name=name)
sys.meta_path.insert(0, BlockGpuPackages())

names = ["exprengine"] + [m.name for m in pkgutil.walk_packages([package], "exprengine.", onerror=lambda name: None)]
failed, files = {}, {}
for name in names:
    try:
        if name.rsplit(".", 1)[-1] == "__main__":      # a program: find it, do not run it
            files[name] = importlib.util.find_spec(name).origin
        else:
            files[name] = getattr(importlib.import_module(name), "__file__", None)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-3)
loaded = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())
          if n == "exprengine" or n.startswith("exprengine.")}
from exprengine.kernels import cuda
print(json.dumps({"names": names, "failed": failed, "files": files, "loaded": loaded,
                  "kernel_source": cuda.kernel_source().decode("latin-1")}))
"""


def source_modules() -> set[str]:
    """Every module the source tree holds: each .py file under a folder with an __init__.py."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        if all((ROOT.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(1, len(parts))):
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_from_the_source_tree(tmp_path):
    r = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), str(PACKAGE), ",".join(GPU_ONLY)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(r.stdout.strip().splitlines()[-1])
    names = set(found["names"])
    assert {"exprengine.export.graph", "exprengine.export.onnx_graph", "exprengine.kernels.cuda"} <= names
    assert not found["failed"], "\n".join(f"{n}:\n{tb}" for n, tb in found["failed"].items())
    assert names == source_modules(), "pkgutil and the file tree disagree (a folder without __init__.py?)"
    for name, file in {**found["files"], **found["loaded"]}.items():
        assert file and Path(file).resolve().is_relative_to(PACKAGE), f"{name} comes from {file}, not {PACKAGE}"
    assert found["kernel_source"].encode("latin-1") == (PACKAGE / "kernels" / "epilogue.cu").read_bytes()


def test_top_level_export_and_csrc_are_not_packages():
    """export/ and csrc/ hold scripts and notes; the code they use is inside the package."""
    for folder in ("export", "csrc"):
        assert (ROOT / folder).is_dir()
        assert not (ROOT / folder / "__init__.py").exists(), f"{folder}/ is a package again"
        assert not list((ROOT / folder).glob("*.cu")), f"CUDA source in {folder}/; it belongs in exprengine/kernels"
