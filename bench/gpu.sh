#!/usr/bin/env bash
# The GPU run, in one call on a machine with an NVIDIA GPU (the lent H100 via the device tool):
# install exprengine over the machine's own PyTorch, run the GPU tests, try TensorRT, and
# build/check/time every GPU backend. Results land in $OUT (default bench/results/gpu-run).
#
#   bash bench/gpu.sh                                   # everything
#   bash bench/gpu.sh --backends eager,torch --models convnext6
#
# TensorRT for RTX can be carried in .trt/ (see bench/README.md): it is unpacked to /tmp/trt
# and tried as the tensorrt backend's builder.
set -uo pipefail
OUT=${OUT:-bench/results/gpu-run}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 EXPRENGINE_CACHE=/tmp/exprengine-cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.txt"
rm -rf /tmp/site && python3 -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/site . 2>&1 | tail -3
export PYTHONPATH=/tmp/site
if [ -d .trt ]; then
  python3 - <<'PY'
import glob, lzma, os, shutil, zipfile
os.makedirs("/tmp/trt", exist_ok=True)
shutil.copytree(".trt/tensorrt_rtx", "/tmp/trt/tensorrt_rtx", dirs_exist_ok=True)
shutil.copytree(".trt/libs/tensorrt_rtx_libs", "/tmp/trt/tensorrt_rtx_libs", dirs_exist_ok=True)
zipfile.ZipFile(glob.glob(".trt/tensorrt_rtx_cu13_bindings*.whl")[0]).extractall("/tmp/trt")
for src, dst in ((".trt/libtensorrt_rtx.so.1.xz", "/tmp/trt/tensorrt_rtx_libs/libtensorrt_rtx.so.1"),
                 ("/tmp/trt/tensorrt_rtx_libs/libtensorrt_onnxparser_rtx.so.1.xz",
                  "/tmp/trt/tensorrt_rtx_libs/libtensorrt_onnxparser_rtx.so.1")):
    with lzma.open(src) as f, open(dst, "wb") as g:
        shutil.copyfileobj(f, g)
print("TensorRT-RTX unpacked to /tmp/trt")
PY
  export PYTHONPATH=/tmp/site:/tmp/trt
  python3 bench/tensorrt_probe.py 2>&1 | tee "$OUT/tensorrt-probe.log"
fi
python3 -m pytest -q -p no:cacheprovider -rs tests/test_kernels.py tests/test_cuda.py 2>&1 | tee "$OUT/gpu-tests.log" | tail -15
if [ "${AOTI_PROBE:-0}" = 1 ]; then
  for p in fp32 fp16; do timeout 240 python3 -X faulthandler bench/aoti_cuda_probe.py $p > "$OUT/aoti-cuda-probe-$p.log" 2>&1; echo "aoti probe $p exit $?"; grep -v "^  File\|^Thread\|^$\|^Extension" "$OUT/aoti-cuda-probe-$p.log" | tail -6; done
fi
[ "${SKIP_BENCH:-0}" = 1 ] && exit 0
python3 -X faulthandler bench/gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu-bench.log" | grep -v "^\[" 
