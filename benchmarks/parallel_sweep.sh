#!/usr/bin/env bash
# Wall time of one 4-job MLP sweep (5 epochs each), run sequentially and through joblib, in one go.
# Usage: bash benchmarks/parallel_sweep.sh [n_jobs]   (writes results/bench/parallel_sweep.md)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
n_jobs=${1:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sweep() {  # $1: label, rest: extra overrides; prints seconds
  local dir="$work/$1"; mkdir -p "$dir"; shift
  local start end
  start=$(date +%s.%N)
  "$python" -m fmnist.run -m model=mlp seed=0,1,2,3 progress=false "tracking.uri=sqlite:///$dir/mlflow.db" \
    "hydra.sweep.dir=$dir/multi" "$@" >"$dir/log" 2>&1
  end=$(date +%s.%N)
  "$python" -c "print(round($end - $start, 1))"
}

sequential=$(sweep sequential)
parallel=$(sweep joblib hydra/launcher=joblib "hydra.launcher.n_jobs=$n_jobs")
ratio=$("$python" -c "print(round($sequential / $parallel, 2))")
mkdir -p results/bench
{
  echo "# 4-job MLP sweep: sequential vs joblib"
  echo
  echo "Made by \`bash benchmarks/parallel_sweep.sh $n_jobs\` on $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), $(date -u +%Y-%m-%d)."
  echo
  echo "| launcher | wall time (s) |"
  echo "|---|---|"
  printf '| basic (one job at a time, torch default threads) | %.1f |\n' "$sequential"
  printf '| joblib, n_jobs=%s (threads = cores / n_jobs) | %.1f |\n' "$n_jobs" "$parallel"
  echo
  echo "Speed-up: ${ratio}x"
} | tee results/bench/parallel_sweep.md
