# Three commands: `make run` (whole flow on the sample corpus in about a minute), `make writer` (the flow on the
# shipped TinyStories sample: a model that writes stories, ~10-15 minutes on 2 idle cores) and `make test`; each
# sets itself up.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel; on a CUDA machine use e.g. `make run TORCH=torch`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
export DO_NOT_TRACK = true
export PREFECT_SERVER_ANALYTICS_ENABLED = false
export MLFLOW_DISABLE_TELEMETRY = true

.PHONY: setup run writer test test-all ui clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

run: setup
	$(BIN)/quill run --preset tiny

# Ingest to register (Prefect + MLflow, like `run`), then three stories from the registered champion.
writer: setup
	$(BIN)/quill run --preset writer --run-folder writer
	$(BIN)/quill generate "Once upon a time" --model models:/quill-writer@champion --n 3 --max-new-tokens 300 --seed 1

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m 'not ui'

ui: setup
	@echo "MLflow UI on http://127.0.0.1:5000 (Ctrl-C to stop)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --default-artifact-root ./mlruns/artifacts --host 127.0.0.1 --port 5000 --workers 1

clean-runs:
	rm -rf data/runs data/cache
