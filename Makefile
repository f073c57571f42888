# `make run` starts Switchboard on its embedded defaults; `make test` runs the whole suite.
# Both create .venv and install what they need on a fresh machine. Install bubblewrap yourself
# (`apt-get install bubblewrap`): CLI workers run in it, and its tests are skipped without it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLAUDE_CODE_VERSION := 2.1.332
CLAUDE_BIN := .tools/node_modules/.bin/claude
CODEX_VERSION := 0.169.0
CODEX_BIN := .tools/node_modules/.bin/codex

.PHONY: run test install lint typecheck bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(CLAUDE_BIN):
	mkdir -p .tools
	npm install --silent --no-audit --no-fund --prefix .tools @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)

# The real Codex CLI for the conformance tests (tests/integration/test_codex_real.py); same prefix, both kept.
$(CODEX_BIN): $(CLAUDE_BIN)
	npm install --silent --no-audit --no-fund --prefix .tools @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) \
		@openai/codex@$(CODEX_VERSION)

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/switchboard run

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check bot engine memory prompts tests bench

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

test: $(VENV)/.installed $(CLAUDE_BIN) $(CODEX_BIN) lint typecheck
	@command -v bwrap >/dev/null || echo "note: bubblewrap is not installed (apt-get install bubblewrap): the worker sandbox tests are skipped"
	SWITCHBOARD_CLAUDE_BIN=$(abspath $(CLAUDE_BIN)) SWITCHBOARD_CODEX_BIN=$(abspath $(CODEX_BIN)) $(VENV)/bin/pytest -q

bench: $(VENV)/.installed
	$(PY) bench/engine_bench.py
	$(PY) bench/memory_bench.py
	$(PY) bench/cold_start.py --runs 11 --starts 3
	$(PY) bench/drill_bench.py

clean:
	rm -rf $(VENV) .tools
