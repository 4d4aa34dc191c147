# Two entry points: `make demo` and `make test`. Both create .venv and install segwise first (offline-safe:
# pip takes the pinned torch/torchvision wheels from this machine's disk).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := demo_output

.PHONY: install demo test test-fast clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	rm -rf $(DEMO)
	$(BIN)/segwise data synth $(DEMO)/data --train 64 --val 16 --test 12 --size 128 --seed 0
	$(BIN)/segwise data check $(DEMO)/data
	$(BIN)/segwise train $(DEMO)/data --config configs/demo.yaml --name demo --log-dir $(DEMO)/runs
	$(BIN)/segwise eval $(DEMO)/runs/demo $(DEMO)/data/test --out $(DEMO)/eval --plots 4
	$(BIN)/segwise predict $(DEMO)/runs/demo $(DEMO)/data/test/images --out $(DEMO)/predictions
	@echo ""
	@echo "== segwise demo finished =="
	@echo "run directory (model, checkpoints, TensorBoard): $(DEMO)/runs/demo"
	@echo "metrics table                                  : $(DEMO)/eval/metrics.csv (and metrics.json)"
	@echo "worst-first plots                              : $(DEMO)/eval/plots/"
	@echo "overlays of the held-out images                : $(DEMO)/predictions/overlay/"
	@echo "TensorBoard                                    : $(BIN)/tensorboard --logdir $(DEMO)/runs/demo/tensorboard"

# One test process per core (at most 4: each holds its own torch); tests/conftest.py splits the threads between them.
test: install
	$(BIN)/python -m pytest -q -ra -n auto --maxprocesses 4

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" -n auto --maxprocesses 4

clean:
	rm -rf $(VENV) $(DEMO) runs .pytest_cache
