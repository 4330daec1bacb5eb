# Set-up and entry points. `make test` and `make demo` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo demo-tiny bench clean

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

# The method working, in miniature (README "A miniature InT"): on the running-sum
# domain, the committed base model (assets/running_sum/base) goes through InT + RL and
# through RL alone, every stage real; then the report's tables, printed and as HTML.
# Reruns skip finished stages.
demo: $(STAMP)
	$(BIN)/int-jax pipeline --config=configs/experiments/int_rl.py:toy
	$(BIN)/int-jax pipeline --config=configs/experiments/rl.py:toy
	$(BIN)/int-jax report runs/toy/int_rl runs/toy/rl --out runs/toy/report
	@cat runs/toy/report/report.md
	@echo "demo done: runs/toy/int_rl, runs/toy/rl; HTML report: runs/toy/report/report.html"

# The plumbing check on the random tiny default: (1) the InT pipeline with a random tiny
# Qwen3 (random text: the funnel stops at the parser, and the counts say so); (2) the same
# stages with scripted model outputs, which walk the success path to an SFT set (the
# `:tiny` experiment configs read its files); (3) masked-prefix SFT on that set.
demo-tiny: $(STAMP)
	$(BIN)/int-jax demo --config=configs/demo.py
	$(BIN)/int-jax demo --config=configs/demo.py:scripted
	$(BIN)/int-jax sft --config=configs/sft.py:tiny \
	  --config.data.train_path=runs/demo-scripted/select/sft.jsonl --config.output_dir=runs/demo-sft \
	  --config.train.global_batch=2 --config.train.micro_batch=1 --config.train.epochs=3
	@echo "demo-tiny done: runs/demo (model), runs/demo-scripted (success path), runs/demo-sft/hf (patched model)"

bench: $(STAMP)
	$(BIN)/python benchmarks/forward.py

clean:
	rm -rf $(VENV) runs/demo runs/demo-scripted runs/demo-sft runs/toy
