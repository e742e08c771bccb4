#!/usr/bin/env python3
"""BENCH_BASE=<rev> make bench: this tree's drain against a base revision's,
alternating on one host, each against PostgreSQL's own COPY in the same run.

Hosts here differ by 4× and more, so a figure is only worth comparing with
one taken beside it. The base revision is exported (`git archive`) to
.state/bench-base/<commit>/ and built there into a target directory of its
own (target/bench-base, shared by every base, so that the dependencies
build once; not this tree's, where cargo would take one tree's crate for
the other's, both being the same package at the workspace's root); its
binary is copied into its tree, and its own `scripts/bench.py` drives it,
so each build runs the drain
its tree defines (its configuration keys, its topics), on the same services.
Each of BENCH_R rounds runs every mix of BENCH_MIXES on both builds, in an
order that swaps every round (base, this; this, base; ...), so that both see
the same drift of the machine.

Per run: the drain from the sink's spawn and after its first commit (rows/s),
PostgreSQL's own binary COPY of the same rows, both ratios, the sink's CPU per
million rows and its peak RSS. Medians (min–max), and this tree's medians over
the base's, are printed and written to bench/results/<time>-ab-<base>.md.

Environment: BENCH_BASE (a commit, tag or branch), BENCH_N, BENCH_R,
BENCH_MIXES, as for scripts/bench.py.
"""

import datetime
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (this tree's bench: its runs and its helpers)

ROOT = bench.ROOT
TARGET = os.path.join(ROOT, "target", "bench-base")


def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, check=True, text=True,
                          capture_output=True).stdout.strip()


