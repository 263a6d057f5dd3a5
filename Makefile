# nri-podres developer and CI entry points.
#
#   make venv      .venv with the package (editable) and its test extras
#   make e2e-env   private containerd + runc + images + CRI stubs + Go reference plugin
#                  (needs root; cached under $(NRI_PODRES_E2E_DIR))
#   make test      the whole test suite (runtime tests included when root)
#   make demo      the end-to-end demonstration
#   make bench     the overhead benchmark against the Go reference plugin
#   make e2e-stop  stop the private containerd if a session left it running

PYTHON ?= python3
VENV ?= .venv
NRI_PODRES_E2E_DIR ?= /var/tmp/nri-podres-e2e
export NRI_PODRES_E2E_DIR

VENV_PY := $(abspath $(VENV))/bin/python
IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)

.PHONY: venv e2e-env test demo bench e2e-stop

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	[ -x $(VENV_PY) ] || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install -q -e '.[test]'
	touch $@

e2e-env: venv
ifeq ($(IS_ROOT),yes)
	PYTHON=$(VENV_PY) tools/ctrd/setup.sh
	benchmarks/go-noop-plugin/build.sh
else
	@echo "e2e-env: not root, skipping the private containerd (runtime tests will be skipped)"
endif

test: venv e2e-env
	$(VENV_PY) -m pytest -q

demo: venv e2e-env
	tools/demo.sh

bench: venv e2e-env
	benchmarks/run.sh

e2e-stop:
	PYTHON=$(VENV_PY) tools/ctrd/containerd.sh stop
