# Two set-up commands (see README): `make quickstart` and `make test`. Each makes .venv itself.
VENV ?= .venv
PYTHON ?= python3
# torch first, so pip never fetches a multi-GB CUDA build on a CPU machine; on a GPU machine
# use e.g. `make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"`.
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: install quickstart test test-fast test-unit lint docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# the quickstart sweep with its confirmation runs (about 4.5 minutes on 2 CPU cores, plus the install; measured: see
# README); each call makes a new sweep folder
quickstart: install
	$(BIN)/mmi-ray sweep sweeps/quickstart.yaml name=quickstart-$$(date +%Y%m%d-%H%M%S)

lint: install
	$(BIN)/ruff check mmi_ray tests analysis benchmarks examples tools

# the docs site, as the tests build it (warnings are errors)
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# the whole suite (what CI runs): the tests that start Ray in this process, the others (they start no
# Ray: one Ray instance per machine holds) in a second pytest beside it, whose output follows;
# fails if either does
BESIDE_LOG = $(or $(TMPDIR),/tmp)/mmi-ray-tests-beside.log
test: install lint
	@$(BIN)/python -m pytest -q -m "not ray" -p no:cacheprovider --basetemp=$(or $(TMPDIR),/tmp)/mmi-ray-tests-beside \
	  --durations=5 > $(BESIDE_LOG) 2>&1 & beside=$$!; \
	trap 'kill $$beside 2>/dev/null; exit 130' INT TERM; \
	$(BIN)/python -m pytest -q -m ray --durations=15; ray_rc=$$?; \
	wait $$beside; beside_rc=$$?; \
	echo "--- beside them, the tests that start no Ray:"; cat $(BESIDE_LOG); \
	test $$ray_rc -eq 0 -a $$beside_rc -eq 0

# everyday lane: everything but the suites that start Ray (tests marked `ray`)
test-fast: install lint
	$(BIN)/python -m pytest -q -m "not ray"

# the one-minute lane: pure logic (losses, configs, stats, parsers, layout; tests marked `unit`)
test-unit: install
	$(BIN)/python -m pytest -q -m unit

clean:
	rm -rf $(VENV) runs results
