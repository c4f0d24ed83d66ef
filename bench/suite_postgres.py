"""What the test suite costs PostgreSQL: backends started and CPU used while pytest runs a subset.

    python bench/suite_postgres.py [--other-tree PATH] [--rounds 2] -- PYTEST ARGS...

e.g. ``python bench/suite_postgres.py --other-tree /tmp/base -- -n 0 tests/refmodel``. Each run gets
a PostgreSQL of its own (the embedded package's binaries, ``log_connections`` on, a Unix socket in a
temporary directory; RestartablePostgres) that pytest reaches through DATABASE_URL, as CI could
point it at one. Printed per run: the backends PostgreSQL started (its log's "connection authorized"
lines), PostgreSQL's CPU (the postmaster, its live children and every child it reaped, from /proc),
pytest's CPU (its process and children) and the wall time. With ``--other-tree`` (another checkout,
e.g. a worktree at the commit to compare with) the two trees alternate, this one second, for
``--rounds`` pairs: on these shared machines only runs side by side compare.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_harness import load_average
from integrations.db.embedded import RestartablePostgres

PYTHON = str(Path(sys.executable))


def _postgres_cpu(postmaster: int) -> float:
    """The postmaster's CPU, every child it reaped, and its live children's (backends, WAL writer...)."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(child[1]) == postmaster:
            ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run(tree: Path, pytest_args: list[str]) -> dict[str, float | int | str]:
    """One pytest run in ``tree`` against a PostgreSQL of its own."""
    with tempfile.TemporaryDirectory(prefix="caremsg-suitepg-") as tmp:
        server = RestartablePostgres(Path(tmp))
        server.init()
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write("\nlog_connections = on\n")
        server.start()
        try:
            postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
            env = {**os.environ, "DATABASE_URL": server.url()}
            before_pg = _postgres_cpu(postmaster)
            before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            done = subprocess.run(  # noqa: S603
                [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-q", *pytest_args],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.monotonic() - started
            pg = _postgres_cpu(postmaster) - before_pg
            after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        finally:
            server.stop()
        log = (Path(tmp) / "log").read_text(errors="replace")
    tests = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    return {
        "backends": log.count("connection authorized"),
        "postgres_cpu": pg,
        "pytest_cpu": (after_children.ru_utime - before_children.ru_utime)
        + (after_children.ru_stime - before_children.ru_stime),
        "wall": wall,
        "result": tests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--other-tree", type=Path, help="another checkout, run alternately before this one")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("pytest_args", nargs="+")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = [args.other_tree.resolve(), here] if args.other_tree else [here]
    print(f"suite PostgreSQL cost — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {load_average()}")
    print(f"  pytest {' '.join(args.pytest_args)}")
    for round_ in range(1, args.rounds + 1):
        for tree in trees:
            r = run(tree, args.pytest_args)
            print(
                f"  round {round_} {tree}: {r['backends']} backends,"
                f" PostgreSQL {r['postgres_cpu']:.2f} s CPU, pytest {r['pytest_cpu']:.2f} s CPU,"
                f" {r['wall']:.1f} s wall — {r['result']}"
            )
    print(f"  after: {load_average()}")


if __name__ == "__main__":
    main()
