#!/usr/bin/env bash
# Training on a GPU, in one call on a machine with an NVIDIA GPU (the lent H100 via the device
# tool): the CUDA tests (kernels, engines, mixed-precision training and exact resume), then the
# thesis's comparison with the GAN objective, all five generators trained at once on the one GPU
# under the same budget of critic steps, fitted to the time left in the call (a short probe of
# all five measures the step time, then they train afresh).
#
#   bash bench/gpu_training.sh                         # results in $OUT (default bench/results/gpu-training)
#   BUDGET_S=400 bash bench/gpu_training.sh            # seconds for the whole script (default 540)
#
# The renderer (about 100 faces/s per core) would starve the GPU, so the faces are rendered
# once, on every core, by `exprengine synth`, and the GAN objective trains on that set.
set -uo pipefail
START=$(date +%s)
OUT=${OUT:-bench/results/gpu-training}
BUDGET_S=${BUDGET_S:-540}
DEVICE=${DEVICE:-cuda} N_SYNTH=${N_SYNTH:-30000} PROBE=${PROBE:-200}     # (small values: a dry run on a CPU)
MODELS="ganimation convnext2 convnext4 convnext6 convnext2-ln"
ARGS="--objective gan --device $DEVICE --batch 25 --lr 1e-4 --image-size 64 --dims 16,32,64 --critic-width 16 --eval-n 100"
W=/tmp/compare-gan
mkdir -p "$OUT" && rm -rf "$W" && mkdir -p "$W"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/nvidia-smi.txt"
rm -rf /tmp/site && python3 -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/site . 2>&1 | tail -3
export PYTHONPATH=/tmp/site
EX="python3 -m exprengine"
[ "${SKIP_TESTS:-0}" = 1 ] || OMP_NUM_THREADS=2 python3 -m pytest -q -p no:cacheprovider -rs tests/test_kernels.py tests/test_cuda.py tests/test_gpu_engine.py \
  tests/test_training.py -k cuda 2>&1 | tee "$OUT/gpu-tests.log" | tail -8
$EX synth --n $N_SYNTH --out /tmp/synth --workers 16 --seed 0 --identities 1000 2>&1 | tail -1
cat /tmp/synth/synth.json
export OMP_NUM_THREADS=3
elapsed() { echo $(( $(date +%s) - START )); }
t0=$(date +%s)
for m in $MODELS; do $EX compare --models "$m" --out "$W/$m" --data /tmp/synth --steps $PROBE $ARGS > "$W/$m.probe.log" 2>&1 & done
wait
t1=$(date +%s)
STEPS=$(python3 - "$W" <<PY
import json, sys
from pathlib import Path
# seconds per critic step with all five training at once, from the trainers' own clocks (CUDA
# start included, so an overestimate); the rest of the probe's wall time is start and evaluation
train = [json.loads(p.read_text())["models"][p.parent.name]["train_seconds"] for p in Path(sys.argv[1]).glob("*/comparison.json")]
if len(train) < 5:
    sys.exit("a probe run failed: see its log in runs.tar.gz")
per_step, overhead = max(train) / $PROBE, ($t1 - $t0) - max(train)
left = $BUDGET_S - $(elapsed) - overhead - 20
print(max($PROBE, int(left / per_step) // $PROBE * $PROBE))
PY
) || { tar czf "$OUT/runs.tar.gz" -C "$W" .; exit 1; }
for m in $MODELS; do rm -rf "${W:?}/$m"; done
echo "probe: $PROBE critic steps of all five in $((t1 - t0)) s; budget -> $STEPS critic steps each" | tee "$OUT/budget.txt"
for m in $MODELS; do $EX compare --models "$m" --out "$W/$m" --data /tmp/synth --steps $STEPS $ARGS > "$W/$m.log" 2>&1 & done
wait
python3 - "$W" "$OUT" <<'PY'
import json, sys
from pathlib import Path
from exprengine.training.compare import markdown
w, out = Path(sys.argv[1]), Path(sys.argv[2])
merged = None
for m in ("ganimation", "convnext2", "convnext4", "convnext6", "convnext2-ln"):
    try:
        r = json.loads((w / m / "comparison.json").read_text())
    except (OSError, ValueError) as e:
        print(f"{m}: no result ({e})"); continue
    merged = merged or dict(r, models={})
    merged["models"][m] = r["models"][m]
if merged:
    (out / "comparison.json").write_text(json.dumps(merged, indent=2) + "\n")
    (out / "comparison.md").write_text(markdown(merged))
    print(markdown(merged))
PY
tar czf "$OUT/runs.tar.gz" -C "$W" --exclude='checkpoint.safetensors' --exclude='generator.safetensors' . 
echo "done in $(elapsed) s"
