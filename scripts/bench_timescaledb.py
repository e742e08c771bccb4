#!/usr/bin/env python3
"""make bench-timescaledb (and the end of make bench): what TimescaleDB's
features cost the sink, each against the plain case in the same run.

Late data, R times, on a fresh database and broker: N_LATE prices are
preloaded, then drained four times by the release sink, each time by a new
consumer group so that it reads them all again:
  1. fresh: into empty chunks (COPY);
  2. replay: the same keys again into those chunks, uncompressed (the merge
     path: a later record replaces the stored one);
  3. replay into compressed chunks: every chunk compressed first, so each
     key's check decompresses its compressed batch;
  4. new rows into compressed chunks: N_LATE more prices, later in time, into
     the chunks compressed again.
Each rate is the rows stored after the first commit over the time from it
to the last (the sink's start, group join and first batch left out). The sink's log says whether it
lifted TimescaleDB's decompression limit.

Direct compress, R times, on a fresh database and broker: N_DIRECT level-1
quotes (JSON) preloaded, then drained twice into an append-only table of
examples/quotes_archive.toml's shape, by a new group each time: once with
`direct_compress = true`, once without. Reported: rows/s as above, and the
table's size on disk (hypertable_size) after each drain, and for the one
without after its chunks are compressed, as the policy would.

Needs TimescaleDB loaded (scripts/services.sh does it when the platform's
shared folder is beside the project). Environment: BENCH_LATE_N (200000),
BENCH_DIRECT_N (500000), BENCH_R (3). Writes bench/results/<time>-timescaledb.md.
"""

import datetime
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  the services, fresh databases and topics, psql

ROOT = bench.ROOT
R = bench.env_int("BENCH_R", "3")
N_LATE = bench.env_int("BENCH_LATE_N", "200000")
N_DIRECT = bench.env_int("BENCH_DIRECT_N", "500000")
ARCHIVE = os.path.join(ROOT, "examples", "quotes_archive.toml")
LIFTED = "writing them again with the limit lifted"


def produce_prices(env, count):
    bench.sh(bench.BIN, "produce", "--count", str(count), "--rate", "0", "--exchanges", "",
             "--types", "price", "--encodings", "json", env=env)


def timed_drain(env, name, group, total, extra=None):
    """Runs the sink as `group` until it stored `total` offsets; rows/s from
    its first stored offset to the last, and whether it lifted the limit."""
    sink_env = {**env, **(extra or {}), "TIMESINK_GROUP_ID": group, "RUST_LOG": "timesink=info"}
    log_path = os.path.join(bench.STATE, f"{name}-{group}.log")
    log = open(log_path, "w")
    sink = subprocess.Popen([bench.BIN, "run"], env=sink_env,
                            stdout=subprocess.DEVNULL, stderr=log)
    poll = bench.Poller(env["DATABASE_URL"],
                        "SELECT coalesce(sum(next_offset), 0) FROM timesink_offsets "
                        f"WHERE consumer_group = '{group}'")
    baseline = int(poll.value() or 0)
    deadline = time.monotonic() + 1800
    first, first_stored = None, baseline
    try:
        while (stored := int(poll.value() or 0)) < total:
            if sink.poll() is not None or time.monotonic() > deadline:
                sink.kill()
                sys.exit(f"the sink stored {stored} of {total} offsets; log: {log_path}")
            if stored > baseline and first is None:
                first, first_stored = time.monotonic(), stored
            time.sleep(0.02)
    finally:
        poll.close()
    done = time.monotonic()
    first = first or done
    sink.terminate()
    sink.wait(timeout=60)
    log.close()
    # The rows after the first commit, over the time after it.
    return {"rows_s": (total - first_stored) / max(done - first, 1e-6),
            "lifted": LIFTED in open(log_path).read()}


def compress_all(url):
    return int(bench.psql(url, "SELECT count(compress_chunk(c, if_not_compressed => true)) "
                               "FROM show_chunks('crypto_prices') AS c"))


def late_run(env, run):
    name = f"bench{os.getpid()}xlatex{run}"
    with bench.fresh(env, name) as env:
        url = env["DATABASE_URL"]
        produce_prices(env, N_LATE)
        out = {"fresh": timed_drain(env, name, f"{name}-fresh", N_LATE)}
        out["replay"] = timed_drain(env, name, f"{name}-replay", N_LATE)
        out["chunks"] = compress_all(url)
        out["replay_compressed"] = timed_drain(env, name, f"{name}-replay-c", N_LATE)
        compress_all(url)
        produce_prices(env, N_LATE)
        # The first group has read the first N_LATE: it reads only the new ones.
        out["new_compressed"] = timed_drain(env, name, f"{name}-fresh", 2 * N_LATE)
        rows = int(bench.psql(url, "SELECT count(*) FROM crypto_prices"))
        if rows != 2 * N_LATE:
            sys.exit(f"{name}: {rows} rows stored, {2 * N_LATE} sent")
        return out


def archive_config(name, table, topic, direct):
    """examples/quotes_archive.toml as `table`, reading `topic`, with or
    without direct compress."""
    text = open(ARCHIVE).read()
    text = text.replace("[tables.quotes_archive]", f"[tables.{table}]")
    text = text.replace('topics = ["crypto-level1"]', f'topics = ["{topic}"]')
    if not direct:
        text = text.replace("direct_compress = true", "direct_compress = false")
    path = os.path.join(bench.STATE, f"{name}-{table}.toml")
    with open(path, "w") as f:
        f.write(text)
    return {"TIMESINK_CONFIG_FILE": path}


def size_mib(url, table):
    return int(bench.psql(url, f"SELECT hypertable_size('{table}')")) / 2**20


