#!/usr/bin/env bash
# Installs PreZoo on a fresh Debian machine: apt packages (as root), then a virtualenv in .venv.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(dataset-fashion-mnist chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# torch + torchvision first, exactly as pinned; then everything else.
.venv/bin/pip install -q $(grep -E '^(torch|torchvision)==' requirements.txt)
.venv/bin/pip install -q -r requirements.txt
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
