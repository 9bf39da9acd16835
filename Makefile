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

.PHONY: demo test lint bench venv toolkit sdk torch plot mpi s3 clean container-test

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

# Optional: PyTorch (CPU build) in the test venv, for tests/process/test_torch.py (skipped without it).
torch: venv
	$(PY) -m pip install -q torch==2.13.0

# The `s3` extra (boto3, from pip) for every s3:// path: tests/process/test_source_s3.py and
# tests/local/test_s3.py run against a stand-in endpoint (tests/s3server.py); skipped without it.
s3: $(S3_STAMP)

$(S3_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,s3]'
	@touch $(S3_STAMP)

# Optional: matplotlib (the `plot` extra) for smsupervise-pipe-bench --png and its PNG test (skipped without it).
plot: venv
	$(PY) -m pip install -q -e '.[test,plot]'

# Optional: Open MPI, sshd/ssh and ip (apt, as root) and mpi4py (in the venv), for tests/distributed
# (the MPI tests are skipped without them; the namespaced hosts need root and iproute2).
mpi: venv
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev openssh-server \
	    openssh-client iproute2 >/dev/null; fi
	$(PY) -m pip install -q mpi4py

demo: venv
	./examples/run-demo.sh

test: venv toolkit sdk s3
	SMSUPERVISE_TOOLKIT_VENV=$(abspath $(TOOLKIT_VENV)) SMSUPERVISE_SDK_VENV=$(abspath $(SDK_VENV)) $(PY) -m pytest

# The example image (Dockerfile.example) run under podman, as users run it: tests/container. `make test`
# collects them too (skipped, with the reason, where podman cannot run); this target runs only them.
# Needs root and `apt-get install podman runc mmdebstrap`; the base root filesystem is cached in
# ~/.cache/smsupervise-container (or $XDG_CACHE_HOME, $SMSUPERVISE_CONTAINER_CACHE).
container-test: venv
	$(PY) -m pytest tests/container

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
