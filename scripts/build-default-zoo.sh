#!/usr/bin/env bash
# Rebuilds the committed default zoo (space `ladder`, Fashion-MNIST) from scratch, exactly as it was made:
# zero-cost selection -> preferred one-shot training -> evaluation -> packaging into zoos/ladder-fmnist
# -> latency profiling on this machine.
# Takes about an hour on 2 CPU cores. Usage: bash scripts/build-default-zoo.sh [RUN_DIR] [ZOO_DIR]
# (ZOO_DIR defaults to the committed zoos/ladder-fmnist; give another to rebuild without replacing it.)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/default}
ZOO=${2:-zoos/ladder-fmnist}
PY=.venv/bin/python
$PY -m training select --space ladder --seed 0 --out "$RUN/select"
$PY -m training train --space ladder --preferred "$RUN/select/preferred.json" --sampler preferred --seed 0 \
    --data fashion-mnist --epochs 70 --batch-size 128 --lr 1e-3 --min-lr 1e-5 --warmup-epochs 1 \
    --weight-decay 0.05 --label-smoothing 0.1 --drop-path 0.1 --ckpt-every 1000 --out "$RUN/train"
$PY -m training evaluate --run "$RUN/train" --split test
$PY -m training package --run "$RUN/train" --out "$ZOO" --name ladder-fmnist
$PY -m export profile --zoo "$ZOO"
