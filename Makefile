# `make baseline` and `make test` each set everything up first (scripts/setup.sh is idempotent).
.PHONY: setup baseline test
VENV_PY := .venv/bin/python

setup:
	bash scripts/setup.sh

baseline: setup
	$(VENV_PY) -m fmnist.run

test: setup
	$(VENV_PY) -m pytest
