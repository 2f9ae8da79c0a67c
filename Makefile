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

.PHONY: install test demo lint clean base

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_C) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

# The main job: world -> shipped base model -> SFT on the noisy corpus -> eval -> HTML report
# (runs/quickstart/report/index.html). Finished stages are skipped on a rerun.
demo: install
	$(BIN)/mmalign run recipes/quickstart.yaml

# The committed command that made checkpoints/tiny-base (about 50-60 min on 2 CPU cores):
# the default world, then vision pretraining and SFT on its clean set (mmalign.models.base).
base: install
	$(BIN)/mmalign world make --out runs/base/world
	$(BIN)/mmalign model base --world runs/base/world --out runs/base/build
	rm -rf checkpoints/tiny-base && mkdir -p checkpoints
	cp -r runs/base/build/model checkpoints/tiny-base

clean:
	rm -rf runs .pytest_cache
