# One venv for everything; torch is pinned and installed first so that pip
# takes the CPU wheel instead of pulling CUDA packages.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: setup demo test bench local-up local-down clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,bench]'
	@# headless Chromium renders the HTML report in its test; installed where apt-get can (root, Debian)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  chromium fonts-dejavu-core >/dev/null; } || echo "chromium not installed: the HTML screenshot test will skip"
	touch $@

demo: setup  ## local S3 + sample images + the archival job end to end
	$(PY) jobs/demo.py

test: setup  ## the test suite (CI runs this)
	$(PY) -m pytest -q -n 2 --dist loadfile  # pytest-xdist: two workers, each test file on one (its fixtures stay per file)

bench: setup  ## Kodak RD curves, BD-rates, speed, seams, 100 MP memory
	$(PY) bench/kodak_rd.py

local-up: setup  ## local SeaweedFS S3 + Ray head (state in .local-stack/)
	infra/local/up.sh

local-down:
	infra/local/down.sh

clean:
	rm -rf $(VENV) .pytest_cache
