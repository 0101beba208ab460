#!/usr/bin/env bash
# Refreshes requirements.lock: installs the newest releases the package allows into a fresh venv, runs
# the quick test suite on them, and only if it passes writes the pins that `make setup` installs from.
#   bash scripts/lock.sh            # then commit requirements.lock
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d /tmp/fmnist-lock-XXXXXX)/venv
${PYTHON:-python3} -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --upgrade -e '.[dev]' --config-settings editable_mode=compat
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$venv/bin/python" -m pytest -q -x -m "not slow and not cluster" -p no:cacheprovider
{
  echo "# Pins for \`make setup\` (pip install -c requirements.lock): made by \`bash scripts/lock.sh\` on $(date -u +%Y-%m-%d),"
  echo "# which installed the newest releases the package allows and passed the quick suite on them."
  "$venv/bin/python" -m pip freeze --exclude-editable | grep -v -E '^(pip|setuptools|wheel)=='
} > requirements.lock
echo "wrote requirements.lock ($(grep -c '==' requirements.lock) pins)"
