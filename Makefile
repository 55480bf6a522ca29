# Two entry points: `make demo` runs the product end to end, `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo install toolchain lint bench sandbox-down clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Builds etcd, the Kubernetes control plane, kubectl and helm once; later runs reuse the cache.
toolchain: $(STAMP)
	$(BIN)/cilium-migrate sandbox build

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy plan workflows activities worker client sandbox

test: toolchain lint
	$(BIN)/pytest -q

# Until the migration workflow lands, the demo shows the ground it runs on: a sandbox cluster
# with flannel, started, inspected and stopped again (also on Ctrl-C).
DEMO_DIR ?= $(CURDIR)/.demo
demo: toolchain
	@set -e; trap '$(BIN)/cilium-migrate sandbox down --state-dir $(DEMO_DIR) >/dev/null 2>&1 || true' EXIT INT TERM; \
	  $(BIN)/cilium-migrate sandbox up --nodes 5 --control-planes 1 --zones 3 --state-dir $(DEMO_DIR) --replace; \
	  $(BIN)/cilium-migrate sandbox status --state-dir $(DEMO_DIR); \
	  echo; echo '$$ kubectl get nodes,pods -A -o wide'; \
	  "$$($(BIN)/python -c 'from sandbox.toolchain import find_toolchain; print(find_toolchain()["kubectl"])')" \
	    --kubeconfig $(DEMO_DIR)/kubeconfig get nodes,pods -A -o wide; \
	  echo; echo 'stopping the sandbox (its state stays in $(DEMO_DIR))'

sandbox-down: $(STAMP)
	$(BIN)/cilium-migrate sandbox down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo

bench: toolchain
	$(BIN)/python bench/sandbox_bench.py
