#!/usr/bin/env bash
# Issue 26 item 4, at zoo level: each selector's picks (one per params bucket of mbconv-small) sliced from the same
# supernet and packaged as a zoo, so that the zoos differ only in the archs chosen; each zoo's front measured on
# validation and test into bench/data/zoo-front/mbconv-SELECTOR.json, which bench/data/selectors/mbconv-small.json
# pairs bucket by bucket with evolution's (`python -m bench report`). ≈ 2 min a selector; ENAS first runs its pick
# (≈ 7 min). The selectors' own runs are made by the commands in bench/RESULTS.md ("Ratings against archs trained
# from scratch").
# Usage: bash scripts/compare-selectors.sh [SELECTOR ...]   (default: enas darts bossnas zero-cost)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SUPERNET=runs/mbconv-small   # the first MBConv build's supernet (lr 2e-3), which every selector here read or rated
OUT=runs/zoo-level
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
selectors=("$@")
[ ${#selectors[@]} -gt 0 ] || selectors=(enas darts bossnas zero-cost)
for sel in "${selectors[@]}"; do
  case $sel in
    enas) pref=$OUT/enas-pick/pick/preferred.json
          [ -f "$pref" ] || $PY -m training pick --run $SUPERNET --out "$(dirname "$pref")" --algorithm enas \
              --evaluations 40 --population 10 --val-images 2000 --seed 0 ;;
    darts) pref=runs/darts-mbconv-small/preferred.json ;;
    bossnas) pref=runs/bossnas-mbconv-small/preferred.json ;;
    zero-cost) pref=runs/select-mbconv-small/preferred.json ;;
    *) echo "unknown selector $sel (known: enas darts bossnas zero-cost)" >&2; exit 2 ;;
  esac
  run=$OUT/$sel
  mkdir -p "$run"
  ln -sf "$(realpath $SUPERNET/supernet.safetensors)" "$run/supernet.safetensors"
  ln -sf "$(realpath $SUPERNET/config.json)" "$run/config.json"
  $PY -m training evaluate --run "$run" --preferred "$pref"
  rm -rf "$OUT/zoo-$sel"
  $PY -m training package --run "$run" --out "$OUT/zoo-$sel" --name "mbconv-$sel"
  $PY -m bench.bench_tradeoff --zoo "$OUT/zoo-$sel" --raw "bench/data/zoo-front/mbconv-$sel.json" --plot "$OUT/$sel.png"
done
