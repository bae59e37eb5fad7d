# Two set-up commands on a fresh machine (Python >= 3.11 + pip only): `make demo` and `make test`.
# Both create or reuse the local virtualenv .venv (the package is installed editable, so code changes apply).
PY ?= python3
VENV := .venv
BASE := $(VENV)/.installed-base
TEST := $(VENV)/.installed-test

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip

$(BASE): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -e .
	touch $(BASE)

# Test extras: pytest/hypothesis/onnx, and the parity references (smplx on torch 2.13.0 CPU) that the
# body-model parity test runs against. They are never imported by the library.
$(TEST): pyproject.toml $(BASE)
	$(VENV)/bin/pip install -e '.[test,parity]'
	touch $(TEST)

demo: $(BASE)
	$(VENV)/bin/h4d demo --out demo_out

# Two worker processes, whole files per worker (pytest-xdist): each process compiles half the suite's XLA programs.
# In one process, jaxlib 0.10.2 on CPU deadlocked in a compile (or crashed) after ~300 tests, reproducibly (CI and
# here); every test passes in a fresh process. It also uses both cores while one worker compiles.
test: $(TEST)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile

.PHONY: demo test
