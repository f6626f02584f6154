# Set-up is part of both targets: a fresh machine needs only `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-floors install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# DeepSpeed for the ZeRO-3 tests (tests/test_sharding.py): built against the torch above, no compiled ops
	$(BIN)/python -m pip install --quiet setuptools wheel
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet --no-build-isolation -e '.[deepspeed]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/sightsound run configs/demo.yaml

test: $(BIN)/.installed
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# The training and model tests with the model stack at its declared floors (.ci/floors.txt), in a
# venv of their own: about 4 minutes.
FLOORS := .venv-floors
$(FLOORS)/bin/.installed: pyproject.toml .ci/floors.txt
	$(PYTHON) -m venv $(FLOORS)
	$(FLOORS)/bin/python -m pip install --quiet --upgrade pip
	$(FLOORS)/bin/python -m pip install --quiet -c .ci/floors.txt -e '.[dev]'
	$(FLOORS)/bin/python -m pip install --quiet -c .ci/floors.txt setuptools wheel
	DS_BUILD_OPS=0 $(FLOORS)/bin/python -m pip install --quiet --no-build-isolation -c .ci/floors.txt -e '.[deepspeed]'
	touch $@

test-floors: $(FLOORS)/bin/.installed
	$(FLOORS)/bin/python -m pytest -q tests/test_training.py tests/test_models_hf.py tests/test_families.py \
		tests/test_rl.py tests/test_multiprocess.py tests/test_sharding.py tests/test_exports.py tests/test_verifier.py tests/test_pipeline.py

clean:
	rm -rf runs
