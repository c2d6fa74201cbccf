#!/bin/bash
# Same-data bench (../shared/bench) with several seeds of dfine and of the official code at once on one GPU.
# usage: benchmarks/official_seeds_gpu.sh OFFICIAL_REPO SHAPES_PY OUT_DIR [RUNS="ours:0 official:0 ..."] [LIMIT_S=440]
# RUNS: CODE:SEED pairs, CODE `ours` or `official` (default: seeds 0-2 of both).
# Writes OUT_DIR/{ours,official}S/log.txt and prints the AP per epoch of each run, every minute while they train. Each run: the bench config
# (320 px, batch 8, 12 epochs, augmentation stop at 10) with 2 loader workers and 1 OpenMP thread per process.
set -u
official=$(realpath "$1"); shapes_py=$(realpath "$2"); B=$(realpath -m "$3"); runs=${4:-"ours:0 official:0 ours:1 official:1 ours:2 official:2"}; limit=${5:-440}
root=$(cd "$(dirname "$0")/.." && pwd); mkdir -p "$B"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
[ -d "$B/shapes" ] || python3 "$shapes_py" "$B/shapes" >/dev/null || exit 1
config() {  # CODE SEED: the bench config, including that code's official N config
  local include=$root/configs/dfine/dfine_hgnetv2_n_coco.yml
  [ "$1" = official ] && include=$official/configs/dfine/dfine_hgnetv2_n_coco.yml
  local resize="{type: Resize, size: [320, 320]}" tensor="{type: ConvertPILImage, dtype: float32, scale: True}"
  cat > "$B/$1$2.yml" <<YML
__include__: ['$include']
output_dir: $B/$1$2
num_classes: 6
remap_mscoco_category: False
eval_spatial_size: [320, 320]
HGNetv2: {pretrained: False}
epochs: 12
print_freq: 25
checkpoint_freq: 100
use_amp: False
train_dataloader:
  dataset:
    img_folder: $B/shapes/images/train
    ann_file: $B/shapes/annotations/instances_train.json
    transforms:
      ops: [{type: RandomPhotometricDistort, p: 0.5}, {type: RandomZoomOut, fill: 0}, {type: RandomIoUCrop, p: 0.8},
            {type: SanitizeBoundingBoxes, min_size: 1}, {type: RandomHorizontalFlip}, $resize,
            {type: SanitizeBoundingBoxes, min_size: 1}, $tensor, {type: ConvertBoxes, fmt: cxcywh, normalize: True}]
      policy: {epoch: 10}
  collate_fn: {base_size: 320, stop_epoch: 10, base_size_repeat: ~}
  total_batch_size: 8
  num_workers: 2
val_dataloader:
  dataset:
    img_folder: $B/shapes/images/val
    ann_file: $B/shapes/annotations/instances_val.json
    transforms: {ops: [$resize, $tensor]}
  total_batch_size: 16
  num_workers: 2
lr_warmup_scheduler: {warmup_duration: 100}
YML
}
report() {
  for f in "$B"/*/log.txt; do
    [ -f "$f" ] || continue
    printf '%s ' "$(basename "$(dirname "$f")")"
    python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; print(' '.join(f\"{d['test_coco_eval_bbox'][0]:.3f}\" for d in r), ' AP50 %.3f' % r[-1]['test_coco_eval_bbox'][1] if r else '')" "$f"
  done
}
for run in $runs; do
  code=${run%%:*}; s=${run##*:}; config "$code" "$s"
  dir=$root; [ "$code" = official ] && dir=$official
  (cd "$dir" && timeout "$limit" python3 train.py -c "$B/$code$s.yml" --seed="$s" -d cuda > "$B/$code$s.log" 2>&1 &)
done
start=$(date +%s); sleep 10
while pgrep -f "train.py -c $B" > /dev/null; do
  sleep 60; echo "--- $(( $(date +%s) - start )) s"; report
done
ls "$B"/*/log.txt > /dev/null 2>&1 || echo "no run wrote a log.txt: see $B/*.log"
echo "=== final ($(( $(date +%s) - start )) s)"; report
