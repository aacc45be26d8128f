# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DVC_VENV := .tools/dvc
DVC := $(DVC_VENV)/bin/dvc
STAMP := $(VENV)/.installed
PORT ?= 3000
DEMO_MODELS ?= base dpo mdpo

export DAGSTER_HOME := $(CURDIR)/.dagster_home
export MDPO_PROJECT_ROOT := $(CURDIR)
export MDPO_DVC := $(CURDIR)/$(DVC)
export PYTHONUNBUFFERED := 1

.PHONY: install dvc-env demo test test-fast test-docker image image-cpu dev repro lock clean-data

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, from the pinned CPU build: a bare `torch` requirement would pull GBs of CUDA wheels.
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[pipeline,dev]'
	touch $@

$(DVC_VENV)/.installed: constraints-dvc.txt
	test -x $(DVC_VENV)/bin/python || $(PY) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/pip install -q -c constraints-dvc.txt dvc
	touch $@

install: $(STAMP) dvc-env  ## create both environments
dvc-env: $(DVC_VENV)/.installed  ## DVC in its own environment (antlr4 pin conflicts with Dagster)

demo: install  ## materialize every asset of the default (offline ShapeWorld) pipeline
	$(BIN)/dagster asset materialize -m mdpo_pipeline.definitions --select 'group:data or key:base_model or key:reference_logprobs'
	# One run per model: train its adapter (nothing for "base") and score it; the gate check runs with it.
	# A model that fails the gate fails its run but has its scores: the report shows it, the champion skips it.
	for m in $(DEMO_MODELS); do rm -f artifacts/eval/$$m/scores.json; \
	  $(BIN)/dagster asset materialize -m mdpo_pipeline.definitions --select 'key:adapters or key:benchmark_scores' \
	    --partition $$m || test -f artifacts/eval/$$m/scores.json || exit 1; done
	$(BIN)/dagster asset materialize -m mdpo_pipeline.definitions --select 'key:comparison_report or key:champion'
	cat artifacts/eval/comparison.md
	$(DVC) status

test: install  ## import contracts, the whole test suite (slow end-to-end tests included), then the Docker test
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not docker"
	$(MAKE) test-docker

test-fast: install  ## the suite without the slow end-to-end and Docker tests
	$(BIN)/python -m pytest -m "not slow and not docker"

test-docker: install  ## train in the CPU training image (starts a private dockerd when none is reachable)
	$(BIN)/python -m pytest -m docker

image: install  ## the GPU training image (CUDA base; needs a registry)
	$(BIN)/mdpo image

image-cpu: install  ## the CPU training image, offline (local Debian base + host wheels; needs root for debootstrap)
	$(BIN)/mdpo image --offline

dev: install  ## Dagster UI on http://127.0.0.1:$(PORT)
	$(BIN)/dagster dev -m mdpo_pipeline.definitions -h 127.0.0.1 -p $(PORT)

repro: install  ## the data stages through DVC instead of Dagster (same code, same outputs)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(DVC) repro

lock: install  ## re-pin constraints.txt from the current environment
	{ echo "# Exact versions of the CPU environment (regenerate: make lock). torch comes from the local CPU wheel."; \
	  $(BIN)/pip freeze --exclude-editable | sed 's/^torch==.*/torch==2.13.0/'; } > constraints.txt

clean-data:  ## remove generated data (DVC cache and remote stay)
	rm -rf data/shapeworld data/raw_silkie data/preference_pairs data/corrupted_images
