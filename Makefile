# `make baseline`, `make test` and `make test-all` each set everything up first (scripts/setup.sh is idempotent).
.PHONY: setup baseline test test-all
VENV_PY := .venv/bin/python

setup:
	bash scripts/setup.sh

baseline: setup
	$(VENV_PY) -m fmnist.run

# The quick suite (every module, tiny data, minutes); test-all adds the slow, browser and cluster tests (CI: .ci/run).
test: setup
	$(VENV_PY) -m pytest -m "not slow and not cluster"

test-all: setup
	$(VENV_PY) -m pytest --durations=40