def direct_run(env, run):
    name = f"bench{os.getpid()}xdirectx{run}"
    with bench.fresh(env, name) as env:
        url = env["DATABASE_URL"]
        topic = f"{name}-crypto-level1"
        bench.sh(bench.BIN, "produce", "--count", str(N_DIRECT), "--rate", "0", "--exchanges", "",
                 "--types", "level1", "--encodings", "json", env=env)
        out = {}
        # Alternating which goes first, so that neither always has the
        # warmer cache.
        order = [("direct", True), ("plain", False)]
        if run % 2 == 0:
            order.reverse()
        for label, direct in order:
            table = f"quotes_{label}"
            extra = archive_config(name, table, topic, direct)
            bench.sh(bench.BIN, "schema", env={**env, **extra})
            r = timed_drain(env, name, f"{name}-{label}", N_DIRECT, extra)
            r["mib"] = size_mib(url, table)
            rows = int(bench.psql(url, f"SELECT count(*) FROM {table}"))
            if rows != N_DIRECT:
                sys.exit(f"{name}: {rows} rows in {table}, {N_DIRECT} sent")
            if label == "plain":
                bench.psql(url, f"SELECT count(compress_chunk(c)) FROM show_chunks('{table}') AS c")
                r["compressed_mib"] = size_mib(url, table)
            out[label] = r
        return out


def main():
    os.makedirs(bench.STATE, exist_ok=True)
    subprocess.run([os.path.join(ROOT, "scripts", "services.sh"), "start"], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    env = bench.services_env()
    loaded = bench.psql(env["DATABASE_URL"],
                        "SELECT current_setting('shared_preload_libraries') LIKE '%timescaledb%'")
    if loaded != "t":
        print("TimescaleDB is not loaded in the bench's cluster: no TimescaleDB bench")
        return
    stamp = datetime.datetime.now()
    runs = []
    for run in range(1, R + 1):
        r = late_run(env, run)
        bench.say(f"late data run {run}/{R}: fresh {r['fresh']['rows_s']:,.0f} rows/s, "
                  f"replay {r['replay']['rows_s']:,.0f}, replay into compressed "
                  f"{r['replay_compressed']['rows_s']:,.0f} (limit lifted: "
                  f"{r['replay_compressed']['lifted']}), new rows into compressed "
                  f"{r['new_compressed']['rows_s']:,.0f}")
        runs.append(r)

    direct_runs = []
    for run in range(1, R + 1):
        r = direct_run(env, run)
        bench.say(f"direct compress run {run}/{R}: with {r['direct']['rows_s']:,.0f} rows/s, "
                  f"{r['direct']['mib']:.1f} MiB; without {r['plain']['rows_s']:,.0f} rows/s, "
                  f"{r['plain']['mib']:.1f} MiB ({r['plain']['compressed_mib']:.1f} MiB compressed)")
        direct_runs.append(r)

    cpus = os.cpu_count()
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                  if l.startswith("model name")), "")
    version = bench.psql(env["DATABASE_URL"],
                         "SELECT default_version FROM pg_available_extensions "
                         "WHERE name = 'timescaledb'")
    col = lambda key: [r[key]["rows_s"] for r in runs]  # noqa: E731
    fresh = statistics.median(col("fresh"))
    lines = [
        f"# timesink TimescaleDB bench, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `BENCH_LATE_N={N_LATE} BENCH_DIRECT_N={N_DIRECT} BENCH_R={R} "
        "make bench-timescaledb`  ",
        f"Machine: {cpus} CPUs ({model}); PostgreSQL 15, TimescaleDB {version}; nisshi 0.8.1 (memory)  ",
        f"Medians of {R} runs (min–max); each run on a fresh database and broker.",
        "",
        "## Late data into compressed chunks",
        "",
        f"{N_LATE:,} prices (JSON), drained by the release sink; rows/s from the first "
        "commit to the last. Replays read the same messages again under a new "
        "consumer group: every key is stored already and the later record replaces it.",
        "",
        "| into | rows/s | against fresh | limit lifted |",
        "|---|---|---|---|",
    ]
    for key, label in [("fresh", "empty chunks (COPY)"),
                       ("replay", "uncompressed chunks, every key stored (merge path)"),
                       ("replay_compressed", "compressed chunks, every key stored"),
                       ("new_compressed", "compressed chunks, new keys later in time")]:
        rates = col(key)
        lifted = sum(1 for r in runs if r[key]["lifted"])
        lines.append(f"| {label} | {bench.cell(rates, '{:,.0f}')} "
                     f"| {statistics.median(rates) / fresh:.2f} | {lifted} of {R} runs |")
    dcol = lambda label, key: [r[label][key] for r in direct_runs]  # noqa: E731
    lines += [
        "",
        "## Direct compress",
        "",
        f"{N_DIRECT:,} level-1 quotes (JSON) into an append-only table of "
        "examples/quotes_archive.toml's shape (no primary key), the same messages "
        "drained by a new consumer group into each; rows/s as above; size: "
        "`hypertable_size` after the drain.",
        "",
        "| COPY | rows/s | size after the drain MiB | compressed afterwards MiB |",
        "|---|---|---|---|",
        f"| with direct compress | {bench.cell(dcol('direct', 'rows_s'), '{:,.0f}')} "
        f"| {bench.cell(dcol('direct', 'mib'), '{:.1f}')} | – |",
        f"| without | {bench.cell(dcol('plain', 'rows_s'), '{:,.0f}')} "
        f"| {bench.cell(dcol('plain', 'mib'), '{:.1f}')} "
        f"| {bench.cell(dcol('plain', 'compressed_mib'), '{:.1f}')} |",
    ]
    bench.save("\n".join(lines), f"{stamp:%Y%m%d-%H%M%S}-timescaledb.md")


if __name__ == "__main__":
    main()
