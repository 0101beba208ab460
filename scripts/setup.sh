#!/usr/bin/env bash
# Installs everything fmnist needs into .venv and makes sure Fashion-MNIST is on disk.
# Safe to run again: each step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# pip (not uv/poetry): on machines with a local torch wheel cache, pip is what finds it.
.venv/bin/python -m pip install --quiet --upgrade pip
# compat mode puts the checkout on sys.path, so Hydra's plugin scan finds hydra_plugins/fmnist_study_sweeper
# The versions in requirements.lock (bash scripts/lock.sh refreshes it against the newest releases and the quick suite).
.venv/bin/python -m pip install --quiet -c requirements.lock -e '.[dev]' --config-settings editable_mode=compat

# The data set: use a copy that is already here, else Debian's package, else the official mirror.
if .venv/bin/python -m fmnist.data --no-download >/dev/null 2>&1; then
  .venv/bin/python -m fmnist.data --no-download
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Installing Debian's dataset-fashion-mnist ..."
  if ! $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || echo "apt-get could not install dataset-fashion-mnist; trying the official mirror"
  fi
fi
# Finds the files, or downloads them, or says exactly what to do.
.venv/bin/python -m fmnist.data
