# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medrobust-installed

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The pinned CPU build (lies on this machine's disk); installed first so nothing pulls CUDA.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,tune]"
	# torchattacks is the test oracle for FGSM/BIM/PGD/MI-FGSM; its requirements pull torchvision.
	$(PY) -m pip install --quiet --no-deps torchattacks==3.5.1
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medrobust demo --out medrobust-demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) medrobust-demo
