# Thin wrappers: each target creates/updates .venv and installs the project first,
# so every one of them works as the first command on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-fast mutants mutants-fast lab bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

## run: the whole course headless (embedded database, schema, data, notebooks) with a summary
run: $(STAMP)
	$(BIN)/labhelpers run

## test: every test, against a real PostgreSQL (what CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest

## test-fast: skip the slow tests (browser, large data)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

## mutants: the isolation tests, tested: each realistic mistake listed in tests/mutants.py, applied alone to a
## scratch copy of the project, must make the isolation tests fail there; a table of what caught each
mutants: $(STAMP)
	$(BIN)/python tests/mutants.py --out runs/mutants/report.md

## mutants-fast: only the CI subset of the mutants (`make test` runs it too, as a slow test)
mutants-fast: $(STAMP)
	$(BIN)/python tests/mutants.py --fast --no-baseline

## lab: JupyterLab on the notebooks
lab: $(STAMP)
	$(BIN)/labhelpers db up
	$(BIN)/jupyter lab notebooks/

## bench: every figure of README's Performance section: the loading methods compared (beside pgbench -i),
## then the lesson's benchmark targets at the large scale, in a database of its own (bench_large)
BENCH_DB := bench_large
bench: $(STAMP)
	$(BIN)/labhelpers bench-load --rows 1000000
	$(BIN)/python -c "from labhelpers import db; db.create_database(db.resolve_dsn(), '$(BENCH_DB)', exist_ok=True)"
	$(BIN)/labhelpers seed --scale large --dsn "$$($(BIN)/python -c "from labhelpers import db; print(db.with_dbname(db.resolve_dsn(), '$(BENCH_DB)'))")"
	$(BIN)/labhelpers bench --scale large --dsn "$$($(BIN)/python -c "from labhelpers import db; print(db.with_dbname(db.resolve_dsn(), '$(BENCH_DB)'))")"

## clean: stop the embedded server and remove the environment (the database in .lab/ is kept)
clean:
	-$(BIN)/labhelpers db down
	rm -rf $(VENV) *.egg-info
