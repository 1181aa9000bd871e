# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates its virtual environment when needed, installs the package, and runs.

PYTHON ?= python3
VENV ?= .venv
# ArviZ 1.x (DataTree) needs Python >= 3.12; the tests run on both ArviZ lines.
PYTHON312 ?= $(shell for v in $$(pyenv versions --bare 2>/dev/null | grep '^3\.12'); do \
	  echo "$$(pyenv root)/versions/$$v/bin/python3.12"; break; done)
ifeq ($(strip $(PYTHON312)),)
PYTHON312 := $(shell command -v python3.12 2>/dev/null)
endif
VENV312 ?= .venv312
PYTEST_ARGS ?=
# Test files run on this many worker processes (pytest-xdist; each file stays on one worker, so
# its module fixtures are built once). XLA compiles on one thread, so two workers keep both
# cores busy; PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)
# `make bench` compares numpyro-slt with devinterp (PyTorch) and BlackJAX in a separate environment.
# torch is pinned and installed first: 2.13.0 is the CPU build at hand, and letting pip choose
# another version would download gigabytes; the constraint keeps devinterp from replacing it.
BENCH_VENV ?= build/venv-bench
BENCH_TORCH ?= torch==2.13.0
BENCH_PACKAGES ?= devinterp==2.0.1 blackjax==1.7.1

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: demo test test-arviz1 lint docs bench model clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $@

$(VENV312)/.installed: pyproject.toml
	@test -n "$(PYTHON312)" || (echo "Python 3.12 not found: set PYTHON312=/path/to/python3.12" && exit 1)
	$(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install -q --upgrade pip
	$(VENV312)/bin/python -m pip install -q -e '.[dev]'
	touch $@

# The main job on the embedded default model: a quick susceptibility study (<= 5 min on 2 cores).
demo: $(VENV)/.installed
	$(VENV)/bin/numpyro-slt study --quick --resume --out out/demo

# Rebuild the shipped default model from scratch (tokenizer, two training stages; resumable).
model: $(VENV)/.installed
	$(VENV)/bin/numpyro-slt train --out numpyro_slt/nn/default_model --work build/default_model.work

# Full suite on Python 3.11 (ArviZ 0.2x, InferenceData), then every test but the slow
# known-answer runs on Python 3.12 (ArviZ 1.x, DataTree; a newer JAX).
test: $(VENV)/.installed
	$(VENV)/bin/ruff check numpyro_slt tests examples benchmarks
	$(VENV)/bin/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)
ifneq ($(strip $(PYTHON312)),)
	$(MAKE) test-arviz1
else
	@echo "WARNING: Python 3.12 not found; the ArviZ 1.x (DataTree) half of the tests did not run."
	@echo "         Install Python 3.12 or set PYTHON312=/path/to/python3.12."
endif

test-arviz1: $(VENV312)/.installed
	$(VENV312)/bin/python -m pytest -m "not slow" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check numpyro_slt tests examples benchmarks

docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict

$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	echo "$(BENCH_TORCH)" > $(BENCH_VENV)/constraints.txt
	$(BENCH_VENV)/bin/python -m pip install -q "$(BENCH_TORCH)"
	$(BENCH_VENV)/bin/python -m pip install -q -c $(BENCH_VENV)/constraints.txt $(BENCH_PACKAGES)
	$(BENCH_VENV)/bin/python -m pip install -q -c $(BENCH_VENV)/constraints.txt -e .
	touch $@

# Benchmarks (not part of `make test`): SGLD overhead in MCMC (~3 min), then numpyro-slt against
# devinterp and BlackJAX (11.5 min on 2 shared cores), then SGLD, SGHMC and SGNHT against
# BlackJAX's kernels (~3.5 min on 2 shared cores), then the scaling sweeps against devinterp
# (15 min on 2 shared cores), then devinterp's susceptibilities() against numpyro-slt on an
# imported GPT-NeoX of Pythia-14M's shape (~12 min at load ~2, 21 min at load 5-6); results in
# benchmarks/results/.
bench: $(VENV)/.installed $(BENCH_VENV)/.installed
	$(VENV)/bin/python benchmarks/sgld_overhead.py
	$(BENCH_VENV)/bin/python benchmarks/devinterp_compare.py
	$(BENCH_VENV)/bin/python benchmarks/kernels_blackjax.py
	$(BENCH_VENV)/bin/python benchmarks/scaling.py
	$(BENCH_VENV)/bin/python benchmarks/pythia_shape.py

clean:
	rm -rf $(VENV) $(VENV312) site .pytest_cache
