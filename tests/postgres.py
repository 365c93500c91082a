"""A real PostgreSQL server for the search's storage tests: a throw-away cluster (initdb) in a temp folder
on a free local port, started for the test session and stopped after it. Skips where PostgreSQL is not
installed (.ci/run installs the Debian package)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def _bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`postgres` on 127.0.0.1:PORT with trust authentication and one database, `edgekd`."""

    def __init__(self):
        import tempfile

        import pytest

        initdb, postgres = _bin("initdb"), _bin("postgres")
        if not (initdb and postgres):
            pytest.skip("PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)")
        # its own temp folder: pytest's are private to the user running the tests, and postgres (below) is
        # another user
        self.root, self.port = Path(tempfile.mkdtemp(prefix="edgekd-pg-")), free_port()
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir(parents=True)
        # postgres refuses to run as root: run it as the postgres user, owning its folders
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.prefix:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        subprocess.run(
            [*self.prefix, initdb, "-D", str(self.data), "-U", "edgekd", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                postgres,
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.sock),
                "-h",
                "127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait()
        self.create_db("edgekd")

    @property
    def url(self) -> str:
        return self.url_of("edgekd")

    def url_of(self, db: str) -> str:
        return f"postgresql://edgekd@127.0.0.1:{self.port}/{db}"

    def _wait(self, timeout_s: float = 30) -> None:
        import psycopg

        end = time.time() + timeout_s
        while True:
            try:
                psycopg.connect(f"host=127.0.0.1 port={self.port} user=edgekd dbname=postgres").close()
                return
            except psycopg.OperationalError:
                if time.time() > end or self.proc.poll() is not None:
                    raise RuntimeError(f"PostgreSQL did not start on port {self.port}") from None
                time.sleep(0.2)

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=edgekd dbname=postgres", autocommit=True
        ) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, _bin("pg_ctl"), "-D", str(self.data), "stop", "-m", "fast", "-w"],
            capture_output=True,
        )
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)
