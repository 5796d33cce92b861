# The two commands of the README's quick start:
#   make demo   set up and run the demo (embedded data plane, no root needed)
#   make test   set up (Debian + PyPI packages) and run every test tier
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test setup test-deps lint bench dashboards docs man panel-png page-png fleet-png clean

demo: setup
	$(VENV)/bin/lvsmon demo -c config/demo.toml

test: setup test-deps
	$(PY) -m pytest

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

test-deps:
	scripts/install-test-deps

lint: setup
	$(VENV)/bin/ruff check lvsmon tests bench dashboards scripts
	$(VENV)/bin/ruff format --check lvsmon tests bench dashboards scripts
	$(VENV)/bin/mypy

dashboards: setup
	$(PY) dashboards/build.py

docs: setup
	$(PY) -m lvsmon.catalog > docs/metrics.md

# lvsmon(8) from the argparse definitions (tests/unit/test_manpage.py keeps it in sync)
man: setup
	$(PY) -m lvsmon.manpage > docs/lvsmon.8

# The README picture, redrawn from a real run: the end-to-end test (a real Prometheus
# scraping the daemon while a real server is killed) renders two panels from its data.
panel-png: setup test-deps
	LVSMON_PANEL_PNG=docs/img/real-server-down.png $(PY) -m pytest -q tests/integration/test_prometheus_e2e.py

# The status page's README picture, from the browser test against a real daemon
page-png: setup test-deps
	LVSMON_PAGE_PNG=docs/img/status-page.png $(PY) -m pytest -q tests/integration/test_status_page.py

# The README's "Scaling out" picture, drawn from a run of the BGP fleet's netns test (root).
fleet-png: setup test-deps
	LVSMON_FLEET_PNG=docs/img/fleet.png $(PY) -m pytest -q tests/netns/test_bgp_fleet.py

bench: setup test-deps
	$(PY) bench/proxy.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
