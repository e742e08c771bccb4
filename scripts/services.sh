#!/usr/bin/env bash
# Installs (when missing), starts and stops the real services the tests, the
# demo and the benchmarks use: PostgreSQL 15 and the nisshi Kafka-protocol
# broker (and Prometheus, which tests start themselves), on loopback ports of their own, with state under .state/ (ignored).
#
#   scripts/services.sh install | start | stop | status | env
#
# Ports: PG_PORT (default 55432), KAFKA_PORT (default 19092).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.state"
pg_port=${PG_PORT:-55432}
kafka_port=${KAFKA_PORT:-19092}
pg_bin=/usr/lib/postgresql/15/bin
pg_data="$state/pg"
pg_socket="$state/pgsock"
nisshi_version=0.8.1
nisshi="${CARGO_HOME:-$HOME/.cargo}/bin/nisshi"
# TimescaleDB 2.28.3 is built from the platform's shared folder when it is
# beside the project (TIMESCALEDB_INSTALL points elsewhere; "none" skips it).
timescaledb_install=${TIMESCALEDB_INSTALL:-$root/../shared/timescaledb/install.sh}

log() { printf 'services: %s\n' "$*" >&2; }

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install() {
  if [ ! -x "$pg_bin/postgres" ]; then
    log "installing PostgreSQL 15 (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
  fi
  if ! pkg-config --exists openssl 2>/dev/null; then
    # librdkafka (Kafka TLS and SASL) and PostgreSQL TLS build against OpenSSL.
    log "installing OpenSSL headers (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq libssl-dev pkg-config >/dev/null
  fi
  if [ "$timescaledb_install" != none ] && [ -f "$timescaledb_install" ]; then
    # Before any server starts: it may upgrade PostgreSQL 15's packages.
    # Idempotent, and quick once installed.
    bash "$timescaledb_install"
  fi
  if ! command -v prometheus >/dev/null; then
    # For tests/operate.rs, which has a real Prometheus scrape the sink.
    log "installing Prometheus (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq prometheus >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }
  fi
  if ! "$nisshi" --version 2>/dev/null | grep -q "$nisshi_version"; then
    log "installing nisshi $nisshi_version (cargo +nightly install; about 13 minutes)"
    cargo +nightly install nisshi --version "$nisshi_version" --locked
  fi
}

wait_for() { # description, seconds, command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "$what did not come up within ${secs}s"; return 1; fi
    sleep 0.2
  done
}

# A CA and a server certificate for "localhost" (DNS name only), made once.
tls="$state/tls"
tls_files() {
  [ -s "$tls/server.crt" ] && return
  mkdir -p "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=timesink test CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\n' > "$tls/san.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 3650 -extfile "$tls/san.ext" -out "$tls/server.crt" 2>/dev/null
  chmod 600 "$tls/server.key"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$tls/server.key" "$tls/server.crt"
  log "made a test CA and a server certificate for localhost in $tls"
}

start_pg() {
  mkdir -p "$state"
  if [ ! -s "$pg_data/PG_VERSION" ]; then
    log "initialising a PostgreSQL cluster in $pg_data"
    mkdir -p "$pg_data" "$pg_socket"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pg_data" "$pg_socket"
    chmod 700 "$pg_data"
    as_postgres "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  mkdir -p "$pg_socket"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$pg_socket"
  if as_postgres "$pg_bin/pg_ctl" -D "$pg_data" status >/dev/null 2>&1; then
    log "PostgreSQL already running on 127.0.0.1:$pg_port"
    return
  fi
  tls_files
  local opts="-p $pg_port -k $pg_socket -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on -c shared_buffers=256MB"
  # TLS, for clients that ask (sslmode=prefer, the default, does): a CA of
  # our own signs a certificate for "localhost" only, so tests/tls.rs can
  # show verify-full passing and failing.
  opts="$opts -c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key"
  local with=""
  # TimescaleDB is not packaged for Debian; when it is installed into this
  # PostgreSQL (by install above), preload it so the sink and its tests use it.
  if [ -f /usr/lib/postgresql/15/lib/timescaledb.so ]; then
    opts="$opts -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
    with=" with TimescaleDB"
  fi
  as_postgres "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w -t 60 -o "$opts" start >/dev/null
  log "PostgreSQL on 127.0.0.1:$pg_port$with"
}

start_kafka() {
  mkdir -p "$state"
  if [ -f "$state/nisshi.pid" ] && kill -0 "$(cat "$state/nisshi.pid")" 2>/dev/null; then
    log "nisshi already running on 127.0.0.1:$kafka_port"
    return
  fi
  nohup "$nisshi" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://nisshi/ --group-initial-rebalance-delay 0s \
    >"$state/nisshi.log" 2>&1 &
  echo $! >"$state/nisshi.pid"
  wait_for "nisshi" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$kafka_port"
  log "nisshi on 127.0.0.1:$kafka_port"
}

stop_kafka() {
  if [ -f "$state/nisshi.pid" ]; then
    pid=$(cat "$state/nisshi.pid")
    kill "$pid" 2>/dev/null || true
    # Gone before its port is taken again; SIGKILL after 10 s.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    rm -f "$state/nisshi.pid"
  fi
}

stop() {
  stop_kafka
  if [ -s "$pg_data/PG_VERSION" ]; then
    as_postgres "$pg_bin/pg_ctl" -D "$pg_data" -m fast stop >/dev/null 2>&1 || true
  fi
  log "stopped"
}

case "${1:-}" in
  install) install ;;
  start) install; start_pg; start_kafka ;;
  stop) stop ;;
  # nisshi's memory storage slows down with all it holds: a fresh broker
  # for each benchmark run (everything on it is lost).
  restart-broker) stop_kafka; start_kafka ;;
  status)
    as_postgres "$pg_bin/pg_ctl" -D "$pg_data" status || true
    [ -f "$state/nisshi.pid" ] && kill -0 "$(cat "$state/nisshi.pid")" && echo "nisshi running" || echo "nisshi stopped" ;;
  env)
    echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/postgres"
    echo "export KAFKA_BROKERS=127.0.0.1:$kafka_port"
    echo "export TEST_PG_CA=$tls/ca.crt" ;;
  *) echo "usage: $0 install|start|stop|restart-broker|status|env" >&2; exit 2 ;;
esac
