"""The fused CUDA prologue and epilogue (`kernels/epilogue.cu`): NVRTC at run time, cached on disk.

    kernels = FusedKernels()                    # compiles for this GPU once, then loads from the cache
    kernels.frame_to_input(frames, intensities, x, aus)       # uint8 NHWC -> network input
    ...network writes color, attention...
    kernels.blend_to_uint8(color, attention, frames, out)     # heads + frame -> uint8 NHWC
    kernels.to_uint8(image, out)                              # a tanh image (LATS) -> uint8 NHWC

Build choice: the kernel is compiled at run time by NVRTC (`pip install nvidia-cuda-nvrtc
cuda-bindings`, no CUDA toolkit needed) to SASS for the GPU in use (`sm_XY` of its compute
capability), and the cubin is cached under `$EXPRENGINE_CACHE` (default
`~/.cache/exprengine/kernels/`), keyed by the source, the options, the NVRTC version and the
architecture. CI compiles the same source for every supported architecture (`ARCHS`) and
PTX, with nvcc and with NVRTC, and checks the resource report (no spills, no stack).

Launches go to the caller's stream (default: PyTorch's current stream) with no host
synchronisation, so they can be captured in a CUDA graph. The plain reference
implementations are `exprengine.pixels` (`blend_to_uint8_nhwc`,
`to_network_input`, `to_uint8_nhwc`); tests compare against them.
"""
from __future__ import annotations

import ctypes
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from exprengine.aus import AU_SCALE, NUM_AUS
from exprengine.errors import EngineError
from exprengine.files import cache_dir, store_in_cache

SOURCE_NAME = "epilogue.cu"
ARCHS = (80, 86, 89, 90)                 # SASS built and checked in CI; + compute_90 PTX
KERNELS = ("exprengine_frame_to_input_f32", "exprengine_frame_to_input_f16",
           "exprengine_blend_to_u8_f32", "exprengine_blend_to_u8_f16",
           "exprengine_to_u8_f32", "exprengine_to_u8_f16")
NVRTC_OPTIONS = ("--std=c++17", "-default-device", "--extra-device-vectorization")
PIXELS_PER_THREAD = 16
THREADS = 256


def kernel_source() -> bytes:
    """The CUDA source `epilogue.cu` (bytes), package data of `exprengine.kernels` (installed,
    editable or a source checkout alike)."""
    return (resources.files("exprengine.kernels") / SOURCE_NAME).read_bytes()


