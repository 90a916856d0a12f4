# Every target installs what it needs: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-portable test-all lint typecheck check bench soak clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $@

demo: install
	$(PY) -m pysock.cli.demo

test: install
	$(PY) -m pytest

test-portable: install  # core, TLS, lifecycle and CLI tests on simulated BSD and Windows (tests/portable)
	$(PY) -m tests.portable

test-all: install
	@set -e; for v in 3.9 3.10 3.11 3.12 3.13; do \
	  py=$$(ls -d "$$(pyenv root)"/versions/$$v.*/bin/python3 2>/dev/null | tail -1); \
	  if [ -z "$$py" ]; then echo "Python $$v: not installed, skipped"; continue; fi; \
	  echo "== Python $$v ($$py)"; \
	  $$py -m venv .venv-$$v && .venv-$$v/bin/pip install --quiet -e '.[test]' && \
	  .venv-$$v/bin/python -m pytest -q -p no:cacheprovider; \
	done

lint: install
	$(VENV)/bin/ruff check pysock tests examples
	$(VENV)/bin/ruff format --check pysock tests examples

typecheck: install
	$(VENV)/bin/mypy pysock tests examples

check: lint typecheck test

bench: install
	-$(PY) -m pip install --quiet -e '.[bench]'  # trio and matplotlib: optional, where they install
	$(PY) -m bench

.PHONY: profile-read
profile-read: install  # where readline() spends its time, without and with a timeout
	$(PY) -m bench.profile_read
	$(PY) -m bench.profile_read --timeout 10

soak: install  # 10 minutes of mixed traffic under 16 threads (not part of CI)
	$(PY) -m tests.soak

clean:
	rm -rf $(VENV) .venv-3.* build *.egg-info .mypy_cache .ruff_cache .pytest_cache
