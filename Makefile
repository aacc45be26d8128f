# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DVC_VENV := .tools/dvc
DVC := $(DVC_VENV)/bin/dvc
STAMP := $(VENV)/.installed
PORT ?= 3000
DEMO_MODELS ?= base dpo mdpo
#: pytest-xdist workers of `make test`: one more than the cores (the Docker build and the subprocess starts wait on
#: I/O), at most 8. Work stealing keeps every worker busy to the end: measured on 2 cores with 3 workers, 281 s
#: against 397 s with xdist's default up-front split (a long test's worker sat on a queue of short ones).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 8 ? n + 1 : 8 )))

export DAGSTER_HOME := $(CURDIR)/.dagster_home
export MDPO_PROJECT_ROOT := $(CURDIR)
export MDPO_DVC := $(CURDIR)/$(DVC)
export PYTHONUNBUFFERED := 1

.PHONY: install dvc-env demo reproduce test test-integration test-fast test-docker image image-cpu dev repro lock clean-data

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, from the pinned CPU build: a bare `torch` requirement would pull GBs of CUDA wheels.
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[pipeline,dev,ray]'
	touch $@

$(DVC_VENV)/.installed: constraints-dvc.txt
	test -x $(DVC_VENV)/bin/python || $(PY) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/pip install -q -c constraints-dvc.txt dvc
	touch $@

install: $(STAMP) dvc-env  ## create both environments
dvc-env: $(DVC_VENV)/.installed  ## DVC in its own environment (antlr4 pin conflicts with Dagster)

demo: install  ## materialize every asset of the default (offline ShapeWorld) pipeline (scripts/demo.sh)
	DAGSTER=$(BIN)/dagster DVC=$(DVC) DEMO_MODELS="$(DEMO_MODELS)" bash scripts/demo.sh

reproduce: install  ## the experiment grid of params.yaml:experiment and the paper's claims checked (scripts/reproduce.sh)
	DAGSTER=$(BIN)/dagster MDPO=$(BIN)/mdpo bash scripts/reproduce.sh

#: `make test` is the suite a change must pass (<= 6 min on 2 cores): unit tests, the official scorers' parity and
#: every end-to-end Dagster path; `make test-integration` starts the engines and servers (a Ray cluster, two-process
#: accelerate launches, the Docker engine, PostgreSQL, MLflow servers), injects faults into them and runs the device
#: check at toy size (about 9 min more). CI (.ci/run) runs both.
test: install  ## import contracts, then the suite (end-to-end Dagster paths included) on every core
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=15 -m "not integration and not docker"

test-integration: install  ## the launchers on real engines (Ray, accelerate, Docker) and the device check at toy size
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=15 -m "integration or docker"

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

.PHONY: mlflow-ui
mlflow-ui: install  ## MLflow UI on http://127.0.0.1:5000 over this checkout's runs and registry (mlflow.db)
	@# A copied or moved checkout's store still names the old folder's artifacts until something logs: move them first.
	$(BIN)/python -c "from mdpo_pipeline.integrations.tracking import relocate_artifacts; relocate_artifacts('$(CURDIR)')"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db -h 127.0.0.1 -p 5000

repro: install  ## the data stages through DVC instead of Dagster (same code, same outputs)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(DVC) repro

lock: install  ## re-pin constraints.txt from the current environment
	{ echo "# Exact versions of the CPU environment (regenerate: make lock). torch comes from the local CPU wheel."; \
	  $(BIN)/pip freeze --exclude-editable | sed 's/^torch==.*/torch==2.13.0/'; } > constraints.txt

clean-data:  ## remove generated data (DVC cache and remote stay)
	rm -rf data/shapeworld data/raw_silkie data/preference_pairs data/corrupted_images
