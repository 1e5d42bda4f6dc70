# tagpipe: `make run` and `make test` work from a fresh clone with nothing done first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench install clean help

help:
	@echo "make run    - run poller, writer and status page (simulator -> ring -> SQLite)"
	@echo "make test   - run the test suite"
	@echo "make bench  - run the benchmarks (figures go in BENCHMARKS.md)"

# Re-install only when the package metadata changed.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# RUN_ARGS e.g. "--rate 1000 --duration 60" (the simulator's load mode); see docs/operations.md.
run: $(STAMP)
	$(PY) -m pipeline $(RUN_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
