#!/usr/bin/env bash
# A study for one or more models: every cell over SEEDS, then the combined cell that the report
# chooses on validation, one model at a time. Run it from a clone at a fixed commit, so that every
# run of a table shares one commit; runs recorded in the exports named by EXPORTS are skipped, so a
# later session runs only the missing (cell, seed) pairs.
#   bash scripts/study.sh table2 mlp
#   OPTIONS="precision=bf16 channels_last=true" bash scripts/study.sh table2 vgg resnet18
# Env: SEEDS (default 0,1,2), THREADS (torch threads, default 1: leaves a core for other work),
#      OPTIONS (more overrides for every run), EXPORTS (comma-separated export CSVs, default none).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
study=$1; shift
seeds=${SEEDS:-0,1,2}
read -r -a options <<< "${OPTIONS:-}"
common=("${options[@]}" "threads=${THREADS:-1}" progress=false "exports=[${EXPORTS:-}]")
for model in "$@"; do
  echo "== $study $model: cells, seeds $seeds ($(date -Is))"
  "$python" -m fmnist.run -m "study=$study" "model=$model" "seed=$seeds" "${common[@]}"
  echo "== $study $model: the combined cell chosen on validation ($(date -Is))"
  combined=$("$python" -m fmnist.report --out "results/_scratch/$study-$model" | grep -E '^ +python -m fmnist.run' || true)
  if [ -n "$combined" ]; then
    eval "\"$python\" ${combined#*python }"
  fi
  echo "== $study $model: done ($(date -Is))"
done
