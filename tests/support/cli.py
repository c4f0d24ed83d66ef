"""The ``caremsg`` command line, two ways: in a process of its own, as an operator runs it, and in
this process (``main(argv)`` on a thread), for the many tests that check what a command prints and
returns rather than that the entry point starts. Keep at least one test per command family on the
real process; the in-process runner saves an interpreter start and every import per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import structlog

PROJECT = Path(__file__).resolve().parents[2]

# The in-process runs change process-wide state (os.environ, sys.stdout/err, logging): one at a time.
_one_at_a_time = threading.Lock()


async def caremsg(url: str, *args: str) -> tuple[int, str]:
    """Run the real command line in a process of its own against ``url``."""
    env = {**os.environ, "DATABASE_URL": url, "CAREMSG_SERVICE_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "handlers.cli", *args,
        cwd=PROJECT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    return process.returncode or 0, out.decode() + err.decode()


async def caremsg_in_process(url: str, *args: str) -> tuple[int, str]:
    """``caremsg ARGS`` against ``url`` through ``handlers.cli.main`` in this process: the exit
    status and what it wrote (stdout, then stderr), as :func:`caremsg` returns them.

    On a thread of its own, because the commands start their own event loop (``asyncio.run``).
    The environment, the standard streams and the logging configuration the command sets up are
    put back afterwards.
    """
    return await asyncio.to_thread(_run_main, url, args)


def _run_main(url: str, args: tuple[str, ...]) -> tuple[int, str]:
    from handlers import cli, cli_setup

    out, err = io.StringIO(), io.StringIO()
    with _one_at_a_time, _environment(DATABASE_URL=url, CAREMSG_SERVICE_LOG_FORMAT="json"), _logging_kept():
        # Loggers must not cache the command's configuration: other tests in this process log after it.
        configure = functools.partial(cli_setup.configure_logging, cache_loggers=False)
        with (
            _attribute(cli_setup, "configure_logging", configure),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = cli.main(list(args))
            except SystemExit as exc:  # as the interpreter turns sys.exit(...) into a status
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    sys.stderr.write(f"{exc.code}\n")
                    code = 1
    return code, out.getvalue() + err.getvalue()


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)


@contextlib.contextmanager
def _attribute(owner: object, name: str, value: object) -> Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)
