# The two set-up commands of the README: `make demo` and `make test`. Both start from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Encode and decode a sample raw (shared Nikon crop if present, else a generated scene).
demo: $(STAMP)
	$(BIN)/python -m rawmeta.demo

## The default test suite (pytest exit 5, "no tests collected", counts as success).
test: $(STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

## Everything, slow real-data runs included.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) demo_out build *.egg-info
