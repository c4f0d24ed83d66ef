"""The real command line, run in a process of its own, as an operator runs it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


async def caremsg(url: str, *args: str) -> tuple[int, str]:
    """Run the real command line in a process of its own against ``url``."""
    env = {**os.environ, "DATABASE_URL": url, "CAREMSG_SERVICE_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "handlers.cli", *args,
        cwd=PROJECT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    return process.returncode or 0, out.decode() + err.decode()
