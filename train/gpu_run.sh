#!/usr/bin/env bash
# Train bonefrac's detectors from scratch on one CUDA GPU, side by side, for a fixed time:
#   - YOLO11n at 640 px (bf16 AMP, RAM image cache), the schedule fitted to the budget;
#   - Faster R-CNN MobileNetV3-FPN with GroupNorm (FRCNN_NORMS="batch group" adds the BatchNorm
#     pilot at equal GPU time), its schedule fitted to the budget.
# Measured on one H200 with 16 cores (2026-12-04): YOLO alone took about 8 s an epoch; beside two
# Faster R-CNN runs about 18 s, and each Faster R-CNN run about 0.6 s a step (1 epoch in the
# budget): the 16 cores, not the GPU, were the limit.
# The YOLO best.pt, the better Faster R-CNN's best weights (FP16, split into parts of at most
# 15 MB) and every run's records and logs end in OUT_DIR; unpack them here with
#   cat frcnn.tar.part-* | tar -x ; tar -xf yolo.tar ; tar -xzf records.tar.gz
#
#   bash train/gpu_run.sh DATA_YAML OUT_DIR [BUDGET_S]
#
# With RESUME=docs/train/RUN it trains nothing new: it goes on with that committed snapshot's
# run on the GPU (python -m bonefrac.train.resume --device cuda) until the budget ends, and packs
# the snapshot, advanced by every epoch that finished, in parts of at most 15 MB; bring it back
# with  cat OUT_DIR/snapshot.tar.part-* | tar -x -C docs/train  (then make train-curve).
#
# Needs PyTorch with CUDA, torchvision, Ultralytics, OpenCV, Pillow and pycocotools (not the
# serving packages: bonefrac is run from this checkout). Settings can be changed with
# YOLO_DEVICE (0), FRCNN_DEVICE (cuda), YOLO_WORKERS (7), FRCNN_WORKERS (3), FRCNN_NORMS
# ("group") and EXTRA_FRCNN (extra options, e.g. --limit for a smoke run).
set -uo pipefail
data=$(realpath "$1")
out=$(realpath "$2")
budget_s=${3:-450}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/tmp/bonefrac-gpu}
runs=$work/runs
mkdir -p "$out" "$runs" "$work/pkg"

# bonefrac importable without installing it: the package layout pyproject.toml declares.
rm -rf "$work/pkg/bonefrac"
cp -r "$repo/bonefrac" "$work/pkg/bonefrac"
for sub in client export ui benchmarks train; do cp -r "$repo/$sub" "$work/pkg/bonefrac/$sub"; done
export PYTHONPATH=$work/pkg${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
cd "$work"

started=$(date +%s)
if [[ -n ${RESUME:-} ]]; then
  name=$(basename "$RESUME")
  rm -rf "$work/snapshots" && mkdir -p "$work/snapshots"
  cp -r "$(realpath "$RESUME")" "$work/snapshots/$name"
  timeout --signal=TERM "$((budget_s + ${MARGIN_S:-60}))" python3 -m bonefrac.train.resume \
    "$work/snapshots/$name" --data "$data" --device "${FRCNN_DEVICE:-cuda}" \
    --workers "${FRCNN_WORKERS:-8}" >"$runs/resume-$name.log" 2>&1
  rc=$?
  echo "trained for $(($(date +%s) - started)) s (exit $rc: 124 is the budget's end)"
  tail -c 2000 "$runs/resume-$name.log"
  tar -cf - --exclude=".*.tmp" -C "$work/snapshots" "$name" | split -b 15m - "$out/snapshot.tar.part-"
  tar -czf "$out/records.tar.gz" -C "$runs" --exclude='*.pt' --exclude='*.pth' .
  ls -la "$out"
  exit $((rc == 124 ? 0 : rc))
fi
(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 20 >"$runs/gpu.csv" 2>&1 &)
python3 -m bonefrac.train.cli yolo11 --data "$data" --model yolo11n.yaml --imgsz 640 \
  --epochs 100 --batch 32 --workers "${YOLO_WORKERS:-7}" --threads 4 --device "${YOLO_DEVICE:-0}" \
  --precision bfloat16 --cache ram --time-h "$(python3 -c "print($budget_s / 3600)")" \
  --project "$runs" --name yolo11n-640 >"$runs/yolo11n-640.log" 2>&1 &
pids=($!)
for norm in ${FRCNN_NORMS:-group}; do
  python3 -m bonefrac.train.cli frcnn --data "$data" --protocol 7class --norm "$norm" \
    --epochs 30 --batch 8 --lr 0.02 --negatives 0.2 --roi-batch 256 --rpn-proposals 1000 \
    --device "${FRCNN_DEVICE:-cuda}" --workers "${FRCNN_WORKERS:-3}" --threads 2 \
    --time-budget-s "$budget_s" --project "$runs" --name "frcnn-mnv3-512-$norm" \
    ${EXTRA_FRCNN:-} >"$runs/frcnn-$norm.log" 2>&1 &
  pids+=($!)
done
# Each run ends its schedule by itself; past the budget and a margin, stop it (the weights of
# its last finished epoch are kept).
deadline=$((started + budget_s + ${MARGIN_S:-60}))
while (($(date +%s) < deadline)) && kill -0 "${pids[@]}" 2>/dev/null; do sleep 5; done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
wait
echo "trained for $(($(date +%s) - started)) s"

# The records and logs of every run.
tar -czf "$out/records.tar.gz" -C "$runs" --exclude='*.pt' --exclude='*.pth' \
  --exclude='*.cache' --exclude='*.jpg' --exclude='*.png' .
# YOLO: best.pt (FP16 weights, optimizer stripped at the end of training).
tar -cf "$out/yolo.tar" -C "$runs" yolo11n-640/weights/best.pt
# Faster R-CNN: the run with the higher valid AP50, its best.pth as FP16.
python3 - "$runs" "$work/frcnn-best.pth" <<'EOF'
import csv, sys
from pathlib import Path

import torch

from bonefrac.train.frcnn import half_weights

runs, dst = Path(sys.argv[1]), sys.argv[2]
best = None
for run in sorted(runs.glob("frcnn-mnv3-*")):
    rows = list(csv.DictReader(open(run / "results.csv"))) if (run / "results.csv").is_file() else []
    ap50 = max((float(r["val_ap50"]) for r in rows), default=-1.0)
    print(f"{run.name}: {len(rows)} epochs, best valid AP50 {ap50:.4f}")
    if (run / "best.pth").is_file() and (best is None or ap50 > best[0]):
        best = (ap50, run)
if best is not None:
    state = torch.load(best[1] / "best.pth", map_location="cpu", weights_only=True)
    state["model"] = half_weights(state["model"])
    state["run"] = best[1].name
    torch.save(state, dst)
    print(f"kept {best[1].name} (AP50 {best[0]:.4f})")
EOF
if [[ -f $work/frcnn-best.pth ]]; then
  tar -cf - -C "$work" frcnn-best.pth | split -b 15m - "$out/frcnn.tar.part-"
fi
ls -la "$out"
