# make demo: install what is missing, start the lab, apply an example agency, show the plan and result.
# make test: install what is missing and run the whole test suite (integration tests included), on two workers.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXAMPLE ?= examples/binhdinh-sct
LABDIR ?= $(shell bash scripts/demo-labdir.sh)

.PHONY: all deps venv test unit lint demo demo-down bench clean

all: test

deps:
	@bash scripts/install-debs.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# Two workers (pytest-xdist): most of a test's time is spent waiting on the lab's servers, and each worker
# starts its own labs (free ports, private dirs). --dist loadfile: a file runs whole, in order, on one worker
# (story modules build on the test before). PYTEST_WORKERS=0: serial.
PYTEST_WORKERS ?= 2

test: deps venv lint
	$(VENV)/bin/pytest -q $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

unit: venv
	$(VENV)/bin/pytest -q tests/unit

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

demo: deps venv
	@bash scripts/demo.sh "$(EXAMPLE)" "$(LABDIR)"

demo-down: venv
	-$(VENV)/bin/mailstate lab down --dir "$(LABDIR)"

# make bench: the validate and plan benchmarks on a generated 2,000-person agency (bench/*.py, figures printed)
bench: deps venv
	$(PY) bench/bench_validate.py --people 2000
	$(PY) bench/bench_plan.py --people 2000

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
