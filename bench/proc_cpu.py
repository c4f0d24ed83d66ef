"""CPU time of processes from Linux's /proc, for the benchmarks' per-request and per-event figures.

On these shared VMs throughput swings twofold between runs, while CPU time per unit of work moves
less; the benchmarks report both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def ticks(pid: int) -> int:
    """Clock ticks the process has used (user + system); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def cpu_seconds(pids: Iterable[int]) -> float:
    return sum(ticks(pid) for pid in pids) / os.sysconf("SC_CLK_TCK")


def postgres_pids(data_dir: Path) -> list[int]:
    """An embedded server's postmaster and its children (backends, WAL writer, checkpointer...)."""
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
            if ppid == postmaster:
                pids.append(int(entry.name))
    return pids
