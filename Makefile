# Two set-up commands on a fresh machine (Python + pip only): `make demo` and `make test`.
# Both create or reuse the local virtualenv .venv.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/h4d demo --out demo_out

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

.PHONY: venv demo test
