# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install the pinned versions from constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench soak lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@# Debian's Chromium for tests/test_browser.py (Playwright drives it; it never downloads a
	@# browser). Never fails the build: without it (no apt, not root) that test skips, saying why.
	command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium not installed: tests/test_browser.py will skip"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check alerter tests bench
	$(BIN)/ruff format --check alerter tests bench
	$(BIN)/mypy --strict alerter
	$(BIN)/lint-imports --no-cache --no-logo

test: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/alerter demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Memory soak check (about 4 min): exit 1 if `alerter run` grows more than 5 MiB over 3000 alerts.
soak: $(STAMP)
	$(BIN)/python bench/soak.py

# Re-resolve the pins (needs the package registry): review the diff before committing.
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/python -m pip install --quiet --disable-pip-version-check '.[test]'
	.lockvenv/bin/python -m pip freeze --exclude spot-alerter > constraints.txt
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
