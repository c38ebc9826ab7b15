# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
# `make lint` runs the quality gate alone (ruff, mypy, import contracts; seconds);
# `make test-fast` skips the tests marked slow, for the edit loop.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medrobust-installed

.PHONY: demo test test-fast lint venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The pinned CPU build (lies on this machine's disk); installed first so nothing pulls CUDA.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,tune,lint,log]"
	# torchattacks is the test oracle for FGSM/BIM/PGD/MI-FGSM/AutoAttack; its requirements pull torchvision.
	$(PY) -m pip install --quiet --no-deps torchattacks==3.5.1
	# The nnU-Net v2 model source and its reference inference in the tests (pyproject's `nnunet` extra),
	# without their requirements (a CUDA torch, timm, torchvision).
	$(PY) -m pip install --quiet --no-deps nnunetv2==2.8.1 dynamic-network-architectures==0.4.4 batchgenerators==0.25.5
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medrobust demo --out medrobust-demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# The quality gate first (seconds), then the tests; the docstrings' examples (src) run as
# doctests beside them.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q --doctest-modules src tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --doctest-modules src tests

clean:
	rm -rf $(VENV) medrobust-demo
