#!/usr/bin/env bash
# Issue 26 item 4, at zoo level: each selector's picks (one per params bucket of mbconv-small) sliced from the same
# supernet and packaged as a zoo, so that the zoos differ only in the archs chosen; each zoo's front measured on
# validation and test into bench/data/zoo-front/mbconv-SELECTOR[-sSEED].json, which
# bench/data/selectors/mbconv-small[-sSEED].json pairs bucket by bucket with evolution's (`python -m bench report`).
# ≈ 2 min a selector; evolution and ENAS first run their pick on the supernet (≈ 5-10 min). The other selectors' own
# runs, and the supernet of a seed other than 0, are made by the commands in bench/RESULTS.md ("The selectors at zoo
# level"); seed 0's evolution zoo is the first MBConv build's (`zoo-front/mbconv-fmnist-lr2e-3`).
# Usage: bash scripts/compare-selectors.sh [--seed N] [SELECTOR ...]   (default: seed 0; enas darts bossnas zero-cost)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
seed=0
if [ "${1:-}" = --seed ]; then seed=$2; shift 2; fi
[[ $seed =~ ^[0-9]+$ ]] || { echo "--seed takes a non-negative integer, not '$seed'" >&2; exit 2; }
tag=$([ "$seed" = 0 ] || echo "-s$seed")   # seed 0's runs keep their first names
SUPERNET=runs/mbconv-small$tag   # uniform sandwich supernet, lr 2e-3, 20 epochs: every selector here read or rated it
OUT=runs/zoo-level$tag
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
selectors=("$@")
[ ${#selectors[@]} -gt 0 ] || selectors=(enas darts bossnas zero-cost)
for sel in "${selectors[@]}"; do
  case $sel in
    evolution|enas) pref=$OUT/$sel-pick/pick/preferred.json
          [ -f "$pref" ] || $PY -m training pick --run $SUPERNET --out "$(dirname "$pref")" --algorithm "$sel" \
              --evaluations 40 --population 10 --val-images 2000 --seed "$seed" ;;
    darts) pref=runs/darts-mbconv-small$tag/preferred.json ;;
    bossnas) pref=runs/bossnas-mbconv-small$tag/preferred.json ;;
    zero-cost) pref=runs/select-mbconv-small$tag/preferred.json ;;
    *) echo "unknown selector $sel (known: evolution enas darts bossnas zero-cost)" >&2; exit 2 ;;
  esac
  run=$OUT/$sel
  mkdir -p "$run"
  ln -sf "$(realpath $SUPERNET/supernet.safetensors)" "$run/supernet.safetensors"
  ln -sf "$(realpath $SUPERNET/config.json)" "$run/config.json"
  $PY -m training evaluate --run "$run" --preferred "$pref"
  rm -rf "$OUT/zoo-$sel"
  $PY -m training package --run "$run" --out "$OUT/zoo-$sel" --name "mbconv-$sel$tag"
  $PY -m bench.bench_tradeoff --zoo "$OUT/zoo-$sel" --raw "bench/data/zoo-front/mbconv-$sel$tag.json" \
      --plot "$OUT/$sel.png"
done
