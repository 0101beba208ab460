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

# test-all: everything but the cluster on two pytest workers (most slow tests wait on one single-threaded subprocess),
# one torch thread each (two 2-thread torch processes on 2 cores slow each other many times over); then the cluster
# tests one at a time, as they share the local cluster's one node.
test-all: setup
	OMP_NUM_THREADS=1 $(VENV_PY) -m pytest -n 2 --dist worksteal -m "not cluster" --durations=40
	$(VENV_PY) -m pytest -m cluster --durations=10
