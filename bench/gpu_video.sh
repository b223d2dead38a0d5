#!/usr/bin/env bash
# Video on a GPU, in one call on a machine with an NVIDIA GPU (the lent H100 via the device tool):
# the faces/video tests, then bench/test_video_bench.py at 1920x1080 with the torch FP16 CUDA engine
# (end-to-end frames/s of decode -> detect/track -> edit -> paste -> encode, and one frame in to out).
#
#   bash bench/gpu_video.sh                 # results in $OUT (default bench/results/gpu-video)
#
# The device image has no dlib and no ffmpeg binary: they travel in .whl/ (see bench/README.md):
# the dlib-bin wheel, imageio_ffmpeg's Python files, and its ffmpeg binary xz-compressed.
set -uo pipefail
OUT=${OUT:-bench/results/gpu-video}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/nvidia-smi.txt"
nproc | sed 's/^/cpus: /' | tee -a "$OUT/nvidia-smi.txt"
rm -rf /tmp/site && mkdir -p /tmp/site
python3 -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/site .whl/dlib_bin*.whl . 2>&1 | tail -3
cp -r .whl/site/imageio_ffmpeg /tmp/site/
xz -dc .whl/ffmpeg.xz > /tmp/ffmpeg && chmod +x /tmp/ffmpeg
export PYTHONPATH=/tmp/site IMAGEIO_FFMPEG_EXE=/tmp/ffmpeg
[ "${SKIP_TESTS:-0}" = 1 ] || python3 -m pytest -q -p no:cacheprovider -k "not alignment" tests/test_faces.py tests/test_stream.py tests/test_edit_photo.py tests/test_video_cli.py $(ls tests/test_video_io.py 2>/dev/null) \
  2>&1 | tee "$OUT/tests.log" | tail -4
[ "${FFMPEG_PROBE:-0}" = 1 ] && { python3 -c "
import sys; sys.path.append('bench')
import os; os.environ['EXPRENGINE_BENCH_DEVICE']='cuda'
import test_video_bench as vb
vb.moving_face_clip('/tmp/clip1080.mp4', 240, (1080, 1920))"; python3 bench/ffmpeg_probe.py /tmp/clip1080.mp4 2>&1 | tee "$OUT/ffmpeg-probe.log"; exit 0; }
python3 bench/video_profile.py --device cuda --frames 240 --json "$OUT/profile.json" 2>&1 | tee "$OUT/profile.log" | tail -16
for frames in 240; do
  EXPRENGINE_BENCH_DEVICE=cuda EXPRENGINE_BENCH_FRAMES=$frames python3 -m pytest --benchmark-only -q -p no:cacheprovider \
    bench/test_video_bench.py --benchmark-json "$OUT/h100-video.json" 2>&1 | tee "$OUT/bench.log" | tail -12
done
python3 bench/report.py "$OUT/h100-video.json" --markdown "$OUT/h100-video.md" --check
