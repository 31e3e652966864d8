# granet: `make demo` (install, a small real sweep on CPU, report) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
GRANET := $(VENV)/bin/granet
PYTEST_ARGS ?= -n 2 -q
LOCK   := requirements.lock

.PHONY: install test test-fast lint demo bench clean browser latex lock

install: $(VENV)/.installed

# Installs exactly the versions CI tested: requirements.lock pins every dependency (pip constraints).
# editable_mode=compat: a plain .pth path entry, so `granet` starts without setuptools' import hook.
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[test]" --config-settings editable_mode=compat
	touch $@

# Refresh the lock after changing dependencies in pyproject.toml: resolve them afresh in a
# throw-away venv and pin what got installed. Commit the new requirements.lock with the change.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e ".[test]"
	{ echo "# Every dependency pinned to the versions CI tested (pip constraints: make install uses -c)."; \
	  echo "# Refresh: make lock (resolves pyproject.toml afresh in a throw-away venv). Python 3.11, x86_64."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^granet'; } > $(LOCK)
	rm -rf .lock-venv
	@echo "wrote $(LOCK): commit it"

# Lint and types over the package: ruff (rules and formatting) and mypy, all clean.
lint: install
	$(VENV)/bin/ruff check granet_cli tests benchmarks
	$(VENV)/bin/ruff format --check granet_cli tests benchmarks
	$(VENV)/bin/mypy granet_cli

# The report's browser test renders the HTML in Debian's chromium; install it when missing (CI runs
# as root). Where it cannot be installed the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y chromium) || echo "no browser: the browser test will skip"

# The LaTeX test (report --latex) compiles the .tex with pdflatex and bibtex (Debian's
# texlive-latex-recommended, 50 MB: 37 s with apt's update on a fresh 2-core VM) and reads the PDF with
# pdftotext (poppler-utils); install them when missing. Where they cannot be installed the test skips.
latex:
	@command -v pdflatex >/dev/null 2>&1 && command -v bibtex >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1 \
	|| (apt-get update && apt-get install -y --no-install-recommends texlive-latex-recommended poppler-utils) \
	|| echo "no LaTeX (apt-get could not install texlive-latex-recommended poppler-utils): the LaTeX test will skip"

# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
test: install browser latex lint
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; fi; exit $$rc

# The edit loop: the sparse core and spec tests only (< 60 s); `make test` still runs everything.
test-fast: install
	@$(PY) -m pytest -q -p no:xdist -m "not slow and not ray" tests/test_masking.py tests/test_criteria.py \
		tests/test_rules.py tests/test_density.py tests/test_schedule.py tests/test_flops.py tests/test_spec.py tests/test_spec_names.py \
		tests/test_scores.py tests/test_faithful_weights.py tests/test_registry.py tests/test_readme.py; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; fi; exit $$rc

demo: install
	$(GRANET) sweep experiments/quickstart.yaml --methods granet,rigl,gmp,dense --densities 0.05,0.1,0.2 --seeds 0,1,2 --name demo
	$(GRANET) report --sweep demo --name demo
	@echo "report: reports/demo.md and reports/demo.html"
	@echo "to type granet yourself: source $(VENV)/bin/activate   (or call $(GRANET) directly)"

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) results runs reports/*.md reports/*.html reports/*.tex reports/*.bib reports/*_files
