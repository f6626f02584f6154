# Set-up is part of both targets: a fresh machine needs only `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/sightsound synth --config configs/demo.yaml
	$(BIN)/sightsound prepare --config configs/demo.yaml
	test -f runs/tiny/teacher/config.json || $(BIN)/sightsound tiny-models --out runs/tiny
	$(BIN)/sightsound teach --config configs/demo.yaml
	$(BIN)/sightsound verify --config configs/demo.yaml
	$(BIN)/sightsound prepare --config configs/demo.yaml split=val out=runs/demo-val
	$(BIN)/sightsound eval --config configs/demo.yaml
	$(BIN)/sightsound report runs/demo/eval/*/result.json --out runs/demo/report.md

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs
