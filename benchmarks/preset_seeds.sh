#!/usr/bin/env bash
# Run a preset once per seed, each as its own command on an otherwise idle machine, and record
# each command's whole wall time (Python start-up, data loading and logging included).
# Usage: bash benchmarks/preset_seeds.sh fast 0 1 2
# Writes results/<preset>/: <preset>.md/.csv (the report, mean ± std over seeds) and timing.md.
# The runs go to a fresh store, <preset>.db in the repository root, so every seed really trains.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
preset=$1; shift
out=results/$preset
store=$preset.db  # relative to the repository root, so the report's "Made by" line runs anywhere
rm -f "$store"
mkdir -p "$out"
rows=""
for seed in "$@"; do
  start=$(date +%s.%N)
  "$python" -m fmnist.run "experiment=$preset" "seed=$seed" progress=false "tracking.uri=sqlite:///$store" \
    "hydra.run.dir=outputs/$preset/seed$seed"
  end=$(date +%s.%N)
  rows+="| $seed | $("$python" -c "print(f'{$end - $start:.0f}')") |"$'\n'
done
"$python" -m fmnist.report --tracking-uri "sqlite:///$store" --experiment "$preset" --all --out "$out" --name "$preset"
{
  echo "# experiment=$preset: wall time per command"
  echo
  echo "Made by \`bash benchmarks/preset_seeds.sh $preset $*\` on $(nproc) CPU cores ($(lscpu | sed -n 's/^Model name: *//p')), $(date -u '+%Y-%m-%d %H:%M') UTC."
  echo "Each seed is one \`python -m fmnist.run experiment=$preset seed=N\` command, timed from start to exit."
  echo
  echo "| seed | wall time (s) |"
  echo "|---|---:|"
  printf '%s' "$rows"
} | tee "$out/timing.md"