def nvrtc_unavailable_reason() -> str | None:
    """Why the fused kernel cannot be compiled here (cuda-bindings or the NVRTC library missing, or
    NVRTC failing), as one sentence; None when NVRTC works. Raises nothing.
    """
    try:
        from cuda.bindings import nvrtc
        err, *_ = nvrtc.nvrtcVersion()
    except Exception as e:  # ImportError, or the library cannot be found
        return (f"the fused CUDA kernel needs NVRTC (pip install 'exprengine[gpu]', i.e. cuda-bindings "
                f"and nvidia-cuda-nvrtc): {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        return f"NVRTC does not work here ({err})"
    return None


def nvrtc_version() -> str:
    """NVRTC's version as "MAJOR.MINOR" (part of the kernel cache's key). Needs cuda-bindings
    (ImportError otherwise; check `nvrtc_unavailable_reason` first).
    """
    from cuda.bindings import nvrtc
    _, major, minor = nvrtc.nvrtcVersion()
    return f"{major}.{minor}"


# --- compilation ----------------------------------------------------------------------------------
@dataclass
class Compiled:
    """One NVRTC compilation of `epilogue.cu`: its `target` ("sm_90" for a cubin, "compute_90" for
    PTX), the `binary` (cubin or PTX bytes) and NVRTC's `log` (with ptxas's resource report for
    cubins).
    """

    target: str                 # "sm_90" (cubin) or "compute_90" (ptx)
    binary: bytes
    log: str                    # NVRTC's log, including ptxas's resource report for cubins

    def resources(self) -> dict[str, dict[str, int]]:
        """ptxas's resource report from the log: {kernel: {registers, stack, spill_stores, spill_loads}}
        (stack and spills in bytes); empty for PTX, which has no report.
        """
        return parse_resource_report(self.log)


_RESOURCE = re.compile(r"Function properties for (\w+).*?(\d+) bytes stack frame, (\d+) bytes spill stores, "
                       r"(\d+) bytes spill loads.*?Used (\d+) registers", re.S)


def parse_resource_report(log: str) -> dict[str, dict[str, int]]:
    """ptxas -v output (nvcc or NVRTC) -> {kernel: {registers, stack, spill_stores, spill_loads}}."""
    report = {}
    for name, stack, stores, loads, regs in _RESOURCE.findall(log):
        report[name] = {"registers": int(regs), "stack": int(stack),
                        "spill_stores": int(stores), "spill_loads": int(loads)}
    return report


def compile_source(target: str, source: bytes | None = None) -> Compiled:
    """NVRTC-compile the kernels for `target`: "sm_XY" gives a cubin, "compute_XY" PTX."""
    reason = nvrtc_unavailable_reason()
    if reason:
        raise EngineError(reason)
    from cuda.bindings import nvrtc
    source = kernel_source() if source is None else source
    err, prog = nvrtc.nvrtcCreateProgram(source, SOURCE_NAME.encode(), 0, [], [])
    _check_nvrtc(err, "create program")
    cubin = target.startswith("sm_")
    options = [f"--gpu-architecture={target}".encode(), *(o.encode() for o in NVRTC_OPTIONS)]
    if cubin:
        options.append(b"--ptxas-options=-v")
    try:
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        log_text = log.rstrip(b"\0 ").decode(errors="replace")
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise EngineError(f"NVRTC failed to compile {SOURCE_NAME} for {target}: {log_text.strip()[:500]}")
        if cubin:
            _, size = nvrtc.nvrtcGetCUBINSize(prog)
            binary = b" " * size
            _check_nvrtc(nvrtc.nvrtcGetCUBIN(prog, binary)[0], "get cubin")
        else:
            _, size = nvrtc.nvrtcGetPTXSize(prog)
            binary = b" " * size
            _check_nvrtc(nvrtc.nvrtcGetPTX(prog, binary)[0], "get PTX")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return Compiled(target, binary, log_text)


def _check_nvrtc(err, what: str) -> None:
    from cuda.bindings import nvrtc
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise EngineError(f"NVRTC could not {what}: {err}")


def cached_cubin(arch: str) -> bytes:
    """The cubin for `arch` ("sm_90"), compiled once per source/options/NVRTC version and cached."""
    source = kernel_source()
    key = hashlib.sha256(b"\0".join([source, arch.encode(), nvrtc_version().encode(),
                                     *(o.encode() for o in NVRTC_OPTIONS)])).hexdigest()[:24]
    path = cache_dir("kernels") / f"epilogue-{arch}-{key}.cubin"
    if path.is_file():
        return path.read_bytes()
    compiled = compile_source(arch, source)
    store_in_cache(path, compiled.binary)      # a read-only home still runs, it just recompiles
    return compiled.binary


# --- launching ------------------------------------------------------------------------------------
def _check_cu(result, what: str):
    from cuda.bindings import driver
    err = result[0]
    if err != driver.CUresult.CUDA_SUCCESS:
        raise EngineError(f"CUDA driver call {what} failed: {err.name if hasattr(err, 'name') else err}")
    return result[1] if len(result) == 2 else result[1:]


class FusedKernels:
    """The compiled kernels, loaded into the current CUDA context of `device` (PyTorch's)."""

    def __init__(self, device=None):
        import torch
        from cuda.bindings import driver
        if not torch.cuda.is_available():
            raise EngineError("the fused CUDA kernel needs an NVIDIA GPU, and none is visible")
        self.device = torch.device("cuda", torch.cuda.current_device() if device is None
                                   else torch.device(device).index or 0)
        major, minor = torch.cuda.get_device_capability(self.device)
        self.arch = f"sm_{major}{minor}"
        self.sms = torch.cuda.get_device_properties(self.device).multi_processor_count
        with torch.cuda.device(self.device):
            torch.zeros(1, device=self.device)      # make PyTorch's (primary) context current
            self.module = _check_cu(driver.cuModuleLoadData(cached_cubin(self.arch)), "cuModuleLoadData")
            self.functions = {name: _check_cu(driver.cuModuleGetFunction(self.module, name.encode()),
                                              f"cuModuleGetFunction({name})") for name in KERNELS}

    @staticmethod
    def _suffix(dtype) -> str:
        import torch
        if dtype == torch.float32:
            return "f32"
        if dtype == torch.float16:
            return "f16"
        raise EngineError(f"the fused kernel takes float32 or float16 tensors, not {dtype}")

    def _launch(self, name: str, work_items: int, args: tuple, types: tuple, stream) -> None:
        import torch
        from cuda.bindings import driver
        blocks = max(1, min((work_items + THREADS - 1) // THREADS, self.sms * 8))
        handle = (stream or torch.cuda.current_stream(self.device)).cuda_stream
        _check_cu(driver.cuLaunchKernel(self.functions[name], blocks, 1, 1, THREADS, 1, 1, 0,
                                        driver.CUstream(handle), (args, types), 0), f"cuLaunchKernel({name})")

    @staticmethod
    def _frames(frames, batch: int, size: tuple[int, int]) -> int:
        """Check a uint8 [1 or N, H, W, 3] frame batch; return its per-item stride in bytes (0 = broadcast)."""
        import torch
        assert frames.dtype == torch.uint8 and frames.is_cuda and frames.is_contiguous(), \
            "frames must be a contiguous uint8 CUDA tensor"
        assert frames.ndim == 4 and frames.shape[3] == 3 and tuple(frames.shape[1:3]) == size, \
            f"frames must be [1 or {batch},{size[0]},{size[1]},3], got {tuple(frames.shape)}"
        assert frames.shape[0] in (1, batch), f"frames batch must be 1 or {batch}, got {frames.shape[0]}"
        return 0 if frames.shape[0] == 1 else 3 * size[0] * size[1]

    @staticmethod
    def _vector(hw: int, *tensors) -> int:
        return int(hw % PIXELS_PER_THREAD == 0 and all(t.data_ptr() % 16 == 0 for t in tensors))

    def frame_to_input(self, frames, intensities, x, aus, stream=None) -> None:
        """frames uint8 [1|N,H,W,3], intensities float32 [N,17] (0..5) -> x [N,3,H,W], aus [N,17] (T)."""
        import torch
        n, _, h, w = x.shape
        stride = self._frames(frames, n, (h, w))
        assert x.is_contiguous() and x.shape[1] == 3 and x.dtype == aus.dtype, "x must be contiguous [N,3,H,W]"
        assert aus.shape == (n, NUM_AUS) and aus.is_contiguous(), f"aus must be [{n},{NUM_AUS}]"
        assert intensities.shape == (n, NUM_AUS) and intensities.dtype == torch.float32 \
            and intensities.is_contiguous(), f"intensities must be contiguous float32 [{n},{NUM_AUS}]"
        hw = h * w
        groups = n * ((hw + PIXELS_PER_THREAD - 1) // PIXELS_PER_THREAD)
        c_void, c_ll, c_int, c_float = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_float
        self._launch(f"exprengine_frame_to_input_{self._suffix(x.dtype)}", max(groups, n * NUM_AUS),
                     (frames.data_ptr(), stride, intensities.data_ptr(), x.data_ptr(), aus.data_ptr(),
                      n, hw, NUM_AUS, 1.0 / AU_SCALE, self._vector(hw, frames, x)),
                     (c_void, c_ll, c_void, c_void, c_void, c_int, c_int, c_int, c_float, c_int), stream)

    def blend_to_uint8(self, color, attention, frames, out, stream=None) -> None:
        """color [N,3,H,W], attention [N,1,H,W] (T, after tanh/sigmoid), frames uint8 [1|N,H,W,3]
        -> out uint8 [N,H,W,3] = rint((A*I0 + (1-A)*C + 1) * 127.5)."""
        import torch
        n, _, h, w = color.shape
        stride = self._frames(frames, n, (h, w))
        assert color.shape[1] == 3 and color.is_contiguous(), f"color must be contiguous [N,3,H,W], got {tuple(color.shape)}"
        assert attention.shape == (n, 1, h, w) and attention.is_contiguous() and attention.dtype == color.dtype, \
            f"attention must be contiguous [{n},1,{h},{w}] of {color.dtype}"
        assert out.shape == (n, h, w, 3) and out.dtype == torch.uint8 and out.is_contiguous(), \
            f"out must be contiguous uint8 [{n},{h},{w},3]"
        hw = h * w
        groups = n * ((hw + PIXELS_PER_THREAD - 1) // PIXELS_PER_THREAD)
        c_void, c_ll, c_int = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int
        self._launch(f"exprengine_blend_to_u8_{self._suffix(color.dtype)}", groups,
                     (color.data_ptr(), attention.data_ptr(), frames.data_ptr(), stride, out.data_ptr(),
                      n, hw, self._vector(hw, color, attention, frames, out)),
                     (c_void, c_void, c_void, c_ll, c_void, c_int, c_int, c_int), stream)


    def to_uint8(self, image, out, stream=None) -> None:
        """image [N,3,H,W] (T, a network's tanh output in [-1,1]) -> out uint8 [N,H,W,3] =
        clamp(rint((x + 1) * 127.5)), bit for bit `exprengine.pixels.to_uint8_nhwc`."""
        import torch
        n, _, h, w = image.shape
        assert image.shape[1] == 3 and image.is_contiguous() and image.is_cuda, \
            f"image must be a contiguous CUDA tensor [N,3,H,W], got {tuple(image.shape)}"
        assert out.shape == (n, h, w, 3) and out.dtype == torch.uint8 and out.is_contiguous(), \
            f"out must be contiguous uint8 [{n},{h},{w},3]"
        hw = h * w
        groups = n * ((hw + PIXELS_PER_THREAD - 1) // PIXELS_PER_THREAD)
        c_void, c_int = ctypes.c_void_p, ctypes.c_int
        self._launch(f"exprengine_to_u8_{self._suffix(image.dtype)}", groups,
                     (image.data_ptr(), out.data_ptr(), n, hw, self._vector(hw, image, out)),
                     (c_void, c_void, c_int, c_int, c_int), stream)


@lru_cache(maxsize=None)
def fused_kernels(device_index: int = 0) -> FusedKernels:
    """One loaded module per GPU per process."""
    return FusedKernels(device_index)
