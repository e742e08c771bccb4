#!/usr/bin/env python3
"""make bench: timesink against PostgreSQL's own COPY limit, in the same run.

For each mix (prices only; the four-type mix) and each of R repeats:
  1. preload N messages (encodings json, bincode, lz4-json) into fresh topics;
  2. drain: start the release sink on an empty database and time it until the
     stored offsets reach the end offsets (rows/s, MB/s of values), sampling
     the CPU of the sink, PostgreSQL and the broker and the sink's peak RSS;
  3. the limit: export exactly the rows the sink stored to binary COPY files,
     empty the tables, and time PostgreSQL's own `COPY … FROM file` into the
     same tables (same keys, same indexes).
The prices mix runs a second time in each repeat with `tables.crypto_prices.writers = 2`
(two connections write the one table), and a third time into a user's mapped
table of the same shape in place of the built-in (bench/mapped_prices.toml),
alternating with the default. Every
run (drain, latency, stall) starts on a freshly started, empty broker: nisshi's
in-memory storage slows down with all it holds.
Prints a markdown table of medians with min–max and writes it under
bench/results/. Standard library only.

Then, R times, the latency: the four-type mix at a steady rate into a running
sink, read from the sink's own summaries on its metrics endpoint: produce →
commit, and its two parts, produce → poll (producer and broker) and poll →
commit (the sink).

Then the same drain of the mix and latency with fixed batches: the defaults
of seed 002 (`batch.adaptive = false`), R times, and one run per fixed batch
size of BENCH_SWEEP (100,1000,10000 rows), for the chart: throughput and p99
against batch size, adaptive as a line across (bench/results/<time>.png,
drawn by gnuplot).

Last, the stall: a backlog of the mix, PostgreSQL stopped (SIGSTOP) for
BENCH_STALL_SECONDS (30) while the sink drains it; the sink's RSS sampled
through the stall must stay flat, its fetching paused.

Environment: BENCH_N (1000000), BENCH_R (3), BENCH_MIXES (prices,mix),
BENCH_ENCODINGS (json,bincode,lz4-json: what the load generator sends),
BENCH_LATENCY_RATE (10000 msg/s), BENCH_LATENCY_SECONDS (60), BENCH_SWEEP,
BENCH_STALL_SECONDS.
"""

import contextlib
import datetime
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE = os.path.join(ROOT, ".state", "bench")
BIN = os.path.join(ROOT, "target", "release", "timesink")


def env_int(name, default):
    value = os.environ.get(name, default)
    if not value.isdigit() or int(value) < 1:
        sys.exit(f"{name} must be a positive integer, not {value!r}")
    return int(value)


N = env_int("BENCH_N", "1000000")
R = env_int("BENCH_R", "3")
MIXES = os.environ.get("BENCH_MIXES", "prices,mix").split(",")
LAT_RATE = env_int("BENCH_LATENCY_RATE", "10000")
LAT_SECONDS = env_int("BENCH_LATENCY_SECONDS", "60")
SWEEP_TEXT = os.environ.get("BENCH_SWEEP", "100,1000,10000")
if not all(b.isdigit() and int(b) > 0 for b in SWEEP_TEXT.split(",") if b):
    sys.exit(f"BENCH_SWEEP takes positive batch sizes separated by commas, not {SWEEP_TEXT!r}")
SWEEP = [int(b) for b in SWEEP_TEXT.split(",") if b]
STALL_SECONDS = env_int("BENCH_STALL_SECONDS", "30")
if not set(MIXES) <= {"prices", "mix"}:
    sys.exit(f"BENCH_MIXES takes prices and/or mix, not {','.join(MIXES)!r}")
ENCODINGS = os.environ.get("BENCH_ENCODINGS", "json,bincode,lz4-json")
TABLES = ["crypto_prices", "ohlcv_data", "market_analytics", "level1_quotes"]
TICK = os.sysconf("SC_CLK_TCK")
# The environment prefix of each table's settings.
TYPES = [f"TIMESINK_TABLES__{t.upper()}" for t in TABLES]
# Seed 002's batches as they are: its sizes, each batch waits its linger, one
# transaction each.
SEED_SIZES = dict(zip(TYPES, [500, 200, 100, 1000]))
FIXED = {"TIMESINK_BATCH__ADAPTIVE": "false",
         **{f"{t}__BATCH__MAX_ROWS": str(n) for t, n in SEED_SIZES.items()}}