def base_tree(rev):
    """The base revision exported and built: (its commit, its bench module)."""
    try:
        commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        sys.exit(f"BENCH_BASE={rev!r} is not a commit of this repository")
    tree = os.path.join(ROOT, ".state", "bench-base", commit)
    if not os.path.exists(os.path.join(tree, "Cargo.toml")):
        shutil.rmtree(tree, ignore_errors=True)
        os.makedirs(tree)
        archive = subprocess.Popen(["git", "archive", commit], cwd=ROOT, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", tree], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            sys.exit(f"git archive {commit} failed")
    # Its scripts manage the same services: the broker's pid file, the
    # cluster and the COPY files live in this tree's .state.
    state = os.path.join(tree, ".state")
    if not os.path.islink(state):
        shutil.rmtree(state, ignore_errors=True)
        os.symlink(os.path.join(ROOT, ".state"), state)
    # Its sources newer than anything built: cargo judges freshness by
    # mtime, and another base built into the same directory may be newer
    # than this one's exported files.
    for folder, _, files in os.walk(tree):
        if os.path.islink(folder) or "/.state" in folder or "/target" in folder:
            continue
        for f in files:
            os.utime(os.path.join(folder, f))
    print(f"building the base {commit[:10]} in {os.path.relpath(tree, ROOT)}", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=tree, check=True,
                   env={**os.environ, "CARGO_TARGET_DIR": TARGET})
    bin_dir = os.path.join(tree, "target", "release")
    os.makedirs(bin_dir, exist_ok=True)
    shutil.copy2(os.path.join(TARGET, "release", "timesink"), bin_dir)
    spec = importlib.util.spec_from_file_location("bench_base",
                                                  os.path.join(tree, "scripts", "bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The same load for both, whether or not the base reads BENCH_ENCODINGS.
    module.ENCODINGS = bench.ENCODINGS
    return commit, module


def figures(r):
    return {
        "spawn": r["drain_rows_s"],
        "steady": bench.steady(r),
        "copy": r["limit_rows_s"],
        "ratio": r["ratio"],
        "steady_ratio": bench.steady(r) / r["limit_rows_s"],
        "sink_s_per_m": r["sink_s_per_m"],
        "rss": r["rss_mib"],
    }


def main():
    rev = os.environ.get("BENCH_BASE", "")
    if not rev:
        sys.exit("BENCH_BASE names the revision to compare with, e.g. BENCH_BASE=main~3")
    os.makedirs(bench.STATE, exist_ok=True)
    os.chmod(bench.STATE, 0o1777)  # the server (user postgres) writes the COPY files here
    subprocess.run([os.path.join(ROOT, "scripts", "services.sh"), "start"], check=True)
    commit, base = base_tree(rev)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    head = git("rev-parse", "--short=10", "HEAD")
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    builds = {"base": base, "this": bench}
    env = bench.services_env()
    env["RUST_LOG"] = "warn"
    runs = {(mix, b): [] for mix in bench.MIXES for b in builds}
    for r in range(1, bench.R + 1):
        order = ["base", "this"] if r % 2 else ["this", "base"]
        for mix in bench.MIXES:
            for b in order:
                result = figures(builds[b].one_run(env, mix, r, tag=b))
                runs[(mix, b)].append(result)
                print(f"{mix} {b} round {r}/{bench.R}: from spawn {result['spawn']:,.0f} rows/s, "
                      f"after the first commit {result['steady']:,.0f}, COPY {result['copy']:,.0f} "
                      f"(ratios {result['ratio']:.2f} / {result['steady_ratio']:.2f}), "
                      f"sink {result['sink_s_per_m']:.2f} CPU s/1M, RSS {result['rss']:.0f} MiB",
                      flush=True)

    cpus = os.cpu_count()
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                  if l.startswith("model name")), "")
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    timescale = "with TimescaleDB" if os.path.exists(
        "/usr/lib/postgresql/15/lib/timescaledb.so") else "plain PostgreSQL 15"
    label = {"base": f"base {commit[:10]}", "this": f"this {head}{dirty}"}
    # The sink's own settings from the environment, as both builds ran with them.
    settings = "".join(f"{k}={v} " for k, v in sorted(os.environ.items())
                       if k.startswith("TIMESINK_"))
    lines = [
        f"# A/B, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: "
        f"{head}{dirty} against {commit[:10]}",
        "",
        f"Command: `{settings}BENCH_BASE={rev} BENCH_N={bench.N} BENCH_R={bench.R} "
        f"BENCH_MIXES={','.join(bench.MIXES)} BENCH_ENCODINGS={bench.ENCODINGS} make bench`  ",
        f"Machine: {cpus} CPUs ({model}), {mem_gib:.0f} GiB; PostgreSQL 15 {timescale}; "
        "nisshi 0.8.1 (memory)  ",
        f"Each build's own `scripts/bench.py` drain: {bench.N:,} messages per run preloaded "
        "into fresh topics on a freshly started broker, drained into an empty database, then "
        "PostgreSQL's own binary COPY of the same rows into the same tables. "
        f"{bench.R} rounds, the order of the builds swapped every round; medians (min–max).",
        "",
        "| mix | build | drain from spawn rows/s | after the first commit rows/s "
        "| PostgreSQL COPY rows/s | from spawn / COPY | after the first commit / COPY "
        "| sink CPU s / 1M rows | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cell = bench.cell
    for mix in bench.MIXES:
        for b in ["base", "this"]:
            rs = runs[(mix, b)]
            col = lambda k: [x[k] for x in rs]  # noqa: E731
            lines.append(
                f"| {mix} | {label[b]} | {cell(col('spawn'), '{:,.0f}')} "
                f"| {cell(col('steady'), '{:,.0f}')} | {cell(col('copy'), '{:,.0f}')} "
                f"| {cell(col('ratio'), '{:.2f}')} | {cell(col('steady_ratio'), '{:.2f}')} "
                f"| {cell(col('sink_s_per_m'), '{:.2f}')} | {cell(col('rss'), '{:.0f}')} |")
    lines += ["", "This build's medians over the base's:", ""]
    for mix in bench.MIXES:
        med = {b: {k: statistics.median(x[k] for x in runs[(mix, b)])
                   for k in ["spawn", "steady", "steady_ratio", "rss"]} for b in builds}
        lines.append(
            f"- {mix}: from spawn {med['this']['spawn'] / med['base']['spawn']:.2f}×, "
            f"after the first commit {med['this']['steady'] / med['base']['steady']:.2f}×, "
            f"ratio to COPY after the first commit {med['base']['steady_ratio']:.2f} → "
            f"{med['this']['steady_ratio']:.2f}, peak RSS {med['base']['rss']:.0f} → "
            f"{med['this']['rss']:.0f} MiB")
    text = "\n".join(lines)
    stamp = datetime.datetime.now()
    bench.save(text, f"{stamp:%Y%m%d-%H%M%S}-ab-{commit[:10]}.md")


if __name__ == "__main__":
    main()
