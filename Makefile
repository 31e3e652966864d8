# granet: `make demo` (install, a small real sweep on CPU, report) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
GRANET := $(VENV)/bin/granet
PYTEST_ARGS ?= -n 2 -q

.PHONY: install test demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
test: install
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; fi; exit $$rc

demo: install
	$(GRANET) sweep experiments/quickstart.yaml --methods granet,rigl,gmp,dense --densities 0.05,0.1,0.2 --seeds 0,1,2 --name demo
	$(GRANET) report --sweep demo --name demo
	@echo "report: reports/demo.md and reports/demo.html"

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) results runs reports/*.md reports/*.html reports/*_files
