"""Compile the fused CUDA kernel for every supported GPU, with NVRTC and nvcc, and check it.

The source is `exprengine/kernels/epilogue.cu` (inside the package, beside its launcher
`exprengine/kernels/cuda.py`, which compiles it with NVRTC at run time). This script is what
CI runs on it; tests/test_kernels.py uses the same commands and checks:

    python csrc/build.py                       # every arch in cuda.ARCHS + compute_90 PTX
    python csrc/build.py --arch 86             # one architecture
    python csrc/build.py --out build/kernels   # keep the cubins, the PTX and the fatbin
    python csrc/build.py --source edited.cu    # check another source before putting it in place

For each architecture: NVRTC to a cubin (`exprengine.kernels.cuda.compile_source`, the compiler
engines use) and, when the CUDA toolkit is installed (`nvcc` on PATH or
/usr/local/cuda/bin/nvcc), `nvcc -cubin -O3 -Xptxas -v`; then NVRTC PTX for compute_90 and one
`nvcc -fatbin` holding every cubin and the PTX. ptxas's resource report must show no spills, no
stack frame and at most 128 registers a thread (256-thread blocks); the PTX must use 16-byte
(`v4`) global loads and stores. No GPU is needed.

Prints one line per check; exit status 0 when all pass, 1 when any compile or check fails
(NVRTC missing counts as a failure: `pip install 'exprengine[gpu]'`), 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from exprengine.errors import EngineError, plural
from exprengine.kernels import cuda

MAX_REGISTERS = 128                 # a thread, in 256-thread blocks
PTX_ARCH = max(cuda.ARCHS)          # the PTX shipped for GPUs newer than every cubin


def find_nvcc() -> str | None:
    """nvcc on PATH, else /usr/local/cuda/bin/nvcc, else None (no CUDA toolkit)."""
    return shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


def nvcc_cubin_command(nvcc: str, arch: int, source: Path, out: Path) -> list[str]:
    """nvcc's command for one cubin (sm_`arch`) with ptxas's resource report on stderr."""
    return [nvcc, "-cubin", f"-arch=sm_{arch}", "-O3", "-Xptxas", "-v", str(source), "-o", str(out)]


def nvcc_fatbin_command(nvcc: str, archs: tuple[int, ...], source: Path, out: Path) -> list[str]:
    """nvcc's command for one fatbin: SASS for each of `archs` and compute_`PTX_ARCH` PTX."""
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    return [nvcc, "-fatbin", *gencode, f"-gencode=arch=compute_{PTX_ARCH},code=compute_{PTX_ARCH}",
            str(source), "-o", str(out)]


def resource_problems(report: dict[str, dict[str, int]], where: str) -> list[str]:
    """What is wrong with a resource report (`cuda.parse_resource_report`): kernels missing or
    extra, spills, a stack frame, more than MAX_REGISTERS registers. Empty when all is well."""
    if set(report) != set(cuda.KERNELS):
        return [f"{where}: resource report lists {sorted(report)}"]
    problems = []
    for name, r in report.items():
        if r["spill_stores"] or r["spill_loads"]:
            problems.append(f"{where} {name} spills: {r}")
        if r["stack"]:
            problems.append(f"{where} {name} uses a stack frame (local memory): {r}")
        if r["registers"] > MAX_REGISTERS:
            problems.append(f"{where} {name} uses {r['registers']} registers (256-thread blocks)")
    return problems


def ptx_problems(ptx: str) -> list[str]:
    """What is wrong with the PTX: an entry point other than cuda.KERNELS, or a kernel without
    16-byte global loads (`ld.global[.nc].v4`) or stores (`st.global.v4`)."""
    entries = re.findall(r"\.entry (\w+)", ptx)
    if sorted(entries) != sorted(cuda.KERNELS):
        return [f"PTX entry points are {sorted(entries)}, expected {sorted(cuda.KERNELS)}"]
    problems = []
    for name, body in zip(entries, re.split(r"\.entry \w+", ptx)[1:]):
        if not re.search(r"ld\.global(\.nc)?\.v4\.[ubf]32", body):
            problems.append(f"{name}: no 16-byte loads")
        if not re.search(r"st\.global\.v4\.[ubf]32", body):
            problems.append(f"{name}: no 16-byte stores")
    return problems


