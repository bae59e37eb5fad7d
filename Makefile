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

test: $(TEST)
	$(VENV)/bin/python -m pytest -q

.PHONY: demo test
