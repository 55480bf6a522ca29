# Two entry points: `make demo` runs the product end to end, `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-fast demo demo-fleet install toolchain lint bench sandbox-down clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Builds etcd, the Kubernetes control plane, kubectl and helm once, and (as root on Linux) the
# real-network tools: flanneld, CNI plugins, agnhost, CoreDNS, busybox. Later runs reuse the cache.
toolchain: $(STAMP)
	$(BIN)/cilium-migrate sandbox build

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy plan workflows activities worker client sandbox

test: toolchain lint
	$(BIN)/pytest -q

# Unit and workflow tests: no sandbox, no Go toolchain (the workflow tests use the Temporal CLI
# from the virtualenv); under a minute.
test-fast: lint
	$(BIN)/pytest -q tests/unit tests/workflows

# The whole product on this machine: dev server + worker, a sandbox with workloads and PDBs,
# a migration approved wave by wave with the same CLI commands an operator types.
demo: toolchain
	$(BIN)/cilium-migrate demo --dir $(CURDIR)/.demo

# A fleet: three sandboxes (dev, staging, prod) migrated stage after stage, a soak between
# stages, stage approvals, one worker per cluster on its own task queue.
demo-fleet: toolchain
	$(BIN)/cilium-migrate demo --fleet --dir $(CURDIR)/.demo-fleet

sandbox-down: $(STAMP)
	$(BIN)/cilium-migrate sandbox down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo .demo-fleet

bench: toolchain
	$(BIN)/python bench/sandbox_bench.py
