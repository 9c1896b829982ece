# Every target installs what it needs into .venv first (Python 3.10+; no GPU needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint format bench bench-data bench-quality bench-startup bench-serve bench-finetune install clean

# The main job: train a small model on the built-in corpus (a minute or two), then sample.
demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/charlm train configs/tiny.yaml --set train.run_dir=runs/demo
	$(BIN)/charlm sample --checkpoint runs/demo --length 400 --seed 1

# Everything (what CI runs), a worker per core, each test module on one worker (its
# server or trained run is made once). `make test-fast` leaves out the tests marked slow
# (subprocesses, servers, browser, kill -9, notebook, benchmarks): the edit-test loop.
test: $(STAMP)
	$(BIN)/python -m pytest tests -n auto --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow" -q

# Lint and formatting check (ruff, configured in pyproject.toml); `make format` fixes.
lint: $(STAMP)
	$(BIN)/ruff check charlm tests benchmarks
	$(BIN)/ruff format --check charlm tests benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix charlm tests benchmarks
	$(BIN)/ruff format charlm tests benchmarks

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Build artefacts and the virtual environment only: never runs/ (trained models) or data/.
clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find charlm tests benchmarks -name __pycache__ -type d -prune -exec rm -rf {} +

# Training and sampling throughput at the reference size (run it alone; PyTorch is timed
# too when installed: .venv/bin/pip install torch==2.13.0).
bench: $(STAMP)
	$(BIN)/charlm bench

# Text quality per CPU time: a Shakespeare preset, then `charlm eval` on the validation
# slice. CORPUS defaults to data/tinyshakespeare.txt (fetched when missing);
# CONFIG=configs/shakespeare.yaml runs the 15-minute preset instead.
CONFIG ?= configs/shakespeare-quick.yaml
CORPUS ?= data/tinyshakespeare.txt
bench-quality: $(STAMP)
	test -f $(CORPUS) || $(BIN)/charlm data fetch tinyshakespeare --dest data
	$(BIN)/python benchmarks/quality.py $(CORPUS) --config $(CONFIG)

# Streaming at scale: peak memory 1 MB vs 2 GB corpus, time to first step, pass MB/s,
# pipeline batches/s (generates the corpora in a temporary directory; run it alone).
bench-data: $(STAMP)
	$(BIN)/python benchmarks/data.py --gigabytes 2

# Start-up: commands that need no model (help, data, config errors) answer without
# importing TensorFlow; target `charlm --help` under 1 s.
bench-startup: $(STAMP)
	$(BIN)/python benchmarks/startup.py

# Serving under load: chars/s with 1-64 streaming clients against the sampler's own
# 64-stream rate, time to first character, memory over 10,000 requests; then a soak of
# SOAK_MINUTES with good, bad, slow and disconnecting clients (run it alone; for a try:
# make bench-serve SOAK_MINUTES=2).
SOAK_MINUTES ?= 15
bench-serve: $(STAMP)
	$(BIN)/python benchmarks/serve.py --soak-minutes $(SOAK_MINUTES)

# Fine-tuning: a base GRU on tiny Shakespeare, then a 100 KB slice of builtin:pydoc (with
# characters the base never saw) fine-tuned from it and trained from scratch, same config,
# steps and seed; prints both best validation losses and their ratio (run it alone).
bench-finetune: $(STAMP)
	test -f $(CORPUS) || $(BIN)/charlm data fetch tinyshakespeare --dest data
	$(BIN)/python benchmarks/finetune.py $(CORPUS)
