# Everything runs from a virtualenv in .venv that these targets create.
PY      ?= python3.11
VENV    ?= .venv
BIN      = $(VENV)/bin
PYTEST_WORKERS ?= auto
STAMP    = $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: install demo run test system proto proto-check lint typecheck clean

## install: the virtualenv with every pinned dependency (what the other targets use)
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[pinned,test,dev,example,deploy]' -e clients/python
	rm -f $(VENV)/.installed-* && touch $@

## demo: install, start a development-mode sidecar, resolve identities through it
demo: $(STAMP)
	$(BIN)/sidecar demo

## run: serve in development mode on 127.0.0.1:50051 until Ctrl-C
run: $(STAMP)
	$(BIN)/sidecar serve

## test: the whole test suite (installs the Debian packages it needs first)
test: $(STAMP) system
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)
	@for t in scripts/test.d/*.sh; do [ -e "$$t" ] || continue; echo "== $$t"; bash "$$t" || exit 1; done

## system: Debian packages listed in scripts/apt.d/*.txt
system:
	@bash scripts/setup-system.sh

## proto: regenerate sidecar/v1 from proto/
proto: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

proto-check: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check

.PHONY: go-proto proto-all
## go-proto: regenerate the Go stubs in clients/go/sidecarv1 (protoc + Debian's Go plugins)
go-proto: system
	bash clients/go/gen.sh

## proto-all: after editing the .proto, every generated copy: sidecar/v1, the Python and Node clients' copies, the Go stubs
proto-all: proto go-proto
	$(BIN)/python clients/python/gen_stubs.py
	node clients/node/scripts/sync-proto.js

typecheck: $(STAMP)
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check sidecar tests scripts

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache

.PHONY: bench
## bench: openssl speed, the sidecar, the Node and Go peers (bench/peers), the seeds' Flask app; prints a table (BENCH_ARGS=--smoke for seconds)
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

.PHONY: docs
## docs: build the documentation site (docs/, mkdocs.yml) into site/; warnings fail it
docs: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[docs]'
	$(BIN)/mkdocs build --strict
