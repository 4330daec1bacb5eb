# Set-up and entry points. `make test` and `make demo` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# pytest exits 5 when no test was collected; that is not a failure here.
test: $(STAMP)
	$(BIN)/python -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

demo: $(STAMP)
	$(BIN)/int-jax demo --config=configs/demo.py

bench: $(STAMP)
	$(BIN)/python benchmarks/forward.py

clean:
	rm -rf $(VENV) runs/demo
