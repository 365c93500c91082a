# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Each creates .venv when it is missing. torch is installed first with its exact pin:
# a looser pin lets pip pick a multi-GB CUDA build.
PY := .venv/bin/python
OUT ?= runs/demo

.venv/.installed: pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch .venv/.installed

venv: .venv/.installed

demo: venv
	.venv/bin/edgekd run --out $(OUT)

test: venv
	$(PY) -m pytest -q

# The edit loop: no converters, no training beyond a few steps (tests marked heavy are skipped).
test-fast: venv
	$(PY) -m pytest -q -m "not heavy"

lint: venv
	$(PY) -m ruff check edgekd tests benchmarks

.PHONY: venv demo test test-fast lint
