# timesink: the two commands of the quick start are `make demo` and `make test`.
# Both install what is missing (PostgreSQL 15, the nisshi broker) and start
# the services on loopback with state under .state/ (see scripts/services.sh).

CARGO ?= cargo
SERVICES := scripts/services.sh

.PHONY: demo test test-faults lint services stop build

## Start PostgreSQL and the broker, create the topics, produce load in every
## encoding, run the sink with live progress, and print a count per table.
demo:
	scripts/demo.sh

## Unit and integration tests against the real services. The build carries
## the crash points (feature failpoints) so that test-faults reuses it.
test: services
	$(CARGO) test --features failpoints --all-targets -- --test-threads=4

## The long fault tests (kills, rebalances, outages, slow database): tests/faults.rs.
test-faults: services
	$(CARGO) test --features failpoints --test faults --test broker_outage -- --ignored --test-threads=2

## Formatting and lints, as CI runs them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features failpoints -- -D warnings

services:
	$(SERVICES) start

stop:
	$(SERVICES) stop

build:
	$(CARGO) build --release
