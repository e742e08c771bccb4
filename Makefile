# timesink: the two commands of the quick start are `make demo` and `make test`.
# Both install what is missing (PostgreSQL 15, the nisshi broker) and start
# the services on loopback with state under .state/ (see scripts/services.sh).

CARGO ?= cargo
SERVICES := scripts/services.sh

.PHONY: demo test test-faults fuzz fuzz-build bench bench-guard bench-timescaledb lint services stop build up down

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
	$(CARGO) test --features failpoints --test faults --test broker_outage --test rebalance_outage -- --ignored --test-threads=2

## The fuzz targets (fuzz/: JSON, bincode, LZ4 + inner, the LZ4 frame reader
## against lz4_flex's, headers), each for
## FUZZ_RUNS executions, starting from the committed seeds in fuzz/seeds/.
## Then json and lz4 again for FUZZ_LARGEST_RUNS from seeds of the largest
## message the sink takes (max_value_bytes, 4 MiB: too many elements, the
## largest valid array, the decimal bomb; fuzz/largest_seeds.py and
## fuzz/seeds/lz4-largest): mutation alone never grows an input that far,
## and each such run takes milliseconds.
FUZZ_RUNS ?= 10000000
FUZZ_LARGEST_RUNS ?= 5000
FUZZ_TARGETS := json bincode lz4 lz4_frame headers
## The targets' release build alone (what `make fuzz` runs them with).
fuzz-build:
	@command -v cargo-fuzz >/dev/null || $(CARGO) +nightly install cargo-fuzz --version 0.13.2 --locked
	cd fuzz && $(CARGO) +nightly fuzz build -O -s none
fuzz: fuzz-build
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  $(CARGO) +nightly fuzz run -O -s none $$t corpus/$$t seeds/$$t -- \
	    -runs=$(FUZZ_RUNS) -max_len=8192 -print_final_stats=1 || exit 1; \
	done
	python3 fuzz/largest_seeds.py fuzz/corpus/json-largest-seeds
	cd fuzz && for t in json lz4; do \
	  seeds=seeds/$$t-largest; [ $$t = json ] && seeds=corpus/json-largest-seeds; \
	  mkdir -p corpus/$$t-largest && \
	  $(CARGO) +nightly fuzz run -O -s none $$t corpus/$$t-largest $$seeds -- \
	    -runs=$(FUZZ_LARGEST_RUNS) -max_len=4194304 -print_final_stats=1 || exit 1; \
	done

## timesink against PostgreSQL's own COPY of the same rows, in the same run
## (scripts/bench.py; BENCH_N, BENCH_R, BENCH_MIXES, ...). Writes a table and
## a chart (gnuplot, installed when missing) to bench/results/.
## With BENCH_BASE=<rev>: the drains of this tree and of <rev> instead, each
## against COPY, built aside and alternating on this host (scripts/bench_ab.py).
bench: services
ifdef BENCH_BASE
	python3 scripts/bench_ab.py
else
	@command -v gnuplot >/dev/null || (apt-get update -qq && apt-get install -y -qq gnuplot-nox >/dev/null)
	python3 scripts/bench.py
	python3 scripts/bench_timescaledb.py
endif

## CI's guard against a lost drain speed: drains of 200,000 prices, on the
## defaults and with a 3,000-row budget, whose median ratios to PostgreSQL's
## own COPY must reach 0.6 (scripts/bench_guard.py says why).
bench-guard: services
	python3 scripts/bench_guard.py

## What TimescaleDB's features cost (late data into compressed chunks), alone.
bench-timescaledb: services
	python3 scripts/bench_timescaledb.py

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

## The local stack with Docker (docker-compose.yml): Redpanda with the topics,
## TimescaleDB, timesink, the load generator, Prometheus and Grafana
## (http://localhost:3000). `make down` stops it; its data volumes stay
## (`docker compose down -v` removes them).
up:
	docker compose up -d --build
	@echo "timesink: http://localhost:9464/status  Grafana: http://localhost:3000  Prometheus: http://localhost:9090"

down:
	docker compose down
