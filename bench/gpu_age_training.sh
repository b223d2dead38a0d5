#!/usr/bin/env bash
# The default age model (issue 16 part 8) trained on a GPU in one call (the lent H100/H200 via the
# device tool), evaluated and packaged with its card, ready to ship: copy
# $OUT/default_age_model.safetensors to exprengine/assets/ and tests/test_pretrained.py measures
# it again against its bar.
#
#   bash bench/gpu_age_training.sh                     # results in $OUT (default bench/results/gpu-age-training)
#   BUDGET_S=400 bash bench/gpu_age_training.sh        # seconds for the whole script (default 540)
#   DEVICE=cpu POOL=64 PROBE=3 BATCH=2 EVAL_N=6 TRAVERSALS=2 BUDGET_S=200 bash bench/gpu_age_training.sh   # dry run
#
# The recipe is stage 4's (runs/age-stage4/README.md: the paired and reconstruction losses, no
# code noise, the mapping at 1/100 of the rate, a pool rendered once), started from its running
# generator at step 40,000, with a larger batch. The pool is rendered on every core before the
# GPU starts, so the renderer does not starve it. A short probe measures the step time; the run
# then gets the steps that fit the time left, minus the evaluation's.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT=${OUT:-bench/results/gpu-age-training}
BUDGET_S=${BUDGET_S:-540}
DEVICE=${DEVICE:-cuda} POOL=${POOL:-20000} PROBE=${PROBE:-200} BATCH=${BATCH:-32} LR=${LR:-2.5e-4}
EVAL_N=${EVAL_N:-60} TRAVERSALS=${TRAVERSALS:-8} EVAL_S=${EVAL_S:-90}
INIT=${INIT:-runs/age-stage4/generator.safetensors}
W=${WORK:-/tmp/age-gpu}      # scratch: the cache with the pool, the runs
for v in BUDGET_S POOL PROBE BATCH EVAL_N TRAVERSALS EVAL_S; do   # every argument checked before any work
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a whole number above 0, not '${!v}'" >&2; exit 2; }
done
[ "$PROBE" -ge 2 ] || { echo "PROBE must be at least 2 steps" >&2; exit 2; }
[ -f "$INIT" ] || { echo "INIT $INIT: no such file" >&2; exit 2; }
mkdir -p "$OUT" && rm -rf "$W" && mkdir -p "$W"
export PYTHONUNBUFFERED=1 EXPRENGINE_CACHE=$W/cache
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/budget.txt"
elapsed() { echo $(( $(date +%s) - START )); }
ARGS="--model lats-small --data synthetic-age --image-size 64 --objective paired --batch $BATCH --lr $LR \
  --code-noise 0 --mapping-lr 0.01 --pool $POOL --loss-weight cycle=0 --loss-weight id=0 --loss-weight age=0 \
  --init $INIT --seed 4 --device $DEVICE"
train() {  # train STEPS OUT [more options]: the run's own log in OUT.log; its wall time in seconds on stdout
  local steps=$1 out=$2; shift 2
  local t0=$(date +%s)
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} python3 -m exprengine train $ARGS --steps "$steps" --out "$out" "$@" \
    > "$out.log" 2>&1 || { cp "$out.log" "$OUT/"; echo "training failed: see $OUT/$(basename "$out").log" >&2;
                         tail -5 "$out.log" >&2; return 1; }
  echo $(( $(date +%s) - t0 ))
}
# the pool, rendered once on every core into the cache the runs read it from, then the start-up time
python3 - "$POOL" <<'PY' || exit 1
import os, sys
from exprengine.training.lats_trainer import age_training_data
pool = age_training_data("synthetic-age", 64, int(sys.argv[1]), progress=False)   # the runs' own pool
pool.workers = os.cpu_count()
pool.fill()
PY
T1=$(train 1 "$W/start" --checkpoint-every 1 --sample-every 1) || exit 1
TP=$(train "$PROBE" "$W/probe" --checkpoint-every "$PROBE" --sample-every "$PROBE") || exit 1
STEPS=$(python3 - <<PY
per_step = max($TP - $T1, 1) / max($PROBE - 1, 1)
left = $BUDGET_S - $(elapsed) - $T1 - $EVAL_S - 15
if left < 10 * per_step * $PROBE:
    raise SystemExit(f"only {left:.0f} s of the budget are left after the probe: give BUDGET_S more")
print(max($PROBE, int(left / per_step) // 100 * 100))
PY
) || exit 1
echo "start-up ${T1} s; $PROBE steps in ${TP} s; pool of $POOL; budget -> $STEPS steps of batch $BATCH" | tee -a "$OUT/budget.txt"
RUN=$W/run
EVERY=$(( STEPS / 10 > 0 ? STEPS / 10 : 1 ))
TS=$(train "$STEPS" "$RUN" --checkpoint-every "$EVERY" --sample-every "$EVERY") || exit 1
echo "trained $STEPS steps in $TS s" | tee -a "$OUT/budget.txt"
COMMAND="exprengine train $(echo $ARGS) --steps $STEPS --out runs/age-gpu"
python3 - "$RUN" "$OUT" "$COMMAND" "$EVAL_N" "$TRAVERSALS" <<'PY' || { cp "$RUN.log" "$OUT/train.log"; echo "packaging failed" >&2; exit 1; }
import json, shutil, sys
from pathlib import Path
import imageio.v3 as iio
from exprengine.engine import Engine
from exprengine.evaluation.age_eval import age_contact_sheet
from exprengine.training.lats_trainer import LATSTrainer
from exprengine.training.package import package_age
run, out, command, n, traversals = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
card = package_age(run, out / "default_age_model.safetensors", command, n=n, running=True, traversals=traversals)
(out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
engine = Engine.from_generator(LATSTrainer.checkpoint_generator(run, running=True))
iio.imwrite(out / "sheet.png", age_contact_sheet(engine, faces=4, tile=64))
shutil.copy(run / "losses.png", out / "losses.png")
shutil.make_archive(str(out / "samples"), "gztar", run / "samples")
e = card["evaluation"]
print(f"PSNR {e['psnr']} dB (not editing {e['no_edit_psnr']} dB); per class",
      {k: round(v["psnr"] - v["no_edit_psnr"], 2) for k, v in e["per_class"].items()},
      f"lifespan Spearman {e['traversal']['spearman_mean']}, monotone {e['traversal']['monotone_fraction']}")
PY
cp "$RUN.log" "$OUT/train.log"
echo "done in $(elapsed) s"
