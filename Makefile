# Payment Guard — the two commands a newcomer types are `make run` and `make test`
# (spec/OPERATIONS.md). Everything is built in the release profile only, so the
# dependencies are compiled once for build, tests, clippy and the end-to-end suite.
#
# `make test` must work on a fresh Debian machine with only Rust and python3:
# it installs what is missing (cmake via apt, a pinned Python venv), then runs
# lint, unit/integration tests and the end-to-end suite, failing on the first error.

SHELL       := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

CARGO   ?= cargo
PYTHON  ?= python3
VENV    := .venv
BIN     := target/release/payment-guard
# apt-get needs root; use sudo only when not root and sudo exists.
SUDO    := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || echo sudo)

.PHONY: build test lint deps sysdeps venv run bench fuzz e2e clean-venv audit advisory-db cargo-deny

## build: compile every workspace crate (release profile)
build: sysdeps
	$(CARGO) build --release --workspace

## test: deps, the dependency audit, lint, cargo tests, then the end-to-end suite
test: deps audit lint
	$(CARGO) test --release --workspace
	$(CARGO) build --release
	$(VENV)/bin/pytest -q tests/e2e

## e2e: only the end-to-end suite (assumes `make build` was run)
e2e: venv
	$(CARGO) build --release
	$(VENV)/bin/pytest -q tests/e2e

## lint: formatting and clippy, warnings are errors
lint: sysdeps
	$(PYTHON) policies/tools/gen_operations.py --check
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

deps: sysdeps venv

# ---------------------------------------------------------------------------- dependency audit
# SECURITY.md "Dependencies": cargo-deny checks every crate of Cargo.lock against a snapshot of
# the RustSec advisory database (vulnerable, yanked, unsound or unmaintained crates), the license
# allow-list and the allowed sources of deny.toml. Offline: the database is the snapshot at
# ADVISORY_DB (the contract: ../shared/advisory-db next to the checkout), never fetched.
ADVISORY_DB        ?= $(firstword $(wildcard ../shared/advisory-db /work/shared/advisory-db) ../shared/advisory-db)
CARGO_DENY_VERSION := 0.20.2
TOOLS              := .tools
CARGO_DENY         := $(TOOLS)/bin/cargo-deny
# The directory name cargo-deny gives the default database (https://github.com/rustsec/advisory-db).
DENY_DB            := $(TOOLS)/advisory-dbs/advisory-db-3157b0e258782691

## audit: cargo-deny advisories, licenses, sources and bans against the advisory snapshot
audit: cargo-deny advisory-db
	$(CARGO) fetch --locked
	$(CARGO_DENY) --offline --locked --workspace check advisories licenses sources bans

# Built once per machine into .tools (gitignored), pinned; rebuilt only when the pin changes.
cargo-deny:
	@if [ "$$($(CARGO_DENY) --version 2>/dev/null)" != "cargo-deny $(CARGO_DENY_VERSION)" ]; then \
	  echo "installing cargo-deny $(CARGO_DENY_VERSION) into $(TOOLS) (compiles for a few minutes, once)"; \
	  $(CARGO) install --locked --root $(TOOLS) --version $(CARGO_DENY_VERSION) cargo-deny; \
	fi

# cargo-deny reads a database from a git checkout (it asks git for the commit date), so the
# snapshot is copied into a one-commit repository dated like the snapshot; redone when
# ADVISORY_DB/SNAPSHOT changes.
advisory-db:
	@if [ ! -f "$(ADVISORY_DB)/SNAPSHOT" ] || [ ! -d "$(ADVISORY_DB)/crates" ]; then \
	  echo "no RustSec advisory database snapshot at $(ADVISORY_DB) (set ADVISORY_DB=<dir>)"; exit 1; \
	fi
	@if ! cmp -s "$(ADVISORY_DB)/SNAPSHOT" "$(DENY_DB)/SNAPSHOT"; then \
	  echo "preparing the advisory database snapshot: $$(cat "$(ADVISORY_DB)/SNAPSHOT")"; \
	  rm -rf "$(DENY_DB)"; mkdir -p "$(dir $(DENY_DB))"; \
	  cp -R "$(ADVISORY_DB)" "$(DENY_DB)"; chmod -R u+w "$(DENY_DB)"; rm -rf "$(DENY_DB)/.git"; \
	  when="$$(awk '{print $$2}' "$(DENY_DB)/SNAPSHOT")T00:00:00Z"; \
	  git -C "$(DENY_DB)" init -q; git -C "$(DENY_DB)" add -A; \
	  GIT_COMMITTER_DATE="$$when" git -C "$(DENY_DB)" -c user.name=advisory-db \
	    -c user.email=advisory-db@localhost -c commit.gpgsign=false \
	    commit -q --allow-empty --date="$$when" -m "RustSec advisory-db snapshot"; \
	fi

# System packages the build needs (cmake for native dependencies). apt-get update
# first: a fresh machine has empty package lists.
sysdeps:
	@if ! command -v cmake >/dev/null 2>&1; then \
	  echo "cmake missing: installing it with apt-get"; \
	  $(SUDO) apt-get update; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake; \
	fi

venv: $(VENV)/.installed

# Rebuilt when the pins change. Debian's own python3 ships venv without ensurepip
# (package python3-venv); install it only when creating the venv fails for that reason.
$(VENV)/.installed: tests/requirements.txt
	@if [ ! -x $(VENV)/bin/python ]; then \
	  if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
	    echo "python venv support missing: installing python3-venv with apt-get"; \
	    $(SUDO) apt-get update; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv; \
	  fi; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -r tests/requirements.txt
	touch $@

clean-venv:
	rm -rf $(VENV)

## run: build and start the guard on the embedded defaults (./guard-data, :8080, :8081)
run: build
	./$(BIN) serve

## bench: the side-by-side benchmark of spec/PERFORMANCE.md; writes bench/RESULTS.md
bench: sysdeps
	bash bench/run.sh

## fuzz: each cargo-fuzz target for FUZZ_SECONDS (needs a nightly toolchain; installs cargo-fuzz)
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := stripe_form audit_event webhook_signature stored_record
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzzing $$t for $(FUZZ_SECONDS)s"; \
	  (cd fuzz && $(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS)) || exit 1; \
	done
