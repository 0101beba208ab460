#!/usr/bin/env bash
# The table2 study for the conv nets (issue 12): every cell over seeds 0-2, then the combined cell the
# report chooses on validation, one model at a time. Run it from a clone at a fixed commit, so that
# every run of a table shares one commit; runs recorded in the exports named by EXPORTS are skipped
# (a later session runs only the missing (cell, seed) pairs).
#   bash scripts/table2_convnets.sh vgg resnet18
# Env: THREADS (torch threads, default 1: leaves a core for other work), SEEDS (default 0,1,2),
#      EXPORTS (comma-separated export CSVs of earlier sessions, default none).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
threads=${THREADS:-1}
seeds=${SEEDS:-0,1,2}
common=(precision=bf16 channels_last=true "threads=$threads" progress=false "exports=[${EXPORTS:-}]")
for model in "$@"; do
  echo "== $model: cells, seeds $seeds ($(date -Is))"
  "$python" -m fmnist.run -m study=table2 "model=$model" "seed=$seeds" "${common[@]}"
  echo "== $model: the combined cell chosen on validation ($(date -Is))"
  combined=$("$python" -m fmnist.report --experiment table2 --out "results/_scratch/$model" | grep -E '^ +python -m fmnist.run' || true)
  if [ -n "$combined" ]; then
    eval "\"$python\" ${combined#*python }"
  fi
  echo "== $model: done ($(date -Is))"
done
