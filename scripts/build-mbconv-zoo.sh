#!/usr/bin/env bash
# Rebuilds the committed MBConv zoo (space `mbconv-small`, Fashion-MNIST) from scratch, as it was made:
# one uniform supernet with the one-shot recipe (sandwich + in-place distillation, crops, random erasing, EMA)
# -> each params bucket's entry (two buckets per octave) searched on 2,000 of the 5,000 held-out images
# (BatchNorm recalibrated per path; the zoo's validation top-1 is measured on all 5,000), two buckets side by side
# -> test evaluation
# -> packaging into zoos/mbconv-fmnist -> each entry fine-tuned standalone from its supernet weights, two side by
# side (10 epochs, lr 2e-3: the zoo then serves the tuned weights) -> latency profiling on this machine -> each
# entry's w16/w8/w4 files measured and sized.
# Interrupted, it resumes: training from its last checkpoint (every 100 steps), tuning at the entries not tuned yet,
# and every later step that has not written its output yet. Progress bars with ETA throughout.
# Usage: bash scripts/build-mbconv-zoo.sh [RUN_DIR] [ZOO_DIR]
# (ZOO_DIR defaults to the committed zoos/mbconv-fmnist; give another to rebuild without replacing it.)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/mbconv-small}
ZOO=${2:-zoos/mbconv-fmnist}
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
$PY -m training train --out "$RUN" --space mbconv-small --sampler uniform --sandwich 1 --distill --crop-padding 2 \
    --random-erasing 0.25 --ema 0.999 --epochs 20 --batch-size 128 --lr 1e-2 --min-lr 1e-5 --warmup-epochs 1 \
    --weight-decay 0.05 --label-smoothing 0.1 --drop-path 0 --seed 0 --ckpt-every 100 --log-every 50
[ -f "$RUN/pick/preferred.json" ] || $PY -m training pick --run "$RUN" --evaluations 40 --population 10 --val-images 2000 \
    --seed 0 --bucket-ratio 1.41421356 --jobs 2
$PY -m training evaluate --run "$RUN" --preferred "$RUN/pick/preferred.json" --split test
$PY -m training package --run "$RUN" --out "$ZOO" --name mbconv-fmnist
$PY -m training tune --zoo "$ZOO" --work "$RUN/tune" --epochs 10 --lr 2e-3 --jobs 2
$PY -m export profile --zoo "$ZOO"
$PY -m training variants --zoo "$ZOO" --threads 1
$PY -m export sizes --zoo "$ZOO"
