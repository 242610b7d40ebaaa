# Two commands for a newcomer: `make run` (the main job on the virtual lab) and `make test` (the project's
# own tests). Both install whatever is missing first, and both are safe to run again.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEB_PACKAGES := kamailio tcpdump tshark sip-tester iproute2 nftables iptables iputils-ping procps tcpreplay \
	util-linux python3-venv chromium gcc baresip-core
STAMP := .hil

.PHONY: run test setup deb venv npm lint clean

# Each run is kept in reports/runs/<UTC time>-<git describe>/, reports/latest is the newest complete one;
# options through HIL_RUN_ARGS, e.g. make run HIL_RUN_ARGS="-k pbx_killed --keep-runs 10".
run: setup
	$(VENV)/bin/hil run $(HIL_RUN_ARGS)

# The import contracts (.importlinter: the house's layering), then at the same time the project's own tests
# and the scenario suite: the scenarios on the default lab, then the scale scenario on the 1,000-agent lab;
# the project's tests beside them in a network namespace and lab run directory of their own (their lab
# tests bring labs of their own up), their output in reports/unit-tests.log, shown at the end. Side by side
# because the scenarios mostly wait (settle windows, recovery bounds) and the two did not fit the suite's
# 20 minutes one after the other; the suite must pass on a busy machine anyway. Every part always runs; the
# target fails if any does. pytest's cache is kept (.pytest_cache/, not in git): `pytest --lf tests` and
# `pytest --lf scenarios -m "not scale"` re-run what failed. The scenarios' evidence goes where pytest puts
# it by default (reports/allure-results, reports/histories, ...), not into a kept run: that is `hil run`'s.
UNIT_RUN_DIR := /run/hil-unit-tests
test: setup
	$(VENV)/bin/lint-imports
	@rc=0; mkdir -p reports; \
	unshare --net sh -c 'ip link set lo up && HIL_RUN_DIR=$(UNIT_RUN_DIR) exec $(PY) -m pytest -q tests' \
		> reports/unit-tests.log 2>&1 & unit=$$!; \
	$(PY) -m pytest -q scenarios -m "not scale" --alluredir reports/allure-results || rc=1; \
	$(PY) -m pytest -q scenarios -m scale --topology topologies/virtual-1k.yaml \
		--alluredir reports/allure-results || rc=1; \
	wait $$unit || rc=1; \
	echo "== the project's own tests (tests/, beside the scenarios): reports/unit-tests.log"; \
	cat reports/unit-tests.log; \
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
