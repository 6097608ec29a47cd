# synapse-compliance: `make run` starts a dev homeserver with the module, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test unit e2e lint bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) scripts/devserver.py

# pytest exits 5 when it collects no test; make treats that, like any failure, as an error.
# Two workers, each taking whole files (module-scoped servers are started once per file): the
# end-to-end tests mostly wait on Synapse subprocesses, so this nearly halves the wall time.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

unit: $(STAMP)
	$(PY) -m pytest tests/unit

e2e: $(STAMP)
	$(PY) -m pytest tests/e2e

lint: $(STAMP)
	$(VENV)/bin/ruff check synapse_compliance tests benchmarks scripts
	$(VENV)/bin/ruff format --check synapse_compliance tests benchmarks scripts
	$(VENV)/bin/mypy --strict synapse_compliance benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks.send --db sqlite
	$(PY) -m benchmarks.send --db postgresql
	$(PY) -m benchmarks.archiver
	$(PY) -m benchmarks.export
	$(PY) -m benchmarks.prune

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
