#!/usr/bin/env bash
# Rebuilds the committed HyTra zoo (space `micro-hytra`, Fashion-MNIST) from scratch, as it was made: BossNAS's
# label-free selector (ensemble bootstrapping, 2 epochs per block) -> one-shot training on its picks only (PreNAS's
# preferred sampling, 10 epochs) -> test evaluation -> packaging into zoos/hytra-fmnist (validation top-1 on the 5,000
# held-out images, fp16 check) -> latency profiling on this machine -> each entry's w16/w8/w4 files measured and sized.
# About 75 min of two cores (bench/RESULTS.md, "Timings on the 2 cores"). Interrupted, it resumes: training from its
# last checkpoint (every 500 steps), and every step that has written its output is skipped. Progress bars with ETA.
# Usage: bash scripts/build-hytra-zoo.sh [RUN_DIR] [ZOO_DIR]
# (ZOO_DIR defaults to the committed zoos/hytra-fmnist; give another to rebuild without replacing it.)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/hytra-zoo}
ZOO=${2:-zoos/hytra-fmnist}
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[ -f "$RUN/bossnas/preferred.json" ] || $PY -m training bossnas --space micro-hytra --data fashion-mnist \
    --target ensemble --epochs-per-block 2 --seed 0 --threads 1 --out "$RUN/bossnas"
$PY -m training train --out "$RUN/train" --space micro-hytra --preferred "$RUN/bossnas/preferred.json" \
    --sampler preferred --data fashion-mnist --epochs 10 --batch-size 128 --lr 1e-3 --min-lr 1e-5 --warmup-epochs 1 \
    --weight-decay 0.05 --label-smoothing 0.1 --drop-path 0 --seed 0 --ckpt-every 500 --log-every 50
$PY -m training evaluate --run "$RUN/train" --split test
$PY -m training package --run "$RUN/train" --out "$ZOO" --name hytra-fmnist
$PY -m export profile --zoo "$ZOO"
$PY -m training variants --zoo "$ZOO" --threads 1
$PY -m export sizes --zoo "$ZOO"