# Prices only is one table: the setting for such a load, a second writer.
TWO_WRITERS = {"TIMESINK_TABLES__CRYPTO_PRICES__WRITERS": "2"}
TWO_WRITERS_LABEL = "prices, `tables.crypto_prices.writers = 2`"
# A user's mapping of the price records into a table of crypto_prices' shape.
MAPPED = {"TIMESINK_CONFIG_FILE": os.path.join(ROOT, "bench", "mapped_prices.toml")}
MAPPED_LABEL = "prices into a mapped table (bench/mapped_prices.toml)"


def fixed_size(rows):
    """Every type batched by `rows` exactly, the linger long enough to fill
    it at the latency run's rate."""
    env = dict(FIXED)
    for t in TYPES:
        env[f"{t}__BATCH__MAX_ROWS"] = str(rows)
        env[f"{t}__BATCH__MAX_BYTES"] = str(64 * 2**20)
        env[f"{t}__BATCH__LINGER_MS"] = "10000"
    return env


def sh(*args, **kw):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw).stdout


def services_env():
    env = dict(os.environ)
    for line in sh(os.path.join(ROOT, "scripts", "services.sh"), "env").splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def psql(url, sql):
    return sh("psql", url, "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", sql).strip()


class Poller:
    """A psql session kept open: runs a statement on demand and returns its
    one number, None when it has none or fails (the sink has not created its
    tables yet)."""

    def __init__(self, url, sql):
        self.sql = sql
        self.proc = subprocess.Popen(["psql", url, "-qtAX"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def value(self):
        return self.run(self.sql)

    def run(self, sql):
        """Runs `sql`; its one number, or None."""
        # The marker line ends each answer, whether the query worked or not.
        self.proc.stdin.write(f"{sql};\n\\echo @@\n")
        self.proc.stdin.flush()
        lines = []
        while (line := self.proc.stdout.readline().strip()) != "@@":
            if not line and self.proc.poll() is not None:
                sys.exit("the polling psql session ended")
            lines.append(line)
        return lines[0] if len(lines) == 1 and lines[0].lstrip("-").isdigit() else None

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def cpu_ticks(pids):
    """utime+stime of each pid (those still alive)."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return out


def machine_ticks():
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


def postgres_pids():
    out = subprocess.run(["pgrep", "-x", "postgres"], text=True, capture_output=True).stdout
    return [int(p) for p in out.split()]


def cpu_delta(before, after):
    return sum(t - before.get(p, 0) for p, t in after.items()) / TICK


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def fresh(env, name):
    """A database and topics (as topics.yaml, renamed) of their own; the
    sink's environment pointing at them. Dropped afterwards."""
    topics = {t: f"{name}-crypto-{t}" for t in ["prices", "ohlcv", "analytics", "level1"]}
    # nisshi's in-memory storage slows down with all it holds (its fetch
    # latency grew 29 → 78 ms p50 over four 30-s latency runs): each run
    # starts with an empty broker, so that no run pays for the ones before.
    subprocess.run([os.path.join(ROOT, "scripts", "services.sh"), "restart-broker"],
                   check=True, stderr=subprocess.DEVNULL)
    env = dict(env)
    for table, topic in zip(TABLES, topics.values()):
        env[f"TIMESINK_TABLES__{table.upper()}__TOPIC_PATTERN"] = \
            f"^{topic}(-(?<exchange>[A-Za-z0-9_-]+))?$"
    env["TIMESINK_GROUP_ID"] = f"{name}-group"
    admin_url = env["DATABASE_URL"]
    psql(admin_url, f"CREATE DATABASE {name}")
    # Without TLS, for the sink and psql alike, as the runs before it had.
    env["DATABASE_URL"] = admin_url.rsplit("/", 1)[0] + "/" + name + "?sslmode=disable"
    try:
        spec = open(os.path.join(ROOT, "topics.yaml")).read()
        for t, topic in topics.items():
            spec = spec.replace(f"crypto-{t}:", f"{topic}:")
        spec_path = os.path.join(STATE, f"{name}.yaml")
        with open(spec_path, "w") as f:
            f.write(spec)
        # A broker just restarted may time the first admin request out.
        for attempt in range(3):
            try:
                sh(BIN, "topics", "create", "--file", spec_path, env=env)
                break
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
                time.sleep(2)
        # The tables exist and are empty before any clock starts, as for the
        # limit's COPY (creating four hypertables takes the sink 0.7 s).
        sh(BIN, "schema", env=env)
        yield env
    finally:
        subprocess.run(["psql", admin_url, "-qtAX", "-c",
                        f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


def stored_offsets(env):
    return Poller(env["DATABASE_URL"],
                  "SELECT coalesce(sum(next_offset), 0) FROM timesink_offsets "
                  f"WHERE consumer_group = '{env['TIMESINK_GROUP_ID']}'")


def wait_stored(sink, poll, total, log, timeout):
    """Waits until `total` offsets are stored; returns when the first was."""
    deadline = time.monotonic() + timeout
    first = None
    while True:
        time.sleep(0.02)
        if sink.poll() is not None:
            sys.exit(f"the sink exited early; log: {log.name}")
        if time.monotonic() > deadline:
            sink.kill()
            sys.exit(f"the sink did not store {total} offsets within {timeout} s; log: {log.name}")
        stored = int(poll.value() or 0)
        if stored > 0 and first is None:
            first = time.monotonic()
        if stored >= total:
            return first


def one_run(env, mix, run, tag="", extra=None):
    """One drain; `extra` is the sink's own environment (the load is made
    with the defaults)."""
    name = f"bench{os.getpid()}x{mix}{tag}x{run}"
    with fresh(env, name) as env:
        sink_env = {**env, **(extra or {})}
        if extra is MAPPED:
            # The mapped table reads this run's price topics.
            sink_env["TIMESINK_TABLES__MAPPED_PRICES__TOPIC_PATTERN"] = \
                env["TIMESINK_TABLES__CRYPTO_PRICES__TOPIC_PATTERN"]
        if "TIMESINK_CONFIG_FILE" in (extra or {}):
            # Its tables exist before the clock starts, as the built-ins do.
            sh(BIN, "schema", env=sink_env)
        return drain_run(env, name, mix, sink_env)


def preload(env, mix):
    """Produces N messages of the mix: (value bytes, rows the sink will store)."""
    types = "price" if mix == "prices" else "price,ohlcv,analytics,level1"
    produced = sh(BIN, "produce", "--count", str(N), "--rate", "0", "--exchanges", "",
                  "--types", types, "--encodings", ENCODINGS, env=env)
    value_bytes = int(produced.split("(")[1].split()[0])
    expected_rows = sum(int(l.split(":")[1].split()[0])
                        for l in produced.splitlines() if l.strip().startswith("table "))
    return value_bytes, expected_rows


def data_tables(url):
    """The tables the sink wrote: every table but its bookkeeping."""
    listed = psql(url, "SELECT string_agg(tablename, ',') FROM pg_tables "
                  "WHERE schemaname = 'public' AND tablename NOT LIKE 'timesink\\_%'")
    return [t for t in listed.split(",") if t]


def drain_run(env, name, mix, sink_env):
    url = env["DATABASE_URL"]
    value_bytes, expected_rows = preload(env, mix)

    # Drain, from the same start as the limit below: WAL checkpointed.
    psql(url, "CHECKPOINT")
    nisshi = int(open(os.path.join(ROOT, ".state", "nisshi.pid")).read())
    pg_before = cpu_ticks(postgres_pids())
    broker_before = cpu_ticks([nisshi])
    machine_before = machine_ticks()
    log = open(os.path.join(STATE, f"{name}.log"), "w")
    started = time.monotonic()
    sink = subprocess.Popen([BIN, "run"], env=sink_env, stdout=subprocess.DEVNULL, stderr=log)
    # One psql session polls: a process per poll would cost a backend
    # start each time, CPU taken from the run being measured.
    poll = stored_offsets(env)
    try:
        first_commit = wait_stored(sink, poll, N, log, 1800)
    finally:
        poll.close()
    drain_s = time.monotonic() - started
    sink_cpu = cpu_delta({}, cpu_ticks([sink.pid]))
    pg_cpu = cpu_delta(pg_before, cpu_ticks(postgres_pids()))
    broker_cpu = cpu_delta(broker_before, cpu_ticks([nisshi]))
    machine_after = machine_ticks()
    rss = peak_rss_mib(sink.pid)
    sink.terminate()
    sink.wait(timeout=60)
    rows = {t: int(psql(url, f"SELECT count(*) FROM {t}")) for t in data_tables(url)}
    total_rows = sum(rows.values())
    if total_rows != expected_rows:
        sys.exit(f"{name}: the sink stored {total_rows} rows, the generator sent {expected_rows}")

    # The limit: PostgreSQL's own binary COPY of exactly these rows.
    files = {}
    for t in rows:
        if rows[t]:
            files[t] = os.path.join(STATE, f"{name}-{t}.copy")
            # A query, not the table: a hypertable keeps its rows in chunks.
            psql(url, f"COPY (SELECT * FROM {t}) TO '{files[t]}' (FORMAT binary)")
    psql(url, "TRUNCATE " + ", ".join(files) + "; CHECKPOINT")
    # In a session of its own whose server process is measured before it
    # ends (a psql per statement would take the process's CPU with it).
    session = Poller(url, "SELECT pg_backend_pid()")
    backend = int(session.value())
    limit_pg_before = cpu_ticks(postgres_pids())
    limit_started = time.monotonic()
    session.run("BEGIN; " + " ".join(f"COPY {t} FROM '{f}' (FORMAT binary);"
                                     for t, f in files.items()) + " COMMIT;")
    limit_s = time.monotonic() - limit_started
    limit_pg_cpu = cpu_delta(limit_pg_before, cpu_ticks(postgres_pids()))
    session.close()
    if backend not in limit_pg_before:
        sys.exit(f"{name}: the limit's server process {backend} was not measured")
    reloaded = sum(int(psql(url, f"SELECT count(*) FROM {t}")) for t in files)
    if reloaded != total_rows:
        sys.exit(f"{name}: the limit COPY loaded {reloaded} rows, not {total_rows}")
    for f in files.values():
        os.remove(f)
    return {
        "rows": total_rows,
        "drain_rows_s": total_rows / drain_s,
        "drain_mb_s": value_bytes / drain_s / 1e6,
        # From the sink's start to its first commit: process start, schema
        # check, group join, first fetch and first transaction.
        "first_commit_s": first_commit - started,
        "limit_rows_s": total_rows / limit_s,
        "ratio": (total_rows / drain_s) / (total_rows / limit_s),
        "rss_mib": rss,
        "cpu_sink": sink_cpu / drain_s,
        "cpu_pg": pg_cpu / drain_s,
        "cpu_broker": broker_cpu / drain_s,
        # How busy the whole machine was during the drain (0–1), and the CPU
        # seconds per million rows: what says whether the drain is CPU-bound.
        "machine_busy": (machine_after[0] - machine_before[0])
        / max(1, machine_after[1] - machine_before[1]),
        "sink_s_per_m": sink_cpu / total_rows * 1e6,
        "pg_s_per_m": pg_cpu / total_rows * 1e6,
        "limit_pg_s_per_m": limit_pg_cpu / total_rows * 1e6,
    }


def steady(r):
    """A drain's rows per second after the sink's first commit: without the
    process start, the group join and the first fetch, which weigh more the
    shorter the drain. From the keys every revision's drain_run returns."""
    drain_s = r["rows"] / r["drain_rows_s"]
    return r["rows"] / max(1e-9, drain_s - r["first_commit_s"])


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def summary(text, metric):
    """{quantile: [value in ms, one per table]} of a summary the sink exports."""
    quantiles = {}
    for line in text.splitlines():
        if line.startswith(metric + "{") and "quantile=" in line:
            labels, value = line.rsplit(" ", 1)
            q = labels.split('quantile="')[1].split('"')[0]
            quantiles.setdefault(float(q), []).append(float(value) * 1000)
    if not quantiles:
        sys.exit(f"the sink exported no {metric}")
    return quantiles


def latency_run(env, run, tag="", extra=None):
    """The four-type mix at a steady LAT_RATE msg/s for LAT_SECONDS: the
    sink's own summaries of Kafka timestamp → database commit per table, and
    of its two parts (before the sink polled the message, and after)."""
    name = f"bench{os.getpid()}xlatency{tag}x{run}"
    with fresh(env, name) as env:
        env.update(extra or {})
        port = free_port()
        env["TIMESINK_HTTP__LISTEN"] = f"127.0.0.1:{port}"
        log = open(os.path.join(STATE, f"{name}.log"), "w")
        sink = subprocess.Popen([BIN, "run"], env=env, stdout=subprocess.DEVNULL, stderr=log)
        poll = stored_offsets(env)
        try:
            # Warm: the group joined and a first batch of each type written.
            args = ["--exchanges", "", "--types", "price,ohlcv,analytics,level1",
                    "--encodings", ENCODINGS]
            sh(BIN, "produce", "--count", "100", "--rate", "0", *args, env=env)
            wait_stored(sink, poll, 100, log, 120)
            total = 100 + LAT_RATE * LAT_SECONDS
            sh(BIN, "produce", "--count", str(LAT_RATE * LAT_SECONDS),
               "--rate", str(LAT_RATE), *args, env=env)
            wait_stored(sink, poll, total, log, 600)
            text = scrape(port)
        finally:
            poll.close()
            sink.terminate()
            sink.wait(timeout=60)
        total = summary(text, "timesink_produce_to_commit_seconds")
        before = summary(text, "timesink_produce_to_poll_seconds")
        own = summary(text, "timesink_poll_to_commit_seconds")
        # The worst table for each quantile.
        return {"p50_ms": max(total[0.5]), "p99_ms": max(total[0.99]),
                "max_ms": max(total[1.0]), "broker_p99_ms": max(before[0.99]),
                "sink_p50_ms": max(own[0.5]), "sink_p99_ms": max(own[0.99])}


def stall_run(env):
    """A backlog of the mix; once the sink writes, PostgreSQL is stopped
    (SIGSTOP, every server process) for STALL_SECONDS. The sink's RSS is
    sampled through the stall; its fetching must pause and its memory stay
    flat. Then everything must arrive."""
    name = f"bench{os.getpid()}xstall"
    with fresh(env, name) as env:
        port = free_port()
        env["TIMESINK_HTTP__LISTEN"] = f"127.0.0.1:{port}"
        _, expected_rows = preload(env, "mix")
        log = open(os.path.join(STATE, f"{name}.log"), "w")
        sink = subprocess.Popen([BIN, "run"], env=env, stdout=subprocess.DEVNULL, stderr=log)
        poll = stored_offsets(env)
        stopped = []
        try:
            wait_stored(sink, poll, N // 10, log, 300)
            stopped = postgres_pids()
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            started = time.monotonic()
            samples = []  # (seconds into the stall, RSS MiB)
            while (at := time.monotonic() - started) < STALL_SECONDS:
                with open(f"/proc/{sink.pid}/status") as f:
                    rss = next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))
                samples.append((at, rss))
                time.sleep(0.5)
            paused = any(l.startswith("timesink_consumer_paused ") and l.split()[1] == "1"
                         for l in scrape(port).splitlines())
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        try:
            wait_stored(sink, poll, N, log, 600)
        finally:
            poll.close()
            sink.terminate()
            sink.wait(timeout=60)
        rows = sum(int(psql(env["DATABASE_URL"], f"SELECT count(*) FROM {t}")) for t in TABLES)
        if rows != expected_rows:
            sys.exit(f"{name}: the sink stored {rows} rows after the stall, not {expected_rows}")
        # The pipeline fills in the first seconds of the stall; from then on
        # nothing may grow.
        settled = [rss for at, rss in samples if at >= 5] or [samples[-1][1]]
        return {"at_stop": samples[0][1], "min": min(settled), "max": max(settled),
                "spread": (max(settled) - min(settled)) / min(settled),
                # The target's reading: within ±x of the middle of the range.
                "plus_minus": (max(settled) - min(settled)) / (max(settled) + min(settled)),
                "paused": paused,
                "samples": samples}


def chart(path, sweep, adaptive_drain, limit, adaptive_p99):
    """Throughput and p99 against the fixed batch size, adaptive across."""
    if not shutil.which("gnuplot"):
        print("gnuplot not found (apt-get install gnuplot-nox): no chart")
        return False
    data = path + ".dat"
    with open(data, "w") as f:
        for rows, r in sorted(sweep.items()):
            f.write(f"{rows} {r['drain_rows_s']:.0f} {r['p99_ms']:.1f} {r['sink_p99_ms']:.1f}\n")
    script = f"""
set terminal pngcairo size 1100,450 font ",10"
set output '{path}'
set multiplot layout 1,2 title "timesink: fixed batch size against adaptive (mix, {N:,} messages; latency at {LAT_RATE:,} msg/s)"
set logscale x
set xlabel "fixed batch size (rows)"
set grid
set key bottom right
set ylabel "drain rows/s"
set yrange [0:*]
plot '{data}' using 1:2 with linespoints lw 2 pt 7 title "fixed", \
     {adaptive_drain:.0f} with lines dt 2 lw 2 title "adaptive", \\
     {0.8 * limit:.0f} with lines dt 4 lc "black" title "0.8 × PostgreSQL COPY (target)"
set ylabel "p99 latency ms"
set logscale y
set yrange [*:*]
set key top left
plot '{data}' using 1:3 with linespoints lw 2 pt 7 title "fixed, produce→commit", \
     '{data}' using 1:4 with linespoints lw 2 pt 5 title "fixed, poll→commit (sink)", \
     {adaptive_p99[0]:.1f} with lines dt 2 lw 2 title "adaptive, produce→commit", \
     {adaptive_p99[1]:.1f} with lines dt 3 lw 2 title "adaptive, poll→commit (sink)", \\
     50 with lines dt 4 lc "black" title "50 ms (target)"
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.remove(data)
    return True


def cell(values, fmt):
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def say(text):
    print(text, flush=True)


def save(table, name):
    """Prints a results table and writes it to bench/results/`name`."""
    print()
    print(table)
    out_dir = os.path.join(ROOT, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, name)
    with open(out, "w") as f:
        f.write(table + "\n")
    print(f"\nwritten to {os.path.relpath(out, ROOT)}")


def main():
    os.makedirs(STATE, exist_ok=True)
    os.chmod(STATE, 0o1777)  # the server (user postgres) writes the COPY files here
    subprocess.run([os.path.join(ROOT, "scripts", "services.sh"), "start"], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    env = services_env()
    env["RUST_LOG"] = "warn"
    stamp = datetime.datetime.now()

    def drain_line(label, r):
        say(f"{label}: drain {r['drain_rows_s']:,.0f} rows/s, limit {r['limit_rows_s']:,.0f} "
            f"rows/s, ratio {r['ratio']:.2f}, peak RSS {r['rss_mib']:.0f} MiB")

    def latency_line(label, r):
        say(f"{label}: p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, max "
            f"{r['max_ms']:.0f} ms (before the sink p99 {r['broker_p99_ms']:.0f} ms; "
            f"in the sink p50 {r['sink_p50_ms']:.0f}, p99 {r['sink_p99_ms']:.0f} ms)")

    results = {}
    for mix in MIXES:
        for run in range(1, R + 1):
            r = one_run(env, mix, run)
            drain_line(f"{mix} run {run}/{R}", r)
            results.setdefault(mix, []).append(r)
            if mix == "prices":
                # Alternating with the default, so that both see the same drift.
                r = one_run(env, mix, run, "w2", TWO_WRITERS)
                drain_line(f"prices, two writers, run {run}/{R}", r)
                results.setdefault(TWO_WRITERS_LABEL, []).append(r)
                r = one_run(env, mix, run, "mapped", MAPPED)
                drain_line(f"prices, mapped table, run {run}/{R}", r)
                results.setdefault(MAPPED_LABEL, []).append(r)
    latency = {"adaptive": [], "fixed": []}
    for run in range(1, R + 1):
        r = latency_run(env, run)
        latency_line(f"latency run {run}/{R}", r)
        latency["adaptive"].append(r)
    fixed_drain = []
    for run in range(1, R + 1):
        r = one_run(env, "mix", run, "fixed", FIXED)
        drain_line(f"mix, fixed batches, run {run}/{R}", r)
        fixed_drain.append(r)
        r = latency_run(env, run, "fixed", FIXED)
        latency_line(f"latency, fixed batches, run {run}/{R}", r)
        latency["fixed"].append(r)
    sweep = {}
    for rows in SWEEP:
        d = one_run(env, "mix", 1, f"b{rows}", fixed_size(rows))
        r = latency_run(env, 1, f"b{rows}", fixed_size(rows))
        sweep[rows] = {**r, "drain_rows_s": d["drain_rows_s"], "ratio": d["ratio"]}
        say(f"fixed batch {rows} rows: drain {d['drain_rows_s']:,.0f} rows/s, "
            f"p99 {r['p99_ms']:.0f} ms (in the sink {r['sink_p99_ms']:.0f} ms)")
    stall = stall_run(env)
    say(f"stall {STALL_SECONDS} s: RSS {stall['at_stop']:.0f} MiB at the stop, "
        f"{stall['min']:.0f}–{stall['max']:.0f} MiB from 5 s on "
        f"(±{stall['plus_minus']:.1%}), fetching paused: {stall['paused']}")

    cpus = os.cpu_count()
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                  if l.startswith("model name")), platform.processor())
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    timescale = "with TimescaleDB" if os.path.exists(
        "/usr/lib/postgresql/15/lib/timescaledb.so") else "plain PostgreSQL 15"
    col = lambda rs, k: [r[k] for r in rs]  # noqa: E731
    lines = [
        f"# timesink bench, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `BENCH_N={N} BENCH_R={R} BENCH_MIXES={','.join(MIXES)} "
        f"BENCH_SWEEP={','.join(map(str, SWEEP))} make bench`  ",
        f"Machine: {cpus} CPUs ({model}), {mem_gib:.0f} GiB; {timescale}; nisshi 0.8.1 (memory)  ",
        f"Messages: {N:,} per run, encodings {ENCODINGS}; medians of {R} runs (min–max); "
        "each run on a freshly started broker.",
        "",
        "## Drain against PostgreSQL's own COPY (adaptive batching, the default)",
        "",
        "| mix | rows | drain rows/s | drain MB/s | PostgreSQL COPY rows/s | drain / COPY "
        "| start → first commit s | peak RSS MiB | CPU sink | CPU PostgreSQL | CPU broker "
        "| machine busy | sink CPU s / 1M rows | PostgreSQL CPU s / 1M rows "
        "| the same in its own COPY |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mix, rs in results.items():
        lines.append(
            f"| {mix} | {rs[0]['rows']:,} | {cell(col(rs, 'drain_rows_s'), '{:,.0f}')} "
            f"| {cell(col(rs, 'drain_mb_s'), '{:.1f}')} "
            f"| {cell(col(rs, 'limit_rows_s'), '{:,.0f}')} "
            f"| {cell(col(rs, 'ratio'), '{:.2f}')} "
            f"| {cell(col(rs, 'first_commit_s'), '{:.2f}')} "
            f"| {cell(col(rs, 'rss_mib'), '{:.0f}')} "
            f"| {cell(col(rs, 'cpu_sink'), '{:.2f}')} | {cell(col(rs, 'cpu_pg'), '{:.2f}')} "
            f"| {cell(col(rs, 'cpu_broker'), '{:.2f}')} "
            f"| {cell([100 * v for v in col(rs, 'machine_busy')], '{:.0f}')} % "
            f"| {cell(col(rs, 'sink_s_per_m'), '{:.2f}')} "
            f"| {cell(col(rs, 'pg_s_per_m'), '{:.2f}')} "
            f"| {cell(col(rs, 'limit_pg_s_per_m'), '{:.2f}')} |")
    lines += [
        "", "CPU is in cores (CPU seconds per second of drain). Machine busy: all CPUs "
        "together, from /proc/stat, over the drain (its start included: the sink "
        "connects and joins the group first; the drain's clock starts with the "
        "process, and its first commit comes after the time shown).", "",
        "## Latency, and adaptive against fixed batches", "",
        f"Latency: the four-type mix at a steady {LAT_RATE:,} msg/s for {LAT_SECONDS} s "
        "(BENCH_LATENCY_RATE, BENCH_LATENCY_SECONDS), from each message's Kafka timestamp "
        "(set by the producer) to its database commit, as the sink's own summaries report "
        "it (last 40–60 s; the worst table): `timesink_produce_to_commit_seconds`, and its "
        "parts `timesink_produce_to_poll_seconds` (producer and broker, before the sink "
        "has the message) and `timesink_poll_to_commit_seconds` (the sink). Fixed: "
        "`batch.adaptive = false`, seed 002's sizes and lingers, one transaction per batch. "
        f"Drain: the mix, as above. Medians of {R} runs (min–max).", "",
        "| batching | drain rows/s | drain / COPY | p50 ms | p99 ms | max ms "
        "| p99 before the sink ms | sink p50 ms | sink p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    drains = {"adaptive": results.get("mix"), "fixed": fixed_drain}
    for mode in ["adaptive", "fixed"]:
        lat, dr = latency[mode], drains[mode]
        d = (f"{cell(col(dr, 'drain_rows_s'), '{:,.0f}')} | {cell(col(dr, 'ratio'), '{:.2f}')}"
             if dr else "– | –")
        lines.append(f"| {mode} | {d} | " + " | ".join(
            cell(col(lat, k), "{:.0f}") for k in
            ["p50_ms", "p99_ms", "max_ms", "broker_p99_ms", "sink_p50_ms", "sink_p99_ms"]) + " |")
    png = os.path.join(ROOT, "bench", "results", f"{stamp:%Y%m%d-%H%M%S}.png")
    lines += [
        "", f"## Fixed batch size (one run each; chart: `{os.path.basename(png)}`)", "",
        "Every type batched by exactly this many rows (linger 10 s, one transaction each).",
        "", "| batch rows | drain rows/s | drain / COPY | p99 ms | sink p99 ms |",
        "|---|---|---|---|---|",
    ]
    for rows, r in sorted(sweep.items()):
        lines.append(f"| {rows:,} | {r['drain_rows_s']:,.0f} | {r['ratio']:.2f} "
                     f"| {r['p99_ms']:.0f} | {r['sink_p99_ms']:.0f} |")
    lines += [
        "", f"## PostgreSQL stalled {STALL_SECONDS} s under a backlog", "",
        f"The mix, {N:,} messages preloaded; once a tenth is stored every PostgreSQL "
        f"process gets SIGSTOP for {STALL_SECONDS} s (BENCH_STALL_SECONDS), then SIGCONT; "
        "the sink's RSS sampled every 0.5 s. All rows arrived afterwards.", "",
        "| RSS at the stop MiB | RSS from 5 s on, min–max MiB | ± around the middle "
        "| (max − min) / min | fetching paused |",
        "|---|---|---|---|---|",
        f"| {stall['at_stop']:.0f} | {stall['min']:.0f}–{stall['max']:.0f} "
        f"| ±{stall['plus_minus']:.1%} | {stall['spread']:.1%} "
        f"| {'yes' if stall['paused'] else 'no'} |",
    ]
    save("\n".join(lines), f"{stamp:%Y%m%d-%H%M%S}.md")
    if sweep and latency["adaptive"] and results.get("mix"):
        adaptive = latency["adaptive"]
        if chart(png, sweep, statistics.median(col(results["mix"], "drain_rows_s")),
                 statistics.median(col(results["mix"], "limit_rows_s")),
                 (statistics.median(col(adaptive, "p99_ms")),
                  statistics.median(col(adaptive, "sink_p99_ms")))):
            print(f"chart: {os.path.relpath(png, ROOT)}")


if __name__ == "__main__":
    main()
