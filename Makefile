# Two commands do all the set-up on a fresh machine:
#   make demo   install, build the synthetic data, train the tiny model, sample a long video, evaluate it
#   make test   install and run the test suite
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
DEMO_CONFIG ?= configs/tiny.py
# The tests use all cores; override with `make test PYTEST_WORKERS=1`. `--dist loadfile` keeps each test file on
# one worker, so a module's compiled fixtures (the ablation's real run, the sharded references) are built once,
# not once per worker. (pytest-xdist 3.8's loadgroup has no effect under pytest 9.2.)
PYTEST_WORKERS ?= 2

.PHONY: install demo test clean-demo

$(STAMP): setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (the project needs Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	JAX_PLATFORMS=cpu $(PY) -m vin_jax.main data --config=$(DEMO_CONFIG) --workdir=$(DEMO_DIR)
	JAX_PLATFORMS=cpu $(PY) -m vin_jax.main train --config=$(DEMO_CONFIG) --workdir=$(DEMO_DIR)
	JAX_PLATFORMS=cpu $(PY) -m vin_jax.main sample --config=$(DEMO_CONFIG) --workdir=$(DEMO_DIR) --out=$(DEMO_DIR)/samples
	JAX_PLATFORMS=cpu $(PY) -m vin_jax.main evaluate --samples=$(DEMO_DIR)/samples --out=$(DEMO_DIR)/samples/metrics.json
	@echo
	@echo "Demo done. The long video (8 chunks, all denoised in parallel):"
	@echo "  $(DEMO_DIR)/samples/sample_00.mp4  (and .gif)"
	@echo "  $(DEMO_DIR)/samples/contact_sheet.png  (one row per video, red lines at chunk boundaries)"
	@echo "  $(DEMO_DIR)/samples/metrics.json  and training curve $(DEMO_DIR)/metrics.jsonl"

test: install
	JAX_PLATFORMS=cpu $(PY) -m pytest tests -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15

clean-demo:
	rm -rf $(DEMO_DIR)
