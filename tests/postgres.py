"""A throwaway PostgreSQL cluster for the store tests: Debian's server binaries, a temporary data
folder, a free loopback port, trust authentication for one user, and no fsync (nothing here
needs to survive a crash of the machine).

`initdb` refuses to run as root, so as root the server runs as the `postgres` system user (which
Debian's package creates). Run alone: `python -m tests.postgres` starts one and prints its URL.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BIN_DIRS = (
    Path("/usr/lib/postgresql/15/bin"),
    *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True),
)
USER = "app"
START_TIMEOUT_S = 60


def find_bin_dir() -> Path | None:
    """The folder with initdb and pg_ctl, or None when PostgreSQL is not installed."""
    for folder in BIN_DIRS:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def missing_reason() -> str:
    return (
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin); "
        "install them with `apt-get install -y postgresql`"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresCluster:
    bin_dir: Path
    data_dir: Path
    port: int
    _names: Iterator[int] = field(default_factory=itertools.count)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """A new, empty database; its name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_server_user() -> dict[str, object]:
    """subprocess arguments that run a command as `postgres` when we are root."""
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam("postgres")
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=START_TIMEOUT_S, **_as_server_user()
    )
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@contextlib.contextmanager
def running_cluster(bin_dir: Path | None = None) -> Iterator[PostgresCluster]:
    """Start a cluster in a temporary folder; stop it and remove the folder afterwards."""
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None:
        raise RuntimeError(missing_reason())
    data_dir = Path(tempfile.mkdtemp(prefix="pg-store-tests-"))
    try:
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(data_dir, account.pw_uid, account.pw_gid)
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-A",
                "trust",
                "-U",
                USER,
                "-E",
                "UTF8",
                "--no-sync",
            ],
            data_dir,
        )
        cluster = None
        for _attempt in range(3):  # a free port can be taken between finding it and binding it
            port = free_port()
            options = (
                f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                _run(
                    [
                        str(bin_dir / "pg_ctl"),
                        "-D",
                        str(data_dir),
                        "-l",
                        str(data_dir / "server.log"),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        str(START_TIMEOUT_S),
                        "start",
                    ],
                    data_dir,
                )
            except RuntimeError:
                continue
            cluster = PostgresCluster(bin_dir, data_dir, port)
            break
        if cluster is None:
            log = data_dir / "server.log"
            raise RuntimeError("PostgreSQL did not start:\n" + (log.read_text() if log.exists() else ""))
        try:
            yield cluster
        finally:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"], data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    import time

    with running_cluster() as running, contextlib.suppress(KeyboardInterrupt):
        print(running.url(), "(Ctrl-C stops it)", flush=True)
        while True:
            time.sleep(3600)
