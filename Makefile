# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
# Each creates .venv and installs the pinned dependencies (requirements/) on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1
export OMP_WAIT_POLICY ?= PASSIVE  # torch threads sleep instead of spinning (10-60x faster on a shared machine)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv browser demo lint test clean

$(STAMP): requirements/*.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/dev.txt -c requirements/constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m robot_runtime.improvement_loop.demo --out demo_output

# The fleet page's tests drive Debian's headless Chromium; installed when missing and permitted
# (root, Debian's registry reachable), else those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium not installed: the fleet page's browser tests will skip"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Two workers (CI has 2 cores; many tests wait on DDS, sockets or subprocesses), a file per worker at a time so
# module fixtures (the wheel venv, the colcon install, trained runs) are built once; the slowest tests are listed.
TEST_WORKERS ?= 2
test: lint browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 tests

clean:
	rm -rf $(VENV) demo_output build *.egg-info .ruff_cache
