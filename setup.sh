#!/usr/bin/env bash
# Installs PreZoo on a fresh Debian/Ubuntu machine: apt packages (as root), then a virtualenv in .venv.
# Idempotent: a second run only checks.
#   bash setup.sh                 serving, training, export and the test tools (requirements-dev.txt, chromium)
#   bash setup.sh --serve         without the test tools (what the Docker image installs)
#   bash setup.sh --gpu           onnxruntime-gpu (requirements-gpu.txt) instead of onnxruntime, for CUDA machines
# A first install needs about 7 GiB of disk (torch's CUDA build is most of it): it checks before installing anything
# ($PREZOO_SETUP_NEED_GIB sets another need, 0 skips the check).
set -euo pipefail
cd "$(dirname "$0")"

serve_only=0 gpu=0
for arg in "$@"; do
  case "$arg" in
    --serve) serve_only=1 ;;
    --gpu) gpu=1 ;;
    *) echo "setup: unknown option '$arg' (options: --serve, --gpu)" >&2; exit 2 ;;
  esac
done

need_gib=${PREZOO_SETUP_NEED_GIB:-7}
if ! [[ $need_gib =~ ^[0-9]+$ ]]; then
  echo "setup: PREZOO_SETUP_NEED_GIB must be a whole number of GiB, not '$need_gib'" >&2
  exit 2
fi
if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  free_gib=$(( $(df -Pk . | awk 'NR == 2 {print $4}') / 1048576 ))
  if ((free_gib < need_gib)); then
    echo "setup: a first install needs about $need_gib GiB of disk; only $free_gib GiB free at $PWD." \
      "Nothing was installed." >&2
    exit 1
  fi
fi

APT_PACKAGES=(dataset-fashion-mnist)
((serve_only)) || APT_PACKAGES+=(chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/pip install -q --no-cache-dir)  # no second copy of every wheel in ~/.cache
# torch + torchvision first, exactly as pinned; then everything else.
"${pip[@]}" $(grep -E '^(torch|torchvision)==' requirements.txt)
# onnxruntime and onnxruntime-gpu provide the same module: exactly one of them may be installed.
if ((gpu)); then ort=$(grep -E '^onnxruntime-gpu==' requirements-gpu.txt) other=onnxruntime
else ort=$(grep -E '^onnxruntime==' requirements.txt) other=onnxruntime-gpu; fi
if .venv/bin/pip show -q "$other" >/dev/null 2>&1; then
  echo "setup: replacing $other with $ort"
  .venv/bin/pip uninstall -y -q "$other" "${ort%%==*}"
fi
"${pip[@]}" -r <(grep -vE '^onnxruntime==' requirements.txt) "$ort"
((serve_only)) || "${pip[@]}" -r requirements-dev.txt
# KServe's clients for the tests, without their declared pins (kserve 0.21 would downgrade protobuf and pandas; its
# clients run with ours: requirements-kserve.txt says why)
((serve_only)) || "${pip[@]}" --no-deps -r requirements-kserve.txt
"${pip[@]}" --no-deps -e .  # the `prezoo` command, running this checkout's code
echo "setup: done ($(.venv/bin/python -c 'import torch, onnxruntime as o; print("torch", torch.__version__,
  "| onnxruntime", o.__version__, o.get_available_providers())'))"
