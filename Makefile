# Two commands on a fresh machine: `make demo` (main job on the embedded default)
# and `make test`. Both create/reuse a virtualenv and install what they need.
PYTHON ?= python3
VENV ?= .venv
# On a CPU-only machine torch is pinned to the local CPU wheel; on a GPU machine
# run `make install CONSTRAINTS=` (or your own file) to take the CUDA build.
CONSTRAINTS ?= constraints/cpu.txt
PIP_C = $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
BIN = $(VENV)/bin
STAMP = $(VENV)/.mmalign-installed

.PHONY: install test demo lint clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_C) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

demo: install
	$(BIN)/mmalign world make --out runs/demo/world
	$(BIN)/mmalign data inspect runs/demo/world/corpus.json
	$(BIN)/python bench/world_baselines.py runs/demo/world

clean:
	rm -rf runs .pytest_cache
