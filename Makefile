# Two commands for a newcomer: `make run` (the main job on the virtual lab) and `make test` (the project's
# own tests). Both install whatever is missing first, and both are safe to run again.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEB_PACKAGES := kamailio tcpdump tshark sip-tester iproute2 nftables iptables iputils-ping procps tcpreplay \
	util-linux python3-venv chromium
STAMP := .hil

.PHONY: run test setup deb venv npm lint clean

# Each run is kept in reports/runs/<UTC time>-<git describe>/, reports/latest is the newest complete one;
# options through HIL_RUN_ARGS, e.g. make run HIL_RUN_ARGS="-k pbx_killed --keep-runs 10".
run: setup
	$(VENV)/bin/hil run $(HIL_RUN_ARGS)

# The import contracts (.importlinter: the house's layering), the project's own tests, then the scenario
# suite: on the default lab, then the scale scenario on the 1,000-agent lab (both sessions always run; the
# target fails if either does). pytest's cache is kept (.pytest_cache/, not in git): `pytest --lf tests` and
# `pytest --lf scenarios -m "not scale"` re-run what failed. The scenarios' evidence goes where pytest puts
# it by default (reports/allure-results, reports/histories, ...), not into a kept run: that is `hil run`'s.
test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests
	@rc=0; \
	$(PY) -m pytest -q scenarios -m "not scale" --alluredir reports/allure-results || rc=1; \
	$(PY) -m pytest -q scenarios -m scale --topology topologies/virtual-1k.yaml \
		--alluredir reports/allure-results || rc=1; \
	exit $$rc

setup: deb venv npm

deb: $(STAMP)/deb
$(STAMP)/deb: Makefile
	@mkdir -p $(STAMP)
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

venv: $(STAMP)/venv
$(STAMP)/venv: pyproject.toml
	@mkdir -p $(STAMP)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Allure 3 (the npm package `allure`, no Java) builds the HTML report: `hil report`. Exact versions from
# package-lock.json into ./node_modules; npm ci rewrites node_modules/.package-lock.json, the target.
npm: node_modules/.package-lock.json
node_modules/.package-lock.json: package.json package-lock.json | $(STAMP)/deb
	@command -v npm >/dev/null || { echo "installing Debian packages: nodejs npm"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm; }
	npm ci --no-audit --no-fund --loglevel=error

lint: venv
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(STAMP) $(VENV) node_modules reports/allure-results reports/allure-report
