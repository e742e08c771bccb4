#!/usr/bin/env python3
"""make bench-guard (CI): short drains that fail when the sink falls far
below PostgreSQL's own COPY of the same rows, measured in the same run.

BENCH_GUARD_R (3) drains of BENCH_GUARD_N (200,000) prices on the defaults,
and as many with a table budget of 3,000 rows (`batch.max_rows_in_flight`),
each as `make bench` runs it (preloaded into fresh topics on a freshly
started broker, drained into an empty database, then PostgreSQL's own
binary COPY of exactly those rows into the same tables), but with
`synchronous_commit = off` for the sink's sessions, so that a slow disk is
not taken for a slow sink. The figure is the
drain's rate after the sink's first commit over COPY's: the start (process,
group join, first fetch) is a large part of so short a drain and says
nothing of the pipeline. The median of each setting's runs must reach
BENCH_GUARD_FLOOR.

The small budget makes room run out every few batches, so that the way the
sink waits for room is what is measured, on any host: the build that paused
a table's partitions at every fill of its budget drained at 0.3–0.4 of COPY
with the default budget on the host where it was found, but at 0.75–0.79
on another, where with 3,000 rows it fell to 0.36–0.39.

The floor, 0.6: healthy builds measured 0.73–0.96 per run here in either
setting (medians 0.74–0.89; with a WAL flush of 10 ms as well), so it
leaves room for the noise of shared cores, and a build that
lost half its speed cannot reach it from a healthy ratio of up to 1.2. A
ratio rather than a rate, because hosts differ by 4× and more while the two
sides of one run share the host.
"""

import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


# The settings each drain runs with: (label, the sink's environment).
SETTINGS = [
    ("the defaults", None),
    ("a budget of 3,000 rows", {"TIMESINK_BATCH__MAX_ROWS_IN_FLIGHT": "3000"}),
]


def guard_run(env, run, tag, extra):
    """One drain as bench.one_run's, with `synchronous_commit = off` for the
    sink's sessions: the guard measures the sink, not the disk. A host whose
    WAL flush takes 10 ms (commit_delay, to stand in for a slow disk) held a
    healthy build with the small budget at 0.54 of COPY, a commit per 3,000
    rows; COPY's one commit does not feel it."""
    name = f"bench{os.getpid()}x{tag}x{run}"
    with bench.fresh(env, name) as env:
        bench.psql(env["DATABASE_URL"], f"ALTER DATABASE {name} SET synchronous_commit = off")
        return bench.drain_run(env, name, "prices", {**env, **(extra or {})})


def env_float(name, default):
    value = os.environ.get(name, default)
    try:
        return float(value)
    except ValueError:
        sys.exit(f"{name} must be a number, not {value!r}")


def main():
    # bench's drains read its module-level N.
    bench.N = bench.env_int("BENCH_GUARD_N", "200000")
    runs = bench.env_int("BENCH_GUARD_R", "3")
    floor = env_float("BENCH_GUARD_FLOOR", "0.6")
    os.makedirs(bench.STATE, exist_ok=True)
    os.chmod(bench.STATE, 0o1777)  # the server (user postgres) writes the COPY files here
    subprocess.run([os.path.join(bench.ROOT, "scripts", "services.sh"), "start"], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=bench.ROOT, check=True)
    env = bench.services_env()
    env["RUST_LOG"] = "warn"
    failed = []
    for setting, (label, extra) in enumerate(SETTINGS):
        ratios = []
        for run in range(1, runs + 1):
            r = guard_run(env, run, f"guard{setting}", extra)
            rate = bench.steady(r)
            ratios.append(rate / r["limit_rows_s"])
            bench.say(f"bench guard, {label}, run {run}/{runs}: {r['rows']:,} prices, after the "
                      f"first commit {rate:,.0f} rows/s, PostgreSQL's own COPY "
                      f"{r['limit_rows_s']:,.0f} rows/s, ratio {ratios[-1]:.2f} "
                      f"(from spawn {r['drain_rows_s']:,.0f} rows/s)")
        median = statistics.median(ratios)
        verdict = "passed" if median >= floor else "FAILED"
        bench.say(f"bench guard {verdict}, {label}: median ratio to COPY {median:.2f}, floor "
                  f"{floor:.2f} (runs {', '.join(f'{x:.2f}' for x in ratios)})")
        if median < floor:
            failed.append(label)
    if failed:
        sys.exit(f"bench guard: below the floor with {' and '.join(failed)}")


if __name__ == "__main__":
    main()
