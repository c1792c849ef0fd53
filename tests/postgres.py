"""A throwaway PostgreSQL server for the tests, from the distribution's server binaries.

The cluster lives in a temporary directory and listens only on a Unix socket there, so
nothing outside the test run can reach it or collide with it.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy

BINARIES = "/usr/lib/postgresql/*/bin"
# Any port will do: it only names the socket file, inside a directory of our own.
PORT = 5432


class PostgresError(Exception):
    pass


def find_binaries() -> Path:
    """The newest installed server's bin directory."""
    found = [
        path
        for path in Path("/").glob(BINARIES.lstrip("/"))
        if (path / "initdb").exists() and (path / "pg_ctl").exists()
    ]
    if not found:
        raise PostgresError(
            f"no PostgreSQL server binaries under {BINARIES}: run `make postgres` to install them"
        )
    return max(found, key=lambda path: int(path.parent.name.split(".")[0]))


class Server:
    """One cluster: ``start`` creates and starts it, ``stop`` stops it and deletes its files."""

    def __init__(self) -> None:
        self.bin = find_binaries()
        # PostgreSQL refuses to run as root; the Debian package's `postgres` user does.
        self.prefix: list[str] = []
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresError(
                    "no `postgres` user to run the server as: run `make postgres`"
                ) from None
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="store-postgres-", dir="/tmp"))
        self.root.chmod(0o755)
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.url = f"postgresql+psycopg://postgres@/postgres?host={self.root}&port={PORT}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [*self.prefix, str(self.bin / args[0]), *args[1:]]
        result = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}{log}"
            )

    def start(self) -> str:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )
        # Durability costs time and buys nothing for a cluster deleted after the run.
        options = (
            f"-c listen_addresses='' -k {self.root} -p {PORT} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off"
        )
        # -w: return once the server accepts connections.
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        return self.url

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


_databases = itertools.count()


@contextmanager
def fresh_database(request: pytest.FixtureRequest, directory: Path) -> Iterator[str]:
    """The URL of a new, empty database on ``request.param``'s backend: a SQLite file in
    ``directory``, or a database of its own on the suite's PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{directory / 'store' / 'scores.sqlite3'}"
        return
    server_url = request.getfixturevalue("postgres_url")
    name = f"test_{next(_databases)}"
    admin = sqlalchemy.create_engine(
        server_url, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield sqlalchemy.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    # FORCE: a store the test left open still holds connections.
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()
