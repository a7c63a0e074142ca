# The README's two commands (make demo, make test) and the rest. Everything runs from the repo's .venv,
# which `make setup` makes.
PY := .venv/bin/python
SETUP_STAMP := .venv/.setup-done

.PHONY: setup test test-all test-slurm demo clean-demo gpu-check wheelhouse help

help:
	@echo "make setup     create .venv with every pinned dependency (no root needed; sox too where root allows)"
	@echo "make demo      the whole benchmark end to end on a synthetic corpus, on this CPU"
	@echo "make test      the test suite (what CI runs); make test-all includes the slow tests"
	@echo "make test-slurm slurm/run.sub on a one-machine Slurm (installs slurm-wlm and munge where root allows)"
	@echo "make gpu-check prove a CUDA machine offline (its own python3 and torch; docs/gpu.md)"
	@echo "make wheelhouse PYTHON=3.12  the wheels an offline GPU machine with Python 3.12 needs (< 50 MB each; PYTHON=3.10,3.11,3.12,3.13 for several)"

setup: $(SETUP_STAMP)

$(SETUP_STAMP): requirements.txt requirements-deploy.txt requirements-test.txt pyproject.toml scripts/setup.sh
	scripts/setup.sh
	touch $(SETUP_STAMP)

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ''

test-slurm: setup
	$(PY) -m pytest -q -rs -m slow tests/test_slurm.py

demo: setup
	./demo.sh

clean-demo:
	rm -rf demo

# No setup here: a GPU machine keeps its own torch (scripts/install_wheelhouse.sh installs the rest).
gpu-check:
	scripts/gpu-check.sh

# On a connected machine, for an offline GPU one: PYTHON is the GPU machine's Python version, or
# several, comma-separated (one wheelhouse/pythonX.Y each).
wheelhouse:
	@test -n "$(PYTHON)" || { echo "usage: make wheelhouse PYTHON=3.12 (the GPU machine's Python version; several: PYTHON=3.10,3.11,3.12,3.13)" >&2; exit 2; }
	scripts/build_wheelhouse.sh --python-version $(PYTHON)