def run_nvcc(command: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def check(archs: tuple[int, ...], source: Path, out: Path, say=print) -> int:
    """Compile `source` for `archs` into `out` and check it; returns the number of failed checks."""
    failures = 0

    def result(what: str, problems: list[str]) -> None:
        nonlocal failures
        failures += bool(problems)
        say(f"{'ok  ' if not problems else 'FAIL'} {what}" + "".join(f"\n     {p}" for p in problems))

    text = source.read_bytes()
    reason = cuda.nvrtc_unavailable_reason()
    if reason:
        result("NVRTC", [reason])
    else:
        for arch in archs:
            try:
                compiled = cuda.compile_source(f"sm_{arch}", text)
            except EngineError as e:
                result(f"NVRTC {cuda.nvrtc_version()} sm_{arch}", [str(e)])
                continue
            (out / f"epilogue-nvrtc-sm_{arch}.cubin").write_bytes(compiled.binary)
            if not compiled.log.strip():
                # Seen with NVRTC 13.0 (not 13.5): no ptxas report although -v was given.
                say(f"ok   NVRTC {cuda.nvrtc_version()} sm_{arch} (compiled; NVRTC gave no resource report)")
                continue
            result(f"NVRTC {cuda.nvrtc_version()} sm_{arch}", resource_problems(compiled.resources(), f"NVRTC sm_{arch}"))
        try:
            ptx = cuda.compile_source(f"compute_{PTX_ARCH}", text).binary
            (out / f"epilogue-compute_{PTX_ARCH}.ptx").write_bytes(ptx)
            result(f"NVRTC compute_{PTX_ARCH} PTX", ptx_problems(ptx.rstrip(b"\0").decode()))
        except EngineError as e:
            result(f"NVRTC compute_{PTX_ARCH} PTX", [str(e)])

    nvcc = find_nvcc()
    if nvcc is None:
        say("skip nvcc: not found (CUDA toolkit not installed)")
        return failures
    for arch in archs:
        r = run_nvcc(nvcc_cubin_command(nvcc, arch, source, out / f"epilogue-nvcc-sm_{arch}.cubin"), 300)
        problems = ([f"nvcc exit status {r.returncode}: {r.stderr[-2000:]}"] if r.returncode
                    else resource_problems(cuda.parse_resource_report(r.stderr), f"nvcc sm_{arch}"))
        result(f"nvcc sm_{arch}", problems)
    r = run_nvcc(nvcc_fatbin_command(nvcc, archs, source, out / "epilogue.fatbin"), 600)
    result(f"nvcc fatbin sm_{', sm_'.join(map(str, archs))} + compute_{PTX_ARCH}",
           [f"nvcc exit status {r.returncode}: {r.stderr[-2000:]}"] if r.returncode else [])
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="csrc/build.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", choices=cuda.ARCHS, metavar="XY",
                        help=f"compute capability to build, repeatable [all: {', '.join(map(str, cuda.ARCHS))}]")
    parser.add_argument("--source", type=Path, default=None, metavar="PATH",
                        help="CUDA source [the package's exprengine/kernels/epilogue.cu]")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="directory to keep the binaries in (created) [a temporary one, removed]")
    args = parser.parse_args(argv)
    archs = tuple(sorted(set(args.arch))) if args.arch else cuda.ARCHS
    if args.source is not None and not args.source.is_file():
        parser.error(f"--source {args.source} is not a file")
    packaged = resources.files("exprengine.kernels") / cuda.SOURCE_NAME     # what engines compile
    with tempfile.TemporaryDirectory() as tmp, resources.as_file(packaged) as package_source:
        source = args.source or package_source
        out = args.out or Path(tmp)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            parser.error(f"--out {out}: cannot make that directory ({e.strerror or e})")
        failures = check(archs, source, out)
    print(f"{plural(failures, 'check')} failed" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
