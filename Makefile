# smsupervise: `make demo` and `make test` are all a fresh Debian machine with Python 3 needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
S3_STAMP := $(VENV)/.installed-s3

TOOLKIT_VENV ?= .venv-toolkit
TOOLKIT_STAMP := $(TOOLKIT_VENV)/.installed
SDK_VENV ?= .venv-sdk
SDK_STAMP := $(SDK_VENV)/.installed

.PHONY: demo test check coverage lint bench venv deps toolkit sdk torch plot mpi s3 clean container-test

# What the tests run besides Python packages: peer inits, util-linux (unshare, setpriv), iproute2 (namespaced
# hosts), Open MPI and ssh, podman for the container tests, nginx (serve's --also tests, the serve bench's
# peer) and wrk (the serve bench's load). Installed with apt as root; anyone else is told once,
# up front, which tests will be skipped, and the suite runs without them.
APT_PACKAGES := tini dumb-init util-linux procps gcc python3-venv iproute2 pigz podman runc mmdebstrap \
	openmpi-bin libopenmpi-dev openssh-server openssh-client nginx-light wrk
DEPS_STAMP := $(VENV)/.installed-apt
# As root with apt, every test must run: a skip is a failure (tests/conftest.py reads this).
STRICT := $(shell [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo 1)

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	  else echo "Python's venv module is missing: install it (Debian: sudo apt-get install python3-venv)"; exit 1; fi; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m compileall -q supervisor/smsupervise  # as `pip install` would: no compiling at every start
	@touch $(STAMP)

# The real sagemaker-training, for the differential tests only. It gets a venv of its own because it
# installs a `train` program and pins packages of its own.
toolkit: $(TOOLKIT_STAMP)

$(TOOLKIT_STAMP):
	$(PYTHON) -m venv $(TOOLKIT_VENV)
	$(TOOLKIT_VENV)/bin/python -m pip install -q sagemaker-training==5.1.4 setuptools
	@touch $(TOOLKIT_STAMP)

# The SageMaker SDK, whose local mode writes the config files tests/local/test_sdk_config.py compares
# ours with. A venv of its own: it pins many packages.
sdk: $(SDK_STAMP)

$(SDK_STAMP):
	$(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install -q sagemaker==2.257.6
	@touch $(SDK_STAMP)

# PyTorch (CPU build) in the test venv, for tests/process/test_torch.py and the torchrun tests.
torch: $(VENV)/.installed-torch

$(VENV)/.installed-torch: $(STAMP)
	$(PY) -m pip install -q torch==2.13.0
	@touch $@

# The `s3` extra (boto3, from pip) for every s3:// path: tests/process/test_source_s3.py and
# tests/local/test_s3.py run against a stand-in endpoint (tests/s3server.py); skipped without it.
s3: $(S3_STAMP)

$(S3_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,s3,local]'
	@touch $(S3_STAMP)

# matplotlib (the `plot` extra) for smsupervise-pipe-bench --png and its PNG test.
plot: $(VENV)/.installed-plot

$(VENV)/.installed-plot: $(STAMP)
	$(PY) -m pip install -q -e '.[test,plot]'
	@touch $@

# mpi4py in the venv (Open MPI itself comes with `deps`), for the MPI tests in tests/distributed.
mpi: $(VENV)/.installed-mpi

$(VENV)/.installed-mpi: $(STAMP) | $(DEPS_STAMP)
	$(PY) -m pip install -q mpi4py
	@touch $@

deps: $(DEPS_STAMP)

$(DEPS_STAMP): | $(STAMP)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null && touch $@; \
	else \
	  echo "*** not root (or no apt-get): the tests that need root (PID 1 in a PID namespace, namespaced hosts,"; \
	  echo "*** podman, other uids) or these packages ($(APT_PACKAGES)) will be skipped, each with its reason."; \
	fi

demo: venv
	./examples/run-demo.sh

TEST_ENV := SMSUPERVISE_TOOLKIT_VENV=$(abspath $(TOOLKIT_VENV)) SMSUPERVISE_SDK_VENV=$(abspath $(SDK_VENV)) \
	SMSUPERVISE_STRICT_SKIPS=$(STRICT)

# The whole suite, nothing skipped (as root on Debian: everything it needs is installed first).
test: venv deps toolkit sdk s3 torch plot mpi
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

# The fast loop for development: everything not marked slow (see tests/conftest.py), in parallel-free order.
check: venv deps toolkit sdk s3
	$(TEST_ENV) SMSUPERVISE_STRICT_SKIPS= $(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

# The example image (Dockerfile.example) run under podman, as users run it: tests/container. `make test`
# collects them too (skipped, with the reason, where podman cannot run); this target runs only them.
# Needs root and `apt-get install podman runc mmdebstrap`; the base root filesystem is cached in
# ~/.cache/smsupervise-container (or $XDG_CACHE_HOME, $SMSUPERVISE_CONTAINER_CACHE).
container-test: venv
	$(PY) -m pytest tests/container

# Line coverage of supervisor/smsupervise across every process the suite starts (as root: as PID 1, in
# namespaced hosts). Processes started with an environment of the test's own making (no COVERAGE_*
# variables), or as another uid, are not measured: docs/design.md says which modules that leaves short.
coverage: venv deps toolkit sdk s3 torch plot mpi
	rm -f .coverage .coverage.*
	-$(TEST_ENV) $(PY) -m coverage run -m pytest -q $(PYTEST_ARGS)
	$(PY) -m coverage combine -q
	$(PY) -m coverage report --format=total > .coverage-total
	$(PY) -m coverage report
	@echo "total line coverage of smsupervise: $$(cat .coverage-total) %"

lint: venv
	$(VENV)/bin/ruff check supervisor tests benchmarks
	$(VENV)/bin/ruff format --check supervisor tests benchmarks
	$(VENV)/bin/mypy

bench: venv
	$(PY) -m benchmarks.pid1
	$(PY) -m benchmarks.logs
	$(PY) -m benchmarks.status
	$(PY) -m benchmarks.pipe
	$(PY) -m benchmarks.cluster  # root, torch and the toolkit venv; says so and skips without them

# The headline figures of this tree against REF (default: the last release tag, else origin/main,
# else main), each installed in a temporary venv, in one interleaved run (benchmarks/compare.py).
# Run it before closing an issue that touches a hot path; `make bench-compare REF="bfb09df main"`.
.PHONY: bench-compare
bench-compare: venv
	$(PY) -m benchmarks.compare $(REF)

clean:
	rm -rf $(VENV) $(TOOLKIT_VENV) $(SDK_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache benchmarks/results
